"""Completion baselines on the same masked data: every point function maps log1p values (N, G)
with zeros (dropouts and hidden entries alike) to a prediction for every entry; the sampled
baselines give K draws ``(N, K, G)`` of every entry (residual bootstrap or Gaussian noise about
a point, or a spot's nearest spots in expression space)."""

from __future__ import annotations

import warnings

import numpy as np
from scipy.spatial import cKDTree

from ..errors import require
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


def knn_draws(values: np.ndarray, xy: np.ndarray, k: int = 20, n_pcs: int = 30) -> np.ndarray:
    """The values ``(N, k, G)`` of each spot's ``k`` nearest other spots in expression space
    (PCA of log1p values): knn smoothing's neighbours as draws."""
    x = values - values.mean(0)
    n_pcs = max(1, min(n_pcs, *x.shape))
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    pcs = u[:, :n_pcs] * s[:n_pcs]
    _, nb = cKDTree(pcs).query(pcs, k=min(k + 1, len(x)))
    return np.asarray(values, dtype=np.float32)[np.asarray(nb).reshape(len(x), -1)[:, 1:]]


def knn_smoothing(values: np.ndarray, xy: np.ndarray, k: int = 6, n_pcs: int = 30) -> np.ndarray:
    """Average of each spot's ``k`` nearest spots in expression space (PCA of log1p values)."""
    return knn_draws(values, xy, k, n_pcs).mean(1).astype(np.float32)


def residuals(truth: np.ndarray, point: np.ndarray, hidden: np.ndarray) -> list[np.ndarray]:
    """Per gene, the residuals truth − point at its ``hidden`` entries (log1p)."""
    r = np.asarray(truth, dtype=np.float64) - np.asarray(point, dtype=np.float64)
    h = np.asarray(hidden, dtype=bool)
    return [r[h[:, g], g] for g in range(h.shape[1])]


def merge_residuals(pools: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Gene-wise concatenation of several sections' :func:`residuals`."""
    return [np.concatenate(gene) for gene in zip(*pools)]


def _pooled(res: list[np.ndarray], min_count: int) -> list[np.ndarray]:
    """Each gene's residuals, or every gene's together where it has fewer than ``min_count``."""
    everything = np.concatenate(res)
    require(len(everything) > 0, "no residuals to resample")
    return [r if len(r) >= min_count else everything for r in res]


def bootstrap_draws(point: np.ndarray, res: list[np.ndarray], k: int, rng: np.random.Generator,
                    min_count: int = 10) -> np.ndarray:
    """``k`` draws ``(N, k, G)``: ``point`` plus residuals resampled with replacement from each
    gene's pool (every gene's pool together where it has fewer than ``min_count``), clipped at 0."""
    p = np.asarray(point, dtype=np.float64)
    require(len(res) == p.shape[1], f"{len(res)} residual pools for {p.shape[1]} genes")
    out = np.empty((p.shape[0], k, p.shape[1]))
    for g, r in enumerate(_pooled(res, min_count)):
        out[:, :, g] = p[:, g, None] + rng.choice(r, size=(p.shape[0], k))
    return np.maximum(out, 0.0).astype(np.float32)


def residual_sd(res: list[np.ndarray], min_count: int = 10) -> np.ndarray:
    """Per-gene root mean square of the residuals (every gene's together where a gene has
    fewer than ``min_count``): the sd of the point's error, its bias included."""
    return np.array([np.sqrt(np.mean(r ** 2)) for r in _pooled(res, min_count)])


def gaussian_draws(point: np.ndarray, sd: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` draws ``(N, k, G)``: ``point`` plus N(0, sd_g²) noise per gene, clipped at 0."""
    p = np.asarray(point, dtype=np.float64)[:, None]
    noise = rng.standard_normal((p.shape[0], k, p.shape[2])) * np.asarray(sd, dtype=np.float64)
    return np.maximum(p + noise, 0.0).astype(np.float32)


BASELINES = {"zeros": zeros, "neighbour_mean": neighbour_mean, "adaptive_median": adaptive_median,
             "knn_smoothing": knn_smoothing}
