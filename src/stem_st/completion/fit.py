"""Training of an LGDiST model: masked training copies, stage 1 (neighbourhood autoencoder),
then stage 2 (latent DiT) of each round on the encoded training neighbourhoods, each stage's
checkpoint kept by validation masked MSE (``select = best_val``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from ..devices import resolve_device
from ..models.lgdist import TOKENS
from ..training.checkpoint import load_latest
from ..training.loop import BEST_DIR, LoopConfig, train_loop
from .inputs import MaskedSection, Neighbourhoods, mask_section, stack
from .settings import CompletionSettings

log = logging.getLogger(__name__)


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


def dit_folder(r: int) -> str:
    return "dit" if r == 0 else f"dit{r + 1}"


def has_checkpoint(folder: Path) -> bool:
    return (folder / "checkpoints").is_dir() and any((folder / "checkpoints").glob("step_*.pt"))


def final_state(folder: Path, select: str) -> dict:
    """The stage's kept state: the best-validation one (``best_val``, when validated) or the last."""
    if select == "best_val" and has_checkpoint(folder / BEST_DIR):
        return load_latest(folder / BEST_DIR)[0]
    return load_latest(folder)[0]


def fit_lgdist(model, train: list[MaskedSection], val: list[MaskedSection], run_dir: str | Path,
               device: str = "cpu", resume: bool = False, progress: bool = True) -> dict:
    """Train stage 1, then stage 2 of each round; ``model`` ends with the kept states, on CPU."""
    s, run_dir, dev = model.settings, Path(run_dir), torch.device(resolve_device(device))
    select = s.select if val else "last"
    if select != s.select:
        log.warning("no validation sections: keeping the last checkpoint of each stage")
    tr = stack(train, model.gene_means).to(dev)
    va = stack(val, model.gene_means).to(dev) if val else None
    n, batch = len(tr.values), s.batch_size
    panel_cols = torch.zeros(model.cfg.num_genes, dtype=torch.bool, device=dev)
    panel_cols[: len(model.panel)] = True
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

    def fit_stage(net, loss, steps, lr, folder, state, validate):
        cfg = LoopConfig(steps=steps, lr=lr, seed=s.seed, checkpoint_every=s.checkpoint_every,
                         device=device, progress=progress)
        res = train_loop(net, loss, cfg, folder, state, resume=resume and has_checkpoint(folder),
                         global_batch=batch, validate=validate if select == "best_val" else None,
                         validate_every=s.val_every)
        return res, final_state(folder, select)

    state = {"lgdist": json.dumps({"cfg": model.cfg.to_dict(), "panel": model.panel, "context": model.context})}
    r1, ck = fit_stage(model.ae, ae_loss, s.ae_steps, s.ae_lr, run_dir / "ae", state,
                       lambda net, ema: model.masked_mse(va, model.decode_centres(net, va, None)))
    model.ae.load_state_dict(ck["model"])
    model.ae.to(dev).eval()
    report = {"ae_seconds": round(r1.seconds, 1), "ae_best": ck.get("best"), "dit_seconds": [], "dit_best": []}
    for r, dit in enumerate(model.dits):
        if r > 0:  # round r's inputs: the observed values, every zero filled by round r − 1
            tr, va = _refill(model, tr, r - 1, dev), (_refill(model, va, r - 1, dev) if va is not None else None)
        z = model.encode(tr)
        pres = tr.present.unsqueeze(-1)
        flat = z[pres.expand_as(z)].view(-1, z.shape[-1])
        model.latent_stats[r] = (flat.mean(0).cpu(), flat.std(0).clamp_min(1e-4).cpu())
        zn = model.normalise(z, r) * pres
        goal = zn if s.dit_target == "input" else model.normalise(model.encode(tr.with_values(tr.target)), r)
        stats = {"latent_mean": model.latent_stats[r][0], "latent_std": model.latent_stats[r][1]}
        res, ck = fit_stage(dit, _dit_loss(model, zn, goal[:, 0], batch, dev), s.dit_steps, s.lr,
                            run_dir / dit_folder(r), {**state, **stats},
                            lambda net, ema, r=r, va=va: model.masked_mse(va, model.predict_round(
                                va, r, 1, s.val_sampler, s.seed, dev, dit=ema)))
        dit.load_state_dict(ck["ema"]["model"])
        dit.to(dev).eval()
        report["dit_seconds"].append(round(res.seconds, 1))
        report["dit_best"].append(ck.get("best"))
    model.to("cpu")
    return report


def _dit_loss(model, zn: torch.Tensor, goal: torch.Tensor, batch: int, dev: torch.device):
    """Stage 2's loss: diffuse the centre token towards ``goal`` (normalised centre latents),
    the neighbour tokens clean at their input latents, conditioned as ``model.condition_of``."""
    centre = torch.zeros((1, TOKENS, 1), dtype=torch.bool, device=dev)
    centre[:, 0] = True
    diffusion, n = model.diffusion, len(zn)

    def loss(net, data_gen, noise_gen, share):
        rows = torch.randint(n, (batch,), generator=data_gen)[share].to(dev)
        known = zn[rows]
        x0 = torch.cat([goal[rows].unsqueeze(1), known[:, 1:]], dim=1)
        t = torch.randint(diffusion.num_steps, (batch,), generator=noise_gen, device=dev)[share]
        extra = model.condition_noise(batch, noise_gen, dev)
        cond = model.condition_of(known, None if extra is None else extra[share])
        noise = torch.randn((batch, *x0.shape[1:]), generator=noise_gen, device=dev)[share]
        terms = diffusion.training_loss(lambda xt, tt: net(xt, tt, cond), x0, t, noise,
                                        mask=centre.expand(len(x0), -1, -1))
        return {k: v.mean() for k, v in terms.items()}

    return loss


def _refill(model, data: Neighbourhoods, r: int, dev: torch.device) -> Neighbourhoods:
    """``data`` whose zeros are filled by round ``r``'s completion (cheap sampler, 1 sample)."""
    s = model.settings
    pred = model.predict_round(data, r, 1, s.val_sampler, s.seed, dev) - torch.as_tensor(model.gene_means,
                                                                                          device=dev)
    return data.with_values(torch.where(data.observed, data.values, pred))
