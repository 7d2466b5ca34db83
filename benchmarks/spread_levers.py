"""How should the samples' spread be calibrated: one factor for the panel, or one per gene?

The shipped calibration scales every gene's sample deviations by one factor, the smallest that
makes the validation section's 80 % intervals hold 80 % of its residuals over the whole panel.
Genes differ: this leaves well-expressed genes too wide and others too narrow, which the
per-spot variogram score (gene-pair differences) and one draw's spatial variogram punish. Here
the same trained networks (the shipped training of ``joint_sampling.py``, one per fold) are
recalibrated on the same validation section (rebuilt exactly as training built it) with each
variant, and the held-out section is predicted and scored; the knn+ctx row is
``joint_sampling.py``'s. Variants: ``panel coverage`` (shipped), ``per-gene coverage``,
``panel CRPS``, ``per-gene CRPS``.

Usage (repository root, after ``joint_sampling.py run``):
  .venv/bin/python benchmarks/spread_levers.py run --workers 2
  .venv/bin/python benchmarks/spread_levers.py summary   # results/spread_levers.{json,md}
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from report import LOO_SECTIONS as SECTIONS
from report import fold_commands, run_folds, write_fold

ROOT = Path(__file__).resolve().parents[1]
#: variant → (spread_per_gene, spread_criterion)
VARIANTS = {"panel coverage (shipped)": (False, "coverage"), "per-gene coverage": (True, "coverage"),
            "panel CRPS": (False, "crps"), "per-gene CRPS": (True, "crps")}
KEYS = ("CRPS", "energy", "variogram", "coverage50", "coverage80", "coverage95", "moran_err_sample",
        "svgm_err_sample")


def run_fold(models: str, preps: str, work: str, fold: str) -> dict:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = "1"
    import sys
    from dataclasses import replace

    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from joint_sampling import structure, validation_set

    from stem_st.data.context import RADII, graph_matrices
    from stem_st.data.dataset import open_prepared
    from stem_st.data.units import log2_expression
    from stem_st.stem import PredictSettings, StemModel
    from stem_st.stem.fit import calibrate_spread
    from stem_st.training.data import section_counts

    torch.set_num_threads(1)
    ds = open_prepared(Path(preps) / f"prep_{fold}")
    model = StemModel.load(Path(models) / fold)
    shipped = np.asarray(model.target.spread).copy()
    vs = validation_set(ds, model, fold, Path(work))
    assert vs.section == model.meta["validation"]["section"]
    a = ds.section(fold)
    truth = log2_expression(section_counts(ds, fold))
    emb, xy = ds.embeddings(fold)[:, 0], np.asarray(a.obsm["spatial"])
    graph = graph_matrices(xy, RADII["ring1"][0])[0]
    recipe = model.recipe
    out = {"fold": fold, "validation": vs.section, "variants": {}}
    for name, (per_gene, criterion) in VARIANTS.items():
        t = time.perf_counter()
        model.recipe = replace(recipe, spread_per_gene=per_gene, spread_criterion=criterion)
        calibrate_spread(model, vs.cond, vs.z, np.full(len(vs.z), vs.group), PredictSettings(seed=0, device="cpu"))
        spread = np.asarray(model.target.spread)
        if name.endswith("(shipped)"):  # the rebuilt validation set gives the trained model's own factor
            out["shipped_spread_reproduced"] = bool(np.allclose(spread, shipped, rtol=1e-5))
        point, _, samples = model.predict(emb, xy, PredictSettings(seed=0, device="cpu"))
        out["variants"][name] = {**structure(truth, point, samples, xy, graph),
                                 "spread_quantiles": np.quantile(spread, [0.1, 0.5, 0.9]).tolist(),
                                 "seconds": round(time.perf_counter() - t, 1)}
    write_fold(work, fold, out)
    print(f"{fold}: done", flush=True)
    return out


def cmd_run(args) -> None:
    run_folds(run_fold, args.work, args.folds, args.workers, args.models, args.preps, args.work)


def cmd_summary(args) -> None:
    import numpy as np
    from report import machine, write_results

    folds = {f: json.loads((Path(args.work) / f"{f}.json").read_text()) for f in SECTIONS
             if (Path(args.work) / f"{f}.json").is_file()}
    joint = {f: json.loads((Path(args.joint) / f"{f}.json").read_text()) for f in folds}
    knn = {f: joint[f]["methods"]["knn+ctx"] for f in folds}
    md = ["# The samples' spread: one factor for the panel or one per gene (`benchmarks/spread_levers.py`)", "",
          f"Machine: {machine()}, one thread per fold. The shipped training of `joint_sampling.py` (default "
          "recipe and budget, validation on a training section), one network per HER2ST leave-one-section-out "
          "fold; each variant recalibrates the spread of the same network on the same validation section (rebuilt "
          "as training built it: the shipped variant reproduces the trained factor in "
          f"{sum(r['shipped_spread_reproduced'] for r in folds.values())}/{len(folds)} folds) and predicts the "
          "held-out section with 20 samples, dpm++:10, whole-section draws (one field strength for the panel: "
          "these runs predate per-gene strengths; the per-spot scores do not depend on it); log2(1 + count). "
          "knn+ctx: `joint_sampling.py`'s. Regenerate: "
          "`.venv/bin/python benchmarks/spread_levers.py run && … summary`.",
          "",
          "## Mean ± sd over folds", "", "| variant | spread 10/50/90 % (median over folds) | "
          + " | ".join(KEYS) + " |", "|---|---|" + "---|" * len(KEYS)]
    rows = {**{v: {f: r["variants"][v] for f, r in folds.items()} for v in VARIANTS}, "knn+ctx": knn}
    for v, per in rows.items():
        q = " / ".join(f"{np.median([x['spread_quantiles'][i] for x in per.values()]):.2f}" for i in range(3)) \
            if "spread_quantiles" in next(iter(per.values())) else "–"
        md.append(f"| {v} | {q} | " + " | ".join(
            f"{np.mean([x[k] for x in per.values()]):.3f} ± {np.std([x[k] for x in per.values()], ddof=1):.3f}"
            for k in KEYS) + " |")
    paired = {}
    for ref in ("panel coverage (shipped)", "knn+ctx"):
        md += ["", f"## Paired per fold: variant − {ref} (mean ± sd; folds where the variant is lower)", "",
               "| variant | " + " | ".join(KEYS) + " |", "|---|" + "---|" * len(KEYS)]
        for v in VARIANTS:
            if v == ref:
                continue
            d = {k: np.array([rows[v][f][k] - rows[ref][f][k] for f in folds]) for k in KEYS}
            paired[f"{v} vs {ref}"] = {k: {"mean": float(x.mean()), "sd": float(x.std(ddof=1)),
                                           "lower": int((x < 0).sum())} for k, x in d.items()}
            md.append(f"| {v} | " + " | ".join(f"{x.mean():+.4f} ± {x.std(ddof=1):.4f} ({int((x < 0).sum())}/"
                                               f"{len(x)})" for x in d.values()) + " |")
    data = {"machine": machine(), "folds": folds, "paired": paired,
            "command": "python benchmarks/spread_levers.py run && python benchmarks/spread_levers.py summary"}
    write_results(args.out, data, "\n".join(md))


def main() -> None:
    def options(run, summary) -> None:
        run.add_argument("--models", default=str(ROOT / "runs/joint_sampling/models"))
        summary.add_argument("--joint", default=str(ROOT / "runs/joint_sampling"))

    fold_commands(__doc__, "spread_levers", cmd_run, cmd_summary, options)


if __name__ == "__main__":
    main()
