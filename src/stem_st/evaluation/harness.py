"""``stem evaluate``: score prediction files and baselines on one held-out section, draw the
figures and write ``metrics.json``, ``metrics.csv`` and a self-contained ``report.html``."""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np

from .. import plotting as plots
from ..atomic import atomic_path, read_json
from ..data.context import RADII, graph_matrices
from ..data.dataset import PreparedDataset, open_prepared
from ..data.units import UNITS, log2_expression
from ..defaults import DEFAULT_NUM_SAMPLES
from ..errors import StemError, require
from ..prediction.output import SAMPLES_SUFFIX
from ..progress import phase
from ..stem.shift import SPOT_THRESHOLD
from ..stem.summarise import SUMMARIES, summarise
from ..viewer import build_view
from .baselines import BASELINES, make_baseline
from .clustering import label_agreement
from .figures import report_figures
from .metrics import UNIT_NAMES, in_unit, pearson_per_gene, score
from .probabilistic import PROTOCOL as PROB_PROTOCOL
from .probabilistic import probabilistic_scores
from .report import write_report

log = logging.getLogger(__name__)
HER2ST_MARKERS = ("GNAS", "FASN", "CCL19", "TRAC", "IGHA1", "GPX3", "RAB11FIP1", "COL4A1")


@dataclass
class MethodResult:
    """One method's prediction on the section: summary, optional std and samples."""

    name: str
    mean: np.ndarray
    std: np.ndarray | None = None
    samples: np.ndarray | None = None
    info: dict = field(default_factory=dict)
    shift: np.ndarray | None = None  # each spot's shift score from the model's training data


def read_prediction(path: str | Path, spots: list[str], genes: list[str]) -> MethodResult:
    """A ``stem predict`` file aligned to ``spots`` × ``genes`` (samples too, when kept)."""
    path = Path(path)
    require(path.is_file(), f"prediction file {path} not found")
    try:
        pred = ad.read_h5ad(path)
    except Exception as exc:
        raise StemError(f"{path} is not a readable .h5ad file ({type(exc).__name__})") from None
    missing_g = [g for g in genes if g not in pred.var_names]
    if missing_g:
        raise StemError(f"{path.name} lacks {len(missing_g)} panel genes (e.g. {missing_g[0]}); "
                        "was it predicted with this prepared dataset's panel?")
    missing_s = [s for s in spots if s not in pred.obs_names]
    if missing_s:
        raise StemError(f"{path.name} lacks {len(missing_s)} of the section's spots (e.g. "
                        f"{missing_s[0]}); was it predicted for this section?")
    rows = pred.obs_names.get_indexer(spots)
    cols = pred.var_names.get_indexer(genes)
    x = np.asarray(pred.X, dtype=np.float32)[np.ix_(rows, cols)]
    std = np.asarray(pred.layers["std"], dtype=np.float32)[np.ix_(rows, cols)] if "std" in pred.layers else None
    info = dict(pred.uns.get("stem", {}))
    samples = None
    sfile = path.with_name(path.stem + SAMPLES_SUFFIX)
    if sfile.is_file() and info.get("samples_file") == sfile.name:  # not a stale file of an older run
        s = np.load(sfile, mmap_mode="r")
        require(s.ndim == 3 and s.shape[0] == pred.n_obs and s.shape[2] == pred.n_vars,
                f"{sfile.name} has shape {s.shape}, not (spots, samples, genes) of {path.name}")
        samples = np.asarray(s[rows][:, :, cols], dtype=np.float32)
    shift = pred.obs["shift"].to_numpy(dtype=np.float32)[rows] if "shift" in pred.obs else None
    return MethodResult(str(info.get("method", "stem")), x, std, samples, info, shift)


def _train_sections(ds: PreparedDataset, section: str, preds: list[MethodResult],
                    explicit: list[str]) -> list[str]:
    if explicit:
        unknown = set(explicit) - set(ds.sections)
        require(not unknown, f"--train-sections {sorted(unknown)} are not in {ds.root}")
        return [s for s in explicit if s != section]
    for p in preds:  # the run that made the prediction knows what it trained on
        ck = p.info.get("checkpoint")
        cfg = Path(ck).parent.parent / "config.json" if ck else None
        if cfg and cfg.is_file():
            secs = read_json(cfg, "training run").get("train_sections")
            if secs and all(s in ds.sections for s in secs):
                return [s for s in secs if s != section]
    return [s for s in ds.sections if s != section and s not in ds.holdout]


def default_marker_genes(genes: list[str], r: np.ndarray, top: int = 4) -> list[str]:
    """The ``top`` best-correlated genes plus the HER2ST markers present in the panel."""
    order = [genes[i] for i in np.argsort(np.nan_to_num(r, nan=-2.0))[::-1][:top]]
    return order + [g for g in HER2ST_MARKERS if g in genes and g not in order]


def _score_methods(methods: list, truth: np.ndarray, graph, labels, seed: int, advance, xy=None
                   ) -> tuple[list[dict], dict, list[dict], dict]:
    """The metric rows, per-gene correlations, sample statistics (paper Table 7) and PIT
    histograms of every method."""
    rows, correlations, sample_stats, pits = [], {}, [], {}
    for m in methods:
        row = {"method": m.name, **score(truth, m.mean, m.samples)}
        if m.samples is not None:
            row["num_samples"] = int(m.samples.shape[1])
            if m.samples.shape[1] > 1:
                prob = probabilistic_scores(truth, m.mean, m.samples, graph, seed, xy)
                pits[m.name] = prob.pop("PIT")
                row.update(prob)
        if labels is not None:
            row.update({k: v for k, v in label_agreement(m.mean, labels, seed).items()
                        if k in ("ARI", "NMI", "clusters")})
        if m.shift is not None:  # how far the section lies from the model's training data
            row.update(shift_median=float(np.median(m.shift)),
                       shift_flagged=float((m.shift > SPOT_THRESHOLD).mean()))
        rows.append(row)
        correlations[m.name] = pearson_per_gene(truth, m.mean)
        if m.samples is not None and m.info.get("sampler"):  # diffusion samples: Table 7
            for how in SUMMARIES:
                s = score(truth, summarise(m.samples, how))
                sample_stats.append({"method": m.name, "statistic": how,
                                     **{k: s[k] for k in ("PCC-10", "PCC-50", "PCC-all", "MSE", "MAE", "RVD")}})
        advance(1)
    return rows, correlations, sample_stats, pits


def evaluate(prep: str | Path, section: str, pred_files: list[str | Path], baselines: list[str],
             out: str | Path, train_sections: list[str] | None = None, genes: list[str] | None = None,
             overwrite: bool = False, seed: int = 0, unit: str = "log2", progress: bool = True) -> dict:
    """Score every prediction file and baseline on ``section`` in ``unit`` (``log2`` or the
    depth-normalised ``cp10k``, see :func:`~stem_st.evaluation.metrics.in_unit`); write the
    report folder."""
    require(unit in UNIT_NAMES, f"unknown --unit '{unit}'; choose {', '.join(UNIT_NAMES)}")
    t0 = time.perf_counter()
    ds = open_prepared(prep)
    truth_ad = ds.section(section)
    spots, panel = list(truth_ad.obs_names), list(ds.genes)
    counts = truth_ad.X.toarray() if hasattr(truth_ad.X, "toarray") else truth_ad.X
    truth = log2_expression(np.asarray(counts))
    out = Path(out)
    require(overwrite or not out.exists(), f"{out} already exists; pass --overwrite to replace it")
    require(pred_files or baselines, "nothing to evaluate: give --pred and/or --baselines")

    methods = [read_prediction(p, spots, panel) for p in pred_files]
    names = [m.name for m in methods]
    if len(set(names)) < len(names):  # several runs: name them by file
        for m, p in zip(methods, pred_files):
            m.name = Path(p).stem
    for m in methods:
        require(m.info.get("section", section) == section,
                f"a prediction is for section {m.info.get('section')}, not {section}")
    trained_on = _train_sections(ds, section, methods, train_sections or [])
    emb = ds.embeddings(section)[:, 0]
    # sampled baselines draw as many profiles per spot as the predictions have
    draws = next((m.samples.shape[1] for m in methods if m.samples is not None), DEFAULT_NUM_SAMPLES)
    with phase(f"{section}: fit the baselines", len(baselines), progress and len(baselines) > 0) as advance:
        for name in baselines:
            tb = time.perf_counter()
            model = make_baseline(name, max(2, draws), seed).fit(ds, trained_on)
            mean, std, samples = model.predict(emb, np.asarray(truth_ad.obsm["spatial"]))
            info = {"seconds": round(time.perf_counter() - tb, 2)}
            if name == "ridge":
                info["alpha"] = model.alpha
            methods.append(MethodResult(name, mean, std, samples, info))
            log.info("baseline %s: %.1f s", name, info["seconds"])
            advance(1)

    if unit != "log2":
        truth = in_unit(truth, unit)
        for m in methods:
            m.mean = in_unit(m.mean, unit)
            m.samples = None if m.samples is None else in_unit(m.samples, unit)
    labels = truth_ad.obs["label"].to_numpy() if "label" in truth_ad.obs else None
    graph = graph_matrices(np.asarray(truth_ad.obsm["spatial"]), RADII["ring1"][0])[0]
    with phase(f"{section}: score", len(methods), progress) as advance:
        rows, correlations, sample_stats, pits = _score_methods(methods, truth, graph, labels, seed, advance,
                                                                np.asarray(truth_ad.obsm["spatial"]))
    if labels is not None:
        rows.append({"method": "truth (reference)", **label_agreement(truth, labels, seed)})

    protocol = _protocol(ds, section, truth, methods, trained_on, labels)
    protocol["units"] = UNIT_NAMES[unit] + " (from raw counts); predictions converted the same way"
    marker = genes or default_marker_genes(panel, correlations[methods[0].name])
    unknown = [g for g in marker if g not in panel]
    require(not unknown, f"--genes not in the panel: {', '.join(unknown)}")

    with atomic_path(out, overwrite=overwrite) as tmp:
        tmp.mkdir()
        figures = report_figures(tmp, ds, truth_ad, truth, methods, correlations, marker, UNIT_NAMES[unit])
        if pits:
            figures.insert(1, ("PIT histograms of the sampling methods (flat = calibrated)",
                               plots.pit_plot(pits, tmp / "pit.png")))
        per_gene = {m: [None if not np.isfinite(v) else float(v) for v in r] for m, r in correlations.items()}
        (tmp / "metrics.json").write_text(json.dumps(
            {"protocol": protocol, "methods": [_defined(r, None) for r in rows],
             "sample_statistics": sample_stats, "pit": pits, "per_gene_pcc": {"genes": panel, **per_gene}},
            indent=2, default=str))
        _write_csv(tmp / "metrics.csv", [_defined(r, "") for r in rows])
        notes = [f"{m.name}: {m.info['seconds']} s to fit and predict" for m in methods
                 if m.name in BASELINES]
        if sample_stats:
            notes.append("Sample statistics (paper Table 7): " + "; ".join(
                f"{s['method']} {s['statistic']}: PCC-50 {s['PCC-50']:.3f}, MSE {s['MSE']:.3f}"
                for s in sample_stats))
        links = []
        for i, p in enumerate(pred_files):  # an interactive page per prediction, beside the report
            name = "viewer.html" if len(pred_files) == 1 else f"viewer_{i + 1}.html"
            build_view(p, tmp / name, prep, section)
            links.append((f"Interactive viewer: {Path(p).name} vs measured, on the H&E", name))
        write_report(tmp / "report.html", f"Stem-ST evaluation: section {section}", rows, protocol,
                     figures, notes, links)
    log.info("evaluated %s in %.1f s → %s", section, time.perf_counter() - t0, out)
    return {"rows": rows, "sample_statistics": sample_stats, "pit": pits, "protocol": protocol,
            "report": str(out / "report.html")}


def _protocol(ds, section, truth, methods, trained_on, labels) -> dict:
    stem = [m for m in methods if m.info.get("sampler")]
    proto = {
        "section": section, "spots": truth.shape[0], "genes": truth.shape[1],
        "units": UNITS + " of raw counts; predictions in the same units",
        "PCC": "Pearson r per gene across the section's spots; genes ranked by r, PCC-k = mean of "
               "the top k; PCC-all = mean over every scored gene; genes with zero variance in "
               "truth or prediction excluded (counted in genes_zero_variance)",
        "MSE / MAE": "over all spot × gene entries",
        "RVD": "mean over genes of (var_pred − var_true)² / var_true², population variances "
               "across spots; genes with zero true variance skipped",
        **PROB_PROTOCOL,
        "samples": "Stem: diffusion samples; knn: the k neighbours' profiles (k = the samples per "
                   "spot); ridge+ctx2+gauss/mvn/boot: the ridge+ctx2 mean plus noise from cross-fitted "
                   "training residuals (independent per gene / full Ledoit–Wolf covariance / whole "
                   "residual vectors), as many draws per spot as the predictions have",
        "ARI / NMI": "Leiden (PCA 30, 15-NN, resolution bisected to the number of label classes) "
                     "vs the pathologist labels, 'undetermined' left out" if labels is not None
                     else "not computed: the section has no pathologist labels",
        "baselines trained on": ", ".join(trained_on),
        "baseline inputs": "view 0 embeddings (+ctx: with the ring-1 neighbour mean appended) "
                           "standardised with training statistics, constant dimensions zeroed, "
                           "clipped to ±10; targets "
                           f"{UNITS}",
        "encoders": "+".join(e["encoder"] for e in ds.manifest["encoders"]),
        "prepared dataset": str(ds.root),
    }
    for m in stem:
        proto[f"{m.name} sampling"] = (f"{m.info.get('num_samples')} samples per spot, sampler "
                                       f"{m.info.get('sampler')}, summary {m.info.get('summary')}, "
                                       f"seed {m.info.get('seed')}, checkpoint step {m.info.get('step')}")
    return proto


def _defined(row: dict, missing):
    """``row`` with undefined (NaN) figures written as ``missing`` (null in JSON, an empty CSV cell)."""
    return {k: missing if isinstance(v, float) and np.isnan(v) else v for k, v in row.items()}


def _write_csv(path: Path, rows: list[dict]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow(r)
