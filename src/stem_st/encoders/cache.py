"""On-disk embedding cache, one entry per section × encoder × patch geometry × view.

The key hashes everything the embedding depends on (image content, spot coordinates, encoder
and weights, µm per pixel, crop and input size, view); each entry keeps that provenance in a
JSON file beside the array, with the SHA-256 of the array's bytes: an entry that no longer
matches (cut, flipped bytes) or lacks its JSON (a write interrupted between the two files) is
reported and recomputed, never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from ..atomic import write_json

log = logging.getLogger(__name__)


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def default_cache_dir() -> Path:
    """``$STEM_ST_CACHE`` or ``~/.cache/stem-st``."""
    env = os.environ.get("STEM_ST_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "stem-st"


class EmbeddingCache:
    """A folder of ``<section>/<key>.npy`` arrays with ``<key>.json`` provenance."""

    def __init__(self, root: str | os.PathLike | None):
        self.root = Path(root) if root else None

    @staticmethod
    def key(provenance: dict) -> str:
        """Stable hash of a provenance record."""
        blob = json.dumps(provenance, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:24]

    def _path(self, section: str, key: str) -> Path:
        return self.root / section / f"{key}.npy"

    def get(self, section: str, provenance: dict) -> np.ndarray | None:
        """The cached array, or None (no cache, or not there, or unreadable)."""
        if self.root is None:
            return None
        path = self._path(section, self.key(provenance))
        if not path.exists():
            return None
        try:
            meta = json.loads(path.with_suffix(".json").read_text())
            arr = np.load(path, allow_pickle=False)
            if meta.get("sha256", _digest(arr)) != _digest(arr):
                raise ValueError("content does not match its checksum")
            return arr
        except (OSError, ValueError, EOFError) as exc:
            log.warning("embedding cache entry %s is damaged (%s); recomputing it", path, str(exc)[:80])
            return None

    def put(self, section: str, provenance: dict, array: np.ndarray) -> None:
        """Store ``array`` atomically with its provenance."""
        if self.root is None:
            return
        path = self._path(section, self.key(provenance))
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npy.tmp", delete=False) as fh:
            np.save(fh, array)
            tmp = fh.name
        os.replace(tmp, path)
        write_json(path.with_suffix(".json"), {**provenance, "sha256": _digest(array)})
