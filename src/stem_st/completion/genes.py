"""Gene choice for completion: spatially autocorrelated genes by Moran's I."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from ..errors import require


def knn_weights(xy: np.ndarray, k: int = 6) -> sp.csr_matrix:
    """Binary spatial k-nearest-neighbour weights (row i marks i's k nearest spots)."""
    n = len(xy)
    k = min(k, n - 1)
    _, nb = cKDTree(xy).query(xy, k=k + 1)
    rows = np.repeat(np.arange(n), k)
    return sp.csr_matrix((np.ones(n * k), (rows, nb[:, 1:].ravel())), shape=(n, n))


def morans_i(values: np.ndarray, weights: sp.spmatrix) -> np.ndarray:
    """Moran's I per column: (N / ΣW) · Σᵢⱼ wᵢⱼ zᵢ zⱼ / Σᵢ zᵢ²; NaN for constant columns."""
    x = np.asarray(values, dtype=np.float64)
    z = x - x.mean(0)
    den = (z**2).sum(0)
    num = (z * (weights @ z)).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = len(x) / weights.sum() * num / den
    return np.where(den > 0, out, np.nan)


def select_genes(sections: list[tuple[np.ndarray, np.ndarray]], genes: list[str], n_panel: int = 128,
                 n_total: int = 1024, min_detected: float = 0.05) -> tuple[list[str], list[str]]:
    """(panel, context) from training sections given as ``(log1p values (N, G), xy)``: genes
    detected in ≥ ``min_detected`` of spots are ranked by mean Moran's I over sections; the top
    ``n_panel`` are completed and scored, the next ones (up to ``n_total`` in all) are context."""
    require(n_panel >= 1 and n_total >= n_panel, "need 1 <= panel genes <= total genes")
    scores = np.stack([morans_i(v, knn_weights(xy)) for v, xy in sections])
    detected = np.mean(np.concatenate([(v > 0) for v, _ in sections]), axis=0) >= min_detected
    with warnings.catch_warnings():  # genes constant in every section have no I at all
        warnings.simplefilter("ignore", RuntimeWarning)
        mean_i = np.nanmean(scores, axis=0)
    mean_i = np.nan_to_num(np.where(detected, mean_i, -np.inf), nan=-np.inf)
    order = [i for i in np.argsort(-mean_i, kind="stable") if np.isfinite(mean_i[i])]
    require(len(order) >= n_panel, f"--panel {n_panel} is more than the {len(order)} genes detected in "
                                   f">= {min_detected:.0%} of training spots; lower --panel")
    chosen = [genes[i] for i in order[:n_total]]
    return chosen[:n_panel], chosen[n_panel:]
