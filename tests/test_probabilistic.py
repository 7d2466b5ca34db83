"""Distributional scores (evaluation/probabilistic.py) against hand or closed-form values, and
the sampled baselines (ridge+ctx2+gauss|mvn|boot, knn)."""

from __future__ import annotations

import math

import anndata as ad
import numpy as np
import pytest
from scipy.stats import norm

from stem_st.data.context import graph_matrices
from stem_st.data.dataset import open_prepared, write_prepared
from stem_st.errors import StemError
from stem_st.evaluation import probabilistic as P
from stem_st.evaluation.baselines import BASELINES, make_baseline

RNG = np.random.default_rng


def test_point_mass_ensemble_scores_are_the_distances():
    rng = RNG(0)
    y, c = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    s = np.repeat(c[:, None], 6, axis=1)
    assert P.crps(y, s) == pytest.approx(np.abs(y - c).mean(), rel=1e-9)
    assert P.energy(y, s) == pytest.approx(np.linalg.norm(y - c, axis=1).mean(), rel=1e-9)
    vs = []
    for k in range(len(y)):  # sum over all ordered gene pairs (i, j), unit weights
        vs.append(sum((abs(c[k, i] - c[k, j]) ** 0.5 - abs(y[k, i] - y[k, j]) ** 0.5) ** 2
                      for i in range(4) for j in range(4)))
    assert P.variogram(y, s) == pytest.approx(np.mean(vs), rel=1e-9)
    assert P.variogram(y, s, chunk=2) == pytest.approx(P.variogram(y, s), rel=1e-12)


def test_two_member_ensemble_uses_the_fair_estimator():
    x1, x2, y = 0.0, 2.0, 3.0
    s = np.array([[[x1], [x2]]])
    fair = (abs(x1 - y) + abs(x2 - y)) / 2 - abs(x1 - x2) / 2
    plain = (abs(x1 - y) + abs(x2 - y)) / 2 - abs(x1 - x2) / 4
    assert P.crps(np.array([[y]]), s) == pytest.approx(fair) and fair != pytest.approx(plain)
    # energy score, same estimator with the Euclidean norm over the panel
    a, b, t = np.array([0.0, 1.0]), np.array([2.0, -1.0]), np.array([1.0, 3.0])
    es = (np.linalg.norm(a - t) + np.linalg.norm(b - t)) / 2 - np.linalg.norm(a - b) / 2
    assert P.energy(t[None], np.stack([a, b])[None]) == pytest.approx(es)


def test_masked_energy_and_hidden_entry_scores_by_hand():
    # spot 0: genes 0 and 1 masked, truth (0, 0), draws (3, 4) and (6, 8); gene 2 unmasked and wild
    # spot 1: nothing masked (skipped); spot 2: gene 2 masked, truth 1, draws 1 and 3
    y = np.array([[0.0, 0.0, 100.0], [5.0, 5.0, 5.0], [9.0, 9.0, 1.0]])
    s = np.array([[[3.0, 4.0, -50.0], [6.0, 8.0, 70.0]],
                  [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]],
                  [[0.0, 0.0, 1.0], [0.0, 0.0, 3.0]]])
    m = np.array([[True, True, False], [False, False, False], [False, False, True]])
    es0 = (5.0 + 10.0) / 2 - 5.0 / 2  # fair: mean distance to truth − mean pair distance / 2
    es2 = (0.0 + 2.0) / 2 - 2.0 / 2
    assert P.masked_energy(y, s, m) == pytest.approx((es0 + es2) / 2)
    # unmasked genes count in neither truth nor samples: changing them changes nothing
    s2, y2 = s.copy(), y.copy()
    s2[0, :, 2], y2[1] = 1e3, -7.0
    assert P.masked_energy(y2, s2, m) == P.masked_energy(y, s, m)
    out = P.hidden_entry_scores(y, s, m)
    # the three masked entries: (truth, draws) = (0; 3, 6), (0; 4, 8), (1; 1, 3)
    crps = [(3 + 6) / 2 - 3 / 2, (4 + 8) / 2 - 4 / 2, (0 + 2) / 2 - 2 / 2]
    assert out["CRPS"] == pytest.approx(np.mean(crps))
    # central 50 % of two draws a < b: [a + (b − a)/4, b − (b − a)/4]; only the third entry's
    # [1.5, 2.5] misses its truth 1 too, but its 95 % interval [1.05, 2.95] also misses it
    assert out["coverage50"] == 0.0 and out["coverage95"] == 0.0
    assert out["energy"] == pytest.approx((es0 + es2) / 2)
    s3 = s.copy()
    s3[2, 0, 2] = 0.5  # draws 0.5 and 3 for truth 1: inside the 80 % interval [0.75, 2.75]
    assert P.hidden_entry_scores(y, s3, m, with_energy=False)["coverage80"] == pytest.approx(1 / 3)
    assert "energy" not in P.hidden_entry_scores(y, s3, m, with_energy=False)
    with pytest.raises(StemError, match="no masked entry"):
        P.hidden_entry_scores(y, s, np.zeros_like(m))
    with pytest.raises(StemError, match="does not match"):
        P.masked_energy(y, s, m[:, :2])


def test_large_gaussian_ensemble_matches_the_closed_form_crps():
    # one entry per call: scoringrules' fair estimator holds an (entries, M, M) array
    rng = RNG(1)
    mu, sigma, y = rng.normal(size=24), rng.uniform(0.5, 2.0, size=24), 1.5 * rng.normal(size=24)
    got = [P.crps(np.array([[y[i]]]), mu[i] + sigma[i] * rng.standard_normal((1, 4000, 1))) for i in range(24)]
    z = (y - mu) / sigma
    exact = sigma * (z * (2 * norm.cdf(z) - 1) + 2 * norm.pdf(z) - 1 / math.sqrt(math.pi))
    assert np.mean(got) == pytest.approx(exact.mean(), rel=0.01)


def test_coverage_of_evenly_spaced_samples_and_of_calibrated_draws():
    s = np.broadcast_to(np.arange(10.0)[None, :, None], (3, 10, 2))
    # quantiles of 0..9 (linear): 50 % [2.25, 6.75], 80 % [0.9, 8.1], 95 % [0.225, 8.775]
    def plain(y):
        return {k: v for k, v in P.coverage(y, s).items() if not k.startswith("rank")}
    assert plain(np.full((3, 2), 4.5)) == {"coverage50": 1.0, "coverage80": 1.0, "coverage95": 1.0}
    assert plain(np.full((3, 2), 2.0)) == {"coverage50": 0.0, "coverage80": 1.0, "coverage95": 1.0}
    assert set(plain(np.full((3, 2), 100.0)).values()) == {0.0}
    # above all 10 draws: u in [10, 11] / 11, of which [10, 10.725] is inside the 95 % band
    assert P.coverage(np.full((3, 2), 100.0), s)["rank_coverage95"] == pytest.approx(0.725)
    # rank coverage: 4.5 ranks 5th of 10, u in [5, 6] / 11 = [0.45, 0.55]: inside the 50 % band [0.25, 0.75]
    assert P.coverage(np.full((3, 2), 4.5), s)["rank_coverage50"] == 1.0
    rng = RNG(2)
    y, draws = rng.normal(size=(200, 20)), rng.normal(size=(200, 200, 20))
    for key, level in zip(("coverage50", "coverage80", "coverage95"), P.LEVELS):
        assert P.coverage(y, draws)[key] == pytest.approx(level, abs=0.03)


def test_rank_coverage_holds_its_level_at_any_ensemble_size_and_with_ties():
    rng = RNG(5)
    for m in (5, 20):  # few draws: the empirical-quantile interval reads low, the rank coverage does not
        y, draws = rng.normal(size=(4000, 5)), rng.normal(size=(4000, m, 5))
        cov = P.coverage(y, draws)
        for lv in P.LEVELS:
            assert cov[f"rank_coverage{round(100 * lv)}"] == pytest.approx(lv, abs=0.012)
        assert cov["coverage80"] < 0.75
    # discrete counts: a truth tied with draws is not simply "inside"
    y, draws = rng.poisson(0.3, (4000, 5)).astype(float), rng.poisson(0.3, (4000, 20, 5)).astype(float)
    cov = P.coverage(y, draws)
    assert cov["coverage50"] > 0.8 and cov["rank_coverage50"] == pytest.approx(0.5, abs=0.012)
    # every draw equal to the truth: u spread over [0, 5] / 5, so exactly the level
    assert P.coverage(np.zeros((2, 3)), np.zeros((2, 4, 3)))["rank_coverage80"] == pytest.approx(0.8)
    # draws too narrow: the ranks pile at the ends
    y, draws = rng.normal(size=(2000, 5)), 0.5 * rng.normal(size=(2000, 20, 5))
    assert P.coverage(y, draws)["rank_coverage80"] < 0.6


def test_pit_histogram_flat_when_calibrated_u_shaped_when_too_narrow():
    rng = RNG(3)
    y = rng.normal(size=(200, 20))
    flat = P.pit_histogram(y, rng.normal(size=(200, 100, 20)))
    assert len(flat) == P.PIT_BINS and flat.sum() == pytest.approx(1.0)
    assert np.all(np.abs(flat - 0.1) < 0.02)
    narrow = P.pit_histogram(y, 0.3 * rng.normal(size=(200, 100, 20)))
    assert narrow.sum() == pytest.approx(1.0)
    assert min(narrow[0], narrow[-1]) > 2 * max(narrow[3:7])
    # ties (all samples equal to the truth) are spread uniformly, not piled in one bin
    ties = P.pit_histogram(np.zeros((100, 20)), np.zeros((100, 5, 20)))
    assert np.all(np.abs(ties - 0.1) < 0.03)


def test_correlation_error():
    rng = RNG(4)
    base = rng.normal(size=(300, 1))
    y = base + 0.5 * rng.normal(size=(300, 4))  # genes strongly correlated (r ≈ 0.8)
    assert P.correlation_error(y, y.copy()) == pytest.approx(0.0, abs=1e-12)
    shuffled = np.stack([rng.permutation(col) for col in y.T], 1)
    assert P.correlation_error(y, shuffled) > 0.5
    const = y.copy()
    const[:, 2] = 7.0
    err = P.correlation_error(y, const)
    assert np.isfinite(err) and err > 0


def _grid(n=10):
    xy = np.stack(np.meshgrid(np.arange(n), np.arange(n)), -1).reshape(-1, 2).astype(float)
    return xy, graph_matrices(xy, 1.5)[0]


def test_morans_i_on_a_grid():
    xy, graph = _grid()
    x, yy = xy[:, 0], xy[:, 1]
    vals = np.stack([x + yy, (x + yy) % 2, x % 2, np.full(len(x), 3.0)], 1)
    mi = P.morans_i(vals, graph)
    assert mi[0] > 0.7  # smooth gradient
    assert mi[1] < 0  # checkerboard (weakly: ring-1 on a square grid includes the diagonals)
    assert mi[2] < -0.3  # alternating stripes: rook and diagonal neighbours mostly differ
    assert mi[3] == 0.0  # constant gene
    # the textbook formula I = N / W · zᵀWz / zᵀz
    w = graph.toarray()
    z = vals[:, :3] - vals[:, :3].mean(0)
    by_hand = len(w) / w.sum() * np.einsum("ig,ij,jg->g", z, w, z) / (z**2).sum(0)
    assert np.allclose(mi[:3], by_hand, atol=1e-8)


def test_spread_error_rho():
    rng = RNG(5)
    truth = rng.normal(size=(50, 3))
    err = np.linspace(0.1, 5.0, 50)[:, None]
    point = truth + err * rng.choice([-1.0, 1.0], size=(50, 3))
    samples = point[:, None] + err[:, None] * rng.standard_normal((50, 200, 3))
    assert P.spread_error_rho(truth, point, samples) > 0.95
    flip = point[:, None] + err[::-1, None] * rng.standard_normal((50, 200, 3))
    assert P.spread_error_rho(truth, point, flip) < -0.95
    assert np.isnan(P.spread_error_rho(truth, truth, samples))


def test_probabilistic_scores_keys_and_input_checks():
    rng = RNG(6)
    xy, graph = _grid(6)
    y = rng.normal(size=(36, 5))
    s = y[:, None] + rng.normal(size=(36, 8, 5))
    out = P.probabilistic_scores(y, s.mean(1), s, graph=graph, xy=xy)
    assert set(out) == {*P.KEYS, "PIT"} and len(out["PIT"]) == P.PIT_BINS
    assert all(np.isfinite(out[k]) for k in P.KEYS)
    assert out["CRPS"] == pytest.approx(P.crps(y, s))
    no_graph = P.probabilistic_scores(y, s.mean(1), s)
    assert "moran_err_sample" not in no_graph and "moran_err_point" not in no_graph
    assert "svgm_err_sample" not in no_graph
    for bad in (s[:, :, :4], s[:10], s[:, :1], s[:, 0]):
        with pytest.raises(StemError):
            P.probabilistic_scores(y, s.mean(1), bad)


# --- sampled baselines -------------------------------------------------------------------
GENES = [f"G{i}" for i in range(6)]


def _section(rng, n, w):
    """log2 expression linear in a 6-d embedding; G0 and G1 share the same noise."""
    z = rng.normal(size=(n, 6))
    noise = rng.normal(0, 0.4, size=(n, len(GENES)))
    noise[:, 1] = noise[:, 0]
    log2 = 6 + z @ w + noise
    a = ad.AnnData(X=np.rint(np.exp2(log2) - 1).astype(np.int32))
    a.var_names, a.obs_names = GENES, [f"s{i}" for i in range(n)]
    grid = np.stack(np.meshgrid(np.arange(15), np.arange(n // 15 + 1)), -1).reshape(-1, 2)[:n]
    a.obsm["spatial"] = grid * 100.0 + 50
    a.obsm["embedding"] = z[:, None].astype(np.float32)
    a.uns["stem"] = {"spot_diameter_um": 50.0, "mpp": 1.0}
    return a


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    rng = RNG(7)
    w = rng.normal(0, 0.4, size=(6, len(GENES)))
    secs = {"A": _section(rng, 240, w), "B": _section(rng, 240, w), "T": _section(rng, 150, w)}
    root = tmp_path_factory.mktemp("probprep") / "prep"
    manifest = {"sections": [{"section": s} for s in secs], "holdout": ["T"],
                "encoders": [{"encoder": "synthetic", "dim": 6, "weights": "none"}], "embedding_dim": 6,
                "views": ["identity"], "patch_mode": "hest", "summary": []}
    write_prepared(root, secs, GENES, manifest)
    return open_prepared(root)


def test_residual_sampled_ridge(ds):
    emb, xy = ds.embeddings("T")[:, 0], np.asarray(ds.section("T").obsm["spatial"])
    ref = BASELINES["ridge+ctx2"]().fit(ds, ["A", "B"]).predict(emb, xy)[0]
    corr = {}
    for noise in ("gauss", "mvn", "boot"):
        mean, std, samples = make_baseline(f"ridge+ctx2+{noise}", 20, seed=1).fit(ds, ["A", "B"]).predict(emb, xy)
        assert samples.shape == (len(emb), 20, len(GENES)) and (samples >= 0).all()
        assert np.allclose(mean, ref, atol=1e-5) and np.allclose(std, samples.std(1))
        dev = (samples - mean[:, None]).reshape(-1, len(GENES))
        corr[noise] = np.corrcoef(dev[:, 0], dev[:, 1])[0, 1]
        assert np.corrcoef(dev[:, 2], dev[:, 3])[0, 1] == pytest.approx(0, abs=0.1)
    assert corr["boot"] > 0.8 and corr["mvn"] > 0.8 and abs(corr["gauss"]) < 0.1, corr
    _, _, knn = make_baseline("knn", 7).fit(ds, ["A", "B"]).predict(emb)
    assert knn.shape == (len(emb), 7, len(GENES))
    for bad in ("svm", "ridge+ctx2+laplace"):
        with pytest.raises(StemError):
            make_baseline(bad)
