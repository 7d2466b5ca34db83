"""How should the samples' spread be calibrated: one factor for the panel or one per gene, at one
level or three, and how much should it widen with a spot's shift?

The shipped calibration scales every gene's sample deviations by one factor, the smallest that
makes the validation section's 80 % intervals hold 80 % of its residuals over the whole panel,
after each spot's deviations are multiplied by its shift widening (``stem.shift``: relative to
the training spots' median cross-fitted distance, never narrowing; until the widening started at
the median it was relative to their mean, so spots nearer the training data than typical got
narrower). Genes differ: one factor leaves well-expressed genes too wide and others too narrow,
which the per-spot variogram score (gene-pair differences) and one draw's spatial variogram
punish. Here the same trained networks (the shipped training of ``joint_sampling.py``, one per
fold) are recalibrated on the same validation section (rebuilt exactly as training built it) with
each variant, and the held-out section is predicted and scored; the knn+ctx row is
``joint_sampling.py``'s. Variants: ``widen beyond the median (shipped)``, ``panel coverage,
widening relative to the mean`` (shipped before), ``per-gene coverage``, ``panel CRPS``,
``per-gene CRPS`` (these three with the widening relative to the mean); ``no shift widening`` (the
factor calibrated without it), ``widen beyond the 90th percentile``; ``three levels (50/80/95 %)``
(recipe ``spread_criterion=levels``: the 50, 80 and 95 % intervals each hold their level, the draws'
deviations scaled by their rank's level: a heavier tail and a narrower middle, or the reverse);
``common shift matched`` (``spread_common``: the draws' share along one shift of every gene alike,
a spot's depth, matched to the residuals', each gene's width kept); ``count lattice``
(``count_lattice``: the draws moved onto log2(1 + k), the values a measured spot can take, after
the calibration) alone and with three levels (the count lattice is in the default recipe since
2026-12-07); ``rank coverage (80 %)`` (``spread_criterion=rank``: 80 % of the residuals' randomised
ranks among the 20 draws in their central 80 %, where 20 empirical quantiles ask wider draws).
Every row is also scored by its rank coverage (``scoring.rank_coverage``), knn+ctx too (fitted and
scored in the same run; its other scores equal ``joint_sampling.py``'s).

Usage (repository root, after ``joint_sampling.py run``):
  .venv/bin/python benchmarks/spread_levers.py run --workers 2
  .venv/bin/python benchmarks/spread_levers.py summary   # results/spread_levers.{json,md}
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from report import LOO_SECTIONS as SECTIONS
from report import fold_commands, run_folds, write_fold

ROOT = Path(__file__).resolve().parents[1]
#: variant → (spread_per_gene, spread_criterion, widening: "mean" (relative to the training spots'
#: mean, as shipped until the widening started at the median), "off", or the quantile it starts at)
SHIPPED = "widen beyond the median (shipped)"
VARIANTS = {"panel coverage, widening relative to the mean": (False, "coverage", "mean"),
            "per-gene coverage": (True, "coverage", "mean"),
            "panel CRPS": (False, "crps", "mean"), "per-gene CRPS": (True, "crps", "mean"),
            "no shift widening": (False, "coverage", "off"), SHIPPED: (False, "coverage", 0.5),
            "widen beyond the 90th percentile": (False, "coverage", 0.9),
            "three levels (50/80/95 %)": (False, "levels", 0.5),
            # the draws' share along one shift of every gene alike matched to the residuals' (spread_common)
            "common shift matched": (False, "coverage", 0.5, {"spread_common": True}),
            # draws moved onto log2(1 + k) after the calibration (count_lattice), alone and with three levels
            "count lattice": (False, "coverage", 0.5, {"count_lattice": True}),
            "three levels + count lattice": (False, "levels", 0.5, {"count_lattice": True}),
            # the factor at which 80 % of the residuals' randomised ranks among the 20 draws lie in their
            # central 80 % (spread_criterion=rank)
            "rank coverage (80 %)": (False, "rank", 0.5)}
#: the baseline scored in the same run (its rank coverage is not in joint_sampling's files)
KNN = "knn+ctx"
#: the committed rows' names before the widening started at the median
RENAMED = {"panel coverage (shipped)": "panel coverage, widening relative to the mean",
           "widen beyond the median": SHIPPED}
KEYS = ("CRPS", "energy", "variogram", "coverage50", "coverage80", "coverage95", "rank_coverage50",
        "rank_coverage80", "rank_coverage95", "moran_err_sample", "svgm_err_sample")


def run_fold(models: str, preps: str, work: str, variants: str, fold: str) -> dict:
    import sys
    from dataclasses import replace

    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from joint_sampling import saved_fold, structure, validation_set

    from stem_st.stem import PredictSettings
    from stem_st.stem.fit import calibrate_spread

    f = saved_fold(models, preps, fold)
    ds, model, truth, emb, xy, graph = f.ds, f.model, f.truth, f.emb, f.xy, f.graph
    shipped = np.asarray(model.target.spread).copy()
    vs = validation_set(ds, model, fold, Path(work))
    assert vs.section == model.meta["validation"]["section"]
    recipe = model.recipe
    out = {"fold": fold, "validation": vs.section, "variants": {}}
    chosen = [*VARIANTS, KNN] if variants == "all" else [v.strip() for v in variants.split(";")]
    if KNN in chosen:
        from stem_st.defaults import DEFAULT_NUM_SAMPLES
        from stem_st.evaluation.baselines import make_baseline

        point, _, samples = make_baseline(KNN, DEFAULT_NUM_SAMPLES, 0).fit(
            ds, [s for s in ds.sections if s != fold]).predict(emb, xy)
        out["variants"][KNN] = structure(truth, point, samples, xy, graph)
    for name in (c for c in chosen if c != KNN):
        per_gene, criterion, widen, *more = VARIANTS[name]
        t = time.perf_counter()
        model.recipe = replace(recipe, spread_per_gene=per_gene, spread_criterion=criterion,
                               **{"spread_common": False, "count_lattice": False, **(more[0] if more else {})})
        if model.shift_ref is not None:
            model.shift_ref.widen_from = None if widen in ("mean", "off") else widen
        calibrate_spread(model, vs.cond, vs.z, np.full(len(vs.z), vs.group), PredictSettings(seed=0, device="cpu"))
        spread = np.asarray(model.target.spread if widen != "off" else model.target.spread_plain)
        if name.endswith("(shipped)"):  # the rebuilt validation set gives the trained model's own factor
            out["shipped_spread_reproduced"] = bool(np.allclose(spread, shipped, rtol=1e-5))
        settings = PredictSettings(seed=0, device="cpu", shift_widening=widen != "off")
        point, _, samples = model.predict(emb, xy, settings)
        per_spot = model.widening(model.condition(emb, xy), settings)
        out["variants"][name] = {**structure(truth, point, samples, xy, graph),
                                 "spread_quantiles": np.quantile(spread, [0.1, 0.5, 0.9]).tolist(),
                                 "widening_mean": 1.0 if per_spot is None else float(per_spot.mean()),
                                 "shape": None if model.target.shape is None else model.target.shape.tolist(),
                                 "common": None if model.target.common is None else float(model.target.common[0]),
                                 "seconds": round(time.perf_counter() - t, 1)}
    write_fold(work, fold, out)
    print(f"{fold}: done", flush=True)
    return out


def cmd_run(args) -> None:
    run_folds(run_fold, args.work, args.folds, args.workers, args.models, args.preps, args.work, args.variants)


def cmd_summary(args) -> None:
    import numpy as np
    from report import machine, write_results

    # the committed rows, with the variants of this run's fold files over them (a run of some variants
    # keeps the others' committed rows; the shipped variant, rerun, shows whether the networks are the same)
    out = Path(args.out).with_suffix(".json")
    folds = json.loads(out.read_text())["folds"] if out.is_file() else {}
    for f in SECTIONS:
        if (Path(args.work) / f"{f}.json").is_file():
            new = json.loads((Path(args.work) / f"{f}.json").read_text())
            old = {RENAMED.get(k, k): v for k, v in folds.get(f, {}).get("variants", {}).items()}
            folds[f] = {**new, "variants": {**old, **new["variants"]}}
    folds = {f: folds[f] for f in SECTIONS if f in folds}
    ran = {v for f in SECTIONS if (Path(args.work) / f"{f}.json").is_file()
           for v in json.loads((Path(args.work) / f"{f}.json").read_text())["variants"]}
    kept = [v for v in VARIANTS if v not in ran]
    joint = {f: json.loads((Path(args.joint) / f"{f}.json").read_text()) for f in folds}
    knn = {f: {**joint[f]["methods"][KNN], **folds[f]["variants"].get(KNN, {})} for f in folds}
    md = ["# The samples' spread: one factor for the panel or one per gene, and the shift widening "
          "(`benchmarks/spread_levers.py`)", "",
          f"Machine: {machine()}, one thread per fold. The shipped training of `joint_sampling.py` (default "
          "recipe and budget, validation on a training section), one network per HER2ST leave-one-section-out "
          "fold; each variant recalibrates the spread of the same network on the same validation section (rebuilt "
          "as training built it: the shipped variant reproduces the trained factor in "
          f"{sum(r['shipped_spread_reproduced'] for r in folds.values())}/{len(folds)} folds) and predicts the "
          "held-out section with 20 samples, dpm++:10, whole-section draws (the per-spot scores do not depend "
          "on them); log2(1 + count). "
          "knn+ctx: `joint_sampling.py`'s. Regenerate: "
          "`.venv/bin/python benchmarks/spread_levers.py run && … summary`."
          + (f" Rows kept from an earlier run of the same networks ({', '.join(kept)}): the field then had one "
             "strength for the panel, which moves the per-spot scores by Monte Carlo noise only (the shipped row "
             "of the two runs: CRPS within 0.0012, variogram within 21 per fold)." if kept and ran else ""),
          "",
          "## Mean ± sd over folds", "", "| variant | spread 10/50/90 % (median over folds) | mean widening | "
          + " | ".join(KEYS) + " |", "|---|---|---|" + "---|" * len(KEYS)]
    rows = {**{v: {f: r["variants"][v] for f, r in folds.items()} for v in VARIANTS}, "knn+ctx": knn}
    for v, per in rows.items():
        q = " / ".join(f"{np.median([x['spread_quantiles'][i] for x in per.values()]):.2f}" for i in range(3)) \
            if "spread_quantiles" in next(iter(per.values())) else "–"
        widen = f"{np.mean([x['widening_mean'] for x in per.values()]):.3f}" \
            if "widening_mean" in next(iter(per.values())) else "–"
        md.append(f"| {v} | {q} | {widen} | " + " | ".join(
            f"{np.mean([x[k] for x in per.values()]):.3f} ± {np.std([x[k] for x in per.values()], ddof=1):.3f}"
            if all(k in x for x in per.values()) else "–" for k in KEYS) + " |")
    paired = {}
    mean_ref = "panel coverage, widening relative to the mean"
    for title in ("its reference", "knn+ctx"):
        md += ["", f"## Paired per fold: variant − {title} (mean ± sd; folds where the variant is lower)", ""]
        if title != "knn+ctx":
            md += ["The reference is the shipped calibration; for the variants measured with the widening "
                   f"relative to the mean (the earlier run), `{mean_ref}`: one change at a time.", ""]
        md += ["| variant | reference | " + " | ".join(KEYS) + " |", "|---|---|" + "---|" * len(KEYS)]
        for v in VARIANTS:
            ref = "knn+ctx" if title == "knn+ctx" else \
                mean_ref if VARIANTS[v][2] == "mean" and v != mean_ref else SHIPPED
            if v == ref:
                continue
            d = {k: np.array([rows[v][f][k] - rows[ref][f][k] for f in folds]) for k in KEYS
                 if all(k in rows[u][f] for u in (v, ref) for f in folds)}
            paired[f"{v} vs {ref}"] = {k: {"mean": float(x.mean()), "sd": float(x.std(ddof=1)),
                                           "lower": int((x < 0).sum())} for k, x in d.items()}
            cells = [f"{d[k].mean():+.4f} ± {d[k].std(ddof=1):.4f} ({int((d[k] < 0).sum())}/{len(d[k])})"
                     if k in d else "–" for k in KEYS]
            md.append(f"| {v} | {ref} | " + " | ".join(cells) + " |")
    data = {"machine": machine(), "folds": folds, "paired": paired,
            "command": "python benchmarks/spread_levers.py run && python benchmarks/spread_levers.py summary"}
    write_results(args.out, data, "\n".join(md))


def main() -> None:
    def options(run, summary) -> None:
        run.add_argument("--models", default=str(ROOT / "runs/joint_sampling/models"))
        run.add_argument("--variants", default="all", help="'all' or names separated by ';'")
        summary.add_argument("--joint", default=str(ROOT / "runs/joint_sampling"))

    fold_commands(__doc__, "spread_levers", cmd_run, cmd_summary, options)


if __name__ == "__main__":
    main()
