"""Spatial context: each spot's embedding beside the mean embeddings of its neighbourhood.

Spots are neighbours when their centres are at most ``factor`` × the section's spot pitch
apart (the median nearest-neighbour distance). ``ring1`` (factor 1.5) is the 6 spots around a
spot on a Visium hexagon, the 4 (plus 4 diagonals at √2 pitch) on a legacy-ST square grid;
``ring2`` adds a second block, the mean over the disc of radius 2.5 pitch (18 spots on a
hexagon: a field of view about 5 spots across, ≈ 500 µm on Visium, like TRIPLEX's global
view). A spot without neighbours is its own context.

``stem prepare`` also stores the graphs in each section (:func:`store_graphs`, squidpy's key names),
for users to inspect and for squidpy; every stage recomputes them from ``obsm['spatial']`` with
the same function, so a subset or edited AnnData never carries a stale graph.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from ..errors import require

#: each context's neighbourhood radii, in spot pitches (one block of inputs per radius)
RADII = {"none": (), "ring1": (1.5,), "ring2": (1.5, 2.5)}
CONTEXTS = tuple(RADII)


def context_blocks(context: str) -> int:
    """How many embedding-wide blocks a context's inputs have (1 + one per radius)."""
    require(context in RADII, f"unknown context '{context}'; choose {', '.join(CONTEXTS)}")
    return 1 + len(RADII[context])


def ring_neighbours(xy: np.ndarray, factor: float = 1.5) -> list[np.ndarray]:
    """For each spot, the indices of the other spots within ``factor`` × pitch."""
    xy = np.asarray(xy, dtype=np.float64)
    require(xy.ndim == 2 and xy.shape[1] == 2 and np.isfinite(xy).all(),
            "spot coordinates must be finite (spots, 2)")
    n = len(xy)
    if n < 2:
        return [np.zeros(0, dtype=np.int64) for _ in range(n)]
    tree = cKDTree(xy)
    pitch = spot_pitch(xy, tree)
    found = tree.query_ball_point(xy, r=factor * pitch) if pitch > 0 else [[i] for i in range(n)]
    return [np.array(sorted(j for j in nb if j != i), dtype=np.int64) for i, nb in enumerate(found)]


def spot_pitch(xy: np.ndarray, tree: cKDTree | None = None) -> float:
    """The section's spot pitch: the median nearest-neighbour distance (0 for fewer than 2 spots)."""
    xy = np.asarray(xy, dtype=np.float64)
    if len(xy) < 2:
        return 0.0
    return float(np.median((tree or cKDTree(xy)).query(xy, k=2)[0][:, 1]))


#: the distance shells ("rings") of spatial structure, in spot pitches: ring k holds the pairs of
#: spots between SHELLS[k-1] and SHELLS[k] apart (ring 1 = the ring-1 neighbours of the context)
SHELLS = (0.0, 1.5, 2.5, 3.5)


def shell_pairs(xy_pitch: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each ring of :data:`SHELLS`, the pairs (i < j) of spots at that distance, as index
    arrays; ``xy_pitch`` in spot pitches (so a subset of a section keeps its rings)."""
    xy = np.asarray(xy_pitch, dtype=np.float64)
    pairs = cKDTree(xy).query_pairs(SHELLS[-1], output_type="ndarray") if len(xy) > 1 \
        else np.zeros((0, 2), dtype=np.int64)
    d = np.linalg.norm(xy[pairs[:, 0]] - xy[pairs[:, 1]], axis=1) if len(pairs) else np.zeros(0)
    return [(pairs[m, 0], pairs[m, 1]) for lo, hi in zip(SHELLS[:-1], SHELLS[1:])
            for m in [(d > lo) & (d <= hi)]]


def neighbour_mean(values: np.ndarray, neighbours: list[np.ndarray]) -> np.ndarray:
    """Mean of ``values[neighbours[i]]`` for each spot ``i`` (its own value when it has none);
    ``values`` is ``(spots, ...)``."""
    out = np.empty_like(values)
    for i, nb in enumerate(neighbours):
        out[i] = values[nb].mean(0) if len(nb) else values[i]
    return out


def add_context(emb: np.ndarray, xy: np.ndarray | None, context: str) -> np.ndarray:
    """Spot inputs for a recipe's ``context``: ``emb`` itself (``none``) or ``emb`` followed by
    the neighbourhood means at each of the context's radii, concatenated on the last axis;
    ``emb`` is ``(spots, ..., C)``."""
    if context_blocks(context) == 1:
        return emb
    require(xy is not None and len(xy) == len(emb),
            "spatial context needs one coordinate per spot (obsm['spatial'])")
    means = [neighbour_mean(emb, ring_neighbours(xy, r)) for r in RADII[context]]
    return np.concatenate([emb, *means], axis=-1)


def graph_matrices(xy: np.ndarray, factor: float) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """The ring graph at ``factor`` × pitch as sparse (spots, spots) connectivities (1.0 per
    neighbour) and centre distances (in the units of ``xy``)."""
    xy = np.asarray(xy, dtype=np.float64)
    nbs = ring_neighbours(xy, factor)
    rows = np.repeat(np.arange(len(nbs)), [len(nb) for nb in nbs])
    cols = np.concatenate(nbs) if nbs else np.zeros(0, dtype=np.int64)
    dist = np.linalg.norm(xy[rows] - xy[cols], axis=1) if len(rows) else np.zeros(0)
    shape = (len(xy), len(xy))
    return (sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=shape),
            sp.csr_matrix((dist, (rows, cols)), shape=shape))


def store_graphs(adata) -> None:
    """Write the ring-1 graph as ``obsp['spatial_connectivities']`` / ``['spatial_distances']``
    with ``uns['spatial_neighbors']`` (squidpy's keys) and the ring-2 disc as
    ``obsp['ring2_connectivities']``, from ``obsm['spatial']`` (nothing when a coordinate is
    not finite: a model without context predicts such spots, a graph cannot hold them)."""
    xy = np.asarray(adata.obsm["spatial"], dtype=np.float64)
    if not np.isfinite(xy).all():
        return
    conn, dist = graph_matrices(xy, RADII["ring1"][0])
    adata.obsp["spatial_connectivities"], adata.obsp["spatial_distances"] = conn, dist
    adata.obsp["ring2_connectivities"] = graph_matrices(xy, RADII["ring2"][1])[0]
    adata.uns["spatial_neighbors"] = {
        "connectivities_key": "spatial_connectivities", "distances_key": "spatial_distances",
        "params": {"radius_pitches": RADII["ring1"][0], "ring2_radius_pitches": RADII["ring2"][1],
                   "coord_type": "generic", "units": "distances in full-resolution pixels"}}
