"""Prediction: many expression samples per spot, summarised with their spread."""
