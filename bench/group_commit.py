#!/usr/bin/python3
"""Does an explicit group commit of folder fsyncs beat what the file system already does for concurrent writers?
Each of W writers writes files of a CT instance's size (528 KB) the way the node spools an instance (write a
temporary file, fsync, rename into its own folder) and then makes the folder entry durable either itself
(`each`: fsync its folder, as nephrad does) or through one committer thread that fsyncs every folder pending since
its last round and wakes the writers waiting on that round (`group`).
    /usr/bin/python3 bench/group_commit.py DIR WRITERS each|group FILES      # DIR is wiped first
"""
import os, sys, threading, time, shutil
dst = sys.argv[1]; writers = int(sys.argv[2]); mode = sys.argv[3]; n = int(sys.argv[4])
data = [os.urandom(528000) for _ in range(16)]
shutil.rmtree(dst, ignore_errors=True); os.makedirs(os.path.join(dst, "tmp"))
cv = threading.Condition(); pending = []; done_gen = [0]; gen = [0]; stop = [False]
def committer():
    while True:
        with cv:
            while not pending and not stop[0]: cv.wait()
            if stop[0] and not pending: return
            batch = list(pending); pending.clear(); g = gen[0] = gen[0] + 1
        for fd in set(batch): os.fsync(fd)
        with cv:
            done_gen[0] = g; cv.notify_all()
def write(w):
    fp = os.path.join(dst, "open", str(w)); os.makedirs(fp)
    folder = os.open(fp, os.O_RDONLY | os.O_DIRECTORY)
    for i in range(w, n, writers):
        tmp = os.path.join(dst, "tmp", "%d.part" % i)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        os.write(fd, data[i % 16]); os.fsync(fd); os.close(fd)
        os.rename(tmp, os.path.join(fp, "%d.dcm" % i))
        if mode == "each":
            os.fsync(folder)
        else:
            with cv:
                pending.append(folder); want = gen[0] + 1; cv.notify_all()
                while done_gen[0] < want: cv.wait()
t0 = time.monotonic()
c = threading.Thread(target=committer); c.start()
ts = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
for t in ts: t.start()
for t in ts: t.join()
el = time.monotonic() - t0
with cv: stop[0] = True; cv.notify_all()
c.join()
print(f"{mode} writers={writers} {n/el:.0f} files/s")
