#!/usr/bin/env python3
"""Checks after bench/chaos.sh and bench/load.sh: nothing acknowledged is lost, nothing is stuck, and each study's
results reached the archive exactly once (one SR series, one SC series when the node made heatmaps, and exactly the
result instances the node produced, no more).

  verify.py --spool DIR --manifest TSV --acked FILE --calling-ae AE  (--orthanc URL | --received DIR)

manifest.tsv: study index, Study Instance UID, SOP Instance UID, file (bench/lib/common.sh nb_make_studies).
acked: files storescu got a Success response for (one per line, repeats allowed). With several senders,
--calling-ae may be given as FILE=AE pairs via --ae-map TSV (study index -> calling AE).
Prints a JSON summary on stdout; exit status 1 when anything is lost, stuck or wrong.
"""
import argparse
import glob
import hashlib
import json
import os
import subprocess
import sys
import urllib.request
from collections import defaultdict


def hash_hex(text: str, n: int = 32) -> str:  # nephra::scp::hash_hex: first n hex chars of SHA-256
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def dicom_tags(paths):
    """(0008,0018), (0020,000d), (0020,000e), (0008,0060) of each file, via one dcmdump run."""
    out = {}
    if not paths:
        return out
    cmd = ["dcmdump", "-q", "+F", "+P", "0008,0018", "+P", "0020,000d", "+P", "0020,000e", "+P", "0008,0060"]
    for i in range(0, len(paths), 500):
        text = subprocess.run(cmd + paths[i:i + 500], capture_output=True, text=True, check=False).stdout
        cur = None
        for line in text.splitlines():
            if line.startswith("# dcmdump"):
                cur = line.split(": ", 1)[1].strip()
                out[cur] = {}
            elif cur and line.startswith("(") and "[" in line:
                tag = line[1:10].lower()
                out[cur][tag] = line.split("[", 1)[1].split("]", 1)[0]
    return out


def http_json(base, path, body=None):
    req = urllib.request.Request(base + path, data=body.encode() if body is not None else None,
                                 method="POST" if body is not None else "GET")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spool", required=True)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--acked", required=True)
    ap.add_argument("--calling-ae", default="")
    ap.add_argument("--ae-map", help="TSV: study index, calling AE")
    ap.add_argument("--orthanc")
    ap.add_argument("--received")
    a = ap.parse_args()

    studies = {}  # index -> study uid
    by_file = {}  # file -> (index, sop uid)
    for line in open(a.manifest):
        idx, study, sop, path = line.rstrip("\n").split("\t")
        studies[idx] = study
        by_file[path] = (idx, sop)
    ae_of = defaultdict(lambda: a.calling_ae)
    if a.ae_map:
        for line in open(a.ae_map):
            idx, ae = line.split()
            ae_of[idx] = ae

    acked = set()
    for line in open(a.acked):
        p = line.strip()
        if p:
            acked.add(p)
    unknown_acks = sorted(p for p in acked if p not in by_file)
    spool = a.spool
    problems = []

    # (a) every acknowledged instance is in the spool, in its study's open/ or one of its rounds, whole: a file that
    # is there but does not read back as the instance sent (e.g. empty after a power cut) is lost too
    lost = []
    found = {}  # spool file -> (source file, study index, sop uid)
    for p in sorted(acked):
        if p not in by_file:
            continue
        idx, sop = by_file[p]
        key = hash_hex(ae_of[idx] + "\\" + studies[idx])
        name = hash_hex(sop) + ".dcm"
        d = os.path.join(spool, "studies", key)
        there = [os.path.join(d, sub, name) for sub in ("open", "instances")
                 if os.path.exists(os.path.join(d, sub, name))]
        if there:
            found[there[0]] = (p, idx, sop)
        else:
            lost.append({"file": p, "study": idx, "sop": sop})
    spooled_tags = dicom_tags(sorted(found))
    damaged = []
    for f, (p, idx, sop) in sorted(found.items()):
        if spooled_tags.get(f, {}).get("0008,0018") != sop:
            damaged.append({"file": p, "study": idx, "sop": sop, "spooled": f})
    lost += damaged
    not_acked = sorted(p for p in by_file if p not in acked)

    # (c) nothing stuck
    tmp_left = os.listdir(os.path.join(spool, "tmp")) if os.path.isdir(os.path.join(spool, "tmp")) else []
    open_left = glob.glob(os.path.join(spool, "studies", "*", "open", "*.dcm"))
    rounds = sorted(glob.glob(os.path.join(spool, "studies", "*", "rounds", "*")))
    state = {r: state_of(r) for r in rounds}
    # a superseded round's results were never meant for the archive (a later round of its study speaks for it)
    live = [r for r in rounds if state[r] != "superseded"]
    not_done = [r for r in live if state[r] != "done"]
    failed = [r for r in rounds if state[r] == "quarantined"]
    no_results = [r for r in live if not os.path.exists(os.path.join(r, "results.json"))]
    unsent = [f for r in live for f in glob.glob(os.path.join(r, "out", "*.dcm"))]
    dead = os.listdir(os.path.join(spool, "dead-letter")) if os.path.isdir(os.path.join(spool, "dead-letter")) else []

    # what the node made for each study: the result instances in rounds/*/sent (and out/, if any is left)
    made = defaultdict(lambda: {"SR": set(), "OT": set(), "series": defaultdict(set)})
    rounds_per_study = defaultdict(int)
    result_files = [f for r in rounds for f in glob.glob(os.path.join(r, "sent", "*.dcm"))
                    + (glob.glob(os.path.join(r, "out", "*.dcm")) if r in live else [])]
    for r in rounds:
        rounds_per_study[r.split(os.sep)[-3]] += 1
    for f, t in dicom_tags(result_files).items():
        m = made[t.get("0020,000d", "")]
        mod = t.get("0008,0060", "")
        if mod in ("SR", "OT"):
            m[mod].add(t.get("0008,0018", ""))
        m["series"][mod].add(t.get("0020,000e", ""))

    # (b) the archive has, per study, one SR series and (when heatmaps were made) one SC series, holding exactly the
    # instances the node made
    wrong = []
    archive_counts = {"SR": 0, "OT": 0}
    one_sr_one_sc = 0  # right, with heatmaps
    one_sr_no_sc = 0  # right, and the node made no heatmap for the study
    for idx, study_uid in sorted(studies.items(), key=lambda kv: int(kv[0])):
        got = defaultdict(lambda: defaultdict(set))  # modality -> series uid -> sop uids
        if a.orthanc:
            hits = [h for h in http_json(a.orthanc, "/tools/lookup", study_uid) if h.get("Type") == "Study"]
            for h in hits:
                for s in http_json(a.orthanc, "/studies/%s/series?expand" % h["ID"]):
                    mod = s["MainDicomTags"].get("Modality", "")
                    for inst in http_json(a.orthanc, "/series/%s/instances?expand" % s["ID"]):
                        got[mod][s["MainDicomTags"].get("SeriesInstanceUID", "")].add(
                            inst["MainDicomTags"].get("SOPInstanceUID", ""))
        else:
            for t in received_by_study.get(study_uid, []):
                got[t.get("0008,0060", "")][t.get("0020,000e", "")].add(t.get("0008,0018", ""))
        expect_sr = made[study_uid]["SR"]
        expect_ot = made[study_uid]["OT"]
        got_sr = set().union(*got["SR"].values()) if got["SR"] else set()
        got_ot = set().union(*got["OT"].values()) if got["OT"] else set()
        archive_counts["SR"] += len(got_sr)
        archive_counts["OT"] += len(got_ot)
        issues = []
        if len(got["SR"]) != 1:
            issues.append("%d SR series" % len(got["SR"]))
        if len(got["OT"]) != (1 if expect_ot else 0):
            issues.append("%d SC series (node made %d heatmaps)" % (len(got["OT"]), len(expect_ot)))
        if got_sr != expect_sr:
            issues.append("SR instances: archive %d, node made %d" % (len(got_sr), len(expect_sr)))
        if got_ot != expect_ot:
            issues.append("SC instances: archive %d, node made %d" % (len(got_ot), len(expect_ot)))
        other = sorted(m for m in got if m not in ("SR", "OT"))
        if other:
            issues.append("unexpected series: " + ",".join(other))
        if not expect_sr:
            issues.append("no SR made")
        if issues:
            wrong.append({"study": idx, "issues": issues})
        elif expect_ot:
            one_sr_one_sc += 1
        else:
            one_sr_no_sc += 1

    multi_round = sum(1 for n in rounds_per_study.values() if n > 1)
    sr_made = sum(len(m["SR"]) for m in made.values())
    ot_made = sum(len(m["OT"]) for m in made.values())
    summary = {
        "studies": len(studies),
        "instances_prepared": len(by_file),
        "instances_acknowledged": len(acked & set(by_file)),
        "instances_not_acknowledged": len(not_acked),
        "instances_lost": len(lost),
        "instances_damaged": len(damaged),
        "rounds": len(rounds),
        "studies_with_several_rounds": multi_round,
        "rounds_not_done": len(not_done),
        "rounds_failed": len(failed),
        "rounds_without_results": len(no_results),
        "results_unsent": len(unsent),
        "spool_tmp_files": len(tmp_left),
        "open_instances_left": len(open_left),
        "dead_letter": len(dead),
        "sr_instances_made": sr_made,
        "sc_instances_made": ot_made,
        "sr_instances_in_archive": archive_counts["SR"],
        "sc_instances_in_archive": archive_counts["OT"],
        "studies_wrong_in_archive": len(wrong),
        "studies_one_sr_and_one_sc_series": one_sr_one_sc,
        "studies_one_sr_series_no_heatmaps": one_sr_no_sc,
    }
    ok = not lost and not not_acked and not not_done and not failed and not tmp_left and not open_left \
        and not dead and not wrong and not unsent and not unknown_acks
    summary["ok"] = ok
    print(json.dumps(summary))
    for what, items in (("LOST", lost[:20]), ("NOT ACKNOWLEDGED", not_acked[:10]), ("ROUND NOT DONE", not_done[:10]),
                        ("ROUND FAILED", failed[:10]), ("DEAD LETTER", dead[:10]), ("WRONG IN ARCHIVE", wrong[:20]),
                        ("UNSENT", unsent[:10]), ("TMP LEFT", tmp_left[:10]), ("ACK OF UNKNOWN FILE", unknown_acks[:5])):
        for it in items:
            print("%s: %s" % (what, json.dumps(it)), file=sys.stderr)
    return 0 if ok else 1


received_by_study = defaultdict(list)


def state_of(round_dir):
    """The round's state as the node's round store records it (state.json)."""
    try:
        with open(os.path.join(round_dir, "state.json")) as f:
            return json.load(f).get("state", "")
    except (OSError, ValueError):
        return ""

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--received" in args:
        d = args[args.index("--received") + 1]
        files = sorted(glob.glob(os.path.join(d, "**", "*"), recursive=True))
        for f, t in dicom_tags([f for f in files if os.path.isfile(f)]).items():
            received_by_study[t.get("0020,000d", "")].append(t)
    sys.exit(main())
