"""The shift score: how unlike the training spots a section is (stem_st.stem.shift), stored in every
prediction and said in a warning when a section lies beyond the training range."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from conftest import run_stem_here

from stem_st.data.units import log2_expression, panel_depth, resample_depth
from stem_st.errors import StemError
from stem_st.stem.shift import SECTION_THRESHOLD, WIDEN_FROM, ShiftReference, fit_reference
from stem_st.training.targets import TargetTransform


def _population(rng, n, shift=0.0, dims=40):
    return rng.normal(0, 1, size=(n, dims)) + shift


def test_spots_like_the_training_sections_score_uniformly_and_shifted_ones_near_one():
    rng = np.random.default_rng(0)
    train = np.concatenate([_population(rng, 300) for _ in range(3)])
    groups = np.repeat([0, 1, 2], 300)
    ref = fit_reference(train, groups, seed=0)
    same, far = ref.score(_population(rng, 400)), ref.score(_population(rng, 400, shift=2.0))
    assert 0.3 < np.median(same) < 0.8 and (same > 0.99).mean() < 0.05
    assert np.median(far) > SECTION_THRESHOLD
    again = ShiftReference.from_state(ref.state())  # a checkpoint's round trip
    np.testing.assert_allclose(again.score(_population(np.random.default_rng(1), 50)),
                               ref.score(_population(np.random.default_rng(1), 50)))
    assert fit_reference(train, np.zeros(len(train)), seed=0) is None  # one group: nothing to cross-fit


def test_a_section_from_another_image_scale_is_flagged_and_a_same_patient_one_is_not(her2st_prep, her2st_run,
                                                                                      tmp_path):
    """Trained on patient C (C2, C3; 0.69 µm/px): A1 (patient A, 3.2 µm/px) is flagged by `stem
    predict`, with the shift in every spot's obs and the summary in uns; C3 is not."""
    prep = her2st_prep[0]
    args = ["predict", her2st_run, "--prep", prep, "--num-samples", "2", "--device", "cpu"]
    a1 = run_stem_here(*args, "--sections", "A1", "--out", tmp_path / "a1.h5ad")
    c3 = run_stem_here(*args, "--sections", "C3", "--out", tmp_path / "c3.h5ad")
    assert "A1 is unlike the training data" in " ".join(a1.stderr.split())
    assert "unlike the training data" not in c3.stderr
    pa, pc = ad.read_h5ad(tmp_path / "a1.h5ad"), ad.read_h5ad(tmp_path / "c3.h5ad")
    assert pa.uns["stem"]["shift"]["flagged"] and not pc.uns["stem"]["shift"]["flagged"]
    assert np.median(pa.obs["shift"]) > SECTION_THRESHOLD > np.median(pc.obs["shift"])
    assert pa.obs["shift"].between(0, 1).all()
    # intervals widen with shift: A1's spots get larger multipliers than the training section's own
    assert np.median(pa.obs["widening"]) > np.median(pc.obs["widening"])


def test_intervals_widen_with_the_cross_fitted_distance_and_the_checkpoint_keeps_the_fit():
    """Residuals that grow away from the other training sections give multipliers that grow with
    the distance; a training section's own spots, left out, get their cross-fitted distances."""
    rng = np.random.default_rng(0)
    train = np.concatenate([_population(rng, 300) for _ in range(3)])
    groups = np.repeat([0, 1, 2], 300)
    norm = np.linalg.norm(train, axis=1)
    z = rng.normal(size=(len(train), 20)) * (norm / norm.mean())[:, None] ** 3
    ref = fit_reference(train, groups, seed=0, z=z)
    assert np.all(np.diff(ref.widen_m) >= 0) and np.all(np.diff(ref.widen_d) >= 0)
    near, far = ref.widening(_population(rng, 200) * 0.5), ref.widening(_population(rng, 200, shift=2.0))
    assert np.median(far) > 1.2 and np.all(near == 1.0)  # nearer spots are never narrowed
    # a training section's own spots (cross-fitted): those nearer than the WIDEN_FROM quantile keep their width
    own_m = np.concatenate([ref.widening(train[groups == g], exclude=g) for g in range(3)])
    assert (own_m == 1.0).mean() >= WIDEN_FROM - 0.05 and own_m.max() > 1.0
    # a run from before WIDEN_FROM keeps its multipliers relative to the mean (its spread was calibrated so)
    old = ShiftReference.from_state({k: v for k, v in ref.state().items() if k != "widen_from"})
    assert old.widen_from is None and np.median(old.widening(_population(rng, 200) * 0.5)) < 1.0
    own = np.concatenate([ref.distances(train[groups == g], exclude=g) for g in range(3)])
    np.testing.assert_allclose(np.sort(own), ref.cross, rtol=2e-2)  # float16-stored points
    again = ShiftReference.from_state(ref.state())
    assert again.widen_from == ref.widen_from == WIDEN_FROM
    np.testing.assert_allclose(again.widening(train[:50]), ref.widening(train[:50]))
    assert fit_reference(train, groups, seed=0).widening(train[:5]) is None  # no residuals, no fit


def test_the_widened_spread_goes_with_multipliers_and_the_plain_one_without():
    t = TargetTransform(np.zeros(2, np.float32), np.ones(2, np.float32), np.full(2, -9, np.float32),
                        np.full(2, 9, np.float32), spread=np.float32(2.0), spread_plain=np.float32(1.5))
    z = np.random.default_rng(0).normal(size=(3, 5, 2)).astype(np.float32)
    dev = z - z.mean(1, keepdims=True)
    np.testing.assert_allclose(t.widen(z) - z.mean(1, keepdims=True), 1.5 * dev, rtol=1e-5, atol=1e-6)
    per_spot = np.array([1.0, 0.5, 3.0], np.float32)
    np.testing.assert_allclose(t.widen(z, per_spot=per_spot) - z.mean(1, keepdims=True),
                               2.0 * dev * per_spot[:, None, None], rtol=1e-5, atol=1e-6)


def test_a_shallower_section_thins_the_samples_and_auto_measures_its_depth_against_the_prediction():
    from stem_st.stem import PredictSettings, StemModel

    rng = np.random.default_rng(0)
    counts = rng.poisson(50.0, size=(400, 30, 8)).astype(np.float64)
    samples = log2_expression(counts)
    thin = resample_depth(samples, 0.1, seed=3)
    assert np.exp2(thin).mean() - 1 == pytest.approx(5.0, rel=0.05)  # Poisson(0.1 · 50)
    np.testing.assert_array_equal(thin, resample_depth(samples, 0.1, seed=3))
    np.testing.assert_allclose(np.exp2(resample_depth(samples, 2.0)) - 1, 2 * counts, rtol=1e-4)
    point = samples.mean(1)
    p1, s1, r1 = StemModel.at_depth(point, samples, PredictSettings())
    assert r1 == 1.0 and p1 is point and s1 is samples
    observed = 0.1 * panel_depth(point)
    p, s, r = StemModel.at_depth(point, samples, PredictSettings(depth="auto", seed=3), observed)
    assert r == pytest.approx(0.1, rel=1e-3)
    np.testing.assert_allclose(s, thin)
    np.testing.assert_allclose(p, thin.mean(1), rtol=1e-5)
    with pytest.raises(StemError, match="depth auto needs"):
        StemModel.at_depth(point, samples, PredictSettings(depth="auto"))
