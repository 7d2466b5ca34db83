"""Sphinx configuration: MyST markdown pages, the tutorial notebook through myst-nb, the API
reference from the docstrings and one page per benchmark result. Built offline by `make docs`
(into docs/_build/html) and by the test suite (warnings are errors)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS))

from _ext.benchmarks import write_benchmark_pages  # noqa: E402

import stem_st  # noqa: E402

os.environ.setdefault("STEM_SHARED", str(ROOT.parent / "shared"))  # the tutorial's data
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded while the site builds

project = "Stem-ST"
author = "the Stem-ST developers"
copyright = "2026, the Stem-ST developers"  # noqa: A001 - Sphinx's name
version = release = stem_st.__version__

extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "_ext.api_check"]
exclude_patterns = ["_build", "_ext", "conf.py", "**/.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
suppress_warnings: list[str] = []

# MyST and notebooks: the tutorial lives in git as jupytext's percent format (a .py file) and is
# executed at build time; `STEM_DOCS_EXECUTE=off` builds without running it.
myst_enable_extensions = ["colon_fence", "deflist", "dollarmath"]
myst_heading_anchors = 3
nb_custom_formats = {".py": ["jupytext.reads", {"fmt": "py:percent"}]}
nb_execution_mode = os.environ.get("STEM_DOCS_EXECUTE", "cache")
nb_execution_cache_path = os.environ.get("STEM_DOCS_CACHE", str(DOCS / "_build" / ".jupyter_cache"))
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_execution_timeout = 3600
nb_merge_streams = True

# API reference: the docstrings of the public API, in source order, type hints in the text.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
napoleon_google_docstring = True
napoleon_numpy_docstring = True

html_theme = "sphinx_book_theme"
html_title = f"Stem-ST {release}"
html_static_path: list[str] = []
html_theme_options = {"show_toc_level": 2, "use_download_button": False, "use_fullscreen_button": False}
html_last_updated_fmt = None

write_benchmark_pages(ROOT / "benchmarks", DOCS / "benchmarks")
