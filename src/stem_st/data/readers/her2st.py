"""Reader for the HER2ST legacy-ST layout (Andersson et al. 2021, ``almaan/her2st``)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ...errors import StemError, require
from ..section import PLATFORM_GEOMETRY, SectionInfo, check_coordinates, make_section, resolve_mpp

log = logging.getLogger(__name__)

#: Width of the original H&E behind each 2000-px rendering in ``app/www/imgs`` (upstream README).
APP_IMAGE_ORIGINAL_WIDTH = {"A1": 6954}
APP_IMAGE_WIDTH = 2000


def _data_dir(root: Path) -> Path:
    for cand in (root / "data", root):
        if (cand / "ST-cnts").is_dir():
            return cand
    raise StemError(f"{root} is not a HER2ST folder (no ST-cnts/ inside it or its data/)")


def list_sections(root: str | Path) -> list[str]:
    """Section ids that have a count matrix."""
    data = _data_dir(Path(root))
    return sorted(p.name.split(".")[0] for p in (data / "ST-cnts").glob("*.tsv*"))


def find_image(root: Path, section: str) -> tuple[Path | None, float]:
    """Locate a section's H&E and the scale from spot-file pixels to its pixels."""
    data = _data_dir(root)
    full = sorted((data / "ST-imgs").glob(f"{section[0]}/{section}/*.jpg"))
    if full:
        return full[0], 1.0
    app = sorted((data.parent / "app" / "www" / "imgs").glob(f"{section}_HE_image*.png"))
    if app:
        original = APP_IMAGE_ORIGINAL_WIDTH.get(section)
        if original is None:
            raise StemError(
                f"{section}: only a downscaled rendering {app[0].name} exists and its scale "
                "is unknown; pass --image-scale"
            )
        return app[0], APP_IMAGE_WIDTH / original
    return None, 1.0


def _read_table(path: Path, **kw) -> pd.DataFrame:
    try:
        return pd.read_csv(path, sep="\t", **kw)
    except Exception as exc:
        raise StemError(f"cannot parse {path.name} as a tab-separated table: {exc}") from None


def _header(path: Path) -> list[str]:
    import gzip

    with (gzip.open(path, "rt") if path.suffix == ".gz" else open(path)) as fh:
        return fh.readline().rstrip("\n").split("\t")


def read_her2st(
    root: str | Path,
    section: str,
    image: str | Path | None = None,
    image_scale: float | None = None,
    mpp: float | None = None,
) -> anndata.AnnData:  # noqa: F821
    """Read one HER2ST section: counts, selected spots, pixel centres, labels, image."""
    root = Path(root)
    data = _data_dir(root)
    cnt_path = data / "ST-cnts" / f"{section}.tsv.gz"
    if not cnt_path.exists():
        cnt_path = data / "ST-cnts" / f"{section}.tsv"
    require(cnt_path.exists(), f"{section}: count file not found in {data / 'ST-cnts'}")
    spot_path = data / "ST-spotfiles" / f"{section}_selection.tsv"
    require(spot_path.exists(), f"{section}: spot file not found: {spot_path}")

    counts, spots = _read_table(cnt_path, index_col=0), _read_table(spot_path)
    names = pd.Index(_header(cnt_path)[1:])
    dup = names[names.duplicated()]
    require(len(dup) == 0, f"{cnt_path.name}: gene symbols repeated in the header (e.g. {list(dup[:3])}); "
                           "sum or rename them")
    require(len(counts) > 0, f"{cnt_path.name}: no spot rows (header only)")
    counts.index = counts.index.astype(str)
    rep = counts.index[counts.index.duplicated()]
    require(len(rep) == 0, f"{cnt_path.name}: spot ids repeated (e.g. {list(rep[:3])})")
    need = {"x", "y", "pixel_x", "pixel_y", "selected"}
    require(need <= set(spots.columns), f"{spot_path.name}: lacks columns {sorted(need - set(spots.columns))}")
    spots = spots[spots["selected"] == 1]
    require(len(spots) > 0, f"{spot_path.name}: no spot is selected (column 'selected' has no 1)")
    spots.index = [f"{int(x)}x{int(y)}" for x, y in zip(spots["x"], spots["y"])]
    joined = spots.index.intersection(counts.index)
    require(
        len(joined) > 0,
        f"{section}: no spot id of the spot file (<x>x<y>) joins a row of the count file",
    )
    if len(joined) < len(spots):
        log.warning("%s: %d selected spots have no count row; dropped", section, len(spots) - len(joined))
    spots = spots.loc[joined]
    counts = counts.loc[joined]

    if image is None:
        img, scale = find_image(root, section)
    else:
        img, scale = Path(image), 1.0
    if image_scale is not None:
        scale = float(image_scale)
    xy = check_coordinates(spots[["pixel_x", "pixel_y"]].to_numpy(np.float64) * scale,
                           f"{spot_path.name} pixel_x/pixel_y", spots.index)

    diameter, pitch = PLATFORM_GEOMETRY["legacy_st"]
    mpp_val, source = resolve_mpp(xy, pitch, mpp, "the command line", section,
                                  array_xy=spots[["x", "y"]].to_numpy(np.float64))
    obs = pd.DataFrame(
        {"array_x": spots["x"].to_numpy(), "array_y": spots["y"].to_numpy()}, index=spots.index
    )
    labels = _read_labels(data, section, spots.index)
    if labels is not None:
        obs["label"] = labels
    info = SectionInfo(
        section=section,
        platform="legacy_st",
        image_path=str(img) if img is not None else None,
        mpp=mpp_val,
        mpp_source=source,
        spot_diameter_um=diameter,
        center_distance_um=pitch,
        image_scale=scale,
    )
    return make_section(counts.to_numpy(), counts.columns, spots.index, xy, info, obs=obs)


def _read_labels(data: Path, section: str, spot_ids: pd.Index) -> pd.Categorical | None:
    path = data / "ST-pat" / "lbl" / f"{section}_labeled_coordinates.tsv"
    if not path.exists():
        return None
    lbl = pd.read_csv(path, sep="\t").dropna(subset=["x", "y"])
    lbl.index = [f"{round(x)}x{round(y)}" for x, y in zip(lbl["x"], lbl["y"])]
    lbl = lbl[~lbl.index.duplicated()]
    matched = spot_ids.isin(lbl.index).sum()
    log.info("%s: pathologist labels for %d of %d spots", section, matched, len(spot_ids))
    return pd.Categorical(lbl["label"].reindex(spot_ids))
