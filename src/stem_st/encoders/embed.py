"""Spot embeddings of a section: every encoder × dihedral view, read from or written to the
embedding cache (keyed by image, spots, encoder, weights and patch geometry)."""

from __future__ import annotations

import hashlib

import anndata as ad
import numpy as np
from rich.progress import Progress

from ..data.images import file_fingerprint, open_image
from ..data.patches import DIHEDRAL_VIEWS, PatchGeometry, dihedral, iter_patch_batches, patch_geometry
from ..errors import require
from .base import ImageEncoder
from .cache import EmbeddingCache


def _coords_hash(xy: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(xy, dtype=np.float64).tobytes()).hexdigest()[:16]


def _provenance(adata: ad.AnnData, enc: ImageEncoder, geom: PatchGeometry, view: int,
                image_id: str) -> dict:
    info = adata.uns["stem"]
    return {
        "section": info["section"], "image": info["image_path"], "image_id": image_id,
        "spots": _coords_hash(adata.obsm["spatial"]), "n_spots": adata.n_obs,
        "encoder": enc.name, "weights": enc.weights_id, "input_px": enc.input_size,
        "mpp": round(float(info["mpp"]), 6), "patch_mode": geom.mode, "patch_px": geom.side_px,
        "field_um": round(geom.field_um, 3), "view": DIHEDRAL_VIEWS[view],
    }


def embed_section(
    adata: ad.AnnData, encoders: list[ImageEncoder], n_views: int, mode: str,
    cache: EmbeddingCache, batch_size: int, progress: Progress | None = None, image=None,
) -> tuple[list[np.ndarray], int]:
    """Embed every spot of a section under each encoder and view, using the cache.

    Returns one ``(spots, views, dim)`` array per encoder and the number of views computed.
    ``image``: an already open image of the section (else it is opened from ``image_path``).
    """
    if not encoders:
        return [], 0
    info = adata.uns["stem"]
    geom = patch_geometry(mode, info["mpp"], info["spot_diameter_um"])
    image_id = file_fingerprint(info["image_path"])
    out, todo = [], []
    for e, enc in enumerate(encoders):
        arr = np.zeros((adata.n_obs, n_views, enc.dim), dtype=np.float32)
        for v in range(n_views):
            prov = _provenance(adata, enc, geom, v, image_id)
            hit = cache.get(info["section"], prov)
            if hit is not None and hit.shape == (adata.n_obs, enc.dim):
                arr[:, v] = hit
            else:
                todo.append((e, v, prov))
        out.append(arr)
    if not todo:
        return out, 0
    task = None
    if progress is not None:
        task = progress.add_task(f"{info['section']} embed", total=adata.n_obs * len(todo))
    source = image or open_image(info["image_path"])
    try:
        for idx, crops in iter_patch_batches(source, adata.obsm["spatial"], geom, batch_size):
            for e, v, _ in todo:
                out[e][idx, v] = encoders[e].embed(dihedral(crops, v)).numpy()
                if task is not None:
                    progress.advance(task, len(idx))
    finally:
        if image is None:
            source.close()
    for e, v, prov in todo:
        require(np.isfinite(out[e][:, v]).all(), f"{info['section']}: non-finite embeddings")
        cache.put(info["section"], prov, out[e][:, v])
    return out, len(todo)
