"""Tutorial: HER2ST sections → a trained Stem model → a predicted AnnData → a spatial plot.

Everything is AnnData in, AnnData out, as in scanpy. Run from the repository root:

    .venv/bin/python examples/tutorial.py [OUT]     # OUT: a new folder (default runs/tutorial)

It trains a deliberately small model (tiny preset, 200 steps: about 2 minutes on a 2-core CPU),
so its maps show the workflow, not the accuracy; `stem demo` and benchmarks/accuracy_loo.py
measure that. The encoder is the offline default, ImageNet EfficientNet-Lite0 (not a pathology
encoder); pass ``encoder="uni", weights=PATH`` to ``st.prepare`` for a pathology one.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import scanpy as sc  # noqa: E402

import stem_st as st  # noqa: E402

HER2ST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "her2st"


def main(out: Path) -> dict:
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=False)

    # 1. Read: one AnnData per section, raw counts in X, spot centres (full-res px) in obsm['spatial'].
    sections = {s: st.read.her2st(HER2ST, s) for s in ("C2", "C3")}
    c3_counts_before = sections["C3"].X.copy()

    # 2. Prepare: the gene panel is chosen on the training section(s) only; every spot's patch is
    #    embedded. The result is a folder (the same as `stem prepare` writes) opened as a dataset.
    prep = st.prepare(sections, out / "prep", holdout=["C3"], genes="hmhvg:50", views=1)

    # 3. Train on the non-held-out section(s). The recipe (what Stem learns and reports) is the
    #    default one, chosen by leave-one-section-out; st.get_recipe("paper") is the paper's.
    settings = st.TrainSettings(prep=str(prep.root), holdout=["C3"], preset="tiny", steps=200,
                                batch_size=32, lr=5e-4, aug_ratio=0, checkpoint_every=100)
    model, result = st.StemModel.fit(prep, out / "run", settings, progress=False)

    # 4. Predict the held-out section: a NEW AnnData over the panel genes with the measured counts
    #    in X, layers['stem_mean'] and layers['stem_std'] (log2(1 + count)) and the H&E in
    #    uns['spatial'] for scanpy/squidpy. The prepared section itself is left untouched.
    pred = model.predict_adata(prep.section("C3"), st.PredictSettings(num_samples=10))
    pred.layers["measured"] = np.log2(1 + np.asarray(pred.X, dtype=np.float32))

    # 5. Look: measured vs predicted vs uncertainty for the gene the model predicts best.
    r = [np.corrcoef(pred.layers["measured"][:, j], pred.layers["stem_mean"][:, j])[0, 1]
         for j in range(pred.n_vars)]
    gene = pred.var_names[int(np.nanargmax(r))]
    top = float(np.percentile(pred[:, gene].layers["measured"], 99))  # one scale for truth and prediction
    fig, axes = plt.subplots(1, 3, figsize=(18, 6))
    for ax, layer in zip(axes, ("measured", "stem_mean", "stem_std")):
        scale = {} if layer == "stem_std" else {"vmin": 0, "vmax": top}
        sc.pl.spatial(pred, color=gene, layer=layer, library_id="C3", img_key="hires", ax=ax, show=False,
                      title=f"{gene}: {layer} (log2(1 + count))", **scale)
    fig.savefig(out / f"C3_{gene}.png", dpi=80, bbox_inches="tight")
    plt.close(fig)

    assert np.array_equal(sections["C3"].X.toarray(), c3_counts_before.toarray())  # inputs untouched
    summary = {"gene": gene, "pcc": round(float(np.nanmax(r)), 3), "median_pcc": round(float(np.nanmedian(r)), 3),
               "spots": pred.n_obs, "genes": pred.n_vars, "seconds": round(time.perf_counter() - t0, 1),
               "figure": str(out / f"C3_{gene}.png"), "final_loss": float(result.losses[-1]["loss"])}
    print(summary)
    return summary


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/tutorial"))
