"""Reader for 10x Visium Space Ranger ``outs/`` folders."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ...errors import StemError, require
from ..section import PLATFORM_GEOMETRY, SectionInfo, check_coordinates, make_section, resolve_mpp

log = logging.getLogger(__name__)
POSITION_COLUMNS = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres",
                    "pxl_col_in_fullres"]


def read_positions(spatial: Path) -> pd.DataFrame:
    """Spot positions from ``tissue_positions.csv`` (≥2.0) or ``tissue_positions_list.csv``."""
    new, old = spatial / "tissue_positions.csv", spatial / "tissue_positions_list.csv"
    path = new if new.exists() else old
    require(path.exists(), f"no tissue_positions.csv or tissue_positions_list.csv in {spatial}")
    try:
        pos = pd.read_csv(path, header=0 if path == new else None)
    except Exception as exc:
        raise StemError(f"cannot parse {path.name}: {exc}") from None
    if path == old:
        require(pos.shape[1] == len(POSITION_COLUMNS), f"{path.name}: {pos.shape[1]} columns, expected "
                f"{len(POSITION_COLUMNS)} ({', '.join(POSITION_COLUMNS)})")
        pos.columns = POSITION_COLUMNS
    missing = set(POSITION_COLUMNS) - set(pos.columns)
    require(not missing, f"{path.name}: lacks columns {sorted(missing)}")
    return pos.set_index("barcode")


def _read_matrix(outs: Path):
    import scanpy as sc

    h5 = outs / "filtered_feature_bc_matrix.h5"
    require(h5.exists(), f"{h5} not found")
    try:
        return sc.read_10x_h5(h5)
    except Exception as exc:
        raise StemError(f"cannot read {h5}: {exc}") from None


def read_visium(
    outs: str | Path,
    section: str | None = None,
    image: str | Path | None = None,
    mpp: float | None = None,
) -> anndata.AnnData:  # noqa: F821
    """Read a Space Ranger ``outs/`` folder into the common section form.

    With ``image`` (the full-resolution H&E), coordinates stay in full-resolution pixels.
    Without it the hires (else lowres) PNG is used and coordinates are scaled into it.
    """
    outs = Path(outs)
    require(outs.is_dir(), f"Visium folder not found: {outs}")
    if section is None:
        section = outs.parent.name if outs.name == "outs" else outs.name
    mat = _read_matrix(outs)
    spatial = outs / "spatial"
    pos = read_positions(spatial)
    joined = mat.obs_names.intersection(pos.index)
    require(len(joined) > 0, f"{section}: no barcode of the matrix is in the tissue positions")
    if len(joined) < mat.n_obs:
        log.warning("%s: %d barcodes without a position dropped", section, mat.n_obs - len(joined))
    mat = mat[joined]
    pos = pos.loc[joined]
    xy = check_coordinates(pos[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(np.float64),
                           "tissue positions pxl_col/pxl_row_in_fullres", pos.index)

    sf_path = spatial / "scalefactors_json.json"
    scalef = json.loads(sf_path.read_text()) if sf_path.exists() else {}
    scale = 1.0
    if image is None:
        for name, key in (("tissue_hires_image.png", "tissue_hires_scalef"),
                          ("tissue_lowres_image.png", "tissue_lowres_scalef")):
            if (spatial / name).exists():
                require(key in scalef, f"{sf_path} lacks {key} needed for {name}")
                image, scale = spatial / name, float(scalef[key])
                log.info("%s: no full-resolution image; using %s (scale %.4f)", section, name, scale)
                break
    xy = xy * scale
    diameter, pitch = PLATFORM_GEOMETRY["visium"]
    mpp_val, source = resolve_mpp(xy, pitch, mpp, "the command line", section)
    obs = pos[["in_tissue", "array_row", "array_col"]].copy()
    var = mat.var.copy()
    info = SectionInfo(
        section=section,
        platform="visium",
        image_path=str(image) if image is not None else None,
        mpp=mpp_val,
        mpp_source=source,
        spot_diameter_um=diameter,
        center_distance_um=pitch,
        image_scale=scale,
    )
    adata = make_section(mat.X, mat.var_names, joined, xy, info, obs=obs, var=var)
    if "spot_diameter_fullres" in scalef:
        adata.uns["stem"]["spot_diameter_px"] = float(scalef["spot_diameter_fullres"]) * scale
    return adata
