"""Malformed inputs at the command line, one table row each.

Every case builds its broken input from real shared data, runs the real ``stem`` entry point
(``stem_st.cli.main``, what the console script calls; in-process so that 50 cases cost one
import, and ``test_entry_point_in_a_subprocess`` checks that a separate process behaves the same)
and asserts: exit 2, exactly one ``error:`` line naming the cause, no traceback, nothing new
in the output folder, and every input file byte-identical afterwards.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import HER2ST, SQUIDPY, VISIUM, run_stem_here, write_vmu
from PIL import Image

# --- inputs -----------------------------------------------------------------------------


def her2st_copy(root: Path, sections=("C2",), image=True) -> Path:
    """A HER2ST-layout copy of real sections that a case may break (images are symlinks)."""
    d = root / "her2st" / "data"
    for sub in ("ST-cnts", "ST-spotfiles"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    for s in sections:
        shutil.copy(HER2ST / f"data/ST-cnts/{s}.tsv.gz", d / "ST-cnts")
        shutil.copy(HER2ST / f"data/ST-spotfiles/{s}_selection.tsv", d / "ST-spotfiles")
        if image:
            (d / f"ST-imgs/C/{s}").mkdir(parents=True)
            img = next((HER2ST / f"data/ST-imgs/C/{s}").glob("*.jpg"))
            os.symlink(img, d / f"ST-imgs/C/{s}/{img.name}")
    return root / "her2st"


def counts_path(data: Path, s="C2") -> Path:
    return data / "data/ST-cnts" / f"{s}.tsv.gz"


def spots_path(data: Path, s="C2") -> Path:
    return data / "data/ST-spotfiles" / f"{s}_selection.tsv"


def read_counts(data: Path, s="C2") -> pd.DataFrame:
    return pd.read_csv(counts_path(data, s), sep="\t", index_col=0)


def write_counts(data: Path, df: pd.DataFrame, s="C2") -> None:
    df.to_csv(counts_path(data, s), sep="\t", compression={"method": "gzip", "compresslevel": 1})  # fast


def edit_spots(data: Path, fn: Callable[[pd.DataFrame], None], s="C2") -> None:
    spots = pd.read_csv(spots_path(data, s), sep="\t")
    fn(spots)
    spots.to_csv(spots_path(data, s), sep="\t", index=False)


@functools.cache
def _shared_spot_count(section: str) -> int:
    """Spots of a section of the shared (never modified) HER2ST data: read once per session."""
    from stem_st.data.readers import ReaderOptions, read_section

    return read_section("her2st", HER2ST, section, ReaderOptions(require_image=False)).n_obs


def embeddings(root: Path, data: Path, sections=("C2",), rows_delta=0) -> str:
    """Random 16-d precomputed embeddings in spot order; returns the --encoder value."""
    from stem_st.data.readers import ReaderOptions, read_section

    (root / "emb").mkdir(exist_ok=True)
    for s in sections:
        n = (_shared_spot_count(s) if data == HER2ST else
             read_section("her2st", data, s, ReaderOptions(require_image=False)).n_obs)
        np.save(root / "emb" / f"{s}.npy", np.random.default_rng(0).normal(size=(n + rows_delta, 16)))
    return f"precomputed:{root}/emb/{{section}}.npy"


def prepare_args(data: Path, out: Path, *extra, sections="C2") -> list:
    return ["prepare", "--data", data, "--sections", sections, "--genes", "hmhvg:20", "--out", out,
            "--no-cache", *extra]


def prepare_pre(root: Path, data: Path, out: Path, *extra, sections=("C2",)) -> list:
    """``stem prepare`` with precomputed embeddings: fails or passes without touching an image."""
    enc = embeddings(root, HER2ST, sections)  # the spots of the unbroken data
    return prepare_args(data, out, "--encoder", enc, *extra, sections=",".join(sections))


def visium_copy(root: Path) -> Path:
    dst = root / "visium"
    shutil.copytree(VISIUM, dst)
    return dst


def squidpy_h5ad(root: Path, fn: Callable[[ad.AnnData], None]) -> Path:
    a = ad.read_h5ad(SQUIDPY / "test_data.h5ad")
    a.X = np.expm1(a.X.toarray()).round()  # integer-valued, so that only the case's defect remains
    fn(a)
    path = root / "crop.h5ad"
    a.write_h5ad(path)
    return path


def h5ad_args(path: Path, out: Path) -> list:
    return ["prepare", "--data", path, "--layout", "h5ad", "--image", SQUIDPY / "test_img.jpg",
            "--genes", "hvg:20", "--out", out, "--no-cache"]


# --- shared prepared dataset, run and prediction (inputs of the later stages) ------------------


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    """A prepared dataset (C2, C3; precomputed embeddings), a 4-step run and its C3 prediction."""
    root = tmp_path_factory.mktemp("stage")
    data = her2st_copy(root, ("C2", "C3"), image=False)
    enc = embeddings(root, data, ("C2", "C3"))
    prep, run, pred = root / "prep", root / "run", root / "C3_pred.h5ad"
    for argv in (prepare_args(data, prep, "--encoder", enc, "--holdout", "C3", sections="C2,C3"),
                 ["train", prep, "--out", run, "--preset", "tiny", "--steps", "4", "--batch-size", "8",
                  "--aug-ratio", "0", "--checkpoint-every", "2", "--device", "cpu", "--validation", "none"],
                 ["predict", run, "--out", pred, "--num-samples", "2", "--sampler", "ddim:2",
                  "--device", "cpu"]):
        code, err = invoke(argv)
        assert code == 0, err
    return {"data": data, "prep": prep, "run": run, "pred": pred}


def copy_of(stage: dict, key: str, root: Path) -> Path:
    src = stage[key]
    dst = root / src.name
    (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    return dst


# --- the harness --------------------------------------------------------------------------


def invoke(argv: list) -> tuple[int, str]:
    """Run ``stem <argv>`` through the console-script entry point; return (exit code, stderr)."""
    res = run_stem_here(*argv, check=False)
    return res.returncode, res.stderr


def tree_hash(root: Path) -> dict[str, str]:
    """Content hash of every file under ``root`` (symlinks by target, not content)."""
    out = {}
    if root.is_file():
        return {root.name: hashlib.sha256(root.read_bytes()).hexdigest()}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(root))] = "link:" + os.readlink(p)
        elif p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@dataclass
class Case:
    """One malformed input: ``build(tmp, stage)`` writes it and returns the argv; ``match`` must
    appear in the error line."""

    id: str
    build: Callable[[Path, dict], list]
    match: str
    stage: bool = False  # uses the shared prepared dataset / run / prediction


def _readonly_dir(tmp: Path) -> Path:
    """A folder nobody may write to (root ignores permission bits, so then /sys)."""
    if os.geteuid() == 0:
        return Path("/sys")
    d = tmp / "ro"
    d.mkdir()
    d.chmod(0o555)
    return d


def _gz(path: Path, text: str) -> None:
    with gzip.open(path, "wt") as fh:
        fh.write(text)


def _counts_edit(fn):
    def build(tmp, _):
        data = her2st_copy(tmp / "in")
        write_counts(data, fn(read_counts(data)))
        return prepare_pre(tmp, data, tmp / "out" / "prep")
    return build


def _counts_text(text: str):
    def build(tmp, _):
        data = her2st_copy(tmp / "in")
        _gz(counts_path(data), text)
        return prepare_pre(tmp, data, tmp / "out" / "prep")
    return build


def _spots_edit(fn, *extra):
    def build(tmp, _):
        data = her2st_copy(tmp / "in")
        edit_spots(data, fn)
        return prepare_pre(tmp, data, tmp / "out" / "prep", *extra)
    return build


def _with_image(fn, *extra):
    def build(tmp, _):
        data = her2st_copy(tmp / "in")
        fn(data)
        return prepare_args(data, tmp / "out" / "prep", *extra)
    return build


def _set(df, row, col, value):
    df.iloc[row, col] = value
    return df


def _replace_image(data: Path, content: bytes | None = None, image: Image.Image | None = None):
    link = next((data / "data/ST-imgs/C/C2").glob("*.jpg"))
    target = Path(os.readlink(link))
    link.unlink()
    if image is not None:
        image.save(link)
    else:
        link.write_bytes(content if content is not None else target.read_bytes()[:200_000])


def _duplicate_gene(tmp, _):
    data = her2st_copy(tmp / "in")
    df = read_counts(data)
    df.columns = [df.columns[1] if i == 2 else c for i, c in enumerate(df.columns)]
    write_counts(data, df)
    return prepare_pre(tmp, data, tmp / "out" / "prep")


def _gene_absent_in_one(tmp, _):
    data = her2st_copy(tmp / "in", ("C2", "C3"))
    write_counts(data, read_counts(data, "C3").drop(columns="ERBB2"), "C3")
    (tmp / "genes.txt").write_text("ERBB2\nKRT19\n")
    argv = prepare_pre(tmp, data, tmp / "out" / "prep", sections=("C2", "C3"))
    argv[argv.index("hmhvg:20")] = f"file:{tmp / 'genes.txt'}"
    return argv


def _visium(edit):
    def build(tmp, _):
        d = visium_copy(tmp / "in")
        edit(d / "spatial")
        return ["prepare", "--data", d, "--layout", "visium", "--genes", "hvg:20", "--out",
                tmp / "out" / "prep", "--no-cache"]
    return build


def _drop_scalefactor(spatial: Path):
    sf = json.loads((spatial / "scalefactors_json.json").read_text())
    del sf["tissue_lowres_scalef"]
    (spatial / "scalefactors_json.json").write_text(json.dumps(sf))


def _positions_columns(spatial: Path):
    pos = pd.read_csv(spatial / "tissue_positions_list.csv", header=None)
    pos.iloc[:, :5].to_csv(spatial / "tissue_positions_list.csv", header=False, index=False)


def _h5ad(fn):
    return lambda tmp, _: h5ad_args(squidpy_h5ad(tmp, fn), tmp / "out" / "prep")


def _del_spatial(a):
    del a.obsm["spatial"]


def _spatial_1d(a):
    a.obsm["spatial"] = a.obsm["spatial"][:, :1]


def _log_normalised(tmp, _):
    path = tmp / "crop.h5ad"
    shutil.copy(SQUIDPY / "test_data.h5ad", path)  # as shipped: log-normalised X
    return h5ad_args(path, tmp / "out" / "prep")


def _precomputed(kind):
    def build(tmp, _):
        data = her2st_copy(tmp / "in", image=False)
        enc = embeddings(tmp, data, rows_delta=-3 if kind == "rows" else 0)
        if kind == "nan":
            e = np.load(tmp / "emb/C2.npy")
            e[5] = np.nan
            np.save(tmp / "emb/C2.npy", e)
        if kind == "barcodes":
            import h5py

            from stem_st.data.readers import ReaderOptions, read_section

            ids = read_section("her2st", data, "C2", ReaderOptions(require_image=False)).obs_names
            with h5py.File(tmp / "emb/C2.h5", "w") as f:
                f["embeddings"] = np.load(tmp / "emb/C2.npy")[:-4]
                f["barcodes"] = np.array([s.encode() for s in ids[:-4]])
            enc = f"precomputed:{tmp}/emb/{{section}}.h5"
        return prepare_args(data, tmp / "out" / "prep", "--encoder", enc)
    return build


def _wrong_weights(tmp, _):
    data = her2st_copy(tmp / "in")
    torch.save({"conv.weight": torch.zeros(3, 3, 3, 3)}, tmp / "resnet.pt")
    return prepare_args(data, tmp / "out" / "prep", "--weights", tmp / "resnet.pt")


def _prep_edit(fn, command="train"):
    def build(tmp, stage):
        prep = copy_of(stage, "prep", tmp / "in")
        fn(prep)
        if command == "info":
            return ["info", prep]
        return ["train", prep, "--out", tmp / "out" / "run", "--preset", "tiny", "--steps", "2"]
    return build


def _manifest_version(prep: Path):
    man = json.loads((prep / "manifest.json").read_text())
    man["format_version"] = 99
    (prep / "manifest.json").write_text(json.dumps(man))


def _checkpoint(kind):
    def build(tmp, stage):
        (tmp / "in").mkdir()
        ck = sorted((stage["run"] / "checkpoints").glob("step_*.pt"))[-1]
        bad = tmp / "in" / "step.pt"
        if kind == "truncated":
            bad.write_bytes(ck.read_bytes()[: ck.stat().st_size // 2])
        elif kind == "other":
            torch.save({"encoder": {"w": torch.zeros(2)}, "step": 3}, bad)
        elif kind == "pickle":
            torch.save({"net_config": Path("x"), "step": 1}, bad)  # a pickled Python object
        return ["predict", stage["run"], "--checkpoint", bad, "--out", tmp / "out" / "p.h5ad",
                "--num-samples", "2", "--sampler", "ddim:2"]
    return build


def _pred_edit(fn):
    def build(tmp, stage):
        (tmp / "in").mkdir()
        a = ad.read_h5ad(stage["pred"])
        path = tmp / "in" / "C3_pred.h5ad"
        fn(a).write_h5ad(path)
        return ["evaluate", stage["prep"], "--holdout", "C3", "--pred", path, "--baselines", "none",
                "--out", tmp / "out" / "report"]
    return build


def _predict(*extra, out="p.h5ad"):
    def build(tmp, stage):
        target = out(tmp, stage) if callable(out) else tmp / "out" / out
        return ["predict", stage["run"], "--out", target, "--num-samples", "2", "--sampler", "ddim:2",
                "--device", "cpu", *extra]
    return build


def _complete(edit=None, *extra):
    def build(tmp, _):
        data = her2st_copy(tmp / "in", ("C2", "C3"), image=False)
        if edit:
            edit(data)
        return ["complete", "fit", "--data", data, "--train", "C2,C3", "--out", tmp / "out" / "comp",
                "--ae-steps", "2", "--dit-steps", "2", "--device", "cpu", *extra]
    return build


def _few_spots(data: Path):
    edit_spots(data, lambda s: s.__setitem__("selected", [1] * 3 + [0] * (len(s) - 3)), "C3")


def _slide(kind):
    def build(tmp, stage):
        (tmp / "in").mkdir()
        path = tmp / "in" / "slide.tif"
        import tifffile

        img = np.full((512, 512, 3), 200, np.uint8)
        with tifffile.TiffWriter(path) as tif:
            tif.write(img, tile=(256, 256), subifds=1, metadata=None)
            tif.write(img[::2, ::2], tile=(256, 256), subfiletype=1, metadata=None)
        if kind == "missing-level":
            raw = path.read_bytes()
            path.write_bytes(raw[: len(raw) - 40_000])
        return ["predict-slide", stage["run"], "--image", path, "--mpp", "0.5", "--out",
                tmp / "out" / "slide.h5ad", "--device", "cpu"]
    return build


def _vmu(kind):
    def build(tmp, stage):
        (tmp / "in").mkdir()
        path = write_vmu(tmp / "in", np.full((256, 400, 3), 200, np.uint8), 0.5, levels=((1, 100), (4, 100)))
        if kind == "bad-magic":
            ngr = tmp / "in" / "slide.ngr"
            ngr.write_bytes(b"XX" + ngr.read_bytes()[2:])
        else:
            (tmp / "in" / "slide_map.ngr").unlink()
        return ["predict-slide", stage["run"], "--image", path, "--out", tmp / "out" / "slide.h5ad",
                "--device", "cpu"]
    return build


def _not_h5ad(tmp: Path) -> list:
    (tmp / "in").mkdir()
    (tmp / "in/p.h5ad").write_text("not HDF5")
    return ["view", tmp / "in/p.h5ad", "--out", tmp / "out" / "v.html"]


def _big_jpeg(tmp, stage):
    (tmp / "in").mkdir()
    path = tmp / "in" / "big.jpg"
    Image.new("RGB", (4000, 3000), (230, 200, 220)).save(path)
    return ["predict-slide", stage["run"], "--image", path, "--mpp", "0.5", "--out",
            tmp / "out" / "slide.h5ad", "--device", "cpu", "--max-pixels", "1000000"]


def _huge_jpeg(tmp, stage):
    """Over PIL's own decompression-bomb threshold (89.5 Mpx) and the --max-pixels budget."""
    (tmp / "in").mkdir()
    path = tmp / "in" / "huge.jpg"
    Image.new("RGB", (10_000, 9_500), (230, 200, 220)).save(path, quality=30)
    return ["predict-slide", stage["run"], "--image", path, "--mpp", "0.5", "--out",
            tmp / "out" / "slide.h5ad", "--device", "cpu", "--max-pixels", "50000000"]


def _run_config_truncated(tmp, stage):
    run = copy_of(stage, "run", tmp / "in")
    text = (run / "config.json").read_text()
    (run / "config.json").write_text(text[: len(text) // 2])
    return ["predict", run, "--out", tmp / "out" / "p.h5ad", "--num-samples", "2", "--sampler", "ddim:2",
            "--device", "cpu"]


CASES = [
    # counts
    Case("counts-empty", _counts_text(""), "C2.tsv.gz"),
    Case("counts-header-only", _counts_text("\tERBB2\tKRT19\n"), "no spot"),
    Case("counts-nan", _counts_edit(lambda df: _set(df.astype(float), 3, 5, np.nan)), "NaN"),
    Case("counts-negative", _counts_edit(lambda df: _set(df, 3, 5, -2)), "negative"),
    Case("counts-non-integer", _counts_edit(lambda df: _set(df.astype(float), 3, 5, 0.5)), "non-integer"),
    Case("counts-duplicate-spot", _counts_edit(lambda df: pd.concat([df, df.iloc[[4]]])), "repeated"),
    Case("counts-duplicate-gene", _duplicate_gene, "gene"),
    Case("counts-all-zero", _counts_edit(lambda df: df * 0), "zero"),
    Case("panel-gene-absent-in-one-section", _gene_absent_in_one, "ERBB2"),
    # spots and coordinates
    Case("spots-none-selected", _spots_edit(lambda s: s.__setitem__("selected", 0)), "selected"),
    Case("spots-join-nothing", _spots_edit(lambda s: s.__setitem__("x", s["x"] + 100)), "joins"),
    Case("spots-nan-coordinate", _spots_edit(lambda s: s.loc.__setitem__((4, "pixel_x"), np.nan)), "pixel"),
    Case("spots-inf-coordinate", _spots_edit(lambda s: s.loc.__setitem__((4, "pixel_y"), np.inf)), "pixel"),
    Case("spots-outside-image", _with_image(lambda d: None, "--image-scale", "3"), "outside"),
    Case("spots-same-position", _spots_edit(
        lambda s: s.loc.__setitem__((5, ["pixel_x", "pixel_y"]), s.loc[6, ["pixel_x", "pixel_y"]].to_numpy())),
        "one position"),
    Case("spots-single-spot-section", _spots_edit(
        lambda s: s.__setitem__("selected", [1] + [0] * (len(s) - 1))), "spot"),
    # images
    Case("image-missing", lambda tmp, _: prepare_args(her2st_copy(tmp / "in", image=False),
                                                      tmp / "out" / "prep"), "image"),
    Case("image-truncated-jpeg", _with_image(_replace_image), "cannot decode image"),
    Case("image-not-an-image", _with_image(lambda d: _replace_image(d, b"this is not a JPEG\n" * 100)),
         "jpg"),
    Case("image-1x1", _with_image(lambda d: _replace_image(d, image=Image.new("RGB", (1, 1)))), "1x1"),
    Case("mpp-zero", _spots_edit(lambda s: None, "--mpp", "0"), "µm per pixel must be in (0, 50]"),
    Case("mpp-absurd", _spots_edit(lambda s: None, "--mpp", "80"), "µm per pixel"),
    Case("slide-tiff-missing-level", _slide("missing-level"), "slide.tif", stage=True),
    Case("slide-vmu-ngr-bad-magic", _vmu("bad-magic"), "Bad magic on NGR file", stage=True),
    Case("slide-vmu-data-file-missing", _vmu("missing"), "slide_map.ngr", stage=True),
    Case("slide-jpeg-over-pixel-budget", _big_jpeg, "tiled pyramidal TIFF", stage=True),
    Case("slide-jpeg-over-pil-bomb-threshold", _huge_jpeg, "tiled pyramidal TIFF", stage=True),
    Case("slide-mpp-zero", lambda tmp, st: _slide("ok")(tmp, st)[:4] + [
        "--mpp", "0", "--out", tmp / "out" / "slide.h5ad", "--device", "cpu"], "--mpp must be positive",
         stage=True),
    Case("run-config-truncated", _run_config_truncated, "config.json is damaged", stage=True),
    # AnnData / Visium
    Case("h5ad-no-spatial", _h5ad(_del_spatial), "obsm['spatial']"),
    Case("h5ad-spatial-wrong-shape", _h5ad(_spatial_1d), "obsm['spatial']"),
    Case("h5ad-log-normalised-X", _log_normalised, "non-integer"),
    Case("visium-scalefactor-missing", _visium(_drop_scalefactor), "tissue_lowres_scalef"),
    Case("visium-positions-wrong-columns", _visium(_positions_columns), "tissue_positions_list.csv"),
    # encoders
    Case("encoder-unknown", _spots_edit(lambda s: None, "--encoder", "resnet9000"), "resnet9000"),
    Case("encoder-weights-wrong-architecture", _wrong_weights, "resnet.pt"),
    Case("precomputed-wrong-rows", _precomputed("rows"), "rows"),
    Case("precomputed-missing-barcodes", _precomputed("barcodes"), "no embedding"),
    Case("precomputed-nan-rows", _precomputed("nan"), "NaN"),
    # prepared datasets, runs, predictions
    Case("prep-missing-manifest", _prep_edit(lambda p: (p / "manifest.json").unlink()), "manifest.json",
         stage=True),
    Case("prep-other-format-version", _prep_edit(_manifest_version), "format", stage=True),
    Case("prep-section-file-deleted", _prep_edit(lambda p: (p / "sections/C3.h5ad").unlink()), "C3.h5ad",
         stage=True),
    Case("prep-section-file-deleted-info", _prep_edit(lambda p: (p / "sections/C2.h5ad").unlink(), "info"),
         "C2.h5ad", stage=True),
    Case("checkpoint-truncated", _checkpoint("truncated"), "step.pt", stage=True),
    Case("checkpoint-of-another-model", _checkpoint("other"), "not a Stem checkpoint", stage=True),
    Case("checkpoint-pickle", _checkpoint("pickle"), "pickle", stage=True),
    Case("prediction-genes-differ", _pred_edit(lambda a: a[:, 3:].copy()), "genes", stage=True),
    Case("prediction-spots-differ", _pred_edit(lambda a: a[5:].copy()), "spots", stage=True),
    # options
    Case("option-holdout-not-a-section", _spots_edit(lambda s: None, "--holdout", "C9"), "C9"),
    Case("option-views-0", _spots_edit(lambda s: None, "--views", "0"), "--views"),
    Case("option-views-not-a-number", _spots_edit(lambda s: None, "--views", "two"), "--views"),
    Case("option-num-samples-0", _predict("--num-samples", "0"), "--num-samples", stage=True),
    Case("option-sampler-unknown", _predict("--sampler", "euler:5"), "euler:5", stage=True),
    Case("option-depth-not-a-number", _predict("--depth", "deep"), "--depth", stage=True),
    Case("option-depth-negative", _predict("--depth", "-0.5"), "--depth", stage=True),
    Case("option-sampler-zero-steps", _predict("--sampler", "ddim:0"), "ddim:0", stage=True),
    Case("option-out-in-read-only-folder",
         _predict(out=lambda tmp, _: _readonly_dir(tmp) / "p.h5ad"), "cannot write", stage=True),
    Case("option-out-inside-the-prepared-input", _predict(
        "--overwrite", out=lambda tmp, st: st["prep"] / "sections/C3.h5ad"), "input", stage=True),
    Case("option-prepare-out-is-the-data", lambda tmp, _: prepare_pre(
        tmp, d := her2st_copy(tmp / "in"), d, "--overwrite"), "input"),
    Case("option-predict-unknown-section", _predict("--sections", "C9"), "C9", stage=True),
    Case("view-truth-of-another-section", lambda tmp, st: [
        "view", st["pred"], "--truth", st["prep"], "--section", "C2", "--out", tmp / "out" / "v.html"],
        "not in", stage=True),
    Case("view-not-an-h5ad", lambda tmp, _: _not_h5ad(tmp), "p.h5ad"),
    # LGDiST
    Case("lgdist-section-smaller-than-neighbourhood", _complete(_few_spots), "C3"),
    Case("lgdist-panel-larger-than-detected", _complete(None, "--panel", "50000", "--total", "60000"),
         "--panel"),
    Case("lgdist-unknown-masking-protocol", _complete(None, "--masking", "random"), "--masking"),
    Case("lgdist-three-rounds", _complete(None, "--rounds", "3"), "--rounds"),
    Case("lgdist-negative-centre-noise", _complete(None, "--centre-noise", "-0.5"), "--centre-noise"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_cleanly(case: Case, tmp_path, request):
    stage = request.getfixturevalue("stage") if case.stage else {}
    argv = case.build(tmp_path, stage)
    (tmp_path / "out").mkdir(exist_ok=True)
    inputs = [p for p in (tmp_path / "in", *(stage or {}).values()) if p.exists()]
    before = {str(p): tree_hash(p) for p in inputs}
    out_before = sorted(os.listdir(tmp_path / "out"))
    code, err = invoke(argv)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    if os.environ.get("STEM_CASE_LOG"):  # the case table for a note: id, command, message
        with open(os.environ["STEM_CASE_LOG"], "a") as fh:
            fh.write(json.dumps({"case": case.id, "command": " ".join(map(str, argv[:2])) if argv[0] == "complete"
                                 else str(argv[0]), "exit": code, "error": errors[0] if errors else err}) + "\n")
    assert code == 2, err
    assert len(errors) == 1 and "Traceback" not in err and "Warning" not in err, err
    assert case.match in errors[0], err
    assert sorted(os.listdir(tmp_path / "out")) == out_before, "output left behind"
    assert {str(p): tree_hash(p) for p in inputs} == before, "an input was modified"


@pytest.mark.parametrize("command", ["prepare", "train"])
def test_a_full_disk_is_refused_before_writing(command, tmp_path, monkeypatch, request):
    """With (a pretended) 1 MiB free, prepare and train stop before writing, with the cause."""
    import shutil as sh

    stage = request.getfixturevalue("stage") if command == "train" else {}
    real = sh.disk_usage
    monkeypatch.setattr("stem_st.atomic.shutil.disk_usage", lambda p: real(p)._replace(free=1 << 20))
    if command == "prepare":
        data = her2st_copy(tmp_path / "in")
        argv = prepare_args(data, tmp_path / "out" / "prep", "--views", "2")
    else:
        argv = ["train", stage["prep"], "--out", tmp_path / "out" / "run",
                "--preset", "small", "--steps", "2"]
    (tmp_path / "out").mkdir()
    code, err = invoke(argv)
    assert code == 2 and "not enough free disk" in err and "MiB free" in err, err
    assert os.listdir(tmp_path / "out") == []


def test_the_table_is_large_enough():
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)


def test_entry_point_in_a_subprocess(tmp_path):
    """The installed ``stem`` behaves as the in-process entry point: exit 2, one error line."""
    data = her2st_copy(tmp_path / "in", image=False)
    res = subprocess.run([sys.executable, "-m", "stem_st.cli", *map(str, prepare_args(
        data, tmp_path / "out", "--views", "0"))], capture_output=True, text=True,
        env={**os.environ, "COLUMNS": "200"})
    assert res.returncode == 2, res.stderr
    assert [ln for ln in res.stderr.splitlines() if ln.strip()] == [
        ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert "--views" in res.stderr and not (tmp_path / "out").exists()
