"""Sample quality against training compute: Stem's proper scores at every budget the product
ships, before and after the training regime that watches its samples.

Each job trains Stem (the default recipe with a regime's overrides) at one budget on one
leave-one-section-out fold of the six imaged HER2ST sections, with the same prepared folds,
panel (hmhvg:200), embeddings (ImageNet EfficientNet-Lite0, 2 dihedral views) and scores
(``stem_st.evaluation``) as ``accuracy_loo.py``; predicts the held-out section with 20 samples
per spot (dpm++:10) and scores them in log2(1 + count). Jobs run in parallel worker processes
(one thread each; on a GPU they share the card) and each writes its own JSON, so a rerun resumes.

Regimes: ``before`` is the training as it was (no validation; the spread calibrated on training
spots; the last state kept); ``validated`` keeps a training section out of the network's
training, scores its samples every tenth of the run, keeps the best state and calibrates the
spread on that section; the other regimes add one lever each to ``validated``.

Usage (repository root):
  .venv/bin/python benchmarks/sample_budget.py prepare            # the six folds (accuracy_loo's)
  .venv/bin/python benchmarks/sample_budget.py run --configs all --workers 2
  .venv/bin/python benchmarks/sample_budget.py pack DIR           # the folds for another machine
  .venv/bin/python benchmarks/sample_budget.py unpack JOBS.json    # jobs collected there (--collect)
  .venv/bin/python benchmarks/sample_budget.py summary            # results/sample_budget.{json,md,png}
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ["C2", "C3", "C4", "C5", "C6", "A1"]
#: budgets: preset, optimiser steps, batch, learning rate (tiny 600 × 32 is the CPU demo's)
BUDGETS = {
    "tiny 600×32": ("tiny", 600, 32, 5e-4),
    "tiny 2400×32": ("tiny", 2400, 32, 5e-4),
    "tiny 4800×32": ("tiny", 4800, 32, 5e-4),
    "tiny 600×256": ("tiny", 600, 256, 5e-4),
    "small 2000×256": ("small", 2000, 256, 1e-4),
    "paper 2000×256": ("paper", 2000, 256, 1e-4),
}
#: every regime starts from the default recipe as it was when these regimes were defined (without
#: neighbour targets, with one spread factor and continuous draws, whatever the default now has), so a
#: rerun keeps each row's meaning
BASE_RECIPE = "neighbour_targets=0,spread_criterion=coverage,count_lattice=false"
#: regimes: TrainSettings overrides and recipe overrides (``key=value,…``) on BASE_RECIPE
REGIMES = {
    "before": ({"validation": "none"}, ""),
    "validated": ({"validation": "auto"}, ""),
    "validated + cond noise 1": ({"validation": "auto"}, "cond_noise=1.0"),
    "validated + cond noise 2": ({"validation": "auto"}, "cond_noise=2.0"),
    "validated + cond noise 4": ({"validation": "auto"}, "cond_noise=4.0"),
    "validated + cond noise 0.5": ({"validation": "auto"}, "cond_noise=0.5"),
    "validated + weight decay 0.1": ({"validation": "auto", "weight_decay": 0.1}, ""),
    "validated + cond dropout 0.2": ({"validation": "auto"}, "cond_dropout=0.2"),
    # validations every 1/40 of the run instead of every tenth: early stopping with a finer grid
    "validated every 1/40": ({"validation": "auto", "val_fraction": 40}, ""),
    "validated + neighbour targets 16": ({"validation": "auto"}, "neighbour_targets=16"),
    "validated + neighbour targets 64": ({"validation": "auto"}, "neighbour_targets=64"),
    # the spread calibrated so that the residuals' randomised ranks hold 80 % (not 20 empirical quantiles)
    "validated + neighbour targets 16 + rank coverage": ({"validation": "auto"},
                                                         "neighbour_targets=16,spread_criterion=rank"),
    # the draws moved onto log2(1 + k) after calibration: training is unchanged, so a job of the regime
    # without it also predicts and scores this one with the same network (LATTICE)
    "validated + neighbour targets 16 + count lattice": ({"validation": "auto"},
                                                         "neighbour_targets=16,count_lattice=true"),
}
LATTICE = " + count lattice"
TINY = ("tiny 600×32", "tiny 2400×32", "tiny 600×256", "tiny 4800×32")
#: named job lists, most important first (a run with a deadline stops launching in this order)
PLANS = {
    "gpu": [*(f"{r} @ small 2000×256" for r in list(REGIMES)[:4]),
            *(f"{r} @ {b}" for b in TINY for r in ("before", "validated")),
            *(f"{r} @ small 2000×256" for r in list(REGIMES)[4:]),
            *(f"{r} @ {b}" for r in list(REGIMES)[2:] for b in TINY),
            *(f"{r} @ paper 2000×256" for r in ("validated", "before"))],
    # the next GPU session: neighbour targets (best on the CPU: no decay from 600 to 2400 × 32) at the
    # budgets the CPU cannot reach, then the missing validated budgets and the other levers at small
    "gpu2": ["validated + neighbour targets 16 @ small 2000×256",
             "validated + neighbour targets 16 @ tiny 4800×32", "validated + neighbour targets 16 @ tiny 600×256",
             "validated @ tiny 600×256", "validated @ tiny 4800×32",
             "validated + neighbour targets 64 @ small 2000×256", "validated every 1/40 @ small 2000×256",
             "validated + cond noise 2 @ small 2000×256", "validated + weight decay 0.1 @ small 2000×256",
             "validated + cond noise 4 @ small 2000×256", "validated + cond dropout 0.2 @ small 2000×256"],
}
KEYS = ("PCC-50", "MSE", "CRPS", "energy", "variogram", "coverage50", "coverage80", "coverage95",
        "rank_coverage50", "rank_coverage80", "rank_coverage95", "corr_err_sample", "moran_err_sample",
        "spread_error_rho")
RESULTS = ROOT / "benchmarks" / "results"


def config_names(spec: str) -> list[str]:
    """``all``, ``plan:<name>`` (PLANS) or a ``;``-separated list of ``regime @ budget``
    (``regime @ *`` for every budget)."""
    every = [f"{r} @ {b}" for r in REGIMES for b in BUDGETS]
    if spec == "all":
        return every
    if spec.startswith("plan:"):
        return PLANS[spec[5:]]
    out = []
    for item in spec.split(";"):
        regime, _, budget = (p.strip() for p in item.partition("@"))
        out += [f"{regime} @ {b}" for b in BUDGETS] if budget == "*" else [f"{regime} @ {budget}"]
    bad = [c for c in out if c not in every]
    if bad:
        raise SystemExit(f"error: unknown configs {bad}; regimes {list(REGIMES)}, budgets {list(BUDGETS)}")
    return out


def job_file(work: Path, config: str, fold: str) -> Path:
    safe = config.replace(" ", "_").replace("×", "x").replace("@", "at").replace("+", "plus").replace("/", "of")
    return work / "jobs" / f"{safe}__{fold}.json"


def run_job(preps: str, work: str, config: str, fold: str, device: str, max_steps: int = 0,
            models: str = "") -> dict:
    """Train, predict and score one (config, fold); the row is also written to its JSON file.
    ``models``: a folder of saved networks, one per fold, trained as ``config`` trains (checked on
    the recipe), predicted and scored instead of a new training (``train_seconds`` None)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = "1"
    import numpy as np
    import torch

    from stem_st.data.context import RADII, graph_matrices
    from stem_st.data.dataset import open_prepared
    from stem_st.data.units import log2_expression
    from stem_st.defaults import DEFAULT_NUM_SAMPLES, DEFAULT_SAMPLER
    from stem_st.evaluation.metrics import score
    from stem_st.evaluation.probabilistic import probabilistic_scores
    from stem_st.recipe import get_recipe
    from stem_st.stem import PredictSettings, StemModel, TrainSettings
    from stem_st.training.data import section_counts

    torch.set_num_threads(1)
    regime, _, budget = (p.strip() for p in config.partition("@"))
    over, recipe_over = REGIMES[regime]
    preset, steps, batch, lr = BUDGETS[budget]
    steps = min(steps, max_steps) if max_steps else steps  # a smoke run
    over = dict(over)
    if "val_fraction" in over:
        over["val_every"] = max(1, steps // over.pop("val_fraction"))
    ds = open_prepared(Path(preps) / f"prep_{fold}")
    settings = TrainSettings(prep=str(ds.root), holdout=[fold], preset=preset, steps=steps, batch_size=batch,
                             aug_ratio=1, lr=lr, seed=0, checkpoint_every=10 ** 9, compile=False,
                             recipe=get_recipe("default", ",".join(filter(None, (BASE_RECIPE, recipe_over)))),
                             **over)
    t0 = time.perf_counter()
    if models:
        model, t_train, curve = StemModel.load(Path(models) / fold), None, []
        assert model.recipe == settings.recipe and model.meta["train"]["steps"] == steps, \
            f"{models}/{fold} was not trained as {config}"
    else:
        with tempfile.TemporaryDirectory() as run_dir:
            model, result = StemModel.fit(ds, run_dir, settings, device=device, progress=False)
        t_train = round(time.perf_counter() - t0, 1)
        curve = [{k: v for k, v in r.items() if k == "step" or k.startswith("val")} for r in result.losses
                 if r.get("val") not in (None, "")]
    a = ds.section(fold)
    truth = log2_expression(section_counts(ds, fold))
    emb, xy = ds.embeddings(fold)[:, 0], np.asarray(a.obsm["spatial"])
    graph = graph_matrices(xy, RADII["ring1"][0])[0]
    t1 = time.perf_counter()
    mean, _, samples = model.predict(emb, xy, PredictSettings(num_samples=DEFAULT_NUM_SAMPLES,
                                                             sampler=DEFAULT_SAMPLER, seed=0, device=device,
                                                             spatial_noise=False))  # as the committed rows
    t_predict = time.perf_counter() - t1

    def scored(name: str, mean, samples) -> dict:
        row = {k: float(v) for k, v in score(truth, mean).items() if k in KEYS}
        prob = probabilistic_scores(truth, mean, samples, graph)
        row.update({k: float(v) for k, v in prob.items() if k in KEYS})
        out = {"config": name, "fold": fold, "log2": row, "curve": curve, "device": device,
               "train_seconds": t_train, "predict_seconds": round(t_predict, 1),
               "spread": float(np.median(model.target.spread)) if model.target.spread is not None else None,
               "validation": model.meta.get("validation"), "steps": steps, "batch": batch, "lr": lr,
               "preset": preset, "recipe": model.recipe.to_dict(), "settings": over}
        path = job_file(Path(work), name, fold)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(out, indent=1, default=float))
        tmp.replace(path)
        return out

    if regime + LATTICE in REGIMES and not model.recipe.count_lattice:  # the same network, on the lattice
        model.recipe = replace(model.recipe, count_lattice=True)
        lattice = model.predict(emb, xy, PredictSettings(num_samples=DEFAULT_NUM_SAMPLES, sampler=DEFAULT_SAMPLER,
                                                         seed=0, device=device, spatial_noise=False))
        scored(f"{regime}{LATTICE} @ {budget}", lattice[0], lattice[2])
        model.recipe = replace(model.recipe, count_lattice=False)
    return scored(config, mean, samples)


def _safe_job(*args) -> dict:
    try:
        return run_job(*args)
    except Exception:  # one failed job must not stop the others; its traceback is the result
        return {"config": args[2], "fold": args[3], "error": traceback.format_exc()[-2000:]}


def warm() -> None:
    """Compile (and cache) the numba kernels of the scores once, before the workers start."""
    import numpy as np
    import scipy.sparse as sp

    from stem_st.evaluation.probabilistic import crps, energy, morans_i, variogram

    rng = np.random.default_rng(0)
    x = rng.poisson(3.0, (16, 6)).astype(np.float64)
    s = x[:, None] + rng.normal(size=(16, 4, 6))
    crps(x, s), energy(x, s), variogram(x, s)
    morans_i(x, sp.csr_matrix(np.eye(16, k=1) + np.eye(16, k=-1)))


def cmd_run(args) -> None:
    import torch

    work = Path(args.work)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    folds = args.folds.split(",")
    todo = [(c, f) for c in config_names(args.configs) for f in folds if not job_file(work, c, f).is_file()]
    if args.fold_major:  # the configs of one fold together: partial results stay paired
        todo.sort(key=lambda cf: folds.index(cf[1]))
    todo = list(dict.fromkeys(todo))
    print(f"{len(todo)} jobs on {device} with {args.workers} workers", flush=True)
    t0 = time.perf_counter()
    warm()
    print(f"score kernels compiled in {time.perf_counter() - t0:.0f} s", flush=True)
    errors = []
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(_safe_job, args.preps, str(work), c, f, device, args.max_steps, args.models): (c, f)
                   for c, f in todo}
        for fut in as_completed(futures):
            r = fut.result()
            if "error" in r:
                errors.append(r)
                print(f"FAILED {r['config']} {r['fold']}:\n{r['error']}", flush=True)
            else:
                print(f"{time.perf_counter() - t0:6.0f} s  {r['config']:40s} {r['fold']}  CRPS "
                      f"{r['log2']['CRPS']:.3f} energy {r['log2']['energy']:.2f} variogram "
                      f"{r['log2']['variogram']:.0f} corr {r['log2']['corr_err_sample']:.3f} "
                      f"train {r['train_seconds']} s", flush=True)
            if args.collect:
                collect(work, Path(args.collect))
            if args.deadline and time.perf_counter() - t0 > args.deadline:
                print("deadline: cancelling the jobs not started", flush=True)
                for f in futures:
                    f.cancel()
    if errors:
        sys.exit(1)


def collect(work: Path, dest: Path) -> None:
    """Every finished job of ``work`` in one JSON list at ``dest`` (written atomically)."""
    rows = [json.loads(f.read_text()) for f in sorted((work / "jobs").glob("*.json"))]
    tmp = dest.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows, default=float))
    tmp.replace(dest)


def cmd_unpack(args) -> None:
    """The job files of a ``--collect`` list (from another machine) into ``--work``."""
    for r in json.loads(Path(args.collected).read_text()):
        path = job_file(Path(args.work), r["config"], r["fold"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(r, indent=1, default=float))


def cmd_prepare(args) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from accuracy_loo import fold_prep

    ns = argparse.Namespace(work=args.preps, data=args.data, views=2)
    for fold in SECTIONS:
        print(fold, fold_prep(ns, fold), flush=True)


def cmd_pack(args) -> None:
    """The six prepared folds for another machine: each fold's files without its embeddings, the
    embeddings once (they are the same in every fold), and ``unpack.sh`` to put them back."""
    src, dst = Path(args.preps), Path(args.dest)
    (dst / "embeddings").mkdir(parents=True, exist_ok=True)
    for fold in SECTIONS:
        shutil.copytree(src / f"prep_{fold}", dst / f"prep_{fold}", dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("*.embedding.npy"))
        for emb in (src / f"prep_{fold}" / "sections").glob("*.embedding.npy"):
            target = dst / "embeddings" / emb.name
            if not target.is_file():
                shutil.copy2(emb, target)
    (dst / "unpack.sh").write_text("set -e\ncd \"$(dirname \"$0\")\"\nfor d in prep_*; do "
                                   "for e in embeddings/*.npy; do cp -n \"$e\" \"$d/sections/\"; done; done\n")
    print(f"packed into {dst}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("prepare", "run", "pack", "unpack", "summary"):
        s = sub.add_parser(name)
        s.add_argument("--preps", default=str(ROOT / "runs/accuracy_loo"))
        s.add_argument("--work", default=str(ROOT / "runs/sample_budget"))
    sub.choices["prepare"].add_argument("--data", default=str(ROOT.parent / "shared/data/her2st"))
    sub.choices["pack"].add_argument("dest")
    sub.choices["unpack"].add_argument("collected")
    r = sub.choices["run"]
    r.add_argument("--configs", default="all")
    r.add_argument("--folds", default=",".join(SECTIONS))
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--device", default=None)
    r.add_argument("--deadline", type=float, default=0, help="seconds after which no new job starts")
    r.add_argument("--max-steps", type=int, default=0, help="cap every budget's steps (a smoke run)")
    r.add_argument("--models", default="", help="saved networks (one folder per fold) trained as the configs "
                   "train (runs/joint_sampling/models: the shipped regime at tiny 600×32): scored, not retrained")
    r.add_argument("--fold-major", action="store_true", help="run fold by fold rather than config by config")
    r.add_argument("--collect", default=None, help="after each job, every finished job in this one JSON file")
    sub.choices["summary"].add_argument("--extra", nargs="*", default=[], help="more job folders to merge")
    args = p.parse_args()
    if args.cmd == "summary":
        from sample_budget_summary import summarise

        summarise([Path(args.work) / "jobs", *[Path(e) for e in args.extra]], RESULTS)
        return
    {"prepare": cmd_prepare, "run": cmd_run, "pack": cmd_pack, "unpack": cmd_unpack}[args.cmd](args)


if __name__ == "__main__":
    main()
