"""StemDiT: a diffusion transformer whose tokens are genes (Zhu et al., ICLR 2025).

Token i = MLP(x_i) + e_i (a count MLP on the scalar expression plus a learned gene-type
embedding; no positional embedding). The condition c = time embedding + MLP(image embedding)
drives adaLN-Zero in every block. The head predicts ε per gene (and, optionally, the variance
interpolation v of improved DDPM).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class StemDiTConfig:
    """Architecture of a StemDiT."""

    num_genes: int
    cond_dim: int
    hidden: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    learn_sigma: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


#: Named sizes: ``paper`` is the reference (12 × 384, 6 heads); ``small`` fits a CPU.
PRESETS = {
    "paper": {"hidden": 384, "depth": 12, "heads": 6},
    "small": {"hidden": 128, "depth": 4, "heads": 4},
    "tiny": {"hidden": 64, "depth": 2, "heads": 2},
}


def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, ``(B,) → (B, dim)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _mlp(d_in: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_out), nn.SiLU(), nn.Linear(d_out, d_out))


def _per_token(v: torch.Tensor) -> torch.Tensor:
    """A per-sample ``(B, D)`` modulation broadcast over tokens; ``(B, T, D)`` is per token."""
    return v.unsqueeze(1) if v.dim() == 2 else v


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + _per_token(scale)) + _per_token(shift)


class DiTBlock(nn.Module):
    """Self-attention over tokens and an MLP, each gated by adaLN-Zero; the condition is
    ``(B, D)`` (one per sample, Stem) or ``(B, T, D)`` (one per token, LGDiST)."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        inner = int(hidden * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(hidden, inner), nn.GELU(approximate="tanh"),
                                 nn.Linear(inner, hidden))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        sh1, sc1, g1, sh2, sc2, g2 = self.ada(c).chunk(6, dim=-1)
        x = x + _per_token(g1) * self.attention(_modulate(self.norm1(x), sh1, sc1))
        return x + _per_token(g2) * self.mlp(_modulate(self.norm2(x), sh2, sc2))


def adaln_zero_init(net: nn.Module) -> None:
    """adaLN-Zero: zero every block's modulation, the final modulation and the head, so each
    block starts as the identity and the output starts at 0."""
    for block in net.blocks:
        nn.init.zeros_(block.ada[-1].weight)
        nn.init.zeros_(block.ada[-1].bias)
    for layer in (net.final_ada[-1], net.head):
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)


class StemDiT(nn.Module):
    """ε-prediction network over G gene tokens conditioned on time and an image embedding."""

    def __init__(self, cfg: StemDiTConfig):
        super().__init__()
        assert cfg.hidden % cfg.heads == 0, "hidden size must be divisible by heads"
        self.cfg = cfg
        d = cfg.hidden
        self.count_mlp = _mlp(1, d)
        self.gene_embed = nn.Parameter(torch.zeros(cfg.num_genes, d))
        self.time_mlp = _mlp(256, d)
        self.cond_mlp = _mlp(cfg.cond_dim, d)
        self.blocks = nn.ModuleList(DiTBlock(d, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.head = nn.Linear(d, 2 if cfg.learn_sigma else 1)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.gene_embed, std=0.02)
        for mlp in (self.time_mlp, self.cond_mlp, self.count_mlp):
            for layer in (mlp[0], mlp[2]):
                nn.init.normal_(layer.weight, std=0.02)
        adaln_zero_init(self)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` (B, G) noisy expression, ``t`` (B,) timesteps, ``cond`` (B, C) embeddings.

        Returns ε (B, G) and, with ``learn_sigma``, v (B, G) in [-1, 1]; else None.
        """
        h = self.count_mlp(x.unsqueeze(-1)) + self.gene_embed
        c = self.time_mlp(timestep_embedding(t)) + self.cond_mlp(cond)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_ada(c).chunk(2, dim=-1)
        out = self.head(_modulate(self.final_norm(h), shift, scale))
        if self.cfg.learn_sigma:
            return out[..., 0], torch.tanh(out[..., 1])
        return out[..., 0], None
