"""``stem demo``: the whole chain on HER2ST — prepare (cached) → train with a section held out
→ predict it → evaluate against the baselines → report; optionally leave-one-section-out.

CPU defaults are sized to finish in about ten minutes on a 2-core machine; on a GPU the
paper preset and the paper's sampling are used. Every choice is recorded in ``demo.json``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import write_json
from ..data.dataset import open_prepared
from ..defaults import DEFAULT_BUDGET, DEFAULT_NUM_SAMPLES, DEFAULT_SAMPLER
from ..errors import StemError, require
from ..evaluation.baselines import BASELINES
from ..evaluation.harness import evaluate
from ..prediction.output import predict_section
from ..preparation import PrepareConfig, prepare
from ..recipe import RECIPES, Recipe
from ..stem import PredictSettings, StemModel, TrainSettings
from .runs import train_run

log = logging.getLogger(__name__)
HER2ST_IMAGED = ["C2", "C3", "C4", "C5", "C6", "A1"]
MARKER = ".stem-demo"

# per device kind. Both train the shipped budget (DEFAULT_BUDGET: tiny preset, 600 steps of 32 at
# 5e-4, also the budget of benchmarks/accuracy_loo.py): the larger budget scored on a GPU drew worse
# samples (benchmarks/results/sample_budget.md: the small preset, 2000 x 256 at 1e-4, also with its
# best state kept); the paper preset and 8 views were not scored. A GPU only makes the demo faster.
PROFILES = {
    "cpu": {"views": 2, "aug_ratio": 1, **DEFAULT_BUDGET,
            "num_samples": DEFAULT_NUM_SAMPLES, "sampler": DEFAULT_SAMPLER},  # what `stem predict` ships
    "cuda": {"views": 2, "aug_ratio": 1, **DEFAULT_BUDGET,
             "num_samples": DEFAULT_NUM_SAMPLES, "sampler": DEFAULT_SAMPLER},
}


@dataclass
class DemoConfig:
    """What the demo runs; ``None`` fields take the device profile's value."""

    data: str
    out: str
    device: str = "cpu"
    holdout: str = "C6"
    sections: list[str] = field(default_factory=lambda: list(HER2ST_IMAGED))
    views: int | None = None
    aug_ratio: int | None = None
    preset: str | None = None
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    num_samples: int | None = None
    sampler: str | None = None
    seed: int = 0
    leave_one_out: bool = False
    cache_dir: str | None = None  # the embedding cache (None: OUT/cache)
    recipe: Recipe = field(default_factory=lambda: RECIPES["default"])
    validation: str = "auto"  # as stem train --validation

    def resolved(self) -> DemoConfig:
        """A copy with the device profile filled in."""
        prof = PROFILES["cuda" if self.device.startswith("cuda") else "cpu"]
        vals = {k: (prof[k] if getattr(self, k) is None else getattr(self, k)) for k in prof}
        return DemoConfig(**{**{f: getattr(self, f) for f in self.__dataclass_fields__}, **vals})


def run_fold(cfg: DemoConfig, holdout: str, folder: Path) -> dict:
    """Prepare, train, predict and evaluate with ``holdout`` left out; returns the evaluation."""
    times: dict[str, float] = {}
    t = time.perf_counter()
    prep_dir = folder / "prep"
    prepare(PrepareConfig(data=cfg.data, layout="her2st", sections=cfg.sections, holdout=[holdout],
                          views=cfg.views, out=str(prep_dir), overwrite=True,
                          cache_dir=cfg.cache_dir or str(Path(cfg.out) / "cache"), device=cfg.device))
    times["prepare"] = time.perf_counter() - t
    ds = open_prepared(prep_dir)

    t = time.perf_counter()
    run_dir = folder / "run"
    settings = TrainSettings(prep=str(prep_dir.resolve()), holdout=[holdout], preset=cfg.preset,
                             steps=cfg.steps, batch_size=cfg.batch_size, aug_ratio=cfg.aug_ratio,
                             lr=cfg.lr, seed=cfg.seed, checkpoint_every=max(100, cfg.steps // 5),
                             recipe=cfg.recipe, validation=cfg.validation)
    resume = (run_dir / "config.json").is_file()
    try:
        train_run(ds, run_dir, settings, device=cfg.device, resume=resume)
    except StemError as exc:
        raise StemError(f"{exc} (the demo resumes {run_dir} only with the same settings; "
                        "delete it or choose another --out)") from None
    times["train"] = time.perf_counter() - t

    t = time.perf_counter()
    model = StemModel.from_run(run_dir)
    pred_file = folder / f"{holdout}_pred.h5ad"
    settings = PredictSettings(num_samples=cfg.num_samples, sampler=cfg.sampler, seed=cfg.seed, device=cfg.device)
    predict_section(model, ds, holdout, pred_file, settings, keep_samples=True, overwrite=True)
    times["predict"] = time.perf_counter() - t

    t = time.perf_counter()
    res = evaluate(prep_dir, holdout, [pred_file], baselines=list(BASELINES), out=folder / "report",
                   overwrite=True, seed=cfg.seed)
    times["evaluate"] = time.perf_counter() - t
    res["seconds"] = {k: round(v, 1) for k, v in times.items()}
    return res


def loo_summary(results: dict[str, dict]) -> list[dict]:
    """Mean over folds of each method's main metrics (one row per method)."""
    keys = ("PCC-10", "PCC-50", "PCC-all", "MSE", "MAE", "RVD", "CRPS", "energy", "coverage50", "coverage80",
            "coverage95", "rank_coverage80", "ARI", "NMI")
    methods: dict[str, list[dict]] = {}
    for res in results.values():
        for row in res["rows"]:
            methods.setdefault(row["method"], []).append(row)
    out = []
    for name, rows in methods.items():
        row = {"method": name, "folds": len(rows)}
        for k in keys:
            vals = [r[k] for r in rows if isinstance(r.get(k), float) and np.isfinite(r[k])]
            row[k] = float(np.mean(vals)) if vals else float("nan")
        out.append(row)
    return out


def run_demo(cfg: DemoConfig) -> dict:
    """Run the demo into ``cfg.out`` (created, or reused when a previous demo made it)."""
    cfg = cfg.resolved()
    out = Path(cfg.out)
    require(not out.exists() or (out / MARKER).exists(),
            f"{out} exists and was not made by 'stem demo'; choose another --out")
    require(Path(cfg.data).is_dir(), f"HER2ST folder {cfg.data} not found")
    require(cfg.holdout in cfg.sections, f"--holdout {cfg.holdout} is not one of {', '.join(cfg.sections)}")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).touch()
    t0 = time.perf_counter()
    main = run_fold(cfg, cfg.holdout, out)
    summary = {"config": asdict(cfg), "main": {"holdout": cfg.holdout, "rows": main["rows"],
                                               "report": main["report"], "seconds": main["seconds"]}}
    if cfg.leave_one_out:
        folds = {cfg.holdout: main}
        for sid in cfg.sections:
            if sid != cfg.holdout:
                log.info("leave-one-out: holding out %s", sid)
                folds[sid] = run_fold(cfg, sid, out / "loo" / sid)
        summary["leave_one_out"] = {"folds": {s: {"rows": r["rows"], "report": r["report"],
                                                  "seconds": r["seconds"]} for s, r in folds.items()},
                                    "mean": loo_summary(folds)}
    summary["seconds_total"] = round(time.perf_counter() - t0, 1)
    write_json(out / "demo.json", summary)
    return summary


def describe(summary: dict) -> str:
    """One line on what the demo chose (printed with the table)."""
    c = summary["config"]
    r = c["recipe"]
    return (f"recipe {', '.join(f'{k}={v}' for k, v in r.items())}; "
            f"{c['preset']} preset, {c['views']} views (aug ratio {c['aug_ratio']}), {c['steps']} steps × "
            f"batch {c['batch_size']}, {c['num_samples']} samples {c['sampler']} on {c['device']}; "
            f"stage seconds {json.dumps(summary['main']['seconds'])}; total {summary['seconds_total']} s")
