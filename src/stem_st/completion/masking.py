"""Masked evaluation: hide measured entries, complete, score only the hidden ones.

Two protocols choose how often a measured entry of gene g is hidden, from f_g, the fraction
of the section's spots in which g is measured (non-zero):

- ``dropout``: p_g = 1 − f_g, the gene's own dropout rate, so hiding mimics real dropout;
- ``spared``: p_g = min(1, (1 − f_g) / f_g), SpaRED's choice, which hides as many entries as
  are already missing (every measured entry of a gene detected in at most half the spots).
"""

from __future__ import annotations

import numpy as np

from ..errors import require

PROTOCOLS = ("dropout", "spared")


def dropout_rates(values: np.ndarray) -> np.ndarray:
    """Fraction of zero entries per gene (column)."""
    return (np.asarray(values) == 0).mean(0)


def hide_probabilities(values: np.ndarray, protocol: str = "dropout") -> np.ndarray:
    """Per-gene probability that a measured entry is hidden, under ``protocol``."""
    require(protocol in PROTOCOLS, f"unknown masking protocol '{protocol}'; choose {' or '.join(PROTOCOLS)}")
    drop = dropout_rates(values)
    if protocol == "dropout":
        return drop
    f = 1.0 - drop
    with np.errstate(divide="ignore"):
        return np.where(f > 0, np.minimum(1.0, drop / np.where(f > 0, f, 1.0)), 0.0)


def sample_hidden(values: np.ndarray, rng: np.random.Generator, protocol: str = "dropout") -> np.ndarray:
    """Boolean mask of measured (non-zero) entries to hide, each with its gene's probability
    under ``protocol`` (computed on ``values``, i.e. per section)."""
    v = np.asarray(values)
    p = hide_probabilities(v, protocol)
    return (v != 0) & (rng.random(v.shape) < p[None, :])


def hide(values: np.ndarray, hidden: np.ndarray) -> np.ndarray:
    """A copy of ``values`` with the ``hidden`` entries removed (zero, like any dropout): the
    hidden values reach no model input, not even through a neighbour."""
    out = np.array(values, dtype=np.float32, copy=True)
    out[:, : hidden.shape[1]][hidden] = 0.0
    return out


def masked_scores(truth: np.ndarray, pred: np.ndarray, hidden: np.ndarray, min_entries: int = 3) -> dict:
    """MSE, MAE, R², mean error (bias) over hidden entries; mean Pearson r per gene and per
    spot over the hidden entries of each (genes/spots with fewer than ``min_entries`` hidden or
    constant values are skipped and counted)."""
    y, p = np.asarray(truth, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    h = np.asarray(hidden, dtype=bool)
    yt, pt = y[h], p[h]
    out = {"entries": int(h.sum()), "MSE": float(np.mean((pt - yt) ** 2)), "MAE": float(np.mean(np.abs(pt - yt))),
           "R2": float(1 - np.sum((pt - yt) ** 2) / np.sum((yt - yt.mean()) ** 2)),
           "bias": float(np.mean(pt - yt))}
    for axis, name in ((0, "gene"), (1, "spot")):
        rs = []
        for j in range(y.shape[1 - axis]):
            sel = h[:, j] if axis == 0 else h[j]
            if sel.sum() < min_entries:
                continue
            a = y[:, j][sel] if axis == 0 else y[j][sel]
            b = p[:, j][sel] if axis == 0 else p[j][sel]
            if np.ptp(a) > 0 and np.ptp(b) > 0:
                rs.append(np.corrcoef(a, b)[0, 1])
        out[f"PCC_{name}"] = float(np.mean(rs)) if rs else float("nan")
        out[f"{name}s_scored"] = len(rs)
    return out
