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

from .atomic import require_free_space, write_json
from .data.context import add_context, context_blocks
from .data.prepared import PreparedDataset
from .diffusion import GaussianDiffusion
from .diffusion.gaussian import DEFAULT_NUM_SAMPLES, DEFAULT_SAMPLER, parse_sampler
from .diffusion.guidance import drop_condition, guided, null_rows
from .diffusion.noise import BLOCK_ROWS, RowNoise
from .encoders.scaling import EmbeddingScaler
from .errors import StemError, require
from .models import PRESETS, StemDiT, StemDiTConfig
from .prediction.runtime import Runtime
from .prediction.summarise import summarise
from .recipe import RECIPES, Recipe
from .training.checkpoint import load_checkpoint, load_latest, save_checkpoint
from .training.data import TrainingData, build_training_data, pair_bytes
from .training.distributed import DistInfo
from .training.loop import KEEP_CHECKPOINTS, LoopConfig, LoopResult, checkpoint_bytes, train_loop
from .training.pairs import TrainingPairs, calibration_rows, fit_statistics
from .training.targets import TargetTransform, spread_factor

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
    compile: bool | None = None  # torch.compile for training (None: on CUDA; how it runs, not what it learns)
    recipe: Recipe = field(default_factory=lambda: RECIPES["default"])


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
    """A trained (or to-be-trained) Stem model: network, gene panel, input scaling, recipe and
    target transform."""

    def __init__(self, net_cfg: StemDiTConfig, genes: list[str], scaler: EmbeddingScaler,
                 encoders: list[dict], diffusion_steps: int = 1000, schedule: str = "linear",
                 meta: dict | None = None, recipe: Recipe | None = None,
                 target: TargetTransform | None = None):
        self.net_cfg = net_cfg
        self.genes = list(genes)
        self.scaler = scaler
        self.encoders = encoders
        self.recipe = recipe or Recipe()
        self.diffusion = GaussianDiffusion(diffusion_steps, schedule, self.recipe.objective,
                                           self.recipe.min_snr_gamma)
        self.net = StemDiT(net_cfg)
        self.meta = meta or {}
        self.target = target or TargetTransform.identity(len(self.genes), None)
        self.runtime = Runtime()  # how the network is run when predicting (not saved)

    # --- training -----------------------------------------------------------------------
    @classmethod
    def fit(cls, ds: PreparedDataset, run_dir: str | Path, settings: TrainSettings,
            net_overrides: dict | None = None, learn_sigma: bool = False, device: str = "cpu",
            resume: bool = False, dist_info: DistInfo | None = None, progress: bool = True,
            ) -> tuple[StemModel, LoopResult]:
        """Train on the non-held-out sections of ``ds``; checkpoints go to ``run_dir``."""
        recipe = settings.recipe
        info = dist_info or DistInfo()
        sections = [s for s in ds.sections if s not in settings.holdout]
        cfg = network_config(settings.preset, len(ds.genes), ds.embedding_dim * context_blocks(recipe.context),
                             learn_sigma=learn_sigma, **(net_overrides or {}))
        need = pair_bytes(ds, sections, settings.aug_ratio, recipe.context)
        if info.main and not resume:
            need += checkpoint_bytes(StemDiT(cfg)) * (KEEP_CHECKPOINTS + 1)
        require_free_space(run_dir, need, "the training pairs (removed after training) and checkpoints")
        data = build_training_data(ds, sections, settings.aug_ratio, settings.seed, settings.target_layer,
                                   recipe.context, Path(run_dir) / f".pairs-rank{info.rank}")
        try:
            return cls._fit(ds, data, cfg, run_dir, settings, device, resume, info, progress)
        finally:
            data.close(remove=True)

    @classmethod
    def _fit(cls, ds: PreparedDataset, data: TrainingData, cfg: StemDiTConfig, run_dir: str | Path,
             settings: TrainSettings, device: str, resume: bool, info: DistInfo, progress: bool,
             ) -> tuple[StemModel, LoopResult]:
        recipe, sections = settings.recipe, data.sections
        scaler, target, stats = fit_statistics(data, recipe, settings.seed)
        torch.manual_seed(settings.seed)
        model = cls(cfg, ds.genes, scaler, ds.manifest["encoders"], settings.diffusion_steps,
                    settings.schedule, recipe=recipe, target=target,
                    meta={"train": asdict(settings), "train_sections": sections,
                          "train_pairs": len(data), "train_spots": data.n_spots,
                          "statistics_pairs": int(len(stats)),
                          "constant_inputs": int((~scaler.informative).sum()),
                          "patch_mode": ds.manifest.get("patch_mode"),
                          "geometry": training_geometry(ds, sections)})
        cfg_file = Path(run_dir) / "config.json"
        if resume and cfg_file.is_file():
            saved = json.loads(cfg_file.read_text()).get("net")
            require(saved in (None, cfg.to_dict()),
                    f"--resume with a different architecture than {run_dir} was trained with")
        if info.main and not resume:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            write_json(Path(run_dir) / "config.json",
                       {"train": asdict(settings), "net": cfg.to_dict(), "genes": ds.genes,
                        "recipe": recipe.to_dict(), "encoders": ds.manifest["encoders"],
                        "train_sections": sections})
        log.info("training on %s: %d spots, %d pairs, %d genes, %d-d condition (%d constant); %s; %s",
                 ",".join(sections), data.n_spots, len(data), len(ds.genes), scaler.dim,
                 model.meta["constant_inputs"], recipe, cfg)
        dev = torch.device(device)
        pairs = TrainingPairs(data, scaler, target, dev)
        colour = target.noise_colour(dev)
        diffusion, n, g, batch = model.diffusion, len(data), len(ds.genes), settings.batch_size

        def loss_fn(net, data_gen, noise_gen, share):
            idx = torch.randint(n, (batch,), generator=data_gen)[share]
            t = torch.randint(diffusion.num_steps, (batch,), generator=noise_gen, device=dev)[share]
            noise = torch.randn((batch, g), generator=noise_gen, device=dev)[share]
            if colour is not None:
                noise = noise @ colour
            cond, z = pairs.batch(idx)
            null = null_rows(batch, recipe.cond_dropout, data_gen)  # full batch: ranks stay in step
            cond = drop_condition(cond, None if null is None else null[share])
            terms = diffusion.training_loss(lambda xt, tt: net(xt, tt, cond), z, t, noise)
            return {k: v.mean() for k, v in terms.items()}

        loop = LoopConfig(steps=settings.steps, lr=settings.lr, ema_decay=settings.ema_decay,
                          seed=settings.seed, checkpoint_every=settings.checkpoint_every,
                          device=device, progress=progress, lr_schedule=recipe.lr_schedule,
                          compile=dev.type == "cuda" if settings.compile is None else settings.compile)
        result = train_loop(model.net, loss_fn, loop, run_dir, model._extra_state(),
                            info, resume, global_batch=batch)
        # predict with the EMA weights
        ck, path = load_latest(run_dir)
        model.net.load_state_dict(ck["ema"]["model"])
        if recipe.calibrate_spread and info.main:  # on the training device: slow on a CPU for big presets
            rows = calibration_rows(data.group, data.original, settings.seed)
            model._calibrate(*pairs.numpy(rows), data.group[rows], settings.seed, device=device)
            # the factor travels with the final checkpoint
            save_checkpoint({**ck, **model._extra_state()}, run_dir, int(ck["step"]))
            log.info("sample spread calibrated: × %.3f (median over genes; %s)",
                     float(np.median(model.target.spread)), path.name)
        model.net.to("cpu")
        return model, result

    def _calibrate(self, cond: np.ndarray, z: np.ndarray, groups: np.ndarray, seed: int,
                   num_samples: int = DEFAULT_NUM_SAMPLES, sampler: str = DEFAULT_SAMPLER,
                   device: str = "cpu") -> float:
        """Set the samples' spread factor from training spots (their cross-fitted z): the median
        over training sections (``groups``) of each section's factor, so one atypical section
        (another patient, another depth) does not set everyone's width. Drawn with the sampler
        and sample count that prediction uses by default (recorded in ``meta``)."""
        factors = []
        for g in np.unique(groups):
            rows = groups == g
            draws = self._run(cond[rows], num_samples, sampler, seed, device)
            factors.append(spread_factor(z[rows], draws, self._centre(cond[rows], seed, device),
                                         per_gene=self.recipe.spread_per_gene,
                                         criterion=self.recipe.spread_criterion))
        self.target.spread = np.asarray(np.median(np.asarray(factors), axis=0), dtype=np.float32)
        self.meta["spread_calibrated_with"] = {"sampler": sampler, "num_samples": num_samples}
        return float(np.median(self.target.spread))

    def _extra_state(self) -> dict:
        return {"net_config": self.net_cfg.to_dict(), "genes": self.genes, **self.scaler.state(),
                "encoders_json": json.dumps(self.encoders),
                "diffusion": {"steps": self.diffusion.num_steps,
                              "schedule": self.diffusion.schedule_kind},
                "recipe": self.recipe.to_dict(), "target": self.target.state(),
                "meta_json": json.dumps(self.meta, default=str)}

    # --- persistence --------------------------------------------------------------------
    @classmethod
    def _from_state(cls, state: dict, weights: dict) -> StemModel:
        genes = state["genes"]
        target = (TargetTransform.from_state(state["target"]) if state.get("target")
                  else TargetTransform.identity(len(genes), state.get("x_max")))  # before recipes
        m = cls(StemDiTConfig(**state["net_config"]), genes, EmbeddingScaler.from_state(state),
                json.loads(state["encoders_json"]), state["diffusion"]["steps"],
                state["diffusion"]["schedule"], json.loads(state["meta_json"]),
                Recipe.from_dict(state.get("recipe")), target)
        m.net.load_state_dict(weights)
        m.net.eval()
        return m

    @classmethod
    def from_run(cls, run_dir: str | Path, checkpoint: str | Path | None = None,
                 use_ema: bool = True, allow_pickle: bool = False) -> StemModel:
        """Load a training run's latest (or given) checkpoint, with EMA weights by default."""
        if checkpoint:
            path = Path(checkpoint)
            ck = load_checkpoint(path, allow_pickle)
        else:
            ck, path = load_latest(run_dir)
        require(isinstance(ck, dict) and {"net_config", "ema", "step"} <= set(ck),
                f"{path} is not a Stem checkpoint (a checkpoint of another model?)")
        m = cls._from_state(ck, ck["ema"]["model"] if use_ema else ck["model"])
        m.meta.update(checkpoint=str(path), step=int(ck["step"]), weights="ema" if use_ema else "raw")
        return m

    def save(self, path: str | Path) -> None:
        """Write ``model.pt`` (state dicts and tensors only) and ``config.json`` into ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        torch.save({**self._extra_state(), "weights": self.net.state_dict()}, path / "model.pt")
        write_json(path / "config.json", {"net": self.net_cfg.to_dict(), "genes": self.genes,
                                          "recipe": self.recipe.to_dict(),
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
    def condition(self, embeddings: np.ndarray, xy: np.ndarray | None = None) -> np.ndarray:
        """Standardised condition ``(N, C')`` from raw spot embeddings ``(N, C)`` (plus the
        neighbourhood context from spot centres ``xy`` when the recipe uses it)."""
        emb = np.asarray(embeddings, dtype=np.float32)
        width = self.net_cfg.cond_dim // context_blocks(self.recipe.context)
        require(emb.ndim == 2 and emb.shape[1] == width,
                f"embeddings of width {emb.shape[-1]} do not match the model's {width} "
                "(same encoder(s) as in training?)")
        require(self.recipe.context == "none" or xy is not None,
                "this model uses spatial context: pass the spot centres (xy)")
        return self.scaler.transform(add_context(emb, xy, self.recipe.context))

    @torch.no_grad()
    def _run(self, cond: np.ndarray, num_samples: int, sampler: str | None, seed: int, device: str,
             batch_rows: int | None = None, progress=None) -> np.ndarray:
        """z for each condition row repeated ``num_samples`` times: ``(N, samples, G)``;
        ``sampler=None`` gives the posterior-mean estimate instead of samples. Row r's noise
        depends only on (seed, r), not on the batch size."""
        dev = torch.device(device)
        self.net.to(dev).eval()
        net = self.runtime.network(self.net, dev)
        spots = torch.from_numpy(np.ascontiguousarray(cond, dtype=np.float32))
        total = len(cond) * num_samples
        lo, hi = (v.to(dev) for v in self.target.clip_range())
        calls = self.recipe.posterior_draws if sampler is None else \
            parse_sampler(sampler, self.diffusion.num_steps)[1]
        shape = (total, self.net_cfg.num_genes)
        colour = self.target.noise_colour(dev)
        stream = 1 if sampler is None else 0  # the point estimate's noise differs from the samples'

        def batch(start: int, n: int, full: int) -> torch.Tensor:
            c = spots[torch.arange(start, start + full) % total // num_samples].to(dev)
            noise = RowNoise(seed, stream, start, n, dev, colour)
            def call(xt, tt, cc):  # a short last batch is padded: a compiled network keeps one shape
                pad = full - n
                out, v = net(torch.cat([xt, xt[:1].expand(pad, -1)]), torch.cat([tt, tt[:1].expand(pad)]), cc) \
                    if pad else net(xt, tt, cc)
                return out[:n], None if v is None else v[:n]

            fn = guided(call, c, self.recipe.guidance)

            if sampler is None:
                return self.diffusion.posterior_mean(fn, (n, shape[1]), self.recipe.posterior_draws, noise,
                                                     dev, clip_x0=(lo, hi))
            return self.diffusion.sample(fn, (n, shape[1]), sampler, noise, dev, clip_x0=(lo, hi))

        def timing_call(n: int) -> None:
            gen = torch.Generator(device=dev).manual_seed(0)  # random inputs: zeros can time faster
            c = spots[torch.arange(n) % len(spots)].to(dev)
            net(torch.randn(n, shape[1], generator=gen, device=dev), torch.full((n,), 500, device=dev), c)

        out = []
        with self.runtime.autocast(dev):
            rows = batch_rows or self.runtime.rows(self.net, timing_call, dev, total, calls)
            rows = max(BLOCK_ROWS, rows // BLOCK_ROWS * BLOCK_ROWS)
            for start in range(0, total, rows):
                n = min(rows, total - start)
                x = batch(start, n, rows if self.runtime.compile else n)
                out.append(x.float().cpu())
                if progress is not None:
                    progress(len(x))
        return torch.cat(out).view(len(cond), num_samples, -1).numpy()

    def sample(self, embeddings: np.ndarray, num_samples: int = 20, sampler: str = DEFAULT_SAMPLER,
               seed: int = 0, device: str = "cpu", batch_rows: int | None = None, progress=None,
               xy: np.ndarray | None = None) -> np.ndarray:
        """Draw ``num_samples`` expression profiles per spot: ``(spots, samples, genes)`` in
        log2(1 + count), clipped at 0."""
        cond = self.condition(embeddings, xy)
        return self._samples(cond, num_samples, sampler, seed, device, self._centre(cond, seed, device),
                             batch_rows, progress)

    def _samples(self, cond: np.ndarray, num_samples: int, sampler: str, seed: int, device: str,
                 centre: np.ndarray | None, batch_rows: int | None = None, progress=None) -> np.ndarray:
        """Samples in log2(1 + count) for standardised conditions, widened by the calibrated
        spread and placed at ``centre`` (z units; None: their own mean)."""
        require(num_samples >= 1, "--num-samples must be at least 1")
        z = self.target.widen(self._run(cond, num_samples, sampler, seed, device, batch_rows, progress),
                              centre)
        return np.maximum(self.target.decode(z, self.target.prior(cond)[:, None]), 0)

    def _point_z(self, cond: np.ndarray, seed: int, device: str) -> np.ndarray:
        """The posterior-mean estimate in z units, its residual scaled by ``residual_weight``."""
        return self._run(cond, 1, None, seed, device)[:, 0] * self.recipe.residual_weight

    def _centre(self, cond: np.ndarray, seed: int, device: str) -> np.ndarray | None:
        """Where samples are centred, in z units: the point estimate (``centre_samples``) or
        None (their own mean)."""
        return self._point_z(cond, seed, device) if self.recipe.centre_samples else None

    def posterior_mean(self, embeddings: np.ndarray, xy: np.ndarray | None = None, seed: int = 0,
                       device: str = "cpu") -> np.ndarray:
        """The network's estimate of E[expression | image] ``(spots, genes)`` (x0/v recipes)."""
        cond = self.condition(embeddings, xy)
        return np.maximum(self.target.decode(self._point_z(cond, seed, device), self.target.prior(cond)), 0)

    def predict(self, embeddings: np.ndarray, num_samples: int = 20, sampler: str = DEFAULT_SAMPLER,
                summary: str | None = None, seed: int = 0, device: str = "cpu", progress=None,
                xy: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (point estimate, per-gene std across samples, samples) for ``(N, C)``
        embeddings. The point estimate is the recipe's (``summary=None``) or the named summary
        of the samples (mean, median, mode)."""
        cond = self.condition(embeddings, xy)
        point_z = self._point_z(cond, seed, device) if self.recipe.point == "posterior_mean" else None
        samples = self._samples(cond, num_samples, sampler, seed, device,
                                point_z if self.recipe.centre_samples else None, progress=progress)
        if summary is None and point_z is not None:
            point = np.maximum(self.target.decode(point_z, self.target.prior(cond)), 0)
        else:
            point = summarise(samples, summary or "mean")
        return point, samples.std(axis=1), samples


    def predict_adata(self, adata, num_samples: int = 20, sampler: str = DEFAULT_SAMPLER, seed: int = 0,
                      device: str = "cpu", inplace: bool = False):
        """AnnData in, AnnData out: see :func:`stem_st.prediction.output.predict_anndata`."""
        from .prediction.output import predict_anndata

        return predict_anndata(self, adata, num_samples, sampler, seed, device, inplace)


RESUME_FIXED = ("prep", "holdout", "preset", "batch_size", "aug_ratio", "lr", "seed", "target_layer",
                "recipe")


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
        saved.setdefault("recipe", Recipe().to_dict())  # runs from before recipes: the paper's
        now = json.loads(json.dumps(asdict(settings)))
        changed = {k for k in RESUME_FIXED if saved.get(k) != now.get(k)}
        require(not changed, f"--resume with different settings: {', '.join(sorted(changed))}")
    elif info.main:
        require(not out.exists(), f"{out} already exists; pass --resume to continue it or choose another --out")
    return StemModel.fit(ds, out, settings, net_overrides, learn_sigma, device, resume, info, progress)
