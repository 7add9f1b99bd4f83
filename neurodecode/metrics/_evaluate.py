"""Score a set of reconstructions against their ground truth: the full image protocol in one call."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .._core.docs import fill_doc
from .._core.errors import ShapeMismatchError, ValidationError
from .._core.logging import logger
from .._core.validation import check_option, format_error
from ._controls import shuffled_pairing
from ._identification import correlation_distance, two_way_identification
from ._image import RESIZE_CONVENTIONS, as_float_images, pixcorr, resize_images, ssim
from ._stats import CHANCE, HIGHER_IS_BETTER, as_rng, bootstrap_ci

__all__ = ["evaluate_reconstructions", "summarize", "METRICS_VERSION", "IMAGE_METRICS", "DEFAULT_METRICS",
           "TEXT_DEFAULT_METRICS"]

#: Version of the evaluation protocol (specs/metrics.md); bump when a number would change.
METRICS_VERSION = "1.0"

IMAGE_METRICS = ("pixcorr", "ssim", "alex2", "alex5", "incep", "clip", "effnet", "swav")
DEFAULT_METRICS = IMAGE_METRICS
DISTANCE_METRICS = ("effnet", "swav")

#: The EEG -> text protocol (specs/metrics.md): BLEU-1..4, ROUGE-1 (P/R/F) and WER, for
#: :func:`~neurodecode.metrics.evaluate_text` on decoded sentences (``neurodecode evaluate``'s default).
TEXT_DEFAULT_METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "rouge1_p", "rouge1_r", "rouge1_f", "wer")

#: MindEye2 blending of the refined and the blurry low-level reconstruction before scoring.
BLEND_WEIGHTS = (0.75, 0.25)


def summarize(
    per_item: Any,
    *,
    chance: float | None,
    shuffled: float | None = None,
    n_boot: int = 1000,
    random_state: Any = 0,
    higher_is_better: bool = True,
) -> dict[str, Any]:
    """One metric's entry in a report: mean, bootstrap 95 % CI, chance and shuffled control.

    Parameters
    ----------
    per_item : array-like of shape (n_items,)
        Per-item scores (NaN items are ignored and counted).
    chance : float or None
        Analytic chance level (``None`` when there is none).
    shuffled : float or None
        Score of the shuffled control.
    n_boot : int
        Bootstrap resamples.
    random_state : int | numpy.random.Generator | None
        Bootstrap seed.
    higher_is_better : bool
        Direction of the metric.

    Returns
    -------
    entry : dict
        ``"value"``, ``"ci"`` ([low, high]), ``"chance"``, ``"shuffled"``, ``"per_item"``,
        ``"n_valid"``, ``"higher_is_better"``.
    """
    values = np.asarray(per_item, dtype=float)
    finite = np.isfinite(values)
    if not finite.any():
        raise ValidationError(format_error("per_item", "at least one finite score", values))
    if not finite.all():
        logger.warning("%d of %d items have no score (NaN, e.g. a constant image) and are left out",
                       int((~finite).sum()), len(values))
    lo, hi = bootstrap_ci(values, n_boot=n_boot, random_state=random_state)
    return {
        "value": float(values[finite].mean()),
        "ci": [lo, hi],
        "chance": None if chance is None else float(chance),
        "shuffled": None if shuffled is None else float(shuffled),
        "per_item": values,
        "n_valid": int(finite.sum()),
        "higher_is_better": bool(higher_is_better),
    }


def _score_images(
    r: np.ndarray, t: np.ndarray, metrics: list[str], *, weights: str, weights_dir: Any, antialias: bool,
    n_shuffles: int, n_boot: int, seed: Any, device: Any, batch_size: int, verbose: Any, sizes: dict[str, int],
    nets: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    from ._features import FEATURE_METRICS, clip_image_features, extract_features, load_feature_network

    results: dict[str, Any] = {}
    used: dict[str, Any] = {}
    rng = as_rng(seed)
    shuffle_seed = int(rng.integers(2**31))

    def finish(metric: str, per_item: np.ndarray, shuffled: dict[str, Any]) -> None:
        entry = summarize(per_item, chance=CHANCE[metric], shuffled=shuffled["mean"], n_boot=n_boot,
                          random_state=seed, higher_is_better=HIGHER_IS_BETTER[metric])
        entry["size"] = sizes[metric]
        entry["shuffled_std"] = shuffled["std"]
        results[metric] = entry
        logger.info("%s = %.4f [%.4f, %.4f] (shuffled %.4f)", metric, entry["value"], *entry["ci"], shuffled["mean"])

    for metric, fn in (("pixcorr", pixcorr), ("ssim", ssim)):
        if metric in metrics:
            size = sizes[metric]
            per_item = fn(r, t, prep_size=None, size=size, antialias=antialias)
            shuf = shuffled_pairing(lambda a, b, fn=fn, size=size: fn(a, b, prep_size=None, size=size, antialias=antialias),
                                    r, t, n_permutations=n_shuffles, random_state=shuffle_seed)
            finish(metric, per_item, shuf)
            used[metric] = {"tier": "none", "source": "pixels (no network)"}

    by_net: dict[str, list[str]] = {}
    for metric in metrics:
        if metric in FEATURE_METRICS:
            by_net.setdefault(FEATURE_METRICS[metric][0], []).append(metric)
    for network, net_metrics in by_net.items():
        if network not in nets:  # built once per evaluation (the blended pass reuses it)
            nets[network] = load_feature_network(network, weights, weights_dir=weights_dir)
        net = nets[network]
        layers = [FEATURE_METRICS[m][1] for m in net_metrics]
        size = sizes[net_metrics[0]]
        kw = dict(size=size, prep_size=None, antialias=antialias, batch_size=batch_size, device=device, verbose=verbose)
        fr = extract_features(r, net, layers, **kw)
        ft = extract_features(t, net, layers, **kw)
        for metric, layer in zip(net_metrics, layers):
            score = correlation_distance if metric in DISTANCE_METRICS else two_way_identification
            per_item = score(fr[layer], ft[layer])
            shuf = shuffled_pairing(score, fr[layer], ft[layer], n_permutations=n_shuffles, random_state=shuffle_seed)
            finish(metric, per_item, shuf)
            used[metric] = {**net.describe(), "layer": layer}
    if "clip" in metrics:
        cr, info = clip_image_features(r, weights, prep_size=None, device=device, verbose=verbose)
        ct, _ = clip_image_features(t, weights, prep_size=None, device=device, verbose=verbose)
        per_item = two_way_identification(cr, ct)
        shuf = shuffled_pairing(two_way_identification, cr, ct, n_permutations=n_shuffles, random_state=shuffle_seed)
        finish("clip", per_item, shuf)
        results["clip"]["size"] = info["preprocessing"].get("size")
        used["clip"] = {**info, "layer": "image embedding"}
    return results, used


@fill_doc
def evaluate_reconstructions(
    recons: Any,
    truth: Any,
    metrics: Any = DEFAULT_METRICS,
    weights: str = "real",
    *,
    blurry: Any = None,
    weights_dir: str | os.PathLike[str] | None = None,
    prep_size: int | None = 256,
    sizes: dict[str, int] | None = None,
    antialias: bool = False,
    n_boot: int = 1000,
    n_shuffles: int = 3,
    random_state: int = 0,
    device: Any = "cpu",
    batch_size: int = 16,
    verbose: Any = None,
) -> dict[str, Any]:
    """Score reconstructions with the field's image protocol (specs/metrics.md).

    PixCorr and SSIM at 425 px; two-way identification on AlexNet ``features.4``
    (alex2) / ``features.11`` (alex5) at 256 px, InceptionV3 avgpool (incep) at 342 px,
    CLIP ViT-L/14 (clip) at 224 px; correlation distances on EfficientNet-B1 (effnet,
    255 px) and SwAV-ResNet50 (swav, 224 px); everything after a common resize to
    ``prep_size``. Each score comes with a bootstrap 95 % CI over items, its chance level
    and a shuffled-pairing control (the reconstructions scored against other items'
    ground truth).

    Parameters
    ----------
    recons : array-like of shape (n_items, H, W, 3)
        Reconstructions, uint8 or float in [0, 1].
    truth : array-like of shape (n_items, H2, W2, 3)
        Ground-truth stimuli in the same order.
    metrics : sequence of str or str
        Subset of ``("pixcorr", "ssim", "alex2", "alex5", "incep", "clip", "effnet",
        "swav")``, or a comma-separated string.
    weights : {"real", "random"}
        Feature-network weights: the published ones (local file / torch hub cache /
        open_clip cache; an OfflineError says how to get a missing one) or, only when
        asked, the same architectures with random weights. Recorded per metric.
    blurry : array-like of shape (n_items, H, W, 3) or None
        MindEye2's blurry low-level reconstructions; when given, the images blended
        0.75 x recons + 0.25 x blurry are scored too (under ``"blended"``).
    weights_dir : path-like or None
        Folder holding the torchvision / SwAV weight files (default: torch hub cache).
    prep_size : int or None
        Common first resize of every image (256, MindEye2); ``None`` skips it.
    sizes : dict of str to int or None
        Override the per-metric sizes of the protocol (e.g. ``{"incep": 96}`` for a smoke
        run); the sizes used are recorded. Numbers computed at other sizes do not compare
        with the literature.
    antialias : bool
        Antialiased resizes (the published numbers used ``False``).
    n_boot : int
        Bootstrap resamples.
    n_shuffles : int
        Derangements averaged in the shuffled-pairing control.
    random_state : int
        Seed of the bootstrap and the controls (recorded).
    %(device)s
    batch_size : int
        Images per forward pass of the feature networks.
    %(verbose)s

    Returns
    -------
    result : dict
        ``result[metric]`` = {"value", "ci", "chance", "shuffled", "shuffled_std",
        "per_item", "n_valid", "higher_is_better", "size"}; plus ``"n_items"``,
        ``"weights"`` (tier and source per metric), ``"metrics_version"``, ``"protocol"``
        (resize conventions, seeds, bootstrap settings) and, with ``blurry``,
        ``"blended"`` (same structure per metric).
    """
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    metrics = list(dict.fromkeys(metrics))
    if not metrics:
        raise ValidationError(format_error("metrics", "at least one metric", metrics, f"Use some of {', '.join(IMAGE_METRICS)}"))
    for m in metrics:
        check_option(m, "metrics", IMAGE_METRICS)
    check_option(weights, "weights", ("real", "random"))
    if int(n_shuffles) < 1:
        raise ValidationError(format_error("n_shuffles", "at least 1", n_shuffles))
    bad = sorted(set(sizes or {}) - set(IMAGE_METRICS))
    if bad:
        raise ValidationError(format_error("sizes", f"keys among {', '.join(IMAGE_METRICS)}", bad))
    if "clip" in (sizes or {}):
        raise ValidationError(format_error("sizes", "no 'clip' key", "'clip'", "CLIP uses its latent space's own input size"))
    sizes_used = {**RESIZE_CONVENTIONS, **{k: int(v) for k, v in (sizes or {}).items()}}
    r = resize_images(as_float_images(recons, "recons"), prep_size, antialias=antialias)
    t = resize_images(as_float_images(truth, "truth"), prep_size, antialias=antialias)
    if len(r) != len(t):
        raise ShapeMismatchError(
            format_error("recons", f"as many images as truth ({len(t)})", f"{len(r)} images",
                         "Pair every reconstruction with its ground-truth image")
        )
    if len(r) < 2:
        raise ValidationError(format_error("recons", "at least 2 items (identification compares items)", f"{len(r)}"))
    kw = dict(weights=weights, weights_dir=weights_dir, antialias=antialias, n_shuffles=int(n_shuffles),
              n_boot=int(n_boot), seed=random_state, device=device, batch_size=batch_size, verbose=verbose,
              sizes=sizes_used, nets={})
    results, used = _score_images(r, t, metrics, **kw)  # type: ignore[arg-type]
    out: dict[str, Any] = {m: results[m] for m in metrics}
    if blurry is not None:
        b = resize_images(as_float_images(blurry, "blurry"), r.shape[1], antialias=antialias)
        if len(b) != len(r):
            raise ShapeMismatchError(format_error("blurry", f"{len(r)} images like recons", b))
        blended = BLEND_WEIGHTS[0] * r + BLEND_WEIGHTS[1] * b
        bres, _ = _score_images(blended, t, metrics, **kw)  # type: ignore[arg-type]
        out["blended"] = {m: bres[m] for m in metrics}
    out["n_items"] = len(r)
    out["weights"] = used
    out["metrics_version"] = METRICS_VERSION
    out["protocol"] = {
        "spec": "specs/metrics.md",
        "prep_size": prep_size,
        "sizes": {m: sizes_used[m] for m in metrics},
        "sizes_follow_protocol": all(sizes_used[m] == RESIZE_CONVENTIONS[m] for m in metrics),
        "interpolation": "bilinear",
        "antialias": bool(antialias),
        "n_boot": int(n_boot),
        "ci": 0.95,
        "random_state": random_state,
        "shuffled_control": f"shuffled pairing: predictions scored against a random derangement of the truth, "
                            f"mean of {int(n_shuffles)}",
        "blend": list(BLEND_WEIGHTS) if blurry is not None else None,
    }
    return out
