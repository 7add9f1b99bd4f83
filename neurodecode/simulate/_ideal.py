"""The ideal observer: the best achievable identification given the true encoding model.

For a test response ``r`` (repeats averaged, known nuisance terms removed) and candidate stimuli ``j`` whose
clean predicted responses ``m_j`` and noise covariance ``C`` are known, the Bayes-optimal guess under a flat
prior ranks candidates by the Gaussian log-likelihood ``-0.5 (r - m_j)^T C^{-1} (r - m_j)``. Scoring that
ranking with the field's protocols (two-way identification, top-k retrieval) gives the ceiling every decoder
is judged against. The scoring helpers below are small NumPy versions kept here so that ``simulate`` needs no
``metrics`` import.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._core.errors import ShapeMismatchError
from .._core.validation import check_array, format_error

__all__ = ["gaussian_loglik", "identification_scores", "ideal_observer", "correlation_scores", "chance_scores"]


def gaussian_loglik(responses: np.ndarray, means: np.ndarray, noise_sd: np.ndarray | None = None,
                    *, whitener: np.ndarray | None = None) -> np.ndarray:
    """Log-likelihood (up to a constant) of every response under every candidate's mean.

    Parameters
    ----------
    responses : ndarray of shape (n_queries, n_features)
        Observed responses.
    means : ndarray of shape (n_candidates, n_features)
        Clean (noise-free) responses of the candidates under the true model.
    noise_sd : ndarray of shape (n_features,) or None
        Standard deviation of independent noise per feature (of the averaged response).
    whitener : ndarray of shape (n_features, n_features) or None
        Instead of ``noise_sd``: a matrix ``W`` with ``W C W^T = I`` for correlated noise of covariance ``C``.

    Returns
    -------
    loglik : ndarray of shape (n_queries, n_candidates)
        ``-0.5 * ||W (r_i - m_j)||^2``.
    """
    r = check_array(responses, "responses", ndim=2, dtype="float").astype(np.float64)
    m = check_array(means, "means", ndim=2, dtype="float").astype(np.float64)
    if r.shape[1] != m.shape[1]:
        raise ShapeMismatchError(format_error("means", f"{r.shape[1]} columns (as responses)", m))
    if whitener is not None:
        r, m = r @ np.asarray(whitener).T, m @ np.asarray(whitener).T
    elif noise_sd is not None:
        sd = check_array(noise_sd, "noise_sd", shape=(r.shape[1],), dtype="float")
        r, m = r / sd, m / sd
    d2 = (r**2).sum(1)[:, None] - 2 * r @ m.T + (m**2).sum(1)[None, :]
    return -0.5 * d2


def correlation_scores(predicted: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Pearson correlation between every predicted row and every target row, shape (n_queries, n_candidates)."""
    a = np.asarray(predicted, dtype=np.float64)
    b = np.asarray(targets, dtype=np.float64)
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    a /= np.linalg.norm(a, axis=1, keepdims=True) + 1e-12
    b /= np.linalg.norm(b, axis=1, keepdims=True) + 1e-12
    return a @ b.T


def identification_scores(scores: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Two-way identification and top-k retrieval from a score matrix whose diagonal holds the true pairs.

    Parameters
    ----------
    scores : ndarray of shape (n, n)
        ``scores[i, j]``: how well query ``i`` matches candidate ``j`` (higher is better); candidate ``i`` is
        the right answer for query ``i``.
    ks : tuple of int
        Which top-k retrieval accuracies to report.

    Returns
    -------
    scores : dict
        ``two_way_identification`` (fraction of (i, j != i) pairs with ``scores[i, i] > scores[i, j]``, ties
        counted half), ``top{k}_retrieval`` (fraction of queries whose true candidate ranks in the first
        ``k``; ties ranked pessimistically), ``mean_rank`` (1 is best).
    """
    s = check_array(scores, "scores", ndim=2, dtype="float")
    n = s.shape[0]
    if s.shape[1] != n or n < 2:
        raise ShapeMismatchError(format_error("scores", "a square matrix with at least 2 rows", s))
    true = np.diag(s)[:, None]
    off = ~np.eye(n, dtype=bool)
    better = ((s > true) & off).sum(1)
    ties = ((s == true) & off).sum(1)
    out: dict[str, float] = {
        "two_way_identification": float(((n - 1 - better - ties) + 0.5 * ties).sum() / (n * (n - 1))),
        "mean_rank": float((1 + better + ties).mean()),
    }
    for k in ks:
        out[f"top{k}_retrieval"] = float(((better + ties) < k).mean())
    return out


def chance_scores(n: int, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Chance levels of :func:`identification_scores` for ``n`` candidates."""
    out = {"two_way_identification": 0.5, "mean_rank": (n + 1) / 2}
    out.update({f"top{k}_retrieval": min(1.0, k / n) for k in ks})
    return out


def ideal_observer(responses: np.ndarray, means: np.ndarray, noise_sd: np.ndarray | None = None,
                   *, whitener: np.ndarray | None = None, ks: tuple[int, ...] = (1, 5)) -> dict[str, Any]:
    """Ideal-observer identification of test responses among the test candidates.

    Parameters
    ----------
    responses : ndarray of shape (n_test, n_features)
        Test responses (repeats averaged, known nuisance removed), row ``i`` evoked by candidate ``i``.
    means : ndarray of shape (n_test, n_features)
        Clean responses of the test candidates under the true model.
    noise_sd : ndarray of shape (n_features,) or None
        Noise standard deviation of the averaged responses (independent noise).
    whitener : ndarray of shape (n_features, n_features) or None
        Whitening matrix for correlated noise (instead of ``noise_sd``).
    ks : tuple of int
        Top-k accuracies to report.

    Returns
    -------
    ceiling : dict
        :func:`identification_scores` of the Gaussian log-likelihood, plus ``n_test`` and ``chance``.
    """
    ll = gaussian_loglik(responses, means, noise_sd, whitener=whitener)
    out: dict[str, Any] = identification_scores(ll, ks)
    out["n_test"] = int(ll.shape[0])
    out["chance"] = chance_scores(ll.shape[0], ks)
    return out
