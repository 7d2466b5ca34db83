"""How strong should the whole-section noise field be per gene: match one draw's spatial
variogram, its Moran's I, or take their mean (shipped)?

The variogram strength ρ_g makes one draw's spatial variogram (absolute: half the mean squared
difference of spots 1, 2, 3 pitches apart) match the truth's on the validation section. Moran's
I is scale-free: where the calibrated samples are wider than the truth lies from the point, the
variogram match needs near-full correlation and overshoots Moran's I. Training ships their mean
per gene (it shipped the variogram strength until this benchmark's first run). Here the same
trained networks (``joint_sampling.py``'s shipped training, one per fold) are calibrated afresh
on the same rebuilt validation section as training now does (spread, shift widening, field),
which gives both strengths from the same draws, and the held-out section is predicted with each:
``variogram``, ``Moran's I``, and ``mean of the two (shipped)``. ``Moran's I carried`` carries the
validation section's Moran's I per gene (a property of the gene in tissue) rather than its
strength, and solves the strength on the section drawn from its point and its samples' width (no
truth of that section; the width is the independent draws' own); ``variogram and Moran's I
carried`` is its mean with the variogram strength.
``oracle Moran's I (test section)`` fits the Moran strengths on the held-out section itself:
a bound on what any per-gene strength of this field can reach, never a variant to ship. The
knn+ctx row is ``joint_sampling.py``'s.

Usage (repository root, after ``joint_sampling.py run``):
  .venv/bin/python benchmarks/field_strengths.py run --workers 2
  .venv/bin/python benchmarks/field_strengths.py summary   # results/field_strengths.{json,md}
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from report import fold_commands, read_folds, run_folds, write_fold

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = "mean of the two (shipped)"
CARRIED = "Moran's I carried"
VARIANTS = ("variogram", "Moran's I", SHIPPED, CARRIED, "variogram and Moran's I carried",
            "oracle Moran's I (test section)")
KEYS = ("CRPS", "energy", "coverage80", "moran_err_sample", "svgm_err_sample")


def run_fold(models: str, preps: str, work: str, fold: str) -> dict:
    import sys

    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from joint_sampling import recalibrate, saved_fold, structure, validation_set

    from stem_st.data.context import shell_pairs, spot_pitch
    from stem_st.stem import PredictSettings
    from stem_st.stem.spatial import moran_strengths, ring_morans_i

    f = saved_fold(models, preps, fold)
    ds, model, truth, emb, xy, graph = f.ds, f.model, f.truth, f.emb, f.xy, f.graph
    vs = validation_set(ds, model, fold, Path(work))
    recalibrate(model, vs)  # spread, widening and field as training now fits them
    fit = dict(model.spatial)
    xy_pitch = xy / spot_pitch(xy)
    point, _, samples = model.predict(emb, xy, PredictSettings(seed=0, device="cpu", spatial_noise=False))
    oracle = moran_strengths(truth, point, samples.var(1), xy_pitch, shell_pairs(xy_pitch), fit, fit["passed"])
    # the validation section's Moran's I per gene, its strengths solved on the section drawn (its
    # point and its samples' width: no truth of it)
    carried = moran_strengths(truth, point, samples.var(1), xy_pitch, shell_pairs(xy_pitch), fit, fit["passed"],
                              target=ring_morans_i(vs.x, shell_pairs(vs.xy)))
    rho = {"variogram": np.asarray(fit["rho_genes_variogram"]), "Moran's I": np.asarray(fit["rho_genes_moran"]),
           SHIPPED: np.asarray(fit["rho_genes"]), "oracle Moran's I (test section)": oracle, CARRIED: carried,
           "variogram and Moran's I carried": 0.5 * (np.asarray(fit["rho_genes_variogram"]) + carried)}
    out = {"fold": fold, "validation": vs.section, "variants": {}}
    for name in VARIANTS:
        t = time.perf_counter()
        model.spatial = {**fit, "rho_genes": rho[name].tolist(), "rho": float(rho[name].mean())}
        p, _, s = model.predict(emb, xy, PredictSettings(seed=0, device="cpu"))
        out["variants"][name] = {**structure(truth, p, s, xy, graph),
                                 "rho_quantiles": np.quantile(rho[name], [0.1, 0.5, 0.9]).tolist(),
                                 "seconds": round(time.perf_counter() - t, 1)}
    write_fold(work, fold, out)
    print(f"{fold}: done", flush=True)
    return out


def cmd_run(args) -> None:
    run_folds(run_fold, args.work, args.folds, args.workers, args.models, args.preps, args.work)


def cmd_summary(args) -> None:
    import numpy as np
    from report import machine, write_results

    folds = read_folds(args.work)
    joint = {f: json.loads((Path(args.joint) / f"{f}.json").read_text()) for f in folds}
    rows = {**{v: {f: r["variants"][v] for f, r in folds.items()} for v in VARIANTS},
            "knn+ctx": {f: joint[f]["methods"]["knn+ctx"] for f in folds}}
    rings = ("ring 1", "ring 2", "ring 3")
    md = ["# Per-gene strength of the whole-section noise field: variogram or Moran's I "
          "(`benchmarks/field_strengths.py`)", "",
          f"Machine: {machine()}, one thread per fold. The shipped training of `joint_sampling.py` (default "
          "recipe and budget, validation on a training section), one network per HER2ST leave-one-section-out "
          "fold; the spread and the field are calibrated afresh on the same rebuilt validation section, as "
          "training now does (`joint_sampling.recalibrate`), then the held-out section is predicted with 20 "
          "samples, dpm++:10, whole-section draws, with each variant's strengths; "
          "log2(1 + count). The oracle row fits on the held-out section itself (a bound, not a variant). knn+ctx: "
          "`joint_sampling.py`'s. Regenerate: `.venv/bin/python benchmarks/field_strengths.py run && … summary`.",
          "", "## Mean ± sd over folds", "",
          "| variant | ρ_g 10/50/90 % (median over folds) | " + " | ".join(KEYS) + " | "
          + " | ".join(f"γ draw / truth, {r}" for r in rings) + " |",
          "|---|---|" + "---|" * (len(KEYS) + len(rings))]
    for v, per in rows.items():
        q = " / ".join(f"{np.median([x['rho_quantiles'][i] for x in per.values()]):.2f}" for i in range(3)) \
            if "rho_quantiles" in next(iter(per.values())) else "–"
        ratio = np.array([x["svgm_ratio"] for x in per.values()])
        md.append(f"| {v} | {q} | " + " | ".join(
            f"{np.mean([x[k] for x in per.values()]):.3f} ± {np.std([x[k] for x in per.values()], ddof=1):.3f}"
            for k in KEYS) + " | " + " | ".join(f"{m:.2f}" for m in ratio.mean(0)) + " |")
    md += ["", "## Per fold: Moran's I error / spatial variogram error (svgm_err_sample)", "",
           "| variant | " + " | ".join(folds) + " |", "|---|" + "---|" * len(folds)]
    for v, per in rows.items():
        md.append(f"| {v} | " + " | ".join(f"{per[f]['moran_err_sample']:.3f} / {per[f]['svgm_err_sample']:.3f}"
                                           for f in folds) + " |")
    paired = {}
    for ref in (SHIPPED, "knn+ctx"):
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
            "command": "python benchmarks/field_strengths.py run && python benchmarks/field_strengths.py summary"}
    write_results(args.out, data, "\n".join(md))


def main() -> None:
    def extra(run, summary):
        run.add_argument("--models", default=str(ROOT / "runs/joint_sampling/models"))
        summary.add_argument("--joint", default=str(ROOT / "runs/joint_sampling"))

    fold_commands(__doc__, "field_strengths", cmd_run, cmd_summary, extra)


if __name__ == "__main__":
    main()
