"""Exponential moving average of weights, with a warm-up of the decay."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """``ema = d * ema + (1 - d) * w`` with ``d = min(decay, (1 + n) / (10 + n))``."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0

    def current_decay(self) -> float:
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1.0 - d)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)
        self.num_updates += 1

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "num_updates": self.num_updates,
                "decay": self.decay, "warmup": self.warmup}

    def load_state_dict(self, sd: dict) -> None:
        self.model.load_state_dict(sd["model"])
        self.num_updates = int(sd["num_updates"])
