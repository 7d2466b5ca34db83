"""What Stem diffuses: log2(1 + count), optionally minus a prior mean and z-scored per gene.

``z = (x − prior(c) − μ) / σ`` with a ridge prior on the standardised condition ``c`` (CARD-style
residual diffusion) and per-gene ``μ``, ``σ`` of the training residuals. The prior used on
training spots is cross-fitted (each section predicted by a probe fitted on the others), so the
residuals the network learns look like the ones it meets on a new section.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..models.ridge import RidgeProbe
from ..recipe import Recipe
from .spread import (
    SHAPE_LEVELS,
    common_direction,
    scale_deviations,
    shape_deviations,
    spread_factor,
    spread_levels,
    with_common,
)

__all__ = ["SHAPE_LEVELS", "TargetTransform", "scale_deviations", "shape_deviations", "spread_factor",
           "spread_levels"]

SD_FLOOR = 1e-3


@dataclass
class TargetTransform:
    """Affine map between expression ``x`` (log2(1 + count)) and the diffused ``z``;
    ``lo``/``hi`` bound x̂₀ in z units while sampling."""

    mu: np.ndarray
    sd: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    prior_weight: np.ndarray | None = None
    prior_bias: np.ndarray | None = None
    spread: np.ndarray | None = None  # () or (G,) factor on samples' deviations from their mean
    noise_chol: np.ndarray | None = None  # (G, G) L with L Lᵀ the residuals' gene covariance (z units)
    spread_plain: np.ndarray | None = None  # the spread calibrated without per-spot widening
    shape: np.ndarray | None = None  # (3,) factors at SHAPE_LEVELS over the spread (criterion "levels")
    common: np.ndarray | None = None  # (1 + G,) λ and per-gene factors of with_common (spread_common)

    def prior(self, cond: np.ndarray) -> np.ndarray:
        """The prior mean ``(N, G)`` for standardised conditions (zeros without a prior)."""
        if self.prior_weight is None:
            return np.zeros((len(cond), len(self.mu)), dtype=np.float32)
        return (np.asarray(cond, dtype=np.float32) @ self.prior_weight + self.prior_bias).astype(np.float32)

    def encode(self, x: np.ndarray, prior: np.ndarray) -> np.ndarray:
        return ((x - prior - self.mu) / self.sd).astype(np.float32)

    def decode(self, z: np.ndarray, prior: np.ndarray) -> np.ndarray:
        """Expression from z; broadcasting ``prior`` (N, 1, G) over samples is fine."""
        return (z * self.sd + self.mu + prior).astype(np.float32)

    def widen(self, z: np.ndarray, centre: np.ndarray | None = None,
              per_spot: np.ndarray | None = None) -> np.ndarray:
        """Samples ``(N, S, G)``: their deviations from each spot's sample mean scaled by the
        calibrated spread (and each spot's ``per_spot`` multiplier ``(N,)``; without it, the
        spread calibrated without multipliers) and placed at ``centre`` ``(N, G)`` (default: the
        sample mean)."""
        m = z.mean(1, keepdims=True)
        c = m if centre is None else centre[:, None]
        spread = self.spread if per_spot is not None or self.spread_plain is None else self.spread_plain
        s = 1.0 if spread is None or z.shape[1] < 2 else np.asarray(spread, dtype=np.float32)
        dev = s * shape_deviations(scale_deviations(z - m, per_spot), self.shape)
        if self.common is not None:
            dev = with_common(dev, self.common, common_direction(self.sd))
        return (c + dev).astype(np.float32)

    def noise_colour(self, device: torch.device) -> torch.Tensor | None:
        """Lᵀ on ``device`` (diffusion noise ε Lᵀ has the residuals' gene covariance), or None."""
        return None if self.noise_chol is None else torch.from_numpy(self.noise_chol.T.copy()).to(device)

    def clip_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.lo), torch.from_numpy(self.hi)

    def state(self) -> dict:
        keys = ("mu", "sd", "lo", "hi", "prior_weight", "prior_bias", "spread", "noise_chol", "spread_plain",
                "shape", "common")
        return {k: None if getattr(self, k) is None else torch.from_numpy(getattr(self, k))
                for k in keys}

    @classmethod
    def from_state(cls, state: dict) -> TargetTransform:
        return cls(**{k: None if v is None else np.asarray(v, dtype=np.float32) for k, v in state.items()})

    @classmethod
    def identity(cls, genes: int, x_max: float | None) -> TargetTransform:
        """The paper's: z = x, x̂₀ clamped to [0, largest training value]."""
        hi = np.inf if x_max is None else x_max
        return cls(np.zeros(genes, np.float32), np.ones(genes, np.float32),
                   np.zeros(genes, np.float32), np.full(genes, hi, np.float32))


#: called with each section's cross-fitted probe (to apply it to rows beyond the fitted ones)
OnProbe = Callable[[int, RidgeProbe], None]


def cross_fitted_prior(cond: np.ndarray, x: np.ndarray, groups: np.ndarray, fit_rows: np.ndarray,
                       on_probe: OnProbe | None = None) -> tuple[np.ndarray, RidgeProbe]:
    """Out-of-group ridge predictions for every row, and the probe fitted on all ``fit_rows``.
    With one group only, the rows get the in-sample prediction. ``on_probe(g, probe)`` gets
    the probe that predicted group ``g``."""
    prior = np.empty_like(x)
    full = RidgeProbe().fit(cond[fit_rows], x[fit_rows])
    for g in np.unique(groups):
        rows = groups == g
        train = fit_rows & ~rows
        probe = RidgeProbe().fit(cond[train], x[train]) if train.any() else full
        prior[rows] = probe.predict(cond[rows])
        if on_probe is not None:
            on_probe(int(g), probe)
    return prior, full


def fit_targets(recipe: Recipe, cond: np.ndarray, x: np.ndarray, groups: np.ndarray,
                fit_rows: np.ndarray, x_max: float | None = None, on_probe: OnProbe | None = None,
                ) -> tuple[TargetTransform, np.ndarray]:
    """The transform for ``recipe`` and the z ``(N, G)`` of the rows given.

    ``cond`` standardised conditions, ``x`` log2 expression, ``groups`` each row's section,
    ``fit_rows`` the rows the prior learns from (original views); ``x_max`` the largest
    training value (default: of ``x``). The rows may be a sample of the training pairs: the
    statistics come from them, and ``on_probe`` carries each section's prior to the rest."""
    if recipe.target == "log2" and recipe.prior == "none":
        t = TargetTransform.identity(x.shape[1], float(x.max()) if x_max is None else x_max)
        return t, x.astype(np.float32)
    weight = bias = None
    prior = np.zeros_like(x)
    if recipe.prior == "ridge":
        prior, probe = cross_fitted_prior(cond, x, groups, fit_rows, on_probe)
        weight, bias = probe.weight, probe.bias
    resid = x - prior
    if recipe.target == "zscore":
        # with a prior, the prior is the mean: the cross-fitted residuals' mean mostly measures
        # how the training sections' depths differ, and shifting every prediction by it hurts
        mu = np.zeros(x.shape[1]) if recipe.prior != "none" else resid.mean(0)
        spread = np.sqrt(((resid - mu) ** 2).mean(0))
        sd = np.maximum(spread, max(SD_FLOOR, 0.01 * float(np.median(spread))))
    else:
        mu, sd = np.zeros(x.shape[1]), np.ones(x.shape[1])
    t = TargetTransform(mu.astype(np.float32), sd.astype(np.float32), np.zeros(1, np.float32),
                        np.zeros(1, np.float32), weight, bias)
    z = t.encode(x, prior)
    t.lo, t.hi = z.min(0).astype(np.float32), z.max(0).astype(np.float32)
    if recipe.correlated_noise:
        t.noise_chol = noise_cholesky(z[fit_rows])
    return t, z


def noise_cholesky(z: np.ndarray) -> np.ndarray:
    """Cholesky factor of the Ledoit–Wolf shrunk gene covariance of ``z`` (N, G): the diffusion
    noise's covariance under ``correlated_noise`` (PriorGrad-style, Lee et al. 2022)."""
    from sklearn.covariance import LedoitWolf

    cov = LedoitWolf().fit(np.asarray(z, dtype=np.float64)).covariance_
    return np.linalg.cholesky(cov + 1e-6 * np.eye(len(cov))).astype(np.float32)
