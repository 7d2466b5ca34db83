"""Completion as a distribution: the sampled baselines, centring and spreading LGDiST's draws,
what stage 2 is conditioned on and learns, and the stage-1 point."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from stem_st.completion import baselines as bl
from stem_st.completion import fit as fit_mod
from stem_st.completion.draws import centred, fit_spread, model_draws, raw_draws
from stem_st.completion.inputs import mask_section, stack
from stem_st.completion.model import CompletionSettings, LGDiST
from stem_st.errors import StemError
from stem_st.models.lgdist import LGDiSTConfig


def _hex_grid(rows=4, cols=4, pitch=100.0):
    return np.array([(c * pitch + (pitch / 2 if r % 2 else 0), r * pitch * np.sqrt(3) / 2)
                     for r in range(rows) for c in range(cols)])


def test_residual_bootstrap_resamples_each_genes_own_residuals():
    truth = np.array([[2.0, 1.0], [3.0, 1.0], [4.0, 1.0], [9.0, 9.0]])
    point = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    hidden = np.array([[True, True], [True, False], [True, False], [False, False]])
    res = bl.residuals(truth, point, hidden)
    assert [r.tolist() for r in res] == [[1.0, 2.0, 3.0], [1.0]]
    merged = bl.merge_residuals([res, bl.residuals(truth, point + 1, hidden)])
    assert sorted(merged[0].tolist()) == [0.0, 1.0, 1.0, 2.0, 2.0, 3.0] and merged[1].tolist() == [1.0, 0.0]
    draws = bl.bootstrap_draws(np.array([[5.0, 5.0], [0.0, 0.0]]), res, 200, np.random.default_rng(0), min_count=2)
    assert draws.shape == (2, 200, 2)
    assert set(np.unique(draws[0, :, 0] - 5.0)) == {1.0, 2.0, 3.0}  # gene 0: its own residuals
    assert set(np.unique(draws[0, :, 1] - 5.0)) == {1.0, 2.0, 3.0}  # gene 1 (1 < 2 residuals): all genes'
    neg = bl.bootstrap_draws(np.zeros((1, 1)), [np.array([-1.0, 2.0])], 50, np.random.default_rng(1), 1)
    assert set(np.unique(neg).tolist()) == {0.0, 2.0}  # clipped at 0
    with pytest.raises(StemError):
        bl.bootstrap_draws(np.zeros((1, 2)), [np.array([]), np.array([])], 3, np.random.default_rng(0))


def test_gaussian_draws_have_the_residuals_root_mean_square():
    res = [np.array([3.0, -4.0]), np.array([1.0]), np.array([2.0, 2.0, 2.0])]
    sd = bl.residual_sd(res, min_count=2)
    everything = np.sqrt(np.mean(np.array([3.0, -4.0, 1.0, 2.0, 2.0, 2.0]) ** 2))
    assert sd == pytest.approx([np.sqrt(12.5), everything, 2.0])
    d = bl.gaussian_draws(np.full((400, 3), 50.0), sd, 50, np.random.default_rng(0))
    assert d.shape == (400, 50, 3)
    assert d.std(axis=(0, 1)) == pytest.approx(sd, rel=0.03) and d.mean(axis=(0, 1)) == pytest.approx(50, abs=0.1)
    assert (bl.gaussian_draws(np.zeros((5, 3)), sd, 4, np.random.default_rng(0)) >= 0).all()


def test_knn_draws_are_the_nearest_spots_in_expression_space():
    rng = np.random.default_rng(0)
    # two tight clusters of 12 spots each, far apart in expression
    values = np.concatenate([rng.normal(1.0, 0.01, (12, 5)), rng.normal(5.0, 0.01, (12, 5))]).astype(np.float32)
    xy = rng.random((24, 2)) * 1000
    d = bl.knn_draws(values, xy, k=8)
    assert d.shape == (24, 8, 5)
    assert (np.abs(d[:12] - 1.0) < 0.1).all() and (np.abs(d[12:] - 5.0) < 0.1).all()
    # the spot itself is never one of its draws
    assert not any((d[i] == values[i]).all(-1).any() for i in range(24))
    assert np.allclose(bl.knn_smoothing(values, xy), bl.knn_draws(values, xy, k=6).mean(1))


def test_centred_draws_and_the_fitted_spread():
    rng = np.random.default_rng(0)
    draws = 10 + rng.normal(size=(50, 20, 3))
    point = np.full((50, 3), 12.0)
    c = centred(draws, point, 0.5)
    assert np.allclose(c.mean(1), point, atol=1e-5)
    assert np.allclose(c - c.mean(1, keepdims=True), 0.5 * (draws - draws.mean(1, keepdims=True)), atol=1e-5)
    assert np.allclose(centred(draws, None, 1.0), draws, atol=1e-5)
    assert (centred(draws - 20, None, 1.0) >= 0).all()  # log1p values stay ≥ 0
    # draws twice too narrow: the fitted spread widens them about twice
    truth = 10 + 2.0 * rng.normal(size=(400, 5))
    narrow = 10 + rng.normal(size=(400, 40, 5))
    hidden = rng.random((400, 5)) < 0.5
    for target in ("coverage80", "CRPS"):
        s, rows = fit_spread(truth, narrow, hidden, target=target)
        assert 1.7 < s < 2.4, (target, s)
        assert len(rows) > 10 and all({"spread", "coverage80"} <= set(r) for r in rows)
        # CRPS where it was needed: every grid point for the CRPS target, the chosen one for coverage
        with_crps = [r["spread"] for r in rows if "CRPS" in r]
        assert with_crps == ([r["spread"] for r in rows] if target == "CRPS" else [s])
    with pytest.raises(StemError):
        fit_spread(truth, narrow, np.zeros_like(hidden))


def _tiny(**settings) -> LGDiST:
    torch.manual_seed(0)
    cfg = LGDiSTConfig(num_genes=6, ae_hidden=16, ae_layers=1, latent=4, dit_hidden=16, dit_depth=1, dit_heads=2)
    m = LGDiST(cfg, ["a", "b"], ["c", "d", "e", "f"], np.zeros(6), CompletionSettings(**settings))
    with torch.no_grad():  # adaLN-Zero starts the DiT at zero output: give it weights that use the input
        for p in m.dits[0].parameters():
            p.normal_(0.0, 0.3)
    return m


def _section(n=16):
    rng = np.random.default_rng(0)
    values = ((rng.random((n, 6)) > 0.3) * rng.gamma(2.0, 1.0, (n, 6))).astype(np.float32)
    return values, _hex_grid()


@pytest.mark.parametrize("condition", ["neighbours", "neighbourhood"])
def test_stage_two_sees_the_centre_latent_only_when_conditioned_on_the_neighbourhood(condition):
    m = _tiny(condition=condition)
    seen = []
    inner = m.dits[0].forward

    def spy(z, t, cond):
        seen.append(cond.clone())
        return inner(z, t, cond)

    m.dits[0].forward = spy
    values, xy = _section()
    base = m.diffusion_completion(values, xy, 2, "ddim:3")
    centre_zero = all(torch.equal(c[:, 0], torch.zeros_like(c[:, 0])) for c in seen)
    assert centre_zero == (condition == "neighbours") and seen
    # an isolated spot (no neighbours): its own values reach stage 2's point only through the condition
    xy_far = xy.copy()
    xy_far[3] += 1e5
    a = m.diffusion_completion(values, xy_far, 2, "ddim:3", seed=1)
    changed = values.copy()
    changed[3, 2:] += 5.0  # context genes of spot 3
    b = m.diffusion_completion(changed, xy_far, 2, "ddim:3", seed=1)
    assert np.array_equal(a[3], b[3]) == (condition == "neighbours")
    assert base.shape == values.shape


def test_a_noised_centre_reaches_the_condition_at_training_and_at_every_draw(monkeypatch):
    sd = 0.7
    m = _tiny(condition="neighbourhood", centre_noise=sd)
    seen = []
    inner = m.dits[0].forward

    def spy(z, t, cond):
        seen.append(cond.clone())
        return inner(z, t, cond)

    m.dits[0].forward = spy
    values, xy = _section()
    data = stack([mask_section(values, xy, 2, "median")], m.gene_means)
    known = m.normalise(m.encode(data), 0) * data.present.unsqueeze(-1)
    m.predict_round(data, 0, 1, "ddim:3", seed=4, device="cpu")
    cond = seen[-1]
    assert torch.equal(cond[:, 1:], known[:, 1:])  # neighbours clean
    gap = cond[:, 0] - known[:, 0]  # the centre: its own latent plus sd × standard normal noise
    assert abs(float(gap.std()) - sd) < 0.25 and float(gap.abs().min()) > 0
    a = m.diffusion_completion(values, xy, 2, "ddim:3", seed=4)
    assert np.array_equal(a, m.diffusion_completion(values, xy, 2, "ddim:3", seed=4))  # seeded
    assert not np.array_equal(a, m.diffusion_completion(values, xy, 2, "ddim:3", seed=5))
    # training: fresh noise on the centre token of the condition, the neighbours clean
    captured = {}

    def training_loss(model_fn, x0, t, noise, mask=None):
        captured["out"] = model_fn(x0, t)
        return {"loss": x0.sum() * 0}

    monkeypatch.setattr(m.diffusion, "training_loss", training_loss)
    loss = fit_mod._dit_loss(m, known, known[:, 0], 8, torch.device("cpu"))
    loss(m.dits[0], torch.Generator().manual_seed(0), torch.Generator().manual_seed(1), slice(None))
    rows = torch.randint(len(known), (8,), generator=torch.Generator().manual_seed(0))
    assert torch.equal(seen[-1][:, 1:], known[rows][:, 1:])
    assert float((seen[-1][:, 0] - known[rows][:, 0]).abs().min()) > 0


def test_settings_are_frozen_and_centre_noise_is_not_negative():
    from dataclasses import FrozenInstanceError

    s = CompletionSettings()
    with pytest.raises(FrozenInstanceError):
        s.spread = 2.0  # type: ignore[misc]
    assert replace(s, spread=2.0).spread == 2.0 and s.spread == 1.0
    with pytest.raises(StemError, match="centre-noise"):
        CompletionSettings(condition="neighbourhood", centre_noise=-1.0).check()
    assert CompletionSettings.from_dict({"objective": "x0"}).centre_noise == 0.0


@pytest.mark.parametrize("target", ["input", "complete"])
def test_stage_two_learns_the_latent_of_the_complete_target_when_asked(target, monkeypatch):
    m = _tiny(dit_target=target, train_masking="dropout")
    values, xy = _section()
    sec = mask_section(values, xy, 2, "median", "dropout", np.random.default_rng(3))
    assert sec.hidden.any()
    tr = stack([sec], m.gene_means)
    z_in = m.normalise(m.encode(tr), 0)
    z_full = m.normalise(m.encode(tr.with_values(tr.target)), 0)
    assert not torch.allclose(z_in[:, 0], z_full[:, 0])
    goal = z_in[:, 0] if target == "input" else z_full[:, 0]
    captured = {}

    def training_loss(model_fn, x0, t, noise, mask=None):
        captured["x0"] = x0
        return {"loss": x0.sum() * 0}

    monkeypatch.setattr(m.diffusion, "training_loss", training_loss)
    loss = fit_mod._dit_loss(m, z_in, goal, 8, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    rows = torch.randint(len(z_in), (8,), generator=torch.Generator().manual_seed(0))
    loss(m.dits[0], gen, torch.Generator().manual_seed(1), slice(None))
    x0 = captured["x0"]
    assert torch.equal(x0[:, 1:], z_in[rows][:, 1:])  # neighbour tokens: the input latents
    assert torch.equal(x0[:, 0], goal[rows])  # centre token: what stage 2 learns
    assert torch.equal(x0[:, 0], z_full[rows][:, 0]) == (target == "complete")


def test_stage_one_point_with_draws_centred_on_it():
    m = _tiny(point_source="stage1", centre_draws=True, spread=0.5)
    values, xy = _section()
    point = m.complete(values, xy, 2, "ddim:3")
    assert np.array_equal(point, m.complete(values, xy, diffusion=False))
    assert not np.array_equal(point, m.diffusion_completion(values, xy, 2, "ddim:3"))
    raw = raw_draws(m, values, xy, 4, "ddim:3", 0)
    d = model_draws(m, values, xy, 4, "ddim:3", 0)
    assert d.shape == (16, 4, 6)
    assert np.allclose(d, centred(raw, point, 0.5), atol=1e-6)
    inside = (d > 0).all(1)  # no clipping there: the draws' mean is the point
    assert inside.any() and np.allclose(d.mean(1)[inside], point[inside], atol=1e-5)
    m.settings = replace(m.settings, centre_draws=False, spread=1.0)
    assert np.allclose(model_draws(m, values, xy, 4, "ddim:3", 0), raw)


def test_calibrate_spread_sets_the_settings_spread_from_hidden_validation_entries(monkeypatch):
    import stem_st.completion.draws as draws_mod

    m = _tiny(centre_draws=True)
    values, xy = _section()
    sec = mask_section(values, xy, 2, "median", "dropout", np.random.default_rng(3))
    monkeypatch.setattr(draws_mod, "CALIBRATION_DRAWS", 6)
    monkeypatch.setattr(draws_mod, "CALIBRATION_SAMPLER", "ddim:3")
    out = draws_mod.calibrate_spread(m, [sec])
    assert out["spread"] == m.settings.spread and out["draws"] == 6 and out["centred"]
    raw = raw_draws(m, sec.observed, xy, 6, "ddim:3", 0)[:, :, :2]
    point = m.complete(sec.observed, xy, 4, "ddim:3")[:, :2]
    want = fit_spread(values[:, :2], raw, sec.hidden[:, :2], point)[0]
    assert out["spread"] == want
    # the hidden entries' truth is their measured value
    assert np.array_equal(sec.target[:, :2][sec.hidden[:, :2]], values[:, :2][sec.hidden[:, :2]])


def test_models_saved_before_the_new_settings_keep_their_behaviour():
    old = CompletionSettings.from_dict({"objective": "x0", "point": "posterior_mean", "unknown_field": 1})
    assert (old.condition, old.dit_target, old.point_source, old.centre_draws, old.spread) == \
        ("neighbours", "input", "diffusion", False, 1.0)
    new = CompletionSettings()
    assert new.point_source == "stage1" and new.centre_draws
    assert CompletionSettings.from_dict({"point_source": "stage1", "spread": 2.5}).spread == 2.5
    with pytest.raises(StemError, match="condition"):
        CompletionSettings(condition="centre").check()
