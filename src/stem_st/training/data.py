"""Training pairs (expression, image embedding) from a prepared dataset."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from ..data.prepared import PreparedDataset
from ..errors import require

log = logging.getLogger(__name__)


def log2_expression(counts: np.ndarray) -> np.ndarray:
    """Counts → log2(1 + count), float32: the space the model works in."""
    return np.log2(1.0 + np.asarray(counts, dtype=np.float32))


@dataclass
class TrainingData:
    """Stacked pairs; ``cond_mean``/``cond_std`` standardise embeddings (training stats)."""

    x: torch.Tensor          # (N, G) log2(1 + count)
    cond: torch.Tensor       # (N, C) standardised embeddings
    cond_mean: torch.Tensor  # (C,)
    cond_std: torch.Tensor   # (C,)
    sections: list[str]
    n_spots: int


def embedding_stats(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std (floored) of embeddings, ``(N, C)``."""
    return emb.mean(0), np.maximum(emb.std(0), 1e-6)


def build_training_data(
    ds: PreparedDataset, sections: list[str], aug_ratio: int, seed: int, target_layer: str | None = None
) -> TrainingData:
    """Each non-empty spot of ``sections`` contributes its original view plus ``aug_ratio``
    randomly chosen other dihedral views (fewer if fewer were prepared)."""
    require(len(sections) > 0, "no training sections (all were held out?)")
    rng = np.random.default_rng(seed)
    xs, conds, n_spots = [], [], 0
    for sid in sections:
        a = ds.section(sid)
        counts = a.layers[target_layer] if target_layer else a.X
        counts = np.asarray(counts.toarray() if hasattr(counts, "toarray") else counts)
        keep = counts.sum(axis=1) > 0
        if (~keep).any():
            log.info("%s: %d spots with no panel counts dropped", sid, int((~keep).sum()))
        emb = ds.embeddings(sid)[keep]
        x = log2_expression(counts[keep])
        n_spots += len(x)
        k = min(aug_ratio, emb.shape[1] - 1)
        for i in range(len(x)):
            views = [0, *(rng.choice(np.arange(1, emb.shape[1]), size=k, replace=False) if k else [])]
            for v in views:
                xs.append(x[i])
                conds.append(emb[i, v])
    require(n_spots > 0, "the training sections hold no spot with counts")
    cond = np.stack(conds)
    mean, std = embedding_stats(cond)
    return TrainingData(
        x=torch.from_numpy(np.stack(xs)), cond=torch.from_numpy((cond - mean) / std).float(),
        cond_mean=torch.from_numpy(mean).float(), cond_std=torch.from_numpy(std).float(),
        sections=list(sections), n_spots=n_spots,
    )
