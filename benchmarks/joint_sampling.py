"""Whole sections, not independent spots: does one draw of Stem look like tissue?

For each leave-one-section-out fold of the six imaged HER2ST sections (the prepared folds of
``accuracy_loo.py``: panel hmhvg:200, ImageNet EfficientNet-Lite0, 2 views), Stem is trained as
``stem train`` ships it (the default recipe and budget, validation on a training section, the
noise field fitted there) and the held-out section is predicted with 20 samples per spot
(dpm++:10) twice from the same network: ``joint`` (the shipped whole-section draws: x_T of
neighbouring spots co-varies) and ``independent`` (``--independent-spots``). The sampled
baselines (knn, knn+ctx, knn+ctx2, ridge+ctx2 with Gaussian / bootstrap / MVN residuals) draw
20 profiles per spot on the same folds.

Scores in log2(1 + count): CRPS, energy, variogram, coverage 50/80/95 (per spot; unchanged by
construction up to Monte Carlo noise), and the structure of one sampled section (draw 0 of each
spot): Moran's I error on the ring-1 graph and the spatial variogram γ_k (mean over genes and
spot pairs of ring k = 1, 2, 3 pitches of (y_i − y_j)²/2) of the draw over the truth's, with
the residual correlations the field was fitted to. One figure: one draw beside the truth and
the point for two genes on one fold, joint and independent.

Usage (repository root, after ``benchmarks/sample_budget.py prepare``):
  .venv/bin/python benchmarks/joint_sampling.py run --workers 2
  .venv/bin/python benchmarks/joint_sampling.py summary   # results/joint_sampling.{json,md,png}
  .venv/bin/python benchmarks/joint_sampling.py summary --cost    # results/joint_sampling_cost.{json,md}
  .venv/bin/python benchmarks/joint_sampling.py summary \
      --slide ../shared/data/her2st/data/ST-imgs/C/C2/5714_HE_BT_C2.jpg   # after `make demo` (its run):
      # results/joint_sampling_slide.{json,md}
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from report import fold_commands, read_folds, run_folds, write_fold

ROOT = Path(__file__).resolve().parents[1]
BASELINES = ("knn+ctx", "knn+ctx2", "knn", "ridge+ctx2+gauss", "ridge+ctx2+boot", "ridge+ctx2+mvn")
KEYS = ("CRPS", "energy", "variogram", "coverage50", "coverage80", "coverage95", "moran_err_sample",
        "svgm_err_sample")
FIGURE_FOLD, FIGURE_GENES = "C6", ("ERBB2", "MGP")


def structure(truth, point, samples, xy, graph) -> dict:
    """Per-spot scores, the structure of draw 0 (Moran's I error, γ ratio per ring) and the
    draws' mean variance over the truth's mean squared distance from the point."""
    import numpy as np

    from stem_st.data.context import shell_pairs, spot_pitch
    from stem_st.evaluation.probabilistic import probabilistic_scores, spatial_variogram

    out = {k: v for k, v in probabilistic_scores(truth, point, samples, graph, xy=xy).items()
           if k in KEYS or k.startswith("rank_coverage")}
    rings = shell_pairs(np.asarray(xy, dtype=np.float64) / spot_pitch(xy))
    out["svgm_ratio"] = (spatial_variogram(samples[:, 0], rings) / spatial_variogram(truth, rings)).tolist()
    # how wide the draws are per spot against how far the truth lies from the point (1: as wide)
    out["width_ratio"] = float(samples.var(1).mean() / ((truth - point) ** 2).mean())
    return out


def saved_fold(models: str, preps: str, fold: str):
    """What a benchmark on the saved networks starts a fold job with: one thread, and the fold's
    prepared data (``ds``), its saved network (``model``), the held-out section's ``truth`` in
    log2(1 + count), embeddings (``emb``, view 0), spot centres (``xy``) and ring-1 ``graph``."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = "1"
    from types import SimpleNamespace

    import numpy as np
    import torch

    from stem_st.data.context import RADII, graph_matrices
    from stem_st.data.dataset import open_prepared
    from stem_st.data.units import log2_expression
    from stem_st.stem import StemModel
    from stem_st.training.data import section_counts

    torch.set_num_threads(1)
    ds = open_prepared(Path(preps) / f"prep_{fold}")
    xy = np.asarray(ds.section(fold).obsm["spatial"])
    return SimpleNamespace(ds=ds, model=StemModel.load(Path(models) / fold), xy=xy,
                           truth=log2_expression(section_counts(ds, fold)), emb=ds.embeddings(fold)[:, 0],
                           graph=graph_matrices(xy, RADII["ring1"][0])[0])


def validation_set(ds, model, fold: str, work: Path):
    """The validation section's conditions and cross-fitted z, rebuilt as training built them."""
    import torch

    from stem_st.stem.validation import choose_section, finish_validation, start_validation
    from stem_st.training.data import build_training_data
    from stem_st.training.pairs import TrainingPairs, fit_statistics

    train = model.meta["train"]
    data = build_training_data(ds, model.meta["train_sections"], train["aug_ratio"], train["seed"],
                               train["target_layer"], model.recipe.context, work / f".pairs-{fold}")
    try:
        group = choose_section(data, train["validation"], train["seed"])
        vs = start_validation(data, group, train["seed"])
        scaler, target, _ = fit_statistics(data, model.recipe, train["seed"])
        finish_validation(vs, TrainingPairs(data, scaler, target, torch.device("cpu")), target)
    finally:
        data.close(remove=True)
    return vs


def recalibrate(model, vs) -> None:
    """What training now does after it has chosen its state, on a saved network: the shift widening
    as :func:`~stem_st.stem.shift.fit_reference` now sets it, then the spread and the noise field
    fitted on the rebuilt validation section ``vs``."""
    import numpy as np

    from stem_st.stem import PredictSettings
    from stem_st.stem.fit import calibrate_spread
    from stem_st.stem.shift import WIDEN_FROM
    from stem_st.stem.spatial import calibrate_spatial

    if model.shift_ref is not None and model.shift_ref.widen_d is not None:
        model.shift_ref.widen_from = WIDEN_FROM
    settings = PredictSettings(seed=0, device="cpu")
    calibrate_spread(model, vs.cond, vs.z, np.full(len(vs.z), vs.group), settings)
    calibrate_spatial(model, vs.cond, vs.z, vs.xy, settings, vs.section, vs.prior, vs.group)


def run_fold(preps: str, work: str, fold: str) -> dict:
    """Train (or load the fold's saved model), predict joint and independent, score with the
    baselines; written to the fold's JSON."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = "1"
    import tempfile

    import numpy as np
    import torch

    from stem_st.data.context import RADII, graph_matrices
    from stem_st.data.dataset import open_prepared
    from stem_st.data.units import log2_expression
    from stem_st.defaults import DEFAULT_BUDGET, DEFAULT_NUM_SAMPLES
    from stem_st.evaluation.baselines import make_baseline
    from stem_st.stem import PredictSettings, StemModel, TrainSettings
    from stem_st.training.data import section_counts

    torch.set_num_threads(1)
    ds = open_prepared(Path(preps) / f"prep_{fold}")
    saved = Path(work) / "models" / fold
    t0 = time.perf_counter()
    if (saved / "model.pt").is_file():  # a model of an earlier run: calibrated afresh, as training now does
        model = StemModel.load(saved)
        before = dict(model.spatial or {})
        recalibrate(model, validation_set(ds, model, fold, Path(work)))
        model.spatial["target_reproduced"] = bool(np.allclose(before.get("target", []), model.spatial["target"]))
    else:
        settings = TrainSettings(prep=str(ds.root), holdout=[fold], **DEFAULT_BUDGET, aug_ratio=1, seed=0,
                                 checkpoint_every=10 ** 9, compile=False, validation="auto")
        with tempfile.TemporaryDirectory() as run_dir:
            model, _ = StemModel.fit(ds, run_dir, settings, device="cpu", progress=False)
        model.save(saved)
    train_seconds = time.perf_counter() - t0
    a = ds.section(fold)
    truth = log2_expression(section_counts(ds, fold))
    emb, xy = ds.embeddings(fold)[:, 0], np.asarray(a.obsm["spatial"])
    graph = graph_matrices(xy, RADII["ring1"][0])[0]
    out = {"fold": fold, "train_seconds": round(train_seconds, 1), "spots": len(truth), "spatial": model.spatial,
           "validation": model.meta.get("validation", {}).get("section"), "methods": {}}
    keep, fitted = {}, dict(model.spatial or {})
    one = {**fitted, "rho_genes": None, "rho": fitted.get("rho_panel", fitted.get("rho", 0.0))}
    for name, joint, field in (("stem joint", True, fitted), ("stem independent", False, fitted),
                               ("stem joint (one rho)", True, one),
                               ("stem joint (residual correlation)", True,
                                {**fitted, "rho_genes": fitted.get("rho_genes_corr")}),
                               ("stem joint rho=1", True, {**fitted, "rho_genes": None, "rho": 1.0})):
        model.spatial = field
        t = time.perf_counter()
        point, _, samples = model.predict(emb, xy, PredictSettings(seed=0, device="cpu", spatial_noise=joint))
        out["methods"][name] = {**structure(truth, point, samples, xy, graph),
                                "seconds": round(time.perf_counter() - t, 1)}
        keep[name] = (point, samples)
    train = [s for s in ds.sections if s != fold]
    for name in BASELINES:
        mean, _, samples = make_baseline(name, DEFAULT_NUM_SAMPLES, 0).fit(ds, train).predict(emb, xy)
        out["methods"][name] = structure(truth, mean, samples, xy, graph)
    if fold == FIGURE_FOLD:
        genes = [ds.genes.index(g) for g in FIGURE_GENES if g in ds.genes]
        np.savez_compressed(Path(work) / f"figure_{fold}.npz", xy=xy, genes=np.array(FIGURE_GENES)[:len(genes)],
                            truth=truth[:, genes], point=keep["stem joint"][0][:, genes],
                            joint=keep["stem joint"][1][:, 0][:, genes],
                            independent=keep["stem independent"][1][:, 0][:, genes])
    write_fold(work, fold, out)
    print(f"{fold}: done in {round(time.perf_counter() - t0, 1)} s", flush=True)
    return out


def cmd_run(args) -> None:
    run_folds(run_fold, args.work, args.folds, args.workers, args.preps, args.work)


def figure(npz: Path, dest: Path) -> None:
    """One draw beside the truth and the point for two genes: joint and independent."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = np.load(npz)
    cols = (("truth", "truth"), ("point", "point (posterior mean)"), ("joint", "one draw: whole section"),
            ("independent", "one draw: independent spots"))
    fig, axes = plt.subplots(len(d["genes"]), len(cols), figsize=(3.2 * len(cols), 3.2 * len(d["genes"])))
    for r, gene in enumerate(d["genes"]):
        lo, hi = np.percentile(d["truth"][:, r], [1, 99])
        for c, (key, title) in enumerate(cols):
            ax = axes[r, c]
            ax.scatter(d["xy"][:, 0], d["xy"][:, 1], c=d[key][:, r], s=9, cmap="viridis", vmin=lo, vmax=hi)
            ax.set_title(f"{gene}: {title}", fontsize=9)
            ax.invert_yaxis()
            ax.set_aspect("equal")
            ax.axis("off")
    fold = npz.stem.split("_")[1]
    fig.suptitle(f"HER2ST {fold} held out, log2(1 + count), one colour scale per gene", fontsize=10)
    fig.tight_layout()
    fig.savefig(dest, dpi=90)
    plt.close(fig)


def cmd_summary(args) -> None:
    import numpy as np
    from report import machine, write_results

    folds = read_folds(args.work)
    methods = ["stem joint", "stem independent", *BASELINES, "stem joint (residual correlation)",
               "stem joint (one rho)", "stem joint rho=1"]
    md = ["# Whole-section draws (`benchmarks/joint_sampling.py`)", "",
          f"Machine: {machine()}, one thread per fold. HER2ST leave-one-section-out folds of `accuracy_loo.py` "
          "(panel hmhvg:200, ImageNet EfficientNet-Lite0, 2 views); Stem as `stem train` ships it (default recipe "
          "and budget, validation on a training section where the noise field is fitted); 20 samples per spot, "
          "dpm++:10, log2(1 + count). `stem joint`: the shipped draws (x_T of neighbouring spots co-varies); "
          "`stem independent`: the same network with `--independent-spots`; `stem joint (residual correlation)`: "
          "each gene's strength fitted to its residuals' correlation between neighbours rather than to the "
          "draw's variogram; `stem joint (one rho)`: one strength for the panel (fitted to the mean residual "
          "correlation); `stem joint rho=1` (sensitivity, not a choice: chosen "
          "on no data): the fitted kernel at full strength for every gene. moran_err_sample and "
          "svgm_err_sample score draw 0 of every spot as one map. Regenerate: "
          "`.venv/bin/python benchmarks/joint_sampling.py run && … summary`.", "",
          "## Mean ± sd over folds", "", "width_ratio: the draws' mean variance per spot and gene over the mean "
          "squared distance of the truth from the point (1: the draws are as wide as the truth lies off).", "",
          "| method | folds | " + " | ".join((*KEYS, "width_ratio")) + " |",
          "|---|---|" + "---|" * (len(KEYS) + 1)]
    for m in methods:
        rows = [r["methods"][m] for r in folds.values() if m in r["methods"]]
        cells = [f"{np.mean([x[k] for x in rows]):.3f} ± {np.std([x[k] for x in rows], ddof=1):.3f}"
                 if len(rows) > 1 and all(k in x for x in rows) else "–" for k in (*KEYS, "width_ratio")]
        md.append(f"| {m} | {len(rows)} | " + " | ".join(cells) + " |")
    paired = {}
    md += ["", "## Paired per fold: stem joint − other (mean ± sd of the difference; folds where joint is better)",
           "", "| other | " + " | ".join(KEYS) + " |", "|---|" + "---|" * len(KEYS)]
    for o in methods[1:]:
        cells, paired[o] = [], {}
        for k in KEYS:
            d = np.array([r["methods"]["stem joint"][k] - r["methods"][o][k] for r in folds.values()])
            better = None if k.startswith("coverage") else int((d < 0).sum())
            paired[o][k] = {"mean": float(d.mean()), "sd": float(d.std(ddof=1)), "better": better}
            cells.append(f"{d.mean():+.4f} ± {d.std(ddof=1):.4f}" + ("" if k.startswith("coverage")
                                                                      else f" ({better}/{len(d)})"))
        md.append(f"| {o} | " + " | ".join(cells) + " |")
    md += ["", "## One draw's spatial variogram over the truth's, ring by ring (1 = the truth's)", "",
           "| fold | " + " | ".join(f"{m} rings 1/2/3" for m in (*methods[:3], *methods[-3:])) + " |",
           "|---|---|---|---|---|---|---|"]
    for f, r in folds.items():
        md.append(f"| {f} | " + " | ".join(" / ".join(f"{v:.2f}" for v in r["methods"][m]["svgm_ratio"])
                                           for m in (*methods[:3], *methods[-3:])) + " |")
    md += ["", "## The fitted noise field (on the validation section)", "",
           "| fold | validation | residual corr. rings 1/2/3 | kernel | length (pitches) | ρ (kernel fit) | "
           "passed to the draws | ρ one for the panel | ρ per gene 10/50/90 % | draws' corr. rings 1/2/3 |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for f, r in folds.items():
        s = r["spatial"] or {}
        md.append(f"| {f} | {r['validation']} | " + " / ".join(f"{v:.3f}" for v in s.get("target", []))
                  + f" | {s.get('kernel')} | {s.get('length', 0):.2f} | {s.get('rho_kernel', 0):.3f} | "
                  f"{s.get('passed', float('nan')):.2f} | {s.get('rho_panel', float('nan')):.3f} | "
                  + " / ".join(f"{v:.2f}" for v in np.quantile(s.get("rho_genes") or [np.nan], [0.1, 0.5, 0.9]))
                  + " | " + " / ".join(f"{v:.3f}" for v in s.get("achieved", [])) + " |")
    md += ["", "## Cost", "", "`train s`: training, or (a model saved by an earlier run) loading it and fitting "
           "its noise field afresh on the rebuilt validation section. Predict seconds are of two folds sharing "
           "the machine, the first prediction of each process also timing the rows per forward pass: see "
           "`joint_sampling_cost.md` for a clean comparison.", "",
           "| fold | train s | predict s (joint) | predict s (independent) |", "|---|---|---|---|"]
    md += [f"| {f} | {r['train_seconds']} | {r['methods']['stem joint']['seconds']} | "
           f"{r['methods']['stem independent']['seconds']} |" for f, r in folds.items()]
    npz = Path(args.work) / f"figure_{FIGURE_FOLD}.npz"
    if npz.is_file():
        figure(npz, Path(args.out).with_suffix(".png"))  # the docs page shows it below the tables
    data = {"machine": machine(), "folds": folds, "paired": paired,
            "command": "python benchmarks/joint_sampling.py run && python benchmarks/joint_sampling.py summary"}
    write_results(args.out, data, "\n".join(md))


def cmd_cost(args) -> None:
    """What whole-section draws cost: one fold's saved model predicts its section with and without
    the field, alternately, ``--repeats`` times each in one process (warm), on the threads given."""
    import numpy as np
    import torch
    from report import machine, write_results

    from stem_st.data.dataset import open_prepared
    from stem_st.stem import PredictSettings, StemModel

    torch.set_num_threads(args.threads)
    ds = open_prepared(Path(args.preps) / f"prep_{args.fold}")
    model = StemModel.load(Path(args.work) / "models" / args.fold)
    emb, xy = ds.embeddings(args.fold)[:, 0], np.asarray(ds.section(args.fold).obsm["spatial"])
    times = {"joint": [], "independent": []}
    model.predict(emb, xy, PredictSettings(device="cpu"))  # warm: the rows per forward pass are timed once
    for _ in range(args.repeats):
        for name in times:
            t = time.perf_counter()
            model.predict(emb, xy, PredictSettings(device="cpu", spatial_noise=name == "joint"))
            times[name].append(time.perf_counter() - t)
    med = {k: float(np.median(v)) for k, v in times.items()}
    md = ["# What whole-section draws cost (`benchmarks/joint_sampling.py summary --cost`)", "",
          f"Machine: {machine()}, nothing else running. HER2ST {args.fold} ({len(xy)} spots), its fold's saved "
          f"model (tiny), `stem predict`'s defaults (20 samples, dpm++:10, point, shift widening), alternately "
          f"{args.repeats} times each after a warm-up.", "",
          "| draws | median s | runs (s) |", "|---|---|---|"]
    md += [f"| {k} | {med[k]:.2f} | " + ", ".join(f"{v:.2f}" for v in times[k]) + " |" for k in times]
    extra = 100 * (med["joint"] / med["independent"] - 1)
    md += ["", f"Whole-section draws cost {extra:+.1f} % of the prediction's time."]
    write_results(Path(args.out).with_name(Path(args.out).name + "_cost"),
                  {"machine": machine(), "fold": args.fold, "spots": len(xy), "seconds": times, "median": med},
                  "\n".join(md))


def cmd_slide_cost(args) -> None:
    """Whole-slide prediction with and without the field: ``stem predict-slide`` on one H&E image
    as a whole process, alternately, after a warm-up run that fills the embedding cache (so the
    timed runs differ only in the draws)."""
    import subprocess
    import sys
    import tempfile

    import numpy as np
    from report import machine, write_results

    stem = str(Path(sys.executable).with_name("stem"))
    times: dict[str, list[float]] = {"joint": [], "independent": []}
    with tempfile.TemporaryDirectory() as tmp:
        def once(name: str) -> float:
            cmd = [stem, "predict-slide", args.run, "--image", args.slide, "--mpp", str(args.mpp),
                   "--out", str(Path(tmp) / f"{name}.h5ad"), "--overwrite"]
            if name == "independent":
                cmd.append("--independent-spots")
            t = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
            return time.perf_counter() - t

        warm = once("joint")
        for _ in range(args.repeats):
            for name in times:
                times[name].append(once(name))
        import anndata as ad

        spots = ad.read_h5ad(Path(tmp) / "joint.h5ad", backed="r").n_obs
    med = {k: float(np.median(v)) for k, v in times.items()}
    md = ["# What whole-section draws cost on a whole slide (`benchmarks/joint_sampling.py summary --slide`)", "",
          f"Machine: {machine()}, nothing else running. `stem predict-slide` on {Path(args.slide).name} "
          f"({spots} virtual spots at the training pitch, mpp {args.mpp}), run `{args.run}`, its defaults (20 "
          f"samples, dpm++:10); the whole command timed as a process, alternately {args.repeats} times each after "
          f"a warm-up run that filled the embedding cache ({warm:.1f} s).", "",
          "| draws | median s | runs (s) |", "|---|---|---|"]
    md += [f"| {k} | {med[k]:.2f} | " + ", ".join(f"{v:.2f}" for v in times[k]) + " |" for k in times]
    md += ["", f"Whole-section draws change the whole-slide wall time by "
               f"{100 * (med['joint'] / med['independent'] - 1):+.1f} %."]
    write_results(Path(args.out).with_name(Path(args.out).name + "_slide"),
                  {"machine": machine(), "image": Path(args.slide).name, "spots": spots, "warm_up_seconds": warm,
                   "seconds": times, "median": med}, "\n".join(md))


def main() -> None:
    def options(run, summary) -> None:
        summary.add_argument("--cost", action="store_true", help="instead: time joint against independent draws")
        summary.add_argument("--slide", help="instead: time predict-slide on this image, joint and independent")
        summary.add_argument("--run", default=str(ROOT / "runs/demo/run"), help="the run --slide predicts with")
        summary.add_argument("--mpp", type=float, default=0.6889718628297177, help="the --slide image's µm/px")
        summary.add_argument("--fold", default="C3")
        summary.add_argument("--repeats", type=int, default=3)
        summary.add_argument("--threads", type=int, default=2)
        summary.add_argument("--preps", default=str(Path(__file__).resolve().parents[1] / "runs/accuracy_loo"))

    def summary(args) -> None:
        (cmd_slide_cost if args.slide else cmd_cost if args.cost else cmd_summary)(args)

    fold_commands(__doc__, "joint_sampling", cmd_run, summary, options)


if __name__ == "__main__":
    main()
