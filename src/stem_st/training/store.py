"""A float32 matrix on disk, written block by block and read back by row index.

Training keeps its (pair × input) and (pair × gene) matrices here rather than in memory, so the
memory ``stem train`` needs does not grow with the cohort: rows are read with explicit
positional reads (no memory map whose touched pages stay resident), contiguous rows in one read.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import require

ITEM = np.dtype(np.float32).itemsize


class RowStore:
    """``(rows, width)`` float32 rows in a raw file; ``append`` while writing, then read."""

    def __init__(self, path: str | Path, width: int):
        self.path, self.width = Path(path), int(width)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self.rows_written = 0

    def __len__(self) -> int:
        return self.rows_written

    def append(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=np.float32).reshape(-1, self.width)
        os.pwrite(self._fd, block.tobytes(), self.rows_written * self.width * ITEM)
        self.rows_written += len(block)

    def write(self, start: int, block: np.ndarray) -> None:
        """Overwrite rows ``start …`` with ``block`` (already written rows only)."""
        block = np.ascontiguousarray(block, dtype=np.float32).reshape(-1, self.width)
        require(start + len(block) <= self.rows_written, "RowStore.write past the written rows")
        os.pwrite(self._fd, block.tobytes(), start * self.width * ITEM)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start … stop − 1`` in one read."""
        n = max(0, min(stop, self.rows_written) - start)
        buf = os.pread(self._fd, n * self.width * ITEM, start * self.width * ITEM)
        return np.frombuffer(buf, dtype=np.float32).reshape(n, self.width).copy()

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` (any order, repeats allowed), each contiguous run read once."""
        idx = np.asarray(idx, dtype=np.int64)
        require(idx.size == 0 or (idx.min() >= 0 and idx.max() < self.rows_written), "row index out of range")
        uniq, inverse = np.unique(idx, return_inverse=True)
        out = np.empty((len(uniq), self.width), dtype=np.float32)
        breaks = np.flatnonzero(np.diff(uniq) != 1) + 1
        for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, len(uniq)]):
            out[lo:hi] = self.read(int(uniq[lo]), int(uniq[hi - 1]) + 1)
        return out[inverse.reshape(-1)]

    def close(self, remove: bool = False) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if remove:
            self.path.unlink(missing_ok=True)

    def __del__(self):
        self.close()
