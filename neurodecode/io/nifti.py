"""Safe NIfTI reading: a full read at load time, so a truncated ``.nii.gz`` fails here, not later.

nibabel maps images lazily; a cut-off gzip stream only raises when the data are touched,
possibly deep inside a training loop. :func:`load_nifti` reads everything at once and
turns every low-level failure into a :class:`~neurodecode._core.errors.DataIntegrityError`
naming the file.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import DataIntegrityError, MissingFileError, ShapeMismatchError
from .._core.validation import format_error

__all__ = ["NiftiVolume", "load_nifti", "save_nifti"]

_GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class NiftiVolume:
    """A fully read NIfTI image.

    Attributes
    ----------
    data : ndarray
        The voxel values as stored (no scaling applied when the header has none), shape
        (X, Y, Z) or (X, Y, Z, T).
    affine : ndarray of shape (4, 4)
        Voxel-to-world transform.
    path : pathlib.Path
        The file read.
    """

    data: np.ndarray
    affine: np.ndarray
    path: Path

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of :attr:`data`."""
        return tuple(self.data.shape)


def load_nifti(
    path: str | os.PathLike[str], *, ndim: int | tuple[int, ...] | None = None, hint: str | None = None,
) -> NiftiVolume:
    """Read a NIfTI file completely (``.nii`` or ``.nii.gz``).

    Parameters
    ----------
    path : path-like
        The file.
    ndim : int or tuple of int or None
        Allowed numbers of dimensions of the data.
    hint : str or None
        Added to the missing-file message (e.g. the dataset-relative path expected).

    Returns
    -------
    volume : NiftiVolume
        Data (as stored, e.g. int16), affine and path.
    """
    import nibabel as nib

    p = Path(path)
    if not p.is_file():
        raise MissingFileError(format_error("path", "an existing NIfTI file", str(p), hint or "Check the path"))
    with open(p, "rb") as fh:
        head = fh.read(512)
    if p.name.endswith(".gz") and head[:2] != _GZIP_MAGIC:
        lowered = head.lower()
        what = ("an HTML page (an error or login page saved instead of the data)"
                if b"<html" in lowered or b"<!doctype" in lowered else "a file that is not gzip-compressed")
        raise DataIntegrityError(format_error("path", "a gzip-compressed NIfTI file", f"{what} at {p}",
                                              "Download the file again and check its size"))
    try:
        img: Any = nib.load(str(p))
        data = np.asanyarray(img.dataobj)  # forces the full read (and decompression)
        affine = np.asarray(img.affine, dtype=np.float64)
    except (EOFError, OSError, zlib.error, ValueError, nib.filebasedimages.ImageFileError) as exc:
        raise DataIntegrityError(
            format_error("path", "a complete, readable NIfTI file", f"{p} ({type(exc).__name__}: {exc})",
                         "The file is truncated or corrupted; download it again")
        ) from exc
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if data.ndim not in allowed:
            raise ShapeMismatchError(
                format_error(str(p), f"a volume with {' or '.join(map(str, allowed))} dimensions",
                             f"shape {data.shape}", "Check that this is the right file")
            )
    return NiftiVolume(data=np.asarray(data), affine=affine, path=p)


def save_nifti(path: str | os.PathLike[str], data: Any, affine: Any | None = None) -> Path:
    """Atomically write ``data`` (dtype kept) as a NIfTI-1 file with ``affine`` (identity if None)."""
    import nibabel as nib

    from .._core.files import atomic_path

    target = Path(path)
    arr = np.asarray(data)
    aff = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    img = nib.Nifti1Image(arr, aff)
    img.header.set_data_dtype(arr.dtype)
    suffix = ".nii.gz" if target.name.endswith(".gz") else ".nii"
    with atomic_path(target, suffix=suffix) as tmp:
        nib.save(img, str(tmp))
    return target
