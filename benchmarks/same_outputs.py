"""Do two versions of the package give the same outputs? A fixed-seed chain through the real CLI
(prepare → train → predict → predict-slide → complete fit → complete apply) on two HER2ST sections,
run once with each source tree; then every array of every output is compared.

Each version predicts from the *reference* version's run and completion model as well as training
its own, so a difference in training and a difference in prediction are told apart.

    python benchmarks/same_outputs.py --old /tmp/old/src --new src --work runs/same_outputs

``--own-caches`` gives each version its own embedding cache, for a change in how patches are embedded.

The old tree is e.g. ``git archive <commit> src | tar -x -C /tmp/old``. Writes
``benchmarks/results/same_outputs.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def stem(src: Path, *argv) -> None:
    env = {**os.environ, "PYTHONPATH": str(src.resolve()), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "stem_st.cli", *map(str, argv)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"{' '.join(cmd[2:])} failed:\n{res.stderr[-3000:]}")


def chain(src: Path, out: Path, data: Path, cache: Path, ref: Path | None) -> None:
    """The fixed-seed chain; with ``ref``, predict and apply also from the reference run/model."""
    out.mkdir(parents=True, exist_ok=True)
    prep, run, comp = out / "prep", out / "run", out / "comp"
    image = next((data / "data" / "ST-imgs" / "C" / "C3").glob("*.jpg"))
    if not prep.exists():
        stem(src, "prepare", "--data", data, "--sections", "C2,C3", "--holdout", "C3", "--genes", "hmhvg:50",
             "--views", "1", "--cache", cache, "--device", "cpu", "--out", prep)
    if not run.exists():
        stem(src, "train", prep, "--out", run, "--preset", "tiny", "--steps", "30", "--batch-size", "16",
             "--aug-ratio", "1", "--checkpoint-every", "15", "--seed", "0", "--device", "cpu")
    if not comp.exists():
        stem(src, "complete", "fit", "--data", data, "--train", "C2", "--val", "C3", "--out", comp,
             "--panel", "16", "--total", "64", "--ae-steps", "20", "--dit-steps", "20", "--batch-size", "16",
             "--checkpoint-every", "10", "--copies", "1", "--device", "cpu")
    mpp = ad.read_h5ad(prep / "sections" / "C3.h5ad").uns["stem"]["mpp"]  # the JPEG has no µm/px tag
    for tag, r, c in [("own", run, comp), *([("ref", ref / "run", ref / "comp")] if ref else [])]:
        stem(src, "predict", r, "--prep", prep, "--out", out / f"pred_{tag}.h5ad", "--num-samples", "4",
             "--sampler", "ddim:4", "--seed", "1", "--keep-samples", "--device", "cpu", "--overwrite")
        stem(src, "predict-slide", r, "--image", image, "--out", out / f"slide_{tag}.h5ad",
             "--num-samples", "2", "--sampler", "ddim:2", "--seed", "2", "--mpp", mpp, "--cache", cache,
             "--device", "cpu", "--overwrite")
        stem(src, "complete", "apply", c, "--sections", "C3", "--out", out / f"completed_{tag}",
             "--num-samples", "3", "--sampler", "ddim:5", "--seed", "3", "--keep-samples", "--device", "cpu",
             "--overwrite")


def arrays(path: Path) -> dict[str, np.ndarray]:
    """Every numeric array of an output: X, layers, obsm of an .h5ad; the array of a .npy."""
    if path.suffix == ".npy":
        return {"": np.load(path)}
    a = ad.read_h5ad(path)
    out = {"X": np.asarray(a.X.toarray() if hasattr(a.X, "toarray") else a.X)}
    out |= {f"layers/{k}": np.asarray(v) for k, v in a.layers.items()}
    out |= {f"obsm/{k}": np.asarray(v) for k, v in a.obsm.items()}
    return out


def compare(old: Path, new: Path) -> list[dict]:
    rows = []
    files = sorted(p.relative_to(new) for p in new.rglob("*") if p.suffix in (".h5ad", ".npy")
                   and "prep" not in p.parts and "_maps" not in str(p))
    for rel in files:
        if not (old / rel).exists():
            continue
        a, b = arrays(old / rel), arrays(new / rel)
        for key in sorted(set(a) | set(b)):
            same = key in a and key in b and a[key].shape == b[key].shape and np.array_equal(a[key], b[key])
            comparable = key in a and key in b and a[key].shape == b[key].shape
            diff = float(np.abs(a[key] - b[key]).max()) if comparable else float("nan")
            rows.append({"file": str(rel), "array": key or "samples", "identical": bool(same),
                         "max_abs_diff": diff})
    for tag in ("run/checkpoints",):
        ck = sorted((new / tag).glob("step_*.pt"))[-1].name
        wa = torch.load(old / tag / ck, map_location="cpu", weights_only=False)["ema"]["model"]
        wb = torch.load(new / tag / ck, map_location="cpu", weights_only=False)["ema"]["model"]
        same = all(torch.equal(wa[k], wb[k]) for k in wa) and set(wa) == set(wb)
        rows.append({"file": f"{tag}/{ck}", "array": "EMA weights", "identical": same, "max_abs_diff": 0.0 if same
                     else max(float((wa[k] - wb[k]).abs().max()) for k in wa)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True, help="the reference source tree (its src/ folder)")
    ap.add_argument("--new", default=str(ROOT / "src"))
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "her2st"))
    ap.add_argument("--work", default=str(ROOT / "runs" / "same_outputs"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "same_outputs"))
    ap.add_argument("--own-caches", action="store_true",
                    help="an embedding cache per version (else shared: the new version reads the old one's "
                         "embeddings, so a change in how patches are embedded does not show)")
    args = ap.parse_args()
    work, data = Path(args.work), Path(args.data)
    caches = (work / "cache_old", work / "cache_new") if args.own_caches else (work / "cache",) * 2
    chain(Path(args.old), work / "old", data, caches[0], None)
    chain(Path(args.new), work / "new", data, caches[1], work / "old")
    # the new version's predictions from the old run are compared with the old version's own
    rows = compare(work / "old", work / "new")
    ref_rows = []
    for name in ("pred", "slide"):
        for key in arrays(work / "new" / f"{name}_ref.h5ad"):
            a = arrays(work / "old" / f"{name}_own.h5ad")[key]
            b = arrays(work / "new" / f"{name}_ref.h5ad")[key]
            ref_rows.append({"file": f"{name}: old code vs new code, old run", "array": key,
                             "identical": bool(a.shape == b.shape and np.array_equal(a, b)),
                             "max_abs_diff": float(np.abs(a - b).max()) if a.shape == b.shape else float("nan")})
    for rel in ("completed_{}/C3_completed.h5ad", "completed_{}/C3_completed.samples.npy"):
        a, b = arrays(work / "old" / rel.format("own")), arrays(work / "new" / rel.format("ref"))
        for key in a:
            ref_rows.append({"file": f"{rel.format('*')}: old code vs new code, old model",
                             "array": key or "samples",
                             "identical": bool(a[key].shape == b[key].shape and np.array_equal(a[key], b[key])),
                             "max_abs_diff": float(np.abs(a[key] - b[key]).max())})
    rows = ref_rows + [{**r, "file": f"{r['file']}: each version end to end"} for r in rows]
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, 1 thread"
    res = {"old": str(Path(args.old).resolve()), "new": str(Path(args.new).resolve()), "machine": machine,
           "embedding_caches": "one per version" if args.own_caches else "shared",
           "all_identical": all(r["identical"] for r in rows), "rows": rows}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    lines = [f"# Same outputs before and after a change ({machine})", "",
             f"Reference: `{res['old']}`; new: `{res['new']}`; embedding caches: {res['embedding_caches']}. "
             f"All identical: **{res['all_identical']}**.", "",
             "| output | array | identical | max abs diff |", "|---|---|---|---|"]
    lines += [f"| {r['file']} | {r['array']} | {r['identical']} | {r['max_abs_diff']:.3g} |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
