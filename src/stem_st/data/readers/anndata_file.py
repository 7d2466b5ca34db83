"""Readers for AnnData-based layouts: HEST-1k folders and any h5ad plus an image."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import anndata as ad
import numpy as np

from ...errors import StemError, require
from ..section import PLATFORM_GEOMETRY, SectionInfo, check_coordinates, make_section, resolve_mpp

log = logging.getLogger(__name__)
HEST_IMAGE_SUFFIXES = (".tif", ".tiff", ".svs", ".ndpi", ".jpg", ".jpeg", ".png")


def load_h5ad(path: Path) -> ad.AnnData:
    require(path.exists(), f"AnnData file not found: {path}")
    try:
        return ad.read_h5ad(path)
    except Exception as exc:
        raise StemError(f"cannot read {path}: {exc}") from None


def _counts(adata: ad.AnnData, layer: str | None, section: str):
    if layer:
        require(layer in adata.layers, f"{section}: no layer '{layer}' in the AnnData")
        return adata.layers[layer]
    return adata.X


def _platform(name: str | None) -> str:
    n = (name or "").lower()
    if "visium" in n:
        return "visium"
    if "spatial transcriptomics" in n or n in {"st", "legacy_st"}:
        return "legacy_st"
    return n or "unknown"


def section_from_anndata(
    src: ad.AnnData,
    section: str,
    image: Path | None,
    mpp: float | None,
    mpp_source: str,
    platform: str,
    spot_diameter_um: float | None = None,
    center_distance_um: float | None = None,
    counts_layer: str | None = None,
) -> ad.AnnData:
    """Convert an AnnData with ``obsm['spatial']`` (full-res pixels) to the common form."""
    require("spatial" in src.obsm, f"{section}: the AnnData has no obsm['spatial']")
    xy = np.asarray(src.obsm["spatial"], dtype=np.float64)
    require(xy.ndim == 2 and xy.shape[0] == src.n_obs and xy.shape[1] >= 2,
            f"{section}: obsm['spatial'] must be (spots, 2) pixel centres, got shape {xy.shape}")
    xy = check_coordinates(xy[:, :2], f"{section}: obsm['spatial']", src.obs_names)
    default_d, default_c = PLATFORM_GEOMETRY.get(platform, (None, None))
    diameter = spot_diameter_um or default_d
    pitch = center_distance_um or default_c
    require(
        diameter is not None and pitch is not None,
        f"{section}: unknown platform '{platform}'; give the spot diameter and centre distance",
    )
    mpp_val, source = resolve_mpp(xy, pitch, mpp, mpp_source, section)
    info = SectionInfo(
        section=section,
        platform=platform,
        image_path=str(image) if image else None,
        mpp=mpp_val,
        mpp_source=source,
        spot_diameter_um=float(diameter),
        center_distance_um=float(pitch),
    )
    obs = src.obs.copy()
    return make_section(
        _counts(src, counts_layer, section), src.var_names, src.obs_names, xy, info,
        obs=obs, var=src.var.copy(),
    )


def read_hest(root: str | Path, section: str) -> ad.AnnData:
    """Read one sample of a HEST-1k folder (``st/``, ``wsis/``, ``metadata/``)."""
    root = Path(root)
    src = load_h5ad(root / "st" / f"{section}.h5ad")
    meta_path = root / "metadata" / f"{section}.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    images = [p for p in sorted((root / "wsis").glob(f"{section}.*"))
              if p.suffix.lower() in HEST_IMAGE_SUFFIXES]
    require(bool(images), f"{section}: no image wsis/{section}.<tif|svs|jpg|png> in {root}")
    mpp = meta.get("pixel_size_um_estimated") or meta.get("pixel_size_um_embedded")
    return section_from_anndata(
        src, section, images[0],
        mpp=float(mpp) if mpp else None,
        mpp_source=f"metadata/{section}.json",
        platform=_platform(meta.get("st_technology")),
        spot_diameter_um=meta.get("spot_diameter"),
        center_distance_um=meta.get("inter_spot_dist"),
    )


def read_h5ad(
    path: str | Path,
    image: str | Path | None,
    mpp: float | None = None,
    section: str | None = None,
    platform: str = "visium",
    spot_diameter_um: float | None = None,
    center_distance_um: float | None = None,
    counts_layer: str | None = None,
) -> ad.AnnData:
    """Read any AnnData with counts and ``obsm['spatial']`` plus an image path."""
    path = Path(path)
    require(image is not None, f"{path.name}: the h5ad layout needs --image")
    return section_from_anndata(
        load_h5ad(path), section or path.stem, Path(image), mpp, "the command line",
        _platform(platform), spot_diameter_um, center_distance_um, counts_layer,
    )
