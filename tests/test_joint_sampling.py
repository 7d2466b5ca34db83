"""Whole-section draws: the noise field (stem_st.diffusion.noise.SpatialField), its fit on the
validation section (stem_st.stem.spatial) and the spatial variogram of a draw."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stem_st.data.context import shell_pairs
from stem_st.data.dataset import open_prepared
from stem_st.diffusion.noise import RowNoise, SpatialField
from stem_st.evaluation.probabilistic import probabilistic_scores, spatial_variogram
from stem_st.stem import PredictSettings, StemModel
from stem_st.stem.spatial import (
    deviation_correlations,
    fit_kernel,
    kernel,
    moran_strengths,
    ring_correlations,
    variogram_strengths,
)


def _grid(n: int) -> np.ndarray:
    return np.stack(np.meshgrid(np.arange(n), np.arange(n)), -1).reshape(-1, 2).astype(float)


def test_the_field_is_standard_normal_at_every_spot_and_correlated_as_its_kernel():
    xy = _grid(12)
    samples, genes = 300, 4
    field = SpatialField(xy, samples, genes, length=2.0, kernel="gauss", seed=3)
    f = field.rows(0, len(xy) * samples).view(len(xy), samples, genes).numpy()
    # each spot: N(0, 1) over samples and genes
    assert np.allclose(f.reshape(len(xy), -1).var(1).mean(), 1.0, atol=0.03)
    assert abs(f.mean()) < 0.03
    # neighbours one pitch apart (spots 0 and 1) and far apart (spot 0 and the opposite corner)
    near = float((f[0] * f[1]).mean())
    far = float((f[0] * f[-1]).mean())
    assert near == pytest.approx(kernel("gauss", np.array(1.0), 2.0), abs=0.08)
    assert abs(far) < 0.08


@pytest.mark.parametrize("kind", ["gauss", "exp"])
def test_a_field_over_more_than_two_axes_correlates_as_its_kernel_of_the_full_distance(kind):
    # three spots: two at the same place that differ on a third axis, one a pitch away on it
    pos = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.5], [1.0, 0.0, 0.0]])
    f = SpatialField(pos, 4000, 2, length=2.0, kernel=kind, seed=4).rows(0, 3 * 4000).view(3, 4000, 2).numpy()
    assert f.var() == pytest.approx(1.0, abs=0.05)
    for j, d in ((1, 1.5), (2, 1.0)):
        assert float((f[0] * f[j]).mean()) == pytest.approx(kernel(kind, np.array(d), 2.0), abs=0.06)


def test_a_spot_gets_the_same_field_in_any_job_so_chunks_join_without_seams():
    xy = _grid(10) * 37.0 + 5.0
    whole = SpatialField(xy / 37.0, 3, 5, length=1.5, kernel="exp", seed=0)
    chunk = SpatialField(xy[60:] / 37.0, 3, 5, length=1.5, kernel="exp", seed=0)
    a = whole.rows(60 * 3, 40 * 3)
    b = chunk.rows(0, 40 * 3)
    assert torch.allclose(a, b, atol=1e-6)
    other_seed = SpatialField(xy[60:] / 37.0, 3, 5, length=1.5, kernel="exp", seed=1).rows(0, 40 * 3)
    assert not torch.allclose(b, other_seed)


def test_row_noise_mixes_the_field_into_x_t_only():
    xy = _grid(8)
    field = SpatialField(xy, 2, 6, length=2.0, seed=0)
    plain = RowNoise(0, 0, 64, 64, "cpu")
    mixed = RowNoise(0, 0, 64, 64, "cpu", field=(field, 0.7))
    e0, m0 = plain.randn((64, 6)), mixed.randn((64, 6))
    expect = np.sqrt(0.3) * e0 + np.sqrt(0.7) * field.rows(64, 64)
    assert torch.allclose(m0, expect, atol=1e-6)
    # later draws (ancestral samplers' per-step noise) are the independent ones
    assert torch.equal(plain.randn((64, 6)), mixed.randn((64, 6)))
    # one strength per gene: gene 0 takes none of the field, the last all of it
    rho = np.linspace(0.0, 1.0, 6, dtype=np.float32)
    per_gene = RowNoise(0, 0, 64, 64, "cpu", field=(field, rho)).randn((64, 6))
    assert torch.allclose(per_gene[:, 0], e0[:, 0], atol=1e-6)
    assert torch.allclose(per_gene[:, -1], field.rows(64, 64)[:, -1], atol=1e-6)


def test_the_kernel_fit_recovers_a_known_residual_field():
    rng = np.random.default_rng(0)
    xy = _grid(22)
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    chol = np.linalg.cholesky(np.exp(-d / 2.0) + 1e-8 * np.eye(len(xy)))
    genes, rho = 300, 0.4
    res = np.sqrt(rho) * chol @ rng.standard_normal((len(xy), genes)) \
        + np.sqrt(1 - rho) * rng.standard_normal((len(xy), genes))
    rings = shell_pairs(xy)
    target = ring_correlations(res, rings)
    fit = fit_kernel(target, xy, rings)
    truth = [rho * np.exp(-np.linalg.norm(xy[i] - xy[j], axis=1) / 2.0).mean() for i, j in rings]
    assert np.allclose(target, truth, atol=0.03)
    got = [fit["rho"] * kernel(fit["kernel"], np.linalg.norm(xy[i] - xy[j], axis=1), fit["length"]).mean()
           for i, j in rings]
    assert np.allclose(got, target, atol=0.01)
    assert 0.25 < fit["rho"] < 0.7
    # residuals without spatial structure get (almost) no field
    flat = fit_kernel(ring_correlations(rng.standard_normal((len(xy), genes)), rings), xy, rings)
    assert flat["rho"] * kernel(flat["kernel"], np.array(1.0), flat["length"]) < 0.03


def test_wider_samples_get_more_shared_noise_so_a_draw_varies_between_neighbours_as_the_truth():
    rng = np.random.default_rng(1)
    xy = _grid(20)
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    chol = np.linalg.cholesky(np.exp(-d / 2.0) + 1e-8 * np.eye(len(xy)))
    genes = 50
    point = np.sin(xy[:, :1] / 5.0) * np.linspace(0.5, 2.0, genes)
    truth = point + np.sqrt(0.3) * chol @ rng.standard_normal((len(xy), genes)) \
        + np.sqrt(0.7) * rng.standard_normal((len(xy), genes))
    rings = shell_pairs(xy)
    fit = {"kernel": "exp", "length": 2.0}
    exact = variogram_strengths(truth, point, np.ones_like(truth), xy, rings, fit, 1.0)
    wide = variogram_strengths(truth, point, np.full_like(truth, 1.5), xy, rings, fit, 1.0)
    assert 0.15 < np.median(exact) < 0.5  # samples as wide as the residuals: about their own correlation
    assert np.all(wide >= exact) and np.median(wide) > np.median(exact) + 0.2
    # the draw's variogram with the fitted strengths is the truth's (ring 1, mean over genes)
    i, j = rings[0]
    k = kernel("exp", np.linalg.norm(xy[i] - xy[j], axis=1), 2.0).mean()
    g_point, truth_g1 = 0.5 * ((point[i] - point[j]) ** 2).mean(0), 0.5 * ((truth[i] - truth[j]) ** 2).mean(0)
    fitted = np.median(np.abs((g_point + 1.5 * (1 - wide * k)) / truth_g1 - 1))
    independent = np.median(np.abs((g_point + 1.5) / truth_g1 - 1))
    assert fitted < 0.2 < independent


def test_moran_strengths_give_a_draw_the_truths_morans_i_whatever_the_samples_width():
    rng = np.random.default_rng(2)
    xy = _grid(16)
    genes = 40
    field = SpatialField(xy, 1, genes, length=2.0, kernel="exp", seed=5)
    f = field.rows(0, len(xy)).numpy().astype(np.float64)
    point = np.sin(xy[:, :1] / 4.0) * np.linspace(0.2, 1.0, genes)
    share = np.linspace(0.1, 0.8, genes)  # genes differ in how much of their residual neighbours share
    truth = point + np.sqrt(share) * f + np.sqrt(1 - share) * rng.standard_normal((len(xy), genes))
    rings = shell_pairs(xy)
    i, j = rings[0]
    fit = {"kernel": "exp", "length": 2.0}

    def moran(v):
        v = v - v.mean(0)
        return (v[i] * v[j]).mean(0) / (v ** 2).mean(0)

    for width in (1.0, 1.6):  # samples as wide as the residuals, and wider
        rho = moran_strengths(truth, point, np.full_like(truth, width), xy, rings, fit, 1.0)
        draws = [SpatialField(xy, 1, genes, length=2.0, kernel="exp", seed=10 + r).rows(0, len(xy)).numpy()
                 for r in range(20)]
        joint = np.mean([moran(point + np.sqrt(width) * (np.sqrt(rho) * d + np.sqrt(1 - rho)
                                                          * rng.standard_normal(d.shape))) for d in draws], 0)
        independent = np.mean([moran(point + np.sqrt(width) * rng.standard_normal(d.shape)) for d in draws], 0)
        assert np.abs(joint - moran(truth)).mean() < 0.04 < np.abs(independent - moran(truth)).mean()
    # a gene whose residuals neighbours share more gets more of the field
    assert np.corrcoef(rho, share)[0, 1] > 0.8
    # a Moran's I carried from elsewhere is matched on this section's point and width instead
    np.testing.assert_array_equal(rho, moran_strengths(truth, point, np.full_like(truth, width), xy, rings, fit,
                                                       1.0, target=moran(truth)))
    higher = moran_strengths(truth, point, np.full_like(truth, width), xy, rings, fit, 1.0,
                             target=moran(truth) + 0.1)
    assert np.all(higher >= rho) and (higher > rho).mean() > 0.8


def test_a_draw_of_the_section_is_a_map_and_each_spot_keeps_its_distribution(her2st_prep, her2st_run, tmp_path):
    ds = open_prepared(her2st_prep[0])
    model = StemModel.from_run(her2st_run)
    a = ds.section("A1")
    emb, xy = ds.embeddings("A1")[:, 0], np.asarray(a.obsm["spatial"])
    model.spatial = {"kernel": "gauss", "length": 3.0, "rho": 0.9, "section": "test"}
    s = PredictSettings(num_samples=6, sampler="dpm++:3", device="cpu")
    joint = model.sample(emb, xy, s)
    independent = model.sample(emb, xy, PredictSettings(num_samples=6, sampler="dpm++:3", device="cpu",
                                                        spatial_noise=False))
    pitch = np.median(np.sort(np.linalg.norm(xy[:, None] - xy[None], axis=-1), 1)[:, 1])
    rings = shell_pairs(xy / pitch)
    c_joint, c_ind = deviation_correlations(joint, rings), deviation_correlations(independent, rings)
    assert c_joint[0] > 0.4 and c_joint[0] > c_joint[2]
    assert abs(c_ind[0]) < 0.1
    # each spot's spread is the same distribution either way (same network, same calibration)
    assert joint.std(1).mean() == pytest.approx(independent.std(1).mean(), rel=0.1)
    # the section drawn as two jobs (left and right halves, as chunks of a slide would be): neighbours
    # across the border co-vary as much as neighbours inside a half, so the join shows no seam
    left = xy[:, 0] <= np.median(xy[:, 0])
    halves = np.empty_like(joint)
    for part in (left, ~left):
        halves[part] = model.sample(emb[part], xy[part], s)
    i, j = rings[0]
    across = left[i] != left[j]
    c_across, c_inside = deviation_correlations(halves, [(i[across], j[across]), (i[~across], j[~across])])
    assert across.sum() > 10 and c_inside > 0.4
    assert c_across == pytest.approx(c_inside, abs=0.1)
    # saved with the model and recorded in a prediction
    model.save(tmp_path / "m")
    assert StemModel.load(tmp_path / "m").spatial == model.spatial
    out = model.predict_adata(a, PredictSettings(num_samples=2, sampler="dpm++:2", device="cpu"))
    assert out.uns["stem"]["prediction"]["spatial_field"]["rho"] == pytest.approx(0.9)
    assert "spatial_field" not in model.predict_adata(a, PredictSettings(num_samples=2, sampler="dpm++:2",
                                                                         device="cpu", spatial_noise=False)
                                                      ).uns["stem"]["prediction"]


def test_the_spatial_variogram_of_a_draw_is_scored_against_the_truth():
    rng = np.random.default_rng(0)
    xy = _grid(15) * 100.0
    smooth = np.sin(xy[:, :1] / 300.0) + np.cos(xy[:, 1:] / 400.0) + 0.1 * rng.standard_normal((len(xy), 3))
    rings = shell_pairs(xy / 100.0)
    g = spatial_variogram(smooth, rings)
    assert np.all(np.diff(g) > 0)  # a smooth map: further spots differ more
    same = np.repeat(smooth[:, None], 4, axis=1)
    assert probabilistic_scores(smooth, smooth, same + 1e-6 * rng.standard_normal(same.shape),
                                xy=xy)["svgm_err_sample"] < 1e-3
    shuffled = same[rng.permutation(len(xy))]
    assert probabilistic_scores(smooth, smooth, shuffled, xy=xy)["svgm_err_sample"] > 1.0
    assert "svgm_err_sample" not in probabilistic_scores(smooth, smooth, shuffled)
