"""Metric functions against values worked out by hand, zero-variance cases included."""

from __future__ import annotations

import numpy as np
import pytest

from stem_st.errors import StemError
from stem_st.evaluation.clustering import label_agreement
from stem_st.evaluation.metrics import interval_coverage, pcc_at_k, pearson_per_gene, rvd, score

# 3 spots x 3 genes; gene 1 is constant in the truth, gene 2 constant in the prediction
TRUTH = np.array([[1.0, 2.0, 0.0], [2.0, 2.0, 1.0], [3.0, 2.0, 5.0]])
PRED = np.array([[1.0, 0.0, 4.0], [3.0, 1.0, 4.0], [2.0, 5.0, 4.0]])


def test_pearson_by_hand_and_undefined_for_constant_genes():
    r = pearson_per_gene(TRUTH, PRED)
    # gene 0: centred truth (-1, 0, 1), centred pred (-1, 1, 0): 1 / sqrt(2 * 2) = 0.5
    assert r[0] == pytest.approx(0.5)
    assert np.isnan(r[1]) and np.isnan(r[2])
    assert pearson_per_gene(TRUTH[:, :1], -TRUTH[:, :1])[0] == pytest.approx(-1.0)


def test_a_constant_but_inexactly_averaged_column_is_zero_variance():
    col = np.full((3, 1), 0.1)  # mean of three 0.1 is not exactly 0.1 in floating point
    assert np.isnan(pearson_per_gene(col, np.array([[1.0], [2.0], [3.0]]))[0])


def test_pcc_at_k_skips_undefined_and_caps_k():
    r = np.array([0.5, np.nan, 0.9, -0.1])
    got = pcc_at_k(r, [1, 2, 10])
    assert got["PCC-1"] == pytest.approx(0.9)
    assert got["PCC-2"] == pytest.approx(0.7)
    assert got["PCC-10"] == pytest.approx((0.5 + 0.9 - 0.1) / 3)
    assert np.isnan(pcc_at_k(np.array([np.nan]), [1])["PCC-1"])


def test_rvd_by_hand_skips_zero_true_variance():
    truth = np.array([[1.0, 2.0], [2.0, 2.0], [3.0, 2.0]])
    pred = np.array([[0.0, 1.0], [0.0, 1.0], [3.0, 1.0]])
    # gene 0: var_true = 2/3, var_pred = 2 → (2 - 2/3)^2 / (2/3)^2 = 4; gene 1 skipped
    value, skipped = rvd(truth, pred)
    assert value == pytest.approx(4.0)
    assert skipped == 1
    assert rvd(truth, truth)[0] == 0.0


def test_coverage_of_the_central_80_percent():
    samples = np.arange(11, dtype=float).reshape(1, 11, 1)  # quantiles 0.1, 0.9 → 1 and 9
    assert interval_coverage(np.array([[5.0]]), samples) == 1.0
    assert interval_coverage(np.array([[9.5]]), samples) == 0.0
    assert interval_coverage(np.array([[0.5]]), samples) == 0.0
    two = np.concatenate([samples, samples], axis=2)
    assert interval_coverage(np.array([[1.0, 9.01]]), two) == 0.5  # edges are inside
    with pytest.raises(StemError):
        interval_coverage(np.zeros((2, 1)), samples)


def test_score_by_hand():
    s = score(TRUTH, PRED, ks=(1, 2))
    assert s["genes_scored"] == 1 and s["genes_zero_variance"] == 2
    assert s["PCC-1"] == pytest.approx(0.5) and s["PCC-all"] == pytest.approx(0.5)
    assert s["PCC-3"] == s["PCC-all"]  # the panel-size entry
    diff = PRED - TRUTH
    assert s["MSE"] == pytest.approx((diff**2).sum() / 9)
    assert s["MAE"] == pytest.approx(np.abs(diff).sum() / 9)
    # RVD over genes 0 and 2 (gene 1 has zero true variance):
    # gene 0: equal variances → 0; gene 2: var_true = 14/3, var_pred = 0 → 1
    assert s["RVD"] == pytest.approx(0.5) and s["RVD_genes_skipped"] == 1
    assert "coverage80" not in s  # a point prediction draws no samples: no coverage


def test_a_constant_prediction_has_no_correlation_at_all():
    mean_pred = np.repeat(TRUTH.mean(0, keepdims=True), 3, axis=0)
    s = score(TRUTH, mean_pred)
    assert s["genes_scored"] == 0 and np.isnan(s["PCC-all"])
    assert s["RVD"] == pytest.approx(1.0)  # zero predicted variance → exactly 1 per gene


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(StemError, match="must both be"):
        score(TRUTH, PRED[:, :2])


def test_leiden_agreement_finds_planted_regions_and_ignores_undetermined():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 4, size=(3, 20))
    lab = np.repeat(["tumour", "stroma", "fat"], 40).astype(object)
    x = centres[np.repeat(np.arange(3), 40)] + rng.normal(0, 0.5, size=(120, 20))
    lab_u = lab.copy()
    lab_u[:5] = "undetermined"
    got = label_agreement(x, lab_u)
    assert got["label_classes"] == 3 and got["clusters"] == 3 and got["spots_scored"] == 115
    assert got["ARI"] == pytest.approx(1.0) and got["NMI"] == pytest.approx(1.0)
    noise = label_agreement(rng.normal(size=(120, 20)), lab)
    assert noise["ARI"] < 0.2
