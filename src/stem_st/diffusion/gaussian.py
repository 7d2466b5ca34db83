"""Gaussian diffusion: forward noising, the denoising loss (the network predicts ε, x_0 or v;
optionally min-SNR-γ weighted, or with improved DDPM's learned variance), three samplers —
ancestral DDPM, DDIM and DPM-Solver++(2M) — on the full or a respaced chain, and the posterior-mean estimate
E[x_0 | condition] read from the network at the noisiest step. An optional ``mask`` diffuses
only part of ``x`` and keeps the rest at its known value throughout (inpainting), which LGDiST
uses for neighbour tokens.

``model_fn(x_t, t)`` returns ``(out, v)``: ``out`` shaped like ``x_t`` (ε, x_0 or v, by the
diffusion's ``objective``), ``v`` the variance interpolation in [-1, 1] or ``None`` for the
fixed posterior variance.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from ..defaults import OBJECTIVES, SAMPLER_FORMS
from ..errors import StemError
from .noise import RowNoise, randn
from .schedules import Schedule, make_schedule, respace

ModelFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]
#: where sampling noise comes from: a generator, batch-independent row noise, or the global RNG
Noise = torch.Generator | RowNoise | None


def parse_sampler(spec: str, trained_steps: int) -> tuple[str, int, float]:
    """``ddpm`` | ``ddpm:S`` | ``ddim:S`` | ``ddim:S:eta`` | ``dpm++:S`` → (kind, steps, eta)."""
    parts = spec.split(":")
    kind = parts[0]
    try:
        steps = int(parts[1]) if len(parts) > 1 else trained_steps
        eta = float(parts[2]) if len(parts) > 2 else 0.0
    except ValueError:
        raise StemError(f"bad sampler '{spec}'; use {SAMPLER_FORMS}") from None
    if kind not in ("ddpm", "ddim", "dpm++") or not 1 <= steps <= trained_steps or len(parts) > 3 \
            or (kind != "ddim" and len(parts) > 2) or eta < 0:
        raise StemError(f"bad sampler '{spec}'; use {SAMPLER_FORMS} with 1 <= S <= {trained_steps}")
    return kind, steps, eta


class _Chain:
    """Per-step constants of one chain, as float64 numpy for exactness, indexed by step."""

    def __init__(self, schedule: Schedule):
        b = schedule.betas
        self.timesteps = schedule.timesteps
        self.betas = b
        self.abar = np.cumprod(1.0 - b)
        self.abar_prev = np.append(1.0, self.abar[:-1])
        self.post_var = b * (1.0 - self.abar_prev) / (1.0 - self.abar)
        # log of the posterior variance, with step 0's (zero) replaced by step 1's
        self.post_logvar = np.log(np.append(self.post_var[1], self.post_var[1:])) \
            if len(b) > 1 else np.log(b)
        self.coef_x0 = b * np.sqrt(self.abar_prev) / (1.0 - self.abar)
        self.coef_xt = (1.0 - self.abar_prev) * np.sqrt(1.0 - b) / (1.0 - self.abar)


def _take(arr: np.ndarray, idx: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    out = torch.as_tensor(arr, device=idx.device)[idx].to(like.dtype)
    return out.view(-1, *([1] * (like.dim() - 1)))


def _normal_kl(mean1, logvar1, mean2, logvar2):
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))



class GaussianDiffusion:
    """A DDPM with ``num_steps`` trained timesteps on a ``linear`` or ``cosine`` schedule whose
    network predicts ``objective`` (ε, x_0 or v = √ᾱ ε − √(1−ᾱ) x_0)."""

    def __init__(self, num_steps: int = 1000, schedule: str = "linear", objective: str = "eps",
                 min_snr_gamma: float = 0.0):
        if objective not in OBJECTIVES:
            raise StemError(f"unknown objective '{objective}'; choose {', '.join(OBJECTIVES)}")
        self.num_steps = num_steps
        self.schedule_kind = schedule
        self.objective = objective
        self.min_snr_gamma = float(min_snr_gamma)
        self.schedule = make_schedule(schedule, num_steps)
        self.chain = _Chain(self.schedule)

    def eps_x0(self, out: torch.Tensor, x_t: torch.Tensor, abar: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(ε, x̂_0) from the network's output ``out`` at noise level ``abar`` (broadcastable)."""
        a, s = torch.sqrt(abar), torch.sqrt(1 - abar)
        if self.objective == "eps":
            return out, (x_t - s * out) / a
        if self.objective == "x0":
            return (x_t - a * out) / s, out
        x0 = a * x_t - s * out  # v
        return s * x_t + a * out, x0

    def _target_and_weight(self, x0, noise, t) -> tuple[torch.Tensor, torch.Tensor]:
        abar = _take(self.chain.abar, t, x0)
        target = {"eps": noise, "x0": x0,
                  "v": torch.sqrt(abar) * noise - torch.sqrt(1 - abar) * x0}[self.objective]
        if self.min_snr_gamma <= 0:
            return target, torch.ones_like(abar)
        snr = abar / (1 - abar)
        w = torch.clamp(snr, max=self.min_snr_gamma)  # min-SNR-γ in x_0 units …
        w = w / {"eps": snr, "x0": torch.ones_like(snr), "v": snr + 1}[self.objective]
        return target, w  # … divided by the objective's own SNR factor

    # --- forward process and loss -------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Draw x_t ~ q(x_t | x_0) for trained timesteps ``t``."""
        c = self.chain
        return _take(np.sqrt(c.abar), t, x0) * x0 + _take(np.sqrt(1 - c.abar), t, x0) * noise

    def _p_mean_logvar(self, chain: _Chain, out, v, x_t, i, clip_x0=None):
        _, x0 = self.eps_x0(out, x_t, _take(chain.abar, i, x_t))
        if clip_x0 is not None:
            x0 = x0.clamp(*clip_x0)
        mean = _take(chain.coef_x0, i, x_t) * x0 + _take(chain.coef_xt, i, x_t) * x_t
        if v is None:
            logvar = _take(chain.post_logvar, i, x_t).expand_as(x_t)
        else:
            frac = (v + 1) / 2
            logvar = frac * _take(np.log(chain.betas), i, x_t) \
                + (1 - frac) * _take(chain.post_logvar, i, x_t)
        return mean, logvar, x0

    def training_loss(
        self, model_fn: ModelFn, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-sample losses: ``mse`` of the objective (ε, x_0 or v; min-SNR-γ weighted when
        set), plus ``vb`` (bits/dim) when the variance is learned.

        With ``mask``, only masked entries are noised and scored; the rest stay at ``x0``.
        """
        x_t = self.q_sample(x0, t, noise)
        if mask is not None:
            x_t = torch.where(mask.bool(), x_t, x0)
        out, v = model_fn(x_t, t)
        target, snr_w = self._target_and_weight(x0, noise, t)
        w = torch.ones_like(x0) if mask is None else mask.to(x0.dtype).expand_as(x0)
        dims = tuple(range(1, x0.dim()))
        denom = w.sum(dims).clamp_min(1.0)
        terms = {"mse": (((out.float() - target) ** 2) * w).sum(dims) / denom * snr_w.flatten()}
        if v is not None:
            # variational bound with a frozen mean, so it only trains the variance
            c = self.chain
            true_mean = _take(c.coef_x0, t, x0) * x0 + _take(c.coef_xt, t, x0) * x_t
            true_logvar = _take(c.post_logvar, t, x0)
            mean, logvar, _ = self._p_mean_logvar(c, out.detach().float(), v.float(), x_t, t)
            kl = _normal_kl(true_mean, true_logvar, mean, logvar) / math.log(2.0)
            nll = 0.5 * (math.log(2 * math.pi) + logvar + (x0 - mean) ** 2 * torch.exp(-logvar))
            nll = nll / math.log(2.0)
            first = (t == 0).view(-1, *([1] * (x0.dim() - 1)))
            terms["vb"] = (torch.where(first, nll, kl) * w).sum(dims) / denom
        terms["loss"] = terms["mse"] + terms.get("vb", 0.0)
        return terms

    # --- sampling -----------------------------------------------------------------------
    def sample(
        self, model_fn: ModelFn, shape: tuple[int, ...], sampler: str = "ddpm",
        generator: Noise = None, device: str | torch.device = "cpu",
        known: torch.Tensor | None = None, mask: torch.Tensor | None = None,
        x_T: torch.Tensor | None = None, progress: Callable[[int], None] | None = None,
        clip_x0: tuple[float, float] | None = None,
    ) -> torch.Tensor:
        """Run the reverse chain from pure noise and return x_0.

        ``sampler``: ``ddpm`` (ancestral, all trained steps), ``ddpm:S``, ``ddim:S[:eta]`` or
        ``dpm++:S`` (DPM-Solver++(2M), Lu et al. 2022: a second-order multistep solver of the
        probability-flow ODE in log-SNR time, on the x_0 prediction, with steps evenly spaced in
        log-SNR) on S respaced steps, i.e. S network calls. With ``known``/``mask``, unmasked
        entries are reset to ``known`` after every step (inpainting). ``clip_x0`` clamps each
        step's prediction of x_0 to the data range (ADM's ``clip_denoised``), which keeps
        few-step samplers of a briefly trained model from diverging.
        """
        kind, steps, eta = parse_sampler(sampler, self.num_steps)
        spacing = "logsnr" if kind == "dpm++" else "time"
        sched = self.schedule if steps == self.num_steps else respace(self.schedule, steps, spacing)
        chain = _Chain(sched)
        x = x_T if x_T is not None else randn(shape, generator, device)
        keep = None if mask is None else ~mask.bool()

        def clamp_known(z):
            return z if keep is None else torch.where(keep, known, z)

        x = clamp_known(x)
        history: list[tuple[torch.Tensor, float]] = []  # DPM-Solver++: (x̂_0, step size h)
        for i in reversed(range(sched.num_steps)):
            idx = torch.full((shape[0],), i, device=x.device, dtype=torch.long)
            t = torch.as_tensor(chain.timesteps, device=x.device)[idx]
            with torch.no_grad():
                out, v = model_fn(x, t)
            out = out.float()
            v = None if v is None else v.float()
            if kind == "ddpm":
                mean, logvar, _ = self._p_mean_logvar(chain, out, v, x, idx, clip_x0)
                if i > 0:
                    z = randn(x.shape, generator, x.device)
                    x = mean + torch.exp(0.5 * logvar) * z
                else:
                    x = mean
            elif kind == "ddim":
                abar = _take(chain.abar, idx, x)
                abar_prev = _take(chain.abar_prev, idx, x)
                eps, x0 = self.eps_x0(out, x, abar)
                if clip_x0 is not None:  # and the ε consistent with the clipped x_0
                    x0 = x0.clamp(*clip_x0)
                    eps = (x - torch.sqrt(abar) * x0) / torch.sqrt(1 - abar)
                sigma = eta * torch.sqrt((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev))
                x = torch.sqrt(abar_prev) * x0 + torch.sqrt(1 - abar_prev - sigma**2) * eps
                if i > 0 and eta > 0:
                    x = x + sigma * randn(x.shape, generator, x.device)
            else:
                x = self._dpmpp_2m_step(chain, i, out, x, history, clip_x0)
            x = clamp_known(x)
            if progress is not None:
                progress(1)
        return x

    def _dpmpp_2m_step(self, chain: _Chain, i: int, out: torch.Tensor, x: torch.Tensor,
                       history: list, clip_x0) -> torch.Tensor:
        """One DPM-Solver++(2M) step from chain step ``i`` to ``i - 1`` (to x̂_0 at the end):
        x_s = (σ_s/σ_t) x_t − α_s (e^{−h} − 1) D, h = λ_s − λ_t with λ = log(α/σ), and
        D = x̂_0 (first step) or (1 + 1/2r) x̂_0 − 1/2r x̂_0,prev with r = h_prev / h."""
        abar_t = float(chain.abar[i])
        x0 = self.eps_x0(out, x, torch.tensor(abar_t, dtype=x.dtype, device=x.device))[1]
        if clip_x0 is not None:
            x0 = x0.clamp(*clip_x0)
        if i == 0:
            return x0
        abar_s = float(chain.abar[i - 1])
        lam_t = 0.5 * math.log(abar_t / (1 - abar_t))
        lam_s = 0.5 * math.log(abar_s / (1 - abar_s))
        h = lam_s - lam_t
        d = x0
        if history and i > 1:  # first order on the last step, whose h dwarfs the others
            prev_x0, h_prev = history[-1]
            r = h_prev / h
            d = (1 + 1 / (2 * r)) * x0 - prev_x0 / (2 * r)
        history[:] = [(x0, h)]
        ratio = math.sqrt((1 - abar_s) / (1 - abar_t))
        return ratio * x - math.sqrt(abar_s) * math.expm1(-h) * d

    @torch.no_grad()
    def posterior_mean(self, model_fn: ModelFn, shape: tuple[int, ...], draws: int = 8,
                       generator: Noise = None, device: str | torch.device = "cpu",
                       clip_x0: tuple | None = None) -> torch.Tensor:
        """E[x_0 | condition]: the network's x̂_0 at the noisiest trained step, where x_T carries
        (almost) nothing of x_0, averaged over ``draws`` draws of x_T. Needs an x_0 or v
        objective: ε-prediction divides by √ᾱ_T there."""
        if self.objective == "eps":
            raise StemError("the posterior-mean estimate needs an x0 or v objective")
        t = torch.full((shape[0],), self.num_steps - 1, device=device, dtype=torch.long)
        abar = _take(self.chain.abar, t, torch.zeros(shape, device=device))
        total = torch.zeros(shape, device=device)
        for _ in range(draws):
            x = randn(shape, generator, device)
            out, _ = model_fn(x, t)
            x0 = self.eps_x0(out.float(), x, abar)[1]
            total += x0 if clip_x0 is None else x0.clamp(*clip_x0)
        return total / draws
