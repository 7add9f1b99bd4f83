"""Image-computable features that drive the simulated brains.

Two families, both plain NumPy / SciPy so that anyone can recompute them from the images:

- **Gabor energy** (the "early visual" features): the images, converted to grey levels, are filtered by a
  quadrature pair of Gabor filters at ``n_orientations`` orientations and ``len(wavelengths)`` scales; the
  energy ``sqrt(even**2 + odd**2)`` is block-averaged onto a ``grid`` x ``grid`` map, which population
  receptive fields then pool (Kay et al. 2008, "Identifying natural images from human brain activity").
- **Semantic features** (the "higher visual" features): a random but fixed embedding per category (when
  labels are known) concatenated with a fixed random non-linear projection of a coarse Gabor descriptor
  (so that higher voxels still distinguish images within a category, as IT/VTC does).
"""

from __future__ import annotations

import numpy as np

from .._core.errors import ValidationError
from .._core.validation import check_array, format_error

__all__ = ["gabor_bank", "gabor_energy", "semantic_features", "to_grey"]


def to_grey(images: np.ndarray) -> np.ndarray:
    """Convert uint8 RGB images of shape (n, H, W, 3) to float32 grey levels in [0, 1], shape (n, H, W)."""
    images = check_array(images, "images", ndim=(3, 4))
    if images.ndim == 4:
        if images.shape[-1] != 3:
            raise ValidationError(format_error("images", "RGB images of shape (n, H, W, 3)", images,
                                               "Put the colour channels last"))
        grey = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    else:
        grey = images.astype(np.float32)
    if np.issubdtype(images.dtype, np.integer):
        grey /= 255.0
    return grey


def gabor_bank(wavelengths: tuple[float, ...], n_orientations: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Quadrature pairs (even, odd) of Gabor kernels, scale-major then orientation.

    Each kernel has a Gaussian envelope of standard deviation ``0.56 * wavelength`` (about one octave of
    bandwidth), the even kernel has zero mean and both are normalised to unit L2 norm.
    """
    bank = []
    for lam in wavelengths:
        sigma = 0.56 * lam
        half = max(2, int(np.ceil(2.5 * sigma)))
        yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
        env = np.exp(-(xx**2 + yy**2) / (2 * sigma**2))
        for k in range(n_orientations):
            theta = np.pi * k / n_orientations
            u = xx * np.cos(theta) + yy * np.sin(theta)
            even = env * np.cos(2 * np.pi * u / lam)
            even -= env * (even.sum() / env.sum())
            odd = env * np.sin(2 * np.pi * u / lam)
            bank.append((even / np.linalg.norm(even), odd / np.linalg.norm(odd)))
    return bank


def gabor_energy(
    images: np.ndarray,
    *,
    wavelengths: tuple[float, ...] | None = None,
    n_orientations: int = 4,
    grid: int = 16,
) -> np.ndarray:
    """Gabor energy maps of images, block-averaged onto a coarse grid.

    Parameters
    ----------
    images : ndarray of shape (n_images, H, W, 3) or (n_images, H, W)
        uint8 RGB (or grey) images; square images are expected.
    wavelengths : tuple of float or None
        Wavelengths in pixels; default ``(H / 16, H / 8, H / 4)`` (at least 2.5 pixels).
    n_orientations : int
        Number of orientations, evenly spaced over 180 degrees.
    grid : int
        Side of the output grid (the image is split into ``grid`` x ``grid`` blocks).

    Returns
    -------
    energy : ndarray of shape (n_images, n_channels, grid, grid), dtype float32
        ``n_channels = len(wavelengths) * n_orientations``, scale-major.
    """
    from scipy import fft as sfft

    grey = to_grey(images)
    n, h, w = grey.shape
    if wavelengths is None:
        wavelengths = tuple(max(2.5, h / d) for d in (16.0, 8.0, 4.0))
    grey = grey - grey.mean(axis=(1, 2), keepdims=True)
    bank = gabor_bank(tuple(wavelengths), n_orientations)
    half = max(k[0].shape[0] for k in bank) // 2
    shape = (sfft.next_fast_len(h + 2 * half), sfft.next_fast_len(w + 2 * half))
    spec = sfft.fft2(grey.astype(np.complex64), s=shape, axes=(1, 2), workers=1)
    out = np.empty((n, len(bank), grid, grid), dtype=np.float32)
    ry = _block_matrix(h, grid).astype(np.float32)
    rxt = _block_matrix(w, grid).T.astype(np.float32)
    for c, (even, odd) in enumerate(bank):
        kh = even.shape[0] // 2
        kernel = np.zeros(shape, dtype=np.complex64)
        kernel[: even.shape[0], : even.shape[1]] = even + 1j * odd  # quadrature pair as one complex filter
        kernel = np.roll(kernel, (-kh, -kh), axis=(0, 1))  # centre the kernel: 'same' alignment
        resp = sfft.ifft2(spec * sfft.fft2(kernel)[None], axes=(1, 2), workers=1)[:, :h, :w]
        energy = np.abs(resp).astype(np.float32)
        out[:, c] = ry @ energy @ rxt
    return out


def _block_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) averaging matrix mapping n_in samples onto n_out equal blocks (fractional overlaps)."""
    edges = np.linspace(0, n_in, n_out + 1)
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        for j in range(n_in):
            m[i, j] = max(0.0, min(edges[i + 1], j + 1) - max(edges[i], j))
    return m / m.sum(axis=1, keepdims=True)


def semantic_features(
    energy: np.ndarray,
    labels: np.ndarray | None,
    *,
    n_classes: int | None = None,
    dim: int = 16,
    seed: int = 0,
) -> np.ndarray:
    """Category / semantic features of images.

    Parameters
    ----------
    energy : ndarray of shape (n_images, n_channels, grid, grid)
        Gabor energy from :func:`gabor_energy`.
    labels : ndarray of shape (n_images,) or None
        Category of each image (0-based); ``None`` when unknown (then only the image-computable half is used).
    n_classes : int or None
        Number of categories (default ``labels.max() + 1``).
    dim : int
        Size of each half (category embedding, non-linear image projection).
    seed : int
        Seed of the fixed random embeddings and projection.

    Returns
    -------
    features : ndarray of shape (n_images, 2 * dim) or (n_images, dim), dtype float32
        ``[category embedding, tanh(random projection of a 4 x 4 energy descriptor)]``, each half scaled to
        unit variance per column over the images.
    """
    rng = np.random.default_rng([seed, 7919])
    n, c, g, _ = energy.shape
    k = max(1, g // 4)
    coarse = energy[:, :, : (g // k) * k, : (g // k) * k].reshape(n, c, g // k, k, g // k, k).mean(axis=(3, 5))
    desc = np.log1p(coarse.reshape(n, -1).astype(np.float64))
    desc = (desc - desc.mean(0)) / (desc.std(0) + 1e-8)
    proj = rng.standard_normal((desc.shape[1], dim)) / np.sqrt(desc.shape[1])
    image_part = np.tanh(1.5 * desc @ proj)
    parts = []
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64)
        n_cls = int(labels.max()) + 1 if n_classes is None else int(n_classes)
        emb = rng.standard_normal((n_cls, dim))
        parts.append(emb[labels])
    parts.append(image_part)
    feats = np.concatenate(parts, axis=1)
    feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-8)
    return feats.astype(np.float32)
