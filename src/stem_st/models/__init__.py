"""Networks: the Stem diffusion transformer over gene tokens."""

from .stem_dit import PRESETS, StemDiT, StemDiTConfig

__all__ = ["PRESETS", "StemDiT", "StemDiTConfig"]
