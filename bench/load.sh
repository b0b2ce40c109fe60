#!/usr/bin/env bash
# bench/load.sh [SENDERS] [STUDIES] [--small] [--keep]
#
# Many archives at once. SENDERS (default 8) concurrent storescu senders, each with its own calling AE (all
# declared as [[peers]] of the release nephrad), each send STUDIES (default 20) distinct studies, one association
# per study. The results go back to a DCMTK storescp started here (loopback, free port) that every peer entry
# points to. Measured: total wall time (first instance sent -> node idle with every result delivered), instances/s
# received (while the senders ran), studies/s classified and delivered (end to end), slices/s classified, peak RSS
# of nephrad (VmHWM at the end, and the highest VmRSS sampled every 0.5 s). Verified: every acknowledged instance
# is in the spool, every round is done with results.json, and storescp received exactly the SR (one SR series)
# and SC instances the node made for each study. Exit status non-zero on any loss.
#
# CT: the shared 134-slice TCIA series per study when ../shared is present (8 x 20 = 21,440 instances, about
# 11 GB written twice: the prepared copies and the spool), else or with --small the committed 5-slice fixture.
# Environment: NEPHRA_BUILD (default build/release), NEPHRA_SHARED, NEPHRA_MODEL, TMPDIR (work folder,
# default /var/tmp).
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib/common.sh
. "$root/bench/lib/common.sh"

senders=8
per_sender=20
small=0
keep=0
pos=()
while [ $# -gt 0 ]; do
  case $1 in
    --small) small=1 ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) [[ $1 =~ ^[0-9]+$ ]] || nb_die "unknown argument $1"; pos+=("$1") ;;
  esac
  shift
done
[ ${#pos[@]} -ge 1 ] && senders=${pos[0]}
[ ${#pos[@]} -ge 2 ] && per_sender=${pos[1]}
studies=$((senders * per_sender))

nb_begin_run load storescp storescu dcmodify dcmdump curl bc

# --- the CT ------------------------------------------------------------------------------------------------
shared=$(nb_shared_series || true)
if [ "$small" = 0 ] && [ -n "$shared" ]; then
  source_files=("$shared"/*.dcm)
  source_desc="shared TCIA series, ${#source_files[@]} instances per study"
else
  source_files=("$(nb_fixture_series)"/*.dcm)
  source_desc="committed 5-slice fixture tests/data/tcia-kidney-slices, ${#source_files[@]} instances per study"
fi
prep_start=$(nb_now)
nb_log "making $studies studies ($source_desc) in $work"
nb_make_studies "$work/studies" "$studies" "${source_files[@]}"
prep_s=$(nb_elapsed "$prep_start")
instances=$(wc -l <"$work/studies/manifest.tsv")
bytes=$(du -sb "$work/studies" | cut -f1)

# --- the archive: DCMTK storescp ---------------------------------------------------------------------------
read -r node_port http_port archive_port <<<"$(nb_free_ports 3)"
export TCP_NODELAY=1
mkdir -p "$work/received"
storescp --fork -aet ARCHIVE -od "$work/received" "$archive_port" >"$work/storescp.log" 2>&1 &
archive_pid=$!
nb_track "$archive_pid"

# --- the node ----------------------------------------------------------------------------------------------
peers=""
: >"$work/ae-map.tsv"
for s in $(seq 1 "$senders"); do
  ae=$(printf 'SENDER%02d' "$s")
  peers+="[[peers]]
ae_title = \"$ae\"
host = \"127.0.0.1\"
port = $archive_port
"
done
for i in $(seq 1 "$studies"); do printf '%s\tSENDER%02d\n' "$i" $(((i - 1) % senders + 1)) >>"$work/ae-map.tsv"; done
cfg=$work/nephra.toml
nb_node_config "$cfg" "$node_port" "$http_port" "$work/spool" 2 "$peers"
"$nephrad" --config "$cfg" >"$work/nephrad.log" 2>&1 &
node_pid=$!
nb_track "$node_pid"
nb_wait_http "http://127.0.0.1:$http_port/healthz" 30 || { tail -20 "$work/nephrad.log"; nb_die "nephrad did not start"; }

# peak RSS sampler
( peak=0
  while kill -0 "$node_pid" 2>/dev/null; do
    r=$(awk '/^VmRSS:/ { print $2 }' "/proc/$node_pid/status" 2>/dev/null)
    [ -n "$r" ] && [ "$r" -gt "$peak" ] && peak=$r && echo "$peak" >"$work/rss-peak-kb"
    sleep 0.5
  done ) &
nb_track "$!"

# --- senders -----------------------------------------------------------------------------------------------
mkdir -p "$work/acks" "$work/storescu"
sender() {  # $1 = sender number; studies s, s+senders, ...: study i is sent by SENDER((i-1)%senders+1)
  local s=$1 ae i
  ae=$(printf 'SENDER%02d' "$s")
  for ((i = s; i <= studies; i += senders)); do
    local files=("$work/studies/$i"/*.dcm) runs=0
    while :; do
      runs=$((runs + 1))
      local slog=$work/storescu/$i.$runs.log
      storescu -v -aet "$ae" -aec NEPHRA -nh -R -to 30 -ta 30 -td 60 127.0.0.1 "$node_port" "${files[@]}" >"$slog" 2>&1 &
      local spid=$!
      nb_track "$spid"
      wait "$spid"
      nb_acked_files "$slog" >>"$work/acks/$i"
      [ "$(sort -u "$work/acks/$i" | wc -l)" -ge "${#files[@]}" ] && break
      [ "$runs" -ge 5 ] && { echo "study $i: not acknowledged after 5 runs" >>"$work/sender-errors"; break; }
      sleep 1
    done
    echo "$i $runs" >>"$work/runs.txt"
  done
}
nb_log "nephrad pid $node_pid; $senders senders x $per_sender studies, results to storescp :$archive_port"
loadavg_start=$(cut -d" " -f1-3 /proc/loadavg)
t0=$(nb_now)
sender_pids=()
for s in $(seq 1 "$senders"); do
  sender "$s" &
  sender_pids+=($!)
  nb_track "$!"
done
for p in "${sender_pids[@]}"; do wait "$p"; done
t_sent=$(nb_now)
nb_log "senders done after $(nb_elapsed "$t0") s; waiting until every study is classified and delivered"

idle_timeout=$((600 + 10 * studies))
quiet=0
while :; do
  q=$(nb_metric "$http_port" nephra_queue_depth)
  j=$(nb_metric "$http_port" nephra_jobs_running)
  r=$(nb_metric "$http_port" nephra_results_pending)
  open_n=$(nb_open_instances "$work/spool")
  undone=$(nb_rounds_not_done "$work/spool")
  for who in archive_pid node_pid; do  # an archive or node that died makes waiting pointless: say how it ended
    if ! nb_is_ours "${!who}"; then
      wait "${!who}"
      rc=$?
      nb_log "$([ "$who" = archive_pid ] && echo storescp || echo nephrad) (pid ${!who}) is gone, exit status $rc$([ "$rc" -gt 128 ] && echo " = signal $((rc - 128))")"
      died="$who"
    fi
  done
  [ -n "${died:-}" ] && break
  if [ "$q" = 0 ] && [ "$j" = 0 ] && [ "$r" = 0 ] && [ "$open_n" = 0 ] && [ "$undone" = 0 ]; then
    quiet=$((quiet + 1))
    [ "$quiet" -ge 2 ] && break
  else
    quiet=0
  fi
  if [ "$(echo "$(nb_now) - $t_sent > $idle_timeout" | bc)" = 1 ]; then
    nb_log "not idle after ${idle_timeout}s: queue=$q jobs=$j pending=$r open=$open_n rounds_not_done=$undone"
    break
  fi
  sleep 1
done
t_idle=$(nb_now)
read -r hwm rss_now <<<"$(nb_mem_mib "$node_pid")"
rss_peak=$(( $(cat "$work/rss-peak-kb" 2>/dev/null || echo 0) / 1024 ))
slices=$(nb_metric "$http_port" nephra_slices_classified_total)
stage_means=$(curl -s --max-time 5 "http://127.0.0.1:$http_port/metrics" | awk '
  /^nephra_stage_duration_seconds_sum\{/ { match($1, /stage="[a-z_]+"/); k = substr($1, RSTART + 7, RLENGTH - 8); sum[k] = $2 }
  /^nephra_stage_duration_seconds_count\{/ { match($1, /stage="[a-z_]+"/); k = substr($1, RSTART + 7, RLENGTH - 8); cnt[k] = $2 }
  END { for (k in cnt) if (cnt[k] > 0) printf "%s %.3f s, ", k, sum[k] / cnt[k] }' | sed 's/, $//')
received_total=$(nb_metric "$http_port" nephra_instances_received_total)

# --- verify ------------------------------------------------------------------------------------------------
cat "$work"/acks/* >"$work/acked.txt"
verify_json=$("$NB_PY" "$root/bench/lib/verify.py" --spool "$work/spool" --manifest "$work/studies/manifest.tsv" \
  --acked "$work/acked.txt" --ae-map "$work/ae-map.tsv" --received "$work/received" 2>"$work/verify.err")
verify_rc=$?
[ -s "$work/verify.err" ] && sed -n '1,40p' "$work/verify.err" >&2
[ -n "$verify_json" ] || { cat "$work/verify.err" >&2; nb_die "verify.py failed"; }
field() { "$NB_PY" -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$verify_json" "$1"; }

send_s=$(echo "$t_sent - $t0" | bc -l)
total_s=$(echo "$t_idle - $t0" | bc -l)
acked=$(field instances_acknowledged)
f1() { printf '%.1f' "$1"; }
f2() { printf '%.2f' "$1"; }
resent=$(awk '$2 > 1 { n++ } END { print n + 0 }' "$work/runs.txt")
classify_ms=$(grep -o 'STUDY_CLASSIFIED .* ms=[0-9]*' "$work/nephrad.log" | sed 's/.*ms=//' | sort -n | awk '{ a[NR] = $1 } END { if (NR) printf "median %.1f s, max %.1f s", a[int((NR + 1) / 2)] / 1000, a[NR] / 1000 }')

echo
echo "== load: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $("$nephrad" --version 2>/dev/null | head -n 1)"
echo "CT:                         $source_desc"
echo "senders x studies:          $senders x $per_sender = $studies studies, $instances instances ($((bytes / 1048576)) MiB), prepared in ${prep_s} s"
echo "instances acknowledged:     $acked (node counted $received_total; $resent studies needed a re-send)"
echo "instances lost:             $(field instances_lost)"
echo "receive window:             $(f1 "$send_s") s -> $(f1 "$(echo "$acked / $send_s" | bc -l)") instances/s, $(f1 "$(echo "$bytes / 1048576 / $send_s" | bc -l)") MiB/s"
echo "total wall time:            $(f1 "$total_s") s (first instance sent -> every result delivered)"
echo "studies classified:         $(f2 "$(echo "$studies / $total_s" | bc -l)") studies/s end to end, $(f1 "$(echo "${slices:-0} / $total_s" | bc -l)") slices/s (${slices:-0} slices); per round: $classify_ms"
echo "mean per stage (metrics):   $stage_means"
echo "load average at start:      $loadavg_start"
echo "peak RSS of nephrad:        VmHWM ${hwm:-?} MiB, highest sampled VmRSS ${rss_peak} MiB (now ${rss_now:-?} MiB)"
echo "rounds:                     $(field rounds) (done: $(( $(field rounds) - $(field rounds_not_done) )), $(field studies_with_several_rounds) studies with more than one round)"
echo "results made / received:    SR $(field sr_instances_made) / $(field sr_instances_in_archive), SC $(field sc_instances_made) / $(field sc_instances_in_archive)"
echo "studies right at storescp:  $(field studies_one_sr_and_one_sc_series) with one SR + one SC series, $(field studies_one_sr_series_no_heatmaps) with one SR series and no heatmap; wrong: $(field studies_wrong_in_archive)"
echo "stuck:                      tmp $(field spool_tmp_files), open $(field open_instances_left), rounds not done $(field rounds_not_done), failed $(field rounds_failed), unsent $(field results_unsent), dead letter $(field dead_letter)"
echo "verify:                     $verify_json"
if [ "$verify_rc" -ne 0 ] || [ -s "$work/sender-errors" ]; then
  [ -s "$work/sender-errors" ] && cat "$work/sender-errors"
  echo "RESULT: FAIL (work folder kept: $work)"
  keep=1
  exit 1
fi
echo "RESULT: OK"
