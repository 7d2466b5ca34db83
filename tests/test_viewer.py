"""`stem view`: the offline page, driven in headless Chromium (Debian's, by Playwright)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import anndata as ad
import matplotlib
import numpy as np
import pytest
from conftest import ROOT
from test_bad_inputs import embeddings, her2st_copy, invoke, prepare_args

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTEFACTS = Path(os.environ.get("STEM_TEST_ARTEFACTS", ROOT / "runs" / "test-artefacts"))


@pytest.fixture(scope="module")
def page_file(tmp_path_factory):
    """A prepared C3 (real counts, coordinates and H&E) and a prediction of it: measured + noise."""
    tmp = tmp_path_factory.mktemp("view")
    data = her2st_copy(tmp, ("C3",))
    prep = tmp / "prep"
    code, err = invoke(prepare_args(data, prep, "--encoder", embeddings(tmp, data, ("C3",)), sections="C3"))
    assert code == 0, err
    sec = ad.read_h5ad(prep / "sections/C3.h5ad")
    truth = np.log2(1 + np.asarray(sec.X, dtype=np.float32))
    rng = np.random.default_rng(0)
    noisy = (truth + rng.normal(0, 0.5, truth.shape)).clip(0).astype(np.float32)
    pred = ad.AnnData(X=noisy, obs=sec.obs[[]].copy(), var=sec.var[[]].copy())
    pred.layers["std"] = rng.uniform(0.1, 1.0, truth.shape).astype(np.float32)
    pred.obsm["spatial"] = sec.obsm["spatial"]
    pred.obs["shift"] = rng.uniform(0, 1, pred.n_obs).astype(np.float32)  # as stem predict writes it
    pred.uns["stem"] = {"section": "C3", "units": "log2(1 + count)", "samples_file": "C3_pred.samples.npy"}
    pred.write_h5ad(tmp / "C3_pred.h5ad")
    draws = (noisy[:, None] + rng.normal(0, 0.3, (truth.shape[0], 3, truth.shape[1]))).astype(np.float32)
    np.save(tmp / "C3_pred.samples.npy", draws)  # as stem predict --keep-samples writes them
    code, err = invoke(["view", tmp / "C3_pred.h5ad", "--truth", prep])
    assert code == 0, err
    pred.layers["draw"] = draws[:, 0]  # what the page should show as "one draw"
    return tmp / "C3_pred_view.html", pred, truth


def test_the_page_is_self_contained(page_file):
    html = page_file[0].read_text()
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html
    assert "data:image/jpeg;base64," in html and "default-src 'none'" in html


def _expected(value: float, lo: float, hi: float) -> str:
    t = min(1.0, max(0.0, (value - lo) / (hi - lo)))
    lut = np.asarray(matplotlib.colormaps["viridis"](np.linspace(0, 1, 256)))[:, :3]
    r, g, b = (lut[min(255, int(t * 256))] * 255).round().astype(int)
    return f"#{r:02x}{g:02x}{b:02x}"


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it)")
def test_pick_a_gene_colours_match_the_anndata_and_hover_reads_out(page_file):
    from playwright.sync_api import sync_playwright

    path, pred, truth = page_file
    genes = list(pred.var_names)
    gene = genes[7]
    j = genes.index(gene)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        urls, errors = [], []
        page.on("request", lambda r: urls.append(r.url))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(path.as_uri())
        page.wait_for_selector("body[data-ready='1']")
        before = [page.get_attribute(f"circle[data-i='{i}']", "fill") for i in range(40)]
        page.fill("#gene", "")
        page.type("#gene", gene)  # typed, as a person would
        assert page.get_attribute("#legend", "data-gene") == gene
        lo, hi = float(page.get_attribute("#legend", "data-lo")), float(page.get_attribute("#legend", "data-hi"))
        both = np.concatenate([truth[:, j], pred.X[:, j]])
        assert lo == pytest.approx(min(0.0, both.min()), abs=1e-3)
        assert hi == pytest.approx(np.percentile(both, 99), abs=1e-3)
        for i in (3, 101):  # the measured layer is shown first: colour = viridis(measured value)
            assert page.get_attribute(f"circle[data-i='{i}']", "fill") == _expected(truth[i, j], lo, hi)
        after = [page.get_attribute(f"circle[data-i='{i}']", "fill") for i in range(40)]
        assert sum(a != b for a, b in zip(before, after)) >= 10
        page.select_option("#layer", "prediction")
        assert page.get_attribute("circle[data-i='101']", "fill") == _expected(pred.X[101, j], lo, hi)
        page.hover("circle[data-i='101']")
        tip = page.inner_text("#tip")
        assert pred.obs_names[101] in tip and gene in tip
        assert f"{pred.X[101, j]:.3f}" in tip and f"{truth[101, j]:.3f}" in tip
        assert f"{pred.layers['std'][101, j]:.3f}" in tip
        page.select_option("#layer", "draw")  # the first sample, on the expression scale
        assert page.get_attribute("circle[data-i='101']", "fill") == _expected(pred.layers["draw"][101, j], lo, hi)
        shift = pred.obs["shift"].to_numpy()
        page.select_option("#layer", "shift")  # per spot, the same for every gene, on its own 0–1 scale
        assert [page.get_attribute(f"circle[data-i='{i}']", "fill") for i in (3, 101)] == \
            [_expected(shift[i], 0.0, 1.0) for i in (3, 101)]
        assert "shift from the training data" in page.inner_text("#title")
        page.hover("circle[data-i='3']")
        assert f"{shift[3]:.3f}" in page.inner_text("#tip")
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTEFACTS / "viewer.png"))
        browser.close()
    assert not errors, errors
    assert all(u.startswith(("file:", "data:")) for u in urls), urls
