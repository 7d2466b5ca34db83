"""What the LGDiST networks see: sections with hidden entries removed, zeros pre-filled by the
adaptive median, centred by the training means, stacked into 7-spot neighbourhoods."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from ..errors import require
from .baselines import adaptive_median
from .masking import hide, sample_hidden
from .neighbours import neighbourhoods

PREFILLS = ("median", "zeros")


def prefilled(values: np.ndarray, xy: np.ndarray, how: str = "median") -> np.ndarray:
    """``values`` (log1p, zeros = dropouts) with every zero replaced by the SpaRED adaptive
    median of its neighbours (``median``) or left at zero (``zeros``)."""
    require(how in PREFILLS, f"unknown prefill '{how}'; choose {' or '.join(PREFILLS)}")
    v = np.asarray(values, dtype=np.float32)
    return v if how == "zeros" else np.where(v > 0, v, adaptive_median(v, xy)).astype(np.float32)


@dataclass
class MaskedSection:
    """One section as a model input: ``observed`` values (hidden entries removed), the
    ``input`` built from them, the training ``target`` (every measured value, the pre-fill at
    real zeros) and the ``hidden`` entries (all genes wide; only panel entries are ever hidden)."""

    observed: np.ndarray
    input: np.ndarray
    target: np.ndarray
    hidden: np.ndarray
    xy: np.ndarray


def mask_section(values: np.ndarray, xy: np.ndarray, n_panel: int, prefill: str, protocol: str | None = None,
                 rng: np.random.Generator | None = None) -> MaskedSection:
    """Hide measured panel entries under ``protocol`` (none if ``None``), then pre-fill."""
    v = np.asarray(values, dtype=np.float32)
    hidden = np.zeros(v.shape, dtype=bool)
    if protocol is not None:
        hidden[:, :n_panel] = sample_hidden(v[:, :n_panel], rng, protocol)
    observed = hide(v, hidden)
    return MaskedSection(observed, prefilled(observed, xy, prefill), prefilled(v, xy, prefill), hidden, xy)


@dataclass
class Neighbourhoods:
    """Stacked sections: centred input and target, masks, neighbourhood indices into the stack."""

    values: torch.Tensor    # (N, G) centred input
    target: torch.Tensor    # (N, G) centred target
    observed: torch.Tensor  # (N, G) bool: non-zero in the input before pre-filling
    hidden: torch.Tensor    # (N, G) bool: measured but hidden (scored by validation)
    index: torch.Tensor     # (N, 7) rows of the stack
    present: torch.Tensor   # (N, 7) bool

    @property
    def measured(self) -> torch.Tensor:
        """Entries measured before hiding (where the target is a real value)."""
        return self.observed | self.hidden

    def to(self, device: torch.device | str) -> Neighbourhoods:
        return Neighbourhoods(*(getattr(self, f.name).to(device) for f in fields(self)))

    def with_values(self, values: torch.Tensor) -> Neighbourhoods:
        return replace(self, values=values)


def stack(sections: list[MaskedSection], means: np.ndarray) -> Neighbourhoods:
    """Neighbourhoods of every section, stacked (indices offset per section)."""
    parts: dict[str, list] = {k: [] for k in ("values", "target", "observed", "hidden", "index", "present")}
    off = 0
    for s in sections:
        idx, pr = neighbourhoods(s.xy)
        parts["values"].append(s.input - means)
        parts["target"].append(s.target - means)
        parts["observed"].append(s.observed > 0)
        parts["hidden"].append(s.hidden)
        parts["index"].append(idx + off)
        parts["present"].append(pr)
        off += len(s.input)
    cat = {k: torch.from_numpy(np.concatenate(v)) for k, v in parts.items()}
    return Neighbourhoods(cat["values"].float(), cat["target"].float(), cat["observed"], cat["hidden"],
                          cat["index"].long(), cat["present"])
