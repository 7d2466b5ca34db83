"""Readers on the shared real datasets, all returning the common section form."""

from __future__ import annotations

import json
import shutil
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import tifffile
from conftest import HER2ST, SQUIDPY, VISIUM
from PIL import Image

from stem_st.data.readers import ReaderOptions, list_sections, read_section
from stem_st.errors import StemError


def _common_form(a: ad.AnnData):
    x = a.X.toarray()
    assert x.dtype.kind == "i" and (x >= 0).all()
    assert a.obsm["spatial"].shape == (a.n_obs, 2)
    assert a.obs_names.is_unique and a.var_names.is_unique
    for key in ("image_path", "mpp", "spot_diameter_um", "center_distance_um", "platform"):
        assert key in a.uns["stem"], key


def test_her2st_c2_matches_raw_files(c2):
    _common_form(c2)
    spots = pd.read_csv(HER2ST / "data/ST-spotfiles/C2_selection.tsv", sep="\t")
    spots = spots[spots.selected == 1]
    assert c2.n_obs == len(spots) == 187
    counts = pd.read_csv(HER2ST / "data/ST-cnts/C2.tsv.gz", sep="\t", index_col=0)
    sid = c2.obs_names[10]
    np.testing.assert_array_equal(c2[sid].X.toarray().ravel(), counts.loc[sid].to_numpy())
    row = spots[(spots.x.astype(str) + "x" + spots.y.astype(str)) == sid].iloc[0]
    np.testing.assert_allclose(c2[sid].obsm["spatial"][0], [row.pixel_x, row.pixel_y])
    # 200 µm grid pitch ≈ 290 px in the C images: about 0.69 µm per pixel
    assert c2.uns["stem"]["mpp"] == pytest.approx(0.69, abs=0.01)
    assert "estimated" in c2.uns["stem"]["mpp_source"]
    assert c2.uns["stem"]["platform"] == "legacy_st"


def test_her2st_a1_labels_and_downscaled_image():
    a1 = read_section("her2st", HER2ST, "A1")
    _common_form(a1)
    assert a1.uns["stem"]["image_scale"] == pytest.approx(2000 / 6954)
    assert a1.uns["stem"]["mpp"] == pytest.approx(3.2, abs=0.1)
    lbl = pd.read_csv(HER2ST / "data/ST-pat/lbl/A1_labeled_coordinates.tsv", sep="\t")
    assert a1.obs["label"].notna().sum() >= 0.95 * a1.n_obs
    assert set(a1.obs["label"].dropna()) <= set(lbl["label"])
    assert a1.obs["label"].value_counts().index[0] == "invasive cancer"
    # the rendering is 2000 px wide; every spot lands inside it
    assert a1.obsm["spatial"][:, 0].max() < 2000


def test_her2st_sections_list_all_36():
    ids = list_sections("her2st", HER2ST)
    assert len(ids) == 36 and "H3" in ids


def test_her2st_section_without_image_needs_image_only_when_required():
    with pytest.raises(StemError, match="no H&E image"):
        read_section("her2st", HER2ST, "B2")
    b2 = read_section("her2st", HER2ST, "B2", ReaderOptions(require_image=False))
    assert b2.n_obs > 100 and b2.uns["stem"].get("image_path") is None


def test_visium_old_positions_and_lowres_image():
    a = read_section("visium", VISIUM, "brain")
    _common_form(a)
    assert a.shape == (2695, 100)
    pos = pd.read_csv(VISIUM / "spatial/tissue_positions_list.csv", header=None, index_col=0)
    sf = json.loads((VISIUM / "spatial/scalefactors_json.json").read_text())
    bc = a.obs_names[5]
    # coordinates are (x = column, y = row), scaled into the lowres image
    np.testing.assert_allclose(a[bc].obsm["spatial"][0],
                               np.array([pos.loc[bc, 5], pos.loc[bc, 4]]) * sf["tissue_lowres_scalef"])
    # 100 µm pitch; Space Ranger's spot_diameter_fullres spans a nominal 65 µm spot, an
    # independent (rougher) check of µm/px
    mpp_from_diameter = 65 / (sf["spot_diameter_fullres"] * sf["tissue_lowres_scalef"])
    assert a.uns["stem"]["mpp"] == pytest.approx(mpp_from_diameter, rel=0.1)
    assert a.uns["stem"]["image_path"].endswith("tissue_lowres_image.png")


def test_visium_new_positions_format(tmp_path):
    outs = tmp_path / "outs"
    shutil.copytree(VISIUM, outs)
    old = outs / "spatial/tissue_positions_list.csv"
    pos = pd.read_csv(old, header=None,
                      names=["barcode", "in_tissue", "array_row", "array_col",
                             "pxl_row_in_fullres", "pxl_col_in_fullres"])
    pos.to_csv(outs / "spatial/tissue_positions.csv", index=False)
    old.unlink()
    a = read_section("visium", outs, "x")
    b = read_section("visium", VISIUM, "x")
    np.testing.assert_allclose(a.obsm["spatial"], b[a.obs_names].obsm["spatial"])


def _write_hest(root, section, src):
    (root / "st").mkdir(parents=True)
    (root / "wsis").mkdir()
    (root / "metadata").mkdir()
    st = ad.AnnData(X=src.X.copy(), obs=src.obs.copy(), var=src.var.copy())
    st.obsm["spatial"] = src.obsm["spatial"].copy()
    st.write_h5ad(root / "st" / f"{section}.h5ad")
    with warnings.catch_warnings():  # the test's own read of a 92-Mpx image (the package's reads are quiet)
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = np.asarray(Image.open(src.uns["stem"]["image_path"]).convert("RGB"))
    mpp = src.uns["stem"]["mpp"]
    tifffile.imwrite(root / "wsis" / f"{section}.tif", img, tile=(256, 256),
                     resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER")
    (root / "metadata" / f"{section}.json").write_text(json.dumps(
        {"pixel_size_um_estimated": mpp, "spot_diameter": 100.0, "inter_spot_dist": 200.0,
         "st_technology": "Spatial Transcriptomics"}))


def test_hest_layout_round_trip(tmp_path):
    c3 = read_section("her2st", HER2ST, "C3")
    _write_hest(tmp_path, "C3", c3)
    back = read_section("hest", tmp_path, "C3")
    _common_form(back)
    assert list(back.obs_names) == list(c3.obs_names)
    assert list(back.var_names) == list(c3.var_names)
    assert (back.X != c3.X).nnz == 0
    np.testing.assert_array_equal(back.obsm["spatial"], c3.obsm["spatial"])
    assert back.uns["stem"]["mpp"] == pytest.approx(c3.uns["stem"]["mpp"])
    assert back.uns["stem"]["platform"] == "legacy_st"
    assert back.uns["stem"]["image_path"].endswith("C3.tif")


def test_h5ad_with_image_squidpy_crop(tmp_path):
    src = ad.read_h5ad(SQUIDPY / "test_data.h5ad")
    img = SQUIDPY / "test_img.jpg"
    # its X is log-normalised: refused as counts, with a clear message
    with pytest.raises(StemError, match="not raw counts"):
        read_section("h5ad", SQUIDPY / "test_data.h5ad", "crop",
                     ReaderOptions(image=str(img), mpp=0.615))
    # a counts layer is used when named
    src.layers["counts"] = np.rint(np.expm1(src.X.toarray()))
    path = tmp_path / "crop.h5ad"
    src.write_h5ad(path)
    a = read_section("h5ad", path, "crop",
                     ReaderOptions(image=str(img), mpp=0.615, counts_layer="counts"))
    _common_form(a)
    assert a.n_obs == 49 and a.uns["stem"]["mpp"] == 0.615
    assert a.uns["stem"]["mpp_source"] == "the command line"
    assert a.uns["stem"]["image_size"] == [950, 1717]
    np.testing.assert_array_equal(a.obsm["spatial"], src.obsm["spatial"])


def test_spots_outside_image_refused(tmp_path):
    with pytest.raises(StemError, match="outside"):
        read_section("her2st", HER2ST, "C2", ReaderOptions(image_scale=2.0))
