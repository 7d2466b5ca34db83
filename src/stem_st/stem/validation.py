"""Training that watches its samples.

One training section is kept out of the network's training (the ridge prior still learns from
it, cross-fitted as before, so its residuals are those of a section the network never saw, as
a new section's are). Every few steps the EMA network draws samples for that section's spots;
they are centred and widened as prediction does, and scored in log2(1 + count) by two proper
scores: the energy score (the panel as one vector: marginals and dependence) and the variogram
score (pairwise gene differences: the dependence the energy score barely sees). Each is
divided by the score of a fixed reference forecast on the same spots (the prior plus
independent Gaussian noise with each gene's training residual sd), and the two ratios are
added: a positively weighted sum of proper scores with weights fixed for the run, so it is
proper too, and neither score's units dominate. Lower is better; 2 is the reference's.

The best-scoring state is kept (``best/``) and the samples' spread is calibrated on the same
section's residuals, never on spots the network trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from ..defaults import DEFAULT_SAMPLER
from ..errors import require
from ..scoring import crps, energy, variogram
from ..training.data import TrainingData
from ..training.targets import spread_factor
from .settings import PredictSettings

#: spots of the validation section scored every few steps (a fixed random subset) and samples per
#: spot: sized so that ten validations cost the CPU demo about as much as the training-spot
#: calibration they replace (a tiny network's forward pass is ~50 ms per 64 rows on two cores)
VAL_SPOTS = 96
VAL_SAMPLES = 10
#: spots of the validation section the final spread is calibrated on
CALIBRATION_SPOTS = 1024
#: fewest training sections for which ``validation='auto'`` keeps one out
AUTO_MIN_SECTIONS = 3


@dataclass
class ValidationSet:
    """A validation section's spots: standardised conditions, cross-fitted z and prior (log2)."""

    section: str
    group: int
    rows: np.ndarray   # sorted original-view pair indices of the section (up to CALIBRATION_SPOTS)
    scored: np.ndarray  # positions in ``rows`` of the spots scored every few steps (up to VAL_SPOTS)
    x: np.ndarray      # (rows, G) log2(1 + count)
    xy: np.ndarray | None = None  # (rows, 2) spot centres in the section's spot pitches
    cond: np.ndarray | None = None
    z: np.ndarray | None = None
    prior: np.ndarray | None = None
    reference: dict | None = None  # the reference forecast's scores on the scored spots


def choose_section(data: TrainingData, choice: str, seed: int) -> int | None:
    """The training group kept for validation: ``none``; a section id; or ``auto``: with at least
    AUTO_MIN_SECTIONS training sections, the most typical one (the medoid of the sections' mean
    standardised inputs), so the score measures the step to a new section like the others."""
    if choice == "none":
        return None
    if choice != "auto":
        require(choice in data.groups, f"--validation {choice} is not a training section "
                f"({', '.join(data.groups)}); give one of them, auto or none")
        require(len(data.groups) >= 2, "--validation needs at least two training sections")
        return data.groups.index(choice)
    if len(data.groups) < AUTO_MIN_SECTIONS:
        return None
    rng = np.random.default_rng(seed)
    means = []
    for g in range(len(data.groups)):
        rows = np.flatnonzero((data.group == g) & data.original)
        means.append(data.inputs.rows(np.sort(rng.permutation(rows)[:VAL_SPOTS])))
    allrows = np.concatenate(means)
    mu, sd = allrows.mean(0), allrows.std(0) + 1e-6
    centres = np.stack([((m - mu) / sd).mean(0) for m in means])
    dist = np.sqrt(((centres[:, None] - centres[None]) ** 2).sum(-1)).sum(1)
    return int(np.argmin(dist))


def start_validation(data: TrainingData, group: int, seed: int) -> ValidationSet:
    """Read the section's log2 expression before the prior is subtracted from the pairs."""
    rng = np.random.default_rng(seed)
    rows = np.flatnonzero((data.group == group) & data.original)
    rows = np.sort(rng.permutation(rows)[:CALIBRATION_SPOTS])
    scored = np.sort(rng.permutation(len(rows))[:VAL_SPOTS])
    return ValidationSet(data.groups[group], group, rows, scored, data.x.rows(rows),
                         None if data.xy is None else data.xy[rows].astype(np.float64))


def finish_validation(vs: ValidationSet, pairs, target) -> ValidationSet:
    """Conditions, z and the cross-fitted prior once the pairs hold residuals; the reference
    forecast's scores."""
    vs.cond, vs.z = pairs.numpy(vs.rows)
    vs.prior = (vs.x - target.decode(vs.z, np.zeros_like(vs.x))).astype(np.float32)
    ref = np.random.default_rng(0).standard_normal((len(vs.scored), VAL_SAMPLES, vs.z.shape[1]))
    vs.reference = _scores(vs.x[vs.scored], _expression(target, ref.astype(np.float32), vs.prior[vs.scored]))
    return vs


def _expression(target, z: np.ndarray, prior: np.ndarray) -> np.ndarray:
    return np.maximum(target.decode(z, prior[:, None]), 0)


def _scores(x: np.ndarray, samples: np.ndarray) -> dict[str, float]:
    return {"energy": energy(x, samples), "variogram": variogram(x, samples)}


def draw_settings(seed: int, device: str) -> PredictSettings:
    """Validation draws with prediction's default sampler, VAL_SAMPLES per spot (the fair energy
    score does not depend on the number; the variogram score does, so it is fixed for the run)."""
    return PredictSettings(num_samples=VAL_SAMPLES, sampler=DEFAULT_SAMPLER, seed=seed, device=device)


def score_network(model, net: torch.nn.Module, vs: ValidationSet, settings: PredictSettings) -> dict[str, float]:
    """Draw with ``net`` (the EMA network) for the scored spots, centre and calibrate them as
    prediction does, and score them; ``val`` is the sum of the two relative scores."""
    keep, model.net = model.net, net
    try:
        cond, z_true = vs.cond[vs.scored], vs.z[vs.scored]
        draws = model.draw_z(cond, settings)
        centre = model.centre_z(cond, settings)
    finally:
        model.net = keep
    recipe = model.recipe
    spread = spread_factor(z_true, draws, centre, per_gene=recipe.spread_per_gene,
                           criterion=recipe.spread_criterion) if recipe.calibrate_spread else 1.0
    at = replace(model.target, spread=np.asarray(spread, dtype=np.float32), spread_plain=None)
    widened = at.widen(draws, centre)
    x, prior = vs.x[vs.scored], vs.prior[vs.scored]
    samples = _expression(model.target, widened, prior)
    s = _scores(x, samples)
    return {"val": s["energy"] / vs.reference["energy"] + s["variogram"] / vs.reference["variogram"],
            "val_energy": s["energy"], "val_variogram": s["variogram"], "val_crps": crps(x, samples),
            "val_spread": float(np.median(spread))}
