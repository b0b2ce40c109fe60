#!/usr/bin/env bash
# bench/hostile.sh [--keep]
#
# What hostile or broken peers cost everybody else, each figure beside its reference from the same run:
#  1. Intake while callers dribble. One storescu association sends a study (the shared 134-slice TCIA series, or
#     the 5-slice fixture 20 times over); instances per second with 8 connections from another address (127.0.0.2)
#     dribbling an association request one byte every 2 s the whole time (each is cut at the setup deadline and
#     reconnects), against the same without them; three times each, alternating (medians).
#  2. Four deflate bombs at once: four storescu send at the same time a 1 GiB CT data set, Deflated (about 1 MB on
#     the wire), with the default node.max_instance_mb (1024); nephrad's peak resident memory (VmHWM, reset before)
#     against its resident memory before and the 4 GiB the data sets inflate to; a normal study sent meanwhile must
#     be acknowledged.
#  3. A hung archive beside a healthy one. Two archives send a study each at the same moment: GOOD (a storescp)
#     and HUNG (accepts the TCP connection, never answers); results.timeout_seconds = 10. GOOD's latency (its last
#     instance acknowledged to its SR received) against the same without HUNG's study.
# Environment: NEPHRA_BUILD (default build/release), NEPHRA_SHARED.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib/common.sh
. "$root/bench/lib/common.sh"

keep=0
[ "${1:-}" = --keep ] && keep=1
nb_begin_run hostile storescu storescp dcmodify dcmdump curl bc
raw_scu=$root/tests/tools/raw_scu.py
export TCP_NODELAY=1

shared=$(nb_shared_series || true)
if [ -n "$shared" ]; then
  source_files=("$shared"/*.dcm)
  copies=1
  source_desc="shared TCIA series (${#source_files[@]} instances)"
else
  source_files=("$(nb_fixture_series)"/*.dcm)
  copies=20
  source_desc="committed fixture, 20 copies of 5 slices"
fi

# --- node 1: intake (quiet period long enough that nothing is classified while we measure) ----------------
read -r port http_port good_port hung_port port2 http2 <<<"$(nb_free_ports 6)"
nb_node_config "$work/node1.toml" "$port" "$http_port" "$work/spool1" 600 \
  "[[peers]]
ae_title = \"STORESCU\"
host = \"127.0.0.1\"
port = 1"
"$nephrad" --config "$work/node1.toml" >"$work/node1.log" 2>&1 &
node_pid=$!
nb_track "$node_pid"
nb_wait_http "http://127.0.0.1:$http_port/healthz" 30 || { tail "$work/node1.log"; nb_die "nephrad did not start"; }

nb_log "making 7 studies from the $source_desc"
studies_files=()
for c in $(seq 1 "$copies"); do studies_files+=("${source_files[@]}"); done
mkdir -p "$work/src"
i=0
for f in "${studies_files[@]}"; do i=$((i + 1)); cp "$f" "$work/src/$i.dcm"; done
nb_make_studies "$work/studies" 7 "$work/src"/*.dcm
rm -rf "$work/src"

send_rate() {  # STUDY_DIR LOG -> instances per second of one storescu association
  local files=("$1"/*.dcm) t0 t1 acked
  t0=$(nb_now)
  storescu -v -aet STORESCU -aec NEPHRA -nh 127.0.0.1 "$port" "${files[@]}" >"$2" 2>&1
  t1=$(nb_now)
  acked=$(nb_acked_files "$2" | wc -l)
  [ "$acked" -eq "${#files[@]}" ] || nb_log "only $acked of ${#files[@]} acknowledged ($2)"
  echo "$acked / ($t1 - $t0)" | bc -l | xargs printf '%.0f'
}

dribblers_on=0
dribble_loop() {  # one connection slot kept dribbling until the flag file goes away
  while [ -f "$work/dribbling" ]; do
    RAW_SCU_SOURCE=127.0.0.2 "$NB_PY" "$raw_scu" 127.0.0.1 "$port" X NEPHRA dribble >>"$work/dribble.log" 2>&1
    sleep 0.5  # a refused caller comes back, but not in a loop that would take the CPU from the node
  done
}
start_dribblers() {
  touch "$work/dribbling"
  dribble_pids=()
  for _ in 1 2 3 4 5 6 7 8; do
    dribble_loop 2>/dev/null &
    dribble_pids+=($!)
    nb_track "$!"
  done
  sleep 3
  dribblers_on=$(nb_metric "$http_port" nephra_connections_waiting)
}
stop_dribblers() {
  rm -f "$work/dribbling"
  pkill -f "raw_scu.py 127.0.0.1 $port X NEPHRA dribble" 2>/dev/null
  for p in "${dribble_pids[@]}"; do wait "$p" 2>/dev/null; done
  for _ in $(seq 1 50); do  # until the node has seen them go
    [ "$(nb_metric "$http_port" nephra_connections_waiting)" = 0 ] && break
    sleep 0.1
  done
}

warm=$(send_rate "$work/studies/1" "$work/warm.log")
plain=()
dribbled=()
waiting=()
for k in 1 2 3; do
  plain+=("$(send_rate "$work/studies/$((2 * k))" "$work/plain$k.log")")
  start_dribblers
  waiting+=("$dribblers_on")
  dribbled+=("$(send_rate "$work/studies/$((2 * k + 1))" "$work/dribbled$k.log")")
  stop_dribblers
done

# --- 2. four deflate bombs at once --------------------------------------------------------------------------
nb_log "making a 1 GiB CT data set, Deflated"
"$NB_PY" "$root/tests/tools/make_big_ct.py" "$work/bomb.dcm" 4096 4096 32 deflated || nb_die "make_big_ct.py failed"
bomb_kb=$(( $(stat -c %s "$work/bomb.dcm") / 1024 ))
echo 5 >"/proc/$node_pid/clear_refs" 2>/dev/null || nb_log "cannot reset VmHWM (clear_refs): the peak includes earlier runs"
read -r _ rss_before <<<"$(nb_mem_mib "$node_pid")"
bomb_pids=()
for b in 1 2 3 4; do
  storescu -v -xd -aet STORESCU -aec NEPHRA -nh 127.0.0.1 "$port" "$work/bomb.dcm" >"$work/bomb$b.log" 2>&1 &
  bomb_pids+=($!)
  nb_track "$!"
done
sleep 0.5
normal=$(send_rate "$work/studies/1" "$work/during-bombs.log")
for p in "${bomb_pids[@]}"; do wait "$p"; done
read -r peak_bombs _ <<<"$(nb_mem_mib "$node_pid")"
refused=$(grep -c "status=0xA700 inflated_mb=" "$work/node1.log" || true)
normal_acked=$(nb_acked_files "$work/during-bombs.log" | wc -l)

# --- 3. a hung archive beside a healthy one -----------------------------------------------------------------
mkdir -p "$work/good"
storescp -aet GOOD -od "$work/good" "$good_port" >"$work/storescp.log" 2>&1 &
nb_track "$!"
"$NB_PY" -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16)
held = []
while True:
    held.append(s.accept()[0])  # accepted, never read, never answered
' "$hung_port" &
nb_track "$!"
nb_node_config "$work/node2.toml" "$port2" "$http2" "$work/spool2" 1 \
  "[[peers]]
ae_title = \"GOOD\"
host = \"127.0.0.1\"
port = $good_port
[[peers]]
ae_title = \"HUNG\"
host = \"127.0.0.1\"
port = $hung_port"
"$nephrad" --config "$work/node2.toml" >"$work/node2.log" 2>&1 &
nb_track "$!"
nb_wait_http "http://127.0.0.1:$http2/healthz" 30 || { tail "$work/node2.log"; nb_die "second nephrad did not start"; }
fixture=("$(nb_fixture_series)"/*.dcm)
nb_make_studies "$work/small" 4 "${fixture[@]}"

good_latency() {  # STUDY_DIR [HUNG_STUDY_DIR] -> seconds from GOOD's last acknowledgement to its SR at storescp
  local before t0 hung_pid=""
  before=$(find "$work/good" -name 'SR*' | wc -l)
  if [ -n "${2:-}" ]; then
    storescu -aet HUNG -aec NEPHRA -nh 127.0.0.1 "$port2" "$2"/*.dcm >/dev/null 2>&1 &
    hung_pid=$!
  fi
  storescu -aet GOOD -aec NEPHRA -nh 127.0.0.1 "$port2" "$1"/*.dcm >/dev/null 2>&1
  t0=$(nb_now)
  [ -n "$hung_pid" ] && wait "$hung_pid"
  for _ in $(seq 1 600); do
    [ "$(find "$work/good" -name 'SR*' | wc -l)" -gt "$before" ] && break
    sleep 0.1
  done
  nb_elapsed "$t0"
}
alone=$(good_latency "$work/small/1")
beside=$(good_latency "$work/small/2" "$work/small/3")
sleep 12
beside_later=$(good_latency "$work/small/4")  # HUNG's delivery is now retrying: GOOD must still not wait on it
hung_retry=$(grep -c "RESULT_RETRY" "$work/node2.log" || true)

ratio() { echo "$1 / $2" | bc -l | xargs printf '%.2f'; }
median3() { printf '%s\n' "$@" | sort -n | sed -n 2p; }
plain_median=$(median3 "${plain[@]}")
dribbled_median=$(median3 "${dribbled[@]}")
delta() { echo "$1 - $2" | bc -l | xargs printf '%+.1f'; }
echo
echo "== hostile: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $("$nephrad" --version | head -n 1), build $(basename "$build"), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "1. intake, one association, $source_desc per study (warm-up $warm/s)"
echo "   alone:                      ${plain[*]} instances/s"
echo "   8 callers dribbling:        ${dribbled[*]} instances/s (nephra_connections_waiting ${waiting[*]})"
echo "   ratio dribbling / alone:    $(ratio "$dribbled_median" "$plain_median") (medians)"
echo "2. four deflate bombs at once: 4 x 1024 MiB decoded, ${bomb_kb} KiB each on the wire"
echo "   refused (0xA700 inflated):  $refused of 4"
echo "   nephrad RSS before:         $rss_before MiB"
echo "   nephrad peak RSS (VmHWM):   $peak_bombs MiB (target < 1024; the data sets inflate to 4096 MiB: ratio $(ratio "$peak_bombs" 4096))"
echo "   normal study meanwhile:     $normal_acked of ${#studies_files[@]} acknowledged, $normal instances/s"
echo "3. results to GOOD, results.timeout_seconds = 10 (seconds from GOOD's last acknowledgement to its SR received)"
echo "   GOOD alone:                 $alone s"
echo "   HUNG's study at once:       $beside s ($(delta "$beside" "$alone") s)"
echo "   HUNG retrying meanwhile:    $beside_later s ($(delta "$beside_later" "$alone") s; RESULT_RETRY lines $hung_retry)"
