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

Intervals widen with shift (:meth:`ShiftReference.widening`): the training spots' squared
residuals of the *cross-fitted* ridge prior (fitted without their section, so each saw a real
shift between sections) are regressed on their cross-fitted distance by isotonic regression
(scikit-learn; non-decreasing, no shape assumed beyond that), and a spot's sample deviations are
multiplied by the square root of the fitted value over its value at the :data:`WIDEN_FROM`
quantile of the cross-fitted distances, never below 1: a spot within the range that the training
sections lie from each other keeps its width, a spot farther out gets wider intervals, up to the
widest the training data showed (the fit is flat beyond its range). The spread is calibrated
with these multipliers applied. (Relative to the mean, as first built, the validation section's
spots were narrowed on average, so the calibrated spread widened every new section alike.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)

#: dimensions of the random projection, neighbours averaged, training spots kept
DIMS, NEIGHBOURS, REFERENCE_SPOTS = 128, 10, 4096
#: a spot's deviations widen only beyond this quantile (the median) of the training spots'
#: cross-fitted distances (benchmarks/results/spread_levers.md: relative to the mean, the
#: validation spots were narrowed, so the calibrated spread widened every new section alike)
WIDEN_FROM = 0.5
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
    groups: np.ndarray | None = None    # (n,) each point's training section (or block)
    widen_d: np.ndarray | None = None   # knots of the widening: cross-fitted distance …
    widen_m: np.ndarray | None = None   # … → multiplier of the sample deviations
    #: q in [0, 1]: the multiplier is relative to its value at the q-quantile of the cross-fitted
    #: distances and never below 1 (only spots farther than that widen); None (runs from before
    #: it): relative to the training spots' mean, so spots nearer than typical get narrower
    widen_from: float | None = None

    def project(self, cond: np.ndarray) -> np.ndarray:
        return np.asarray(cond, dtype=np.float32) @ projection(self.width, self.seed, self.points.shape[1])

    def distances(self, cond: np.ndarray, exclude: int | None = None) -> np.ndarray:
        """Mean distance of each spot to its ``k`` nearest training spots (those of training
        section ``exclude`` left out: a cross-fitted distance for that section's own spots)."""
        from sklearn.neighbors import NearestNeighbors

        points = self.points if exclude is None or self.groups is None else self.points[self.groups != exclude]
        nn = NearestNeighbors(n_neighbors=min(self.k, len(points))).fit(points)
        return nn.kneighbors(self.project(cond))[0].mean(1)

    def widening(self, cond: np.ndarray, exclude: int | None = None) -> np.ndarray | None:
        """Each spot's multiplier of its sample deviations (module docstring); None for a
        reference without the fit (runs from before it)."""
        if self.widen_d is None:
            return None
        m = np.interp(self.distances(cond, exclude), self.widen_d, self.widen_m)
        if self.widen_from is not None:
            start = np.interp(np.quantile(self.cross, self.widen_from), self.widen_d, self.widen_m)
            m = np.maximum(m / start, 1.0)
        return m.astype(np.float32)

    def score(self, cond: np.ndarray) -> np.ndarray:
        """Each spot's shift score in [0, 1] (see the module docstring)."""
        d = self.distances(cond)
        return (np.searchsorted(self.cross, d, side="right") / len(self.cross)).astype(np.float32)

    def state(self) -> dict:
        out = {"points": torch.from_numpy(self.points.astype(np.float16)), "cross": torch.from_numpy(self.cross),
               "width": self.width, "seed": self.seed, "k": self.k}
        for key in ("groups", "widen_d", "widen_m"):
            if getattr(self, key) is not None:
                out[key] = torch.from_numpy(np.ascontiguousarray(getattr(self, key)))
        if self.widen_from is not None:
            out["widen_from"] = float(self.widen_from)
        return out

    @classmethod
    def from_state(cls, state: dict | None) -> ShiftReference | None:
        if not state:
            return None
        extra = {k: np.asarray(state[k]) for k in ("groups", "widen_d", "widen_m") if k in state}
        return cls(np.asarray(state["points"], dtype=np.float32), np.asarray(state["cross"], dtype=np.float32),
                   int(state["width"]), int(state["seed"]), int(state["k"]), **extra,
                   widen_from=float(state["widen_from"]) if "widen_from" in state else None)


def fit_widening(dist: np.ndarray, sq_resid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Knots (distance, multiplier): the square root of the isotonic fit of the spots' mean
    squared cross-fitted residual ``sq_resid`` on their cross-fitted distance ``dist``, over its mean."""
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(dist, sq_resid)
    m = np.sqrt(np.maximum(iso.y_thresholds_, 1e-6) / max(float(np.mean(sq_resid)), 1e-6))
    return iso.X_thresholds_.astype(np.float32), m.astype(np.float32)


def fit_reference(cond: np.ndarray, groups: np.ndarray, seed: int = 0,
                  z: np.ndarray | None = None) -> ShiftReference | None:
    """The reference of training spots ``cond`` (one row per spot) from sections/blocks ``groups``,
    with the widening fitted on their cross-fitted residuals ``z`` (standardised, ``(n, genes)``)
    when given; None with fewer than two groups (nothing to cross-fit on)."""
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
    ref.points, ref.cross, ref.groups = points, np.sort(cross), groups.astype(np.int32)
    if z is not None:
        ref.widen_d, ref.widen_m = fit_widening(cross, (np.asarray(z, dtype=np.float32)[keep] ** 2).mean(1))
        ref.widen_from = WIDEN_FROM
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


def attach_shift(model, adata, embeddings: np.ndarray, xy: np.ndarray | None, name: str,
                 settings=None) -> dict | None:
    """``obs['shift']``, ``obs['widening']`` (each spot's multiplier of its sample deviations, when
    ``settings`` widen with shift) and the summary ``uns['stem']['shift']`` of a prediction
    AnnData (nothing for a model trained before the score existed); returns the summary."""
    scores = model.shift(embeddings, xy)
    if scores is None:
        return None
    adata.obs["shift"] = scores
    widening = None if settings is None else model.widening(model.condition(embeddings, xy), settings)
    if widening is not None:
        adata.obs["widening"] = widening
    summary = summarise_shift(scores, name)
    adata.uns["stem"] = {**dict(adata.uns.get("stem", {})), "shift": summary}
    return summary
