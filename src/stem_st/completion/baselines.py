"""Completion baselines on the same masked data: every function maps log1p values (N, G)
with zeros (dropouts and hidden entries alike) to a prediction for every entry."""

from __future__ import annotations

import warnings

import numpy as np
from scipy.spatial import cKDTree

from .neighbours import neighbourhoods, rings


def zeros(values: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """No completion."""
    return np.zeros_like(values, dtype=np.float32)


def neighbour_mean(values: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Mean of the (up to 6) spatial neighbours' values."""
    idx, present = neighbourhoods(xy)
    nb, pr = idx[:, 1:], present[:, 1:].astype(np.float32)
    total = (values[nb] * pr[..., None]).sum(1)
    return (total / np.maximum(pr.sum(1), 1)[:, None]).astype(np.float32)


def adaptive_median(values: np.ndarray, xy: np.ndarray, n_rings: int = 3) -> np.ndarray:
    """SpaRED's adaptive median filter: the median of the non-zero values in the nearest ring
    of 6 neighbours, growing to the next ring while a ring has none; 0 if none has any."""
    rg = rings(xy, n_rings)
    out = np.zeros_like(values, dtype=np.float32)
    done = np.zeros(values.shape, dtype=bool)
    for r in range(n_rings):
        nb = rg[:, r]
        vals = np.where(nb[..., None] >= 0, values[np.maximum(nb, 0)], 0.0).astype(np.float64)
        vals[vals == 0] = np.nan
        with warnings.catch_warnings():  # all-NaN slices: no non-zero neighbour in this ring
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(vals, axis=1)
        take = ~done & ~np.isnan(med)
        out[take] = med[take]
        done |= take
    return out


def knn_smoothing(values: np.ndarray, xy: np.ndarray, k: int = 6, n_pcs: int = 30) -> np.ndarray:
    """Average of each spot's ``k`` nearest spots in expression space (PCA of log1p values)."""
    x = values - values.mean(0)
    n_pcs = max(1, min(n_pcs, *x.shape))
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    pcs = u[:, :n_pcs] * s[:n_pcs]
    _, nb = cKDTree(pcs).query(pcs, k=min(k + 1, len(x)))
    return values[np.asarray(nb).reshape(len(x), -1)[:, 1:]].mean(1).astype(np.float32)


BASELINES = {"zeros": zeros, "neighbour_mean": neighbour_mean, "adaptive_median": adaptive_median,
             "knn_smoothing": knn_smoothing}
