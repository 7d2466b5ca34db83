"""Whole-slide throughput and peak memory: a large pyramidal TIFF tiled from real HER2ST
texture (C2's tissue, mirrored so tiles join without seams), written tile by tile, then
`predict-slide` over ≥ 20 000 virtual spots.

Usage: .venv/bin/python benchmarks/slide_throughput.py RUN [--side 24000] [--pitch 100]
           [--num-samples 1] [--sampler ddim:5] [--out runs/slide_bench]
Prints spots/s per stage, total, and peak resident memory, with the machine; writes
``benchmarks/results/slide_throughput.{json,md}`` (``--from-json`` only rewrites the .md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np
import tifffile
from report import write_text

from stem_st.data.images import open_image
from stem_st.data.readers import read_section

HER2ST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "her2st"
MPP = 0.6889718628297177
TILE = 512


def texture(side: int = 2048) -> np.ndarray:
    """A tissue-only square of C2 around its spots, mirrored in both axes (period 2·side)."""
    c2 = read_section("her2st", HER2ST, "C2")
    cx, cy = np.median(np.asarray(c2.obsm["spatial"]), 0).astype(int)
    with open_image(c2.uns["stem"]["image_path"]) as img:
        crop = img.read_region(cx - side // 2, cy - side // 2, side, side)
    top = np.concatenate([crop, crop[:, ::-1]], 1)
    return np.concatenate([top, top[::-1]], 0)


def write_slide(path: Path, side: int, tex: np.ndarray) -> None:
    """A tiled, JPEG-compressed pyramidal TIFF (levels 1, 1/4, 1/16) never held whole."""
    def tiles(t: np.ndarray, n: int):
        p = t.shape[0]
        for y in range(0, n, TILE):
            for x in range(0, n, TILE):
                ys, xs = np.arange(y, y + TILE) % p, np.arange(x, x + TILE) % p
                yield t[np.ix_(ys, xs)]

    opts = dict(tile=(TILE, TILE), photometric="rgb", compression="jpeg", resolutionunit="CENTIMETER",
                dtype=np.uint8)
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        n = -(-side // TILE) * TILE
        tif.write(tiles(tex, n), shape=(n, n, 3), subifds=2, resolution=(1e4 / MPP, 1e4 / MPP), **opts)
        for f in (4, 16):
            small = tex[::f, ::f]
            m = -(-(n // f) // TILE) * TILE
            tif.write(tiles(small, m), shape=(m, m, 3), subfiletype=1,
                      resolution=(1e4 / MPP / f, 1e4 / MPP / f), **opts)


def markdown(r: dict) -> str:
    s = r["seconds"]
    return "\n".join([
        "# Whole-slide throughput and peak memory (`predict-slide`)", "",
        f"Machine: {r['machine']}, {r.get('threads', '?')} threads. Run: `{r.get('run', '?')}`. A synthetic "
        f"{r['slide_px']} px square pyramidal TIFF ({r['slide_full_res_gib']} GiB at full resolution) tiled "
        f"from HER2ST C2 texture; {r['spots']} virtual spots at {r['pitch_um']} µm pitch; "
        f"{r['num_samples']} sample(s) per spot, {r['sampler']}.", "",
        "| stage | seconds | spots/s |", "|---|---|---|",
        f"| mask and grid | {s['mask_and_grid']} | |",
        f"| embed | {s['embed']} | {r['embed_spots_per_second']} |",
        f"| sample | {s['sample']} | {r['sample_spots_per_second']} |",
        f"| **total** | **{r['total_seconds']}** | **{r['spots_per_second']}** |", "",
        f"Peak resident memory {r['peak_rss_mib']} MiB ({r['rss_before_mib']} MiB before the run)."]) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--side", type=int, default=24000)
    ap.add_argument("--pitch", type=float, default=100.0)
    ap.add_argument("--num-samples", type=int, default=1)
    ap.add_argument("--sampler", default="ddim:5")
    ap.add_argument("--out", default="runs/slide_bench")
    ap.add_argument("--results", default=str(Path(__file__).resolve().parent / "results/slide_throughput.json"))
    ap.add_argument("--from-json", action="store_true", help="only rewrite the .md beside --results")
    a = ap.parse_args()
    if a.from_json:
        write_text(Path(a.results).with_suffix(".md"), markdown(json.loads(Path(a.results).read_text())))
        return
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    slide = out / f"synthetic_{a.side}.tif"
    if not slide.exists():
        t = time.perf_counter()
        write_slide(slide, a.side, texture())
        print(f"wrote {slide} ({slide.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t:.0f} s")
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    from stem_st.prediction.slide import SlideConfig, predict_slide
    from stem_st.stem import PredictSettings

    t = time.perf_counter()
    res = predict_slide(SlideConfig(run=a.run, image=str(slide), out=str(out / "pred.h5ad"), pitch_um=a.pitch,
                                    predict=PredictSettings(num_samples=a.num_samples, sampler=a.sampler),
                                    overwrite=True,
                                    cache_dir=str(out / "cache"), progress=False))
    total = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    import torch

    report = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
                         f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}",
              "slide_px": a.side, "slide_full_res_gib": round(a.side**2 * 3 / 2**30, 2), "spots": res["spots"],
              "pitch_um": a.pitch, "num_samples": a.num_samples, "sampler": a.sampler,
              "seconds": res["seconds"], "total_seconds": round(total, 1),
              "spots_per_second": round(res["spots"] / total, 2),
              "embed_spots_per_second": round(res["spots"] / res["seconds"]["embed"], 2),
              "sample_spots_per_second": round(res["spots"] / res["seconds"]["sample"], 2),
              "peak_rss_mib": round(peak), "rss_before_mib": round(rss0)}
    (out / "throughput.json").write_text(json.dumps(report, indent=2))
    full = {**report, "run": a.run, "threads": torch.get_num_threads()}
    write_text(a.results, json.dumps(full, indent=2))
    write_text(Path(a.results).with_suffix(".md"), markdown(full))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
