"""Time `stem prepare` on HER2ST C2-C6 + A1 (C6 held out): 1 view, 8 views, cached rerun.

Usage: .venv/bin/python benchmarks/prepare_her2st.py [--data ../shared/data/her2st]
Prints wall-clock seconds per run and the machine it ran on.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} CPU cores, {gpu}, torch {torch.__version__}"


def run(args: list[str], env: dict) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "stem_st.cli", *args], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared/data/her2st"))
    ap.add_argument("--sections", default="C2,C3,C4,C5,C6,A1")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = ["prepare", "--data", a.data, "--sections", a.sections, "--holdout", "C6",
                "--genes", "hmhvg:200"]
        print(f"machine: {machine()}")
        runs = (("1 view", "c1", ["--views", "1", "--out", f"{tmp}/p1"]),
                ("8 views", "c8", ["--views", "8", "--out", f"{tmp}/p8"]),
                ("8 views, cached rerun", "c8", ["--views", "8", "--out", f"{tmp}/p8", "--overwrite"]))
        for label, cache, extra in runs:  # separate caches: the 8-view run starts cold
            env = {**os.environ, "STEM_ST_CACHE": f"{tmp}/{cache}"}
            print(f"stem prepare {a.sections}, {label}: {run(base + extra, env):.1f} s", flush=True)


if __name__ == "__main__":
    main()
