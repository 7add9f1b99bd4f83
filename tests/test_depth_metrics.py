"""Depth metrics against known answers from their published formulas (Eigen et al. 2014; abs-rel; correlation)."""

import numpy as np
import pytest

from neurodecode._core.errors import ShapeMismatchError, ValidationError
from neurodecode.metrics import abs_rel, align_depth, depth_correlation, evaluate_depth, scale_invariant_log_error

RNG = np.random.default_rng(0)
TRUE = RNG.uniform(0.5, 10.0, (7, 8, 9))


def test_scale_invariant_log_error_pairwise_form():
    """Eigen et al. eq. 1: 1/(2 n^2) sum_ij ((log p_i - log p_j) - (log t_i - log t_j))^2, square-rooted."""
    pred = TRUE * np.exp(RNG.normal(0, 0.2, TRUE.shape))
    got = scale_invariant_log_error(pred, TRUE)
    for k in range(3):
        lp, lt = np.log(pred[k]).ravel(), np.log(TRUE[k]).ravel()
        diff = (lp[:, None] - lp[None]) - (lt[:, None] - lt[None])
        assert got[k] == pytest.approx(np.sqrt((diff ** 2).sum() / (2 * lp.size ** 2)), rel=1e-10)
    np.testing.assert_allclose(scale_invariant_log_error(3.7 * TRUE, TRUE), 0.0, atol=1e-7)  # scale-invariant
    d = np.array([[[0.1, -0.1, 0.3]]])
    assert scale_invariant_log_error(np.exp(d), np.ones_like(d), squared=True)[0] == pytest.approx(
        np.mean(d ** 2) - np.mean(d) ** 2)
    # lam = 0.5 (Eigen's training loss) is not scale-invariant
    assert scale_invariant_log_error(3.7 * TRUE, TRUE, lam=0.5)[0] == pytest.approx(np.sqrt(0.5) * np.log(3.7))


def test_abs_rel_and_correlation_known_answers():
    t = np.array([[[1.0, 2.0, 4.0]]])
    assert abs_rel(np.array([[[2.0, 2.0, 2.0]]]), t)[0] == pytest.approx((1 / 1 + 0 + 2 / 4) / 3)
    np.testing.assert_allclose(depth_correlation(3 * TRUE + 1, TRUE), 1.0, rtol=1e-12)
    noisy = TRUE + RNG.normal(0, 2, TRUE.shape)
    want = [np.corrcoef(noisy[i].ravel(), TRUE[i].ravel())[0, 1] for i in range(len(TRUE))]
    np.testing.assert_allclose(depth_correlation(noisy, TRUE), want, rtol=1e-10)
    np.testing.assert_allclose(depth_correlation(np.exp(TRUE), TRUE, method="spearman"), 1.0)  # monotone
    assert np.isnan(depth_correlation(np.ones((1, 3, 3)), TRUE[:1, :3, :3])[0])


def test_alignment_recovers_affine_and_scaled_maps():
    minmax = (TRUE - 5.0) / 7.0  # a min-max-like affine copy (Takagi's [-1, 1] maps)
    np.testing.assert_allclose(align_depth(minmax, TRUE), TRUE, rtol=1e-10)
    np.testing.assert_allclose(align_depth(0.25 * TRUE, TRUE, method="median"), TRUE, rtol=1e-10)
    res = evaluate_depth(minmax, TRUE, n_boot=20)
    assert res["si_log"]["value"] == pytest.approx(0.0, abs=1e-7) and res["abs_rel"]["value"] == pytest.approx(0, abs=1e-9)


def test_evaluate_depth_protocol_and_shuffled_control():
    pred = TRUE + RNG.normal(0, 1.0, TRUE.shape)
    res = evaluate_depth(pred, TRUE, metrics="si_log,abs_rel,pearson,spearman", n_boot=50, n_shuffles=2)
    assert res["protocol"]["name"] == "depth" and res["n_items"] == 7
    assert res["pearson"]["value"] > res["pearson"]["shuffled"] and res["pearson"]["chance"] == 0.0
    assert res["si_log"]["value"] < res["si_log"]["shuffled"] and not res["si_log"]["higher_is_better"]
    assert res["abs_rel"]["value"] < res["abs_rel"]["shuffled"]
    lo, hi = res["pearson"]["ci"]
    assert lo <= res["pearson"]["value"] <= hi


def test_teaching_errors():
    with pytest.raises(ShapeMismatchError, match="Resize"):
        evaluate_depth(TRUE[:, :4], TRUE)
    with pytest.raises(ValidationError, match="depth > 0"):
        abs_rel(TRUE, TRUE - 20)
    with pytest.raises(ValidationError, match="depth > 0"):
        scale_invariant_log_error(TRUE - 20, TRUE)
    with pytest.raises(ValueError, match="align"):
        evaluate_depth(TRUE, TRUE, align="affine")
