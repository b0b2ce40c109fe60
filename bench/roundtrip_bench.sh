#!/usr/bin/env bash
# Latency from the last instance acknowledged by the node to the SR stored in a real Orthanc, minus the quiet period
# (study.stable_seconds; delivered = the node's RESULT_DELIVERED, once Orthanc acknowledged every result), for the 134-slice TCIA series and a ~500-slice study (the series repeated with new series
# and instance UIDs in the same study). The node's log gives the breakdown (classify, write results, deliver).
#   bench/roundtrip_bench.sh build/release [SERIES_DIR]
#   NEPHRA_BENCH_LARGE=1 also runs 1,000- and 2,000-slice studies and prints the node's peak RSS for each.
#   NEPHRA_BENCH_MODEL=FILE runs the node with another model manifest (absolute path) instead of the shipped one.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build/release}"
series="${2:-../shared/data/dicom/tcia-pancreatic-ct-cbct-seg-001}"
work=$(mktemp -d)
trap 'kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
node_port=$(free_port); pacs_port=$(free_port); http_port=$(free_port)
stable=1

cat > "$work/orthanc.json" <<JSON
{"Name":"bench-pacs","StorageDirectory":"$work/db","IndexDirectory":"$work/db","StorageCompression":false,
 "Plugins":[],"HttpPort":$http_port,"RemoteAccessAllowed":false,"AuthenticationEnabled":false,
 "DicomAet":"ORTHANC","DicomPort":$pacs_port,"DicomCheckCalledAet":false,"DicomAlwaysAllowStore":true,
 "DicomModalities":{"nephra":["NEPHRA","127.0.0.1",$node_port]}}
JSON
cat > "$work/nephra.toml" <<TOML
[node]
port = $node_port
spool_dir = "$work/spool"
[study]
stable_seconds = $stable
[engine]
model = "${NEPHRA_BENCH_MODEL:-$PWD/models/nephra-kidney.json}"
threads = ${NEPHRA_ENGINE_THREADS:-0}
[[peers]]
ae_title = "ORTHANC"
host = "127.0.0.1"
port = $pacs_port
TOML
Orthanc "$work/orthanc.json" > "$work/orthanc.log" 2>&1 & echo $! > "$work/orthanc.pid"
"$build/app/nephrad" --config "$work/nephra.toml" > "$work/nephrad.log" 2>&1 & echo $! > "$work/nephrad.pid"
until curl -sf "http://127.0.0.1:$http_port/system" >/dev/null; do sleep 0.1; done
until grep -q NODE_READY "$work/nephrad.log"; do sleep 0.1; done

make_study() {  # $1 = copies of the series, $2 = max files; all copies share a new study UID
  local dir="$work/study$1" study
  study=$(/usr/bin/python3 -c 'import uuid; print("2.25." + str(uuid.uuid4().int))')
  mkdir -p "$dir"
  for ((c = 0; c < $1; c++)); do
    mkdir -p "$dir/c$c"; cp "$series"/*.dcm "$dir/c$c/"
    dcmodify -nb -q -m "StudyInstanceUID=$study" -gse -gin "$dir/c$c"/*.dcm
  done
  find "$dir" -name '*.dcm' | sort | head -n "$2" > "$dir.list"
  echo "$dir.list"
}

sr_count() {
  curl -sf -X POST "http://127.0.0.1:$http_port/tools/find" -d '{"Level":"Instance","Query":{"Modality":"SR"}}' |
    /usr/bin/python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'
}

run_case() {  # $1 = label, $2 = file list
  local before delivered n t0 t1
  before=$(sr_count); n=$(wc -l < "$2")
  delivered=$(grep -c RESULT_DELIVERED "$work/nephrad.log" || true)
  TCP_NODELAY=1 storescu -aet ORTHANC -aec NEPHRA 127.0.0.1 "$node_port" $(cat "$2") > "$work/storescu.log" 2>&1
  t0=$(date +%s.%N)
  # Wait on the node's own log (cheap), then take the delivery time from its timestamp: polling Orthanc with curl
  # and python every 50 ms took most of a core from the node being measured.
  until (( $(grep -c RESULT_DELIVERED "$work/nephrad.log" || true) > delivered )); do sleep 0.2; done
  t1=$(date -d "$(grep RESULT_DELIVERED "$work/nephrad.log" | tail -n 1 | cut -d' ' -f1)" +%s.%N)
  (( $(sr_count) > before )) || { echo "$1: the node says delivered, but Orthanc has no new SR" >&2; exit 1; }
  /usr/bin/python3 - "$1" "$n" "$t0" "$t1" "$stable" "$work/nephrad.log" <<'PY'
import re, sys
label, n, t0, t1, stable, log = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
lines = open(log).read().splitlines()
ms = lambda ev, key="ms": [int(m.group(1)) for l in lines if ev in l for m in [re.search(r" " + key + r"=(\d+)", l)] if m]
latency = t1 - t0 - stable
from datetime import datetime
def at(ev):  # epoch seconds of the last line with this event (the log's local-time stamps)
    hit = [l for l in lines if ev in l][-1]
    return datetime.fromisoformat(hit.split(" ", 1)[0]).timestamp()
stages = (f"stages_s: seal={at('STUDY_STABLE') - t0 - stable:.2f} "
          f"queue+inventory={at('STUDY_CLASSIFIED') - ms('STUDY_CLASSIFIED')[-1] / 1000 - at('STUDY_STABLE'):.2f} "
          f"classify={ms('STUDY_CLASSIFIED')[-1] / 1000:.2f} "
          f"write={(ms('RESULTS_WRITTEN')[-1] - ms('STUDY_CLASSIFIED')[-1]) / 1000:.2f} "
          f"deliver={at('RESULT_DELIVERED') - at('RESULTS_WRITTEN'):.2f}")
print(stages)
print(f"{label}: slices={n} latency_s={latency:.2f} (500-slice target 5 s: ratio {latency / 5:.2f}) "
      f"classify_ms={ms('STUDY_CLASSIFIED')[-1]} classify+results_ms={ms('RESULTS_WRITTEN')[-1]} "
      f"slices_per_s={n / (ms('STUDY_CLASSIFIED')[-1] / 1000):.1f} "
      f"(inference_ms={(ms('STUDY_CLASSIFIED', 'inference_ms') or ['n/a'])[-1]} "
      f"load_wait_ms={(ms('STUDY_CLASSIFIED', 'load_wait_ms') or ['n/a'])[-1]})")
PY
}

peak_rss() { awk '/^VmHWM:/ { printf "%.0f MiB", $2 / 1024 }' "/proc/$(cat "$work/nephrad.pid")/status"; }
reset_peak() { echo 5 > "/proc/$(cat "$work/nephrad.pid")/clear_refs" 2>/dev/null || true; }

run_case "134-slice series" "$(make_study 1 134)"
run_case "500-slice study" "$(make_study 4 500)"
if [ "${NEPHRA_BENCH_LARGE:-0}" = 1 ]; then  # how latency and memory grow with the study
  for n in 1000 2000; do
    reset_peak
    run_case "$n-slice study" "$(make_study $(( (n + 133) / 134 )) "$n")"
    echo "  nephrad peak RSS during the $n-slice study: $(peak_rss)"
  done
fi
