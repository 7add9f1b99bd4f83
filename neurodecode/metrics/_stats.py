"""Bootstrap confidence intervals over test items, and the chance level of each metric."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .._core.errors import ValidationError
from .._core.validation import check_array, check_option, format_error

__all__ = ["bootstrap_ci", "bootstrap_ci_stat", "chance_level", "CHANCE", "HIGHER_IS_BETTER", "as_rng", "derangement",
           "METRICS_VERSION"]

#: Version of the evaluation protocol (specs/metrics.md); bump when a number would change.
#: 2.0: ties are misses in every ranking score; retrieval keys named as MindEye2's columns
#: (``image_retrieval`` = FwdRetrieval); CLIP two-way on MindEye2's float-tensor preprocessing;
#: GLIM's per-sentence text protocol; constant reconstructions reported, never dropped.
METRICS_VERSION = "2.0"

#: Analytic chance level of each image metric (``None`` when there is none: the
#: shuffled-pairing control is then the empirical floor).
CHANCE: dict[str, float | None] = {
    "pixcorr": 0.0,
    "ssim": None,
    "alex2": 0.5,
    "alex5": 0.5,
    "incep": 0.5,
    "clip": 0.5,
    "effnet": None,
    "swav": None,
}

#: Direction of each metric (distances: lower is better).
HIGHER_IS_BETTER: dict[str, bool] = {
    "pixcorr": True, "ssim": True, "alex2": True, "alex5": True, "incep": True, "clip": True,
    "effnet": False, "swav": False,
}


def as_rng(random_state: Any) -> np.random.Generator:
    """A NumPy generator from an int seed, a generator or ``None``."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is not None and not isinstance(random_state, (int, np.integer)):
        raise ValidationError(
            format_error("random_state", "an int, a numpy Generator or None", random_state,
                         "Pass an integer seed such as 0")
        )
    return np.random.default_rng(random_state)


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation of ``range(n)`` with no fixed point (n >= 2)."""
    if n < 2:
        raise ValidationError(format_error("n", "at least 2 items to shuffle pairs", n))
    while True:  # expected e ~ 2.7 tries
        perm = rng.permutation(n)
        if not np.any(perm == np.arange(n)):
            return perm


def chance_level(metric: str, *, n_way: int | None = None) -> float | None:
    """Chance level of ``metric`` (``None`` when it has no analytic chance level).

    Parameters
    ----------
    metric : str
        A metric name (``"alex2"``, ``"pixcorr"``...) or ``"retrieval"`` (needs ``n_way``).
    n_way : int or None
        Number of candidates of a retrieval metric (chance ``1 / n_way``).
    """
    if metric.startswith("retrieval") or metric.startswith("top"):
        if n_way is None:
            raise ValidationError(format_error("n_way", "the number of candidates for a retrieval metric", None))
        return 1.0 / n_way
    check_option(metric, "metric", list(CHANCE))
    return CHANCE[metric]


def bootstrap_ci(
    per_item_values: Any,
    n_boot: int = 1000,
    random_state: Any = 0,
    *,
    confidence: float = 0.95,
    statistic: Callable[[np.ndarray], float] | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean over items.

    Items are resampled with replacement ``n_boot`` times; the interval is the
    ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the resampled
    statistic. NaN items (e.g. never sampled in a retrieval repeat) are dropped.

    Parameters
    ----------
    per_item_values : array-like of shape (n_items,)
        One score per test item.
    n_boot : int
        Number of bootstrap resamples.
    random_state : int | numpy.random.Generator | None
        Seed (recorded by the callers in every report).
    confidence : float
        Coverage of the interval (0.95 for a 95 % CI).
    statistic : callable or None
        Statistic of a resample (default: the mean).

    Returns
    -------
    ci : tuple of (float, float)
        ``(low, high)``.

    Examples
    --------
    >>> bootstrap_ci([0.5, 0.7, 0.9, 0.6], n_boot=200)  # doctest: +SKIP
    (0.55, 0.825)
    """
    values = check_array(per_item_values, "per_item_values", ndim=1, dtype="float", finite=False)
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValidationError(format_error("per_item_values", "at least one finite value", "none", None))
    if int(n_boot) < 1:
        raise ValidationError(format_error("n_boot", "a positive number of resamples", n_boot))
    if statistic is None:  # vectorised mean, in chunks to bound memory
        if not 0 < confidence < 1:
            raise ValidationError(format_error("confidence", "a number in (0, 1)", confidence, "Use 0.95 for a 95 % CI"))
        rng = as_rng(random_state)
        n = len(values)
        chunk = max(1, 2_000_000 // n)
        means = []
        for start in range(0, int(n_boot), chunk):
            idx = rng.integers(0, n, size=(min(chunk, int(n_boot) - start), n))
            means.append(values[idx].mean(axis=1))
        alpha = (1.0 - confidence) / 2.0
        low, high = np.quantile(np.concatenate(means), [alpha, 1.0 - alpha])
        return float(low), float(high)
    stat = statistic
    return bootstrap_ci_stat(len(values), lambda idx: stat(values[idx]), n_boot=n_boot,
                             random_state=random_state, confidence=confidence)


def bootstrap_ci_stat(
    n_items: int,
    stat_of_indices: Callable[[np.ndarray], float],
    *,
    n_boot: int = 1000,
    random_state: Any = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap CI of any statistic computed from a resample of item indices.

    Use this for corpus-level statistics (corpus BLEU, corpus WER) that are not a
    mean of per-item values.

    Parameters
    ----------
    n_items : int
        Number of test items.
    stat_of_indices : callable
        ``stat_of_indices(idx)`` with ``idx`` an int array of shape (n_items,) drawn
        with replacement, returning a float.
    n_boot, random_state, confidence
        See :func:`bootstrap_ci`.
    """
    if not 0 < confidence < 1:
        raise ValidationError(format_error("confidence", "a number in (0, 1)", confidence, "Use 0.95 for a 95 % CI"))
    if int(n_boot) < 1:
        raise ValidationError(format_error("n_boot", "a positive number of resamples", n_boot))
    rng = as_rng(random_state)
    stats = np.empty(int(n_boot))
    for b in range(int(n_boot)):
        stats[b] = stat_of_indices(rng.integers(0, n_items, size=n_items))
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(stats[np.isfinite(stats)], [alpha, 1.0 - alpha])
    return float(low), float(high)
