# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Tutorial: from HER2ST sections to predicted maps
#
# This notebook goes HER2ST sections → a prepared dataset → a trained Stem model → a predicted
# AnnData → measured, predicted and uncertainty maps on the H&E. Everything is AnnData in,
# AnnData out, as in scanpy.
#
# It trains a deliberately small model (the `tiny` preset, 200 steps: a few minutes on a 2-core
# CPU), so its maps show the workflow, not the accuracy; `stem demo` and
# `benchmarks/accuracy_loo.py` measure that (see {doc}`/benchmarks/index`). The encoder is the
# offline default, ImageNet EfficientNet-Lite0 (not a pathology encoder); pass
# `encoder="uni", weights=PATH` to `st.prepare` for a pathology one ({doc}`/guide/encoders`).
#
# The source is `docs/tutorials/her2st.py` in jupytext's percent format; run it as a script
# (`.venv/bin/python docs/tutorials/her2st.py`) or open it as a notebook with jupytext. It reads
# HER2ST from `$STEM_SHARED/data/her2st` (default: the `shared` folder beside the repository,
# found from wherever it runs, `docs/tutorials/` included) and writes into `$STEM_TUTORIAL_OUT`
# (default: a new temporary folder).

# %%
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

# scanpy's spatial plot works, but suggests squidpy's (not a dependency here); tqdm's notebook
# progress bar would need ipywidgets
warnings.filterwarnings("ignore", message="Use `squidpy.pl.spatial_scatter` instead")
warnings.filterwarnings("ignore", message="IProgress not found")

import matplotlib.pyplot as plt
import numpy as np
import scanpy as sc

import stem_st as st


def shared_folder() -> Path:
    """$STEM_SHARED, else the nearest `shared/` with HER2ST in this folder or one above it."""
    if os.environ.get("STEM_SHARED"):
        return Path(os.environ["STEM_SHARED"])
    here = Path.cwd().resolve()
    found = [p / "shared" for p in (here, *here.parents) if (p / "shared" / "data" / "her2st").is_dir()]
    return found[0] if found else Path("../shared")


HER2ST = shared_folder() / "data" / "her2st"
OUT = Path(os.environ.get("STEM_TUTORIAL_OUT") or tempfile.mkdtemp(prefix="stem-tutorial-"))
OUT.mkdir(parents=True, exist_ok=True)
assert not any(OUT.iterdir()), f"{OUT} is not empty: the tutorial writes into a new folder"
t0 = time.perf_counter()

# %% [markdown]
# ## 1. Read
# One AnnData per section: raw counts in `X`, spot centres in full-resolution pixels in
# `obsm['spatial']`, the image and its µm per pixel in `uns['stem']`.

# %%
sections = {s: st.read.her2st(HER2ST, s) for s in ("C2", "C3")}
c3_counts_before = sections["C3"].X.copy()
sections["C2"]

# %% [markdown]
# ## 2. Prepare
# The gene panel is chosen on the training section only; every spot's patch is embedded. The
# result is a folder (the same as `stem prepare` writes), opened as a dataset.

# %%
prep = st.prepare(sections, OUT / "prep", holdout=["C3"], genes="hmhvg:50", views=1)
print(len(prep.genes), "genes;", {s: prep.section(s).n_obs for s in prep.sections}, "spots")

# %% [markdown]
# ## 3. Train
# On the non-held-out section. The recipe (what Stem learns and reports) is the default one,
# chosen by leave-one-section-out; `st.get_recipe("paper")` is the paper's. With one training
# section, its spots are split into four spatial blocks that stand in for sections: the ridge
# prior is cross-fitted over them, and one block is kept out of the network's training to score
# its samples (once, at the end of this short run) and calibrate their spread, so the intervals are never
# fitted on spots the model learned from. Train on several sections when you can.

# %%
settings = st.TrainSettings(prep=str(prep.root), holdout=["C3"], preset="tiny", steps=200,
                            batch_size=32, lr=5e-4, aug_ratio=0, checkpoint_every=100, val_every=200)
model, result = st.StemModel.fit(prep, OUT / "run", settings, progress=False)
print("final training loss", round(float(result.losses[-1]["loss"]), 4))

# %% [markdown]
# ## 4. Predict the held-out section
# `predict_adata` returns a **new** AnnData over the panel genes with the measured counts in `X`,
# `layers['stem_mean']` and `layers['stem_std']` (log2(1 + count)) and the H&E in
# `uns['spatial']` for scanpy and squidpy. The prepared section itself is left untouched.

# %%
pred = model.predict_adata(prep.section("C3"), st.PredictSettings(num_samples=10))
pred.layers["measured"] = np.log2(1 + np.asarray(pred.X, dtype=np.float32))
pred

# %% [markdown]
# ## 5. Look
# Measured, predicted and the samples' standard deviation for the gene the model predicts best,
# measured and predicted on one colour scale.

# %%
r = [np.corrcoef(pred.layers["measured"][:, j], pred.layers["stem_mean"][:, j])[0, 1]
     for j in range(pred.n_vars)]
gene = pred.var_names[int(np.nanargmax(r))]
top = float(np.percentile(pred[:, gene].layers["measured"], 99))
fig, axes = plt.subplots(1, 3, figsize=(18, 6))
for ax, layer in zip(axes, ("measured", "stem_mean", "stem_std")):
    scale = {} if layer == "stem_std" else {"vmin": 0, "vmax": top}
    sc.pl.spatial(pred, color=gene, layer=layer, library_id="C3", img_key="hires", ax=ax, show=False,
                  title=f"{gene}: {layer} (log2(1 + count))", **scale)
fig.savefig(OUT / f"C3_{gene}.png", dpi=80, bbox_inches="tight")
plt.show()

# %% [markdown]
# ## 6. What it measured
# The section as read is unchanged, and the per-gene Pearson r of this small model on the
# held-out section:

# %%
assert np.array_equal(sections["C3"].X.toarray(), c3_counts_before.toarray())  # inputs untouched
summary = {"gene": gene, "pcc": round(float(np.nanmax(r)), 3), "median_pcc": round(float(np.nanmedian(r)), 3),
           "spots": pred.n_obs, "genes": pred.n_vars, "seconds": round(time.perf_counter() - t0, 1),
           "figure": str(OUT / f"C3_{gene}.png"), "final_loss": float(result.losses[-1]["loss"])}
(OUT / "summary.json").write_text(json.dumps(summary, indent=1))
summary
