"""Shipped stimuli, image features and the ideal-observer scoring helpers (known answers)."""

from __future__ import annotations

import numpy as np
import pytest

from neurodecode._core.errors import ValidationError
from neurodecode.simulate import load_stimuli
from neurodecode.simulate._features import gabor_energy, semantic_features
from neurodecode.simulate._ideal import chance_scores, ideal_observer, identification_scores


def test_fashion_mnist_shipped_subset_is_balanced_and_captioned():
    images, labels, names, captions = load_stimuli()
    assert images.shape == (2500, 28, 28, 3) and images.dtype == np.uint8
    assert np.array_equal(np.bincount(labels), np.full(10, 250))
    # round-robin order: any prefix of 10 * k images is balanced
    assert np.array_equal(labels[:20], np.tile(np.arange(10), 2))
    assert list(names[[7, 9]]) == ["sneaker", "ankle boot"]
    assert captions[7] == "a photo of a sneaker" and captions[9] == "a photo of an ankle boot"
    assert np.array_equal(images[..., 0], images[..., 2])  # grey replicated to RGB
    assert 40 < images.mean() < 120  # real images, not blank or noise


def test_load_stimuli_n_and_size():
    images, labels, _, captions = load_stimuli("fashion-mnist", n=7, size=9)
    assert images.shape == (7, 9, 9, 3) and labels.shape == (7,) and captions.shape == (7,)
    photos, plabels, pnames, pcaps = load_stimuli("skimage-photos")
    assert photos.shape == (4, 128, 128, 3) and list(pnames) == ["astronaut", "coffee", "chelsea", "rocket"]
    assert pcaps[2] == "a photo of a cat"
    assert not np.array_equal(photos[..., 0], photos[..., 2])  # colour photographs


@pytest.mark.parametrize("kwargs", [{"name": "mnist"}, {"n": 0}, {"n": 2501}, {"size": 2}])
def test_load_stimuli_rejects_bad_arguments(kwargs):
    with pytest.raises(ValidationError):
        load_stimuli(**kwargs)


def test_gabor_energy_is_orientation_and_scale_selective():
    # vertical stripes of wavelength 8 px on a 32 px image: channel (scale H/4 = 8 px, orientation 0) wins
    x = np.arange(32)
    grating = (127.5 + 127 * np.cos(2 * np.pi * x / 8.0))[None, :].repeat(32, 0)
    img = np.repeat(grating[None, ..., None], 3, axis=-1).astype(np.uint8)
    energy = gabor_energy(img, grid=4)
    assert energy.shape == (1, 12, 4, 4)
    per_channel = energy[0].mean(axis=(1, 2))
    assert int(np.argmax(per_channel)) == 2 * 4 + 0
    # horizontal stripes -> orientation index 2 (90 degrees)
    energy_h = gabor_energy(np.transpose(img, (0, 2, 1, 3)), grid=4)[0].mean(axis=(1, 2))
    assert int(np.argmax(energy_h)) == 2 * 4 + 2
    # a blank image has no energy
    assert np.allclose(gabor_energy(np.full((1, 32, 32, 3), 90, np.uint8)), 0, atol=1e-5)


def test_semantic_features_category_half_is_shared_within_a_class():
    rng = np.random.default_rng(0)
    energy = rng.random((9, 12, 8, 8)).astype(np.float32)
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2])
    feats = semantic_features(energy, labels, dim=7, seed=3)
    assert feats.shape == (9, 14)
    assert np.allclose(feats[0, :7], feats[3, :7]) and not np.allclose(feats[0, :7], feats[1, :7])
    assert not np.allclose(feats[0, 7:], feats[3, 7:])  # image half still tells images apart
    assert semantic_features(energy, None, dim=7).shape == (9, 7)
    assert np.array_equal(feats, semantic_features(energy, labels, dim=7, seed=3))


def test_identification_scores_known_answer():
    s = np.array([[3.0, 1.0, 2.0, 0.0],
                  [4.0, 2.0, 1.0, 0.0],
                  [0.0, 1.0, 2.0, 2.0],   # one tie
                  [1.0, 2.0, 3.0, 0.5]])
    out = identification_scores(s, ks=(1, 2))
    # wins per row: 3, 2, 2 + 0.5 tie, 0 -> 7.5 / 12
    assert out["two_way_identification"] == pytest.approx(7.5 / 12)
    # pessimistic ranks: 1, 2, 2, 4
    assert out["top1_retrieval"] == pytest.approx(0.25)
    assert out["top2_retrieval"] == pytest.approx(0.75)
    assert out["mean_rank"] == pytest.approx(9 / 4)
    assert chance_scores(4, ks=(1, 2)) == {"two_way_identification": 0.5, "mean_rank": 2.5,
                                           "top1_retrieval": 0.25, "top2_retrieval": 0.5}


def test_ideal_observer_is_perfect_without_noise_and_at_chance_for_pure_noise():
    rng = np.random.default_rng(1)
    means = rng.standard_normal((9, 8))
    perfect = ideal_observer(means + 1e-9, means, np.ones(8))
    assert perfect["top1_retrieval"] == 1.0 and perfect["n_test"] == 9
    blind = [ideal_observer(rng.standard_normal((40, 8)) * 100, rng.standard_normal((40, 8)) * 0.01,
                            np.ones(8) * 100)["two_way_identification"] for _ in range(5)]
    assert abs(np.mean(blind) - 0.5) < 0.05
