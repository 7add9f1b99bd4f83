"""Voxel-response agreement: encoding accuracy (r, r^2, noise-ceiling-normalised r^2) and the brain correlation
of reconstructions.

Encoding accuracy (:func:`encoding_accuracy`)
    For each voxel, the Pearson correlation ``r`` between predicted and measured responses over the test
    images; ``r^2``; and ``r^2 / NC``, the "fraction of explainable variance" of the transformer brain
    encoder paper and the Algonauts 2023 challenge, where ``NC`` is the voxel's noise ceiling as a fraction.
    From NSD's ``ncsnr`` (Allen et al. 2022): ``NC = ncsnr^2 / (ncsnr^2 + 1 / n)`` for responses averaged
    over ``n`` trials (:func:`noise_ceiling_from_ncsnr`). Voxels with ``NC = 0`` get NaN. Per ROI: mean and
    median over its voxels.

Brain correlation (:func:`brain_correlation`, protocol ``"mindeye2"``)
    MindEye2 (Scotti et al. 2024, section 3.4) scores reconstructions by encoding them back into voxels
    with a trained encoder (GNet there; any callable here: a :class:`~neurodecode.models.brain_encoder.
    TransformerBrainEncoder` behind its latent space, a ridge encoder...) and correlating the prediction
    with the measured test response, per ROI. As we read their evaluation: for each test image the
    Pearson correlation across the ROI's voxels, averaged over images. ``protocol="per-voxel"`` correlates
    each voxel across images instead (then averaged over the ROI's voxels). A shuffled control pairs every
    reconstruction with another image's response (a seeded derangement); the encoder's ceiling (its
    prediction for the *seen* images) is reported when they are given.

Both take NumPy arrays; ROIs are a dict ``{name: boolean mask over voxels}``; every voxel is also scored
together, under the name ``"all"``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .._core.errors import ShapeMismatchError, ValidationError
from .._core.validation import check_array, check_option, format_error

__all__ = ["BRAIN_CORRELATION_PROTOCOLS", "pearson_columns", "pearson_rows", "noise_ceiling_from_ncsnr",
           "encoding_accuracy", "brain_correlation", "roi_masks"]

BRAIN_CORRELATION_PROTOCOLS = ("mindeye2", "per-voxel")


def pearson_columns(a: Any, b: Any) -> np.ndarray:
    """Pearson correlation of each column of ``a`` with the same column of ``b`` (shape (n, k) -> (k,)).

    A constant column gives NaN.
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    x = x - x.mean(0)
    y = y - y.mean(0)
    den = np.sqrt((x * x).sum(0) * (y * y).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (x * y).sum(0) / np.where(den > 0, den, 1.0), np.nan)


def pearson_rows(a: Any, b: Any) -> np.ndarray:
    """Pearson correlation of each row of ``a`` with the same row of ``b`` (shape (n, k) -> (n,))."""
    return pearson_columns(np.asarray(a).T, np.asarray(b).T)


def noise_ceiling_from_ncsnr(ncsnr: Any, n_trials: int | Any = 1) -> np.ndarray:
    """NSD's noise ceiling (a fraction) from the noise-ceiling SNR: ``ncsnr^2 / (ncsnr^2 + 1 / n_trials)``.

    Parameters
    ----------
    ncsnr : array of shape (n_voxels,)
        NSD's ``ncsnr`` (signal sd / noise sd).
    n_trials : int or array of shape (n_voxels,)
        Trials averaged per test response (3 for NSD's repeats averaged, 1 for single trials).

    Returns
    -------
    nc : ndarray of shape (n_voxels,)
        In [0, 1) (NSD reports it in percent: multiply by 100).
    """
    snr2 = np.square(np.asarray(ncsnr, dtype=np.float64))
    n = np.asarray(n_trials, dtype=np.float64)
    if np.any(n < 1):
        raise ValidationError(format_error("n_trials", "trials averaged (>= 1)", n_trials))
    return np.asarray(snr2 / (snr2 + 1.0 / n))


def roi_masks(labels: Any = None, *, membership: Any = None, names: Any = None, n_voxels: int | None = None,
              include_all: bool = True) -> dict[str, np.ndarray]:
    """ROIs as ``{name: boolean mask}``, from per-voxel labels (``<= 0`` or ``""`` = none) or a membership.

    ``include_all`` adds ``"all"`` (every voxel) first.
    """
    out: dict[str, np.ndarray] = {}
    if labels is not None:
        lab = np.asarray(labels)
        n = len(lab)
        empty = (lab == "") if lab.dtype.kind in "US" else (lab.astype(np.int64) <= 0)
        for v in sorted(set(lab[~np.asarray(empty, dtype=bool)].tolist())):
            out[str(v)] = np.asarray(lab == v)
    elif membership is not None:
        mem = np.asarray(membership).astype(bool)
        n = mem.shape[1]
        row_names = list(names) if names is not None else [f"roi{i}" for i in range(len(mem))]
        out = {str(k): m for k, m in zip(row_names, mem)}
    else:
        if n_voxels is None:
            raise ValidationError(format_error("n_voxels", "the number of voxels when no labels are given", None))
        n = int(n_voxels)
    return ({"all": np.ones(n, dtype=bool)} | out) if include_all else out


def _rois(rois: Mapping[str, Any] | None, n_voxels: int) -> dict[str, np.ndarray]:
    out = {"all": np.ones(n_voxels, dtype=bool)}
    if rois is None:
        return out
    for name, mask in rois.items():
        m = np.asarray(mask).astype(bool)
        if m.shape != (n_voxels,):
            raise ShapeMismatchError(format_error(f"rois[{name!r}]", f"a boolean mask of shape ({n_voxels},)", m,
                                                  "One entry per voxel, in the order of the responses"))
        out[str(name)] = m
    return out


def _summary(values: np.ndarray) -> dict[str, float]:
    ok = values[np.isfinite(values)]
    if not len(ok):
        return {"mean": float("nan"), "median": float("nan")}
    return {"mean": float(ok.mean()), "median": float(np.median(ok))}


def encoding_accuracy(predicted: Any, measured: Any, *, noise_ceiling: Any = None,
                      rois: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Per-voxel and per-ROI accuracy of an encoding model on held-out images.

    Parameters
    ----------
    predicted, measured : ndarray of shape (n_images, n_voxels)
        Predicted and measured responses (the measured ones typically averaged over repeats).
    noise_ceiling : ndarray of shape (n_voxels,) or None
        Each voxel's noise ceiling as a fraction (:func:`noise_ceiling_from_ncsnr` for the number of
        trials averaged in ``measured``); ``None`` skips the normalised score.
    rois : dict of str to boolean mask of shape (n_voxels,), or None

    Returns
    -------
    result : dict
        ``r``, ``r2`` and ``nc_r2`` (``r^2 / NC``; NaN where NC = 0; absent without ``noise_ceiling``)
        arrays of shape (n_voxels,), and ``rois``: ``{name: {"n_voxels", "r": {"mean", "median"}, "r2": ...,
        "nc_r2": ...}}``.
    """
    pred = check_array(predicted, "predicted", ndim=2, dtype="float")
    meas = check_array(measured, "measured", ndim=2, dtype="float")
    if pred.shape != meas.shape:
        raise ShapeMismatchError(format_error("predicted", f"the shape of measured {meas.shape}", pred.shape))
    if len(pred) < 3:
        raise ValidationError(format_error("measured", "at least 3 images", len(pred)))
    r = pearson_columns(pred, meas)
    out: dict[str, Any] = {"r": r, "r2": r ** 2}
    if noise_ceiling is not None:
        nc = np.asarray(noise_ceiling, dtype=np.float64)
        if nc.shape != (pred.shape[1],):
            raise ShapeMismatchError(format_error("noise_ceiling", f"shape ({pred.shape[1]},)", nc))
        if np.nanmax(nc) > 1.0:
            raise ValidationError(format_error("noise_ceiling", "fractions in [0, 1]", f"max {np.nanmax(nc):.3g}",
                                               "NSD's noise ceilings are in percent: divide by 100"))
        with np.errstate(invalid="ignore", divide="ignore"):
            out["nc_r2"] = np.where(nc > 0, r ** 2 / np.where(nc > 0, nc, 1.0), np.nan)
    out["rois"] = {name: {"n_voxels": int(m.sum()), **{k: _summary(out[k][m]) for k in ("r", "r2", "nc_r2")
                                                       if k in out}}
                   for name, m in _rois(rois, pred.shape[1]).items()}
    return out


def brain_correlation(reconstructions: Any, measured: Any, encoder: Callable[[Any], Any], *,
                      rois: Mapping[str, Any] | None = None, protocol: str = "mindeye2", seen: Any = None,
                      seed: int = 0, n_boot: int = 1000) -> dict[str, Any]:
    """Correlate the encoded reconstructions with the measured responses, per ROI.

    Parameters
    ----------
    reconstructions : array, (n_images, ...)
        Reconstructed images (anything ``encoder`` takes: uint8 ``(n, H, W, 3)`` images or their features).
    measured : ndarray of shape (n_images, n_voxels)
        The measured test responses, in the order of ``reconstructions``.
    encoder : callable
        ``encoder(images) -> (n_images, n_voxels)`` predicted responses (a trained encoding model).
    rois : dict of str to boolean mask of shape (n_voxels,), or None
        ROIs (``None``: all voxels as ``"all"``).
    protocol : {"mindeye2", "per-voxel"}
        ``"mindeye2"``: per image, Pearson r across the ROI's voxels, mean over images; ``"per-voxel"``:
        per voxel, r across images, mean over the ROI's voxels.
    seen : array or None
        The images that were seen: their encoding gives the encoder's own ceiling (``seen/<roi>``).
    seed : int
        Seed of the shuffled pairing of the control and of the bootstrap.
    n_boot : int
        Bootstrap resamples of the 95 % CI (``0``: no CI). Protocol ``"mindeye2"`` resamples images,
        ``"per-voxel"`` the ROI's voxels.

    Returns
    -------
    result : dict
        ``protocol``, ``n_images`` and per ROI ``{"brain_corr": mean, "ci": [low, high] (percentile
        bootstrap, with ``n_boot``), "shuffled": control mean, "seen": ceiling mean (with ``seen``),
        "n_voxels"}`` under ``rois``; ``per_item`` (protocol ``"mindeye2"``: (n_images,) r of each image,
        per ROI) or ``per_voxel`` arrays.
    """
    from ._stats import bootstrap_ci, derangement

    check_option(protocol, "protocol", BRAIN_CORRELATION_PROTOCOLS)
    meas = check_array(measured, "measured", ndim=2, dtype="float")
    pred = check_array(encoder(reconstructions), "encoder(reconstructions)", ndim=2, dtype="float")
    if pred.shape != meas.shape:
        raise ShapeMismatchError(format_error("encoder(reconstructions)", f"the shape of measured {meas.shape}",
                                              pred.shape, "The encoder must be the subject's, on the same voxels"))
    if len(meas) < 2:
        raise ValidationError(format_error("measured", "at least 2 test images (the control pairs them)", len(meas)))
    ceiling = None
    if seen is not None:
        ceiling = check_array(encoder(seen), "encoder(seen)", ndim=2, dtype="float")
    perm = derangement(len(meas), np.random.default_rng(seed))
    masks = _rois(rois, meas.shape[1])

    def score(p: np.ndarray, m: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if protocol == "mindeye2":
            return pearson_rows(p[:, mask], m[:, mask])
        return pearson_columns(p[:, mask], m[:, mask])

    per: dict[str, np.ndarray] = {}
    table: dict[str, dict[str, Any]] = {}
    for name, mask in masks.items():
        if protocol == "mindeye2" and mask.sum() < 2:
            raise ValidationError(format_error(f"rois[{name!r}]", "at least 2 voxels (r across voxels)",
                                               int(mask.sum())))
        vals = score(pred, meas, mask)
        per[name] = vals
        row: dict[str, Any] = {"brain_corr": _summary(vals)["mean"]}
        if n_boot and np.isfinite(vals).sum() > 1:
            row["ci"] = [float(v) for v in bootstrap_ci(vals, int(n_boot), seed)]
        row.update(shuffled=_summary(score(pred[perm], meas, mask))["mean"], n_voxels=int(mask.sum()))
        if ceiling is not None:
            row["seen"] = _summary(score(ceiling, meas, mask))["mean"]
        table[name] = row
    key = "per_item" if protocol == "mindeye2" else "per_voxel"
    return {"protocol": protocol, "n_images": int(len(meas)), "rois": table, key: per,
            "n_boot": int(n_boot), "ci_over": "images" if protocol == "mindeye2" else "voxels"}
