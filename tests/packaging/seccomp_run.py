#!/usr/bin/env python3
"""Run a program under the seccomp policy that a systemd unit file describes, without systemd.

    seccomp_run.py UNIT_FILE PROGRAM [ARGS...]

Reads SystemCallFilter=, MemoryDenyWriteExecute= and RestrictAddressFamilies= from UNIT_FILE, builds the same
filters systemd 252 builds for them (system call groups expanded by `systemd-analyze syscall-filter`) with
libseccomp, and execs PROGRAM. Unlike the unit, a refused system call or W+X mapping KILLS the process
(SIGSYS), whatever SystemCallErrorNumber= says, so that a test sees every refusal instead of a quiet EPERM.
Refused socket families answer EAFNOSUPPORT, as under systemd. Exit status 77: seccomp cannot be used here.
"""
import ctypes
import ctypes.util
import errno
import os
import socket
import subprocess
import sys

SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ, SCMP_CMP_GE, SCMP_CMP_MASKED_EQ = 4, 5, 7
PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000


def scmp_act_errno(e):
    return 0x00050000 | (e & 0xFFFF)


class ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def skip(why):
    print(f"SKIP: {why}", file=sys.stderr)
    sys.exit(77)


def syscall_groups():
    out = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager"], check=True, capture_output=True,
                         text=True).stdout
    groups, cur = {}, None
    for line in out.splitlines():
        if line and not line[0].isspace():
            cur = groups.setdefault(line.strip(), [])
        elif cur is not None and line.strip() and not line.strip().startswith("#"):
            cur.append(line.strip())
    return groups


def expand(names, groups):
    out = set()
    for n in names:
        out |= expand(groups.get(n, []), groups) if n.startswith("@") else {n}
    return out


def unit_settings(path):
    settings = []
    section = None
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                section = line
                continue
            if section == "[Service]" and "=" in line:
                key, _, value = line.partition("=")
                settings.append((key.strip(), value.strip()))
    return settings


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    unit, argv = sys.argv[1], sys.argv[2:]
    settings = unit_settings(unit)
    groups = syscall_groups()

    # SystemCallFilter=: the first line decides allow- or deny-list; later lines add or take away.
    allow_list, names = None, set()
    for key, value in settings:
        if key != "SystemCallFilter":
            continue
        if not value:
            allow_list, names = None, set()
            continue
        deny = value.startswith("~")
        items = expand(value.lstrip("~").split(), groups)
        if allow_list is None:
            allow_list = not deny
            names = items | (expand(["@default"], groups) if allow_list else set())
        elif allow_list != deny:
            names |= items
        else:
            names -= items
    mdwe = any(k == "MemoryDenyWriteExecute" and v in ("yes", "true", "1", "on") for k, v in settings)
    families = None
    for key, value in settings:
        if key == "RestrictAddressFamilies" and value and not value.startswith("~"):
            families = (families or set()) | {int(getattr(socket, f)) for f in value.split()}

    path = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(path, use_errno=True)
    except OSError:
        skip("libseccomp is not installed")
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(ArgCmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]

    def rule(ctx, action, name, *cmps):
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:
            return  # not a system call of this architecture
        arr = (ArgCmp * max(len(cmps), 1))(*cmps)
        lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), arr)

    def load(ctx):
        rc = lib.seccomp_load(ctx)
        if rc != 0:
            skip(f"seccomp_load failed ({os.strerror(-rc)}); the container forbids seccomp filters")

    # Like systemd: one filter per setting; the kernel applies the most restrictive answer of all of them.
    # The system call list comes last: loading a filter needs calls that it may not allow.
    if mdwe:
        ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
        rule(ctx, SCMP_ACT_KILL_PROCESS, "mmap", ArgCmp(2, SCMP_CMP_MASKED_EQ, PROT_WRITE | PROT_EXEC,
                                                        PROT_WRITE | PROT_EXEC))
        for name in ("mprotect", "pkey_mprotect"):
            rule(ctx, SCMP_ACT_KILL_PROCESS, name, ArgCmp(2, SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC))
        rule(ctx, SCMP_ACT_KILL_PROCESS, "shmat", ArgCmp(2, SCMP_CMP_MASKED_EQ, SHM_EXEC, SHM_EXEC))
        load(ctx)
    if families is not None:
        ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
        refuse = scmp_act_errno(errno.EAFNOSUPPORT)
        top = max(families)
        for fam in range(top):
            if fam not in families:
                rule(ctx, refuse, "socket", ArgCmp(0, SCMP_CMP_EQ, fam, 0))
        rule(ctx, refuse, "socket", ArgCmp(0, SCMP_CMP_GE, top + 1, 0))
        load(ctx)

    if allow_list is not None:
        ctx = lib.seccomp_init(SCMP_ACT_KILL_PROCESS if allow_list else SCMP_ACT_ALLOW)
        for name in sorted(names):
            rule(ctx, SCMP_ACT_ALLOW if allow_list else SCMP_ACT_KILL_PROCESS, name)
        load(ctx)
    sys.stdout.flush()
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main()
