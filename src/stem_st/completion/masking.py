"""Masked evaluation: hide measured entries at each gene's own dropout rate, score only them."""

from __future__ import annotations

import numpy as np


def dropout_rates(values: np.ndarray) -> np.ndarray:
    """Fraction of zero entries per gene (column)."""
    return (np.asarray(values) == 0).mean(0)


def sample_hidden(values: np.ndarray, rng: np.random.Generator, rates: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of measured (non-zero) entries to hide: each non-zero entry of gene g is
    hidden with probability equal to g's dropout rate (so hiding mimics the real dropout)."""
    v = np.asarray(values)
    p = dropout_rates(v) if rates is None else np.asarray(rates)
    return (v != 0) & (rng.random(v.shape) < p[None, :])


def masked_scores(truth: np.ndarray, pred: np.ndarray, hidden: np.ndarray, min_entries: int = 3) -> dict:
    """MSE, MAE, R² over hidden entries; mean Pearson r per gene and per spot over the hidden
    entries of each (genes/spots with fewer than ``min_entries`` hidden or constant values are
    skipped and counted)."""
    y, p = np.asarray(truth, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    h = np.asarray(hidden, dtype=bool)
    yt, pt = y[h], p[h]
    out = {"entries": int(h.sum()), "MSE": float(np.mean((pt - yt) ** 2)), "MAE": float(np.mean(np.abs(pt - yt))),
           "R2": float(1 - np.sum((pt - yt) ** 2) / np.sum((yt - yt.mean()) ** 2))}
    for axis, name in ((0, "gene"), (1, "spot")):
        rs = []
        for j in range(y.shape[1 - axis]):
            sel = h[:, j] if axis == 0 else h[j]
            if sel.sum() < min_entries:
                continue
            a = y[:, j][sel] if axis == 0 else y[j][sel]
            b = p[:, j][sel] if axis == 0 else p[j][sel]
            if np.ptp(a) > 0 and np.ptp(b) > 0:
                rs.append(np.corrcoef(a, b)[0, 1])
        out[f"PCC_{name}"] = float(np.mean(rs)) if rs else float("nan")
        out[f"{name}s_scored"] = len(rs)
    return out
