"""SIGKILL mid-run and corrupt checkpoints: reruns finish from what was saved, and the result
equals an uninterrupted run's; a damaged checkpoint is reported and skipped, never used."""

from __future__ import annotations

import csv
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import HER2ST, run_stem_here
from synthetic import write_synthetic

from stem_st.data.dataset import open_prepared
from stem_st.errors import StemError
from stem_st.training.checkpoint import list_checkpoints, load_latest, save_checkpoint

STEM = [sys.executable, "-m", "stem_st.cli"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", "OMP_NUM_THREADS": "1"}


def _env() -> dict:
    """ENV as of now (with the session's embedding cache, which conftest sets after import)."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", "OMP_NUM_THREADS": "1"}


def run_here_one_thread(*args) -> subprocess.CompletedProcess:
    """``stem <args>`` in this process on one thread, as the subprocesses here run (OMP_NUM_THREADS=1),
    so an uninterrupted run here and a killed one there compute the same numbers."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_stem_here(*args)
    finally:
        torch.set_num_threads(threads)


def kill_when(args: list, ready, timeout: float = 300, env=None) -> None:
    """Start ``stem <args>`` and SIGKILL it as soon as ``ready()`` holds (it must not finish first)."""
    proc = subprocess.Popen([*STEM, *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env or _env())
    t0 = time.monotonic()
    while not ready():
        assert proc.poll() is None, f"finished before it could be killed: {proc.stderr.read().decode()[-500:]}"
        assert time.monotonic() - t0 < timeout
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def losses(run_dir: Path) -> list[tuple[int, float]]:
    with open(run_dir / "loss.csv") as fh:
        return [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(fh)]


@pytest.mark.slow
def test_train_killed_mid_run_resumes_to_the_same_weights(tmp_path):
    prep = write_synthetic(tmp_path / "prep", n=200)
    train = ["train", prep, "--preset", "tiny", "--steps", "200", "--batch-size", "16", "--aug-ratio", "1",
             "--checkpoint-every", "20", "--device", "cpu", "--recipe-set", "calibrate_spread=false"]
    run_here_one_thread(*train, "--out", tmp_path / "straight")
    ckdir = tmp_path / "killed" / "checkpoints"
    kill_when([*train, "--out", tmp_path / "killed"], lambda: (ckdir / "step_00000060.pt.sha256").exists())
    saved = [int(p.name[5:13]) for p in list_checkpoints(tmp_path / "killed")]
    assert saved and max(saved) < 200
    res = run_here_one_thread(*train, "--out", tmp_path / "killed", "--resume")
    # it went on from the last checkpoint written before the kill: at most one interval lost
    # (the log may wrap the long path anywhere: compare without whitespace)
    assert f"resumed{tmp_path / 'killed'}atstep{max(saved)}".replace(" ", "") in "".join(res.stderr.split())
    la, lb = losses(tmp_path / "straight"), losses(tmp_path / "killed")
    assert [s for s, _ in la] == [s for s, _ in lb] == list(range(10, 201, 10))
    np.testing.assert_allclose([v for _, v in lb], [v for _, v in la], rtol=1e-5)
    a, _ = load_latest(tmp_path / "straight")
    b, _ = load_latest(tmp_path / "killed")
    assert a["step"] == b["step"] == 200
    for k, v in a["ema"]["model"].items():
        torch.testing.assert_close(v, b["ema"]["model"][k], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_prepare_killed_mid_run_finishes_from_the_cache(tmp_path, embedding_cache, monkeypatch):
    args = ["prepare", "--data", HER2ST, "--sections", "C2,C3", "--genes", "hmhvg:20", "--views", "1",
            "--device", "cpu"]
    # the uninterrupted reference: embedded once per session (the shared cache), not again here
    run_stem_here(*args, "--out", tmp_path / "clean")
    # the killed run's own cache holds C3 (copied from the session's) but not C2, which it embeds
    cache = tmp_path / "cache"
    shutil.copytree(embedding_cache / "C3", cache / "C3")
    env = {**_env(), "STEM_ST_CACHE": str(cache)}
    out = tmp_path / "prep"
    cached = lambda: any((cache / "C2").rglob("*.json"))  # noqa: E731 - C2 embedded and cached
    kill_when([*args, "--out", out], cached, env=env)
    assert not out.exists()  # nothing under the final name; the hidden temporary is left aside
    monkeypatch.setenv("STEM_ST_CACHE", str(cache))
    run_here_one_thread(*args, "--out", out)
    summary = {r["section"]: r["views_computed"] for r in open_prepared(out).manifest["summary"]}
    assert summary["C2"] == 0 and summary["C3"] == 0  # C2 from what the killed run cached
    clean, again = open_prepared(tmp_path / "clean"), open_prepared(out)
    assert clean.genes == again.genes
    for s in ("C2", "C3"):
        np.testing.assert_allclose(again.embeddings(s), clean.embeddings(s), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(again.section(s).X, clean.section(s).X)


@pytest.mark.parametrize("damage", ["flip", "cut"])
def test_a_damaged_checkpoint_is_reported_and_the_previous_one_used(tmp_path, caplog, damage):
    for step in (10, 20, 30):
        save_checkpoint({"step": step, "w": torch.full((1000,), float(step))}, tmp_path, step)
    newest = list_checkpoints(tmp_path)[-1]
    raw = bytearray(newest.read_bytes())
    if damage == "flip":  # a few bytes inside the tensor data: the file still unzips
        i = raw.rindex(np.float32(30.0).tobytes())
        raw[i:i + 4] = np.float32(31.0).tobytes()
    else:
        raw = raw[: len(raw) // 2]
    newest.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING):
        ck, path = load_latest(tmp_path)
    assert ck["step"] == 20 and path.name == "step_00000020.pt"
    assert "corrupt" in caplog.text and newest.name in caplog.text
    for p in list_checkpoints(tmp_path):
        p.write_bytes(b"")
    with pytest.raises(StemError, match="no checkpoint"):
        load_latest(tmp_path)


@pytest.mark.parametrize("damage", ["flip", "cut", "no-json"])
def test_a_damaged_embedding_cache_entry_is_reported_and_recomputed(tmp_path, caplog, damage):
    from stem_st.encoders.cache import EmbeddingCache

    cache, prov = EmbeddingCache(tmp_path), {"section": "C2", "view": "identity"}
    arr = np.random.default_rng(0).normal(size=(50, 16)).astype(np.float32)
    cache.put("C2", prov, arr)
    np.testing.assert_array_equal(cache.get("C2", prov), arr)
    path = next(tmp_path.rglob("*.npy"))
    raw = bytearray(path.read_bytes())
    if damage == "flip":
        raw[-7] ^= 0xFF
        path.write_bytes(bytes(raw))
    elif damage == "cut":
        path.write_bytes(bytes(raw[: len(raw) // 2]))
    else:
        path.with_suffix(".json").unlink()
    with caplog.at_level(logging.WARNING):
        assert cache.get("C2", prov) is None
    assert "damaged" in caplog.text and path.name in caplog.text


def test_training_resumes_past_a_corrupt_last_checkpoint(tmp_path):
    """``--resume`` with a damaged newest checkpoint restarts from the one before, and predicts."""
    prep = write_synthetic(tmp_path / "prep", n=120)
    train = ["train", prep, "--out", tmp_path / "run", "--preset", "tiny", "--batch-size", "16",
             "--checkpoint-every", "10", "--device", "cpu", "--recipe", "paper"]
    run_stem_here(*train, "--steps", "30")
    newest = list_checkpoints(tmp_path / "run")[-1]
    newest.write_bytes(newest.read_bytes()[:-100])
    res = run_stem_here(*train, "--steps", "40", "--resume")
    assert "corrupt" in res.stderr and "resumed" in res.stderr and "at step 20" in " ".join(res.stderr.split())
    assert [s for s, _ in losses(tmp_path / "run")][-1] == 40


@pytest.mark.slow
def test_complete_fit_killed_in_stage_two_resumes_to_the_same_model(tmp_path):
    fit = ["complete", "fit", "--data", HER2ST, "--train", "A2", "--val", "B1", "--panel", "8", "--total", "24",
           "--ae-steps", "40", "--dit-steps", "120", "--checkpoint-every", "20", "--batch-size", "16",
           "--ae-hidden", "16", "--latent", "4", "--dit-hidden", "16", "--dit-depth", "1", "--copies", "2",
           "--rounds", "2", "--device", "cpu"]
    run_here_one_thread(*fit, "--out", tmp_path / "straight")
    killed = tmp_path / "killed"
    mark = killed / "dit" / "checkpoints" / "step_00000060.pt.sha256"
    kill_when([*fit, "--out", killed], mark.exists)
    assert not (killed / "dit2").exists() and not (killed / "fit.json").exists()
    run_here_one_thread(*fit, "--out", killed, "--resume")
    for stage in ("ae", "dit", "dit2"):
        a, _ = load_latest(tmp_path / "straight" / stage / "best")
        b, _ = load_latest(killed / stage / "best")
        assert a["best"] == b["best"]  # the same validation scores chose the same step
        for k, v in a["ema"]["model"].items():
            torch.testing.assert_close(v, b["ema"]["model"][k], rtol=1e-5, atol=1e-6)
