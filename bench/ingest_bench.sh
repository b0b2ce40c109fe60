#!/usr/bin/env bash
# Instances per second received: nephrad (its data synced, and durably named, before every ack) against DCMTK's
# storescp (TCP_NODELAY set, no fsync), Orthanc (as an archive would receive them) and the disk's own
# durable-write rate for the same files (write a temporary file, fsync, rename into the folder, fsync the folder:
# what nephrad must do per instance, with no network and no DICOM), same disk, same sender, same run.
#   bench/ingest_bench.sh [BUILD_DIR] [COPIES] [REPEATS] [SENDERS]
# SENDERS (default 1): that many storescu associations at once, each sending its share of the studies (and the
# disk script as that many writers at once). NEPHRA_BENCH_NODE: extra lines for the node's [node] table, to compare
# settings (e.g. NEPHRA_BENCH_NODE='max_pdu_bytes = 131072').
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build/release}"
copies="${2:-8}"
repeats="${3:-3}"
senders="${4:-1}"
series="${NEPHRA_SHARED:-$root/../shared}/data/dicom/tcia-pancreatic-ct-cbct-seg-001"
[[ -d "$series" ]] || series="$root/tests/data/tcia-kidney-slices"
work="$(mktemp -d "${TMPDIR:-/var/tmp}/nephra-bench-XXXXXX")"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

# The series repeated as COPIES studies: one new study and series UID per copy, a new instance UID per file
# (dcmodify -gst/-gse would give every file a study of its own: 1,072 one-instance studies, which is not what an
# archive sends and costs the node a study folder per instance).
mkdir -p "$work/in"
for i in $(seq 1 "$copies"); do
  mkdir -p "$work/in/$i" && cp "$series"/*.dcm "$work/in/$i/"
  read -r study_uid series_uid < <(/usr/bin/python3 -c 'import uuid; print("2.25.%d 2.25.%d" % (uuid.uuid4().int, uuid.uuid4().int))')
  dcmodify -nb -m "StudyInstanceUID=$study_uid" -m "SeriesInstanceUID=$series_uid" -gin "$work/in/$i"/*.dcm >/dev/null
done
n=$(find "$work/in" -name '*.dcm' | wc -l)
port=$((20000 + RANDOM % 20000))
export TCP_NODELAY=1

send() { # prints seconds until every sender is done
  local start end s pids=()
  start=$(date +%s.%N)
  for s in $(seq 0 $((senders - 1))); do
    local mine=()
    for i in $(seq 1 "$copies"); do [ $(((i - 1) % senders)) -eq "$s" ] && mine+=("$work/in/$i"); done
    storescu -aet BENCH -aec "$1" +sd +r -R 127.0.0.1 "$port" "${mine[@]}" >/dev/null 2>&1 &
    pids+=($!)
  done
  wait "${pids[@]}"
  end=$(date +%s.%N)
  echo "$end - $start" | bc -l
}

run_storescp() {
  rm -rf "$work/out" && mkdir -p "$work/out"
  storescp -aet STORESCP --fork -od "$work/out" "$port" >/dev/null 2>&1 &
  local pid=$!
  until echoscu -aet BENCH -aec STORESCP 127.0.0.1 "$port" >/dev/null 2>&1; do sleep 0.1; done
  local s; s=$(send STORESCP); kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "$s"
}

run_nephrad() {
  rm -rf "$work/spool"
  cat >"$work/nephra.toml" <<TOML
[node]
ae_title = "NEPHRA"
port = $port
spool_dir = "$work/spool"
${NEPHRA_BENCH_NODE:-}
[study]
stable_seconds = 600
[log]
level = "warn"
[[peers]]
ae_title = "BENCH"
host = "127.0.0.1"
port = 1
TOML
  "$build/app/nephrad" --config "$work/nephra.toml" >"$work/nephrad.log" 2>&1 &
  local pid=$!
  until echoscu -aet BENCH -aec NEPHRA 127.0.0.1 "$port" >/dev/null 2>&1; do sleep 0.1; done
  local s; s=$(send NEPHRA)
  kill -0 "$pid" || { echo "nephrad died: $(tail -3 "$work/nephrad.log")" >&2; exit 1; }
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local stored; stored=$(find "$work/spool/studies" -name '*.dcm' | wc -l)
  [ "$stored" = "$n" ] || { echo "nephrad stored $stored of $n instances" >&2; exit 1; }
  echo "$s"
}

run_orthanc() {  # Orthanc as an archive receiving the same files: it acknowledges after its index and storage writes
  rm -rf "$work/orthanc" && mkdir -p "$work/orthanc/db"
  local http=$((port + 1))
  cat >"$work/orthanc/orthanc.json" <<JSON
{"Name":"bench","StorageDirectory":"$work/orthanc/db","IndexDirectory":"$work/orthanc/db","StorageCompression":false,
 "Plugins":[],"HttpPort":$http,"RemoteAccessAllowed":false,"AuthenticationEnabled":false,"DicomAet":"ORTHANC",
 "DicomPort":$port,"DicomCheckCalledAet":false,"DicomAlwaysAllowStore":true,"DicomAlwaysAllowEcho":true}
JSON
  Orthanc "$work/orthanc/orthanc.json" >"$work/orthanc/log" 2>&1 &
  local pid=$!
  until curl -sf "http://127.0.0.1:$http/system" >/dev/null; do sleep 0.1; done
  local s; s=$(send ORTHANC); kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "$s"
}

# Prints seconds to write every file durably, one after the other. MODE "rename": write a new temporary file,
# fsync, rename into the folder, fsync the folder (two syncs per file). MODE "slot": write into an empty file whose
# name was made durable beforehand (not timed), fdatasync, link into the folder without syncing it; every 32 files
# the folder is synced and those empty files' names removed (the node's protocol, less its own slot making).
run_disk() {
  rm -rf "$work/disk" && mkdir -p "$work/disk/tmp" "$work/disk/open"
  /usr/bin/python3 - "$work/in" "$work/disk" "$senders" "${1:-rename}" <<'PY'
import os, sys, threading, time
src, dst, writers, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
files = sorted(os.path.join(d, f) for d, _, fs in os.walk(src) for f in fs if f.endswith(".dcm"))
data = [open(f, "rb").read() for f in files]  # read first: only the writes are timed
if mode == "slot":
    for i in range(len(data)):
        os.close(os.open(os.path.join(dst, "tmp", "%d.part" % i), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640))
    os.sync()
tmp_dir = os.open(os.path.join(dst, "tmp"), os.O_RDONLY | os.O_DIRECTORY)
def write(w):  # one writer: every writers-th file, each into the folder of its writer
    folder_path = os.path.join(dst, "open", str(w))
    os.makedirs(folder_path)
    folder = os.open(folder_path, os.O_RDONLY | os.O_DIRECTORY)
    linked = []
    def flush():  # the folder first, then the slots' removal
        os.fsync(folder)
        for slot in linked:
            os.unlink(slot)
        os.fsync(tmp_dir)
        linked.clear()
    for i in range(w, len(data), writers):
        tmp = os.path.join(dst, "tmp", "%d.part" % i)
        fd = os.open(tmp, os.O_WRONLY | (0 if mode == "slot" else os.O_CREAT | os.O_EXCL), 0o640)
        os.write(fd, data[i])
        # releases the GIL: the writers' syncs overlap as the node's associations' do
        (os.fdatasync if mode == "slot" else os.fsync)(fd)
        os.close(fd)
        if mode == "slot":
            os.link(tmp, os.path.join(folder_path, "%d.dcm" % i))
            linked.append(tmp)
            if len(linked) == 32:
                flush()
        else:
            os.rename(tmp, os.path.join(folder_path, "%d.dcm" % i))
            os.fsync(folder)
    if mode == "slot":
        flush()
t0 = time.monotonic()
threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
for t in threads: t.start()
for t in threads: t.join()
print(time.monotonic() - t0)
PY
}

echo "instances=$n ($(( $(du -sk "$work/in" | cut -f1) / n )) KB each) repeats=$repeats senders=$senders storescu association(s) at once, TCP_NODELAY=1"
have_orthanc=0
command -v Orthanc >/dev/null && have_orthanc=1
printf "%-4s %-8s %-13s %-11s %-10s %-10s %-13s %-18s %-17s %-16s\n" run disk/s disk-slot/s storescp/s orthanc/s \
  nephrad/s nephrad/disk nephrad/disk-slot nephrad/storescp nephrad/orthanc
ratios_disk=()
ratios_orthanc=()
for r in $(seq 1 "$repeats"); do
  d=$(run_disk rename); ds=$(run_disk slot); a=$(run_storescp); b=$(run_nephrad)
  o=""
  [ "$have_orthanc" = 1 ] && o=$(run_orthanc)
  rd=$(echo "$d / $b" | bc -l)
  ro="${o:+$(echo "$o / $b" | bc -l)}"
  ratios_disk+=("$rd")
  [ -n "$ro" ] && ratios_orthanc+=("$ro")
  printf "%-4s %-8.0f %-13.0f %-11.0f %-10s %-10.0f %-13.2f %-18.2f %-17.2f %-16s\n" "$r" "$(echo "$n / $d" | bc -l)" \
    "$(echo "$n / $ds" | bc -l)" "$(echo "$n / $a" | bc -l)" \
    "${o:+$(echo "$n / $o" | bc -l | xargs printf '%.0f')}" "$(echo "$n / $b" | bc -l)" \
    "$rd" "$(echo "$ds / $b" | bc -l)" "$(echo "$a / $b" | bc -l)" "${ro:+$(printf '%.2f' "$ro")}"
done
[ "$have_orthanc" = 1 ] || echo "(Orthanc not installed: its column is empty)"
# The disk's own rate moves between repeats (a virtual disk): the median over repeats is the figure to compare.
summary() { # NAME TARGET RATIO...
  /usr/bin/python3 -c 'import statistics, sys
name, target, r = sys.argv[1], float(sys.argv[2]), sorted(map(float, sys.argv[3:]))
print("%s: median %.2f over %d repeats (%.2f-%.2f), at or above %.1f in %d" % (name, statistics.median(r), len(r),
      r[0], r[-1], target, sum(x >= target for x in r)))' "$@"
}
summary nephrad/disk 0.8 "${ratios_disk[@]}"
if [ "${#ratios_orthanc[@]}" -gt 0 ]; then summary nephrad/orthanc 3 "${ratios_orthanc[@]}"; fi
