"""Readers: every layout returns sections in the common form of :mod:`stem_st.data.section`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import anndata as ad

from ...errors import StemError, require
from ..images import open_image
from ..section import check_spots_in_image
from . import her2st
from .anndata_file import read_h5ad, read_hest
from .visium import read_visium

LAYOUTS = ("her2st", "visium", "hest", "h5ad")


@dataclass
class ReaderOptions:
    """Per-layout options a user can give on the command line.

    ``image`` may contain ``{section}``, filled in per section.
    """

    image: str | None = None
    image_scale: float | None = None
    mpp: float | None = None
    platform: str = "visium"
    counts_layer: str | None = None
    require_image: bool = True


def list_sections(layout: str, data: str | Path) -> list[str]:
    """The section ids available in a dataset folder."""
    data = Path(data)
    require(data.exists(), f"data folder not found: {data}")
    if layout == "her2st":
        return her2st.list_sections(data)
    if layout == "hest":
        return sorted(p.stem for p in (data / "st").glob("*.h5ad"))
    if layout == "visium":
        return [data.parent.name if data.name == "outs" else data.name]
    if layout == "h5ad":
        return [data.stem] if data.is_file() else sorted(p.stem for p in data.glob("*.h5ad"))
    raise StemError(f"unknown layout '{layout}'; choose one of {', '.join(LAYOUTS)}")


def imaged_sections(layout: str, data: str | Path) -> list[str]:
    """The sections ``stem prepare`` uses by default: every section, and for HER2ST only those
    with an H&E image (the others have counts only)."""
    ids = list_sections(layout, data)
    if layout == "her2st":
        ids = [s for s in ids if her2st.find_image(Path(data), s)[0] is not None]
    require(bool(ids), f"no sections found in {data}")
    return ids


def read_section(
    layout: str, data: str | Path, section: str, opts: ReaderOptions | None = None
) -> ad.AnnData:
    """Read one section and check that its spots fall inside its image."""
    opts = opts or ReaderOptions()
    data = Path(data)
    require(data.exists(), f"data folder not found: {data}")
    image = opts.image.replace("{section}", section) if opts.image else None
    if layout == "her2st":
        adata = her2st.read_her2st(data, section, image, opts.image_scale, opts.mpp)
    elif layout == "visium":
        adata = read_visium(data, section, image, opts.mpp)
    elif layout == "hest":
        adata = read_hest(data, section)
    elif layout == "h5ad":
        path = data if data.is_file() else data / f"{section}.h5ad"
        adata = read_h5ad(path, image, opts.mpp, section, opts.platform,
                          counts_layer=opts.counts_layer)
    else:
        raise StemError(f"unknown layout '{layout}'; choose one of {', '.join(LAYOUTS)}")
    img = adata.uns["stem"].get("image_path")
    if img is None:
        require(not opts.require_image, f"{section}: no H&E image found; pass --image")
        return adata
    with open_image(img) as src:
        check_spots_in_image(adata, src.width, src.height)
        adata.uns["stem"]["image_size"] = [src.width, src.height]
        if src.mpp is not None and opts.mpp is None and adata.uns["stem"]["mpp_source"].startswith("estimated"):
            adata.uns["stem"]["mpp"] = src.mpp
            adata.uns["stem"]["mpp_source"] = "image metadata"
    return adata
