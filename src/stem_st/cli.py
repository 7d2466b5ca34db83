"""The ``stem`` command line. Errors end in one line on stderr and a non-zero exit."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click
import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from .atomic import require_separate
from .errors import StemError, require

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Stem-ST: predict spatial gene expression from H&E histology.")
console = Console(stderr=True)
out_console = Console(width=None if sys.stdout.isatty() else 150)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False, show_time=False)],
                        force=True)
    for noisy in ("PIL", "h5py", "matplotlib", "numba", "fsspec", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    require(name == "cpu" or name.startswith("cuda"), f"unknown device '{name}'")
    require(name == "cpu" or torch.cuda.is_available(), f"device '{name}' is not available")
    return name


def _print_table(rows: list[dict], title: str) -> None:
    if not rows:
        return
    table = Table(title=title)
    for key in rows[0]:
        table.add_column(key, justify="right" if isinstance(rows[0][key], (int, float)) else "left")
    for r in rows:
        table.add_row(*[str(v) for v in r.values()])
    out_console.print(table)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    _setup_logging(verbose)


@app.command()
def prepare(
    data: Path = typer.Option(..., help="Dataset folder (or file, for --layout h5ad)."),
    layout: str = typer.Option("her2st", help="her2st | visium | hest | h5ad"),
    sections: str = typer.Option("", help="Comma-separated section ids (default: all with an image)."),
    holdout: str = typer.Option("", help="Sections excluded from the gene choice (test sections)."),
    encoder: str = typer.Option("effnet-lite0-imagenet",
                                help="Encoder name(s); several joined by '+' are concatenated."),
    weights: str = typer.Option("", help="Checkpoint path(s), comma-separated, one per encoder."),
    views: int = typer.Option(1, help="Dihedral views per spot (1-8)."),
    genes: str = typer.Option("hmhvg:200", help="hmhvg:N | hvg:N | deg:N | file:PATH"),
    patch_mode: str = typer.Option("hest", help="hest (112 µm field) | stem (max(224 px, spot))"),
    out: Path = typer.Option(..., help="Output folder for the prepared dataset."),
    cache: Path | None = typer.Option(None, help="Embedding cache folder "
                                      "(default $STEM_ST_CACHE or ~/.cache/stem-st)."),
    no_cache: bool = typer.Option(False, help="Do not read or write the embedding cache."),
    batch_size: int = typer.Option(64, help="Patches per encoder batch."),
    device: str = typer.Option("auto", help="auto | cpu | cuda[:N]"),
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
    from .data.readers import ReaderOptions
    from .encoders.cache import default_cache_dir
    from .prepare import PrepareConfig
    from .prepare import prepare as run_prepare

    require_separate(out, [data])
    ids = _csv(sections) or _default_sections(layout, data)
    require(batch_size > 0, "--batch-size must be positive")
    cfg = PrepareConfig(
        data=str(data), layout=layout, sections=ids, out=str(out), holdout=_csv(holdout),
        encoders=[e.strip() for e in encoder.split("+") if e.strip()], weights=_csv(weights),
        views=views, genes=genes, patch_mode=patch_mode, batch_size=batch_size,
        device=_device(device), overwrite=overwrite, embedding_dtype=embedding_dtype,
        cache_dir=None if no_cache else str(cache or default_cache_dir()),
        reader=ReaderOptions(image=image, image_scale=image_scale, mpp=mpp, platform=platform,
                             counts_layer=counts_layer),
        completed=str(completed) if completed else None,
    )
    rows = run_prepare(cfg)
    _print_table(rows, f"prepared dataset {out}")


def _default_sections(layout: str, data: Path) -> list[str]:
    from .data.readers import list_sections
    from .data.readers.her2st import find_image

    ids = list_sections(layout, data)
    if layout == "her2st":
        ids = [s for s in ids if find_image(data, s)[0] is not None]
    require(bool(ids), f"no sections found in {data}")
    return ids


@app.command()
def info(prep: Path = typer.Argument(..., help="A prepared dataset folder.")) -> None:
    """Summarise a prepared dataset."""
    from .data.prepared import open_prepared

    ds = open_prepared(prep)
    _print_table(ds.manifest["summary"], f"{prep}: {len(ds.genes)} genes, "
                 f"{ds.embedding_dim}-d embeddings ({'+'.join(p['encoder'] for p in ds.manifest['encoders'])})")


DEFAULT_SAMPLER = "dpm++:10"  # = diffusion.gaussian.DEFAULT_SAMPLER (kept torch-free here)
COMPILE_HELP = ("torch.compile the network: on an H100 a 4 000-spot slide x 20 samples of dpm++:10 takes "
                "28 s instead of 56 s, after a one-off compile of ~35 s (pays for long or repeated jobs; "
                "benchmarks/results/gpu_profile.md).")
SAMPLER_HELP = ("ddpm (all T steps) | ddpm:S | ddim:S[:eta] | dpm++:S (DPM-Solver++ 2M). S = network "
                "calls per sample: the cost is spots × samples × S calls, so dpm++:10 costs 1/100 of "
                "ddpm and 1/5 of ddim:50; its accuracy matched ddpm's in benchmarks/sampler_curve.py")
RECIPE_HELP = ("default (z-scored residual of a ridge prior, ring-2 spatial context, x0 objective, "
               "posterior-mean point estimate; chosen on benchmarks/accuracy_loo.py) | paper (Zhu et al.)")
RECIPE_SET_HELP = ("Override recipe fields: key=value,... (target, prior, context, objective, "
                   "min_snr_gamma, point, posterior_draws, residual_weight, centre_samples, "
                   "calibrate_spread, lr_schedule, cond_dropout, guidance).")


def _recipe(name: str, overrides: str):
    from .recipe import get_recipe

    return get_recipe(name, overrides)


@app.command()
def train(
    prep: Path = typer.Argument(..., help="Prepared dataset folder (stem prepare)."),
    out: Path = typer.Option(..., help="Run folder: config, checkpoints, loss.csv."),
    holdout: str = typer.Option("", help="Sections left out of training (default: the "
                                "prepared dataset's holdout)."),
    preset: str = typer.Option("small", help="paper (12x384, 6 heads) | small | tiny"),
    hidden: int | None = typer.Option(None, help="Override the preset's width."),
    depth: int | None = typer.Option(None, help="Override the preset's number of blocks."),
    heads: int | None = typer.Option(None, help="Override the preset's attention heads."),
    learn_sigma: bool = typer.Option(False, help="Also learn the variance (hybrid loss)."),
    steps: int = typer.Option(2000, help="Optimizer steps (the paper trains ~200k)."),
    batch_size: int = typer.Option(256, help="Global batch size."),
    aug_ratio: int = typer.Option(4, help="Augmented views per original view (paper 1:4)."),
    lr: float = typer.Option(1e-4, help="AdamW learning rate."),
    ema_decay: float = typer.Option(0.9999, help="EMA decay (warmed up from 0)."),
    seed: int = typer.Option(0, help="Random seed."),
    checkpoint_every: int = typer.Option(500, help="Steps between checkpoints."),
    target_layer: str | None = typer.Option(None, help="Train on this layer of the prepared "
                                            "sections instead of X (e.g. completed counts)."),
    recipe: str = typer.Option("default", help=RECIPE_HELP),
    recipe_set: str = typer.Option("", help=RECIPE_SET_HELP),
    device: str = typer.Option("auto", help="auto | cpu | cuda[:N]"),
    compile: bool | None = typer.Option(None, "--compile/--no-compile", help="torch.compile the network "
                                        "(default: on CUDA, 1.7x the steps/s of the paper preset on an H100)."),
    resume: bool = typer.Option(False, help="Continue the run in --out from its last checkpoint."),
) -> None:
    """Train the Stem diffusion model on a prepared dataset."""
    from .data.prepared import open_prepared
    from .stem_model import TrainSettings, train_run
    from .training.distributed import init_distributed

    require_separate(out, [prep], [prep])
    ds = open_prepared(prep)
    held = _csv(holdout) or ds.holdout
    dev = _device(device)
    dist_info = init_distributed(dev)
    if dist_info.world > 1 and dev.startswith("cuda"):
        dev = f"cuda:{dist_info.local_rank}"
    settings = TrainSettings(prep=str(prep.resolve()), holdout=held, preset=preset, steps=steps,
                             batch_size=batch_size, aug_ratio=aug_ratio, lr=lr, ema_decay=ema_decay,
                             seed=seed, checkpoint_every=checkpoint_every, target_layer=target_layer,
                             compile=compile, recipe=_recipe(recipe, recipe_set))
    overrides = {"hidden": hidden, "depth": depth, "heads": heads}
    model, result = train_run(ds, out, settings, overrides, learn_sigma, dev, resume, dist_info)
    if dist_info.main:
        first, last = result.losses[0], result.losses[-1]
        out_console.print(f"trained {out}: step {last['step']}, loss {float(first['loss']):.4f} "
                          f"(step {first['step']}) → {float(last['loss']):.4f}, "
                          f"{result.seconds:.1f} s; checkpoint {result.checkpoint}")


@app.command()
def predict(
    run: Path = typer.Argument(..., help="A training run folder (stem train)."),
    out: Path = typer.Option(..., help="Output .h5ad (one section) or folder (several)."),
    sections: str = typer.Option("", help="Sections of the prepared dataset (default: holdout)."),
    prep: Path | None = typer.Option(None, help="Prepared dataset (default: the run's)."),
    num_samples: int = typer.Option(20, help="Expression samples per spot (paper: 20)."),
    sampler: str = typer.Option(DEFAULT_SAMPLER, help=SAMPLER_HELP),
    summary: str = typer.Option("recipe", help="recipe (the run's: posterior mean or sample mean) | "
                                "mean | median | mode of the samples"),
    keep_samples: bool = typer.Option(False, help="Also write every sample (.samples.npy)."),
    seed: int = typer.Option(0, help="Sampling seed."),
    checkpoint: Path | None = typer.Option(None, help="A specific checkpoint (default: latest)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda[:N]"),
    compile: bool = typer.Option(False, help=COMPILE_HELP),
    overwrite: bool = typer.Option(False, help="Replace existing outputs."),
) -> None:
    """Predict expression (mean/median/mode and std over samples) for prepared sections."""
    import json

    from .data.prepared import open_prepared
    from .diffusion import parse_sampler
    from .prediction.output import predict_section
    from .prediction.summarise import SUMMARIES
    from .stem_model import StemModel

    cfg_path = run / "config.json"
    require(cfg_path.is_file(), f"{run} is not a training run (no config.json)")
    require(summary in ("recipe", *SUMMARIES),
            f"unknown --summary '{summary}'; choose recipe, {', '.join(SUMMARIES)}")
    model = StemModel.from_run(run, checkpoint)
    model.runtime.compile = compile
    parse_sampler(sampler, model.diffusion.num_steps)
    ds = open_prepared(prep or json.loads(cfg_path.read_text())["train"]["prep"])
    require_separate(out, [run, ds.root], [run, ds.root])
    require(ds.genes == model.genes, f"{ds.root} has a different gene panel than the run")
    used = [p["encoder"] + ":" + str(p["weights"]) for p in ds.manifest["encoders"]]
    trained = [p["encoder"] + ":" + str(p["weights"]) for p in model.encoders]
    require(used == trained, "the prepared dataset's image encoder(s) differ from the run's")
    ids = _csv(sections) or ds.holdout
    require(bool(ids), "no --sections given and the prepared dataset has no holdout")
    many = len(ids) > 1
    dev = _device(device)
    rows = [predict_section(model, ds, sid, out / f"{sid}_pred.h5ad" if many else out, num_samples,
                            sampler, None if summary == "recipe" else summary, seed, dev, keep_samples,
                            overwrite) for sid in ids]
    _print_table(rows, f"predictions from {run}")


@app.command("predict-slide")
def predict_slide_cmd(
    run: Path = typer.Argument(..., help="A training run folder (stem train)."),
    image: Path | None = typer.Option(None, help="The H&E slide: pyramidal TIFF/SVS/NDPI, OpenSlide formats "
                                      "(MRXS, VMS/VMU, SCN, Philips TIFF, …), or JPG/PNG."),
    out: Path = typer.Option(..., help="Output .h5ad (mask PNG and maps beside it); with --slides, a folder."),
    slides: Path | None = typer.Option(None, help="Instead of --image: a text file, one 'path[<TAB>mpp]' per "
                                       "line; each slide → OUT/<stem>.h5ad, finished ones are skipped (resume); "
                                       "under torchrun each process takes its share of the slides."),
    mpp: float | None = typer.Option(None, help="µm per pixel (required when the file has none)."),
    pitch: float | None = typer.Option(None, help="Virtual spot pitch in µm (default: the training data's)."),
    layout: str | None = typer.Option(None, help="hex | square (default: hex for Visium-trained runs)."),
    genes: str = typer.Option("", help="Genes to map (default: the 6 most variable predictions)."),
    min_tissue: float = typer.Option(0.5, help="Minimum tissue fraction of a spot's patch."),
    num_samples: int = typer.Option(20, help="Expression samples per spot."),
    sampler: str = typer.Option(DEFAULT_SAMPLER, help=SAMPLER_HELP),
    weights: str = typer.Option("", help="Encoder checkpoint(s), as given to stem prepare."),
    batch_size: int = typer.Option(64, help="Patches per encoder batch."),
    seed: int = typer.Option(0, help="Sampling seed."),
    checkpoint: Path | None = typer.Option(None, help="A specific checkpoint (default: latest)."),
    cache: Path | None = typer.Option(None, help="Embedding cache (resumes an interrupted slide)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda[:N]"),
    compile: bool = typer.Option(False, help=COMPILE_HELP),
    max_pixels: float = typer.Option(250e6, help="Largest JPEG/PNG (pixels) decoded whole; larger ones "
                                     "must be converted to a tiled TIFF (tiled TIFF/SVS are read by region)."),
    overwrite: bool = typer.Option(False, help="Replace --out if it exists."),
) -> None:
    """Predict expression maps over a whole H&E slide with no ST measurement."""
    from .diffusion import parse_sampler
    from .prediction.slide import SlideConfig, predict_slide

    require((run / "config.json").is_file(), f"{run} is not a training run (no config.json)")
    require((image is None) != (slides is None), "give either --image or --slides")
    require_separate(out, [run, image or slides], [run])
    require(num_samples >= 1 and batch_size >= 1, "--num-samples and --batch-size must be positive")
    parse_sampler(sampler, 1000)
    cfg = SlideConfig(
        run=str(run), image=str(image), out=str(out), mpp=mpp, pitch_um=pitch, layout=layout,
        genes=_csv(genes), num_samples=num_samples, sampler=sampler, seed=seed, device=_device(device),
        batch_size=batch_size, min_tissue=min_tissue, weights=_csv(weights),
        checkpoint=str(checkpoint) if checkpoint else None, cache_dir=str(cache) if cache else None,
        overwrite=overwrite, max_pixels=max_pixels, compile=compile)
    if slides is not None:
        from .prediction.slides import predict_slides

        res = predict_slides(cfg, slides)
        _print_table([res], f"whole-slide predictions in {out}")
        return
    res = predict_slide(cfg)
    _print_table([{k: res[k] for k in ("spots", "genes", "mpp", "layout", "pitch_um", "total_seconds")}],
                 f"whole-slide prediction {out}")
    out_console.print(f"tissue mask: {res['mask']}; maps: {Path(res['maps'][0]).parent if res['maps'] else '-'}")


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
    from .viewer import build_view

    inputs = [pred, *([truth] if truth else [])]
    if out:
        require_separate(out, inputs, [truth] if truth else [])
    res = build_view(pred, out, truth, section, overwrite)
    _print_table([res], "viewer")


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
    from .evaluation.baselines import parse_baselines
    from .evaluation.harness import evaluate as run_evaluate

    require_separate(out, [prep, *pred], [prep])
    res = run_evaluate(prep, holdout, pred, parse_baselines(baselines), out, _csv(train_sections),
                       _csv(genes), overwrite, seed, unit)
    _print_metric_table(res["rows"], f"section {holdout} ({res['protocol']['units'].split(' of')[0]}, "
                        f"{res['protocol']['genes']} genes, {res['protocol']['spots']} spots)")
    out_console.print(f"report: {res['report']}")


def _print_metric_table(rows: list[dict], title: str) -> None:
    cols = ("method", "PCC-10", "PCC-50", "PCC-all", "MSE", "MAE", "RVD", "CRPS", "energy", "coverage50",
            "coverage80", "coverage95", "ARI", "NMI")
    _print_table([{c: (round(r[c], 3) if isinstance(r.get(c), float) else r.get(c, "")) for c in cols}
                  for r in rows], title)


complete_app = typer.Typer(no_args_is_help=True, help=(
    "LGDiST completion of ST dropout (no reference). Units: log1p(count), natural log. Masked protocol: "
    "measured panel entries are hidden (dropout: p = 1 - f_g; spared: p = min(1, (1 - f_g)/f_g), f_g the "
    "fraction of a section's spots measuring gene g), removed from the input and scored only there."))
app.add_typer(complete_app, name="complete")
_MASKING_HELP = "Masked protocol: dropout (p_g = 1 - f_g) | spared (p_g = min(1, (1 - f_g)/f_g), SpaRED)."


@complete_app.command("fit")
def complete_fit(
    data: Path = typer.Option(..., help="Dataset folder (counts and spot files; no images needed)."),
    layout: str = typer.Option("her2st", help="her2st | visium | hest | h5ad"),
    train: str = typer.Option(..., help="Training sections, comma-separated."),
    val: str = typer.Option("", help="Validation sections: scored with the masked protocol; with --select "
                                     "best_val they choose each stage's checkpoint."),
    out: Path = typer.Option(..., help="Model folder (config, checkpoints of both stages)."),
    panel: int = typer.Option(128, help="Genes completed and scored (top Moran's I)."),
    total: int = typer.Option(1024, help="Panel + context genes fed to the model."),
    ae_steps: int = typer.Option(2000, help="Stage-1 (autoencoder) steps."),
    dit_steps: int = typer.Option(2000, help="Stage-2 (latent DiT) steps, per round."),
    batch_size: int = typer.Option(128, help="Neighbourhoods per step."),
    checkpoint_every: int = typer.Option(250, help="Steps between checkpoints, validations and --resume points."),
    lr: float = typer.Option(1e-4, help="Stage-2 AdamW learning rate."),
    ae_lr: float = typer.Option(1e-3, help="Stage-1 AdamW learning rate."),
    ae_hidden: int = typer.Option(256, help="Autoencoder width (paper 512)."),
    latent: int = typer.Option(64, help="Latent size per spot (paper 128)."),
    dit_hidden: int = typer.Option(128, help="Latent DiT width (ours at paper scale: 256)."),
    dit_depth: int = typer.Option(2, help="Latent DiT blocks (ours at paper scale: 4)."),
    prefill: str = typer.Option("median", help="Zeros of the input: median (SpaRED adaptive median) | zeros."),
    train_masking: str = typer.Option("dropout", help="Hide measured panel entries in masked training copies "
                                                      "and learn their real values: dropout | spared | none."),
    copies: int = typer.Option(4, help="Masked copies of the training sections."),
    select: str = typer.Option("best_val", help="Checkpoint kept per stage: best_val (lowest validation "
                                                "masked MSE; needs --val) | last."),
    rounds: int = typer.Option(1, help="2: retrain stage 2 on round-1 completions (LGDiST's Step B)."),
    masking: str = typer.Option("dropout", help=_MASKING_HELP + " Used for the validation score."),
    objective: str = typer.Option("x0", help="Stage-2 network output: x0 | eps (the reference's)."),
    point: str = typer.Option("posterior_mean", help="Stage-2 estimate: posterior_mean (E[centre latent | "
                              "neighbours] from the x0 network) | samples (mean of --num-samples sampled "
                              "latents)."),
    seed: int = typer.Option(0, help="Random seed."),
    device: str = typer.Option("auto", help="auto | cpu | cuda[:N]"),
    resume: bool = typer.Option(False, help="Continue an interrupted fit in --out (with its stored settings)."),
) -> None:
    """Choose genes, train the autoencoder and the latent DiT, score the validation sections.
    Units: log1p(count). Validation: measured panel entries hidden under --masking, removed from
    the input, scored alone."""
    from .completion.model import CompletionSettings
    from .completion.pipeline import fit_completion

    require(ae_steps > 0 and dit_steps > 0 and batch_size > 0 and checkpoint_every > 0,
            "steps, --batch-size and --checkpoint-every must be positive")
    require_separate(out, [data])
    settings = CompletionSettings(ae_steps=ae_steps, dit_steps=dit_steps, batch_size=batch_size, lr=lr,
                                  checkpoint_every=checkpoint_every, val_every=checkpoint_every,
                                  ae_lr=ae_lr, seed=seed, prefill=prefill, train_masking=train_masking,
                                  copies=copies, select=select, rounds=rounds, masking=masking,
                                  objective=objective, point=point)
    settings.check()
    res = fit_completion(str(data), layout, _csv(train), _csv(val), out, settings, panel, total,
                         {"ae_hidden": ae_hidden, "latent": latent, "dit_hidden": dit_hidden,
                          "dit_depth": dit_depth},
                         _device(device), resume)
    if "validation" in res:
        _print_completion_table(res["validation"], f"validation ({val}), masked entries ({masking}), log1p units")
    out_console.print(f"completion model: {out} ({res['seconds']} s)")


def _print_completion_table(rows: list[dict], title: str) -> None:
    cols = ("method", "MSE", "MAE", "R2", "PCC_gene", "PCC_spot", "bias", "entries")
    _print_table([{c: (round(r[c], 4) if isinstance(r.get(c), float) else r.get(c)) for c in cols}
                  for r in rows], title)


@complete_app.command("evaluate")
def complete_evaluate(
    comp: Path = typer.Argument(..., help="A completion model folder (stem complete fit)."),
    sections: str = typer.Option(..., help="Held-out sections to score."),
    data: Path | None = typer.Option(None, help="Dataset folder (default: the one it was fitted on)."),
    masking: str = typer.Option("dropout", help=_MASKING_HELP),
    num_samples: int = typer.Option(4, help="Samples of the centre latent per spot."),
    sampler: str = typer.Option("ddim:50", help="Sampler on a respaced subsequence of the 1500 steps."),
    stage1: bool = typer.Option(False, help="Also score the stage-1 decoder alone (no diffusion)."),
    seed: int = typer.Option(0, help="Seed of the hidden-entry mask and the sampler."),
    out: Path | None = typer.Option(None, help="Also write the table as JSON here."),
    device: str = typer.Option("auto", help="auto | cpu | cuda[:N]"),
) -> None:
    """Masked evaluation of LGDiST and the four baselines on held-out sections: hidden entries are
    removed from every input and scored alone (MSE, MAE, R², PCC per gene/spot, bias; log1p(count) units)."""
    from .atomic import write_json
    from .completion.pipeline import evaluate_completion

    require((comp / "config.json").is_file(), f"{comp} is not a completion model (no config.json)")
    require(num_samples >= 1, "--num-samples must be at least 1")
    res = evaluate_completion(comp, str(data) if data else None, None, _csv(sections), num_samples=num_samples,
                              sampler=sampler, seed=seed, device=_device(device), masking=masking, stage1=stage1)
    _print_completion_table(res["pooled"], f"masked completion on {sections} ({masking}; {res['units']})")
    if out:
        write_json(out, res)


@complete_app.command("apply")
def complete_apply(
    comp: Path = typer.Argument(..., help="A completion model folder (stem complete fit)."),
    sections: str = typer.Option(..., help="Sections to complete."),
    out: Path = typer.Option(..., help="Output folder: <section>_completed.h5ad per section."),
    data: Path | None = typer.Option(None, help="Dataset folder (default: the one it was fitted on)."),
    num_samples: int = typer.Option(4, help="K: samples of the centre latent per spot for the point, and "
                                            "(K ≥ 2) K independent completions whose per-entry sd, in counts, "
                                            "is layers['completed_std'] (0 at measured entries)."),
    sampler: str = typer.Option("ddim:50", help="Sampler on a respaced subsequence of the 1500 steps."),
    seed: int = typer.Option(0, help="Sampling seed."),
    keep_samples: bool = typer.Option(False, help="Also write the K completions, counts (spots x K x genes; "
                                                  "measured entries as measured), as <section>_completed"
                                                  ".samples.npy beside each file (multiple imputation)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda[:N]"),
    overwrite: bool = typer.Option(False, help="Replace existing outputs."),
) -> None:
    """Write completed copies of sections, atomically; the input is never modified. No masking:
    every zero is completed. X: measured counts; layers['completed']: counts with every zero
    replaced by expm1 of the completed log1p(count) value (measured entries unchanged);
    layers['completed_std'] (--num-samples ≥ 2): per-entry sd (ddof 1), in counts like
    layers['completed'], of K independent completions; 0 at measured entries."""
    from .completion.pipeline import apply_completion

    require(num_samples >= 1, "--num-samples must be at least 1")
    require(not keep_samples or num_samples >= 2, "--keep-samples needs --num-samples of at least 2")
    require((comp / "config.json").is_file(), f"{comp} is not a completion model (no config.json)")
    require_separate(out, [comp, *([data] if data else [])], [comp])
    rows = apply_completion(comp, _csv(sections), out, str(data) if data else None, None, num_samples, sampler,
                            seed, _device(device), overwrite, keep_samples)
    _print_table(rows, f"completed with {comp}")


@app.command()
def demo(
    data: Path = typer.Option(..., help="The HER2ST folder."),
    out: Path = typer.Option(Path("runs/demo"), help="Demo output folder (owned by the demo)."),
    holdout: str = typer.Option("C6", help="Section held out of training and evaluated."),
    sections: str = typer.Option(",".join(["C2", "C3", "C4", "C5", "C6", "A1"]),
                                 help="Imaged HER2ST sections to use."),
    leave_one_out: bool = typer.Option(False, "--leave-one-out", help="Also hold out every other "
                                       "imaged section in turn (C2-C6, A1) and average the table."),
    views: int | None = typer.Option(None, help="Dihedral views (default CPU 2, GPU 8)."),
    aug_ratio: int | None = typer.Option(None, help="Augmented views per spot (CPU 1, GPU 4)."),
    preset: str | None = typer.Option(None, help="Model preset (CPU small, GPU paper)."),
    steps: int | None = typer.Option(None, help="Training steps (CPU 600, GPU 20000)."),
    batch_size: int | None = typer.Option(None, help="Batch size (CPU 32, GPU 256)."),
    lr: float | None = typer.Option(None, help="AdamW learning rate (CPU 5e-4, GPU 1e-4)."),
    num_samples: int | None = typer.Option(None, help="Samples per spot (default 20)."),
    sampler: str | None = typer.Option(None, help="Sampler (default dpm++:10, as stem predict)."),
    recipe: str = typer.Option("default", help=RECIPE_HELP),
    recipe_set: str = typer.Option("", help=RECIPE_SET_HELP),
    device: str = typer.Option("auto", help="auto | cpu | cuda[:N]"),
) -> None:
    """The main job on HER2ST: prepare → train → predict the held-out section → evaluate
    against the baselines (with and without spatial context) → report."""
    from .demo import DemoConfig, describe, run_demo

    cfg = DemoConfig(data=str(data), out=str(out), device=_device(device), holdout=holdout,
                     sections=_csv(sections),
                     views=views, aug_ratio=aug_ratio, preset=preset, steps=steps, batch_size=batch_size,
                     lr=lr, num_samples=num_samples, sampler=sampler, leave_one_out=leave_one_out,
                     recipe=_recipe(recipe, recipe_set))
    summary = run_demo(cfg)
    _print_metric_table(summary["main"]["rows"], f"held-out section {holdout}: log2(1 + count), per-gene "
                        "PCC over spots, top-k by PCC")
    if leave_one_out:
        _print_metric_table(summary["leave_one_out"]["mean"], "leave-one-section-out: mean over folds")
    out_console.print(describe(summary))
    out_console.print(f"report: {summary['main']['report']}")


def main() -> None:
    """Entry point: run the app, turning errors into one line and an exit code (2: bad input)."""
    try:
        app(standalone_mode=False)
    except StemError as exc:
        _fail(str(exc), 2)
    except (typer.Exit, click.exceptions.Exit) as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, click.exceptions.Abort, KeyboardInterrupt):
        console.print("interrupted")
        sys.exit(130)
    except Exception as exc:
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # click's (typer's copy) usage errors
            _fail(exc.format_message(), 2)
        if os.environ.get("STEM_DEBUG"):
            raise
        _fail(f"{type(exc).__name__}: {exc} (an internal error; set STEM_DEBUG=1 for the traceback)", 1)


def _fail(message: str, code: int) -> None:
    from rich.markup import escape

    console.print(f"[bold red]error:[/] {escape(' '.join(message.split()))}", highlight=False, soft_wrap=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
