"""``stem predict-slide``: expression maps for an H&E slide without ST measurements.

Slide → tissue mask (thumbnail) → virtual spot grid at the training pitch → patches read
region by region at the run's patch scale → the run's encoder(s), cached per chunk so an
interrupted run resumes → Stem samples → an AnnData that scanpy/squidpy plot directly.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from PIL import Image

from ..atomic import atomic_path, read_json, write_h5ad
from ..data.context import store_graphs
from ..data.images import PILImage, file_fingerprint, open_image
from ..data.patches import patch_geometry
from ..data.section import PLATFORM_GEOMETRY
from ..data.spatial import scanpy_spatial
from ..data.tissue import spot_grid, tissue_fraction, tissue_mask
from ..data.units import UNITS
from ..encoders.cache import EmbeddingCache
from ..encoders.embed import embed_section
from ..encoders.precomputed import is_precomputed
from ..encoders.registry import build_encoder
from ..errors import StemError, require
from ..plotting import marker_map_plot
from ..progress import progress_bar
from ..stem import PredictSettings, StemModel
from ..stem.shift import attach_shift
from ..stem.spatial import field_provenance

log = logging.getLogger(__name__)
#: virtual spots per cached embedding chunk (the unit an interrupted run resumes from)
CHUNK = int(os.environ.get("STEM_ST_SLIDE_CHUNK", "1024"))
HIRES_SIDE = 2000


@dataclass
class SlideConfig:
    """What ``stem predict-slide`` was asked to do."""

    run: str
    image: str
    out: str
    mpp: float | None = None
    pitch_um: float | None = None
    layout: str | None = None
    genes: list[str] = field(default_factory=list)
    predict: PredictSettings = field(default_factory=PredictSettings)
    batch_size: int = 64
    min_tissue: float = 0.5
    weights: list[str] = field(default_factory=list)
    checkpoint: str | None = None
    cache_dir: str | None = None
    overwrite: bool = False
    progress: bool = True
    max_pixels: float = 250e6  # a JPEG/PNG is decoded whole: 3 bytes per pixel


def _geometry(model: StemModel) -> dict:
    geo = dict(model.meta.get("geometry") or {})
    if not geo.get("center_distance_um"):  # runs from before geometry was recorded
        prep = Path(model.meta.get("train", {}).get("prep", ""))
        if (prep / "manifest.json").is_file():
            secs = read_json(prep / "manifest.json", "prepared dataset")["sections"]
            geo = {k: secs[0].get(k) for k in ("platform", "spot_diameter_um", "center_distance_um")}
    platform = geo.get("platform") or "visium"
    diam, dist = PLATFORM_GEOMETRY.get(platform, PLATFORM_GEOMETRY["visium"])
    return {"platform": platform, "spot_diameter_um": float(geo.get("spot_diameter_um") or diam),
            "center_distance_um": float(geo.get("center_distance_um") or dist)}


def _encoders(model: StemModel, weights: list[str], device: str):
    specs = model.encoders
    bad = [e["encoder"] for e in specs if is_precomputed(e["encoder"])]
    require(not bad, f"the run was trained on precomputed embeddings ({', '.join(bad)}); a new slide "
            "needs the encoder itself — retrain with a real encoder")
    require(len(weights) in (0, len(specs)), f"give one --weights per encoder ({len(specs)})")
    built = []
    for spec, w in zip(specs, weights or [None] * len(specs)):
        enc = build_encoder(spec["encoder"], w or None, device)
        require(enc.weights_id == spec["weights"],
                f"encoder {spec['encoder']}: these weights ({str(enc.weights_id)[:12]}) are not the ones "
                f"the run was trained with ({str(spec['weights'])[:12]}); pass the same --weights")
        built.append(enc)
    return built


def check_pixel_budget(slide, max_pixels: float) -> None:
    """Refuse a whole-image format (JPEG/PNG/plain TIFF, decoded at once) over ``max_pixels``."""
    if isinstance(slide, PILImage) and slide.width * slide.height > max_pixels:
        name = Path(slide.path).name
        raise StemError(
            f"{name} is {slide.width} × {slide.height} = {slide.width * slide.height / 1e6:.0f} Mpx, over "
            f"--max-pixels {max_pixels / 1e6:.0f} Mpx, and a {Path(name).suffix} is decoded whole "
            f"(~{3 * slide.width * slide.height / 2**30:.2g} GiB); convert it to a tiled pyramidal TIFF, e.g. "
            f"`vips tiffsave {name} slide.tif --tile --pyramid --compression jpeg`, or raise --max-pixels")


def predict_slide(cfg: SlideConfig, model: StemModel | None = None) -> dict:
    """Run the whole path; returns a summary (spots, timings, files). ``model``: the run, already
    loaded (several slides in one process)."""
    t0 = time.perf_counter()
    out = Path(cfg.out)
    require(out.suffix == ".h5ad", f"--out must end in .h5ad, got {out.name}")
    require(cfg.overwrite or not out.exists(), f"{out} already exists; pass --overwrite to replace it")
    require(0 <= cfg.min_tissue <= 1, "--min-tissue must be between 0 and 1")
    require(cfg.mpp is None or cfg.mpp > 0, f"--mpp must be positive, got {cfg.mpp}")
    model = model or StemModel.from_run(cfg.run, cfg.checkpoint)
    unknown = [g for g in cfg.genes if g not in model.genes]
    require(not unknown, f"--genes not predicted by the run: {', '.join(unknown[:5])}")
    geo = _geometry(model)
    layout = cfg.layout or ("hex" if geo["platform"] == "visium" else "square")
    pitch_um = cfg.pitch_um or geo["center_distance_um"]
    require(pitch_um > 0, "--pitch must be positive")
    times = {}
    with open_image(cfg.image) as slide:
        check_pixel_budget(slide, cfg.max_pixels)
        mpp = cfg.mpp if cfg.mpp is not None else slide.mpp
        require(mpp is not None and mpp > 0, f"{Path(cfg.image).name} has no µm-per-pixel metadata; pass --mpp")
        encoders = _encoders(model, cfg.weights, cfg.predict.device)
        t = time.perf_counter()
        thumb, scale = slide.thumbnail(HIRES_SIDE)
        mask = tissue_mask(thumb)
        geom = patch_geometry(model.meta.get("patch_mode") or "hest", mpp, geo["spot_diameter_um"])
        xy = spot_grid(slide.width, slide.height, pitch_um / mpp, layout)
        frac = tissue_fraction(mask, scale, xy, geom.side_px)
        keep = frac >= cfg.min_tissue
        xy, frac = xy[keep], frac[keep]
        require(len(xy) > 0, f"no virtual spot of {Path(cfg.image).name} is on tissue (mask covers "
                f"{mask.mean():.1%} of the thumbnail); check --mpp / --pitch / --min-tissue")
        times["mask_and_grid"] = time.perf_counter() - t
        log.info("%s: %d × %d px at %.3f µm/px; tissue %.1f%% of the slide; %d virtual spots (%s, %.0f µm)",
                 Path(cfg.image).name, slide.width, slide.height, mpp, 100 * mask.mean(), len(xy), layout,
                 pitch_um)
        t = time.perf_counter()
        emb = _embed(cfg, slide, encoders, xy, mpp, geo, geom)
        times["embed"] = time.perf_counter() - t
    t = time.perf_counter()
    with progress_bar(enabled=cfg.progress) as prog:
        task = prog.add_task("sample", total=model.work(len(xy), cfg.predict))
        mean, std, _ = model.predict(emb, xy, cfg.predict, progress=lambda n: prog.advance(task, n))
    times["sample"] = time.perf_counter() - t
    lib = Path(cfg.image).stem
    spot_px = geo["spot_diameter_um"] / mpp
    obs = pd.DataFrame({"tissue_fraction": frac.astype(np.float32)},
                       index=[f"v{i}" for i in range(len(xy))])
    res = ad.AnnData(X=mean.astype(np.float32), obs=obs, var=pd.DataFrame(index=model.genes))
    res.layers["std"] = std.astype(np.float32)
    res.obsm["spatial"] = xy.astype(np.float64)
    store_graphs(res)  # the neighbourhoods the spatial context was built from
    res.uns["spatial"] = scanpy_spatial(lib, thumb, scale, spot_px, cfg.image)
    res.uns["stem"] = {"units": UNITS, "image": str(Path(cfg.image).resolve()), "mpp": float(mpp),
                       "pitch_um": float(pitch_um), "layout": layout, "min_tissue": cfg.min_tissue,
                       "patch_px": geom.side_px, "patch_um": geom.field_um, **cfg.predict.provenance(),
                       "recipe": model.recipe.to_dict(),
                       "checkpoint": model.meta.get("checkpoint"),
                       "step": model.meta.get("step"), "weights": "ema",
                       "encoders": [e["encoder"] for e in model.encoders], "library_id": lib,
                       "seconds": {k: round(v, 1) for k, v in times.items()},
                       **field_provenance(model, cfg.predict)}
    attach_shift(model, res, emb, xy, Path(cfg.image).name, cfg.predict)
    with atomic_path(out, overwrite=cfg.overwrite) as tmp:
        write_h5ad(res, tmp)
    mask_png = out.with_name(out.stem + "_tissue.png")
    with atomic_path(mask_png, overwrite=True) as tmp:
        Image.fromarray((mask * 255).astype(np.uint8)).save(tmp, format="PNG")
    genes = cfg.genes or [model.genes[i] for i in np.argsort(mean.var(0))[::-1][:6]]
    maps = _maps(out, res, genes, thumb, scale, spot_px / 2)
    return {"spots": len(xy), "genes": len(model.genes), "mpp": mpp, "layout": layout, "pitch_um": pitch_um,
            "seconds": {k: round(v, 1) for k, v in times.items()},
            "total_seconds": round(time.perf_counter() - t0, 1),
            "file": str(out), "mask": str(mask_png), "maps": [str(m) for m in maps]}


def _embed(cfg, slide, encoders, xy, mpp, geo, geom) -> np.ndarray:
    """Embeddings ``(N, dim)`` of the virtual spots, chunk by chunk through the cache."""
    from ..encoders.cache import default_cache_dir

    cache = EmbeddingCache(cfg.cache_dir or default_cache_dir())
    slide_id = "slide-" + file_fingerprint(cfg.image)
    parts = []
    with progress_bar(enabled=cfg.progress) as prog:
        task = prog.add_task("embed", total=len(xy))
        for start in range(0, len(xy), CHUNK):
            chunk = ad.AnnData(obs=pd.DataFrame(index=[str(i) for i in range(start, min(start + CHUNK, len(xy)))]))
            chunk.obsm["spatial"] = xy[start:start + CHUNK]
            chunk.uns["stem"] = {"section": slide_id, "image_path": str(cfg.image), "mpp": mpp,
                                 "spot_diameter_um": geo["spot_diameter_um"]}
            arrays, _ = embed_section(chunk, encoders, 1, geom.mode, cache, cfg.batch_size, image=slide)
            parts.append(np.concatenate([a[:, 0] for a in arrays], axis=1))
            prog.advance(task, chunk.n_obs)
    return np.concatenate(parts)


def _maps(out: Path, res: ad.AnnData, genes: list[str], thumb, scale, radius) -> list[Path]:
    folder = out.with_name(out.stem + "_maps")
    folder.mkdir(exist_ok=True)
    paths = []
    for g in genes:
        j = res.var_names.get_loc(g)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in g)
        paths.append(marker_map_plot(g, res.obsm["spatial"], {"prediction (mean)": res.X[:, j],
                                                               "uncertainty (std)": res.layers["std"][:, j]},
                                     folder / f"{safe}.png", thumb, scale, radius, shared_scale=False))
    return paths
