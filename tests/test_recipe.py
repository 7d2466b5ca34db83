"""The "Make Stem win" levers: safe embedding scaling out of domain, target transforms, the
ridge prior, ring-1 context, objectives, and the recipe stored with every run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from synthetic import COND_A, write_synthetic

from stem_st.data.context import add_context, graph_matrices, ring_neighbours, store_graphs
from stem_st.data.dataset import open_prepared
from stem_st.data.images import open_image
from stem_st.data.patches import iter_patch_batches, patch_geometry
from stem_st.diffusion import GaussianDiffusion
from stem_st.encoders.scaling import EmbeddingScaler
from stem_st.errors import StemError
from stem_st.evaluation.baselines import BASELINES
from stem_st.evaluation.metrics import in_unit
from stem_st.models.ridge import RidgeProbe
from stem_st.recipe import RECIPES, Recipe, get_recipe
from stem_st.stem import PredictSettings, StemModel, TrainSettings
from stem_st.training.targets import fit_targets


@pytest.fixture(scope="module")
def c2_embeddings(c2, effnet):
    """Real EfficientNet-Lite0 embeddings of 48 HER2ST C2 spots."""
    info = c2.uns["stem"]
    geom = patch_geometry("hest", info["mpp"], info["spot_diameter_um"])
    with open_image(info["image_path"]) as img:
        _, crops = next(iter_patch_batches(img, c2.obsm["spatial"][:48], geom, batch_size=48))
    return effnet.embed(crops).numpy()


def test_constant_training_dimensions_cannot_blow_up_out_of_domain(c2_embeddings):
    emb = c2_embeddings.copy()
    train, test = emb[:32].copy(), emb[32:].copy()
    # the out-of-domain case: 19 dimensions are 0 in every training spot, switched on at test
    off = np.argsort(train.std(0))[-19:]
    train[:, off] = 0.0
    test[:, off] = np.abs(test[:, off]) + 1.0
    old = (test - train.mean(0)) / np.maximum(train.std(0), 1e-6)  # the previous standardisation
    assert np.abs(old).max() > 1e5
    scaler = EmbeddingScaler.fit(train)
    assert set(np.flatnonzero(~scaler.informative)) >= set(off)
    z = scaler.transform(test)
    assert np.isfinite(z).all() and np.abs(z).max() <= scaler.clip
    assert np.all(z[:, off] == 0)
    # a probe on these inputs predicts the same as if the dimensions had stayed off
    y = np.random.default_rng(0).normal(size=(32, 5)).astype(np.float32)
    probe = RidgeProbe(n_components=16).fit(scaler.transform(train), y)
    quiet = test.copy()
    quiet[:, off] = 0.0
    np.testing.assert_allclose(probe.predict(z), probe.predict(scaler.transform(quiet)), atol=1e-5)
    back = EmbeddingScaler.from_state(scaler.state())
    np.testing.assert_array_equal(back.transform(test), z)


def test_ring1_context_averages_the_right_neighbours():
    # a 3 × 3 square grid, pitch 10: the centre has 8 neighbours within 1.5 pitch, a corner 3
    xy = np.array([(x, y) for y in range(3) for x in range(3)], dtype=float) * 10
    nb = ring_neighbours(xy)
    assert sorted(nb[4]) == [0, 1, 2, 3, 5, 6, 7, 8]
    assert sorted(nb[0]) == [1, 3, 4]
    emb = np.arange(9, dtype=np.float32)[:, None] * np.array([[1.0, 10.0]], dtype=np.float32)
    out = add_context(emb, xy, "ring1")
    assert out.shape == (9, 4)
    np.testing.assert_allclose(out[:, :2], emb)
    np.testing.assert_allclose(out[0, 2:], emb[[1, 3, 4]].mean(0))
    np.testing.assert_allclose(out[4, 2:], emb[[0, 1, 2, 3, 5, 6, 7, 8]].mean(0))
    # a hexagonal patch: 6 neighbours at one pitch, nothing at √3 pitch
    hexa = np.array([(0, 0)] + [(np.cos(a), np.sin(a)) for a in np.arange(6) * np.pi / 3]
                    + [(np.sqrt(3), 0.0)])
    assert sorted(ring_neighbours(hexa)[0]) == [1, 2, 3, 4, 5, 6]
    # a lone spot is its own context; (spots, views, C) inputs work per view
    assert np.all(add_context(emb[:1, None], xy[:1], "ring1") == np.concatenate([emb[:1, None]] * 2, -1))
    with pytest.raises(StemError, match="coordinate"):
        add_context(emb, None, "ring1")


def test_stored_graphs_are_the_neighbourhoods_the_context_uses():
    import anndata as ad

    # a 3 × 3 square grid, pitch 10, and one far spot with no neighbours
    xy = np.array([(x, y) for y in range(3) for x in range(3)] + [(9, 9)], dtype=float) * 10
    a = ad.AnnData(np.zeros((10, 1), dtype=np.float32))
    a.obsm["spatial"] = xy
    store_graphs(a)
    conn, dist = a.obsp["spatial_connectivities"], a.obsp["spatial_distances"]
    for i, nb in enumerate(ring_neighbours(xy)):
        assert sorted(conn[i].indices) == sorted(nb)
    assert sorted(conn[4].indices) == [0, 1, 2, 3, 5, 6, 7, 8] and conn[9].nnz == 0
    assert dist[4, 0] == pytest.approx(10 * np.sqrt(2)) and dist[4, 1] == pytest.approx(10)
    assert (conn != conn.T).nnz == 0  # symmetric
    for i, nb in enumerate(ring_neighbours(xy, 2.5)):
        assert sorted(a.obsp["ring2_connectivities"][i].indices) == sorted(nb)
    assert a.uns["spatial_neighbors"]["connectivities_key"] == "spatial_connectivities"
    # the ring-1 context is the row-normalised graph times the embeddings (a lone spot: itself)
    emb = np.arange(20, dtype=np.float32).reshape(10, 2) ** 2
    rows = np.asarray(conn.sum(1)).ravel()
    expect = np.where(rows[:, None] > 0, conn @ emb / np.maximum(rows, 1)[:, None], emb)
    np.testing.assert_allclose(add_context(emb, xy, "ring1")[:, 2:], expect, rtol=1e-6)
    assert graph_matrices(xy[:1], 1.5)[0].shape == (1, 1)
    b = ad.AnnData(np.zeros((2, 1), dtype=np.float32))
    b.obsm["spatial"] = np.array([[0.0, 0.0], [np.nan, 1.0]])
    store_graphs(b)  # no graph for spots without a finite centre, and no error
    assert "spatial_connectivities" not in b.obsp


def test_ring2_context_adds_the_disc_of_radius_two_and_a_half_pitches():
    # a 5 × 5 square grid, pitch 10: the centre's 2.5-pitch disc holds every spot but the 4
    # corners (distance 2√2 ≈ 2.83 pitch), i.e. 20 spots
    xy = np.array([(x, y) for y in range(5) for x in range(5)], dtype=float) * 10
    emb = np.arange(25, dtype=np.float32)[:, None] ** 2
    out = add_context(emb, xy, "ring2")
    assert out.shape == (25, 3)
    np.testing.assert_allclose(out[:, :2], add_context(emb, xy, "ring1"))
    disc = [i for i in range(25) if i != 12 and i not in (0, 4, 20, 24)]
    np.testing.assert_allclose(out[12, 2], emb[disc].mean(), rtol=1e-6)
    # a corner's disc: (0,1),(0,2),(1,0),(1,1),(1,2),(2,0),(2,1) → 7 spots
    np.testing.assert_allclose(out[0, 2], emb[[1, 2, 5, 6, 7, 10, 11]].mean(), rtol=1e-6)


def test_zscored_residual_target_round_trips_exactly():
    rng = np.random.default_rng(0)
    cond = rng.normal(size=(120, 6)).astype(np.float32)
    x = np.clip(cond @ rng.normal(size=(6, 4)) + 3 + rng.normal(0, 0.5, (120, 4)), 0, None).astype(np.float32)
    groups = np.repeat(np.arange(3), 40)
    for recipe in (get_recipe("paper", "target=zscore"), RECIPES["default"]):
        t, z = fit_targets(recipe, cond, x, groups, np.ones(120, bool))
        prior = t.prior(cond)
        np.testing.assert_allclose(t.decode(t.encode(x, prior), prior), x, atol=2e-5)
        if recipe.prior == "none":
            assert not prior.any()
            np.testing.assert_allclose(t.decode(z, prior), x, atol=2e-5)
            np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
            np.testing.assert_allclose(z.std(0), 1, atol=1e-4)
        assert np.all(z >= t.lo - 1e-6) and np.all(z <= t.hi + 1e-6)
    # the cross-fitted prior of each section comes from a probe that never saw it
    t, z = fit_targets(RECIPES["default"], cond, x, groups, np.ones(120, bool))
    in_sample = t.prior(cond)
    assert not np.allclose(t.decode(z, in_sample) - x, 0)  # z was made with the cross-fitted prior
    paper, zp = fit_targets(RECIPES["paper"], cond, x, groups, np.ones(120, bool))
    assert np.array_equal(zp, x) and float(paper.hi[0]) == float(x.max()) and paper.lo[0] == 0


@pytest.mark.parametrize("objective", ["eps", "x0", "v"])
def test_objectives_recover_noise_and_data(objective):
    diff = GaussianDiffusion(1000, "linear", objective)
    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(16, 5, generator=gen), torch.randn(16, 5, generator=gen)
    t = torch.randint(1000, (16,), generator=gen)
    x_t = diff.q_sample(x0, t, noise)
    target, w = diff._target_and_weight(x0, noise, t)
    abar = torch.as_tensor(diff.chain.abar, dtype=torch.float32)[t][:, None]
    eps, x0_hat = diff.eps_x0(target, x_t, abar)
    torch.testing.assert_close(eps, noise, atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(x0_hat, x0, atol=2e-3, rtol=1e-3)
    # a perfect prediction has zero loss
    loss = diff.training_loss(lambda xt, tt: (target, None), x0, t, noise)["mse"]
    assert float(loss.max()) < 1e-10
    # min-SNR-5 in x_0 units: high-SNR steps are capped at weight 5
    capped = GaussianDiffusion(1000, "linear", objective, min_snr_gamma=5.0)
    _, wc = capped._target_and_weight(x0[:2], noise[:2], torch.tensor([0, 999]))
    snr = torch.as_tensor(diff.chain.abar[[0, 999]] / (1 - diff.chain.abar[[0, 999]]), dtype=torch.float32)
    x0_weight = wc.flatten() * {"eps": snr, "x0": torch.ones(2), "v": snr + 1}[objective]
    torch.testing.assert_close(x0_weight, torch.minimum(snr, torch.tensor(5.0)), rtol=1e-3, atol=1e-9)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("recipe")
    ds = open_prepared(write_synthetic(tmp / "prep", n=200))
    settings = TrainSettings(prep=str(ds.root), holdout=ds.holdout, preset="tiny", steps=30,
                             batch_size=64, aug_ratio=1, lr=1e-3, checkpoint_every=1000,
                             recipe=RECIPES["default"])
    model, _ = StemModel.fit(ds, tmp / "run", settings, progress=False)
    return ds, model, tmp / "run"


def test_residual_model_with_a_zero_network_returns_the_prior(default_run, monkeypatch):
    ds, model, _ = default_run
    monkeypatch.setattr(model.diffusion, "objective", "x0")  # a zero x0 network: x̂₀ = 0 at every step
    monkeypatch.setattr(model, "recipe", model.recipe.with_options("count_lattice=false"))  # continuous draws
    emb, xy = ds.embeddings("TA")[:, 0], np.asarray(ds.section("TA").obsm["spatial"])
    with torch.no_grad():
        model.net.head.weight.zero_()
        model.net.head.bias.zero_()
    prior = np.maximum(model.target.prior(model.condition(emb, xy)), 0)
    np.testing.assert_allclose(model.posterior_mean(emb, xy), prior, atol=1e-5)
    point, std, samples = model.predict(emb, xy, PredictSettings(num_samples=3, sampler="ddim:5"))
    np.testing.assert_allclose(point, prior, atol=1e-5)
    np.testing.assert_allclose(samples, np.repeat(prior[:, None], 3, 1), atol=1e-4)
    with pytest.raises(StemError, match="spot centres"):
        model.predict(emb, settings=PredictSettings(num_samples=1, sampler="ddim:2"))


def test_recipe_round_trips_through_the_checkpoint(default_run, tmp_path):
    ds, _, run = default_run
    model = StemModel.from_run(run)
    assert model.recipe == RECIPES["default"] and model.diffusion.objective == "v"
    emb, xy = ds.embeddings("TA")[:, 0], np.asarray(ds.section("TA").obsm["spatial"])
    model.save(tmp_path / "saved")
    back = StemModel.load(tmp_path / "saved")
    assert back.recipe == model.recipe
    np.testing.assert_array_equal(back.target.prior_weight, model.target.prior_weight)
    np.testing.assert_array_equal(back.posterior_mean(emb, xy), model.posterior_mean(emb, xy))
    assert Recipe.from_dict(model.recipe.to_dict()) == model.recipe


def test_old_runs_without_a_recipe_load_as_the_paper_recipe(default_run, tmp_path):
    ds, _, _ = default_run
    settings = TrainSettings(prep=str(ds.root), holdout=ds.holdout, preset="tiny", steps=5,
                             batch_size=16, aug_ratio=1, checkpoint_every=1000, recipe=RECIPES["paper"])
    model, _ = StemModel.fit(ds, tmp_path / "run", settings, progress=False)
    state = {k: v for k, v in model.extra_state().items() if k not in ("recipe", "target")}
    state.pop("cond_clip")
    state["x_max"] = 7.5
    torch.save({**state, "weights": model.net.state_dict()}, tmp_path / "model.pt")
    old = StemModel.load(tmp_path)
    assert old.recipe == RECIPES["paper"] and old.diffusion.objective == "eps"
    assert float(old.target.hi.max()) == 7.5 and float(old.target.lo.min()) == 0.0
    samples = old.sample(np.repeat(COND_A[None], 4, 0), settings=PredictSettings(num_samples=2, sampler="ddim:3"))
    assert samples.min() >= 0 and samples.max() <= 7.5 + 1e-5


def test_recipe_options_are_checked():
    r = get_recipe("paper", "target=zscore,min-snr-gamma=5,posterior_draws=4")
    assert r.target == "zscore" and r.min_snr_gamma == 5.0 and r.posterior_draws == 4
    for bad in ("target=zz", "nope=1", "min_snr_gamma=x", "point=posterior_mean"):
        with pytest.raises(StemError):
            get_recipe("paper", bad)
    with pytest.raises(StemError, match="unknown recipe"):
        get_recipe("fancy")


def test_context_baselines_use_the_neighbours(default_run):
    ds, _, _ = default_run
    emb, xy = ds.embeddings("TA")[:, 0], np.asarray(ds.section("TA").obsm["spatial"])
    ctx = BASELINES["ridge+ctx"]().fit(ds, ["A", "B"])
    assert ctx.name == "ridge+ctx" and ctx.scaler.dim == 2 * emb.shape[1]
    plain = BASELINES["ridge"]().fit(ds, ["A", "B"]).predict(emb)[0]
    with_ctx = ctx.predict(emb, xy)[0]
    assert with_ctx.shape == plain.shape and not np.allclose(with_ctx, plain)
    with pytest.raises(StemError, match="coordinate"):
        ctx.predict(emb)
    wide = BASELINES["ridge+ctx2"]().fit(ds, ["A", "B"])
    assert wide.scaler.dim == 3 * emb.shape[1] and wide.predict(emb, xy)[0].shape == plain.shape


def test_samples_centred_on_the_point_estimate(default_run):
    from dataclasses import replace

    ds, model, _ = default_run
    emb, xy = ds.embeddings("TA")[:, 0], np.asarray(ds.section("TA").obsm["spatial"])
    model = StemModel._from_state(model.extra_state(), model.net.state_dict())
    model.recipe = replace(model.recipe, centre_samples=True, count_lattice=False)  # continuous draws
    model.target.spread = np.asarray(1.5, dtype=np.float32)
    torch.manual_seed(0)  # an earlier test may have zeroed the shared fixture's head
    with torch.no_grad():
        model.net.head.weight.normal_(0, 0.5)
        model.net.head.bias.normal_(0, 0.5)
    free_model = StemModel._from_state(model.extra_state(), model.net.state_dict())
    free_model.recipe = replace(model.recipe, centre_samples=False)
    point, _, samples = model.predict(emb, xy, PredictSettings(num_samples=6, sampler="ddim:4", seed=3))
    _, _, free = free_model.predict(emb, xy, PredictSettings(num_samples=6, sampler="ddim:4", seed=3))
    cond = model.condition(emb, xy)
    z = model.target.encode(samples, model.target.prior(cond)[:, None])
    zf = free_model.target.encode(free, model.target.prior(cond)[:, None])
    positive = (samples > 0).all(1) & (free > 0).all(1)  # away from the clip at 0
    # same draws: identical deviations about their own means, only the centre moves …
    dev, devf = z - z.mean(1, keepdims=True), zf - zf.mean(1, keepdims=True)
    np.testing.assert_allclose(dev[np.repeat(positive[:, None], 6, 1)],
                               devf[np.repeat(positive[:, None], 6, 1)], atol=1e-4)
    # … to the reported point estimate
    np.testing.assert_allclose(samples.mean(1)[positive], point[positive], atol=1e-4)
    assert not np.allclose(free.mean(1)[positive], point[positive], atol=1e-3)
    with pytest.raises(StemError, match="centre_samples needs"):
        Recipe(centre_samples=True)


def test_depth_normalised_unit():
    counts = np.array([[0, 10, 30], [0, 1, 3], [0, 0, 0]], dtype=float)
    out = in_unit(np.log2(1 + counts), "cp10k")
    # two spots with the same composition at 10x different depth become identical
    np.testing.assert_allclose(out[0], out[1], atol=1e-5)
    np.testing.assert_allclose(out[0], np.log2(1 + np.array([0, 2500, 7500])), atol=1e-4)
    assert np.all(out[2] == 0)


def test_train_cli_stores_the_chosen_recipe_and_refuses_bad_options(default_run, tmp_path):
    import json

    from conftest import run_stem_here as run_stem

    ds, _, _ = default_run
    run_stem("train", ds.root, "--out", tmp_path / "paper", "--recipe", "paper", "--preset", "tiny",
             "--steps", 2, "--batch-size", 8, "--device", "cpu")
    saved = json.loads((tmp_path / "paper" / "config.json").read_text())
    assert saved["recipe"] == RECIPES["paper"].to_dict()
    assert StemModel.from_run(tmp_path / "paper").recipe == RECIPES["paper"]
    run_stem("train", ds.root, "--out", tmp_path / "tuned", "--recipe-set", "residual_weight=0.25",
             "--preset", "tiny", "--steps", 2, "--batch-size", 8, "--device", "cpu")
    tuned = StemModel.from_run(tmp_path / "tuned").recipe
    assert tuned.residual_weight == 0.25 and tuned.prior == "ridge"
    bad = run_stem("train", ds.root, "--out", tmp_path / "bad", "--recipe-set", "objective=q",
                   "--steps", 2, check=False)
    assert bad.returncode == 2 and "error: recipe: unknown objective 'q'" in bad.stdout + bad.stderr
    assert "Traceback" not in bad.stdout + bad.stderr and not (tmp_path / "bad").exists()


def test_spread_calibration_reaches_the_interval_level_and_is_stored(default_run):
    from stem_st.training.targets import spread_factor

    rng = np.random.default_rng(0)
    truth = rng.normal(size=(400, 6))
    narrow = rng.normal(scale=0.4, size=(400, 10, 6))
    s = spread_factor(truth, narrow)
    assert 2.0 < s < 4.0

    def coverage(f):
        m = narrow.mean(1, keepdims=True)
        w = m + f * (narrow - m)
        lo, hi = np.quantile(w, 0.1, axis=1), np.quantile(w, 0.9, axis=1)
        return ((truth >= lo) & (truth <= hi)).mean()

    assert coverage(s) >= 0.8 > coverage(s - 0.02)
    # the default recipe calibrates after training, and the factor travels with the run
    _, model, run = default_run
    assert model.target.spread is not None and float(model.target.spread) >= 1.0
    assert float(StemModel.from_run(run).target.spread) == float(model.target.spread)


def test_condition_dropout_and_guidance_formula():
    from stem_st.diffusion.guidance import drop_condition, guided, null_rows
    from stem_st.models import StemDiT, StemDiTConfig

    gen = torch.Generator().manual_seed(0)
    before = gen.get_state()
    assert null_rows(64, 0.0, gen) is None and torch.equal(gen.get_state(), before)  # draws nothing
    null = null_rows(20000, 0.25, gen)
    assert abs(null.float().mean().item() - 0.25) < 0.01
    cond = torch.randn(20000, 5, generator=gen) + 3
    dropped = drop_condition(cond, null)
    assert (dropped[null] == 0).all() and torch.equal(dropped[~null], cond[~null])
    assert drop_condition(cond, None) is cond

    torch.manual_seed(0)
    net = StemDiT(StemDiTConfig(num_genes=6, cond_dim=5, hidden=16, depth=1, heads=2, learn_sigma=True))
    with torch.no_grad():  # leave the adaLN-Zero start, where the output ignores the condition
        for p in net.parameters():
            p.normal_(0, 0.3)
    x, t, c = torch.randn(4, 6), torch.tensor([0, 10, 500, 999]), torch.randn(4, 5)
    with torch.no_grad():
        out_c, v_c = net(x, t, c)
        out_u, _ = net(x, t, torch.zeros_like(c))
        plain, g0 = guided(net, c, 0.0)(x, t), guided(net, c, 2.0)(x, t)
    assert not torch.allclose(out_c, out_u)
    assert torch.equal(plain[0], out_c)
    torch.testing.assert_close(g0[0], 3 * out_c - 2 * out_u)
    torch.testing.assert_close(g0[1], v_c)  # the variance output stays the conditional one
    with pytest.raises(StemError, match="guidance needs"):
        Recipe(guidance=1.0)
    with pytest.raises(StemError, match="cond_dropout"):
        get_recipe("default", "cond_dropout=1")
    r = get_recipe("default", "cond_dropout=0.1,guidance=0.5")
    assert Recipe.from_dict(r.to_dict()) == r
    assert Recipe.from_dict({"target": "zscore"}).guidance == 0.0  # a run from before guidance


def test_guidance_reaches_the_sampler(default_run):
    """The sampler combines the network's conditional and null-condition outputs by the recipe's
    scale: z_s = (1 + s) z_c − s z_u wherever the x̂₀ clamp does not bind."""
    from dataclasses import replace

    ds, model, _ = default_run
    model = StemModel._from_state(model.extra_state(), model.net.state_dict())
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.net.parameters():
            p.normal_(0, 0.05)
    cond = model.condition(ds.embeddings("TA")[:, 0], np.asarray(ds.section("TA").obsm["spatial"]))
    base = replace(model.recipe, cond_dropout=0.1, posterior_draws=1)

    def z(c, s):
        model.recipe = replace(base, guidance=s)
        return model.draw_z(c, PredictSettings(seed=7), point=True)[:, 0]

    z_c, z_u, z_g = z(cond, 0.0), z(np.zeros_like(cond), 0.0), z(cond, 1.5)
    lo, hi = (v.numpy() for v in model.target.clip_range())
    inside = np.all([(a > lo + 1e-4) & (a < hi - 1e-4) for a in (z_c, z_u, z_g)], axis=0)
    assert inside.mean() > 0.2 and not np.allclose(z_c, z_g)
    np.testing.assert_allclose(z_g[inside], (2.5 * z_c - 1.5 * z_u)[inside], rtol=1e-4, atol=1e-4)
