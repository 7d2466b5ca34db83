"""Baselines with the same ``fit`` / ``predict`` interface as :class:`~stem_st.StemModel`.

Every baseline learns from the same prepared dataset, split and embeddings as Stem: the
original view (view 0) of each training spot with panel counts, inputs standardised with the
training statistics (:class:`~stem_st.encoders.scaling.EmbeddingScaler`), targets in
log2(1 + count). ``name+ctx`` / ``name+ctx2`` variants get the same spatial context as Stem's
``context='ring1'`` / ``'ring2'`` recipes. ``predict(embeddings, xy)`` returns
``(mean, std or None, samples or None)`` like ``StemModel.predict``.

Sampled baselines draw as many profiles per spot as Stem (:func:`make_baseline`): ``knn`` takes
the k = ``num_samples`` nearest training spots' profiles; ``ridge+ctx2+gauss|mvn|boot`` add
noise learned from *cross-fitted* training residuals (each training section's residuals from
a probe fitted on the other training sections, so they are as large as on an unseen section)
to the ridge+ctx2 mean: independent Gaussian per gene, a Gaussian with the full gene covariance
shrunk by Ledoit–Wolf (scikit-learn), or a whole residual vector of a random training spot (the
empirical joint across genes). Residuals are centred per gene; draws are clipped at 0 like
Stem's (log2(1 + count) is never negative).
"""

from __future__ import annotations

import numpy as np
import torch

from ..data.context import add_context
from ..data.dataset import PreparedDataset
from ..data.units import log2_expression
from ..encoders.scaling import EmbeddingScaler
from ..errors import require
from ..models.ridge import ALPHAS, RidgeProbe
from ..training.data import section_counts, section_inputs
from ..training.targets import cross_fitted_prior, noise_cholesky


def training_pairs(ds: PreparedDataset, sections: list[str], context: str = "none",
                   target_layer: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(inputs (N, C) of view 0, log2(1 + count) (N, G)) of spots with panel counts; the
    counts from ``layers[target_layer]`` when given (e.g. completed counts)."""
    require(bool(sections), "no training sections for the baselines")
    xs, ys = [], []
    for sid in sections:
        counts = section_counts(ds, sid, target_layer)
        keep = counts.sum(1) > 0
        xs.append(section_inputs(ds, sid, context)[keep, 0])
        ys.append(log2_expression(counts[keep]))
    return np.concatenate(xs), np.concatenate(ys)


class Baseline:
    """Common part: inputs (with optional spatial context), standardisation, fit/predict."""

    name = "baseline"
    context = "none"

    def fit(self, ds: PreparedDataset, sections: list[str], target_layer: str | None = None) -> Baseline:
        """Fit on the given (training) sections of ``ds`` (their ``target_layer`` counts if given)."""
        emb, y = training_pairs(ds, sections, self.context, target_layer)
        self.scaler = EmbeddingScaler.fit(emb)
        self._fit(self.scaler.transform(emb), y)
        return self

    def predict(self, embeddings: np.ndarray, xy: np.ndarray | None = None, **_
                ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """``(mean, std, samples)`` for raw ``(N, C)`` embeddings (and spot centres ``xy``,
        needed with context); std/samples may be None."""
        require(hasattr(self, "scaler"), f"{self.name}: call fit() first")
        emb = add_context(np.asarray(embeddings, dtype=np.float32), xy, self.context)
        require(emb.ndim == 2 and emb.shape[1] == self.scaler.dim,
                f"{self.name}: inputs of width {emb.shape[-1]} do not match the fitted "
                f"{self.scaler.dim}")
        return self._predict(self.scaler.transform(emb))

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

    def __init__(self, n_components: int = 256, alphas: tuple[float, ...] = ALPHAS):
        self.probe = RidgeProbe(n_components, alphas)

    def _fit(self, x, y):
        self.alpha = self.probe.fit(x, y).alpha

    def _predict(self, x):
        return self.probe.predict(x), None, None


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


NOISE = ("gauss", "mvn", "boot")


class ResidualSampledRidge(Baseline):
    """ridge+ctx2 plus draws of cross-fitted residual noise (``noise``: gauss | mvn | boot)."""

    context = "ring2"

    def __init__(self, noise: str = "gauss", num_samples: int = 20, seed: int = 0):
        require(noise in NOISE, f"unknown residual noise '{noise}'; choose {', '.join(NOISE)}")
        require(num_samples >= 2, "a sampled baseline needs at least two samples per spot")
        self.noise, self.num_samples, self.seed = noise, num_samples, seed
        self.name = f"ridge+ctx2+{noise}"

    def fit(self, ds: PreparedDataset, sections: list[str], target_layer: str | None = None):
        parts = [training_pairs(ds, [s], self.context, target_layer) for s in sections]
        emb, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        groups = np.repeat(np.arange(len(parts)), [len(p[1]) for p in parts])
        self.scaler = EmbeddingScaler.fit(emb)
        prior, self.probe = cross_fitted_prior(self.scaler.transform(emb), y, groups, np.ones(len(y), bool))
        resid = y - prior
        self.residuals = (resid - resid.mean(0)).astype(np.float32)
        if self.noise == "mvn":
            self.chol = noise_cholesky(self.residuals)
        return self

    def _predict(self, x):
        mean = self.probe.predict(x)
        rng = np.random.default_rng(self.seed)
        n, g, m = mean.shape[0], mean.shape[1], self.num_samples
        if self.noise == "boot":
            noise = self.residuals[rng.integers(len(self.residuals), size=(n, m))]
        elif self.noise == "mvn":
            noise = rng.standard_normal((n, m, g)) @ self.chol.T
        else:
            noise = rng.standard_normal((n, m, g)) * self.residuals.std(0)
        samples = np.maximum(mean[:, None] + noise, 0).astype(np.float32)
        return mean, samples.std(1), samples


def _with_context(base: type[Baseline], context: str, suffix: str) -> type[Baseline]:
    return type(f"{base.__name__}{context.title()}", (base,),
                {"name": f"{base.name}+{suffix}", "context": context,
                 "__doc__": f"{base.name} on the embedding and its {context} context means."})


BASELINES: dict[str, type[Baseline]] = {
    "mean": MeanBaseline, "knn": KNNBaseline, "ridge": RidgeBaseline, "mlp": MLPBaseline,
    "knn+ctx": _with_context(KNNBaseline, "ring1", "ctx"),
    "ridge+ctx": _with_context(RidgeBaseline, "ring1", "ctx"),
    "knn+ctx2": _with_context(KNNBaseline, "ring2", "ctx2"),
    "ridge+ctx2": _with_context(RidgeBaseline, "ring2", "ctx2"),
    **{f"ridge+ctx2+{n}": ResidualSampledRidge for n in NOISE},
}
#: the baselines that draw samples (their count set by ``num_samples``)
SAMPLED = ("knn", "knn+ctx", "knn+ctx2", *(f"ridge+ctx2+{n}" for n in NOISE))


def make_baseline(name: str, num_samples: int = 20, seed: int = 0) -> Baseline:
    """A baseline by name; sampled ones draw ``num_samples`` profiles per spot (knn: its k)."""
    require(name in BASELINES, f"unknown baseline '{name}'; choose {', '.join(BASELINES)}")
    if name.startswith("knn"):
        return BASELINES[name](k=num_samples)
    if name.startswith("ridge+ctx2+"):
        return ResidualSampledRidge(name.rsplit("+", 1)[1], num_samples, seed)
    return BASELINES[name]()


def parse_baselines(spec: str) -> list[str]:
    """``all`` | ``none`` | comma-separated names → list of baseline names."""
    spec = spec.strip().lower()
    if spec in ("", "none"):
        return []
    names = list(BASELINES) if spec == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in BASELINES]
    require(not unknown, f"unknown baseline(s) {', '.join(unknown)}; choose from {', '.join(BASELINES)} or all")
    return names
