"""Intervals on a new patient and on a shallower section: do they stay honest?

For each leave-one-section-out fold of the six imaged HER2ST sections (the prepared folds of
``accuracy_loo.py``: panel hmhvg:200, ImageNet EfficientNet-Lite0, 2 views), Stem is trained as
``stem train`` ships it (the default recipe and budget, validation on a training section) and
the held-out section is predicted with 20 samples per spot (dpm++:10), with and without the
shift widening (the same draws; each way with its own spread, both calibrated on the validation
section). Fold A1 is the new patient (trained on patient C only, another resolution).

Scores of the samples: CRPS, energy score, coverage of the central 50/80/95 % intervals, over
the section and by the spots' shift score. Depth: the held-out section's counts binomially
thinned to 1/10 (seed 0) are scored against the same samples in log2(1 + count) (the model's
unit: its intervals sit at the training depth) and in log2(1 + CP10k) of the panel
(``stem evaluate --unit cp10k``; depth cancels), with the unthinned truth in CP10k beside them.

Usage (repository root, after ``benchmarks/sample_budget.py prepare``):
  .venv/bin/python benchmarks/shift_intervals.py run --workers 2
  .venv/bin/python benchmarks/shift_intervals.py summary   # results/shift_intervals.{json,md}
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from report import fold_commands, read_folds, run_folds, write_fold

ROOT = Path(__file__).resolve().parents[1]
THIN, KEYS = 0.1, ("CRPS", "energy", "coverage50", "coverage80", "coverage95")
#: shift-score bins of the by-shift coverage (the upper one: beyond the warning's spot threshold)
BINS = ((0.0, 0.5), (0.5, 0.95), (0.95, 1.01))


def scores(truth, samples) -> dict:
    from stem_st.evaluation.probabilistic import coverage
    from stem_st.scoring import crps, energy

    return {"CRPS": crps(truth, samples), "energy": energy(truth, samples), **coverage(truth, samples)}


def run_fold(preps: str, work: str, models: str, fold: str) -> dict:
    """Train (or take ``models/<fold>``, a network of the same training saved by
    ``joint_sampling.py``, calibrated afresh as training now does), predict (with and without
    widening) and score one fold; written to its JSON."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = "1"
    import numpy as np
    import torch

    from stem_st.data.dataset import open_prepared
    from stem_st.data.units import log2_expression
    from stem_st.defaults import DEFAULT_BUDGET
    from stem_st.evaluation.metrics import in_unit
    from stem_st.evaluation.probabilistic import coverage
    from stem_st.stem import PredictSettings, StemModel, TrainSettings
    from stem_st.training.data import section_counts

    torch.set_num_threads(1)
    ds = open_prepared(Path(preps) / f"prep_{fold}")
    settings = TrainSettings(prep=str(ds.root), holdout=[fold], **DEFAULT_BUDGET, aug_ratio=1, seed=0,
                             checkpoint_every=10 ** 9, compile=False, validation="auto")
    t0 = time.perf_counter()
    if models and (Path(models) / fold / "model.pt").is_file():
        import sys

        sys.path.insert(0, str(ROOT / "benchmarks"))
        from joint_sampling import recalibrate, validation_set

        model = StemModel.load(Path(models) / fold)
        recalibrate(model, validation_set(ds, model, fold, Path(work)))
    else:
        with tempfile.TemporaryDirectory() as run_dir:
            model, _ = StemModel.fit(ds, run_dir, settings, device="cpu", progress=False)
    a = ds.section(fold)
    counts = section_counts(ds, fold)
    emb, xy = ds.embeddings(fold)[:, 0], np.asarray(a.obsm["spatial"])
    cond = model.condition(emb, xy)
    shift, widening = model.shift(emb, xy), model.widening(cond)
    truth = log2_expression(counts)
    thin_counts = np.random.default_rng(0).binomial(np.asarray(counts, dtype=np.int64), THIN)
    thin = log2_expression(thin_counts)
    out = {"fold": fold, "train_seconds": round(time.perf_counter() - t0, 1), "spots": len(truth),
           "network": "saved" if models and (Path(models) / fold / "model.pt").is_file() else "trained",
           "validation": model.meta.get("validation", {}).get("section"),
           "spread": float(np.median(model.target.spread)),
           "spread_plain": float(np.median(model.target.spread_plain)),
           "shift_median": float(np.median(shift)),
           "widening": {q: float(np.quantile(widening, float(q))) for q in ("0.1", "0.5", "0.9", "1.0")},
           "knots": {"distance": model.shift_ref.widen_d.tolist(), "multiplier": model.shift_ref.widen_m.tolist()}}
    shipped = None
    for name, on in (("widened", True), ("plain", False)):
        point, _, samples = model.predict(emb, xy, PredictSettings(seed=0, device="cpu", shift_widening=on))
        shipped = (point, samples) if on else shipped
        out[name] = {"log2": scores(truth, samples),
                     "by_shift": [{"bin": list(b), "spots": int(((shift >= b[0]) & (shift < b[1])).sum()),
                                   **(coverage(truth[m], samples[m]) if m.any() else {})}
                                  for b in BINS for m in [(shift >= b[0]) & (shift < b[1])]],
                     "cp10k": scores(in_unit(truth, "cp10k"), in_unit(samples, "cp10k")),
                     "thinned_log2": scores(thin, samples),
                     "thinned_cp10k": scores(in_unit(thin, "cp10k"), in_unit(samples, "cp10k"))}
    # depth as an input (--depth auto): the section's median panel count over its prediction's
    for name, y, c in (("depth_thinned", thin, thin_counts), ("depth_full", truth, counts)):
        _, samples, ratio = model.at_depth(*shipped, PredictSettings(seed=0, depth="auto"),
                                           float(np.median(np.asarray(c).sum(1))))
        out[name] = {"ratio": ratio, "log2": scores(y, samples)}
    write_fold(work, fold, out)
    print(f"{fold}: done in {out['train_seconds']} s", flush=True)
    return out


def cmd_run(args) -> None:
    run_folds(run_fold, args.work, args.folds, args.workers, args.preps, args.work, args.models)


def cmd_summary(args) -> None:
    from report import machine, write_results

    folds = read_folds(args.work)
    views = [("log2", "log2(1 + count)"), ("cp10k", "log2(1 + CP10k), full depth"),
             ("thinned_log2", "log2(1 + count), truth thinned to 1/10"),
             ("thinned_cp10k", "log2(1 + CP10k), truth thinned to 1/10")]
    md = ["# Intervals on a new patient and a shallower section (`benchmarks/shift_intervals.py`)", "",
          f"Machine: {machine()}, one thread per fold. HER2ST leave-one-section-out folds of `accuracy_loo.py` "
          "(panel hmhvg:200, ImageNet EfficientNet-Lite0, 2 views); Stem as `stem train` ships it (default "
          "recipe and budget, validation on a training section); 20 samples per spot, dpm++:10. `widened`: "
          "the shipped prediction (each spot's sample deviations × its shift multiplier, which is 1 up to the "
          "median of the training spots' cross-fitted distances and grows beyond, the spread "
          "calibrated with them); `plain`: the same draws without the multipliers, the spread calibrated "
          "without them. A1 is the new patient (trained on patient C only). Networks: "
          + ("the saved networks of `joint_sampling.py` (the same training), calibrated afresh as training now "
             "does" if any(r.get("network") == "saved" for r in folds.values()) else "trained per fold")
          + ". Regenerate: `.venv/bin/python benchmarks/shift_intervals.py run [--models "
          "runs/joint_sampling/models] && … summary`.", ""]
    for key, unit in views:
        md += [f"## {unit}", "", "| fold | method | " + " | ".join(KEYS) + " |", "|---|---|" + "---|" * len(KEYS)]
        for f, r in folds.items():
            for name in ("plain", "widened"):
                md.append(f"| {f} | {name} | " + " | ".join(f"{r[name][key][k]:.3f}" for k in KEYS) + " |")
        md.append("")
    md += ["## Depth as an input (`--depth auto`: the section's median panel count over its prediction's)",
           "", "| fold | truth | depth ratio | " + " | ".join(KEYS) + " |", "|---|---|---|" + "---|" * len(KEYS)]
    for f, r in folds.items():
        for name, label in (("depth_full", "full depth"), ("depth_thinned", "thinned to 1/10")):
            md.append(f"| {f} | {label} | {r[name]['ratio']:.3f} | "
                      + " | ".join(f"{r[name]['log2'][k]:.3f}" for k in KEYS) + " |")
    md += ["", "## Coverage by shift score (log2, full depth)", "",
           "| fold | method | " + " | ".join(f"shift {lo}–{min(hi, 1.0)}: spots, cov 50/80/95" for lo, hi in BINS)
           + " |", "|---|---|" + "---|" * len(BINS)]
    for f, r in folds.items():
        for name in ("plain", "widened"):
            cells = [f"{b['spots']}" + (f": {b['coverage50']:.2f} / {b['coverage80']:.2f} / {b['coverage95']:.2f}"
                                        if b["spots"] else "") for b in r[name]["by_shift"]]
            md.append(f"| {f} | {name} | " + " | ".join(cells) + " |")
    md += ["", "## The multipliers", "", "| fold | validation | median shift | multiplier 10/50/90/100 % | "
           "spread (widened / plain) |", "|---|---|---|---|---|"]
    md += [f"| {f} | {r['validation']} | {r['shift_median']:.3f} | "
           + " / ".join(f"{v:.2f}" for v in r["widening"].values())
           + f" | {r['spread']:.2f} / {r['spread_plain']:.2f} |" for f, r in folds.items()]
    data = {"machine": machine(), "thin": THIN, "folds": folds,
            "command": "python benchmarks/shift_intervals.py run && python benchmarks/shift_intervals.py summary"}
    write_results(args.out, data, "\n".join(md))


def main() -> None:
    def options(run, summary) -> None:
        run.add_argument("--models", default="", help="saved networks (joint_sampling.py's runs/…/models) "
                                                      "instead of training")

    fold_commands(__doc__, "shift_intervals", cmd_run, cmd_summary, options)


if __name__ == "__main__":
    main()
