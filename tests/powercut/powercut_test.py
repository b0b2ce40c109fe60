#!/usr/bin/env python3
"""The power-cut model itself, on a scripted sequence of writes: what survives is exactly what fsync made durable.

    powercut_test.py PATH/TO/libnephra_powercut.so

Runs a child Python process with the library preloaded (os.fsync is libc's fsync), then rebuild.py, and checks the
rebuilt folder entry by entry. bench/chaos.sh --power-cut relies on this model.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
LIB = ""

CHILD = r"""
import os, sys
root = sys.argv[1]
def write(path, data, sync):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    os.write(fd, data)
    if sync:
        os.fsync(fd)
    os.close(fd)
def sync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(fd)
    os.close(fd)
j = lambda *p: os.path.join(root, *p)
write(j("synced"), b"2", True)
write(j("never-synced"), b"3", False)            # named in a synced folder, its data never synced
fd = os.open(j("base-file"), os.O_WRONLY | os.O_TRUNC)
os.write(fd, b"changed")                         # an old file changed in place, not synced: keeps its old data
os.close(fd)
os.mkdir(j("new-dir"))
write(j("new-dir", "inner"), b"4", True)         # new-dir itself never synced: its entries are lost
write(j("tmp-then-renamed"), b"5", True)
os.rename(j("tmp-then-renamed"), j("base-dir", "renamed"))
sync_dir(j("base-dir"))                          # the rename is durable in base-dir...
write(j("forgotten-file"), b"6", True)           # ...an fsync the model is told to forget makes nothing durable
sync_dir(root)
write(j("synced"), b"22 not synced", False)      # after the last fsync: lost
os.unlink(j("base-gone"))                        # an unlink after the folder's last fsync: the file comes back
write(j("late-name"), b"1", True)                # data synced, folder not synced since: the name is lost
"""


class PowerCutModel(unittest.TestCase):
    def test_only_what_fsync_made_durable_survives(self):
        work = tempfile.mkdtemp(prefix="nephra-powercut-")
        try:
            root = os.path.join(work, "root")
            os.makedirs(os.path.join(root, "base-dir"))
            with open(os.path.join(root, "base-file"), "wb") as f:
                f.write(b"base")
            with open(os.path.join(root, "base-gone"), "wb") as f:
                f.write(b"gone")
            base = os.path.join(work, "base")
            shutil.copytree(root, base)
            records = os.path.join(work, "records")
            os.mkdir(records)
            env = dict(os.environ, LD_PRELOAD=LIB, NEPHRA_POWERCUT_ROOT=os.path.realpath(root),
                       NEPHRA_POWERCUT_RECORDS=records, NEPHRA_POWERCUT_FORGET="forgotten")
            subprocess.run([sys.executable, "-c", CHILD, os.path.realpath(root)], env=env, check=True)
            out = os.path.join(work, "after-cut")
            subprocess.run([sys.executable, os.path.join(HERE, "rebuild.py"), records, base, out], check=True,
                           capture_output=True)

            def content(*p):
                with open(os.path.join(out, *p), "rb") as f:
                    return f.read()

            self.assertEqual(sorted(os.listdir(out)),
                             ["base-dir", "base-file", "base-gone", "forgotten-file", "never-synced", "new-dir",
                              "synced"])
            self.assertEqual(content("synced"), b"2")
            self.assertEqual(content("never-synced"), b"")
            self.assertEqual(content("forgotten-file"), b"")
            self.assertEqual(content("base-file"), b"base")
            self.assertEqual(content("base-gone"), b"gone")
            self.assertEqual(os.listdir(os.path.join(out, "new-dir")), [])
            self.assertEqual(os.listdir(os.path.join(out, "base-dir")), ["renamed"])
            self.assertEqual(content("base-dir", "renamed"), b"5")
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def test_a_process_killed_before_recording_began_leaves_the_folder_as_it_was(self):
        work = tempfile.mkdtemp(prefix="nephra-powercut-")
        try:
            base = os.path.join(work, "base")
            os.makedirs(os.path.join(base, "d"))
            with open(os.path.join(base, "d", "f"), "wb") as f:
                f.write(b"kept")
            records = os.path.join(work, "records")
            os.mkdir(records)  # no base.index: the library's constructor never ran
            out = os.path.join(work, "after-cut")
            subprocess.run([sys.executable, os.path.join(HERE, "rebuild.py"), records, base, out], check=True,
                           capture_output=True)
            with open(os.path.join(out, "d", "f"), "rb") as f:
                self.assertEqual(f.read(), b"kept")
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    LIB = sys.argv.pop(1)
    unittest.main()
