"""Whole sections, not independent spots: the starting noise of neighbouring spots co-varies.

A draw of Stem is a deterministic function of its starting noise x_T for the shipped ODE
samplers (dpm++, ddim), and the network sees one spot at a time. So when x_T of neighbouring
spots is correlated (:class:`~stem_st.diffusion.noise.SpatialField`, each spot's own x_T still
exactly N(0, I)), each spot's samples keep their distribution — CRPS, energy score and coverage
are unchanged in expectation — while one draw of a section becomes a coherent map. Nothing is
retrained: each spot's training loss is the same whatever the noise's correlation across spots.

How much neighbours share is measured, not assumed: on the validation section (a training
section the network never saw), the residuals of the truth about the point estimate are
correlated ring by ring (1, 2, 3 spot pitches; :data:`~stem_st.data.context.SHELLS`); a kernel
ρ·k(d/ℓ) (Gaussian or exponential, length ℓ in pitches) is fitted to those correlations by least
squares, then one set of draws with it measures how much of the noise's correlation reaches
the samples, and ρ is divided by that fraction (capped at 1).
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from ..data.context import shell_pairs, spot_pitch
from ..defaults import DEFAULT_NUM_SAMPLES, DEFAULT_SAMPLER
from ..diffusion.noise import KERNELS, SpatialField
from .settings import PredictSettings

log = logging.getLogger(__name__)
#: kernel lengths tried, in spot pitches
LENGTHS = tuple(float(v) for v in np.geomspace(0.3, 8.0, 30))


def kernel(kind: str, d: np.ndarray, length: float) -> np.ndarray:
    """The field's correlation at distance ``d`` (pitches)."""
    return np.exp(-0.5 * (d / length) ** 2) if kind == "gauss" else np.exp(-d / length)


def ring_correlations(values: np.ndarray, rings: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Mean over genes and pairs of each ring of the correlation across spots of ``values``
    ``(spots, genes)`` (each gene standardised over the spots; a constant gene counts 0)."""
    v = np.asarray(values, dtype=np.float64)
    v = v - v.mean(0)
    sd = v.std(0)
    u = np.divide(v, sd, out=np.zeros_like(v), where=sd > 0)
    return np.array([float((u[i] * u[j]).mean()) if len(i) else np.nan for i, j in rings])


def deviation_correlations(draws: np.ndarray, rings: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The same for samples ``(spots, samples, genes)``: each spot's deviations from its own mean,
    in units of its own sd, correlated between the spots of a pair within the same sample."""
    dev = draws - draws.mean(1, keepdims=True)
    sd = dev.std(1, keepdims=True)
    u = np.divide(dev, sd, out=np.zeros_like(dev), where=sd > 0)
    return np.array([float((u[i] * u[j]).mean()) if len(i) else np.nan for i, j in rings])


def fit_kernel(target: np.ndarray, xy_pitch: np.ndarray, rings) -> dict:
    """The kernel, length and ρ whose ring means of ρ·k(d) best fit ``target`` (least squares
    over the rings that have pairs; ρ in [0, 1])."""
    xy = np.asarray(xy_pitch, dtype=np.float64)
    dists = [np.linalg.norm(xy[i] - xy[j], axis=1) for i, j in rings]
    ok = np.array([len(d) > 0 for d in dists]) & np.isfinite(target)
    best = {"kernel": "gauss", "length": 1.0, "rho": 0.0, "sse": float("inf")}
    for kind in KERNELS:
        for length in LENGTHS:
            k = np.array([kernel(kind, d, length).mean() if len(d) else 0.0 for d in dists])[ok]
            rho = float(np.clip((k @ target[ok]) / max(k @ k, 1e-12), 0.0, 1.0))
            sse = float(((rho * k - target[ok]) ** 2).sum())
            if sse < best["sse"]:
                best = {"kernel": kind, "length": length, "rho": rho, "sse": sse}
    return best


def section_field(model, xy: np.ndarray | None, settings: PredictSettings, samples: int, device,
                  pitch: float | None = None):
    """``(SpatialField, ρ)`` for a job's spots at ``xy`` (full-resolution pixels; ``pitch``: their
    spot pitch, default the median nearest-neighbour distance), or None: the setting is off, the
    model has no fitted field (trained without a validation section, or before it existed), no
    coordinates, or fewer than two spots."""
    fit = getattr(model, "spatial", None)
    if not settings.spatial_noise or not fit or fit["rho"] <= 0 or xy is None or len(xy) < 2:
        return None
    pitch = pitch or spot_pitch(xy)
    if not pitch > 0:
        return None
    field = SpatialField(np.asarray(xy, dtype=np.float64) / pitch, samples, model.net_cfg.num_genes,
                         fit["length"], fit["kernel"], settings.seed, device)
    return field, float(fit["rho"])


def calibrate_spatial(model, cond: np.ndarray, z: np.ndarray, xy_pitch: np.ndarray,
                      settings: PredictSettings, section: str = "") -> dict | None:
    """Fit ``model.spatial`` on a validation section's spots: conditions, cross-fitted z and
    positions in pitches. Returns the fit (also stored), or None when the spots have no pairs."""
    rings = shell_pairs(xy_pitch)
    if not any(len(i) for i, _ in rings):
        log.info("no neighbouring spots on %s: spots are drawn independently", section)
        model.spatial = None
        return None
    settings = replace(settings, num_samples=DEFAULT_NUM_SAMPLES, sampler=DEFAULT_SAMPLER, spatial_noise=True)
    centre = model.centre_z(cond, settings)
    point = centre if centre is not None else model.point_z(cond, settings)
    target = ring_correlations(z - point, rings)
    fit = fit_kernel(target, xy_pitch, rings)
    model.spatial = {**fit, "rho_kernel": fit["rho"], "section": section, "target": target.tolist()}
    if fit["rho"] > 0:  # how much of the noise's correlation reaches the samples
        draws = model.draw_z(cond, settings, xy=np.asarray(xy_pitch, dtype=np.float64), pitch=1.0)
        got = deviation_correlations(draws, rings)
        expected = fit["rho"] * np.array([kernel(fit["kernel"], np.linalg.norm(
            xy_pitch[i] - xy_pitch[j], axis=1), fit["length"]).mean() if len(i) else np.nan for i, j in rings])
        ok = np.isfinite(got) & np.isfinite(expected) & (expected > 0)
        passed = float(got[ok].sum() / expected[ok].sum()) if ok.any() else 1.0
        model.spatial.update(passed=passed, achieved=got.tolist(),
                             rho=float(np.clip(fit["rho"] / max(passed, 1e-3), 0.0, 1.0)))
    log.info("whole-section draws: residual correlation at rings 1/2/3 on %s %s; noise field %s, length %.2f "
             "pitches, rho %.3f", section, np.round(target, 3).tolist(), fit["kernel"], fit["length"],
             model.spatial["rho"])
    return model.spatial


def field_provenance(model, settings: PredictSettings) -> dict:
    """What a prediction records of its noise field: ``{'spatial_field': {...}}``, or {} when its
    spots were drawn independently."""
    fit = getattr(model, "spatial", None)
    if not settings.spatial_noise or not fit or fit["rho"] <= 0:
        return {}
    return {"spatial_field": {"kernel": fit["kernel"], "length_pitches": float(fit["length"]),
                              "rho": float(fit["rho"]), "fitted_on": str(fit.get("section", ""))}}
