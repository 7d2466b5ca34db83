"""A probe, not a shipped variant: should the whole-section noise field also follow how spots look?

knn+ctx draws are coherent for a reason the shipped field lacks: neighbouring spots that look
alike retrieve the same training spots, so their draws share deviations where the tissue is
alike and not across a boundary. Here the field's kernel runs over position × look: each spot
sits at [x, y, α · PCA-8 of its standardised condition] (the look axes scaled so that a ring-1
pair's median look difference is one pitch at α = 1), so two neighbours share noise in
proportion to how alike they look. Everything else is as training fits it (kernel and length to
the residual correlations of the validation section's rings, per-gene strengths as the mean of
the variogram- and Moran's-I-matched ones), on the validation section only; the held-out section
is then drawn with the same rule. α = 0 is the shipped field (2-D, exactly as shipped).

The same trained networks as ``field_strengths.py`` (``joint_sampling.py``'s, one per fold).

Usage (repository root, after ``joint_sampling.py run``):
  .venv/bin/python benchmarks/field_looks.py run --workers 2
  .venv/bin/python benchmarks/field_looks.py summary   # results/field_looks.{json,md}
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from report import fold_commands, read_folds, run_folds, write_fold

ROOT = Path(__file__).resolve().parents[1]
ALPHAS = (0.0, 0.5, 1.0, 2.0)
KEYS = ("CRPS", "energy", "coverage80", "moran_err_sample", "svgm_err_sample")
LOOK_DIMS = 8


def run_fold(models: str, preps: str, work: str, fold: str) -> dict:
    import sys

    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from joint_sampling import recalibrate, saved_fold, structure, validation_set

    from stem_st.data.context import shell_pairs, spot_pitch
    from stem_st.stem import PredictSettings
    from stem_st.stem.spatial import calibrate_spatial

    f = saved_fold(models, preps, fold)
    ds, model, truth, emb, xy, graph = f.ds, f.model, f.truth, f.emb, f.xy, f.graph
    vs = validation_set(ds, model, fold, Path(work))
    recalibrate(model, vs)  # the shipped fit: spread, widening, field
    settings = PredictSettings(seed=0, device="cpu")
    rings_v = shell_pairs(vs.xy)
    # the look axes: PCA of the validation spots' conditions, scaled on their ring-1 pairs
    mu = vs.cond.mean(0)
    axes = np.linalg.svd(vs.cond - mu, full_matrices=False)[2][:LOOK_DIMS]
    look_v = (vs.cond - mu) @ axes.T
    i, j = rings_v[0]
    scale = float(np.median(np.linalg.norm(look_v[i] - look_v[j], axis=1)))
    cond = model.condition(emb, xy)
    xy_t, look_t = xy / spot_pitch(xy), (cond - mu) @ axes.T / scale
    pz = model.point_z(cond, settings)
    point = np.maximum(model.target.decode(pz, model.target.prior(cond)), 0)
    centre = pz if model.recipe.centre_samples else None
    out = {"fold": fold, "validation": vs.section, "look_scale": scale, "alphas": {}}
    for alpha in ALPHAS:
        t = time.perf_counter()
        pos_v = vs.xy if alpha == 0 else np.hstack([vs.xy, alpha * look_v / scale])
        fit = calibrate_spatial(model, vs.cond, vs.z, pos_v, settings, vs.section, vs.prior, vs.group,
                                rings=rings_v)
        pos_t = xy_t if alpha == 0 else np.hstack([xy_t, alpha * look_t])
        draws = model.draw_z(cond, settings, xy=pos_t, pitch=1.0)
        z = model.target.widen(draws, centre, model.widening(cond, settings))
        samples = np.maximum(model.target.decode(z, model.target.prior(cond)[:, None]), 0)
        out["alphas"][str(alpha)] = {**structure(truth, point, samples, xy, graph),
                                     "length": fit["length"], "kernel": fit["kernel"], "passed": fit["passed"],
                                     "rho_quantiles": np.quantile(fit["rho_genes"], [0.1, 0.5, 0.9]).tolist(),
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
    knn = {f: joint[f]["methods"]["knn+ctx"] for f in folds}
    md = ["# A noise field over position × look (`benchmarks/field_looks.py`; a probe, nothing shipped)", "",
          f"Machine: {machine()}, one thread per fold. The networks of `joint_sampling.py` (the shipped "
          "training), one per HER2ST leave-one-section-out fold; the field is fitted on the validation section as "
          f"training fits it, with spots at [x, y, α · PCA-{LOOK_DIMS} of the condition] (look axes scaled so "
          "that a ring-1 pair's median look difference is one pitch), then the held-out section is drawn (20 "
          "samples, dpm++:10); log2(1 + count). α = 0: the shipped field. knn+ctx: `joint_sampling.py`'s. "
          "Regenerate: `.venv/bin/python benchmarks/field_looks.py run && … summary`.", "",
          "| α | kernel, length (median) | " + " | ".join(KEYS) + " | γ draw / truth, rings 1/2/3 | Moran's I ≤ "
          "knn+ctx | Moran's I lower than α = 0 |", "|---|---|" + "---|" * (len(KEYS) + 3)]
    ref = {f: r["alphas"]["0.0"] for f, r in folds.items()}
    for alpha in folds[next(iter(folds))]["alphas"]:
        per = {f: r["alphas"][alpha] for f, r in folds.items()}
        ratio = np.array([x["svgm_ratio"] for x in per.values()]).mean(0)
        beats = sum(per[f]["moran_err_sample"] <= knn[f]["moran_err_sample"] for f in per)
        lower = sum(per[f]["moran_err_sample"] < ref[f]["moran_err_sample"] for f in per)
        kinds = sorted({x["kernel"] for x in per.values()})
        length = np.median([x["length"] for x in per.values()])
        md.append(f"| {alpha} | {'/'.join(kinds)}, {length:.2f} | " + " | ".join(
            f"{np.mean([x[k] for x in per.values()]):.3f} ± {np.std([x[k] for x in per.values()], ddof=1):.3f}"
            for k in KEYS) + " | " + " / ".join(f"{v:.2f}" for v in ratio)
            + f" | {beats}/{len(per)} | {lower}/{len(per)} |")
    md += ["", "## Per fold: Moran's I error / svgm_err_sample", "",
           "| α | " + " | ".join(folds) + " |", "|---|" + "---|" * len(folds)]
    for alpha in folds[next(iter(folds))]["alphas"]:
        per = {f: r["alphas"][alpha] for f, r in folds.items()}
        md.append(f"| {alpha} | " + " | ".join(
            f"{x['moran_err_sample']:.3f} / {x['svgm_err_sample']:.3f}" for x in per.values()) + " |")
    md.append("| knn+ctx | " + " | ".join(f"{knn[f]['moran_err_sample']:.3f} / {knn[f]['svgm_err_sample']:.3f}"
                                         for f in folds) + " |")
    write_results(args.out, {"machine": machine(), "folds": folds,
                             "command": "python benchmarks/field_looks.py run && python benchmarks/field_looks.py "
                                        "summary"}, "\n".join(md))


def main() -> None:
    def extra(run, summary):
        run.add_argument("--models", default=str(ROOT / "runs/joint_sampling/models"))
        summary.add_argument("--joint", default=str(ROOT / "runs/joint_sampling"))

    fold_commands(__doc__, "field_looks", cmd_run, cmd_summary, extra)


if __name__ == "__main__":
    main()
