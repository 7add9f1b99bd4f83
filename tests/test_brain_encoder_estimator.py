"""sklearn-style BrainEncoder: fit on features or images, the transformer learns a known token->voxel map (loss
falls, held-out r well above 0), the ridge baseline recovers a linear one, ROI queries come from labels."""

from __future__ import annotations

import numpy as np
import pytest

from neurodecode.estimators._encoder import BrainEncoder


def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 9, 28)).astype(np.float32)
    W = np.random.default_rng(99).standard_normal((28, 8))
    # voxels 0-3 read the mean token, voxels 4-7 the first (top-left) token: two kinds of "ROI"
    Y = np.concatenate([X.mean(1) @ W[:, :4] * 3, X[:, 0] @ W[:, 4:]], axis=1)
    return X, Y + 0.1 * rng.standard_normal(Y.shape)


def test_transformer_learns_a_known_map_with_roi_queries():
    X, Y = _data(192)
    Xt, Yt = _data(48, seed=1)
    est = BrainEncoder("dinov2-base-q-tokens-tiny", config="tiny", epochs=20, batch_size=16, lr=2e-3,
                       lr_drop=None, grad_clip=1.0)
    est.fit(X, Y, roi_labels=np.array([1, 1, 1, 1, 2, 2, 2, 2]))
    assert est.roi_names_ == ["1", "2"]
    losses = [h["loss"] for h in est.history_ if "loss" in h]
    assert losses[-1] < 0.6 * losses[0]
    assert est.score(Xt, Yt) > 0.5
    assert est.predict(Xt).shape == (48, 8)


def test_ridge_baseline_and_images_path():
    X, Y = _data(500)
    ridge = BrainEncoder("dinov2-base-q-tokens-tiny", model="ridge", ridge_pool="flatten").fit(X, Y)
    Xt, Yt = _data(40, seed=2)
    assert ridge.score(Xt, Yt) > 0.9
    imgs = np.random.default_rng(0).integers(0, 256, (20, 50, 45, 3), dtype=np.uint8)
    Yi = np.random.default_rng(1).standard_normal((20, 5))
    est = BrainEncoder("dinov2-base-q-tokens-tiny", config="tiny", epochs=1, batch_size=8).fit(imgs, Yi)
    assert est.predict(imgs[:3]).shape == (3, 5) and est.roi_names_ == ["all"]


def test_unfitted_and_bad_inputs_teach():
    from sklearn.exceptions import NotFittedError

    from neurodecode.errors import ShapeMismatchError, ValidationError

    with pytest.raises(NotFittedError):
        BrainEncoder().predict(np.zeros((2, 9, 28), dtype=np.float32))
    X, Y = _data(16)
    with pytest.raises(ShapeMismatchError, match="one row per image"):
        BrainEncoder("dinov2-base-q-tokens-tiny", config="tiny").fit(X, Y[:10])
    with pytest.raises(ValidationError, match="token space"):
        BrainEncoder("dinov2-base-tiny", config="tiny").fit(X.mean(1), Y)
