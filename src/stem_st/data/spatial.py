"""``uns['spatial']`` in the form scanpy and squidpy read: a hires H&E and its scale factors."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def scanpy_spatial(library: str, image: np.ndarray, scale: float, spot_diameter_px: float,
                   source: str | None) -> dict:
    """``uns['spatial']`` as scanpy/squidpy read it: a hires image and its scale factors."""
    return {library: {"images": {"hires": image},
                      "scalefactors": {"tissue_hires_scalef": float(scale),
                                       "spot_diameter_fullres": float(spot_diameter_px)},
                      "metadata": {"source_image_path": str(Path(source).resolve()) if source else None}}}


def section_spatial(info: dict, image_side: int) -> dict | None:
    """``uns['spatial']`` for a section from its ``uns['stem']`` (image path, µm/px, spot diameter),
    or None when it has no readable image."""
    from .images import open_image

    if not (info.get("image_path") and Path(info["image_path"]).is_file() and info.get("mpp")):
        return None
    with open_image(info["image_path"]) as img:
        thumb, scale = img.thumbnail(image_side)
    return scanpy_spatial(str(info.get("section", "section")), thumb, scale,
                          info["spot_diameter_um"] / info["mpp"], info["image_path"])
