"""Training data that does not live in memory: the pair stores, statistics from a sample of a
large cohort carried to every pair, and prepared embeddings in memory-mapped .npy files."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest
import torch

from benchmarks.synthetic_cohort import write_cohort
from stem_st.data.dataset import EMBEDDING_KEY, embedding_path, open_prepared
from stem_st.errors import StemError
from stem_st.models.ridge import RidgeProbe
from stem_st.recipe import RECIPES
from stem_st.training import pairs as pairs_mod
from stem_st.training.data import build_training_data
from stem_st.training.store import RowStore
from stem_st.training.targets import fit_targets


def test_row_store_reads_rows_in_any_order(tmp_path):
    rng = np.random.default_rng(0)
    m = rng.normal(size=(50, 7)).astype(np.float32)
    store = RowStore(tmp_path / "m.f32", 7)
    store.append(m[:20])
    store.append(m[20:])
    idx = np.array([49, 3, 4, 5, 3, 0, 30])
    np.testing.assert_array_equal(store.rows(idx), m[idx])
    np.testing.assert_array_equal(store.read(10, 15), m[10:15])
    store.write(4, np.zeros((2, 7)))
    assert not store.rows(np.array([4, 5])).any() and store.rows(np.array([6]))[0, 0] == m[6, 0]
    with pytest.raises(StemError):
        store.rows(np.array([50]))
    store.close(remove=True)
    assert not (tmp_path / "m.f32").exists()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return open_prepared(write_cohort(tmp_path_factory.mktemp("cohort") / "prep", sections=3, spots=120,
                                      views=3, dim=24, genes=10))


def _reference(ds, sections, recipe, seed=0):
    """The in-memory computation: every pair's raw input, x and group, as training used to."""
    data = build_training_data(ds, sections, 2, seed, None, recipe.context)
    all_rows = np.arange(len(data))
    out = data.inputs.rows(all_rows), data.x.rows(all_rows), data.group.copy(), data.original.copy()
    data.close()
    return out


def test_statistics_on_every_pair_match_the_in_memory_targets(cohort, tmp_path):
    recipe = RECIPES["default"]
    sections = cohort.sections
    raw, x, group, original = _reference(cohort, sections, recipe)
    data = build_training_data(cohort, sections, 2, 0, None, recipe.context, tmp_path / "pairs")
    scaler, target, stats = pairs_mod.fit_statistics(data, recipe, 0)
    assert len(stats) == len(data) == len(x)
    ref_t, ref_z = fit_targets(recipe, scaler.transform(raw), x, group, original)
    cond, z = pairs_mod.TrainingPairs(data, scaler, target, torch.device("cpu")).numpy(
        np.arange(len(data)))
    np.testing.assert_allclose(cond, scaler.transform(raw), atol=1e-6)
    np.testing.assert_allclose(z, ref_z, atol=1e-4)
    np.testing.assert_allclose(target.sd, ref_t.sd, rtol=1e-6)
    data.close()
    assert not (tmp_path / "pairs").exists()  # the pair files and their folder are gone


def test_a_large_cohort_fits_statistics_on_a_sample_and_carries_the_prior_to_every_pair(cohort, tmp_path,
                                                                                          monkeypatch):
    monkeypatch.setattr(pairs_mod, "STATS_PAIRS", 300)
    recipe = RECIPES["default"]
    raw, x, group, original = _reference(cohort, cohort.sections, recipe)
    data = build_training_data(cohort, cohort.sections, 2, 0, None, recipe.context, tmp_path / "pairs")
    scaler, target, stats = pairs_mod.fit_statistics(data, recipe, 0)
    assert len(stats) == 300 < len(data)
    cond_all = scaler.transform(raw)
    _, z = pairs_mod.TrainingPairs(data, scaler, target, torch.device("cpu")).numpy(
        np.arange(len(data)))
    for g in np.unique(group):  # each section's pairs: x − (ridge fitted on the other sections' sampled pairs)
        train = np.zeros(len(data), bool)
        train[stats] = True
        train &= original & (group != g)
        probe = RidgeProbe().fit(cond_all[train], x[train])
        rows = group == g
        expect = (x[rows] - probe.predict(cond_all[rows]) - target.mu) / target.sd
        np.testing.assert_allclose(z[rows], expect, atol=1e-3)
    data.close()


def test_prepared_embeddings_are_memory_mapped_npy_files(cohort):
    sid = cohort.sections[0]
    a = cohort.section(sid, cache=False)
    assert isinstance(a.obsm[EMBEDDING_KEY], np.memmap) and a.obsm[EMBEDDING_KEY].shape == (120, 3, 24)
    assert EMBEDDING_KEY not in ad.read_h5ad(cohort.root / "sections" / f"{sid}.h5ad").obsm
    assert cohort.embeddings(sid).dtype == np.float32


def test_float16_embeddings_and_format_1_folders(tmp_path, cohort):
    half = write_cohort(tmp_path / "half", sections=1, spots=50, views=2, dim=16, genes=5, dtype=np.float16)
    ds = open_prepared(half)
    assert ds.section("S000").obsm[EMBEDDING_KEY].dtype == np.float16
    # a format-1 folder kept the embeddings inside the h5ad
    old = tmp_path / "old"
    (old / "sections").mkdir(parents=True)
    a = ds.section("S000", cache=False)
    b = a.copy()
    b.obsm[EMBEDDING_KEY] = np.asarray(a.obsm[EMBEDDING_KEY], dtype=np.float32)
    b.write_h5ad(old / "sections" / "S000.h5ad")
    (old / "genes.txt").write_text((half / "genes.txt").read_text())
    man = json.loads((half / "manifest.json").read_text())
    (old / "manifest.json").write_text(json.dumps({**man, "format_version": 1}))
    np.testing.assert_array_equal(open_prepared(old).embeddings("S000"), ds.embeddings("S000"))
    # a format-2 folder whose .npy is gone is a clear error
    embedding_path(half, "S000").unlink()
    with pytest.raises(StemError, match="embedding.npy missing"):
        open_prepared(half)
