"""Training pairs (expression, spot input) from a prepared dataset."""

from __future__ import annotations

import contextlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.context import add_context, context_blocks, spot_pitch
from ..data.dataset import EMBEDDING_KEY, PreparedDataset
from ..data.units import log2_expression
from ..errors import require
from .store import RowStore

log = logging.getLogger(__name__)

#: with one training section, its spots are split into this many spatial blocks that stand in for
#: sections: the ridge prior is cross-fitted over them and a block can be kept for validation, so
#: the spread is never calibrated on residuals the prior or the network fitted
SPATIAL_BLOCKS = 4


def dense_counts(a, layer: str | None = None) -> np.ndarray:
    """Dense panel counts of a prepared section's AnnData (``X`` or a layer)."""
    counts = a.layers[layer] if layer else a.X
    return np.asarray(counts.toarray() if hasattr(counts, "toarray") else counts)


def spot_inputs(a, context: str = "none") -> np.ndarray:
    """Raw spot inputs ``(spots, views, C)`` of a prepared section's AnnData: float32 embeddings,
    with the neighbourhood means of the recipe's ``context`` (ring-1, ring-2) appended per view."""
    return add_context(np.asarray(a.obsm[EMBEDDING_KEY], dtype=np.float32), np.asarray(a.obsm["spatial"]), context)


def section_counts(ds: PreparedDataset, sid: str, layer: str | None = None) -> np.ndarray:
    """Dense panel counts of a prepared section (``X`` or a layer)."""
    return dense_counts(ds.section(sid), layer)


def section_inputs(ds: PreparedDataset, sid: str, context: str = "none") -> np.ndarray:
    """:func:`spot_inputs` of a prepared section."""
    return spot_inputs(ds.section(sid), context)


@dataclass
class TrainingData:
    """Pairs of raw spot inputs and log2 expression, on disk (:class:`RowStore`), with each
    pair's section and view in memory (a few bytes per pair)."""

    inputs: RowStore     # (N, C) raw spot inputs (embedding [+ context])
    x: RowStore          # (N, G) log2(1 + count); training overwrites it with the residual
    group: np.ndarray    # (N,) index of the pair's group: its section, or its spatial block
    original: np.ndarray  # (N,) True for view 0
    sections: list[str]
    n_spots: int
    x_max: float
    groups: list[str] | None = None  # each group's name (default: the sections)
    xy: np.ndarray | None = None  # (N, 2) each pair's spot centre in its section's spot pitches

    def __post_init__(self) -> None:
        if self.groups is None:
            self.groups = list(self.sections)

    def __len__(self) -> int:
        return len(self.group)

    def close(self, remove: bool = True) -> None:
        """Close the stores; with ``remove``, delete their files and their folder if it is left empty."""
        self.inputs.close(remove)
        self.x.close(remove)
        if remove:
            with contextlib.suppress(OSError):
                self.x.path.parent.rmdir()


def pair_bytes(ds: PreparedDataset, sections: list[str], aug_ratio: int, context: str) -> int:
    """An upper bound on the disk the training pairs of ``sections`` take."""
    spots = sum(int(s.get("spots", 0)) for s in ds.manifest["sections"] if s["section"] in sections)
    pairs = spots * (1 + min(aug_ratio, ds.n_views - 1))
    return pairs * (ds.embedding_dim * context_blocks(context) + len(ds.genes)) * 4


def build_training_data(ds: PreparedDataset, sections: list[str], aug_ratio: int, seed: int,
                        target_layer: str | None = None, context: str = "none",
                        folder: str | Path | None = None) -> TrainingData:
    """Each spot of ``sections`` with panel counts contributes its original view plus
    ``aug_ratio`` randomly chosen other dihedral views (fewer if fewer were prepared). The pairs
    are written to ``folder`` (default: a temporary one) one section at a time, so memory holds
    one section, not the cohort. With one section, the groups are :data:`SPATIAL_BLOCKS` spatial
    blocks of its spots (:func:`spatial_blocks`), each block's pairs contiguous."""
    require(len(sections) > 0, "no training sections (all were held out?)")
    folder = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="stem_pairs_"))
    rng = np.random.default_rng(seed)
    inputs = x_store = None
    groups, orig, positions, n_spots, x_max = [], [], [], 0, 0.0
    names = list(sections)
    for gi, sid in enumerate(sections):
        a = ds.section(sid, cache=False)
        counts = dense_counts(a, target_layer)
        keep = counts.sum(axis=1) > 0
        if (~keep).any():
            log.info("%s: %d spots with no panel counts dropped", sid, int((~keep).sum()))
        emb = spot_inputs(a, context)[keep]
        x = log2_expression(counts[keep])
        xy = np.asarray(a.obsm["spatial"], dtype=np.float64)
        xy = (xy / (spot_pitch(xy) or 1.0))[keep] if np.isfinite(xy).all() else np.full((len(x), 2), np.nan)
        block = np.zeros(len(x), dtype=np.int64)
        if len(sections) == 1 and len(x) >= 8 * SPATIAL_BLOCKS:
            block = spatial_blocks(np.asarray(a.obsm["spatial"], dtype=np.float64)[keep], SPATIAL_BLOCKS, seed)
            names = [f"{sid} block {b + 1}" for b in range(SPATIAL_BLOCKS)]
            log.info("one training section: its spots are split into %d spatial blocks that stand in for "
                     "sections (prior cross-fitting, validation, spread calibration)", SPATIAL_BLOCKS)
        del a, counts
        k = min(aug_ratio, emb.shape[1] - 1)
        if k < aug_ratio and gi == 0:
            log.warning("aug ratio %d needs %d prepared views per spot; this dataset has %d, so training uses "
                        "%d augmented view(s) per spot (stem prepare --views %d for more)", aug_ratio,
                        aug_ratio + 1, emb.shape[1], k, aug_ratio + 1)
        spots, views = [], []
        for i in np.argsort(block, kind="stable"):
            vs = [0, *(rng.choice(np.arange(1, emb.shape[1]), size=k, replace=False) if k else [])]
            spots += [i] * len(vs)
            views += vs
        spots, views = np.asarray(spots, dtype=np.int64), np.asarray(views, dtype=np.int64)
        if inputs is None:
            inputs = RowStore(folder / "inputs.f32", emb.shape[-1])
            x_store = RowStore(folder / "x.f32", x.shape[1])
        inputs.append(emb[spots, views])
        x_store.append(x[spots])
        groups.append(np.full(len(spots), gi) + block[spots])
        orig.append(views == 0)
        positions.append(xy[spots].astype(np.float32))
        n_spots += len(x)
        x_max = max(x_max, float(x.max()) if x.size else 0.0)
    require(n_spots > 0, "the training sections hold no spot with counts")
    return TrainingData(inputs=inputs, x=x_store, group=np.concatenate(groups), original=np.concatenate(orig),
                        sections=list(sections), n_spots=n_spots, x_max=x_max, groups=names,
                        xy=np.concatenate(positions))


def spatial_blocks(xy: np.ndarray, blocks: int, seed: int) -> np.ndarray:
    """Each spot's block: k-means (scikit-learn) on the spot centres, so a block is a compact
    region of the tissue, as unlike the others as one region of a section can be."""
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=blocks, n_init=4, random_state=seed).fit_predict(xy).astype(np.int64)
