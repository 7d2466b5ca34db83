"""Prediction files: an AnnData per section, plus optionally all samples beside it."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from ..atomic import atomic_path, write_h5ad
from ..data.context import store_graphs
from ..diffusion.gaussian import DEFAULT_SAMPLER
from ..errors import require

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
    out.uns["stem"] = {"units": "log2(1 + count)", **provenance}
    return out


def scanpy_spatial(library: str, image: np.ndarray, scale: float, spot_diameter_px: float,
                   source: str | None) -> dict:
    """``uns['spatial']`` as scanpy/squidpy read it: a hires image and its scale factors."""
    return {library: {"images": {"hires": image},
                      "scalefactors": {"tissue_hires_scalef": float(scale),
                                       "spot_diameter_fullres": float(spot_diameter_px)},
                      "metadata": {"source_image_path": str(Path(source).resolve()) if source else None}}}


def section_spatial(info: dict, image_side: int) -> dict | None:
    """``uns['spatial']`` for a section from its ``uns['stem']`` (image path, µm/px, spot diameter),
    or None when it has no readable image."""
    from ..data.images import open_image

    if not (info.get("image_path") and Path(info["image_path"]).is_file() and info.get("mpp")):
        return None
    with open_image(info["image_path"]) as img:
        thumb, scale = img.thumbnail(image_side)
    return scanpy_spatial(str(info.get("section", "section")), thumb, scale,
                          info["spot_diameter_um"] / info["mpp"], info["image_path"])


def predict_anndata(model, adata: ad.AnnData, num_samples: int = 20, sampler: str = DEFAULT_SAMPLER,
                    seed: int = 0, device: str = "cpu", inplace: bool = False,
                    image_side: int = 2000) -> ad.AnnData | None:
    """Predict a section AnnData with spot embeddings in ``obsm['embedding']`` (spots[, views], dim)
    and centres in ``obsm['spatial']``.

    Returns a new AnnData over the model's genes: ``X`` = the section's counts of those genes where
    it has them (else the prediction), ``layers['stem_mean']`` and ``layers['stem_std']``
    (log2(1 + count)), obs/obsm copied, ``uns['spatial']`` (the H&E, when the section has one) for
    ``sc.pl.spatial`` and ``uns['stem']`` provenance. ``adata`` is never modified unless
    ``inplace`` (its genes must then be exactly the model's).
    """
    require("embedding" in adata.obsm and "spatial" in adata.obsm,
            "the AnnData needs obsm['embedding'] (stem_st.embed or a prepared section) and obsm['spatial']")
    require(not inplace or list(adata.var_names) == list(model.genes), "inplace=True needs the AnnData's "
            "genes to be exactly the model's (e.g. a prepared section); use the returned copy instead")
    emb = np.asarray(adata.obsm["embedding"], dtype=np.float32)
    emb = emb[:, 0] if emb.ndim == 3 else emb
    xy = np.asarray(adata.obsm["spatial"], dtype=np.float64)
    mean, std, _ = model.predict(emb, num_samples, sampler, None, seed, device, xy=xy)
    prov = {"units": "log2(1 + count)", "method": "stem", "summary": model.recipe.point,
            "num_samples": num_samples, "sampler": sampler, "seed": seed, "recipe": model.recipe.to_dict(),
            "checkpoint": model.meta.get("checkpoint"), "step": model.meta.get("step")}
    if inplace:
        out = adata
    else:
        have = [g for g in model.genes if g in adata.var_names]
        x = (adata[:, model.genes].X if len(have) == len(model.genes) else mean)
        x = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
        out = ad.AnnData(X=x, obs=adata.obs.copy(), var=pd.DataFrame(index=list(model.genes)))
        out.obsm["spatial"] = xy.copy()
        store_graphs(out)  # a copy's own; with inplace, the user's obsp is left alone
        spatial = section_spatial(adata.uns.get("stem", {}), image_side)
        if spatial:
            out.uns["spatial"] = spatial
            prov["library_id"] = next(iter(spatial))
    out.layers["stem_mean"] = mean.astype(np.float32)
    out.layers["stem_std"] = std.astype(np.float32)
    out.uns["stem"] = {**dict(out.uns.get("stem", {})), "prediction": prov}
    return None if inplace else out


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
    spatial = section_spatial(dict(spots.uns.get("stem", {})), PREDICT_IMAGE_SIDE)
    if spatial:  # the H&E for sc.pl.spatial / squidpy.pl.spatial_scatter (library id = section)
        pred.uns["spatial"] = spatial
        pred.uns["stem"]["library_id"] = next(iter(spatial))
    write_prediction(pred, target, samples if keep_samples else None, overwrite)
    return {"section": section, "spots": pred.n_obs, "genes": pred.n_vars, "samples": num_samples,
            "sampler": sampler, "seconds": round(secs, 1), "file": str(target)}
