"""The report's figures: sorted per-gene r, gene variation, the shift map, marker maps and one draw."""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import numpy as np

from .. import plotting as plots
from ..data.dataset import PreparedDataset
from ..data.images import open_image
from ..data.units import UNITS
from ..stem.shift import SPOT_THRESHOLD
from .baselines import BASELINES
from .metrics import gene_variation

log = logging.getLogger(__name__)


def section_image(ds: PreparedDataset, a: ad.AnnData, max_side: int = 2000):
    meta = a.uns.get("stem", {})
    raw = meta.get("image_path")
    if not raw:
        return None, 1.0
    for cand in (Path(raw), ds.root / raw, ds.root.parent / raw):
        if cand.is_file():
            try:
                with open_image(cand) as img:
                    return img.thumbnail(max_side)
            except Exception as exc:  # a map without H&E is still useful
                log.warning("could not read %s for the maps (%s)", cand, exc)
                return None, 1.0
    log.warning("H&E image %s not found; maps are drawn without it", raw)
    return None, 1.0


def report_figures(folder: Path, ds, truth_ad, truth, methods, correlations, marker,
             units: str = UNITS) -> list[tuple[str, Path]]:
    figs = [("Per-gene Pearson r, sorted (the curve behind PCC-k)",
             plots.pcc_curve_plot(correlations, folder / "pcc_sorted.png"))]
    for m in methods:
        figs.append((f"Gene variation, {m.name} (paper App. A)",
                     plots.gene_variation_plot(gene_variation(truth, m.mean), m.name,
                                               folder / f"gene_variation_{m.name}.png")))
    image, scale = section_image(ds, truth_ad)
    meta = truth_ad.uns.get("stem", {})
    radius = float(meta.get("spot_diameter_um", 100.0)) / 2 / float(meta.get("mpp", 1.0))
    xy = np.asarray(truth_ad.obsm["spatial"])
    idx = {g: i for i, g in enumerate(ds.genes)}
    # readable maps: truth, every prediction file, and the baselines with the best mean r (≤ 6 panels)
    given = [m for m in methods if m.name not in BASELINES]
    others = sorted((m for m in methods if m.name in BASELINES), key=lambda m: -mean_r(correlations[m.name]))
    shown = given + others[: max(0, 5 - len(given))]
    for m in (m for m in methods if m.shift is not None):
        figs.append((f"Shift score of each spot from {m.name}'s training data (0–1: the percentile among the "
                     f"training spots' distances to the other training sections; above {SPOT_THRESHOLD}: beyond "
                     "the training range, intervals not to be trusted there)",
                     plots.marker_map_plot("shift score", xy, {m.name: m.shift}, folder / f"shift_{m.name}.png",
                                           image, scale, radius)))
    for g in marker:
        j = idx[g]
        panels = {"truth": truth[:, j], **{m.name: m.mean[:, j] for m in shown}}
        pcc = {m.name: float(correlations[m.name][j]) for m in methods if np.isfinite(correlations[m.name][j])}
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in g)
        figs.append((f"{g}: truth, the predictions and the best baselines by mean r, one colour scale ({units})",
                     plots.marker_map_plot(g, xy, panels, folder / f"map_{safe}.png", image, scale,
                                           radius, pcc)))
    for m in [m for m in given if m.samples is not None and m.samples.shape[1] > 1][:1]:
        for g in marker[:2]:  # what a sampled map looks like: one draw of every spot as one section
            j = idx[g]
            panels = {"truth": truth[:, j], f"{m.name}: point": m.mean[:, j],
                      f"{m.name}: one draw": m.samples[:, 0, j]}
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in g)
            figs.append((f"{g}: one draw of {m.name} (draw 1 of every spot, one sampled section) beside the truth "
                         f"and the point, one colour scale ({units})",
                         plots.marker_map_plot(g, xy, panels, folder / f"draw_{safe}.png", image, scale, radius)))
    return figs


def mean_r(r: np.ndarray) -> float:
    """The mean per-gene r over the genes where it is defined; -inf where it is nowhere (a
    prediction constant per gene, like the ``mean`` baseline)."""
    r = np.asarray(r, dtype=float)
    return float(r[np.isfinite(r)].mean()) if np.isfinite(r).any() else -np.inf
