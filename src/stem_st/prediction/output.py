"""Prediction of a prepared section, and the files: an AnnData per section, plus optionally
all samples beside it."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from ..atomic import atomic_path, write_h5ad
from ..data.context import store_graphs
from ..data.dataset import PreparedDataset
from ..data.spatial import section_spatial
from ..data.units import UNITS
from ..errors import require
from ..progress import phase
from ..stem import PredictSettings, StemModel
from ..stem.shift import attach_shift
from ..stem.spatial import field_provenance

SAMPLES_SUFFIX = ".samples.npy"


#: longest side of the H&E that `stem predict` embeds in its output (~3 MB uncompressed)
PREDICT_IMAGE_SIDE = 1000


def prediction_anndata(spots: ad.AnnData, genes: list[str], summary: np.ndarray, std: np.ndarray,
                       provenance: dict) -> ad.AnnData:
    """``X`` = summary (log2(1 + count)), ``layers['std']``, spots' ids/coordinates/labels."""
    obs = pd.DataFrame(index=spots.obs_names.copy())
    if "label" in spots.obs:
        obs["label"] = spots.obs["label"].to_numpy()
    out = ad.AnnData(X=summary.astype(np.float32), obs=obs, var=pd.DataFrame(index=list(genes)))
    out.layers["std"] = std.astype(np.float32)
    out.obsm["spatial"] = np.asarray(spots.obsm["spatial"], dtype=np.float64)
    store_graphs(out)
    out.uns["stem"] = {"units": UNITS, **provenance}
    return out


def samples_path(path: str | Path) -> Path:
    """Where the samples of the output ``path`` (``<name>.h5ad``) go: ``<name>.samples.npy`` beside it."""
    path = Path(path)
    return path.with_name(path.stem + SAMPLES_SUFFIX)


def write_prediction(pred: ad.AnnData, path: str | Path, samples: np.ndarray | None = None,
                     overwrite: bool = False, key: str = "stem") -> None:
    """Write ``pred`` atomically; with ``samples`` also ``<path>.samples.npy`` (named in ``uns[key]``)."""
    path = Path(path)
    require(path.suffix == ".h5ad", f"--out must end in .h5ad, got {path.name}")
    if samples is not None:
        spath = samples_path(path)
        require(overwrite or not spath.exists(), f"{spath} already exists; pass --overwrite")
        pred.uns[key]["samples_file"] = spath.name
        pred.uns[key]["samples_shape"] = "spots x samples x genes"
    with atomic_path(path, overwrite=overwrite) as tmp:
        write_h5ad(pred, tmp)
        if samples is not None:
            with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as fh:
                np.save(fh, samples.astype(np.float32))
            os.replace(fh.name, spath)


def predict_section(model: StemModel, ds: PreparedDataset, section: str, target: str | Path,
                    settings: PredictSettings, keep_samples: bool = False, overwrite: bool = False,
                    progress: bool = True) -> dict:
    """Predict one prepared section with a :class:`~stem_st.stem.StemModel` and write the file;
    returns a summary row."""
    require(overwrite or not Path(target).exists(), f"{target} already exists; pass --overwrite")
    spots = ds.section(section)
    t0 = time.perf_counter()
    emb, xy = ds.embeddings(section)[:, 0], np.asarray(spots.obsm["spatial"])
    with phase(f"{section}: predict", model.work(spots.n_obs, settings), progress) as advance:
        observed = float(np.median(np.asarray(spots.X.sum(1)).ravel())) if settings.depth == "auto" else None
        mean, std, samples = model.predict(emb, xy, replace(settings, depth=1.0), advance)
        mean, samples, depth = model.at_depth(mean, samples, settings, observed)
        std = samples.std(axis=1) if depth != 1 else std
    secs = time.perf_counter() - t0
    prov = {"section": section, "method": "stem", **settings.provenance(),
            "summary": settings.summary or model.recipe.point, "recipe": model.recipe.to_dict(),
            "checkpoint": model.meta.get("checkpoint"), "step": model.meta.get("step"), "weights": "ema",
            "encoders": [p["encoder"] for p in model.encoders],
            "prepared": str(ds.root.resolve()), "seconds": round(secs, 2), "depth_ratio": depth,
            **field_provenance(model, settings)}
    pred = prediction_anndata(spots, model.genes, mean, std, prov)
    spatial = section_spatial(dict(spots.uns.get("stem", {})), PREDICT_IMAGE_SIDE)
    if spatial:  # the H&E for sc.pl.spatial / squidpy.pl.spatial_scatter (library id = section)
        pred.uns["spatial"] = spatial
        pred.uns["stem"]["library_id"] = next(iter(spatial))
    shift = attach_shift(model, pred, emb, xy, section, settings)
    write_prediction(pred, target, samples if keep_samples else None, overwrite)
    return {"section": section, "spots": pred.n_obs, "genes": pred.n_vars, "samples": settings.num_samples,
            "sampler": settings.sampler, "seconds": round(secs, 1),
            **({"shift (median)": shift["median"]} if shift else {}), "file": str(target)}
