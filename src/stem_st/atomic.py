"""Atomic output: write to a temporary sibling, then rename into place."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import StemError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it to ``path``.

    Works for files and directories. On failure the temporary is removed and ``path``
    is untouched. An existing ``path`` is replaced only when ``overwrite`` is true.
    """
    final = Path(path)
    if final.exists() and not overwrite:
        raise StemError(f"{final} already exists; pass --overwrite to replace it")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    target = tmp / final.name
    try:
        yield target
        if not target.exists():
            raise RuntimeError(f"nothing was written to {target}")
        backup = tmp / (final.name + ".old")
        if final.exists():
            os.replace(final, backup)
        try:
            os.replace(target, final)
        except OSError:
            if backup.exists():  # put the user's previous output back
                os.replace(backup, final)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    path = Path(path)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as fh:
        json.dump(obj, fh, indent=2, default=str)
        tmp = fh.name
    os.replace(tmp, path)
