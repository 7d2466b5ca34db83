"""The units Stem works in: log2(1 + count) of raw counts."""

from __future__ import annotations

import numpy as np

from ..errors import require

#: what predictions, samples and the evaluation's default tables are in
UNITS = "log2(1 + count)"


def log2_expression(counts: np.ndarray) -> np.ndarray:
    """Counts → log2(1 + count), float32: the space the model works in."""
    return np.log2(1.0 + np.asarray(counts, dtype=np.float32))


def resample_depth(log2_values: np.ndarray, depth: float, seed: int = 0) -> np.ndarray:
    """log2(1 + count) values (truth-like samples at the training depth) as a section sequenced
    at ``depth`` × that depth would measure them: counts ``c`` → Poisson(depth · c) below 1 (the
    binomial thinning of a count, in the limit of many molecules), depth · c above (a deeper
    section: the level scales, no noise is taken away), back in log2(1 + count)."""
    counts = np.maximum(np.exp2(np.asarray(log2_values, dtype=np.float64)) - 1.0, 0.0)
    if depth >= 1:
        return log2_expression(depth * counts)
    return log2_expression(np.random.default_rng(seed).poisson(depth * counts))


def panel_depth(log2_values: np.ndarray) -> float:
    """The median over spots of the panel's total count, from log2(1 + count) ``(spots, genes)``."""
    return float(np.median(np.maximum(np.exp2(np.asarray(log2_values, dtype=np.float64)) - 1.0, 0.0).sum(-1)))


LATTICE_WAYS = ("log", "count")


def to_count_lattice(log2_values: np.ndarray, way: str = "log", seed: int = 0,
                     uniforms: np.ndarray | None = None) -> np.ndarray:
    """Continuous log2(1 + count) values moved onto the values a measured spot can take,
    log2(1 + k) for integer k ≥ 0: each value x (negatives count as 0) goes to one of its two
    neighbours lo ≤ x < hi at random, with P(hi) = (x − lo) / (hi − lo) (``log``: x's mean in
    log2(1 + count) is kept) or the count's fractional part (``count``: the mean count is kept).
    ``uniforms`` (the values' shape) fix the draws; else they come from ``seed``."""
    require(way in LATTICE_WAYS, f"unknown lattice rounding '{way}'; choose {', '.join(LATTICE_WAYS)}")
    x = np.maximum(np.asarray(log2_values, dtype=np.float64), 0.0)
    c = np.exp2(x) - 1.0
    k = np.floor(c + 1e-6)
    lo, hi = np.log2(1.0 + k), np.log2(2.0 + k)
    p = (x - lo) / (hi - lo) if way == "log" else c - k
    u = np.random.default_rng(seed).random(x.shape) if uniforms is None else uniforms
    return np.where(u < np.clip(p, 0.0, 1.0), hi, lo).astype(np.float32)
