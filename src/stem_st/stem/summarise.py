"""Summaries of per-spot expression samples: mean, median, mode, and standard deviation."""

from __future__ import annotations

import numpy as np

from ..errors import require

SUMMARIES = ("mean", "median", "mode")


def sample_mode(samples: np.ndarray, bins: int | None = None) -> np.ndarray:
    """Mode along axis 1 of ``(spots, samples, genes)``: the centre of the fullest histogram
    bin per spot and gene (ties → the lowest bin)."""
    s = samples.shape[1]
    bins = bins or max(2, int(np.ceil(np.sqrt(s))))
    lo = samples.min(axis=1, keepdims=True)
    hi = samples.max(axis=1, keepdims=True)
    width = np.where(hi > lo, (hi - lo) / bins, 1.0)
    idx = np.clip(((samples - lo) / width).astype(int), 0, bins - 1)
    counts = np.stack([(idx == b).sum(axis=1) for b in range(bins)], axis=1)
    best = counts.argmax(axis=1)
    mode = lo[:, 0] + (best + 0.5) * width[:, 0]
    return np.where(hi[:, 0] > lo[:, 0], mode, lo[:, 0]).astype(np.float32)


def summarise(samples: np.ndarray, how: str = "mean") -> np.ndarray:
    """Collapse ``(spots, samples, genes)`` to ``(spots, genes)``."""
    require(how in SUMMARIES, f"unknown summary '{how}'; choose {', '.join(SUMMARIES)}")
    if how == "mean":
        return samples.mean(axis=1)
    if how == "median":
        return np.median(samples, axis=1)
    return sample_mode(samples)
