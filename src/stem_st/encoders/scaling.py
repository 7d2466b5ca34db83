"""Standardising spot embeddings with training statistics, safely out of domain.

A dimension that is (nearly) constant over the training spots carries no information the
models could learn from, but a new tissue may switch it on: with a tiny std, standardised
values explode (2 × 10⁵ was seen on another tissue with ImageNet EfficientNet features). Such
dimensions are zeroed, and every standardised value is clipped to ``±clip``.
"""

from __future__ import annotations

import numpy as np
import torch

#: a dimension whose training std is below this fraction of the median std is constant
RELATIVE_STD_FLOOR = 1e-3
#: standardised values are clipped to ± this many training stds
CLIP = 10.0


class EmbeddingScaler:
    """``(x − mean) / std`` on informative dimensions, 0 on constant ones, clipped."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, clip: float = CLIP):
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self.clip = float(clip)
        typical = float(np.median(self.std)) if self.std.size else 0.0
        self.informative = self.std > max(RELATIVE_STD_FLOOR * typical, 1e-12)

    @classmethod
    def fit(cls, emb: np.ndarray, clip: float = CLIP) -> EmbeddingScaler:
        """Statistics of training embeddings ``(N, C)``."""
        emb = np.asarray(emb, dtype=np.float64)
        return cls(emb.mean(0), emb.std(0), clip)

    @property
    def dim(self) -> int:
        return len(self.mean)

    def transform(self, emb: np.ndarray) -> np.ndarray:
        """Standardise ``(..., C)`` embeddings: float32, constant dimensions 0, |value| ≤ clip."""
        emb = np.asarray(emb, dtype=np.float32)
        safe = np.where(self.informative, self.std, 1.0).astype(np.float32)
        z = np.where(self.informative, (emb - self.mean) / safe, 0.0)
        return np.clip(z, -self.clip, self.clip).astype(np.float32)

    def state(self) -> dict:
        """Tensors for a checkpoint."""
        return {"cond_mean": torch.from_numpy(self.mean), "cond_std": torch.from_numpy(self.std),
                "cond_clip": self.clip}

    @classmethod
    def from_state(cls, state: dict) -> EmbeddingScaler:
        """From :meth:`state` (runs from before clipping get the default clip)."""
        return cls(np.asarray(state["cond_mean"]), np.asarray(state["cond_std"]),
                   float(state.get("cond_clip", CLIP)))
