"""Spot patches: physical crop geometry, streamed batched reading, dihedral views."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import require
from .images import ImageSource

#: The 8 symmetries of the square, in a fixed order; view 0 is the original patch.
DIHEDRAL_VIEWS = (
    "identity", "hflip", "vflip", "rot90", "rot180", "rot270", "transpose", "transverse",
)
PATCH_MODES = ("hest", "stem")
HEST_FIELD_UM = 112.0
STEM_MIN_PX = 224


@dataclass(frozen=True)
class PatchGeometry:
    """How a spot's patch is cut: a square of ``side_px`` full-resolution pixels."""

    mode: str
    side_px: int
    field_um: float


def patch_geometry(
    mode: str, mpp: float, spot_diameter_um: float, field_um: float = HEST_FIELD_UM
) -> PatchGeometry:
    """Crop geometry for a section.

    ``hest``: a square ``field_um`` wide (112 µm = 224 px at 0.5 µm/px).
    ``stem``: the reference's crop, max(224 px, spot diameter in px) at full resolution.
    """
    require(mode in PATCH_MODES, f"unknown patch mode '{mode}'; choose one of {PATCH_MODES}")
    require(mpp > 0, "µm per pixel must be positive")
    if mode == "hest":
        side = max(1, round(field_um / mpp))
    else:
        side = max(STEM_MIN_PX, round(spot_diameter_um / mpp))
    return PatchGeometry(mode, int(side), side * mpp)


def dihedral(x: torch.Tensor, view: int) -> torch.Tensor:
    """Apply dihedral view ``view`` (index into :data:`DIHEDRAL_VIEWS`) to ``(..., H, W)``."""
    name = DIHEDRAL_VIEWS[view]
    if name == "identity":
        return x
    if name == "hflip":
        return x.flip(-1)
    if name == "vflip":
        return x.flip(-2)
    if name == "rot90":
        return torch.rot90(x, 1, (-2, -1))
    if name == "rot180":
        return torch.rot90(x, 2, (-2, -1))
    if name == "rot270":
        return torch.rot90(x, 3, (-2, -1))
    if name == "transpose":
        return x.transpose(-2, -1)
    return torch.rot90(x, 2, (-2, -1)).transpose(-2, -1)  # transverse: anti-diagonal mirror


def crop_spot(image: ImageSource, x: float, y: float, side: int) -> np.ndarray:
    """The ``side × side × 3`` full-resolution square centred on ``(x, y)``, white-padded."""
    x0 = int(np.floor(x - side / 2 + 0.5))
    y0 = int(np.floor(y - side / 2 + 0.5))
    return image.read_region(x0, y0, side, side)


def iter_patch_batches(
    image: ImageSource, xy: np.ndarray, geom: PatchGeometry, batch_size: int = 64
) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Yield ``(spot indices, uint8 crops (B, 3, side, side))``, reading region by region.

    Crops are at full resolution; each encoder resizes them to its own input size.

    Spots are visited in raster order of their centres, so tiled slides are read locally.
    """
    order = np.lexsort((xy[:, 0], xy[:, 1]))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        crops = np.stack([crop_spot(image, xy[i, 0], xy[i, 1], geom.side_px) for i in idx])
        yield idx, torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous()
