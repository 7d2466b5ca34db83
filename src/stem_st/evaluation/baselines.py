"""Baselines with the same ``fit`` / ``predict`` interface as :class:`~stem_st.StemModel`.

Every baseline learns from the same prepared dataset, split and embeddings as Stem: the
original view (view 0) of each training spot with panel counts, embeddings standardised with
the training statistics, targets in log2(1 + count). ``predict`` returns
``(mean, std or None, samples or None)`` like ``StemModel.predict``.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data.prepared import PreparedDataset
from ..errors import require
from ..training.data import embedding_stats, log2_expression


def training_pairs(ds: PreparedDataset, sections: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings (N, C) of view 0, log2(1 + count) (N, G)) of spots with panel counts."""
    require(bool(sections), "no training sections for the baselines")
    xs, ys = [], []
    for sid in sections:
        a = ds.section(sid)
        counts = np.asarray(a.X.toarray() if hasattr(a.X, "toarray") else a.X)
        keep = counts.sum(1) > 0
        xs.append(ds.embeddings(sid)[keep, 0])
        ys.append(log2_expression(counts[keep]))
    return np.concatenate(xs), np.concatenate(ys)


class Baseline:
    """Common part: embedding standardisation and the fit/predict contract."""

    name = "baseline"

    def fit(self, ds: PreparedDataset, sections: list[str]) -> Baseline:
        """Fit on the given (training) sections of ``ds``."""
        emb, y = training_pairs(ds, sections)
        self._mean, self._std = embedding_stats(emb)
        self._fit((emb - self._mean) / self._std, y)
        return self

    def predict(self, embeddings: np.ndarray, **_) -> tuple[np.ndarray, np.ndarray | None,
                                                             np.ndarray | None]:
        """``(mean, std, samples)`` for raw ``(N, C)`` embeddings; std/samples may be None."""
        require(hasattr(self, "_mean"), f"{self.name}: call fit() first")
        emb = np.asarray(embeddings, dtype=np.float32)
        require(emb.ndim == 2 and emb.shape[1] == len(self._mean),
                f"{self.name}: embeddings of width {emb.shape[-1]} do not match the fitted "
                f"{len(self._mean)}")
        return self._predict((emb - self._mean) / self._std)

    def _fit(self, x: np.ndarray, y: np.ndarray) -> None:
        raise NotImplementedError

    def _predict(self, x: np.ndarray):
        raise NotImplementedError


class MeanBaseline(Baseline):
    """The training mean expression for every spot."""

    name = "mean"

    def _fit(self, x, y):
        self.mu = y.mean(0)

    def _predict(self, x):
        return np.repeat(self.mu[None], len(x), axis=0).astype(np.float32), None, None


class KNNBaseline(Baseline):
    """Average expression of the ``k`` nearest training spots by cosine similarity of the
    standardised embeddings; the neighbours' profiles are the samples."""

    name = "knn"

    def __init__(self, k: int = 20):
        require(k >= 1, "knn: k must be at least 1")
        self.k = k

    def _fit(self, x, y):
        self.keys = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        self.values = y

    def _predict(self, x):
        q = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        k = min(self.k, len(self.keys))
        idx = np.argpartition(-(q @ self.keys.T), k - 1, axis=1)[:, :k]
        samples = self.values[idx]  # (N, k, G)
        return samples.mean(1), samples.std(1), samples


class RidgeBaseline(Baseline):
    """PCA to ``n_components`` dimensions then ridge regression, the penalty chosen by
    efficient leave-one-out cross-validation on the training spots (HEST-Benchmark probe)."""

    name = "ridge"

    def __init__(self, n_components: int = 256, alphas: tuple[float, ...] = tuple(np.logspace(-1, 5, 13))):
        self.n_components, self.alphas = n_components, alphas

    def _fit(self, x, y):
        from sklearn.decomposition import PCA
        from sklearn.linear_model import RidgeCV

        self.pca = PCA(n_components=min(self.n_components, *x.shape), random_state=0).fit(x)
        self.ridge = RidgeCV(alphas=self.alphas).fit(self.pca.transform(x), y)
        self.alpha = float(self.ridge.alpha_)

    def _predict(self, x):
        return self.ridge.predict(self.pca.transform(x)).astype(np.float32), None, None


class MLPBaseline(Baseline):
    """A 2-layer MLP regressor (ST-Net-style head) trained with MSE, AdamW, minibatches."""

    name = "mlp"

    def __init__(self, hidden: int = 256, epochs: int = 100, lr: float = 1e-3,
                 weight_decay: float = 1e-2, dropout: float = 0.2, batch_size: int = 64, seed: int = 0):
        self.hidden, self.epochs, self.lr, self.wd = hidden, epochs, lr, weight_decay
        self.dropout, self.batch_size, self.seed = dropout, batch_size, seed

    def _fit(self, x, y):
        gen = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)
        self.net = torch.nn.Sequential(
            torch.nn.Dropout(self.dropout), torch.nn.Linear(x.shape[1], self.hidden), torch.nn.GELU(),
            torch.nn.Dropout(self.dropout), torch.nn.Linear(self.hidden, y.shape[1]))
        with torch.no_grad():  # start from the mean profile
            self.net[-1].bias.copy_(torch.from_numpy(y.mean(0)))
        opt = torch.optim.AdamW(self.net.parameters(), lr=self.lr, weight_decay=self.wd)
        xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y).float()
        self.net.train()
        for _ in range(self.epochs):
            for idx in torch.randperm(len(xt), generator=gen).split(self.batch_size):
                loss = torch.nn.functional.mse_loss(self.net(xt[idx]), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.net.eval()

    def _predict(self, x):
        with torch.no_grad():
            return self.net(torch.from_numpy(x).float()).numpy(), None, None


BASELINES = {"mean": MeanBaseline, "knn": KNNBaseline, "ridge": RidgeBaseline, "mlp": MLPBaseline}


def parse_baselines(spec: str) -> list[str]:
    """``all`` | ``none`` | comma-separated names → list of baseline names."""
    spec = spec.strip().lower()
    if spec in ("", "none"):
        return []
    names = list(BASELINES) if spec == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in BASELINES]
    require(not unknown, f"unknown baseline(s) {', '.join(unknown)}; choose from {', '.join(BASELINES)} or all")
    return names
