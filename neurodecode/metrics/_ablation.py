"""Network ablation: decode with each network's parcels masked and report the drop, with bootstrap CIs.

WAVE (Wang et al., arXiv 2411.07121) asks which brain networks a whole-brain decoder relies on by masking
the parcels of one Yeo-7 network at a time (zeroing them in the decoder's input) and measuring the loss of
retrieval. :func:`network_ablation` does this for any decoder: it takes the test inputs, the network of
every parcel and a callable that scores inputs per item, and returns, per network, the ablated score, the
paired drop (baseline - ablated, per item) and its percentile bootstrap CI over items.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .._core.errors import ShapeMismatchError, ValidationError
from .._core.validation import check_array, format_error
from ._stats import bootstrap_ci

__all__ = ["network_ablation", "ablation_masks", "YEO7_NETWORKS"]

#: Yeo et al. (2011) 7-network names as the Schaefer 2018 parcel names spell them, in their order.
YEO7_NETWORKS: tuple[str, ...] = ("Vis", "SomMot", "DorsAttn", "SalVentAttn", "Limbic", "Cont", "Default")

Scores = Mapping[str, np.ndarray]


def ablation_masks(networks: Sequence[str] | np.ndarray, *, order: Sequence[str] | None = None
                   ) -> dict[str, np.ndarray]:
    """Boolean mask of the parcels of each network.

    Parameters
    ----------
    networks : sequence of str, length n_parcels
        Network of every parcel (e.g. ``Trials.provenance["parcel_networks"]``).
    order : sequence of str or None
        Networks to report, in this order (default: Yeo-7 order for Yeo-7 names, else order of first
        appearance). A name with no parcel is an error.

    Returns
    -------
    masks : dict of str to ndarray of bool, shape (n_parcels,)
    """
    nets = np.asarray(networks, dtype=str)
    if nets.ndim != 1 or nets.size == 0:
        raise ShapeMismatchError(format_error("networks", "one network name per parcel", nets.shape))
    present = list(dict.fromkeys(nets.tolist()))
    if order is None:
        order = [n for n in YEO7_NETWORKS if n in present] + [n for n in present if n not in YEO7_NETWORKS]
    missing = [n for n in order if n not in present]
    if missing:
        raise ValidationError(format_error("order", "networks that have parcels (" + ", ".join(present) + ")",
                                           ", ".join(missing)))
    return {str(n): nets == n for n in order}


def _as_scores(value: Any, n_items: int | None, where: str) -> dict[str, np.ndarray]:
    scores = dict(value) if isinstance(value, Mapping) else {"score": value}
    out = {}
    for k, v in scores.items():
        arr = check_array(v, f"score_fn output {k!r} ({where})", ndim=1, dtype="float", finite=False)
        if n_items is not None and len(arr) != n_items:
            raise ShapeMismatchError(format_error(f"score_fn output {k!r} ({where})",
                                                  f"{n_items} per-item scores (as for the intact input)", len(arr)))
        out[str(k)] = arr
    return out


def network_ablation(
    X: Any,
    networks: Sequence[str] | np.ndarray,
    score_fn: Callable[[np.ndarray], np.ndarray | Scores],
    *,
    axis: int = 1,
    fill: float = 0.0,
    order: Sequence[str] | None = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    random_state: Any = 0,
) -> dict[str, Any]:
    """Score a decoder with each network's parcels masked; per-network drop with bootstrap CIs.

    Parameters
    ----------
    X : array-like
        Test inputs with parcels on ``axis`` (e.g. shape (n_items, n_parcels, n_trs), ``axis=1``).
    networks : sequence of str, length n_parcels
        Network of every parcel.
    score_fn : callable
        ``score_fn(X) -> per-item scores``: an array of shape (n_items,) or a dict of such arrays (e.g.
        ``{"top1": ..., "percentile": ...}``); higher is better. Called once on ``X`` and once per
        network on ``X`` with that network's parcels set to ``fill``.
    axis : int
        Parcel axis of ``X``.
    fill : float
        Value of masked parcels (0: WAVE zeroes them; inputs are z-scored per run).
    order : sequence of str or None
        Networks to ablate (default: all, Yeo-7 order first).
    n_boot, confidence, random_state
        Bootstrap of the paired per-item drop (:func:`~neurodecode.metrics.bootstrap_ci`).

    Returns
    -------
    result : dict
        ``baseline``: ``{score: mean}``; ``networks``: ``{network: {"n_parcels", score: {"ablated",
        "drop", "drop_ci": [low, high]}}}``; ``ranking``: ``{score: networks by decreasing drop}``;
        ``protocol``: what was done (fill, axis, bootstrap).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.ones((4, 3, 2))
    >>> res = network_ablation(X, ["Vis", "Default", "Default"], lambda x: x[:, 1:, :].mean(axis=(1, 2)),
    ...                        n_boot=50)
    >>> res["ranking"]["score"]
    ['Default', 'Vis']
    """
    X = check_array(X, "X", dtype="float", finite=False)
    ax = axis % X.ndim
    masks = ablation_masks(networks, order=order)
    n_parcels = len(next(iter(masks.values())))
    if X.shape[ax] != n_parcels:
        raise ShapeMismatchError(format_error("X", f"{n_parcels} parcels on axis {axis} (one per network label)",
                                              X.shape, "Pass axis= for the parcel axis of X"))
    base = _as_scores(score_fn(X), None, "intact input")
    n_items = len(next(iter(base.values())))
    nets: dict[str, Any] = {}
    for name, mask in masks.items():
        Xm = X.copy()
        index: list[Any] = [slice(None)] * X.ndim
        index[ax] = mask
        Xm[tuple(index)] = fill
        abl = _as_scores(score_fn(Xm), n_items, f"{name} masked")
        entry: dict[str, Any] = {"n_parcels": int(mask.sum())}
        for k, b in base.items():
            if k not in abl:
                raise ValidationError(format_error("score_fn", f"the same keys for every input ({sorted(base)})",
                                                   sorted(abl)))
            drop = b - abl[k]
            low, high = bootstrap_ci(drop, n_boot, random_state, confidence=confidence)
            entry[k] = {"ablated": float(np.nanmean(abl[k])), "drop": float(np.nanmean(drop)),
                        "drop_ci": [low, high]}
        nets[name] = entry
    ranking = {k: [n for _, _, n in sorted((-float(nets[n][k]["drop"]), i, n) for i, n in enumerate(nets))]
               for k in base}
    return {"baseline": {k: float(np.nanmean(v)) for k, v in base.items()}, "networks": nets, "ranking": ranking,
            "n_items": n_items,
            "protocol": {"masking": f"parcels of one network set to {fill} on axis {axis}",
                         "drop": "baseline - ablated per item (paired), mean over items",
                         "ci": f"{confidence:.0%} percentile bootstrap over items, {n_boot} resamples, "
                               f"random_state={random_state}"}}
