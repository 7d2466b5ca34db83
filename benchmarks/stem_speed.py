"""Stem throughput: training steps/s and prediction spots/s per preset, on this machine.

Usage: .venv/bin/python benchmarks/stem_speed.py [--presets small,paper] [--genes 200]
       [--cond-dim 1280] [--device auto] [--measure-steps 3] [--bf16]

Training: optimizer steps/s at batch 256 (halved until it fits). Prediction: spots/s with 20
samples per spot for ``ddpm`` (all 1000 steps) and ``ddim:50``; the reverse chain is timed over
``--measure-steps`` denoising steps on a batch of spots × 20 rows and scaled to the full chain
(every step costs the same forward pass). On CUDA, also model FLOP utilisation (MFU) against the
given peak.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from stem_st.diffusion import GaussianDiffusion
from stem_st.models import StemDiT
from stem_st.stem_model import network_config


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
    a = ap.parse_args()
    dev = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                       (a.device if a.device != "auto" else "cpu"))
    name = torch.cuda.get_device_name(0) if dev.type == "cuda" else \
        f"{platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    print(f"machine: {name}; torch {torch.__version__}; bf16={a.bf16}")
    for preset in a.presets.split(","):
        cfg = network_config(preset, a.genes, a.cond_dim)
        batch, sps = bench_train(cfg, dev, a.measure_steps, a.bf16)
        line = (f"[{preset}: depth {cfg.depth}, width {cfg.hidden}, {cfg.heads} heads, "
                f"{a.genes} genes] train: {sps:.3f} steps/s at batch {batch} "
                f"({sps * batch:.0f} profiles/s)")
        if dev.type == "cuda":
            mfu = 3 * flops_per_row(cfg) * batch * sps / (a.peak_tflops * 1e12)
            line += f", MFU {100 * mfu:.1f}% of {a.peak_tflops:g} TFLOP/s"
        print(line, flush=True)
        rates, per_step, rows = bench_predict(cfg, dev, a.measure_steps, a.bf16, a.spots)
        print(f"[{preset}] predict, 20 samples/spot: one denoising step of {rows} rows takes "
              f"{per_step:.3f} s → ddpm (1000 steps) {rates['ddpm']:.4f} spots/s, "
              f"ddim:50 {rates['ddim:50']:.3f} spots/s", flush=True)


if __name__ == "__main__":
    main()
