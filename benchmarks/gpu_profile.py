"""Stem on a GPU: training steps/s and MFU of the paper preset at batch 256 in bf16, and the
time to predict a 4 000-spot slide × 20 samples with the default sampler, for each way of
running the network.

Everything runs through the package's own code paths: ``StemModel.fit`` (the training loop of
``stem train``: bf16 autocast, AdamW, EMA, the default recipe with its ridge prior and ring-2
context) on a synthetic cohort (``synthetic_cohort.py``), then ``StemModel.predict`` (posterior
mean + samples, as ``stem predict`` runs it) on a synthetic 4 000-spot section.

MFU counts matmul FLOPs only (``stem_speed.flops_per_row``; training = 3 × forward) against
the bf16 matrix-product rate measured on the same GPU (8192³, random data) and against the
datasheet's dense bf16 peak.

Usage (on the CUDA machine): python benchmarks/gpu_profile.py --parts train,sample --out DIR
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from report import write_text
from stem_speed import flops_per_row
from synthetic_cohort import write_cohort

from stem_st.data.dataset import open_prepared  # noqa: E402
from stem_st.recipe import RECIPES  # noqa: E402
from stem_st.stem import PredictSettings, StemModel, TrainSettings  # noqa: E402
from stem_st.stem import runtime as rt  # noqa: E402

DATASHEET_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def sync():
    torch.cuda.synchronize()


def ceilings() -> dict:
    """bf16 matmul TFLOP/s (8192³, random) and device-to-device copy GB/s (read + write)."""
    a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    times = []
    for i in range(13):
        sync()
        t0 = time.perf_counter()
        a @ b
        sync()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    src = torch.randn(1 << 30, device="cuda", dtype=torch.bfloat16)  # 2 GiB
    dst = torch.empty_like(src)
    ctimes = []
    for i in range(8):
        sync()
        t0 = time.perf_counter()
        dst.copy_(src)
        sync()
        if i >= 2:
            ctimes.append(time.perf_counter() - t0)
    del a, b, src, dst
    torch.cuda.empty_cache()
    return {"matmul_bf16_tflops": 2 * 8192**3 / np.median(times) / 1e12,
            "copy_gbps": 2 * 2 * (1 << 30) / np.median(ctimes) / 1e9}


def datasheet_peak() -> float:
    name = torch.cuda.get_device_name(0)
    return next((v for k, v in DATASHEET_TFLOPS.items() if k in name), float("nan"))


def train(prep: Path, work: Path, steps: int, warm: int, compile_: bool, peak: float) -> tuple[dict, StemModel]:
    ds = open_prepared(prep)
    settings = TrainSettings(prep=str(prep), preset="paper", steps=steps, batch_size=256, aug_ratio=1,
                             lr=1e-4, checkpoint_every=10**6, compile=compile_, recipe=RECIPES["default"])
    t0 = time.perf_counter()
    model, result = StemModel.fit(ds, work / f"run_compile{int(compile_)}", settings, device="cuda",
                                  progress=False)
    total = time.perf_counter() - t0
    sec = {int(r["step"]): float(r["seconds"]) for r in result.losses if r.get("seconds") not in (None, "")}
    rate = (steps - warm) / (sec[steps] - sec[warm])
    cfg = model.net_cfg
    tflops = 3 * flops_per_row(cfg) * 256 * rate / 1e12
    return {"compile": compile_, "steps_per_s": rate, "profiles_per_s": 256 * rate,
            "model_tflops": tflops, "mfu_vs_measured": tflops / peak,
            "mfu_vs_datasheet": tflops / datasheet_peak(), "first_steps_s": sec[warm],
            "fit_total_s": total, "preset": "paper", "depth": cfg.depth, "hidden": cfg.hidden,
            "genes": cfg.num_genes, "cond_dim": cfg.cond_dim, "batch": 256,
            "timed_steps": f"{warm + 1}..{steps}"}, model


def grid_xy(n: int) -> np.ndarray:
    side = int(np.ceil(np.sqrt(n)))
    return (np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2)[:n] * 100.0)


def predict_once(model: StemModel, emb, xy, settings: PredictSettings):
    sync()
    t0 = time.perf_counter()
    point, std, draws = model.predict(emb, xy, settings)
    sync()
    return time.perf_counter() - t0, point, draws


def rows_chosen(runtime) -> int:
    """Rows per forward the runtime measured for its settings (keys: device, network config,
    bf16, compile; the latest wins), else the CUDA default it falls back on."""
    same = [rows for key, rows in rt.measured_rows().items() if tuple(key[2:]) == (runtime.bf16, runtime.compile)]
    return same[-1] if same else rt.DEFAULT_ROWS["cuda"]


def sample(model: StemModel, spots: int, samples: int, sampler: str, fp32_spots: int, peak: float,
           variants: str) -> list[dict]:
    rng = np.random.default_rng(1)
    width = model.net_cfg.cond_dim // 3
    emb, xy = rng.normal(size=(spots, width)).astype(np.float32), grid_xy(spots)
    steps = int(sampler.split(":")[1])
    rows = []

    def run(label, runtime, n_spots, smp, repeat=1):
        settings = PredictSettings(num_samples=samples, sampler=smp, device="cuda", bf16=runtime.bf16,
                                   compile=runtime.compile, batch_rows=runtime.batch_rows)
        e, p = emb[:n_spots], xy[:n_spots]
        first, point, draws = predict_once(model, e, p, settings)
        steady = [predict_once(model, e, p, settings)[0] for _ in range(repeat - 1)]
        s = min(steady) if steady else first
        calls = n_spots * (samples * int(smp.split(":")[1]) + model.recipe.posterior_draws)
        tflops = calls * flops_per_row(model.net_cfg) / s / 1e12
        chosen = runtime.batch_rows or rows_chosen(runtime)
        row = {"variant": label, "sampler": smp, "spots": n_spots, "samples": samples,
               "bf16": runtime.bf16, "compile": runtime.compile, "rows_per_forward": chosen,
               "first_call_s": first, "steady_s": s, "spots_per_s": n_spots / s,
               "s_per_4000_spots": 4000 * s / n_spots, "model_tflops": tflops,
               "mfu_vs_measured": tflops / peak,
               "floor_s_per_4000_spots": 4000 / n_spots * calls * flops_per_row(model.net_cfg) / peak / 1e12}
        print(json.dumps(row), flush=True)
        rows.append(row)
        return point, draws

    warm = PredictSettings(num_samples=2, sampler=sampler, device="cuda")
    predict_once(model, emb[:64], xy[:64], warm)  # CUDA context, cuBLAS handles
    if "precision" in variants:
        ref_point, ref_draws = run("fp32, 2048 rows (before)", rt.Runtime(bf16=False, batch_rows=2048),
                                   fp32_spots, sampler)
        p16, d16 = run("bf16, 2048 rows", rt.Runtime(batch_rows=2048), spots, sampler)
        rows[-1]["point_rel_diff_vs_fp32"] = float(np.linalg.norm(p16[:fp32_spots] - ref_point)
                                                   / np.linalg.norm(ref_point))
        rows[-1]["samples_rel_diff_vs_fp32"] = float(np.linalg.norm(d16[:fp32_spots] - ref_draws)
                                                     / np.linalg.norm(ref_draws))
        p, _ = run("bf16, 8192 rows", rt.Runtime(batch_rows=8192), spots, sampler)
        rows[-1]["point_max_abs_diff_vs_2048_rows"] = float(np.abs(p - p16).max())
    if "measured" in variants:
        run("bf16, measured rows", rt.Runtime(), spots, sampler, repeat=2)
    if "compile" in variants:
        compiled = rt.Runtime(compile=True)
        run("bf16, measured rows, torch.compile", compiled, spots, sampler, repeat=2)
        run("bf16, measured rows, torch.compile", compiled, spots, f"dpm++:{max(1, steps // 2)}")
        # another slide size in the same process: the padded last batch keeps one compiled shape
        run("bf16, measured rows, torch.compile (no recompile)", compiled, spots * 3 // 4, sampler)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="train,sample")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--spots", type=int, default=4000)
    ap.add_argument("--fp32-spots", type=int, default=500)
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--sampler", default="dpm++:10")
    ap.add_argument("--variants", default="precision,measured,compile", help="sampling variants")
    ap.add_argument("--train-steps", type=int, default=120)
    ap.add_argument("--warm-steps", type=int, default=40)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    res = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
           "datasheet_bf16_tflops": datasheet_peak()}
    res.update(ceilings())
    peak = res["matmul_bf16_tflops"]
    print(json.dumps(res), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        prep = write_cohort(Path(tmp) / "prep", sections=5, spots=600, views=2, dim=1280, genes=200)
        model = None
        if "train" in a.parts:
            res["train"] = []
            for comp in (False, True):
                row, model = train(prep, Path(tmp), a.train_steps, a.warm_steps, comp, peak)
                print(json.dumps(row), flush=True)
                res["train"].append(row)
        if "sample" in a.parts:
            if model is None:
                row, model = train(prep, Path(tmp), 20, 10, False, peak)
            res["sample"] = sample(model, a.spots, a.samples, a.sampler, a.fp32_spots, peak, a.variants)
    name = out / f"gpu_profile_{a.parts.replace(',', '_')}_{a.variants.replace(',', '_')}.json"
    write_text(name, json.dumps(res, indent=1))  # temporary file, then renamed into place
    print("wrote", name)


if __name__ == "__main__":
    main()
