"""Noise for a set of rows that does not depend on how the rows are split into batches.

Row ``r`` takes its noise from the generator of its block of :data:`BLOCK_ROWS` rows, seeded
from ``(seed, stream, r // BLOCK_ROWS)``; every call draws the next numbers of each block in
the batch. So any batch size that is a multiple of the block gives every row the same noise,
and the batch size can be chosen per device (from a timing) without changing a prediction.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import require

BLOCK_ROWS = 64


def block_seed(seed: int, stream: int, block: int) -> int:
    """A well-mixed 63-bit seed for one block (NumPy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([seed, stream, block]).generate_state(1, np.uint64)[0] >> np.uint64(1))


class RowNoise:
    """Standard normal draws for rows ``first_row … first_row + rows − 1`` of a stream;
    with ``colour`` (a ``(G, G)`` matrix Lᵀ) each row is coloured, ε Lᵀ ~ N(0, L Lᵀ)."""

    def __init__(self, seed: int, stream: int, first_row: int, rows: int, device: str | torch.device,
                 colour: torch.Tensor | None = None):
        require(first_row % BLOCK_ROWS == 0, f"a batch must start at a multiple of {BLOCK_ROWS} rows")
        self.rows, self.colour = rows, colour
        self.device = torch.device(device)
        self.blocks = []
        for start in range(first_row, first_row + rows, BLOCK_ROWS):
            gen = torch.Generator(device=self.device)
            gen.manual_seed(block_seed(seed, stream, start // BLOCK_ROWS))
            self.blocks.append((min(BLOCK_ROWS, first_row + rows - start), gen))

    def randn(self, shape: tuple[int, ...]) -> torch.Tensor:
        """``shape[0]`` must be the number of rows; each block draws its own rows."""
        require(shape[0] == self.rows, f"noise for {self.rows} rows, asked for {shape[0]}")
        eps = torch.cat([torch.randn((n, *shape[1:]), generator=gen, device=self.device)
                         for n, gen in self.blocks])
        return eps if self.colour is None else eps @ self.colour


def randn(shape: tuple[int, ...], noise: torch.Generator | RowNoise | None,
          device: str | torch.device) -> torch.Tensor:
    """A draw from ``noise``: a :class:`RowNoise`, a plain generator, or the global RNG."""
    if isinstance(noise, RowNoise):
        return noise.randn(shape)
    return torch.randn(shape, generator=noise, device=device)
