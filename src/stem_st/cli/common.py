"""What every ``stem`` command shares: the console, logging, option parsing, tables, help texts."""

from __future__ import annotations

import logging
import math
import sys

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from ..defaults import DEFAULT_SAMPLER

# a log file or a pipe gets long lines rather than an 80-column wrap
console = Console(stderr=True, width=None if sys.stderr.isatty() else 150)
out_console = Console(width=None if sys.stdout.isatty() else 150)

DEVICE_HELP = "auto | cpu | cuda[:N]"
COMPILE_HELP = ("torch.compile the network for sampling: a one-off compile of tens of seconds that pays for "
                "long or repeated jobs (timings per machine: benchmarks/results/gpu_profile.md).")
SAMPLER_HELP = ("ddpm (all T steps) | ddpm:S | ddim:S[:eta] | dpm++:S (DPM-Solver++ 2M); "
                f"default {DEFAULT_SAMPLER}. "
                "S = network calls per sample: the cost is spots × samples × S calls "
                "(accuracy per sampler: benchmarks/results/sampler_curve.md).")
RECIPE_HELP = ("default (z-scored residual of a ridge prior, ring-2 spatial context, v objective with "
               "min-SNR-5, posterior-mean point estimate; chosen on benchmarks/accuracy_loo.py) | "
               "paper (Zhu et al.)")
RECIPE_SET_HELP = ("Override recipe fields: key=value,... (target, prior, context, objective, "
                   "min_snr_gamma, point, posterior_draws, residual_weight, centre_samples, "
                   "calibrate_spread, spread_per_gene, spread_criterion (coverage, crps, levels, rank), "
                   "spread_common, count_lattice, correlated_noise, lr_schedule, cond_dropout, guidance, "
                   "cond_noise, neighbour_targets).")


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False, show_time=False)],
                        force=True)
    for noisy in ("PIL", "h5py", "matplotlib", "numba", "fsspec", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def csv_list(value: str | None) -> list[str]:
    """``"a, b,,c"`` → ``["a", "b", "c"]``."""
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def resolve_device(name: str) -> str:
    """``auto`` → cuda when available, else cpu; refuse unknown or unavailable devices."""
    from ..devices import resolve_device as resolve

    return resolve(name)


def recipe_from(name: str, overrides: str):
    from ..recipe import get_recipe

    return get_recipe(name, overrides)


def print_table(rows: list[dict], title: str, caption: str | None = None) -> None:
    if not rows:
        return
    table = Table(title=title, caption=caption)
    for key in rows[0]:
        table.add_column(key, justify="right" if isinstance(rows[0][key], (int, float)) else "left")
    for r in rows:
        table.add_row(*[str(v) for v in r.values()])
    out_console.print(table)


def print_metric_table(rows: list[dict], title: str) -> None:
    cols = ("method", "PCC-10", "PCC-50", "PCC-all", "MSE", "MAE", "RVD", "CRPS", "energy", "coverage50",
            "coverage80", "coverage95", "rank_coverage80", "ARI", "NMI", "shift_median")
    cols = tuple(c for c in cols if any(c in r for r in rows))
    cells = [{c: _cell(r.get(c)) for c in cols} for r in rows]
    print_table(cells, title, UNDEFINED if any(v == "–" for r in cells for v in r.values()) else None)


#: the caption under a metric table with "–" cells
UNDEFINED = ("–: undefined for that method (a prediction constant per gene has no correlation; a point "
             "prediction draws no samples, so no coverage or proper score; shift_median, how far the section lies "
             "from the training data, is a trained model's own)")


def _cell(v) -> str | int:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return round(v, 3) if isinstance(v, float) else v


