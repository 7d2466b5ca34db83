"""Time `stem prepare` on HER2ST C2-C6 + A1 (C6 held out): 1 view, 8 views, cached rerun.

Usage: .venv/bin/python benchmarks/prepare_her2st.py [--data ../shared/data/her2st]
           [--sections C2,C3,C4,C5,C6,A1] [--holdout C6] [--views 1,8]

Each view count runs cold (its own empty embedding cache); the last is then rerun on its warm
cache. Writes ``benchmarks/results/prepare_her2st.{json,md}`` with the machine it ran on.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import RESULTS, machine, write_results


def run(args: list[str], env: dict) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "stem_st.cli", *args], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = ["# `stem prepare` on HER2ST: wall-clock time", "",
             f"Machine: {meta['machine']}. Command: `{meta['command']}`. Sections {meta['sections']} "
             f"(holdout {meta['holdout']}), panel {meta['genes']}, default encoder (ImageNet "
             "EfficientNet-Lite0); each view count starts from an empty embedding cache.", "",
             "| run | views | cache | seconds |", "|---|---|---|---|"]
    lines += [f"| {r['run']} | {r['views']} | {r['cache']} | {r['seconds']:.1f} |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared/data/her2st"))
    ap.add_argument("--sections", default="C2,C3,C4,C5,C6,A1")
    ap.add_argument("--holdout", default="C6")
    ap.add_argument("--genes", default="hmhvg:200")
    ap.add_argument("--views", default="1,8", help="view counts to time, each cold; the last is rerun warm")
    ap.add_argument("--results", default=str(RESULTS / "prepare_her2st"), help="writes RESULTS.json and .md")
    a = ap.parse_args()
    views = [int(v) for v in a.views.split(",")]
    meta = {"machine": machine(), "sections": a.sections, "holdout": a.holdout, "genes": a.genes,
            "command": "python benchmarks/prepare_her2st.py " + " ".join(sys.argv[1:])}
    print(f"machine: {meta['machine']}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = ["prepare", "--data", a.data, "--sections", a.sections, "--holdout", a.holdout, "--genes", a.genes]
        runs = [(f"{v} view{'s' if v > 1 else ''}", v, "cold", ["--out", f"{tmp}/p{v}"]) for v in views]
        runs.append((f"{views[-1]} view{'s' if views[-1] > 1 else ''}, cached rerun", views[-1], "warm",
                     ["--out", f"{tmp}/p{views[-1]}", "--overwrite"]))
        for label, v, cache, extra in runs:  # separate caches: every view count starts cold
            env = {**os.environ, "STEM_ST_CACHE": f"{tmp}/c{v}"}
            seconds = run([*base, "--views", str(v), *extra], env)
            rows.append({"run": label, "views": v, "cache": cache, "seconds": round(seconds, 1)})
            print(f"stem prepare {a.sections}, {label}: {seconds:.1f} s", flush=True)
    text = markdown(meta, rows)
    write_results(a.results, {"meta": meta, "rows": rows}, text)
    print(text)


if __name__ == "__main__":
    main()
