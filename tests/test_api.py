"""The Python API (``import stem_st as st``): the tutorial notebook runs end to end on HER2ST (executed
by the documentation build), and AnnData in / AnnData out never touches the caller's object."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import HER2ST, run_stem_here

import stem_st as st
from stem_st.data.images import open_image


@pytest.fixture(scope="module")
def tutorial(docs_site):
    """The tutorial notebook as the documentation build executed it (once per session)."""
    _, out, _ = docs_site
    return out, json.loads((out / "summary.json").read_text())


def test_tutorial_trains_predicts_and_plots(tutorial):
    out, summary = tutorial
    png = Path(summary["figure"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 50_000
    assert summary["spots"] == st.open_prepared(out / "prep").section("C3").n_obs and summary["genes"] == 50
    # a 200-step tiny model on one section still predicts the held-out section's patterns
    assert summary["median_pcc"] > 0.2 and summary["pcc"] > 0.5


def test_predict_adata_returns_a_new_anndata_and_leaves_the_input_alone(tutorial):
    out, _ = tutorial
    model = st.StemModel.from_run(out / "run")
    sec = st.open_prepared(out / "prep").section("C3")
    before = (sec.X.copy(), set(sec.layers), set(sec.obsm), set(sec.uns))
    pred = model.predict_adata(sec, st.PredictSettings(num_samples=4, seed=1))
    assert pred is not sec and set(sec.layers) == before[1] and set(sec.obsm) == before[2]
    assert set(sec.uns) == before[3]
    np.testing.assert_array_equal(sec.X, before[0])
    np.testing.assert_array_equal(pred.X, sec.X)  # the measured counts of the panel genes
    mean, std, _ = model.predict(sec.obsm["embedding"][:, 0], sec.obsm["spatial"],
                                 st.PredictSettings(num_samples=4, seed=1))
    np.testing.assert_allclose(pred.layers["stem_mean"], mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pred.layers["stem_std"], std, rtol=1e-5, atol=1e-5)
    lib = pred.uns["stem"]["prediction"]["library_id"]
    assert pred.uns["spatial"][lib]["images"]["hires"].ndim == 3
    # inplace writes into the caller's object only when asked, and only over the model's genes
    assert model.predict_adata(sec, st.PredictSettings(num_samples=2), inplace=True) is None
    assert "stem_mean" in sec.layers
    raw = st.read.her2st(HER2ST, "C3")  # every gene, not the panel
    raw.obsm["embedding"] = sec.obsm["embedding"]
    with pytest.raises(st.StemError, match="inplace"):
        model.predict_adata(raw, inplace=True)
    assert "stem_mean" not in raw.layers


def test_embed_a_freshly_read_section_gives_the_prepared_embeddings_and_prediction(tutorial, tmp_path):
    out, _ = tutorial
    model = st.StemModel.from_run(out / "run")
    # the first 60 spots of both (embedding every spot again only costs time): the same spots, same order
    sec = st.open_prepared(out / "prep").section("C3")[:60].copy()
    raw = st.read.her2st(HER2ST, "C3")[:60].copy()
    emb = st.embed(raw, cache_dir=str(tmp_path / "cache"))  # an empty cache: embedded anew, not read back
    assert "embedding" not in raw.obsm  # a copy was embedded
    np.testing.assert_allclose(emb.obsm["embedding"], sec.obsm["embedding"], rtol=1e-4, atol=1e-4)
    a = model.predict_adata(emb, st.PredictSettings(num_samples=2, seed=3))
    b = model.predict_adata(sec, st.PredictSettings(num_samples=2, seed=3))
    assert list(a.var_names) == model.genes
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_allclose(a.layers["stem_mean"], b.layers["stem_mean"], rtol=1e-4, atol=1e-4)


def test_import_is_cheap():
    code = ("import sys, stem_st as st; assert 'torch' not in sys.modules; st.read; "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_stem_predict_output_carries_the_he_for_scanpy(tutorial, tmp_path):
    """`stem predict` writes uns['spatial'][section] (H&E + scale factors) so sc.pl.spatial draws the
    prediction over the slide, and its X is the API's prediction for the same seed and sampler."""
    import anndata as ad
    import matplotlib

    matplotlib.use("Agg")
    import scanpy as sc

    out, _ = tutorial
    target = tmp_path / "C3_pred.h5ad"
    run_stem_here("predict", out / "run", "--sections", "C3", "--num-samples", "3", "--sampler", "ddim:4",
                  "--seed", "2", "--out", target, "--device", "cpu")
    pred = ad.read_h5ad(target)
    sec = st.open_prepared(out / "prep").section("C3")
    lib = pred.uns["stem"]["library_id"]
    assert lib == "C3" and max(pred.uns["spatial"][lib]["images"]["hires"].shape[:2]) == 1000
    sf = pred.uns["spatial"][lib]["scalefactors"]
    with open_image(sec.uns["stem"]["image_path"]) as img:
        assert sf["tissue_hires_scalef"] == pytest.approx(1000 / max(img.width, img.height))
    info = sec.uns["stem"]
    assert sf["spot_diameter_fullres"] == pytest.approx(info["spot_diameter_um"] / info["mpp"])
    api = st.StemModel.from_run(out / "run").predict_adata(
        sec, st.PredictSettings(num_samples=3, sampler="ddim:4", seed=2))
    np.testing.assert_allclose(pred.X, api.layers["stem_mean"], rtol=1e-5, atol=1e-5)
    sc.pl.spatial(pred, color=pred.var_names[0], library_id=lib, img_key="hires", show=False)
