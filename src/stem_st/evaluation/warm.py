"""Compile, once per environment, the numba kernels that evaluation runs: scanpy's (normalisation,
Moran's I), umap's and pynndescent's (scanpy's neighbour graph for the Leiden check) and
scoringrules' (CRPS, energy and variogram scores). numba caches them beside the installed packages,
so the first ``stem evaluate`` after an install does not pay ~20 s of compiling on a 2-core CPU.
``make install`` runs it: ``python -m stem_st.evaluation.warm``."""

from __future__ import annotations

import time
import warnings

import numpy as np


def warm() -> float:
    """Run each kernel once on a tiny input; returns the seconds it took."""
    import anndata as ad
    import scanpy as sc

    from .clustering import leiden_clusters
    from .probabilistic import crps, energy, morans_i, variogram

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    x = rng.poisson(3.0, (64, 12)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = ad.AnnData(x.copy())
        sc.pp.normalize_total(a)
        sc.pp.log1p(a)
        leiden_clusters(np.log2(1 + x), 3)  # scanpy's neighbours: umap's fuzzy simplicial set
        sc.pp.neighbors(a, n_neighbors=8, use_rep="X")
        morans_i(x, a.obsp["connectivities"])
    truth, samples = x[:8], x[:8, None] + rng.normal(size=(8, 4, 12))
    crps(truth, samples), energy(truth, samples), variogram(truth, samples)
    return time.perf_counter() - t0


if __name__ == "__main__":
    print(f"numba kernels of scanpy, umap and scoringrules compiled and cached ({warm():.1f} s)")
