"""Shared fixtures. Real data lives in ../shared beside the project; it must be there."""

from __future__ import annotations

import os
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
