"""A ridge probe: PCA then ridge regression with the penalty chosen by efficient
leave-one-out cross-validation (the HEST-Benchmark probe), folded into one affine map."""

from __future__ import annotations

import numpy as np

ALPHAS = tuple(np.logspace(-1, 5, 13))


class RidgeProbe:
    """``y ≈ x @ W + b`` fitted as PCA(``n_components``) → RidgeCV over ``alphas``."""

    def __init__(self, n_components: int = 256, alphas: tuple[float, ...] = ALPHAS):
        self.n_components, self.alphas = n_components, alphas

    def fit(self, x: np.ndarray, y: np.ndarray) -> RidgeProbe:
        from sklearn.decomposition import PCA
        from sklearn.linear_model import RidgeCV

        pca = PCA(n_components=min(self.n_components, *x.shape), random_state=0).fit(x)
        ridge = RidgeCV(alphas=self.alphas).fit(pca.transform(x), y)
        self.alpha = float(ridge.alpha_)
        self.weight = (pca.components_.T @ np.atleast_2d(ridge.coef_).T).astype(np.float32)
        self.bias = (ridge.intercept_ - pca.mean_ @ self.weight).astype(np.float32)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float32) @ self.weight + self.bias).astype(np.float32)
