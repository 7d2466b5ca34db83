"""Tissue detection on a low-resolution copy of a slide, and a grid of virtual spots over it."""

from __future__ import annotations

import numpy as np

from ..errors import require

LAYOUTS = ("hex", "square")


def tissue_mask(rgb: np.ndarray, min_object_frac: float = 5e-4, closing_px: int = 2,
                max_threshold: float = 0.15) -> np.ndarray:
    """Boolean tissue mask of a thumbnail ``(H, W, 3)`` uint8.

    Otsu threshold on the HSV saturation (stained tissue is coloured, glass and background
    are grey or white, whatever their brightness) capped at ``max_threshold`` (glass reads
    0.02–0.05 on HER2ST, tissue above 0.15; the cap keeps a field that is nearly all tissue from
    being split inside the tissue), a small closing, removal of objects smaller than
    ``min_object_frac`` of the image, and hole filling.
    """
    from scipy import ndimage
    from skimage.color import rgb2hsv
    from skimage.filters import gaussian, threshold_otsu
    from skimage.morphology import disk, remove_small_objects

    require(rgb.ndim == 3 and rgb.shape[2] == 3, "tissue detection needs an RGB image")
    sat = gaussian(rgb2hsv(rgb[..., :3])[..., 1], sigma=1.0)
    if np.ptp(sat) == 0:
        return np.zeros(sat.shape, dtype=bool)
    mask = sat > min(threshold_otsu(sat), max_threshold)
    if closing_px > 0:
        mask = ndimage.binary_closing(mask, structure=disk(closing_px), border_value=0)
    mask = remove_small_objects(mask, max_size=max(16, int(min_object_frac * mask.size)))
    return ndimage.binary_fill_holes(mask)


def spot_grid(width: int, height: int, pitch_px: float, layout: str = "hex") -> np.ndarray:
    """Centres ``(N, 2)`` (x, y) of a spot lattice covering a ``width × height`` image:
    ``hex`` (rows √3/2 · pitch apart, every other row shifted by half a pitch; Visium) or
    ``square`` (legacy ST)."""
    require(layout in LAYOUTS, f"unknown grid layout '{layout}'; choose {', '.join(LAYOUTS)}")
    require(pitch_px > 0, "the spot pitch must be positive")
    dy = pitch_px * np.sqrt(3) / 2 if layout == "hex" else pitch_px
    pts = []
    for r, y in enumerate(np.arange(pitch_px / 2, height, dy)):
        x0 = pitch_px / 2 + (pitch_px / 2 if layout == "hex" and r % 2 else 0.0)
        xs = np.arange(x0, width, pitch_px)
        pts.append(np.stack([xs, np.full_like(xs, y)], 1))
    return np.concatenate(pts) if pts else np.zeros((0, 2))


def tissue_fraction(mask: np.ndarray, scale: float, xy: np.ndarray, side_px: float) -> np.ndarray:
    """Fraction of tissue in the ``side_px`` square around each full-resolution centre, read
    from ``mask`` (whose pixels are full-resolution pixels × ``scale``) with a summed-area table."""
    sat = np.pad(mask.astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    h, w = mask.shape
    half = max(0.5, side_px * scale / 2)
    cx, cy = xy[:, 0] * scale, xy[:, 1] * scale
    x0 = np.clip(np.floor(cx - half), 0, w).astype(int)
    x1 = np.clip(np.ceil(cx + half), 0, w).astype(int)
    y0 = np.clip(np.floor(cy - half), 0, h).astype(int)
    y1 = np.clip(np.ceil(cy + half), 0, h).astype(int)
    area = np.maximum((x1 - x0) * (y1 - y0), 1)
    inside = sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]
    full = (2 * np.ceil(half)) ** 2  # off-image parts count as background
    return inside / np.maximum(area, full)
