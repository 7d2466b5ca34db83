"""LGDiST completion against the baselines on HER2ST's patient split, and the ablation of each
design change (train on patients A–F, validate on G, test on H): points and draws.

Genes: the 128 with the highest Moran's I on the training sections are completed and scored,
the next 896 are context (1 024 in all). Every method sees the same sections with the same
hidden entries, removed from the input (``stem_st.completion.masking.hide``), under both masking
protocols (``dropout``: p_g = 1 − f_g; ``spared``: p_g = min(1, (1 − f_g)/f_g)). Scores are over
hidden entries only, pooled over each split's sections, log1p units.

Points: MSE etc. (``masked_scores``). Draws (``K`` per entry, every sampled method the same
number): CRPS and central 50/80/95 % coverage over hidden entries, energy score over each
spot's hidden entries (``stem_st.evaluation.probabilistic.hidden_entry_scores``). Sampled
baselines: adaptive median + residual bootstrap and stage 1 + Gaussian noise, both from
residuals on patient G's hidden entries (cross-fitted: a G section uses the other two G
sections' residuals; H uses all of G), and knn smoothing's K nearest spots as draws. A spread
(factor on the draws' deviations) is fitted on G's dropout-masked hidden entries only.

A variant is a set of ``CompletionSettings`` overrides; each is fitted once (cached in
``--work``; rerun to resume), then scored (cached too). Variants are chosen on G only.
Writes ``benchmarks/results/completion.{json,md}``; the rows of the earlier version of this
benchmark (points only) are kept from ``completion_v1.json``.

Usage: .venv/bin/python benchmarks/completion.py [--variants every|name,…] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from stem_st.atomic import write_json
from stem_st.completion import baselines as bl
from stem_st.completion.draws import centred, fit_spread, raw_draws
from stem_st.completion.fit import training_copies, validation_set
from stem_st.completion.genes import select_genes
from stem_st.completion.masking import PROTOCOLS, hide, masked_scores, sample_hidden
from stem_st.completion.model import CompletionSettings, LGDiST
from stem_st.completion.pipeline import log1p_values, read_counts
from stem_st.evaluation.probabilistic import hidden_entry_scores
from stem_st.models.lgdist import LGDiSTConfig

ROOT = Path(__file__).resolve().parents[1]
TRAIN = [f"{p}{i}" for p, n in zip("ABCDEF", (6, 6, 6, 6, 3, 3)) for i in range(1, n + 1)]
SPLITS = {"G": ["G1", "G2", "G3"], "H": ["H1", "H2", "H3"]}
#: the CPU profile: sizes and steps of both stages
CONFIG = {"ae_hidden": 256, "latent": 64, "dit_hidden": 128, "dit_depth": 2}
BUDGET = {"ae_steps": 2000, "dit_steps": 2000, "batch_size": 128, "checkpoint_every": 500, "val_every": 250}
#: the design before this issue: stage 2 sees the neighbours only and generates the input's latent
BASE = {"prefill": "median", "train_masking": "dropout", "select": "best_val", "rounds": 1, "objective": "x0",
        "point": "posterior_mean", "condition": "neighbours", "dit_target": "input", "point_source": "diffusion",
        "centre_draws": False}
VARIANTS = {
    "x0-posterior 1-round": BASE,  # the shipped default before this issue
    "cond-neighbourhood": {**BASE, "condition": "neighbourhood"},
    "target-complete": {**BASE, "dit_target": "complete"},
    "cond-neighbourhood+target-complete": {**BASE, "condition": "neighbourhood", "dit_target": "complete"},
    # what `stem complete fit` ships (CompletionSettings' defaults)
    "default": {},
    # the shipped default before stage 2 saw the spot: the paper's neighbours-only condition
    "neighbours-only stage 2": {"condition": "neighbours", "centre_noise": 0.0},
    # stage 2 sees the spot it completes, through a noised copy of its latent (it cannot copy it)
    "centre-noise 1": {"condition": "neighbourhood", "centre_noise": 1.0},
    "centre-noise 1+target-complete": {"condition": "neighbourhood", "centre_noise": 1.0,
                                       "dit_target": "complete"},
    "centre-noise 0.5": {"condition": "neighbourhood", "centre_noise": 0.5},
    "centre-noise 2": {"condition": "neighbourhood", "centre_noise": 2.0},
}
#: K draws per entry for every sampled method, and the sampler of the LGDiST draws
K, SAMPLER = 20, "dpm++:10"
#: x_T draws of the posterior-mean point (or samples averaged by a ``samples`` point)
NUM_SAMPLES = 4
KEYS = ("MSE", "MAE", "R2", "PCC_gene", "PCC_spot", "bias")
DKEYS = ("CRPS", "energy", "coverage50", "coverage80", "coverage95")


def machine(threads: int) -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.machine()}, {os.cpu_count()} CPU cores ({threads} thread used), {gpu}, "
            f"torch {torch.__version__}")


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


def folder(work: Path, name: str) -> Path:
    return work / "variants" / name.replace(" ", "_").replace("+", "_")


def fit_variant(d: dict, name: str, work: Path) -> dict:
    """Fit one variant (resumable); a variant whose training settings equal a fitted one's
    starts from that one's stage 1 (same data, seed and settings: the same network)."""
    run = folder(work, name) / "model"
    done = run.parent / "fit.json"
    if done.is_file():
        return json.loads(done.read_text())
    s = settings_of(name)
    k, genes = d["n_panel"], d["genes"]
    train_set = training_copies({x: d["values"][x] for x in TRAIN}, {x: d["xy"][x] for x in TRAIN}, k, s)
    means = np.concatenate([c.input for c in train_set]).mean(0)
    val_set = validation_set({x: d["values"][x] for x in SPLITS["G"]}, {x: d["xy"][x] for x in SPLITS["G"]}, k, s)
    torch.manual_seed(s.seed)
    model = LGDiST(LGDiSTConfig(num_genes=len(genes), **CONFIG), genes[:k], genes[k:], means, s)
    run.mkdir(parents=True, exist_ok=True)
    if not (run / "config.json").is_file():
        model.save_config(run, {"select": s.select, "train": TRAIN, "val": SPLITS["G"]})
    donor, stages = _donor(work, name)
    for stage in stages:
        if not (run / stage).exists():
            shutil.copytree(donor / stage, run / stage)
            logging.info("%s: %s from %s", name, stage, donor)
    t0 = time.perf_counter()
    report = model.fit(train_set, val_set, run, resume=any(run.glob("*/checkpoints")), progress=False)
    result = {"variant": name, "settings": asdict(s), "config": CONFIG,
              "fit_seconds": round(time.perf_counter() - t0, 1), "fit": report,
              "copied": {st: donor.parent.name for st in stages}}
    write_json(done, result)
    return result


def settings_of(name: str) -> CompletionSettings:
    return CompletionSettings(**{**BUDGET, **VARIANTS[name]})


#: settings that shape stage 1's training / stage 2's (the rest act at completion only)
STAGE1_FIELDS = ("ae_steps", "batch_size", "ae_lr", "seed", "checkpoint_every", "latent_noise", "panel_weight",
                 "prefill", "train_masking", "copies", "select", "masking", "val_every")
DIT_FIELDS = ("dit_steps", "lr", "objective", "point", "condition", "dit_target", "rounds", "val_sampler",
              "centre_noise")


def _donor(work: Path, name: str) -> tuple[Path | None, list[str]]:
    """A fitted variant whose stage 1 (and stage 2) training settings equal ``name``'s: the same
    data, seed and settings train the same networks, so they are copied, not refitted."""
    mine, best = asdict(settings_of(name)), (None, [])
    for other in VARIANTS:
        run = folder(work, other) / "model"
        if other == name or not (run.parent / "fit.json").is_file():
            continue
        theirs = asdict(settings_of(other))
        if all(mine[f] == theirs[f] for f in STAGE1_FIELDS):
            same_dit = all(mine[f] == theirs[f] for f in DIT_FIELDS)
            if same_dit or best[0] is None:
                best = (run, ["ae", "dit"] if same_dit else ["ae"])
    return best


def predictions(d: dict, model: LGDiST, split: str, protocol: str) -> dict[str, np.ndarray]:
    """Per-section arrays (panel genes) of one split and masking: truth, hidden, every point."""
    k, hid = d["n_panel"], masks(d, split, protocol)
    out: dict[str, list] = {}
    for s in SPLITS[split]:
        v, xy = d["values"][s], d["xy"][s]
        masked = hide(v, hid[s])
        rows = {"truth": v[:, :k], "hidden": hid[s], "median": bl.adaptive_median(masked, xy)[:, :k],
                "knn_draws": bl.knn_draws(masked, xy, K)[:, :, :k],
                "stage1": model.complete(masked, xy, diffusion=False)[:, :k],
                "posterior": model.diffusion_completion(masked, xy, NUM_SAMPLES, SAMPLER, 0)[:, :k],
                "draws": raw_draws(model, masked, xy, K, SAMPLER, 0)[:, :, :k]}
        for key, val in rows.items():
            out.setdefault(key, []).append(val)
    return out


def _cross_fitted(g: dict, point: str, split: str, i: int) -> list[np.ndarray]:
    """Residuals of ``point`` on G's hidden entries: the other G sections' for G section ``i``."""
    use = [j for j in range(len(g["truth"])) if split == "H" or j != i]
    return bl.merge_residuals([bl.residuals(g["truth"][j], g[point][j], g["hidden"][j]) for j in use])


def score_split(p: dict, g: dict, split: str, spreads: dict[str, float]) -> dict[str, dict]:
    """Point and draw scores of one split, pooled over its sections (``g``: G's predictions)."""
    rng = np.random.default_rng(7)
    n = len(p["truth"])
    draws = {"median+bootstrap": [bl.bootstrap_draws(p["median"][i], _cross_fitted(g, "median", split, i), K, rng)
                                  for i in range(n)],
             "stage1+gaussian": [bl.gaussian_draws(p["stage1"][i], bl.residual_sd(
                 _cross_fitted(g, "stage1", split, i)), K, rng) for i in range(n)],
             "knn draws": p["knn_draws"]}
    cat = {key: np.concatenate(val) for key, val in p.items()}
    cat.update({key: np.concatenate(val) for key, val in draws.items()})
    y, h = cat["truth"], cat["hidden"]
    lgd = {"lgdist draws (raw)": cat["draws"],
           "lgdist draws × s": centred(cat["draws"], None, spreads["own"]),
           "lgdist draws centred on stage 1": centred(cat["draws"], cat["stage1"], 1.0),
           "lgdist draws centred on stage 1 × s": centred(cat["draws"], cat["stage1"], spreads["stage1"])}
    if "stage1_crps" in spreads:
        lgd["lgdist draws centred on stage 1 × s (CRPS)"] = centred(cat["draws"], cat["stage1"],
                                                                    spreads["stage1_crps"])
    points = {"adaptive_median": cat["median"], "knn_smoothing": cat["knn_draws"][:, :6].mean(1),
              "lgdist stage 1": cat["stage1"], "lgdist stage 2 posterior mean": cat["posterior"],
              f"lgdist stage 2 mean of {K} draws": cat["draws"].mean(1)}
    out = {"points": {m: {key: masked_scores(y, x, h)[key] for key in KEYS} for m, x in points.items()},
           "draws": {m: hidden_entry_scores(y, x, h) for m, x in {**{m: cat[m] for m in draws}, **lgd}.items()}}
    out["points"]["entries"] = int(h.sum())
    return out


def cached_predictions(d: dict, name: str, work: Path, split: str, protocol: str, model: list) -> dict:
    """:func:`predictions`, stored in the variant's folder (``model``: a one-slot lazy cache)."""
    path = folder(work, name) / f"pred_{protocol}_{split}.npz"
    if path.is_file():
        z = np.load(path)
        keys = sorted({k.rsplit("_", 1)[0] for k in z.files})
        return {k: [z[f"{k}_{i}"] for i in range(len(SPLITS[split]))] for k in keys}
    if not model:
        model.append(LGDiST.load(folder(work, name) / "model"))
    p = predictions(d, model[0], split, protocol)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **{f"{k}_{i}": v for k, vals in p.items() for i, v in enumerate(vals)})
    tmp.replace(path)
    return p


def score_variant(d: dict, name: str, work: Path, pairs: list[tuple[str, str]]) -> dict:
    """Scores of one fitted variant for each (masking, split) of ``pairs`` (cached); the spreads
    are fitted on G under dropout masking, and H's residual baselines use G's residuals."""
    path = folder(work, name) / "scores.json"
    res = json.loads(path.read_text()) if path.is_file() else {"variant": name, "scores": {}, "score_seconds": 0}
    todo = [(pr, sp) for pr, sp in pairs if f"{pr}|{sp}" not in res["scores"]]
    if not todo:
        return res
    t0, model = time.perf_counter(), []
    if "spreads" not in res:
        g = cached_predictions(d, name, work, "G", "dropout", model)
        y, h = np.concatenate(g["truth"]), np.concatenate(g["hidden"])
        dr, s1 = np.concatenate(g["draws"]), np.concatenate(g["stage1"])
        res["spreads"] = {"own": fit_spread(y, dr, h)[0], "stage1": fit_spread(y, dr, h, s1)[0],
                          "stage1_crps": fit_spread(y, dr, h, s1, target="CRPS")[0]}
    for pr, sp in todo:
        g = cached_predictions(d, name, work, "G", pr, model)
        p = g if sp == "G" else cached_predictions(d, name, work, sp, pr, model)
        res["scores"][f"{pr}|{sp}"] = score_split(p, g, sp, res["spreads"])
    res["score_seconds"] = round(res["score_seconds"] + time.perf_counter() - t0, 1)
    write_json(path, res)
    return res


def ran(settings: dict, method: str) -> str:
    """What a row ran, in words."""
    if "stage 1" in method and "draws" not in method:
        return "stage-1 decoder on the encoder's own centre latent; no diffusion"
    if "posterior" in method or method == "lgdist":
        if settings.get("point") == "posterior_mean":
            return f"x0 network at t = T on {NUM_SAMPLES} draws of x_T, averaged; no sampler"
        return f"mean of {NUM_SAMPLES} decoded samples, {SAMPLER}"
    if "mean of" in method:
        return f"mean of {K} decoded samples, {SAMPLER}"
    return ""


#: the shipped default's rows: its point and its draws (``default`` variant)
SHIPPED_POINT, SHIPPED_DRAWS = "lgdist stage 1", "lgdist draws centred on stage 1 × s"
SAMPLED = ("median+bootstrap", "stage1+gaussian", "knn draws")


def shipped(results: list[dict]) -> list[str]:
    """The key numbers: the shipped default against stage 2 and the sampled baselines."""
    r = next((r for r in results if r["variant"] == "default"), None)
    if r is None:
        return []
    lines = ["## Shipped default (`default` variant): the key numbers", "",
             f"Point: {SHIPPED_POINT} (stage 2's posterior mean beside it); draws: {K} stage-2 draws centred "
             f"on the point, deviations × {r['spreads']['stage1']:.2f} (fitted on G, dropout masking).", "",
             "| masking | split | MSE point | MSE stage 2 | stage 2 / point | method | CRPS | energy | "
             "cov 50 | cov 80 | cov 95 |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, sc in r["scores"].items():
        pts, dr = sc["points"], sc["draws"]
        a, b = pts[SHIPPED_POINT]["MSE"], pts["lgdist stage 2 posterior mean"]["MSE"]
        for i, m in enumerate((SHIPPED_DRAWS, *SAMPLED)):
            x = dr[m]
            first = f"| {' | '.join(key.split('|'))} | {a:.4f} | {b:.4f} | {b / a:.3f} |"
            head = first if i == 0 else "| | | | | |"
            name = "LGDiST (shipped)" if i == 0 else m
            lines.append(f"{head} {name} | {x['CRPS']:.4f} | {x['energy']:.3f} | {x['coverage50']:.3f} | "
                         f"{x['coverage80']:.3f} | {x['coverage95']:.3f} |")
    return [*lines, ""]


def fits(results: list[dict]) -> list[str]:
    """One row per fitted variant: what it changes, its fit time and kept checkpoints."""
    lines = ["## Variants (chosen on G only)", "",
             "| variant | changes vs `x0-posterior 1-round` | fit s (1 thread; stages not copied) | "
             "stage 1 kept (G val MSE @ step) | "
             "stage 2 kept | networks copied from |", "|---|---|---|---|---|---|"]
    base = asdict(settings_of("x0-posterior 1-round"))
    for r in results:
        diff = ", ".join(f"{k}={v}" for k, v in r["settings"].items() if base.get(k) != v) or "—"
        ae, dit = r["fit"]["ae_best"], r["fit"]["dit_best"][0]
        copied = ", ".join(f"{st}: {v}" for st, v in r.get("copied", {}).items()) or r.get("stage1_from") or "—"
        lines.append(f"| {r['variant']} | {diff} | {r['fit_seconds']} | {ae['score']:.4f} @ {ae['step']} | "
                     f"{dit['score']:.4f} @ {dit['step']} | {copied} |")
    return [*lines, ""]


def carried(results: list[dict]) -> list[str]:
    """A note naming the rows carried from an earlier run's work folder (their own stage-1 fit)."""
    names = [r["variant"] for r in results if r.get("carried")]
    if not names:
        return []
    pairs = [n for n in names if n.endswith(" (earlier fit)")]
    pair = f": `{pairs[0][:-14]}` against `{pairs[0]}` shows by how much" if pairs else ""
    return [f"Rows of {', '.join(f'`{n}`' for n in names)} are carried from an earlier run (its work "
            "folder, not refitted here): their stage 1 is an earlier fit of the same settings. A refit "
            f"of the same settings on the same machine does not repeat a fit exactly{pair}.", ""]


def markdown(results: list[dict], earlier: dict, meta: dict) -> str:
    lines = ["# LGDiST completion vs baselines (HER2ST, train A–F, validate G, test H)", "",
             f"Machine: {meta['machine']}. Units: log1p(count). Scores over hidden panel entries (128 genes), "
             f"pooled per split. LGDiST: {CONFIG}, {BUDGET}. Draws: {K} per entry for every sampled method "
             f"(LGDiST: {SAMPLER}, one run per draw). Spreads s fitted on G (dropout) only: coverage of the "
             "central 80 % interval closest to 0.80 (`× s (CRPS)`: lowest CRPS), on a grid 0.25–8 (× 8.00: the "
             "grid's end binds). Regenerate: "
             "`.venv/bin/python benchmarks/completion.py`.", "", *carried(results), *shipped(results),
             *fits(results)]
    for protocol in PROTOCOLS:
        for split in SPLITS:
            key = f"{protocol}|{split}"
            lines += [f"## {protocol} masking, {split} ({'validation' if split == 'G' else 'test'})", "",
                      "| variant | point | ran | MSE | MSE / stage 1 | MAE | R² | PCC gene | PCC spot | bias |",
                      "|---|---|---|---|---|---|---|---|---|---|"]
            scored = [r for r in results if key in r["scores"]]
            for i, r in enumerate(scored):
                pts = r["scores"][key]["points"]
                ref = pts["lgdist stage 1"]["MSE"]
                for m, s in pts.items():
                    if m == "entries" or (i > 0 and not m.startswith("lgdist")):  # baselines once
                        continue
                    who = r["variant"] if m.startswith("lgdist") else "—"
                    lines.append(f"| {who} | {m} | {ran(r['settings'], m)} | {s['MSE']:.3f} | "
                                 f"{s['MSE'] / ref:.2f} | {s['MAE']:.3f} | {s['R2']:.3f} | {s['PCC_gene']:.3f} | "
                                 f"{s['PCC_spot']:.3f} | {s['bias']:+.3f} |")
            lines += ["", "| variant | draws | CRPS | energy | cov 50 | cov 80 | cov 95 |",
                      "|---|---|---|---|---|---|---|"]
            for i, r in enumerate(scored):
                for m, s in r["scores"][key]["draws"].items():
                    if i > 0 and m in SAMPLED:  # the sampled baselines once (stage 1 is shared)
                        continue
                    which = "stage1_crps" if "(CRPS)" in m else "stage1" if "stage 1" in m else "own"
                    label = m.replace("× s", f"× {r['spreads'][which]:.2f}")
                    who = r["variant"] if m not in SAMPLED else "—"
                    lines.append(f"| {who} | {label} | {s['CRPS']:.4f} | {s['energy']:.3f} | "
                                 f"{s['coverage50']:.3f} | {s['coverage80']:.3f} | {s['coverage95']:.3f} |")
            lines += ["", f"Earlier rows (points only; {earlier['meta']['machine']}, 2 threads):", "",
                      "| variant | point | ran | MSE |", "|---|---|---|---|"]
            for v in earlier["variants"]:
                for method, label in (("lgdist", "stage 2"), ("lgdist-stage1", "stage 1")):
                    what = ran(v["settings"], method if label == "stage 2" else "stage 1")
                    mse = v["scores"][f"{method}|{protocol}|{split}"]["MSE"]
                    name = "default (then; = x0-posterior 1-round)" if v["variant"] == "default" else v["variant"]
                    lines.append(f"| {name} | {label} | {what} | {mse:.3f} |")
            lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "her2st"))
    ap.add_argument("--work", default=str(ROOT / "runs" / "completion"))
    ap.add_argument("--variants", default="every")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--splits", default="G,H", help="splits to score (G alone is enough to choose a variant)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "completion"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    d = load_data(args.data, work)
    names = list(VARIANTS) if args.variants == "every" else args.variants.split(",")
    for name in names:
        logging.info("variant %s", name)
        fit_variant(d, name, work)
        score_variant(d, name, work, [(pr, sp) for pr in PROTOCOLS for sp in args.splits.split(",")])
    before = Path(args.out + ".json")
    committed = {r["variant"]: r for r in json.loads(before.read_text())["variants"]} if before.is_file() else {}
    results = []
    for name in VARIANTS:
        if (folder(work, name) / "scores.json").is_file():
            fit = json.loads((folder(work, name) / "fit.json").read_text())
            results.append({**fit, **json.loads((folder(work, name) / "scores.json").read_text())})
        elif name in committed:  # every row is kept: one not refitted here comes from the results file
            results.append({**committed[name], "carried": True})
    for name, row in committed.items():  # rows of earlier fits (a refitted variant's former row)
        local = next((r for r in results if r["variant"] == name and not r.get("carried")), None)
        if name not in VARIANTS:
            results.append({**row, "carried": True})
        elif local and local["scores"] != row["scores"] and f"{name} (earlier fit)" not in committed:
            results.append({**row, "variant": f"{name} (earlier fit)", "carried": True})
    earlier = json.loads((ROOT / "benchmarks" / "results" / "completion_v1.json").read_text())
    meta = {"machine": machine(args.threads), "config": CONFIG, "budget": BUDGET, "K": K, "sampler": SAMPLER,
            "num_samples": NUM_SAMPLES, "train": TRAIN, "splits": SPLITS}
    write_json(Path(args.out + ".json"), {"meta": meta, "variants": results})
    Path(args.out + ".md").write_text(markdown(results, earlier, meta))
    print(markdown(results, earlier, meta))


if __name__ == "__main__":
    main()
