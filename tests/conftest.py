"""Shared fixtures. Real data lives in ../shared beside the project; it must be there."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("STEM_SHARED", ROOT.parent / "shared")) / "data"
HER2ST = SHARED / "her2st"
VISIUM = SHARED / "visium-mouse-brain-subset"
SQUIDPY = SHARED / "squidpy-mouse-brain-crop"


def pytest_sessionstart(session):
    # Real-data tests are the point of this suite: missing data is a failure, not a skip.
    assert HER2ST.is_dir(), f"shared data not found at {SHARED} (set STEM_SHARED)"


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    """No test may reach the network or the user's cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("STEM_ST_CACHE", str(tmp_path_factory.mktemp("cache")))


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
