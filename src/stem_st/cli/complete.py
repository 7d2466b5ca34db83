"""``stem complete``: LGDiST completion of dropout in ST counts (fit, evaluate, apply)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..atomic import require_separate
from ..defaults import DEFAULT_NUM_SAMPLES, DEFAULT_SAMPLER
from ..errors import require
from .common import DEVICE_HELP, csv_list, out_console, print_table, resolve_device

complete_app = typer.Typer(no_args_is_help=True, help=(
    "LGDiST completion of ST dropout (no reference). Units: log1p(count), natural log. Masked protocol: "
    "measured panel entries are hidden (dropout: p = 1 - f_g; spared: p = min(1, (1 - f_g)/f_g), f_g the "
    "fraction of a section's spots measuring gene g), removed from the input and scored only there."))
_MASKING_HELP = "Masked protocol: dropout (p_g = 1 - f_g) | spared (p_g = min(1, (1 - f_g)/f_g), SpaRED)."


@complete_app.command("fit")
def complete_fit(
    data: Path = typer.Option(..., help="Dataset folder (counts and spot files; no images needed)."),
    layout: str = typer.Option("her2st", help="her2st | visium | hest | h5ad"),
    train: str = typer.Option(..., help="Training sections, comma-separated."),
    val: str = typer.Option("", help="Validation sections: scored with the masked protocol; with --select "
                                     "best_val they choose each stage's checkpoint."),
    out: Path = typer.Option(..., help="Model folder (config, checkpoints of both stages)."),
    panel: int = typer.Option(128, help="Genes completed and scored (top Moran's I)."),
    total: int = typer.Option(1024, help="Panel + context genes fed to the model."),
    ae_steps: int = typer.Option(2000, help="Stage-1 (autoencoder) steps."),
    dit_steps: int = typer.Option(2000, help="Stage-2 (latent DiT) steps, per round."),
    batch_size: int = typer.Option(128, help="Neighbourhoods per step."),
    checkpoint_every: int = typer.Option(250, help="Steps between checkpoints, validations and --resume points."),
    lr: float = typer.Option(1e-4, help="Stage-2 AdamW learning rate."),
    ae_lr: float = typer.Option(1e-3, help="Stage-1 AdamW learning rate."),
    ae_hidden: int = typer.Option(256, help="Autoencoder width (paper 512)."),
    latent: int = typer.Option(64, help="Latent size per spot (paper 128)."),
    dit_hidden: int = typer.Option(128, help="Latent DiT width (ours at paper scale: 256)."),
    dit_depth: int = typer.Option(2, help="Latent DiT blocks (ours at paper scale: 4)."),
    prefill: str = typer.Option("median", help="Zeros of the input: median (SpaRED adaptive median) | zeros."),
    train_masking: str = typer.Option("dropout", help="Hide measured panel entries in masked training copies "
                                                      "and learn their real values: dropout | spared | none."),
    copies: int = typer.Option(4, help="Masked copies of the training sections."),
    select: str = typer.Option("best_val", help="Checkpoint kept per stage: best_val (lowest validation "
                                                "masked MSE; needs --val) | last."),
    rounds: int = typer.Option(1, help="2: retrain stage 2 on round-1 completions (LGDiST's Step B)."),
    masking: str = typer.Option("dropout", help=_MASKING_HELP + " Used for the validation score."),
    objective: str = typer.Option("x0", help="Stage-2 network output: x0 | eps (the reference's)."),
    point: str = typer.Option("posterior_mean", help="Stage-2 estimate: posterior_mean (E[centre latent | "
                              "neighbours] from the x0 network) | samples (mean of --num-samples sampled "
                              "latents)."),
    condition: str = typer.Option("neighbourhood", help="Stage 2's condition: neighbourhood (the centre's own "
                                  "latent, noised, and its six neighbours) | neighbours (the paper's: centre "
                                  "zeroed)."),
    centre_noise: float = typer.Option(1.0, help="With --condition neighbourhood: sd of fresh Gaussian noise on "
                                       "the centre's latent in the condition (normalised units), so stage 2 "
                                       "cannot copy it; 0 = none."),
    dit_target: str = typer.Option("input", help="Centre latent stage 2 learns: input (encoding of the input) | "
                                   "complete (of the training target, hidden entries at their values)."),
    point_source: str = typer.Option("stage1", help="The point: stage1 (the autoencoder's decoding) | "
                                     "diffusion (stage 2's estimate, as --point says)."),
    centre_draws: bool = typer.Option(True, help="Centre the draws on the point before the fitted spread "
                                      "scales their deviations."),
    seed: int = typer.Option(0, help="Random seed."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    resume: bool = typer.Option(False, help="Continue an interrupted fit in --out (with its stored settings)."),
) -> None:
    """Choose genes, train the autoencoder and the latent DiT, score the validation sections.
    Units: log1p(count). Validation: measured panel entries hidden under --masking, removed from
    the input, scored alone."""
    from ..completion.model import CompletionSettings
    from ..completion.pipeline import fit_completion

    require(ae_steps > 0 and dit_steps > 0 and batch_size > 0 and checkpoint_every > 0,
            "steps, --batch-size and --checkpoint-every must be positive")
    require_separate(out, [data])
    settings = CompletionSettings(ae_steps=ae_steps, dit_steps=dit_steps, batch_size=batch_size, lr=lr,
                                  checkpoint_every=checkpoint_every, val_every=checkpoint_every,
                                  ae_lr=ae_lr, seed=seed, prefill=prefill, train_masking=train_masking,
                                  copies=copies, select=select, rounds=rounds, masking=masking,
                                  objective=objective, point=point, condition=condition,
                                  centre_noise=centre_noise, dit_target=dit_target, point_source=point_source,
                                  centre_draws=centre_draws)
    settings.check()
    res = fit_completion(str(data), layout, csv_list(train), val=csv_list(val), out=out, settings=settings,
                         n_panel=panel, n_total=total,
                         cfg_overrides={"ae_hidden": ae_hidden, "latent": latent, "dit_hidden": dit_hidden,
                                        "dit_depth": dit_depth},
                         device=resolve_device(device), resume=resume)
    if "validation" in res:
        print_completion_table(res["validation"], f"validation ({val}), masked entries ({masking}), log1p units")
    out_console.print(f"completion model: {out} ({res['seconds']} s)")


def print_completion_table(rows: list[dict], title: str) -> None:
    cols = ("method", "MSE", "MAE", "R2", "PCC_gene", "PCC_spot", "bias", "entries")
    print_table([{c: (round(r[c], 4) if isinstance(r.get(c), float) else r.get(c)) for c in cols}
                  for r in rows], title)


@complete_app.command("evaluate")
def complete_evaluate(
    comp: Path = typer.Argument(..., help="A completion model folder (stem complete fit)."),
    sections: str = typer.Option(..., help="Held-out sections to score."),
    data: Path | None = typer.Option(None, help="Dataset folder (default: the one it was fitted on)."),
    masking: str = typer.Option("dropout", help=_MASKING_HELP),
    num_samples: int = typer.Option(DEFAULT_NUM_SAMPLES, help="Samples of the centre latent per spot (used "
                                    "by the point only when the model's point_source is diffusion)."),
    sampler: str = typer.Option(DEFAULT_SAMPLER, help="Sampler on a respaced subsequence of the 1500 steps."),
    stage1: bool = typer.Option(False, help="Also score the stage-1 decoder alone (no diffusion)."),
    seed: int = typer.Option(0, help="Seed of the hidden-entry mask and the sampler."),
    out: Path | None = typer.Option(None, help="Also write the table as JSON here."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
) -> None:
    """Masked evaluation of LGDiST and the four baselines on held-out sections: hidden entries are
    removed from every input and scored alone (MSE, MAE, R², PCC per gene/spot, bias; log1p(count) units)."""
    from ..atomic import write_json
    from ..completion.pipeline import evaluate_completion

    require((comp / "config.json").is_file(), f"{comp} is not a completion model (no config.json)")
    require(num_samples >= 1, "--num-samples must be at least 1")
    res = evaluate_completion(comp, data=str(data) if data else None, layout=None, sections=csv_list(sections),
                              num_samples=num_samples, sampler=sampler, seed=seed,
                              device=resolve_device(device), masking=masking, stage1=stage1)
    print_completion_table(res["pooled"], f"masked completion on {sections} ({masking}; {res['units']})")
    if out:
        write_json(out, res)


@complete_app.command("apply")
def complete_apply(
    comp: Path = typer.Argument(..., help="A completion model folder (stem complete fit)."),
    sections: str = typer.Option(..., help="Sections to complete."),
    out: Path = typer.Option(..., help="Output folder: <section>_completed.h5ad per section."),
    data: Path | None = typer.Option(None, help="Dataset folder (default: the one it was fitted on)."),
    num_samples: int = typer.Option(DEFAULT_NUM_SAMPLES, help=(
        "K ≥ 2: K independent completions whose per-entry sd, in counts, is layers['completed_std'] (0 at "
        "measured entries). The spread was calibrated with the defaults (K and --sampler); other values give "
        "uncalibrated intervals. The shipped point is stage 1's and ignores K.")),
    sampler: str = typer.Option(DEFAULT_SAMPLER, help="Sampler on a respaced subsequence of the 1500 steps."),
    seed: int = typer.Option(0, help="Sampling seed."),
    keep_samples: bool = typer.Option(False, help="Also write the K completions, counts (spots x K x genes; "
                                                  "measured entries as measured), as <section>_completed"
                                                  ".samples.npy beside each file (multiple imputation)."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    overwrite: bool = typer.Option(False, help="Replace existing outputs."),
) -> None:
    """Write completed copies of sections, atomically; the input is never modified. No masking:
    every zero is completed. X: measured counts; layers['completed']: counts with every zero
    replaced by expm1 of the completed log1p(count) value (measured entries unchanged);
    layers['completed_std'] (--num-samples ≥ 2): per-entry sd (ddof 1), in counts like
    layers['completed'], of K independent completions; 0 at measured entries."""
    from ..completion.pipeline import apply_completion

    require(num_samples >= 1, "--num-samples must be at least 1")
    require(not keep_samples or num_samples >= 2, "--keep-samples needs --num-samples of at least 2")
    require((comp / "config.json").is_file(), f"{comp} is not a completion model (no config.json)")
    require_separate(out, [comp, *([data] if data else [])], [comp])
    rows = apply_completion(comp, csv_list(sections), out_dir=out, data=str(data) if data else None,
                            num_samples=num_samples, sampler=sampler, seed=seed, device=resolve_device(device),
                            overwrite=overwrite, keep_samples=keep_samples)
    print_table(rows, f"completed with {comp}")
