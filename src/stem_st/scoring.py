"""The proper scores of an ensemble forecast, from the maintained ``scoringrules`` package
(Zanetta & Allen): fair CRPS, fair energy score and the variogram score, over samples
``(spots, samples, genes)``. They sit at the bottom of the package so that training (which
watches its samples on a validation section) and evaluation share one implementation; the
conventions are stated in :mod:`stem_st.evaluation.probabilistic`.
"""

from __future__ import annotations

import numpy as np

from .errors import require

VARIOGRAM_P = 0.5
CRPS_ESTIMATOR = "fair"


def check_ensemble(truth: np.ndarray, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Truth ``(spots, genes)`` and samples ``(spots, samples >= 2, genes)`` as float64, or a clear error."""
    y = np.asarray(truth, dtype=np.float64)
    s = np.asarray(samples, dtype=np.float64)
    require(y.ndim == 2 and s.ndim == 3 and s.shape[0] == y.shape[0] and s.shape[2] == y.shape[1],
            f"samples {s.shape} do not match truth {y.shape} as (spots, samples, genes)")
    require(s.shape[1] >= 2, "probabilistic scores need at least two samples per spot")
    return y, s


def _sr():
    """scoringrules, imported on first use: it compiles numba kernels at import (seconds), which
    a command that only refuses its input should not pay."""
    import scoringrules

    return scoringrules


def _per_spot(fn, y: np.ndarray, s: np.ndarray, chunk: int) -> np.ndarray:
    """``fn(truth, samples)`` over chunks of spots (the estimators hold (chunk, M, M, G) arrays)."""
    return np.concatenate([np.asarray(fn(y[i:i + chunk], s[i:i + chunk])) for i in range(0, len(y), chunk)])


def crps(truth: np.ndarray, samples: np.ndarray, chunk: int = 32) -> float:
    """Mean fair-ensemble CRPS over spot × gene entries."""
    y, s = check_ensemble(truth, samples)
    return float(np.mean(_per_spot(lambda a, b: _sr().crps_ensemble(a, b, m_axis=1, estimator=CRPS_ESTIMATOR),
                                   y, s, chunk)))


def energy(truth: np.ndarray, samples: np.ndarray, chunk: int = 32) -> float:
    """Mean fair energy score over spots (the panel as one vector per spot)."""
    y, s = check_ensemble(truth, samples)
    return float(np.mean(_per_spot(lambda a, b: _sr().es_ensemble(a, b, m_axis=1, v_axis=2, estimator="fair"),
                                   y, s, chunk)))


def variogram(truth: np.ndarray, samples: np.ndarray, p: float = VARIOGRAM_P, chunk: int = 32) -> float:
    """Mean variogram score of order ``p`` over spots (plain estimator: compare methods at the
    same number of samples)."""
    y, s = check_ensemble(truth, samples)
    return float(np.mean(_per_spot(lambda a, b: _sr().vs_ensemble(a, b, m_axis=1, v_axis=2, p=p), y, s, chunk)))


def rank_coverage(truth: np.ndarray, samples: np.ndarray, level: float = 0.8, axis: int | None = None):
    """Expected fraction of truths whose randomised rank among the M samples, u = (#below + W) /
    (M + 1) with W uniform on [0, 1 + #equal], lies in the central ``level`` of [0, 1]. For any
    ensemble drawn from the truth's own distribution u is uniform, so this is ``level`` at every M,
    for continuous and discrete (tied) values alike; the empirical-quantile interval of a
    calibrated 20-member ensemble holds only 0.45 / 0.73 / 0.875 at 50 / 80 / 95 %. The
    expectation over W is exact (no random numbers). ``axis``: None for the mean over all entries,
    0 for one per gene."""
    y, s = check_ensemble(truth, samples)
    m = s.shape[1]
    below = (s < y[:, None]).sum(1)
    upto = below + (s == y[:, None]).sum(1) + 1  # u ranges over [below, upto] / (M + 1)
    lo, hi = (m + 1) * (1 - level) / 2, (m + 1) * (1 + level) / 2
    inside = (np.minimum(upto, hi) - np.maximum(below, lo)).clip(0) / (upto - below)
    return inside.mean(axis)
