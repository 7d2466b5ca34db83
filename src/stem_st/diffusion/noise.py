"""Noise for a set of rows that does not depend on how the rows are split into batches.

Row ``r`` takes its noise from the generator of its block of :data:`BLOCK_ROWS` rows, seeded
from ``(seed, stream, r // BLOCK_ROWS)``; every call draws the next numbers of each block in
the batch. So any batch size that is a multiple of the block gives every row the same noise,
and the batch size can be chosen per device (from a timing) without changing a prediction.

:class:`SpatialField` makes the starting noise of neighbouring spots co-vary, so that one draw
of a section is one coherent map rather than independent spots; each spot's own noise stays
exactly N(0, I), so its marginal distribution is unchanged.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import require

BLOCK_ROWS = 64


def block_seed(seed: int, stream: int, block: int) -> int:
    """A well-mixed 63-bit seed for one block (NumPy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([seed, stream, block]).generate_state(1, np.uint64)[0] >> np.uint64(1))


#: random Fourier features per field (the far-apart correlation of a field is ±1/√(2·FEATURES))
FEATURES = 512
KERNELS = ("gauss", "exp")
_FIELD_STREAM = 0x5EA7


class SpatialField:
    """Smooth Gaussian random fields over spot positions, one per (sample, gene): row r of a
    job (spot r // samples, sample r % samples) takes field value F_{s,g}(position).

    A field is a sum of random Fourier features (Rahimi & Recht 2007) of a stationary kernel of
    length ``length`` spot pitches: ``gauss`` exp(−d²/2ℓ²) or ``exp`` exp(−d/ℓ) (frequencies from
    a Gaussian or a multivariate Cauchy; positions may have more than two dimensions). Each spot's
    feature vector is normalised, so the field is exactly N(0, 1) at every spot. Its value depends
    only on (seed, sample, gene, position), not on the other spots of the job or how a slide is
    cut into chunks: chunks join without seams.
    """

    def __init__(self, xy_pitch: np.ndarray, samples: int, genes: int, length: float,
                 kernel: str = "gauss", seed: int = 0, device: str | torch.device = "cpu"):
        require(kernel in KERNELS, f"unknown field kernel '{kernel}'; choose {', '.join(KERNELS)}")
        require(length > 0, "the field's length must be positive")
        self.device = torch.device(device)
        self.pos = torch.as_tensor(np.asarray(xy_pitch, dtype=np.float64), device=self.device)
        self.samples, self.genes, self.length, self.kernel, self.seed = samples, genes, length, kernel, seed
        self._params: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def _sample_params(self, s: int):
        """Frequencies ``(F, D)``, phases ``(F,)`` and weights ``(F, genes)`` of sample ``s`` (D: the
        positions' dimension, 2 for spots on a slide)."""
        if s not in self._params:
            gen = torch.Generator().manual_seed(block_seed(self.seed, _FIELD_STREAM, s))
            omega = torch.randn(FEATURES, self.pos.shape[1], generator=gen, dtype=torch.float64) / self.length
            if self.kernel == "exp":  # multivariate Cauchy: a Gaussian over |N(0, 1)|
                omega = omega / torch.randn(FEATURES, 1, generator=gen, dtype=torch.float64).abs().clamp_min(1e-12)
            phase = 2 * np.pi * torch.rand(FEATURES, generator=gen, dtype=torch.float64)
            weights = torch.randn(FEATURES, self.genes, generator=gen)
            self._params[s] = (omega.to(self.device), phase.to(self.device), weights.to(self.device))
        return self._params[s]

    def rows(self, first_row: int, rows: int) -> torch.Tensor:
        """Field values ``(rows, genes)`` of job rows ``first_row … first_row + rows − 1``."""
        r = torch.arange(first_row, first_row + rows, device=self.device)
        spot, sample = r // self.samples, r % self.samples
        out = torch.empty(rows, self.genes, device=self.device)
        for s in torch.unique(sample).tolist():
            take = sample == s
            omega, phase, weights = self._sample_params(int(s))
            feat = torch.cos(self.pos[spot[take]] @ omega.T + phase)
            feat = feat / feat.norm(dim=1, keepdim=True).clamp_min(1e-12)
            out[take] = (feat.float() @ weights)
        return out


class RowNoise:
    """Standard normal draws for rows ``first_row … first_row + rows − 1`` of a stream;
    with ``colour`` (a ``(G, G)`` matrix Lᵀ) each row is coloured, ε Lᵀ ~ N(0, L Lᵀ). With
    ``field`` = (a :class:`SpatialField`, ρ), the first draw (a sampler's x_T) is
    √(1 − ρ) ε + √ρ F: still N(0, I) per row, with correlation ρ·kernel between spots (ρ a
    number, or one per gene on the last axis)."""

    def __init__(self, seed: int, stream: int, first_row: int, rows: int, device: str | torch.device,
                 colour: torch.Tensor | None = None, field: tuple[SpatialField, float | np.ndarray] | None = None):
        require(first_row % BLOCK_ROWS == 0, f"a batch must start at a multiple of {BLOCK_ROWS} rows")
        self.rows, self.colour, self.first_row, self.field = rows, colour, first_row, field
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
        if self.field is not None:
            field, rho = self.field
            self.field = None  # only x_T: later draws (ancestral samplers) stay independent
            rho = torch.as_tensor(rho, dtype=eps.dtype, device=eps.device)  # a number or one per gene
            eps = torch.sqrt(1 - rho) * eps + torch.sqrt(rho) * field.rows(self.first_row, self.rows).to(eps.dtype)
        return eps if self.colour is None else eps @ self.colour


def randn(shape: tuple[int, ...], noise: torch.Generator | RowNoise | None,
          device: str | torch.device) -> torch.Tensor:
    """A draw from ``noise``: a :class:`RowNoise`, a plain generator, or the global RNG."""
    if isinstance(noise, RowNoise):
        return noise.randn(shape)
    return torch.randn(shape, generator=noise, device=device)
