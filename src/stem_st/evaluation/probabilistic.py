"""Scores of a predictive *distribution* given as samples ``(spots, samples, genes)``.

Proper scoring rules come from the maintained ``scoringrules`` package (Zanetta & Allen); the
rest (coverage, PIT, structure of a sampled section, heteroscedasticity) are short numpy/scipy
code. Conventions, stated in every output:

- CRPS: the *fair* ensemble estimator, E|X − y| − E|X − X'|/2 with the second mean over the
  M(M − 1) distinct member pairs, per spot × gene, then the mean over entries. Fair means an
  M-member ensemble drawn from the true distribution scores, in expectation, what that
  distribution scores, so methods compare at any ensemble size.
- Energy score: the fair estimator with the Euclidean norm over the whole panel, per spot,
  mean over spots. Variogram score: order p = 0.5, unit weights over all gene pairs, per spot,
  mean over spots (the gene–gene dependence a marginal score cannot see); its plain estimator
  depends on the ensemble size, so every method is scored with the same number of samples.
- Masked evaluation (completion): CRPS and coverage over the hidden entries only, each entry on
  its own; the energy score per spot over that spot's hidden entries (``masked_energy``).
- Coverage: fraction of true values inside the central 50/80/95 % interval of the samples
  (empirical quantiles, linear interpolation); it reads low for few samples (an ensemble drawn
  from the truth's own distribution holds 0.45 / 0.73 / 0.875 with 20) and high for tied values
  (a truth equal to a draw counts as inside). Rank coverage: the same levels from the truth's
  randomised rank among the M samples, (#below + W) / (M + 1), W uniform over the ties
  (``scoring.rank_coverage``): exactly the level for a calibrated ensemble at any M, continuous
  or discrete. PIT: randomised, ties (e.g. zeros) spread
  uniformly, in ``PIT_BINS`` bins; a calibrated forecast is flat at 1/bins.
- Structure: one draw per spot forms a *sampled section*; its gene–gene Pearson correlation
  matrix across spots and each gene's Moran's I on the ring-1 spot graph are compared with the
  measured section's (RMSE over gene pairs; mean |ΔI| over genes). The point estimate's are
  reported beside them, so a reader sees what averaging destroys.
- Heteroscedasticity: Spearman correlation, across spots, between a spot's predicted spread
  (mean over genes of the samples' sd) and its absolute error (mean over genes of
  |point − truth|): does the uncertainty follow the image?
"""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

from ..errors import require
from ..scoring import VARIOGRAM_P, crps, energy, rank_coverage, variogram
from ..scoring import check_ensemble as _check
from .metrics import interval_coverage

LEVELS = (0.5, 0.8, 0.95)
PIT_BINS = 10
#: the scalar keys :func:`probabilistic_scores` returns (lower is better unless noted)
KEYS = ("CRPS", "energy", "variogram", *(f"coverage{round(100 * lv)}" for lv in LEVELS),
        *(f"rank_coverage{round(100 * lv)}" for lv in LEVELS),
        "corr_err_sample", "corr_err_point", "moran_err_sample", "moran_err_point", "svgm_err_sample",
        "spread_error_rho")


#: the protocol text of each score, as written into metrics.json and the report
PROTOCOL = {
    "CRPS": "fair ensemble CRPS (scoringrules), E|X − y| − E|X − X'|/2 over distinct sample pairs, per "
            "spot × gene, mean over entries",
    "energy": "fair energy score (scoringrules) over the whole panel per spot, mean over spots",
    "variogram": f"variogram score of order {VARIOGRAM_P} (scoringrules, plain estimator), unit weights "
                 "over all ordered gene pairs, per spot, mean over spots; it depends on the number of "
                 "samples, so methods are compared at the same number",
    "coverageNN": "fraction of true values inside the central NN % interval of the samples "
                  "(empirical quantiles), NN = " + ", ".join(str(round(100 * lv)) for lv in LEVELS),
    "rank_coverageNN": "expected fraction of true values whose randomised rank among the M samples, "
                       "(#below + W) / (M + 1) with W uniform on [0, 1 + #equal], lies in the central NN % "
                       "of [0, 1]: NN % for a calibrated ensemble at any M, ties (zeros) included",
    "PIT": f"randomised PIT (ties spread uniformly) in {PIT_BINS} bins, pit.png and metrics.json",
    "corr_err_sample / corr_err_point": "RMSE over gene pairs between the gene–gene Pearson "
                                        "correlation matrices across spots of the truth and of one "
                                        "sampled section (one draw per spot) / the point estimate",
    "moran_err_sample / moran_err_point": "mean over genes of |Moran's I − the truth's| on the ring-1 "
                                          "spot graph (scanpy), for one sampled section / the point",
    "svgm_err_sample": "spatial variogram of one sampled section against the truth's: γ_k = mean over genes "
                       "and spot pairs of ring k (1, 2, 3 spot pitches) of (y_i − y_j)²/2; the mean over the "
                       "rings of |γ_k(draw) / γ_k(truth) − 1| (0.2 = 20 % off)",
    "spread_error_rho": "Spearman ρ across spots between the predicted spread (mean sample sd) and the "
                        "absolute error (mean |point − truth|); > 0: the uncertainty follows the error",
}


def coverage(truth: np.ndarray, samples: np.ndarray, levels: tuple[float, ...] = LEVELS) -> dict[str, float]:
    """``{"coverageNN": fraction of truth inside the central NN % interval}`` and
    ``{"rank_coverageNN": … of the randomised ranks}`` for each level."""
    y, s = _check(truth, samples)
    return {**{f"coverage{round(100 * lv)}": interval_coverage(y, s, lv) for lv in levels},
            **{f"rank_coverage{round(100 * lv)}": float(rank_coverage(y, s, lv)) for lv in levels}}


def masked_energy(truth: np.ndarray, samples: np.ndarray, mask: np.ndarray, chunk: int = 32) -> float:
    """Mean fair energy score over spots, each spot's vector restricted to its ``mask``-ed genes
    (the others count in neither truth nor samples); spots with no masked gene are skipped."""
    y, s = _check(truth, samples)
    m = np.asarray(mask, dtype=bool)
    require(m.shape == y.shape, f"mask {m.shape} does not match truth {y.shape}")
    rows = m.any(1)
    require(bool(rows.any()), "no masked entry to score")
    return energy(np.where(m, y, 0.0)[rows], np.where(m[:, None], s, 0.0)[rows], chunk)


def hidden_entry_scores(truth: np.ndarray, samples: np.ndarray, mask: np.ndarray,
                        levels: tuple[float, ...] = LEVELS, with_energy: bool = True,
                        with_crps: bool = True) -> dict[str, float]:
    """Scores of samples ``(spots, samples, genes)`` on the ``mask``-ed entries only (e.g. the
    hidden entries of a masked evaluation): central-interval coverage and (``with_crps``) CRPS over
    those entries, and (``with_energy``) :func:`masked_energy` over each spot's masked entries."""
    y, s = _check(truth, samples)
    m = np.asarray(mask, dtype=bool)
    require(m.shape == y.shape, f"mask {m.shape} does not match truth {y.shape}")
    require(bool(m.any()), "no masked entry to score")
    yt, st = y[m][:, None], np.moveaxis(s, 1, 2)[m][:, :, None]  # each entry as a one-gene spot
    out = {**({"CRPS": crps(yt, st, chunk=4096)} if with_crps else {}), **coverage(yt, st, levels)}
    if with_energy:
        out["energy"] = masked_energy(y, s, m)
    return out


def pit_histogram(truth: np.ndarray, samples: np.ndarray, bins: int = PIT_BINS, seed: int = 0) -> np.ndarray:
    """Density of the randomised PIT in ``bins`` equal bins (sums to 1; flat = calibrated)."""
    y, s = _check(truth, samples)
    below = (s < y[:, None]).mean(1)
    ties = (s == y[:, None]).mean(1)
    u = below + ties * np.random.default_rng(seed).random(y.shape)
    hist, _ = np.histogram(u.ravel(), bins=bins, range=(0.0, 1.0))
    return hist / max(1, hist.sum())


def correlation_error(truth: np.ndarray, pred: np.ndarray) -> float:
    """RMSE between the gene–gene Pearson correlation matrices (across spots) of ``truth`` and
    ``pred``, over distinct gene pairs; a constant gene correlates 0 with every other."""
    def corr(x):
        x = np.asarray(x, dtype=np.float64)
        xc = x - x.mean(0)
        norm = np.sqrt((xc**2).sum(0))
        z = np.divide(xc, norm, out=np.zeros_like(xc), where=norm > 0)
        return z.T @ z
    iu = np.triu_indices(truth.shape[1], 1)
    if not len(iu[0]):
        return float("nan")
    return float(np.sqrt(np.mean((corr(truth)[iu] - corr(pred)[iu]) ** 2)))


def morans_i(values: np.ndarray, graph) -> np.ndarray:
    """Moran's I of each gene ``(spots, genes)`` on ``graph`` (scanpy's implementation); 0 for
    a constant gene."""
    import scanpy as sc

    v = np.asarray(values, dtype=np.float64)
    out = np.zeros(v.shape[1])
    ok = np.ptp(v, axis=0) > 0
    if ok.any():
        out[ok] = np.atleast_1d(sc.metrics.morans_i(graph, v[:, ok].T))
    return out


def spatial_variogram(values: np.ndarray, rings: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """γ_k for each ring of spot pairs (:func:`stem_st.data.context.shell_pairs`): the mean over
    genes and pairs of (y_i − y_j)² / 2 of ``values`` ``(spots, genes)``; NaN for an empty ring."""
    v = np.asarray(values, dtype=np.float64)
    return np.array([float(0.5 * ((v[i] - v[j]) ** 2).mean()) if len(i) else np.nan for i, j in rings])


def spread_error_rho(truth: np.ndarray, point: np.ndarray, samples: np.ndarray) -> float:
    """Spearman ρ across spots between predicted spread and absolute error (NaN if either is
    constant)."""
    y, s = _check(truth, samples)
    p = np.asarray(point, dtype=np.float64)
    require(p.shape == y.shape, f"point {p.shape} does not match truth {y.shape} as (spots, genes)")
    spread = s.std(1).mean(1)
    err = np.abs(p - y).mean(1)
    if np.ptp(spread) == 0 or np.ptp(err) == 0:
        return float("nan")
    return float(spearmanr(spread, err).statistic)


def probabilistic_scores(truth: np.ndarray, point: np.ndarray, samples: np.ndarray, graph=None,
                         seed: int = 0, xy: np.ndarray | None = None) -> dict[str, float | list[float]]:
    """Every distributional score of one method on one section (see the module docstring).
    ``graph``: the section's ring-1 spot graph (sparse ``(spots, spots)``) for Moran's I, or
    None to skip it; ``xy``: spot centres for the spatial variogram (None skips it); the
    sampled section is draw ``seed mod samples`` of each spot."""
    y, s = _check(truth, samples)
    p = np.asarray(point, dtype=np.float64)
    require(p.shape == y.shape, f"point {p.shape} does not match truth {y.shape} as (spots, genes)")
    draw = s[:, seed % s.shape[1]]
    out: dict[str, float | list[float]] = {"CRPS": crps(y, s), "energy": energy(y, s),
                                           "variogram": variogram(y, s), **coverage(y, s)}
    out["corr_err_sample"] = correlation_error(y, draw)
    out["corr_err_point"] = correlation_error(y, p)
    if graph is not None:
        m_true = morans_i(y, graph)
        out["moran_err_sample"] = float(np.abs(morans_i(draw, graph) - m_true).mean())
        out["moran_err_point"] = float(np.abs(morans_i(p, graph) - m_true).mean())
    if xy is not None:
        from ..data.context import shell_pairs, spot_pitch

        rings = shell_pairs(np.asarray(xy, dtype=np.float64) / (spot_pitch(xy) or 1.0))
        g_true, g_draw = spatial_variogram(y, rings), spatial_variogram(draw, rings)
        ok = np.isfinite(g_true) & (g_true > 0)
        if ok.any():
            out["svgm_err_sample"] = float(np.abs(g_draw[ok] / g_true[ok] - 1).mean())
    out["spread_error_rho"] = spread_error_rho(y, p, s)
    out["PIT"] = [float(v) for v in pit_histogram(y, s, seed=seed)]
    return out
