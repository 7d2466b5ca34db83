"""Stem-ST."""
