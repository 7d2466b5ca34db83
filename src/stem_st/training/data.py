"""Training pairs (expression, spot input) from a prepared dataset."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..data.context import add_context
from ..data.prepared import PreparedDataset
from ..errors import require

log = logging.getLogger(__name__)


def log2_expression(counts: np.ndarray) -> np.ndarray:
    """Counts → log2(1 + count), float32: the space the model works in."""
    return np.log2(1.0 + np.asarray(counts, dtype=np.float32))


def section_counts(ds: PreparedDataset, sid: str, layer: str | None = None) -> np.ndarray:
    """Dense panel counts of a prepared section (``X`` or a layer)."""
    a = ds.section(sid)
    counts = a.layers[layer] if layer else a.X
    return np.asarray(counts.toarray() if hasattr(counts, "toarray") else counts)


def section_inputs(ds: PreparedDataset, sid: str, context: str = "none") -> np.ndarray:
    """Raw spot inputs ``(spots, views, C)`` of a section: embeddings, with the neighbourhood
    means of the recipe's ``context`` (ring-1, ring-2) appended per view."""
    return add_context(ds.embeddings(sid), np.asarray(ds.section(sid).obsm["spatial"]), context)


@dataclass
class TrainingData:
    """Stacked pairs of raw inputs and log2 expression, with each pair's section and view."""

    x: np.ndarray        # (N, G) log2(1 + count)
    inputs: np.ndarray   # (N, C) raw spot inputs (embedding [+ context])
    group: np.ndarray    # (N,) index of the pair's section
    original: np.ndarray  # (N,) True for view 0
    sections: list[str]
    n_spots: int


def build_training_data(ds: PreparedDataset, sections: list[str], aug_ratio: int, seed: int,
                        target_layer: str | None = None, context: str = "none") -> TrainingData:
    """Each spot of ``sections`` with panel counts contributes its original view plus
    ``aug_ratio`` randomly chosen other dihedral views (fewer if fewer were prepared)."""
    require(len(sections) > 0, "no training sections (all were held out?)")
    rng = np.random.default_rng(seed)
    xs, feats, groups, orig, n_spots = [], [], [], [], 0
    for gi, sid in enumerate(sections):
        counts = section_counts(ds, sid, target_layer)
        keep = counts.sum(axis=1) > 0
        if (~keep).any():
            log.info("%s: %d spots with no panel counts dropped", sid, int((~keep).sum()))
        emb = section_inputs(ds, sid, context)[keep]
        x = log2_expression(counts[keep])
        n_spots += len(x)
        k = min(aug_ratio, emb.shape[1] - 1)
        for i in range(len(x)):
            views = [0, *(rng.choice(np.arange(1, emb.shape[1]), size=k, replace=False) if k else [])]
            for v in views:
                xs.append(x[i])
                feats.append(emb[i, v])
                groups.append(gi)
                orig.append(v == 0)
    require(n_spots > 0, "the training sections hold no spot with counts")
    return TrainingData(x=np.stack(xs), inputs=np.stack(feats), group=np.array(groups),
                        original=np.array(orig), sections=list(sections), n_spots=n_spots)
