"""Whole-slide prediction checked against truth: run `predict-slide` on the bare image of a
held-out section (its spots ignored), interpolate the grid predictions at the measured spot
positions, and compare with the measured expression and with `stem predict` at the true spots.

Usage: .venv/bin/python benchmarks/slide_vs_spots.py RUN PREP [--section C6] [--num-samples 10]
           [--sampler ddim:10] [--out runs/slide_check]

RUN is a training run (``stem train``) or a model folder written by ``StemModel.save`` (such as
``runs/accuracy_loo/models/C6/stem-default``, kept by ``accuracy_loo.py``); PREP must hold the
section out of RUN's training.

Writes ``benchmarks/results/slide_vs_spots.{json,md}`` (``--results`` elsewhere) with the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
from report import RESULTS, machine, write_results
from scipy.interpolate import LinearNDInterpolator, NearestNDInterpolator

from stem_st.data.dataset import open_prepared
from stem_st.data.units import log2_expression
from stem_st.evaluation.metrics import pearson_per_gene, score
from stem_st.prediction.slide import SlideConfig, predict_slide
from stem_st.stem import PredictSettings, StemModel


def interpolate(grid_xy: np.ndarray, values: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Linear interpolation inside the grid's hull, nearest grid spot outside it."""
    lin = LinearNDInterpolator(grid_xy, values)(xy)
    near = NearestNDInterpolator(grid_xy, values)(xy)
    return np.where(np.isnan(lin), near, lin)


def markdown(r: dict) -> str:
    lines = ["# Whole-slide prediction against the measured spots", "",
             f"Machine: {r['machine']}. Command: `{r['command']}`. `predict-slide` on the bare image of "
             f"{r['section']} ({r['grid_spots']} virtual spots, {r['layout']} grid, pitch {r['pitch_um']} µm; "
             f"{r['slide_seconds']} s), interpolated at the {r['measured_spots']} measured spots, beside "
             f"`stem predict` at those spots ({r['spot_seconds']} s); {r['num_samples']} samples, "
             f"{r['sampler']}; log2(1 + count).", "",
             "| prediction | " + " | ".join(next(iter(r["metrics"].values()))) + " |",
             "|---" * (1 + len(next(iter(r["metrics"].values())))) + "|"]
    lines += [f"| {name} | " + " | ".join(f"{v:.4f}" for v in m.values()) + " |"
              for name, m in r["metrics"].items()]
    lines += ["", "Mean per-gene Pearson correlation between the two predictions at the measured spots: "
              f"{r['mean_gene_pcc_slide_vs_spot_predictions']:.4f}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("prep")
    ap.add_argument("--section", default="C6")
    ap.add_argument("--num-samples", type=int, default=10)
    ap.add_argument("--sampler", default="ddim:10")
    ap.add_argument("--out", default="runs/slide_check")
    ap.add_argument("--results", default=str(RESULTS / "slide_vs_spots"), help="writes RESULTS.json and .md")
    a = ap.parse_args()
    ds = open_prepared(a.prep)
    sec = ds.section(a.section)
    info = sec.uns["stem"]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    image = Path(info["image_path"])  # as recorded by stem prepare (run from the same folder)
    model = StemModel.load(a.run) if (Path(a.run) / "model.pt").is_file() else StemModel.from_run(a.run)
    t = time.perf_counter()
    settings = PredictSettings(num_samples=a.num_samples, sampler=a.sampler)
    res = predict_slide(SlideConfig(run=a.run, image=str(image), out=str(out / f"{a.section}_slide.h5ad"),
                                    mpp=float(info["mpp"]), predict=settings,
                                    overwrite=True, progress=False), model)
    slide_s = time.perf_counter() - t
    grid = ad.read_h5ad(res["file"])
    xy = np.asarray(sec.obsm["spatial"])
    genes = list(grid.var_names)
    truth = log2_expression(np.asarray(sec[:, genes].X))
    at_spots = interpolate(np.asarray(grid.obsm["spatial"]), np.asarray(grid.X), xy)
    t = time.perf_counter()
    spot_xy = np.asarray(ds.section(a.section).obsm["spatial"])
    spot_pred, _, _ = model.predict(ds.embeddings(a.section)[:, 0], spot_xy, settings)
    spot_s = time.perf_counter() - t
    keys = ("PCC-10", "PCC-50", "PCC-all", "MSE", "MAE")
    rows = {"predict-slide, interpolated": score(truth, at_spots),
            "stem predict at spots": score(truth, spot_pred)}
    agree = np.nanmean(pearson_per_gene(spot_pred, at_spots))
    report = {"machine": machine(), "command": "python benchmarks/slide_vs_spots.py " + " ".join(sys.argv[1:]),
              "section": a.section, "grid_spots": res["spots"], "measured_spots": len(xy),
              "layout": res["layout"], "pitch_um": res["pitch_um"], "num_samples": a.num_samples,
              "sampler": a.sampler, "slide_seconds": round(slide_s, 1), "spot_seconds": round(spot_s, 1),
              "mean_gene_pcc_slide_vs_spot_predictions": round(float(agree), 4),
              "metrics": {k: {m: round(v[m], 4) for m in keys} for k, v in rows.items()}}
    write_results(a.results, report, markdown(report))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
