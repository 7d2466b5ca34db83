"""Stem is a conditional generative model: one-to-many, sampler agreement, exact resume,
checkpoints and prediction files."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import anndata as ad
import numpy as np
import pytest
import torch
from conftest import run_stem_here
from synthetic import COND_A, COND_B, MODE1, MODE2, write_synthetic

from stem_st.data.dataset import open_prepared
from stem_st.diffusion import GaussianDiffusion
from stem_st.diffusion.schedules import make_schedule, respace
from stem_st.errors import StemError
from stem_st.recipe import RECIPES
from stem_st.stem import PredictSettings, StemModel, TrainSettings

TINY = {"hidden": 64, "depth": 2, "heads": 2}
STEPS = 600  # enough for the two modes at lr 1e-3 (checked: the one-to-many test passes)


def _is_mode1(samples: np.ndarray) -> np.ndarray:
    d1 = ((samples - MODE1) ** 2).sum(-1)
    d2 = ((samples - MODE2) ** 2).sum(-1)
    return d1 < d2


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stem")
    ds = open_prepared(write_synthetic(tmp / "prep"))
    settings = TrainSettings(prep=str(ds.root), holdout=ds.holdout, preset="tiny", steps=STEPS,
                             batch_size=256, aug_ratio=1, lr=1e-3, ema_decay=0.999,
                             checkpoint_every=500, recipe=RECIPES["paper"])
    model, result = StemModel.fit(ds, tmp / "run", settings, progress=False)
    return ds, model, result, tmp


def _cond(c, n=400):
    return np.repeat(c[None], n, axis=0).astype(np.float32)


def test_loss_falls(trained):
    _, _, result, _ = trained
    losses = [float(r["loss"]) for r in result.losses]
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5])


def test_one_to_many(trained):
    _, model, _, _ = trained
    a = model.sample(_cond(COND_A), settings=PredictSettings(num_samples=1, sampler="ddim:50", seed=1))[:, 0]
    b = model.sample(_cond(COND_B), settings=PredictSettings(num_samples=1, sampler="ddim:50", seed=2))[:, 0]
    # samples sit on the modes, in the training proportions
    near = np.minimum(np.abs(a - MODE1).max(-1), np.abs(a - MODE2).max(-1))
    assert np.mean(near < 1.5) > 0.9
    assert abs(_is_mode1(a).mean() - 0.3) <= 0.10
    assert _is_mode1(b).mean() < 0.05


def test_ddpm_and_ddim_agree(trained):
    _, model, _, _ = trained
    ddpm = model.sample(_cond(COND_A, 200),  # all 1000 steps: the slowest sampler
                        settings=PredictSettings(num_samples=1, sampler="ddpm", seed=3))[:, 0]
    ddim = model.sample(_cond(COND_A, 200),
                        settings=PredictSettings(num_samples=1, sampler="ddim:50", seed=4))[:, 0]
    assert np.abs(ddpm.mean(0) - ddim.mean(0)).max() < 0.6  # modes are 5 apart
    assert abs(_is_mode1(ddpm).mean() - _is_mode1(ddim).mean()) < 0.12


def test_respacing_keeps_the_trained_marginals():
    full = make_schedule("linear", 1000)
    short = respace(full, 50)
    assert short.num_steps == 50 and short.timesteps[0] == 0 and short.timesteps[-1] == 999
    np.testing.assert_allclose(short.alphas_cumprod, full.alphas_cumprod[short.timesteps])


def test_inpainting_keeps_known_entries_fixed():
    diff = GaussianDiffusion(100, "cosine")
    known = torch.randn(4, 7, 3)
    mask = torch.zeros(4, 7, 1, dtype=torch.bool)
    mask[:, 0] = True  # only the centre token is generated

    def model_fn(x, t):
        assert torch.equal(x[:, 1:], known[:, 1:])  # neighbours are clean at every step
        return torch.zeros_like(x), None

    out = diff.sample(model_fn, known.shape, "ddim:10", known=known, mask=mask)
    assert torch.equal(out[:, 1:], known[:, 1:]) and not torch.equal(out[:, 0], known[:, 0])


@pytest.mark.parametrize("sampler", ["ddim:10", "ddpm:10"])
def test_clipping_x0_keeps_a_wild_model_in_the_data_range(sampler):
    diff = GaussianDiffusion(1000, "linear")

    def wild(x, t):  # an ε far off the data manifold
        return -50 * torch.ones_like(x), None

    gen = torch.Generator().manual_seed(0)
    free = diff.sample(wild, (64, 5), sampler, generator=gen)
    clipped = diff.sample(wild, (64, 5), sampler, generator=gen, clip_x0=(0.0, 8.0))
    assert free.abs().max() > 100
    # the last step returns the clipped x_0 prediction (ddim) or its posterior mean (ddpm)
    assert clipped.min() >= -0.5 and clipped.max() <= 8.5


def test_exact_resume(tmp_path):
    ds = open_prepared(write_synthetic(tmp_path / "prep", n=100))
    # a constant learning rate: under a cosine schedule, extending --steps changes the schedule
    base = dict(prep=str(ds.root), holdout=ds.holdout, preset="tiny", batch_size=32,
                aug_ratio=1, checkpoint_every=1000, recipe=RECIPES["paper"])
    _, straight = StemModel.fit(ds, tmp_path / "a", TrainSettings(steps=20, **base), progress=False)
    StemModel.fit(ds, tmp_path / "b", TrainSettings(steps=10, **base), progress=False)
    resumed, res_b = StemModel.fit(ds, tmp_path / "b", TrainSettings(steps=20, **base),
                                   resume=True, progress=False)
    la = [float(r["loss"]) for r in straight.losses]
    lb = [float(r["loss"]) for r in res_b.losses]
    assert len(la) == len(lb) == 2
    np.testing.assert_allclose(la, lb, rtol=1e-5)
    with open(tmp_path / "b" / "loss.csv") as fh:
        assert [int(r["step"]) for r in csv.DictReader(fh)] == [10, 20]
    a = StemModel.from_run(tmp_path / "a")
    for pa, pb in zip(a.net.state_dict().values(), resumed.net.state_dict().values()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


def test_checkpoint_round_trip(trained, tmp_path):
    _, model, _, tmp = trained
    model.save(tmp_path / "saved")
    back = StemModel.load(tmp_path / "saved")
    assert back.genes == model.genes and back.net_cfg == model.net_cfg
    np.testing.assert_array_equal(back.scaler.mean, model.scaler.mean)
    assert back.recipe == model.recipe
    x1 = model.sample(_cond(COND_A, 10), settings=PredictSettings(num_samples=2, sampler="ddim:5", seed=7))
    x2 = back.sample(_cond(COND_A, 10), settings=PredictSettings(num_samples=2, sampler="ddim:5", seed=7))
    np.testing.assert_array_equal(x1, x2)
    run = StemModel.from_run(tmp / "run")
    assert run.meta["step"] == STEPS and run.meta["weights"] == "ema"
    with pytest.raises(StemError, match="do not match"):
        model.condition(np.zeros((3, 5), dtype=np.float32))


def test_predict_cli_writes_the_documented_file(trained, tmp_path):
    ds, _, _, tmp = trained
    out = tmp_path / "TA_pred.h5ad"
    cmd = ["predict", tmp / "run", "--sections", "TA", "--num-samples", "5", "--sampler", "ddim:20",
           "--keep-samples", "--summary", "median", "--out", out, "--device", "cpu"]
    run_stem_here(*cmd)
    pred = ad.read_h5ad(out)
    truth = ds.section("TA")
    assert list(pred.obs_names) == list(truth.obs_names) and list(pred.var_names) == ds.genes
    assert pred.layers["std"].shape == pred.shape and (pred.layers["std"] >= 0).all()
    np.testing.assert_array_equal(pred.obsm["spatial"], truth.obsm["spatial"])
    meta = pred.uns["stem"]
    assert meta["units"] == "log2(1 + count)" and meta["num_samples"] == 5
    assert meta["sampler"] == "ddim:20" and meta["summary"] == "median" and meta["step"] == STEPS
    samples = np.load(tmp_path / meta["samples_file"])
    assert samples.shape == (pred.n_obs, 5, len(ds.genes))
    np.testing.assert_allclose(pred.X, np.median(samples, axis=1), rtol=1e-5)
    np.testing.assert_allclose(pred.layers["std"], samples.std(axis=1), rtol=1e-4, atol=1e-5)
    # a second run refuses to overwrite
    res = run_stem_here(*cmd, check=False)
    assert res.returncode == 2 and "already exists" in res.stderr


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_matches_one_process(tmp_path):
    """torchrun with 2 Gloo processes splits each global batch and averages gradients: the
    loss trace and weights equal a single-process run."""
    prep = write_synthetic(tmp_path / "prep", n=100)
    common = ["train", str(prep), "--preset", "tiny", "--steps", "20", "--batch-size", "32",
              "--aug-ratio", "1", "--device", "cpu"]
    from test_kill_resume import run_here_one_thread

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run_here_one_thread(*common, "--out", str(tmp_path / "one"))  # one process: this one, on one thread
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=2", "-m", "stem_st.cli", *common,
                          "--out", str(tmp_path / "two")], capture_output=True, text=True, env=env)
    assert two.returncode == 0, two.stderr[-2000:]

    def losses(run):
        with open(tmp_path / run / "loss.csv") as fh:
            return [float(r["loss"]) for r in csv.DictReader(fh)]

    np.testing.assert_allclose(losses("one"), losses("two"), rtol=1e-4)
    a, b = StemModel.from_run(tmp_path / "one"), StemModel.from_run(tmp_path / "two")
    for pa, pb in zip(a.net.state_dict().values(), b.net.state_dict().values()):
        torch.testing.assert_close(pa, pb, rtol=1e-3, atol=1e-5)


def test_pickled_model_needs_explicit_opt_in(trained, tmp_path):
    _, model, _, _ = trained
    (tmp_path / "p").mkdir()
    torch.save(model, tmp_path / "p" / "model.pt")  # a whole pickled object
    with pytest.raises(StemError, match="opt in"):
        StemModel.load(tmp_path / "p")
    back = StemModel.load(tmp_path / "p", allow_pickle=True)
    assert back.genes == model.genes


def test_a_prepared_dataset_of_another_panel_or_encoder_is_refused(trained):
    from dataclasses import dataclass

    ds, model, _, _ = trained
    model.require_compatible(ds)  # the dataset it was trained on

    @dataclass
    class Other:  # what require_compatible reads of a prepared dataset
        genes: list
        manifest: dict
        root: str = "other"

    with pytest.raises(StemError, match="gene panel"):
        model.require_compatible(Other(ds.genes[::-1], ds.manifest))
    other_encoder = [{**p, "weights": "another-checkpoint"} for p in ds.manifest["encoders"]]
    with pytest.raises(StemError, match="encoder"):
        model.require_compatible(Other(ds.genes, {**ds.manifest, "encoders": other_encoder}))


def test_predict_settings_are_checked_and_recorded():
    with pytest.raises(StemError, match="--num-samples"):
        PredictSettings(num_samples=0)
    with pytest.raises(StemError, match="summary"):
        PredictSettings(summary="average")
    s = PredictSettings(num_samples=3, sampler="ddim:4", seed=5, device="cpu", batch_rows=128)
    assert s.provenance() == {"num_samples": 3, "sampler": "ddim:4", "summary": None, "seed": 5,
                              "compile": False, "shift_widening": True, "depth": 1.0, "spatial_noise": True}
    with pytest.raises(StemError, match="--depth"):
        PredictSettings(depth=0)
    assert s.runtime().batch_rows == 128 and s.runtime().bf16
    with pytest.raises(AttributeError):  # frozen: nothing is changed on the way down
        s.seed = 1


def test_count_lattice_puts_every_draw_on_a_measurable_value_and_keeps_the_mean(trained):
    from dataclasses import replace

    from stem_st.data.units import log2_expression

    _, model, _, _ = trained
    settings = PredictSettings(num_samples=20, sampler="ddim:10", seed=3)
    recipe = model.recipe
    try:
        model.recipe = replace(recipe, count_lattice=False)
        plain = model.sample(_cond(COND_A, 200), settings=settings)
        model.recipe = replace(recipe, count_lattice=True)
        lattice = model.sample(_cond(COND_A, 200), settings=settings)
    finally:
        model.recipe = recipe
    counts = np.exp2(lattice.astype(np.float64)) - 1
    np.testing.assert_allclose(lattice, log2_expression(np.round(counts)), atol=1e-5)
    assert not np.allclose(plain, log2_expression(np.round(np.exp2(plain) - 1)), atol=1e-3)
    np.testing.assert_allclose(lattice.mean((0, 1)), plain.mean((0, 1)), atol=0.03)  # the draws keep their mean
