"""The region-reading interface every image reader implements."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class ImageSource:
    """Read RGB regions of an image at full resolution, padding outside with white."""

    path: Path
    width: int
    height: int
    mpp: float | None = None  # µm per pixel from the file's own metadata, if it has any

    def _read(self, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        raise NotImplementedError

    def read_region(self, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        """Return the ``h × w × 3`` uint8 region whose top-left corner is ``(x0, y0)``."""
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        cx0, cy0 = max(x0, 0), max(y0, 0)
        cx1, cy1 = min(x0 + w, self.width), min(y0 + h, self.height)
        if cx1 > cx0 and cy1 > cy0:
            out[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = self._read(cx0, cy0, cx1 - cx0, cy1 - cy0)
        return out

    def thumbnail(self, max_side: int) -> tuple[np.ndarray, float]:
        """Return a downscaled RGB copy and its scale factor (thumbnail px per full-res px)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release file handles."""

    def __enter__(self) -> ImageSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def rgb(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.shape[2] == 4:  # composite transparent pixels onto white
        alpha = arr[..., 3:4].astype(np.float32) / 255.0
        arr = (arr[..., :3] * alpha + 255 * (1 - alpha)).round().astype(np.uint8)
    return np.ascontiguousarray(arr[..., :3])
