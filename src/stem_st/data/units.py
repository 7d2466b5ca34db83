"""The units Stem works in: log2(1 + count) of raw counts."""

from __future__ import annotations

import numpy as np

#: what predictions, samples and the evaluation's default tables are in
UNITS = "log2(1 + count)"


def log2_expression(counts: np.ndarray) -> np.ndarray:
    """Counts → log2(1 + count), float32: the space the model works in."""
    return np.log2(1.0 + np.asarray(counts, dtype=np.float32))
