"""The user-facing Stem model: ``fit`` on a prepared dataset, ``predict`` expression with
uncertainty, ``save``/``load``. The network is :class:`~stem_st.models.StemDiT`; the maths is
:class:`~stem_st.diffusion.GaussianDiffusion`; the loop is :func:`~stem_st.training.loop.train_loop`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .atomic import write_json
from .data.prepared import PreparedDataset
from .diffusion import GaussianDiffusion
from .errors import StemError, require
from .models import PRESETS, StemDiT, StemDiTConfig
from .prediction.summarise import summarise
from .training.checkpoint import latest_checkpoint, load_checkpoint
from .training.data import build_training_data
from .training.distributed import DistInfo
from .training.loop import LoopConfig, LoopResult, train_loop

log = logging.getLogger(__name__)
UNITS = "log2(1 + count)"


@dataclass
class TrainSettings:
    """What ``stem train`` was asked to do (stored with the run)."""

    prep: str
    holdout: list[str] = field(default_factory=list)
    preset: str = "small"
    steps: int = 2000
    batch_size: int = 256
    aug_ratio: int = 4
    lr: float = 1e-4
    ema_decay: float = 0.9999
    seed: int = 0
    checkpoint_every: int = 500
    diffusion_steps: int = 1000
    schedule: str = "linear"
    target_layer: str | None = None


def training_geometry(ds: PreparedDataset, sections: list[str]) -> dict:
    """Platform, spot diameter and centre distance (µm) of the training sections, for
    whole-slide prediction on a matching virtual grid."""
    first = next((s for s in ds.manifest["sections"] if s["section"] in sections), {})
    return {k: first.get(k) for k in ("platform", "spot_diameter_um", "center_distance_um")}


def network_config(preset: str, num_genes: int, cond_dim: int, **overrides) -> StemDiTConfig:
    """A StemDiT config from a preset name plus explicit size overrides."""
    require(preset in PRESETS, f"unknown preset '{preset}'; choose {', '.join(PRESETS)}")
    sizes = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    require(sizes["hidden"] % sizes["heads"] == 0, "--hidden must be divisible by --heads")
    return StemDiTConfig(num_genes=num_genes, cond_dim=cond_dim, **sizes)


class StemModel:
    """A trained (or to-be-trained) Stem model with its gene panel and input normalisation."""

    def __init__(self, net_cfg: StemDiTConfig, genes: list[str], cond_mean: torch.Tensor,
                 cond_std: torch.Tensor, encoders: list[dict], diffusion_steps: int = 1000,
                 schedule: str = "linear", meta: dict | None = None, x_max: float | None = None):
        self.net_cfg = net_cfg
        self.genes = list(genes)
        self.cond_mean = cond_mean.float()
        self.cond_std = cond_std.float()
        self.encoders = encoders
        self.diffusion = GaussianDiffusion(diffusion_steps, schedule)
        self.net = StemDiT(net_cfg)
        self.meta = meta or {}
        self.x_max = x_max  # largest training value: samples' x_0 predictions are kept in [0, x_max]

    # --- training -----------------------------------------------------------------------
    @classmethod
    def fit(cls, ds: PreparedDataset, run_dir: str | Path, settings: TrainSettings,
            net_overrides: dict | None = None, learn_sigma: bool = False, device: str = "cpu",
            resume: bool = False, dist_info: DistInfo | None = None, progress: bool = True,
            ) -> tuple[StemModel, LoopResult]:
        """Train on the non-held-out sections of ``ds``; checkpoints go to ``run_dir``."""
        sections = [s for s in ds.sections if s not in settings.holdout]
        data = build_training_data(ds, sections, settings.aug_ratio, settings.seed,
                                   settings.target_layer)
        cfg = network_config(settings.preset, len(ds.genes), data.cond.shape[1],
                             learn_sigma=learn_sigma, **(net_overrides or {}))
        torch.manual_seed(settings.seed)
        model = cls(cfg, ds.genes, data.cond_mean, data.cond_std, ds.manifest["encoders"],
                    settings.diffusion_steps, settings.schedule, x_max=float(data.x.max()),
                    meta={"train": asdict(settings), "train_sections": sections,
                          "train_pairs": len(data.x), "train_spots": data.n_spots,
                          "patch_mode": ds.manifest.get("patch_mode"),
                          "geometry": training_geometry(ds, sections)})
        info = dist_info or DistInfo()
        cfg_file = Path(run_dir) / "config.json"
        if resume and cfg_file.is_file():
            saved = json.loads(cfg_file.read_text()).get("net")
            require(saved in (None, cfg.to_dict()),
                    f"--resume with a different architecture than {run_dir} was trained with")
        if info.main and not resume:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            write_json(Path(run_dir) / "config.json",
                       {"train": asdict(settings), "net": cfg.to_dict(), "genes": ds.genes,
                        "encoders": ds.manifest["encoders"], "train_sections": sections})
        log.info("training on %s: %d spots, %d pairs, %d genes, %d-d condition; %s",
                 ",".join(sections), data.n_spots, len(data.x), len(ds.genes), data.cond.shape[1],
                 cfg)
        dev = torch.device(device)
        x_all, c_all = data.x.to(dev), data.cond.to(dev)
        diffusion, n, g, batch = model.diffusion, len(data.x), len(ds.genes), settings.batch_size

        def loss_fn(net, data_gen, noise_gen, share):
            idx = torch.randint(n, (batch,), generator=data_gen)[share].to(dev)
            t = torch.randint(diffusion.num_steps, (batch,), generator=noise_gen, device=dev)[share]
            noise = torch.randn((batch, g), generator=noise_gen, device=dev)[share]
            cond = c_all[idx]
            terms = diffusion.training_loss(lambda xt, tt: net(xt, tt, cond), x_all[idx], t, noise)
            return {k: v.mean() for k, v in terms.items()}

        loop = LoopConfig(steps=settings.steps, lr=settings.lr, ema_decay=settings.ema_decay,
                          seed=settings.seed, checkpoint_every=settings.checkpoint_every,
                          device=device, progress=progress)
        result = train_loop(model.net, loss_fn, loop, run_dir, model._extra_state(),
                            dist_info, resume, global_batch=batch)
        # predict with the EMA weights
        ck = load_checkpoint(latest_checkpoint(run_dir))
        model.net.load_state_dict(ck["ema"]["model"])
        model.net.to("cpu")
        return model, result

    def _extra_state(self) -> dict:
        return {"net_config": self.net_cfg.to_dict(), "genes": self.genes,
                "cond_mean": self.cond_mean, "cond_std": self.cond_std,
                "encoders_json": json.dumps(self.encoders),
                "diffusion": {"steps": self.diffusion.num_steps,
                              "schedule": self.diffusion.schedule_kind},
                "meta_json": json.dumps(self.meta, default=str), "x_max": self.x_max}

    # --- persistence --------------------------------------------------------------------
    @classmethod
    def _from_state(cls, state: dict, weights: dict) -> StemModel:
        m = cls(StemDiTConfig(**state["net_config"]), state["genes"], state["cond_mean"],
                state["cond_std"], json.loads(state["encoders_json"]),
                state["diffusion"]["steps"], state["diffusion"]["schedule"],
                json.loads(state["meta_json"]), state.get("x_max"))
        m.net.load_state_dict(weights)
        m.net.eval()
        return m

    @classmethod
    def from_run(cls, run_dir: str | Path, checkpoint: str | Path | None = None,
                 use_ema: bool = True, allow_pickle: bool = False) -> StemModel:
        """Load a training run's latest (or given) checkpoint, with EMA weights by default."""
        path = Path(checkpoint) if checkpoint else latest_checkpoint(run_dir)
        ck = load_checkpoint(path, allow_pickle)
        require("net_config" in ck, f"{path} is not a Stem checkpoint")
        m = cls._from_state(ck, ck["ema"]["model"] if use_ema else ck["model"])
        m.meta.update(checkpoint=str(path), step=int(ck["step"]), weights="ema" if use_ema else "raw")
        return m

    def save(self, path: str | Path) -> None:
        """Write ``model.pt`` (state dicts and tensors only) and ``config.json`` into ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        torch.save({**self._extra_state(), "weights": self.net.state_dict()}, path / "model.pt")
        write_json(path / "config.json", {"net": self.net_cfg.to_dict(), "genes": self.genes,
                                          "encoders": self.encoders, "meta": self.meta})

    @classmethod
    def load(cls, path: str | Path, allow_pickle: bool = False) -> StemModel:
        """Load a model written by :meth:`save` (pickled modules only with ``allow_pickle``)."""
        file = Path(path) / "model.pt"
        require(file.is_file(), f"no saved Stem model at {path}")
        state = load_checkpoint(file, allow_pickle)
        if isinstance(state, StemModel):  # a pickled model object, explicitly allowed
            return state
        if not isinstance(state, dict) or "weights" not in state:
            raise StemError(f"{file} is not a saved Stem model (no state dict with weights)")
        return cls._from_state(state, state["weights"])

    # --- prediction ---------------------------------------------------------------------
    def condition(self, embeddings: np.ndarray) -> torch.Tensor:
        """Standardise raw spot embeddings ``(N, C)`` with the training statistics."""
        emb = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
        require(emb.ndim == 2 and emb.shape[1] == self.net_cfg.cond_dim,
                f"embeddings of width {emb.shape[-1]} do not match the model's "
                f"{self.net_cfg.cond_dim} (same encoder(s) as in training?)")
        return (emb - self.cond_mean) / self.cond_std

    @torch.no_grad()
    def sample(self, embeddings: np.ndarray, num_samples: int = 20, sampler: str = "ddim:50",
               seed: int = 0, device: str = "cpu", batch_rows: int | None = None, progress=None,
               ) -> np.ndarray:
        """Draw ``num_samples`` expression profiles per spot: ``(spots, samples, genes)`` in
        log2(1 + count), clipped at 0."""
        require(num_samples >= 1, "--num-samples must be at least 1")
        cond = self.condition(embeddings)
        net = self.net.to(device).eval()
        gen = torch.Generator(device=device).manual_seed(seed)
        rows = cond.repeat_interleave(num_samples, dim=0)
        # CPU: small batches stay in cache (5.3 ms/row at 64-256 rows vs 7.6 at 1024, small preset)
        batch_rows = batch_rows or (2048 if str(device).startswith("cuda") else 256)
        out = []
        for start in range(0, len(rows), batch_rows):
            c = rows[start:start + batch_rows].to(device)
            x = self.diffusion.sample(lambda xt, tt, c=c: net(xt, tt, c),
                                      (len(c), self.net_cfg.num_genes), sampler, gen, device,
                                      clip_x0=None if self.x_max is None else (0.0, self.x_max))
            out.append(x.clamp_min(0).float().cpu())
            if progress is not None:
                progress(len(c))
        samples = torch.cat(out).view(len(cond), num_samples, -1)
        return samples.numpy()

    def predict(self, embeddings: np.ndarray, num_samples: int = 20, sampler: str = "ddim:50",
                summary: str = "mean", seed: int = 0, device: str = "cpu", progress=None,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (summary, per-gene std across samples, samples) for ``(N, C)`` embeddings."""
        samples = self.sample(embeddings, num_samples, sampler, seed, device, progress=progress)
        return summarise(samples, summary), samples.std(axis=1), samples


RESUME_FIXED = ("prep", "holdout", "preset", "batch_size", "aug_ratio", "lr", "seed", "target_layer")


def train_run(ds: PreparedDataset, out: str | Path, settings: TrainSettings, net_overrides: dict | None = None,
              learn_sigma: bool = False, device: str = "cpu", resume: bool = False,
              dist_info: DistInfo | None = None, progress: bool = True) -> tuple[StemModel, LoopResult]:
    """``stem train``: refuse to overwrite a run, check a resumed run's settings, then fit."""
    out = Path(out)
    info = dist_info or DistInfo()
    unknown = set(settings.holdout) - set(ds.sections)
    require(not unknown, f"holdout sections {sorted(unknown)} are not in {ds.root}")
    require(settings.steps > 0 and settings.batch_size > 0 and settings.aug_ratio >= 0
            and settings.checkpoint_every > 0, "--steps, --batch-size and --checkpoint-every must be "
            "positive, --aug-ratio >= 0")
    cfg_path = out / "config.json"
    if resume:
        require(cfg_path.is_file(), f"{out} is not a training run; nothing to resume")
        saved = json.loads(cfg_path.read_text())["train"]
        changed = {k for k in RESUME_FIXED if saved.get(k) != getattr(settings, k)}
        require(not changed, f"--resume with different settings: {', '.join(sorted(changed))}")
    elif info.main:
        require(not out.exists(), f"{out} already exists; pass --resume to continue it or choose another --out")
    return StemModel.fit(ds, out, settings, net_overrides, learn_sigma, device, resume, info, progress)
