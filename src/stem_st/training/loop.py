"""The training loop shared by every diffusion model in the package.

A ``Trainable`` supplies the network, the diffusion and the per-batch loss; the loop does
optimisation, EMA, logging, atomic checkpoints with every RNG state, exact resume, DDP,
bf16 autocast on GPU and, given a validation score, keeps the best-scoring state in ``best/``.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.progress import TextColumn
from torch import nn

from ..atomic import require_free_space
from ..devices import resolve_device
from ..errors import require
from ..progress import progress_bar
from .checkpoint import load_latest, save_checkpoint
from .distributed import DistInfo, mean_across
from .ema import EMA

log = logging.getLogger(__name__)
KEEP_CHECKPOINTS = 3  # newest checkpoints kept per run (older ones are deleted)
#: ``val`` is the score the best state is chosen by; ``val_*`` are what a validation also reports
VAL_COLUMNS = ["val_energy", "val_variogram", "val_crps", "val_spread"]
LOSS_COLUMNS = ["step", "loss", "mse", "vb", "ema_decay", "lr", "seconds", "val", *VAL_COLUMNS]
BEST_DIR = "best"

#: loss_fn(model, batch_index_generator, noise_generator, rank_slice) → dict of scalar losses
LossFn = Callable[[nn.Module, torch.Generator, torch.Generator, slice], dict[str, torch.Tensor]]
#: validate(model, ema_model) → a score to minimise (e.g. validation masked MSE), or a dict with
#: that score under ``val`` and other figures under names from VAL_COLUMNS
ValidateFn = Callable[[nn.Module, nn.Module], "float | dict[str, float]"]


@dataclass
class LoopConfig:
    """Optimisation settings (the paper's: AdamW 1e-4, no weight decay, batch 256, EMA 0.9999)."""

    steps: int
    lr: float = 1e-4
    weight_decay: float = 0.0
    ema_decay: float = 0.9999
    ema_warmup: bool = True
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 10
    device: str = "cpu"
    bf16: bool = True
    progress: bool = True
    # or "cosine": linear warm-up over 5 % of steps, cosine to 0 at ``steps``; resuming with the
    # same ``steps`` is exact, extending ``steps`` stretches the rest of the schedule
    lr_schedule: str = "constant"
    compile: bool = False  # torch.compile the forward and backward (benchmarks/gpu_profile.py)

    def lr_at(self, step: int) -> float:
        """Learning rate for optimizer step ``step`` (0-based)."""
        if self.lr_schedule == "constant":
            return self.lr
        warm = max(1, self.steps // 20)
        if step < warm:
            return self.lr * (step + 1) / warm
        return self.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, self.steps - warm)))


@dataclass
class LoopResult:
    losses: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    checkpoint: Path | None = None


def _rng_state(data_gen: torch.Generator, noise_gen: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "data": data_gen.get_state(),
             "noise": noise_gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, data_gen: torch.Generator, noise_gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    data_gen.set_state(state["data"])
    noise_gen.set_state(state["noise"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _read_loss_log(path: Path, upto: int) -> list[dict]:
    if not path.exists():
        return []
    with open(path) as fh:
        rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= upto]
    return rows


def _write_loss_log(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=LOSS_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def checkpoint_bytes(model: nn.Module) -> int:
    """Approximate size of one checkpoint: weights, EMA and two Adam moments, float32."""
    return 16 * sum(p.numel() for p in model.parameters())


def train_loop(
    model: nn.Module, loss_fn: LossFn, cfg: LoopConfig, run_dir: str | Path,
    extra_state: dict, dist_info: DistInfo | None = None, resume: bool = False,
    global_batch: int = 256, validate: ValidateFn | None = None, validate_every: int = 0,
) -> LoopResult:
    """Train ``model`` for ``cfg.steps`` optimizer steps, checkpointing into ``run_dir``.

    ``extra_state`` (configs, panel, normalisation) is stored in every checkpoint. With
    ``resume``, the latest checkpoint's weights, EMA, optimizer, step and RNG states are
    restored, so the run continues exactly as if uninterrupted.

    With ``validate``, the score is computed every ``validate_every`` steps and at the end
    (main process only; logged as ``val``); each new best state is checkpointed in
    ``run_dir/best/`` and the best score and step travel in every checkpoint (key ``best``).
    """
    info = dist_info or DistInfo()
    run_dir = Path(run_dir)
    require_free_space(run_dir, checkpoint_bytes(model) * (KEEP_CHECKPOINTS + 1), "checkpoints")
    device = torch.device(resolve_device(cfg.device))
    model.to(device)
    ema = EMA(model, cfg.ema_decay, cfg.ema_warmup)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    data_gen = torch.Generator().manual_seed(cfg.seed)
    noise_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    step = 0
    loss_path = run_dir / "loss.csv"
    rows: list[dict] = []
    best = {"score": math.inf, "step": -1}
    if resume:
        ck, _ = load_latest(run_dir)
        model.load_state_dict(ck["model"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["optimizer"])
        _set_rng_state(ck["rng"], data_gen, noise_gen)
        step = int(ck["step"])
        best = ck.get("best", best)
        rows = _read_loss_log(loss_path, step)
        log.info("resumed %s at step %d", run_dir, step)
        require(step <= cfg.steps, f"the run is already at step {step} > --steps {cfg.steps}")
    ddp = model
    if info.world > 1:
        ddp = nn.parallel.DistributedDataParallel(
            model, device_ids=[info.local_rank] if device.type == "cuda" else None)
    per_rank = global_batch // info.world
    require(per_rank * info.world == global_batch,
            f"batch {global_batch} does not split over {info.world} processes")
    share = slice(info.rank * per_rank, (info.rank + 1) * per_rank)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.bf16 and device.type == "cuda")
    forward = torch.compile(ddp) if cfg.compile else ddp

    def state() -> dict:
        return {"model": model.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                "step": step, "rng": _rng_state(data_gen, noise_gen), "best": dict(best), **extra_state}

    def checkpoint() -> Path | None:
        if not info.main:
            return None
        path = save_checkpoint(state(), run_dir, step, keep=KEEP_CHECKPOINTS)
        _write_loss_log(loss_path, rows)
        return path

    def run_validation() -> None:
        progress.update(task, status=f"step {step}: scoring validation samples")
        model.eval()
        with torch.no_grad():
            out = validate(model, ema.model)
        model.train()
        vals = {k: float(v) for k, v in (out.items() if isinstance(out, dict) else {"val": out}.items())}
        score = vals["val"]
        if rows and int(rows[-1]["step"]) == step:
            rows[-1].update(vals)
        else:
            rows.append({"step": step, **vals})
        others = ", ".join(f"{k.removeprefix('val_')} {v:.4g}" for k, v in vals.items() if k != "val")
        log.info("step %d: validation score %.4g%s%s", step, score, f" ({others})" if others else "",
                 ", the best so far" if score < best["score"] else "")
        if score < best["score"]:
            best.update(score=score, step=step)
            save_checkpoint(state(), run_dir / BEST_DIR, step, keep=1)
        progress.update(task, status=f"validation {score:.4g}")

    t0 = time.perf_counter()
    result = LoopResult()
    progress = progress_bar(TextColumn("{task.fields[status]}"), enabled=cfg.progress and info.main)
    with progress:
        task = progress.add_task("train", total=cfg.steps, completed=step, status="")
        model.train()
        while step < cfg.steps:
            with autocast:
                terms = loss_fn(forward, data_gen, noise_gen, share)
            for group in opt.param_groups:
                group["lr"] = cfg.lr_at(step)
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            opt.step()
            ema.update(model)
            step += 1
            if step % cfg.log_every == 0 or step == cfg.steps:
                vals = {k: float(mean_across(v.detach().float(), info)) for k, v in terms.items()}
                rows.append({"step": step, "loss": vals["loss"], "mse": vals.get("mse", ""),
                             "vb": vals.get("vb", ""), "ema_decay": ema.current_decay(),
                             "lr": cfg.lr_at(step - 1), "seconds": round(time.perf_counter() - t0, 3)})
                progress.update(task, completed=step, status=f"loss {vals['loss']:.4f}")
            if validate is not None and info.main and (step == cfg.steps or (
                    validate_every > 0 and step % validate_every == 0)):
                run_validation()
            if step % cfg.checkpoint_every == 0 and step < cfg.steps:
                checkpoint()
        result.checkpoint = checkpoint()
    if info.world > 1:
        torch.distributed.barrier()  # every rank may now read the final checkpoint
    result.losses = rows
    result.seconds = time.perf_counter() - t0
    return result
