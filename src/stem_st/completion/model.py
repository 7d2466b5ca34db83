"""The LGDiST model: stage 1 (neighbourhood autoencoder) and stage 2 (latent DiT); completion
samples the centre latent with the shared diffusion core (cosine schedule, T = 1500, inpainting
of the neighbour tokens, respaced samplers). Training is in :mod:`.fit`.

Each choice of the design is a field of ``CompletionSettings`` (:mod:`.settings`), stored with
the model: median pre-filling of the input, masked training copies, the checkpoint of each
stage kept by validation masked MSE, a second round whose stage 2 is retrained on round-1
completions, what stage 2 is conditioned on and generates, and where the point comes from.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..atomic import read_json, write_json
from ..diffusion import GaussianDiffusion
from ..errors import StemError, require
from ..models.lgdist import TOKENS, LatentDiT, LGDiSTConfig, NeighbourhoodAutoencoder
from .fit import dit_folder, final_state, fit_lgdist, has_checkpoint
from .inputs import MaskedSection, Neighbourhoods, mask_section, stack
from .settings import CompletionSettings

log = logging.getLogger(__name__)
UNITS = "log1p(count) (natural log)"
DIFFUSION_STEPS = 1500
__all__ = ["DIFFUSION_STEPS", "UNITS", "CompletionSettings", "LGDiST"]


class LGDiST:
    """Reference-free completion of dropout; ``fit`` on training sections, ``complete`` any."""

    def __init__(self, cfg: LGDiSTConfig, panel: list[str], context: list[str], gene_means: np.ndarray,
                 settings: CompletionSettings | None = None):
        require(cfg.num_genes == len(panel) + len(context), "gene count does not match the config")
        self.cfg, self.panel, self.context = cfg, list(panel), list(context)
        self.settings = settings or CompletionSettings()
        self.settings.check()
        self.gene_means = np.asarray(gene_means, dtype=np.float32)
        self.ae = NeighbourhoodAutoencoder(cfg)
        self.dits = [LatentDiT(cfg) for _ in range(self.settings.rounds)]
        self.latent_stats = [(torch.zeros(cfg.latent), torch.ones(cfg.latent)) for _ in self.dits]
        self.diffusion = GaussianDiffusion(DIFFUSION_STEPS, "cosine", self.settings.objective)

    @property
    def genes(self) -> list[str]:
        return self.panel + self.context

    # --- training -----------------------------------------------------------------------
    def fit(self, train: list[MaskedSection], val: list[MaskedSection], run_dir: str | Path,
            device: str = "cpu", resume: bool = False, progress: bool = True) -> dict:
        """Train stage 1, then stage 2 of each round (:func:`.fit.fit_lgdist`)."""
        return fit_lgdist(self, train, val, run_dir, device, resume, progress)

    def masked_mse(self, data: Neighbourhoods, pred: torch.Tensor) -> float:
        """MSE at the hidden entries of ``data`` (log1p units)."""
        truth = data.target + torch.as_tensor(self.gene_means, device=data.target.device)
        return float(((pred - truth)[data.hidden] ** 2).mean())

    def to(self, device: str | torch.device) -> LGDiST:
        self.ae.to(device)
        for dit in self.dits:
            dit.to(device)
        return self

    # --- encoding, sampling, decoding ---------------------------------------------------
    def normalise(self, z: torch.Tensor, r: int) -> torch.Tensor:
        mean, std = self.latent_stats[r]
        return (z - mean.to(z.device)) / std.to(z.device)

    @torch.no_grad()
    def encode(self, data: Neighbourhoods, batch: int = 1024, ae: torch.nn.Module | None = None) -> torch.Tensor:
        """Raw latents ``(N, 7, latent)`` of every neighbourhood of ``data``."""
        ae = ae or self.ae
        dev = next(ae.parameters()).device
        out = []
        for start in range(0, len(data.index), batch):
            nb = data.index[start:start + batch].to(dev)
            pr = data.present[start:start + batch].to(dev)
            out.append(ae.encode(data.values.to(dev)[nb] * pr.unsqueeze(-1), pr))
        return torch.cat(out)

    @torch.no_grad()
    def decode_centres(self, ae: torch.nn.Module, data: Neighbourhoods, centres: torch.Tensor | None,
                       num_samples: int = 1) -> torch.Tensor:
        """log1p prediction ``(N, G)``: decoded centre latents (the encoder's own if ``None``),
        averaged over samples, plus the gene means, clipped at 0."""
        if centres is None:
            centres = self.encode(data, ae=ae)[:, 0]
        dec = ae.decode(centres).float().view(len(data.values), num_samples, -1).mean(1)
        return (dec + torch.as_tensor(self.gene_means, device=dec.device)).clamp_min(0.0)

    @torch.no_grad()
    def condition_of(self, known: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Stage 2's condition tokens from normalised input latents ``(B, 7, latent)``: the
        neighbours with the centre zeroed, or (``condition = neighbourhood``) all seven, the
        centre's own plus ``centre_noise`` × ``noise`` (standard normal ``(B, latent)``)."""
        if self.settings.condition == "neighbourhood":
            if self.settings.centre_noise == 0:
                return known
            require(noise is not None, "centre_noise needs noise for the centre token")
            centre = known[:, :1] + self.settings.centre_noise * noise.unsqueeze(1)
            return torch.cat([centre, known[:, 1:]], dim=1)
        return torch.cat([torch.zeros_like(known[:, :1]), known[:, 1:]], dim=1)

    def condition_noise(self, n: int, gen: torch.Generator, device: str | torch.device) -> torch.Tensor | None:
        """Standard normal noise for :meth:`condition_of` (``None`` when no centre is noised)."""
        if self.settings.centre_noise == 0 or self.settings.condition != "neighbourhood":
            return None
        return torch.randn((n, self.cfg.latent), generator=gen, device=device)

    @torch.no_grad()
    def predict_round(self, data: Neighbourhoods, r: int, num_samples: int, sampler: str, seed: int,
                      device: str | torch.device, batch: int = 2048, dit: torch.nn.Module | None = None
                      ) -> torch.Tensor:
        """Round ``r``'s completion of ``data``: the centre latent given its condition (the
        neighbour tokens inpainted), decoded; the posterior mean or the mean of ``num_samples``
        decoded samples (``settings.point``)."""
        dit = dit or self.dits[r]
        zn = self.normalise(self.encode(data), r) * data.present.to(device).unsqueeze(-1)
        mask = torch.zeros((1, TOKENS, 1), dtype=torch.bool, device=device)
        mask[:, 0] = True
        gen = torch.Generator(device=device).manual_seed(seed)
        # the encoder ends in tanh: keep each step's x_0 prediction inside that box
        ones = torch.ones(self.cfg.latent, device=device)
        box = (self.normalise(-ones, r), self.normalise(ones, r))
        posterior = self.settings.point == "posterior_mean"
        rows = zn if posterior else zn.repeat_interleave(num_samples, dim=0)
        centres = []
        for start in range(0, len(rows), batch):
            known = rows[start:start + batch]
            cond = self.condition_of(known, self.condition_noise(len(known), gen, device))
            if posterior:  # neighbour tokens clean, the centre at the noisiest step
                x = self.diffusion.posterior_mean(
                    lambda xt, tt, c=cond, k=known: dit(torch.where(mask, xt, k), tt, c), known.shape,
                    num_samples, gen, device, clip_x0=box)
            else:
                x = self.diffusion.sample(lambda xt, tt, c=cond: dit(xt, tt, c), known.shape, sampler, gen,
                                          device, known=known, mask=mask.expand(len(known), -1, -1), clip_x0=box)
            centres.append(x[:, 0])
        mean, std = self.latent_stats[r]
        z = torch.cat(centres) * std.to(device) + mean.to(device)
        return self.decode_centres(self.ae, data, z, 1 if posterior else num_samples)

    # --- completion ---------------------------------------------------------------------
    @torch.no_grad()
    def complete(self, values: np.ndarray, xy: np.ndarray, num_samples: int = 4, sampler: str = "ddim:50",
                 seed: int = 0, device: str = "cpu", batch: int = 2048, diffusion: bool = True) -> np.ndarray:
        """The point completion: log1p values ``(N, G)`` for every spot of one section (zeros are
        dropouts; entries to score must already be removed). Stage 2's estimate (posterior mean,
        or the mean of ``num_samples`` samples of the centre latent), or stage 1's decoding of the
        encoder's own centre latent with ``diffusion=False`` or ``point_source = stage1``."""
        if not diffusion or self.settings.point_source == "stage1":
            data = self._section(values, xy, device)
            return self.decode_centres(self.ae, data, None).cpu().numpy()
        return self.diffusion_completion(values, xy, num_samples, sampler, seed, device, batch)

    def _section(self, values: np.ndarray, xy: np.ndarray, device: str) -> Neighbourhoods:
        require(values.shape[1] == self.cfg.num_genes,
                f"values have {values.shape[1]} genes, the model {self.cfg.num_genes}")
        self.to(device)
        for m in (self.ae, *self.dits):
            m.eval()
        sec = mask_section(values, xy, len(self.panel), self.settings.prefill)
        return stack([sec], self.gene_means).to(device)

    @torch.no_grad()
    def diffusion_completion(self, values: np.ndarray, xy: np.ndarray, num_samples: int = 4,
                             sampler: str = "ddim:50", seed: int = 0, device: str = "cpu",
                             batch: int = 2048) -> np.ndarray:
        """Stage 2's completion of one section (each round in turn), as ``settings.point`` says."""
        data = self._section(values, xy, device)
        pred = None
        for r in range(len(self.dits)):
            if r > 0:
                data = data.with_values(torch.where(data.observed, data.values,
                                                    pred - torch.as_tensor(self.gene_means, device=device)))
            pred = self.predict_round(data, r, num_samples, sampler, seed, device, batch)
        return pred.cpu().numpy()

    # --- persistence --------------------------------------------------------------------
    def save_config(self, path: Path, extra: dict) -> None:
        write_json(path / "config.json", {"cfg": self.cfg.to_dict(), "panel": self.panel, "context": self.context,
                                          "gene_means": self.gene_means.tolist(), "units": UNITS,
                                          "settings": asdict(self.settings), **extra})

    @classmethod
    def load(cls, path: str | Path) -> LGDiST:
        """A fitted model from its folder (stage-1 weights, stage-2 EMA weights of each round)."""
        path = Path(path)
        require((path / "config.json").is_file(), f"{path} is not a completion model (no config.json)")
        conf = read_json(path / "config.json", "completion model")
        s = CompletionSettings.from_dict(conf.get("settings", {}))
        m = cls(LGDiSTConfig(**conf["cfg"]), conf["panel"], conf["context"], np.asarray(conf["gene_means"]), s)
        select = conf.get("select", s.select)
        folders = [path / "ae", *(path / dit_folder(r) for r in range(s.rounds))]
        missing = [f.name for f in folders if not has_checkpoint(f)]
        if missing:
            raise StemError(f"{path}: training did not finish (no {missing[0]} checkpoint); "
                            "rerun 'stem complete fit' with --resume")
        m.ae.load_state_dict(final_state(path / "ae", select)["model"])
        for r, dit in enumerate(m.dits):
            ck = final_state(path / dit_folder(r), select)
            dit.load_state_dict(ck["ema"]["model"])
            m.latent_stats[r] = (ck["latent_mean"], ck["latent_std"])
            dit.eval()
        m.ae.eval()
        return m
