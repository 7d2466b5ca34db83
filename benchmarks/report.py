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
