"""Noise schedules and their respacing onto a subsequence of the trained timesteps."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import require


@dataclass(frozen=True)
class Schedule:
    """Betas of a (possibly respaced) DDPM chain.

    ``timesteps[i]`` is the trained timestep that step ``i`` of this chain stands for; it is what
    the network is conditioned on. For the full chain it is ``arange(T)``.
    """

    betas: np.ndarray
    timesteps: np.ndarray

    @property
    def num_steps(self) -> int:
        return len(self.betas)

    @property
    def alphas_cumprod(self) -> np.ndarray:
        return np.cumprod(1.0 - self.betas)


def linear_betas(num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """DDPM's linear schedule (Ho et al. 2020), defined for T = 1000 and used as is for any T."""
    return np.linspace(beta_start, beta_end, num_steps, dtype=np.float64)


def cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Improved-DDPM cosine schedule (Nichol & Dhariwal 2021)."""
    def f(t):
        return math.cos((t / num_steps + s) / (1 + s) * math.pi / 2) ** 2

    return np.array([min(1 - f(i + 1) / f(i), max_beta) for i in range(num_steps)])


def make_schedule(kind: str, num_steps: int) -> Schedule:
    """``linear`` or ``cosine`` betas over ``num_steps`` trained timesteps."""
    require(num_steps >= 2, "a diffusion needs at least 2 steps")
    if kind == "linear":
        betas = linear_betas(num_steps)
    elif kind == "cosine":
        betas = cosine_betas(num_steps)
    else:
        raise ValueError(f"unknown schedule {kind}")
    return Schedule(betas, np.arange(num_steps))


def respace(schedule: Schedule, steps: int, spacing: str = "time") -> Schedule:
    """A shorter chain on ``steps`` trained timesteps (always including the last and the
    first), with betas recomputed from the trained ᾱ so that the marginals q(x_t | x_0) at the
    kept timesteps are unchanged (Nichol & Dhariwal 2021, Sec. 4). ``spacing``: ``time`` keeps
    evenly spaced timesteps; ``logsnr`` the trained timesteps nearest to evenly spaced
    λ = log(α/σ) (DPM-Solver's choice; duplicates merge, so a long chain may get fewer steps)."""
    total = schedule.num_steps
    require(1 <= steps <= total, f"cannot respace {total} trained steps to {steps}")
    require(spacing in ("time", "logsnr"), f"unknown spacing {spacing}")
    abar = schedule.alphas_cumprod
    if spacing == "time":
        keep = np.unique(np.round(np.linspace(0, total - 1, steps)).astype(int))
    else:
        lam = 0.5 * np.log(abar / (1.0 - abar))  # decreasing in t
        wanted = np.linspace(lam[-1], lam[0], steps)
        keep = np.unique(np.abs(lam[None, :] - wanted[:, None]).argmin(1))
    kept = abar[keep]
    prev = np.concatenate([[1.0], kept[:-1]])
    return Schedule(1.0 - kept / prev, schedule.timesteps[keep])
