"""One diffusion core for Stem and LGDiST: schedules, training loss, samplers."""

from .gaussian import GaussianDiffusion, parse_sampler
from .schedules import Schedule, make_schedule

__all__ = ["GaussianDiffusion", "Schedule", "make_schedule", "parse_sampler"]
