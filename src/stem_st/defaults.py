"""Names and defaults shared across layers, torch-free so the CLI can show them cheaply."""

from __future__ import annotations

#: what the diffusion network can predict: ε (paper), x₀ or v = √ᾱ ε − √(1−ᾱ) x₀
OBJECTIVES = ("eps", "x0", "v")
#: the sampler specs :func:`stem_st.diffusion.parse_sampler` accepts
SAMPLER_FORMS = "ddpm, ddpm:S, ddim:S, ddim:S:eta or dpm++:S"
#: 100× fewer network calls than DDPM-1000 at its accuracy (benchmarks/results/sampler_curve.md)
DEFAULT_SAMPLER = "dpm++:10"
#: samples per spot that `stem predict` draws by default (the spread is calibrated with both)
DEFAULT_NUM_SAMPLES = 20
#: the training budget `stem train`, ``TrainSettings`` and both demo profiles ship: the best
#: measured in benchmarks/results/sample_budget.md, where larger networks and longer runs drew
#: worse samples (more steps memorise the training spots; the samples collapse)
DEFAULT_BUDGET = {"preset": "tiny", "steps": 600, "batch_size": 32, "lr": 5e-4}
