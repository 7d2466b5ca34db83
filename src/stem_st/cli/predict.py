"""``stem predict`` (prepared sections) and ``stem predict-slide`` (whole H&E slides, cohorts)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..atomic import require_separate
from ..defaults import DEFAULT_NUM_SAMPLES, DEFAULT_SAMPLER
from ..errors import StemError, require
from .app import app
from .common import COMPILE_HELP, DEVICE_HELP, SAMPLER_HELP, csv_list, out_console, print_table, resolve_device

#: the sampling switches both commands share
SHIFT_WIDENING = typer.Option(True, help="Widen the samples of spots farther from the training data than a "
                              "typical training section is from the others (the shift score; see the predict "
                              "guide).")
SPATIAL_NOISE = typer.Option(True, "--spatial-noise/--independent-spots",
                             help="Draw whole sections: neighbouring spots' samples co-vary as the tissue's do, "
                             "so one draw is a coherent map (each spot's own distribution is unchanged; see the "
                             "predict guide).")


def depth_option(text: str) -> float | str:
    """``--depth``: auto or a positive ratio."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise StemError(f"--depth must be auto or a positive ratio, got '{text}'") from None


@app.command()
def predict(
    run: Path = typer.Argument(..., help="A training run folder (stem train)."),
    out: Path = typer.Option(..., help="Output .h5ad (one section) or folder (several)."),
    sections: str = typer.Option("", help="Sections of the prepared dataset (default: holdout)."),
    prep: Path | None = typer.Option(None, help="Prepared dataset (default: the run's)."),
    num_samples: int = typer.Option(DEFAULT_NUM_SAMPLES, help="Expression samples per spot (paper: 20)."),
    sampler: str = typer.Option(DEFAULT_SAMPLER, help=SAMPLER_HELP),
    summary: str = typer.Option("recipe", help="recipe (the run's: posterior mean or sample mean) | "
                                "mean | median | mode of the samples"),
    keep_samples: bool = typer.Option(False, help="Also write every sample (.samples.npy)."),
    shift_widening: bool = SHIFT_WIDENING,
    spatial_noise: bool = SPATIAL_NOISE,
    depth: str = typer.Option("1", help="The sections' sequencing depth relative to the training sections' "
                              "(a ratio; auto: measured from each section's counts against its prediction). "
                              "Below 1 the samples are thinned as a shallower run would measure them."),
    seed: int = typer.Option(0, help="Sampling seed."),
    checkpoint: Path | None = typer.Option(None, help="A specific checkpoint (default: the run's best "
                                           "validated state, else its latest)."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    compile: bool = typer.Option(False, help=COMPILE_HELP),
    overwrite: bool = typer.Option(False, help="Replace existing outputs."),
) -> None:
    """Predict expression (mean/median/mode and std over samples) for prepared sections."""
    from ..atomic import read_json
    from ..data.dataset import open_prepared
    from ..diffusion import parse_sampler
    from ..prediction.output import predict_section
    from ..stem import PredictSettings, StemModel

    cfg_path = run / "config.json"
    require(cfg_path.is_file(), f"{run} is not a training run (no config.json)")
    run_config = read_json(cfg_path, "training run")
    settings = PredictSettings(num_samples=num_samples, sampler=sampler,
                               summary=None if summary == "recipe" else summary, seed=seed,
                               device=resolve_device(device), compile=compile, shift_widening=shift_widening,
                               depth=depth_option(depth), spatial_noise=spatial_noise)
    model = StemModel.from_run(run, checkpoint)
    parse_sampler(sampler, model.diffusion.num_steps)
    ds = open_prepared(prep or run_config["train"]["prep"])
    require_separate(out, [run, ds.root], [run, ds.root])
    model.require_compatible(ds)
    ids = csv_list(sections) or ds.holdout
    require(bool(ids), "no --sections given and the prepared dataset has no holdout")
    many = len(ids) > 1
    rows = [predict_section(model, ds, sid, target=out / f"{sid}_pred.h5ad" if many else out, settings=settings,
                            keep_samples=keep_samples, overwrite=overwrite) for sid in ids]
    print_table(rows, f"predictions from {run}")


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
    num_samples: int = typer.Option(DEFAULT_NUM_SAMPLES, help="Expression samples per spot."),
    sampler: str = typer.Option(DEFAULT_SAMPLER, help=SAMPLER_HELP),
    shift_widening: bool = SHIFT_WIDENING,
    spatial_noise: bool = SPATIAL_NOISE,
    depth: float = typer.Option(1.0, help="The slide's expected sequencing depth relative to the training "
                                "sections' (a ratio; below 1 the samples are thinned as a shallower run would "
                                "measure them)."),
    weights: str = typer.Option("", help="Encoder checkpoint(s), as given to stem prepare."),
    batch_size: int = typer.Option(64, help="Patches per encoder batch."),
    seed: int = typer.Option(0, help="Sampling seed."),
    checkpoint: Path | None = typer.Option(None, help="A specific checkpoint (default: the run's best "
                                           "validated state, else its latest)."),
    cache: Path | None = typer.Option(None, help="Embedding cache (resumes an interrupted slide)."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    compile: bool = typer.Option(False, help=COMPILE_HELP),
    max_pixels: float = typer.Option(250e6, help="Largest JPEG/PNG (pixels) decoded whole; larger ones "
                                     "must be converted to a tiled TIFF (tiled TIFF/SVS are read by region)."),
    overwrite: bool = typer.Option(False, help="Replace --out if it exists."),
) -> None:
    """Predict expression maps over a whole H&E slide with no ST measurement."""
    from ..diffusion import parse_sampler
    from ..prediction.slide import SlideConfig, predict_slide
    from ..stem import PredictSettings

    require((run / "config.json").is_file(), f"{run} is not a training run (no config.json)")
    require((image is None) != (slides is None), "give either --image or --slides")
    require_separate(out, [run, image or slides], [run])
    require(batch_size >= 1, "--batch-size must be positive")
    require(mpp is None or mpp > 0, f"--mpp must be positive, got {mpp}")
    parse_sampler(sampler, 1000)
    settings = PredictSettings(num_samples=num_samples, sampler=sampler, seed=seed, device=resolve_device(device),
                               compile=compile, shift_widening=shift_widening, depth=depth,
                               spatial_noise=spatial_noise)
    cfg = SlideConfig(
        run=str(run), image=str(image), out=str(out), mpp=mpp, pitch_um=pitch, layout=layout,
        genes=csv_list(genes), predict=settings, batch_size=batch_size, min_tissue=min_tissue,
        weights=csv_list(weights), checkpoint=str(checkpoint) if checkpoint else None,
        cache_dir=str(cache) if cache else None, overwrite=overwrite, max_pixels=max_pixels)
    if slides is not None:
        from ..prediction.slides import predict_slides

        res = predict_slides(cfg, slides)
        print_table([res], f"whole-slide predictions in {out}")
        return
    res = predict_slide(cfg)
    print_table([{k: res[k] for k in ("spots", "genes", "mpp", "layout", "pitch_um", "total_seconds")}],
                 f"whole-slide prediction {out}")
    out_console.print(f"tissue mask: {res['mask']}; maps: {Path(res['maps'][0]).parent if res['maps'] else '-'}")
