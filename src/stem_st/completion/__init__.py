"""LGDiST-style completion of ST dropout: genes by Moran's I, spot neighbourhoods, masked
evaluation, baselines, and the two-stage model built on the shared diffusion core."""
