"""Training that watches its samples: a validation section, its proper scores in loss.csv, the
best state kept and used, the spread calibrated on it (stem_st.stem.validation)."""

from __future__ import annotations

import csv
import math
import re

import numpy as np
import pytest
import torch
from synthetic import write_synthetic

from stem_st.data.dataset import open_prepared
from stem_st.errors import StemError
from stem_st.recipe import get_recipe
from stem_st.stem import StemModel, TrainSettings
from stem_st.training.checkpoint import load_latest
from stem_st.training.loop import VAL_COLUMNS


def _settings(ds, **kw) -> TrainSettings:
    base = dict(prep=str(ds.root), holdout=["TB"], preset="tiny", steps=30, batch_size=32, aug_ratio=1, lr=2e-3,
                checkpoint_every=1000, val_every=10, recipe=get_recipe("default"))
    return TrainSettings(**{**base, **kw})


@pytest.fixture(scope="module")
def validated(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("validated")
    ds = open_prepared(write_synthetic(tmp / "prep", n=120))
    model, result = StemModel.fit(ds, tmp / "run", _settings(ds), progress=False)
    return ds, model, result, tmp / "run"


def test_a_validated_run_records_the_scores_of_its_samples(validated):
    _, model, _, run = validated
    with open(run / "loss.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["val"]]
    assert [int(r["step"]) for r in rows] == [10, 20, 30]
    for r in rows:
        figures = [float(r[k]) for k in ("val", *VAL_COLUMNS) if r.get(k)]
        assert len(figures) == 1 + len(VAL_COLUMNS)
        assert all(math.isfinite(v) and v > 0 for v in figures)
    # the atypical section (B: another condition) is never the validation section
    assert model.meta["validation"]["section"] in ("A", "TA")
    ref = model.meta["validation"]["reference"]
    # the score is the energy and variogram scores relative to the reference forecast's
    for r in rows:
        expect = float(r["val_energy"]) / ref["energy"] + float(r["val_variogram"]) / ref["variogram"]
        assert float(r["val"]) == pytest.approx(expect, rel=1e-6)


def test_the_best_state_is_kept_calibrated_on_the_validation_section_and_predicted_with(validated):
    _, model, _, run = validated
    with open(run / "loss.csv") as fh:
        vals = {int(r["step"]): float(r["val"]) for r in csv.DictReader(fh) if r["val"]}
    best = min(vals, key=vals.get)
    assert model.meta["validation"]["best_step"] == best
    ck, _ = load_latest(run / "best")
    assert ck["selected"] and int(ck["step"]) == best
    assert model.meta["spread_calibrated_on"] == model.meta["validation"]["section"]
    loaded = StemModel.from_run(run)
    assert loaded.meta["step"] == best
    for name, w in loaded.net.state_dict().items():
        torch.testing.assert_close(w, ck["ema"]["model"][name])
    np.testing.assert_allclose(loaded.target.spread, model.target.spread)
    if best != 30:  # the last checkpoint holds other weights
        last, _ = load_latest(run)
        assert any(not torch.equal(last["ema"]["model"][k], v) for k, v in ck["ema"]["model"].items())


def test_without_validation_the_last_state_is_kept(tmp_path):
    ds = open_prepared(write_synthetic(tmp_path / "prep", n=60))
    model, result = StemModel.fit(ds, tmp_path / "run", _settings(ds, validation="none", steps=10,
                                  recipe=get_recipe("default", "calibrate_spread=false")), progress=False)
    assert "validation" not in model.meta and not (tmp_path / "run" / "best").exists()
    assert all(not r.get("val") for r in result.losses)


def test_an_unknown_validation_section_is_refused(tmp_path):
    ds = open_prepared(write_synthetic(tmp_path / "prep", n=40))
    with pytest.raises(StemError, match="not a training section"):
        StemModel.fit(ds, tmp_path / "run", _settings(ds, validation="TB"), progress=False)


def test_condition_noise_is_a_recipe_option_and_must_be_non_negative():
    assert get_recipe("default", "cond_noise=1").cond_noise == 1.0
    with pytest.raises(StemError, match="cond_noise"):
        get_recipe("default", "cond_noise=-1")


def test_an_unknown_validation_section_is_refused_by_stem_train_before_the_run_folder_exists(tmp_path):
    from conftest import run_stem_here

    prep = write_synthetic(tmp_path / "prep", n=40)
    res = run_stem_here("train", prep, "--out", tmp_path / "run", "--holdout", "TB", "--validation", "TB",
                        "--device", "cpu", check=False)
    assert res.returncode == 2 and "--validation TB is not a training section" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "run").exists()


def test_neighbour_targets_come_from_look_alike_training_pairs_only():
    from types import SimpleNamespace

    from stem_st.training.pairs import neighbour_table

    rng = np.random.default_rng(0)
    # two far-apart clusters of conditions; rows 0-9 are the validation section's (not in ``rows``)
    inputs = np.concatenate([rng.normal(0, 1, (30, 8)), rng.normal(50, 1, (30, 8))]).astype(np.float32)
    store = SimpleNamespace(rows=lambda idx: inputs[np.asarray(idx)])
    data = type("Data", (), {"inputs": store, "__len__": lambda self: len(inputs)})()
    pairs = SimpleNamespace(data=data, scaler=SimpleNamespace(transform=lambda a: a))
    rows = np.arange(10, 60)
    table = neighbour_table(pairs, rows, k=5, seed=0).numpy()
    assert table.shape == (60, 5)
    assert (table[:10] == np.arange(10)[:, None]).all()  # outside ``rows``: itself only
    assert np.isin(table[10:], rows).all()  # never a validation pair
    assert all(i in table[i] for i in rows)  # itself included
    assert ((table[10:30] < 30).all() and (table[30:] >= 30).all())  # the same cluster
    assert get_recipe("default", "neighbour_targets=16").neighbour_targets == 16
    with pytest.raises(StemError, match="neighbour_targets"):
        get_recipe("default", "neighbour_targets=1")


def test_stem_train_shows_progress_through_validation_and_the_spread_calibration(tmp_path):
    from conftest import run_stem_here

    prep = write_synthetic(tmp_path / "prep", n=40)
    res = run_stem_here("train", prep, "--out", tmp_path / "run", "--holdout", "TB", "--preset", "tiny",
                        "--steps", "4", "--batch-size", "8", "--val-every", "2", "--device", "cpu")
    out = " ".join(res.stdout.split())
    assert "train" in out and "4/4" in out
    # the calibration after the last step is a phase of its own, with its size and a bar
    spots = StemModel.from_run(tmp_path / "run").meta["validation"]["spots"]
    done = spots * 21  # 20 samples and the point each
    assert re.search(rf"calibrate the spread \({spots} spots × 20 samples\) \S+ {done}/{done}", out), out


def test_a_validated_run_fits_its_noise_field_on_the_validation_section(validated):
    _, model, _, run = validated
    fit = model.spatial
    assert fit["section"] == model.meta["validation"]["section"]
    assert len(fit["target"]) == 3 and 0.0 <= fit["rho"] <= 1.0
    # the synthetic spots are scattered at random with independent residuals: little to share
    assert max(fit["target"]) < 0.15
    assert StemModel.from_run(run).spatial == fit


def test_three_levels_and_the_common_shift_are_calibrated_and_travel_into_the_draws(validated):
    """calibrate_spread with spread_criterion=levels and spread_common on a validated run: the
    shape is non-decreasing about the 80 % factor, the common shift is fitted, and the draws'
    50/80/95 % intervals hold their levels on the section they were calibrated on."""
    import copy
    from dataclasses import replace

    from stem_st.data.units import log2_expression
    from stem_st.stem import PredictSettings
    from stem_st.stem.fit import calibrate_spread
    from stem_st.training.data import section_counts

    ds, trained, _, _ = validated
    model = copy.deepcopy(trained)
    sec = model.meta["validation"]["section"]
    xy = np.asarray(ds.section(sec).obsm["spatial"])
    cond = model.condition(ds.embeddings(sec)[:, 0], xy)
    z = model.target.encode(log2_expression(section_counts(ds, sec)), model.target.prior(cond))
    settings = PredictSettings(seed=0, device="cpu", spatial_noise=False)
    model.recipe = replace(model.recipe, count_lattice=False)  # the levels are calibrated on continuous draws
    before = model.sample(ds.embeddings(sec)[:, 0], xy, settings)
    model.recipe = replace(model.recipe, spread_criterion="levels", spread_common=True)
    calibrate_spread(model, cond, z, np.zeros(len(z), dtype=int), settings)
    shape, common = model.target.shape, model.target.common
    assert shape.shape == (3,) and shape[1] == 1 and np.all(np.diff(shape) >= 0)
    assert common.shape == (1 + len(model.genes),) and -0.9 <= common[0] <= 4
    after = model.sample(ds.embeddings(sec)[:, 0], xy, settings)
    assert not np.allclose(after, before)
    truth = log2_expression(section_counts(ds, sec))
    held = [((truth >= lo) & (truth <= hi)).mean()
            for lo, hi in (np.quantile(after, [(1 - lv) / 2, (1 + lv) / 2], axis=1) for lv in (0.5, 0.8, 0.95))]
    np.testing.assert_allclose(held, [0.5, 0.8, 0.95], atol=0.05)  # each level where it was calibrated
