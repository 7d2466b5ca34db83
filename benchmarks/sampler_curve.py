"""Accuracy against denoiser calls: one trained Stem model, one held-out section, every sampler.

The model is trained once (paper recipe: the ε objective the samplers integrate; ``--recipe``
to change) on the other imaged HER2ST sections, at the stated preset and budget, and kept in
``--work`` (rerun to reuse it). Each sampler draws ``--samples`` profiles for the same
``--spots`` held-out spots with the same seed; the mean of the samples is scored (PCC-50, MSE,
RVD in log2(1 + count); coverage80 of the samples) and timed on this machine. Writes
``benchmarks/results/sampler_curve.{json,md,png}`` (metric vs network calls, log x axis).

Usage: .venv/bin/python benchmarks/sampler_curve.py [--samplers ddpm,ddim:100,...,dpm++:3]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from stem_st.data.dataset import open_prepared
from stem_st.data.units import log2_expression
from stem_st.defaults import DEFAULT_SAMPLER
from stem_st.evaluation.metrics import score
from stem_st.recipe import get_recipe
from stem_st.stem import PredictSettings, StemModel, TrainSettings
from stem_st.training.data import section_counts

sys.path.insert(0, str(Path(__file__).parent))
from accuracy_loo import ROOT, fold_prep, machine  # noqa: E402

SAMPLERS = ["ddpm", "ddim:100", "ddim:50", "ddim:20", "ddim:10", "ddim:5",
            "dpm++:20", "dpm++:10", "dpm++:5", "dpm++:3"]
KEYS = ("PCC-50", "MSE", "RVD", "coverage80")
#: the rows the table opens with: the sampler `stem predict` ships, then the paper's
HEADLINE = (DEFAULT_SAMPLER, "ddpm")


def calls(sampler: str) -> int:
    parts = sampler.split(":")
    return int(parts[1]) if len(parts) > 1 else 1000


def held_out_prep(args):
    """The fold's prepared dataset, shared with accuracy_loo.py (same panel and embeddings)."""
    return open_prepared(fold_prep(argparse.Namespace(**{**vars(args), "work": args.preps}), args.holdout))


def trained_model(args) -> StemModel:
    run = Path(args.work) / f"run_{args.holdout}_{args.recipe}_{args.preset}_{args.steps}"
    if (run / "config.json").is_file() and any(run.glob("*.pt")):
        return StemModel.from_run(run)
    ds = held_out_prep(args)
    settings = TrainSettings(prep=str(ds.root), holdout=[args.holdout], preset=args.preset, steps=args.steps,
                             batch_size=args.batch, aug_ratio=args.views - 1, lr=args.lr, seed=0,
                             checkpoint_every=max(args.steps // 4, 1), recipe=get_recipe(args.recipe))
    return StemModel.fit(ds, run, settings, progress=False)[0]


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(KEYS), figsize=(4 * len(KEYS), 3.4))
    for kind, marker in (("ddpm", "s"), ("ddim", "o"), ("dpm++", "^")):
        rs = sorted((r for r in rows if r["sampler"].split(":")[0] == kind), key=lambda r: r["calls"])
        for ax, k in zip(axes, KEYS, strict=True):
            ax.plot([r["calls"] for r in rs], [r[k] for r in rs], marker=marker, label=kind)
    for ax, k in zip(axes, KEYS, strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("network calls per sample")
        ax.set_title(k)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def write_markdown(res: Path, meta: dict, rows: list[dict], ref: dict | None = None) -> None:
    """``res.md``: the shipped sampler's row and the paper's (DDPM) first, then the rest in run order."""
    ref = ref or next((r for r in rows if r["sampler"] == "ddpm"), None)
    spots = meta.get("spots") or int(meta["evaluation"].split()[0])
    head = [r for h in HEADLINE for r in rows if r["sampler"] == h]
    lines = ["# Sampler curve: accuracy against network calls", "", f"Machine: {meta['machine']}.",
             f"Regenerate: `python benchmarks/sampler_curve.py --spots {spots}` (model cached in --work; "
             "`--from-json` only rewrites this file).",
             f"Model: {meta['model']}. Evaluation: {meta['evaluation']}. First rows: the sampler `stem predict` "
             f"ships ({DEFAULT_SAMPLER}), then the paper's (ddpm, 1000 steps).", "",
             "| sampler | calls | PCC-50 | MSE | RVD | coverage80 | seconds | ΔPCC-50 vs DDPM | MSE vs DDPM |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in head + [r for r in rows if r not in head]:
        dp = f"{r['PCC-50'] - ref['PCC-50']:+.4f}" if ref else "–"
        dm = f"{100 * (r['MSE'] / ref['MSE'] - 1):+.2f} %" if ref else "–"
        lines.append(f"| {r['sampler']} | {r['calls']} | {r['PCC-50']:.4f} | {r['MSE']:.4f} | {r['RVD']:.3f} | "
                     f"{r['coverage80']:.3f} | {r['seconds']} | {dp} | {dm} |")
    tmp = res.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, res.with_suffix(".md"))
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared/data/her2st"))
    p.add_argument("--work", default=str(ROOT / "runs/sampler_curve"))
    p.add_argument("--preps", default=str(ROOT / "runs/accuracy_loo"),
                   help="where accuracy_loo.py keeps (or makes) the fold's prepared data")
    p.add_argument("--holdout", default="C6")
    p.add_argument("--recipe", default="paper")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--views", type=int, default=2)
    p.add_argument("--spots", type=int, default=96)
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--samplers", default=",".join(SAMPLERS))
    p.add_argument("--results", default=str(ROOT / "benchmarks/results/sampler_curve"))
    p.add_argument("--from-json", action="store_true", help="only rewrite RESULTS.md from RESULTS.json")
    args = p.parse_args()
    if args.from_json:
        res = Path(args.results)
        d = json.loads(res.with_suffix(".json").read_text())
        write_markdown(res, d["meta"], d["rows"])
        return
    logging.basicConfig(level=logging.WARNING)
    args.work = str(Path(args.work))
    Path(args.work).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model = trained_model(args)
    train_s = time.perf_counter() - t0
    ds = held_out_prep(args)
    a = ds.section(args.holdout)
    rows_idx = np.sort(np.random.default_rng(0).permutation(a.n_obs)[:args.spots])
    truth = log2_expression(section_counts(ds, args.holdout))[rows_idx]
    emb, xy = ds.embeddings(args.holdout)[rows_idx, 0], np.asarray(a.obsm["spatial"])[rows_idx]
    cache = Path(args.work) / f"curve_{args.holdout}_{args.recipe}_{args.preset}_{args.steps}_{args.spots}.json"
    done = json.loads(cache.read_text()) if cache.is_file() else {}
    for sampler in args.samplers.split(","):
        if sampler in done:
            continue
        t = time.perf_counter()
        mean, _, samples = model.predict(emb, xy, PredictSettings(num_samples=args.samples, sampler=sampler,
                                                                     summary="mean"))
        secs = time.perf_counter() - t
        s = score(truth, mean, samples)
        done[sampler] = {"sampler": sampler, "calls": calls(sampler), "seconds": round(secs, 2),
                         **{k: float(s[k]) for k in KEYS}}
        print(json.dumps(done[sampler]), flush=True)
        cache.write_text(json.dumps(done, indent=1))
    rows = [done[s] for s in args.samplers.split(",") if s in done]
    meta = {"machine": machine(), "model": f"{args.recipe} recipe, {args.preset} preset, {args.steps} steps × "
            f"batch {args.batch}, lr {args.lr}, {args.views} views, trained on the imaged HER2ST sections "
            f"but {args.holdout}", "evaluation": f"{args.spots} random spots of {args.holdout} (seed 0), "
            f"{args.samples} samples each, seed 0, mean of samples", "train_seconds_this_run": round(train_s, 1),
            "spots": args.spots}
    res = Path(args.results)
    res.parent.mkdir(parents=True, exist_ok=True)
    res.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    write_markdown(res, meta, rows, done.get("ddpm"))
    plot(rows, res.with_suffix(".png"))

if __name__ == "__main__":
    main()
