"""Two-way identification and correlation distances on feature vectors.

Two-way identification (MindEye / MindEye2 / Brain-Diffuser definition): with
``r[i, j]`` the Pearson correlation between the features of ground truth ``i`` and
of reconstruction ``j``, reconstruction ``j`` scores the share of the other N - 1
ground-truth images ``i`` with ``r[i, j] < r[j, j]`` (strictly). Chance is 0.5.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._core.errors import ShapeMismatchError, ValidationError
from .._core.validation import check_array, format_error

__all__ = ["two_way_identification", "correlation_distance", "feature_correlations"]


def _features_pair(pred_features: Any, true_features: Any) -> tuple[np.ndarray, np.ndarray]:
    pred = check_array(pred_features, "pred_features", dtype="float")
    true = check_array(true_features, "true_features", dtype="float")
    if pred.ndim < 2 or true.ndim < 2:
        raise ShapeMismatchError(
            format_error("pred_features", "arrays of shape (n_items, n_features...)", pred,
                         "Stack one feature vector per image along the first axis")
        )
    pred = pred.reshape(len(pred), -1)
    true = true.reshape(len(true), -1)
    if pred.shape != true.shape:
        raise ShapeMismatchError(
            format_error("pred_features", f"the shape of true_features {true.shape} (after flattening)", pred,
                         "Extract both feature sets with the same network, layer and image count")
        )
    return pred, true


def _standardise(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64) - x.mean(axis=1, keepdims=True, dtype=np.float64)
    norm = np.sqrt((x * x).sum(axis=1, keepdims=True))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, x / np.where(norm > 0, norm, 1.0), np.nan)


def feature_correlations(pred_features: Any, true_features: Any) -> np.ndarray:
    """Pearson correlations between every ground truth and every reconstruction.

    Parameters
    ----------
    pred_features : array-like of shape (n_items, ...)
        Features of the reconstructions (flattened per item).
    true_features : array-like of shape (n_items, ...)
        Features of the ground-truth images, same order.

    Returns
    -------
    r : ndarray of shape (n_items, n_items)
        ``r[i, j]`` = corr(true_i, pred_j).
    """
    pred, true = _features_pair(pred_features, true_features)
    return _standardise(true) @ _standardise(pred).T


def two_way_identification(pred_features: Any, true_features: Any) -> np.ndarray:
    """Two-way identification score of each reconstruction (chance 0.5).

    Parameters
    ----------
    pred_features : array-like of shape (n_items, ...)
        Features of the reconstructions (flattened per item), e.g. AlexNet
        ``features.4`` activations.
    true_features : array-like of shape (n_items, ...)
        Features of the ground-truth images, same order.

    Returns
    -------
    scores : ndarray of shape (n_items,)
        For reconstruction ``j``: the share of the other ``n_items - 1`` ground truths
        whose correlation with it is lower than its own ground truth's. The published
        number is the mean (as a percentage).

    Examples
    --------
    >>> import numpy as np
    >>> f = np.random.default_rng(0).normal(size=(7, 9))
    >>> two_way_identification(f, f).mean()
    1.0
    """
    r = feature_correlations(pred_features, true_features)
    n = r.shape[0]
    if n < 2:
        raise ValidationError(format_error("pred_features", "at least 2 items for two-way identification", f"{n} item"))
    congruent = np.diag(r)
    wins = (r < congruent[None, :]).sum(axis=0)  # over ground truths i, for each reconstruction j
    return wins / (n - 1)


def correlation_distance(pred_features: Any, true_features: Any) -> np.ndarray:
    """Correlation distance (1 - Pearson r) between each reconstruction and its ground truth.

    Lower is better (EfficientNet-B1 and SwAV-ResNet50 scores of MindEye2), as
    ``scipy.spatial.distance.correlation`` computes it.

    Parameters
    ----------
    pred_features : array-like of shape (n_items, ...)
        Features of the reconstructions.
    true_features : array-like of shape (n_items, ...)
        Features of the ground-truth images, same order.

    Returns
    -------
    d : ndarray of shape (n_items,)
        Per-item correlation distances in [0, 2].
    """
    pred, true = _features_pair(pred_features, true_features)
    return 1.0 - (_standardise(pred) * _standardise(true)).sum(axis=1)
