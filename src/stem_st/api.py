"""The Python API behind ``import stem_st as st``: AnnData in, AnnData out."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np

from .data.dataset import PreparedDataset, open_prepared
from .errors import require


def prepare(sections: dict[str, ad.AnnData], out: str | Path, holdout: list[str] | tuple = (),
            encoder: str = "effnet-lite0-imagenet", weights: str | None = None, views: int | None = None,
            genes: str = "hmhvg:200", device: str = "auto", cache_dir: str | None = None,
            overwrite: bool = False) -> PreparedDataset:
    """Choose the gene panel (on the non-held-out sections), embed every spot's patch and write a
    prepared dataset to ``out``, as ``stem prepare`` does; the input AnnDatas are not modified."""
    from .encoders.cache import default_cache_dir
    from .preparation import PrepareConfig
    from .preparation import prepare as run

    require(isinstance(sections, dict) and sections, "give the sections as {section id: AnnData}")
    cfg = PrepareConfig(data="", layout="anndata", sections=list(sections), out=str(out), holdout=list(holdout),
                        encoders=[encoder], weights=[weights] if weights else [], views=views, genes=genes,
                        device=device, cache_dir=cache_dir or str(default_cache_dir()), overwrite=overwrite)
    run(cfg, {s: a.copy() for s, a in sections.items()})
    return open_prepared(out)


def embed(adata: ad.AnnData, encoder: str = "effnet-lite0-imagenet", weights: str | None = None,
          views: int = 1, device: str = "auto", cache_dir: str | None = None) -> ad.AnnData:
    """A copy of a section (from ``stem_st.read``) with its spots' patch embeddings in
    ``obsm['embedding']`` (spots, views, dim): what a trained model needs to predict a new section."""
    from .encoders.cache import EmbeddingCache, default_cache_dir
    from .encoders.embed import embed_section
    from .encoders.registry import build_encoder

    require(adata.uns.get("stem", {}).get("image_path"), "the section has no image (uns['stem']['image_path'])")
    enc = build_encoder(encoder, weights, device)
    (arr,), _ = embed_section(adata, [enc], views, "hest", EmbeddingCache(cache_dir or default_cache_dir()), 64)
    out = adata.copy()
    out.obsm["embedding"] = arr.astype(np.float32)
    return out
