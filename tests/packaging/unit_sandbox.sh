#!/bin/sh
# nephrad survives the unit's system call filter, W^X and socket-family rules through a whole session: start
# (model load), C-ECHO, C-STORE, classification, sending the results back, SIGHUP and SIGTERM.
#   unit_sandbox.sh NEPHRAD UNIT CONFIG MODEL_MANIFEST SLICES_DIR
# seccomp_run.py applies the unit's policy without systemd and kills on any refusal, so a new library that
# calls something outside the filter fails here instead of crash-looping in production.
set -eu
nephrad=$1 unit=$2 config=$3 manifest=$4 slices=$5
here=$(cd "$(dirname "$0")" && pwd)

for tool in python3 systemd-analyze echoscu storescu storescp; do
    command -v "$tool" >/dev/null 2>&1 || { echo "SKIP: $tool is not installed"; exit 77; }
done

# Sanitizer runtimes call setrlimit, personality and the like at start, which the production unit forbids;
# the unit only ever runs a release build.
if grep -qa -e __asan_init -e __tsan_init -e __msan_init "$nephrad"; then
    echo "SKIP: $nephrad is built with a sanitizer"
    exit 77
fi

tmp=$(mktemp -d)
pid=''
peer=''
cleanup() {
    if [ -n "$peer" ]; then kill "$peer" 2>/dev/null || true; fi
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*"
    echo "--- node log"
    cat "$tmp/node.log" 2>/dev/null || true
    exit 1
}

# shellcheck disable=SC2046 # three numbers, split on purpose
set -- $(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')
dicom_port=$1 peer_port=$2 http_port=$3

# The packaged config with this test's spool, model and free ports; the example peer is a storescp here.
sed -e "s|^spool_dir *=.*|spool_dir = \"$tmp/spool\"|" \
    -e "s|^model *=.*|model = \"$manifest\"|" \
    -e "s|^stable_seconds *=.*|stable_seconds = 1|" \
    -e "s|^port *= *11112.*|port = $dicom_port|" \
    -e "s|^port *= *4242.*|port = $peer_port|" "$config" >"$tmp/nephra.toml"
grep -q "^port = $dicom_port" "$tmp/nephra.toml" || fail "could not set node.port in the config copy"
# Builds whose node has an HTTP endpoint must not collide with whatever holds its default port.
if "$nephrad" --print-defaults | grep -q '^\[http\]'; then
    printf '\n[http]\nport = %s\n' "$http_port" >>"$tmp/nephra.toml"
fi
"$nephrad" --check-config "$tmp/nephra.toml" >/dev/null || fail "config copy rejected"

mkdir "$tmp/peer"
storescp -aet ORTHANC -od "$tmp/peer" "$peer_port" >"$tmp/peer.log" 2>&1 &
peer=$!

python3 "$here/seccomp_run.py" "$unit" "$nephrad" --config "$tmp/nephra.toml" >"$tmp/node.log" 2>&1 &
pid=$!

died() {  # WHEN
    status=0
    wait "$pid" || status=$?
    pid=
    [ "$status" -ne 77 ] || { cat "$tmp/node.log"; exit 77; }
    [ "$status" -ne 159 ] || fail "nephrad killed by SIGSYS $1: a system call outside the unit's SystemCallFilter," \
        "or a W+X mapping (find it with strace -f)"
    fail "nephrad exited with status $status $1"
}
wait_log() {  # EVENT SECONDS
    i=0
    while ! grep -q "$1" "$tmp/node.log"; do
        kill -0 "$pid" 2>/dev/null || died "before $1"
        i=$((i + 1))
        [ "$i" -le $(($2 * 5)) ] || fail "no $1 within $2 s"
        sleep 0.2
    done
}

wait_log NODE_READY 60
echoscu -aet ORTHANC -aec NEPHRA 127.0.0.1 "$dicom_port" || fail "C-ECHO"
storescu -aet ORTHANC -aec NEPHRA 127.0.0.1 "$dicom_port" "$slices"/*.dcm || fail "C-STORE"
wait_log RESULTS_WRITTEN 60
wait_log RESULT_DELIVERED 60
set -- "$tmp"/peer/SR*
[ -f "$1" ] || fail "the peer received no SR"
kill -HUP "$pid"
sleep 1
kill -0 "$pid" 2>/dev/null || died "after SIGHUP"
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=
[ "$status" -eq 0 ] || fail "nephrad exited with status $status after SIGTERM (159 = SIGSYS)"
cut -c 1-160 "$tmp/node.log"
echo "PASS: nephrad runs a whole session under the unit's seccomp, W^X and address-family rules"
