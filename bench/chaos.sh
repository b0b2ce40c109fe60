#!/usr/bin/env bash
# bench/chaos.sh [KILLS] [--small] [--studies N] [--senders N] [--keep] [--findings] [--power-cut [--forget-fsync TEXT]]
#
# kill -9 under load, against a real archive. A real Orthanc (loopback, free ports, private config and storage
# in a temporary folder) plays the hospital PACS; the release nephrad sends its results there. Distinct studies
# (dcmodify-rewritten copies of the CT) are streamed by storescu, calling AE ORTHANC as the peers table says,
# while nephrad is killed with SIGKILL at random moments (0.2-3 s after each start) and restarted, KILLS times
# (default 50). A storescu run that fails because the node died is re-run until every file of its study has been
# acknowledged (an archive re-sends). Then the node runs until idle and the script checks:
#   (a) every instance storescu got a Success response for is in the spool,
#   (b) each study in Orthanc has exactly one SR series, one SC series when the node made heatmaps, and exactly
#       the result instances the node made (re-sends replace: result UIDs are deterministic); one time in four a
#       sender also re-sends an earlier study in full, so some studies get a second round,
#   (c) nothing is stuck: no spool/tmp file, every round done, no dead letter.
# Exit status 0 only when nothing was lost and everything checks out.
#
# --power-cut: each kill is a power cut. kill -9 keeps the page cache, so every write survives it, synced or not;
# here nephrad runs with tests/powercut/powercut.cpp preloaded, which records what each fsync made durable, and
# after each kill the spool is rebuilt as a machine that lost power would find it (tests/powercut/rebuild.py: a
# file's contents as at its last fsync, a folder's entries as at its last fsync, nothing else) before the node
# starts again on it. Every other run of the node also models ext4 without a journal, where the first fsync of a
# new file syncs its folder as well (NEPHRA_POWERCUT_SYNC_PARENT, tests/powercut/powercut.cpp). --forget-fsync TEXT
# makes every fsync of a path containing TEXT count for nothing: the run must then fail, which shows the check
# would catch a missing fsync.
#
# CT: by default six abdominal slices (1-060..1-065) of the shared 134-slice TCIA series; --small (or no ../shared)
# uses the committed 5-slice fixture. The shipped study rule finds nothing on either (one SR series expected, no
# heatmap). --findings: the node runs a copy of the model manifest whose study rule calls a cyst on any one assessed
# slice, so that every study also gets heatmaps: one SR and one SC series expected.
# Environment: NEPHRA_BUILD (default build/release), NEPHRA_SHARED, NEPHRA_MODEL.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib/common.sh
. "$root/bench/lib/common.sh"

kills=50
small=0
studies=""
senders=2
keep=0
powercut=0
forget=""
findings=0
while [ $# -gt 0 ]; do
  case $1 in
    --small) small=1 ;;
    --studies) studies=$2; shift ;;
    --senders) senders=$2; shift ;;
    --keep) keep=1 ;;
    --power-cut) powercut=1 ;;
    --findings) findings=1 ;;
    --forget-fsync) forget=$2; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) [[ $1 =~ ^[0-9]+$ ]] || nb_die "unknown argument $1"; kills=$1 ;;
  esac
  shift
done
[ -n "$studies" ] || studies=$(( kills < 10 ? 10 : kills ))

nb_begin_run chaos Orthanc storescu dcmodify dcmdump curl bc
started_at=$(nb_now)
loadavg_start=$(cut -d" " -f1-3 /proc/loadavg)

# --- the CT ------------------------------------------------------------------------------------------------
shared=$(nb_shared_series || true)
if [ "$small" = 0 ] && [ -n "$shared" ]; then
  source_files=("$shared"/1-06[0-5].dcm)
  source_desc="shared TCIA series, slices 1-060..1-065 (${#source_files[@]} instances per study)"
else
  source_files=("$(nb_fixture_series)"/*.dcm)
  source_desc="committed fixture tests/data/tcia-kidney-slices (${#source_files[@]} instances per study)"
fi
nb_log "making $studies studies from the $source_desc"
nb_make_studies "$work/studies" "$studies" "${source_files[@]}"

# --- Orthanc as the hospital PACS ------------------------------------------------------------------------
read -r node_port http_port orthanc_http orthanc_dicom <<<"$(nb_free_ports 4)"
mkdir -p "$work/orthanc/db"
cat >"$work/orthanc/orthanc.json" <<JSON
{
  "Name": "chaos-pacs", "StorageDirectory": "$work/orthanc/db", "IndexDirectory": "$work/orthanc/db",
  "StorageCompression": false, "Plugins": [], "HttpServerEnabled": true, "HttpPort": $orthanc_http,
  "RemoteAccessAllowed": false, "AuthenticationEnabled": false, "DicomServerEnabled": true,
  "DicomAet": "ORTHANC", "DicomPort": $orthanc_dicom, "DicomCheckCalledAet": false,
  "DicomAlwaysAllowEcho": true, "DicomAlwaysAllowStore": true,
  "DicomModalities": { "nephra": ["NEPHRA", "127.0.0.1", $node_port] },
  "StableAge": 1, "ConcurrentJobs": 2
}
JSON
Orthanc "$work/orthanc/orthanc.json" >"$work/orthanc/orthanc.log" 2>&1 &
orthanc_pid=$!
nb_track "$orthanc_pid"
nb_wait_http "http://127.0.0.1:$orthanc_http/system" 30 || { tail -20 "$work/orthanc/orthanc.log"; nb_die "Orthanc did not start"; }
orthanc_url=http://127.0.0.1:$orthanc_http

# --- the node --------------------------------------------------------------------------------------------
if [ "$findings" = 1 ]; then
  manifest=${NEPHRA_MODEL:-$root/models/nephra-kidney.json}
  mkdir -p "$work/model"
  ln -s "$(dirname "$(realpath "$manifest")")/$("$NB_PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["onnx"])' "$manifest")" "$work/model/"
  "$NB_PY" - "$manifest" "$work/model/nephra-kidney.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
m["decision_thresholds"]["Cyst"] = 0.0
m["study_rule"]["min_run_slices"]["Cyst"] = 1
json.dump(m, open(sys.argv[2], "w"), indent=1)
PY
  export NEPHRA_MODEL=$work/model/nephra-kidney.json
fi
cfg=$work/nephra.toml
nb_node_config "$cfg" "$node_port" "$http_port" "$work/spool" 2 \
  "[[peers]]
ae_title = \"ORTHANC\"
host = \"127.0.0.1\"
port = $orthanc_dicom"
log=$work/nephrad.log
node_pid=""
starts=0
start_offset=0
cut_lib=$build/tests/libnephra_powercut.so
cuts_log=$work/power-cuts.txt
if [ "$powercut" = 1 ]; then
  [ -f "$cut_lib" ] || nb_die "$cut_lib is missing: build the tests (cmake --build ... --target nephra_powercut)"
  mkdir -p "$work/spool" "$work/powercut/base"
  spool_real=$(realpath "$work/spool")
fi
start_node() {
  start_offset=$(stat -c %s "$log" 2>/dev/null || echo 0)
  if [ "$powercut" = 1 ]; then
    local records=$work/powercut/run
    rm -rf "$records" && mkdir -p "$records"
    local sync_parent=$((starts % 2))
    cut_model=$([ "$sync_parent" = 1 ] && echo ext4-nojournal || echo strict)
    LD_PRELOAD=$cut_lib NEPHRA_POWERCUT_ROOT=$spool_real NEPHRA_POWERCUT_RECORDS=$records \
      NEPHRA_POWERCUT_FORGET=$forget NEPHRA_POWERCUT_SYNC_PARENT=$sync_parent \
      "$nephrad" --config "$cfg" >>"$log" 2>&1 &
  else
    "$nephrad" --config "$cfg" >>"$log" 2>&1 &
  fi
  node_pid=$!
  nb_track "$node_pid"
  starts=$((starts + 1))
}
node_ready_since_start() { tail -c +"$((start_offset + 1))" "$log" 2>/dev/null | grep -q NODE_READY; }
start_node
nb_wait_http "http://127.0.0.1:$http_port/healthz" 30 || { tail -20 "$log"; nb_die "nephrad did not start"; }

# --- senders: storescu as the archive, re-run until every file of the study is acknowledged ----------------
export TCP_NODELAY=1
mkdir -p "$work/acks" "$work/storescu"
send_study() {  # $1 = study index, $2 = name of this sending (its acks file); re-runs storescu until all acked
  local i=$1 tag=$2 runs=0 files n
  files=("$work/studies/$i"/*.dcm)
  n=${#files[@]}
  while :; do
    runs=$((runs + 1))
    local slog=$work/storescu/$tag.$runs.log
    storescu -v -aet ORTHANC -aec NEPHRA -nh -R -to 10 -ta 10 -td 10 127.0.0.1 "$node_port" "${files[@]}" >"$slog" 2>&1 &
    local spid=$!
    nb_track "$spid"
    wait "$spid"
    nb_acked_files "$slog" >>"$work/acks/$tag"
    [ "$(sort -u "$work/acks/$tag" | wc -l)" -ge "$n" ] && break
    sleep 0.3
  done
  echo "$tag $runs" >>"$work/runs.txt"
}
# Pace the senders so that the studies spread over the whole kill window (about 1.7 s per kill): a random pause
# before each study, on average what leaves each sender's share of the window after ~0.5 s of sending.
pause_avg_ms=$(( 1700 * kills * senders / studies - 500 ))
[ "$pause_avg_ms" -lt 200 ] && pause_avg_ms=200
# After each study, one time in four, the sender also sends one of its earlier studies again in full (an archive
# re-sending a study): when that study was already sealed, this makes a later round whose results must replace,
# not duplicate, the first ones in Orthanc.
sender() {  # $1 = sender number: sends studies s, s+senders, ... with a random pause between studies
  local s=$1 i ms again
  for ((i = s; i <= studies; i += senders)); do
    ms=$((RANDOM * 2 * pause_avg_ms / 32768))
    sleep "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"
    send_study "$i" "$i"
    if [ $((RANDOM % 4)) -eq 0 ]; then
      again=$((s + senders * (RANDOM % ((i - s) / senders + 1))))
      send_study "$again" "$again.again.$i"
    fi
  done
}
sender_pids=()
for s in $(seq 1 "$senders"); do
  sender "$s" &
  sender_pids+=($!)
  nb_track "$!"
done

# --- the killer --------------------------------------------------------------------------------------------
nb_log "nephrad pid $node_pid, Orthanc DICOM $orthanc_dicom; $kills kills, $senders senders"
kills_done=0
kills_before_ready=0
for k in $(seq 1 "$kills"); do
  ms=$((200 + RANDOM % 2801))
  sleep "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"
  node_ready_since_start || kills_before_ready=$((kills_before_ready + 1))
  kill -KILL "$node_pid" 2>/dev/null
  wait "$node_pid" 2>/dev/null
  kills_done=$((kills_done + 1))
  if [ "$powercut" = 1 ]; then  # the spool as the power cut left it; the next run starts from (a copy of) it
    rm -rf "$work/spool.cut"
    if ! kept=$("$NB_PY" "$root/tests/powercut/rebuild.py" "$work/powercut/run" "$work/powercut/base" "$work/spool.cut" \
      2>"$work/rebuild.err"); then
      keep=1
      cat "$work/rebuild.err" >&2
      nb_die "rebuild.py failed after cut $k (records in $work/powercut/run)"
    fi
    echo "cut $k ($cut_model): $kept" >>"$cuts_log"
    rm -rf "$work/spool" "$work/powercut/base"
    mv "$work/spool.cut" "$work/spool"
    cp -a "$work/spool" "$work/powercut/base"
  fi
  start_node
  [ $((k % 10)) -eq 0 ] && nb_log "$k kills, $(grep -vc again "$work/runs.txt" 2>/dev/null || echo 0)/$studies studies sent"
done
kill_phase_end=$(nb_now)
nb_wait_http "http://127.0.0.1:$http_port/healthz" 30 || { tail -20 "$log"; nb_die "nephrad did not come back after the last kill"; }

# --- let everything finish ---------------------------------------------------------------------------------
nb_log "kills done; waiting for the senders"
for p in "${sender_pids[@]}"; do wait "$p"; done
nb_log "all $studies studies acknowledged; waiting for the node to become idle"
idle_timeout=$((300 + 3 * studies))
idle_start=$(date +%s)
quiet=0
while :; do
  q=$(nb_metric "$http_port" nephra_queue_depth)
  j=$(nb_metric "$http_port" nephra_jobs_running)
  r=$(nb_metric "$http_port" nephra_results_pending)
  a=$(nb_metric "$http_port" nephra_associations_active)
  open_n=$(nb_open_instances "$work/spool")
  undone=$(nb_rounds_not_done "$work/spool")
  if ! nb_is_ours "$orthanc_pid"; then
    wait "$orthanc_pid"
    nb_log "Orthanc (pid $orthanc_pid) is gone, exit status $?"
    break
  fi
  if [ "$q" = 0 ] && [ "$j" = 0 ] && [ "$r" = 0 ] && [ "$a" = 0 ] && [ "$open_n" = 0 ] && [ "$undone" = 0 ]; then
    quiet=$((quiet + 1))
    [ "$quiet" -ge 3 ] && break
  else
    quiet=0
  fi
  if [ $(( $(date +%s) - idle_start )) -ge "$idle_timeout" ]; then
    nb_log "not idle after ${idle_timeout}s: queue=$q jobs=$j pending=$r associations=$a open=$open_n rounds_not_done=$undone"
    break
  fi
  sleep 1
done
idle_s=$(( $(date +%s) - idle_start ))

# --- verify ------------------------------------------------------------------------------------------------
cat "$work"/acks/* >"$work/acked.txt"
verify_json=$("$NB_PY" "$root/bench/lib/verify.py" --spool "$work/spool" --manifest "$work/studies/manifest.tsv" \
  --acked "$work/acked.txt" --calling-ae ORTHANC --orthanc "$orthanc_url" 2>"$work/verify.err")
verify_rc=$?
[ -s "$work/verify.err" ] && sed -n '1,40p' "$work/verify.err" >&2
[ -n "$verify_json" ] || { cat "$work/verify.err" >&2; nb_die "verify.py failed"; }

storescu_runs=$(awk '{ s += $2 } END { print s + 0 }' "$work/runs.txt")
resent=$(awk '$1 !~ /again/ && $2 > 1 { n++ } END { print n + 0 }' "$work/runs.txt")
again=$(grep -c again "$work/runs.txt" || true)
count() { grep -c "$1" "$log" || true; }
duration=$(nb_elapsed "$started_at")
kill_window=$(echo "$kill_phase_end - $started_at" | bc -l | xargs printf '%.0f')
field() { "$NB_PY" -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$verify_json" "$1"; }

echo
echo "== chaos: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $("$nephrad" --version 2>/dev/null | head -n 1)"
echo "CT:                           $source_desc"
echo "kills (SIGKILL) survived:     $kills_done (of which $kills_before_ready before NODE_READY), node starts $starts"
if [ "$powercut" = 1 ]; then
  emptied=$(awk '{ for (i = 3; i <= NF; i++) if ($i ~ /^files_emptied=/) { split($i, kv, "="); s += kv[2] } } END { print s + 0 }' "$cuts_log")
  echo "power cuts:                   $kills_done: the spool rebuilt from what fsync made durable after each; $emptied files were left empty (named, never synced)${forget:+; fsyncs of paths containing '$forget' forgotten}"
fi
echo "studies:                      $(field studies) ($resent needed a re-run of storescu after a kill; $again sent again in full later; $storescu_runs storescu runs)"
echo "instances acknowledged:       $(field instances_acknowledged) of $(field instances_prepared)"
echo "instances lost:               $(field instances_lost)"
echo "rounds:                       $(field rounds) ($(field studies_with_several_rounds) studies with more than one round)"
echo "results made / in Orthanc:    SR $(field sr_instances_made) / $(field sr_instances_in_archive), SC $(field sc_instances_made) / $(field sc_instances_in_archive)"
echo "studies right in Orthanc:     $(field studies_one_sr_and_one_sc_series) with one SR + one SC series, $(field studies_one_sr_series_no_heatmaps) with one SR series and no heatmap"
echo "studies wrong in Orthanc:     $(field studies_wrong_in_archive)"
echo "stuck:                        tmp $(field spool_tmp_files), open $(field open_instances_left), rounds not done $(field rounds_not_done), failed $(field rounds_failed), unsent $(field results_unsent), dead letter $(field dead_letter)"
echo "node log:                     STUDY_LATE_INSTANCE $(count STUDY_LATE_INSTANCE), JOB_REQUEUED $(count JOB_REQUEUED), JOB_FAILED $(count JOB_FAILED), RESULT_DELIVERED $(count RESULT_DELIVERED), RESULT_RETRY $(count RESULT_RETRY)"
echo "load average at start:        $loadavg_start (2-core machine; anything else running slows the node down)"
echo "duration:                     ${duration} s (kills over the first ${kill_window} s, idle ${idle_s} s after the last send)"
echo "verify:                       $verify_json"
if [ "$verify_rc" -ne 0 ]; then
  echo "RESULT: FAIL (work folder kept: $work)"
  keep=1
  exit 1
fi
echo "RESULT: OK"
