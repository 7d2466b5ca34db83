"""Summaries of per-spot expression samples: mean, median, mode, and standard deviation."""

from __future__ import annotations

import numpy as np

from ..data.units import panel_depth, resample_depth
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


def at_depth(point: np.ndarray, samples: np.ndarray, settings,  # a PredictSettings
             observed_depth: float | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """(point, samples, depth ratio) of a section sequenced at ``settings.depth`` × the
    training depth (:func:`~stem_st.data.units.resample_depth`; the point becomes the
    samples' summary). ``auto``: the ratio of the section's observed median panel count per
    spot to the prediction's, so the tissue's own expression level does not count as depth."""
    depth = settings.depth
    if depth == "auto":
        require(observed_depth is not None and observed_depth > 0,
                "--depth auto needs the section's counts (none are measured); give the ratio instead")
        depth = observed_depth / max(panel_depth(point), 1e-6)
    if float(depth) == 1.0:
        return point, samples, 1.0
    samples = resample_depth(samples, float(depth), settings.seed)
    return summarise(samples, settings.summary or "mean"), samples, round(float(depth), 4)
