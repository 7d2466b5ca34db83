"""The prepared dataset: what ``stem prepare`` writes and training reads.

Layout of a prepared folder::

    manifest.json           sections, split, panel, encoders, patch geometry, views, timings
    genes.txt               the gene panel, one symbol per line
    sections/<id>.h5ad      per section: X = panel counts (int32), obs (labels, array coords),
                            obsm['spatial'] (full-res px)
    sections/<id>.embedding.npy  the section's embeddings (spots, views, dim), float32 or float16,
                            memory-mapped on reading and attached as obsm['embedding']
                            (format 1 kept them inside the h5ad; both are read)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np

from ..atomic import write_h5ad, write_json
from ..errors import StemError, require
from .panels import read_panel, write_panel

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
EMBEDDING_KEY = "embedding"


@dataclass
class PreparedDataset:
    """A prepared folder opened for reading; sections load lazily."""

    root: Path
    manifest: dict
    genes: list[str]
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def sections(self) -> list[str]:
        """All section ids, in preparation order."""
        return [s["section"] for s in self.manifest["sections"]]

    @property
    def holdout(self) -> list[str]:
        """Sections excluded from the gene choice (and, by default, from training)."""
        return list(self.manifest.get("holdout", []))

    @property
    def embedding_dim(self) -> int:
        """Width of the (concatenated) spot embedding."""
        return int(self.manifest["embedding_dim"])

    @property
    def n_views(self) -> int:
        """Number of dihedral views stored per spot."""
        return len(self.manifest["views"])

    def section(self, section_id: str, cache: bool = True) -> ad.AnnData:
        """The section's AnnData (panel counts, coordinates, labels, embeddings); kept for the
        next call unless ``cache`` is false (training reads a cohort one section at a time)."""
        require(section_id in self.sections,
                f"section '{section_id}' is not in {self.root} (has {', '.join(self.sections)})")
        if section_id in self._cache:
            return self._cache[section_id]
        a = ad.read_h5ad(self.root / "sections" / f"{section_id}.h5ad")
        emb = embedding_path(self.root, section_id)
        if emb.is_file():
            a.obsm[EMBEDDING_KEY] = np.load(emb, mmap_mode="r")
        if cache:
            self._cache[section_id] = a
        return a

    def embeddings(self, section_id: str) -> np.ndarray:
        """``(spots, views, dim)`` float32 embeddings of a section (in memory)."""
        return np.asarray(self.section(section_id).obsm[EMBEDDING_KEY], dtype=np.float32)


def open_prepared(path: str | Path) -> PreparedDataset:
    """Open a prepared dataset folder, checking its manifest."""
    root = Path(path)
    man_path = root / MANIFEST
    require(man_path.is_file(), f"{root} is not a prepared dataset (no {MANIFEST}); run stem prepare")
    try:
        manifest = json.loads(man_path.read_text())
    except json.JSONDecodeError as exc:
        raise StemError(f"{man_path} is not valid JSON: {exc}") from None
    require(manifest.get("format_version") in READABLE_VERSIONS,
            f"{root}: prepared format {manifest.get('format_version')} is not one of {READABLE_VERSIONS}")
    genes = read_panel(root / "genes.txt")
    ds = PreparedDataset(root, manifest, genes)
    gone = [f"sections/{s}.h5ad" for s in ds.sections if not (root / "sections" / f"{s}.h5ad").is_file()]
    if manifest["format_version"] >= 2:
        gone += [f"sections/{s}.embedding.npy" for s in ds.sections if not embedding_path(root, s).is_file()]
    require(not gone, f"{root}: {', '.join(gone)} missing (deleted or moved?); rerun stem prepare")
    return ds


def embedding_path(root: str | Path, sid: str) -> Path:
    return Path(root) / "sections" / f"{sid}.embedding.npy"


def write_section(root: str | Path, sid: str, a: ad.AnnData, genes: list[str],
                  embedding_dtype: str = "float32") -> None:
    """Write one prepared section: panel ``var_names`` and ``obsm['embedding']``
    (spots, views, dim) are required; the embeddings go to their own ``.npy``."""
    require(list(a.var_names) == list(genes), f"{sid}: genes differ from the panel")
    require(EMBEDDING_KEY in a.obsm and a.obsm[EMBEDDING_KEY].ndim == 3,
            f"{sid}: obsm['{EMBEDDING_KEY}'] must be (spots, views, dim)")
    require(embedding_dtype in ("float32", "float16"), "embeddings are stored as float32 or float16")
    (Path(root) / "sections").mkdir(parents=True, exist_ok=True)
    emb = a.obsm[EMBEDDING_KEY]
    np.save(embedding_path(root, sid), np.asarray(emb, dtype=embedding_dtype))
    del a.obsm[EMBEDDING_KEY]
    try:
        write_h5ad(a, Path(root) / "sections" / f"{sid}.h5ad")
    finally:
        a.obsm[EMBEDDING_KEY] = emb


def finish_prepared(root: str | Path, genes: list[str], manifest: dict) -> None:
    """Write the panel and the manifest (with the format version) of a prepared folder."""
    write_panel(Path(root) / "genes.txt", genes)
    write_json(Path(root) / MANIFEST, {"format_version": FORMAT_VERSION, **manifest})


def write_prepared(root: str | Path, sections: dict[str, ad.AnnData], genes: list[str],
                   manifest: dict) -> None:
    """Write a whole prepared folder from in-memory sections."""
    for sid, a in sections.items():
        write_section(root, sid, a, genes)
    finish_prepared(root, genes, manifest)
