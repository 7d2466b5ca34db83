"""A synthetic prepared dataset for the generative-model tests (no images needed)."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np

from stem_st.data.dataset import write_prepared

GENES = [f"G{i}" for i in range(8)]
# two expression modes in log2(1 + count): condition A mixes them 30/70, B is always mode 2
MODE1 = np.array([6, 6, 6, 6, 1, 1, 1, 1], dtype=float)
MODE2 = np.array([1, 1, 1, 1, 6, 6, 6, 6], dtype=float)
COND_A = np.array([1.0, 0.0, 0.0, 0.0])
COND_B = np.array([0.0, 1.0, 0.0, 0.0])


def _section(rng, n, cond, frac_mode1, views=2) -> ad.AnnData:
    first = rng.random(n) < frac_mode1
    log2 = np.where(first[:, None], MODE1, MODE2) + rng.normal(0, 0.25, size=(n, 8))
    counts = np.rint(np.exp2(np.clip(log2, 0, None)) - 1).astype(np.int32)
    emb = cond[None, None, :] + rng.normal(0, 0.05, size=(n, views, 4))
    a = ad.AnnData(X=counts)
    a.var_names = GENES
    a.obs_names = [f"s{i}" for i in range(n)]
    a.obsm["spatial"] = rng.uniform(0, 1000, size=(n, 2))
    a.obsm["embedding"] = emb.astype(np.float32)
    a.obs["is_mode1"] = first
    return a


def write_synthetic(root: Path, n=600, seed=0) -> Path:
    """Sections A (30 % mode 1), B (mode 2 only) and test sections TA, TB."""
    rng = np.random.default_rng(seed)
    sections = {"A": _section(rng, n, COND_A, 0.3), "B": _section(rng, n, COND_B, 0.0),
                "TA": _section(rng, 100, COND_A, 0.3), "TB": _section(rng, 100, COND_B, 0.0)}
    manifest = {"sections": [{"section": s} for s in sections], "holdout": ["TA", "TB"],
                "encoders": [{"encoder": "synthetic", "dim": 4, "weights": "none"}],
                "embedding_dim": 4, "views": ["identity", "hflip"], "patch_mode": "hest",
                "summary": []}
    write_prepared(root, sections, GENES, manifest)
    return root
