"""CPU execution options for the Stem denoiser: threads × torch.compile × rows per forward.

For each CPU preset (tiny: the demo's, small) and each setting, times the sampling forward pass
(no grad) and one training step (batch 32, the demo's), both on random inputs of the demo's shape
(200 genes, ring-2 input = 3 × 1280). Writes ``benchmarks/results/cpu_options.{json,md}``.
Run it alone on the machine: timings of two jobs sharing cores mean nothing.

Usage: .venv/bin/python benchmarks/cpu_options.py [--presets tiny,small] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

from stem_st.atomic import write_json
from stem_st.diffusion import GaussianDiffusion
from stem_st.models import StemDiT
from stem_st.stem.settings import network_config

ROOT = Path(__file__).resolve().parents[1]


def _time(fn, repeats: int) -> float:
    fn()  # warm-up (and compilation)
    fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def measure(preset: str, genes: int, cond_dim: int, threads: int, compiled: bool, rows_list, repeats):
    torch.set_num_threads(threads)
    torch._dynamo.reset()  # each setting compiles afresh (the recompile limit is shared otherwise)
    torch.manual_seed(0)
    net = StemDiT(network_config(preset, genes, cond_dim))
    fwd = torch.compile(net, dynamic=False) if compiled else net
    out = []
    with torch.no_grad():
        net.eval()
        for rows in rows_list:
            x, c = torch.randn(rows, genes), torch.randn(rows, cond_dim)
            t = torch.full((rows,), 500)
            sec = _time(lambda x=x, t=t, c=c: fwd(x, t, c), repeats)
            out.append({"rows": rows, "ms_per_row": 1e3 * sec / rows})
    net.train()
    diff = GaussianDiffusion(1000)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x, c = torch.rand(32, genes) * 8, torch.randn(32, cond_dim)

    def step():
        t = torch.randint(1000, (32,))
        loss = diff.training_loss(lambda xt, tt: fwd(xt, tt, c), x, t, torch.randn_like(x))["loss"].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    train = _time(step, repeats)
    return {"preset": preset, "threads": threads, "compile": compiled, "forward": out,
            "train_step_ms": 1e3 * train}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="tiny,small")
    ap.add_argument("--genes", type=int, default=200)
    ap.add_argument("--cond-dim", type=int, default=3 * 1280)
    ap.add_argument("--rows", default="64,256,1024")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/cpu_options"))
    a = ap.parse_args()
    rows = [int(r) for r in a.rows.split(",")]
    machine = (f"{platform.machine()} CPU, {os.cpu_count()} cores; torch {torch.__version__}; "
               f"python {sys.version.split()[0]}")
    print(machine, flush=True)
    results = []
    for preset in a.presets.split(","):
        for threads in sorted({1, os.cpu_count() or 1}):
            for compiled in (False, True):
                try:
                    r = measure(preset, a.genes, a.cond_dim, threads, compiled, rows, a.repeats)
                except Exception as exc:  # torch.compile needs a C compiler; record why it failed
                    r = {"preset": preset, "threads": threads, "compile": compiled, "error": str(exc)[:300]}
                results.append(r)
                print(r, flush=True)
    lines = [f"# CPU options for the Stem denoiser\n\n{machine}; {a.genes} genes, {a.cond_dim}-d condition; "
             f"mean of {a.repeats} repeats after 2 warm-up calls.\n",
             "| preset | threads | compile | " + " | ".join(f"fwd ms/row @{r}" for r in rows) +
             " | train step ms (batch 32) |", "|---|---|---|" + "---|" * (len(rows) + 1)]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['preset']} | {r['threads']} | {r['compile']} | failed: {r['error'][:80]} |")
            continue
        fw = " | ".join(f"{f['ms_per_row']:.3f}" for f in r["forward"])
        lines.append(f"| {r['preset']} | {r['threads']} | {r['compile']} | {fw} | {r['train_step_ms']:.1f} |")
    write_json(Path(a.out + ".json"), {"machine": machine, "genes": a.genes, "cond_dim": a.cond_dim,
                                       "results": results})
    Path(a.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
