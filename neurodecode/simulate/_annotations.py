"""Known-answer captions and depth maps: deterministic functions of each image (``simulate nsd --annotations image``).

Real NSD captions (COCO) and depth maps (a depth network run on the image) describe the picture, so a decoder
that recovers the picture's content can recover them. The simulator's shipped captions name a Fashion-MNIST
class, which the simulated brain encodes only through its category features. With ``annotations="image"`` the
captions and the depth map are instead computed from the pixels alone, with fixed rules written here, so they
are exactly as decodable as the image properties the simulated voxels respond to (local contrast energy,
luminance layout), and a decoded caption or depth map can be scored against its truth and a shuffled control.

Words (fixed thresholds, luminance ``L`` = mean of R, G, B in [0, 1], foreground = ``L > 0.1``):

- brightness, mean ``L`` of the image: ``dark`` (< 0.21), ``dim`` (< 0.34), ``bright``;
- size, foreground fraction: ``small`` (< 0.39), ``mid-sized`` (< 0.57), ``large``;
- texture, standard deviation of ``L`` over the foreground: ``smooth`` (< 0.19), ``patterned``;
- shape, height / width of the foreground's bounding box: ``wide`` (< 0.8), ``square`` (< 1.3), ``tall``;
- colour, of the mean foreground RGB: ``grey`` when its saturation (max - min) / max < 0.15, else the nearest
  hue of red, yellow, green, cyan, blue, magenta.

(The thresholds split the shipped Fashion-MNIST subset at 32 px into about equal thirds / halves.)
Captions, three per image: ``"a {brightness} {size} {texture} object"``,
``"a {shape} {colour} object, {brightness} and {texture}"``, ``"a {size} {shape} {colour} thing"``.

Depth (1 = far, 0 = near): ``depth = 0.5 * r + 0.5 * (1 - G(L))`` where ``r`` runs linearly from 1 at the top
row to 0 at the bottom row (a ground plane) and ``G`` is a Gaussian blur of sigma ``H / 32`` pixels, so bright
foreground surfaces are near.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import MissingFileError, ShapeMismatchError
from .._core.validation import check_array, check_indices, format_error

__all__ = ["known_answer_words", "known_answer_captions", "known_answer_depth", "write_simulated_depth",
           "load_simulated_depth"]

_HUES = ("red", "yellow", "green", "cyan", "blue", "magenta")


def _luminance(images: Any) -> tuple[np.ndarray, np.ndarray]:
    ims = check_array(images, "images", ndim=4)
    if ims.shape[-1] != 3:
        raise ShapeMismatchError(format_error("images", "RGB images of shape (n, H, W, 3)", ims))
    rgb = ims.astype(np.float32) / (255.0 if ims.dtype == np.uint8 else 1.0)
    return rgb, rgb.mean(-1)


def known_answer_words(images: Any) -> list[dict[str, str]]:
    """The five words of each image (brightness, size, texture, shape, colour); see the module docstring.

    Parameters
    ----------
    images : ndarray of shape (n, H, W, 3)
        uint8 (0-255) or float (0-1) RGB.

    Returns
    -------
    words : list of dict of str to str, length n
    """
    rgb, L = _luminance(images)
    out = []
    for k in range(len(L)):
        fg = L[k] > 0.1
        frac = float(fg.mean())
        mean = float(L[k].mean())
        texture = float(L[k][fg].std()) if fg.any() else 0.0
        rows, cols = np.flatnonzero(fg.any(1)), np.flatnonzero(fg.any(0))
        aspect = (np.ptp(rows) + 1) / (np.ptp(cols) + 1) if fg.any() else 1.0
        colour_rgb = rgb[k][fg].mean(0) if fg.any() else rgb[k].reshape(-1, 3).mean(0)
        hi, lo = float(colour_rgb.max()), float(colour_rgb.min())
        if hi <= 0 or (hi - lo) / hi < 0.15:
            colour = "grey"
        else:
            r, g, b = colour_rgb
            hue = np.degrees(np.arctan2(np.sqrt(3) * (g - b), 2 * r - g - b)) % 360
            colour = _HUES[int(((hue + 30) % 360) // 60)]
        out.append({
            "brightness": "dark" if mean < 0.21 else "dim" if mean < 0.34 else "bright",
            "size": "small" if frac < 0.39 else "mid-sized" if frac < 0.57 else "large",
            "texture": "smooth" if texture < 0.19 else "patterned",
            "shape": "wide" if aspect < 0.8 else "square" if aspect < 1.3 else "tall",
            "colour": colour,
        })
    return out


def known_answer_captions(images: Any) -> list[list[str]]:
    """Three captions per image built from :func:`known_answer_words` (see the module docstring)."""
    caps = []
    for w in known_answer_words(images):
        caps.append([f"a {w['brightness']} {w['size']} {w['texture']} object",
                     f"a {w['shape']} {w['colour']} object, {w['brightness']} and {w['texture']}",
                     f"a {w['size']} {w['shape']} {w['colour']} thing"])
    return caps


def known_answer_depth(images: Any) -> np.ndarray:
    """Depth map of each image: ``0.5 * ramp + 0.5 * (1 - blur(L))`` in [0, 1], 1 = far (module docstring).

    Returns
    -------
    depth : ndarray of float32, shape (n, H, W)
    """
    from scipy.ndimage import gaussian_filter

    _, L = _luminance(images)
    n, H, W = L.shape
    ramp = np.linspace(1.0, 0.0, H, dtype=np.float32)[:, None]
    blurred = gaussian_filter(L, sigma=(0, H / 32, H / 32), mode="nearest")
    return np.clip(0.5 * ramp[None] + 0.5 * (1.0 - blurred), 0.0, 1.0).astype(np.float32)


def write_simulated_depth(root: str | os.PathLike[str], depth: np.ndarray) -> Path:
    """Write ``nsd_depth_simulated.hdf5`` (dataset ``depth``, float16 (n_stimuli, H, W)) beside the stimuli."""
    import h5py

    from .._core.files import atomic_path
    from .._core.specs import load_spec

    path = Path(root) / load_spec("nsd")["paths"]["simulated_depth"]
    with atomic_path(path, suffix=".hdf5") as tmp, h5py.File(tmp, "w") as f:
        ds = f.create_dataset("depth", data=np.asarray(depth, dtype=np.float16), chunks=(1,) + depth.shape[1:])
        ds.attrs["convention"] = "1 = far, 0 = near; 0.5 * top-to-bottom ramp + 0.5 * (1 - blurred luminance)"
        ds.attrs["source"] = "neurodecode.simulate known_answer_depth (simulation ground truth, not part of NSD)"
    return path


def load_simulated_depth(root: str | os.PathLike[str], ids: Any) -> np.ndarray:
    """Read known-answer depth maps by 0-based stimulus id (the simulated NSD root, or the simulate folder).

    Returns
    -------
    depth : ndarray of float32, shape (n, H, W)
    """
    from .._core.specs import load_spec
    from ..io.hdf5 import get_dataset, open_hdf5, read_rows

    rel = load_spec("nsd")["paths"]["simulated_depth"]
    path = Path(root) / rel
    if not path.is_file() and (Path(root) / "nsd" / rel).is_file():
        path = Path(root) / "nsd" / rel
    if not path.is_file():
        raise MissingFileError(format_error("root", f"a simulated NSD tree with {rel}", f"none under {root}",
                                            "Simulate with `neurodecode simulate nsd OUT --annotations image` "
                                            "(simulate_nsd(..., annotations='image'))"))
    idx = np.asarray(ids).ravel()
    with open_hdf5(path) as f:
        ds = get_dataset(f, "depth", ndim=3)
        check_indices(idx, "ids", ds.shape[0], base=0)
        return read_rows(ds, idx).astype(np.float32)
