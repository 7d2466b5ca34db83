"""One settings object per concern: :class:`TrainSettings` (what ``stem train`` was asked to
do; the ``Recipe`` inside says what the model learns) and :class:`PredictSettings` (how
prediction runs). Both are built once by the CLI or the API and passed down whole."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..data.dataset import PreparedDataset
from ..defaults import DEFAULT_BUDGET, DEFAULT_NUM_SAMPLES, DEFAULT_SAMPLER
from ..errors import require
from ..models import PRESETS, StemDiTConfig
from ..recipe import RECIPES, Recipe
from .runtime import Runtime
from .summarise import SUMMARIES


@dataclass
class TrainSettings:
    """What ``stem train`` was asked to do (stored with the run)."""

    prep: str
    holdout: list[str] = field(default_factory=list)
    preset: str = DEFAULT_BUDGET["preset"]
    steps: int = DEFAULT_BUDGET["steps"]
    batch_size: int = DEFAULT_BUDGET["batch_size"]
    aug_ratio: int = 1  # as every committed benchmark (2 prepared views)
    lr: float = DEFAULT_BUDGET["lr"]
    ema_decay: float = 0.9999
    seed: int = 0
    checkpoint_every: int = 500
    diffusion_steps: int = 1000
    schedule: str = "linear"
    target_layer: str | None = None
    compile: bool | None = None  # torch.compile for training (None: on CUDA; how it runs, not what it learns)
    weight_decay: float = 0.0  # AdamW's decoupled weight decay
    # a training section kept out of the network's training to score its samples and calibrate their
    # spread: auto (the most typical one, with >= 3 training sections), none, or a section id
    validation: str = "auto"
    val_every: int = 0  # steps between validations (0: a tenth of the run)
    recipe: Recipe = field(default_factory=lambda: RECIPES["default"])


@dataclass(frozen=True)
class PredictSettings:
    """How prediction runs; none of it changes what the model learned.

    ``summary``: the reported point, None = the recipe's own (``Recipe.point``), else a summary
    of the samples (mean, median, mode). ``compile``/``bf16``/``batch_rows``: how the network
    runs (:mod:`stem_st.stem.runtime`); they change the output by rounding at most. Row r's noise
    depends only on (``seed``, r), so the rows per forward pass never change the draws.
    ``shift_widening``: widen each spot's samples with its shift score (:mod:`stem_st.stem.shift`).
    ``depth``: the section's sequencing depth relative to the training sections' (median panel
    counts per spot; ``auto``: from the section's own counts); at a depth other than 1 every
    sample is Poisson-resampled at that rate and the point is the samples' mean.
    ``spatial_noise``: draw whole sections — neighbouring spots' starting noise co-varies as the
    validation section's residuals did (:mod:`stem_st.stem.spatial`); off: independent spots."""

    num_samples: int = DEFAULT_NUM_SAMPLES
    sampler: str = DEFAULT_SAMPLER
    summary: str | None = None
    seed: int = 0
    device: str = "auto"  # a GPU when one is present (stem_st.devices)
    compile: bool = False
    bf16: bool = True
    batch_rows: int | None = None
    shift_widening: bool = True
    depth: float | str = 1.0
    spatial_noise: bool = True

    def __post_init__(self) -> None:
        require(self.num_samples >= 1, "--num-samples must be at least 1")
        require(self.summary is None or self.summary in SUMMARIES,
                f"unknown summary '{self.summary}'; choose {', '.join(SUMMARIES)}")
        require(self.batch_rows is None or self.batch_rows > 0, "rows per forward pass must be positive")
        require(self.depth == "auto" or (isinstance(self.depth, (int, float)) and self.depth > 0),
                f"--depth must be auto or a positive ratio, got {self.depth}")

    def runtime(self) -> Runtime:
        return Runtime(bf16=self.bf16, compile=self.compile, batch_rows=self.batch_rows)

    def provenance(self) -> dict:
        """What an output records of how it was predicted."""
        return {k: v for k, v in asdict(self).items() if k not in ("bf16", "batch_rows", "device")}


#: how prediction runs unless told otherwise
DEFAULT_PREDICT = PredictSettings()


def training_geometry(ds: PreparedDataset, sections: list[str]) -> dict:
    """Platform, spot diameter and centre distance (µm) of the training sections, for
    whole-slide prediction on a matching virtual grid."""
    first = next((s for s in ds.manifest["sections"] if s["section"] in sections), {})
    return {k: first.get(k) for k in ("platform", "spot_diameter_um", "center_distance_um")}


def network_config(preset: str, num_genes: int, cond_dim: int, **overrides) -> StemDiTConfig:
    """A StemDiT config from a preset name plus explicit size overrides."""
    require(preset in PRESETS, f"unknown preset '{preset}'; choose {', '.join(PRESETS)}")
    sizes = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    require(sizes["hidden"] % sizes["heads"] == 0, "--hidden must be divisible by --heads")
    return StemDiTConfig(num_genes=num_genes, cond_dim=cond_dim, **sizes)
