"""The tables and the plot of ``sample_budget.py``: mean ± sd over folds per (regime, budget),
paired per-fold differences against the CPU demo's training (``before @ tiny 600×32``) and against
the sampled baselines of ``accuracy_loo.json`` (same folds, panel, embeddings, 20 samples)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from report import write_results

SECTIONS = ["C2", "C3", "C4", "C5", "C6", "A1"]
REFERENCE = "before @ tiny 600×32"
#: what each job's ``device`` was in the committed runs (the jobs record the device kind only)
MACHINES = {"cpu": "cpu = the x86_64 2-core CPU box, torch 2.13 (1 thread per job, 2 jobs at once)",
            "cuda": "cuda = one NVIDIA H200 lent for the session, torch 2.11, bf16 autocast, eager "
                    "(3 jobs sharing the card; 15 at once made each job 4x slower)"}
BASELINES = ("knn+ctx", "knn+ctx2", "knn", "ridge+ctx2+mvn", "ridge+ctx2+gauss")
COLS = ("PCC-50", "MSE", "CRPS", "energy", "variogram", "coverage50", "coverage80", "coverage95",
        "rank_coverage50", "rank_coverage80", "rank_coverage95", "corr_err_sample", "moran_err_sample")
#: +1: higher is better, −1: lower is better
PAIRS = {"CRPS": -1, "energy": -1, "variogram": -1, "corr_err_sample": -1, "moran_err_sample": -1}


def committed(path: Path) -> dict[str, dict[str, dict]]:
    """config → fold → a job-like row from the committed results, so that a summary made on a
    machine without the earlier sessions' job files keeps their rows (job files override them)."""
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    out: dict[str, dict[str, dict]] = {}
    for config, folds in data.get("folds", {}).items():
        seconds = data.get("extra", {}).get(config, {}).get("train_seconds")
        for fold, r in folds.items():
            meta = {k: r.pop(k, None) for k in ("curve", "device", "validation", "spread", "train_seconds")}
            out.setdefault(config, {})[fold] = {
                "config": config, "fold": fold, "log2": r, "curve": meta["curve"], "device": meta["device"],
                "validation": meta["validation"], "spread": meta["spread"],
                "train_seconds": meta["train_seconds"] if meta["train_seconds"] is not None else seconds}
    return out


def load(folders: list[Path], keep: Path | None = None) -> dict[str, dict[str, dict]]:
    """config → fold → job result: the committed rows of ``keep``, then the job files."""
    out: dict[str, dict[str, dict]] = committed(keep) if keep is not None else {}
    for folder in folders:
        for f in sorted(Path(folder).glob("*.json")):
            r = json.loads(f.read_text())
            old = out.setdefault(r["config"], {}).get(r["fold"], {})
            if r.get("train_seconds") is None:  # scored from a saved network: the training's time as committed
                r = {**r, "train_seconds": old.get("train_seconds"), "curve": r.get("curve") or old.get("curve")}
            out[r["config"]][r["fold"]] = r
    return out


def baselines(path: Path) -> dict[str, dict[str, dict]]:
    """baseline → fold → a job-like row from the committed leave-one-out results."""
    if not path.is_file():
        return {}
    folds = json.loads(path.read_text())["folds"]
    return {b: {f: {"log2": folds[f][b]["log2"]} for f in SECTIONS if b in folds.get(f, {})} for b in BASELINES}


def mean_sd(rows: dict[str, dict], key: str) -> tuple[float, float, int]:
    v = np.array([r["log2"][key] for r in rows.values() if key in r["log2"]], dtype=float)
    return (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v)) if len(v) else (np.nan, 0.0, 0)


def paired(a: dict[str, dict], b: dict[str, dict]) -> dict:
    folds = [f for f in SECTIONS if f in a and f in b]
    out = {"folds": len(folds)}
    for k, better in PAIRS.items():
        d = np.array([a[f]["log2"][k] - b[f]["log2"][k] for f in folds])
        out[k] = {"mean": float(d.mean()) if len(d) else np.nan, "sd": float(d.std(ddof=1)) if len(d) > 1 else 0.0,
                  "wins": int((better * d > 0).sum())}
    return out


def order(configs: list[str]) -> list[str]:
    from sample_budget import BUDGETS, REGIMES

    rank = {f"{r} @ {b}": (i, j) for i, r in enumerate(REGIMES) for j, b in enumerate(BUDGETS)}
    return sorted(configs, key=lambda c: rank.get(c, (99, 99)))


def plot(results: dict, path: Path) -> None:
    """Per regime, the mean over folds of the paired difference to the reference (error bar: sd
    over folds) at each budget; rows on fewer than six folds are marked, since only paired
    differences compare across fold subsets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sample_budget import BUDGETS

    keys = ("energy", "variogram", "CRPS", "corr_err_sample")
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.8))
    regimes = sorted({c.partition(" @ ")[0] for c in results}, key=lambda r: (r != "before", r))
    budgets = [b for b in BUDGETS if not b.startswith("paper")]
    x = np.arange(len(budgets))
    ref = results.get(REFERENCE, {})
    for ax, k in zip(axes, keys):
        for i, reg in enumerate(regimes):
            pts = []
            for xi, b in zip(x, budgets):
                p = paired(results[f"{reg} @ {b}"], ref) if f"{reg} @ {b}" in results else {"folds": 0}
                if f"{reg} @ {b}" == REFERENCE:
                    pts.append((xi, 0.0, 0.0, len(ref)))
                elif p["folds"] >= 1:
                    pts.append((xi, p[k]["mean"], p[k]["sd"], p["folds"]))
            if pts:
                xs, ys, sds, ns = map(np.array, zip(*pts))
                shift = (i - (len(regimes) - 1) / 2) * 0.08
                line = ax.errorbar(xs + shift, ys, yerr=sds, marker="o", capsize=2, label=reg)[0]
                for xi, yi, n in zip(xs + shift, ys, ns):
                    if n < 6:
                        ax.annotate(f"{n} folds", (xi, yi), fontsize=6, color=line.get_color())
        ax.axhline(0, color="grey", lw=0.6)
        ax.set_xticks(x, [b.replace(" ", "\n") for b in budgets], fontsize=8)
        ax.set_title(f"Δ{k} vs the CPU demo's training (lower is better)", fontsize=8)
    axes[0].legend(fontsize=7)
    fig.suptitle("Stem's samples against training budget: paired per-fold difference to `before @ tiny 600×32` "
                 "(HER2ST leave-one-section-out)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def committed_reference(path: Path) -> dict[str, dict]:
    """The reference row from ``accuracy_loo.json`` (its ``stem:default``: the same budget, recipe and
    code path as ``before @ tiny 600×32``), for when this benchmark has not rerun it."""
    folds = json.loads(path.read_text())["folds"]
    return {f: {"config": REFERENCE, "fold": f, "log2": folds[f]["stem:default"]["log2"], "device": "cpu",
                "train_seconds": float("nan"), "spread": None, "source": "accuracy_loo.json stem:default"}
            for f in SECTIONS if "stem:default" in folds.get(f, {})}


def _num(v, digits: int) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def summarise(folders: list[Path], results_dir: Path) -> None:
    results = load(folders, results_dir / "sample_budget.json")
    base = baselines(results_dir / "accuracy_loo.json")
    if REFERENCE not in results and (results_dir / "accuracy_loo.json").is_file():
        results[REFERENCE] = committed_reference(results_dir / "accuracy_loo.json")
    configs = order(list(results))
    machines = sorted({r.get("device", "?") for c in results.values() for r in c.values()})
    summary = {c: {k: dict(zip(("mean", "sd", "folds"), mean_sd(results[c], k))) for k in COLS} for c in configs}
    for b, rows in base.items():
        summary[b] = {k: dict(zip(("mean", "sd", "folds"), mean_sd(rows, k))) for k in COLS}
    vs_ref = {c: paired(results[c], results[REFERENCE])
              for c in configs if REFERENCE in results and c != REFERENCE}
    vs_base = {c: {b: paired(results[c], base[b]) for b in base} for c in configs}
    def fmean(vals):
        vals = [v for v in vals if v is not None and np.isfinite(v)]
        return float(np.mean(vals)) if vals else None

    extra = {c: {"train_seconds": fmean([r["train_seconds"] for r in results[c].values()]),
                 "spread": fmean([r["spread"] for r in results[c].values()]),
                 "best_step": [r["validation"]["best_step"] for r in results[c].values() if r.get("validation")],
                 "device": sorted({r["device"] for r in results[c].values()})} for c in configs}
    data = {"meta": {"devices": machines, "reference": REFERENCE}, "summary": summary, "vs_reference": vs_ref,
            "vs_baselines": vs_base, "extra": extra,
            "folds": {c: {f: {**r["log2"], "curve": r.get("curve"), "device": r.get("device"),
                              "validation": r.get("validation"), "spread": r.get("spread"),
                              "train_seconds": r.get("train_seconds")}
                          for f, r in results[c].items()} for c in configs}}
    lines = ["# Sample quality against training compute (`benchmarks/sample_budget.py`)", "",
             "Leave-one-section-out over the six imaged HER2ST sections (C2–C6, A1), log2(1 + count); the "
             "default recipe; 20 samples per spot with dpm++:10; panel hmhvg:200, ImageNet "
             "EfficientNet-Lite0, 2 views; the same prepared folds and scores as `accuracy_loo.py`. "
             "Regenerate: `python benchmarks/sample_budget.py run --configs all` then `… summary`. "
             "Budget: preset, optimiser steps × batch (learning rate: tiny 5e-4, small and paper 1e-4). "
             "Regime `before`: training as it was (last state, spread calibrated on training spots); "
             "`validated`: one training section kept out of the network's training, its samples scored "
             "every tenth of the run, the best state kept, the spread calibrated on it; the others add "
             "one lever to `validated`. Every regime starts from the default recipe without neighbour targets "
             "(as it was when the regimes were defined); `validated + neighbour targets 16 @ tiny 600×32` is "
             "what `stem train` ships now (rerun with the code of 2026-12-06: the shift widening from the "
             "median, one spread factor at 80 %; it matches `stem independent` in `joint_sampling.md`). Rows "
             "are kept as measured with the code of their day: every other row but `validated + neighbour "
             "targets 64` was measured before the shift widening started at the median (most before the "
             "widening existed). Baseline "
             "rows: the committed CPU rows of `accuracy_loo.json`.", "",
             "Machines: " + "; ".join(MACHINES.get(m, m) for m in machines) + " (per row and fold in the JSON). "
             "The reference row is the committed `stem:default` of `accuracy_loo.json` (the same budget, recipe "
             "and code path, 2 threads), unless this benchmark reran it.", "",
             "## Mean ± sd over folds", "",
             "| regime @ budget | folds | " + " | ".join(COLS) + " | spread | best step | train s |",
             "|---" * (len(COLS) + 5) + "|"]
    for c in [*configs, *base]:
        s = summary[c]
        cells = ["–" if not s[k]["folds"] else f"{s[k]['mean']:.3f} ± {s[k]['sd']:.3f}" if k != "variogram"
                 else f"{s[k]['mean']:.0f} ± {s[k]['sd']:.0f}" for k in COLS]
        e = extra.get(c, {})
        best = e.get("best_step") or []
        lines.append(f"| {c} | {s['CRPS']['folds']} | " + " | ".join(cells) + f" | {_num(e.get('spread'), 2)} | "
                     f"{', '.join(map(str, best)) or '–'} | {_num(e.get('train_seconds'), 0)} |")
    lines += ["", f"## Paired against `{REFERENCE}` (the CPU demo's training), per fold", "",
              "Differences row − reference (lower is better for all); `better` counts the folds where the row "
              "wins.",
              "", "| regime @ budget | folds | " + " | ".join(f"Δ{k} | better" for k in PAIRS) + " |",
              "|---" * (2 + 2 * len(PAIRS)) + "|"]
    for c, p in vs_ref.items():
        lines.append(f"| {c} | {p['folds']} | " + " | ".join(
            f"{p[k]['mean']:+.4f} ± {p[k]['sd']:.4f} | {p[k]['wins']}/{p['folds']}" for k in PAIRS) + " |")
    lines += ["", "## Paired against `knn+ctx` (20 neighbours as samples), per fold", "",
              "| regime @ budget | folds | " + " | ".join(f"Δ{k} | better" for k in PAIRS) + " |",
              "|---" * (2 + 2 * len(PAIRS)) + "|"]
    for c in configs:
        p = vs_base[c].get("knn+ctx")
        if p and p["folds"]:
            lines.append(f"| {c} | {p['folds']} | " + " | ".join(
                f"{p[k]['mean']:+.4f} ± {p[k]['sd']:.4f} | {p[k]['wins']}/{p['folds']}" for k in PAIRS) + " |")
    plot(results, results_dir / "sample_budget.png")
    lines += ["", "The plot `sample_budget.png` beside this file draws the paired differences against the budget.",
              ""]
    write_results(results_dir / "sample_budget", data, "\n".join(lines))
