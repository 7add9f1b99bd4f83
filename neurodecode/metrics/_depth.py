"""Depth metrics: a decoded depth map against the depth of the true image.

Takagi & Nishimoto decode DPT-large's hidden states and turn them into a depth map; Brain Captioning decodes
a depth map for its ControlNet. Scoring one against the depth estimated on the true stimulus (the same
estimator, e.g. DPT-large) uses the monocular-depth literature's measures, per image:

- **scale-invariant log error** (Eigen, Puhrsch & Fergus, NeurIPS 2014, eq. 1 / 3):
  ``D = mean(d^2) - lam * mean(d)^2`` with ``d = log(pred) - log(true)``; ``lam = 1`` is fully
  scale-invariant (the pairwise form ``1 / (2 n^2) sum_ij ((log p_i - log p_j) - (log t_i - log t_j))^2``), and
  Eigen's tables print its root, ``sqrt(D)`` ("RMSE (log, scale-invariant)"), the value returned here;
- **absolute relative error** (abs-rel): ``mean(|pred - true| / true)``;
- **correlation**: Pearson's r of the flattened maps (or Spearman's, by ranks).

Estimated depth has no metric scale (DPT predicts relative inverse depth; Takagi's maps are min-max scaled
to [-1, 1]), so :func:`evaluate_depth` first aligns each prediction to its truth (``align="scale-shift"``:
least squares ``a * pred + b``, MiDaS' evaluation; ``"median"``: ``pred * median(true) / median(pred)``,
Eigen's; ``None``: as given). Log-based and relative errors need positive depth; aligned values below
``eps`` are clipped to it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._core.errors import ShapeMismatchError, ValidationError
from .._core.validation import check_option, format_error
from ._stats import METRICS_VERSION, as_rng, bootstrap_ci, derangement

__all__ = ["DEPTH_METRICS", "DEPTH_ALIGN", "scale_invariant_log_error", "abs_rel", "depth_correlation", "align_depth",
           "evaluate_depth"]

DEPTH_METRICS = ("si_log", "abs_rel", "pearson", "spearman")
DEPTH_ALIGN = ("scale-shift", "median", None)
_LOWER_IS_BETTER = ("si_log", "abs_rel")


def _pair(pred: Any, true: Any) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    if p.shape != t.shape or p.ndim < 2:
        raise ShapeMismatchError(format_error("pred", f"depth maps (n, H, W) of the true depth's shape {t.shape}",
                                              p, "Resize the decoded maps to the true depth maps' size first"))
    if not (np.isfinite(p).all() and np.isfinite(t).all()):
        raise ValidationError(format_error("pred / true", "finite depth values", "NaN or inf",
                                           "Mask invalid pixels out (mask=) or fill them"))
    return p.reshape(len(p), -1), t.reshape(len(t), -1)


def _positive(x: np.ndarray, name: str) -> None:
    if (x <= 0).any():
        raise ValidationError(format_error(name, "depth > 0 everywhere (logs and ratios)",
                                           f"min {float(x.min()):.4g}",
                                           "Align the prediction to the truth first (align_depth), or shift both "
                                           "to positive values"))


def scale_invariant_log_error(pred: Any, true: Any, *, lam: float = 1.0, squared: bool = False) -> np.ndarray:
    """Eigen et al.'s scale-invariant log error per map.

    Parameters
    ----------
    pred, true : array of shape (n, H, W)
        Positive depth maps.
    lam : float
        Weight of the mean term (1: scale-invariant; Eigen's training loss uses 0.5).
    squared : bool
        Return ``D`` itself instead of ``sqrt(D)`` (the tables' "RMSE (log, scale-invariant)").

    Returns
    -------
    errors : ndarray of shape (n,)
    """
    p, t = _pair(pred, true)
    _positive(p, "pred")
    _positive(t, "true")
    d = np.log(p) - np.log(t)
    value = np.maximum((d ** 2).mean(axis=1) - float(lam) * d.mean(axis=1) ** 2, 0.0)
    return value if squared else np.sqrt(value)


def abs_rel(pred: Any, true: Any) -> np.ndarray:
    """Absolute relative error ``mean(|pred - true| / true)`` per map (true depth > 0).

    Returns
    -------
    errors : ndarray of shape (n,)
    """
    p, t = _pair(pred, true)
    _positive(t, "true")
    return np.asarray((np.abs(p - t) / t).mean(axis=1))


def depth_correlation(pred: Any, true: Any, *, method: str = "pearson") -> np.ndarray:
    """Correlation of each decoded map with its true map (flattened): Pearson's r or Spearman's rho.

    Returns
    -------
    r : ndarray of shape (n,)
        NaN for a constant map.
    """
    check_option(method, "method", ("pearson", "spearman"))
    p, t = _pair(pred, true)
    if method == "spearman":
        from scipy.stats import rankdata

        p, t = rankdata(p, axis=1), rankdata(t, axis=1)
    pc = p - p.mean(axis=1, keepdims=True)
    tc = t - t.mean(axis=1, keepdims=True)
    den = np.sqrt((pc ** 2).sum(axis=1) * (tc ** 2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (pc * tc).sum(axis=1) / den, np.nan)


def align_depth(pred: Any, true: Any, *, method: str | None = "scale-shift") -> np.ndarray:
    """Each decoded map aligned to its true map: least-squares ``a * pred + b`` or median scaling.

    Parameters
    ----------
    pred, true : array of shape (n, H, W)
    method : {"scale-shift", "median", None}

    Returns
    -------
    aligned : ndarray of shape (n, H, W)
    """
    check_option(method, "align", DEPTH_ALIGN)
    p, t = _pair(pred, true)
    if method is None:
        out = p
    elif method == "median":
        _positive(p, "pred")
        out = p * (np.median(t, axis=1) / np.median(p, axis=1))[:, None]
    else:
        pc = p - p.mean(axis=1, keepdims=True)
        var = (pc ** 2).sum(axis=1)
        a = np.where(var > 0, (pc * (t - t.mean(axis=1, keepdims=True))).sum(axis=1) / np.where(var > 0, var, 1), 0.0)
        out = a[:, None] * pc + t.mean(axis=1, keepdims=True)
    return out.reshape(np.shape(pred))


def _per_item(pred: np.ndarray, true: np.ndarray, metrics: list[str], align: str | None,
              eps: float) -> dict[str, np.ndarray]:
    aligned = align_depth(pred, true, method=align)
    positive = np.maximum(aligned, eps)
    out: dict[str, np.ndarray] = {}
    if "si_log" in metrics:
        out["si_log"] = scale_invariant_log_error(positive, true)
    if "abs_rel" in metrics:
        out["abs_rel"] = abs_rel(positive, true)
    for m in ("pearson", "spearman"):
        if m in metrics:
            out[m] = depth_correlation(pred, true, method=m)  # invariant to the alignment
    return out


def evaluate_depth(pred: Any, true: Any, *, metrics: Any = ("si_log", "abs_rel", "pearson"),
                   align: str | None = "scale-shift", eps: float = 1e-3, n_boot: int = 1000, n_shuffles: int = 3,
                   random_state: int = 0) -> dict[str, Any]:
    """Score decoded depth maps against the true images' depth, with CIs and a shuffled-pairing control.

    Parameters
    ----------
    pred : array of shape (n, H, W)
        Decoded depth maps (any scale, e.g. Takagi's min-max [-1, 1]).
    true : array of shape (n, H, W)
        Depth of the true images, positive (e.g. DPT-large on the stimulus, shifted to be positive).
    metrics : sequence of str or str
        Among :data:`DEPTH_METRICS`.
    align : {"scale-shift", "median", None}
        Alignment of each prediction to its truth before ``si_log`` and ``abs_rel`` (see the module docstring).
    eps : float
        Floor of the aligned prediction (logs and ratios need positive depth).
    n_boot, n_shuffles, random_state
        Bootstrap resamples over maps, derangements of the shuffled control (maps against other images'
        depth), seed.

    Returns
    -------
    result : dict
        ``result[metric]`` = {"value", "ci", "chance", "shuffled", "per_item", "higher_is_better"}; plus
        ``"n_items"``, ``"metrics_version"`` and ``"protocol"`` (name ``"depth"``).
    """
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    metrics = list(dict.fromkeys(metrics))
    for m in metrics:
        check_option(m, "metrics", DEPTH_METRICS)
    check_option(align, "align", DEPTH_ALIGN)
    p, t = _pair(pred, true)
    _positive(t, "true")
    shape = np.shape(true)
    p, t = p.reshape(shape), t.reshape(shape)
    scores = _per_item(p, t, metrics, align, eps)
    shuffled: dict[str, list[float]] = {k: [] for k in metrics}
    if len(p) >= 2:
        rng = as_rng(random_state)
        for _ in range(int(n_shuffles)):
            perm = derangement(len(p), rng)
            for k, v in _per_item(p, t[perm], metrics, align, eps).items():
                shuffled[k].append(float(np.nanmean(v)))
    out: dict[str, Any] = {}
    for k in metrics:
        v = scores[k]
        lo, hi = bootstrap_ci(v, n_boot=n_boot, random_state=random_state)
        out[k] = {"value": float(np.nanmean(v)), "ci": [lo, hi], "chance": 0.0 if k in ("pearson", "spearman") else None,
                  "shuffled": float(np.mean(shuffled[k])) if shuffled[k] else None, "per_item": v,
                  "higher_is_better": k not in _LOWER_IS_BETTER}
    out["n_items"] = len(p)
    out["metrics_version"] = METRICS_VERSION
    out["protocol"] = {"name": "depth", "align": align, "eps": eps,
                       "spec": "Eigen et al. 2014 (scale-invariant log error, sqrt), abs-rel, correlation",
                       "n_boot": int(n_boot), "ci": 0.95, "random_state": random_state,
                       "shuffled_control": f"shuffled pairing (maps vs other images' depth), mean of {int(n_shuffles)}"}
    return out
