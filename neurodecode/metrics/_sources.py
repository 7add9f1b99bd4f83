"""Find reconstructions on disk and pair them with their ground truth.

Reconstructions: a folder of images (``.png``, ``.jpg``...), or a reconstruct
derivative (``OUT/sub-XX/recon/sub-XX_stim-<id>_desc-<recipe>_recon.png``, ``<id>``
the 0-based NSD stimulus id). Ground truth: the NSD stimuli HDF5 (dataset
``imgBrick``, indexed by stimulus id), or a folder of images paired by file stem (or
by ``stim-<id>`` when the names carry one).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import MissingFileError, ValidationError
from .._core.validation import check_path, format_error

__all__ = ["IMAGE_SUFFIXES", "find_images", "load_pairs", "item_key"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
_STIM = re.compile(r"(?:^|_)stim-([A-Za-z0-9]+)")
_SUB = re.compile(r"(?:^|_)sub-([A-Za-z0-9]+)")
_HDF5_SUFFIXES = (".hdf5", ".h5", ".hdf")


def item_key(path: Path) -> str:
    """Pairing key of an image file: its ``stim-<id>`` entity when present, else its stem.

    Integer keys are normalised (``"00042"`` -> ``"42"``).
    """
    m = _STIM.search(path.stem)
    key = m.group(1) if m else path.stem
    return str(int(key)) if key.isdigit() else key


def find_images(folder: str | os.PathLike[str], param: str = "recons") -> list[Path]:
    """Image files of ``folder``: a reconstruct derivative's ``*_recon.*`` files, else every image, sorted."""
    root = check_path(folder, param, kind="dir")
    derivative = sorted(p for p in root.glob("sub-*/recon/*_recon.*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if derivative:
        return derivative
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise MissingFileError(
            format_error(param, f"a folder with images ({', '.join(IMAGE_SUFFIXES)})", f"none in {root}",
                         "Point to the folder holding the reconstructions, or to a reconstruct output folder")
        )
    return files


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _stack(images: list[np.ndarray], size: int) -> np.ndarray:
    """Stack uint8 images; when their sizes differ, resize each (bilinear, protocol) to ``size``."""
    if len({im.shape for im in images}) == 1:
        return np.stack(images)
    from ._image import resize_images

    return np.concatenate([resize_images(im[None].astype(np.float32) / 255.0, size) for im in images])


def load_pairs(
    recons: str | os.PathLike[str], truth: str | os.PathLike[str], *, prep_size: int = 256
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Load reconstructions and their ground truth, paired.

    Parameters
    ----------
    recons : path-like
        Folder of reconstructions or a reconstruct derivative.
    truth : path-like
        NSD stimuli HDF5 (``imgBrick``), or a folder of ground-truth images.
    prep_size : int
        Size images are brought to when a set mixes sizes.

    Returns
    -------
    recons : ndarray of shape (n_items, H, W, 3)
    truth : ndarray of shape (n_items, H2, W2, 3)
    ids : list of str
        Item names (``sub-XX/stim-<id>`` for derivatives, else the pairing key).
    """
    files = find_images(recons, "recons")
    keys = [item_key(p) for p in files]
    subs = [(_SUB.search(p.stem).group(1) if _SUB.search(p.stem) else None) for p in files]  # type: ignore[union-attr]
    ids = [f"sub-{s}/stim-{k}" if s else k for s, k in zip(subs, keys)]
    tpath = Path(truth).expanduser()
    if tpath.is_file() and tpath.suffix.lower() in _HDF5_SUFFIXES:
        truth_imgs = _truth_from_hdf5(tpath, keys)
    elif tpath.is_dir():
        tfiles = find_images(tpath, "truth")
        by_key: dict[str, Path] = {}
        for p in tfiles:
            by_key.setdefault(item_key(p), p)
        missing = [k for k in keys if k not in by_key]
        if missing:
            raise MissingFileError(
                format_error("truth", f"a ground-truth image for every reconstruction in {tpath}",
                             f"{len(missing)} missing (first: {', '.join(missing[:10])})",
                             "Name each truth image like its reconstruction (same file stem, or the same stim-<id>)")
            )
        truth_imgs = [_read_image(by_key[k]) for k in keys]
    else:
        raise MissingFileError(
            format_error("truth", "an NSD stimuli HDF5 file (nsd_stimuli.hdf5) or a folder of images", str(tpath),
                         "Check the path")
        )
    recon_imgs = [_read_image(p) for p in files]
    return _stack(recon_imgs, prep_size), _stack(truth_imgs, prep_size), ids


def _truth_from_hdf5(path: Path, keys: list[str]) -> list[np.ndarray]:
    from ..io.hdf5 import get_dataset, open_hdf5, read_rows

    bad = [k for k in keys if not k.isdigit()]
    if bad:
        raise ValidationError(
            format_error("recons", "file names carrying the 0-based NSD stimulus id (e.g. sub-01_stim-2950_..."
                         "_recon.png or 2950.png) to index the HDF5", f"names such as {bad[:3]}",
                         "Rename the files, or pass a folder of ground-truth images as --truth")
        )
    with open_hdf5(path, hint="the NSD stimuli file nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5") as f:
        ds = get_dataset(f, "imgBrick", ndim=4)
        data = read_rows(ds, np.array([int(k) for k in keys]))
    if data.dtype != np.uint8:
        data = np.clip(data, 0, 255).astype(np.uint8)
    return list(data)


def describe_source(path: Any) -> str:
    """One-line description of a truth source for the provenance."""
    p = Path(path)
    return f"hdf5:{p.resolve()}" if p.is_file() else f"folder:{p.resolve()}"
