"""Peak memory of ``stem train`` against cohort size: synthetic cohorts of 10 and 40 sections.

Each cohort (``synthetic_cohort.py``: 2 000 spots per section on a square grid, 2 dihedral
views, 1 280-d float32 embeddings, 200 genes) is trained with the default recipe (ridge prior,
ring-2 context: 3 840-d inputs) on the tiny preset for ``--steps`` steps at batch 32, one view
augmentation per spot (4 000 pairs per section). Peak RSS is the child's ``ru_maxrss``, each
run in a fresh wrapper process. ``--before REV`` also runs the same cohorts through an older
commit (checked out with ``git worktree``; it writes its own prepared format).

Usage: .venv/bin/python benchmarks/train_memory.py [--sections 10,40] [--before f513de2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WRAP = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
        "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)")


def run_cohort(python: str, src: Path, work: Path, sections: int, spots: int, steps: int) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{src}:{HERE}"}
    prep, run = work / f"prep{sections}", work / f"run{sections}"
    if not (prep / "manifest.json").is_file():
        subprocess.run([python, "-c", f"from synthetic_cohort import write_cohort; "
                        f"write_cohort({str(prep)!r}, {sections}, {spots}, 2, 1280, 200)"], env=env, check=True)
    cmd = [python, "-m", "stem_st.cli", "train", str(prep), "--out", str(run), "--preset", "tiny",
           "--steps", str(steps), "--batch-size", "32", "--aug-ratio", "1", "--lr", "5e-4",
           "--checkpoint-every", str(steps), "--device", "cpu"]
    t0 = time.perf_counter()
    out = subprocess.run([python, "-c", WRAP, *cmd], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    line = next((x for x in out.stdout.splitlines() if x.startswith("MAXRSS_KB")), None)
    if line is None or line.split()[2] != "0":
        raise SystemExit(f"stem train failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return {"sections": sections, "spots_per_section": spots, "pairs": sections * spots * 2,
            "peak_rss_mib": int(line.split()[1]) / 1024, "seconds": round(seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sections", default="10,40")
    ap.add_argument("--spots", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--before", default="", help="an older commit to measure too (its smallest cohort only)")
    ap.add_argument("--work", default="")
    ap.add_argument("--out", default=str(HERE / "results"))
    a = ap.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="train_memory_"))
    sizes = [int(s) for s in a.sections.split(",")]
    rows = []
    for n in sizes:
        rows.append({"code": "now", **run_cohort(sys.executable, HERE.parent / "src", work / "now", n, a.spots,
                                                  a.steps)})
        print(json.dumps(rows[-1]), flush=True)
    if a.before:
        tree = work / f"tree_{a.before}"
        if not tree.exists():
            git = ["git", "-C", str(HERE.parent), "worktree"]
            subprocess.run([*git, "add", "-q", str(tree), a.before], check=True)
        rows.append({"code": a.before, **run_cohort(sys.executable, tree / "src", work / "before", sizes[0],
                                                     a.spots, a.steps)})
        print(json.dumps(rows[-1]), flush=True)
        subprocess.run(["git", "-C", str(HERE.parent), "worktree", "remove", "--force", str(tree)], check=False)
    now = [r for r in rows if r["code"] == "now"]
    growth = now[-1]["peak_rss_mib"] / now[0]["peak_rss_mib"] - 1
    res = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores", "python": platform.python_version(),
           "rows": rows, "growth_smallest_to_largest": growth}
    out = Path(a.out)
    (out / "train_memory.json").write_text(json.dumps(res, indent=1))
    lines = ["# Peak memory of `stem train` against cohort size", "",
             f"Machine: {res['machine']}. Regenerate: `python benchmarks/train_memory.py "
             f"--sections {a.sections} --spots {a.spots} --steps {a.steps}"
             + (f" --before {a.before}`." if a.before else "`."), "",
             "| code | sections | spots | training pairs | peak RSS MiB | seconds |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['code']} | {r['sections']} | {r['sections'] * r['spots_per_section']} | {r['pairs']} | "
              f"{r['peak_rss_mib']:.0f} | {r['seconds']} |" for r in rows]
    lines += ["", f"Growth from {sizes[0]} to {sizes[-1]} sections: {100 * growth:+.1f} %."]
    (out / "train_memory.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
