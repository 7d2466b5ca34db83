"""Figures shared by prediction and evaluation: gene-variation curves, sorted per-gene correlations and
marker-gene maps over the H&E image. Every function writes one PNG and returns its path."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import PatchCollection  # noqa: E402
from matplotlib.patches import Circle  # noqa: E402

from .atomic import atomic_path  # noqa: E402
from .data.units import UNITS  # noqa: E402

DPI = 100  # of every saved figure


def _save(fig, path: Path) -> Path:
    with atomic_path(path, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def _finish(fig, ax, path: Path, xlabel: str, ylabel: str, title: str) -> Path:
    """Label one line plot, add its legend and save it."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _minmax(v: np.ndarray) -> np.ndarray:
    span = v.max() - v.min()
    return (v - v.min()) / span if span > 0 else np.zeros_like(v)


def gene_variation_plot(gv: dict[str, np.ndarray], method: str, path: Path) -> Path:
    """2 × 2 panels (paper App. A) from :func:`~stem_st.evaluation.metrics.gene_variation`:
    absolute and min–max normalised per-gene mean and variance across spots; genes ordered by
    the truth, truth as a line, prediction as dots."""
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5))
    for row, stat in enumerate(("mean", "var")):
        t, p = gv[f"truth_{stat}"], gv[f"pred_{stat}"]
        order = np.argsort(t)
        for col, (norm, label) in enumerate(((False, "absolute"), (True, "normalised (min–max)"))):
            ax = axes[row, col]
            tv, pv = (_minmax(t), _minmax(p)) if norm else (t, p)
            ax.plot(np.arange(len(t)), tv[order], color="black", lw=1.5, label="truth")
            ax.scatter(np.arange(len(t)), pv[order], s=6, color="tab:red", label=method)
            ax.set_title(f"{'mean' if stat == 'mean' else 'variance'} per gene, {label}", fontsize=10)
            ax.set_xlabel("genes, ordered by truth")
            ax.set_ylabel(f"{stat} of {UNITS}" if not norm else "normalised")
    axes[0, 0].legend(loc="upper left", fontsize=8)
    fig.suptitle(f"Gene variation: {method} vs truth")
    fig.tight_layout()
    return _save(fig, path)


def pit_plot(pits: dict[str, list[float]], path: Path) -> Path:
    """Randomised PIT histograms of the sampling methods, one line each; flat at 1/bins is
    calibrated, a U is too narrow, a hump too wide, a slope biased."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, hist in pits.items():
        h = np.asarray(hist)
        edges = np.linspace(0, 1, len(h) + 1)
        ax.step(edges, np.r_[h, h[-1]] * len(h), where="post", label=name)
    ax.axhline(1.0, color="black", lw=1, ls="--", label="calibrated")
    return _finish(fig, ax, path, "PIT (rank of the truth among the samples)", "density",
                   "PIT histogram over spot × gene entries")


def pcc_curve_plot(correlations: dict[str, np.ndarray], path: Path) -> Path:
    """Per-gene Pearson r of each method, sorted descending (the curve behind PCC-k)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, r in correlations.items():
        rs = np.sort(r[np.isfinite(r)])[::-1]
        ax.plot(np.arange(1, len(rs) + 1), rs, label=f"{name} ({len(rs)} genes)")
    ax.axhline(0, color="grey", lw=0.5)
    return _finish(fig, ax, path, "gene rank by PCC", "Pearson r across spots",
                   "Per-gene correlation with the truth, sorted")


def _backdrop(image: np.ndarray, box: tuple[float, float, float, float], max_px: int):
    """The part of the H&E the panels show, at most ``max_px`` pixels on its longer side, and its
    extent in the plot's coordinates. Matplotlib resamples a whole image on every draw, so a large
    thumbnail drawn in many panels cost seconds per figure; this keeps what is seen and not the rest."""
    from PIL import Image

    x0, x1, y0, y1 = box
    h, w = image.shape[:2]
    c0, c1 = max(int(np.floor(x0)), 0), min(int(np.ceil(x1)), w)
    r0, r1 = max(int(np.floor(y0)), 0), min(int(np.ceil(y1)), h)
    if c1 <= c0 or r1 <= r0:
        return image, None
    crop = image[r0:r1, c0:c1]
    factor = max_px / max(crop.shape[:2])
    if factor < 1 and crop.dtype == np.uint8 and crop.ndim == 3 and crop.shape[2] in (3, 4):
        size = (max(1, round(crop.shape[1] * factor)), max(1, round(crop.shape[0] * factor)))
        crop = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.LANCZOS))
    return crop, (c0 - 0.5, c1 - 0.5, r1 - 0.5, r0 - 0.5)


def marker_map_plot(gene: str, xy: np.ndarray, panels: dict[str, np.ndarray], path: Path,
                    image: np.ndarray | None = None, image_scale: float = 1.0,
                    spot_radius_px: float = 50.0, pcc: dict[str, float] | None = None,
                    shared_scale: bool = True, panel_in: float = 7.2) -> Path:
    """One gene: truth and each method side by side, spots coloured on a shared colour scale
    (1st–99th percentile of all panels) over the H&E thumbnail when given.

    ``xy`` are spot centres in full-resolution pixels; ``image`` is a thumbnail whose pixels
    are full-resolution pixels times ``image_scale``. ``shared_scale=False`` gives every panel
    its own colour scale and colour bar (e.g. prediction beside uncertainty).
    """
    xy = np.asarray(xy, dtype=float) * image_scale
    radius = spot_radius_px * image_scale

    def scale_of(values):
        lo, hi = np.percentile(values, [1, 99])
        return matplotlib.colors.Normalize(lo, hi if hi > lo else lo + 1e-6)

    shared = scale_of(np.concatenate([np.asarray(v).ravel() for v in panels.values()]))
    pad = 3 * radius
    x0, x1 = xy[:, 0].min() - pad, xy[:, 0].max() + pad
    y0, y1 = xy[:, 1].min() - pad, xy[:, 1].max() + pad
    # readable: panels of ``panel_in`` inches (the axes ≥ 600 px at 100 dpi) tall, at most 3 per row
    n = len(panels)
    cols = min(3, n)
    rows = -(-n // cols)
    width = panel_in * float(np.clip((x1 - x0) / (y1 - y0), 0.5, 2.0))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols * 1.12 + 1.5, (panel_in + 0.6) * rows + 0.4),
                             squeeze=False)
    fig.subplots_adjust(left=0.01, right=0.88, bottom=0.01, top=1 - 0.9 / ((panel_in + 0.6) * rows + 0.4),
                        wspace=0.08, hspace=0.12)
    for ax in axes.ravel()[n:]:
        ax.set_axis_off()
    if image is not None:  # no more pixels than a panel shows at the saved resolution
        image, extent = _backdrop(np.asarray(image), (x0, x1, y0, y1), round(max(width, panel_in) * DPI))
    for ax, (name, v) in zip(axes.ravel(), panels.items()):
        norm = shared if shared_scale else scale_of(np.asarray(v).ravel())
        if image is not None:
            ax.imshow(image, extent=extent)
        coll = PatchCollection([Circle((x, y), radius) for x, y in xy], cmap="viridis", norm=norm)
        coll.set_array(np.asarray(v, dtype=float))
        ax.add_collection(coll)
        ax.set_xlim(x0, x1)
        ax.set_ylim(y1, y0)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        title = name if not pcc or name not in pcc else f"{name}  r = {pcc[name]:.2f}"
        ax.set_title(title, fontsize=13)
        if not shared_scale:
            fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap="viridis"), ax=ax, shrink=0.8)
    if shared_scale:  # its own axes, so the panels keep their size
        fig.colorbar(matplotlib.cm.ScalarMappable(norm=shared, cmap="viridis"),
                     cax=fig.add_axes((0.9, 0.3, 0.015, 0.4)), label=f"{gene}, {UNITS}")
    fig.suptitle(gene, fontsize=15)
    return _save(fig, path)
