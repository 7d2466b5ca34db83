"""Patch geometry at real resolution, white padding, streamed reads and dihedral views."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from conftest import SQUIDPY
from PIL import Image

from stem_st.data.images import open_image
from stem_st.data.patches import (
    DIHEDRAL_VIEWS,
    crop_spot,
    dihedral,
    iter_patch_batches,
    patch_geometry,
)


def test_hest_patch_of_c2_is_112_um(c2):
    info = c2.uns["stem"]
    geom = patch_geometry("hest", info["mpp"], info["spot_diameter_um"])
    assert 160 <= geom.side_px <= 164  # 112 µm / 0.69 µm/px ≈ 162 px
    assert geom.field_um == pytest.approx(112, abs=0.5)


def test_stem_patch_mode():
    # HER2ST spot (100 µm) at 0.69 µm/px is 145 px: the 224 px floor applies
    assert patch_geometry("stem", 0.69, 100).side_px == 224
    # a coarse image makes the spot diameter the larger side... in px at 0.25 µm/px
    assert patch_geometry("stem", 0.25, 100).side_px == 400
    # squidpy crop: Visium 55 µm at ~0.615 µm/px → 89 px < 224
    assert patch_geometry("stem", 0.615, 55).side_px == 224


def test_crop_is_the_image_region_and_pads_white():
    img = open_image(SQUIDPY / "test_img.jpg")
    full = np.asarray(Image.open(SQUIDPY / "test_img.jpg").convert("RGB"))
    patch = crop_spot(img, 400.0, 500.0, 182)
    np.testing.assert_array_equal(patch, full[409:591, 309:491])
    corner = crop_spot(img, 10.0, 10.0, 100)  # 40 px outside on the top and left
    assert (corner[:40] == 255).all() and (corner[:, :40] == 255).all()
    np.testing.assert_array_equal(corner[40:, 40:], full[:60, :60])


def test_streamed_tiff_reads_equal_decoded_image(tmp_path):
    full = np.asarray(Image.open(SQUIDPY / "test_img.jpg").convert("RGB"))
    path = tmp_path / "crop.tif"
    tifffile.imwrite(path, full, tile=(128, 128), resolution=(1e4 / 0.615, 1e4 / 0.615),
                     resolutionunit="CENTIMETER")
    slide = open_image(path)
    assert slide.mpp == pytest.approx(0.615, rel=1e-3)
    jpg = open_image(SQUIDPY / "test_img.jpg")
    xy = np.array([[100.0, 200.0], [900.0, 1700.0], [500.0, 800.0]])
    geom = patch_geometry("hest", 0.615, 55)
    a = torch.cat([b for _, b in iter_patch_batches(slide, xy, geom, batch_size=2)])
    b = torch.cat([b for _, b in iter_patch_batches(jpg, xy, geom, batch_size=2)])
    assert a.shape == (3, 3, geom.side_px, geom.side_px) and a.dtype == torch.uint8
    assert torch.equal(a, b)


def test_batches_cover_every_spot_once():
    jpg = open_image(SQUIDPY / "test_img.jpg")
    xy = np.random.default_rng(0).uniform(0, 900, size=(37, 2))
    idx = np.concatenate([i for i, _ in iter_patch_batches(jpg, xy, patch_geometry("hest", 1, 1), 8)])
    assert sorted(idx.tolist()) == list(range(37))


def test_dihedral_views_are_the_eight_symmetries():
    x = torch.arange(16).view(1, 4, 4)
    views = [dihedral(x, v) for v in range(8)]
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8
    names = dict(zip(DIHEDRAL_VIEWS, views))
    assert torch.equal(names["hflip"][0, 0], torch.tensor([3, 2, 1, 0]))
    assert torch.equal(names["vflip"][0, 0], torch.tensor([12, 13, 14, 15]))
    assert torch.equal(names["transpose"][0], x[0].T)
    # transverse mirrors across the anti-diagonal: out[i, j] = x[n-1-j, n-1-i]
    n = 4
    anti = torch.tensor([[x[0, n - 1 - j, n - 1 - i] for j in range(n)] for i in range(n)])
    assert torch.equal(names["transverse"][0], anti)
    # rot90 four times is the identity; PIL agrees on rot90 (counter-clockwise)
    r90 = DIHEDRAL_VIEWS.index("rot90")
    assert torch.equal(dihedral(dihedral(dihedral(names["rot90"], r90), r90), r90), x)
    assert torch.equal(dihedral(names["rot90"], r90), names["rot180"])
    pil = np.asarray(Image.fromarray(x[0].numpy().astype(np.uint8)).transpose(Image.Transpose.ROTATE_90))
    assert np.array_equal(names["rot90"][0].numpy(), pil)
