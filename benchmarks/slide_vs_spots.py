"""Whole-slide prediction checked against truth: run `predict-slide` on the bare image of a
held-out section (its spots ignored), interpolate the grid predictions at the measured spot
positions, and compare with the measured expression and with `stem predict` at the true spots.

Usage: .venv/bin/python benchmarks/slide_vs_spots.py RUN PREP [--section C6] [--num-samples 10]
           [--sampler ddim:10] [--out runs/slide_check]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import anndata as ad
import numpy as np
from scipy.interpolate import LinearNDInterpolator, NearestNDInterpolator

from stem_st.data.prepared import open_prepared
from stem_st.evaluation.metrics import pearson_per_gene, score
from stem_st.prediction.slide import SlideConfig, predict_slide
from stem_st.stem_model import StemModel
from stem_st.training.data import log2_expression


def interpolate(grid_xy: np.ndarray, values: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Linear interpolation inside the grid's hull, nearest grid spot outside it."""
    lin = LinearNDInterpolator(grid_xy, values)(xy)
    near = NearestNDInterpolator(grid_xy, values)(xy)
    return np.where(np.isnan(lin), near, lin)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("prep")
    ap.add_argument("--section", default="C6")
    ap.add_argument("--num-samples", type=int, default=10)
    ap.add_argument("--sampler", default="ddim:10")
    ap.add_argument("--out", default="runs/slide_check")
    a = ap.parse_args()
    ds = open_prepared(a.prep)
    sec = ds.section(a.section)
    info = sec.uns["stem"]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    image = Path(info["image_path"])  # as recorded by stem prepare (run from the same folder)
    t = time.perf_counter()
    res = predict_slide(SlideConfig(run=a.run, image=str(image), out=str(out / f"{a.section}_slide.h5ad"),
                                    mpp=float(info["mpp"]), num_samples=a.num_samples, sampler=a.sampler,
                                    overwrite=True, progress=False))
    slide_s = time.perf_counter() - t
    grid = ad.read_h5ad(res["file"])
    xy = np.asarray(sec.obsm["spatial"])
    genes = list(grid.var_names)
    truth = log2_expression(np.asarray(sec[:, genes].X))
    at_spots = interpolate(np.asarray(grid.obsm["spatial"]), np.asarray(grid.X), xy)
    model = StemModel.from_run(a.run)
    t = time.perf_counter()
    spot_pred, _, _ = model.predict(ds.embeddings(a.section)[:, 0], a.num_samples, a.sampler,
                                    xy=np.asarray(ds.section(a.section).obsm["spatial"]))
    spot_s = time.perf_counter() - t
    keys = ("PCC-10", "PCC-50", "PCC-all", "MSE", "MAE")
    rows = {"predict-slide, interpolated": score(truth, at_spots),
            "stem predict at spots": score(truth, spot_pred)}
    agree = np.nanmean(pearson_per_gene(spot_pred, at_spots))
    report = {"section": a.section, "grid_spots": res["spots"], "measured_spots": len(xy),
              "layout": res["layout"], "pitch_um": res["pitch_um"], "num_samples": a.num_samples,
              "sampler": a.sampler, "slide_seconds": round(slide_s, 1), "spot_seconds": round(spot_s, 1),
              "mean_gene_pcc_slide_vs_spot_predictions": round(float(agree), 4),
              "metrics": {k: {m: round(v[m], 4) for m in keys} for k, v in rows.items()}}
    (out / "slide_vs_spots.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
