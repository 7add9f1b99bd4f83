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
from ._image import (
    BRAIN_DIFFUSER_SIZES,
    RESIZE_CONVENTIONS,
    as_float_images,
    constant_images,
    pixcorr,
    pixcorr_brain_diffuser,
    resize_images,
    ssim,
    ssim_brain_diffuser,
)
from ._stats import CHANCE, HIGHER_IS_BETTER, METRICS_VERSION, as_rng, bootstrap_ci

__all__ = ["evaluate_reconstructions", "summarize", "METRICS_VERSION", "IMAGE_METRICS", "DEFAULT_METRICS",
           "TEXT_DEFAULT_METRICS", "IMAGE_PROTOCOLS"]

#: Image protocols: MindEye2's final_evaluations (MindEye, MindBridge and ATM score the same way)
#: and Brain-Diffuser's own scripts (specs/reference-details.md, "Evaluation details").
IMAGE_PROTOCOLS = ("mindeye2", "brain-diffuser")

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
        logger.warning("%d of %d items have no score (NaN, e.g. a constant image): the value and CI here are "
                       "over the others; per_item and n_valid keep them visible", int((~finite).sum()), len(values))
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
    r: np.ndarray, t: np.ndarray, metrics: list[str], *, protocol: str, weights: str, weights_dir: Any,
    antialias: bool, n_shuffles: int, n_boot: int, seed: Any, device: Any, batch_size: int, verbose: Any,
    sizes: dict[str, Any], nets: dict[str, Any], ids: list[str],
) -> tuple[dict[str, Any], dict[str, Any]]:
    from ._features import FEATURE_METRICS, clip_image_features, extract_features, load_feature_network

    results: dict[str, Any] = {}
    used: dict[str, Any] = {}
    rng = as_rng(seed)
    shuffle_seed = int(rng.integers(2**31))
    bd = protocol == "brain-diffuser"

    def finish(metric: str, per_item: np.ndarray, shuffled: dict[str, Any]) -> None:
        per_item = np.asarray(per_item, dtype=float)
        nan_items = ~np.isfinite(per_item)
        entry: dict[str, Any]
        if nan_items.any() and nan_items.all():
            entry = {"value": float("nan"), "ci": None, "chance": CHANCE[metric], "shuffled": None,
                     "per_item": per_item, "n_valid": 0, "higher_is_better": HIGHER_IS_BETTER[metric]}
        else:
            entry = summarize(per_item, chance=CHANCE[metric], shuffled=shuffled["mean"], n_boot=n_boot,
                              random_state=seed, higher_is_better=HIGHER_IS_BETTER[metric])
        if nan_items.any():  # the protocol's mean (np.corrcoef's NaN) is NaN: report it, never drop items silently
            entry["value_finite_items"] = entry["value"]
            entry["ci_finite_items"] = entry["ci"]
            entry["value"] = float("nan")
            entry["ci"] = None
            entry["nan_items"] = [ids[i] for i in np.flatnonzero(nan_items)]
            entry["reason"] = (f"{int(nan_items.sum())} item(s) have no score (a constant image has no correlation): "
                               f"the protocol's mean is NaN; 'value_finite_items' is the mean over the others")
        entry["size"] = sizes[metric]
        entry["shuffled_std"] = shuffled["std"]
        results[metric] = entry
        logger.info("%s = %.4f (shuffled %.4f)", metric, entry["value"], shuffled["mean"])

    low_level = (("pixcorr", pixcorr_brain_diffuser), ("ssim", ssim_brain_diffuser)) if bd else \
        (("pixcorr", pixcorr), ("ssim", ssim))
    for metric, fn in low_level:
        if metric in metrics:
            size = sizes[metric]
            def pixel_score(a: Any, b: Any, fn: Any = fn, size: Any = size) -> np.ndarray:
                return fn(a, b) if bd else fn(a, b, prep_size=None, size=size, antialias=antialias)

            per_item = pixel_score(r, t)
            with np.errstate(invalid="ignore"):
                shuf = shuffled_pairing(pixel_score, r, t, n_permutations=n_shuffles, random_state=shuffle_seed)
            finish(metric, per_item, shuf)
            used[metric] = {"tier": "none", "source": "pixels (no network)"}

    by_net: dict[str, list[str]] = {}
    for metric in metrics:
        if metric in FEATURE_METRICS:
            network = FEATURE_METRICS[metric][0]
            network = "efficientnet_v1" if bd and network == "efficientnet" else network
            by_net.setdefault(network, []).append(metric)
    for network, net_metrics in by_net.items():
        if network not in nets:  # built once per evaluation (the blended pass reuses it)
            nets[network] = load_feature_network(network, weights, weights_dir=weights_dir)
        net = nets[network]
        layers = [FEATURE_METRICS[m][1] for m in net_metrics]
        size = sizes[net_metrics[0]]
        kw = dict(size=size, prep_size=None, antialias=antialias, batch_size=batch_size, device=device,
                  verbose=verbose, resize="pil" if bd else "tensor")
        fr = extract_features(r, net, layers, **kw)
        ft = extract_features(t, net, layers, **kw)
        for metric, layer in zip(net_metrics, layers):
            feat_score = correlation_distance if metric in DISTANCE_METRICS else two_way_identification
            per_item = feat_score(fr[layer], ft[layer])
            shuf = shuffled_pairing(feat_score, fr[layer], ft[layer], n_permutations=n_shuffles,
                                    random_state=shuffle_seed)
            finish(metric, per_item, shuf)
            used[metric] = {**net.describe(), "layer": layer}
    if "clip" in metrics:
        kw = dict(prep_size=None, antialias=antialias, protocol=protocol, batch_size=batch_size, device=device,
                  verbose=verbose)
        cr, info = clip_image_features(r, weights, **kw)
        ct, _ = clip_image_features(t, weights, **kw)
        per_item = two_way_identification(cr, ct)
        shuf = shuffled_pairing(two_way_identification, cr, ct, n_permutations=n_shuffles, random_state=shuffle_seed)
        finish("clip", per_item, shuf)
        results["clip"]["size"] = info["preprocessing"].get("size")
        used["clip"] = {**info, "layer": "image embedding"}
    return results, used


def _constant_report(images: np.ndarray, ids: list[str]) -> dict[str, Any]:
    mask = constant_images(images)
    return {"count": int(mask.sum()), "ids": [ids[i] for i in np.flatnonzero(mask)]}


@fill_doc
def evaluate_reconstructions(
    recons: Any,
    truth: Any,
    metrics: Any = DEFAULT_METRICS,
    weights: str = "real",
    *,
    protocol: str = "mindeye2",
    blurry: Any = None,
    item_ids: list[str] | None = None,
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
    """Score reconstructions with a published image protocol (specs/metrics.md).

    ``protocol="mindeye2"`` (MindEye2's final_evaluations; MindEye, MindBridge and ATM score the
    same way): everything after a common bilinear resize to ``prep_size`` (256); PixCorr and
    SSIM at 425 px; two-way identification on AlexNet ``features.4`` (alex2) /
    ``features.11`` (alex5) at 256 px, InceptionV3 avgpool (incep) at 342 px, CLIP ViT-L/14
    (clip) at 224 px (float tensor, no antialias, no crop); correlation distances on
    EfficientNet-B1 (effnet, IMAGENET1K_V2, 255 px) and SwAV-ResNet50 (swav, 224 px).

    ``protocol="brain-diffuser"`` (Brain-Diffuser's scripts): no 256 step; every network's
    input PIL-resized (bilinear, 8-bit) to 224 px; PixCorr and SSIM at the ground truth's
    native size with the reconstruction PIL-resized bicubically, SSIM column-wise on the
    grey images (scikit-image 0.17 ``multichannel=True``); effnet on EfficientNet-B1 V1.

    Each score comes with a bootstrap 95 % CI over items, its chance level and a
    shuffled-pairing control. Blank (constant) reconstructions are counted and named in
    ``"constant_recons"``, scored as the protocol scores them and never dropped: a constant
    image has no PixCorr (``np.corrcoef`` gives NaN), so the PixCorr ``value`` is NaN as in
    the protocol, with ``"value_finite_items"`` and ``"nan_items"`` beside it.

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
    protocol : {"mindeye2", "brain-diffuser"}
        Whose evaluation to reproduce (see above); the report compares only with rows
        published under the same protocol.
    blurry : array-like of shape (n_items, H, W, 3) or None
        MindEye2's blurry low-level reconstructions; when given, the images blended
        0.75 x recons + 0.25 x blurry are scored too (under ``"blended"``).
    item_ids : list of str or None
        Names of the items (stimulus ids), used to name blank items; default their indices.
    weights_dir : path-like or None
        Folder holding the torchvision / SwAV weight files (default: torch hub cache).
    prep_size : int or None
        Common first resize of every image (256, MindEye2); ``None`` skips it. Not used by
        the Brain-Diffuser protocol.
    sizes : dict of str to int or None
        Override the per-metric network input sizes (e.g. ``{"incep": 96}`` for a smoke
        run); the sizes used are recorded. Numbers computed at other sizes do not compare
        with the literature.
    antialias : bool
        Antialiased tensor resizes (the published numbers used ``False``).
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
        ``"constant_recons"`` ({"count", "ids"}), ``"weights"`` (tier and source per
        metric), ``"metrics_version"``, ``"protocol"`` (name, resize conventions, seeds,
        bootstrap settings) and, with ``blurry``, ``"blended"`` (same structure per metric).
    """
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    metrics = list(dict.fromkeys(metrics))
    if not metrics:
        raise ValidationError(format_error("metrics", "at least one metric", metrics, f"Use some of {', '.join(IMAGE_METRICS)}"))
    for m in metrics:
        check_option(m, "metrics", IMAGE_METRICS)
    check_option(weights, "weights", ("real", "random"))
    check_option(protocol, "protocol", IMAGE_PROTOCOLS)
    if int(n_shuffles) < 1:
        raise ValidationError(format_error("n_shuffles", "at least 1", n_shuffles))
    bad = sorted(set(sizes or {}) - set(IMAGE_METRICS))
    if bad:
        raise ValidationError(format_error("sizes", f"keys among {', '.join(IMAGE_METRICS)}", bad))
    if "clip" in (sizes or {}):
        raise ValidationError(format_error("sizes", "no 'clip' key", "'clip'", "CLIP uses its latent space's own input size"))
    bd = protocol == "brain-diffuser"
    if bd and {"pixcorr", "ssim"} & set(sizes or {}):
        raise ValidationError(format_error("sizes", "no 'pixcorr' / 'ssim' key under protocol='brain-diffuser'",
                                           sorted({"pixcorr", "ssim"} & set(sizes or {})),
                                           "Brain-Diffuser compares pixels at the ground truth's native size"))
    base = dict(BRAIN_DIFFUSER_SIZES) if bd else dict(RESIZE_CONVENTIONS)
    sizes_used: dict[str, Any] = {**base, **{k: int(v) for k, v in (sizes or {}).items()}}
    first = None if bd else prep_size
    r = resize_images(as_float_images(recons, "recons"), first, antialias=antialias)
    t = resize_images(as_float_images(truth, "truth"), first, antialias=antialias)
    if len(r) != len(t):
        raise ShapeMismatchError(
            format_error("recons", f"as many images as truth ({len(t)})", f"{len(r)} images",
                         "Pair every reconstruction with its ground-truth image")
        )
    if len(r) < 2:
        raise ValidationError(format_error("recons", "at least 2 items (identification compares items)", f"{len(r)}"))
    ids = [str(i) for i in (item_ids if item_ids is not None else range(len(r)))]
    if len(ids) != len(r):
        raise ShapeMismatchError(format_error("item_ids", f"{len(r)} names, one per item", f"{len(ids)}"))
    constant = _constant_report(r, ids)
    if constant["count"]:
        logger.warning("%d blank (constant) reconstruction(s), scored as the protocol does and reported: %s",
                       constant["count"], ", ".join(constant["ids"][:10]))
    kw = dict(protocol=protocol, weights=weights, weights_dir=weights_dir, antialias=antialias,
              n_shuffles=int(n_shuffles), n_boot=int(n_boot), seed=random_state, device=device, batch_size=batch_size,
              verbose=verbose, sizes=sizes_used, nets={}, ids=ids)
    results, used = _score_images(r, t, metrics, **kw)  # type: ignore[arg-type]
    out: dict[str, Any] = {m: results[m] for m in metrics}
    if blurry is not None:
        b = as_float_images(blurry, "blurry")
        b = resize_images(b, r.shape[1], antialias=antialias) if b.shape[1:3] != r.shape[1:3] else b
        if len(b) != len(r):
            raise ShapeMismatchError(format_error("blurry", f"{len(r)} images like recons", b))
        blended = BLEND_WEIGHTS[0] * r + BLEND_WEIGHTS[1] * b
        bres, _ = _score_images(blended, t, metrics, **kw)  # type: ignore[arg-type]
        out["blended"] = {m: bres[m] for m in metrics}
    out["n_items"] = len(r)
    out["constant_recons"] = constant
    out["weights"] = used
    out["metrics_version"] = METRICS_VERSION
    out["protocol"] = {
        "name": protocol,
        "spec": "specs/metrics.md; " + ("Brain-Diffuser scripts/eval_extract_features.py + evaluate_reconstruction.py"
                                        if bd else "MindEye2 src/final_evaluations.ipynb"),
        "prep_size": first,
        "sizes": {m: sizes_used[m] for m in metrics},
        "sizes_follow_protocol": all(sizes_used[m] == base[m] for m in metrics),
        "interpolation": ("PIL bilinear (networks) / PIL bicubic (reconstruction to the truth's size)" if bd
                          else "bilinear float tensors"),
        "antialias": True if bd else bool(antialias),
        "n_boot": int(n_boot),
        "ci": 0.95,
        "random_state": random_state,
        "shuffled_control": f"shuffled pairing: predictions scored against a random derangement of the truth, "
                            f"mean of {int(n_shuffles)}",
        "blend": list(BLEND_WEIGHTS) if blurry is not None else None,
        "constant_items": "counted and named; scored as the protocol does (PixCorr NaN), never dropped",
    }
    return out
