"""The user-facing Stem model: ``fit`` on a prepared dataset (:mod:`stem_st.stem.fit`),
``predict`` expression with uncertainty, ``save``/``load``. The sampling engine runs the
network in batches of rows with per-row noise (:mod:`stem_st.diffusion.noise`), sized by
:mod:`stem_st.stem.runtime`; how it runs is a :class:`~stem_st.stem.PredictSettings`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..atomic import write_json
from ..data.context import add_context, context_blocks
from ..data.units import to_count_lattice
from ..devices import resolve_device
from ..diffusion import GaussianDiffusion
from ..diffusion.gaussian import parse_sampler
from ..diffusion.guidance import guided
from ..diffusion.noise import BLOCK_ROWS, RowNoise
from ..encoders.scaling import EmbeddingScaler
from ..errors import StemError, require
from ..models import StemDiT, StemDiTConfig
from ..recipe import Recipe
from ..training.checkpoint import list_checkpoints, load_checkpoint, load_latest
from ..training.loop import BEST_DIR
from ..training.targets import TargetTransform
from .adata import predict_anndata
from .fit import fit_model
from .settings import DEFAULT_PREDICT, PredictSettings
from .shift import ShiftReference
from .spatial import section_field
from .summarise import at_depth, summarise

if TYPE_CHECKING:
    from ..data.dataset import PreparedDataset
    from ..training.loop import LoopResult
    from .settings import TrainSettings



def _selected_or_latest(run_dir: Path) -> tuple[dict, Path]:
    """The run's selected state (``best/``, marked ``selected`` when training finished), else its
    newest checkpoint."""
    if list_checkpoints(run_dir / BEST_DIR):
        ck, path = load_latest(run_dir / BEST_DIR)
        if ck.get("selected"):
            return ck, path
    return load_latest(run_dir)


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
        self._compiled: dict = {}  # torch.compile'd networks per device (PredictSettings.compile)
        self.shift_ref: ShiftReference | None = None  # the training spots, for the shift score
        self.spatial: dict | None = None  # the fitted noise field of whole-section draws (stem.spatial)

    @classmethod
    def fit(cls, ds: PreparedDataset, run_dir: str | Path, settings: TrainSettings,
            net_overrides: dict | None = None, learn_sigma: bool = False, device: str = "auto",
            resume: bool = False, dist_info=None, progress: bool = True) -> tuple[StemModel, LoopResult]:
        """Train on the non-held-out sections of ``ds``; checkpoints go to ``run_dir``
        (:func:`stem_st.stem.fit.fit_model`)."""
        return fit_model(cls, ds, run_dir, settings, net_overrides=net_overrides, learn_sigma=learn_sigma,
                         device=device, resume=resume, dist_info=dist_info, progress=progress)

    def extra_state(self) -> dict:
        """Everything but the weights that a checkpoint or a saved model stores."""
        return {"net_config": self.net_cfg.to_dict(), "genes": self.genes, **self.scaler.state(),
                "encoders_json": json.dumps(self.encoders),
                "diffusion": {"steps": self.diffusion.num_steps,
                              "schedule": self.diffusion.schedule_kind},
                "recipe": self.recipe.to_dict(), "target": self.target.state(),
                "meta_json": json.dumps(self.meta, default=str),
                "shift": None if self.shift_ref is None else self.shift_ref.state(),
                "spatial_json": json.dumps(self.spatial)}

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
        m.shift_ref = ShiftReference.from_state(state.get("shift"))  # None for runs from before it
        m.spatial = json.loads(state.get("spatial_json") or "null")
        return m

    @classmethod
    def from_run(cls, run_dir: str | Path, checkpoint: str | Path | None = None,
                 use_ema: bool = True, allow_pickle: bool = False) -> StemModel:
        """Load a training run's selected state (the best validation score's, in ``best/``, once
        training has finished), else its latest checkpoint, or the given one; EMA weights by default."""
        if checkpoint:
            path = Path(checkpoint)
            ck = load_checkpoint(path, allow_pickle)
        else:
            ck, path = _selected_or_latest(Path(run_dir))
        require(isinstance(ck, dict) and {"net_config", "ema", "step"} <= set(ck),
                f"{path} is not a Stem checkpoint (a checkpoint of another model?)")
        m = cls._from_state(ck, ck["ema"]["model"] if use_ema else ck["model"])
        m.meta.update(checkpoint=str(path), step=int(ck["step"]), weights="ema" if use_ema else "raw")
        return m

    def save(self, path: str | Path) -> None:
        """Write ``model.pt`` (state dicts and tensors only) and ``config.json`` into ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        torch.save({**self.extra_state(), "weights": self.net.state_dict()}, path / "model.pt")
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

    def require_compatible(self, ds: PreparedDataset) -> None:
        """Refuse a prepared dataset with another gene panel or other image encoder(s) than
        the model was trained with (its embeddings would mean something else)."""
        require(ds.genes == self.genes, f"{ds.root} has a different gene panel than the run")
        used = [p["encoder"] + ":" + str(p["weights"]) for p in ds.manifest["encoders"]]
        trained = [p["encoder"] + ":" + str(p["weights"]) for p in self.encoders]
        require(used == trained, "the prepared dataset's image encoder(s) differ from the run's")

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

    def shift(self, embeddings: np.ndarray, xy: np.ndarray | None = None) -> np.ndarray | None:
        """Each spot's shift score in [0, 1] (:mod:`stem_st.stem.shift`): how unlike the training
        spots its condition is; None for a model trained before the score existed."""
        return None if self.shift_ref is None else self.shift_ref.score(self.condition(embeddings, xy))

    def widening(self, cond: np.ndarray, settings: PredictSettings = DEFAULT_PREDICT,
                 exclude: int | None = None) -> np.ndarray | None:
        """Each spot's multiplier of its sample deviations from its shift (None: off, or a run
        from before it; :mod:`stem_st.stem.shift`)."""
        if not settings.shift_widening or self.shift_ref is None:
            return None
        return self.shift_ref.widening(cond, exclude)

    @torch.no_grad()
    def draw_z(self, cond: np.ndarray, settings: PredictSettings = DEFAULT_PREDICT, point: bool = False,
               progress=None, xy: np.ndarray | None = None, pitch: float | None = None) -> np.ndarray:
        """z for each condition row: ``settings.num_samples`` draws with ``settings.sampler``
        ``(N, samples, G)``, or with ``point`` the posterior-mean estimate ``(N, 1, G)``. Row r's
        noise depends only on (seed, r), not on the rows per forward pass; with the spots' ``xy``
        (and ``pitch``), x_T of neighbouring spots co-varies (:mod:`stem_st.stem.spatial`)."""
        num_samples = 1 if point else settings.num_samples
        runtime = settings.runtime()
        dev = torch.device(resolve_device(settings.device))
        self.net.to(dev).eval()
        net = runtime.network(self.net, dev, self._compiled)
        spots = torch.from_numpy(np.ascontiguousarray(cond, dtype=np.float32))
        total = len(cond) * num_samples
        lo, hi = (v.to(dev) for v in self.target.clip_range())
        calls = self.recipe.posterior_draws if point else \
            parse_sampler(settings.sampler, self.diffusion.num_steps)[1]
        genes = self.net_cfg.num_genes
        colour = self.target.noise_colour(dev)
        stream = 1 if point else 0  # the point estimate's noise differs from the samples'
        field = None if point else section_field(self, xy, settings, num_samples, dev, pitch)

        def batch(start: int, n: int, full: int) -> torch.Tensor:
            c = spots[torch.arange(start, start + full) % total // num_samples].to(dev)
            noise = RowNoise(settings.seed, stream, start, n, dev, colour, field)

            def call(xt, tt, cc):  # a short last batch is padded: a compiled network keeps one shape
                pad = full - n
                out, v = net(torch.cat([xt, xt[:1].expand(pad, -1)]), torch.cat([tt, tt[:1].expand(pad)]), cc) \
                    if pad else net(xt, tt, cc)
                return out[:n], None if v is None else v[:n]

            fn = guided(call, c, self.recipe.guidance)
            if point:
                return self.diffusion.posterior_mean(fn, (n, genes), self.recipe.posterior_draws, noise,
                                                     dev, clip_x0=(lo, hi))
            return self.diffusion.sample(fn, (n, genes), settings.sampler, noise, dev, clip_x0=(lo, hi))

        def timing_call(n: int) -> None:
            gen = torch.Generator(device=dev).manual_seed(0)  # random inputs: zeros can time faster
            c = spots[torch.arange(n) % len(spots)].to(dev)
            net(torch.randn(n, genes, generator=gen, device=dev), torch.full((n,), 500, device=dev), c)

        out = []
        with runtime.autocast(dev):
            rows = runtime.rows(self.net, timing_call, dev, total, calls)
            rows = max(BLOCK_ROWS, rows // BLOCK_ROWS * BLOCK_ROWS)
            for start in range(0, total, rows):
                n = min(rows, total - start)
                x = batch(start, n, rows if runtime.compile else n)
                out.append(x.float().cpu())
                if progress is not None:
                    progress(len(x))
        return torch.cat(out).view(len(cond), num_samples, -1).numpy()

    def point_z(self, cond: np.ndarray, settings: PredictSettings = DEFAULT_PREDICT, progress=None) -> np.ndarray:
        """The posterior-mean estimate in z units, its residual scaled by ``residual_weight``."""
        return self.draw_z(cond, settings, point=True, progress=progress)[:, 0] * self.recipe.residual_weight

    def centre_z(self, cond: np.ndarray, settings: PredictSettings = DEFAULT_PREDICT,
                 progress=None) -> np.ndarray | None:
        """Where samples are centred, in z units: the point estimate (``centre_samples``) or
        None (their own mean)."""
        return self.point_z(cond, settings, progress) if self.recipe.centre_samples else None

    def work(self, spots: int, settings: PredictSettings = DEFAULT_PREDICT) -> int:
        """What ``predict``'s ``progress(n)`` counts to for ``spots`` spots: a row per sample
        and, with a posterior-mean point, one per spot for it."""
        return spots * (settings.num_samples + (self.recipe.point == "posterior_mean"))

    def _expression_samples(self, cond: np.ndarray, settings: PredictSettings, centre: np.ndarray | None,
                            progress=None, xy: np.ndarray | None = None) -> np.ndarray:
        """Samples in log2(1 + count) for standardised conditions (spots at ``xy``), widened by
        the calibrated spread and placed at ``centre`` (z units; None: their own mean)."""
        draws = self.draw_z(cond, settings, progress=progress, xy=xy)
        z = self.target.widen(draws, centre, self.widening(cond, settings))
        x = np.maximum(self.target.decode(z, self.target.prior(cond)[:, None]), 0)
        return to_count_lattice(x, seed=settings.seed) if self.recipe.count_lattice else x

    def sample(self, embeddings: np.ndarray, xy: np.ndarray | None = None,
               settings: PredictSettings = DEFAULT_PREDICT, progress=None) -> np.ndarray:
        """Draw ``settings.num_samples`` expression profiles per spot: ``(spots, samples, genes)``
        in log2(1 + count), clipped at 0."""
        cond = self.condition(embeddings, xy)
        return self._expression_samples(cond, settings, self.centre_z(cond, settings), progress, xy)

    def posterior_mean(self, embeddings: np.ndarray, xy: np.ndarray | None = None,
                       settings: PredictSettings = DEFAULT_PREDICT) -> np.ndarray:
        """The network's estimate of E[expression | image] ``(spots, genes)`` (x0/v recipes)."""
        cond = self.condition(embeddings, xy)
        return np.maximum(self.target.decode(self.point_z(cond, settings), self.target.prior(cond)), 0)

    def predict(self, embeddings: np.ndarray, xy: np.ndarray | None = None,
                settings: PredictSettings = DEFAULT_PREDICT, progress=None, observed_depth: float | None = None,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (point estimate, per-gene std across samples, samples) for ``(N, C)``
        embeddings. The point estimate is the recipe's (``settings.summary=None``) or the named
        summary of the samples (mean, median, mode); ``progress(n)`` is called as rows are done
        (:meth:`work` in all). ``observed_depth``: the section's median panel count per spot,
        for ``settings.depth = 'auto'`` (:meth:`at_depth`)."""
        cond = self.condition(embeddings, xy)
        pz = self.point_z(cond, settings, progress) if self.recipe.point == "posterior_mean" else None
        centre = pz if self.recipe.centre_samples else None
        samples = self._expression_samples(cond, settings, centre, progress, xy)
        if settings.summary is None and pz is not None:
            point = np.maximum(self.target.decode(pz, self.target.prior(cond)), 0)
        else:
            point = summarise(samples, settings.summary or "mean")
        point, samples, _ = self.at_depth(point, samples, settings, observed_depth)
        return point, samples.std(axis=1), samples

    at_depth = staticmethod(at_depth)

    def predict_adata(self, adata, settings: PredictSettings = DEFAULT_PREDICT, inplace: bool = False):
        """AnnData in, AnnData out: see :func:`stem_st.stem.adata.predict_anndata`."""
        return predict_anndata(self, adata, settings, inplace=inplace)
