"""LGDiST completion against the four baselines on HER2ST's patient split, and the ablation of
each design change (train on patients A–F, validate on G, test on H).

Genes: the 128 with the highest Moran's I on the training sections are completed and scored,
the next 896 are context (1 024 in all). Every method sees the same sections with the same
hidden entries, removed from the input (``stem_st.completion.pipeline.complete_masked``), under
both masking protocols (``dropout``: p_g = 1 − f_g; ``spared``: p_g = min(1, (1 − f_g)/f_g)).
Scores are over hidden entries only, pooled over each split's sections, log1p units.

A variant is a set of ``CompletionSettings`` overrides; each is fitted once (cached in
``--work``; rerun to resume) with the CPU profile below and scored on G and H. Writes
``benchmarks/results/completion.{json,md}``.

Usage: .venv/bin/python benchmarks/completion.py [--variants every|name,…]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from stem_st.atomic import write_json
from stem_st.completion.baselines import BASELINES
from stem_st.completion.genes import select_genes
from stem_st.completion.masking import PROTOCOLS, masked_scores, sample_hidden
from stem_st.completion.model import CompletionSettings, LGDiST, training_copies, validation_set
from stem_st.completion.pipeline import complete_masked, log1p_values, read_counts
from stem_st.models.lgdist import LGDiSTConfig

ROOT = Path(__file__).resolve().parents[1]
TRAIN = [f"{p}{i}" for p, n in zip("ABCDEF", (6, 6, 6, 6, 3, 3)) for i in range(1, n + 1)]
SPLITS = {"G": ["G1", "G2", "G3"], "H": ["H1", "H2", "H3"]}
#: the CPU profile: sizes and steps of both stages (fit of both rounds ≤ 20 min on 2 cores)
CONFIG = {"ae_hidden": 256, "latent": 64, "dit_hidden": 128, "dit_depth": 2}
BUDGET = {"ae_steps": 2000, "dit_steps": 2000, "batch_size": 128, "checkpoint_every": 500, "val_every": 250}
#: the reference-like starting point (our old design) and one change at a time, then all together
OLD = {"prefill": "zeros", "train_masking": "none", "select": "last", "rounds": 1, "objective": "eps",
       "point": "samples"}
EPS = {"objective": "eps", "point": "samples"}
VARIANTS = {
    "old": OLD,
    "old+prefill": {**OLD, "prefill": "median"},
    "old+select": {**OLD, "select": "best_val"},
    "old+rounds2": {**OLD, "rounds": 2},
    "old+train-masking": {**OLD, "train_masking": "dropout"},
    "reference": {"prefill": "median", "train_masking": "none", "select": "best_val", "rounds": 2, **EPS},
    "combined": {"prefill": "median", "train_masking": "dropout", "select": "best_val", "rounds": 2, **EPS},
    "combined 1-round": {"prefill": "median", "train_masking": "dropout", "select": "best_val", "rounds": 1,
                         **EPS},
    "combined x0-posterior": {"prefill": "median", "train_masking": "dropout", "select": "best_val", "rounds": 2,
                              "objective": "x0", "point": "posterior_mean"},
    "combined spared-masks": {"prefill": "median", "train_masking": "spared", "masking": "spared",
                              "select": "best_val", "rounds": 2, **EPS},
    # what `stem complete fit` ships: combined, x0 posterior mean, one round (chosen on G)
    "default": {},
}
NUM_SAMPLES, SAMPLER = 4, "dpm++:10"
KEYS = ("MSE", "MAE", "R2", "PCC_gene", "PCC_spot", "bias")


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {gpu}, torch {torch.__version__}"


def load_data(data: str, work: Path) -> dict:
    """log1p values of the 1 024 chosen genes for every section (cached in ``work``)."""
    cache = work / "data.npz"
    if not cache.is_file():
        secs = read_counts(data, "her2st", TRAIN + SPLITS["G"] + SPLITS["H"])
        common = sorted(set.intersection(*(set(secs[s].var_names) for s in TRAIN)))
        pairs = [(log1p_values(secs[s], common), np.asarray(secs[s].obsm["spatial"])) for s in TRAIN]
        panel, context = select_genes(pairs, common, 128, 1024)
        genes = panel + context
        arrays = {f"v_{s}": log1p_values(a, genes) for s, a in secs.items()}
        arrays.update({f"xy_{s}": np.asarray(a.obsm["spatial"], dtype=np.float64) for s, a in secs.items()})
        tmp = work / "data.tmp.npz"
        np.savez_compressed(tmp, genes=np.array(genes), n_panel=len(panel), **arrays)
        tmp.replace(cache)
    z = np.load(cache)
    sections = TRAIN + SPLITS["G"] + SPLITS["H"]
    return {"genes": [str(g) for g in z["genes"]], "n_panel": int(z["n_panel"]),
            "values": {s: z[f"v_{s}"] for s in sections}, "xy": {s: z[f"xy_{s}"] for s in sections}}


def masks(d: dict, split: str, protocol: str) -> dict[str, np.ndarray]:
    """The hidden entries of each section of ``split`` (fixed seed: the same for every method)."""
    rng = np.random.default_rng({"dropout": 0, "spared": 1}[protocol])
    k = d["n_panel"]
    return {s: sample_hidden(d["values"][s][:, :k], rng, protocol) for s in SPLITS[split]}


def score(d: dict, split: str, protocol: str, method: str, model: LGDiST | None = None) -> dict:
    k, hid = d["n_panel"], masks(d, split, protocol)
    t0 = time.perf_counter()
    preds = [complete_masked(method, d["values"][s], d["xy"][s], hid[s], model, num_samples=NUM_SAMPLES,
                             sampler=SAMPLER, seed=0)[:, :k] for s in SPLITS[split]]
    truth = np.concatenate([d["values"][s][:, :k] for s in SPLITS[split]])
    out = masked_scores(truth, np.concatenate(preds), np.concatenate([hid[s] for s in SPLITS[split]]))
    return {**{key: out[key] for key in (*KEYS, "entries")}, "seconds": round(time.perf_counter() - t0, 1)}


def fit_variant(d: dict, name: str, work: Path) -> dict:
    """Fit one variant (resumable) and score LGDiST and its stage-1 decoder on G and H."""
    res_path = work / "variants" / name.replace(" ", "_") / "result.json"
    if res_path.is_file():
        return json.loads(res_path.read_text())
    run = res_path.parent / "model"
    s = CompletionSettings(**BUDGET, **VARIANTS[name])
    k, genes = d["n_panel"], d["genes"]
    train_vals = {x: d["values"][x] for x in TRAIN}
    train_set = training_copies(train_vals, {x: d["xy"][x] for x in TRAIN}, k, s)
    means = np.concatenate([c.input for c in train_set]).mean(0)
    val_set = validation_set({x: d["values"][x] for x in SPLITS["G"]}, {x: d["xy"][x] for x in SPLITS["G"]}, k, s)
    torch.manual_seed(s.seed)
    model = LGDiST(LGDiSTConfig(num_genes=len(genes), **CONFIG), genes[:k], genes[k:], means, s)
    run.mkdir(parents=True, exist_ok=True)
    if not (run / "config.json").is_file():
        model.save_config(run, {"select": s.select, "train": TRAIN, "val": SPLITS["G"]})
    t0 = time.perf_counter()
    report = model.fit(train_set, val_set, run, resume=any(run.glob("*/checkpoints")), progress=False)
    fit_s = time.perf_counter() - t0
    model = LGDiST.load(run)
    rows = {}
    for protocol in PROTOCOLS:
        for split in SPLITS:
            for method in ("lgdist", "lgdist-stage1"):
                rows[f"{method}|{protocol}|{split}"] = score(d, split, protocol, method, model)
    result = {"variant": name, "settings": asdict(s), "config": CONFIG, "fit_seconds": round(fit_s, 1),
              "fit": report, "scores": rows}
    write_json(res_path, result)
    return result


def baselines(d: dict, work: Path) -> dict:
    path = work / "baselines.json"
    if path.is_file():
        return json.loads(path.read_text())
    rows = {f"{m}|{p}|{sp}": score(d, sp, p, m) for m in BASELINES for p in PROTOCOLS for sp in SPLITS}
    write_json(path, rows)
    return rows


def markdown(base: dict, results: list[dict], meta: dict) -> str:
    lines = ["# LGDiST completion vs baselines (HER2ST, train A–F, validate G, test H)", "",
             f"Machine: {meta['machine']}. Units: log1p(count). Scores over hidden panel entries (128 genes), "
             f"pooled per split. LGDiST: {meta['config']}, {meta['budget']}, {NUM_SAMPLES} samples of "
             f"{SAMPLER}; `stage 1` rows decode the encoder's own centre latent (no diffusion). Regenerate: "
             "`.venv/bin/python benchmarks/completion.py`.", ""]
    for protocol in PROTOCOLS:
        for split in SPLITS:
            med = base[f"adaptive_median|{protocol}|{split}"]["MSE"]
            lines += [f"## {protocol} masking, {split} ({'validation' if split == 'G' else 'test'})", "",
                      "| method | MSE | MSE / median | MAE | R² | PCC gene | PCC spot | bias | fit s |",
                      "|---|---|---|---|---|---|---|---|---|"]
            rows = [(m, base[f"{m}|{protocol}|{split}"], "") for m in BASELINES]
            for r in results:
                for method, label in (("lgdist", ""), ("lgdist-stage1", " (stage 1)")):
                    rows.append((f"lgdist: {r['variant']}{label}", r["scores"][f"{method}|{protocol}|{split}"],
                                 r["fit_seconds"]))
            for name, s, fit_s in rows:
                lines.append(f"| {name} | {s['MSE']:.3f} | {s['MSE'] / med:.2f} | {s['MAE']:.3f} | "
                             f"{s['R2']:.3f} | {s['PCC_gene']:.3f} | {s['PCC_spot']:.3f} | {s['bias']:+.3f} | "
                             f"{fit_s} |")
            lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "her2st"))
    ap.add_argument("--work", default=str(ROOT / "runs" / "completion"))
    ap.add_argument("--variants", default="every")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "completion"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    d = load_data(args.data, work)
    names = list(VARIANTS) if args.variants == "every" else args.variants.split(",")
    base = baselines(d, work)
    results = []
    for name in names:
        logging.info("variant %s", name)
        results.append(fit_variant(d, name, work))
    done = [json.loads(p.read_text()) for p in sorted((work / "variants").glob("*/result.json"))]
    done.sort(key=lambda r: list(VARIANTS).index(r["variant"]) if r["variant"] in VARIANTS else 99)
    meta = {"machine": machine(), "config": CONFIG, "budget": BUDGET, "num_samples": NUM_SAMPLES,
            "sampler": SAMPLER, "train": TRAIN, "splits": SPLITS}
    write_json(Path(args.out + ".json"), {"meta": meta, "baselines": base, "variants": done})
    Path(args.out + ".md").write_text(markdown(base, done, meta))
    print(markdown(base, done, meta))


if __name__ == "__main__":
    main()
