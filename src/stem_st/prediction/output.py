"""Prediction files: an AnnData per section, plus optionally all samples beside it."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from ..atomic import atomic_path
from ..diffusion.gaussian import DEFAULT_SAMPLER
from ..errors import require

SAMPLES_SUFFIX = ".samples.npy"


def prediction_anndata(spots: ad.AnnData, genes: list[str], summary: np.ndarray, std: np.ndarray,
                       provenance: dict) -> ad.AnnData:
    """``X`` = summary (log2(1 + count)), ``layers['std']``, spots' ids/coordinates/labels."""
    obs = pd.DataFrame(index=spots.obs_names.copy())
    if "label" in spots.obs:
        obs["label"] = spots.obs["label"].to_numpy()
    out = ad.AnnData(X=summary.astype(np.float32), obs=obs, var=pd.DataFrame(index=list(genes)))
    out.layers["std"] = std.astype(np.float32)
    out.obsm["spatial"] = np.asarray(spots.obsm["spatial"], dtype=np.float64)
    out.uns["stem"] = {"units": "log2(1 + count)", **provenance}
    return out


def write_prediction(pred: ad.AnnData, path: str | Path, samples: np.ndarray | None = None,
                     overwrite: bool = False) -> None:
    """Write ``pred`` atomically; with ``samples`` also ``<path>.samples.npy``."""
    path = Path(path)
    require(path.suffix == ".h5ad", f"--out must end in .h5ad, got {path.name}")
    if samples is not None:
        spath = path.with_name(path.stem + SAMPLES_SUFFIX)
        require(overwrite or not spath.exists(), f"{spath} already exists; pass --overwrite")
        pred.uns["stem"]["samples_file"] = spath.name
        pred.uns["stem"]["samples_shape"] = "spots x samples x genes"
    with atomic_path(path, overwrite=overwrite) as tmp:
        pred.write_h5ad(tmp)
        if samples is not None:
            with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as fh:
                np.save(fh, samples.astype(np.float32))
            os.replace(fh.name, spath)


def predict_section(model, ds, section: str, target: str | Path, num_samples: int = 20,
                    sampler: str = DEFAULT_SAMPLER, summary: str | None = None, seed: int = 0, device: str = "cpu",
                    keep_samples: bool = False, overwrite: bool = False) -> dict:
    """Predict one prepared section with a :class:`~stem_st.StemModel` and write the file;
    returns a summary row."""
    require(overwrite or not Path(target).exists(), f"{target} already exists; pass --overwrite")
    spots = ds.section(section)
    t0 = time.perf_counter()
    mean, std, samples = model.predict(ds.embeddings(section)[:, 0], num_samples, sampler, summary, seed,
                                       device, xy=np.asarray(spots.obsm["spatial"]))
    secs = time.perf_counter() - t0
    summary = summary or model.recipe.point
    prov = {"section": section, "method": "stem", "summary": summary, "num_samples": num_samples,
            "recipe": model.recipe.to_dict(),
            "sampler": sampler, "seed": seed, "checkpoint": model.meta.get("checkpoint"),
            "step": model.meta.get("step"), "weights": "ema",
            "encoders": [p["encoder"] for p in model.encoders],
            "prepared": str(ds.root.resolve()), "seconds": round(secs, 2)}
    pred = prediction_anndata(spots, model.genes, mean, std, prov)
    write_prediction(pred, target, samples if keep_samples else None, overwrite)
    return {"section": section, "spots": pred.n_obs, "genes": pred.n_vars, "samples": num_samples,
            "sampler": sampler, "seconds": round(secs, 1), "file": str(target)}
