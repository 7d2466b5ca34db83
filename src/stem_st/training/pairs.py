"""Training batches from the pair stores: standardised conditions and targets ``z``.

On a CPU every batch is read from disk (a few rows per step, memory independent of the cohort);
on a GPU the whole training set is moved to the device in chunks when it fits a quarter of the
device's memory (reading each batch would slow a fast GPU step), and read per batch otherwise.
"""

from __future__ import annotations

import numpy as np
import torch

from ..encoders.scaling import EmbeddingScaler
from ..models.ridge import RidgeProbe
from ..recipe import Recipe
from .data import TrainingData
from .targets import TargetTransform, fit_targets

#: the scaler, prior and target statistics are fitted on at most this many pairs
STATS_PAIRS = 16384
GPU_FRACTION = 0.25
CHUNK = 4096


def stats_rows(n: int, seed: int, cap: int | None = None) -> np.ndarray:
    """All ``n`` pair indices, or a sorted random sample of ``cap`` (STATS_PAIRS) of them."""
    cap = STATS_PAIRS if cap is None else cap
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=cap, replace=False))


def fit_statistics(data: TrainingData, recipe: Recipe, seed: int
                   ) -> tuple[EmbeddingScaler, TargetTransform, np.ndarray]:
    """Input scaling, prior and target statistics from at most STATS_PAIRS pairs (all of them for
    a dataset like HER2ST, a fixed-size sample of a large cohort); the prior of each section is
    then carried to all its pairs: ``data.x`` holds x − prior afterwards. Returns the scaler,
    the transform and the rows the statistics came from."""
    stats = stats_rows(len(data), seed)
    raw = data.inputs.rows(stats)
    scaler = EmbeddingScaler.fit(raw)
    cond = scaler.transform(raw)
    del raw

    def carry_prior(group: int, probe: RidgeProbe) -> None:
        rows = np.flatnonzero(data.group == group)  # a section's pairs are contiguous
        for lo in range(rows[0], rows[-1] + 1, CHUNK):
            hi = min(lo + CHUNK, rows[-1] + 1)
            data.x.write(lo, data.x.read(lo, hi) - probe.predict(scaler.transform(data.inputs.read(lo, hi))))

    target, _ = fit_targets(recipe, cond, data.x.rows(stats), data.group[stats], data.original[stats],
                            data.x_max, carry_prior)
    return scaler, target, stats


def calibration_rows(groups: np.ndarray, original: np.ndarray | None, seed: int, spots: int = 128) -> np.ndarray:
    """Up to ``spots`` random original-view pairs per section, section by section."""
    cand = np.flatnonzero(original) if original is not None else np.arange(len(groups))
    rng = np.random.default_rng(seed)
    return np.concatenate([cand[rng.permutation(np.flatnonzero(groups[cand] == g))[:spots]]
                           for g in np.unique(groups[cand])])


def neighbour_table(pairs: TrainingPairs, rows: np.ndarray, k: int, seed: int, dims: int = 32) -> torch.Tensor:
    """``(len(pairs.data), k)`` pair indices: for each pair of ``rows``, its ``k`` nearest pairs
    among ``rows`` (itself included) by the Euclidean distance between the first ``dims``
    principal components of their standardised conditions (scikit-learn's PCA and
    NearestNeighbors); rows outside ``rows`` point at themselves."""
    from sklearn.decomposition import PCA
    from sklearn.neighbors import NearestNeighbors

    fit_rows = rows[stats_rows(len(rows), seed)]
    cond = pairs.scaler.transform(pairs.data.inputs.rows(fit_rows))
    pca = PCA(n_components=min(dims, *cond.shape), random_state=seed).fit(cond)
    proj = np.concatenate([pca.transform(pairs.scaler.transform(pairs.data.inputs.rows(rows[lo:lo + CHUNK])))
                           for lo in range(0, len(rows), CHUNK)])
    k = min(k, len(rows))
    _, nearest = NearestNeighbors(n_neighbors=k).fit(proj).kneighbors(proj)
    table = np.repeat(np.arange(len(pairs.data))[:, None], k, axis=1)
    table[rows] = rows[nearest]
    return torch.from_numpy(table)


class TrainingPairs:
    """``batch(idx)`` → (condition, z) tensors on ``device`` for pair indices ``idx``."""

    def __init__(self, data: TrainingData, scaler: EmbeddingScaler, target: TargetTransform,
                 device: torch.device):
        self.data, self.scaler, self.target, self.device = data, scaler, target, device
        self.resident: tuple[torch.Tensor, torch.Tensor] | None = None
        if device.type == "cuda":
            need = len(data) * (data.inputs.width + data.x.width) * 4
            if need <= GPU_FRACTION * torch.cuda.get_device_properties(device).total_memory:
                parts = [self._tensors(np.arange(lo, min(lo + CHUNK, len(data))))
                         for lo in range(0, len(data), CHUNK)]
                self.resident = tuple(torch.cat(p) for p in zip(*parts))

    def numpy(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cond = self.scaler.transform(self.data.inputs.rows(idx))
        z = ((self.data.x.rows(idx) - self.target.mu) / self.target.sd).astype(np.float32)
        return cond, z

    def _tensors(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(torch.from_numpy(a).to(self.device) for a in self.numpy(idx))

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.resident is not None:
            idx = idx.to(self.device)
            return self.resident[0][idx], self.resident[1][idx]
        return self._tensors(idx.numpy())
