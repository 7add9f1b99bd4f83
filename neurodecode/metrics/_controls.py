"""Controls: a decoder must beat itself trained on shuffled brain-stimulus pairs.

Two controls, from strongest to cheapest:

- :func:`shuffled_control` refits the same decoder with the training targets
  permuted across trials (the brain no longer tells anything about the stimulus) and
  scores its test predictions. A decoder that does not beat this has learned nothing
  from the brain.
- :func:`shuffled_pairing` keeps the predictions and scores them against the truth of
  *other* items (a random derangement): the floor of a metric for these stimuli.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .._core.errors import ShapeMismatchError, ValidationError
from .._core.validation import format_error
from ._stats import as_rng, derangement

__all__ = ["shuffled_control", "shuffled_pairing", "derangement", "noise_inputs", "noise_input_control"]



def shuffled_control(
    fit_predict: Callable[[Any, Any, Any], Any],
    X_train: Any,
    Y_train: Any,
    X_test: Any,
    score: Callable[[Any], float],
    n_permutations: int = 5,
    random_state: Any = 0,
) -> dict[str, Any]:
    """Score the same decoder refitted on trial-permuted training targets.

    Parameters
    ----------
    fit_predict : callable
        ``fit_predict(X_train, Y_train_permuted, X_test) -> Y_pred``: fits a fresh
        decoder (same hyper-parameters as the real one) and predicts the test set.
    X_train : array-like of shape (n_train, ...)
        Training brain data.
    Y_train : array-like of shape (n_train, ...)
        Training targets; their rows are permuted (whole trials move together).
    X_test : array-like of shape (n_test, ...)
        Test brain data.
    score : callable
        ``score(Y_pred) -> float``, the metric of interest against the true test targets.
    n_permutations : int
        Number of refits with independent permutations.
    random_state : int | numpy.random.Generator | None
        Seed of the permutations.

    Returns
    -------
    result : dict
        ``"values"``: ndarray of shape (n_permutations,); ``"mean"``, ``"std"``;
        ``"n_permutations"``, ``"random_state"``.

    Examples
    --------
    >>> from sklearn.linear_model import Ridge  # doctest: +SKIP
    >>> fp = lambda X, Y, Xt: Ridge().fit(X, Y).predict(Xt)  # doctest: +SKIP
    >>> shuffled_control(fp, X, Y, Xt, lambda P: r2(P, Yt))["mean"]  # doctest: +SKIP
    """
    Y = np.asarray(Y_train)
    n = len(Y)
    if len(np.asarray(X_train)) != n:
        raise ShapeMismatchError(format_error("Y_train", f"{len(np.asarray(X_train))} rows like X_train", Y))
    return _permutation_scores(lambda perm: float(score(fit_predict(X_train, Y[perm], X_test))), n,
                               n_permutations, random_state)


def shuffled_pairing(
    score: Callable[[Any, Any], Any],
    pred: Any,
    truth: Any,
    n_permutations: int = 5,
    random_state: Any = 0,
) -> dict[str, Any]:
    """Score predictions against the truth of other items (random derangements).

    Parameters
    ----------
    score : callable
        ``score(pred, truth) -> float or per-item array`` (arrays are averaged).
    pred : array-like of shape (n_items, ...)
        Predictions (reconstructions, latents...).
    truth : array-like of shape (n_items, ...)
        Their ground truth, same order; it is re-paired by a derangement.
    n_permutations : int
        Number of derangements.
    random_state : int | numpy.random.Generator | None
        Seed.

    Returns
    -------
    result : dict
        ``"values"`` (ndarray of shape (n_permutations,)), ``"mean"``, ``"std"``,
        ``"n_permutations"``, ``"random_state"``.
    """
    truth_arr = np.asarray(truth)
    if len(np.asarray(pred)) != len(truth_arr):
        raise ShapeMismatchError(format_error("pred", f"{len(truth_arr)} items like truth", np.asarray(pred)))
    return _permutation_scores(
        lambda perm: float(np.nanmean(np.asarray(score(pred, truth_arr[perm]), dtype=float))), len(truth_arr),
        n_permutations, random_state)


def _permutation_scores(score_perm: Callable[[np.ndarray], float], n: int, n_permutations: int,
                        random_state: Any) -> dict[str, Any]:
    """``score_perm(perm)`` for ``n_permutations`` random derangements of ``range(n)``, and their summary."""
    if int(n_permutations) < 1:
        raise ValidationError(format_error("n_permutations", "at least 1", n_permutations))
    rng = as_rng(random_state)
    values = np.empty(int(n_permutations))
    for p in range(int(n_permutations)):
        values[p] = score_perm(derangement(n, rng))
    return {
        "values": values,
        "mean": float(values.mean()),
        "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        "n_permutations": int(n_permutations),
        "random_state": random_state if not isinstance(random_state, np.random.Generator) else None,
    }


def noise_inputs(X: Any, *, lengths: Any = None, random_state: Any = 0) -> np.ndarray:
    """Gaussian noise shaped like ``X``, with each channel's mean and standard deviation.

    The input of the noise-input control of text decoders (GLIM's protocol): a decoder
    that writes equally good sentences from noise has learned a language prior, not
    anything from the brain.

    Parameters
    ----------
    X : ndarray of shape (n_trials, n_channels, n_times)
        Brain inputs (zero-padded past ``lengths`` when given).
    lengths : ndarray of int, shape (n_trials,) or None
        Valid samples per trial; padding stays zero and is excluded from the statistics.
    random_state : int or numpy.random.Generator
        Seed (recorded by the caller).

    Returns
    -------
    noise : ndarray, same shape and dtype as ``X``
    """
    X = np.asarray(X)
    if X.ndim != 3:
        raise ShapeMismatchError(format_error("X", "an array of shape (n_trials, n_channels, n_times)", X))
    rng = as_rng(random_state)
    valid = np.ones(X.shape[0:1] + X.shape[2:], bool)
    if lengths is not None:
        valid = np.arange(X.shape[2])[None, :] < np.asarray(lengths)[:, None]
    mask = np.broadcast_to(valid[:, None, :], X.shape)
    count = mask.sum(axis=(0, 2))
    mean = np.where(mask, X, 0).sum(axis=(0, 2)) / np.maximum(count, 1)
    var = (np.where(mask, X - mean[None, :, None], 0) ** 2).sum(axis=(0, 2)) / np.maximum(count, 1)
    noise = rng.normal(size=X.shape) * np.sqrt(var)[None, :, None] + mean[None, :, None]
    return np.where(mask, noise, 0).astype(X.dtype, copy=False)


def noise_input_control(generate: Callable[[np.ndarray], Any], X: Any, references: Any, *, lengths: Any = None,
                        metrics: Any = ("bleu1", "rouge1_f", "wer"), random_state: Any = 0,
                        **evaluate_kwargs: Any) -> dict[str, Any]:
    """Score a text decoder on real inputs and on channel-matched noise, side by side.

    Parameters
    ----------
    generate : callable
        ``generate(X) -> list of str``, the decoder without teacher forcing (for GLIM:
        ``lambda x: model.generate(x, lengths)``).
    X : ndarray of shape (n_trials, n_channels, n_times)
        Test inputs.
    references : list of str or list of list of str
        Target sentences (or paraphrases) per trial.
    lengths : ndarray of int or None
        Valid samples per trial (padding is kept at zero in the noise).
    metrics : sequence of str
        Text metrics (see :func:`~neurodecode.metrics.evaluate_text`).
    random_state : int
        Seed of the noise and of the bootstrap.
    **evaluate_kwargs
        Passed to :func:`~neurodecode.metrics.evaluate_text` (``weights``, ``n_boot``...).

    Returns
    -------
    result : dict
        ``"brain"`` and ``"noise"``: the two evaluations; ``"hypotheses"`` and
        ``"noise_hypotheses"``: the generated sentences; ``"beats_noise"``: per metric,
        whether the brain score is better than the noise score.
    """
    from ._text import evaluate_text

    hyps = list(generate(np.asarray(X)))
    noise_hyps = list(generate(noise_inputs(X, lengths=lengths, random_state=random_state)))
    brain = evaluate_text(hyps, references, metrics=metrics, random_state=random_state, **evaluate_kwargs)
    noise = evaluate_text(noise_hyps, references, metrics=metrics, random_state=random_state, **evaluate_kwargs)
    beats = {}
    for name in brain:
        b, n = brain[name], noise.get(name)
        if isinstance(b, dict) and isinstance(n, dict) and b.get("value") is not None and n.get("value") is not None:
            hib = b.get("higher_is_better", True)
            beats[name] = bool(b["value"] > n["value"]) if hib else bool(b["value"] < n["value"])
    return {"brain": brain, "noise": noise, "hypotheses": hyps, "noise_hypotheses": noise_hyps, "beats_noise": beats}
