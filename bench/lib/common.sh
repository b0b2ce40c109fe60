# Shared helpers for bench/chaos.sh and bench/load.sh (sourced, not run). Loopback only; every process started
# here is recorded by PID and start time in $NB_PIDS_FILE and stopped by PID in nb_cleanup, only if it is still
# that same process.
# shellcheck shell=bash

NB_ROOT=${NB_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
NB_PY=/usr/bin/python3
[ -x "$NB_PY" ] || NB_PY=python3

nb_log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
nb_die() { nb_log "FATAL: $*"; exit 2; }
nb_now() { date +%s.%N; }
nb_elapsed() { echo "$(nb_now) - $1" | bc -l | xargs printf '%.1f'; }

nb_require() {
  local t
  for t in "$@"; do command -v "$t" >/dev/null || nb_die "$t is missing (scripts/install-deps.sh installs it)"; done
}

# N free TCP ports on 127.0.0.1 (bound together, so they are distinct; released at once).
nb_free_ports() {
  "$NB_PY" - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# N UIDs under 2.25 (UUID-derived: unique without a registered root).
nb_uids() {
  "$NB_PY" -c 'import sys, uuid; print("\n".join("2.25.%d" % uuid.uuid4().int for _ in range(int(sys.argv[1]))))' "$1"
}

# Start time (clock ticks since boot) of a PID, or empty: with the PID it names one process, even after the PID is
# recycled (this machine's pid_max is 32768 and tests spawn thousands of processes).
nb_starttime() { sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20; }

# Remember a PID (with its start time) to stop at exit.
nb_track() { echo "$1 $(nb_starttime "$1")" >>"$NB_PIDS_FILE"; }

# Is PID still the process we tracked (not exited, not recycled)?
nb_is_ours() {
  local now
  now=$(nb_starttime "$1")
  [ -n "$now" ] && grep -q "^$1 $now\$" "$NB_PIDS_FILE" 2>/dev/null
}

# Stop every tracked process that is still the one we started (TERM, then KILL after 5 s), one PID at a time.
nb_cleanup() {
  [ -f "${NB_PIDS_FILE:-}" ] || return 0
  local pid start alive=()
  while read -r pid start; do
    [ -n "$start" ] && [ "$(nb_starttime "$pid")" = "$start" ] && kill -TERM "$pid" 2>/dev/null && alive+=("$pid $start")
  done < <(sort -u "$NB_PIDS_FILE")
  local i entry
  for i in $(seq 1 50); do
    local left=()
    for entry in "${alive[@]}"; do
      [ "$(nb_starttime "${entry% *}")" = "${entry#* }" ] && left+=("$entry")
    done
    [ ${#left[@]} -eq 0 ] && break
    alive=("${left[@]}")
    sleep 0.1
  done
  for entry in "${alive[@]}"; do
    [ "$(nb_starttime "${entry% *}")" = "${entry#* }" ] && kill -KILL "${entry% *}" 2>/dev/null
  done
  return 0
}

# Wait until an HTTP URL answers 200 (or the timeout in seconds passes); returns non-zero on timeout.
nb_wait_http() {
  local url=$1 timeout=${2:-30} start
  start=$(date +%s)
  until curl -sf -o /dev/null --max-time 2 "$url"; do
    [ $(( $(date +%s) - start )) -ge "$timeout" ] && return 1
    sleep 0.1
  done
}

# One value of the node's /metrics (first sample of that name), or empty.
nb_metric() {
  curl -s --max-time 5 "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n { print $2; exit }'
}

# Write a nephrad config: nb_node_config FILE PORT HTTP_PORT SPOOL STABLE PEERS_TOML [EXTRA_TOML]
nb_node_config() {
  cat >"$1" <<TOML
[node]
ae_title = "NEPHRA"
bind = "127.0.0.1"
port = $2
spool_dir = "$4"
shutdown_grace_seconds = 5
[study]
stable_seconds = $5
[engine]
model = "${NEPHRA_MODEL:-$NB_ROOT/models/nephra-kidney.json}"
[results]
retry_initial_seconds = 0.5
retry_max_seconds = 2
timeout_seconds = 10
[http]
port = $3
[log]
level = "info"
target = "console"
${7:-}
$6
TOML
}

# Where the CT comes from: the shared 134-slice TCIA series, or the committed 5-slice fixture.
nb_shared_series() {
  local d=${NEPHRA_SHARED:-$NB_ROOT/../shared}/data/dicom/tcia-pancreatic-ct-cbct-seg-001
  [ -d "$d" ] && echo "$d"
}
nb_fixture_series() { echo "$NB_ROOT/tests/data/tcia-kidney-slices"; }

# nb_make_studies OUT_DIR COUNT FILES... : COUNT copies of FILES, each a distinct study (one new Study and Series
# Instance UID per copy, a new SOP Instance UID per file, rewritten with dcmodify). Writes OUT_DIR/manifest.tsv:
# study index, Study Instance UID, SOP Instance UID, file.
nb_make_studies() {
  local out=$1 count=$2
  shift 2
  mkdir -p "$out"
  local uids i
  mapfile -t uids < <(nb_uids $((2 * count)))
  : >"$out/manifest.tsv"
  for i in $(seq 1 "$count"); do
    local d=$out/$i study=${uids[$(((i - 1) * 2))]} series=${uids[$(((i - 1) * 2 + 1))]}
    mkdir -p "$d"
    cp "$@" "$d/"
    chmod u+w "$d"/*
    dcmodify -nb -q -m "(0020,000d)=$study" -m "(0020,000e)=$series" -gin "$d"/*.dcm \
      || nb_die "dcmodify failed on $d"
    dcmdump -q +F +P 0008,0018 "$d"/*.dcm | awk -v i="$i" -v st="$study" '
      /^# dcmdump/ { f = $NF }
      /^\(0008,0018\)/ { u = $0; sub(/^[^[]*\[/, "", u); sub(/\].*$/, "", u); print i "\t" st "\t" u "\t" f }' \
      >>"$out/manifest.tsv"
  done
  [ "$(wc -l <"$out/manifest.tsv")" -eq $((count * $#)) ] || nb_die "manifest of $out is incomplete"
}

# Paths storescu got a Success response for, from its -v log.
nb_acked_files() {
  awk '/Sending file: / { f = $0; sub(/.*Sending file: /, "", f) }
       /Received Store Response \(Success\)/ { if (f != "") print f; f = "" }' "$@"
}

# Peak and current memory of a PID, in MiB: "VmHWM VmRSS".
nb_mem_mib() {
  awk '/^VmHWM:/ { h = $2 } /^VmRSS:/ { r = $2 } END { printf "%.0f %.0f\n", h / 1024, r / 1024 }' "/proc/$1/status" 2>/dev/null
}

# The nephrad to run (NEPHRA_BUILD, default the release build) in $nephrad, and a scratch folder for this run in
# $work whose processes are stopped, and which is removed (unless $keep is 1), when the script exits.
nb_begin_run() {  # NAME TOOL...
  local name=$1
  shift
  build=${NEPHRA_BUILD:-$root/build/release}
  nephrad=$build/app/nephrad
  [ -x "$nephrad" ] || nb_die "$nephrad not built: nice -n 5 cmake --build --preset release -j 2 --target nephrad"
  nb_require "$@"
  work=$(mktemp -d "${TMPDIR:-/var/tmp}/nephra-$name-XXXXXX")
  export NB_PIDS_FILE=$work/pids
  : >"$NB_PIDS_FILE"
  trap nb_finish_run EXIT
  trap 'exit 130' INT TERM
}

nb_finish_run() {
  nb_cleanup
  if [ "${keep:-0}" = 1 ]; then nb_log "kept $work"; else rm -rf "$work"; fi
}

# Instances of a spool still in an open (unsealed) round.
nb_open_instances() {  # SPOOL
  find "$1/studies" -path '*/open/*.dcm' 2>/dev/null | wc -l
}

# Sealed rounds of a spool still to classify or deliver (their state.json says sealed or classified).
nb_rounds_not_done() {  # SPOOL
  local rd n=0
  for rd in "$1/studies"/*/rounds/*; do
    [ -d "$rd" ] && grep -qE '"state": *"(sealed|classified)"' "$rd/state.json" 2>/dev/null && n=$((n + 1))
  done
  echo "$n"
}
