"""What the benchmarks share: the machine they ran on and atomic results files."""

from __future__ import annotations

import os
import platform
import tempfile
from pathlib import Path

from stem_st.atomic import write_json

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    """The machine line every results file states (as ``accuracy_loo.py`` writes it)."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.machine()}, {os.cpu_count()} CPU cores, {gpu}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp",
                                     encoding="utf-8") as fh:
        fh.write(text)
        tmp = fh.name
    os.replace(tmp, path)


def write_results(stem: str | os.PathLike, data: dict, markdown: str) -> None:
    """``<stem>.json`` and ``<stem>.md``, each written atomically."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    write_json(stem.parent / f"{stem.name}.json", data)
    write_text(stem.parent / f"{stem.name}.md", markdown if markdown.endswith("\n") else markdown + "\n")


#: the six imaged HER2ST sections of the leave-one-section-out benchmarks
LOO_SECTIONS = ["C2", "C3", "C4", "C5", "C6", "A1"]


def run_folds(job, work: str, folds: str, workers: int, *args) -> None:
    """``job(*args, fold)`` for every fold of ``folds`` (comma-separated) without a ``work/<fold>.json``
    yet, in ``workers`` spawned processes (a rerun resumes)."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    Path(work).mkdir(parents=True, exist_ok=True)
    todo = [f for f in folds.split(",") if not (Path(work) / f"{f}.json").is_file()]
    print(f"{len(todo)} folds with {workers} workers", flush=True)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        for fut in [pool.submit(job, *args, f) for f in todo]:
            fut.result()


def fold_commands(doc: str, name: str, run, summary, extra=None) -> None:
    """The ``run`` / ``summary`` command line of a leave-one-section-out benchmark: ``--work``
    (runs/NAME), ``run --preps --folds --workers``, ``summary --out`` (results/NAME); ``extra(run,
    summary)`` adds a benchmark's own options to the two subparsers."""
    import argparse

    root = RESULTS.parents[1]
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for cmd in ("run", "summary"):
        sub.add_parser(cmd).add_argument("--work", default=str(root / "runs" / name))
    r, s = sub.choices["run"], sub.choices["summary"]
    r.add_argument("--preps", default=str(root / "runs/accuracy_loo"))
    r.add_argument("--folds", default=",".join(LOO_SECTIONS))
    r.add_argument("--workers", type=int, default=2)
    s.add_argument("--out", default=str(RESULTS / name))
    if extra is not None:
        extra(r, s)
    args = p.parse_args()
    {"run": run, "summary": summary}[args.cmd](args)


def read_folds(work: str | os.PathLike) -> dict[str, dict]:
    """The fold results :func:`write_fold` has written to ``work`` so far, in section order."""
    import json

    return {f: json.loads((Path(work) / f"{f}.json").read_text()) for f in LOO_SECTIONS
            if (Path(work) / f"{f}.json").is_file()}


def write_fold(work: str | os.PathLike, fold: str, result: dict) -> None:
    """A fold's result as ``work/<fold>.json`` (atomically: :func:`run_folds` resumes by it)."""
    import json

    write_text(Path(work) / f"{fold}.json", json.dumps(result, indent=1))
