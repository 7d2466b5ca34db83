"""Training: data from prepared datasets, the loop, EMA, checkpoints, DDP."""
