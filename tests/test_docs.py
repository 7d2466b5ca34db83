"""The documentation site: built from docs/ with warnings as errors (the `docs_site` fixture, which
also executes the tutorial), an API entry for every public name, one page per benchmark result, and
three pages read as a user would, in headless Chromium, with no request leaving the machine."""

from __future__ import annotations

import re
import shutil
from urllib.parse import urlparse

import pytest
from conftest import ROOT

import stem_st as st

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_every_public_name_has_an_api_entry(docs_site):
    html, _, _ = docs_site
    ids = set()
    for page in (html / "api").glob("*.html"):
        ids |= set(re.findall(r'id="(stem_st\.[A-Za-z0-9_.]+)"', page.read_text()))
    public = {f"stem_st.{n}" for n in st.__all__ if not n.startswith("__")} - {"stem_st.read"}
    assert public <= ids, public - ids
    assert {"stem_st.read.her2st", "stem_st.read.visium", "stem_st.StemModel.predict_adata"} <= ids


def test_one_page_per_benchmark_result_with_its_figures(docs_site):
    html, _, _ = docs_site
    results = sorted(p.stem for p in (ROOT / "benchmarks" / "results").glob("*.md"))
    pages = sorted(p.stem for p in (html / "benchmarks" / "results").glob("*.html"))
    assert pages == results
    for name in results:  # the page shows the committed markdown's own title and numbers
        title = (ROOT / "benchmarks" / "results" / f"{name}.md").read_text().splitlines()[0]
        words = re.findall(r"[A-Za-z0-9]+", title)[:4]  # markup and quotes are rendered differently
        text = (html / "benchmarks" / "results" / f"{name}.html").read_text()
        assert re.search(r"<h1>[^\n]*" + r"\W+".join(words), text), name
    curve = (html / "benchmarks" / "results" / "sampler_curve.html").read_text()
    assert re.search(r'<img[^>]+sampler_curve\.png', curve)


def test_the_built_tutorial_shows_its_outputs(docs_site):
    html, tutorial, _ = docs_site
    page = (html / "tutorials" / "her2st.html").read_text()
    assert page.count("<img") >= 1 and "final training loss" in page
    # no cell output shows a Python warning (rich's progress bars wanted ipywidgets in a notebook)
    assert not re.search(r"\w*Warning\b", page), re.search(r".{80}\w*Warning\b.{120}", page, re.S)
    assert (tutorial / "summary.json").is_file()


def _read_in_chromium(url: str) -> dict:
    from playwright.sync_api import sync_playwright

    requests, off_machine = [], []

    def guard(route):
        scheme = urlparse(route.request.url).scheme
        requests.append(route.request.url)
        if scheme in ("file", "data", "blob", "about"):
            route.continue_()
        else:  # nothing may leave the machine: record and refuse it
            off_machine.append(route.request.url)
            route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.route("**/*", guard)
        page = context.new_page()
        page.goto(url)
        page.wait_for_load_state("load")
        page.evaluate("window.scrollTo(0, document.body.scrollHeight)")  # lazy images load too
        page.wait_for_function("Array.from(document.images).every(i => i.complete)")
        out = {"title": page.title(), "text": page.inner_text("main"),
               "images": page.eval_on_selector_all(
                   "main img", "els => els.map(i => [i.getAttribute('src'), i.naturalWidth, i.naturalHeight])"),
               "requests": requests, "off_machine": off_machine}
        browser.close()
    return out


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it)")
@pytest.mark.parametrize("page, text, images", [
    ("getting-started.html", ["make demo", "report.html", "What it prints"], 0),
    ("api/StemModel.html", ["predict_adata", "from_run", "PredictSettings"], 0),
    ("tutorials/her2st.html", ["Tutorial: from HER2ST sections to predicted maps", "stem_mean"], 1),
])
def test_three_pages_render_in_headless_chromium(docs_site, page, text, images):
    html, _, _ = docs_site
    seen = _read_in_chromium((html / page).as_uri())
    assert seen["off_machine"] == [], seen["off_machine"]
    local = ("file", "data", "blob", "about")
    assert seen["requests"] and all(urlparse(u).scheme in local for u in seen["requests"])
    assert "Stem-ST" in seen["title"]
    for words in text:
        assert words in seen["text"], words
    assert len(seen["images"]) >= images
    for src, width, height in seen["images"]:
        assert width > 0 and height > 0, f"{src} did not load"
