"""Classifier-free guidance (Ho & Salimans 2022) for a conditional denoiser.

Training replaces the condition of a fraction of the pairs by the null condition (zeros: with
standardised embeddings, the training mean), so one network learns both the conditional and
the unconditional prediction. Sampling with scale s then uses
``out_c + s · (out_c − out_u)`` at every network call; s = 0 is plain conditional sampling.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

#: ``(x_t, t, cond) -> (prediction, variance output or None)``
CondFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]


def null_rows(rows: int, fraction: float, generator: torch.Generator) -> torch.Tensor | None:
    """Which of ``rows`` training pairs get the null condition, each with probability
    ``fraction``; ``None`` (and nothing drawn from ``generator``) when ``fraction`` is 0, so
    unguided training is unchanged."""
    if fraction <= 0:
        return None
    return torch.rand(rows, generator=generator) < fraction


def drop_condition(cond: torch.Tensor, null: torch.Tensor | None) -> torch.Tensor:
    """``cond`` with the rows flagged in ``null`` set to the null condition (zeros)."""
    return cond if null is None else cond.masked_fill(null.to(cond.device)[:, None], 0.0)


def guided(call: CondFn, cond: torch.Tensor, scale: float):
    """The model function ``(x_t, t) -> (prediction, v)`` of ``call`` at ``cond`` with guidance
    ``scale``; the variance output, if any, stays the conditional one."""
    if not scale:
        return lambda xt, tt: call(xt, tt, cond)
    null = torch.zeros_like(cond)

    def fn(xt: torch.Tensor, tt: torch.Tensor):
        out, v = call(xt, tt, cond)
        out_u, _ = call(xt, tt, null)
        return out + scale * (out - out_u), v

    return fn
