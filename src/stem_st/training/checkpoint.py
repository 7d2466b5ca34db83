"""Atomic checkpoints of the full training state, and finding the latest one."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import torch

from ..errors import StemError

PATTERN = re.compile(r"step_(\d+)\.pt$")


def save_checkpoint(state: dict, run_dir: str | Path, step: int, keep: int = 3) -> Path:
    """Write ``checkpoints/step_<step>.pt`` atomically; keep the newest ``keep`` files."""
    ckdir = Path(run_dir) / "checkpoints"
    ckdir.mkdir(parents=True, exist_ok=True)
    path = ckdir / f"step_{step:08d}.pt"
    with tempfile.NamedTemporaryFile(dir=ckdir, suffix=".tmp", delete=False) as fh:
        torch.save(state, fh)
        tmp = fh.name
    os.replace(tmp, path)
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoints of a run, oldest first."""
    ckdir = Path(run_dir) / "checkpoints"
    found = [p for p in ckdir.glob("step_*.pt") if PATTERN.search(p.name)] if ckdir.is_dir() else []
    return sorted(found, key=lambda p: int(PATTERN.search(p.name).group(1)))


def load_checkpoint(path: str | Path, allow_pickle: bool = False) -> dict:
    """Load a checkpoint (tensors, numbers, strings only unless ``allow_pickle``)."""
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as exc:
        if not allow_pickle and "Weights only load failed" in str(exc):
            raise StemError(f"{path} holds pickled Python objects, not only tensors; stem does not unpickle "
                            "checkpoints (that can run code): it is not a Stem checkpoint") from None
        raise StemError(f"cannot load checkpoint {path}: corrupt or truncated ({str(exc)[:120]})") from None
    except Exception as exc:
        raise StemError(f"cannot load checkpoint {path}: corrupt or truncated "
                        f"({str(exc).splitlines()[0][:160]})") from None


def latest_checkpoint(run_dir: str | Path) -> Path:
    """The newest checkpoint of a run, or a clear error."""
    found = list_checkpoints(run_dir)
    if not found:
        raise StemError(f"{run_dir} has no checkpoints (not a training run, or it never saved)")
    return found[-1]
