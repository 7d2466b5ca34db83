"""Draws on the count lattice: does putting each sample on a value a measured spot can take
(log2(1 + k), k = 0, 1, 2, …) improve the proper scores?

The truth is log2(1 + count) of integer counts; Stem's draws (and the ridge baselines') are
continuous, so for a sparse gene they spread over values no spot can show, and a pair of genes
both 0 in the truth is scored against continuous differences (the variogram score). knn's draws
are measured profiles, on the lattice by construction. Each continuous draw x is moved to one of
its two neighbouring lattice values lo ≤ x < hi with P(hi) = (x − lo) / (hi − lo) (``log``: the
draw's mean in log2(1 + count) is kept, so is the point in expectation) or with P(hi) = the count's
fractional part (``count``: the mean count is kept). The spread is calibrated as training ships it
(on continuous draws): this measures the lattice step alone.

Per fold: the saved network of ``joint_sampling.py`` (the shipped training), the held-out section
predicted with 20 samples (dpm++:10, whole-section draws); ridge+ctx2+gauss and knn+ctx on the
same fold; each raw and on the lattice. Scores as ``joint_sampling.structure``.

Usage (repository root, after ``joint_sampling.py run``):
  .venv/bin/python benchmarks/count_lattice.py run --workers 2
  .venv/bin/python benchmarks/count_lattice.py summary   # results/count_lattice.{json,md}
"""

from __future__ import annotations

from pathlib import Path

from report import fold_commands, read_folds, run_folds, write_fold

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("stem", "ridge+ctx2+gauss", "knn+ctx")
WAYS = ("raw", "log", "count")
KEYS = ("CRPS", "energy", "variogram", "coverage50", "coverage80", "coverage95", "moran_err_sample",
        "svgm_err_sample")


def run_fold(models: str, preps: str, work: str, fold: str) -> dict:
    import sys

    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from joint_sampling import saved_fold, structure

    from stem_st.data.units import to_count_lattice
    from stem_st.defaults import DEFAULT_NUM_SAMPLES
    from stem_st.evaluation.baselines import make_baseline
    from stem_st.stem import PredictSettings

    f = saved_fold(models, preps, fold)
    ds, model, truth, emb, xy, graph = f.ds, f.model, f.truth, f.emb, f.xy, f.graph
    draws = {"stem": model.predict(emb, xy, PredictSettings(seed=0, device="cpu"))[::2]}
    train = [s for s in ds.sections if s != fold]
    for name in METHODS[1:]:
        mean, _, samples = make_baseline(name, DEFAULT_NUM_SAMPLES, 0).fit(ds, train).predict(emb, xy)
        draws[name] = (mean, samples)
    out = {"fold": fold, "methods": {}}
    for name, (point, samples) in draws.items():
        for way in WAYS:
            s = samples if way == "raw" else to_count_lattice(samples, way, seed=1)
            out["methods"][f"{name} {way}"] = {**structure(truth, point, s, xy, graph),
                                               "on_lattice": float(np.mean(s == to_count_lattice(s, "log", 0)))}
    write_fold(work, fold, out)
    print(f"{fold}: done", flush=True)
    return out


def cmd_run(args) -> None:
    run_folds(run_fold, args.work, args.folds, args.workers, args.models, args.preps, args.work)


def cmd_summary(args) -> None:
    import numpy as np
    from report import machine, write_results

    folds = read_folds(args.work)
    rows = {m: {f: r["methods"][m] for f, r in folds.items()} for m in next(iter(folds.values()))["methods"]}
    md = ["# Draws on the count lattice (`benchmarks/count_lattice.py`)", "",
          f"Machine: {machine()}, one thread per fold. HER2ST leave-one-section-out folds "
          f"({', '.join(folds)}), panel hmhvg:200, ImageNet EfficientNet-Lite0, 2 views, log2(1 + count); Stem: "
          "the shipped training of `joint_sampling.py` (saved networks), 20 samples, dpm++:10, whole-section "
          "draws; baselines 20 samples. `raw`: the draws as made; `log`: each draw moved to one of its two "
          "neighbouring values log2(1 + k) keeping its mean in log2(1 + count); `count`: keeping its mean "
          "count. The spread is calibrated on continuous draws (as shipped). Regenerate: "
          "`.venv/bin/python benchmarks/count_lattice.py run && … summary`.", "",
          "## Mean ± sd over folds", "", "| method | " + " | ".join(KEYS) + " | on lattice |",
          "|---|" + "---|" * (len(KEYS) + 1)]
    for m, per in rows.items():
        md.append(f"| {m} | " + " | ".join(
            f"{np.mean([x[k] for x in per.values()]):.3f} ± {np.std([x[k] for x in per.values()], ddof=1):.3f}"
            for k in KEYS) + f" | {np.mean([x['on_lattice'] for x in per.values()]):.2f} |")
    paired = {}
    for ref_of in (lambda m: m.rsplit(" ", 1)[0] + " raw", lambda m: "knn+ctx raw"):
        title = "the same method raw" if ref_of("stem log") == "stem raw" else "knn+ctx raw"
        md += ["", f"## Paired per fold: method − {title} (mean ± sd; folds where the method is lower)", "",
               "| method | " + " | ".join(KEYS[:7]) + " |",
               "|---|" + "---|" * 7]
        for m in rows:
            ref = ref_of(m)
            if m == ref:
                continue
            d = {k: np.array([rows[m][f][k] - rows[ref][f][k] for f in folds]) for k in KEYS[:7]}
            paired[f"{m} vs {ref}"] = {k: {"mean": float(x.mean()), "sd": float(x.std(ddof=1)),
                                           "lower": int((x < 0).sum())} for k, x in d.items()}
            md.append(f"| {m} | " + " | ".join(f"{x.mean():+.4f} ± {x.std(ddof=1):.4f} ({int((x < 0).sum())}/"
                                               f"{len(x)})" for x in d.values()) + " |")
    data = {"machine": machine(), "folds": folds, "paired": paired,
            "command": "python benchmarks/count_lattice.py run && python benchmarks/count_lattice.py summary"}
    write_results(args.out, data, "\n".join(md))


def main() -> None:
    def extra(run, summary):
        run.add_argument("--models", default=str(ROOT / "runs/joint_sampling/models"))

    fold_commands(__doc__, "count_lattice", cmd_run, cmd_summary, extra)


if __name__ == "__main__":
    main()
