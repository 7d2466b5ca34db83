"""The common in-memory form of one ST section, shared by every reader.

An AnnData with raw integer counts in ``X``, gene symbols as ``var_names``, spot ids as
``obs_names``, spot centres in full-resolution pixels of the section image in
``obsm['spatial']`` (x = column, y = row) and geometry/provenance in ``uns['stem']``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.spatial import cKDTree

from ..errors import StemError, require

log = logging.getLogger(__name__)

#: Nominal geometry per platform: (spot diameter µm, centre-to-centre distance µm).
PLATFORM_GEOMETRY = {"legacy_st": (100.0, 200.0), "visium": (55.0, 100.0)}


@dataclass
class SectionInfo:
    """Geometry and provenance stored in ``adata.uns['stem']``."""

    section: str
    platform: str
    image_path: str | None
    mpp: float | None
    mpp_source: str
    spot_diameter_um: float
    center_distance_um: float
    image_scale: float = 1.0


#: beyond this many µm per pixel a 55 µm Visium spot is one pixel: not an H&E image to read
MAX_MPP = 50.0


def check_coordinates(xy: np.ndarray, where: str, ids=None) -> np.ndarray:
    """Spot centres as ``(N, 2)`` float64, refusing NaN/inf and two spots at one position."""
    xy = np.asarray(xy, dtype=np.float64)
    require(xy.ndim == 2 and xy.shape[1] == 2, f"{where}: spot coordinates must be (spots, 2), got {xy.shape}")
    bad = ~np.isfinite(xy).all(axis=1)
    require(not bad.any(), f"{where}: {int(bad.sum())} spot coordinates are NaN or infinite")
    _, first, counts = np.unique(xy, axis=0, return_index=True, return_counts=True)
    if (counts > 1).any():
        i = int(first[np.argmax(counts > 1)])
        same = np.flatnonzero((xy == xy[i]).all(axis=1))
        names = [str(ids[j]) if ids is not None else f"#{j}" for j in same[:2]]
        raise StemError(f"{where}: spots {names[0]} and {names[1]} are at one position "
                        f"({xy[i, 0]:.1f}, {xy[i, 1]:.1f}) "
                        "(duplicated rows or wrong coordinate columns?)")
    return xy


def estimate_pitch_px(xy: np.ndarray) -> float:
    """Median nearest-neighbour distance between spot centres, in pixels."""
    require(len(xy) >= 2, "need at least two spots to estimate the spot pitch")
    dist, _ = cKDTree(xy).query(xy, k=2)
    pitch = float(np.median(dist[:, 1]))
    require(pitch > 0, "spot centres coincide; cannot estimate the spot pitch")
    return pitch


def array_pitch_px(array_xy: np.ndarray, xy: np.ndarray) -> float:
    """Pixels per array-grid step, from a least-squares affine fit of pixels on array indices.

    Robust to the jitter of detected spot centres, which biases nearest-neighbour distances low.
    """
    a = np.c_[np.asarray(array_xy, dtype=np.float64), np.ones(len(xy))]
    coef, *_ = np.linalg.lstsq(a, np.asarray(xy, dtype=np.float64), rcond=None)
    pitch = float(np.sqrt(abs(np.linalg.det(coef[:2, :2]))))
    require(pitch > 0, "degenerate spot grid; cannot estimate the spot pitch")
    return pitch


def resolve_mpp(
    xy: np.ndarray, center_distance_um: float, given: float | None, source: str, section: str,
    array_xy: np.ndarray | None = None,
) -> tuple[float, str]:
    """Return (µm per pixel, where it came from): ``given`` if set, else the spot pitch.

    The pitch comes from the array grid when ``array_xy`` (one step = ``center_distance_um``)
    is given, else from the median nearest-neighbour distance.
    """
    if given is not None:
        require(0 < given <= MAX_MPP, f"{section}: µm per pixel must be in (0, {MAX_MPP:g}], got {given} "
                                      f"(from {source})")
        log.info("%s: %.4f µm/px from %s", section, given, source)
        return float(given), source
    require(len(xy) >= 2, f"{section}: a single spot; at least two are needed to estimate the spot pitch "
                          "(or pass --mpp)")
    use_grid = array_xy is not None and len(xy) >= 3
    pitch = array_pitch_px(array_xy, xy) if use_grid else estimate_pitch_px(xy)
    mpp = center_distance_um / pitch
    require(mpp <= MAX_MPP, f"{section}: the spot pitch gives {mpp:.3g} µm per pixel (> {MAX_MPP:g}): "
                            "coordinates are not in image pixels; pass --mpp or fix the coordinates")
    log.info(
        "%s: %.4f µm/px estimated from the spot pitch (%g µm centre-to-centre)",
        section, mpp, center_distance_um,
    )
    return mpp, f"estimated from spot pitch ({center_distance_um:g} µm)"


def as_count_matrix(x, section: str) -> sp.csr_matrix:
    """Validate raw counts (finite, non-negative integers) and return them as int32 CSR."""
    m = sp.csr_matrix(x)
    data = m.data
    require(np.all(np.isfinite(data)), f"{section}: counts contain NaN or infinite values")
    require(np.all(data >= 0), f"{section}: counts contain negative values")
    require(
        np.all(np.mod(data, 1) == 0),
        f"{section}: X holds non-integer values, not raw counts (log-normalised data?)",
    )
    return m.astype(np.int32)


def make_section(
    counts,
    genes: list[str] | pd.Index,
    spot_ids: list[str] | pd.Index,
    xy: np.ndarray,
    info: SectionInfo,
    obs: pd.DataFrame | None = None,
    var: pd.DataFrame | None = None,
) -> ad.AnnData:
    """Assemble and validate a section AnnData in the common form."""
    x = as_count_matrix(counts, info.section)
    require(x.nnz > 0, f"{info.section}: every count is zero (empty or wrongly exported count matrix)")
    xy = np.asarray(xy, dtype=np.float64)
    require(xy.shape == (x.shape[0], 2), f"{info.section}: coordinates do not match spots")
    require(np.all(np.isfinite(xy)), f"{info.section}: spot coordinates contain NaN")
    obs = pd.DataFrame(index=pd.Index(spot_ids, dtype=str)) if obs is None else obs.copy()
    obs.index = pd.Index([str(s) for s in spot_ids], name=None)
    require(obs.index.is_unique, f"{info.section}: spot ids are not unique")
    var = pd.DataFrame(index=pd.Index([str(g) for g in genes])) if var is None else var.copy()
    adata = ad.AnnData(X=x, obs=obs, var=var)
    if not adata.var_names.is_unique:
        adata.var_names_make_unique()
    adata.obsm["spatial"] = xy
    adata.uns["stem"] = {k: v for k, v in asdict(info).items() if v is not None}
    return adata


def check_spots_in_image(adata: ad.AnnData, width: int, height: int) -> None:
    """Refuse a section whose spot centres fall outside its image."""
    xy = adata.obsm["spatial"]
    section = adata.uns["stem"]["section"]
    outside = (xy[:, 0] < 0) | (xy[:, 1] < 0) | (xy[:, 0] >= width) | (xy[:, 1] >= height)
    if outside.any():
        raise StemError(
            f"{section}: {int(outside.sum())} of {len(xy)} spot centres lie outside the "
            f"{width}x{height} px image (wrong image, scale factor or coordinate columns?)"
        )
