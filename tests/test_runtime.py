"""Prediction runtime: batch-independent noise, rows per forward measured per device, the padded
batch of a compiled network, and h5ad writing under pandas string arrays."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

from stem_st.atomic import write_h5ad
from stem_st.diffusion.noise import BLOCK_ROWS, RowNoise
from stem_st.encoders.scaling import EmbeddingScaler
from stem_st.errors import StemError
from stem_st.models import StemDiTConfig
from stem_st.recipe import RECIPES
from stem_st.stem import PredictSettings, StemModel
from stem_st.stem import runtime as rt


def test_row_noise_does_not_depend_on_the_split():
    whole = RowNoise(3, 0, 0, 200, "cpu")
    parts = [RowNoise(3, 0, 0, 128, "cpu"), RowNoise(3, 0, 128, 72, "cpu")]
    for _ in range(2):  # successive draws too
        a = whole.randn((200, 5))
        b = torch.cat([p.randn((p.rows, 5)) for p in parts])
        assert torch.equal(a, b)
    first = RowNoise(3, 0, 0, 64, "cpu").randn((64, 5))
    for seed, stream in ((3, 1), (4, 0)):  # another stream or seed: other numbers
        assert not torch.equal(RowNoise(seed, stream, 0, 64, "cpu").randn((64, 5)), first)
    with pytest.raises(StemError):
        RowNoise(3, 0, BLOCK_ROWS + 1, 10, "cpu")


def _model(recipe: str) -> tuple[StemModel, np.ndarray]:
    torch.manual_seed(0)
    cfg = StemDiTConfig(num_genes=12, cond_dim=8, hidden=16, depth=1, heads=2)
    emb = np.random.default_rng(0).normal(size=(30, 8)).astype(np.float32)
    m = StemModel(cfg, [f"g{i}" for i in range(12)], EmbeddingScaler.fit(emb), [],
                  recipe=RECIPES[recipe].with_options("context=none"))
    for p in m.net.parameters():  # away from the adaLN-zero start, so the network matters
        torch.nn.init.normal_(p, std=0.1)
    return m, emb


@pytest.mark.parametrize("recipe,sampler", [("paper", "ddpm:15"), ("default", "dpm++:5")])
def test_predictions_do_not_depend_on_rows_per_forward(recipe, sampler, monkeypatch):
    m, emb = _model(recipe)
    outs = []
    for rows in (64, 192, 1000):
        outs.append(m.predict(emb, settings=PredictSettings(num_samples=5, sampler=sampler, batch_rows=rows)))
    # a compiled network pads the short last batch to the full size (compile replaced by identity)
    monkeypatch.setattr(torch, "compile", lambda net, **kw: net)
    outs.append(m.predict(emb, settings=PredictSettings(num_samples=5, sampler=sampler, batch_rows=64,
                                                         compile=True)))
    assert outs[0][2].std() > 0
    for point, _, draws in outs[1:]:
        np.testing.assert_allclose(point, outs[0][0], atol=1e-5)
        np.testing.assert_allclose(draws, outs[0][2], atol=1e-5)
    other = m.predict(emb, settings=PredictSettings(num_samples=5, sampler=sampler, batch_rows=64, seed=1))[2]
    assert np.abs(other - outs[0][2]).max() > 1e-3  # the seed still matters


def _fake_device(rates: dict[int, float], oom_at: int | None = None):
    """call(n) and a clock under which n rows take n / rates[n] seconds."""
    state = {"now": 0.0, "calls": []}

    def call(n):
        if n == oom_at:
            raise torch.OutOfMemoryError("fake")
        state["calls"].append(n)
        state["now"] += n / rates[n]

    return call, (lambda: state["now"]), state


def test_measure_rows_picks_the_fastest_per_row():
    call, clock, _ = _fake_device({64: 1.0, 128: 2.0, 256: 3.0, 512: 2.5})
    assert rt.measure_rows(call, (64, 128, 256, 512), torch.device("cpu"), clock) == 256
    call, clock, state = _fake_device({64: 1.0, 128: 2.0, 256: 3.0, 512: 4.0}, oom_at=256)
    assert rt.measure_rows(call, (64, 128, 256, 512), torch.device("cpu"), clock) == 128
    assert 512 not in state["calls"]  # stops at the first size that does not fit


def test_runtime_measures_large_jobs_once_and_small_ones_not(monkeypatch):
    monkeypatch.setattr(rt, "_measured", {})
    call, clock, state = _fake_device({64: 1.0, 128: 3.0, 256: 2.0, 512: 1.0})
    real = rt.measure_rows
    monkeypatch.setattr(rt, "measure_rows", lambda c, cand, dev: real(c, cand, dev, clock))
    net = torch.nn.Linear(2, 2)
    r = rt.Runtime()
    assert r.rows(net, call, torch.device("cpu"), 100, 10) == rt.DEFAULT_ROWS["cpu"]
    assert state["calls"] == []
    big = rt.MEASURE_PAYBACK * 3 * sum(rt.CANDIDATE_ROWS["cpu"])
    assert r.rows(net, call, torch.device("cpu"), big, 1) == 128
    n_calls = len(state["calls"])
    assert r.rows(net, call, torch.device("cpu"), big, 1) == 128 and len(state["calls"]) == n_calls
    assert list(rt.measured_rows().values()) == [128]
    assert rt.Runtime(batch_rows=100).rows(net, call, torch.device("cpu"), big, 1) == 64  # a multiple of 64


def test_write_h5ad_writes_pandas_string_arrays(tmp_path):
    a = ad.AnnData(np.ones((2, 2), dtype=np.float32))
    a.obs["label"] = pd.array(["tumour", "stroma"], dtype="string")
    write_h5ad(a, tmp_path / "a.h5ad")
    assert list(ad.read_h5ad(tmp_path / "a.h5ad").obs["label"]) == ["tumour", "stroma"]
