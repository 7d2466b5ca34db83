"""Can a gene's Moran's I on a new section be told from another section? The floor under any
whole-section noise field that carries spatial structure from the validation section.

The field's strengths are solved so that one draw's Moran's I matches a target per gene; on the
held-out section that target must come from elsewhere. Here each rule's target is compared with
the held-out section's true Moran's I (ring-1 pairs, log2(1 + count)), per gene, mean |error|
over the panel: ``carried`` (the validation section's truth), ``ratio`` (its truth over its
point, per gene, times the held-out section's point: the section's own image sets the level),
``panel ratio`` (one median ratio), ``ratio shrunk`` (half each), ``point shift`` (the
validation truth plus the change in the point's Moran's I). Points: the shipped Stem networks of
``joint_sampling.py`` (posterior mean; the validation section was held out of their training).
A draw's Moran's I error is at least about its target's, so a rule whose target error is above
knn+ctx's draw error (``joint_sampling.json``) cannot bring Stem's draws below knn+ctx's.

Usage (repository root, after ``joint_sampling.py run``):
  .venv/bin/python benchmarks/moran_transfer.py   # results/moran_transfer.{json,md}
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from report import LOO_SECTIONS as SECTIONS
from report import machine, write_results

ROOT = Path(__file__).resolve().parents[1]
RULES = ("carried", "ratio", "panel ratio", "ratio shrunk", "point shift")


def targets(t_val: np.ndarray, p_val: np.ndarray, p_test: np.ndarray) -> dict[str, np.ndarray]:
    """Each rule's Moran's I per gene for the held-out section."""
    ratio = np.where(p_val > 0.05, t_val / np.maximum(p_val, 1e-6), np.nan)
    panel = float(np.nanmedian(ratio))
    ratio = np.where(np.isnan(ratio), panel, ratio)
    return {"carried": t_val, "ratio": ratio * p_test, "panel ratio": panel * p_test,
            "ratio shrunk": 0.5 * (ratio + panel) * p_test, "point shift": t_val + p_test - p_val}


def fold(preps: Path, models: Path, joint: dict, name: str) -> dict:
    import torch

    from stem_st.data.context import shell_pairs, spot_pitch
    from stem_st.data.dataset import open_prepared
    from stem_st.data.units import log2_expression
    from stem_st.stem import PredictSettings, StemModel
    from stem_st.stem.spatial import ring_morans_i
    from stem_st.training.data import section_counts

    torch.set_num_threads(1)
    ds = open_prepared(preps / f"prep_{name}")
    model = StemModel.load(models / name)
    val = joint["validation"]
    moran = {}
    for s in (name, val):
        xy = np.asarray(ds.section(s).obsm["spatial"], dtype=np.float64)
        rings = shell_pairs(xy / spot_pitch(xy))
        point = model.posterior_mean(ds.embeddings(s)[:, 0], xy, PredictSettings(seed=0, device="cpu"))
        moran[s] = (ring_morans_i(log2_expression(section_counts(ds, s)), rings), ring_morans_i(point, rings))
    truth = moran[name][0]
    errors = {r: float(np.abs(t - truth).mean())
              for r, t in targets(moran[val][0], moran[val][1], moran[name][1]).items()}
    return {"validation": val, "target_error": errors, "truth_mean": float(truth.mean()),
            "validation_truth_mean": float(moran[val][0].mean()), "point_mean": float(moran[name][1].mean()),
            "knn+ctx draw": joint["methods"]["knn+ctx"]["moran_err_sample"],
            "stem draw (shipped)": joint["methods"]["stem joint"]["moran_err_sample"]}


def main() -> None:
    import argparse

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preps", default=str(ROOT / "runs/accuracy_loo"))
    p.add_argument("--models", default=str(ROOT / "runs/joint_sampling/models"))
    p.add_argument("--joint", default=str(ROOT / "runs/joint_sampling"))
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/moran_transfer"))
    args = p.parse_args()
    joint = {f: json.loads((Path(args.joint) / f"{f}.json").read_text()) for f in SECTIONS}
    folds = {f: fold(Path(args.preps), Path(args.models), joint[f], f) for f in SECTIONS}
    md = ["# Can a gene's Moran's I on a new section be told from another? (`benchmarks/moran_transfer.py`)", "",
          f"Machine: {machine()}. HER2ST leave-one-section-out, panel hmhvg:200, log2(1 + count), ring-1 Moran's "
          "I per gene; points: the shipped Stem networks of `joint_sampling.py` (posterior mean). Each rule's "
          "target for the held-out section against its true Moran's I: mean |error| over genes. The draw rows "
          "are one draw's Moran's I error (`joint_sampling.json`): a draw matched to a target is at best about "
          "as far from the truth as its target. Regenerate: `.venv/bin/python benchmarks/moran_transfer.py`.",
          "", "| fold (validation) | truth / validation truth / point mean I | " + " | ".join(RULES)
          + " | knn+ctx draw | Stem draw (shipped) |", "|---|---|" + "---|" * (len(RULES) + 2)]
    for f, r in folds.items():
        md.append(f"| {f} ({r['validation']}) | {r['truth_mean']:.3f} / {r['validation_truth_mean']:.3f} / "
                  f"{r['point_mean']:.3f} | " + " | ".join(f"{r['target_error'][x]:.3f}" for x in RULES)
                  + f" | {r['knn+ctx draw']:.3f} | {r['stem draw (shipped)']:.3f} |")
    mean = {x: float(np.mean([r["target_error"][x] for r in folds.values()])) for x in RULES}
    below = {x: sum(r["target_error"][x] < r["knn+ctx draw"] for r in folds.values()) for x in RULES}
    md.append("| mean | – | " + " | ".join(f"{mean[x]:.3f}" for x in RULES)
              + f" | {np.mean([r['knn+ctx draw'] for r in folds.values()]):.3f} | "
              f"{np.mean([r['stem draw (shipped)'] for r in folds.values()]):.3f} |")
    md += ["", "Folds where the rule's target error alone is below knn+ctx's draw error: "
           + ", ".join(f"{x} {below[x]}/6" for x in RULES) + "."]
    write_results(args.out, {"machine": machine(), "folds": folds, "mean": mean, "below_knn": below,
                             "command": "python benchmarks/moran_transfer.py"}, "\n".join(md))


if __name__ == "__main__":
    main()
