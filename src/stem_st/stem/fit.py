"""Fitting a :class:`~stem_st.stem.StemModel`: training pairs, the loop (watching its samples on
a validation section, :mod:`stem_st.stem.validation`), then the best state and its spread
calibration. The network is :class:`~stem_st.models.StemDiT`; the maths is
:class:`~stem_st.diffusion.GaussianDiffusion`; the loop is :func:`~stem_st.training.loop.train_loop`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..atomic import read_json, require_free_space, write_json
from ..data.context import context_blocks
from ..data.dataset import PreparedDataset
from ..defaults import DEFAULT_NUM_SAMPLES, DEFAULT_SAMPLER
from ..devices import resolve_device
from ..diffusion.guidance import drop_condition, null_rows
from ..errors import require
from ..models import StemDiT, StemDiTConfig
from ..progress import phase
from ..training.checkpoint import load_latest, save_checkpoint
from ..training.data import TrainingData, build_training_data, pair_bytes
from ..training.distributed import DistInfo
from ..training.loop import BEST_DIR, KEEP_CHECKPOINTS, LoopConfig, LoopResult, checkpoint_bytes, train_loop
from ..training.pairs import TrainingPairs, calibration_rows, fit_statistics, neighbour_table
from ..training.spread import (
    common_direction,
    fit_common,
    scale_deviations,
    spread_factor,
    spread_levels,
)
from .settings import PredictSettings, TrainSettings, network_config, training_geometry
from .shift import REFERENCE_SPOTS, fit_reference
from .spatial import calibrate_spatial
from .validation import (
    ValidationSet,
    choose_section,
    draw_settings,
    finish_validation,
    score_network,
    start_validation,
)

log = logging.getLogger(__name__)


def fit_model(cls: type, ds: PreparedDataset, run_dir: str | Path, settings: TrainSettings,
              net_overrides: dict | None = None, learn_sigma: bool = False, device: str = "auto",
              resume: bool = False, dist_info: DistInfo | None = None, progress: bool = True,
              ) -> tuple[object, LoopResult]:
    """Train a ``cls`` (a :class:`~stem_st.stem.StemModel`) on the non-held-out sections of ``ds``;
    checkpoints go to ``run_dir``."""
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
        return _fit(cls, ds, data, cfg, Path(run_dir), settings, device, resume, info, progress)
    finally:
        data.close(remove=True)


def _fit(cls: type, ds: PreparedDataset, data: TrainingData, cfg: StemDiTConfig, run_dir: Path,
         settings: TrainSettings, device: str, resume: bool, info: DistInfo, progress: bool,
         ) -> tuple[object, LoopResult]:
    recipe, sections = settings.recipe, data.sections
    group = choose_section(data, settings.validation, settings.seed)
    vs = None if group is None else start_validation(data, group, settings.seed)
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
    _write_config(model, run_dir, settings, resume, info)
    log.info("training on %s: %d spots, %d pairs, %d genes, %d-d condition (%d constant); %s; %s",
             ",".join(sections), data.n_spots, len(data), len(ds.genes), scaler.dim,
             model.meta["constant_inputs"], recipe, cfg)
    device = resolve_device(device)
    dev = torch.device(device)
    pairs = TrainingPairs(data, scaler, target, dev)
    colour = target.noise_colour(dev)
    diffusion, n, g, batch = model.diffusion, len(data), len(ds.genes), settings.batch_size
    # the validation section's pairs never reach the network
    train_rows = None if vs is None else torch.from_numpy(np.flatnonzero(data.group != vs.group))
    if vs is not None:
        finish_validation(vs, pairs, target)
        n = len(train_rows)
        model.meta["validation"] = {"section": vs.section, "spots": len(vs.rows), "scored_spots": len(vs.scored),
                                    "reference": vs.reference}
        log.info("validation: section %s (%d spots) kept out of the network's training; its samples are "
                 "scored every %d steps", vs.section, len(vs.rows), _val_every(settings))

    spots = np.flatnonzero(data.original)
    spots = np.sort(np.random.default_rng(settings.seed).permutation(spots)[:REFERENCE_SPOTS])
    ref_cond, ref_z = pairs.numpy(spots)  # z: residuals of the ridge prior fitted without the spot's section
    model.shift_ref = fit_reference(ref_cond, data.group[spots], settings.seed, z=ref_z)

    nearest = None
    if recipe.neighbour_targets:
        rows = np.arange(len(data)) if train_rows is None else train_rows.numpy()
        nearest = neighbour_table(pairs, rows, recipe.neighbour_targets, settings.seed)
        log.info("targets: the residual of one of each pair's %d nearest training pairs", nearest.shape[1])

    def loss_fn(net, data_gen, noise_gen, share):
        idx = torch.randint(n, (batch,), generator=data_gen)[share]
        if train_rows is not None:
            idx = train_rows[idx]
        t = torch.randint(diffusion.num_steps, (batch,), generator=noise_gen, device=dev)[share]
        noise = torch.randn((batch, g), generator=noise_gen, device=dev)[share]
        if colour is not None:
            noise = noise @ colour
        cond, z = pairs.batch(idx)
        if nearest is not None:
            pick = torch.randint(nearest.shape[1], (batch,), generator=data_gen)[share]
            z = pairs.batch(nearest[idx, pick])[1]
        if recipe.cond_noise > 0:
            cond = cond + recipe.cond_noise * torch.randn((batch, cond.shape[1]), generator=noise_gen,
                                                          device=dev)[share]
        null = null_rows(batch, recipe.cond_dropout, data_gen)  # full batch: ranks stay in step
        cond = drop_condition(cond, None if null is None else null[share])
        terms = diffusion.training_loss(lambda xt, tt: net(xt, tt, cond), z, t, noise)
        return {k: v.mean() for k, v in terms.items()}

    loop = LoopConfig(steps=settings.steps, lr=settings.lr, weight_decay=settings.weight_decay,
                      ema_decay=settings.ema_decay, seed=settings.seed, checkpoint_every=settings.checkpoint_every,
                      device=device, progress=progress, lr_schedule=recipe.lr_schedule,
                      compile=dev.type == "cuda" if settings.compile is None else settings.compile)
    validate = None if vs is None else (
        lambda net, ema_net: score_network(model, ema_net, vs, draw_settings(settings.seed, device)))
    result = train_loop(model.net, loss_fn, loop, run_dir, model.extra_state(), info, resume,
                        global_batch=batch, validate=validate, validate_every=_val_every(settings))
    if vs is not None:
        _select_best(model, vs, run_dir, settings, device, info, progress)
    else:  # predict with the last EMA weights, the spread calibrated on training spots
        ck, path = load_latest(run_dir)
        model.net.load_state_dict(ck["ema"]["model"])
        if recipe.calibrate_spread and info.main:  # on the training device: slow on a CPU for big presets
            rows = calibration_rows(data.group, data.original, settings.seed)
            calibrate_spread(model, *pairs.numpy(rows), data.group[rows],
                             PredictSettings(seed=settings.seed, device=device), progress)
            # the factor travels with the final checkpoint
            save_checkpoint({**ck, **model.extra_state()}, run_dir, int(ck["step"]))
            log.info("sample spread calibrated: × %.3f (median over genes; %s)",
                     float(np.median(model.target.spread)), path.name)
        log.info("no validation section: a section's spots are drawn independently (no noise field fitted)")
    model.net.to("cpu")
    return model, result


def _val_every(settings: TrainSettings) -> int:
    """Steps between validations: the setting, or (0) a tenth of the run."""
    return settings.val_every or max(1, settings.steps // 10)


def _select_best(model, vs: ValidationSet, run_dir: Path, settings: TrainSettings, device: str,
                 info: DistInfo, progress: bool = True) -> None:
    """Load the best-scoring EMA state, calibrate its spread on the validation section and store
    it in ``best/`` marked ``selected`` (what :meth:`StemModel.from_run` loads)."""
    ck, _ = load_latest(run_dir / BEST_DIR)
    model.net.load_state_dict(ck["ema"]["model"])
    best = ck.get("best", {})
    model.meta["validation"].update(best_step=int(best.get("step", ck["step"])),
                                    best_score=float(best.get("score", float("nan"))))
    if model.recipe.calibrate_spread and info.main:
        calibrate_spread(model, vs.cond, vs.z, np.full(len(vs.z), vs.group),
                         PredictSettings(seed=settings.seed, device=device), progress)
        model.meta["spread_calibrated_on"] = vs.section
        log.info("sample spread calibrated on %s: × %.3f (median over genes)", vs.section,
                 float(np.median(model.target.spread)))
    if info.main and vs.xy is not None and np.isfinite(vs.xy).all():
        calibrate_spatial(model, vs.cond, vs.z, vs.xy, PredictSettings(seed=settings.seed, device=device),
                          vs.section, vs.prior, vs.group, progress)
    if info.main:
        state = {**ck, **model.extra_state(), "selected": True}
        save_checkpoint(state, run_dir / BEST_DIR, int(ck["step"]), keep=1)
        val = model.meta["validation"]
        log.info("kept the state of step %d (best validation score %.4f of %d steps)",
                 val["best_step"], val["best_score"], settings.steps)


def _write_config(model, run_dir: Path, settings: TrainSettings, resume: bool,
                  info: DistInfo) -> None:
    """``config.json`` of a new run; a resumed run must keep its architecture."""
    cfg_file = run_dir / "config.json"
    if resume and cfg_file.is_file():
        saved = read_json(cfg_file, "training run").get("net")
        require(saved in (None, model.net_cfg.to_dict()),
                f"--resume with a different architecture than {run_dir} was trained with")
    if info.main and not resume:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(cfg_file, {"train": asdict(settings), "net": model.net_cfg.to_dict(), "genes": model.genes,
                              "recipe": model.recipe.to_dict(), "encoders": model.encoders,
                              "train_sections": model.meta["train_sections"]})


def calibrate_spread(model, cond: np.ndarray, z: np.ndarray, groups: np.ndarray,
                     settings: PredictSettings, progress: bool = False) -> float:
    """Set the samples' spread factor from training spots (their cross-fitted z): the median
    over training sections (``groups``) of each section's factor, so one atypical section
    (another patient, another depth) does not set everyone's width. Drawn with the sampler and
    sample count that prediction uses by default (recorded in ``meta``). ``spread`` goes with
    each spot's deviations widened by its cross-fitted shift (as prediction widens them),
    ``spread_plain`` without (``shift_widening=False``); ``progress``: a bar."""
    settings = PredictSettings(num_samples=DEFAULT_NUM_SAMPLES, sampler=DEFAULT_SAMPLER, seed=settings.seed,
                               device=settings.device)
    widened, plain, drawn = [], [], []
    total = len(cond) * (settings.num_samples + model.recipe.centre_samples)
    levels = model.recipe.spread_criterion == "levels"
    kw = {"per_gene": model.recipe.spread_per_gene, "criterion": model.recipe.spread_criterion}

    def factor(zt: np.ndarray, draws: np.ndarray, centre: np.ndarray | None):
        return spread_levels(zt, draws, centre) if levels else spread_factor(zt, draws, centre, **kw)

    with phase(f"calibrate the spread ({len(cond)} spots × {settings.num_samples} samples)", total,
               progress) as advance:
        for g in np.unique(groups):
            rows = groups == g
            draws = model.draw_z(cond[rows], settings, progress=advance)
            centre = model.centre_z(cond[rows], settings, advance)
            plain.append(factor(z[rows], draws, centre))
            per_spot = model.widening(cond[rows], settings, exclude=int(g))
            if model.recipe.spread_common:  # kept for the common shift, fitted after the spread
                drawn.append((rows, draws, centre, per_spot))
            mean = draws.mean(1, keepdims=True)
            widened.append(plain[-1] if per_spot is None else
                           factor(z[rows], mean + scale_deviations(draws - mean, per_spot), centre))
    widened, plain = np.median(np.asarray(widened), axis=0), np.median(np.asarray(plain), axis=0)
    model.target.shape = (widened / widened[1]).astype(np.float32) if levels else None
    if levels:  # the spread is the 80 % factor; the shape (of the widened draws) serves both
        widened, plain = widened[1], plain[1]
    model.target.spread = np.asarray(widened, dtype=np.float32)
    model.target.spread_plain = np.asarray(plain, dtype=np.float32)
    model.target.common = None
    if model.recipe.spread_common:  # on the draws as prediction now widens them, all groups together
        rows = np.concatenate([r.nonzero()[0] for r, *_ in drawn])
        shaped = np.concatenate([model.target.widen(d, c, p) for _, d, c, p in drawn])
        model.target.common = fit_common(z[rows], shaped, common_direction(model.target.sd))
    model.meta["spread_calibrated_with"] = {"sampler": settings.sampler, "num_samples": settings.num_samples}
    return float(np.median(model.target.spread))
