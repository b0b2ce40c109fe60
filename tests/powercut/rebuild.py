#!/usr/bin/env python3
"""Rebuild a folder as a power cut would leave it, from what powercut.so recorded.

    rebuild.py RECORDS BASE OUT

RECORDS: the records of one run of the process (base.index and one numbered record per fsync).
BASE:    a copy of the folder as it was when that run started (what base.index describes).
OUT:     the folder to create: each folder holds the entries it had at its last fsync (or at the start, if it was
         never synced), each file the contents it had at its last fsync (or at the start; or nothing at all, for a
         file created since and never synced). Prints one line: what was kept and what was lost.
"""
import os
import shutil
import sys


def read_records(records):
    """(base entries, latest listing per folder, latest record file per file), objects named by identity."""
    base = {}  # identity -> (type, relative path)
    with open(os.path.join(records, "base.index"), encoding="utf-8") as f:
        for line in f:
            kind, ident, rel = line.rstrip("\n").split("\t", 2)
            base[ident] = (kind, rel)
    listings, contents = {}, {}
    for name in sorted(os.listdir(records)):  # numbered in the order the fsyncs happened: the last one wins
        if name.endswith(".d") or name.endswith(".f"):
            path = os.path.join(records, name)
            with open(path, "rb") as f:
                header = f.readline().decode("utf-8")
                ident = header.split("\t", 1)[0]
                if name.endswith(".d"):
                    entries = []
                    for line in f.read().decode("utf-8").splitlines():
                        kind, child, entry = line.split("\t", 2)
                        entries.append((entry, kind, child))
                    listings[ident] = entries
                else:
                    contents[ident] = (path, len(header.encode("utf-8")))
    return base, listings, contents


def base_listing(base, ident):
    kind_rel = base.get(ident)
    if kind_rel is None or kind_rel[0] != "d":
        return []
    rel = kind_rel[1]
    out = []
    for child, (kind, child_rel) in base.items():
        parent = os.path.dirname(child_rel) or "."
        if child_rel != "." and parent == rel:
            out.append((os.path.basename(child_rel), kind, child))
    return out


def rebuild(records, base_dir, out):
    if not os.path.exists(os.path.join(records, "base.index")):
        # killed before the library's constructor finished (before main): the run made nothing durable
        shutil.copytree(base_dir, out, symlinks=True)
        return {"files": sum(len(f) for _, _, f in os.walk(out)), "files_emptied": 0, "killed_before_start": 1}
    base, listings, contents = read_records(records)
    root = next(ident for ident, (kind, rel) in base.items() if rel == ".")
    stats = {"files": 0, "files_emptied": 0, "folders": 0}

    def build(ident, path, depth):
        os.mkdir(path)
        stats["folders"] += 1
        entries = listings[ident] if ident in listings else base_listing(base, ident)
        for name, kind, child in entries:
            dest = os.path.join(path, name)
            if kind == "d":
                if depth < 32:
                    build(child, dest, depth + 1)
            elif kind == "f":
                stats["files"] += 1
                if child in contents:
                    src, offset = contents[child]
                    with open(src, "rb") as f, open(dest, "wb") as o:
                        f.seek(offset)
                        shutil.copyfileobj(f, o)
                elif child in base and base[child][0] == "f":
                    shutil.copyfile(os.path.join(base_dir, base[child][1]), dest)
                else:  # created since the start and never synced: a power cut leaves the name, not the data
                    open(dest, "wb").close()
                    stats["files_emptied"] += 1

    build(root, out, 0)
    return stats


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    stats = rebuild(*sys.argv[1:])
    print(" ".join(f"{k}={v}" for k, v in stats.items()))


if __name__ == "__main__":
    main()
