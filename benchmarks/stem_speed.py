"""Stem throughput: training steps/s and prediction spots/s per preset, on this machine.

Usage: .venv/bin/python benchmarks/stem_speed.py [--presets small,paper] [--genes 200]
       [--cond-dim 1280] [--device auto] [--measure-steps 3] [--bf16]

Training: optimizer steps/s at batch 256 (halved until it fits). Prediction: spots/s with 20
samples per spot for ``ddpm`` (all 1000 steps) and ``ddim:50``; the reverse chain is timed over
``--measure-steps`` denoising steps on a batch of spots × 20 rows and scaled to the full chain
(every step costs the same forward pass). On CUDA, also model FLOP utilisation (MFU) against the
given peak. Writes ``benchmarks/results/stem_speed.{json,md}`` (``--results`` elsewhere).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from report import RESULTS, machine, write_results
from stem_st.stem_model import network_config

from stem_st.diffusion import GaussianDiffusion
from stem_st.models import StemDiT


def flops_per_row(cfg) -> float:
    """Forward FLOPs for one expression profile (matmuls only; 2 FLOPs per MAC)."""
    g, d, r = cfg.num_genes, cfg.hidden, cfg.mlp_ratio
    per_block = g * (3 * d * d + d * d + 2 * r * d * d) + 2 * g * g * d + 6 * d * d
    embed = g * d * d + 256 * d + d * d + cfg.cond_dim * d + d * d
    return 2.0 * (cfg.depth * per_block + embed + 2 * d * d + g * d)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _train_step(net, opt, diff, x, c, bf16):
    t = torch.randint(1000, (len(x),), device=x.device)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        loss = diff.training_loss(lambda xt, tt: net(xt, tt, c), x, t, torch.randn_like(x))
    opt.zero_grad()
    loss["loss"].mean().backward()
    opt.step()


def bench_train(cfg, device, steps, bf16):
    diff = GaussianDiffusion(1000)
    net = StemDiT(cfg).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    batch = 256
    while True:
        try:
            x = torch.rand(batch, cfg.num_genes, device=device) * 8
            c = torch.randn(batch, cfg.cond_dim, device=device)
            _train_step(net, opt, diff, x, c, bf16)
            sync(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                _train_step(net, opt, diff, x, c, bf16)
            sync(device)
            return batch, steps / (time.perf_counter() - t0)
        except torch.OutOfMemoryError:
            batch //= 2
            torch.cuda.empty_cache()


@torch.no_grad()
def bench_predict(cfg, device, measure, bf16, spots):
    net = StemDiT(cfg).to(device).eval()
    rows = spots * 20
    x = torch.randn(rows, cfg.num_genes, device=device)
    c = torch.randn(rows, cfg.cond_dim, device=device)
    t = torch.full((rows,), 500, device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        net(x, t, c)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(measure):
            net(x, t, c)
        sync(device)
    per_step = (time.perf_counter() - t0) / measure
    return {f"{name}": spots / (per_step * n) for name, n in (("ddpm", 1000), ("ddim:50", 50))}, \
        per_step, rows


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = ["# Stem throughput per preset", "",
             f"Machine: {meta['machine']}; device {meta['device']}, bf16 {meta['bf16']}. "
             f"Command: `{meta['command']}`. Training: optimizer steps/s on random inputs "
             f"({meta['genes']} genes, {meta['cond_dim']}-d condition). Prediction: one denoising step of "
             f"{meta['spots']} spots × 20 samples timed over {meta['measure_steps']} steps and scaled to the "
             "chain (ddpm = 1000 steps, ddim:50 = 50).", "",
             "| preset | depth × width, heads | train batch | train steps/s | profiles/s | MFU | "
             "predict s per step | ddpm spots/s | ddim:50 spots/s |", "|---" * 9 + "|"]
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f} %" if r.get("mfu") is not None else "–"
        lines.append(f"| {r['preset']} | {r['depth']} × {r['hidden']}, {r['heads']} | {r['train_batch']} | "
                     f"{r['train_steps_per_s']:.3f} | {r['train_profiles_per_s']:.0f} | {mfu} | "
                     f"{r['predict_s_per_step']:.3f} | {r['ddpm_spots_per_s']:.4f} | "
                     f"{r['ddim50_spots_per_s']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="small,paper")
    ap.add_argument("--genes", type=int, default=200)
    ap.add_argument("--cond-dim", type=int, default=1280)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--measure-steps", type=int, default=3)
    ap.add_argument("--spots", type=int, default=16)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak for MFU")
    ap.add_argument("--results", default=str(RESULTS / "stem_speed"), help="writes RESULTS.json and .md")
    a = ap.parse_args()
    dev = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                       (a.device if a.device != "auto" else "cpu"))
    meta = {"machine": machine(), "device": str(dev), "bf16": a.bf16, "genes": a.genes, "cond_dim": a.cond_dim,
            "spots": a.spots, "measure_steps": a.measure_steps, "peak_tflops": a.peak_tflops,
            "command": "python benchmarks/stem_speed.py " + " ".join(sys.argv[1:])}
    print(f"machine: {meta['machine']}; bf16={a.bf16}")
    rows = []
    for preset in a.presets.split(","):
        cfg = network_config(preset, a.genes, a.cond_dim)
        batch, sps = bench_train(cfg, dev, a.measure_steps, a.bf16)
        mfu = 3 * flops_per_row(cfg) * batch * sps / (a.peak_tflops * 1e12) if dev.type == "cuda" else None
        rates, per_step, n_rows = bench_predict(cfg, dev, a.measure_steps, a.bf16, a.spots)
        rows.append({"preset": preset, "depth": cfg.depth, "hidden": cfg.hidden, "heads": cfg.heads,
                     "train_batch": batch, "train_steps_per_s": sps, "train_profiles_per_s": sps * batch,
                     "mfu": mfu, "predict_rows": n_rows, "predict_s_per_step": per_step,
                     "ddpm_spots_per_s": rates["ddpm"], "ddim50_spots_per_s": rates["ddim:50"]})
        print(rows[-1], flush=True)
    text = markdown(meta, rows)
    write_results(a.results, {"meta": meta, "rows": rows}, text)
    print(text)


if __name__ == "__main__":
    main()
