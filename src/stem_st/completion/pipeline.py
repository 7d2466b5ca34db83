"""``stem complete fit | apply | evaluate``: reading sections, gene choice, the masked
evaluation against the baselines, and writing completed AnnData files."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from ..atomic import read_json, write_json
from ..data.readers import ReaderOptions, list_sections, read_section
from ..defaults import DEFAULT_NUM_SAMPLES, DEFAULT_SAMPLER
from ..devices import resolve_device
from ..errors import require
from ..models.lgdist import LGDiSTConfig
from ..prediction.output import samples_path, write_prediction
from .baselines import BASELINES
from .draws import STD_DDOF, calibrate_spread, completion_draws, draws_std
from .fit import training_copies, validation_set
from .genes import select_genes
from .masking import PROTOCOLS, hide, masked_scores, sample_hidden
from .model import UNITS, CompletionSettings, LGDiST

log = logging.getLogger(__name__)


#: a spot and its six hexagonal neighbours: LGDiST's input unit
MIN_SPOTS = 7


def read_counts(data: str, layout: str, sections: list[str]) -> dict[str, ad.AnnData]:
    """Counts-only sections (no image needed), each with at least one full neighbourhood."""
    opts = ReaderOptions(require_image=False)
    out = {s: read_section(layout, data, s, opts) for s in sections}
    small = [f"{s} ({a.n_obs})" for s, a in out.items() if a.n_obs < MIN_SPOTS]
    require(not small, f"sections with fewer spots than one LGDiST neighbourhood ({MIN_SPOTS}): "
                       f"{', '.join(small)}; leave them out")
    return out


def log1p_values(a: ad.AnnData, genes: list[str]) -> np.ndarray:
    """log1p counts ``(spots, genes)`` of ``genes`` (absent genes read as 0), float32."""
    return np.log1p(counts_of(a, genes))


def counts_of(a: ad.AnnData, genes: list[str]) -> np.ndarray:
    """Raw counts ``(spots, genes)`` of ``genes`` (absent genes read as 0), float32."""
    cols = a.var_names.get_indexer(genes)
    x = a.X.tocsc() if hasattr(a.X, "tocsc") else np.asarray(a.X)
    out = np.zeros((a.n_obs, len(genes)), dtype=np.float32)
    ok = cols >= 0
    sub = x[:, cols[ok]]
    out[:, ok] = np.asarray(sub.toarray() if hasattr(sub, "toarray") else sub, dtype=np.float32)
    return out


def fit_completion(data: str, layout: str, train: list[str], val: list[str], out: str | Path,
                   settings: CompletionSettings, n_panel: int = 128, n_total: int = 1024,
                   cfg_overrides: dict | None = None, device: str = "auto", resume: bool = False) -> dict:
    """Choose genes on ``train``, fit both stages, score the validation sections."""
    out, device = Path(out), resolve_device(device)
    require(bool(train), "no training sections")
    require(not set(train) & set(val), "a section is both in --train and --val")
    if resume:
        require((out / "config.json").is_file(), f"{out} is not a completion run; nothing to resume")
    else:
        require(not out.exists(), f"{out} already exists; pass --resume to continue it or choose another --out")
    known = set(list_sections(layout, data))
    unknown = sorted((set(train) | set(val)) - known)
    require(not unknown, f"sections {', '.join(unknown)} are not in {data}")
    t0 = time.perf_counter()
    secs = read_counts(data, layout, train)
    if resume:
        conf = read_json(out / "config.json", "completion model")
        require(conf["train"] == train and conf["val"] == val, "--resume with different --train/--val")
        settings = CompletionSettings.from_dict(conf["settings"])  # a resumed fit keeps its settings
        panel, context = conf["panel"], conf["context"]
    else:
        common = sorted(set.intersection(*(set(a.var_names) for a in secs.values())))
        pairs = [(log1p_values(a, common), np.asarray(a.obsm["spatial"])) for a in secs.values()]
        panel, context = select_genes(pairs, common, n_panel, n_total)
    genes = panel + context
    values = {s: log1p_values(a, genes) for s, a in secs.items()}
    xys = {s: np.asarray(a.obsm["spatial"], dtype=np.float64) for s, a in secs.items()}
    cfg = LGDiSTConfig(num_genes=len(genes), **(cfg_overrides or {}))
    torch_seed(settings.seed)
    train_set = training_copies(values, xys, len(panel), settings)
    # the input representation's training means (pre-filled, hidden entries removed)
    means = np.concatenate([c.input for c in train_set]).mean(0)
    model = LGDiST(cfg, panel, context, means, settings)
    val_secs = read_counts(data, layout, val) if val else {}
    val_set = validation_set({s: log1p_values(a, genes) for s, a in val_secs.items()},
                             {s: np.asarray(a.obsm["spatial"], dtype=np.float64) for s, a in val_secs.items()},
                             len(panel), settings)
    out.mkdir(parents=True, exist_ok=True)
    extra = {"data": str(Path(data).resolve()), "layout": layout, "train": train, "val": val,
             "select": settings.select if val else "last",
             "gene_choice": f"Moran's I (6-NN) on {layout} training sections; top {len(panel)} completed, "
                            f"next {len(context)} context"}
    if not resume:
        model.save_config(out, extra)
    log.info("completion: %d training spots (%d copies), %d panel + %d context genes; %s",
             sum(len(v) for v in values.values()), len(train_set) // max(1, len(values)), len(panel),
             len(context), cfg)
    times = model.fit(train_set, val_set, out, device, resume)
    result = {"train_seconds": times, "genes": {"panel": len(panel), "context": len(context)}}
    if val:  # the draws' spread, fitted on the validation sections' hidden entries
        result["spread"] = calibrate_spread(model, val_set, settings.seed, device)
        conf = read_json(out / "config.json", "completion model")
        conf["settings"]["spread"] = model.settings.spread
        write_json(out / "config.json", conf)
        result["validation"] = evaluate_completion(out, data, layout, val, model=model, device=device,
                                                   masking=settings.masking)["pooled"]
    result["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(out / "fit.json", result)
    return result


def torch_seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def complete_masked(method: str, values: np.ndarray, xy: np.ndarray, hidden: np.ndarray,
                    model: LGDiST | None = None, **sampling) -> np.ndarray:
    """Completion by ``method`` (``lgdist`` (the model's point), ``lgdist-stage1``,
    ``lgdist-stage2`` (stage 2's estimate) or a baseline) of one section
    whose ``hidden`` entries are removed first: their values reach no input."""
    masked = hide(values, hidden)
    if method == "lgdist-stage2":
        return model.diffusion_completion(masked, xy, **sampling)
    if method.startswith("lgdist"):
        return model.complete(masked, xy, diffusion=method == "lgdist", **sampling)
    return BASELINES[method](masked, xy)


def evaluate_completion(comp: str | Path, data: str | None, layout: str | None, sections: list[str],
                        model: LGDiST | None = None, num_samples: int = DEFAULT_NUM_SAMPLES,
                        sampler: str = DEFAULT_SAMPLER, seed: int = 0, device: str = "auto",
                        baselines: bool = True, masking: str = "dropout", stage1: bool = False) -> dict:
    """Masked evaluation: hide measured panel entries under ``masking``, remove them from the
    input, complete, score only the hidden entries (pooled over ``sections``), for LGDiST (and
    its stage-1 decoder alone with ``stage1``) and the baselines."""
    require(masking in PROTOCOLS, f"--masking must be one of {', '.join(PROTOCOLS)}")
    device = resolve_device(device)
    conf = read_json(Path(comp) / "config.json", "completion model")
    model = model or LGDiST.load(comp)
    secs = read_counts(data or conf["data"], layout or conf["layout"], sections)
    rng = np.random.default_rng(seed)
    k = len(model.panel)
    methods = ["lgdist", *(["lgdist-stage1"] if stage1 else []), *(BASELINES if baselines else [])]
    truth, hidden, preds, seconds = [], [], {m: [] for m in methods}, dict.fromkeys(methods, 0.0)
    sampling = {"num_samples": num_samples, "sampler": sampler, "seed": seed, "device": device}
    for a in secs.values():
        v = log1p_values(a, model.genes)
        xy = np.asarray(a.obsm["spatial"], dtype=np.float64)
        h = sample_hidden(v[:, :k], rng, masking)
        for m in methods:
            t = time.perf_counter()
            preds[m].append(complete_masked(m, v, xy, h, model, **sampling)[:, :k])
            seconds[m] += time.perf_counter() - t
        truth.append(v[:, :k])
        hidden.append(h)
    y, h = np.concatenate(truth), np.concatenate(hidden)
    rows = [{"method": m, **masked_scores(y, np.concatenate(preds[m]), h), "seconds": round(seconds[m], 1)}
            for m in methods]
    return {"sections": sections, "units": UNITS, "masking": masking,
            "protocol": PROTOCOL_TEXT[masking] + f" (seed {seed}); hidden entries are removed from the input "
            f"(zero, then pre-filled like any dropout); scores over hidden entries only, pooled over sections; "
            f"LGDiST: {point_text(model.settings, num_samples, sampler)}", "pooled": rows}


def draws_text(s: CompletionSettings) -> str:
    """How the draws are placed, in words (empty for raw draws)."""
    if not s.centre_draws and s.spread == 1.0:
        return ""
    where = "centred on the point, " if s.centre_draws else ""
    return f", {where}deviations × {s.spread:.3g}"


def point_text(s: CompletionSettings, num_samples: int, sampler: str) -> str:
    """What the model's point estimate runs, in words."""
    if s.point_source == "stage1":
        return "stage-1 decoding of the encoder's centre latent (no diffusion, no sampler)"
    if s.point == "posterior_mean":
        return f"stage-2 posterior mean (x0 network at t = T on {num_samples} draws of x_T; no sampler)"
    return f"mean of {num_samples} decoded stage-2 samples, {sampler}"


PROTOCOL_TEXT = {
    "dropout": "measured panel entries of gene g hidden with probability 1 - f_g (f_g: fraction of the "
               "section's spots where g is measured)",
    "spared": "measured panel entries of gene g hidden with probability min(1, (1 - f_g) / f_g) (SpaRED; "
              "f_g: fraction of the section's spots where g is measured)",
}


def apply_completion(comp: str | Path, sections: list[str], out_dir: str | Path, data: str | None = None,
                     layout: str | None = None, num_samples: int = DEFAULT_NUM_SAMPLES,
                     sampler: str = DEFAULT_SAMPLER, seed: int = 0, device: str = "auto", overwrite: bool = False,
                     keep_samples: bool = False) -> list[dict]:
    """Write ``<section>_completed.h5ad`` per section: X = measured counts of the model's genes,
    ``layers['completed']`` = counts with zeros replaced by the completion (expm1 of log1p, the
    model's point estimate, :func:`point_text`), and with ``num_samples`` ≥ 2
    ``layers['completed_std']`` = the sd (ddof 1), in counts, of ``num_samples`` independent
    completions (stage-2 sampler runs, centred on the point and scaled by the spread fitted on
    the validation sections when ``settings.centre_draws``; 0 at measured entries); with
    ``keep_samples`` those completions, counts ``(spots, K, genes)``, as
    ``<section>_completed.samples.npy`` beside it (multiple imputation)."""
    require(num_samples >= 1, "--num-samples must be at least 1")
    require(not keep_samples or num_samples >= 2, "--keep-samples needs --num-samples of at least 2")
    device = resolve_device(device)
    conf = read_json(Path(comp) / "config.json", "completion model")
    model = LGDiST.load(comp)
    out_dir = Path(out_dir)
    targets = {s: out_dir / f"{s}_completed.h5ad" for s in sections}
    clash = [str(p) for t in targets.values() for p in (t, *([samples_path(t)] if keep_samples else []))
             if p.exists()]
    require(overwrite or not clash, f"{clash[0] if clash else ''} already exists; pass --overwrite")
    secs = read_counts(data or conf["data"], layout or conf["layout"], sections)
    rows = []
    for sid, a in secs.items():
        t = time.perf_counter()
        counts = counts_of(a, model.genes)
        v = np.log1p(counts)
        xy = np.asarray(a.obsm["spatial"], dtype=np.float64)
        pred = model.complete(v, xy, num_samples, sampler, seed, device)
        completed = np.where(counts > 0, counts, np.expm1(pred)).astype(np.float32)
        res = ad.AnnData(X=np.rint(counts).astype(np.int32), obs=a.obs.copy(),
                         var=pd.DataFrame(index=list(model.genes)))
        res.var["completed_panel"] = [g in set(model.panel) for g in model.genes]
        res.layers["completed"] = completed
        res.obsm["spatial"] = xy
        res.uns["lgdist"] = {"units": "X: measured counts; layers['completed']: counts, measured entries kept, "
                                      "zeros replaced by expm1 of the completed log1p value",
                             "model": str(Path(comp).resolve()), "num_samples": num_samples, "sampler": sampler,
                             "seed": seed, "section": sid,
                             "point": point_text(model.settings, num_samples, sampler)}
        draws = None
        if num_samples > 1:  # multiple imputation: K independent completions and their spread
            draws = completion_draws(model, counts, xy, num_samples, sampler, seed, device, point=pred)
            res.layers["completed_std"] = draws_std(draws, counts)
            res.uns["lgdist"]["completed_std"] = (
                f"counts: per-entry sd (ddof {STD_DDOF}) of {num_samples} independent completions (one "
                f"{sampler} run each{draws_text(model.settings)}, expm1 of log1p), as the kept samples; "
                "0 at measured entries")
        for col in res.obs.columns:
            if res.obs[col].dtype == object:
                res.obs[col] = res.obs[col].astype(str)
        write_prediction(res, targets[sid], draws if keep_samples else None, overwrite, key="lgdist")
        filled = float(((v == 0) & (completed > 0)).sum() / max(1, (v == 0).sum()))
        rows.append({"section": sid, "spots": res.n_obs, "genes": res.n_vars, "zeros_filled": round(filled, 3),
                     "seconds": round(time.perf_counter() - t, 1), "file": str(targets[sid])})
    return rows
