"""Baselines, the evaluation harness, `stem evaluate` and the HTML report (rendered in
headless Chromium)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import run_stem_here

from stem_st.data.context import graph_matrices
from stem_st.data.dataset import open_prepared, write_prepared
from stem_st.data.units import log2_expression
from stem_st.evaluation.baselines import KNNBaseline, MeanBaseline, MLPBaseline, RidgeBaseline, parse_baselines
from stem_st.evaluation.metrics import pearson_per_gene
from stem_st.evaluation.probabilistic import probabilistic_scores
from stem_st.prediction.output import prediction_anndata, write_prediction
from stem_st.recipe import RECIPES

GENES = [f"G{i}" for i in range(12)]
SAMPLED_RIDGE = ["ridge+ctx2+gauss", "ridge+ctx2+mvn", "ridge+ctx2+boot"]
LABELS = np.array(["tumour", "stroma", "immune", "undetermined"], dtype=object)


def _section(rng, n, w):
    """Expression depends linearly on a 6-d embedding whose first coordinate sits in one of
    three regions (the labels)."""
    region = rng.integers(0, 3, n)
    z = rng.normal(size=(n, 6))
    z[:, 0] = 3.0 * (region - 1) + rng.normal(0, 0.3, n)
    log2 = np.clip(3 + z @ w + rng.normal(0, 0.3, size=(n, len(GENES))), 0, None)
    a = ad.AnnData(X=np.rint(np.exp2(log2) - 1).astype(np.int32))
    a.var_names = GENES
    a.obs_names = [f"s{i}" for i in range(n)]
    a.obs["label"] = LABELS[region]
    a.obs.loc[a.obs_names[:3], "label"] = "undetermined"
    grid = np.stack(np.meshgrid(np.arange(15), np.arange(n // 15 + 1)), -1).reshape(-1, 2)[:n]
    a.obsm["spatial"] = grid * 100.0 + 50
    a.obsm["embedding"] = np.stack([z, z + rng.normal(0, 0.01, z.shape)], 1).astype(np.float32)
    a.uns["stem"] = {"spot_diameter_um": 50.0, "mpp": 1.0}
    return a


@pytest.fixture(scope="module")
def prep(tmp_path_factory):
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.6, size=(6, len(GENES)))
    secs = {"A": _section(rng, 300, w), "B": _section(rng, 300, w), "T": _section(rng, 150, w)}
    root = tmp_path_factory.mktemp("evalprep") / "prep"
    manifest = {"sections": [{"section": s} for s in secs], "holdout": ["T"],
                "encoders": [{"encoder": "synthetic", "dim": 6, "weights": "none"}], "embedding_dim": 6,
                "views": ["identity", "hflip"], "patch_mode": "hest", "summary": []}
    write_prepared(root, secs, GENES, manifest)
    return root


def _truth(prep, sid="T"):
    return log2_expression(np.asarray(open_prepared(prep).section(sid).X))


def _write_pred(prep, path, noise=0.4, n_samples=9, seed=0):
    """A 'model' prediction: the truth plus noise, with samples around it."""
    ds = open_prepared(prep)
    rng = np.random.default_rng(seed)
    y = _truth(prep)
    samples = y[:, None, :] + rng.normal(0, noise, size=(len(y), n_samples, len(GENES)))
    mean = samples.mean(1)
    pred = prediction_anndata(ds.section("T"), GENES, mean, samples.std(1),
                              {"section": "T", "method": "stem", "num_samples": n_samples,
                               "sampler": "ddim:5", "summary": "mean", "seed": 0, "step": 1})
    write_prediction(pred, path, samples.astype(np.float32))
    return mean, samples


def test_baselines_share_the_fit_predict_contract(prep):
    ds = open_prepared(prep)
    emb = ds.embeddings("T")[:, 0]
    y = _truth(prep)
    train_y = np.concatenate([_truth(prep, "A"), _truth(prep, "B")])
    mean, std, samples = MeanBaseline().fit(ds, ["A", "B"]).predict(emb)
    assert np.allclose(mean, train_y.mean(0), atol=1e-5) and std is None and samples is None
    # k = 1: a query equal to a training spot's embedding returns that spot's profile
    train_emb = ds.embeddings("A")[:, 0]
    m1, _, s1 = KNNBaseline(k=1).fit(ds, ["A"]).predict(train_emb[:5])
    assert np.allclose(m1, _truth(prep, "A")[:5]) and s1.shape == (5, 1, len(GENES))
    mk, sk, ss = KNNBaseline(k=7).fit(ds, ["A", "B"]).predict(emb)
    assert ss.shape == (len(emb), 7, len(GENES)) and np.allclose(mk, ss.mean(1))
    ridge = RidgeBaseline().fit(ds, ["A", "B"])
    mr = ridge.predict(emb)[0]
    mlp = MLPBaseline(epochs=60).fit(ds, ["A", "B"]).predict(emb)[0]
    mse = {n: float(((p - y) ** 2).mean()) for n, p in (("mean", mean), ("knn", mk), ("ridge", mr), ("mlp", mlp))}
    # the signal is linear: ridge must beat the others, and every learner must beat the mean
    assert mse["ridge"] < min(mse["knn"], mse["mlp"]) and max(mse["knn"], mse["mlp"]) < mse["mean"]
    assert np.nanmean(pearson_per_gene(y, mr)) > 0.8
    with pytest.raises(Exception, match="width"):
        ridge.predict(emb[:, :3])


def test_parse_baselines():
    assert parse_baselines("all") == ["mean", "knn", "ridge", "mlp", "knn+ctx", "ridge+ctx", "knn+ctx2",
                                      "ridge+ctx2", *SAMPLED_RIDGE]
    assert parse_baselines("none") == [] and parse_baselines("ridge, knn") == ["ridge", "knn"]
    with pytest.raises(Exception, match="unknown baseline"):
        parse_baselines("ridge,svm")


@pytest.fixture(scope="module")
def report(prep, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    mean, samples = _write_pred(prep, tmp / "T_pred.h5ad")
    out = tmp / "report"
    res = run_stem_here("evaluate", prep, "--holdout", "T", "--pred", tmp / "T_pred.h5ad", "--baselines", "all",
                   "--train-sections", "A,B", "--genes", "G0,G3", "--out", out)
    return {"out": out, "mean": mean, "samples": samples, "stdout": res.stdout}


def test_evaluate_writes_metrics_that_match_a_direct_computation(prep, report):
    m = json.loads((report["out"] / "metrics.json").read_text())
    rows = {r["method"]: r for r in m["methods"]}
    assert list(rows) == ["stem", "mean", "knn", "ridge", "mlp", "knn+ctx", "ridge+ctx", "knn+ctx2", "ridge+ctx2",
                          *SAMPLED_RIDGE, "truth (reference)"]
    y = _truth(prep)
    r = pearson_per_gene(y, report["mean"])
    assert rows["stem"]["PCC-all"] == pytest.approx(np.nanmean(r), abs=1e-5)
    assert rows["stem"]["PCC-10"] == pytest.approx(np.sort(r)[::-1][:10].mean(), abs=1e-5)
    assert rows["stem"]["MSE"] == pytest.approx(((report["mean"] - y) ** 2).mean(), abs=1e-5)
    lo, hi = np.quantile(report["samples"], [0.1, 0.9], axis=1)
    assert rows["stem"]["coverage80"] == pytest.approx(((y >= lo) & (y <= hi)).mean(), abs=1e-5)
    assert rows["mean"]["genes_zero_variance"] == len(GENES) and rows["mean"]["genes_scored"] == 0
    # undefined figures are null (strict JSON), never NaN: no intervals for a point prediction,
    # no correlation for a prediction constant per gene
    assert rows["ridge"].get("coverage80") is None and 0 <= rows["knn"]["coverage80"] <= 1
    assert rows["mean"]["PCC-10"] is None and rows["mean"]["PCC-all"] is None
    assert "NaN" not in (report["out"] / "metrics.json").read_text()
    assert not re.search(r"\bnan\b", (report["out"] / "metrics.csv").read_text(), re.I)
    # the console table shows "–" where a figure is undefined, and says why under the table
    assert not re.search(r"\bnan\b", report["stdout"], re.I) and "–" in report["stdout"]
    assert "undefined for that method" in " ".join(report["stdout"].split())
    # the probabilistic scores: the same functions on the same samples; sampled baselines draw
    # as many profiles per spot as the prediction file holds (9)
    graph = graph_matrices(np.asarray(open_prepared(prep).section("T").obsm["spatial"]), 1.5)[0]
    direct = probabilistic_scores(y, report["mean"], report["samples"], graph)
    for key in ("CRPS", "energy", "variogram", "coverage50", "coverage95", "corr_err_sample", "moran_err_point"):
        assert rows["stem"][key] == pytest.approx(direct[key], rel=1e-4), key
    assert m["pit"]["stem"] == pytest.approx(direct["PIT"])
    assert all(rows[b]["num_samples"] == 9 and rows[b]["CRPS"] > 0 for b in ("knn", *SAMPLED_RIDGE))
    assert "CRPS" not in rows["ridge"] and "CRPS" in m["protocol"]
    # labels follow the embedding, so clustering the truth recovers them well; spots marked
    # 'undetermined' are not scored
    assert rows["truth (reference)"]["spots_scored"] == sum(
        open_prepared(prep).section("T").obs["label"] != "undetermined")
    assert rows["truth (reference)"]["ARI"] > 0.3
    assert [s["statistic"] for s in m["sample_statistics"]] == ["mean", "median", "mode"]
    assert m["protocol"]["baselines trained on"] == "A, B" and "log2(1 + count)" in m["protocol"]["units"]
    csv = pd.read_csv(report["out"] / "metrics.csv")
    assert list(csv["method"]) == list(rows) and csv.loc[0, "PCC-all"] == pytest.approx(rows["stem"]["PCC-all"])
    pngs = sorted(p.name for p in report["out"].glob("*.png"))
    assert pngs == sorted(["pcc_sorted.png", "pit.png", "map_G0.png", "map_G3.png", "draw_G0.png", "draw_G3.png",
                           *[f"gene_variation_{k}.png" for k in ("stem", "mean", "knn", "ridge", "mlp",
                                                                 "knn+ctx", "ridge+ctx", "knn+ctx2",
                                                                 "ridge+ctx2", *SAMPLED_RIDGE)]])
    assert "PCC-10" in report["stdout"] and "report.html" in report["stdout"]


def test_evaluate_in_depth_normalised_units(prep, report, tmp_path):
    from stem_st.evaluation.metrics import in_unit

    out = tmp_path / "cp10k"
    run_stem_here("evaluate", prep, "--holdout", "T", "--pred", report["out"].parent / "T_pred.h5ad",
             "--baselines", "none", "--unit", "cp10k", "--genes", "G0", "--out", out)
    m = json.loads((out / "metrics.json").read_text())
    row = m["methods"][0]
    y, p = in_unit(_truth(prep), "cp10k"), in_unit(report["mean"], "cp10k")
    assert row["MSE"] == pytest.approx(float(((p - y) ** 2).mean()), abs=1e-4)
    assert "CP10k" in m["protocol"]["units"]
    bad = run_stem_here("evaluate", prep, "--holdout", "T", "--baselines", "mean", "--unit", "tpm",
                   "--out", tmp_path / "bad", check=False)
    assert bad.returncode == 2 and "unknown --unit 'tpm'" in bad.stdout + bad.stderr
    assert not (tmp_path / "bad").exists()


def test_evaluate_refuses_bad_input_without_touching_outputs(prep, report, tmp_path):
    before = (report["out"] / "metrics.json").read_bytes()
    res = run_stem_here("evaluate", prep, "--holdout", "T", "--baselines", "mean", "--out", report["out"],
                        check=False)
    assert res.returncode == 2 and "already exists" in res.stderr and "Traceback" not in res.stderr
    assert (report["out"] / "metrics.json").read_bytes() == before
    # a prediction for other spots, an unknown gene for the maps, a missing file
    ds = open_prepared(prep)
    bad = prediction_anndata(ds.section("A"), GENES, np.zeros((300, len(GENES))), np.zeros((300, len(GENES))),
                             {"section": "A"})
    write_prediction(bad, tmp_path / "A_pred.h5ad")
    # (one cheap baseline where the case is not about baselines: --genes is checked after scoring)
    for args, msg in [(["--pred", tmp_path / "A_pred.h5ad", "--baselines", "mean"], "for section A"),
                      (["--genes", "NOPE", "--baselines", "mean"], "not in the panel"),
                      (["--pred", tmp_path / "missing.h5ad", "--baselines", "mean"], "not found"),
                      (["--baselines", "svm"], "unknown baseline")]:
        res = run_stem_here("evaluate", prep, "--holdout", "T", "--out", tmp_path / "r", *args, check=False)
        assert res.returncode == 2 and msg in res.stderr and "Traceback" not in res.stderr, res.stderr
        assert not (tmp_path / "r").exists()


def test_marker_maps_are_readable(report):
    """One figure per gene; truth, the prediction and the 4 best baselines (by mean r) in panels
    at least 600 px tall, 3 per row."""
    from PIL import Image

    maps = sorted(Path(report["out"]).glob("map_*.png"))
    assert [p.name for p in maps] == ["map_G0.png", "map_G3.png"]
    for p in maps:
        w, h = Image.open(p).size
        assert h >= 2 * 600 and w >= 3 * 500, (p.name, w, h)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="Debian's chromium is not installed (make test installs it)")
def test_report_renders_table_and_every_image_in_headless_chromium(report):
    from playwright.sync_api import sync_playwright

    html_file = Path(report["out"]) / "report.html"
    n_png = len(list(Path(report["out"]).glob("*.png")))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=_chromium(), headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        page = browser.new_page()
        page.goto(html_file.as_uri())
        page.wait_for_load_state("load")
        header = page.eval_on_selector_all("#metrics thead th", "els => els.map(e => e.textContent)")
        methods = page.eval_on_selector_all("#metrics tbody tr td:first-child",
                                            "els => els.map(e => e.textContent)")
        images = page.eval_on_selector_all(
            "img", "els => els.map(i => [i.complete, i.naturalWidth, i.getBoundingClientRect().width])")
        external = page.eval_on_selector_all("[src]:not([src^='data:'])", "els => els.length")
        page.click("text=Interactive viewer")  # the report links the viewer page written beside it
        page.wait_for_selector("body[data-ready='1']")
        viewer_layers = page.eval_on_selector_all("#layer option", "els => els.map(e => e.value)")
        browser.close()
    assert viewer_layers == ["truth", "prediction", "draw", "std", "error"]  # _write_pred kept its samples
    assert header[:3] == ["method", "PCC-10", "PCC-50"]
    assert methods == ["stem", "mean", "knn", "ridge", "mlp", "knn+ctx", "ridge+ctx", "knn+ctx2", "ridge+ctx2",
                       *SAMPLED_RIDGE, "truth (reference)"]
    assert len(images) == n_png and external == 0  # self-contained: every figure embedded
    assert all(done and natural > 0 and shown > 0 for done, natural, shown in images), images


@pytest.mark.slow
def test_demo_runs_the_whole_chain_on_real_her2st(tmp_path, her2st_prep, embedding_cache):
    """A miniature `stem demo`: C3 held out, trained on A1, few steps and samples; the embeddings come
    from the session's cache (the shared prepared dataset embedded A1 and C3). C3 has no pathologist
    labels, so no Leiden clustering (13 of them on A1): the evaluate test scores ARI on A1."""
    from conftest import HER2ST

    out = tmp_path / "demo"
    res = run_stem_here("demo", "--data", HER2ST, "--out", out, "--sections", "A1,C3", "--holdout", "C3",
                        "--views", "2", "--steps", "30", "--batch-size", "16", "--num-samples", "3",
                        "--sampler", "ddim:3", "--cache", embedding_cache, "--device", "cpu",
                        "--validation", "none",  # validation and calibration are tested elsewhere
                        "--recipe-set", "calibrate_spread=false")
    summary = json.loads((out / "demo.json").read_text())
    rows = {r["method"]: r for r in summary["main"]["rows"]}
    assert list(rows) == ["stem", "mean", "knn", "ridge", "mlp", "knn+ctx", "ridge+ctx", "knn+ctx2", "ridge+ctx2",
                          *SAMPLED_RIDGE]  # no labels: no clustered-truth reference row
    assert rows["stem"]["num_samples"] == 3 and 0 <= rows["stem"]["coverage80"] <= 1
    assert all(np.isfinite(rows[m]["CRPS"]) for m in ("stem", "knn", *SAMPLED_RIDGE))
    assert summary["config"]["preset"] == "tiny" and summary["config"]["steps"] == 30
    assert summary["config"]["recipe"] == {**RECIPES["default"].to_dict(), "calibrate_spread": False}
    pred = ad.read_h5ad(out / "C3_pred.h5ad")
    assert pred.uns["stem"]["section"] == "C3" and (out / "C3_pred.samples.npy").is_file()
    assert (out / "report" / "report.html").is_file() and "report.html" in res.stdout
    assert "stem" in res.stdout and "ridge" in res.stdout
    # a folder the demo did not make is refused
    mine = tmp_path / "mine"
    mine.mkdir()
    bad = run_stem_here("demo", "--data", HER2ST, "--out", mine, check=False)
    assert bad.returncode == 2 and "not made by 'stem demo'" in bad.stderr


def test_leave_one_out_summary_averages_each_method_over_folds():
    from stem_st.cli.demo import loo_summary

    folds = {"C2": {"rows": [{"method": "stem", "PCC-all": 0.2, "MSE": 1.0, "ARI": float("nan")},
                             {"method": "knn", "PCC-all": 0.4, "MSE": 2.0}]},
             "A1": {"rows": [{"method": "stem", "PCC-all": 0.4, "MSE": 3.0, "ARI": 0.5},
                             {"method": "knn", "PCC-all": 0.6, "MSE": 4.0}]}}
    rows = {r["method"]: r for r in loo_summary(folds)}
    assert rows["stem"]["folds"] == 2 and rows["stem"]["PCC-all"] == pytest.approx(0.3)
    assert rows["stem"]["MSE"] == pytest.approx(2.0) and rows["knn"]["MSE"] == pytest.approx(3.0)
    assert rows["stem"]["ARI"] == pytest.approx(0.5)  # a fold without labels does not count
    assert np.isnan(rows["knn"]["ARI"])


def test_a_stale_samples_file_beside_an_overwritten_prediction_is_ignored(prep, tmp_path):
    from stem_st.evaluation.harness import read_prediction

    path = tmp_path / "T_pred.h5ad"
    mean, _ = _write_pred(prep, path)
    ds = open_prepared(prep)
    spots = list(ds.section("T").obs_names)
    assert read_prediction(path, spots, GENES).samples.shape == (len(spots), 9, len(GENES))
    again = prediction_anndata(ds.section("T"), GENES, mean, np.zeros_like(mean),
                               {"section": "T", "method": "stem", "num_samples": 9, "sampler": "ddim:5",
                                "summary": "mean", "seed": 0, "step": 1})
    write_prediction(again, path, None, overwrite=True)  # the old .samples.npy stays on disk
    assert read_prediction(path, spots, GENES).samples is None
