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
the samples. The kernel is one for the panel; its strength ρ is fitted per gene, as genes differ
in how much of their residual neighbours share, given the samples' actual width: the mean of the
strength that makes one draw's spatial variogram (half the mean squared difference between spots
1, 2, 3 pitches apart) match the truth's on the validation section (:func:`variogram_strengths`)
and the one that makes its Moran's I match (:func:`moran_strengths`). The first is absolute and
asks for near-full correlation where samples are wider than the truth's scatter; the second is
scale-free and asks for less; their mean is measured in ``benchmarks/field_strengths.py``.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from ..data.context import shell_pairs, spot_pitch
from ..defaults import DEFAULT_NUM_SAMPLES, DEFAULT_SAMPLER
from ..diffusion.noise import KERNELS, SpatialField
from ..progress import phase
from .settings import PredictSettings

log = logging.getLogger(__name__)
#: kernel lengths tried, in spot pitches
LENGTHS = tuple(float(v) for v in np.geomspace(0.3, 8.0, 30))


def kernel(kind: str, d: np.ndarray, length: float) -> np.ndarray:
    """The field's correlation at distance ``d`` (pitches)."""
    return np.exp(-0.5 * (d / length) ** 2) if kind == "gauss" else np.exp(-d / length)


def ring_correlations(values: np.ndarray, rings: list[tuple[np.ndarray, np.ndarray]],
                      per_gene: bool = False) -> np.ndarray:
    """Mean over genes and pairs of each ring of the correlation across spots of ``values``
    ``(spots, genes)`` (each gene standardised over the spots; a constant gene counts 0); with
    ``per_gene``, one per ring and gene ``(rings, genes)``."""
    v = np.asarray(values, dtype=np.float64)
    v = v - v.mean(0)
    sd = v.std(0)
    u = np.divide(v, sd, out=np.zeros_like(v), where=sd > 0)
    each = np.stack([(u[i] * u[j]).mean(0) if len(i) else np.full(u.shape[1], np.nan) for i, j in rings])
    return each if per_gene else each.mean(1)


def deviation_correlations(draws: np.ndarray, rings: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The same for samples ``(spots, samples, genes)``: each spot's deviations from its own mean,
    in units of its own sd, correlated between the spots of a pair within the same sample."""
    dev = draws - draws.mean(1, keepdims=True)
    sd = dev.std(1, keepdims=True)
    u = np.divide(dev, sd, out=np.zeros_like(dev), where=sd > 0)
    return np.array([float((u[i] * u[j]).mean()) if len(i) else np.nan for i, j in rings])


def ring_distances(xy_pitch: np.ndarray, rings) -> list[np.ndarray]:
    """Each ring's pair distances (pitches)."""
    xy = np.asarray(xy_pitch, dtype=np.float64)
    return [np.linalg.norm(xy[i] - xy[j], axis=1) for i, j in rings]


def fit_kernel(target: np.ndarray, xy_pitch: np.ndarray, rings) -> dict:
    """The kernel, length and ρ whose ring means of ρ·k(d) best fit ``target`` (least squares
    over the rings that have pairs; ρ in [0, 1])."""
    dists = ring_distances(xy_pitch, rings)
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


def ring_kernel(fit: dict, xy_pitch: np.ndarray, rings) -> np.ndarray:
    """The fitted kernel's mean correlation over each ring's pairs (NaN for an empty ring)."""
    return np.array([kernel(fit["kernel"], d, fit["length"]).mean() if len(d) else np.nan
                     for d in ring_distances(xy_pitch, rings)])


def variogram_strengths(truth: np.ndarray, point: np.ndarray, width: np.ndarray, xy_pitch: np.ndarray,
                        rings, fit: dict, passed: float) -> np.ndarray:
    """Each gene's field strength ρ_g in [0, 1] that makes one draw's spatial variogram match the
    truth's ring by ring (least squares over the rings). A draw is point + deviations of variance
    ``width`` (spots, genes); its variogram at ring k is γ_k(point) + mean ½(W_i + W_j) − ρ_g ·
    ``passed`` · mean √(W_i W_j) k(d_ij), linear in ρ_g. All in the units of ``truth``/``point``."""
    need, gain = [], []
    for (i, j), d in zip(rings, ring_distances(xy_pitch, rings)):
        if not len(i):
            continue
        corr = kernel(fit["kernel"], d, fit["length"])[:, None]
        g_truth = 0.5 * ((truth[i] - truth[j]) ** 2).mean(0)
        g_point = 0.5 * ((point[i] - point[j]) ** 2).mean(0)
        need.append(g_point + 0.5 * (width[i] + width[j]).mean(0) - g_truth)
        gain.append(passed * (np.sqrt(width[i] * width[j]) * corr).mean(0))
    need, gain = np.asarray(need), np.asarray(gain)
    return np.clip((gain * need).sum(0) / np.maximum((gain ** 2).sum(0), 1e-12), 0.0, 1.0)


def ring_morans_i(values: np.ndarray, rings) -> np.ndarray:
    """Each gene's Moran's I over the ring-1 pairs: mean x_i x_j / mean x_i² (x centred over the
    spots; 0 for a constant gene)."""
    (i, j) = rings[0]
    x = values - values.mean(0)
    xx = (x ** 2).mean(0)
    return np.divide((x[i] * x[j]).mean(0), xx, out=np.zeros_like(xx), where=xx > 0)


def moran_strengths(truth: np.ndarray, point: np.ndarray, width: np.ndarray, xy_pitch: np.ndarray,
                    rings, fit: dict, passed: float, target: np.ndarray | None = None) -> np.ndarray:
    """Each gene's field strength ρ_g in [0, 1] that makes one draw's Moran's I on the ring-1
    pairs match the truth's (or ``target``, per gene, when given; ``truth`` is then unused).
    Over those pairs I = mean x_i x_j / mean x_i²; a draw's expected numerator is the point's plus
    ρ_g · ``passed`` · mean √(W_i W_j) k(d_ij), its denominator the point's plus mean W: linear in
    ρ_g. Scale-free, unlike :func:`variogram_strengths`, so the two agree only when the draws are
    as wide as the truth's scatter."""
    (i, j), d = rings[0], ring_distances(xy_pitch, rings[:1])[0]
    if not len(i):
        return np.zeros(np.shape(point)[1])
    i_truth = ring_morans_i(truth, rings) if target is None else np.asarray(target)
    p = point - point.mean(0)
    gain = passed * (np.sqrt(width[i] * width[j]) * kernel(fit["kernel"], d, fit["length"])[:, None]).mean(0)
    need = i_truth * ((p ** 2).mean(0) + width.mean(0)) - (p[i] * p[j]).mean(0)
    return np.clip(need / np.maximum(gain, 1e-12), 0.0, 1.0)


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
    return field, np.asarray(fit["rho_genes"], dtype=np.float32) if fit.get("rho_genes") else float(fit["rho"])


def calibrate_spatial(model, cond: np.ndarray, z: np.ndarray, xy_pitch: np.ndarray,
                      settings: PredictSettings, section: str = "", prior: np.ndarray | None = None,
                      group: int | None = None, progress: bool = False, rings=None) -> dict | None:
    """Fit ``model.spatial`` on a validation section's spots: conditions, cross-fitted z, positions
    in pitches, the cross-fitted prior (log2) and the section's group (its spots' shift widening
    leaves it out, as in the spread calibration). Returns the fit (also stored), or None when the
    spots have no pairs. ``progress``: a bar. ``rings``: the pairs, default those of ``xy_pitch``
    (given, ``xy_pitch`` may carry more axes than the slide's two: a field over them)."""
    rings = shell_pairs(xy_pitch) if rings is None else rings
    if not any(len(i) for i, _ in rings):
        log.info("no neighbouring spots on %s: spots are drawn independently", section)
        model.spatial = None
        return None
    settings = replace(settings, num_samples=DEFAULT_NUM_SAMPLES, sampler=DEFAULT_SAMPLER, spatial_noise=True)
    with phase(f"fit the whole-section noise field ({len(cond)} spots × {settings.num_samples} samples)",
               len(cond) * (settings.num_samples + 1), progress) as advance:
        return _calibrate(model, cond, z, xy_pitch, settings, section, prior, group, rings, advance)


def _calibrate(model, cond, z, xy_pitch, settings, section, prior, group, rings, advance) -> dict:
    """:func:`calibrate_spatial`'s fit, ``advance(n)`` called as rows are drawn."""
    centre = model.centre_z(cond, settings, advance)
    point = centre if centre is not None else model.point_z(cond, settings, advance)
    genes = ring_correlations(z - point, rings, per_gene=True)
    target = genes.mean(1)
    fit = fit_kernel(target, xy_pitch, rings)
    k = ring_kernel(fit, xy_pitch, rings)
    ok = np.isfinite(target)
    # each gene's strength under the shared kernel: least squares over the rings, in [0, 1]
    rho_genes = np.clip(k[ok] @ genes[ok] / max(k[ok] @ k[ok], 1e-12), 0.0, 1.0)
    model.spatial = {**fit, "rho_kernel": fit["rho"], "section": section, "target": target.tolist(),
                     "rho": float(rho_genes.mean()), "rho_genes": rho_genes.tolist()}
    if fit["rho"] > 0:  # how much of the noise's correlation reaches the samples
        draws = model.draw_z(cond, settings, progress=advance, xy=np.asarray(xy_pitch, dtype=np.float64),
                             pitch=1.0)
        got = deviation_correlations(draws, rings)
        expected = rho_genes.mean() * k
        ok = np.isfinite(got) & np.isfinite(expected) & (expected > 0)
        passed = float(got[ok].sum() / expected[ok].sum()) if ok.any() else 1.0
        rho_corr = np.clip(rho_genes / max(passed, 1e-3), 0.0, 1.0)
        model.spatial.update(passed=passed, achieved=got.tolist(), rho_genes_corr=rho_corr.tolist(),
                             rho_panel=float(np.clip(fit["rho"] / max(passed, 1e-3), 0.0, 1.0)))
        dev = draws - draws.mean(1, keepdims=True)
        spread = np.asarray(model.target.spread if model.target.spread is not None else 1.0, dtype=np.float64)
        per_spot = model.widening(cond, settings, exclude=group)
        width = dev.var(1) * spread ** 2 * (1.0 if per_spot is None else per_spot[:, None] ** 2)
        base = 0.0 if prior is None else prior / model.target.sd
        rho_svgm = variogram_strengths(base + z, base + point, width, xy_pitch, rings, fit, passed)
        rho_moran = moran_strengths(base + z, base + point, width, xy_pitch, rings, fit, passed)
        rho_genes = 0.5 * (rho_svgm + rho_moran)
        model.spatial.update(rho=float(rho_genes.mean()), rho_genes=rho_genes.tolist(),
                             rho_genes_variogram=rho_svgm.tolist(), rho_genes_moran=rho_moran.tolist())
    log.info("whole-section draws: residual correlation at rings 1/2/3 on %s %s; noise field %s, length %.2f "
             "pitches, rho %.3f (mean over genes)", section, np.round(target, 3).tolist(), fit["kernel"],
             fit["length"], model.spatial["rho"])
    return model.spatial


def field_provenance(model, settings: PredictSettings) -> dict:
    """What a prediction records of its noise field: ``{'spatial_field': {...}}``, or {} when its
    spots were drawn independently."""
    fit = getattr(model, "spatial", None)
    if not settings.spatial_noise or not fit or fit["rho"] <= 0:
        return {}
    return {"spatial_field": {"kernel": fit["kernel"], "length_pitches": float(fit["length"]),
                              "rho": float(fit["rho"]), "fitted_on": str(fit.get("section", ""))}}
