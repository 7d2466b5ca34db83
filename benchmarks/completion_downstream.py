"""Does LGDiST completion help expression prediction? Stem and the ridge/knn baselines trained
on completed vs raw counts, leave-one-section-out over the six imaged HER2ST sections.

LGDiST is fitted once on the 30 sections without an image (27 train, G1–G3 choose the
checkpoints), with the CPU profile and the shipped settings (``benchmarks/completion.py``'s
``default`` variant), and completes the six imaged sections (``stem complete apply``). Each fold
is then prepared as in ``benchmarks/accuracy_loo.py`` (same panel rule, embeddings, budget) with
the completed counts as ``layers['completed']``; every method is trained on the five other
sections' raw counts, then on their completed counts, and always scored against the *measured*
counts of the held-out section. Writes ``benchmarks/results/completion_downstream.{json,md}``.

Usage: .venv/bin/python benchmarks/completion_downstream.py
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy_loo as loo  # noqa: E402
import completion as bench  # noqa: E402

from stem_st.atomic import write_json  # noqa: E402
from stem_st.cli.demo import PROFILES  # noqa: E402
from stem_st.completion.pipeline import apply_completion, fit_completion  # noqa: E402
from stem_st.data.dataset import open_prepared  # noqa: E402

ALL = [f"{p}{i}" for p, n in zip("ABCDEFGH", (6, 6, 6, 6, 3, 3, 3, 3)) for i in range(1, n + 1)]
OTHERS = [s for s in ALL if s not in loo.SECTIONS]
VAL = ["G1", "G2", "G3"]
METHODS = ["ridge", "knn", "ridge+ctx2", "stem:default"]
TARGETS = {"raw": None, "completed": "completed"}


def completed_folder(args, work: Path) -> Path:
    """Fit LGDiST on the 30 sections without an image and complete the imaged six."""
    comp, done = work / "lgdist", work / "completed"
    if not all((done / f"{s}_completed.h5ad").is_file() for s in loo.SECTIONS):
        s = bench.settings_of("default")
        if not (comp / "fit.json").is_file():
            fit_completion(args.data, "her2st", [x for x in OTHERS if x not in VAL], VAL, comp, s,
                           cfg_overrides=bench.CONFIG, resume=(comp / "config.json").is_file())
        apply_completion(comp, loo.SECTIONS, done, num_samples=bench.NUM_SAMPLES, sampler=bench.SAMPLER,
                         overwrite=True)
    return done


def summary(results: dict) -> dict:
    out = {}
    for m in METHODS:
        for t in TARGETS:
            rows = [results[f][m][t] for f in loo.SECTIONS if t in results.get(f, {}).get(m, {})]
            if len(rows) < len(loo.SECTIONS):
                continue
            out[f"{m}|{t}"] = {unit: {k: (float(np.mean([r[unit][k] for r in rows])),
                                          float(np.std([r[unit][k] for r in rows], ddof=1)))
                                      for k in ("PCC-50", "PCC-all", "MSE", "RVD")} for unit in rows[0]
                               if unit in ("log2", "cp10k")}
    return out


def markdown(results: dict, meta: dict) -> str:
    s = summary(results)
    lines = ["# Trained on LGDiST-completed vs raw counts (HER2ST leave-one-section-out, 6 imaged sections)", "",
             f"Machine: {meta['machine']}. Scored against the measured counts of the held-out section. "
             f"LGDiST: {meta['lgdist']}. Stem: {meta['stem_budget']}. Mean ± sd over folds; Δ = completed − raw "
             "per fold, mean ± sd (n folds better).", ""]
    for unit in ("log2", "cp10k"):
        lines += [f"## {unit}", "", "| method | targets | PCC-50 | PCC-all | MSE | RVD |",
                  "|---|---|---|---|---|---|"]
        for m in METHODS:
            for t in TARGETS:
                if f"{m}|{t}" in s:
                    r = s[f"{m}|{t}"][unit]
                    cells = [f"{r[k][0]:.3f} ± {r[k][1]:.3f}" for k in ("PCC-50", "PCC-all", "MSE", "RVD")]
                    lines.append(f"| {m} | {t} | " + " | ".join(cells) + " |")
            folds = [f for f in loo.SECTIONS if len(results.get(f, {}).get(m, {})) == 2]
            if len(folds) == len(loo.SECTIONS):
                cells = []
                for k, better in (("PCC-50", 1), ("PCC-all", 1), ("MSE", -1), ("RVD", -1)):
                    d = np.array([results[f][m]["completed"][unit][k] - results[f][m]["raw"][unit][k]
                                  for f in folds])
                    cells.append(f"{d.mean():+.3f} ± {d.std(ddof=1):.3f} ({int((better * d > 0).sum())}/{len(d)})")
                lines.append(f"| {m} | Δ | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(loo.ROOT.parent / "shared/data/her2st"))
    ap.add_argument("--work", default=str(loo.ROOT / "runs/completion_downstream"))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out", default=str(loo.ROOT / "benchmarks/results/completion_downstream"))
    ap.add_argument("--reuse-raw-stem", action="store_true",
                    help="take Stem's raw-count rows from benchmarks/accuracy_loo.py's cache")
    args = ap.parse_args()
    cpu = PROFILES["cpu"]
    budget = {"preset": cpu["preset"], "steps": cpu["steps"], "batch": cpu["batch_size"], "lr": cpu["lr"],
              "views": cpu["views"], "samples": cpu["num_samples"], "sampler": cpu["sampler"], "seed": 0}
    for k, v in budget.items():
        setattr(args, k, v)
    logging.basicConfig(level=logging.WARNING)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    done = completed_folder(args, work)
    cache = work / "results.json"
    results = json.loads(cache.read_text()) if cache.is_file() else {}
    loo_cache = loo.ROOT / "runs/accuracy_loo/results.json"
    if args.reuse_raw_stem and loo_cache.is_file():  # the same preps (panel, views), seed and budget
        for fold, rows in json.loads(loo_cache.read_text()).items():
            if "stem:default" in rows:
                results.setdefault(fold, {}).setdefault("stem:default", {}).setdefault("raw", rows["stem:default"])
    cache_dir = str(loo.ROOT / "runs/accuracy_loo/cache")  # the LOO benchmark's embeddings
    for m in args.methods.split(","):
        for fold in loo.SECTIONS:
            ds = open_prepared(loo.fold_prep(args, fold, str(done), cache_dir))
            for t, layer in TARGETS.items():
                if t in results.get(fold, {}).get(m, {}):
                    continue
                args.target_layer = layer
                r = loo.run_method(args, ds, fold, m)
                results.setdefault(fold, {}).setdefault(m, {})[t] = r
                print(f"{fold} {m} {t}: PCC-50 {r['log2']['PCC-50']:.3f} MSE {r['log2']['MSE']:.3f}", flush=True)
                cache.write_text(json.dumps(results, indent=1))
    fit = json.loads((work / "lgdist" / "fit.json").read_text())
    meta = {"machine": loo.machine(), "lgdist": f"{bench.CONFIG}, {bench.BUDGET}, shipped settings, "
            f"fit on {len(OTHERS) - len(VAL)} sections + {VAL} for checkpoints in {fit['seconds']} s, "
            f"{bench.NUM_SAMPLES} samples {bench.SAMPLER}",
            "stem_budget": f"{args.preset} preset, {args.steps} steps × batch {args.batch}, "
                           f"{args.samples} samples {args.sampler} (the CPU demo budget, as accuracy_loo)"}
    write_json(Path(args.out + ".json"), {"meta": meta, "summary": summary(results), "folds": results})
    Path(args.out + ".md").write_text(markdown(results, meta))
    print(markdown(results, meta))


if __name__ == "__main__":
    main()
