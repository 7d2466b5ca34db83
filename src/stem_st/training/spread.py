"""How wide and in what shape a spot's draws are: the calibrated factors on their deviations from
their mean (one for 80 % intervals, per gene, by CRPS, or at three levels) and how a spot's or a
draw's rank scales them."""

from __future__ import annotations

import numpy as np

from ..scoring import rank_coverage


def scale_deviations(dev: np.ndarray, per_spot: np.ndarray | None) -> np.ndarray:
    """``(N, S, G)`` deviations times each spot's multiplier ``(N,)`` (None: unchanged)."""
    return dev if per_spot is None else dev * np.asarray(per_spot, dtype=np.float32)[:, None, None]


#: the central-interval levels the ``levels`` criterion calibrates (the middle one is the spread's)
SHAPE_LEVELS = (0.5, 0.8, 0.95)


def _rank_levels(samples: int) -> np.ndarray:
    """The central-interval level each rank of ``samples`` sorted draws sits at: |2q − 1| with
    q = (rank + ½) / samples (the middle draws near 0, the extremes near 1)."""
    return np.abs(2 * (np.arange(samples) + 0.5) / samples - 1)


def shape_deviations(dev: np.ndarray, shape: np.ndarray | None) -> np.ndarray:
    """``(N, S, G)`` deviations, each times the factor of its rank's level among its spot and
    gene's S draws, linear between :data:`SHAPE_LEVELS` (flat outside): a non-decreasing
    ``shape`` narrows the middle and widens the tails, keeping every draw's order."""
    if shape is None or dev.shape[1] < 2:
        return dev
    f = np.interp(_rank_levels(dev.shape[1]), SHAPE_LEVELS, np.asarray(shape, dtype=np.float64))
    rank = np.argsort(np.argsort(dev, axis=1), axis=1)
    return (dev * f[rank]).astype(np.float32)


def spread_levels(z_true: np.ndarray, z_samples: np.ndarray, centre: np.ndarray | None = None,
                  rounds: int = 4) -> np.ndarray:
    """Factors ``(3,)`` at :data:`SHAPE_LEVELS` for :func:`shape_deviations` such that each
    central interval (50, 80, 95 %) of the shaped samples holds its level of the truth: for each
    level in turn the smallest factor on a 1 % grid that does, kept non-decreasing, ``rounds``
    times (each interval's ends move mostly with its own level's factor). Arguments as
    :func:`spread_factor`."""
    m = z_samples.mean(1, keepdims=True)
    dev = np.sort(z_samples - m, axis=1)
    off = z_true - (m[:, 0] if centre is None else centre)
    s = dev.shape[1]
    ranks = _rank_levels(s)

    def covered(f: np.ndarray, level: float) -> bool:
        g = np.interp(ranks, SHAPE_LEVELS, f)
        ends = []
        for q in ((1 - level) / 2, (1 + level) / 2):  # numpy's linear quantile of the sorted, shaped draws
            i = min(int(np.floor((s - 1) * q)), s - 2)
            w = (s - 1) * q - i
            ends.append((1 - w) * g[i] * dev[:, i] + w * g[i + 1] * dev[:, i + 1])
        return bool(((off >= ends[0]) & (off <= ends[1])).mean() >= level)

    f = np.full(3, spread_factor(z_true, z_samples, centre), dtype=np.float64)
    for _ in range(rounds):
        for k in (0, 2, 1):
            lo, hi = (f[k - 1] if k else 0.1), (f[k + 1] if k < 2 else 8.0)
            trial = f.copy()
            for x in np.arange(lo, hi + 1e-9, 0.01):
                trial[k] = x
                if covered(trial, SHAPE_LEVELS[k]):
                    break
            f = trial
    return f


def spread_factor(z_true: np.ndarray, z_samples: np.ndarray, centre: np.ndarray | None = None,
                  level: float = 0.8, per_gene: bool = False, criterion: str = "coverage") -> float | np.ndarray:
    """The factor s on the samples' deviations from their mean (placed at ``centre``, default the
    samples' mean) that fits the truth: ``(N, G)`` truth and centre, ``(N, S, G)`` samples (with
    S as at prediction: few samples give narrow intervals).

    ``coverage``: the smallest s on a 1 % grid up to 8 whose central ``level`` intervals hold
    ``level`` of the truth. ``rank``: the smallest s, from 0.3 up (0.1 per gene), at which ``level`` of the
    truth's randomised ranks among the draws lie in their central ``level`` (``scoring.rank_coverage``:
    unbiased at any number of draws, where the interval of S empirical quantiles asks draws wider
    than the truth's spread, about 1.19 × for 20 Gaussian draws). ``crps``: the s on that grid
    with the lowest mean fair CRPS (the proper score; it also rewards sharpness), from 0.1 up.
    One factor for the panel (by coverage: from 1 up, only widening), or with ``per_gene`` one
    per gene ``(G,)`` from 0.1 up."""
    m = z_samples.mean(1, keepdims=True)
    dev = z_samples - m
    off = z_true - (m[:, 0] if centre is None else centre)
    start = 0.1 if per_gene or criterion == "crps" else 0.3 if criterion == "rank" else 1.0
    grid = np.arange(start, 8.0, 0.01)
    if criterion == "crps":
        return _crps_factor(off, dev, grid, per_gene)
    if criterion == "rank":
        return _rank_factor(off, dev, grid, level, per_gene)
    lo_q, hi_q = (1 - level) / 2, (1 + level) / 2
    lo, hi = np.quantile(dev, lo_q, axis=1), np.quantile(dev, hi_q, axis=1)
    if per_gene:
        out = np.full(z_true.shape[1], 8.0)
        todo = np.ones(z_true.shape[1], dtype=bool)
        for s in grid:
            ok = todo & (((off >= s * lo) & (off <= s * hi)).mean(0) >= level)
            out[ok], todo = s, todo & ~ok
            if not todo.any():
                break
        return out
    for s in grid:
        if ((off >= s * lo) & (off <= s * hi)).mean() >= level:
            return float(s)
    return 8.0


def _rank_factor(off: np.ndarray, dev: np.ndarray, grid: np.ndarray, level: float,
                 per_gene: bool) -> float | np.ndarray:
    """The first s of ``grid`` at which ``s · dev`` ranks ``level`` of ``off`` in its central
    ``level`` (per gene with ``per_gene``); coverage grows with s, so bisect on the grid."""
    def ok(s: float) -> bool:
        return bool(rank_coverage(off, s * dev, level) >= level)

    if per_gene:
        return np.array([_rank_factor(off[:, [g]], dev[:, :, [g]], grid, level, False)
                         for g in range(off.shape[1])])
    lo, hi = 0, len(grid) - 1
    if not ok(grid[hi]):
        return 8.0
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(grid[mid]) else (mid + 1, hi)
    return float(grid[lo])


def _crps_factor(off: np.ndarray, dev: np.ndarray, grid: np.ndarray, per_gene: bool) -> float | np.ndarray:
    """argmin over ``grid`` of the fair CRPS of ``s · dev`` against ``off`` (its spread term is
    linear in s: E|X − X'| of s · dev is s times that of dev)."""
    m = dev.shape[1]
    pair = np.abs(dev[:, :, None] - dev[:, None]).sum((1, 2)) / (m * (m - 1))  # (N, G)
    scores = np.stack([(np.abs(s * dev - off[:, None]).mean(1) - s * pair / 2).mean(0) for s in grid])
    if per_gene:
        return grid[np.argmin(scores, axis=0)]
    return float(grid[np.argmin(scores.mean(1))])


def common_direction(sd: np.ndarray) -> np.ndarray:
    """The unit direction in z units (per-gene ``sd``) of one shift of every gene's log2(1 +
    count) alike: what a spot's sequencing depth or cell density moves."""
    v = 1.0 / np.asarray(sd, dtype=np.float64)
    return v / np.linalg.norm(v)


def common_share(dev: np.ndarray, v: np.ndarray) -> float:
    """The share of the deviations' squared length (``(..., G)``) along the unit direction ``v``."""
    return float(((dev @ v) ** 2).mean() / max(float((dev ** 2).sum(-1).mean()), 1e-12))


def with_common(dev: np.ndarray, common: np.ndarray | None, v: np.ndarray) -> np.ndarray:
    """``(..., G)`` deviations with their component along ``v`` scaled by 1 + λ, then each gene
    scaled by its factor: ``common`` = [λ, c₁ … c_G] from :func:`fit_common` (None: unchanged)."""
    if common is None:
        return dev
    lam, c = float(common[0]), np.asarray(common[1:], dtype=np.float64)
    return ((dev + lam * (dev @ v)[..., None] * v) * c).astype(np.float32)


def fit_common(z_true: np.ndarray, z_samples: np.ndarray, v: np.ndarray) -> np.ndarray:
    """[λ, c₁ … c_G] for :func:`with_common`: λ on a 5 % grid in [−0.9, 4] makes the draws'
    share along ``v`` (about their mean) match the truth's residuals' (about the same mean), the
    c_g keep each gene's deviation variance (so its intervals) as calibrated."""
    m = z_samples.mean(1, keepdims=True)
    dev = z_samples - m
    target = common_share(z_true - m[:, 0], v)
    var = (dev ** 2).mean((0, 1))
    along = (dev @ v)[..., None] * v
    best = (np.inf, 0.0, np.ones_like(var))
    for lam in np.arange(-0.9, 4.0 + 1e-9, 0.05):
        c = np.sqrt(var / np.maximum(((dev + lam * along) ** 2).mean((0, 1)), 1e-12))
        gap = abs(common_share((dev + lam * along) * c, v) - target)
        if gap < best[0]:
            best = (gap, lam, c)
    return np.r_[best[1], best[2]].astype(np.float32)

