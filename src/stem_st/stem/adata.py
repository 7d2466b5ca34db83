"""AnnData in, AnnData out: a Stem prediction of a section AnnData that carries its spot
embeddings (``stem_st.embed`` or a prepared section)."""

from __future__ import annotations

from dataclasses import replace

import anndata as ad
import numpy as np
import pandas as pd

from ..data.context import store_graphs
from ..data.spatial import section_spatial
from ..data.units import UNITS
from ..errors import require
from .settings import DEFAULT_PREDICT, PredictSettings
from .shift import attach_shift
from .spatial import field_provenance


def predict_anndata(model, adata: ad.AnnData, settings: PredictSettings = DEFAULT_PREDICT,
                    inplace: bool = False, image_side: int = 2000) -> ad.AnnData | None:
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
    observed = None
    if settings.depth == "auto":  # the section's own counts of the model's genes measure its depth
        require(all(g in adata.var_names for g in model.genes),
                "depth 'auto' needs the AnnData's counts of every gene of the model; give the ratio instead")
        observed = float(np.median(np.asarray(adata[:, model.genes].X.sum(1)).ravel()))
    mean, std, samples = model.predict(emb, xy, replace(settings, depth=1.0))
    mean, samples, depth = model.at_depth(mean, samples, settings, observed)
    std = samples.std(axis=1) if depth != 1 else std
    prov = {"units": UNITS, "method": "stem", **settings.provenance(), "depth_ratio": depth,
            "summary": settings.summary or model.recipe.point, "recipe": model.recipe.to_dict(),
            "checkpoint": model.meta.get("checkpoint"), "step": model.meta.get("step"),
            **field_provenance(model, settings)}
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
    attach_shift(model, out, emb, xy, str(prov.get("library_id") or "the section"), settings)
    return None if inplace else out
