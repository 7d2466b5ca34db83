"""The LGDiST model: stage 1 (neighbourhood autoencoder) and stage 2 (latent DiT), both trained
by the shared trainer; completion samples the centre latent with the shared diffusion core
(cosine schedule, T = 1500, inpainting of the neighbour tokens, respaced samplers).

Each choice of the design is a field of ``CompletionSettings``, stored with the model:
median pre-filling of the input, masked training copies (measured entries hidden as at
evaluation, scored against their real values), the checkpoint of each stage kept by
validation masked MSE, and a second round whose stage 2 is retrained on round-1 completions.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from ..atomic import write_json
from ..diffusion import GaussianDiffusion
from ..errors import StemError, require
from ..models.lgdist import TOKENS, LatentDiT, LGDiSTConfig, NeighbourhoodAutoencoder
from ..training.checkpoint import load_latest
from ..training.loop import BEST_DIR, LoopConfig, train_loop
from .inputs import PREFILLS, MaskedSection, Neighbourhoods, mask_section, stack
from .masking import PROTOCOLS

log = logging.getLogger(__name__)
UNITS = "log1p(count) (natural log)"
DIFFUSION_STEPS = 1500
SELECTS = ("best_val", "last")


@dataclass
class CompletionSettings:
    """Training settings of both stages and the design switches (CPU-sized defaults)."""

    ae_steps: int = 2000
    dit_steps: int = 4000
    batch_size: int = 128
    lr: float = 1e-4
    ae_lr: float = 1e-3
    seed: int = 0
    checkpoint_every: int = 500
    latent_noise: float = 0.1
    #: stage-1 loss weight of measured panel entries (the rest get 1 − it), as the reference
    panel_weight: float = 0.9
    #: zeros of the input: ``median`` (adaptive median, as the reference) or ``zeros``
    prefill: str = "median"
    #: measured panel entries hidden in the training copies (dropout | spared), or ``none``
    train_masking: str = "dropout"
    #: masked copies of the training sections (each with its own hidden entries)
    copies: int = 4
    #: checkpoint of each stage: ``best_val`` (validation masked MSE) or ``last``
    select: str = "best_val"
    #: 2: stage 2 retrained on round-1 completions, which then feed round 2 (reference Step B)
    rounds: int = 1
    #: protocol of the validation score
    masking: str = "dropout"
    val_every: int = 250
    val_sampler: str = "ddim:10"
    #: stage-2 network output: ``x0`` or ``eps`` (as the reference)
    objective: str = "x0"
    #: stage-2 estimate: ``posterior_mean`` (the x0 network's E[centre latent | neighbours], read
    #: at the noisiest step; needs x0) or ``samples`` (mean of sampled centre latents)
    point: str = "posterior_mean"

    def check(self) -> None:
        require(self.prefill in PREFILLS, f"--prefill must be one of {', '.join(PREFILLS)}")
        require(self.train_masking in (*PROTOCOLS, "none"), f"--train-masking must be one of "
                f"{', '.join(PROTOCOLS)}, none")
        require(self.masking in PROTOCOLS, f"--masking must be one of {', '.join(PROTOCOLS)}")
        require(self.select in SELECTS, f"--select must be one of {', '.join(SELECTS)}")
        require(self.rounds in (1, 2), "--rounds must be 1 or 2")
        require(self.copies >= 1, "--copies must be at least 1")
        require(self.objective in ("eps", "x0"), "--objective must be eps or x0")
        require(self.point in ("samples", "posterior_mean"), "--point must be samples or posterior_mean")
        require(self.point == "samples" or self.objective == "x0", "--point posterior_mean needs --objective x0")

    @classmethod
    def from_dict(cls, d: dict) -> CompletionSettings:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def training_copies(values: dict[str, np.ndarray], xys: dict[str, np.ndarray], n_panel: int,
                    s: CompletionSettings) -> list[MaskedSection]:
    """The training sections as ``s.copies`` masked copies (or once, unmasked)."""
    if s.train_masking == "none":
        return [mask_section(v, xys[k], n_panel, s.prefill) for k, v in values.items()]
    rng = np.random.default_rng(s.seed)
    return [mask_section(v, xys[k], n_panel, s.prefill, s.train_masking, rng)
            for _ in range(s.copies) for k, v in values.items()]


def validation_set(values: dict[str, np.ndarray], xys: dict[str, np.ndarray], n_panel: int,
                   s: CompletionSettings) -> list[MaskedSection]:
    """Validation sections with hidden panel entries under ``s.masking`` (fixed seed)."""
    rng = np.random.default_rng(s.seed + 1)
    return [mask_section(v, xys[k], n_panel, s.prefill, s.masking, rng) for k, v in values.items()]


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
        """Train stage 1, then stage 2 of each round on the encoded training neighbourhoods."""
        s, run_dir, dev = self.settings, Path(run_dir), torch.device(device)
        select = s.select if val else "last"
        if select != s.select:
            log.warning("no validation sections: keeping the last checkpoint of each stage")
        tr = stack(train, self.gene_means).to(dev)
        va = stack(val, self.gene_means).to(dev) if val else None
        n, batch = len(tr.values), s.batch_size
        panel_cols = torch.zeros(self.cfg.num_genes, dtype=torch.bool, device=dev)
        panel_cols[: len(self.panel)] = True
        weight = torch.where(tr.measured & panel_cols, s.panel_weight, 1 - s.panel_weight)

        def ae_loss(net, data_gen, noise_gen, share):
            rows = torch.randint(n, (batch,), generator=data_gen)[share].to(dev)
            nb, pr = tr.index[rows], tr.present[rows]
            centre = net.encode(tr.values[nb] * pr.unsqueeze(-1), pr)[:, 0]
            noisy = torch.rand(batch, generator=noise_gen, device=dev)[share] < 0.5
            eps = torch.randn((batch, centre.shape[-1]), generator=noise_gen, device=dev)[share]
            rec = net.decode(centre + s.latent_noise * eps * noisy.unsqueeze(-1))
            w = weight[rows]
            return {"loss": (w * (rec.float() - tr.target[rows]) ** 2).sum() / w.sum()}

        def loop(steps, lr):
            return LoopConfig(steps=steps, lr=lr, seed=s.seed, checkpoint_every=s.checkpoint_every,
                              device=device, progress=progress)

        def fit_stage(net, loss, steps, lr, folder, state, validate):
            res = train_loop(net, loss, loop(steps, lr), folder, state, resume=resume and _has_checkpoint(folder),
                             global_batch=batch, validate=validate if select == "best_val" else None,
                             validate_every=s.val_every)
            return res, _final_state(folder, select)

        state = {"lgdist": json.dumps({"cfg": self.cfg.to_dict(), "panel": self.panel, "context": self.context})}
        r1, ck = fit_stage(self.ae, ae_loss, s.ae_steps, s.ae_lr, run_dir / "ae", state,
                           lambda model, ema: self._masked_mse(va, self._decode(model, va, None)))
        self.ae.load_state_dict(ck["model"])
        self.ae.to(dev).eval()
        report = {"ae_seconds": round(r1.seconds, 1), "ae_best": ck.get("best"), "dit_seconds": [], "dit_best": []}
        for r, dit in enumerate(self.dits):
            if r > 0:  # round r's inputs: the observed values, every zero filled by round r − 1
                tr = self._refill(tr, r - 1, dev)
                va = self._refill(va, r - 1, dev) if va is not None else None
            z = self.encode(tr)
            pres = tr.present.unsqueeze(-1)
            flat = z[pres.expand_as(z)].view(-1, z.shape[-1])
            self.latent_stats[r] = (flat.mean(0).cpu(), flat.std(0).clamp_min(1e-4).cpu())
            zn = self._normalise(z, r) * pres
            res, ck = fit_stage(dit, self._dit_loss(zn, batch, dev), s.dit_steps, s.lr,
                                run_dir / _dit_folder(r), {**state, "latent_mean": self.latent_stats[r][0],
                                                           "latent_std": self.latent_stats[r][1]},
                                lambda model, ema, r=r, va=va: self._masked_mse(va, self._predict(
                                    va, r, 1, s.val_sampler, s.seed, dev, dit=ema)))
            dit.load_state_dict(ck["ema"]["model"])
            dit.to(dev).eval()
            report["dit_seconds"].append(round(res.seconds, 1))
            report["dit_best"].append(ck.get("best"))
        self.to("cpu")
        return report

    def _dit_loss(self, zn: torch.Tensor, batch: int, dev: torch.device):
        centre = torch.zeros((1, TOKENS, 1), dtype=torch.bool, device=dev)
        centre[:, 0] = True
        diffusion, n = self.diffusion, len(zn)

        def loss(net, data_gen, noise_gen, share):
            rows = torch.randint(n, (batch,), generator=data_gen)[share].to(dev)
            x0 = zn[rows]
            cond = x0.masked_fill(centre, 0.0)
            t = torch.randint(diffusion.num_steps, (batch,), generator=noise_gen, device=dev)[share]
            noise = torch.randn((batch, *x0.shape[1:]), generator=noise_gen, device=dev)[share]
            terms = diffusion.training_loss(lambda xt, tt: net(xt, tt, cond), x0, t, noise,
                                            mask=centre.expand(len(x0), -1, -1))
            return {k: v.mean() for k, v in terms.items()}

        return loss

    def _refill(self, data: Neighbourhoods, r: int, dev: torch.device) -> Neighbourhoods:
        """``data`` whose zeros are filled by round ``r``'s completion (cheap sampler, 1 sample)."""
        s = self.settings
        pred = self._predict(data, r, 1, s.val_sampler, s.seed, dev) - torch.as_tensor(self.gene_means, device=dev)
        raw = data.values  # observed entries keep their (centred) value
        return data.with_values(torch.where(data.observed, raw, pred))

    def _masked_mse(self, data: Neighbourhoods, pred: torch.Tensor) -> float:
        """MSE at the hidden entries of ``data`` (log1p units)."""
        truth = data.target + torch.as_tensor(self.gene_means, device=data.target.device)
        return float(((pred - truth)[data.hidden] ** 2).mean())

    def to(self, device: str | torch.device) -> LGDiST:
        self.ae.to(device)
        for dit in self.dits:
            dit.to(device)
        return self

    # --- encoding, sampling, decoding ---------------------------------------------------
    def _normalise(self, z: torch.Tensor, r: int) -> torch.Tensor:
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
    def _decode(self, ae: torch.nn.Module, data: Neighbourhoods, centres: torch.Tensor | None,
                num_samples: int = 1) -> torch.Tensor:
        """log1p prediction ``(N, G)``: decoded centre latents (the encoder's own if ``None``),
        averaged over samples, plus the gene means, clipped at 0."""
        if centres is None:
            centres = self.encode(data, ae=ae)[:, 0]
        dec = ae.decode(centres).float().view(len(data.values), num_samples, -1).mean(1)
        return (dec + torch.as_tensor(self.gene_means, device=dec.device)).clamp_min(0.0)

    @torch.no_grad()
    def _predict(self, data: Neighbourhoods, r: int, num_samples: int, sampler: str, seed: int,
                 device: str | torch.device, batch: int = 2048, dit: torch.nn.Module | None = None
                 ) -> torch.Tensor:
        """Round ``r``'s completion of ``data``: sample the centre latent given the neighbour
        latents (inpainting), decode, average ``num_samples`` samples."""
        dit = dit or self.dits[r]
        zn = self._normalise(self.encode(data), r) * data.present.to(device).unsqueeze(-1)
        mask = torch.zeros((1, TOKENS, 1), dtype=torch.bool, device=device)
        mask[:, 0] = True
        gen = torch.Generator(device=device).manual_seed(seed)
        # the encoder ends in tanh: keep each step's x_0 prediction inside that box
        ones = torch.ones(self.cfg.latent, device=device)
        box = (self._normalise(-ones, r), self._normalise(ones, r))
        posterior = self.settings.point == "posterior_mean"
        rows = zn if posterior else zn.repeat_interleave(num_samples, dim=0)
        centres = []
        for start in range(0, len(rows), batch):
            known = rows[start:start + batch]
            cond = known.masked_fill(mask, 0.0)
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
        return self._decode(self.ae, data, z, 1 if posterior else num_samples)

    # --- completion ---------------------------------------------------------------------
    @torch.no_grad()
    def complete(self, values: np.ndarray, xy: np.ndarray, num_samples: int = 4, sampler: str = "ddim:50",
                 seed: int = 0, device: str = "cpu", batch: int = 2048, diffusion: bool = True) -> np.ndarray:
        """Predicted log1p values ``(N, G)`` for every spot of one section (zeros are dropouts;
        entries to score must already be removed), averaged over ``num_samples`` samples of the
        centre latent; ``diffusion=False`` decodes the encoder's own centre latent (stage 1 only)."""
        require(values.shape[1] == self.cfg.num_genes,
                f"values have {values.shape[1]} genes, the model {self.cfg.num_genes}")
        self.to(device)
        for m in (self.ae, *self.dits):
            m.eval()
        sec = mask_section(values, xy, len(self.panel), self.settings.prefill)
        data = stack([sec], self.gene_means).to(device)
        if not diffusion:
            return self._decode(self.ae, data, None).cpu().numpy()
        pred = None
        for r in range(len(self.dits)):
            if r > 0:
                data = data.with_values(torch.where(data.observed, data.values,
                                                    pred - torch.as_tensor(self.gene_means, device=device)))
            pred = self._predict(data, r, num_samples, sampler, seed, device, batch)
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
        conf = json.loads((path / "config.json").read_text())
        s = CompletionSettings.from_dict(conf.get("settings", {}))
        m = cls(LGDiSTConfig(**conf["cfg"]), conf["panel"], conf["context"], np.asarray(conf["gene_means"]), s)
        select = conf.get("select", s.select)
        folders = [path / "ae", *(path / _dit_folder(r) for r in range(s.rounds))]
        missing = [f.name for f in folders if not _has_checkpoint(f)]
        if missing:
            raise StemError(f"{path}: training did not finish (no {missing[0]} checkpoint); "
                            "rerun 'stem complete fit' with --resume")
        m.ae.load_state_dict(_final_state(path / "ae", select)["model"])
        for r, dit in enumerate(m.dits):
            ck = _final_state(path / _dit_folder(r), select)
            dit.load_state_dict(ck["ema"]["model"])
            m.latent_stats[r] = (ck["latent_mean"], ck["latent_std"])
            dit.eval()
        m.ae.eval()
        return m


def _dit_folder(r: int) -> str:
    return "dit" if r == 0 else f"dit{r + 1}"


def _has_checkpoint(folder: Path) -> bool:
    return (folder / "checkpoints").is_dir() and any((folder / "checkpoints").glob("step_*.pt"))


def _final_state(folder: Path, select: str) -> dict:
    """The stage's kept state: the best-validation one (``best_val``, when validated) or the last."""
    if select == "best_val" and _has_checkpoint(folder / BEST_DIR):
        return load_latest(folder / BEST_DIR)[0]
    return load_latest(folder)[0]
