"""Per-gene Pearson of a prediction file against the prepared truth (a first figure until the
evaluation harness lands). Genes with zero variance in truth or prediction are skipped and
counted.

Usage: .venv/bin/python benchmarks/quick_pcc.py PREP PRED.h5ad
"""

from __future__ import annotations

import sys

import anndata as ad
import numpy as np

from stem_st.data.prepared import open_prepared
from stem_st.training.data import log2_expression


def main() -> None:
    prep, pred_path = sys.argv[1], sys.argv[2]
    pred = ad.read_h5ad(pred_path)
    sid = pred.uns["stem"]["section"]
    truth = open_prepared(prep).section(sid)[pred.obs_names, list(pred.var_names)]
    y = log2_expression(np.asarray(truth.X))
    p = np.asarray(pred.X)
    ok = (y.std(0) > 0) & (p.std(0) > 0)
    yc, pc = y[:, ok] - y[:, ok].mean(0), p[:, ok] - p[:, ok].mean(0)
    r = (yc * pc).sum(0) / np.sqrt((yc**2).sum(0) * (pc**2).sum(0))
    top = np.sort(r)[::-1]
    print(f"{sid}: {pred.n_obs} spots, {ok.sum()} genes scored ({(~ok).sum()} zero-variance "
          f"skipped); mean PCC {r.mean():.4f}; top-10 {top[:10].mean():.4f}; "
          f"top-50 {top[:50].mean():.4f}; MSE {((p - y) ** 2).mean():.4f} (log2(1+count))")


if __name__ == "__main__":
    main()
