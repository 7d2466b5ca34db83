"""LGDiST completion: neighbourhoods, Moran's I, masking, baselines, sampler, CLI end to end."""

from __future__ import annotations

import csv
import json

import anndata as ad
import numpy as np
import pytest
import torch
from conftest import HER2ST
from conftest import run_stem_here as run_stem

from stem_st.completion.baselines import adaptive_median, knn_smoothing, neighbour_mean
from stem_st.completion.fit import training_copies
from stem_st.completion.genes import knn_weights, morans_i
from stem_st.completion.inputs import mask_section, prefilled
from stem_st.completion.masking import dropout_rates, hide_probabilities, masked_scores, sample_hidden
from stem_st.completion.model import CompletionSettings, LGDiST
from stem_st.completion.neighbours import neighbourhoods
from stem_st.completion.pipeline import complete_masked
from stem_st.models.lgdist import LGDiSTConfig
from stem_st.training.loop import LoopConfig, train_loop


def _hex_grid(rows=5, cols=5, pitch=100.0):
    return np.array([(c * pitch + (pitch / 2 if r % 2 else 0), r * pitch * np.sqrt(3) / 2)
                     for r in range(rows) for c in range(cols)])


def test_neighbourhoods_on_a_hand_made_hex_grid():
    xy = _hex_grid()
    idx, present = neighbourhoods(xy)
    centre = 2 * 5 + 2  # row 2, column 2: an interior spot with 6 neighbours
    assert present[centre].all() and idx[centre, 0] == centre
    nb = xy[idx[centre, 1:]] - xy[centre]
    assert np.allclose(np.hypot(*nb.T), 100.0)
    ang = np.degrees(np.mod(np.arctan2(nb[:, 1], nb[:, 0]), 2 * np.pi))
    assert np.allclose(ang, [0, 60, 120, 180, 240, 300])  # fixed order: counter-clockwise from +x
    # a corner spot has 2 neighbours on this grid: padded with itself and masked, not dropped
    assert present[0].sum() == 3 and (idx[0, ~present[0]] == 0).all()
    assert len(idx) == len(xy)
    # the order does not depend on the order spots are listed in
    perm = np.random.default_rng(0).permutation(len(xy))
    idx2, present2 = neighbourhoods(xy[perm])
    where = np.argsort(perm)
    assert np.array_equal(perm[idx2[where[centre]]], idx[centre])


def test_neighbourhoods_on_a_square_grid_stop_at_edges_and_far_spots():
    xy = np.array([(x * 100.0, y * 100.0) for y in range(4) for x in range(4)] + [(5000.0, 5000.0)])
    idx, present = neighbourhoods(xy)
    assert present[-1].sum() == 1  # an isolated spot keeps only itself
    assert (present[5].sum() - 1) == 6  # interior: 4 at the pitch + 2 diagonals (√2 < 1.5)


def test_morans_i_by_hand():
    xy = np.array([[0.0, 0], [1, 0], [2, 0], [3, 0]])
    w = knn_weights(xy, k=1)
    # z = (-1.5, -0.5, 0.5, 1.5) for a gradient; neighbours 0→1, 1→0|2, 2→1|3, 3→2
    x = np.array([[0.0, 1], [1, 0], [2, 1], [3, 0]])
    i = morans_i(x, w)
    j = w.indices
    z = x[:, 0] - 1.5
    expect = 4 / 4 * sum(z[r] * z[j[r]] for r in range(4)) / (z**2).sum()
    assert i[0] == pytest.approx(expect) and i[0] > 0
    assert i[1] < 0  # alternating values are negatively autocorrelated
    assert np.isnan(morans_i(np.ones((4, 1)), w)[0])


def test_hidden_entries_follow_each_genes_dropout_rate():
    rng = np.random.default_rng(0)
    rates = np.array([0.1, 0.5, 0.8])
    v = (rng.random((20000, 3)) > rates).astype(float) * 2.0
    assert np.allclose(dropout_rates(v), rates, atol=0.01)
    h = sample_hidden(v, np.random.default_rng(1))
    assert not h[v == 0].any()  # only measured entries are hidden
    frac = h.sum(0) / (v != 0).sum(0)
    assert np.allclose(frac, rates, atol=0.02)
    # SpaRED: p = min(1, (1 - f) / f) with f the detected fraction: 0.1/0.9, 0.5/0.5 → 1, 0.8/0.2 → 1
    assert np.allclose(hide_probabilities(v, "spared"), [0.1 / 0.9, 1.0, 1.0], atol=0.02)
    h = sample_hidden(v, np.random.default_rng(1), "spared")
    assert np.allclose(h.sum(0) / (v != 0).sum(0), [0.1 / 0.9, 1.0, 1.0], atol=0.02)
    assert hide_probabilities(np.zeros((5, 1)), "spared")[0] == 0  # never detected: nothing to hide


def test_masked_scores_only_look_at_hidden_entries():
    y = np.array([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0], [9.0, 9.0]])
    p = y.copy()
    p[3] = 0.0  # wrong, but not hidden
    h = np.array([[1, 1], [1, 1], [1, 1], [0, 0]], dtype=bool)
    s = masked_scores(y, p, h)
    assert s["MSE"] == 0 and s["MAE"] == 0 and s["R2"] == 1 and s["entries"] == 6
    assert s["PCC_gene"] == pytest.approx(1.0) and s["genes_scored"] == 2
    s2 = masked_scores(y, p + np.array([[1.0, 0.0]]), h)
    assert s2["MSE"] == pytest.approx(3 / 6)


def test_baselines_on_a_hand_made_grid():
    xy = _hex_grid()
    v = np.zeros((len(xy), 1))
    v[:, 0] = np.arange(len(xy), dtype=float) + 1
    centre = 12
    nm = neighbour_mean(v, xy)
    idx, _ = neighbourhoods(xy)
    assert nm[centre, 0] == pytest.approx(v[idx[centre, 1:], 0].mean())
    # adaptive median skips zero neighbours and grows the ring when the first has none
    z = v.copy()
    z[idx[centre, 1:], 0] = 0.0
    am = adaptive_median(z, xy)
    assert am[centre, 0] > 0
    assert adaptive_median(v, xy)[centre, 0] == pytest.approx(np.median(v[idx[centre, 1:], 0]))
    ks = knn_smoothing(v, xy, k=2, n_pcs=1)
    assert ks.shape == v.shape and abs(ks[centre, 0] - v[centre, 0]) <= 1.0  # nearest in expression


def test_prefill_and_masked_training_copies():
    xy = _hex_grid()
    rng = np.random.default_rng(0)
    v = (rng.random((len(xy), 5)) > 0.4) * rng.gamma(2.0, 1.0, (len(xy), 5)).astype(np.float32)
    p = prefilled(v, xy)
    assert np.array_equal(p[v > 0], v[v > 0]) and (p[v == 0] > 0).mean() > 0.9
    assert np.array_equal(p, np.where(v > 0, v, adaptive_median(v, xy)))
    assert np.array_equal(prefilled(v, xy, "zeros"), v)
    sec = mask_section(v, xy, 2, "median", "dropout", np.random.default_rng(1))
    assert sec.hidden[:, 2:].sum() == 0 and sec.hidden[:, :2].sum() > 0 and (v[sec.hidden] > 0).all()
    assert (sec.observed[sec.hidden] == 0).all() and np.array_equal(sec.target, p)  # target: real values
    # the input is pre-filled from the observed values only, so it ignores hidden values
    v2 = v.copy()
    v2[sec.hidden] += 5.0
    sec2 = mask_section(v2, xy, 2, "median", "dropout", np.random.default_rng(1))
    assert np.array_equal(sec2.hidden, sec.hidden) and np.array_equal(sec2.input, sec.input)
    s = CompletionSettings(copies=3, train_masking="spared")
    copies = training_copies({"a": v, "b": v[:9]}, {"a": xy, "b": xy[:9]}, 2, s)
    assert len(copies) == 6 and not np.array_equal(copies[0].hidden, copies[2].hidden)
    assert len(training_copies({"a": v}, {"a": xy}, 2, CompletionSettings(train_masking="none"))) == 1


def _tiny_lgdist(rounds=1):
    torch.manual_seed(0)
    cfg = LGDiSTConfig(num_genes=6, ae_hidden=16, ae_layers=1, latent=4, dit_hidden=16, dit_depth=1, dit_heads=2)
    return LGDiST(cfg, ["a", "b"], ["c", "d", "e", "f"], np.full(6, 0.5), CompletionSettings(rounds=rounds))


@pytest.mark.parametrize("method", ["lgdist", "lgdist-stage1", "lgdist-stage2", "zeros", "neighbour_mean",
                                    "adaptive_median", "knn_smoothing"])
def test_hidden_values_reach_no_completion(method):
    """The leak of the reference evaluation: a hidden value must not change any output entry
    (not the centre's, not a neighbour's), while a visible value does."""
    xy = _hex_grid(4, 4)
    rng = np.random.default_rng(0)
    v = (rng.random((len(xy), 6)) > 0.3) * rng.gamma(2.0, 1.0, (len(xy), 6)).astype(np.float32)
    hidden = sample_hidden(v[:, :2], np.random.default_rng(1))
    assert hidden.sum() > 0
    model = _tiny_lgdist(rounds=2)
    with torch.no_grad():  # adaLN-Zero starts the DiT at zero output: give it weights that use the input
        for p in (q for dit in model.dits for q in dit.parameters()):
            p.normal_(0.0, 0.3)
    kw = {"num_samples": 2, "sampler": "ddim:3", "seed": 0}

    def run(values):
        return complete_masked(method, values, xy, hidden, model, **kw) if method.startswith("lgdist") \
            else complete_masked(method, values, xy, hidden)

    base = run(v)
    changed = v.copy()
    changed[:, :2][hidden] *= 7.0
    assert np.array_equal(run(changed), base)
    visible = v.copy()
    visible[:, :2][(v[:, :2] > 0) & ~hidden] += 3.0
    assert np.array_equal(run(visible), base) == (method == "zeros")  # "zeros" uses no input at all


def test_training_keeps_the_best_validation_checkpoint(tmp_path):
    net = torch.nn.Linear(1, 1)
    scores = iter([3.0, 1.0, 2.0, 0.5])

    def loss(model, data_gen, noise_gen, share):
        return {"loss": model(torch.ones(4, 1)).pow(2).mean()}

    cfg = LoopConfig(steps=30, lr=1e-2, checkpoint_every=10, progress=False)
    train_loop(net, loss, cfg, tmp_path, {}, global_batch=4, validate=lambda m, e: next(scores),
               validate_every=10)
    from stem_st.training.checkpoint import load_latest

    best, path = load_latest(tmp_path / "best")
    assert best["step"] == 20 and best["best"] == {"score": 1.0, "step": 20} and "step_00000020" in path.name
    last, _ = load_latest(tmp_path)
    assert last["step"] == 30 and last["best"]["step"] == 20
    assert not torch.equal(best["model"]["weight"], last["model"]["weight"])
    with open(tmp_path / "loss.csv") as fh:
        log = list(csv.DictReader(fh))
    assert [(int(r["step"]), float(r["val"])) for r in log if r["val"]] == [(10, 3.0), (20, 1.0), (30, 2.0)]
    # a resumed, longer run keeps comparing against the stored best
    train_loop(net, loss, LoopConfig(steps=40, lr=1e-2, checkpoint_every=10, progress=False), tmp_path, {},
               resume=True, global_batch=4, validate=lambda m, e: next(scores), validate_every=10)
    assert load_latest(tmp_path / "best")[0]["best"] == {"score": 0.5, "step": 40}


@pytest.mark.parametrize("point", ["samples", "posterior_mean"])
def test_completion_keeps_neighbour_latents_fixed(point):
    torch.manual_seed(0)
    cfg = LGDiSTConfig(num_genes=6, ae_hidden=16, ae_layers=1, latent=4, dit_hidden=16, dit_depth=1, dit_heads=2)
    s = CompletionSettings(point=point, objective="eps" if point == "samples" else "x0",
                           point_source="diffusion", condition="neighbours")  # the paper's condition
    m = LGDiST(cfg, ["a", "b"], ["c", "d", "e", "f"], np.zeros(6), s)
    seen = []
    inner = m.dits[0].forward

    def spy(z, t, cond):
        seen.append((z.clone(), t.clone(), cond.clone()))
        return inner(z, t, cond)

    m.dits[0].forward = spy
    xy = _hex_grid(3, 3)
    values = np.abs(np.random.default_rng(0).normal(size=(9, 6))).astype(np.float32)
    out = m.complete(values, xy, num_samples=2, sampler="ddim:5")
    assert out.shape == (9, 6) and (out >= 0).all()
    first = seen[0][0][:, 1:]
    assert all(torch.equal(z[:, 1:], first) for z, _, _ in seen)  # neighbours clean throughout
    assert all(torch.equal(z[:, 1:], c[:, 1:]) for z, _, c in seen)  # … and equal to their condition
    assert all(torch.equal(c[:, 0], torch.zeros_like(c[:, 0])) for _, _, c in seen)  # centre zeroed in it
    if point == "samples":  # 5 sampler steps on 2 samples per spot; the centre is generated
        assert len(seen) == 5 and len(first) == 18 and not torch.equal(seen[0][0][:, 0], seen[-1][0][:, 0])
    else:  # 2 draws of the centre at the noisiest trained step, one row per spot
        assert len(seen) == 2 and len(first) == 9 and all((t == 1499).all() for _, t, _ in seen)
        assert not torch.equal(seen[0][0][:, 0], seen[1][0][:, 0])


def test_complete_cli_end_to_end_on_two_her2st_sections(tmp_path):
    comp = tmp_path / "comp"
    fit = run_stem("complete", "fit", "--data", HER2ST, "--train", "A2,A3", "--val", "B1", "--out", comp,
                   "--panel", "16", "--total", "48", "--ae-steps", "30", "--dit-steps", "30", "--batch-size", "32",
                   "--ae-hidden", "32", "--latent", "8", "--dit-hidden", "32", "--dit-depth", "1",
                   "--rounds", "2", "--masking", "spared", "--condition", "neighbourhood", "--centre-noise", "0.5",
                   "--device", "cpu")
    assert "validation" in fit.stdout and "adaptive_median" in fit.stdout
    conf = json.loads((comp / "config.json").read_text())
    assert len(conf["panel"]) == 16 and len(conf["context"]) == 32 and conf["train"] == ["A2", "A3"]
    assert conf["settings"]["rounds"] == 2 and conf["settings"]["prefill"] == "median"
    assert conf["settings"]["condition"] == "neighbourhood" and conf["settings"]["centre_noise"] == 0.5
    for stage in ("ae", "dit", "dit2"):  # each stage validated on B1 and its best state kept
        assert list((comp / stage / "best" / "checkpoints").glob("step_*.pt"))
    ev = run_stem("complete", "evaluate", comp, "--sections", "B1", "--num-samples", "1", "--sampler", "ddim:3",
                  "--stage1", "--masking", "spared", "--out", tmp_path / "ev.json", "--device", "cpu")
    res = json.loads((tmp_path / "ev.json").read_text())
    rows = {r["method"]: r for r in res["pooled"]}
    assert set(rows) == {"lgdist", "lgdist-stage1", "zeros", "neighbour_mean", "adaptive_median", "knn_smoothing"}
    assert res["masking"] == "spared" and "min(1, (1 - f_g) / f_g)" in res["protocol"]
    assert rows["zeros"]["entries"] == rows["lgdist"]["entries"] > 0 and np.isfinite(rows["lgdist"]["MSE"])
    assert "masked completion" in ev.stdout
    run_stem("complete", "apply", comp, "--sections", "B1,A1", "--out", tmp_path / "done", "--num-samples", "1",
             "--sampler", "ddim:3", "--device", "cpu")
    a = ad.read_h5ad(tmp_path / "done" / "B1_completed.h5ad")
    x, c = np.asarray(a.X, dtype=float), a.layers["completed"]
    assert np.array_equal(c[x > 0], x[x > 0])  # measured values untouched
    assert (c[x == 0] > 0).any() and a.var["completed_panel"].sum() == 16
    again = run_stem("complete", "apply", comp, "--sections", "B1", "--out", tmp_path / "done", check=False)
    assert again.returncode == 2 and "already exists" in again.stderr
    res = run_stem("complete", "fit", "--data", HER2ST, "--train", "A2", "--out", comp, check=False)
    assert res.returncode == 2 and "already exists" in res.stderr
    res = run_stem("complete", "fit", "--data", HER2ST, "--train", "A2", "--val", "Z9", "--out", tmp_path / "z",
                   check=False)
    assert res.returncode == 2 and "Z9" in res.stderr and not (tmp_path / "z").exists()
    # downstream: a prepared dataset carries the completed counts for `stem train --target-layer`
    run_stem("prepare", "--data", HER2ST, "--sections", "A1", "--genes", "hmhvg:40", "--views", "1",
             "--completed", tmp_path / "done",
             "--out", tmp_path / "prep")
    from stem_st.data.dataset import open_prepared

    sec = open_prepared(tmp_path / "prep").section("A1")
    x, c = np.asarray(sec.X, dtype=float), sec.layers["completed"]
    assert np.array_equal(c[x > 0], x[x > 0]) and "panel genes completed" in sec.uns["stem"]["completed"]
    run_stem("train", tmp_path / "prep", "--out", tmp_path / "run", "--preset", "tiny", "--steps", "3",
             "--batch-size", "8", "--target-layer", "completed", "--device", "cpu", "--validation", "none",
             "--recipe-set", "calibrate_spread=false")  # calibration is test_recipe's
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["target_layer"] == "completed"


def test_every_complete_command_states_units_and_protocol():
    for cmd, protocol in (("fit", "masking"), ("evaluate", "hidden"), ("apply", "No masking")):
        text = " ".join(run_stem("complete", cmd, "--help").stdout.split())
        assert "log1p(count)" in text and protocol in text, cmd
