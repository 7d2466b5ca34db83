"""Whole-slide prediction: tissue mask, virtual grid, pyramidal TIFF reading, `stem predict-slide`."""

from __future__ import annotations

import json
import os

import anndata as ad
import numpy as np
import pytest
import tifffile
from conftest import HER2ST, run_stem_here, write_vmu
from PIL import Image
from scipy.spatial import cKDTree

from stem_st.data.images import open_image
from stem_st.data.tissue import spot_grid, tissue_fraction, tissue_mask

C2_MPP = 0.6889718628297177  # as measured from C2's spot pitch


def test_tissue_mask_on_a_real_her2st_image_holds_the_measured_spots(c2):
    with open_image(c2.uns["stem"]["image_path"]) as img:
        thumb, scale = img.thumbnail(1500)
    mask = tissue_mask(thumb)
    frac = tissue_fraction(mask, scale, np.asarray(c2.obsm["spatial"]), 100 / c2.uns["stem"]["mpp"])
    assert (frac >= 0.5).mean() > 0.95  # the spots that were sequenced lie on tissue
    assert 0.05 < mask.mean() < 0.5  # ...and most of the glass is not tissue
    blank = np.full((200, 300, 3), 245, dtype=np.uint8)
    assert not tissue_mask(blank).any()


@pytest.mark.parametrize("layout", ["hex", "square"])
def test_grid_geometry(layout):
    xy = spot_grid(2000, 1500, 100.0, layout)
    d, _ = cKDTree(xy).query(xy, k=7)
    assert np.allclose(d[:, 1], 100.0)  # nearest neighbour at exactly one pitch
    inner = (xy[:, 0] > 200) & (xy[:, 0] < 1800) & (xy[:, 1] > 200) & (xy[:, 1] < 1300)
    n_at_pitch = (np.abs(d[inner, 1:] - 100.0) < 1e-6).sum(1)
    assert (n_at_pitch == (6 if layout == "hex" else 4)).all()
    rows = np.unique(np.round(xy[:, 1], 6))
    assert np.allclose(np.diff(rows), 100 * np.sqrt(3) / 2 if layout == "hex" else 100)
    assert xy.min() >= 0 and xy[:, 0].max() < 2000 and xy[:, 1].max() < 1500


def test_in_tissue_filter_keeps_spots_whose_patch_is_mostly_tissue():
    mask = np.zeros((150, 200), dtype=bool)
    mask[:, :100] = True  # left half, at scale 0.1 of a 2000 × 1500 image
    xy = spot_grid(2000, 1500, 100.0, "square")
    frac = tissue_fraction(mask, 0.1, xy, 100.0)
    keep = frac >= 0.5
    assert np.all(xy[keep, 0] < 1000 + 50) and np.all(xy[~keep, 0] > 1000 - 50)
    assert np.allclose(frac[xy[:, 0] < 900], 1.0) and np.allclose(frac[xy[:, 0] > 1100], 0.0)


def _pyramid_tiff(path, image, mpp):
    """A tiled pyramidal TIFF with resolution tags (what a scanner writes), levels /2 and /4."""
    with tifffile.TiffWriter(path, bigtiff=False) as tif:
        opts = dict(tile=(256, 256), photometric="rgb", compression="jpeg", resolutionunit="CENTIMETER")
        tif.write(image, subifds=2, resolution=(1e4 / mpp, 1e4 / mpp), **opts)
        for f in (2, 4):
            tif.write(image[::f, ::f], subfiletype=1, resolution=(1e4 / mpp / f, 1e4 / mpp / f), **opts)


@pytest.fixture(scope="module")
def slide(tmp_path_factory, c2):
    """A 3000 × 3000 crop of C2's H&E around its spots, as a pyramidal TIFF."""
    tmp = tmp_path_factory.mktemp("slide")
    xy = np.asarray(c2.obsm["spatial"])
    cx, cy = np.median(xy, 0).astype(int)
    with open_image(c2.uns["stem"]["image_path"]) as img:
        crop = img.read_region(cx - 1500, cy - 1500, 3000, 3000)
    path = tmp / "c2_crop.tif"
    _pyramid_tiff(path, crop, C2_MPP)
    return path, (cx - 1500, cy - 1500)


def test_pyramidal_tiff_is_read_lazily_at_the_right_mpp(slide):
    with open_image(slide[0]) as img:
        assert type(img).__name__ == "SlideImage"
        assert img.mpp == pytest.approx(C2_MPP, rel=1e-4)
        assert (img.width, img.height) == (3000, 3000)
        assert len(img._slide.level_dimensions) == 3
        thumb, scale = img.thumbnail(700)
        assert thumb.shape[:2] == (700, 700) and scale == pytest.approx(700 / 3000)


@pytest.fixture(scope="module")
def run(her2st_run):
    """A tiny Stem run on real effnet embeddings (so the slide path can rebuild the encoder): the
    session's, trained on HER2ST C2 and C3 (conftest)."""
    return her2st_run


#: the options of every quick `predict-slide` below (the VMU test compares its output with `tif_pred`'s)
QUICK = ["--num-samples", "2", "--sampler", "ddim:2", "--device", "cpu"]


@pytest.fixture(scope="module")
def tif_pred(run, slide, tmp_path_factory):
    """`stem predict-slide` on the TIFF crop, run once for the module: (args, output, stdout)."""
    tmp = tmp_path_factory.mktemp("tif_pred")
    out = tmp / "pred.h5ad"
    args = ["predict-slide", run, "--image", slide[0], "--out", out, *QUICK, "--cache", tmp / "cache"]
    return args, out, run_stem_here(*args).stdout


def test_predict_slide_writes_a_scanpy_ready_file_and_resumes_from_the_cache(tif_pred):
    import matplotlib

    matplotlib.use("Agg")
    import scanpy as sc

    args, out, stdout = tif_pred
    tmp_path, cache = out.parent, out.parent / "cache"
    a = ad.read_h5ad(out)
    meta = a.uns["stem"]
    assert meta["mpp"] == pytest.approx(C2_MPP, rel=1e-4) and meta["layout"] == "square"  # legacy ST run
    assert meta["pitch_um"] == 200.0 and meta["units"] == "log2(1 + count)"
    xy = a.obsm["spatial"]
    d, _ = cKDTree(xy).query(xy, k=2)
    pitch_px = 200 / C2_MPP  # full-resolution pixels
    assert d[:, 1].min() == pytest.approx(pitch_px) and np.median(d[:, 1]) == pytest.approx(pitch_px)
    assert 40 < a.n_obs < (3000 / (200 / C2_MPP)) ** 2 + 10 and (a.obs["tissue_fraction"] >= 0.5).all()
    assert a.layers["std"].shape == a.X.shape and (a.layers["std"] >= 0).all()
    # the virtual grid's ring-1 graph (the context's neighbourhoods): 8 around an inner square-grid spot
    degree = np.asarray(a.obsp["spatial_connectivities"].sum(1)).ravel()
    assert degree.max() == 8 and (degree == 8).sum() > 0.3 * a.n_obs
    lib = meta["library_id"]
    sf = a.uns["spatial"][lib]["scalefactors"]
    assert sf["spot_diameter_fullres"] == pytest.approx(100 / C2_MPP)
    assert a.uns["spatial"][lib]["images"]["hires"].shape[2] == 3
    sc.pl.spatial(a, color=a.var_names[0], library_id=lib, img_key="hires", show=False)
    assert (tmp_path / "pred_tissue.png").is_file()
    assert len(list((tmp_path / "pred_maps").glob("*.png"))) == 6
    assert "whole-slide prediction" in stdout
    entries = sorted(p.name for p in cache.rglob("*.npy"))
    assert entries  # embeddings cached per chunk
    # a second run (e.g. after an interruption) reuses them and gives the same answer
    run_stem_here(*args, "--overwrite")
    assert sorted(p.name for p in cache.rglob("*.npy")) == entries
    np.testing.assert_allclose(ad.read_h5ad(out).X, a.X, rtol=1e-5, atol=1e-5)
    assert json.loads(json.dumps(ad.read_h5ad(out).uns["stem"]["seconds"], default=float))["embed"] < \
        meta["seconds"]["embed"]


def test_predict_slide_refuses_an_image_without_mpp(run, tmp_path):
    jpg = next((HER2ST / "data/ST-imgs/C/C2").glob("*.jpg"))
    res = run_stem_here("predict-slide", run, "--image", jpg, "--out", tmp_path / "p.h5ad", check=False)
    assert res.returncode == 2 and "pass --mpp" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "p.h5ad").exists()
    res = run_stem_here("predict-slide", run, "--image", tmp_path / "none.tif", "--out", tmp_path / "p.h5ad",
                        check=False)
    assert res.returncode == 2 and "not found" in res.stderr


def test_thumbnail_of_a_flat_tiff_is_built_block_by_block(slide, tmp_path):
    """A TIFF without a pyramid must not be decoded whole for the thumbnail."""
    with open_image(slide[0]) as img:
        full = img.read_region(0, 0, 3000, 3000)
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, full, tile=(256, 256), photometric="rgb", resolution=(1e4 / C2_MPP, 1e4 / C2_MPP),
                     resolutionunit="CENTIMETER")
    with open_image(flat) as img:
        assert len(img._slide.level_dimensions) == 1
        whole, s1 = img.thumbnail(600)
        blocks, s2 = img.thumbnail(600, block=700)  # forces 5 x 5 blocks
    assert s1 == s2 == pytest.approx(0.2) and blocks.shape == whole.shape == (600, 600, 3)
    assert np.abs(blocks.astype(int) - whole.astype(int)).mean() < 4  # same picture, up to block seams


@pytest.mark.slow
def test_predict_slide_killed_mid_run_resumes_from_its_chunks(run, slide, tif_pred, tmp_path, monkeypatch):
    """SIGKILL once the first chunk of embeddings is cached: no output under the final name;
    the rerun keeps that chunk, embeds the rest and writes what an uninterrupted run (`tif_pred`) writes."""
    from test_kill_resume import ENV, kill_when

    env = {**ENV, "STEM_ST_SLIDE_CHUNK": "16"}
    args = ["predict-slide", run, "--image", slide[0], *QUICK]
    # the rerun in this process, with the chunk size the variable sets in the killed one
    monkeypatch.setattr("stem_st.prediction.slide.CHUNK", 16)
    cache, out = tmp_path / "c2", tmp_path / "pred.h5ad"
    kill_when([*args, "--out", out, "--cache", cache], lambda: any(cache.rglob("*.npy")), env=env)
    first = {p: p.stat().st_mtime_ns for p in cache.rglob("*.npy")}
    assert first and not out.exists()
    res = run_stem_here(*args, "--out", out, "--cache", cache)
    a, b = ad.read_h5ad(tif_pred[1]), ad.read_h5ad(out)
    chunks = sorted(cache.rglob("*.npy"))
    assert len(chunks) > len(first) and all(p.stat().st_mtime_ns == t for p, t in first.items())  # kept as is
    assert len(chunks) == -(-a.n_obs // 16)  # every chunk of 16 spots embedded once
    np.testing.assert_array_equal(a.obsm["spatial"], b.obsm["spatial"])
    np.testing.assert_allclose(b.X, a.X, rtol=1e-5, atol=1e-5)
    assert "whole-slide prediction" in res.stdout


@pytest.fixture(scope="module")
def vmu(tmp_path_factory, slide):
    """The `slide` TIFF's level-0 pixels rewritten as a Hamamatsu VMU."""
    with open_image(slide[0]) as img:
        pixels = img.read_region(0, 0, img.width, img.height)
    return write_vmu(tmp_path_factory.mktemp("vmu"), pixels, C2_MPP), pixels


def test_a_format_only_openslide_reads_is_opened_with_openslide(vmu):
    import tiffslide

    path, pixels = vmu
    with pytest.raises(tifffile.TiffFileError):
        tiffslide.TiffSlide(str(path))  # not a TIFF: tiffslide alone could not read it
    with open_image(path) as img:
        assert type(img).__name__ == "OpenSlideImage" and img.vendor == "hamamatsu"
        assert (img.width, img.height) == (3000, 3000) and img.mpp == pytest.approx(C2_MPP, rel=1e-5)
        assert img._slide.level_dimensions == ((3000, 3000), (750, 750))
        np.testing.assert_array_equal(img.read_region(1234, 567, 300, 200), pixels[567:767, 1234:1534])
        edge = img.read_region(2900, -50, 200, 100)  # off the slide: white padding, as for every reader
        np.testing.assert_array_equal(edge[50:, :100], pixels[:50, 2900:])
        assert (edge[:50] == 255).all() and (edge[:, 100:] == 255).all()
        thumb, scale = img.thumbnail(500)  # from the /4 map level, not from level 0
        assert thumb.shape == (500, 500, 3) and scale == pytest.approx(500 / 3000)
    odd = path.with_name("slide_index.txt")  # an unknown suffix: PIL cannot read it, OpenSlide can
    odd.write_bytes(path.read_bytes())
    with open_image(odd) as img:
        assert type(img).__name__ == "OpenSlideImage" and img.width == 3000
    odd.unlink()
    small = Image.fromarray(pixels[::4, ::4]).resize((500, 500), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(thumb, np.asarray(small))


def test_openslide_missing_is_one_clear_error(vmu, monkeypatch):
    import sys

    from stem_st.errors import StemError

    monkeypatch.setitem(sys.modules, "openslide", None)  # as if openslide-python were not installed
    with pytest.raises(StemError, match=r"needs OpenSlide \(pip install openslide-python openslide-bin\)"):
        open_image(vmu[0])


def test_predict_slide_on_a_vmu_equals_the_same_pixels_as_tiff(run, vmu, tif_pred, tmp_path):
    run_stem_here("predict-slide", run, "--image", vmu[0], "--out", tmp_path / "vmu.h5ad", *QUICK,
                  "--cache", tmp_path / "cache")
    a, b = ad.read_h5ad(tif_pred[1]), ad.read_h5ad(tmp_path / "vmu.h5ad")
    assert b.uns["stem"]["mpp"] == pytest.approx(C2_MPP, rel=1e-5) and b.n_obs > 40
    # the same grid (up to the nm rounding of the VMU's PhysicalWidth) and the same patches and predictions
    np.testing.assert_allclose(b.obsm["spatial"], a.obsm["spatial"], atol=0.01)
    np.testing.assert_allclose(b.X, a.X, rtol=1e-5, atol=1e-5)
    # a changed NGR data file (same index file) is a different slide for the embedding cache
    from stem_st.data.images import file_fingerprint

    before = file_fingerprint(vmu[0])
    ngr = vmu[0].with_name("slide.ngr")
    os.utime(ngr, ns=(ngr.stat().st_atime_ns, ngr.stat().st_mtime_ns + 5 * 10**9))
    assert file_fingerprint(vmu[0]) != before


@pytest.mark.slow
def test_predict_slides_splits_a_list_over_two_gloo_processes_and_resumes(run, slide, vmu, tmp_path):
    """`torchrun --nproc_per_node 2 stem predict-slide --slides LIST`: each process takes one slide;
    rank 0 writes the index; a rerun skips both; a bad line is one clear error."""
    import subprocess
    import sys

    from test_kill_resume import ENV

    (tmp_path / "slides.txt").write_text(f"# cohort\n{slide[0]}\n{vmu[0]}\t{C2_MPP}\n")
    out = tmp_path / "maps"
    args = ["predict-slide", run, "--slides", tmp_path / "slides.txt", "--out", out, "--num-samples", "2",
            "--sampler", "ddim:2", "--device", "cpu", "--cache", tmp_path / "cache"]
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                          "--master-port", "29517", "-m", "stem_st.cli", *map(str, args)],
                         capture_output=True, text=True, env=ENV, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "process 0/2: 1 of 2 slides" in res.stderr and "process 1/2: 1 of 2 slides" in res.stderr
    index = (out / "slides.tsv").read_text().splitlines()
    assert len(index) == 3 and all(line.endswith("True") for line in index[1:])
    a, b = ad.read_h5ad(out / "c2_crop.h5ad"), ad.read_h5ad(out / "slide.h5ad")
    np.testing.assert_allclose(b.X, a.X, rtol=1e-5, atol=1e-5)  # the same pixels, read by two libraries
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*.h5ad")}
    res = run_stem_here(*args)  # one process, nothing left to do
    assert "0 of 2 slides (2 already done)" in res.stderr
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.h5ad")} == stamps
    (tmp_path / "bad.txt").write_text(f"{slide[0]}\tfast\n")
    res = run_stem_here(*[a if a != tmp_path / "slides.txt" else tmp_path / "bad.txt" for a in args], check=False)
    assert res.returncode == 2 and "bad.txt line 1: mpp 'fast' is not a number" in res.stderr
    assert "Traceback" not in res.stderr
    (tmp_path / "bad.txt").write_text(f"{slide[0]}\n{vmu[0].with_name('c2_crop.vmu')}\n")
    vmu[0].with_name("c2_crop.vmu").write_bytes(vmu[0].read_bytes())
    res = run_stem_here(*[a if a != tmp_path / "slides.txt" else tmp_path / "bad.txt" for a in args], check=False)
    assert res.returncode == 2 and "same file stem: c2_crop" in res.stderr
    vmu[0].with_name("c2_crop.vmu").unlink()
