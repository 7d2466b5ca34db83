"""Embeddings computed elsewhere: ``precomputed:<file>``.

The file may be a HEST-style ``.h5`` (datasets ``embeddings`` and ``barcodes``, aligned by
spot id), or a ``.pt``/``.npy`` array in spot order, shaped ``(spots, dim)`` or
``(spots, views, dim)``. ``{section}`` in the path is replaced by the section id.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import StemError, require
from .base import file_sha256

PREFIX = "precomputed:"


def is_precomputed(name: str) -> bool:
    """Whether an encoder name refers to precomputed embeddings."""
    return name.startswith(PREFIX)


def _load_array(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    t = torch.load(path, map_location="cpu", weights_only=True)
    require(isinstance(t, torch.Tensor), f"{path} does not hold a single tensor")
    return t.float().numpy()


def load_precomputed(
    name: str, section: str, spot_ids: list[str], n_views: int
) -> tuple[np.ndarray, str]:
    """Return ``(embeddings (spots, views, dim) float32, content hash)`` for a section."""
    path = Path(name[len(PREFIX):].replace("{section}", section))
    require(path.is_file(), f"{section}: precomputed embeddings not found: {path}")
    try:
        if path.suffix in (".h5", ".hdf5"):
            import h5py

            with h5py.File(path, "r") as f:
                require("embeddings" in f and "barcodes" in f,
                        f"{path}: needs datasets 'embeddings' and 'barcodes'")
                emb = np.asarray(f["embeddings"])
                codes = [b.decode() if isinstance(b, bytes) else str(b)
                         for b in np.asarray(f["barcodes"]).reshape(-1)]
            pos = {c: i for i, c in enumerate(codes)}
            missing = [s for s in spot_ids if s not in pos]
            require(not missing, f"{path}: {len(missing)} spots have no embedding "
                                 f"(e.g. {missing[0] if missing else ''})")
            emb = emb[[pos[s] for s in spot_ids]]
        else:
            emb = _load_array(path)
            require(len(emb) == len(spot_ids),
                    f"{path}: {len(emb)} rows for {len(spot_ids)} spots (must be in spot order)")
    except StemError:
        raise
    except Exception as exc:
        raise StemError(f"cannot read precomputed embeddings {path}: {exc}") from None
    emb = np.asarray(emb, dtype=np.float32)
    if emb.ndim == 2:
        emb = emb[:, None, :]
    require(emb.ndim == 3, f"{path}: embeddings must be (spots, dim) or (spots, views, dim)")
    require(np.isfinite(emb).all(), f"{path}: embeddings contain NaN or infinite values")
    require(emb.shape[1] >= n_views,
            f"{path}: holds {emb.shape[1]} view(s) but {n_views} were asked for; use --views "
            f"{emb.shape[1]}")
    return emb[:, :n_views], file_sha256(path)[:16]
