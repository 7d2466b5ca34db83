"""Leave-one-section-out accuracy of Stem recipes and the baselines on the six imaged HER2ST
sections (C2–C6, A1).

Each fold holds one section out: the gene panel (hmhvg:200) is chosen on the other five,
every method trains on those five with the same embeddings (ImageNet EfficientNet-Lite0,
2 dihedral views, cached) and is scored on the held-out section in two units, log2(1 + count)
(the paper's) and log2(1 + CP10k) over the panel (depth-normalised). Stem's compute is the
same for every recipe and stated in the output. Results are cached per fold and method in
``--work`` (rerun to resume); the summary (mean ± sd over folds) is written to
``benchmarks/results/accuracy_loo.{json,md}``.

Usage: .venv/bin/python benchmarks/accuracy_loo.py [--variants paper,default] [--baselines all]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from stem_st.cli.demo import PROFILES
from stem_st.data.context import RADII, graph_matrices
from stem_st.data.dataset import open_prepared
from stem_st.data.units import log2_expression
from stem_st.defaults import DEFAULT_NUM_SAMPLES, DEFAULT_SAMPLER
from stem_st.evaluation.baselines import BASELINES, SAMPLED, make_baseline
from stem_st.evaluation.clustering import label_agreement
from stem_st.evaluation.metrics import UNIT_NAMES, in_unit, score
from stem_st.evaluation.probabilistic import KEYS as PROB_KEYS
from stem_st.evaluation.probabilistic import probabilistic_scores
from stem_st.preparation import PrepareConfig, prepare
from stem_st.recipe import get_recipe
from stem_st.stem import PredictSettings, StemModel, TrainSettings
from stem_st.training.data import section_counts

SECTIONS = ["C2", "C3", "C4", "C5", "C6", "A1"]
#: one lever at a time from the paper recipe, then the combination (``name+key=value;…``)
X0 = "objective=x0;min_snr_gamma=0"  # the default before its samples were scored (v-2)
VARIANTS = {
    "stem:paper": "paper",
    "stem:zscore": "paper+target=zscore",
    "stem:zscore+ctx": "paper+target=zscore;context=ring1",
    "stem:zscore+prior": "paper+target=zscore;prior=ridge",
    "stem:zscore+x0+posterior": "paper+target=zscore;objective=x0;point=posterior_mean",
    "stem:zscore+cosine": "paper+target=zscore;lr_schedule=cosine",
    "stem:zscore+v+minsnr": "paper+target=zscore;objective=v;min_snr_gamma=5;point=posterior_mean",
    "stem:default": "default",
    # levers for the samples: the noise with the residuals' gene covariance (PriorGrad-style);
    # the spread per gene, or by CRPS instead of the 80 % coverage
    "stem:default correlated noise": "default+correlated_noise=true",
    "stem:default spread per gene": "default+spread_per_gene=true",
    "stem:default spread by CRPS per gene": "default+spread_criterion=crps;spread_per_gene=true",
    # every row below is the x0 default (v-2) and its levers, from before the samples were scored
    "stem:default-v2 (x0)": f"default+{X0}",
    "stem:default-v2 (x0) correlated noise": f"default+{X0};correlated_noise=true",
    # the default's own ablations: ring-1 context only; samples not centred on the point
    "stem:default-v2 ring1": f"default+{X0};context=ring1",
    "stem:default-v2 uncentred": f"default+{X0};centre_samples=false",
    # condition dropout 10 % and classifier-free guidance (samples at s = 1; the point at every s)
    "stem:default-v2 cfg": f"default+{X0};cond_dropout=0.1;guidance=1",
    # sample efficiency: more optimiser steps (batch, lr, sampler unchanged)
    "stem:default-v2 1200 steps": f"default+{X0}",
    "stem:default-v2 2400 steps": f"default+{X0}",
    # learning-rate schedule, batch and shape at a fixed budget
    "stem:default-v2 constant lr": f"default+{X0};lr_schedule=constant",
    "stem:default-v2 batch 64 × 300 steps": f"default+{X0}",
    "stem:default-v2 wide 128×2 250 steps": f"default+{X0}",
    "stem:default-v2 deep 64×4 320 steps": f"default+{X0}",
}
#: budget overrides of a variant (the rest of the budget is the command line's)
#: the wide and deep rows get the steps that take the tiny preset's 600-step training time (measured on
#: the CPU box at batch 32: tiny 83 ms/step, hidden 128 × depth 2 200 ms, hidden 64 × depth 4 156 ms);
#: batch 64 × 300 sees as many pairs as 32 × 600
BUDGETS = {"stem:default-v2 1200 steps": {"steps": 1200}, "stem:default-v2 2400 steps": {"steps": 2400},
           "stem:default-v2 batch 64 × 300 steps": {"steps": 300, "batch": 64},
           "stem:default-v2 wide 128×2 250 steps": {"steps": 250, "net": {"hidden": 128, "heads": 4}},
           "stem:default-v2 deep 64×4 320 steps": {"steps": 320, "net": {"depth": 4}}}
STEP_CURVE = ("stem:default-v2 1200 steps", "stem:default-v2 2400 steps")
ORDER = ["stem:default", "stem:default-v2 (x0)", "stem:default correlated noise",
         "stem:default-v2 (x0) correlated noise", "stem:default-v2 cfg", "stem:default-v2 1200 steps",
         "stem:default-v2 2400 steps", "stem:default-v2 constant lr", "stem:default-v2 batch 64 × 300 steps",
         "stem:default-v2 wide 128×2 250 steps", "stem:default-v2 deep 64×4 320 steps",
         "stem:default-v2 ring1", "stem:default-v2 uncentred", "stem:paper", "stem:zscore",
         "stem:zscore+prior", "stem:zscore+ctx", "stem:zscore+x0+posterior", "stem:zscore+v+minsnr",
         "stem:zscore+cosine"]
RESIDUAL_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
GUIDANCE = (0.0, 0.5, 1.0, 2.0)
KEYS = ("PCC-10", "PCC-50", "PCC-all", "MSE", "MAE", "RVD", *PROB_KEYS)
ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.machine()}, {os.cpu_count()} CPU cores, {gpu}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def fold_prep(args, fold: str, completed: str | None = None, cache: str | None = None) -> Path:
    """The fold's prepared dataset (with ``layers['completed']`` from ``completed`` if given)."""
    out = Path(args.work) / f"prep_{fold}"
    if not (out / "manifest.json").is_file():
        prepare(PrepareConfig(data=args.data, layout="her2st", sections=SECTIONS, holdout=[fold],
                              views=args.views, out=str(out), overwrite=True, completed=completed,
                              cache_dir=cache or str(Path(args.work) / "cache")))
    return out


def scored(truth, mean, samples, labels, graph=None) -> dict:
    """Point metrics, and with samples the probabilistic ones, in both units."""
    row = {}
    for unit in UNIT_NAMES:
        y, p = in_unit(truth, unit), in_unit(mean, unit)
        s = score(y, p)
        row[unit] = {k: float(s[k]) for k in KEYS if k in s}
        if samples is not None and samples.shape[1] > 1:
            prob = probabilistic_scores(y, p, in_unit(samples, unit), graph)
            row[unit].update({k: v for k, v in prob.items() if k in PROB_KEYS})
            row[unit]["PIT"] = prob["PIT"]
    if labels is not None:
        row["log2"].update({k: float(v) for k, v in label_agreement(mean, labels).items()
                            if k in ("ARI", "NMI")})
    return row


def run_method(args, ds, fold: str, name: str) -> dict:
    a = ds.section(fold)
    truth = log2_expression(section_counts(ds, fold))
    emb, xy = ds.embeddings(fold)[:, 0], np.asarray(a.obsm["spatial"])
    labels = a.obs["label"].to_numpy() if "label" in a.obs else None
    graph = graph_matrices(xy, RADII["ring1"][0])[0]
    train = [s for s in ds.sections if s != fold]
    t0 = time.perf_counter()
    if name in BASELINES:
        model = make_baseline(name, args.samples, args.seed)
        mean, _, samples = model.fit(ds, train, getattr(args, "target_layer", None)).predict(emb, xy)
        info = {"samples": args.samples} if name in SAMPLED else {}
    else:
        base, _, over = VARIANTS[name].partition("+")
        recipe = get_recipe(base, over.replace(";", ","))
        budget = BUDGETS.get(name, {})
        steps, batch = budget.get("steps", args.steps), budget.get("batch", args.batch)
        settings = TrainSettings(prep=str(ds.root), holdout=[fold], preset=args.preset, steps=steps,
                                 batch_size=batch, aug_ratio=args.views - 1, lr=args.lr,
                                 seed=args.seed, checkpoint_every=10 ** 9, recipe=recipe,
                                 target_layer=getattr(args, "target_layer", None))
        with tempfile.TemporaryDirectory() as run_dir:
            model, _ = StemModel.fit(ds, run_dir, settings, net_overrides=budget.get("net"), progress=False)
        t_train = time.perf_counter() - t0
        mean, _, samples = model.predict(emb, xy, PredictSettings(num_samples=args.samples, sampler=args.sampler,
                                                               seed=args.seed, spatial_noise=False))  # committed
        info = {"train_seconds": round(t_train, 1), "steps": steps, "batch": batch,
                "net": model.net_cfg.to_dict(), "recipe": recipe.to_dict(),
                "samples": args.samples, "sampler": args.sampler,
                "spread": None if model.target.spread is None else float(np.median(model.target.spread)),
                "spread_calibrated_with": model.meta.get("spread_calibrated_with")}
        keep = Path(args.work) / "models" / fold / name.replace(" ", "_").replace(":", "-")
        model.save(keep)  # for later looks at the same network (not a result)
        np.save(keep / "samples.npy", samples.astype(np.float16))
        point_settings = PredictSettings(seed=args.seed)
        if recipe.point == "posterior_mean":  # the same network, other residual weights
            info["residual_weight"] = {}
            for w in RESIDUAL_WEIGHTS:
                model.recipe = replace(recipe, residual_weight=w)
                info["residual_weight"][str(w)] = scored(truth, model.posterior_mean(emb, xy, point_settings),
                                                         None, None)
            if recipe.cond_dropout > 0:  # the same network, other guidance scales
                info["guidance"] = {}
                for g in GUIDANCE:
                    model.recipe = replace(recipe, guidance=g)
                    info["guidance"][str(g)] = scored(truth, model.posterior_mean(emb, xy, point_settings),
                                                      None, None)
    info["seconds"] = round(time.perf_counter() - t0, 1)
    return {**scored(truth, mean, samples, labels, graph), **info}


def expand(results: dict, curves: tuple[str, ...] = ("stem:default", "stem:default-v2 (x0)", *STEP_CURVE),
           ) -> dict:
    """Per fold, the residual-weight curve of the ``curves`` recipes and every guidance curve
    as rows of their own (the other recipes' weight curves stay in the JSON)."""
    out = {}
    for fold, methods in results.items():
        out[fold] = {}
        for m, r in methods.items():
            out[fold][m] = r
            for w, rw in (r.get("residual_weight", {}) if m in curves else {}).items():
                out[fold][f"{m} (w={w})"] = rw
            for g, rg in r.get("guidance", {}).items():
                out[fold][f"{m} (s={g})"] = rg
    return out


#: per-fold comparisons: metric → +1 if higher is better, −1 if lower is better
POINT_PAIRS = {"PCC-50": 1, "MSE": -1}
PROB_PAIRS = {"CRPS": -1, "energy": -1, "variogram": -1, "corr_err_sample": -1, "moran_err_sample": -1}
POINT_COLS = ("PCC-10", "PCC-50", "PCC-all", "MSE", "MAE", "RVD")
PROB_COLS = PROB_KEYS
HEADLINE = ("stem:default", "stem:paper", "ridge+ctx2", "ridge+ctx2+boot", "ridge+ctx2+mvn", "ridge+ctx2+gauss",
            "knn+ctx2", "knn+ctx", "knn", "stem:default-v2 (x0)")
HEADLINE_COLS = ("PCC-50", "MSE", "CRPS", "energy", "variogram", "coverage50", "coverage80", "coverage95",
                 "corr_err_sample", "moran_err_sample", "spread_error_rho")


def paired(results: dict, method: str, others: list[str], unit: str = "log2",
           keys: dict[str, int] | None = None) -> list[dict]:
    """Per-fold differences ``method − other`` for each of ``keys``: mean, sd over folds and the
    number of folds where ``method`` is better. Paired, so the folds' own spread cancels."""
    keys = keys or POINT_PAIRS
    rows = []
    for o in others:
        folds = [f for f in SECTIONS if method in results.get(f, {}) and o in results.get(f, {})
                 and all(k in results[f][method][unit] and k in results[f][o][unit] for k in keys)]
        if not folds:
            continue
        row = {"method": method, "other": o, "folds": len(folds)}
        for k, better in keys.items():
            d = np.array([results[f][method][unit][k] - results[f][o][unit][k] for f in folds])
            row[k] = {"mean": float(d.mean()), "sd": float(d.std(ddof=1)) if len(d) > 1 else 0.0,
                      "wins": int((better * d > 0).sum())}
        rows.append(row)
    return rows


def paired_lines(title: str, note: str, pairs: list[dict], keys: dict[str, int],
                 label: str = "other") -> list[str]:
    if not pairs:
        return []
    out = [f"## {title}", "", note, "",
           f"| {label} | " + " | ".join(f"Δ{k} | better" for k in keys) + " |", "|---" * (1 + 2 * len(keys)) + "|"]
    for r in pairs:
        cells = [f"{r[k]['mean']:+.4f} ± {r[k]['sd']:.4f} | {r[k]['wins']}/{r['folds']}" for k in keys]
        out.append(f"| {r[label]} | " + " | ".join(cells) + " |")
    return [*out, ""]


def headline_names(summary: dict) -> list[str]:
    """The rows every table opens with: the default recipe, the paper recipe and the best baseline
    (highest mean log2 PCC-50; the first listed on a tie)."""
    base = [r for r in summary.get("log2", []) if not r["method"].startswith("stem:") and "PCC-50" in r]
    best = max(base, key=lambda r: r["PCC-50"], default=None)
    return ["stem:default", "stem:paper", *([best["method"]] if best else [])]


def headline_first(rows: list[dict], names: list[str], key: str = "method") -> list[dict]:
    """``rows`` with the headline rows first, then the other baselines, then the other Stem rows
    (the ablations), each group in its own order."""
    head = [r for n in names for r in rows if r[key] == n]
    rest = [r for r in rows if r[key] not in names]
    stem = [r for r in rest if r[key].startswith("stem:")]
    return head + [r for r in rest if r not in stem] + stem


def table_lines(rows: list[dict], cols: tuple[str, ...], extra: tuple[str, ...] = ()) -> list[str]:
    out = ["| method | folds | " + " | ".join((*cols, *extra)) + " |", "|---" * (len(cols) + len(extra) + 2) + "|"]
    most = max((r["folds"] for r in rows), default=0)
    for r in rows:
        cells = [f"{r[k]:.3f} ± {r[k + '_sd']:.3f}" if k in r else "–" for k in cols]
        cells += [f"{r[k]:.3f}" if k in r else "–" for k in extra]
        folds = f"{r['folds']} †" if r["folds"] < most else str(r["folds"])
        out.append(f"| {r['method']} | {folds} | " + " | ".join(cells) + " |")
    if any(r["folds"] < most for r in rows):
        out += ["", f"† fewer than {most} folds: a mean over other sections, not comparable with the "
                f"{most}-fold rows (compare them in the paired tables)."]
    return out


def summarise(results: dict, methods: list[str]) -> dict:
    out = {}
    for unit in (*UNIT_NAMES, ):
        rows = []
        for m in methods:
            folds = [results[f][m] for f in SECTIONS if m in results.get(f, {})]
            row = {"method": m, "folds": len(folds)}
            for k in (*KEYS, "ARI", "NMI"):
                vals = [f[unit][k] for f in folds if k in f[unit] and np.isfinite(f[unit][k])]
                if vals:
                    row[k] = float(np.mean(vals))
                    row[k + "_sd"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
            rows.append(row)
        out[unit] = rows
    return out


def steps_lines(results: dict) -> list[str]:
    """Sample efficiency: the default recipe at 600 (the budget), 1200 and 2400 steps, fold by fold
    (PCC-50 / MSE at the shipped w and at the best w of the curve)."""
    names = ["stem:default-v2 (x0)", *STEP_CURVE]
    folds = [f for f in SECTIONS if f in results and names[0] in results[f]]
    if not any(n in results.get(f, {}) for f in folds for n in STEP_CURVE):
        return []
    curve = [n for n in STEP_CURVE if any(n in results.get(f, {}) for f in folds)]  # no empty column
    names = [names[0], *curve]
    out = ["## Sample efficiency: optimiser steps at batch 32 (the x0 default v-2, log2(1 + count))", "",
           "PCC-50 / MSE of the shipped point (w = 0.25), and the best PCC-50 over the residual weights "
           "(w at which it is reached). Same folds, same samples and sampler; only the steps change.", "",
           "| fold | 600 steps (the budget) | " + " | ".join(n.split(" ", 1)[1] for n in curve) + " |",
           "|---" * (len(names) + 1) + "|"]
    for f in folds:
        cells = []
        for n in names:
            r = results[f].get(n)
            if r is None:
                cells.append("–")
                continue
            curve = {w: v["log2"]["PCC-50"] for w, v in r.get("residual_weight", {}).items()}
            best = max(curve, key=curve.get) if curve else None
            cells.append(f"{r['log2']['PCC-50']:.3f} / {r['log2']['MSE']:.3f}"
                         + (f" (best {curve[best]:.3f} at w={best})" if best else ""))
        out.append(f"| {f} | " + " | ".join(cells) + " |")
    return [*out, ""]


def markdown(summary: dict, meta: dict, pairs: list[dict] | None = None, results: dict | None = None,
             prob_pairs: list[dict] | None = None) -> str:
    lines = ["# Leave-one-section-out accuracy, HER2ST C2–C6 + A1", "",
             f"Machine: {meta['machine']}. Stem budget per fold: {meta['stem_budget']}. "
             f"Baselines: their normal fit; sampled ones draw as many profiles per spot as Stem. Encoder: "
             f"ImageNet EfficientNet-Lite0 (not a pathology encoder), {meta['views']} views. "
             f"Regenerate: `{meta['command']}`. A difference smaller than the sd over folds is not a result.", ""]
    log2 = {r["method"]: r for r in summary.get("log2", [])}
    head = [log2[m] for m in HEADLINE if m in log2]
    names = headline_names(summary)
    order = {n: i for i, n in enumerate(names)}  # paired rows: the default's, then the paper's, then the rest
    prob_pairs = sorted(prob_pairs or [], key=lambda r: order.get(r["method"], len(order)))
    pairs = headline_first(pairs or [], names, "other")
    if head:
        lines += ["## Headline (log2(1 + count), mean ± sd over folds)", "",
                  "Point metrics of the reported expression beside proper scores of the samples (lower is "
                  "better for CRPS, energy, variogram and the structure errors; coverageNN should be 0.NN; "
                  "spread_error_rho > 0 means the spread follows the error). Definitions: "
                  "`stem_st/evaluation/probabilistic.py`.", "", *table_lines(head, HEADLINE_COLS), ""]
    lines += paired_lines(
        "Stem's samples against each sampled baseline, fold by fold (log2(1 + count))",
        "Differences stem row − baseline over the same folds: mean ± sd of the per-fold difference, and in how "
        "many folds Stem is better (lower).", prob_pairs or [], PROB_PAIRS, "pair")
    lines += paired_lines(
        "The default's point against each baseline, fold by fold (log2(1 + count))",
        "Differences stem:default − baseline over the same folds (higher PCC-50, lower MSE is better).",
        pairs or [], POINT_PAIRS)
    for unit, rows in summary.items():
        rows = headline_first(rows, names)
        lines += [f"## {UNIT_NAMES[unit]}: point metrics (mean ± sd over folds)", "",
                  "Rows `stem:<recipe> (w=…)` score the same trained network's posterior-mean estimate with "
                  "another residual weight w (prior + w · learned residual); rows `(s=…)` likewise at guidance "
                  "scale s. Rows marked `(ddim:10 × 10, …)` are earlier runs with that sampler.", "",
                  *table_lines(rows, POINT_COLS, ("ARI", "NMI") if unit == "log2" else ()), "",
                  f"## {UNIT_NAMES[unit]}: the samples (mean ± sd over folds)", "",
                  *table_lines([r for r in rows if "CRPS" in r or "coverage80" in r], PROB_COLS), ""]
    return "\n".join(lines + steps_lines(results or {}))


def rendered(res: Path) -> None:
    """Rewrite ``res.md`` from ``res.json`` as :func:`main` writes them."""
    d = json.loads(res.with_suffix(".json").read_text())
    text = markdown(d["summary"], d["meta"], d["paired"], d["folds"], d["paired_samples"])
    tmp = res.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, res.with_suffix(".md"))
    print(f"wrote {res.with_suffix('.md')}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared/data/her2st"))
    p.add_argument("--work", default=str(ROOT / "runs/accuracy_loo"))
    p.add_argument("--variants", default=",".join(ORDER))
    p.add_argument("--baselines", default=",".join(BASELINES))
    p.add_argument("--folds", default=",".join(SECTIONS))
    cpu = PROFILES["cpu"]  # Stem's budget per fold: the CPU demo's
    p.add_argument("--preset", default=cpu["preset"])
    p.add_argument("--steps", type=int, default=cpu["steps"])
    p.add_argument("--batch", type=int, default=cpu["batch_size"])
    p.add_argument("--lr", type=float, default=cpu["lr"])
    p.add_argument("--views", type=int, default=cpu["views"])
    # what `stem predict` ships (and what the spread is calibrated with)
    p.add_argument("--samples", type=int, default=DEFAULT_NUM_SAMPLES)
    p.add_argument("--sampler", default=DEFAULT_SAMPLER)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results", default=str(ROOT / "benchmarks/results/accuracy_loo"))
    p.add_argument("--from-json", action="store_true",
                   help="only rewrite RESULTS.md from RESULTS.json (no training, no scoring)")
    args = p.parse_args()
    if args.from_json:
        rendered(Path(args.results))
        return
    logging.basicConfig(level=logging.WARNING)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "results.json"
    results = json.loads(cache.read_text()) if cache.is_file() else {}
    methods = [m for m in args.baselines.split(",") if m] + [v for v in args.variants.split(",") if v]
    preps = {fold: fold_prep(args, fold) for fold in args.folds.split(",")}
    for m in methods:  # method by method, so an interrupted run leaves whole rows
        for fold, prep in preps.items():
            if m in results.get(fold, {}):
                continue
            ds = open_prepared(prep)
            results.setdefault(fold, {})[m] = run_method(args, ds, fold, m)
            r = results[fold][m]["log2"]
            print(f"{fold} {m}: PCC-50 {r['PCC-50']:.3f} MSE {r['MSE']:.3f} RVD {r['RVD']:.3f} "
                  f"cov {r.get('coverage80', float('nan')):.3f} ({results[fold][m]['seconds']} s)", flush=True)
            cache.write_text(json.dumps(results, indent=1))
    rows = expand(results)
    found = list(dict.fromkeys(m for f in rows.values() for m in f))
    stem_rows = sorted((m for m in found if m.startswith("stem:")), key=lambda m: not m.startswith("stem:default"))
    summary = summarise(rows, [m for m in found if m in BASELINES] + stem_rows)
    point_baselines = [b for b in BASELINES if b != "mean" and not b.startswith("ridge+ctx2+")]
    pairs = paired(results, "stem:default", point_baselines)
    stems = [m for m in stem_rows
             if "(" not in m and any("CRPS" in rows[f].get(m, {}).get("log2", {}) for f in rows)]
    prob_pairs = [{**r, "pair": f"{s} − {r['other']}"} for s in stems
                  for r in paired(results, s, [b for b in SAMPLED if b in found], keys=PROB_PAIRS)]
    meta = {"machine": machine(), "views": args.views,
            "stem_budget": f"{args.preset} preset, {args.steps} steps × batch {args.batch}, lr {args.lr}, "
                           f"{args.samples} samples {args.sampler} (+ posterior-mean pass where the "
                           "recipe uses it)",
            "command": "python benchmarks/accuracy_loo.py"}
    res = Path(args.results)
    res.parent.mkdir(parents=True, exist_ok=True)
    res.with_suffix(".json").write_text(json.dumps({"meta": meta, "summary": summary, "paired": pairs,
                                                    "paired_samples": prob_pairs, "folds": results}, indent=1))
    text = markdown(summary, meta, pairs, results, prob_pairs)
    res.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
