"""What the spread calibration at the end of every `stem train` costs, and whether fewer spots or
samples give the same factor.

The calibration draws DEFAULT_NUM_SAMPLES samples (dpm++:10) plus the posterior-mean point for up to
CALIBRATION_SPOTS spots of the validation section and picks the factor on the 80 % interval
coverage (``training/targets.py: spread_factor``). Here a trained run (the CPU demo's) draws once
for every spot of a section it never saw; each smaller design (spots × samples) is then scored on
random subsets of those draws (draws of a row are independent, so the first s of 20 are s draws),
against the factor from all spots and 20 samples. The time of a design is the measured time per
drawn row times its rows.

Usage (repository root): .venv/bin/python benchmarks/calibration_cost.py [--run runs/demo/run]
  [--prep runs/demo/prep] [--section C6]  → results/calibration_cost.{json,md}
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from stem_st.data.units import log2_expression
from stem_st.defaults import DEFAULT_NUM_SAMPLES, DEFAULT_SAMPLER
from stem_st.stem import PredictSettings, StemModel
from stem_st.training.data import section_counts
from stem_st.training.targets import spread_factor

ROOT = Path(__file__).resolve().parents[1]
SPOTS = (32, 64, 96, 128, 256)
SAMPLES = (5, 10, 20)
REPEATS = 20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default=str(ROOT / "runs/demo/run"))
    p.add_argument("--prep", default=str(ROOT / "runs/demo/prep"))
    p.add_argument("--section", default="C6")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/calibration_cost"))
    p.add_argument("--note", default="", help="a line on the machine's load, printed under the table")
    args = p.parse_args()
    torch.set_num_threads(2)
    from stem_st.data.dataset import open_prepared

    ds = open_prepared(args.prep)
    model = StemModel.from_run(args.run)
    a = ds.section(args.section)
    cond = model.condition(ds.embeddings(args.section)[:, 0], np.asarray(a.obsm["spatial"]))
    x = log2_expression(section_counts(ds, args.section))
    settings = PredictSettings(num_samples=DEFAULT_NUM_SAMPLES, sampler=DEFAULT_SAMPLER, seed=0, device="cpu")
    t0 = time.perf_counter()
    draws = model.draw_z(cond, settings)
    t_draw = time.perf_counter() - t0
    t0 = time.perf_counter()
    centre = model.centre_z(cond, settings)
    t_point = time.perf_counter() - t0
    z = model.target.encode(x, model.target.prior(cond))
    n = len(cond)
    full = spread_factor(z, draws, centre)
    rng = np.random.default_rng(0)
    rows = []
    for spots in (*[s for s in SPOTS if s < n], n):
        for samples in SAMPLES:
            f = [spread_factor(z[i], draws[i, :samples], centre[i])
                 for i in (rng.permutation(n)[:spots] for _ in range(REPEATS if spots < n else 1))]
            seconds = spots * (samples * t_draw / (n * DEFAULT_NUM_SAMPLES) + t_point / n)
            rows.append({"spots": spots, "samples": samples, "factor_mean": float(np.mean(f)),
                         "factor_sd": float(np.std(f)),
                         "factor_max_abs_diff": float(np.max(np.abs(np.subtract(f, full)))),
                         "seconds": round(seconds, 2)})
    out = {"run": args.run, "section": args.section, "spots": n, "reference_factor": full,
           "seconds_per_spot": {"samples_20": t_draw / n, "point": t_point / n}, "repeats": REPEATS,
           "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} torch threads, "
                      f"torch {torch.__version__}",
           "rows": rows}
    Path(args.out).with_suffix(".json").write_text(json.dumps(out, indent=1))
    md = ["# The spread calibration's cost against its precision (`benchmarks/calibration_cost.py`)", "",
          f"Run `{args.run}` (the CPU demo's: tiny, 600 × 32, the default recipe), section {args.section} "
          f"({n} spots, never seen in training); the reference factor (all spots, 20 samples of "
          f"{DEFAULT_SAMPLER}) is **{full:.2f}**. Each design's factor over {REPEATS} random spot subsets "
          f"(mean ± sd, and the largest difference from the reference); its time is the measured time "
          f"per drawn row ({out['machine']}) times its rows. Factors are on a 0.01 grid.", "",
          "| spots | samples | factor | largest difference | seconds |", "|---|---|---|---|---|"]
    md += [f"| {r['spots']} | {r['samples']} | {r['factor_mean']:.3f} ± {r['factor_sd']:.3f} | "
           f"{r['factor_max_abs_diff']:.2f} | {r['seconds']} |" for r in rows]
    if args.note:
        md += ["", args.note]
    out["note"] = args.note
    Path(args.out).with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
