"""The benchmark figures the README and the user guide quote, written from the committed results.

Each block sits between ``<!-- figures:NAME -->`` and ``<!-- /figures -->`` in a page of
:data:`PAGES` and is rewritten whole from ``benchmarks/results/accuracy_loo.json``,
``sample_budget.json``, ``shift_score.json``, ``calibration_cost.json`` and ``completion.json``, so a
rerun of a benchmark cannot leave a stale number behind: ``--check`` (run by the test suite)
fails when a block differs from what the results files give.

Usage (repository root): ``.venv/bin/python benchmarks/doc_figures.py [--check]``
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FOLDS = ["C2", "C3", "C4", "C5", "C6", "A1"]
#: the sample_budget row that is `stem train`'s defaults (regime @ budget), and the same training
#: with continuous draws (the neighbour targets' row, before the draws moved onto the count lattice)
SHIPPED = "validated + neighbour targets 16 + count lattice @ tiny 600×32"
NEIGHBOUR = "validated + neighbour targets 16 @ tiny 600×32"
#: the accuracy table: label, source (loo: accuracy_loo.json; budget: sample_budget.json), row
ROWS = [(f"Stem `default` as `stem train` ships it (`{SHIPPED}`)", "budget", SHIPPED),
        ("Stem `default` as it was (no validation section, no neighbour targets)", "loo", "stem:default"),
        ("Stem `paper`", "loo", "stem:paper"),
        ("`ridge+ctx2` + Gaussian, full covariance", "loo", "ridge+ctx2+mvn"),
        ("`knn+ctx` (20 neighbours as samples)", "loo", "knn+ctx"),
        ("`knn`", "loo", "knn")]
PAGES = [ROOT / "README.md", ROOT / "docs" / "guide" / "train.md", ROOT / "docs" / "guide" / "predict.md",
         ROOT / "docs" / "guide" / "complete.md", ROOT / "docs" / "guide" / "slides.md",
         ROOT / "benchmarks" / "README.md"]
LONG = "validated + neighbour targets 16 @ tiny 2400×32"


def load() -> dict[str, dict]:
    """source → row → fold → log2 metrics (and the results files' own summaries)."""
    loo = json.loads((RESULTS / "accuracy_loo.json").read_text())["folds"]
    budget = json.loads((RESULTS / "sample_budget.json").read_text())
    completion = json.loads((RESULTS / "completion.json").read_text())
    return {"loo": {row: {f: loo[f][row]["log2"] for f in FOLDS if row in loo.get(f, {})}
                    for row in {r for f in loo.values() for r in f}},
            "budget": {row: dict(folds) for row, folds in budget["folds"].items()},
            "budget_paired": budget["vs_reference"], "budget_vs_baselines": budget["vs_baselines"],
            "shift": json.loads((RESULTS / "shift_score.json").read_text()),
            "calibration": json.loads((RESULTS / "calibration_cost.json").read_text()),
            "intervals": json.loads((RESULTS / "shift_intervals.json").read_text())["folds"],
            "slide": json.loads((RESULTS / "slide_throughput.json").read_text()),
            "completion": {r["variant"]: r for r in completion["variants"]},
            "joint": json.loads((RESULTS / "joint_sampling.json").read_text())["folds"],
            "joint_cost": json.loads((RESULTS / "joint_sampling_cost.json").read_text()),
            "strengths": json.loads((RESULTS / "field_strengths.json").read_text())["folds"],
            "downstream": json.loads((RESULTS / "completion_downstream.json").read_text())["summary"],
            "levers": json.loads((RESULTS / "spread_levers.json").read_text()),
            "lattice": json.loads((RESULTS / "count_lattice.json").read_text()),
            "completion_k": completion["meta"]["K"]}


def _mean(rows: dict[str, dict], key: str, folds=FOLDS) -> float:
    return float(np.mean([rows[f][key] for f in folds]))


def _int(v: float) -> str:
    return f"{v:,.0f}".replace(",", " ")


COLS = ("PCC-50", "MSE", "CRPS", "energy", "variogram", "coverage50", "coverage80", "coverage95")


def _cov(m: dict, rank: bool = False) -> str:
    keys = [f"{'rank_' if rank else ''}coverage{lv}" for lv in (50, 80, 95)]
    return " / ".join(f"{m[k]:.2f}" for k in keys) if all(k in m and np.isfinite(m[k]) for k in keys) else "–"


RANK = tuple(f"rank_coverage{lv}" for lv in (50, 80, 95))


def _knn_rank(data) -> dict[str, dict]:
    """knn+ctx's rank coverage per fold (scored in spread_levers' run, the same draws as accuracy_loo's)."""
    return {f: r["variants"].get("knn+ctx", {}) for f, r in data["levers"]["folds"].items()}


def accuracy_table(data) -> str:
    lines = ["| method | PCC-50 | MSE | CRPS | energy | variogram | cov 50 / 80 / 95 | rank cov 50 / 80 / 95 |",
             "|---|---|---|---|---|---|---|---|"]
    extra = {"knn+ctx": _knn_rank(data)}

    def row_mean(src: str, row: str, k: str) -> float:
        rows = {f: {**data[src][row][f], **extra.get(row, {}).get(f, {})} for f in FOLDS}
        return _mean(rows, k) if all(k in r for r in rows.values()) else float("nan")
    means = {label: {k: row_mean(src, row, k) for k in (*COLS, *RANK)} for label, src, row in ROWS}
    best = {k: min(m[k] for m in means.values()) for k in ("CRPS", "energy", "variogram")}
    for label, m in means.items():
        cells = {"CRPS": f"{m['CRPS']:.3f}", "energy": f"{m['energy']:.2f}", "variogram": _int(m["variogram"])}
        cells = {k: f"**{v}**" if m[k] == best[k] else v for k, v in cells.items()}
        lines.append(f"| {label} | {m['PCC-50']:.3f} | {m['MSE']:.3f} | {cells['CRPS']} | {cells['energy']} | "
                     f"{cells['variogram']} | {_cov(m)} | {_cov(m, rank=True)} |")
    return "\n".join(lines)


def fold_table(data) -> str:
    stem = data["budget"][SHIPPED]
    knn, ridge = data["loo"]["knn+ctx"], data["loo"]["ridge+ctx2+mvn"]
    lines = ["| held-out section | Stem PCC-50 | Stem MSE | Stem CRPS | `knn+ctx` CRPS "
             "| `ridge+ctx2`+Gaussian CRPS | Stem cov 50 / 80 / 95 | Stem rank cov 50 / 80 / 95 |",
             "|---|---|---|---|---|---|---|---|"]
    for f in FOLDS:
        s, name = stem[f], f + (" (patient A, 3.2 µm/px)" if f == "A1" else "")
        lines.append(f"| {name} | {s['PCC-50']:.3f} | {s['MSE']:.3f} | {s['CRPS']:.3f} | {knn[f]['CRPS']:.3f} | "
                     f"{ridge[f]['CRPS']:.3f} | {_cov(s)} | {_cov(s, rank=True)} |")
    c = [stem[f]["PCC-50"] for f in FOLDS if f != "A1"]
    a1 = stem["A1"]
    lines += ["", f"On patient C's five sections Stem's PCC-50 is {min(c):.2f}–{max(c):.2f}; on the other "
              f"patient's A1 it is {a1['PCC-50']:.2f} (MSE {a1['MSE']:.2f}) and its 50 / 80 / 95 % intervals "
              f"hold {_cov(a1, rank=True)} of the truth (rank coverage): the six-fold means above average a new "
              "patient in with five sections of the training patient."]
    return "\n".join(lines)


def decay_text(data) -> str:
    """The train guide's sentences on how the training as it was decayed with compute."""
    small, ref = "validated @ small 2000×256", data["budget"]["before @ tiny 600×32"]
    p = data["budget_paired"][small]
    best = {r["validation"]["best_step"] for r in data["budget"][small].values() if r.get("validation")}
    first = "its first validation (step " + ", ".join(map(str, sorted(best))) + ")" if len(best) == 1 else \
        "at steps " + ", ".join(map(str, sorted(best)))
    return (f"The validation curve shows it within a run: at `small` 2000 × 256 every fold's best state was "
            f"{first}. Keeping that state recovered CRPS and the energy score within the sd over folds of the CPU "
            f"budget's, not the variogram score ({p['variogram']['mean']:+.0f} ± {p['variogram']['sd']:.0f}) or "
            f"the co-variation (`corr_err_sample` {_mean(data['budget'][small], 'corr_err_sample'):.3f} against "
            f"{_mean(ref, 'corr_err_sample'):.3f}); at `tiny` 2400 × 32 the co-variation error still grew "
            f"({_mean(data['budget']['validated @ tiny 2400×32'], 'corr_err_sample'):.3f}).")


def neighbour_text(data) -> str:
    """The paragraph on neighbour targets (train guide and README)."""
    p, base = data["budget_paired"][NEIGHBOUR], data["budget_vs_baselines"][NEIGHBOUR]["knn+ctx"]
    ref = data["budget"]["before @ tiny 600×32"]
    shipped = _mean(data["budget"][NEIGHBOUR], "corr_err_sample")
    longer = []
    for budget, times in (("2400×32", "four times the steps"), ("4800×32", "eight times the steps"),
                          ("600×256", "eight times the batch")):
        rows = data["budget"].get(f"validated + neighbour targets 16 @ tiny {budget}")
        if rows and len(rows) == len(FOLDS):
            m = {k: _mean(rows, k) for k in ("CRPS", "variogram", "corr_err_sample")}
            longer.append(f"{times} ({budget.replace('×', ' × ')}) CRPS {m['CRPS']:.3f}, variogram "
                          f"{_int(m['variogram'])}, `corr_err_sample` {m['corr_err_sample']:.3f}")
    return (f"Paired against the earlier training over six folds: CRPS {p['CRPS']['mean']:+.3f} ± "
            f"{p['CRPS']['sd']:.3f} and energy {p['energy']['mean']:+.2f} ± {p['energy']['sd']:.2f} "
            "(within the sd), "
            f"variogram {p['variogram']['mean']:+.0f} ± {p['variogram']['sd']:.0f} (lower in "
            f"{p['variogram']['wins']}/6 folds), `corr_err_sample` {shipped:.3f} against "
            f"{_mean(ref, 'corr_err_sample'):.3f} (lower in {p['corr_err_sample']['wins']}/6). With more steps "
            f"the scores stay where they are (600 × 32: CRPS {_mean(data['budget'][NEIGHBOUR], 'CRPS'):.3f}, "
            f"variogram {_int(_mean(data['budget'][NEIGHBOUR], 'variogram'))}; " + "; ".join(longer)
            + "). Against `knn+ctx` "
            f"these samples win the energy score in {base['energy']['wins']}/6 folds and CRPS in "
            f"{base['CRPS']['wins']}/6, and lose the variogram score in {6 - base['variogram']['wins']}/6. "
            + lattice_text(data))


def lattice_text(data) -> str:
    """The sentence on the count lattice the default recipe adds to the neighbour targets' training."""
    base = data["budget_vs_baselines"][SHIPPED]["knn+ctx"]

    def cells(budget: str) -> str | None:
        a = data["budget"].get(f"validated + neighbour targets 16 + count lattice @ tiny {budget}", {})
        b = data["budget"].get(f"validated + neighbour targets 16 @ tiny {budget}", {})
        if not all(f in a and f in b for f in FOLDS):
            return None
        d = {k: np.array([a[f][k] - b[f][k] for f in FOLDS]) for k in ("CRPS", "energy", "variogram")}
        return ", ".join(f"{k} {x.mean():+.{4 if k == 'CRPS' else 3 if k == 'energy' else 0}f} ± "
                         f"{x.std(ddof=1):.{4 if k == 'CRPS' else 3 if k == 'energy' else 0}f} (lower in "
                         f"{int((x < 0).sum())}/6)" for k, x in d.items())
    more = cells("600×256")
    return (f"The shipped default also moves each draw onto the count lattice (`count_lattice`; same network): "
            f"{cells('600×32')}" + (f"; at 600 × 256 {more}" if more else "")
            + f"; against `knn+ctx` CRPS lower in {base['CRPS']['wins']}/6, energy in "
            f"{base['energy']['wins']}/6, variogram in {base['variogram']['wins']}/6.")


def shift_text(data) -> str:
    """The predict guide's figures of the shift score."""
    s = data["shift"]
    c = [r["flagged"] for f, r in s["folds"].items() if f != "A1"]
    return (f"Measured on HER2ST ({{doc}}`/benchmarks/results/shift_score`): trained on patient C's sections, "
            f"the score tells the other patient's section A1 (3.2 µm/px) from C6 with AUROC "
            f"{s['trained_on_patient_C']['auroc_A1_vs_C6']:.3f}; left out in turn, A1's median spot scores "
            f"{s['folds']['A1']['median']:.3f} and the section is "
            f"{'flagged' if s['folds']['A1']['section_flagged'] else 'not flagged'}, no patient-C section is "
            f"({100 * min(c):.0f}–{100 * max(c):.0f} % of their spots are above {s['thresholds']['spot']}).")


def widening_text(data) -> str:
    """The predict guide's figures of intervals that widen with shift, and of depth."""
    r = data["intervals"]
    a, c = r["A1"], [f for f in r if f != "A1"]

    def cov(x: dict) -> str:
        return " / ".join(f"{x[f'coverage{v}']:.2f}" for v in (50, 80, 95))

    dcrps = [r[f]["widened"]["log2"]["CRPS"] - r[f]["plain"]["log2"]["CRPS"] for f in c]
    c80 = [r[f][m]["log2"]["coverage80"] for f in c for m in ("widened",)]
    thin = [r[f]["widened"]["thinned_log2"]["coverage80"] for f in r]
    thin_cp = [r[f]["widened"]["thinned_cp10k"]["coverage80"] for f in r]
    auto = [r[f]["depth_thinned"]["log2"] for f in r]
    return (f"Measured on HER2ST leave-one-section-out ({{doc}}`/benchmarks/results/shift_intervals`, "
            f"the shipped training): on the other patient's section A1 the widening moves the 50 / 80 / 95 % "
            f"intervals' coverage from {cov(a['plain']['log2'])} to {cov(a['widened']['log2'])} (CRPS "
            f"{a['plain']['log2']['CRPS']:.3f} → {a['widened']['log2']['CRPS']:.3f}): better, still short of "
            f"nominal, because the training sections (one patient) never showed residuals that far out. On "
            f"patient C's sections coverage80 is {min(c80):.2f}–{max(c80):.2f} with it, CRPS "
            f"{min(dcrps):+.3f} to {max(dcrps):+.3f} against without. A section thinned to 1/10 of its "
            f"counts and predicted at depth 1 gets coverage80 {min(thin):.2f}–{max(thin):.2f} "
            f"({min(thin_cp):.2f}–{max(thin_cp):.2f} in log2(1 + CP10k): normalising does not rescue it); "
            f"with `--depth auto`, CRPS {min(x['CRPS'] for x in auto):.2f}–{max(x['CRPS'] for x in auto):.2f} "
            f"against {min(r[f]['widened']['thinned_log2']['CRPS'] for f in r):.2f}–"
            f"{max(r[f]['widened']['thinned_log2']['CRPS'] for f in r):.2f} and coverage80 "
            f"{min(x['coverage80'] for x in auto):.2f}–{max(x['coverage80'] for x in auto):.2f}: too wide "
            "rather than confidently wrong (many thinned counts are 0, inside every interval).")


def joint_text(data) -> str:
    """The predict guide's figures of whole-section draws."""
    r = data["joint"]
    j, i, c, k = ({f: r[f]["methods"][m] for f in r}
                  for m in ("stem joint", "stem independent", "stem joint (residual correlation)", "knn+ctx"))

    def ms(rows: dict, key: str) -> str:
        v = [x[key] for x in rows.values()]
        return f"{np.mean(v):.3f} ± {np.std(v, ddof=1):.3f}"

    def rings(rows: dict) -> str:
        return " / ".join(f"{np.mean([x['svgm_ratio'][n] for x in rows.values()]):.2f}" for n in range(3))

    lat = {f: x["variants"]["count lattice"] for f, x in data["levers"]["folds"].items()}
    lat_beats = sum(lat[f]["moran_err_sample"] <= k[f]["moran_err_sample"] for f in lat)
    cost = data["joint_cost"]
    beats = sum(j[f]["moran_err_sample"] <= k[f]["moran_err_sample"] for f in r)
    within = sum(all(abs(v - 1) <= 0.2 for v in j[f]["svgm_ratio"]) for f in r)
    width = [x["width_ratio"] for f, x in j.items() if f != "A1"]
    sv, mi, ca, orc = ({f: x["variants"][v] for f, x in data["strengths"].items()}
                       for v in ("variogram", "Moran's I", "Moran's I carried", "oracle Moran's I (test section)"))
    gap = np.array([ca[f]["moran_err_sample"] - mi[f]["moran_err_sample"] for f in ca])
    st_beats = sum(x["moran_err_sample"] <= k[f]["moran_err_sample"] for f, x in mi.items())
    or_beats = sum(x["moran_err_sample"] <= k[f]["moran_err_sample"] for f, x in orc.items())
    return (f"Measured on HER2ST leave-one-section-out ({{doc}}`/benchmarks/results/joint_sampling`, the shipped "
            f"training, {len(r)} folds): one draw's spatial variogram is {rings(j)} × the truth's at 1 / 2 / 3 "
            f"pitches (within 20 % at every distance in {within}/{len(r)} folds), against {rings(i)} drawn spot "
            f"by spot and {rings(k)} for `knn+ctx`; its Moran's I error is {ms(j, 'moran_err_sample')} against "
            f"{ms(i, 'moran_err_sample')} spot by spot and {ms(k, 'moran_err_sample')} for `knn+ctx` (at most "
            f"knn+ctx's in {beats}/{len(r)} folds). On the count lattice (the default since these were measured; "
            f"{{doc}}`/benchmarks/results/spread_levers`, the same networks): {rings(lat)} × and "
            f"{ms(lat, 'moran_err_sample')} (at most knn+ctx's in {lat_beats}/{len(lat)} folds; the rounding adds "
            "spot-by-spot noise). Each gene's strength is the mean of two fits on the "
            f"validation section ({{doc}}`/benchmarks/results/field_strengths`, the same networks): matched to "
            f"the draw's variogram alone, a variogram {rings(sv)} × the truth's and a Moran's I error of "
            f"{ms(sv, 'moran_err_sample')}; matched to its Moran's I alone, {rings(mi)} × and "
            f"{ms(mi, 'moran_err_sample')} (at most knn+ctx's in {st_beats}/{len(mi)} folds), and "
            f"{ms(ca, 'moran_err_sample')} when the validation section's Moran's I rather than the strength is "
            f"carried and the strength solved on the section drawn ({gap.mean():+.3f} ± {gap.std(ddof=1):.3f} "
            "against matching it there); fitted to the "
            f"residuals' own correlation, {rings(c)} × and {ms(c, 'moran_err_sample')} (on patient C's "
            f"sections the calibrated samples are {min(width):.2f}–{max(width):.2f} times as wide, in variance, "
            f"as the truth lies from the point); matched to Moran's I on the held-out section itself (a bound, "
            f"not a variant) {ms(orc, 'moran_err_sample')} "
            f"({or_beats}/{len(orc)})"
            + (": what is missing is how well a gene's spatial structure on one section carries to another"
               if or_beats > len(orc) // 2 else "") + ". Per spot nothing changes: CRPS "
            f"{ms(j, 'CRPS')} against "
            f"{ms(i, 'CRPS')}, coverage80 {ms(j, 'coverage80')} against {ms(i, 'coverage80')}. Cost: "
            f"{cost['median']['joint']:.1f} s against {cost['median']['independent']:.1f} s to predict "
            f"{cost['fold']} ({cost['spots']} spots; runs {min(min(v) for v in cost['seconds'].values()):.1f}–"
            f"{max(max(v) for v in cost['seconds'].values()):.1f} s, "
            "{doc}`/benchmarks/results/joint_sampling_cost`): within the runs' own spread; the field adds one "
            "small matrix product per row and sample.")


def downstream_text(data) -> str:
    """The complete guide's figures of training on completed counts."""
    d = data["downstream"]
    methods = sorted({k.split("|")[0] for k in d})

    def delta(unit: str, key: str) -> list[float]:
        return [d[f"{m}|completed"][unit][key][0] - d[f"{m}|raw"][unit][key][0] for m in methods]

    p, mse, cp = delta("log2", "PCC-50"), delta("log2", "MSE"), delta("cp10k", "PCC-50")
    return (f"log2 PCC-50 Δ between {min(p):+.3f} and {max(p):+.3f} (within the fold sd), MSE {min(mse):+.2f} to "
            f"{max(mse):+.2f}, and in log2(1 + CP10k) PCC-50 {min(cp):+.3f} to {max(cp):+.3f}")


def slide_rate(data) -> str:
    """The slides guide's embedding rate of the whole-slide benchmark."""
    s = data["slide"]
    return f"{s['embed_spots_per_second']:.0f} spots/s on {s['machine']}, {s['threads']} threads"


def coverage_text(data) -> str:
    """The predict guide's sentence on how well the shipped intervals hold on new sections."""
    stem = data["budget"][SHIPPED]
    c = [stem[f]["rank_coverage80"] for f in FOLDS if f != "A1"]
    return (f"On HER2ST leave-one-section-out the shipped training's 80 % intervals hold "
            f"{_mean(stem, 'rank_coverage80'):.2f} of the truth on average (rank coverage: what a calibrated "
            f"ensemble of any size scores at its level), {min(c):.2f}–{max(c):.2f} on patient C but "
            f"{stem['A1']['rank_coverage80']:.2f} on the other patient's section A1 "
            "({doc}`/benchmarks/results/sample_budget`).")


def spread_options_text(data) -> str:
    """The train guide's figures of the spread options that are not the default."""
    lev, lat = data["levers"], data["lattice"]
    shipped = "widen beyond the median (shipped)"

    def d(paired: dict, key: str, fmt: str) -> str:
        x = paired[key]
        return f"{x['mean']:+{fmt}} ± {x['sd']:{fmt}} (lower in {x['lower']}/6)"

    def cov(variant: str, rank: bool = False) -> str:
        c = [f for f in FOLDS if f != "A1"]
        return " / ".join(f"{min(lev['folds'][f]['variants'][variant][k] for f in c):.2f}–"
                          f"{max(lev['folds'][f]['variants'][variant][k] for f in c):.2f}"
                          for k in (RANK if rank else ("coverage50", "coverage80", "coverage95")))

    three, common = lev["paired"][f"three levels (50/80/95 %) vs {shipped}"], \
        lev["paired"][f"common shift matched vs {shipped}"]
    knn = lev["paired"]["three levels (50/80/95 %) vs knn+ctx"]
    grid = lat["paired"]["stem log vs stem raw"]
    grid_knn = lat["paired"]["stem log vs knn+ctx raw"]
    lam = [lev["folds"][f]["variants"]["common shift matched"]["common"] for f in FOLDS]
    both = lev["paired"][f"three levels + count lattice vs {shipped}"]
    both_knn = lev["paired"]["three levels + count lattice vs knn+ctx"]
    lat_rank = lev["paired"][f"count lattice vs {shipped}"]
    rank = lev["paired"][f"rank coverage (80 %) vs {shipped}"]
    rank_knn = lev["paired"]["rank coverage (80 %) vs knn+ctx"]
    return (f"Measured on the shipped networks, recalibrated on the same validation sections, six folds "
            f"({{doc}}`/benchmarks/results/spread_levers`): `spread_criterion=levels` against the shipped "
            f"one factor: CRPS {d(three, 'CRPS', '.4f')}, energy {d(three, 'energy', '.3f')}, variogram "
            f"{d(three, 'variogram', '.0f')}; on patient C's sections the 50 / 80 / 95 % intervals hold "
            f"{cov('three levels (50/80/95 %)')} against {cov(shipped)} (empirical quantiles); against "
            f"`knn+ctx` CRPS lower in "
            f"{knn['CRPS']['lower']}/6 and variogram in {knn['variogram']['lower']}/6. `spread_common`: "
            f"λ {min(lam):+.2f} to {max(lam):+.2f} (the draws already move together about as much as the "
            f"residuals), variogram {d(common, 'variogram', '.0f')}. `count_lattice` "
            f"({{doc}}`/benchmarks/results/count_lattice`): CRPS {d(grid, 'CRPS', '.4f')}, energy "
            f"{d(grid, 'energy', '.3f')}, variogram {d(grid, 'variogram', '.0f')}; against `knn+ctx` CRPS lower "
            f"in {grid_knn['CRPS']['lower']}/6; its empirical-quantile intervals hold more (coverage50 "
            f"{grid['coverage50']['mean']:+.2f}) because a truth equal to a draw counts as inside, its rank "
            f"coverage {lat_rank['rank_coverage50']['mean']:+.3f} / {lat_rank['rank_coverage80']['mean']:+.3f} / "
            f"{lat_rank['rank_coverage95']['mean']:+.3f}: it is in the default. With three "
            f"levels as well: CRPS {d(both, 'CRPS', '.4f')}, energy {d(both, 'energy', '.3f')}, variogram "
            f"{d(both, 'variogram', '.0f')}; against `knn+ctx` CRPS lower in {both_knn['CRPS']['lower']}/6, "
            f"energy in {both_knn['energy']['lower']}/6, variogram in {both_knn['variogram']['lower']}/6. "
            f"`spread_criterion=rank` (the factor narrows to about 1.0): CRPS {d(rank, 'CRPS', '.4f')}, energy "
            f"{d(rank, 'energy', '.3f')}, variogram {d(rank, 'variogram', '.0f')}; rank coverage on patient C "
            f"{cov('rank coverage (80 %)', True)} against {cov(shipped, True)} (shipped); against `knn+ctx` "
            f"CRPS lower in {rank_knn['CRPS']['lower']}/6, energy in {rank_knn['energy']['lower']}/6, variogram "
            f"in {rank_knn['variogram']['lower']}/6.")


def index_budget(data) -> str:
    """The benchmarks index's headline cell for sample_budget."""
    p = data["budget_paired"][SHIPPED]
    longer = {k: _mean(data["budget"][LONG], k) for k in ("CRPS", "corr_err_sample")}
    return (f"against the CPU demo's former training (`before @ tiny 600×32`), paired over 6 folds: `{SHIPPED}` "
            f"(shipped) CRPS {p['CRPS']['mean']:+.4f} ± {p['CRPS']['sd']:.4f}, variogram "
            f"{p['variogram']['mean']:+.0f} ± {p['variogram']['sd']:.0f} ({p['variogram']['wins']}/6 lower), "
            f"corr_err_sample {_mean(data['budget'][SHIPPED], 'corr_err_sample'):.3f} vs "
            f"{_mean(data['budget']['before @ tiny 600×32'], 'corr_err_sample'):.3f}; at 2400 × 32 CRPS "
            f"{longer['CRPS']:.3f}, corr_err_sample {longer['corr_err_sample']:.3f} (without neighbour targets "
            f"{_mean(data['budget']['validated @ tiny 2400×32'], 'corr_err_sample'):.3f})")


def index_shift(data) -> str:
    s = data["shift"]
    return (f"trained on C2–C5: A1 vs C6 spot AUROC {s['trained_on_patient_C']['auroc_A1_vs_C6']:.3f}; "
            f"left out in turn, A1's median score {s['folds']['A1']['median']:.3f} (flagged), the C sections' "
            f"{min(r['median'] for f, r in s['folds'].items() if f != 'A1'):.2f}–"
            f"{max(r['median'] for f, r in s['folds'].items() if f != 'A1'):.2f} (none flagged)")


def index_calibration(data) -> str:
    c = data["calibration"]
    row = {(r["spots"], r["samples"]): r for r in c["rows"]}
    r128, r10 = row[(128, 20)], row[(max(r["spots"] for r in c["rows"]), 10)]
    return (f"C6, reference factor {c['reference_factor']:.2f} (all {c['spots']} spots × 20 samples): 128 spots "
            f"× 20 samples {r128['factor_mean']:.3f} ± {r128['factor_sd']:.3f}; 10 samples bias it to "
            f"{r10['factor_mean']:.2f}")


#: LGDiST's shipped variant and its draws' row in completion.json
COMPLETION, DRAWS = "default", "lgdist draws centred on stage 1 × s"
SAMPLED = ("stage1+gaussian", "median+bootstrap", "knn draws")


def _pair(sc: dict, section: str, row: str, key: str, fmt: str = ".3f") -> str:
    """One figure under dropout / spared masking on patient H."""
    return " / ".join(format(sc[f"{m}|H"][section][row][key], fmt) for m in ("dropout", "spared"))


def completion_text(data) -> str:
    """The completion guide's measured paragraph: the shipped point and draws on patient H."""
    v = data["completion"][COMPLETION]
    sc, pts = v["scores"], "points"
    ratio = {f"{m}|{sp}": sc[f"{m}|{sp}"][pts]["lgdist stage 2 posterior mean"]["MSE"]
             / sc[f"{m}|{sp}"][pts]["lgdist stage 1"]["MSE"] - 1 for m in ("dropout", "spared") for sp in "GH"}
    def beaten(b: str, key: str) -> int:
        return sum(sc[k]["draws"][DRAWS][key] < sc[k]["draws"][b][key] for k in sc)

    others = min(beaten(b, key) for b in SAMPLED[1:] for key in ("CRPS", "energy"))
    def d(method: str, key: str, fmt: str = ".3f") -> str:
        return _pair(sc, "draws", method, key, fmt)

    def pt(method: str) -> str:
        return _pair(sc, pts, method, "MSE")

    n, gauss = len(sc), "stage1+gaussian"
    cov = ", ".join(d(DRAWS, f"coverage{c}", ".2f") for c in (50, 80, 95))
    return (f"Fit of both stages {v['fit_seconds']:.0f} s, scoring on G and H under both maskings with "
            f"{data['completion_k']} draws {v['score_seconds'] / 60:.0f} min. "
            f"On the test patient H the shipped point (stage 1) has masked MSE {pt('lgdist stage 1')} "
            f"under `dropout` / `spared` masking, against the adaptive median's {pt('adaptive_median')} "
            f"and stage 2's posterior mean {pt('lgdist stage 2 posterior mean')} (stage 2 is "
            f"{100 * ratio['dropout|H']:+.0f} % / {100 * ratio['spared|H']:+.0f} % against stage 1 on H, "
            f"{100 * ratio['dropout|G']:+.0f} % / {100 * ratio['spared|G']:+.0f} % on G). The shipped draws "
            f"({data['completion_k']} per entry, spread {v['spreads']['stage1']:.2f} fitted on G) on H's "
            f"hidden entries: CRPS {d(DRAWS, 'CRPS')}, energy score over each spot's hidden entries "
            f"{d(DRAWS, 'energy')}, coverage of the 50 / 80 / 95 % intervals {cov}. Sampled baselines with "
            f"as many draws: stage 1 + Gaussian noise of its validation residual variance CRPS "
            f"{d(gauss, 'CRPS')} (energy {d(gauss, 'energy')}), adaptive median + residual bootstrap "
            f"{d('median+bootstrap', 'CRPS')}, the 20 nearest spots in expression space "
            f"{d('knn draws', 'CRPS')}. Over the {n} cases (G and H, both maskings) the draws "
            f"beat stage 1 + Gaussian noise on CRPS in {beaten(gauss, 'CRPS')}/{n} and on the energy "
            f"score in {beaten(gauss, 'energy')}/{n}, the other two baselines on both in {others}/{n}; "
            f"the raw draws are far too narrow (coverage80 "
            f"{d('lgdist draws centred on stage 1', 'coverage80', '.2f')}) until the fitted spread widens them.")


BLOCKS = {"complete-measured": completion_text, "readme-accuracy": accuracy_table, "train-decay": decay_text,
          "index-budget": index_budget, "index-shift": index_shift, "index-calibration": index_calibration,
          "predict-coverage": coverage_text, "readme-folds": fold_table, "train-neighbour": neighbour_text,
          "predict-shift": shift_text, "predict-widening": widening_text,
          "slides-rate": slide_rate, "predict-joint": joint_text, "complete-downstream": downstream_text,
          "train-spread": spread_options_text}
#: a block on lines of its own, or inline (a table cell of the benchmarks index)
BLOCK = re.compile(r"(<!-- figures:([a-z-]+) -->)(\n?)(.*?)(\n?)(<!-- /figures -->)", re.S)


def render(text: str, data) -> str:
    return BLOCK.sub(lambda m: m.group(1) + m.group(3) + BLOCKS[m.group(2)](data) + m.group(3) + m.group(6),
                     text)


def stale(text: str, data) -> list[str]:
    """Names of the blocks in ``text`` that differ from what the results give."""
    return [m.group(2) for m in BLOCK.finditer(text) if m.group(4) != BLOCKS[m.group(2)](data)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="fail when a block is stale; write nothing")
    args = p.parse_args()
    data, bad = load(), []
    for page in PAGES:
        text = page.read_text()
        if args.check:
            bad += [f"{page.name}: {b}" for b in stale(text, data)]
        elif render(text, data) != text:
            page.write_text(render(text, data))
            print(f"rewrote {page.relative_to(ROOT)}")
    if bad:
        sys.exit("stale figure blocks (run benchmarks/doc_figures.py): " + ", ".join(bad))


if __name__ == "__main__":
    main()
