#!/usr/bin/env bash
# Builds the Debian package from the release preset and, as root, installs, runs, upgrades and purges it.
#   scripts/test-deb.sh
# Meant for a test machine or container. It refuses to start where a nephra package, /etc/nephra or a
# running /usr/bin/nephrad already exist, and at the end removes only what it created itself: the package, and
# the nephra account and /var/lib/nephra if they did not exist before. Without root it builds the .deb, checks
# its contents and skips the rest. Exit status: 0 when every check passed.
# Checks are handed to eval in single quotes, expanded when they run:
# shellcheck disable=SC2016,SC2034
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD
build=$src/build/release
jobs=${JOBS:-2}

checks=() failed=0
pass() { checks+=("PASS  $1"); echo "test-deb: PASS $1"; }
fail() { checks+=("FAIL  $1"); echo "test-deb: FAIL $1" >&2; failed=1; }
check() {  # DESCRIPTION COMMAND...: records the result and goes on
    local what=$1
    shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}
need() {  # DESCRIPTION COMMAND...: a later step depends on it, so stop at the first failure
    local what=$1
    shift
    if "$@"; then pass "$what"; else fail "$what"; exit 1; fi
}
summary() {
    echo
    echo "test-deb: summary"
    printf '  %s\n' "${checks[@]}"
    if ((failed)); then echo "test-deb: FAIL"; else echo "test-deb: PASS (${#checks[@]} checks)"; fi
}
trap summary EXIT

# --- build the package -----------------------------------------------------------------------------------
# The packaged config and unit name /usr and /etc: the tree must be configured for prefix /usr (cpack
# refuses otherwise).
nice -n 5 cmake --preset release -DCMAKE_INSTALL_PREFIX=/usr >/dev/null
nice -n 5 cmake --build --preset release -j "$jobs" --target nephrad nephra
rm -f "$build"/nephra_*.deb
(cd "$build" && nice -n 5 cpack -G DEB)
debs=("$build"/nephra_*.deb)
need "cpack produced exactly one .deb" test "${#debs[@]}" -eq 1 -a -f "${debs[0]}"
deb=${debs[0]}
echo "test-deb: $deb"

contents=$(dpkg-deb --contents "$deb")
has_file() { grep -q " \./${1#/}\$" <<<"$contents"; }
check "package ships /usr/bin/nephrad and /usr/bin/nephra" eval 'has_file /usr/bin/nephrad && has_file /usr/bin/nephra'
check "package ships the unit, sysusers and tmpfiles files" eval 'has_file /usr/lib/systemd/system/nephrad.service &&
    has_file /usr/lib/sysusers.d/nephra.conf && has_file /usr/lib/tmpfiles.d/nephra.conf'
check "package ships the model beside its manifest" eval 'has_file /usr/share/nephra/models/nephra-kidney.json &&
    has_file /usr/share/nephra/models/nephra-kidney.onnx'
check "package ships /etc/nephra/nephra.toml as a conffile" eval 'has_file /etc/nephra/nephra.toml &&
    dpkg-deb --ctrl-tarfile "$deb" | tar -xOf - ./conffiles | grep -qx /etc/nephra/nephra.toml'
check "package contains nothing under /var (the spool is never a packaged file)" \
    eval '! grep -q " \./var/" <<<"$contents"'
check "dpkg-shlibdeps filled Depends" eval 'dpkg-deb -f "$deb" Depends | grep -q libdcmtk'

if [[ $(id -u) -ne 0 ]]; then
    echo "test-deb: SKIP install, run, upgrade and purge checks: they need root"
    exit "$failed"
fi

# --- refuse to touch an existing installation -------------------------------------------------------------
nephrad_running() {
    local p
    for p in /proc/[0-9]*; do
        [[ $(readlink "$p/exe" 2>/dev/null) == /usr/bin/nephrad ]] && return 0
    done
    return 1
}
if dpkg-query -W -f='${db:Status-Status}' nephra 2>/dev/null | grep -qv '^not-installed$'; then
    echo "test-deb: nephra is installed (or its config files remain) here; this test would purge it. Stop." >&2
    exit 2
fi
if [[ -e /etc/nephra ]] || nephrad_running; then
    echo "test-deb: /etc/nephra or a running /usr/bin/nephrad already exist here. Stop." >&2
    exit 2
fi
had_user=0 had_group=0 had_state=0
getent passwd nephra >/dev/null && had_user=1
getent group nephra >/dev/null && had_group=1
[[ -e /var/lib/nephra ]] && had_state=1

tmp=$(mktemp -d)
node_pid='' installed=0 marker=''
cleanup() {
    local rc=$?
    set +e
    if [[ -n $node_pid ]] && kill -0 "$node_pid" 2>/dev/null; then kill -KILL "$node_pid"; fi
    if ((installed)); then
        DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq nephra >/dev/null 2>&1
    fi
    [[ -n $marker ]] && rm -f "$marker"
    if ((!had_state)); then rm -rf /var/lib/nephra; fi
    if ((!had_user)) && getent passwd nephra >/dev/null; then userdel nephra; fi
    if ((!had_group)) && getent group nephra >/dev/null; then groupdel nephra; fi
    rm -rf "$tmp"
    summary
    if ((failed)); then exit 1; fi
    exit "$rc"
}
trap cleanup EXIT

not_enabled() { [[ -z $(find /etc/systemd/system -name nephrad.service 2>/dev/null) ]]; }
owned_750() { [[ $(stat -c '%U:%G %a' "$1") == "nephra:nephra 750" ]]; }

# --- fresh install ----------------------------------------------------------------------------------------
installed=1
need "apt-get install ./$(basename "$deb") (dependencies resolved)" \
    eval 'DEBIAN_FRONTEND=noninteractive apt-get install -y "$deb" >"$tmp/install.log" 2>&1 ||
          { cat "$tmp/install.log"; false; }'
check "postinst tells the admin to edit the config, then enable --now" \
    grep -q 'edit /etc/nephra/nephra.toml.*systemctl enable --now nephrad' "$tmp/install.log"
check "binaries installed" test -x /usr/bin/nephrad -a -x /usr/bin/nephra
check "/etc/nephra/nephra.toml present and registered as conffile" \
    eval 'test -f /etc/nephra/nephra.toml && dpkg-query -W -f="\${Conffiles}" nephra | grep -q /etc/nephra/nephra.toml'
check "nephrad --check-config accepts the installed config" /usr/bin/nephrad --check-config /etc/nephra/nephra.toml
verify_unit() {
    local out
    out=$(systemd-analyze verify --man=no /usr/lib/systemd/system/nephrad.service 2>&1) || { echo "$out"; return 1; }
    [[ -z $out ]] && return 0
    echo "$out"
    if grep -q nephrad <<<"$out"; then return 1; fi
}
if command -v systemd-analyze >/dev/null; then check "systemd-analyze verify accepts the installed unit" verify_unit; fi
check "system user nephra exists, home /var/lib/nephra, no login shell" \
    eval '[[ $(getent passwd nephra | cut -d: -f6,7) == /var/lib/nephra:*nologin ]] &&
          (( $(id -u nephra) < 1000 ))'
need "/var/lib/nephra and its spool belong to nephra, mode 0750" \
    eval 'owned_750 /var/lib/nephra && owned_750 /var/lib/nephra/spool'
check "the service was not enabled" not_enabled
check "the service was not started" eval '! nephrad_running'

# --- run the installed node as the unit would -------------------------------------------------------------
# As nephra, from /var/lib/nephra, with UMask=0027, no capabilities and no_new_privs. setpriv rather than
# runuser: like systemd it execs the daemon itself (runuser forks and holds a PAM session, answers SIGTERM by
# killing the daemon after 2 s and exits with the signal, not the daemon's status).
port=11112 http_port=''
if command -v python3 >/dev/null; then
    read -r port http_port < <(python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
fi
chmod 0755 "$tmp"
sed "s/^port = 11112/port = $port/" /etc/nephra/nephra.toml >"$tmp/nephra.toml"
# A node with an HTTP endpoint must not collide with whatever holds its default port on this machine.
if [[ -n $http_port ]] && /usr/bin/nephrad --print-defaults | grep -q '^\[http\]'; then
    printf '\n[http]\nport = %s\n' "$http_port" >>"$tmp/nephra.toml"
fi
chmod 0644 "$tmp/nephra.toml"
need "test copy of the config (port $port) is valid" /usr/bin/nephrad --check-config "$tmp/nephra.toml"

(cd /var/lib/nephra && umask 0027 &&
    exec setpriv --reuid=nephra --regid=nephra --init-groups --no-new-privs --bounding-set=-all --inh-caps=-all \
        /usr/bin/nephrad --config "$tmp/nephra.toml") >"$tmp/node.log" 2>&1 &
node_pid=$!
wait_log() {  # EVENT SECONDS
    local i
    for ((i = 0; i < $2 * 5; i++)); do
        grep -q "$1" "$tmp/node.log" && return 0
        kill -0 "$node_pid" 2>/dev/null || return 1
        sleep 0.2
    done
    return 1
}
if ! wait_log NODE_READY 120; then cat "$tmp/node.log"; fi
need "installed node reaches NODE_READY as user nephra (model found, spool writable)" grep -q NODE_READY "$tmp/node.log"
check "echoscu -aet ORTHANC -aec NEPHRA 127.0.0.1 $port" echoscu -aet ORTHANC -aec NEPHRA 127.0.0.1 "$port"
if command -v storescu >/dev/null; then
    check "storescu of the test slices is accepted" \
        storescu -aet ORTHANC -aec NEPHRA 127.0.0.1 "$port" "$src"/tests/data/tcia-kidney-slices/*.dcm
    spooled() { [[ -n $(find /var/lib/nephra/spool -name '*.dcm' -print -quit) ]]; }
    check "spooled instances belong to nephra and are not world-readable (UMask=0027)" \
        eval 'spooled && [[ -z $(find /var/lib/nephra/spool ! -user nephra -o -perm /o=rwx | head -n 1) ]]'
fi
check "node still running after the association(s)" kill -0 "$node_pid"
kill -TERM "$node_pid" 2>/dev/null || true
node_status=0
wait "$node_pid" || node_status=$?
node_pid=''
check "SIGTERM: node exits 0 after NODE_STOPPED" eval '((node_status == 0)) && grep -q NODE_STOPPED "$tmp/node.log"'
if ((node_status != 0)); then
    echo "test-deb: node exit status $node_status; its last log lines:"
    tail -n 20 "$tmp/node.log"
fi

# --- upgrade (same .deb again) keeps the spool and the admin's edit ---------------------------------------
marker=/var/lib/nephra/spool/test-deb-marker.$$
echo "acknowledged study stand-in" >"$marker"
chown nephra:nephra "$marker"
spool_before=$(cd /var/lib/nephra && find . | sort | sha256sum)
echo "# test-deb local edit $$" >>/etc/nephra/nephra.toml
need "dpkg -i (upgrade) succeeds without a conffile prompt" \
    eval 'dpkg -i "$deb" </dev/null >"$tmp/upgrade.log" 2>&1 || { cat "$tmp/upgrade.log"; false; }'
check "upgrade kept the marker file in the spool" test -f "$marker"
check "upgrade left /var/lib/nephra's tree unchanged" \
    eval '[[ $(cd /var/lib/nephra && find . | sort | sha256sum) == "$spool_before" ]]'
check "upgrade kept the admin's edit of /etc/nephra/nephra.toml" grep -q "test-deb local edit $$" /etc/nephra/nephra.toml
check "upgrade did not enable or start the service" eval 'not_enabled && ! nephrad_running'

# --- purge keeps the spool --------------------------------------------------------------------------------
need "apt-get purge -y nephra" \
    eval 'DEBIAN_FRONTEND=noninteractive apt-get purge -y nephra >"$tmp/purge.log" 2>&1 || { cat "$tmp/purge.log"; false; }'
installed=0
check "purge removed the package, its binaries and /etc/nephra" \
    eval '! dpkg-query -W -f="\${db:Status-Status}" nephra 2>/dev/null | grep -qv "^not-installed$" &&
          [[ ! -e /usr/bin/nephrad && ! -e /etc/nephra ]]'
check "purge kept /var/lib/nephra and the marker" test -f "$marker"
check "purge says where the kept spool is" grep -q 'kept /var/lib/nephra' "$tmp/purge.log"
