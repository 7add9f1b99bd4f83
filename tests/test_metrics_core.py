"""Pure metric functions against the literature's definitions, on hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest

from neurodecode._core.errors import ShapeMismatchError, ValidationError
from neurodecode.metrics import (
    bootstrap_ci,
    correlation_distance,
    kway_topk,
    pixcorr,
    retrieval_top1,
    shuffled_control,
    shuffled_pairing,
    ssim,
    two_way_identification,
)


def _reference_two_way(pred, true):
    """MindEye's published loop, written out: np.corrcoef then a strict comparison."""
    n = len(true)
    r = np.corrcoef(true.reshape(n, -1), pred.reshape(n, -1))[:n, n:]
    out = []
    for j in range(n):
        out.append(sum(r[i, j] < r[j, j] for i in range(n) if i != j) / (n - 1))
    return np.array(out)


def test_two_way_hand_computed():
    true = np.eye(3)
    pred = np.array([[1.0, 0, 0], [1.0, 0, 0], [0.0, 1, 2]])
    # pred0 = true0 -> beats both; pred1 correlates -0.5 with its own truth and with true2 (a tie is a loss)
    # and +1 with true0 -> 0; pred2 correlates .866 with true2, 0 with true1, -.866 with true0 -> 1.
    np.testing.assert_allclose(two_way_identification(pred, true), [1.0, 0.0, 1.0])


def test_two_way_matches_reference_loop_and_limits(rng):
    true = rng.normal(size=(9, 4, 2))
    pred = true + rng.normal(scale=2.0, size=true.shape)
    got = two_way_identification(pred, true)
    np.testing.assert_allclose(got, _reference_two_way(pred, true))
    assert got.shape == (9,)
    # identical features: 100 %
    assert two_way_identification(true, true).mean() == 1.0
    # unrelated features: about 50 %
    a, b = rng.normal(size=(300, 20)), rng.normal(size=(300, 20))
    assert abs(two_way_identification(a, b).mean() - 0.5) < 0.05


def test_two_way_errors():
    with pytest.raises(ShapeMismatchError, match="pred_features"):
        two_way_identification(np.zeros((7, 8)), np.zeros((7, 9)))
    with pytest.raises(ValidationError, match="at least 2"):
        two_way_identification(np.ones((1, 8)), np.ones((1, 8)))


def test_correlation_distance_matches_scipy(rng):
    from scipy.spatial.distance import correlation

    a, b = rng.normal(size=(7, 8)), rng.normal(size=(7, 8))
    np.testing.assert_allclose(correlation_distance(a, b), [correlation(a[i], b[i]) for i in range(7)])
    np.testing.assert_allclose(correlation_distance(a, 3 * a + 1), 0.0, atol=1e-12)
    np.testing.assert_allclose(correlation_distance(a, -a), 2.0)


def _images(rng, n=7, h=8, w=9):
    return rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def test_pixcorr_hand_and_reference(rng):
    t = _images(rng)
    tf = t / 255.0
    # an affine change of the pixels keeps r = 1; the negative image gives -1
    np.testing.assert_allclose(pixcorr(0.5 * tf + 0.2, t, prep_size=None, size=8), 1.0, atol=1e-9)
    np.testing.assert_allclose(pixcorr(1.0 - tf, tf, prep_size=None, size=8), -1.0, atol=1e-9)
    r = _images(rng)
    # no resize when the size matches: the plain per-pair Pearson r of the flattened RGB pixels
    t8, r8 = t[:, :, :8], r[:, :, :8]
    want = [np.corrcoef(r8[i].ravel(), t8[i].ravel())[0, 1] for i in range(7)]
    np.testing.assert_allclose(pixcorr(r8, t8, prep_size=None, size=8), want, rtol=1e-6)
    # hand value: a 2-pixel-row image, pixels (0, 1) vs (0, .5) per channel plane -> r = 1
    a = np.zeros((2, 2, 2, 3))
    a[:, 0, 0] = 1.0
    b = a * 0.5
    b[1, 1, 1, 0] = 0.5  # one extra bright pixel: r = cov/sd by hand
    x, y = a[1].ravel(), b[1].ravel()
    r_hand = ((x - x.mean()) @ (y - y.mean())) / np.sqrt(((x - x.mean()) ** 2).sum() * ((y - y.mean()) ** 2).sum())
    np.testing.assert_allclose(pixcorr(b, a, prep_size=None, size=2), [1.0, r_hand])


def test_resize_convention_is_torchvision_bilinear(rng):
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.functional import resize

    from neurodecode.metrics._image import resize_images

    x = rng.random((2, 7, 9, 3)).astype(np.float32)
    want = resize(torch.from_numpy(x).permute(0, 3, 1, 2), [13, 13], InterpolationMode.BILINEAR, antialias=False)
    np.testing.assert_allclose(resize_images(x, 13), want.permute(0, 2, 3, 1).numpy(), atol=1e-6)


def test_ssim_matches_skimage_gray_gaussian(rng):
    from skimage.color import rgb2gray
    from skimage.metrics import structural_similarity

    t, r = _images(rng, h=16, w=16), _images(rng, h=16, w=16)
    got = ssim(r, t, prep_size=None, size=16)
    want = [structural_similarity(rgb2gray(r[i] / 255.0), rgb2gray(t[i] / 255.0), gaussian_weights=True,
                                  sigma=1.5, use_sample_covariance=False, data_range=1.0) for i in range(7)]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(ssim(t, t, prep_size=None, size=16), 1.0)
    # SSIM is on grayscale: a colour change with the same luminance scores 1
    same_gray = t / 255.0
    np.testing.assert_allclose(ssim(same_gray[..., ::-1] * 0 + rgb2gray(same_gray)[..., None], same_gray,
                                    prep_size=None, size=16), 1.0, atol=1e-6)


def test_image_input_errors(rng):
    with pytest.raises(ShapeMismatchError, match="moveaxis"):
        pixcorr(np.zeros((7, 3, 8, 9)), np.zeros((7, 3, 8, 9)))
    with pytest.raises(ValidationError, match=r"\[0, 1\]"):
        pixcorr(np.full((2, 8, 8, 3), 200.0), np.zeros((2, 8, 8, 3)))
    with pytest.raises(ShapeMismatchError, match="as many images"):
        ssim(np.zeros((3, 8, 8, 3)), np.zeros((2, 8, 8, 3)))


def test_retrieval_hand_case_both_directions():
    target = np.eye(3)
    brain = np.array([[1.0, 0, 0], [0.9, 0.1, 0], [0, 0, 1.0]])
    res = retrieval_top1(brain, target, n_way=300, n_repeats=4)
    # brain 1 finds image 0 (miss): brain retrieval 2/3; image 1 finds brain 1 (the only brain latent
    # with a component 1): image retrieval (MindEye2's FwdRetrieval) 3/3
    assert res["brain_retrieval"] == pytest.approx(2 / 3)
    assert res["image_retrieval"] == pytest.approx(1.0)
    assert res["n_way"] == 3 and res["chance"] == pytest.approx(1 / 3)
    np.testing.assert_allclose(res["per_item"]["brain_retrieval"], [1, 0, 1])


def test_retrieval_perfect_and_chance(rng):
    t = rng.normal(size=(400, 5, 4))
    perfect = retrieval_top1(t * 2, t, n_way=300, n_repeats=3)
    assert perfect["brain_retrieval"] == 1.0 and perfect["image_retrieval"] == 1.0
    assert perfect["per_repeat"]["image_retrieval"].shape == (3,)
    noise = retrieval_top1(rng.normal(size=(400, 20)), t, n_way=300, n_repeats=5)
    assert noise["image_retrieval"] < 0.02 and noise["chance"] == pytest.approx(1 / 300)
    # same seed, same draws; another seed, other draws
    noisy = t + rng.normal(size=t.shape) * 3
    a, b, c = (retrieval_top1(noisy, t, n_way=50, n_repeats=5, random_state=s) for s in (1, 1, 2))
    np.testing.assert_array_equal(a["per_repeat"]["image_retrieval"], b["per_repeat"]["image_retrieval"])
    assert not np.array_equal(a["per_repeat"]["image_retrieval"], c["per_repeat"]["image_retrieval"])


def test_kway_hand_case():
    concepts = np.eye(4)
    brain = np.eye(4)
    brain[0] = [0.5, 1.0, 0, 0]  # closer to concept 1 than to its own concept 0
    res = kway_topk(brain, concepts, ks=(2, 4), topk=(1, 2), random_state=0)
    assert set(k for k in res if k.startswith("top")) == {"top1@2", "top1@4", "top2@4"}
    assert res["top1@4"] == pytest.approx(3 / 4)  # 4-way = all concepts: only trial 0 misses
    assert res["top2@4"] == 1.0  # its concept is second
    assert res["chance"]["top2@4"] == pytest.approx(0.5)
    np.testing.assert_array_equal(res["per_item"]["top1@4"], [0, 1, 1, 1])


def test_kway_chance_with_labels(rng):
    concepts = rng.normal(size=(50, 16))
    labels = rng.integers(0, 50, size=2000)
    res = kway_topk(rng.normal(size=(2000, 16)), concepts, ks=(2, 10, 50), labels=labels)
    assert abs(res["top1@2"] - 0.5) < 0.04
    assert abs(res["top5@10"] - 0.5) < 0.04
    assert abs(res["top1@50"] - 0.02) < 0.015
    good = kway_topk(concepts[labels] + 0.01 * rng.normal(size=(2000, 16)), concepts, ks=(50,), labels=labels)
    assert good["top1@50"] == 1.0
    with pytest.raises(ValidationError, match="ks"):
        kway_topk(concepts, concepts, ks=(200,))
    with pytest.raises(ShapeMismatchError, match="labels"):
        kway_topk(concepts[:7], concepts)


def test_bootstrap_ci_shrinks_and_is_seeded(rng):
    small = rng.normal(1.0, 1.0, size=20)
    large = rng.normal(1.0, 1.0, size=2000)
    lo_s, hi_s = bootstrap_ci(small, n_boot=500)
    lo_l, hi_l = bootstrap_ci(large, n_boot=500)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 5  # about 1 / sqrt(100)
    assert (hi_l - lo_l) == pytest.approx(2 * 1.96 / np.sqrt(2000), rel=0.15)
    assert bootstrap_ci(small, random_state=3) == bootstrap_ci(small, random_state=3)
    assert bootstrap_ci(np.full(9, 0.25)) == (0.25, 0.25)
    # a custom statistic goes through the same resampling
    lo_m, hi_m = bootstrap_ci(large, n_boot=300, statistic=np.median)
    assert lo_m < np.median(large) < hi_m
    with pytest.raises(ValidationError, match="n_boot"):
        bootstrap_ci(small, n_boot=0)


def test_shuffled_controls_sit_at_chance(rng):
    X = rng.normal(size=(120, 9))
    W = rng.normal(size=(9, 8))
    Xt = rng.normal(size=(60, 9))
    Y, Yt = X @ W, Xt @ W

    def fit_predict(X_tr, Y_tr, X_te):
        coef, *_ = np.linalg.lstsq(X_tr, Y_tr, rcond=None)
        return X_te @ coef

    def score(P):
        return float(two_way_identification(P, Yt).mean())

    assert score(fit_predict(X, Y, Xt)) > 0.95
    ctrl = shuffled_control(fit_predict, X, Y, Xt, score, n_permutations=8, random_state=0)
    assert ctrl["values"].shape == (8,)
    assert abs(ctrl["mean"] - 0.5) < 0.1
    pair = shuffled_pairing(two_way_identification, Yt, Yt, n_permutations=10, random_state=0)
    assert abs(pair["mean"] - 0.5) < 0.06
    assert pair["values"].min() < 0.8  # never the true pairing
