"""``stem train``'s policy for run folders: never overwrite a run; resume one only with the
settings it was started with."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from ..atomic import read_json
from ..data.dataset import PreparedDataset
from ..errors import require
from ..recipe import Recipe
from ..stem import StemModel, TrainSettings
from ..training.data import SPATIAL_BLOCKS
from ..training.distributed import DistInfo
from ..training.loop import LoopResult

#: settings a resumed run must share with the run it continues
RESUME_FIXED = ("prep", "holdout", "preset", "batch_size", "aug_ratio", "lr", "seed", "target_layer",
                "recipe", "weight_decay", "validation", "val_every")


def train_run(ds: PreparedDataset, out: str | Path, settings: TrainSettings, net_overrides: dict | None = None,
              learn_sigma: bool = False, device: str = "cpu", resume: bool = False,
              dist_info: DistInfo | None = None, progress: bool = True) -> tuple[StemModel, LoopResult]:
    """``stem train``: refuse to overwrite a run, check a resumed run's settings, then fit."""
    out = Path(out)
    info = dist_info or DistInfo()
    unknown = set(settings.holdout) - set(ds.sections)
    require(not unknown, f"holdout sections {sorted(unknown)} are not in {ds.root}")
    training = [s for s in ds.sections if s not in settings.holdout]
    if len(training) == 1:  # one section: its spatial blocks stand in for sections
        training = [f"{training[0]} block {b + 1}" for b in range(SPATIAL_BLOCKS)]
    require(settings.validation in ("auto", "none", *training),
            f"--validation {settings.validation} is not a training section ({', '.join(training)}); "
            "give one of them, auto or none")  # checked before the run folder is made
    require(settings.steps > 0 and settings.batch_size > 0 and settings.aug_ratio >= 0
            and settings.checkpoint_every > 0, "--steps, --batch-size and --checkpoint-every must be "
            "positive, --aug-ratio >= 0")
    cfg_path = out / "config.json"
    if resume:
        require(cfg_path.is_file(), f"{out} is not a training run; nothing to resume")
        saved = read_json(cfg_path, "training run")["train"]
        saved.setdefault("recipe", Recipe().to_dict())  # runs from before recipes: the paper's
        # runs from before validation sections trained on every section (resume with --validation none)
        for key, before in (("validation", "none"), ("val_every", 0), ("weight_decay", 0.0)):
            saved.setdefault(key, before)
        now = json.loads(json.dumps(asdict(settings)))
        changed = {k for k in RESUME_FIXED if saved.get(k) != now.get(k)}
        require(not changed, f"--resume with different settings: {', '.join(sorted(changed))}")
        require(saved.get("steps") == settings.steps or settings.recipe.lr_schedule == "constant",
                f"--resume with --steps {settings.steps} would stretch the run's cosine learning-rate schedule "
                f"(planned for {saved.get('steps')} steps; the rate would climb back up): resume with --steps "
                f"{saved.get('steps')}, or start a new run")
    elif info.main:
        require(not out.exists(), f"{out} already exists; pass --resume to continue it or choose another --out")
    return StemModel.fit(ds, out, settings, net_overrides=net_overrides, learn_sigma=learn_sigma, device=device,
                         resume=resume, dist_info=dist_info, progress=progress)
