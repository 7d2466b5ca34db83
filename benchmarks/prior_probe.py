"""How much more could a better regression prior give? Ridge-level probes on the LOO folds.

Stem's default point estimate is its ridge prior plus a quarter of the learned residual
(``benchmarks/accuracy_loo.py``), so a stronger prior would lift it directly. This script
scores variants of the ``ridge+ctx2`` probe (ring-2 inputs, PCA 256 + RidgeCV) on the same six
folds, panel and embeddings, paired against the plain probe: a penalty per gene, PCA width,
reduced-rank outputs (predictions projected on the top-k principal axes of the training
expression), a blend with the knn baseline, and test-time averaging over the prepared views.
It also rescores the plain probe without the spots that have no count in the panel (dead
array positions), to show how much they weigh in the protocol. Needs the fold folders of
``accuracy_loo.py`` (``--work``). Writes ``benchmarks/results/prior_probe.{json,md}``.

Usage: .venv/bin/python benchmarks/prior_probe.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from accuracy_loo import ROOT, SECTIONS, machine
from sklearn.decomposition import PCA
from sklearn.linear_model import RidgeCV

from stem_st.data.dataset import open_prepared
from stem_st.data.units import log2_expression
from stem_st.encoders.scaling import EmbeddingScaler
from stem_st.evaluation.baselines import training_pairs
from stem_st.evaluation.metrics import score
from stem_st.models.ridge import ALPHAS

#: name → options of :func:`predict`
from stem_st.training.data import section_counts, section_inputs

#: name → options of :func:`predict`
VARIANTS = {
    "ridge+ctx2 (plain probe)": {},
    "penalty per gene": {"per_gene": True},
    "PCA 128": {"components": 128},
    "PCA 512": {"components": 512},
    "reduced rank 30": {"rank": 30},
    "reduced rank 50": {"rank": 50},
    "blend knn 0.15": {"knn": 0.15},
    "blend knn 0.3": {"knn": 0.3},
    "views averaged": {"views": True},
    "reduced rank 50 + views averaged": {"rank": 50, "views": True},
    "reduced rank 50 + knn 0.2 + views averaged": {"rank": 50, "knn": 0.2, "views": True},
}


def fold_data(work: Path, fold: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Training inputs (view 0) and log2 targets of spots with counts; the held-out section's
    inputs (all views) and truth (every spot, as the LOO protocol scores them)."""
    ds = open_prepared(work / f"prep_{fold}")
    x, y = training_pairs(ds, [s for s in ds.sections if s != fold], "ring2")  # as the baselines fit
    return x, y, section_inputs(ds, fold, "ring2"), log2_expression(section_counts(ds, fold))


def predict(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, components: int = 256, per_gene: bool = False,
            rank: int = 0, knn: float = 0.0, views: bool = False) -> np.ndarray:
    """The probe's prediction for ``x_test`` ``(N, V, C)`` (view 0, or every view averaged)."""
    scaler = EmbeddingScaler.fit(x)
    xs = scaler.transform(x)
    pca = PCA(n_components=min(components, *xs.shape), random_state=0).fit(xs)
    ridge = RidgeCV(alphas=ALPHAS, alpha_per_target=per_gene).fit(pca.transform(xs), y)
    mean = y.mean(0)
    axes = np.linalg.svd(y - mean, full_matrices=False)[2][:rank] if rank else None
    keys = xs / np.linalg.norm(xs, axis=1, keepdims=True)
    preds = []
    for v in range(x_test.shape[1]) if views else [0]:
        q = scaler.transform(x_test[:, v])
        p = ridge.predict(pca.transform(q))
        if axes is not None:
            p = mean + (p - mean) @ axes.T @ axes
        if knn:
            qn = q / np.linalg.norm(q, axis=1, keepdims=True)
            idx = np.argpartition(-(qn @ keys.T), 19, axis=1)[:, :20]
            p = (1 - knn) * p + knn * y[idx].mean(1)
        preds.append(p)
    return np.mean(preds, 0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default=str(ROOT / "runs/accuracy_loo"))
    p.add_argument("--results", default=str(ROOT / "benchmarks/results/prior_probe"))
    args = p.parse_args()
    data = {f: fold_data(Path(args.work), f) for f in SECTIONS}
    folds: dict[str, dict] = {}
    for name, opts in VARIANTS.items():
        for f, (x, y, xt, yt) in data.items():
            pred = predict(x, y, xt, **opts)
            s = score(yt, pred)
            folds.setdefault(f, {})[name] = {k: float(s[k]) for k in ("PCC-50", "MSE", "RVD")}
            if not opts and f == "A1":  # what RVD is made of on the other-patient fold
                vt, vp = yt.var(0), pred.var(0)
                part = (vp - vt) ** 2 / np.maximum(vt, 1e-12) ** 2 / len(vt)
                genes = open_prepared(Path(args.work) / f"prep_{f}").genes
                rvd_a1 = [{"gene": genes[i], "rvd_part": float(part[i]), "truth_var": float(vt[i]),
                           "pred_var": float(vp[i])} for i in np.argsort(-part)[:5]]
            if not opts:  # the protocol without the dead spots (no count in the panel)
                live = (np.exp2(yt) - 1).sum(1) > 0.5
                s = score(yt[live], pred[live])
                folds[f]["ridge+ctx2, dead spots not scored"] = {
                    **{k: float(s[k]) for k in ("PCC-50", "MSE", "RVD")}, "dead_spots": int((~live).sum())}
    base = "ridge+ctx2 (plain probe)"
    rows = []
    for name in folds[SECTIONS[0]]:
        vals = {k: np.array([folds[f][name][k] for f in SECTIONS]) for k in ("PCC-50", "MSE", "RVD")}
        d = {k: vals[k] - np.array([folds[f][base][k] for f in SECTIONS]) for k in ("PCC-50", "MSE")}
        rows.append({"variant": name, **{k: float(v.mean()) for k, v in vals.items()},
                     **{f"d{k}": float(v.mean()) for k, v in d.items()},
                     **{f"d{k}_sd": float(v.std(ddof=1)) for k, v in d.items()},
                     "pcc_wins": int((d["PCC-50"] > 0).sum()), "mse_wins": int((d["MSE"] < 0).sum())})
    meta = {"machine": machine(), "folds": SECTIONS, "command": "python benchmarks/prior_probe.py"}
    out = Path(args.results)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows, "folds": folds,
                                                    "rvd_a1_top_genes": rvd_a1}, indent=1))
    lines = ["# Prior probes: what a better regression head could add (LOO, log2(1 + count))", "",
             f"Machine: {meta['machine']}. Same six folds, hmhvg:200 panel and ImageNet EfficientNet-Lite0 "
             "ring-2 inputs as `accuracy_loo.md`; Δ is paired against the plain probe (mean ± sd over folds, "
             f"folds better). Regenerate: `{meta['command']}`.", "",
             "| variant | PCC-50 | MSE | RVD | ΔPCC-50 (folds better) | ΔMSE (folds better) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['PCC-50']:.4f} | {r['MSE']:.4f} | {r['RVD']:.3f} | "
                     f"{r['dPCC-50']:+.4f} ± {r['dPCC-50_sd']:.4f} ({r['pcc_wins']}/6) | "
                     f"{r['dMSE']:+.4f} ± {r['dMSE_sd']:.4f} ({r['mse_wins']}/6) |")
    dead = {f: folds[f]["ridge+ctx2, dead spots not scored"]["dead_spots"] for f in SECTIONS}
    lines += ["", f"Dead spots (no count in the panel) per fold: {dead}. They are scored in every LOO row "
              "(all methods alike); the row 'dead spots not scored' shows what they cost."]
    a1 = folds["A1"][base]["RVD"]
    lines += ["", f"RVD on A1 (plain probe) is {a1:.3f}, the mean over 200 genes of "
              "(σ²_pred − σ²_true)² / σ²_true²; "
              f"its five largest terms add up to {sum(g['rvd_part'] for g in rvd_a1):.3f}:", "",
              "| gene | share of A1's RVD | truth variance | predicted variance |", "|---|---|---|---|"]
    lines += [f"| {g['gene']} | {g['rvd_part']:.3f} | {g['truth_var']:.4f} | {g['pred_var']:.4f} |"
              for g in rvd_a1]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
