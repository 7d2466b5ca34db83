"""A synthetic prepared cohort for speed and memory benchmarks (no images, no encoder).

Each section is a square grid of spots (100 µm pitch, legacy-ST geometry); embeddings are
Gaussian with a per-section offset; counts are Poisson with log-means linear in the first
embedding dimensions, so a model has something to learn. Written with the package's own
prepared-folder writer, so ``stem train`` reads it like any prepared dataset.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np

from stem_st.data.dataset import finish_prepared, write_section
from stem_st.data.patches import DIHEDRAL_VIEWS


def write_cohort(root: str | Path, sections: int, spots: int = 600, views: int = 2, dim: int = 1280,
                 genes: int = 200, seed: int = 0, dtype=np.float32) -> Path:
    """Write ``sections`` synthetic sections of ``spots`` spots into a prepared folder."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    panel = [f"GENE{i:04d}" for i in range(genes)]
    loadings = rng.normal(scale=0.3, size=(min(dim, 16), genes))
    side = int(np.ceil(np.sqrt(spots)))
    grid = np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2)[:spots]
    entries = []
    for s in range(sections):
        sid = f"S{s:03d}"
        emb = (rng.normal(size=(spots, views, dim)) + rng.normal(scale=0.2, size=dim)).astype(dtype)
        rate = np.exp(1.0 + emb[:, 0, :loadings.shape[0]] @ loadings)
        a = ad.AnnData(X=rng.poisson(np.minimum(rate, 1e4)).astype(np.int32))
        a.var_names = panel
        a.obs_names = [f"{sid}_{i}" for i in range(spots)]
        a.obsm["spatial"] = (grid * 100.0 + 50.0).astype(np.float64)
        a.obsm["embedding"] = emb
        a.uns["stem"] = {"section": sid, "platform": "st", "spot_diameter_um": 100.0,
                         "center_distance_um": 100.0}
        # (older package versions, measured by train_memory.py --before, take no dtype)
        write_section(root, sid, a, panel, **({} if np.dtype(dtype) == np.float32 else
                                             {"embedding_dtype": np.dtype(dtype).name}))
        entries.append({"section": sid, "platform": "st", "spot_diameter_um": 100.0,
                        "center_distance_um": 100.0, "spots": spots})
    finish_prepared(root, panel, {
        "layout": "synthetic", "sections": entries, "holdout": [],
        "panel": {"spec": "synthetic", "n_genes": genes},
        "encoders": [{"encoder": "synthetic", "weights": None, "dim": dim}],
        "embedding_dim": dim, "patch_mode": "synthetic", "views": list(DIHEDRAL_VIEWS[:views]),
        "summary": [{"section": e["section"], "spots": spots} for e in entries]})
    return root
