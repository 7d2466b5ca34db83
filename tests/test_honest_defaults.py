"""Defaults that match what was measured and calibrated: the completion's draws, one training
section, augmentation capped by the prepared views, resume under a cosine schedule, devices."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import typer
from conftest import run_stem_here
from synthetic import write_synthetic

from stem_st.data.dataset import open_prepared
from stem_st.errors import StemError


def _options(*path):
    from stem_st.cli import app

    cmd = typer.main.get_command(app)
    for w in path:
        cmd = cmd.commands[w]
    return {p.name: p.default for p in cmd.params}


def test_complete_apply_draws_by_default_what_the_spread_was_calibrated_with():
    from stem_st.completion.draws import CALIBRATION_DRAWS, CALIBRATION_SAMPLER
    from stem_st.completion.pipeline import apply_completion

    for path in (("complete", "apply"), ("complete", "evaluate")):
        opts = _options(*path)
        assert (opts["num_samples"], opts["sampler"]) == (CALIBRATION_DRAWS, CALIBRATION_SAMPLER), path
    import inspect

    sig = inspect.signature(apply_completion).parameters
    assert (sig["num_samples"].default, sig["sampler"].default) == (CALIBRATION_DRAWS, CALIBRATION_SAMPLER)


def test_one_training_section_is_split_into_spatial_blocks_that_stand_in_for_sections(tmp_path):
    from stem_st.stem.validation import choose_section
    from stem_st.training.data import SPATIAL_BLOCKS, build_training_data

    ds = open_prepared(write_synthetic(tmp_path / "prep", n=200))
    data = build_training_data(ds, ["A"], aug_ratio=1, seed=0)
    try:
        assert data.groups == [f"A block {b + 1}" for b in range(SPATIAL_BLOCKS)]
        assert data.sections == ["A"]
        assert set(np.unique(data.group)) == set(range(SPATIAL_BLOCKS))
        assert np.all(np.diff(data.group) >= 0)  # each block's pairs are contiguous
        assert len(data) == 2 * data.n_spots == 400
        group = choose_section(data, "auto", 0)
        assert group is not None and 0 <= group < SPATIAL_BLOCKS
        assert choose_section(data, "A block 2", 0) == 1
    finally:
        data.close()
    two = build_training_data(ds, ["A", "B"], aug_ratio=1, seed=0)
    try:
        assert two.groups == ["A", "B"] and set(np.unique(two.group)) == {0, 1}
    finally:
        two.close()


def test_spatial_blocks_are_compact_regions():
    from stem_st.training.data import spatial_blocks

    xy = np.stack(np.meshgrid(np.arange(20.0), np.arange(20.0)), -1).reshape(-1, 2)
    block = spatial_blocks(xy, 4, seed=0)
    centres = np.stack([xy[block == b].mean(0) for b in range(4)])
    nearest = np.argmin(((xy[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    assert np.array_equal(nearest, block) and np.bincount(block).min() >= 80


def test_a_run_on_one_section_validates_and_calibrates_on_a_block_it_never_trained_on(tmp_path):
    from stem_st.recipe import get_recipe
    from stem_st.stem import StemModel, TrainSettings

    ds = open_prepared(write_synthetic(tmp_path / "prep", n=120))
    settings = TrainSettings(prep=str(ds.root), holdout=["B", "TA", "TB"], preset="tiny", steps=10,
                             batch_size=16, checkpoint_every=1000, val_every=10, recipe=get_recipe("default"))
    model, _ = StemModel.fit(ds, tmp_path / "run", settings, progress=False)
    val = model.meta["validation"]
    assert val["section"].startswith("A block ") and 0 < val["spots"] < 120
    assert model.meta["train_sections"] == ["A"] and model.target.spread is not None


def test_a_capped_augmentation_ratio_is_said_not_silent(tmp_path, caplog):
    from stem_st.training.data import build_training_data

    ds = open_prepared(write_synthetic(tmp_path / "prep", n=40))  # 2 views
    with caplog.at_level(logging.WARNING):
        data = build_training_data(ds, ["A", "B"], aug_ratio=4, seed=0)
    data.close()
    assert len(data.group) == 2 * 80
    assert "aug ratio 4 needs 5 prepared views" in caplog.text and "--views 5" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        build_training_data(ds, ["A", "B"], aug_ratio=1, seed=0).close()
    assert "aug ratio" not in caplog.text


def test_resume_with_other_steps_under_a_cosine_schedule_is_refused(tmp_path):
    prep = write_synthetic(tmp_path / "prep", n=40)
    train = ["train", prep, "--out", tmp_path / "run", "--holdout", "TA,TB", "--batch-size", "8",
             "--checkpoint-every", "5", "--recipe-set", "calibrate_spread=false", "--device", "cpu"]
    run_stem_here(*train, "--steps", "10")
    res = run_stem_here(*train, "--steps", "20", "--resume", check=False)
    assert res.returncode == 2 and "would stretch the run's cosine learning-rate schedule" in res.stderr
    assert "Traceback" not in res.stderr


def test_the_python_api_uses_a_gpu_when_there_is_one_as_the_commands_do():
    import inspect

    import stem_st as st
    from stem_st.devices import resolve_device

    assert st.PredictSettings().device == "auto"
    import stem_st.cli  # noqa: F401  (imports every submodule the commands use)
    from stem_st.api import embed, prepare

    assert callable(st.prepare) and callable(st.embed)  # no submodule of the same name shadows them
    for fn in (st.StemModel.fit, prepare, embed):
        assert inspect.signature(fn).parameters["device"].default == "auto", fn
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(StemError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(StemError, match="not available"):
            resolve_device("cuda:0")
