"""Low-level image metrics (PixCorr, SSIM) and the resize conventions of the protocol.

Conventions (specs/metrics.md, MindEye2's evaluation): reconstructions and ground
truth are first resized to ``prep_size`` = 256 px; PixCorr then resizes bilinearly to
425 x 425 and correlates the flattened RGB pixels of each pair; SSIM converts the
425 x 425 images to grayscale (scikit-image ``rgb2gray``) and uses Gaussian weights
(sigma 1.5), population covariances and a data range of 1. Resizes are bilinear
without antialiasing (torchvision < 0.17 tensor behaviour, which the published
numbers were computed with); ``antialias=True`` is available and recorded.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._core.errors import ShapeMismatchError, ValidationError
from .._core.validation import check_array, format_error

__all__ = ["as_float_images", "resize_images", "pil_resize", "pixcorr", "ssim", "pixcorr_brain_diffuser",
           "ssim_brain_diffuser", "constant_images", "RESIZE_CONVENTIONS", "BRAIN_DIFFUSER_SIZES"]

#: Sizes (px, square) at which each metric is computed, after the common ``prep_size``.
RESIZE_CONVENTIONS: dict[str, int] = {
    "prep": 256,
    "pixcorr": 425,
    "ssim": 425,
    "alex2": 256,
    "alex5": 256,
    "incep": 342,
    "clip": 224,
    "effnet": 255,
    "swav": 224,
}

#: Brain-Diffuser's own protocol (scripts/eval_extract_features.py, evaluate_reconstruction.py): every
#: network's input PIL-resized to 224 from the image; PixCorr / SSIM at the ground truth's native size
#: (425 on NSD) with the reconstruction PIL-resized bicubically to it.
BRAIN_DIFFUSER_SIZES: dict[str, int | str] = {
    "pixcorr": "truth", "ssim": "truth", "alex2": 224, "alex5": 224, "incep": 224, "clip": 224, "effnet": 224,
    "swav": 224,
}

_BATCH = 32


def as_float_images(images: Any, param: str = "images") -> np.ndarray:
    """Check images and return them as float32 in [0, 1], shape (n, H, W, 3).

    Parameters
    ----------
    images : array-like of shape (n, H, W, 3) or (n, H, W)
        uint8 images in [0, 255], or floats in [0, 1]; grayscale images are repeated
        over three channels.
    param : str
        Name used in error messages.

    Returns
    -------
    images : ndarray of shape (n, H, W, 3), float32
    """
    arr = check_array(images, param, ndim=(3, 4))
    if arr.ndim == 3:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.shape[-1] != 3:
        fix = ("Images look channels-first; use np.moveaxis(images, 1, -1)" if arr.shape[1] == 3
               else "Pass RGB images with the colour axis last")
        raise ShapeMismatchError(format_error(param, "images of shape (n, H, W, 3)", arr, fix))
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if np.issubdtype(arr.dtype, np.integer):
        raise ValidationError(format_error(param, "uint8 or float images", arr, "Cast to uint8 (0-255) or to float in [0, 1]"))
    out = arr.astype(np.float32, copy=False)
    lo, hi = float(out.min()), float(out.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValidationError(
            format_error(param, "float images in [0, 1]", f"values in [{lo:.3g}, {hi:.3g}]",
                         "Divide uint8-range floats by 255, or pass uint8 images")
        )
    return np.clip(out, 0.0, 1.0)


def resize_images(images: np.ndarray, size: int | None, *, antialias: bool = False) -> np.ndarray:
    """Bilinear resize of float images (n, H, W, 3) to (n, size, size, 3) (no-op when ``size`` is None or equal)."""
    if size is None or (images.shape[1] == size and images.shape[2] == size):
        return images
    import torch
    import torch.nn.functional as F

    out = np.empty((images.shape[0], size, size, images.shape[-1]), dtype=np.float32)
    for start in range(0, len(images), _BATCH):
        x = torch.from_numpy(np.ascontiguousarray(images[start:start + _BATCH])).permute(0, 3, 1, 2)
        y = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=antialias)
        out[start:start + _BATCH] = y.permute(0, 2, 3, 1).numpy()
    return out


def _pair(recons: Any, truth: Any) -> tuple[np.ndarray, np.ndarray]:
    r = as_float_images(recons, "recons")
    t = as_float_images(truth, "truth")
    if len(r) != len(t):
        raise ShapeMismatchError(
            format_error("recons", f"as many images as truth ({len(t)})", f"{len(r)} images",
                         "Pair every reconstruction with its ground-truth image")
        )
    return r, t


def pixcorr(
    recons: Any, truth: Any, *, prep_size: int | None = 256, size: int = 425, antialias: bool = False
) -> np.ndarray:
    """Pixel-wise correlation of each reconstruction with its ground truth (PixCorr).

    Both sets are resized to ``prep_size`` then bilinearly to ``size`` x ``size``; each
    pair's flattened RGB pixels are correlated (Pearson). The published score is the
    mean of the returned values.

    Parameters
    ----------
    recons : array-like of shape (n, H, W, 3)
        Reconstructions, uint8 or float in [0, 1].
    truth : array-like of shape (n, H2, W2, 3)
        Ground-truth images, same order.
    prep_size : int or None
        Common first resize (256 in MindEye2); ``None`` skips it.
    size : int
        Size at which pixels are compared (425, NSD's native size).
    antialias : bool
        Antialias the resizes (recorded; the published numbers used ``False``).

    Returns
    -------
    r : ndarray of shape (n,)
        Per-item Pearson correlations (NaN for a constant image).
    """
    r, t = _pair(recons, truth)
    out = np.empty(len(r))
    for start in range(0, len(r), _BATCH):
        sl = slice(start, start + _BATCH)
        a = resize_images(resize_images(r[sl], prep_size, antialias=antialias), size, antialias=antialias)
        b = resize_images(resize_images(t[sl], prep_size, antialias=antialias), size, antialias=antialias)
        out[sl] = _rowwise_pearson(a.reshape(len(a), -1), b.reshape(len(b), -1))
    return out


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64) - a.mean(axis=1, keepdims=True, dtype=np.float64)
    b = b.astype(np.float64) - b.mean(axis=1, keepdims=True, dtype=np.float64)
    denom = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (a * b).sum(axis=1) / np.where(denom > 0, denom, 1.0), np.nan)


def ssim(
    recons: Any, truth: Any, *, prep_size: int | None = 256, size: int = 425, antialias: bool = False
) -> np.ndarray:
    """Structural similarity of each reconstruction with its ground truth (SSIM).

    Grayscale (scikit-image ``rgb2gray``) at ``size`` x ``size``, Gaussian weights with
    sigma 1.5, population covariances, data range 1 (scikit-image
    ``structural_similarity``), as in MindEye / MindEye2.

    Parameters
    ----------
    recons : array-like of shape (n, H, W, 3)
        Reconstructions, uint8 or float in [0, 1].
    truth : array-like of shape (n, H2, W2, 3)
        Ground-truth images, same order.
    prep_size, size, antialias
        See :func:`pixcorr`.

    Returns
    -------
    ssim : ndarray of shape (n,)
        Per-item SSIM.
    """
    from skimage.color import rgb2gray
    from skimage.metrics import structural_similarity

    r, t = _pair(recons, truth)
    out = np.empty(len(r))
    for start in range(0, len(r), _BATCH):
        sl = slice(start, start + _BATCH)
        a = rgb2gray(resize_images(resize_images(r[sl], prep_size, antialias=antialias), size, antialias=antialias))
        b = rgb2gray(resize_images(resize_images(t[sl], prep_size, antialias=antialias), size, antialias=antialias))
        for i in range(len(a)):
            out[start + i] = structural_similarity(
                a[i].astype(np.float64), b[i].astype(np.float64), gaussian_weights=True, sigma=1.5,
                use_sample_covariance=False, data_range=1.0,
            )
    return out


def pil_resize(images: np.ndarray, size: int | tuple[int, int], resample: str = "bilinear", *,
               as_uint8: bool = False) -> np.ndarray:
    """Resize like PIL on 8-bit images (what a PNG-reading pipeline does), back to float32 in [0, 1].

    Parameters
    ----------
    images : ndarray of shape (n, H, W, 3)
        Float images in [0, 1] (rounded to uint8 first) or uint8 images.
    size : int or (height, width)
        Output size.
    resample : {"bilinear", "bicubic"}
        PIL filter (PIL filters always antialias when shrinking).
    as_uint8 : bool
        Return the 8-bit result itself.

    Returns
    -------
    images : ndarray of shape (n, height, width, 3), float32 multiples of 1/255 (or uint8)
    """
    from PIL import Image

    h, w = (size, size) if isinstance(size, int) else size
    filt = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}[resample]
    x8 = images if images.dtype == np.uint8 else np.clip(np.round(images * 255.0), 0, 255).astype(np.uint8)
    out = np.empty((len(x8), h, w, 3), dtype=np.uint8)
    for i, im in enumerate(x8):
        pil = Image.fromarray(np.ascontiguousarray(im), mode="RGB")
        out[i] = np.asarray(pil if pil.size == (w, h) else pil.resize((w, h), filt))
    return out if as_uint8 else out.astype(np.float32) / 255.0


def constant_images(images: Any) -> np.ndarray:
    """Boolean mask of the images whose pixels are all equal (blank, e.g. a safety filter's black image)."""
    x = as_float_images(images, "images")
    flat = x.reshape(len(x), -1)
    return np.asarray(flat.max(axis=1) == flat.min(axis=1))


def pixcorr_brain_diffuser(recons: Any, truth: Any) -> np.ndarray:
    """PixCorr as Brain-Diffuser computes it (scripts/evaluate_reconstruction.py).

    The reconstruction is PIL-resized bicubically (8-bit) to the ground truth's native size
    (425 on NSD), the ground truth is not resized; Pearson correlation of the flattened RGB
    pixels of each pair (NaN for a constant image, as ``np.corrcoef``).

    Parameters
    ----------
    recons : array-like of shape (n, H, W, 3)
    truth : array-like of shape (n, H2, W2, 3)

    Returns
    -------
    r : ndarray of shape (n,)
    """
    r, t = _pair(recons, truth)
    a = pil_resize(r, (t.shape[1], t.shape[2]), "bicubic", as_uint8=True).astype(np.float64)
    t8 = np.round(t.astype(np.float64) * 255.0)  # Pearson is scale-free: 8-bit values, exactly
    return _rowwise_pearson(a.reshape(len(a), -1), t8.reshape(len(t8), -1))


def ssim_brain_diffuser(recons: Any, truth: Any) -> np.ndarray:
    """SSIM as Brain-Diffuser computes it: column-wise 1-D SSIM of the grey images.

    Brain-Diffuser calls scikit-image 0.17's ``structural_similarity(..., multichannel=True)`` on
    2-D grey images: the last axis (the columns) is taken as channels, so each column is a 1-D
    signal scored with a 1-D Gaussian window (sigma 1.5, population covariances, data range 1)
    and the columns are averaged. Reconstruction PIL-resized bicubically to the ground truth's
    native size, as for :func:`pixcorr_brain_diffuser`.

    Returns
    -------
    ssim : ndarray of shape (n,)
    """
    from skimage.color import rgb2gray
    from skimage.metrics import structural_similarity

    r, t = _pair(recons, truth)
    a = rgb2gray(pil_resize(r, (t.shape[1], t.shape[2]), "bicubic", as_uint8=True) / 255.0)
    b = rgb2gray(np.round(t.astype(np.float64) * 255.0) / 255.0)
    return np.array([structural_similarity(a[i], b[i], channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                           use_sample_covariance=False, data_range=1.0) for i in range(len(a))])
