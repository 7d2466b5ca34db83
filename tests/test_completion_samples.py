"""`stem complete apply --num-samples K [--keep-samples]`: multiple imputation (K completions,
their per-entry sd in counts) and the viewer page of a completed file."""

from __future__ import annotations

import base64
import json
import re

import anndata as ad
import numpy as np
import pytest
from conftest import HER2ST
from test_bad_inputs import invoke

from stem_st.completion.draws import STD_DDOF
from stem_st.completion.model import CompletionSettings, LGDiST
from stem_st.completion.pipeline import fit_completion, read_counts
from stem_st.viewer import build_view

SAMPLER = "ddim:3"


@pytest.fixture(scope="module")
def comp(tmp_path_factory):
    """A tiny completion model fitted on HER2ST C1 (a few steps, 8 + 8 genes)."""
    out = tmp_path_factory.mktemp("comp") / "comp"
    s = CompletionSettings(ae_steps=20, dit_steps=30, batch_size=16, checkpoint_every=30, copies=1)
    fit_completion(str(HER2ST), "her2st", ["C1"], [], out, s, n_panel=8, n_total=16,
                   cfg_overrides={"ae_hidden": 16, "latent": 4, "dit_hidden": 16, "dit_depth": 1})
    return out


def _apply(comp, out, *extra) -> tuple[int, str]:
    return invoke(["complete", "apply", comp, "--sections", "C6", "--out", out, "--sampler", SAMPLER,
                   "--device", "cpu", *extra])


@pytest.fixture(scope="module")
def applied(comp, tmp_path_factory):
    out = tmp_path_factory.mktemp("done")
    code, err = _apply(comp, out, "--num-samples", "3", "--keep-samples")
    assert code == 0, err
    return out


def test_draws_and_their_sd_beside_the_point(comp, applied, tmp_path):
    a = ad.read_h5ad(applied / "C6_completed.h5ad")
    x, point, std = np.asarray(a.X, dtype=np.float32), a.layers["completed"], a.layers["completed_std"]
    measured = x > 0
    assert measured.any() and (~measured).any()
    assert (std[measured] == 0).all() and (std[~measured] > 0).any() and (std >= 0).all()
    info = a.uns["lgdist"]
    assert info["samples_file"] == "C6_completed.samples.npy" and "counts" in info["completed_std"]
    draws = np.load(applied / info["samples_file"])
    assert draws.shape == (a.n_obs, 3, a.n_vars) and draws.dtype == np.float32 and np.isfinite(draws).all()
    # measured entries are not imputed: every draw is the measured count, as is the point
    m3 = np.broadcast_to(measured[:, None], draws.shape)
    assert np.array_equal(draws[m3], np.broadcast_to(x[:, None], draws.shape)[m3])
    assert np.array_equal(draws.mean(1)[measured], point[measured])
    # completed_std is the draws' per-entry sd (ddof 1), in counts like layers['completed']
    assert STD_DDOF == 1 and "ddof 1" in info["completed_std"]
    assert np.allclose(draws.std(1, ddof=1), std, rtol=1e-5, atol=1e-6)
    assert (draws >= 0).all()
    # the draws differ from each other at completed zeros (independent sampler runs)
    assert not np.array_equal(draws[:, 0][~measured], draws[:, 1][~measured])
    # the point is the model's completion as without draws (K-sample posterior mean), not their mean
    model = LGDiST.load(comp)
    sec = read_counts(str(HER2ST), "her2st", ["C6"])["C6"]
    expect = model.complete(np.log1p(x), np.asarray(sec.obsm["spatial"], dtype=np.float64), 3, SAMPLER, 0, "cpu")
    assert np.allclose(point[~measured], np.expm1(expect)[~measured], rtol=1e-5, atol=1e-6)
    # the shipped draws are centred on that point (log1p units), where no draw was clipped at 0
    assert model.settings.point_source == "stage1" and model.settings.centre_draws
    free = ~measured & (draws > 0).all(1)
    assert free.any() and np.allclose(np.log1p(draws).mean(1)[free], expect[free], atol=1e-4)
    # without --keep-samples: the same layers, no draws file
    code, err = _apply(comp, tmp_path, "--num-samples", "3")
    assert code == 0, err
    b = ad.read_h5ad(tmp_path / "C6_completed.h5ad")
    assert np.array_equal(b.layers["completed"], point) and np.array_equal(b.layers["completed_std"], std)
    assert not (tmp_path / "C6_completed.samples.npy").exists() and "samples_file" not in b.uns["lgdist"]


def test_one_sample_has_no_sd_and_bad_options_are_one_line_errors(comp, applied, tmp_path):
    code, err = _apply(comp, tmp_path / "one", "--num-samples", "1")
    assert code == 0, err
    one = ad.read_h5ad(tmp_path / "one" / "C6_completed.h5ad")
    assert "completed_std" not in one.layers and "completed" in one.layers
    for extra, words in ((["--num-samples", "0"], "at least 1"),
                         (["--num-samples", "1", "--keep-samples"], "--keep-samples needs")):
        code, err = _apply(comp, tmp_path / "bad", *extra)
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "bad").exists()
    # an existing draws file is not replaced without --overwrite (and nothing else is written)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "C6_completed.samples.npy").write_bytes(b"keep")
    code, err = _apply(comp, tmp_path / "c", "--num-samples", "2", "--keep-samples")
    assert code == 2 and "already exists" in err and not (tmp_path / "c" / "C6_completed.h5ad").exists()
    assert (tmp_path / "c" / "C6_completed.samples.npy").read_bytes() == b"keep"
    code, err = _apply(comp, tmp_path / "c", "--num-samples", "2", "--keep-samples", "--overwrite")
    assert code == 0, err
    assert np.load(tmp_path / "c" / "C6_completed.samples.npy").shape[1] == 2


def test_the_viewer_shows_the_completion_and_its_sd(applied, tmp_path):
    a = ad.read_h5ad(applied / "C6_completed.h5ad")
    res = build_view(applied / "C6_completed.h5ad", tmp_path / "view.html")
    assert res["layers"] == "truth,prediction,std"
    html = (tmp_path / "view.html").read_text()
    data = json.loads(re.search(r'<script id="stem-data" type="application/json">(.*?)</script>', html,
                                re.S).group(1))
    assert data["units"] == "count" and data["layer_names"]["std"] == "sd over K completions"
    assert data["layer_names"]["prediction"] == "completed"

    def layer(k):  # genes × spots, float32 little-endian
        return np.frombuffer(base64.b64decode(data["layers"][k]), "<f4").reshape(a.n_vars, a.n_obs).T

    assert np.array_equal(layer("std"), a.layers["completed_std"])
    assert np.array_equal(layer("prediction"), a.layers["completed"])
    assert np.array_equal(layer("truth"), np.asarray(a.X, dtype=np.float32))
    (tmp_path / "prep").mkdir()
    code, err = invoke(["view", applied / "C6_completed.h5ad", "--truth", tmp_path / "prep",
                        "--out", tmp_path / "t.html"])
    assert code == 2 and "leave out --truth" in err
