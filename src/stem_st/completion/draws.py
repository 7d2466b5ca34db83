"""Multiple imputation with LGDiST: K independent completions of a section (draws) and their
per-entry spread, in counts, beside the model's point completion."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from .model import LGDiST

#: ``ddof`` of ``layers['completed_std']``: the sample sd (Rubin's between-imputation variance)
STD_DDOF = 1


@contextlib.contextmanager
def _sampled(model: LGDiST) -> Iterator[LGDiST]:
    """``model`` whose stage-2 estimate is a sampled centre latent (not the posterior mean)."""
    old = model.settings.point
    model.settings.point = "samples"
    try:
        yield model
    finally:
        model.settings.point = old


def draw_seeds(seed: int, num_samples: int) -> list[int]:
    """Seeds of the draws: derived from ``seed``, distinct from the point's own stream."""
    return [int(s) for s in np.random.SeedSequence([seed, 1]).generate_state(num_samples)]


def completion_draws(model: LGDiST, counts: np.ndarray, xy: np.ndarray, num_samples: int,
                     sampler: str, seed: int, device: str = "cpu") -> np.ndarray:
    """``num_samples`` completions of one section, counts ``(spots, K, genes)`` float32.

    Draw k runs ``sampler`` once on every centre latent (inpainting its neighbours; with two
    rounds, round 2 conditions on draw k of round 1), decodes it and maps log1p to counts with
    expm1. Measured (nonzero) entries are not imputed: every draw keeps the measured count.
    """
    v = np.log1p(counts)
    with _sampled(model):
        draws = [model.complete(v, xy, 1, sampler, s, device) for s in draw_seeds(seed, num_samples)]
    log1p = np.stack(draws, axis=1)
    measured = (counts > 0)[:, None, :]
    return np.where(measured, counts[:, None, :], np.expm1(log1p)).astype(np.float32)


def draws_std(draws: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per-entry sd of ``draws`` over the K axis (``ddof`` = :data:`STD_DDOF`), 0 where measured."""
    std = np.asarray(draws, dtype=np.float64).std(axis=1, ddof=STD_DDOF)
    return np.where(counts > 0, 0.0, std).astype(np.float32)
