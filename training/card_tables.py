#!/usr/bin/python3
"""Print the model card's measured tables (markdown) from a run's results.json, history.json and results/cv.json,
so that every figure in models/MODEL_CARD.md is copied from a file a run wrote.
    /usr/bin/python3 training/card_tables.py --run training/runs/v2
    /usr/bin/python3 training/card_tables.py --study training/results/study_rule.json   # the study-level tables
    /usr/bin/python3 training/card_tables.py --protocol training/results/protocol_audit.json   # "By protocol"
"""
import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def f(v, d=3):
    return "—" if v is None else f"{v:.{d}f}"


def rate(m):
    return f"{m['hits']}/{m['n']} = {m['rate']:.2f} ({m['ci95'][0]:.2f}–{m['ci95'][1]:.2f})"


def study_tables(path):
    s = json.load(open(path))
    findings = ["Cyst", "Stone", "Tumor"]
    n = s["nested"]
    print(f"Out of fold over {s['studies']} studies ({s['slices']} slices; folds {s['folds']}; per class "
          f"{s['studies_per_class']}). 95 % intervals: bootstrap over studies.\n")
    print("| finding | study sensitivity | false finding on Normal studies | called on studies of another finding |"
          "\n|---|---:|---:|---:|")
    for c in findings:
        print(f"| {c} | {rate(n['sensitivity'][c])} | {rate(n['false_finding_rate_normal'][c])} | "
              f"{rate(n['other_finding_rate'][c])} |")
    print(f"| any finding | | {rate(n['false_finding_rate_normal']['any'])} | |")
    prev = s.get("previous_rule_on_the_same_studies")
    if prev:
        m = prev["metrics"]
        print(f"\nThe previous rule (manifest {prev['version']}) on the same studies:\n")
        print("| finding | rule | study sensitivity | false finding on Normal studies |\n|---|---|---:|---:|")
        for c in findings:
            r = prev["rule"][c]
            print(f"| {c} | p ≥ {r['threshold']}, ≥ {r['min_run_slices']} slices | {rate(m['sensitivity'][c])} | "
                  f"{rate(m['false_finding_rate_normal'][c])} |")
        print(f"| any finding | | | {rate(m['false_finding_rate_normal']['any'])} |")
    sh = s["shipped_rule"]
    print(f"\nShipped operating point (chosen on all folds pooled, T = {sh['temperature']}): " + "; ".join(
        f"{c} p ≥ {sh['rule'][c]['threshold']} on ≥ {sh['rule'][c]['min_run_slices']} adjacent slice(s)"
        for c in findings))
    sl = s["slice_level"]
    print(f"\nSlice level, same predictions: macro-F1 {sl['macro_f1']:.3f}, accuracy {sl['accuracy']:.3f}, recall "
          + ", ".join(f"{c} {v:.3f}" for c, v in sl["recall"].items())
          + f"; ECE {sl['ece_uncalibrated']:.3f} uncalibrated, {sl['ece_nested_temperature']:.3f} with the nested "
            "temperature")


def protocol_table(path):
    a = json.load(open(path))
    strata = [("axial", a["by_view"]["axial"]), ("coronal", a["by_view"]["coronal"])]
    names = {"0": "rendering 0 (darkest)", "2": "rendering 2 (brightest)"}
    strata += [(names.get(k, f"rendering {k}"), v) for k, v in sorted(a["by_rendering_cluster"].items())]
    strata += [("axial, kidneys enhanced" if k == "yes" else "axial, kidneys not enhanced", v)
               for k, v in sorted(a["axial_by_kidney_enhancement"].items(), reverse=True)]
    print("| stratum | studies N / C / S / T | Cyst sensitivity | Stone sensitivity | Tumor sensitivity | "
          "false finding on Normal | slice recall Tumor |\n|---|---|---:|---:|---:|---:|---:|")
    for name, v in strata:
        n = v["studies"]
        sens = [v["study_sensitivity"][c] for c in ("Cyst", "Stone", "Tumor")]
        ffr = v["false_finding_rate_normal"]
        print(f"| {name} | {n['Normal']} / {n['Cyst']} / {n['Stone']} / {n['Tumor']} | "
              + " | ".join(rate(m) if m["n"] >= 5 else f"{m['hits']}/{m['n']}" for m in sens)
              + f" | {ffr['hits']}/{ffr['n']} | {v['slice_recall']['Tumor']['rate']:.2f} |")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--run")
    p.add_argument("--study", help="training/results/study_rule.json: print the study-level tables only")
    p.add_argument("--protocol", help="training/results/protocol_audit.json: print the by-protocol table only")
    args = p.parse_args()
    if args.protocol:
        protocol_table(args.protocol)
        return
    if args.study:
        study_tables(args.study)
        return
    if not args.run:
        p.error("--run or --study is required")
    run = Path(args.run)
    r = json.load(open(run / "results.json"))
    t = r["test"]
    print(f"Fixed grouped test split: {t['n']} slices; accuracy {f(t['accuracy'])}, macro-F1 {f(t['macro_f1'])}\n")
    print("| class | precision | recall | F1 | support | ROC AUC (one-vs-rest) |\n|---|---:|---:|---:|---:|---:|")
    for c, v in t["per_class"].items():
        print(f"| {c} | {f(v['precision'])} | {f(v['recall'])} | {f(v['f1'])} | {v['support']} | {f(t['roc_auc'].get(c))} |")
    print("\nConfusion matrix (rows = true, columns = predicted: Normal, Cyst, Stone, Tumor)\n")
    print("| true \\ pred | Normal | Cyst | Stone | Tumor |\n|---|---:|---:|---:|---:|")
    for name, row in zip(["Normal", "Cyst", "Stone", "Tumor"], t["confusion_matrix"]):
        print(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    v = r["val"]
    print(f"\nGrouped validation split (used for T and the decision thresholds): accuracy {f(v['accuracy'])}, "
          f"macro-F1 {f(v['macro_f1'])}")
    for name in ("test", "val"):
        b = r[name].get("group_bootstrap")
        if b:
            print(f"\n{name}: 95 % interval over {b['resamples']} resamples of its {b['studies']} studies: macro-F1 "
                  f"{b['macro_f1_ci95']}; recall " + ", ".join(f"{c} {ci}" for c, ci in b["recall_ci95"].items()))
    e = r["ece"]
    print(f"\nTemperature T = {r['temperature']:.4f}. ECE (15 bins, top-1): validation {f(e['val']['before'], 4)} → "
          f"{f(e['val']['after'], 4)}; test {f(e['test']['before'], 4)} → {f(e['test']['after'], 4)}\n")
    print("| finding | threshold (calibrated p) | test recall | test precision |\n|---|---:|---:|---:|")
    for c, v in r["test_flagging"].items():
        print(f"| {c} | {f(v['threshold'], 4)} | {f(v['recall'])} | {f(v['precision'])} |")
    o = r["ood"]
    print(f"\nOOD: PCA K={o['k']}, threshold {o['threshold']:.2f} = {o['percentile']}th percentile of validation scores\n")
    print("| set | n | flagged as not assessable |\n|---|---:|---:|")
    print(f"| grouped validation kidney slices | {r['val']['n']} | {f(o['val_flagged'])} |")
    print(f"| grouped test kidney slices | {t['n']} | {f(o['test_flagged'])} |")
    for key in ("chest_1_35", "upper_abdomen_36_49", "kidney_55_90", "lower_abdomen_pelvis_100_134"):
        if f"dicom_{key}_n" in o:
            print(f"| TCIA DICOM instances {key} | {o[f'dicom_{key}_n']} | {f(o[f'dicom_{key}_flagged'])} |")
    for key in ("natural", "synthetic"):
        print(f"| {key} images | {o[f'{key}_n']} | {f(o[f'{key}_flagged'])} |")
    print(f"\nby test class: {json.dumps({k: round(x, 3) for k, x in o['test_flagged_by_class'].items()})}")
    print(f"missed natural: {o['natural_missed']}; missed synthetic: {o['synthetic_missed']}")
    if "dicom_kidney_predictions" in r:
        print(f"\nTCIA kidney slices 55–90, predicted classes: {r['dicom_kidney_predictions']}")
        per = {int(i): q for i, q in r["dicom_per_instance"].items()}
        classes = ["Normal", "Cyst", "Stone", "Tumor"]
        flagged = {c: sum(1 for i in range(55, 91) if i in per and not per[i]["flagged"]
                          and per[i]["p"][classes.index(c)] >= t) for c, t in r["decision_thresholds"].items()}
        print(f"TCIA kidney slices 55–90 flagged at the decision thresholds: {flagged}")
    hist = json.load(open(run / "history.json"))
    print("\n| epoch | stage | res | train loss | val loss | val acc | val macro-F1 | train s |\n|---:|---|---:|---:|---:|---:|---:|---:|")
    for h in hist:
        print(f"| {h['epoch']} | {h['stage']} | {h['res']} | {f(h['train_loss'])} | {f(h.get('val_loss'))} | "
              f"{f(h.get('val_acc'))} | {f(h.get('val_macro_f1'))} | {h['train_seconds']:.0f} |")
    print(f"\ntotal training time {hist[-1]['elapsed'] / 60:.1f} min")
    cvp = HERE / "results" / "cv.json"
    if cvp.exists():
        cv = json.load(open(cvp))
        print(f"\nCV ({cv['protocol']}): macro-F1 {cv['macro_f1_mean']:.3f} ± {f(cv['macro_f1_sd'])} over {cv['n_folds']} folds")
        print("| fold | macro-F1 | acc | recall N | C | S | T |\n|---|---:|---:|---:|---:|---:|---:|")
        for k, v in cv["folds"].items():
            rc = v["recall"]
            print(f"| {k} | {f(v['macro_f1'])} | {f(v['accuracy'])} | {f(rc['Normal'])} | {f(rc['Cyst'])} | "
                  f"{f(rc['Stone'])} | {f(rc['Tumor'])} |")
        sd = cv["recall_sd"]
        print(f"\nRecall over the {cv['n_folds']} folds, mean ± sd: " + ", ".join(
            f"{c} {cv['recall_mean'][c]:.3f} ± {f(sd[c])}" for c in cv["recall_mean"]) + ".")


if __name__ == "__main__":
    main()
