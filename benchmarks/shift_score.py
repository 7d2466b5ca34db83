"""Does the shift score tell a new patient from the training patient, without flagging the
training patient's own new sections?

For each leave-one-section-out fold of the six imaged HER2ST sections (the prepared folds of
``accuracy_loo.py``: panel hmhvg:200, ImageNet EfficientNet-Lite0, 2 views), the shift reference
is built exactly as ``stem train`` builds it (the training pairs, the input scaling of the
default recipe, the cross-fitted distances over the training sections; no network is needed) and
the held-out section's spots are scored. Then, trained on C2–C5 only (patient C), C6 (patient C)
and A1 (patient A, another resolution) are scored and the AUROC of telling A1's spots from C6's
is measured (scikit-learn's roc_auc_score).

Usage (repository root, after ``benchmarks/sample_budget.py prepare``):
  .venv/bin/python benchmarks/shift_score.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from report import machine, write_results

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ["C2", "C3", "C4", "C5", "C6", "A1"]


def reference(ds, train: list[str], recipe):
    """The scaler and shift reference ``stem train`` would build on ``train``."""
    from stem_st.stem.shift import REFERENCE_SPOTS, fit_reference
    from stem_st.training.data import build_training_data
    from stem_st.training.pairs import fit_statistics

    data = build_training_data(ds, train, 1, 0, None, recipe.context)
    try:
        scaler, _, _ = fit_statistics(data, recipe, 0)
        spots = np.flatnonzero(data.original)
        spots = np.sort(np.random.default_rng(0).permutation(spots)[:REFERENCE_SPOTS])
        ref = fit_reference(scaler.transform(data.inputs.rows(spots)), data.group[spots], 0)
    finally:
        data.close()
    return scaler, ref


def scores(ds, section: str, scaler, ref, recipe) -> np.ndarray:
    from stem_st.data.context import add_context

    a = ds.section(section)
    emb = ds.embeddings(section)[:, 0]
    return ref.score(scaler.transform(add_context(emb, np.asarray(a.obsm["spatial"]), recipe.context)))


def main() -> None:
    from sklearn.metrics import roc_auc_score

    from stem_st.data.dataset import open_prepared
    from stem_st.recipe import get_recipe
    from stem_st.stem.shift import SECTION_THRESHOLD, SPOT_THRESHOLD

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preps", default=str(ROOT / "runs/accuracy_loo"))
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/shift_score"))
    args = p.parse_args()
    recipe = get_recipe("default")
    folds = {}
    for fold in SECTIONS:
        ds = open_prepared(Path(args.preps) / f"prep_{fold}")
        scaler, ref = reference(ds, [s for s in SECTIONS if s != fold], recipe)
        s = scores(ds, fold, scaler, ref, recipe)
        folds[fold] = {"spots": len(s), "median": float(np.median(s)),
                       "flagged": float((s > SPOT_THRESHOLD).mean()),
                       "section_flagged": bool(np.median(s) > SECTION_THRESHOLD)}
        print(fold, folds[fold], flush=True)
    ds = open_prepared(Path(args.preps) / "prep_C6")
    scaler, ref = reference(ds, ["C2", "C3", "C4", "C5"], recipe)
    c6, a1 = (scores(ds, s, scaler, ref, recipe) for s in ("C6", "A1"))
    auc = float(roc_auc_score(np.r_[np.zeros(len(c6)), np.ones(len(a1))], np.r_[c6, a1]))
    patient = {"auroc_A1_vs_C6": auc, **{name: {"median": float(np.median(v)),
                                                "flagged": float((v > SPOT_THRESHOLD).mean())}
                                         for name, v in (("C6", c6), ("A1", a1))}}
    print(patient)
    data = {"machine": machine(), "recipe": "default",
            "thresholds": {"spot": SPOT_THRESHOLD, "section": SECTION_THRESHOLD}, "folds": folds,
            "trained_on_patient_C": patient, "command": "python benchmarks/shift_score.py"}
    md = ["# The shift score: a new patient against the training patient (`benchmarks/shift_score.py`)", "",
          f"Machine: {data['machine']}. HER2ST, the prepared leave-one-section-out folds of `accuracy_loo.py` "
          "(panel hmhvg:200, ImageNet EfficientNet-Lite0, 2 views); the reference `stem train` builds with the "
          "default recipe (the standardised condition randomly projected to 128 dimensions, mean distance to "
          "the 10 nearest training spots, as a percentile of the training spots' cross-fitted distances to the "
          "other training sections). A spot "
          f"is flagged above {SPOT_THRESHOLD}, a section when its median spot is above {SECTION_THRESHOLD}.", "",
          "## Leave one section out: the held-out section's spots", "",
          "| held-out section | spots | median shift score | spots flagged | section flagged |",
          "|---|---|---|---|---|"]
    md += [f"| {f} | {r['spots']} | {r['median']:.3f} | {r['flagged']:.3f} | "
           f"{'yes' if r['section_flagged'] else 'no'} |" for f, r in folds.items()]
    md += ["", "## Trained on patient C only (C2–C5): C6 against A1 (patient A, 3.2 µm/px)", "",
           f"AUROC of the shift score telling A1's spots from C6's: **{auc:.3f}**. Median score C6 "
           f"{patient['C6']['median']:.3f} ({patient['C6']['flagged']:.3f} of spots flagged), A1 "
           f"{patient['A1']['median']:.3f} ({patient['A1']['flagged']:.3f} flagged)."]
    write_results(args.out, data, "\n".join(md))


if __name__ == "__main__":
    main()
