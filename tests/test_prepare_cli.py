"""`stem prepare` end to end on HER2ST, its cache, and its refusals of malformed input."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import HER2ST, run_stem_here

from stem_st.data.context import ring_neighbours
from stem_st.data.dataset import open_prepared
from stem_st.data.readers import read_section


@pytest.fixture(scope="module")
def prepared(her2st_prep, embedding_cache):
    """The session's C2, C3, A1 dataset (conftest), prepared through the session embedding cache."""
    out, res = her2st_prep
    return out, embedding_cache, res


def test_prepare_writes_the_dataset(prepared):
    out, _, res = prepared
    ds = open_prepared(out)
    assert ds.sections == ["C2", "C3", "A1"] and ds.holdout == ["A1"]
    assert len(ds.genes) == 50 and ds.embedding_dim == 1280 and ds.n_views == 2
    man = ds.manifest
    assert man["panel"]["chosen_from"] == ["C2", "C3"]
    assert man["panel"]["excluded_holdout"] == ["A1"]
    assert man["encoders"][0]["encoder"] == "effnet-lite0-imagenet"
    assert man["encoders"][0]["pathology"] is False
    assert man["views"] == ["identity", "hflip"]
    raw = read_section("her2st", HER2ST, "C3")
    c3 = ds.section("C3")
    np.testing.assert_array_equal(c3.X, raw[:, ds.genes].X.toarray())
    np.testing.assert_array_equal(c3.obsm["spatial"], raw.obsm["spatial"])
    emb = ds.embeddings("C3")
    assert emb.shape == (c3.n_obs, 2, 1280) and np.isfinite(emb).all()
    assert not np.allclose(emb[:, 0], emb[:, 1])  # the flipped view is a different input
    assert c3.uns["stem"]["patch_px"] in range(160, 165)
    assert "label" in ds.section("A1").obs
    # the neighbour graph the spatial context uses is stored (squidpy's keys); legacy ST: 8 within 1.5 pitch
    conn = c3.obsp["spatial_connectivities"]
    expect = [sorted(nb) for nb in ring_neighbours(raw.obsm["spatial"])]
    assert [sorted(conn[i].indices) for i in range(c3.n_obs)] == expect
    assert np.asarray(conn.sum(1)).max() == 8
    assert c3.uns["spatial_neighbors"]["distances_key"] == "spatial_distances"
    # the summary table is printed
    assert "C3" in res.stdout and "1280" in res.stdout


def test_rerun_reads_the_cache_and_refuses_to_clobber(prepared, tmp_path):
    shared, cache, _ = prepared
    out = tmp_path / "PREP"
    shutil.copytree(shared, out)  # the session's dataset stays as it is
    res = run_stem_here("prepare", "--data", HER2ST, "--sections", "C2,C3,A1", "--holdout", "A1",
                        "--views", "2", "--genes", "hmhvg:50", "--out", out, "--cache", cache, check=False)
    assert res.returncode == 2 and "already exists" in res.stderr
    before = open_prepared(out).embeddings("C2")
    res = run_stem_here("prepare", "--data", HER2ST, "--sections", "C2,C3,A1", "--holdout", "A1",
                        "--views", "2", "--genes", "hmhvg:50", "--out", out, "--overwrite", "--cache", cache)
    summary = json.loads((out / "manifest.json").read_text())["summary"]
    assert all(r["views_computed"] == 0 for r in summary)
    np.testing.assert_array_equal(open_prepared(out).embeddings("C2"), before)


def _mini_her2st(root: Path, section="C2") -> Path:
    """A HER2ST-layout copy of one section that tests may break."""
    d = root / "her2st" / "data"
    for sub in ("ST-cnts", "ST-spotfiles", f"ST-imgs/C/{section}"):
        (d / sub).mkdir(parents=True)
    shutil.copy(HER2ST / f"data/ST-cnts/{section}.tsv.gz", d / "ST-cnts")
    shutil.copy(HER2ST / f"data/ST-spotfiles/{section}_selection.tsv", d / "ST-spotfiles")
    img = next((HER2ST / f"data/ST-imgs/C/{section}").glob("*.jpg"))
    os.symlink(img, d / f"ST-imgs/C/{section}/{img.name}")
    return root / "her2st"


def _assert_refused(res, out: Path, match: str):
    """(Run in this process: `test_bad_inputs.test_entry_point_in_a_subprocess` checks that a separate
    `stem` process refuses the same way.)"""
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error:"), res.stderr
    assert "Traceback" not in res.stderr
    assert match in res.stderr, res.stderr
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def _prepare(data, out, *extra):
    return run_stem_here("prepare", "--data", data, "--sections", "C2", "--genes", "hmhvg:20",
                    "--out", out, "--no-cache", *extra, check=False)


def test_missing_spot_file(tmp_path):
    data = _mini_her2st(tmp_path)
    (data / "data/ST-spotfiles/C2_selection.tsv").unlink()
    _assert_refused(_prepare(data, tmp_path / "out"), tmp_path / "out", "spot file not found")


def test_spot_ids_that_do_not_join(tmp_path):
    data = _mini_her2st(tmp_path)
    path = data / "data/ST-spotfiles/C2_selection.tsv"
    spots = pd.read_csv(path, sep="\t")
    spots["x"] += 100
    spots.to_csv(path, sep="\t", index=False)
    _assert_refused(_prepare(data, tmp_path / "out"), tmp_path / "out", "joins")


def test_coordinates_outside_the_image(tmp_path):
    data = _mini_her2st(tmp_path)
    _assert_refused(_prepare(data, tmp_path / "out", "--image-scale", "3"), tmp_path / "out",
                    "outside")


def test_panel_with_absent_genes(tmp_path):
    data = _mini_her2st(tmp_path)
    genes = tmp_path / "genes.txt"
    genes.write_text("ERBB2\nNOT_A_GENE\n")
    res = run_stem_here("prepare", "--data", data, "--sections", "C2", "--genes", f"file:{genes}",
                        "--out", tmp_path / "out", "--no-cache", check=False)
    _assert_refused(res, tmp_path / "out", "absent")


def test_corrupt_image(tmp_path):
    data = _mini_her2st(tmp_path)
    link = next((data / "data/ST-imgs/C/C2").glob("*.jpg"))
    head = Path(os.readlink(link)).read_bytes()[:200_000]
    link.unlink()
    link.write_bytes(head)  # a truncated JPEG: the header reads, the pixels do not
    _assert_refused(_prepare(data, tmp_path / "out"), tmp_path / "out", "cannot decode image")


def test_bad_options(tmp_path):
    data = _mini_her2st(tmp_path)
    _assert_refused(_prepare(data, tmp_path / "o1", "--views", "9"), tmp_path / "o1", "--views")
    _assert_refused(_prepare(data, tmp_path / "o2", "--holdout", "C9"), tmp_path / "o2", "C9")
    _assert_refused(_prepare(data, tmp_path / "o3", "--encoder", "uni"), tmp_path / "o3",
                    "--weights PATH")


def test_precomputed_encoder_needs_no_image(tmp_path):
    data = _mini_her2st(tmp_path)
    c2 = read_section("her2st", data, "C2")
    np.save(tmp_path / "C2.npy", np.random.default_rng(0).normal(size=(c2.n_obs, 16)))
    shutil.rmtree(data / "data/ST-imgs")
    out = tmp_path / "out"
    run_stem_here("prepare", "--data", data, "--sections", "C2", "--genes", "hmhvg:20", "--out", out,
                  "--encoder", f"precomputed:{tmp_path}/{{section}}.npy")
    sec = open_prepared(out).section("C2")
    np.testing.assert_allclose(sec.obsm["embedding"][:, 0], np.load(tmp_path / "C2.npy"), rtol=1e-6)
    assert "embedding" not in ad.read_h5ad(out / "sections/C2.h5ad").obsm  # it lives in C2.embedding.npy


def test_atomic_path_keeps_the_old_output_when_writing_fails(tmp_path):
    from stem_st.atomic import atomic_path

    final = tmp_path / "out"
    final.mkdir()
    (final / "mine.txt").write_text("keep me")
    with pytest.raises(RuntimeError):
        with atomic_path(final, overwrite=True) as tmp:
            tmp.mkdir()
            raise RuntimeError("boom")
    assert (final / "mine.txt").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
