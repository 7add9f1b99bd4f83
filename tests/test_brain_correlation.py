"""Encoding accuracy and brain correlation with known answers: a perfect encoder of simulated responses reaches the
noise ceiling NSD's formula predicts (r^2 / NC ~ 1), and the true linear map gives the correlation the noise level
implies (sqrt(signal var / (signal var + noise var)))."""

from __future__ import annotations

import numpy as np
import pytest

from neurodecode.metrics._brain_correlation import (
    brain_correlation,
    encoding_accuracy,
    noise_ceiling_from_ncsnr,
    pearson_columns,
    pearson_rows,
    roi_masks,
)


def test_pearson_helpers_match_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((7, 9)), rng.standard_normal((7, 9))
    np.testing.assert_allclose(pearson_columns(a, b), [np.corrcoef(a[:, j], b[:, j])[0, 1] for j in range(9)])
    np.testing.assert_allclose(pearson_rows(a, b), [np.corrcoef(a[i], b[i])[0, 1] for i in range(7)])
    assert np.isnan(pearson_columns(np.ones((5, 1)), rng.standard_normal((5, 1)))[0])


def test_noise_ceiling_is_nsds_formula():
    # Allen et al. 2022: NC = 100 * ncsnr^2 / (ncsnr^2 + 1/n); ncsnr 1 with 3 trials -> 75 %
    np.testing.assert_allclose(noise_ceiling_from_ncsnr([1.0, 0.5, 0.0], 3), [0.75, 0.25 / (0.25 + 1 / 3), 0.0])
    np.testing.assert_allclose(noise_ceiling_from_ncsnr([1.0], 1), [0.5])


def test_a_perfect_encoder_reaches_the_noise_ceiling():
    """Responses = signal + noise averaged over 3 trials; the true signal as prediction gives r^2 = NC in
    expectation, so r^2 / NC ~ 1 (mean over many voxels); a noisier voxel set has a lower ceiling, same ratio."""
    rng = np.random.default_rng(1)
    n_img, n_vox, reps = 2000, 300, 3
    signal = rng.standard_normal((n_img, n_vox))
    ncsnr = np.where(np.arange(n_vox) < 150, 1.0, 0.4)
    noise = rng.standard_normal((reps, n_img, n_vox)).mean(0) / ncsnr  # noise sd = signal sd / ncsnr
    measured = signal + noise
    nc = noise_ceiling_from_ncsnr(ncsnr, reps)
    rois = {"good": np.arange(n_vox) < 150, "poor": np.arange(n_vox) >= 150}
    res = encoding_accuracy(signal, measured, noise_ceiling=nc, rois=rois)
    assert res["rois"]["good"]["nc_r2"]["mean"] == pytest.approx(1.0, abs=0.03)
    assert res["rois"]["poor"]["nc_r2"]["mean"] == pytest.approx(1.0, abs=0.05)
    assert res["rois"]["good"]["r2"]["mean"] == pytest.approx(0.75, abs=0.03)
    assert res["rois"]["poor"]["r2"]["mean"] == pytest.approx(0.16 / (0.16 + 1 / 3), abs=0.03)
    assert res["rois"]["all"]["n_voxels"] == n_vox and res["r"].shape == (n_vox,)
    # an encoder that knows nothing scores ~0
    null = encoding_accuracy(rng.standard_normal((n_img, n_vox)), measured, noise_ceiling=nc)
    assert abs(null["rois"]["all"]["r"]["mean"]) < 0.01


def test_brain_correlation_of_the_true_linear_map_is_the_simulators_expected_correlation():
    """Measured = X W + noise (sd 1); the signal X W has variance 4 across voxels and images. With the
    reconstructions equal to the seen images and the encoder the true map, each image's r across voxels is
    sqrt(4 / (4 + 1)) = 0.894 in expectation; the shuffled control is ~0; a worse reconstruction scores lower."""
    rng = np.random.default_rng(2)
    n_img, p, n_vox = 60, 16, 4000
    X = rng.standard_normal((n_img, p))
    W = rng.standard_normal((p, n_vox)) * (2.0 / np.sqrt(p))
    measured = X @ W + rng.standard_normal((n_img, n_vox))

    def encoder(images):
        return np.asarray(images) @ W

    res = brain_correlation(X, measured, encoder, rois={"first": np.arange(n_vox) < 2000,
                                                       "second": np.arange(n_vox) >= 2000}, seen=X)
    expected = np.sqrt(4.0 / 5.0)
    for roi in ("first", "second"):
        assert res["rois"][roi]["brain_corr"] == pytest.approx(expected, abs=0.02)
        assert abs(res["rois"][roi]["shuffled"]) < 0.05
        assert res["rois"][roi]["seen"] == pytest.approx(res["rois"][roi]["brain_corr"])
    assert res["per_item"]["first"].shape == (n_img,)
    # reconstructions that keep half of the image's features (the rest another image's) correlate less
    worse = 0.5 * X + 0.5 * X[::-1]
    lower = brain_correlation(worse, measured, encoder)["rois"]["all"]["brain_corr"]
    assert 0.3 < lower < expected - 0.1
    per_voxel = brain_correlation(X, measured, encoder, protocol="per-voxel")
    assert per_voxel["rois"]["all"]["brain_corr"] == pytest.approx(expected, abs=0.03)
    assert per_voxel["per_voxel"]["all"].shape == (n_vox,)


def test_roi_masks_and_errors_teach():
    from neurodecode.errors import ShapeMismatchError, ValidationError

    masks = roi_masks(np.array([1, 2, 0, 1]))
    assert list(masks) == ["all", "1", "2"] and masks["1"].tolist() == [True, False, False, True]
    with pytest.raises(ShapeMismatchError, match="rois"):
        encoding_accuracy(np.zeros((5, 3)), np.ones((5, 3)), rois={"x": [True, False]})
    with pytest.raises(ValidationError, match="percent"):
        rng = np.random.default_rng(0)
        encoding_accuracy(rng.random((5, 3)), rng.random((5, 3)), noise_ceiling=[50.0, 20.0, 10.0])
    with pytest.raises(ShapeMismatchError, match="same voxels"):
        brain_correlation(np.zeros((4, 2)), np.zeros((4, 3)), lambda x: np.zeros((4, 2)))
