#!/usr/bin/python3
"""Does an explicit group commit of folder fsyncs beat what the file system already does for concurrent writers?
Each of W writers writes files of a CT instance's size (528 KB) the way the node spools an instance (write a
temporary file, fsync, rename into its own folder) and then makes the folder entry durable either itself
(`each`: fsync its folder, as nephrad does) or through one committer thread that fsyncs every folder pending since
its last round and wakes the writers waiting on that round (`group`).
    /usr/bin/python3 bench/group_commit.py DIR WRITERS each|group FILES      # DIR is wiped first
"""
import os
import shutil
import sys
import threading
import time

SIZE = 528000


class GroupCommit:
    """Writers hand in a folder descriptor and wait until a round that started after their rename has fsynced it."""

    def __init__(self):
        self.cv = threading.Condition()
        self.pending = set()
        self.started = self.finished = 0  # rounds
        self.stopping = False

    def durable(self, folder):
        with self.cv:
            self.pending.add(folder)
            round_needed = self.started + 1
            self.cv.notify_all()
            self.cv.wait_for(lambda: self.finished >= round_needed)

    def run(self):
        while True:
            with self.cv:
                self.cv.wait_for(lambda: self.pending or self.stopping)
                if not self.pending:
                    return
                batch, self.pending = self.pending, set()
                self.started += 1
            for folder in batch:
                os.fsync(folder)
            with self.cv:
                self.finished += 1
                self.cv.notify_all()

    def stop(self):
        with self.cv:
            self.stopping = True
            self.cv.notify_all()


def writer(dst, w, writers, files, data, commit):
    folder_path = os.path.join(dst, "open", str(w))
    os.makedirs(folder_path)
    folder = os.open(folder_path, os.O_RDONLY | os.O_DIRECTORY)
    for i in range(w, files, writers):
        tmp = os.path.join(dst, "tmp", "%d.part" % i)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        os.write(fd, data[i % len(data)])
        os.fsync(fd)
        os.close(fd)
        os.rename(tmp, os.path.join(folder_path, "%d.dcm" % i))
        if commit:
            commit.durable(folder)
        else:
            os.fsync(folder)


def main():
    dst, writers, mode, files = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    data = [os.urandom(SIZE) for _ in range(16)]
    shutil.rmtree(dst, ignore_errors=True)
    os.makedirs(os.path.join(dst, "tmp"))
    commit = GroupCommit() if mode == "group" else None
    committer = threading.Thread(target=commit.run) if commit else None
    t0 = time.monotonic()
    if committer:
        committer.start()
    threads = [threading.Thread(target=writer, args=(dst, w, writers, files, data, commit)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    if committer:
        commit.stop()
        committer.join()
    print(f"{mode} writers={writers} {files / elapsed:.0f} files/s")


if __name__ == "__main__":
    main()
