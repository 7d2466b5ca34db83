"""Multiple imputation with LGDiST: K independent completions of a section (draws), optionally
centred on the model's point and their deviations scaled by a spread fitted on validation
hidden entries, and their per-entry spread in counts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace

import numpy as np

from ..defaults import DEFAULT_NUM_SAMPLES, DEFAULT_SAMPLER
from ..errors import require
from ..evaluation.probabilistic import hidden_entry_scores
from .inputs import MaskedSection
from .model import LGDiST

#: ``ddof`` of ``layers['completed_std']``: the sample sd (Rubin's between-imputation variance)
STD_DDOF = 1
#: spreads tried by :func:`fit_spread` (geometric grid, 0.25 to 8)
SPREAD_GRID = tuple(float(x) for x in np.geomspace(0.25, 8.0, 61))
#: draws and sampler with which the spread is fitted on the validation sections
CALIBRATION_DRAWS, CALIBRATION_SAMPLER = DEFAULT_NUM_SAMPLES, DEFAULT_SAMPLER


@contextlib.contextmanager
def _sampled(model: LGDiST) -> Iterator[LGDiST]:
    """``model`` whose stage-2 estimate is a sampled centre latent (not the posterior mean)."""
    old = model.settings
    model.settings = replace(old, point="samples")
    try:
        yield model
    finally:
        model.settings = old


def draw_seeds(seed: int, num_samples: int) -> list[int]:
    """Seeds of the draws: derived from ``seed``, distinct from the point's own stream."""
    return [int(s) for s in np.random.SeedSequence([seed, 1]).generate_state(num_samples)]


def raw_draws(model: LGDiST, values: np.ndarray, xy: np.ndarray, num_samples: int, sampler: str,
              seed: int, device: str = "cpu") -> np.ndarray:
    """``num_samples`` stage-2 completions of one section, log1p ``(spots, K, genes)``: draw k
    runs ``sampler`` once on every centre latent (with two rounds, round 2 conditions on draw k
    of round 1) and decodes it. ``values``: log1p, zeros are dropouts (entries to score removed)."""
    with _sampled(model):
        draws = [model.diffusion_completion(values, xy, 1, sampler, s, device)
                 for s in draw_seeds(seed, num_samples)]
    return np.stack(draws, axis=1)


def centred(draws: np.ndarray, point: np.ndarray | None, spread: float = 1.0) -> np.ndarray:
    """Draws ``(spots, K, genes)`` with deviations from their mean scaled by ``spread`` about
    ``point`` ``(spots, genes)`` (their own mean if ``None``), clipped at 0 (log1p ≥ 0)."""
    d = np.asarray(draws, dtype=np.float64)
    mean = d.mean(1, keepdims=True)
    centre = mean if point is None else np.asarray(point, dtype=np.float64)[:, None]
    return np.maximum(centre + spread * (d - mean), 0.0).astype(np.float32)


def model_draws(model: LGDiST, values: np.ndarray, xy: np.ndarray, num_samples: int, sampler: str,
                seed: int, device: str = "cpu", point: np.ndarray | None = None) -> np.ndarray:
    """The model's draws, log1p ``(spots, K, genes)``: raw stage-2 draws, centred on the point
    (``point``, or the model's own) when ``settings.centre_draws``, deviations × ``settings.spread``."""
    s = model.settings
    d = raw_draws(model, values, xy, num_samples, sampler, seed, device)
    if not s.centre_draws and s.spread == 1.0:
        return d.astype(np.float32)
    if s.centre_draws and point is None:
        point = model.complete(values, xy, num_samples, sampler, seed, device)
    return centred(d, point if s.centre_draws else None, s.spread)


def fit_spread(truth: np.ndarray, draws: np.ndarray, hidden: np.ndarray, point: np.ndarray | None = None,
               target: str = "coverage80", grid: tuple[float, ...] = SPREAD_GRID) -> tuple[float, list[dict]]:
    """The spread (factor on the draws' deviations about ``point``, or their own mean) that best
    meets ``target`` on the ``hidden`` entries: ``coverage80`` (coverage of the central 80 %
    interval closest to 0.8) or ``CRPS`` (lowest). Returns it and every grid point's scores: the
    coverage, and the CRPS where it was needed (every point for the CRPS target, else the chosen)."""
    require(target in ("coverage80", "CRPS"), "target must be coverage80 or CRPS")
    h = np.asarray(hidden, dtype=bool)

    def scores(f: float, with_crps: bool) -> dict:
        sc = hidden_entry_scores(truth, centred(draws, point, f), h, with_energy=False, with_crps=with_crps)
        return {"spread": f, **({"CRPS": sc["CRPS"]} if with_crps else {}), "coverage80": sc["coverage80"]}

    require(h.any(), "no hidden entry to fit the spread on")
    rows = [scores(f, target == "CRPS") for f in grid]
    key = (lambda r: abs(r["coverage80"] - 0.8)) if target == "coverage80" else (lambda r: r["CRPS"])
    best = min(rows, key=key)
    if "CRPS" not in best:  # chosen by coverage: score the chosen spread only
        best.update(scores(best["spread"], True))
    return best["spread"], rows


def calibrate_spread(model: LGDiST, val: list[MaskedSection], seed: int = 0, device: str = "cpu") -> dict:
    """Fit the spread on the hidden panel entries of masked validation sections (``model.settings``
    becomes a copy with it): :data:`CALIBRATION_DRAWS` raw draws per entry, centred on the point
    when ``settings.centre_draws``, spread chosen for 80 % central coverage (:func:`fit_spread`)."""
    k, s = len(model.panel), model.settings
    truth, draws, points, hidden = [], [], [], []
    for sec in val:
        draws.append(raw_draws(model, sec.observed, sec.xy, CALIBRATION_DRAWS, CALIBRATION_SAMPLER, seed,
                               device)[:, :, :k])
        if s.centre_draws:
            points.append(model.complete(sec.observed, sec.xy, 4, CALIBRATION_SAMPLER, seed, device)[:, :k])
        truth.append(sec.target[:, :k])  # hidden entries are measured: the target is their value
        hidden.append(sec.hidden[:, :k])
    point = np.concatenate(points) if s.centre_draws else None
    spread, rows = fit_spread(np.concatenate(truth), np.concatenate(draws), np.concatenate(hidden), point)
    model.settings = replace(s, spread=spread)
    best = next(r for r in rows if r["spread"] == spread)
    return {"spread": spread, "centred": s.centre_draws, "coverage80": best["coverage80"], "CRPS": best["CRPS"],
            "draws": CALIBRATION_DRAWS, "sampler": CALIBRATION_SAMPLER}


def completion_draws(model: LGDiST, counts: np.ndarray, xy: np.ndarray, num_samples: int,
                     sampler: str, seed: int, device: str = "cpu", point: np.ndarray | None = None) -> np.ndarray:
    """``num_samples`` completions of one section, counts ``(spots, K, genes)`` float32
    (:func:`model_draws`, expm1 of log1p; ``point`` log1p). Measured (nonzero) entries are not
    imputed: every draw keeps the measured count."""
    log1p = model_draws(model, np.log1p(counts), xy, num_samples, sampler, seed, device, point)
    measured = (counts > 0)[:, None, :]
    return np.where(measured, counts[:, None, :], np.expm1(log1p)).astype(np.float32)


def draws_std(draws: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per-entry sd of ``draws`` over the K axis (``ddof`` = :data:`STD_DDOF`), 0 where measured."""
    std = np.asarray(draws, dtype=np.float64).std(axis=1, ddof=STD_DDOF)
    return np.where(counts > 0, 0.0, std).astype(np.float32)
