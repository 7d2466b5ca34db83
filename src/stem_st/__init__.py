"""Stem-ST: spatial gene expression from H&E with a conditional diffusion model."""

__version__ = "0.1.0"
