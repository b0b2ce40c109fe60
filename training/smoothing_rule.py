#!/usr/bin/python3
"""The study rule's alternative, measured the same way: a finding is present when the moving average of its calibrated
probability over w adjacent slices reaches t somewhere in the study (w >= 3, t >= 0.5, the shipped rule's floors),
instead of w adjacent slices each reaching t. Nested over the grouped folds exactly as study_rule.py (temperature
and (t, w) chosen on the other folds: the highest sensitivity whose false-finding rate on Normal studies is <= 0.02),
scored on each fold's studies. Prints the pooled counts; writes nothing.
    /usr/bin/python3 training/smoothing_rule.py [training/results/oof-longer]   # default: the shipped recipe's
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from calibrate_ood import fit_temperature, softmax  # noqa: E402
from paths import CLASSES  # noqa: E402
from study_rule import FINDINGS, THRESHOLDS, Studies, load, study_metrics  # noqa: E402

WINDOWS = (3, 4, 6, 8)
MAX_FFR, MIN_THRESHOLD = 0.02, 0.5


def peak_means(studies, temperature):
    """{finding: [studies, windows]} the highest moving average of p(finding) over each window length."""
    p = softmax(studies.logits, temperature)
    out = {}
    for c in FINDINGS:
        col = p[:, CLASSES.index(c)]
        out[c] = np.array([[np.convolve(col[idx], np.ones(w) / w, "valid").max() if len(idx) >= w else 0.0
                            for w in WINDOWS] for idx in studies.slices])
    return out


def choose(peaks, cls, mask):
    """Per finding: (window index, threshold) with the highest sensitivity on the masked studies within MAX_FFR."""
    rule = {}
    normal = mask & (cls == 0)
    for c in FINDINGS:
        pos = mask & (cls == CLASSES.index(c))
        best = None
        for j, w in enumerate(WINDOWS):
            for t in THRESHOLDS[THRESHOLDS >= MIN_THRESHOLD]:
                present = peaks[c][:, j] >= t
                sens, ffr = present[pos].mean(), present[normal].mean()
                key = (sens, -ffr, t, -w)
                if ffr <= MAX_FFR and (best is None or key > best[0]):
                    best = (key, j, t)
        rule[c] = best[1:] if best else (len(WINDOWS) - 1, 1.01)
    return rule


def count(rate):
    return f"{rate['hits']}/{rate['n']}"


def main():
    study, fold, logits, y = load(*sys.argv[1:2])  # default: study_rule.OOF
    st = Studies(study, fold, logits, y)
    present = {c: np.zeros(len(st.ids), bool) for c in FINDINGS}
    for f in sorted(set(fold.tolist())):
        inner = fold != f
        peaks = peak_means(st, fit_temperature(logits[inner], y[inner]))
        rule = choose(peaks, st.cls, st.sfold != f)
        held = st.sfold == f
        for c in FINDINGS:
            present[c][held] = (peaks[c][:, rule[c][0]] >= rule[c][1])[held]
    m = study_metrics(present, st.cls, np.random.default_rng(0))
    print(f"studies found { {c: count(m['sensitivity'][c]) for c in FINDINGS} }; a finding on "
          f"{count(m['false_finding_rate_normal']['any'])} Normal studies; called on studies of another finding "
          f"{ {c: count(m['other_finding_rate'][c]) for c in FINDINGS} }")


if __name__ == "__main__":
    main()
