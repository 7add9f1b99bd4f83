"""Safe HDF5 access: clear errors for missing, truncated or non-HDF5 files, and careful indexing.

h5py's traps, handled here once:
- fancy indices must be sorted and unique (NSD repeats are neither): :func:`read_rows`
  sorts, de-duplicates, reads once and re-expands;
- a slice past the end silently returns fewer rows: every read is bounds-checked;
- an HTML error page saved as ``.hdf5`` gives an opaque OSError: we sniff the signature.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import DataIntegrityError, MissingFileError, ShapeMismatchError
from .._core.validation import check_indices, format_error

__all__ = ["open_hdf5", "get_dataset", "read_rows", "read_voxels", "HDF5_SIGNATURE"]

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _sniff(p: Path) -> None:
    with open(p, "rb") as fh:
        head = fh.read(512)
    if head[:8] == HDF5_SIGNATURE:
        return
    # MATLAB v7.3 files carry a 512-byte text header before the HDF5 superblock.
    if head.startswith(b"MATLAB 7.3"):
        return
    lowered = head.lower()
    if b"<html" in lowered or b"<!doctype" in lowered:
        what = "an HTML page (an error or login page saved instead of the data)"
    elif not head:
        what = "an empty file"
    else:
        what = "a file without the HDF5 signature"
    raise DataIntegrityError(
        format_error("path", "an HDF5 file", f"{what} at {p}", "Download the file again and check its size")
    )


@contextmanager
def open_hdf5(path: str | os.PathLike[str], mode: str = "r", *, hint: str | None = None) -> Iterator[Any]:
    """Open an HDF5 file, turning low-level failures into teaching errors.

    Parameters
    ----------
    path : path-like
        The file.
    mode : str
        h5py mode (default read-only).
    hint : str or None
        Added to the missing-file message (e.g. the dataset-relative path expected).
    """
    import h5py

    p = Path(path)
    if "r" in mode and not p.is_file():
        raise MissingFileError(format_error("path", "an existing HDF5 file", str(p), hint or "Check the path"))
    if mode == "r":
        _sniff(p)
    try:
        f = h5py.File(p, mode)
    except OSError as exc:
        raise DataIntegrityError(
            format_error("path", "a readable HDF5 file", f"{p} ({exc})",
                         "The file is truncated or corrupted; download it again")
        ) from exc
    try:
        yield f
    finally:
        f.close()


def get_dataset(f: Any, key: str, *, ndim: int | None = None) -> Any:
    """``f[key]`` with an error listing the keys present when it is missing."""
    if key not in f:
        present = ", ".join(sorted(f.keys())) or "none"
        raise DataIntegrityError(
            format_error("key", f"a dataset named {key!r} in {f.filename}", f"keys: {present}",
                         "Check that this is the right file or version")
        )
    ds = f[key]
    if ndim is not None and ds.ndim != ndim:
        raise ShapeMismatchError(format_error(key, f"{ndim} dimensions", f"shape {ds.shape} in {f.filename}"))
    return ds


def read_rows(ds: Any, rows: Any, axis: int = 0) -> np.ndarray:
    """Read ``ds`` at integer positions ``rows`` along ``axis``, in the order given, repeats allowed.

    h5py needs sorted unique indices; this reads each needed row once and re-expands.
    Out-of-range or negative positions raise instead of being silently dropped.

    Parameters
    ----------
    ds : h5py.Dataset
        The dataset.
    rows : array-like of int
        0-based positions.
    axis : int
        Axis to index.

    Returns
    -------
    data : ndarray
        ``ds`` taken at ``rows`` along ``axis``.
    """
    idx = check_indices(rows, "rows", ds.shape[axis])
    uniq, inverse = np.unique(idx, return_inverse=True)
    sel: list[Any] = [slice(None)] * ds.ndim
    sel[axis] = uniq
    data = ds[tuple(sel)]
    if data.shape[axis] != len(uniq):  # pragma: no cover - h5py contract
        raise DataIntegrityError(format_error("rows", f"{len(uniq)} rows", f"{data.shape[axis]} from {ds.name}"))
    return np.take(data, inverse, axis=axis)


def read_voxels(ds: Any, voxels: Any, *, verbose: Any = None) -> np.ndarray:
    """Read a few positions of a (n_rows, A, B, C) dataset chunked along the last three axes.

    This is the voxel-wise read of NSD's HDF5 betas (chunks of one voxel x all trials):
    positions are grouped by their first two spatial coordinates and each group is read
    as one short run along the last axis, so only the chunks holding wanted voxels
    (and the few between them on a line) are touched.

    Parameters
    ----------
    ds : h5py.Dataset of shape (n_rows, A, B, C)
        The dataset.
    voxels : array-like of int, shape (n_voxels, 3)
        0-based (a, b, c) positions in the dataset's own axis order.
    verbose : bool | str | int | None
        Progress bar over lines read.

    Returns
    -------
    data : ndarray of shape (n_rows, n_voxels)
        Values at each position, in the order of ``voxels``.
    """
    from .._core.logging import progress

    vox = np.asarray(voxels, dtype=np.int64)
    if vox.ndim != 2 or vox.shape[1] != 3 or ds.ndim != 4:
        raise ShapeMismatchError(format_error("voxels", "(n_voxels, 3) positions into a 4-D dataset",
                                              f"{vox.shape} into {ds.shape}"))
    for axis in range(3):
        check_indices(vox[:, axis], f"voxels[:, {axis}]", ds.shape[axis + 1])
    out = np.empty((ds.shape[0], len(vox)), dtype=ds.dtype)
    order = np.lexsort((vox[:, 2], vox[:, 1], vox[:, 0]))
    keys = vox[order, 0] * ds.shape[2] + vox[order, 1]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    ends = np.r_[starts[1:], len(order)]
    try:
        for s, e in progress(zip(starts, ends), total=len(starts), desc="voxel lines", unit="line", verbose=verbose):
            idx = order[s:e]
            a, b = int(vox[idx[0], 0]), int(vox[idx[0], 1])
            cs = vox[idx, 2]
            lo, hi = int(cs.min()), int(cs.max()) + 1
            line = ds[:, a, b, lo:hi]
            if line.shape[-1] != hi - lo:  # pragma: no cover - h5py contract
                raise DataIntegrityError(format_error("voxels", f"{hi - lo} values", f"{line.shape[-1]}"))
            out[:, idx] = line[:, cs - lo]
    except OSError as exc:
        raise DataIntegrityError(
            format_error("dataset", f"readable data in {ds.file.filename}", f"a read error ({exc})",
                         "The file is truncated or corrupted; download it again")
        ) from exc
    return out
