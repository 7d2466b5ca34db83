"""How the network runs at prediction time: precision, compilation and rows per forward pass.

None of these changes what is computed beyond rounding. Noise is drawn per block of rows
(:mod:`stem_st.diffusion.noise`), so the rows per forward pass can be chosen per device from a
timing: for a large job the candidates are timed once per process, device and network, and
the fastest per row is kept (``benchmarks/cpu_options.py``, ``benchmarks/gpu_profile.py``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..diffusion.noise import BLOCK_ROWS

#: rows per forward pass tried on each device type (multiples of BLOCK_ROWS)
CANDIDATE_ROWS = {"cpu": (64, 128, 256, 512), "cuda": (2048, 4096, 8192, 16384)}
#: used when a job is too small for a timing to pay (the fastest measured on the CPU box and an H100)
DEFAULT_ROWS = {"cpu": 64, "cuda": 8192}
#: a job is timed only when its forward passes are this many times the timing's own
MEASURE_PAYBACK = 100
_measured: dict[tuple, int] = {}


@dataclass
class Runtime:
    """``bf16``: autocast to bfloat16 on CUDA (the CPU stays float32). ``compile``:
    ``torch.compile`` the network (pays only for long jobs: compiling takes tens of seconds).
    ``batch_rows``: rows per forward pass; None measures it (large jobs) or takes the default."""

    bf16: bool = True
    compile: bool = False
    batch_rows: int | None = None

    def autocast(self, device: torch.device):
        if device.type == "cuda" and self.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def network(self, net: nn.Module, device: torch.device, cache: dict) -> nn.Module:
        """The network as it will be called (compiled once per device when asked; ``cache``
        holds the compiled networks of one model)."""
        if not self.compile:
            return net
        key = str(device)
        if key not in cache:
            cache[key] = torch.compile(net, dynamic=False)
        return cache[key]

    def rows(self, net: nn.Module, call: Callable[[int], None], device: torch.device,
             total_rows: int, calls_per_row: int) -> int:
        """Rows per forward pass for a job of ``total_rows`` × ``calls_per_row`` network calls;
        ``call(n)`` runs one forward pass of ``n`` rows."""
        if self.batch_rows:
            return max(BLOCK_ROWS, self.batch_rows // BLOCK_ROWS * BLOCK_ROWS)
        kind = "cuda" if device.type == "cuda" else "cpu"
        key = (str(device), repr(getattr(net, "cfg", type(net))), self.bf16, self.compile)
        if key in _measured:
            return _measured[key]
        candidates = CANDIDATE_ROWS[kind]
        if self.compile or total_rows * calls_per_row < MEASURE_PAYBACK * 3 * sum(candidates):
            # (a compiled network would compile once per size tried)
            return DEFAULT_ROWS[kind]
        _measured[key] = measure_rows(call, candidates, device)
        return _measured[key]


def measured_rows() -> dict[tuple, int]:
    """The rows per forward pass measured so far in this process (a copy), keyed by
    (device, network config, bf16, compile)."""
    return dict(_measured)


def measure_rows(call: Callable[[int], None], candidates: tuple[int, ...], device: torch.device,
                 clock: Callable[[], float] = time.perf_counter) -> int:
    """The candidate with the most rows per second: one warm-up and two timed passes each
    (the faster kept); stops at the first that runs out of memory or is slower than the best."""
    best, best_rate = candidates[0], 0.0
    for n in candidates:
        try:
            call(n)
            times = []
            for _ in range(2):
                _sync(device)
                t0 = clock()
                call(n)
                _sync(device)
                times.append(clock() - t0)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            break
        rate = n / max(min(times), 1e-9)
        if rate <= best_rate:
            break
        best, best_rate = n, rate
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
