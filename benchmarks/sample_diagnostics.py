"""Why Stem's samples score as they do: diagnostics of the draws kept by ``accuracy_loo.py``.

For every Stem row with kept samples (``runs/accuracy_loo/models/<fold>/<row>/samples.npy``)
and each fold, in log2(1 + count):

- gene co-variation of the draws: mean |correlation| between genes of the draws' deviations
  from their spot mean, and the variance share of the first principal component, beside the
  same figures for the cross-fitted ridge+ctx2 training residuals (what real residuals do);
- the width headroom: fair CRPS with the deviations scaled by 0.7 … 1.1 (a diagnostic on the
  test section, never used to choose a variant);
- the count lattice: CRPS after rounding each draw to a whole count.

Writes ``benchmarks/results/sample_diagnostics.{json,md}``.
Usage: .venv/bin/python benchmarks/sample_diagnostics.py [--rows stem-default,…]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import scoringrules as sr

from stem_st.data.dataset import open_prepared
from stem_st.data.units import log2_expression
from stem_st.evaluation.baselines import make_baseline
from stem_st.training.data import section_counts

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ["C2", "C3", "C4", "C5", "C6", "A1"]
SCALES = (0.7, 0.8, 0.9, 1.0, 1.1)
#: the rows the table opens with: the default recipe, the paper recipe, the real residuals
HEADLINE = ("stem-default", "stem-paper", "cross-fitted residuals")


def co_variation(dev: np.ndarray) -> dict:
    """Mean |gene–gene correlation| and first-PC variance share of ``(rows, genes)`` deviations."""
    keep = dev.std(0) > 0
    c = np.corrcoef(dev[:, keep].T)
    ev = np.linalg.eigvalsh(np.cov(dev[:, keep].T))[::-1]
    return {"mean_abs_corr": float(np.abs(c[np.triu_indices(len(c), 1)]).mean()),
            "pc1_share": float(ev[0] / ev.sum())}


def crps(y: np.ndarray, x: np.ndarray) -> float:
    """Mean fair CRPS over spot × gene entries (chunks of spots bound the memory)."""
    parts = [sr.crps_ensemble(y[i:i + 32], x[i:i + 32], m_axis=1, estimator="fair") for i in range(0, len(y), 32)]
    return float(np.concatenate(parts).mean())


def headline_first(out: dict) -> dict:
    """The default recipe's draws, the paper recipe's and the real residuals (the reference) first,
    then the ablations in their own order."""
    head = [k for k in HEADLINE if k in out]
    return {k: out[k] for k in head + [k for k in out if k not in head]}


def write_markdown(res: Path, out: dict) -> None:
    lines = ["# Diagnostics of Stem's samples (leave-one-section-out folds, log2(1 + count))", "",
             "Regenerate: `python benchmarks/sample_diagnostics.py` after `accuracy_loo.py` (`--from-json` only "
             "rewrites this file). Mean over the folds present. The CRPS columns rescale the draws' deviations "
             "about their spot mean on the test section itself: headroom, not a variant to choose.", "",
             "| draws | folds | mean abs gene corr of deviations | PC1 share | "
             + " | ".join(f"CRPS ×{f}" for f in SCALES) + " | CRPS on whole counts |",
             "|---" * (5 + len(SCALES)) + "|"]
    for name, folds in headline_first(out).items():
        v = list(folds.values())
        cells = [f"{np.mean([x['mean_abs_corr'] for x in v]):.3f}", f"{np.mean([x['pc1_share'] for x in v]):.3f}"]
        if "crps_scaled" in v[0]:
            cells += [f"{np.mean([x['crps_scaled'][str(f)] for x in v]):.4f}" for f in SCALES]
            cells.append(f"{np.mean([x['crps_counts'] for x in v]):.4f}")
        else:
            cells += ["–"] * (len(SCALES) + 1)
        lines.append(f"| {name} | {len(v)} | " + " | ".join(cells) + " |")
    tmp = res.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, res.with_suffix(".md"))
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default=str(ROOT / "runs/accuracy_loo"))
    p.add_argument("--rows", default="")
    p.add_argument("--results", default=str(ROOT / "benchmarks/results/sample_diagnostics"))
    p.add_argument("--from-json", action="store_true", help="only rewrite RESULTS.md from RESULTS.json")
    args = p.parse_args()
    if args.from_json:
        res = Path(args.results)
        write_markdown(res, json.loads(res.with_suffix(".json").read_text()))
        return
    work, out = Path(args.work), {}
    for fold in SECTIONS:
        ds = open_prepared(work / f"prep_{fold}")
        y = log2_expression(section_counts(ds, fold)).astype(np.float64)
        boot = make_baseline("ridge+ctx2+boot").fit(ds, [s for s in ds.sections if s != fold])
        out.setdefault("cross-fitted residuals", {})[fold] = co_variation(boot.residuals.astype(np.float64))
        rows = [d for d in sorted((work / "models" / fold).glob("*")) if (d / "samples.npy").is_file()]
        for d in rows:
            if args.rows and d.name not in args.rows.split(","):
                continue
            s = np.load(d / "samples.npy").astype(np.float64)
            m = s.mean(1, keepdims=True)
            r = co_variation((s - m).reshape(-1, s.shape[2]))
            r["crps_scaled"] = {str(f): crps(y, np.maximum(m + f * (s - m), 0)) for f in SCALES}
            r["crps_counts"] = crps(y, np.log2(1 + np.round(np.exp2(s) - 1)))
            out.setdefault(d.name, {})[fold] = r
            print(fold, d.name, {k: v for k, v in r.items() if k != "crps_scaled"}, flush=True)
    res = Path(args.results)
    res.with_suffix(".json").write_text(json.dumps(out, indent=1))
    write_markdown(res, out)

if __name__ == "__main__":
    main()
