"""Image encoders: the registry, weights, the embedding cache and spot embedding."""
