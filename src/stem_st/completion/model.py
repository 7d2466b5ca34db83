"""The LGDiST model: stage 1 (neighbourhood autoencoder) and stage 2 (latent DiT), both trained
by the shared trainer; completion samples the centre latent with the shared diffusion core
(cosine schedule, T = 1500, inpainting of the neighbour tokens, respaced DDIM)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..atomic import write_json
from ..diffusion import GaussianDiffusion
from ..errors import require
from ..models.lgdist import TOKENS, LatentDiT, LGDiSTConfig, NeighbourhoodAutoencoder
from ..training.checkpoint import load_latest
from ..training.loop import LoopConfig, train_loop
from .neighbours import neighbourhoods

log = logging.getLogger(__name__)
UNITS = "log1p(count) (natural log)"
DIFFUSION_STEPS = 1500


@dataclass
class CompletionSettings:
    """Training settings of both stages (CPU-sized defaults; the paper trains far longer)."""

    ae_steps: int = 2000
    dit_steps: int = 4000
    batch_size: int = 128
    lr: float = 1e-4
    ae_lr: float = 1e-3
    seed: int = 0
    checkpoint_every: int = 500
    latent_noise: float = 0.1
    panel_weight: float = 0.9


@dataclass
class Neighbourhoods:
    """Stacked sections: centred values, raw non-zero mask, neighbourhood indices into the stack."""

    values: torch.Tensor   # (N, G) centred log1p
    nonzero: torch.Tensor  # (N, G) bool
    index: torch.Tensor    # (N, 7) rows of the stack
    present: torch.Tensor  # (N, 7) bool
    sections: list[str] = field(default_factory=list)


def stack_sections(values: dict[str, np.ndarray], xys: dict[str, np.ndarray], means: np.ndarray) -> Neighbourhoods:
    """Build per-section neighbourhoods and stack them (indices offset per section)."""
    vals, nz, idx, pr, off = [], [], [], [], 0
    for sid, v in values.items():
        i, p = neighbourhoods(xys[sid])
        vals.append(v - means)
        nz.append(v > 0)
        idx.append(i + off)
        pr.append(p)
        off += len(v)
    return Neighbourhoods(torch.from_numpy(np.concatenate(vals)).float(), torch.from_numpy(np.concatenate(nz)),
                          torch.from_numpy(np.concatenate(idx)).long(), torch.from_numpy(np.concatenate(pr)),
                          list(values))


class LGDiST:
    """Reference-free completion of dropout; ``fit`` on training sections, ``complete`` any."""

    def __init__(self, cfg: LGDiSTConfig, panel: list[str], context: list[str], gene_means: np.ndarray):
        require(cfg.num_genes == len(panel) + len(context), "gene count does not match the config")
        self.cfg, self.panel, self.context = cfg, list(panel), list(context)
        self.gene_means = np.asarray(gene_means, dtype=np.float32)
        self.ae = NeighbourhoodAutoencoder(cfg)
        self.dit = LatentDiT(cfg)
        self.diffusion = GaussianDiffusion(DIFFUSION_STEPS, "cosine")
        self.latent_mean = torch.zeros(cfg.latent)
        self.latent_std = torch.ones(cfg.latent)

    @property
    def genes(self) -> list[str]:
        return self.panel + self.context

    # --- training -----------------------------------------------------------------------
    def fit(self, train: Neighbourhoods, run_dir: str | Path, s: CompletionSettings, device: str = "cpu",
            resume: bool = False, progress: bool = True) -> dict:
        """Train stage 1, then encode the training neighbourhoods and train stage 2."""
        run_dir = Path(run_dir)
        dev = torch.device(device)
        data = Neighbourhoods(train.values.to(dev), train.nonzero.to(dev), train.index.to(dev),
                              train.present.to(dev), train.sections)
        n, batch = len(data.values), s.batch_size
        panel_cols = torch.zeros(self.cfg.num_genes, dtype=torch.bool, device=dev)
        panel_cols[: len(self.panel)] = True

        def ae_loss(net, data_gen, noise_gen, share):
            rows = torch.randint(n, (batch,), generator=data_gen)[share].to(dev)
            nb, pr = data.index[rows], data.present[rows]
            z = net.encode(data.values[nb] * pr.unsqueeze(-1), pr)
            centre = z[:, 0]
            noisy = torch.rand(batch, generator=noise_gen, device=dev)[share] < 0.5
            eps = torch.randn((batch, centre.shape[-1]), generator=noise_gen, device=dev)[share]
            centre = centre + s.latent_noise * eps * noisy.unsqueeze(-1)
            rec = net.decode(centre)
            w = torch.where(data.nonzero[rows] & panel_cols, s.panel_weight, 1 - s.panel_weight)
            loss = (w * (rec.float() - data.values[rows]) ** 2).sum() / w.sum()
            return {"loss": loss}

        def loop(steps, lr):
            return LoopConfig(steps=steps, lr=lr, seed=s.seed, checkpoint_every=s.checkpoint_every,
                              device=device, progress=progress)

        state = {"lgdist": json.dumps({"cfg": self.cfg.to_dict(), "panel": self.panel, "context": self.context})}
        ae_dir, dit_dir = run_dir / "ae", run_dir / "dit"
        r1 = train_loop(self.ae, ae_loss, loop(s.ae_steps, s.ae_lr), ae_dir, state,
                        resume=resume and _has_checkpoint(ae_dir), global_batch=batch)
        self.ae.load_state_dict(load_latest(ae_dir)[0]["model"])
        self.ae.to(dev).eval()
        z = self.encode(data)  # (N, 7, latent) raw latents
        pres = data.present.unsqueeze(-1)
        flat = z[pres.expand_as(z)].view(-1, z.shape[-1])
        self.latent_mean, self.latent_std = flat.mean(0).cpu(), flat.std(0).clamp_min(1e-4).cpu()
        zn = self._normalise(z) * pres
        centre = torch.zeros((1, TOKENS, 1), dtype=torch.bool, device=dev)
        centre[:, 0] = True
        diffusion = self.diffusion

        def dit_loss(net, data_gen, noise_gen, share):
            rows = torch.randint(n, (batch,), generator=data_gen)[share].to(dev)
            x0 = zn[rows]
            cond = x0.masked_fill(centre, 0.0)
            t = torch.randint(diffusion.num_steps, (batch,), generator=noise_gen, device=dev)[share]
            noise = torch.randn((batch, *x0.shape[1:]), generator=noise_gen, device=dev)[share]
            terms = diffusion.training_loss(lambda xt, tt: net(xt, tt, cond), x0, t, noise,
                                            mask=centre.expand(len(x0), -1, -1))
            return {k: v.mean() for k, v in terms.items()}

        state2 = {**state, "latent_mean": self.latent_mean, "latent_std": self.latent_std}
        r2 = train_loop(self.dit, dit_loss, loop(s.dit_steps, s.lr), dit_dir, state2,
                        resume=resume and _has_checkpoint(dit_dir), global_batch=batch)
        self.dit.load_state_dict(load_latest(dit_dir)[0]["ema"]["model"])
        self.dit.to("cpu").eval()
        self.ae.to("cpu")
        return {"ae_seconds": round(r1.seconds, 1), "dit_seconds": round(r2.seconds, 1),
                "ae_loss": r1.losses[-1]["loss"] if r1.losses else None,
                "dit_loss": r2.losses[-1]["loss"] if r2.losses else None}

    def _normalise(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.latent_mean.to(z.device)) / self.latent_std.to(z.device)

    @torch.no_grad()
    def encode(self, data: Neighbourhoods, batch: int = 1024) -> torch.Tensor:
        """Raw latents ``(N, 7, latent)`` of every neighbourhood of ``data``."""
        dev = next(self.ae.parameters()).device
        out = []
        for start in range(0, len(data.index), batch):
            nb = data.index[start:start + batch].to(dev)
            pr = data.present[start:start + batch].to(dev)
            out.append(self.ae.encode(data.values.to(dev)[nb] * pr.unsqueeze(-1), pr))
        return torch.cat(out)

    # --- completion ---------------------------------------------------------------------
    @torch.no_grad()
    def complete(self, values: np.ndarray, xy: np.ndarray, num_samples: int = 4, sampler: str = "ddim:50",
                 seed: int = 0, device: str = "cpu", batch: int = 2048) -> np.ndarray:
        """Predicted log1p values ``(N, G)`` for every spot of one section (measured values
        with zeros as input), averaged over ``num_samples`` samples of the centre latent."""
        require(values.shape[1] == self.cfg.num_genes,
                f"values have {values.shape[1]} genes, the model {self.cfg.num_genes}")
        self.ae.to(device).eval()
        self.dit.to(device).eval()
        data = stack_sections({"s": np.asarray(values, dtype=np.float32)}, {"s": xy}, self.gene_means)
        zn = self._normalise(self.encode(data)) * data.present.to(device).unsqueeze(-1)
        mask = torch.zeros((1, TOKENS, 1), dtype=torch.bool, device=device)
        mask[:, 0] = True
        gen = torch.Generator(device=device).manual_seed(seed)
        # the encoder ends in tanh: keep each step's x_0 prediction inside that box
        box = (self._normalise(-torch.ones(self.cfg.latent, device=device)),
               self._normalise(torch.ones(self.cfg.latent, device=device)))
        rows = zn.repeat_interleave(num_samples, dim=0)
        centres = []
        for start in range(0, len(rows), batch):
            known = rows[start:start + batch]
            cond = known.masked_fill(mask, 0.0)
            m = mask.expand(len(known), -1, -1)
            x = self.diffusion.sample(lambda xt, tt, c=cond: self.dit(xt, tt, c), known.shape, sampler, gen,
                                      device, known=known, mask=m, clip_x0=box)
            centres.append(x[:, 0])
        z = torch.cat(centres) * self.latent_std.to(device) + self.latent_mean.to(device)
        dec = self.ae.decode(z).float().cpu().numpy().reshape(len(values), num_samples, -1).mean(1)
        return np.clip(dec + self.gene_means, 0, None)

    # --- persistence --------------------------------------------------------------------
    def save_config(self, path: Path, extra: dict) -> None:
        write_json(path / "config.json", {"cfg": self.cfg.to_dict(), "panel": self.panel, "context": self.context,
                                          "gene_means": self.gene_means.tolist(), "units": UNITS, **extra})

    @classmethod
    def load(cls, path: str | Path) -> LGDiST:
        """A fitted model from its folder (stage-1 weights, stage-2 EMA weights)."""
        path = Path(path)
        require((path / "config.json").is_file(), f"{path} is not a completion model (no config.json)")
        conf = json.loads((path / "config.json").read_text())
        m = cls(LGDiSTConfig(**conf["cfg"]), conf["panel"], conf["context"], np.asarray(conf["gene_means"]))
        require(_has_checkpoint(path / "dit"), f"{path}: training did not finish (no stage-2 checkpoint); "
                "rerun 'stem complete fit' with --resume")
        m.ae.load_state_dict(load_latest(path / "ae")[0]["model"])
        ck, _ = load_latest(path / "dit")
        m.dit.load_state_dict(ck["ema"]["model"])
        m.latent_mean, m.latent_std = ck["latent_mean"], ck["latent_std"]
        m.ae.eval()
        m.dit.eval()
        return m


def _has_checkpoint(folder: Path) -> bool:
    return (folder / "checkpoints").is_dir() and any((folder / "checkpoints").glob("step_*.pt"))


def settings_dict(s: CompletionSettings) -> dict:
    return asdict(s)
