"""NSD betas as whole 3-D volumes cut into patches (the Neuro-Vision to Language input).

Shen et al. (NeurIPS 2024) feed a 3-D vision transformer with each trial's whole beta volume instead of the
masked nsdgeneral vector: every subject's volume is resized trilinearly to subject 1's func1pt8mm grid,
zero-padded, cut into 14 x 14 x 14 patches (2,744 values each), and only the patches that overlap the union of
the subjects' nsdgeneral masks are kept (at most 6 x 8 x 6 = 288 on subject 1's grid).

:func:`load_nsd_volumes` does this session by session (one session's int16 volume in memory at a time, float32
throughout, no float64 copies of the data), with the same trial table, z-scoring, repeat averaging and
provenance as :func:`~neurodecode.data.load_nsd`. The output is ``(n_trials, n_patches, patch_size**3)``
float32, in memory or written into a ``.npy`` file (``out=``, memory-mapped) for the full dataset
(27,000 trials x ~200 patches x 2,744 x 4 bytes is about 60 GB per subject).

Conventions: volumes are (X, Y, Z) as nibabel reads ``betas_sessionNN.nii.gz``; the target grid (81, 104, 83)
is the paper's "83 x 104 x 81" written in that order (the paper gives the (Z, Y, X) order h5py shows).
Trilinear resizing is separable linear interpolation with half-voxel centres (``align_corners=False``, as
``torch.nn.functional.interpolate``) or corner-aligned grids (``align_corners=True``, as
``scipy.ndimage.zoom(order=1)``); padding adds zeros at the end of each axis; patches are in C order of the
patch grid and each patch's values in C order of its (x, y, z) voxels.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._core.docs import fill_doc
from .._core.errors import MissingFileError, ShapeMismatchError, ValidationError
from .._core.logging import logger, progress
from .._core.validation import check_option, format_error
from ._nsd_files import (
    _SOURCES,
    _ZSCORE,
    _average_groups,
    _handle_nonfinite,
    _hint,
    _refuse_holes,
    _spec,
    _subject_number,
    nsd_beta_dir,
    nsd_session_files,
    nsd_trial_table,
    read_nsd_mask,
)
from ._trials import Trials

__all__ = ["resample_volume", "NSDPatchGrid", "nsd_patch_grid", "volume_patches", "patches_to_volume",
           "load_nsd_volumes"]

_CHUNK = 25  # trials resampled at once (25 x 81 x 104 x 83 float32 = 70 MB)


# ----------------------------------------------------------------------------- resampling
def _axis_index(n_in: int, n_out: int, align_corners: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower / upper source index and weight of the upper one, for each output position along one axis."""
    out = np.arange(n_out, dtype=np.float64)
    if align_corners:
        src = out * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(n_out)
    else:
        src = np.maximum((out + 0.5) * (n_in / n_out) - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (src - lo).astype(np.float32)


def resample_volume(volume: Any, target_shape: Sequence[int], *, align_corners: bool = False) -> np.ndarray:
    """Trilinear resize of the first three axes of ``volume`` to ``target_shape``.

    Parameters
    ----------
    volume : array-like of shape (X, Y, Z) or (X, Y, Z, ...)
        Trailing axes (trials) are carried along.
    target_shape : sequence of 3 int
    align_corners : bool
        False (default): half-voxel centres (``torch.nn.functional.interpolate(mode="trilinear")``); True:
        the corner voxels of both grids coincide (``scipy.ndimage.zoom(order=1)``).

    Returns
    -------
    resized : ndarray of float32, shape (*target_shape, ...)
    """
    out = np.asarray(volume, dtype=np.float32)
    target = [int(n) for n in target_shape]
    if out.ndim < 3 or len(target) != 3 or min(target) < 1:
        raise ShapeMismatchError(format_error("volume / target_shape", "a volume of >= 3 axes and 3 positive sizes",
                                              f"{out.shape} -> {tuple(target_shape)}"))
    for axis in range(3):
        if out.shape[axis] == target[axis]:
            continue
        lo, hi, w = _axis_index(out.shape[axis], target[axis], align_corners)
        shape = [1] * out.ndim
        shape[axis] = -1
        w = w.reshape(shape)
        a = np.take(out, lo, axis=axis)
        b = np.take(out, hi, axis=axis)
        a *= 1 - w
        b *= w
        a += b
        out = a
    return np.ascontiguousarray(out)


# ----------------------------------------------------------------------------- patches
@dataclass
class NSDPatchGrid:
    """The patches kept for a set of subjects.

    Attributes
    ----------
    target_shape : tuple of int
        (X, Y, Z) of the common grid every volume is resized to.
    patch_size : int
    grid : tuple of int
        Patches per axis after zero-padding (``ceil(target / patch_size)``).
    keep : ndarray of int, shape (n_patches,)
        Kept patches, as C-order indices into the patch grid.
    coords : ndarray of int, shape (n_patches, 3)
        Voxel (x, y, z) of each kept patch's first corner on the padded target grid.
    union : ndarray of bool, shape target_shape
        The union of the subjects' resized nsdgeneral masks.
    subjects : list of str
    mask_threshold : float
    align_corners : bool
    """

    target_shape: tuple[int, int, int]
    patch_size: int
    grid: tuple[int, int, int]
    keep: np.ndarray
    coords: np.ndarray
    union: np.ndarray
    subjects: list[str]
    mask_threshold: float
    align_corners: bool

    @property
    def n_patches(self) -> int:
        """Kept patches."""
        return int(len(self.keep))

    def provenance(self) -> dict[str, Any]:
        """JSON-friendly record (patch coordinates included: at most a few hundred rows)."""
        return {"target_shape": list(self.target_shape), "patch_size": self.patch_size, "grid": list(self.grid),
                "n_patches": self.n_patches, "n_values_per_patch": self.patch_size ** 3,
                "mask_subjects": self.subjects, "mask_threshold": self.mask_threshold,
                "union_voxels": int(self.union.sum()), "align_corners": self.align_corners,
                "coords": self.coords.tolist(),
                "rule": "patches with at least one voxel of the union of the subjects' nsdgeneral masks, each "
                        "resized like the betas and thresholded at mask_threshold",
                "padding": "zeros at the end of each axis to a multiple of patch_size",
                "order": "patches in C order of the patch grid; values in C order of (x, y, z) inside a patch"}


def _padded(shape: Sequence[int], p: int) -> tuple[int, int, int]:
    return tuple(-(-int(n) // p) for n in shape)  # type: ignore[return-value]


def volume_patches(volume: np.ndarray, patch_size: int, keep: np.ndarray | None = None) -> np.ndarray:
    """Cut (X, Y, Z, ...) volumes into patches: (..., n_patches, patch_size**3), zero-padded at the end.

    Parameters
    ----------
    volume : ndarray of shape (X, Y, Z) or (X, Y, Z, n)
    patch_size : int
    keep : ndarray of int or None
        C-order indices of the patches to return (all when None).

    Returns
    -------
    patches : ndarray, shape (n_patches, p**3) or (n, n_patches, p**3)
    """
    p = int(patch_size)
    vol = np.asarray(volume)
    extra = vol.shape[3:]
    gx, gy, gz = _padded(vol.shape[:3], p)
    pad = [(0, g * p - n) for g, n in zip((gx, gy, gz), vol.shape[:3])] + [(0, 0)] * len(extra)
    full = np.pad(vol, pad) if any(b for _, b in pad) else vol
    # (gx, p, gy, p, gz, p, ...) -> (..., gx, gy, gz, p, p, p)
    blocks = full.reshape((gx, p, gy, p, gz, p) + extra)
    n_extra = len(extra)
    order = tuple(range(6, 6 + n_extra)) + (0, 2, 4, 1, 3, 5)
    blocks = blocks.transpose(order).reshape(extra + (gx * gy * gz, p ** 3))
    if keep is not None:
        blocks = blocks[..., np.asarray(keep), :]
    return np.ascontiguousarray(blocks)


def patches_to_volume(patches: Any, grid: NSDPatchGrid, *, fill: float = 0.0) -> np.ndarray:
    """Put per-patch values back on the target grid (e.g. a concept map over the ViT3D patches).

    Parameters
    ----------
    patches : array-like of shape (n_patches, patch_size**3) or (n_patches,)
        Values per kept patch (one number per patch is spread over its voxels).
    grid : NSDPatchGrid
    fill : float
        Value of the dropped patches.

    Returns
    -------
    volume : ndarray of float32, shape ``grid.target_shape``
        Resize it back to a subject's own grid with :func:`resample_volume`.
    """
    p = grid.patch_size
    vals = np.asarray(patches, dtype=np.float32)
    if vals.ndim == 1:
        vals = np.repeat(vals[:, None], p ** 3, axis=1)
    if vals.shape != (grid.n_patches, p ** 3):
        raise ShapeMismatchError(format_error("patches", f"shape ({grid.n_patches}, {p ** 3}) or ({grid.n_patches},)",
                                              vals))
    gx, gy, gz = grid.grid
    allp = np.full((gx * gy * gz, p ** 3), fill, dtype=np.float32)
    allp[grid.keep] = vals
    vol = allp.reshape(gx, gy, gz, p, p, p).transpose(0, 3, 1, 4, 2, 5).reshape(gx * p, gy * p, gz * p)
    X, Y, Z = grid.target_shape
    return np.ascontiguousarray(vol[:X, :Y, :Z])


def _defaults(target_shape: Any, patch_size: Any) -> tuple[tuple[int, int, int], int]:
    spec = _spec()["volumes"]
    target = tuple(int(n) for n in (spec["target_shape"] if target_shape is None else target_shape))
    p = int(spec["patch_size"] if patch_size is None else patch_size)
    if len(target) != 3 or min(target) < 1:
        raise ValidationError(format_error("target_shape", "3 positive sizes (X, Y, Z)", target_shape))
    if p < 1:
        raise ValidationError(format_error("patch_size", "a positive integer", patch_size))
    return target, p  # type: ignore[return-value]


def nsd_patch_grid(root: str | os.PathLike[str], subjects: Any, *, target_shape: Sequence[int] | None = None,
                   patch_size: int | None = None, mask_threshold: float = 0.5,
                   align_corners: bool = False) -> NSDPatchGrid:
    """Patches overlapping the union of the subjects' nsdgeneral masks, each resized to the target grid.

    Parameters
    ----------
    root : path-like
        The NSD root.
    subjects : int, str or sequence of them
        Subjects whose nsdgeneral masks form the union (NVL: 1, 2, 5, 7). Use the same list for every
        subject's :func:`load_nsd_volumes` so all share one patch set.
    target_shape : sequence of 3 int or None
        Common grid (default: subject 1's func1pt8mm grid, (81, 104, 83)).
    patch_size : int or None
        Patch side (default 14).
    mask_threshold : float
        A resized voxel belongs to a mask when its interpolated value is >= this (0.5: the nearest-voxel
        reading of a binary mask).
    align_corners : bool
        As in :func:`resample_volume`.
    """
    target, p = _defaults(target_shape, patch_size)
    if not 0.0 < float(mask_threshold) <= 1.0:
        raise ValidationError(format_error("mask_threshold", "a number in (0, 1]", mask_threshold))
    subs = [subjects] if isinstance(subjects, (int, str, np.integer)) else list(subjects)
    if not subs:
        raise ValidationError(format_error("subjects", "at least one subject", subjects))
    union = np.zeros(target, dtype=bool)
    names = []
    for subject in subs:
        s = _subject_number(subject)
        mask = read_nsd_mask(root, s)
        binary = np.zeros(mask.shape, dtype=np.float32)
        binary.ravel()[mask.flat] = 1.0
        union |= resample_volume(binary, target, align_corners=align_corners) >= float(mask_threshold)
        names.append(f"nsd/subj{s:02d}")
    inside = volume_patches(union, p).any(axis=1)
    keep = np.flatnonzero(inside)
    if keep.size == 0:
        raise ValidationError(format_error("subjects", "nsdgeneral masks covering at least one patch", "none",
                                           "Lower mask_threshold or check the masks"))
    grid = _padded(target, p)
    coords = np.stack(np.unravel_index(keep, grid), axis=1) * p
    return NSDPatchGrid(target, p, grid, keep, coords.astype(np.int64), union, names, float(mask_threshold),
                        bool(align_corners))


# ----------------------------------------------------------------------------- loader
def _session_volume(fmt: str, path: Path, shape: tuple[int, ...], tps: int) -> np.ndarray:
    """One session's stored betas as an (X, Y, Z, 750) array (int16 as stored; the HDF5 read transposed)."""
    if fmt == "nifti":
        from ..io.nifti import load_nifti

        vol = load_nifti(path, ndim=4)
        data = vol.data
    else:
        from .._core.errors import DataIntegrityError
        from ..io.hdf5 import get_dataset, open_hdf5

        with open_hdf5(path) as f:
            ds = get_dataset(f, _spec()["keys"]["betas_hdf5"], ndim=4)
            try:
                raw = ds[()]
            except OSError as exc:
                raise DataIntegrityError(format_error(str(path), "readable data", f"a read error ({exc})",
                                                      "The file is truncated; download it again")) from exc
        data = raw.transpose(3, 2, 1, 0) if raw.shape[0] == tps and raw.shape[1:] == tuple(shape[::-1]) else raw
    if tuple(data.shape) != tuple(shape) + (tps,):
        raise ShapeMismatchError(format_error(str(path), f"a volume of shape {tuple(shape)} x {tps} (as nsdgeneral)",
                                              f"shape {data.shape}", "Use betas and mask of the same subject"))
    return data


def _volume_stats(data: np.ndarray, ref: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-voxel mean and std (percent signal change) over the trials ``ref``, in blocks of voxels (float32 out)."""
    flat = data.reshape(-1, data.shape[-1])
    mean = np.empty(len(flat), dtype=np.float32)
    std = np.empty(len(flat), dtype=np.float32)
    step = 16384
    for start in range(0, len(flat), step):
        block = flat[start:start + step][:, ref].astype(np.float64) / scale
        mean[start:start + step] = block.mean(1)
        std[start:start + step] = block.std(1)
    return mean.reshape(data.shape[:3]), std.reshape(data.shape[:3])


@fill_doc
def load_nsd_volumes(
    root: str | os.PathLike[str],
    subject: Any,
    *,
    mask_subjects: Any = None,
    target_shape: Sequence[int] | None = None,
    patch_size: int | None = None,
    mask_threshold: float = 0.5,
    align_corners: bool = False,
    beta_version: str = "b3",
    sessions: Any = None,
    zscore: str | None = "train",
    average_test_repeats: bool = True,
    average_train_repeats: bool = False,
    source: str = "auto",
    nan_policy: str = "raise",
    out: str | os.PathLike[str] | None = None,
    verbose: Any = None,
) -> Trials:
    """One NSD subject's betas as whole volumes cut into patches (Neuro-Vision to Language's input).

    Each trial's (X, Y, Z) beta volume is z-scored per session and voxel (as :func:`load_nsd`; voxels of
    zero variance, e.g. outside the brain, become 0), resized trilinearly to ``target_shape``, zero-padded and
    cut into ``patch_size**3`` patches; only the patches of :func:`nsd_patch_grid` (overlapping the union of
    the ``mask_subjects``' nsdgeneral masks) are kept.

    Parameters
    ----------
    root : path-like
        The NSD root.
    subject : int or str
        The subject whose betas are read.
    mask_subjects : int, str, sequence or None
        Subjects of the mask union (None: ``subject`` alone). Give every subject the same list.
    target_shape, patch_size, mask_threshold, align_corners
        As in :func:`nsd_patch_grid` (defaults: (81, 104, 83), 14, 0.5, False).
    beta_version, sessions, zscore, average_test_repeats, average_train_repeats, source, nan_policy
        As in :func:`load_nsd`.
    out : path-like or None
        Write ``X`` into this ``.npy`` file (created atomically, then memory-mapped read-only) instead of
        holding it in memory.
    %(verbose)s

    Returns
    -------
    trials : Trials
        ``X`` float32 of shape (n_trials, n_patches, patch_size**3); ``provenance["patches"]`` holds the
        grid, the kept patches' corner coordinates (``coords``, (n_patches, 3)) and every choice.
    """
    from .._core.files import atomic_path

    check_option(zscore, "zscore", _ZSCORE)
    check_option(nan_policy, "nan_policy", ("raise", "zero"))
    check_option(source, "source", _SOURCES)
    s = _subject_number(subject)
    grid = nsd_patch_grid(root, s if mask_subjects is None else mask_subjects, target_shape=target_shape,
                          patch_size=patch_size, mask_threshold=mask_threshold, align_corners=align_corners)
    beta_dir = nsd_beta_dir(beta_version)
    spec = _spec()
    tps = int(spec["dataset"]["trials_per_session"])
    scale = float(spec["scaling"]["betas"])
    found = nsd_session_files(root, s, beta_dir, source)
    if not found:
        raise MissingFileError(format_error("root", f"beta files of subj{s:02d} ({beta_dir})", f"none under {root}",
                                            _hint("betas_nifti", subject=s, session=1, beta_dir=beta_dir)))
    if sessions is None:
        _refuse_holes(root, s, beta_dir, source)
        sessions = sorted(found)
    table = nsd_trial_table(root, s, sessions)
    sessions_list = [int(x) for x in dict.fromkeys(table["session"].tolist())]
    missing = [x for x in sessions_list if x not in found]
    if missing:
        raise MissingFileError(format_error("sessions", f"beta files for sessions {missing}",
                                            f"only sessions 1-{max(found)} under {root}"))
    mask = read_nsd_mask(root, s)
    stim, split = table["stimulus_id"], table["split"]
    which = {name for name, flag in (("test", average_test_repeats), ("train", average_train_repeats)) if flag}
    if which:
        group, firsts, counts = _average_groups(np.empty(len(stim)), stim, split, which)
    else:
        group, firsts, counts = np.arange(len(stim)), np.arange(len(stim)), np.ones(len(stim), dtype=np.int64)
    p3 = grid.patch_size ** 3
    shape = (len(firsts), grid.n_patches, p3)
    size_gb = np.prod(shape) * 4 / 1e9
    if out is None and size_gb > 8:
        logger.warning("load_nsd_volumes: X will hold %.1f GB in memory; pass out=... to write it to disk", size_gb)
    files = [str(found[x][1]) for x in sessions_list]
    zero_var: dict[int, int] = {}
    in_mask = np.zeros(mask.shape, dtype=bool)
    in_mask.ravel()[mask.flat] = True

    def fill(X: np.ndarray) -> int:
        """Accumulate every session's patches into the rows of X (then divide the averaged rows)."""
        n_nonfinite = 0
        train_rows = ~table["shared"]
        for i, session in enumerate(progress(sessions_list, desc=f"nsd/subj{s:02d} volumes", unit="session",
                                             verbose=verbose)):
            fmt, path = found[session]
            data = _session_volume(fmt, path, mask.shape, tps)
            rows = np.arange(i * tps, (i + 1) * tps)
            if zscore is not None:
                ref = np.flatnonzero(train_rows[rows]) if zscore == "train" else np.arange(tps)
                if len(ref) < 2:
                    raise ValidationError(format_error("zscore", "at least 2 reference trials per session", len(ref),
                                                       "Use zscore='all' or more sessions"))
                mean, std = _volume_stats(data, ref, scale)
                zero = std <= np.finfo(np.float32).eps * np.maximum(1.0, np.abs(mean))
                if (zero & in_mask).any():
                    zero_var[session] = int((zero & in_mask).sum())
                inv = np.where(zero, 0.0, 1.0 / np.where(zero, 1.0, std)).astype(np.float32)
            for start in range(0, tps, _CHUNK):
                chunk = np.asarray(data[..., start:start + _CHUNK], dtype=np.float32) / np.float32(scale)
                if not np.issubdtype(data.dtype, np.integer):
                    flat_view = np.ascontiguousarray(chunk.reshape(-1, chunk.shape[-1]).T)
                    n_nonfinite += _handle_nonfinite(flat_view, nan_policy, f"subj{s:02d} session {session:02d} "
                                                     f"({path}), trials from {start} (voxel = C-order index)")
                    chunk = np.ascontiguousarray(flat_view.T).reshape(chunk.shape)
                if zscore is not None:
                    chunk -= mean[..., None]
                    chunk *= inv[..., None]
                resized = resample_volume(chunk, grid.target_shape, align_corners=grid.align_corners)
                patches = volume_patches(resized, grid.patch_size, grid.keep)  # (chunk, n_patches, p3)
                for k, target in enumerate(group[rows[start:start + _CHUNK]]):
                    X[target] += patches[k]
            del data
        for target in np.flatnonzero(counts > 1):
            X[target] /= np.float32(counts[target])
        return n_nonfinite

    X: np.ndarray
    if out is None:
        X = np.zeros(shape, dtype=np.float32)
        n_nonfinite = fill(X)
    else:
        with atomic_path(Path(out), suffix=".npy") as tmp:
            mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
            mm[:] = 0.0
            n_nonfinite = fill(mm)
            mm.flush()
            del mm
        X = np.load(Path(out), mmap_mode="r")
    if zero_var:
        warnings.warn(f"nsd/subj{s:02d}: zero-variance nsdgeneral voxels in z-scoring were set to 0 (per session: "
                      f"{zero_var})", RuntimeWarning, stacklevel=2)
    metadata = {k: table[k][firsts] for k in ("session", "trial_in_session", "masterordering")}
    if which:
        metadata["n_repeats"] = counts
    from .._core.versions import package_versions

    provenance = {
        "dataset": "nsd", "loader": "neurodecode.data.load_nsd_volumes", "root": str(root),
        "subject": f"nsd/subj{s:02d}", "beta_version": beta_version, "beta_dir": beta_dir,
        "files": files, "sessions": sessions_list, "n_sessions": len(sessions_list),
        "view": "whole volumes resized to a common grid, cut into patches (Neuro-Vision to Language)",
        "native_shape": list(mask.shape), "patches": grid.provenance(),
        "interpolation": "trilinear (separable linear), " + ("corner-aligned grids" if grid.align_corners else
                                                              "half-voxel centres (torch interpolate default)"),
        "scaling": f"stored int16 / {scale:g} = percent signal change",
        "zscore": {"train": "per session and voxel, statistics from train trials only (shared-1000 excluded), "
                            "before resizing", "all": "per session and voxel, statistics from all trials, before "
                                                      "resizing", None: "none"}[zscore],
        "zscore_option": zscore, "zero_variance_voxels": {str(k): v for k, v in zero_var.items()},
        "nan_policy": nan_policy, "n_nonfinite_set_to_zero": n_nonfinite,
        "test_split": "shared-1000 (masterordering <= len(sharedix))",
        "average_test_repeats": bool(average_test_repeats), "average_train_repeats": bool(average_train_repeats),
        "repeats": ("averaged: " + ", ".join(sorted(which))) if which else "single trials",
        "stimulus_ids": "0-based index into nsd_stimuli.hdf5 imgBrick (73k)",
        "out": None if out is None else str(out), "dtype": "float32",
        "versions": package_versions(("numpy", "nibabel", "h5py")),
    }
    logger.info("loaded nsd/subj%02d volumes: %d trials x %d patches x %d from %d session(s)", s, shape[0],
                shape[1], shape[2], len(sessions_list))
    return Trials(X=X, stimulus_ids=stim[firsts], subject=f"nsd/subj{s:02d}", split=split[firsts],
                  metadata=metadata, provenance=provenance)
