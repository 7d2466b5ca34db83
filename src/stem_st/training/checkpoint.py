"""Atomic, checksummed checkpoints of the full training state, and finding the latest good one.

Each ``step_<n>.pt`` has a ``step_<n>.pt.sha256`` sidecar written after it; a checkpoint whose
content no longer matches (flipped bytes, a cut tail) is reported and skipped for the previous one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from pathlib import Path

import torch

from ..errors import StemError

log = logging.getLogger(__name__)
PATTERN = re.compile(r"step_(\d+)\.pt$")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def save_checkpoint(state: dict, run_dir: str | Path, step: int, keep: int = 3) -> Path:
    """Write ``checkpoints/step_<step>.pt`` atomically; keep the newest ``keep`` files."""
    ckdir = Path(run_dir) / "checkpoints"
    ckdir.mkdir(parents=True, exist_ok=True)
    path = ckdir / f"step_{step:08d}.pt"
    with tempfile.NamedTemporaryFile(dir=ckdir, suffix=".tmp", delete=False) as fh:
        torch.save(state, fh)
        tmp = fh.name
    digest = _sha256(Path(tmp))
    os.replace(tmp, path)
    with tempfile.NamedTemporaryFile("w", dir=ckdir, suffix=".tmp", delete=False) as fh:
        fh.write(digest + "\n")
    os.replace(fh.name, _sidecar(path))
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
        _sidecar(old).unlink(missing_ok=True)
    return path


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoints of a run, oldest first."""
    ckdir = Path(run_dir) / "checkpoints"
    found = [p for p in ckdir.glob("step_*.pt") if PATTERN.search(p.name)] if ckdir.is_dir() else []
    return sorted(found, key=lambda p: int(PATTERN.search(p.name).group(1)))


def load_checkpoint(path: str | Path, allow_pickle: bool = False) -> dict:
    """Load a checkpoint (tensors, numbers, strings only unless ``allow_pickle``)."""
    import pickle

    side = _sidecar(Path(path))
    if side.is_file() and side.read_text().strip() != _sha256(Path(path)):
        raise StemError(f"checkpoint {path} is corrupt: its content no longer matches {side.name}")
    try:
        return torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as exc:
        if not allow_pickle and "Weights only load failed" in str(exc):
            raise StemError(f"{path} holds pickled Python objects, not only tensors, so it is not a Stem "
                            "checkpoint; unpickling can run code, so stem refuses (in Python, opt in with "
                            "allow_pickle=True for a file you trust)") from None
        raise StemError(f"cannot load checkpoint {path}: corrupt or truncated ({str(exc)[:120]})") from None
    except Exception as exc:
        raise StemError(f"cannot load checkpoint {path}: corrupt or truncated "
                        f"({str(exc).splitlines()[0][:160]})") from None


def load_latest(run_dir: str | Path) -> tuple[dict, Path]:
    """The newest checkpoint that loads and matches its checksum; corrupt ones are reported
    (a warning) and skipped for the previous one."""
    found = list_checkpoints(run_dir)
    if not found:
        raise StemError(f"{run_dir} has no checkpoints (not a training run, or it never saved)")
    for path in reversed(found):
        try:
            return load_checkpoint(path), path
        except StemError as exc:
            log.warning("%s; skipping to the previous checkpoint", exc)
    raise StemError(f"no checkpoint of {run_dir} loads ({len(found)} corrupt); retrain")
