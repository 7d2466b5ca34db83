"""The shift score: how unlike the training spots a section is (stem_st.stem.shift), stored in every
prediction and said in a warning when a section lies beyond the training range."""

from __future__ import annotations

import anndata as ad
import numpy as np
from conftest import run_stem_here

from stem_st.stem.shift import SECTION_THRESHOLD, ShiftReference, fit_reference


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
