"""LGDiST networks (Cárdenas et al., 2025): a neighbourhood autoencoder and a latent DiT.

Stage 1 encodes a spot and its 6 neighbours (7 × G values) into one 128-d latent per spot
and decodes the centre's G genes from the centre latent. Stage 2 is a DiT over the 7 latents:
the centre token is diffused; the condition of each token is time plus the neighbourhood's
latents (the paper's: the centre zeroed; ours by default: the centre's own latent under noise,
``CompletionSettings.centre_noise``), through adaLN-Zero per token.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .stem_dit import DiTBlock, _mlp, _modulate, adaln_zero_init, timestep_embedding

NEIGHBOURS = 6
TOKENS = NEIGHBOURS + 1


@dataclass
class LGDiSTConfig:
    """Sizes of both stages (paper: 1024 genes, 512 hidden, 128-d latent)."""

    num_genes: int = 1024
    ae_hidden: int = 512
    ae_layers: int = 2
    ae_heads: int = 4
    latent: int = 128
    dit_hidden: int = 256
    dit_depth: int = 4
    dit_heads: int = 4

    def to_dict(self) -> dict:
        return asdict(self)


class NeighbourhoodAutoencoder(nn.Module):
    """(B, 7, G) neighbourhood → (B, 7, latent) → centre's (B, G)."""

    def __init__(self, cfg: LGDiSTConfig):
        super().__init__()
        self.cfg = cfg
        self.inp = nn.Sequential(nn.Linear(cfg.num_genes, cfg.ae_hidden), nn.Tanh())
        layer = nn.TransformerEncoderLayer(cfg.ae_hidden, cfg.ae_heads, 2 * cfg.ae_hidden, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.ae_layers, enable_nested_tensor=False)
        self.to_latent = nn.Sequential(nn.Linear(cfg.ae_hidden, cfg.latent), nn.Tanh())
        self.decoder = nn.Sequential(nn.Linear(cfg.latent, cfg.ae_hidden), nn.GELU(),
                                     nn.Linear(cfg.ae_hidden, cfg.ae_hidden), nn.GELU(),
                                     nn.Linear(cfg.ae_hidden, cfg.num_genes))

    def encode(self, x: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Latents ``(B, 7, latent)`` of neighbourhoods ``x``; ``present`` (B, 7) marks real
        spots (padding is ignored by attention and zeroed)."""
        h = self.encoder(self.inp(x), src_key_padding_mask=~present.bool())
        return self.to_latent(h) * present.unsqueeze(-1).to(h.dtype)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Genes ``(..., G)`` from latents ``(..., latent)``."""
        return self.decoder(z)


class LatentDiT(nn.Module):
    """ε-prediction over the 7 latent tokens, conditioned per token on time + neighbour latents."""

    def __init__(self, cfg: LGDiSTConfig):
        super().__init__()
        d = cfg.dit_hidden
        self.inp = nn.Linear(cfg.latent, d)
        self.pos = nn.Parameter(torch.zeros(TOKENS, d))  # centre vs neighbour slots
        self.time_mlp = _mlp(256, d)
        self.cond_mlp = _mlp(cfg.latent, d)
        self.blocks = nn.ModuleList(DiTBlock(d, cfg.dit_heads, 4.0) for _ in range(cfg.dit_depth))
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.head = nn.Linear(d, cfg.latent)
        nn.init.normal_(self.pos, std=0.02)
        adaln_zero_init(self)

    def forward(self, z: torch.Tensor, t: torch.Tensor, neighbours: torch.Tensor
                ) -> tuple[torch.Tensor, None]:
        """``z`` (B, 7, latent) with a noisy centre, ``t`` (B,), ``neighbours`` (B, 7, latent)
        the condition latents (centre zeroed or noised). Returns ε or x₀ (B, 7, latent)."""
        h = self.inp(z) + self.pos
        c = self.time_mlp(timestep_embedding(t)).unsqueeze(1) + self.cond_mlp(neighbours)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_ada(c).chunk(2, dim=-1)
        return self.head(_modulate(self.final_norm(h), shift, scale)), None
