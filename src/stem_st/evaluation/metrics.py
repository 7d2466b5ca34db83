"""The paper's metrics, in log2(1 + count) space, over one held-out section's spots.

Conventions (stated in every output as the protocol): Pearson correlation per gene across
spots; genes whose truth or prediction has zero variance have no defined correlation and are
excluded (and counted); PCC-k is the mean of the k highest per-gene correlations; variances
are population variances (ddof = 0) across spots.
"""

from __future__ import annotations

import numpy as np

from ..data.units import UNITS
from ..errors import require

DEFAULT_KS = (10, 50)


def _check_pair(truth: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(truth, dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    require(y.ndim == 2 and y.shape == p.shape,
            f"truth {y.shape} and prediction {p.shape} must both be (spots, genes)")
    require(y.shape[0] >= 2, "at least two spots are needed for correlations")
    return y, p


def pearson_per_gene(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Pearson r per gene (column) across spots; NaN where either side has zero variance."""
    y, p = _check_pair(truth, pred)
    yc, pc = y - y.mean(0), p - p.mean(0)
    syy, spp = (yc**2).sum(0), (pc**2).sum(0)
    ok = (np.ptp(y, axis=0) > 0) & (np.ptp(p, axis=0) > 0)  # constant columns: r undefined
    r = np.full(y.shape[1], np.nan)
    r[ok] = (yc[:, ok] * pc[:, ok]).sum(0) / np.sqrt(syy[ok] * spp[ok])
    return np.clip(r, -1.0, 1.0)


def pcc_at_k(r: np.ndarray, ks: tuple[int, ...] | list[int]) -> dict[str, float]:
    """``{"PCC-k": mean of the k largest finite r}`` for each k (fewer if fewer are finite)."""
    top = np.sort(r[np.isfinite(r)])[::-1]
    return {f"PCC-{k}": float(top[:k].mean()) if len(top) else float("nan") for k in ks}


def rvd(truth: np.ndarray, pred: np.ndarray) -> tuple[float, int]:
    """Relative variance distance: mean over genes of (σ²_pred − σ²_true)² / (σ²_true)²,
    skipping genes with zero true variance. Returns (value, number skipped)."""
    y, p = _check_pair(truth, pred)
    vt, vp = y.var(0), p.var(0)
    ok = np.ptp(y, axis=0) > 0
    value = float(np.mean((vp[ok] - vt[ok]) ** 2 / vt[ok] ** 2)) if ok.any() else float("nan")
    return value, int((~ok).sum())


def interval_coverage(truth: np.ndarray, samples: np.ndarray, level: float = 0.8) -> float:
    """Fraction of true values inside the central ``level`` interval of the samples
    ``(spots, samples, genes)`` (empirical quantiles, linear interpolation)."""
    y = np.asarray(truth, dtype=np.float64)
    s = np.asarray(samples, dtype=np.float64)
    require(s.ndim == 3 and s.shape[0] == y.shape[0] and s.shape[2] == y.shape[1],
            f"samples {s.shape} do not match truth {y.shape} as (spots, samples, genes)")
    lo, hi = np.quantile(s, [(1 - level) / 2, (1 + level) / 2], axis=1)
    return float(((y >= lo) & (y <= hi)).mean())


def gene_variation(truth: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """Per-gene mean and variance across spots for truth and prediction (paper App. A)."""
    y, p = _check_pair(truth, pred)
    return {"truth_mean": y.mean(0), "pred_mean": p.mean(0), "truth_var": y.var(0), "pred_var": p.var(0)}


def score(truth: np.ndarray, pred: np.ndarray, samples: np.ndarray | None = None,
          ks: tuple[int, ...] | list[int] = DEFAULT_KS) -> dict[str, float | int]:
    """Every scalar metric of one method on one section.

    PCC-k for each ``k`` in ``ks`` and for the panel size (``PCC-all`` is that value, whatever
    the panel size), MSE, MAE, RVD, and 80 % interval coverage when ``samples`` are given.
    """
    y, p = _check_pair(truth, pred)
    r = pearson_per_gene(y, p)
    genes = y.shape[1]
    ks = sorted({*ks, genes})
    out: dict[str, float | int] = pcc_at_k(r, ks)
    out["PCC-all"] = out[f"PCC-{genes}"]
    out["MSE"] = float(((p - y) ** 2).mean())
    out["MAE"] = float(np.abs(p - y).mean())
    out["RVD"], out["RVD_genes_skipped"] = rvd(y, p)
    out["genes_scored"] = int(np.isfinite(r).sum())
    out["genes_zero_variance"] = int((~np.isfinite(r)).sum())
    if samples is not None:  # a point prediction has no intervals
        out["coverage80"] = interval_coverage(y, samples)
    return out


#: evaluation units: the paper's, and a depth-normalised one for cross-patient comparisons
UNIT_NAMES = {"log2": UNITS,
              "cp10k": "log2(1 + CP10k), counts scaled to 10 000 per spot over the panel"}


def in_unit(log2_values: np.ndarray, unit: str = "log2") -> np.ndarray:
    """Convert log2(1 + count) values ``(..., genes)`` (truth, predictions or samples) to
    ``unit``: ``log2`` unchanged, ``cp10k`` = log2(1 + 10⁴ · c / Σ_panel c) per spot, so sections
    sequenced to different depths become comparable (all-zero spots stay 0)."""
    if unit not in UNIT_NAMES:
        raise ValueError(f"unknown unit '{unit}'; choose {', '.join(UNIT_NAMES)}")
    if unit == "log2":
        return log2_values
    counts = np.maximum(np.exp2(np.asarray(log2_values, dtype=np.float64)) - 1.0, 0.0)
    total = counts.sum(-1, keepdims=True)
    return np.log2(1.0 + 1e4 * counts / np.where(total > 0, total, 1.0)).astype(np.float32)
