"""How unlike the training data a spot is: the shift score.

A spot's condition (the model's standardised embedding with its context) is mapped by a fixed
Gaussian random projection to :data:`DIMS` dimensions, which keeps Euclidean distances (Johnson–
Lindenstrauss) in every direction, and its mean distance to its ``k`` nearest training spots is
measured (scikit-learn's NearestNeighbors). A projection on the leading principal components
would keep only the directions where the training spots vary most (the tissue), and miss a shift
that lives where they barely vary (another scanner, resolution or stain). The distance is
reported as a percentile of the training spots' own *cross-fitted* distances: each training
spot's distance to the ``k`` nearest spots of the *other* training sections (or spatial blocks,
with one section), i.e. how far a new section of the training population lies from the rest. A
spot of a new section like the training ones scores about uniformly in [0, 1]; a spot farther
from the training data than 99 % of the training spots are from the other sections scores above
:data:`SPOT_THRESHOLD`. A section is flagged when its median spot is beyond
:data:`SECTION_THRESHOLD`: then most of it lies outside the range the model was trained and
calibrated on, and its intervals are not to be trusted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)

#: dimensions of the random projection, neighbours averaged, training spots kept
DIMS, NEIGHBOURS, REFERENCE_SPOTS = 128, 10, 4096
#: a spot is flagged above this percentile; a section when its median spot is above the other
SPOT_THRESHOLD, SECTION_THRESHOLD = 0.99, 0.95
MEANING = ("percentile of the spot's mean distance to its 10 nearest training spots (the model's standardised "
           "condition, randomly projected to 128 dimensions) among the training spots' own distances to the "
           "other training sections")


def projection(width: int, seed: int, dims: int = DIMS) -> np.ndarray:
    """The fixed ``(width, dims)`` Gaussian random projection of ``seed`` (regenerated, not stored)."""
    return (np.random.default_rng(seed).standard_normal((width, dims)) / np.sqrt(dims)).astype(np.float32)


@dataclass
class ShiftReference:
    """The training spots' projections and their cross-fitted distances (sorted)."""

    points: np.ndarray  # (n, DIMS) projected training spots
    cross: np.ndarray   # (n,) sorted cross-fitted distances
    width: int          # the condition's width
    seed: int = 0
    k: int = NEIGHBOURS

    def project(self, cond: np.ndarray) -> np.ndarray:
        return np.asarray(cond, dtype=np.float32) @ projection(self.width, self.seed, self.points.shape[1])

    def distances(self, cond: np.ndarray) -> np.ndarray:
        """Mean distance of each spot to its ``k`` nearest training spots."""
        from sklearn.neighbors import NearestNeighbors

        nn = NearestNeighbors(n_neighbors=min(self.k, len(self.points))).fit(self.points)
        return nn.kneighbors(self.project(cond))[0].mean(1)

    def score(self, cond: np.ndarray) -> np.ndarray:
        """Each spot's shift score in [0, 1] (see the module docstring)."""
        d = self.distances(cond)
        return (np.searchsorted(self.cross, d, side="right") / len(self.cross)).astype(np.float32)

    def state(self) -> dict:
        return {"points": torch.from_numpy(self.points.astype(np.float16)), "cross": torch.from_numpy(self.cross),
                "width": self.width, "seed": self.seed, "k": self.k}

    @classmethod
    def from_state(cls, state: dict | None) -> ShiftReference | None:
        if not state:
            return None
        return cls(np.asarray(state["points"], dtype=np.float32), np.asarray(state["cross"], dtype=np.float32),
                   int(state["width"]), int(state["seed"]), int(state["k"]))


def fit_reference(cond: np.ndarray, groups: np.ndarray, seed: int = 0) -> ShiftReference | None:
    """The reference of training spots ``cond`` (one row per spot) from sections/blocks ``groups``;
    None with fewer than two groups (nothing to cross-fit on)."""
    from sklearn.neighbors import NearestNeighbors

    cond, groups = np.asarray(cond, dtype=np.float32), np.asarray(groups)
    if len(np.unique(groups)) < 2 or len(cond) < 2 * NEIGHBOURS:
        return None
    keep = np.sort(np.random.default_rng(seed).permutation(len(cond))[:REFERENCE_SPOTS])
    ref = ShiftReference(np.empty((0, DIMS), np.float32), np.empty(0, np.float32), cond.shape[1], seed)
    points, groups = ref.project(cond[keep]), groups[keep]
    points = points.astype(np.float16).astype(np.float32)  # as stored
    cross = np.empty(len(points), dtype=np.float32)
    for g in np.unique(groups):
        own, rest = groups == g, groups != g
        nn = NearestNeighbors(n_neighbors=min(NEIGHBOURS, int(rest.sum()))).fit(points[rest])
        cross[own] = nn.kneighbors(points[own])[0].mean(1)
    ref.points, ref.cross = points, np.sort(cross)
    return ref


def summarise_shift(scores: np.ndarray, section: str) -> dict:
    """The section summary stored in ``uns['stem']['shift']``; logs the warning when flagged."""
    median = float(np.median(scores)) if len(scores) else 0.0
    flagged = median > SECTION_THRESHOLD
    out = {"median": round(median, 4), "spots_flagged": round(float((scores > SPOT_THRESHOLD).mean()), 4),
           "spot_threshold": SPOT_THRESHOLD, "section_threshold": SECTION_THRESHOLD, "flagged": flagged,
           "meaning": MEANING}
    if flagged:
        log.warning("%s is unlike the training data: its median spot's shift score is %.2f (above %.2f: farther "
                    "from the training spots than %d %% of them are from the other training sections). Its "
                    "intervals are likely too narrow there; train on sections like it (same scanner, "
                    "resolution, tissue) or read its predictions as uncalibrated.", section, median,
                    SECTION_THRESHOLD, round(100 * SECTION_THRESHOLD))
    return out


def attach_shift(model, adata, embeddings: np.ndarray, xy: np.ndarray | None, name: str) -> dict | None:
    """``obs['shift']`` and the summary ``uns['stem']['shift']`` of a prediction AnnData (nothing
    for a model trained before the score existed); returns the summary."""
    scores = model.shift(embeddings, xy)
    if scores is None:
        return None
    adata.obs["shift"] = scores
    summary = summarise_shift(scores, name)
    adata.uns["stem"] = {**dict(adata.uns.get("stem", {})), "shift": summary}
    return summary
