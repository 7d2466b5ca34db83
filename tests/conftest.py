"""Shared fixtures. Real data lives in ../shared beside the project; it must be there."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("STEM_SHARED", ROOT.parent / "shared")) / "data"
HER2ST = SHARED / "her2st"
VISIUM = SHARED / "visium-mouse-brain-subset"
SQUIDPY = SHARED / "squidpy-mouse-brain-crop"


# Set before anything imports huggingface_hub (timm does), which reads it once at import: a
# session- or module-scoped fixture runs before the function-scoped `_offline` below, and with the
# variable unset the hub would retry the network (5 retries, ~23 s per file) instead of failing.
os.environ["HF_HUB_OFFLINE"] = "1"

def pytest_sessionstart(session):
    # Real-data tests are the point of this suite: missing data is a failure, not a skip.
    assert HER2ST.is_dir(), f"shared data not found at {SHARED} (set STEM_SHARED)"


@pytest.fixture(scope="session", autouse=True)
def embedding_cache(tmp_path_factory):
    """One embedding cache for the whole session: a temporary folder, never the user's. Every
    `stem prepare` / `st.prepare` on the same real section, view and encoder embeds it once.
    Set for the session (not per test) so that module- and session-scoped fixtures use it too.
    A test about the cache itself (hits, resume, damage) passes a folder of its own."""
    path = tmp_path_factory.mktemp("embedding-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STEM_ST_CACHE", str(path))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield path


@pytest.fixture(autouse=True)
def _offline(monkeypatch, embedding_cache):
    """No test may reach the network or the user's cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("STEM_ST_CACHE", str(embedding_cache))


def run_stem_here(*args, check=True) -> subprocess.CompletedProcess:
    """``stem <args>`` in this process, through the console-script entry point (``stem_st.cli.main``),
    returned as a CompletedProcess: no interpreter start-up and imports to pay again. Tests that need a
    process of their own (killing it, torchrun, the entry point) start one themselves."""
    import contextlib
    import io

    from stem_st import cli

    err, out, old = io.StringIO(), io.StringIO(), sys.argv
    sys.argv = ["stem", *map(str, args)]
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                cli.main()
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = old
    res = subprocess.CompletedProcess(sys.argv, code, out.getvalue(), err.getvalue())
    if check:
        assert res.returncode == 0, res.stderr
    return res


@pytest.fixture(scope="session")
def her2st_prep(tmp_path_factory, embedding_cache):
    """`stem prepare` on real HER2ST: C2 and C3 for training, A1 (pathologist labels) held out; 2 views,
    50 genes, EfficientNet-Lite0 embeddings. Returns (folder, the prepare's CompletedProcess).
    Shared by every module: read it, copy it to change it, never write into it."""
    out = tmp_path_factory.mktemp("her2st") / "PREP"
    res = run_stem_here("prepare", "--data", HER2ST, "--layout", "her2st", "--sections", "C2,C3,A1",
                        "--holdout", "A1", "--views", "2", "--genes", "hmhvg:50", "--out", out, "--cache",
                        embedding_cache)
    return out, res


@pytest.fixture(scope="session")
def her2st_run(her2st_prep, tmp_path_factory):
    """A tiny Stem run (20 steps) trained on `her2st_prep` (C2, C3): real embeddings, so commands
    that embed new images (predict-slide) rebuild its encoder. Read-only, like `her2st_prep`. The
    default recipe without its spread calibration (20 samples of every training spot, most of the
    time of so short a run; tests/test_recipe.py tests it)."""
    run = tmp_path_factory.mktemp("her2st_run") / "run"
    run_stem_here("train", her2st_prep[0], "--out", run, "--preset", "tiny", "--steps", "20", "--batch-size", "16",
                  "--recipe-set", "calibrate_spread=false", "--device", "cpu")
    return run


@pytest.fixture(scope="session")
def c2():
    from stem_st.data.readers import read_section

    return read_section("her2st", HER2ST, "C2")


@pytest.fixture(scope="session")
def effnet():
    from stem_st.encoders.registry import build_encoder

    return build_encoder("effnet-lite0-imagenet")


def write_vmu(folder, image, mpp, levels=((1, 200), (4, 150))):
    """A Hamamatsu VMU slide (a format tiffslide cannot read): an INI index and one NGR file per level,
    each a 'GN' header then columns of 12-bit RGB as little-endian uint16, column after column."""
    names = []
    for i, (factor, column) in enumerate(levels):
        arr = image[::factor, ::factor]
        h, w, _ = arr.shape
        assert w % column == 0
        header = b"GN\0\0" + struct.pack("<iii", w, h, column) + b"\0" * 8 + struct.pack("<i", 32)
        cols = arr.reshape(h, w // column, column, 3).transpose(1, 0, 2, 3).astype("<u2") << 4
        names.append(f"slide{'_map' if i else ''}.ngr")
        (folder / names[-1]).write_bytes(header.ljust(32, b"\0") + cols.tobytes())
    nm_w, nm_h = (round(n * mpp * 1000) for n in image.shape[1::-1])
    (folder / "slide.vmu").write_text(
        "[Uncompressed Virtual Microscope Specimen]\n"
        f"ImageFile={names[0]}\nMapFile={names[1]}\nBitsPerPixel=36\nPixelOrder=RGB\n"
        f"PhysicalWidth={nm_w}\nPhysicalHeight={nm_h}\nSourceLens=20\n")
    return folder / "slide.vmu"


@pytest.fixture(scope="session")
def docs_site(tmp_path_factory, embedding_cache):
    """`make docs` as the suite runs it: the site built from docs/ with warnings as errors, which
    executes the tutorial notebook once (into ``tutorial``, for the tutorial tests to read) on the
    shared HER2ST data, through the session's embedding cache. Returns (html folder, tutorial folder,
    the build's output). Built in the foreground: in the background (niced) it overlapped the other
    tests but slowed them more than it saved (725 s against 508 s on the 2-core box)."""
    out = tmp_path_factory.mktemp("docs")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "STEM_TUTORIAL_OUT": str(out / "tutorial"),
           "STEM_DOCS_EXECUTE": "force", "STEM_DOCS_CACHE": str(out / "jupyter-cache"),
           "STEM_ST_CACHE": str(embedding_cache), "STEM_SHARED": str(SHARED.parent)}
    res = subprocess.run([sys.executable, "-m", "sphinx", "-j", "2", "-W", "--keep-going", "-q", "-b", "html",
                          "-d", str(out / "doctrees"), str(ROOT / "docs"), str(out / "html")],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 0, f"the documentation does not build warning-free:\n{res.stderr[-4000:]}"
    return out / "html", out / "tutorial", res.stdout + res.stderr
