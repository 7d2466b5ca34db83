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
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    except OSError as exc:
        raise StemError(f"cannot write {final}: {exc.strerror or exc} in {final.parent}") from None
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


def require_free_space(folder: str | os.PathLike, need_bytes: float, what: str) -> None:
    """Refuse to start writing ``what`` (about ``need_bytes``) where the disk has less free space."""
    f = Path(folder).resolve()
    while not f.exists() and f != f.parent:
        f = f.parent
    free = shutil.disk_usage(f).free
    if free < need_bytes:
        raise StemError(f"not enough free disk for {what} in {f}: needs ~{need_bytes / 2**20:,.0f} MiB, "
                        f"{free / 2**20:,.0f} MiB free; free some space or write elsewhere")


def require_separate(out: str | os.PathLike, inputs: list, inside: list | None = None) -> None:
    """Refuse an output that is one of the ``inputs`` or contains one (replacing it would lose
    it), or that lies inside one of the ``inside`` folders (a prepared dataset, a run)."""
    o = Path(out).resolve()
    for i in inputs:
        r = Path(i).resolve()
        if o == r or o in r.parents:
            raise StemError(f"the output {out} is (or contains) the input {i}; choose another output path")
    for i in inside or []:
        r = Path(i).resolve()
        if r in o.parents:
            raise StemError(f"the output {out} lies inside the input {i}; choose a path outside it")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    path = Path(path)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as fh:
        json.dump(obj, fh, indent=2, default=str)
        tmp = fh.name
    os.replace(tmp, path)


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """A JSON file the project wrote (a run's ``config.json``, a manifest); a truncated or
    hand-edited one is named as damaged instead of surfacing a parser error."""
    path = Path(path)
    if not path.is_file():
        raise StemError(f"{path} is missing: not a {what}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StemError(f"{path} is damaged (not valid JSON: {exc}); restore it from a backup or "
                        f"recreate the {what}") from None


def write_h5ad(adata, path: str | os.PathLike) -> None:
    """``adata.write_h5ad(path)``, also under pandas ≥ 3, whose default string columns and
    indexes anndata writes only when asked to (as its nullable-string encoding)."""
    import anndata

    if hasattr(anndata.settings, "allow_write_nullable_strings"):
        with anndata.settings.override(allow_write_nullable_strings=True):
            adata.write_h5ad(path)
    else:
        adata.write_h5ad(path)
