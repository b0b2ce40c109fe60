#!/usr/bin/env bash
# tests/viewer/run.sh [BUILD_DIR] [OUT_DIR]
#
# "Real viewer" test: the node's results opened in the OHIF Viewer, as a radiologist would see them.
#   1. Orthanc (loopback, free ports, private config and storage, DICOMweb plugin) plays the hospital PACS.
#   2. nephrad (BUILD_DIR/app/nephrad, default build/release) runs with Orthanc as its peer, on a copy of the model
#      manifest whose study rule calls a cyst on any assessed slice (as bench/chaos.sh --findings), so that the
#      results include a finding and heatmaps.
#   3. The committed fixture CT (tests/data/tcia-kidney-slices) is uploaded to Orthanc, and Orthanc sends the study
#      to the node (REST /modalities/nephra/store); the node sends its SR and heatmap series back to Orthanc.
#   4. serve.js serves OHIF's prebuilt dist/ (SPA fallback, our app-config.js) and forwards /dicom-web to Orthanc
#      (one origin: no CORS).
#   5. viewer-test.js drives Debian's chromium (puppeteer-core): study list, viewer, SR and heatmap series in the
#      series panel, SR opened (finding text), heatmap opened; screenshots and a report.json go to OUT_DIR.
#
# OUT_DIR: second argument, or $NEPHRA_VIEWER_OUT, or a folder viewer-out-XXXX under $TMPDIR (kept, printed).
# Environment: NEPHRA_MODEL (model manifest), CHROMIUM (browser binary, default chromium from PATH),
#   ORTHANC_DICOMWEB_PLUGIN (plugin .so), NEPHRA_VIEWER_KEEP=1 (keep the scratch folder), NEPHRA_VIEWER_HOLD=1
#   (set everything up, print the URLs and wait until killed, without running the browser), NEPHRA_VIEWER_SERIES (a
#   folder of CT slices of the same patient instead of the fixture), NEPHRA_VIEWER_RULE (finding:threshold:run, the
#   manifest copy's rule for that finding; default Cyst:0:1). The README's screenshot:
#   NEPHRA_VIEWER_SERIES=../shared/data/dicom/tcia-pancreatic-ct-cbct-seg-001 NEPHRA_VIEWER_RULE=Cyst:0.51:3
# Exit status: 0 success; 77 skipped (chromium, orthanc-dicomweb or tests/viewer/node_modules missing: see
# tests/viewer/README.md); anything else is a failure, with the reason on stderr.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

build=${1:-${NEPHRA_BUILD:-$root/build/release}}
out=${2:-${NEPHRA_VIEWER_OUT:-}}
[ -d "$build" ] || fail "build folder $build does not exist"
build=$(cd "$build" && pwd)
nephrad=$build/app/nephrad
[ -x "$nephrad" ] || fail "$nephrad is missing: build the nephrad target first"

# --- prerequisites: the three optional ones skip, the rest fail ---------------------------------------------
vt_require_browser
plugin=${ORTHANC_DICOMWEB_PLUGIN:-}
if [ -z "$plugin" ]; then
  for p in /usr/share/orthanc/plugins/libOrthancDicomWeb.so /usr/lib/orthanc/libOrthancDicomWeb.so* \
           /usr/local/share/orthanc/plugins/libOrthancDicomWeb.so; do
    [ -f "$p" ] && { plugin=$p; break; }
  done
fi
[ -n "$plugin" ] && [ -f "$plugin" ] || skip "Orthanc's DICOMweb plugin is not installed (apt-get install -y orthanc-dicomweb)"
[ -f "$here/node_modules/@ohif/app/dist/index.html" ] || skip "OHIF is not installed (tests/viewer/install.sh)"
nb_require Orthanc dsrdump dciodvfy curl "$NB_PY"

# --- scratch folder, PID tracking, cleanup -------------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/var/tmp}/nephra-viewer-XXXXXX")
export NB_PIDS_FILE=$work/pids
: >"$NB_PIDS_FILE"
finish() {
  local rc=$?
  nb_cleanup
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then
    for f in "$work/orthanc/orthanc.log" "$work/nephrad.log" "$work/serve.log"; do
      [ -s "$f" ] && { echo "--- last lines of ${f#"$work"/}" >&2; tail -15 "$f" >&2; }
    done
    [ -n "${out:-}" ] && [ -d "$out" ] && cp "$work"/*.log "$work/orthanc/orthanc.log" "$out/" 2>/dev/null
  fi
  if [ "${NEPHRA_VIEWER_KEEP:-0}" = 1 ]; then nb_log "kept $work"; else rm -rf "$work"; fi
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM
if [ -z "$out" ]; then out=$(mktemp -d "${TMPDIR:-/var/tmp}/viewer-out-XXXXXX"); fi
mkdir -p "$out" || fail "cannot create $out"
out=$(cd "$out" && pwd)
started=$(nb_now)

# --- Orthanc with DICOMweb -----------------------------------------------------------------------------------
read -r node_port node_http orthanc_http orthanc_dicom web_port <<<"$(nb_free_ports 5)"
mkdir -p "$work/orthanc/db"
cat >"$work/orthanc/orthanc.json" <<JSON
{
  "Name": "viewer-pacs", "StorageDirectory": "$work/orthanc/db", "IndexDirectory": "$work/orthanc/db",
  "StorageCompression": false, "Plugins": ["$plugin"], "HttpServerEnabled": true, "HttpPort": $orthanc_http,
  "RemoteAccessAllowed": false, "AuthenticationEnabled": false, "DicomServerEnabled": true,
  "DicomAet": "ORTHANC", "DicomPort": $orthanc_dicom, "DicomCheckCalledAet": false,
  "DicomAlwaysAllowEcho": true, "DicomAlwaysAllowStore": true,
  "DicomModalities": { "nephra": ["NEPHRA", "127.0.0.1", $node_port] },
  "StableAge": 1, "ConcurrentJobs": 2,
  "DicomWeb": { "Enable": true, "Root": "/dicom-web/", "EnableWado": true, "WadoRoot": "/wado",
                "Host": "127.0.0.1:$orthanc_http", "Ssl": false }
}
JSON
Orthanc "$work/orthanc/orthanc.json" >"$work/orthanc/orthanc.log" 2>&1 &
nb_track $!
orthanc=http://127.0.0.1:$orthanc_http
nb_wait_http "$orthanc/system" 30 || fail "Orthanc did not start"
nb_wait_http "$orthanc/dicom-web/studies" 10 || fail "Orthanc's DICOMweb plugin ($plugin) does not answer"
nb_log "Orthanc $(curl -s "$orthanc/system" | "$NB_PY" -c 'import json,sys; print(json.load(sys.stdin)["Version"])') with DICOMweb, HTTP $orthanc_http, DICOM $orthanc_dicom"

# --- the node, on a manifest whose rule calls a cyst on any assessed slice -------------------------------------
manifest=${NEPHRA_MODEL:-$root/models/nephra-kidney.json}
mkdir -p "$work/model"
onnx=$("$NB_PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["onnx"])' "$manifest") || fail "cannot read $manifest"
ln -s "$(dirname "$(realpath "$manifest")")/$onnx" "$work/model/"
"$NB_PY" - "$manifest" "$work/model/nephra-kidney.json" "${NEPHRA_VIEWER_RULE:-Cyst:0:1}" <<'PY' ||
import json, sys
m = json.load(open(sys.argv[1]))
finding, threshold, run = sys.argv[3].split(":")
m["decision_thresholds"][finding] = float(threshold)
m["study_rule"]["min_run_slices"][finding] = int(run)
json.dump(m, open(sys.argv[2], "w"), indent=1)
PY
  fail "cannot write the findings manifest"
export NEPHRA_MODEL=$work/model/nephra-kidney.json
nb_node_config "$work/nephra.toml" "$node_port" "$node_http" "$work/spool" 2 \
  "[[peers]]
ae_title = \"ORTHANC\"
host = \"127.0.0.1\"
port = $orthanc_dicom"
"$nephrad" --config "$work/nephra.toml" >"$work/nephrad.log" 2>&1 &
nb_track $!
nb_wait_http "http://127.0.0.1:$node_http/healthz" 30 || fail "nephrad did not start"
nb_log "nephrad $("$nephrad" --version 2>&1 | head -1) on port $node_port"

# --- the CT: uploaded to Orthanc, then Orthanc sends the study to the node ------------------------------------
export TCP_NODELAY=1
fixture=${NEPHRA_VIEWER_SERIES:-$root/tests/data/tcia-kidney-slices}
for f in "$fixture"/*.dcm; do
  curl -sf -X POST -o /dev/null --data-binary "@$f" "$orthanc/instances" || fail "upload of $f to Orthanc failed"
done
study_id=$(curl -sf "$orthanc/studies" | "$NB_PY" -c 'import json,sys; s=json.load(sys.stdin); assert len(s)==1; print(s[0])') \
  || fail "Orthanc does not hold exactly one study after the upload"
study_uid=$(curl -sf "$orthanc/studies/$study_id" | "$NB_PY" -c 'import json,sys; print(json.load(sys.stdin)["MainDicomTags"]["StudyInstanceUID"])')
curl -sf -X POST -o "$work/store.json" -d "{\"Resources\":[\"$study_id\"],\"Synchronous\":true}" \
  "$orthanc/modalities/nephra/store" || fail "Orthanc could not send the study to the node (C-STORE)"
nb_log "Orthanc sent study $study_uid ($(ls "$fixture"/*.dcm | wc -l) CT slices) to the node; waiting for results"

# --- wait for the SR and the heatmap series in Orthanc -------------------------------------------------------
series_json=$work/series.json
deadline=$(( $(date +%s) + 120 ))
while :; do
  curl -sf -o "$series_json" "$orthanc/studies/$study_id/series?expand" || fail "Orthanc stopped answering"
  if "$NB_PY" - "$series_json" <<'PY'; then break; fi
import json, sys
s = json.load(open(sys.argv[1]))
def has(mod, desc):
    return any(x["MainDicomTags"].get("Modality") == mod and x["MainDicomTags"].get("SeriesDescription") == desc
               and x.get("IsStable", True) for x in s)
sys.exit(0 if has("SR", "Nephra AI kidney findings") and has("OT", "Nephra AI heatmaps") or
         has("SR", "Nephra AI kidney findings") and has("SC", "Nephra AI heatmaps") else 1)
PY
  [ "$(date +%s)" -ge "$deadline" ] && {
    "$NB_PY" -c 'import json,sys; [print(" ", x["MainDicomTags"].get("Modality"), x["MainDicomTags"].get("SeriesDescription"), len(x["Instances"])) for x in json.load(open(sys.argv[1]))]' "$series_json" >&2
    fail "no SR 'Nephra AI kidney findings' and heatmap series 'Nephra AI heatmaps' in Orthanc after 120 s"
  }
  sleep 0.5
done
"$NB_PY" -c 'import json,sys; [print(x["MainDicomTags"].get("Modality"), x["MainDicomTags"].get("SeriesDescription"), len(x["Instances"]), sep="\t") for x in json.load(open(sys.argv[1]))]' \
  "$series_json" >"$out/series.tsv"
nb_log "results in Orthanc after $(nb_elapsed "$started") s: $(tr '\t\n' ' ;' <"$out/series.tsv")"
sr_id=$("$NB_PY" -c 'import json,sys; print([x for x in json.load(open(sys.argv[1])) if x["MainDicomTags"].get("Modality")=="SR"][0]["Instances"][0])' "$series_json")
curl -sf -o "$out/sr.dcm" "$orthanc/instances/$sr_id/file" || fail "cannot download the SR"
dsrdump "$out/sr.dcm" >"$out/sr.txt" 2>&1 || fail "dsrdump cannot read the SR"
# the SR as the archive holds it, regions included, must still be a valid Comprehensive 3D SR
dciodvfy "$out/sr.dcm" >"$out/sr-dciodvfy.txt" 2>&1
grep -q '^Error' "$out/sr-dciodvfy.txt" && fail "dciodvfy finds errors in the SR from Orthanc: $(grep '^Error' "$out/sr-dciodvfy.txt" | head -3)"

groups=$(grep -c 'CONTAINER:(,,"Measurement Group")' "$out/sr.txt")
regions=$(grep -c 'SCOORD:(,,"Image Region")' "$out/sr.txt")
[ "$groups" -gt 0 ] && [ "$regions" -ge "$groups" ] ||
  fail "the SR has $groups measurement group(s) and $regions image region(s): each finding needs its region"
nb_log "SR: $groups measurement group(s), $regions image region(s)"

# --- OHIF: static dist + /dicom-web forwarder on one origin --------------------------------------------------
node "$here/serve.js" --port "$web_port" --orthanc "$orthanc" --dist "$here/node_modules/@ohif/app/dist" \
  --config "$here/app-config.js" >"$work/serve.log" 2>&1 &
nb_track $!
viewer=http://127.0.0.1:$web_port
nb_wait_http "$viewer/app-config.js" 15 || fail "serve.js did not start"
nb_wait_http "$viewer/dicom-web/studies" 5 || fail "serve.js does not forward /dicom-web to Orthanc"

if [ "${NEPHRA_VIEWER_HOLD:-0}" = 1 ]; then  # for developing viewer-test.js: keep everything up until killed
  printf 'VIEWER_URL=%s\nSTUDY_UID=%s\nORTHANC_URL=%s\n' "$viewer" "$study_uid" "$orthanc" | tee "$out/hold.env"
  nb_log "holding (NEPHRA_VIEWER_HOLD=1): stop with kill $$"
  while sleep 1; do :; done
fi

# --- the browser --------------------------------------------------------------------------------------------
nb_log "OHIF at $viewer; driving $chromium; screenshots to $out"
CHROMIUM=$chromium VIEWER_URL=$viewer STUDY_UID=$study_uid OUT_DIR=$out \
  USER_DATA_DIR=$work/chromium-profile node "$here/viewer-test.js" 2>&1 | tee "$work/viewer-test.log"
rc=${PIPESTATUS[0]}
cp "$work/viewer-test.log" "$out/" 2>/dev/null
[ "$rc" -eq 0 ] || fail "viewer-test.js failed (exit $rc); see $out/report.json and the screenshots in $out"
nb_log "PASS in $(nb_elapsed "$started") s; screenshots and report.json in $out"
