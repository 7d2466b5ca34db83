"""Gene panels: which genes a model predicts, chosen from training sections only.

Specs: ``hmhvg:N`` (the Stem paper's default), ``hvg:N``, ``deg:N`` and ``file:PATH``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from ..errors import StemError, require

log = logging.getLogger(__name__)
EXCLUDED_PREFIXES = ("MT-", "mt-", "RPS", "RPL", "Rps", "Rpl")
PANEL_KINDS = ("hmhvg", "hvg", "deg", "file")


def parse_panel_spec(spec: str) -> tuple[str, str]:
    """Split ``kind:arg`` and validate it."""
    kind, _, arg = spec.partition(":")
    require(kind in PANEL_KINDS and arg, f"bad gene panel '{spec}'; use one of "
            "hmhvg:N, hvg:N, deg:N, file:PATH")
    if kind != "file":
        require(arg.isdigit() and int(arg) > 0, f"bad gene panel '{spec}': N must be a positive integer")
    return kind, arg


def common_genes(sections: Sequence[ad.AnnData]) -> list[str]:
    """Genes measured in every section, in the first section's order."""
    shared = set(sections[0].var_names)
    for a in sections[1:]:
        shared &= set(a.var_names)
    return [g for g in sections[0].var_names if g in shared]


def _pooled(train: Sequence[ad.AnnData], genes: list[str]) -> ad.AnnData:
    return ad.concat([a[:, genes] for a in train], join="inner", label="section",
                     keys=[a.uns["stem"]["section"] for a in train], index_unique="-")


def _scanpy():
    import scanpy  # imported when a panel is chosen, so reading a prepared dataset stays light

    return scanpy


def _lognorm(a: ad.AnnData) -> ad.AnnData:
    sc = _scanpy()
    a = a.copy()
    a.X = a.X.astype(np.float32)
    sc.pp.normalize_total(a)
    sc.pp.log1p(a)
    return a


def _hvg_names(a: ad.AnnData, n: int) -> pd.DataFrame:
    a = _lognorm(a)
    _scanpy().pp.highly_variable_genes(a, n_top_genes=min(n, a.n_vars))
    return a.var


def _not_excluded(genes) -> list[str]:
    return [g for g in genes if not str(g).startswith(EXCLUDED_PREFIXES)]


def hmhvg_panel(train: Sequence[ad.AnnData], genes: list[str], n: int) -> list[str]:
    """Stem's panel: union of per-section top-2000 HVGs minus MT-/RPS/RPL, then the
    intersection of the top-k genes by mean and by standard deviation of raw counts over all
    training spots, growing k until it holds ``n`` genes."""
    union: set[str] = set()
    for a in train:
        var = _hvg_names(a[:, genes], 2000)
        union |= set(var.index[var["highly_variable"]])
    cand = _not_excluded([g for g in genes if g in union])
    require(len(cand) >= n, f"only {len(cand)} candidate HVGs for a panel of {n}")
    x = _pooled(train, cand).X
    x = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
    mean, std = x.mean(axis=0), x.std(axis=0)
    by_mean = np.argsort(-mean, kind="stable")
    by_std = np.argsort(-std, kind="stable")
    seen_mean, seen_std, chosen = set(), set(), []
    for k in range(len(cand)):
        for idx, seen, other in ((by_mean[k], seen_mean, seen_std), (by_std[k], seen_std, seen_mean)):
            seen.add(int(idx))
            if int(idx) in other and int(idx) not in chosen:
                chosen.append(int(idx))
        if len(chosen) >= n:
            break
    chosen = sorted(chosen, key=lambda i: -mean[i])[:n]
    return [cand[i] for i in chosen]


def hvg_panel(train: Sequence[ad.AnnData], genes: list[str], n: int) -> list[str]:
    """Top ``n`` highly variable genes of the pooled training spots, ordered by mean."""
    var = _hvg_names(_pooled(train, _not_excluded(genes)), n)
    hv = var[var["highly_variable"]]
    return hv.sort_values("means", ascending=False).index[:n].tolist()


def deg_panel(train: Sequence[ad.AnnData], genes: list[str], n: int) -> list[str]:
    """Union of the top marker genes (Wilcoxon, ``rank_genes_groups``) between pathologist
    regions of each labelled training section, taking equally many per region until ``n``."""
    ranked: list[list[str]] = []
    for a in train:
        if "label" not in a.obs:
            continue
        keep = a.obs["label"].notna() & (a.obs["label"].astype(str) != "undetermined")
        b = _lognorm(a[keep.to_numpy(), _not_excluded(genes)])
        b.obs["label"] = b.obs["label"].astype(str).astype("category")
        counts = b.obs["label"].value_counts()
        groups = [g for g, c in counts.items() if c >= 2]
        if len(groups) < 2:
            continue
        _scanpy().tl.rank_genes_groups(b, "label", groups=groups, method="wilcoxon")
        names = b.uns["rank_genes_groups"]["names"]
        ranked += [[str(g) for g in names[grp]] for grp in names.dtype.names]
    require(bool(ranked), "deg panels need pathologist labels (obs['label']) in a training section")
    chosen: list[str] = []
    for depth in range(max(len(r) for r in ranked)):
        for r in ranked:
            if depth < len(r) and r[depth] not in chosen:
                chosen.append(r[depth])
                if len(chosen) == n:
                    return chosen
    raise StemError(f"only {len(chosen)} distinct marker genes for a panel of {n}")


def file_panel(path: str, genes: list[str]) -> list[str]:
    """Genes listed one per line in ``path``; every one must be measured in every section."""
    p = Path(path)
    require(p.is_file(), f"gene panel file not found: {p}")
    wanted = [ln.strip() for ln in p.read_text().splitlines()
              if ln.strip() and not ln.startswith("#")]
    require(bool(wanted), f"gene panel file {p} is empty")
    require(len(set(wanted)) == len(wanted), f"gene panel file {p} lists a gene twice")
    have = set(genes)
    absent = [g for g in wanted if g not in have]
    require(not absent, f"{len(absent)} panel genes are absent from the data "
            f"(e.g. {', '.join(absent[:5])})")
    return wanted


def choose_panel(spec: str, train: Sequence[ad.AnnData], all_sections: Sequence[ad.AnnData]) -> list[str]:
    """Choose a panel from ``train`` among genes measured in every one of ``all_sections``."""
    kind, arg = parse_panel_spec(spec)
    require(len(train) > 0, "no training sections left to choose genes from")
    genes = common_genes(list(all_sections))
    if kind == "file":
        return file_panel(arg, genes)
    n = int(arg)
    require(n <= len(genes), f"panel of {n} genes asked for, but only {len(genes)} are shared")
    fn = {"hmhvg": hmhvg_panel, "hvg": hvg_panel, "deg": deg_panel}[kind]
    panel = fn(train, genes, n)
    log.info("panel %s: %d genes from %d training sections", spec, len(panel), len(train))
    require(len(panel) == n, f"panel {spec} found only {len(panel)} genes")
    return panel


def write_panel(path: str | Path, genes: Sequence[str]) -> None:
    """Save a panel as a text file, one symbol per line."""
    Path(path).write_text("".join(f"{g}\n" for g in genes))


def read_panel(path: str | Path) -> list[str]:
    """Read a panel written by :func:`write_panel`."""
    return [g for g in re.split(r"\r?\n", Path(path).read_text()) if g]
