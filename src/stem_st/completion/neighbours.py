"""Spot neighbourhoods: each spot and its 6 nearest spots, in a fixed order by angle."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from ..errors import require


def neighbourhoods(xy: np.ndarray, k: int = 6, max_factor: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """``(index (N, k+1), present (N, k+1))``: column 0 is the spot itself, then up to ``k``
    neighbours within ``max_factor`` × the section's spot pitch (median nearest-neighbour
    distance), ordered by angle counter-clockwise from the +x axis; missing neighbours (edges)
    are padded with the spot's own index and marked absent."""
    xy = np.asarray(xy, dtype=np.float64)
    require(xy.ndim == 2 and xy.shape[1] == 2, "coordinates must be (spots, 2)")
    n = len(xy)
    idx = np.repeat(np.arange(n)[:, None], k + 1, axis=1)
    present = np.zeros((n, k + 1), dtype=bool)
    present[:, 0] = True
    if n < 2:
        return idx, present
    dist, nb = cKDTree(xy).query(xy, k=min(k + 1, n))
    pitch = float(np.median(dist[:, 1]))
    for i in range(n):
        cand = [(j, d) for j, d in zip(nb[i, 1:], dist[i, 1:]) if j != i and d <= max_factor * pitch]
        if not cand:
            continue
        js = np.array([j for j, _ in cand])
        ang = np.mod(np.arctan2(xy[js, 1] - xy[i, 1], xy[js, 0] - xy[i, 0]), 2 * np.pi)
        js = js[np.argsort(ang, kind="stable")][:k]
        idx[i, 1:1 + len(js)] = js
        present[i, 1:1 + len(js)] = True
    return idx, present


def rings(xy: np.ndarray, n_rings: int = 3, per_ring: int = 6) -> np.ndarray:
    """``(N, n_rings, per_ring)`` indices of the spots ranked 1–6, 7–12, … by distance (growing
    neighbour rings for the adaptive median); -1 where the section has too few spots."""
    xy = np.asarray(xy, dtype=np.float64)
    n = len(xy)
    want = n_rings * per_ring
    k = min(want + 1, n)
    _, nb = cKDTree(xy).query(xy, k=k)
    nb = np.asarray(nb).reshape(n, -1)[:, 1:]
    out = np.full((n, want), -1, dtype=np.int64)
    out[:, :nb.shape[1]] = nb
    return out.reshape(n, n_rings, per_ring)
