"""The Stem recipe: every modelling choice beyond the network size, in one object.

It is built once (by the CLI or the API), stored in the run's checkpoint and config, and read
back by every later stage (predict, predict-slide, demo, evaluate), so a run always predicts
the way it was trained. ``paper`` is the faithful reproduction of Zhu et al. (ICLR 2025);
``default`` is the combination chosen on the leave-one-section-out benchmark
(``benchmarks/accuracy_loo.py``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from .data.context import CONTEXTS
from .defaults import OBJECTIVES
from .errors import StemError, require

TARGETS = ("log2", "zscore")
PRIORS = ("none", "ridge")

POINTS = ("sample_mean", "posterior_mean")
LR_SCHEDULES = ("constant", "cosine")
SPREAD_CRITERIA = ("coverage", "crps", "levels", "rank")


@dataclass(frozen=True)
class Recipe:
    """What Stem learns and how it summarises its samples.

    - ``target``: ``log2`` diffuses log2(1 + count) itself (paper); ``zscore`` diffuses it
      standardised per gene with training statistics (the x̂₀ clamp is then in those units).
    - ``prior``: ``ridge`` predicts a mean with a ridge probe (PCA 256 + RidgeCV, cross-fitted
      over training sections) and diffuses the residual (CARD, Han et al. 2022); ``none``.
    - ``context``: ``ring1`` conditions on [own embedding, mean of the ring-1 neighbours'];
      ``ring2`` also on the mean over the disc of 2.5 spot pitches (``data/context.py``).
    - ``objective``: what the network predicts, ``eps`` (paper), ``x0`` or ``v``;
      ``min_snr_gamma`` > 0 weights the loss by min(SNR, γ) (Hang et al. 2023), 0 = unweighted
      in the objective's own units.
    - ``point``: the reported expression, ``sample_mean`` of the samples (paper) or the
      network's ``posterior_mean`` estimate E[x₀ | image] (x̂₀ at the noisiest step,
      averaged over ``posterior_draws`` noise draws); samples still give std and intervals.
      ``residual_weight`` w scales the network's part of that estimate: prior + w · E[residual |
      image] (1 trusts the network fully, 0 reports the prior; a briefly trained network's
      residual is noisy, and shrinking it towards the prior lowers the error).
    - ``centre_samples``: place each spot's samples about the recipe's point estimate (their
      deviations from their own mean kept), so samples, intervals and the reported mean agree;
      needs ``point='posterior_mean'``.
    - ``calibrate_spread``: after training, scale each spot's samples about their centre by one
      factor so that their 80 % intervals hold 80 % of the (cross-fitted) residuals of training
      spots; a briefly trained x0 network draws samples that are too alike (80 % intervals
      held 45 %). ``spread_per_gene``: one factor per gene instead (each gene's 80 % intervals
      hold 80 % of its training residuals; also narrows a gene whose samples are too wide).
      ``spread_criterion``: ``coverage`` (the 80 % intervals hold 80 %), ``crps`` (the factor
      with the lowest CRPS on those residuals: calibration and sharpness together) or ``levels``
      (the 50, 80 and 95 % intervals each hold their level: the draws' deviations scaled by a
      factor that grows with their rank's distance from the middle, a heavier or lighter tail)
      or ``rank`` (80 % of the residuals' randomised ranks among the draws lie in their central
      80 %: draws as wide as the residuals, where ``coverage``'s 20 empirical quantiles ask wider).
      ``spread_common``: then the draws' deviations along one shift of every gene alike (a spot's
      depth or density) are scaled so that their share of the deviations matches the residuals'
      (each gene's width kept), so genes move together in a draw as much as in the truth.
    - ``count_lattice``: every draw is moved onto the values a measured spot can take, log2(1 + k)
      for integer k (to one of its two neighbouring values at random, keeping its mean), after the
      spread is calibrated on the continuous draws.
    - ``correlated_noise``: the diffusion noise (training and sampling) has the gene covariance of
      the cross-fitted training residuals (z units, Ledoit–Wolf shrunk) instead of the identity
      (PriorGrad, Lee et al. 2022), so draws start with the genes' real co-variation and the
      network only has to refine it; needs ``target='zscore'``.
    - ``lr_schedule``: ``constant`` (paper) or linear warm-up then ``cosine`` decay.
    - ``cond_dropout``: the fraction of training pairs whose condition is replaced by the null
      condition (the training mean embedding), so the network also learns the unconditional
      prediction; ``guidance`` s then samples with classifier-free guidance, out_c + s (out_c −
      out_u) at every network call (samples and posterior mean alike); 0 = unguided.
    - ``cond_noise``: Gaussian noise of this sd added to the standardised training condition.
    - ``neighbour_targets`` k: each training pair's target is the residual of one of its k
      nearest training pairs (PCA-32 of the standardised condition, itself included), drawn
      afresh at every step, so the network learns the spread of the residuals of spots that
      look alike instead of one residual per condition, which it memorises; 0 = its own.
    """

    target: str = "log2"
    prior: str = "none"
    context: str = "none"
    objective: str = "eps"
    min_snr_gamma: float = 0.0
    point: str = "sample_mean"
    posterior_draws: int = 8
    residual_weight: float = 1.0
    centre_samples: bool = False
    calibrate_spread: bool = False
    spread_per_gene: bool = False
    spread_criterion: str = "coverage"
    spread_common: bool = False
    count_lattice: bool = False
    correlated_noise: bool = False
    lr_schedule: str = "constant"
    cond_dropout: float = 0.0
    guidance: float = 0.0
    cond_noise: float = 0.0
    neighbour_targets: int = 0

    def __post_init__(self):
        for name, allowed in (("target", TARGETS), ("prior", PRIORS), ("context", CONTEXTS),
                              ("objective", OBJECTIVES), ("point", POINTS),
                              ("lr_schedule", LR_SCHEDULES), ("spread_criterion", SPREAD_CRITERIA)):
            value = getattr(self, name)
            require(value in allowed, f"recipe: unknown {name} '{value}'; choose {', '.join(allowed)}")
        require(self.min_snr_gamma >= 0, "recipe: min_snr_gamma must be >= 0")
        require(self.posterior_draws >= 1, "recipe: posterior_draws must be >= 1")
        require(0 <= self.residual_weight <= 1, "recipe: residual_weight must be in [0, 1]")
        require(not (self.point == "posterior_mean" and self.objective == "eps"),
                "recipe: posterior_mean needs an x0 or v objective (ε at the noisiest step "
                "gives no usable x̂₀)")
        require(0 <= self.cond_dropout < 1, "recipe: cond_dropout must be in [0, 1)")
        require(self.guidance >= 0, "recipe: guidance must be >= 0")
        require(self.cond_noise >= 0, "recipe: cond_noise must be >= 0")
        require(self.neighbour_targets == 0 or self.neighbour_targets >= 2,
                "recipe: neighbour_targets must be 0 (off) or at least 2")
        require(not self.guidance or self.cond_dropout > 0,
                "recipe: guidance needs a network trained with cond_dropout > 0")
        require(not self.correlated_noise or self.target == "zscore",
                "recipe: correlated_noise needs target=zscore")
        require(not self.spread_per_gene or self.calibrate_spread,
                "recipe: spread_per_gene needs calibrate_spread")
        require(not self.spread_common or self.calibrate_spread, "recipe: spread_common needs calibrate_spread")
        require(not (self.spread_per_gene and self.spread_criterion == "levels"),
                "recipe: spread_criterion=levels is one set of factors for the panel (no spread_per_gene)")
        require(not self.centre_samples or self.point == "posterior_mean",
                "recipe: centre_samples needs point=posterior_mean")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> Recipe:
        """From :meth:`to_dict`; ``None`` (a run from before recipes) is the paper recipe."""
        if not d:
            return RECIPES["paper"]
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def with_options(self, spec: str) -> Recipe:
        """Override fields from ``key=value,key=value`` (the CLI's ``--recipe-set``)."""
        if not spec.strip():
            return self
        types = {f.name: f.type for f in fields(self)}
        changes = {}
        for item in spec.split(","):
            key, sep, value = item.partition("=")
            key = key.strip().replace("-", "_")
            require(sep and key in types, f"recipe: bad option '{item}'; use key=value with keys "
                    f"{', '.join(types)}")
            try:
                changes[key] = {"float": float, "int": int, "bool": _boolean}.get(types[key], str)(value.strip())
            except ValueError:
                raise StemError(f"recipe: {key}={value} is not a valid {types[key]}") from None
        return replace(self, **changes)


def _boolean(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


RECIPES: dict[str, Recipe] = {
    "paper": Recipe(),
    # v with min-SNR-5: its samples beat x0's on every proper score of the leave-one-out benchmark
    # (x0 must learn to copy x_t at low noise; v gets it from its parametrisation). Neighbour
    # targets 16: a lower variogram score in 6/6 folds and gene co-variation error in 5/6, CRPS and
    # energy within the sd over folds, and no decay with 4x the steps (benchmarks/results/sample_budget.md).
    # Count lattice: CRPS lower in 6/6 folds (-0.004 ± 0.001), the other proper scores within the sd, the
    # intervals' rank coverage +0.01 to +0.02 (spread_levers.md; sample_budget.md at 600 × 32 and 600 × 256)
    "default": Recipe(target="zscore", prior="ridge", context="ring2", objective="v", min_snr_gamma=5.0,
                      point="posterior_mean", residual_weight=0.25, centre_samples=True,
                      calibrate_spread=True, lr_schedule="cosine", neighbour_targets=16, count_lattice=True),
}


def get_recipe(name: str, overrides: str = "") -> Recipe:
    """A named recipe with ``key=value`` overrides."""
    require(name in RECIPES, f"unknown recipe '{name}'; choose {', '.join(RECIPES)}")
    return RECIPES[name].with_options(overrides)
