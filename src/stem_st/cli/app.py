"""The ``stem`` commands for data, training, viewing, evaluation and the demo. Prediction is in
:mod:`stem_st.cli.predict`, LGDiST (``stem complete``) in :mod:`stem_st.cli.complete`."""

from __future__ import annotations

from pathlib import Path

import typer

from ..atomic import require_separate
from ..data.units import UNITS
from ..defaults import DEFAULT_BUDGET
from ..errors import require
from .common import (
    DEVICE_HELP,
    RECIPE_HELP,
    RECIPE_SET_HELP,
    csv_list,
    out_console,
    print_metric_table,
    print_table,
    recipe_from,
    resolve_device,
    setup_logging,
)

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Stem-ST: predict spatial gene expression from H&E histology.")


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    setup_logging(verbose)


@app.command()
def prepare(
    data: Path = typer.Option(..., help="Dataset folder (or file, for --layout h5ad)."),
    layout: str = typer.Option("her2st", help="her2st | visium | hest | h5ad"),
    sections: str = typer.Option("", help="Comma-separated section ids (default: all with an image)."),
    holdout: str = typer.Option("", help="Sections excluded from the gene choice (test sections)."),
    encoder: str = typer.Option("effnet-lite0-imagenet",
                                help="Encoder name(s); several joined by '+' are concatenated."),
    weights: str = typer.Option("", help="Checkpoint path(s), comma-separated, one per encoder."),
    views: int | None = typer.Option(None, help="Dihedral views per spot (1-8). Default 2: the original and 1 "
                                      "augmented view, as every committed benchmark trained (stem train "
                                      "--aug-ratio 1); 1 with precomputed embeddings."),
    genes: str = typer.Option("hmhvg:200", help="hmhvg:N | hvg:N | deg:N | file:PATH"),
    patch_mode: str = typer.Option("hest", help="hest (112 µm field) | stem (max(224 px, spot))"),
    out: Path = typer.Option(..., help="Output folder for the prepared dataset."),
    cache: Path | None = typer.Option(None, help="Embedding cache folder "
                                      "(default $STEM_ST_CACHE or ~/.cache/stem-st)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the embedding cache."),
    batch_size: int = typer.Option(64, help="Patches per encoder batch."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    image: str | None = typer.Option(None, help="Image path; may contain {section}."),
    image_scale: float | None = typer.Option(None, help="Spot-file pixels → image pixels."),
    mpp: float | None = typer.Option(None, help="µm per pixel of the image (else estimated)."),
    platform: str = typer.Option("visium", help="Platform for --layout h5ad: visium | legacy_st."),
    counts_layer: str | None = typer.Option(None, help="AnnData layer with raw counts (h5ad)."),
    overwrite: bool = typer.Option(False, help="Replace --out if it exists."),
    embedding_dtype: str = typer.Option("float32", help="float32 | float16: how embeddings are stored "
                                        "(one memory-mapped .npy per section; float16 halves the disk)."),
    completed: Path | None = typer.Option(None, help="Folder of <section>_completed.h5ad (stem complete "
                                          "apply): adds layers['completed'] for stem train --target-layer."),
) -> None:
    """Turn H&E images plus spot counts into a prepared dataset (panel counts + embeddings)."""
    from ..data.readers import ReaderOptions, imaged_sections
    from ..encoders.cache import default_cache_dir
    from ..preparation import PrepareConfig
    from ..preparation import prepare as run_prepare

    require_separate(out, [data])
    ids = csv_list(sections) or imaged_sections(layout, data)
    require(batch_size > 0, "--batch-size must be positive")
    cfg = PrepareConfig(
        data=str(data), layout=layout, sections=ids, out=str(out), holdout=csv_list(holdout),
        encoders=[e.strip() for e in encoder.split("+") if e.strip()], weights=csv_list(weights),
        views=views, genes=genes, patch_mode=patch_mode, batch_size=batch_size,
        device=resolve_device(device), overwrite=overwrite, embedding_dtype=embedding_dtype,
        cache_dir=None if no_cache else str(cache or default_cache_dir()),
        reader=ReaderOptions(image=image, image_scale=image_scale, mpp=mpp, platform=platform,
                             counts_layer=counts_layer),
        completed=str(completed) if completed else None,
    )
    rows = run_prepare(cfg)
    print_table(rows, f"prepared dataset {out}")


@app.command()
def info(prep: Path = typer.Argument(..., help="A prepared dataset folder.")) -> None:
    """Summarise a prepared dataset."""
    from ..data.dataset import open_prepared

    ds = open_prepared(prep)
    print_table(ds.manifest["summary"], f"{prep}: {len(ds.genes)} genes, "
                 f"{ds.embedding_dim}-d embeddings ({'+'.join(p['encoder'] for p in ds.manifest['encoders'])})")


@app.command()
def train(
    prep: Path = typer.Argument(..., help="Prepared dataset folder (stem prepare)."),
    out: Path = typer.Option(..., help="Run folder: config, checkpoints, loss.csv."),
    holdout: str = typer.Option("", help="Sections left out of training (default: the "
                                "prepared dataset's holdout)."),
    preset: str = typer.Option(DEFAULT_BUDGET["preset"], help="paper (12x384, 6 heads) | small (4x128) | tiny "
                               "(2x64); the default is the best measured (benchmarks/results/sample_budget.md)"),
    hidden: int | None = typer.Option(None, help="Override the preset's width."),
    depth: int | None = typer.Option(None, help="Override the preset's number of blocks."),
    heads: int | None = typer.Option(None, help="Override the preset's attention heads."),
    learn_sigma: bool = typer.Option(False, help="Also learn the variance (hybrid loss)."),
    steps: int = typer.Option(DEFAULT_BUDGET["steps"], help="Optimizer steps (the paper trains ~200k; longer "
                              "runs drew worse samples here, see the train guide)."),
    batch_size: int = typer.Option(DEFAULT_BUDGET["batch_size"], help="Global batch size."),
    aug_ratio: int = typer.Option(1, help="Augmented views per original view (the paper: 4, which needs "
                                   "stem prepare --views 5 or more; fewer prepared views cap it, with a "
                                   "warning)."),
    lr: float = typer.Option(DEFAULT_BUDGET["lr"], help="AdamW learning rate."),
    ema_decay: float = typer.Option(0.9999, help="EMA decay (warmed up from 0)."),
    weight_decay: float = typer.Option(0.0, help="AdamW weight decay."),
    validation: str = typer.Option("auto", help="A training section kept out of the network's training: "
                                   "its samples are scored every --val-every steps, the best state is kept "
                                   "and the spread is calibrated on it. auto (the most typical section, with "
                                   ">= 3 training sections) | none | a section id."),
    val_every: int = typer.Option(0, help="Steps between validations (0: a tenth of --steps)."),
    seed: int = typer.Option(0, help="Random seed."),
    checkpoint_every: int = typer.Option(500, help="Steps between checkpoints."),
    target_layer: str | None = typer.Option(None, help="Train on this layer of the prepared "
                                            "sections instead of X (e.g. completed counts)."),
    recipe: str = typer.Option("default", help=RECIPE_HELP),
    recipe_set: str = typer.Option("", help=RECIPE_SET_HELP),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    compile: bool | None = typer.Option(None, "--compile/--no-compile", help="torch.compile the network "
                                        "(default: on CUDA; speed-ups per machine in benchmarks/results/"
                                        "gpu_profile.md)."),
    resume: bool = typer.Option(False, help="Continue the run in --out from its last checkpoint."),
) -> None:
    """Train the Stem diffusion model on a prepared dataset."""
    from ..data.dataset import open_prepared
    from ..stem import TrainSettings
    from ..training.distributed import init_distributed
    from .runs import train_run

    require_separate(out, [prep], [prep])
    require(weight_decay >= 0 and val_every >= 0, "--weight-decay and --val-every must be >= 0")
    ds = open_prepared(prep)
    held = csv_list(holdout) or ds.holdout
    dev = resolve_device(device)
    dist_info = init_distributed(dev)
    if dist_info.world > 1 and dev.startswith("cuda"):
        dev = f"cuda:{dist_info.local_rank}"
    settings = TrainSettings(prep=str(prep.resolve()), holdout=held, preset=preset, steps=steps,
                             batch_size=batch_size, aug_ratio=aug_ratio, lr=lr, ema_decay=ema_decay,
                             seed=seed, checkpoint_every=checkpoint_every, target_layer=target_layer,
                             compile=compile, weight_decay=weight_decay, validation=validation,
                             val_every=val_every, recipe=recipe_from(recipe, recipe_set))
    overrides = {"hidden": hidden, "depth": depth, "heads": heads}
    model, result = train_run(ds, out, settings, net_overrides=overrides, learn_sigma=learn_sigma, device=dev,
                              resume=resume, dist_info=dist_info)
    if dist_info.main:
        logged = [r for r in result.losses if r.get("loss") not in (None, "")]  # not validation-only rows
        first, last = logged[0], logged[-1]
        out_console.print(f"trained {out}: step {last['step']}, loss {float(first['loss']):.4f} "
                          f"(step {first['step']}) → {float(last['loss']):.4f}, "
                          f"{result.seconds:.1f} s; checkpoint {result.checkpoint}")
        val = model.meta.get("validation")
        if val:
            out_console.print(f"kept the state of step {val['best_step']}: best validation score "
                              f"{val['best_score']:.4f} on {val['section']} (2 = the prior plus independent "
                              "noise; per step in loss.csv); `stem predict` uses it")


@app.command()
def view(
    pred: Path = typer.Argument(..., help="A prediction .h5ad (stem predict, predict-slide, or predict_adata)."),
    truth: Path | None = typer.Option(None, help="Prepared dataset holding the measured section (adds the "
                                      "measured and error layers)."),
    section: str | None = typer.Option(None, help="Section id in --truth (default: the prediction's)."),
    out: Path | None = typer.Option(None, help="Output .html (default: <pred>_view.html beside it)."),
    overwrite: bool = typer.Option(False, help="Replace --out if it exists."),
) -> None:
    """Write one offline HTML page to look at a prediction on its H&E: gene search, measured /
    predicted / std / error layers on shared colour scales, hover values, pan and zoom."""
    from ..viewer import build_view

    inputs = [pred, *([truth] if truth else [])]
    if out:
        require_separate(out, inputs, [truth] if truth else [])
    res = build_view(pred, out=out, truth_prep=truth, section=section, overwrite=overwrite)
    print_table([res], "viewer")


@app.command()
def evaluate(
    prep: Path = typer.Argument(..., help="Prepared dataset folder holding the truth."),
    holdout: str = typer.Option(..., help="The held-out section to score."),
    pred: list[Path] = typer.Option([], help="Prediction .h5ad from stem predict (repeatable)."),
    baselines: str = typer.Option("all", help="all | none | comma-separated: mean,knn,ridge,mlp,"
                                  "knn+ctx,ridge+ctx,knn+ctx2,ridge+ctx2 (+ctx: ring-1, +ctx2: "
                                  "ring-1 and 2.5-pitch disc spatial context), and the sampled "
                                  "ridge+ctx2+gauss|mvn|boot (cross-fitted residual noise)"),
    out: Path = typer.Option(..., help="Report folder: metrics.json/csv, PNGs, report.html."),
    train_sections: str = typer.Option("", help="Sections the baselines train on (default: the "
                                       "prediction run's training sections)."),
    genes: str = typer.Option("", help="Genes for the maps (default: top-PCC + HER2ST markers)."),
    seed: int = typer.Option(0, help="Seed for clustering and the sampled baselines' draws."),
    unit: str = typer.Option("log2", help="log2: log2(1 + count), the paper's | cp10k: "
                             "log2(1 + CP10k) over the panel, depth-normalised (for other patients)"),
    overwrite: bool = typer.Option(False, help="Replace --out if it exists."),
) -> None:
    """Score predictions and baselines on a held-out section; write metrics and a report."""
    from ..evaluation.baselines import parse_baselines
    from ..evaluation.harness import evaluate as run_evaluate

    require_separate(out, [prep, *pred], [prep])
    res = run_evaluate(prep, holdout, pred, baselines=parse_baselines(baselines), out=out,
                       train_sections=csv_list(train_sections), genes=csv_list(genes), overwrite=overwrite,
                       seed=seed, unit=unit)
    print_metric_table(res["rows"], f"section {holdout} ({res['protocol']['units'].split(' of')[0]}, "
                        f"{res['protocol']['genes']} genes, {res['protocol']['spots']} spots)")
    out_console.print(f"report: {res['report']}")


@app.command()
def demo(
    data: Path = typer.Option(..., help="The HER2ST folder."),
    out: Path = typer.Option(Path("runs/demo"), help="Demo output folder (owned by the demo)."),
    holdout: str = typer.Option("C6", help="Section held out of training and evaluated."),
    sections: str = typer.Option(",".join(["C2", "C3", "C4", "C5", "C6", "A1"]),
                                 help="Imaged HER2ST sections to use."),
    leave_one_out: bool = typer.Option(False, "--leave-one-out", help="Also hold out every other "
                                       "imaged section in turn (C2-C6, A1) and average the table."),
    views: int | None = typer.Option(None, help="Dihedral views (default 2)."),
    aug_ratio: int | None = typer.Option(None, help="Augmented views per spot (default 1)."),
    preset: str | None = typer.Option(None, help="Model preset (default: tiny, on CPU and GPU)."),
    steps: int | None = typer.Option(None, help="Training steps (default: 600)."),
    batch_size: int | None = typer.Option(None, help="Batch size (default: 32)."),
    lr: float | None = typer.Option(None, help="AdamW learning rate (default: 5e-4)."),
    num_samples: int | None = typer.Option(None, help="Samples per spot (default 20)."),
    sampler: str | None = typer.Option(None, help="Sampler (default dpm++:10, as stem predict)."),
    recipe: str = typer.Option("default", help=RECIPE_HELP),
    recipe_set: str = typer.Option("", help=RECIPE_SET_HELP),
    validation: str = typer.Option("auto", help="As stem train --validation: auto | none | a section."),
    cache: Path | None = typer.Option(None, help="Embedding cache folder (default OUT/cache; another "
                                      "folder shares embeddings with stem prepare runs)."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
) -> None:
    """The main job on HER2ST: prepare → train → predict the held-out section → evaluate
    against the baselines (with and without spatial context) → report."""
    from .demo import DemoConfig, describe, run_demo

    cfg = DemoConfig(data=str(data), out=str(out), device=resolve_device(device), holdout=holdout,
                     sections=csv_list(sections),
                     views=views, aug_ratio=aug_ratio, preset=preset, steps=steps, batch_size=batch_size,
                     lr=lr, num_samples=num_samples, sampler=sampler, leave_one_out=leave_one_out,
                     cache_dir=str(cache) if cache else None, recipe=recipe_from(recipe, recipe_set),
                     validation=validation)
    summary = run_demo(cfg)
    print_metric_table(summary["main"]["rows"], f"held-out section {holdout}: {UNITS}, per-gene "
                        "PCC over spots, top-k by PCC")
    if leave_one_out:
        print_metric_table(summary["leave_one_out"]["mean"], "leave-one-section-out: mean over folds")
    out_console.print(describe(summary))
    out_console.print(f"report: {summary['main']['report']}")
