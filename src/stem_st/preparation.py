"""``stem prepare``: sections → gene panel counts + spot-patch embeddings per view."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np
import torch

from . import __version__
from .atomic import atomic_path, require_free_space
from .data.context import store_graphs
from .data.dataset import EMBEDDING_KEY, finish_prepared, write_section
from .data.panels import choose_panel
from .data.patches import (
    DIHEDRAL_VIEWS,
    patch_geometry,
)
from .data.readers import ReaderOptions, read_section
from .encoders.base import ImageEncoder
from .encoders.cache import EmbeddingCache
from .encoders.embed import embed_section
from .encoders.precomputed import is_precomputed, load_precomputed
from .encoders.registry import build_encoder
from .errors import require
from .progress import progress_bar

log = logging.getLogger(__name__)


@dataclass
class PrepareConfig:
    """Everything ``stem prepare`` needs."""

    data: str
    layout: str
    sections: list[str]
    out: str
    holdout: list[str] = field(default_factory=list)
    encoders: list[str] = field(default_factory=lambda: ["effnet-lite0-imagenet"])
    weights: list[str | None] = field(default_factory=list)
    views: int | None = None  # None: 2 (1 with precomputed embeddings, which usually hold one)
    genes: str = "hmhvg:200"
    patch_mode: str = "hest"
    batch_size: int = 64
    device: str = "auto"
    cache_dir: str | None = None
    overwrite: bool = False
    embedding_dtype: str = "float32"  # or float16: how the per-section .npy stores embeddings
    reader: ReaderOptions = field(default_factory=ReaderOptions)
    completed: str | None = None  # folder of <section>_completed.h5ad (stem complete apply)


def prepare(cfg: PrepareConfig, adatas: dict[str, ad.AnnData] | None = None) -> list[dict]:
    """Run the whole stage and write the prepared folder atomically; return summary rows.

    ``adatas``: sections already read (the Python API); else ``cfg.sections`` are read from
    ``cfg.data`` with ``cfg.layout``."""
    require(len(cfg.sections) > 0, "no sections given")
    require(len(set(cfg.sections)) == len(cfg.sections), "a section is listed twice")
    unknown = set(cfg.holdout) - set(cfg.sections)
    require(not unknown, f"holdout sections {sorted(unknown)} are not among --sections")
    if cfg.views is None:  # the benchmarks' 2 views; a precomputed file usually holds one
        cfg.views = 1 if any(is_precomputed(e) for e in cfg.encoders) else 2
    require(1 <= cfg.views <= len(DIHEDRAL_VIEWS), f"--views must be 1..8, got {cfg.views}")
    require(cfg.embedding_dtype in ("float32", "float16"),
            f"--embedding-dtype must be float32 or float16, got {cfg.embedding_dtype}")
    require(len(cfg.weights) in (0, len(cfg.encoders)), "give one weights path per encoder")
    out = Path(cfg.out)
    require(cfg.overwrite or not out.exists(),
            f"{out} already exists; pass --overwrite to replace it")
    t0 = time.perf_counter()

    neural = [e for e in cfg.encoders if not is_precomputed(e)]
    cfg.reader.require_image = bool(neural)
    if adatas is None:
        adatas = {s: read_section(cfg.layout, cfg.data, s, cfg.reader) for s in cfg.sections}
    train = [adatas[s] for s in cfg.sections if s not in cfg.holdout]
    panel = choose_panel(cfg.genes, train, list(adatas.values()))

    weights = cfg.weights or [None] * len(cfg.encoders)
    built: dict[str, ImageEncoder] = {
        name: build_encoder(name, w, cfg.device)
        for name, w in zip(cfg.encoders, weights) if not is_precomputed(name)
    }
    cache = EmbeddingCache(cfg.cache_dir)
    spots = sum(a.n_obs for a in adatas.values())
    emb_bytes = 4 * spots * cfg.views * sum(e.dim for e in built.values())
    require_free_space(out.parent, emb_bytes + 4 * spots * (len(panel) + 64) + (1 << 20), "the prepared dataset")
    if cfg.cache_dir:
        require_free_space(cfg.cache_dir, emb_bytes, "the embedding cache")
    rows, parts = [], []
    with atomic_path(out, overwrite=cfg.overwrite) as tmp, progress_bar() as progress:
        for sid in cfg.sections:
            ts = time.perf_counter()
            adata = adatas[sid]
            arrays, computed = embed_section(adata, list(built.values()), cfg.views,
                                             cfg.patch_mode, cache, cfg.batch_size, progress)
            it = iter(arrays)
            blocks, parts = [], []
            for name in cfg.encoders:
                if is_precomputed(name):
                    emb, wid = load_precomputed(name, sid, adata.obs_names.tolist(), cfg.views)
                    parts.append({"encoder": name, "dim": emb.shape[2], "weights": wid,
                                  "pathology": None})
                else:
                    emb, enc = next(it), built[name]
                    parts.append({"encoder": name, "dim": enc.dim, "weights": enc.weights_id,
                                  "pathology": enc.pathology, "input_px": enc.input_size})
                blocks.append(emb)
            section = _section_output(adata, panel, np.concatenate(blocks, axis=2), cfg)
            write_section(tmp, sid, section, panel, cfg.embedding_dtype)
            rows.append({"section": sid, "spots": section.n_obs, "genes": len(panel),
                         "embedding_dim": section.obsm[EMBEDDING_KEY].shape[2],
                         "views": cfg.views, "views_computed": computed,
                         "holdout": sid in cfg.holdout,
                         "seconds": round(time.perf_counter() - ts, 2)})
        finish_prepared(tmp, panel,
                        _manifest(cfg, adatas, panel, parts, rows, time.perf_counter() - t0))
    return rows


def _section_output(adata: ad.AnnData, panel: list[str], emb: np.ndarray,
                    cfg: PrepareConfig) -> ad.AnnData:
    sub = adata[:, panel]
    x = sub.X.toarray() if hasattr(sub.X, "toarray") else np.asarray(sub.X)
    obs = adata.obs.copy()
    for col in obs.columns:
        if obs[col].dtype == object:
            obs[col] = obs[col].astype(str)
    res = ad.AnnData(X=x.astype(np.int32), obs=obs, var=sub.var[[]].copy())
    res.obsm["spatial"] = np.asarray(adata.obsm["spatial"], dtype=np.float64)
    res.obsm[EMBEDDING_KEY] = emb.astype(np.float32)
    info = dict(adata.uns["stem"])
    info.update(units="X: raw counts of the panel; embedding: float32 (spots, views, dim)",
                views=list(DIHEDRAL_VIEWS[: cfg.views]), holdout=info["section"] in cfg.holdout)
    if info.get("image_path"):
        geom = patch_geometry(cfg.patch_mode, info["mpp"], info["spot_diameter_um"])
        info.update(patch_mode=geom.mode, patch_px=geom.side_px, patch_um=geom.field_um)
    res.obs["total_counts_all_genes"] = np.asarray(adata.X.sum(axis=1)).ravel().astype(np.int64)
    store_graphs(res)
    if cfg.completed:
        res.layers["completed"], info["completed"] = completed_layer(cfg.completed, info["section"], res)
    res.uns["stem"] = info
    return res


def completed_layer(folder: str, sid: str, section: ad.AnnData) -> tuple[np.ndarray, str]:
    """Counts of ``section``'s panel with LGDiST's completion where it has the gene (measured
    counts elsewhere), from ``<folder>/<sid>_completed.h5ad``."""
    path = Path(folder) / f"{sid}_completed.h5ad"
    require(path.is_file(), f"no completed file for {sid} ({path}); run stem complete apply")
    comp = ad.read_h5ad(path)
    rows = comp.obs_names.get_indexer(section.obs_names)
    require((rows >= 0).all(), f"{path.name} lacks {(rows < 0).sum()} of {sid}'s spots")
    out = np.asarray(section.X, dtype=np.float32).copy()
    genes = [g for g in section.var_names if g in comp.var_names]
    if genes:
        src = comp.layers["completed"][rows][:, comp.var_names.get_indexer(genes)]
        out[:, section.var_names.get_indexer(genes)] = np.asarray(src, dtype=np.float32)
    return out, f"{len(genes)} of {section.n_vars} panel genes completed from {path}"


def _manifest(cfg: PrepareConfig, adatas: dict, panel: list[str], parts: list[dict],
              rows: list[dict], seconds: float) -> dict:
    return {
        "stem_st_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "data": str(Path(cfg.data).resolve()) if cfg.data else "(in-memory AnnData)",
        "layout": cfg.layout,
        "sections": [
            {**{k: adatas[s].uns["stem"].get(k) for k in
                ("section", "platform", "image_path", "mpp", "mpp_source", "spot_diameter_um",
                 "center_distance_um", "image_scale")},
             "spots": next(r["spots"] for r in rows if r["section"] == s)}
            for s in cfg.sections
        ],
        "holdout": list(cfg.holdout),
        "panel": {"spec": cfg.genes, "n_genes": len(panel),
                  "chosen_from": [s for s in cfg.sections if s not in cfg.holdout],
                  "excluded_holdout": list(cfg.holdout)},
        "encoders": parts,
        "embedding_dim": int(sum(p["dim"] for p in parts)),
        "patch_mode": cfg.patch_mode,
        "embedding_dtype": cfg.embedding_dtype,
        "views": list(DIHEDRAL_VIEWS[: cfg.views]),
        "torch": torch.__version__,
        "seconds": round(seconds, 2),
        "summary": rows,
    }
