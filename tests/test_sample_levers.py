"""Levers on Stem's samples: diffusion noise with the residuals' gene covariance
(``correlated_noise``), one spread factor per gene (``spread_per_gene``), the spread at three
levels (``spread_criterion=levels``) and the draws' common shift (``spread_common``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from synthetic import write_synthetic

from stem_st.data.dataset import open_prepared
from stem_st.diffusion import GaussianDiffusion
from stem_st.diffusion.noise import RowNoise
from stem_st.errors import StemError
from stem_st.recipe import RECIPES, get_recipe
from stem_st.stem import PredictSettings, StemModel, TrainSettings
from stem_st.training.targets import (
    SHAPE_LEVELS,
    TargetTransform,
    fit_targets,
    shape_deviations,
    spread_factor,
    spread_levels,
)


def _corr(draws: np.ndarray) -> np.ndarray:
    dev = (draws - draws.mean(1, keepdims=True)).reshape(-1, draws.shape[-1])
    return np.corrcoef(dev.T)


def test_coloured_row_noise_has_the_covariance_and_the_plain_draws():
    a = np.array([[1.0, 0.0, 0.0], [0.9, np.sqrt(1 - 0.81), 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    colour = torch.from_numpy(a.T.copy())
    plain = RowNoise(3, 0, 0, 4096, "cpu").randn((4096, 3))
    coloured = RowNoise(3, 0, 0, 4096, "cpu", colour).randn((4096, 3))
    torch.testing.assert_close(coloured, plain @ colour)  # same stream, only coloured
    cov = np.cov(coloured.numpy().T)
    np.testing.assert_allclose(cov, a @ a.T, atol=0.08)


def test_correlated_noise_is_fitted_from_the_residuals_and_needs_zscore():
    rng = np.random.default_rng(0)
    cond = rng.normal(size=(300, 6)).astype(np.float32)
    shared = rng.normal(size=(300, 1))  # a per-spot factor every gene follows (like depth)
    x = (3 + cond @ rng.normal(size=(6, 5)) + 0.8 * shared + rng.normal(0, 0.3, (300, 5))).astype(np.float32)
    groups = np.repeat(np.arange(3), 100)
    recipe = RECIPES["default"].with_options("correlated_noise=true")
    t, z = fit_targets(recipe, cond, x, groups, np.ones(300, bool))
    cov = t.noise_chol @ t.noise_chol.T
    off = cov[~np.eye(5, dtype=bool)]
    assert off.min() > 0.5 and np.allclose(np.diag(cov), 1.0, atol=0.1)
    plain, _ = fit_targets(RECIPES["default"], cond, x, groups, np.ones(300, bool))
    assert plain.noise_chol is None
    with pytest.raises(StemError, match="zscore"):
        get_recipe("paper", "correlated_noise=true")


def test_per_gene_spread_widens_the_narrow_gene_and_narrows_the_wide_one():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=(600, 2))
    samples = rng.normal(size=(600, 20, 2)) * np.array([0.4, 2.5])  # gene 0 too narrow, gene 1 too wide
    f = spread_factor(truth, samples, per_gene=True)
    assert f.shape == (2,) and f[0] > 1.5 and f[1] < 0.7
    m = samples.mean(1, keepdims=True)
    wide = m + f * (samples - m)
    lo, hi = np.quantile(wide, 0.1, axis=1), np.quantile(wide, 0.9, axis=1)
    cover = ((truth >= lo) & (truth <= hi)).mean(0)
    np.testing.assert_allclose(cover, 0.8, atol=0.02)
    assert spread_factor(truth, samples) >= 1.0  # the scalar factor only widens
    # the CRPS-optimal factor of a Gaussian ensemble is the one that matches the truth's width
    by_crps = spread_factor(truth, samples, np.zeros_like(truth), per_gene=True, criterion="crps")
    np.testing.assert_allclose(by_crps, 1 / np.array([0.4, 2.5]), rtol=0.15)
    assert 0.1 <= spread_factor(truth, samples[..., 1:], criterion="crps") < 0.7  # may narrow


def test_rank_spread_matches_the_truths_width_where_coverage_asks_wider():
    rng = np.random.default_rng(4)
    truth = rng.normal(size=(800, 6))
    samples = rng.normal(size=(800, 20, 6))  # drawn from the truth's own distribution
    assert spread_factor(truth, samples, criterion="rank") == pytest.approx(1.0, abs=0.06)
    assert spread_factor(truth, samples) > 1.12  # 20 empirical quantiles ask wider draws
    assert spread_factor(truth, 0.5 * samples, criterion="rank") == pytest.approx(2.0, abs=0.12)
    assert spread_factor(truth, 2.0 * samples, criterion="rank") == pytest.approx(0.5, abs=0.04)  # narrows
    per_gene = spread_factor(truth, samples * np.array([0.5, 1, 1, 1, 1, 2]), criterion="rank", per_gene=True)
    np.testing.assert_allclose(per_gene[[0, 5]], [2.0, 0.5], rtol=0.08)


def _coverage(truth: np.ndarray, samples: np.ndarray) -> list[float]:
    ends = [np.quantile(samples, [(1 - lv) / 2, (1 + lv) / 2], axis=1) for lv in SHAPE_LEVELS]
    return [float(((truth >= lo) & (truth <= hi)).mean()) for lo, hi in ends]


def test_three_level_spread_gives_heavy_tailed_truth_its_tails_and_keeps_the_draws_order():
    rng = np.random.default_rng(2)
    truth = rng.standard_t(3, size=(500, 40))  # heavier tailed than the Gaussian draws
    samples = rng.normal(size=(500, 20, 40))
    before = _coverage(truth, spread_factor(truth, samples) * samples)
    assert before[0] > 0.53 and before[2] < 0.92  # one factor: the middle too wide, the tails too thin
    f = spread_levels(truth, samples)
    assert f[0] < f[1] < f[2] and f[2] / f[1] > 1.2
    shaped = shape_deviations(samples - samples.mean(1, keepdims=True), f)
    np.testing.assert_allclose(_coverage(truth, shaped), SHAPE_LEVELS, atol=0.015)
    np.testing.assert_array_equal(np.argsort(shaped, axis=1), np.argsort(samples, axis=1))
    # a Gaussian truth: 20 draws' extreme quantiles still fall short, but far less than for t(3)
    gauss = spread_levels(rng.normal(size=(500, 40)), samples)
    assert gauss[2] / gauss[0] < 1.3 < f[2] / f[0]
    t = TargetTransform(*(np.zeros(40, np.float32) for _ in range(4)), spread=np.asarray(f[1], np.float32),
                        shape=(f / f[1]).astype(np.float32))
    back = TargetTransform.from_state(t.state())
    np.testing.assert_array_equal(back.shape, t.shape)
    np.testing.assert_allclose(back.widen(samples.astype(np.float32)),
                               samples.mean(1, keepdims=True) + f[1] * shaped / f[1], rtol=1e-4, atol=1e-5)
    with pytest.raises(StemError, match="levels"):
        get_recipe("default").with_options("spread_per_gene=true,spread_criterion=levels")


def test_common_shift_gives_the_draws_the_residuals_share_and_keeps_each_genes_width():
    from stem_st.training.spread import common_direction, common_share, fit_common, with_common

    rng = np.random.default_rng(3)
    sd = rng.uniform(0.5, 2.0, 30)
    v = common_direction(sd)
    depth = rng.normal(size=(400, 1)) * 0.6 / sd  # one log shift of every gene alike, in z units
    truth = depth + rng.normal(size=(400, 30))
    draws = rng.normal(size=(400, 20, 30)) * np.sqrt(1 + 0.36 / sd ** 2)  # as wide, genes independent
    assert common_share(draws - draws.mean(1, keepdims=True), v) < 0.5 * common_share(truth, v)
    common = fit_common(truth, draws, v)
    assert common[0] > 0.5
    shifted = with_common(draws - draws.mean(1, keepdims=True), common, v)
    assert common_share(shifted, v) == pytest.approx(common_share(truth - draws.mean(1), v), abs=0.03)
    dev = draws - draws.mean(1, keepdims=True)
    np.testing.assert_allclose((shifted ** 2).mean((0, 1)), (dev ** 2).mean((0, 1)), rtol=1e-3)
    assert fit_common(rng.normal(size=(400, 30)), draws, v)[0] < 0.3  # independent truth: ~ unchanged


@pytest.fixture(scope="module")
def correlated_run(tmp_path_factory):
    """A short fit with both levers; the training noise it drew is recorded."""
    tmp = tmp_path_factory.mktemp("levers")
    ds = open_prepared(write_synthetic(tmp / "prep", n=200))
    recipe = RECIPES["default"].with_options("correlated_noise=true,spread_per_gene=true")
    settings = TrainSettings(prep=str(ds.root), holdout=ds.holdout, preset="tiny", steps=20,
                             batch_size=64, aug_ratio=1, lr=1e-3, checkpoint_every=1000, recipe=recipe)
    seen, loss = [], GaussianDiffusion.training_loss

    def recording(self, model_fn, x0, t, noise, mask=None):
        seen.append(noise.detach().clone())
        return loss(self, model_fn, x0, t, noise, mask)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(GaussianDiffusion, "training_loss", recording)
        model, _ = StemModel.fit(ds, tmp / "run", settings, progress=False)
    return ds, model, tmp / "run", torch.cat(seen).numpy()


def _colour_corr(model) -> np.ndarray:
    cov = model.target.noise_chol @ model.target.noise_chol.T
    return cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov)))


def test_correlated_noise_and_gene_spreads_travel_with_the_run(correlated_run):
    _, model, run, _ = correlated_run
    loaded = StemModel.from_run(run)
    assert loaded.recipe.correlated_noise and loaded.target.noise_chol.shape == (len(model.genes),) * 2
    np.testing.assert_array_equal(loaded.target.noise_chol, model.target.noise_chol)
    assert loaded.target.spread.shape == (len(model.genes),)
    np.testing.assert_array_equal(loaded.target.spread, model.target.spread)
    assert model.meta["spread_calibrated_with"] == {"sampler": "dpm++:10", "num_samples": 20}


def test_training_and_sampling_draw_the_coloured_noise(correlated_run):
    """The noise the loss saw, and the noise handed to the sampler, have the colour's gene
    correlation; without the colour the sampler's noise has none."""
    ds, model, _, train_noise = correlated_run
    want = _colour_corr(model)
    iu = np.triu_indices(len(want), 1)
    assert np.abs(np.corrcoef(train_noise.T)[iu] - want[iu]).max() < 0.15
    assert np.abs(want[iu]).max() > 0.3  # the synthetic residuals do co-vary
    emb, xy = ds.embeddings("TA")[:, 0], np.asarray(ds.section("TA").obsm["spatial"])
    cond = model.condition(emb, xy)
    with pytest.MonkeyPatch.context() as mp:  # the sampler returns its starting noise x_T
        mp.setattr(model.diffusion, "sample", lambda fn, shape, sampler, noise, dev, **_: noise.randn(shape))
        got = _corr(model.draw_z(cond, PredictSettings(num_samples=32, sampler="ddim:2")))
        assert np.abs(got[iu] - want[iu]).max() < 0.15
        mp.setattr(model.target, "noise_chol", None)
        plain = _corr(model.draw_z(cond, PredictSettings(num_samples=32, sampler="ddim:2")))
    assert np.abs(plain[iu]).max() < 0.15
