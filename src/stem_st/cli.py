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

from .errors import StemError, require

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Stem-ST: predict spatial gene expression from H&E histology.")
console = Console(stderr=True)
out_console = Console()


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
) -> None:
    """Turn H&E images plus spot counts into a prepared dataset (panel counts + embeddings)."""
    from .data.readers import ReaderOptions
    from .encoders.cache import default_cache_dir
    from .prepare import PrepareConfig
    from .prepare import prepare as run_prepare

    ids = _csv(sections) or _default_sections(layout, data)
    require(batch_size > 0, "--batch-size must be positive")
    cfg = PrepareConfig(
        data=str(data), layout=layout, sections=ids, out=str(out), holdout=_csv(holdout),
        encoders=[e.strip() for e in encoder.split("+") if e.strip()], weights=_csv(weights),
        views=views, genes=genes, patch_mode=patch_mode, batch_size=batch_size,
        device=_device(device), overwrite=overwrite,
        cache_dir=None if no_cache else str(cache or default_cache_dir()),
        reader=ReaderOptions(image=image, image_scale=image_scale, mpp=mpp, platform=platform,
                             counts_layer=counts_layer),
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


@app.command()
def demo(
    data: Path = typer.Option(..., help="The HER2ST folder."),
    out: Path = typer.Option(Path("runs/demo"), help="Demo output folder (owned by the demo)."),
    views: int = typer.Option(8, help="Dihedral views per spot."),
) -> None:
    """The main job on HER2ST: prepare C2-C6 + A1 with C6 held out, then summarise."""
    marker = out / ".stem-demo"
    require(not out.exists() or marker.exists(),
            f"{out} exists and was not made by 'stem demo'; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    marker.touch()
    from .prepare import PrepareConfig
    from .prepare import prepare as run_prepare

    cfg = PrepareConfig(data=str(data), layout="her2st", sections=["C2", "C3", "C4", "C5", "C6", "A1"],
                        holdout=["C6"], views=views, out=str(out / "prep"), overwrite=True,
                        cache_dir=str(out / "cache"), device=_device("auto"))
    rows = run_prepare(cfg)
    _print_table(rows, f"prepared dataset {out / 'prep'} (ImageNet EfficientNet-Lite0 embeddings)")
    out_console.print(f"prepared dataset: {out / 'prep'}  (inspect with: stem info {out / 'prep'})")


def main() -> None:
    """Entry point: run the app, turning errors into one line and an exit code."""
    try:
        app(standalone_mode=False)
    except StemError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        console.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # an internal error: still one line unless debugging
        if os.environ.get("STEM_DEBUG"):
            raise
        console.print(f"[bold red]error:[/] {type(exc).__name__}: {exc} "
                      "(set STEM_DEBUG=1 for the traceback)", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
