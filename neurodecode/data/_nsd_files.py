"""NSD's files: subject ids, the trial table of ``nsd_expdesign.mat``, sessions, masks and one session's betas.

The low-level readers :func:`neurodecode.data.load_nsd` (``_nsd``) and the fast per-subject cache
(``_nsd_cache``) both build on; the conventions are those of :mod:`neurodecode.data._nsd`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import MetadataMismatchError, MissingFileError, ShapeMismatchError, ValidationError
from .._core.specs import load_spec
from .._core.validation import check_indices, check_option, format_error
from ._layout import parse_subject_number, relative_path, spec_path

__all__ = ["nsd_trial_table", "nsd_subject_id", "nsd_beta_dir", "NSDMask", "read_nsd_mask", "nsd_session_files",
           "nsd_missing_sessions"]

_ZSCORE = ("train", "all", None)
_SOURCES = ("auto", "nifti", "hdf5")


def _spec() -> dict[str, Any]:
    return load_spec("nsd")


def _subject_number(subject: Any) -> int:
    return parse_subject_number(subject, "nsd", "subj", int(_spec()["dataset"]["n_subjects"]))


def nsd_subject_id(subject: Any) -> str:
    """Namespaced id ``"nsd/subjXX"`` of an NSD subject given as 1, ``"subj01"`` or ``"nsd/subj01"``."""
    return f"nsd/subj{_subject_number(subject):02d}"


def nsd_beta_dir(beta_version: str) -> str:
    """Folder name of a GLM version: ``"b1"``/``"b2"``/``"b3"`` or the folder name itself."""
    versions = _spec()["beta_versions"]
    if beta_version in versions:
        return str(versions[beta_version])
    if beta_version in versions.values():
        return beta_version
    check_option(beta_version, "beta_version", list(versions) + list(versions.values()))
    raise AssertionError  # pragma: no cover


def _hint(key: str, **fields: Any) -> str:
    return f"Expected the NSD-relative path {relative_path('nsd', key, **fields)} under the NSD root"


# ----------------------------------------------------------------------------- trial table
def nsd_trial_table(root: str | os.PathLike[str], subject: Any, sessions: Any = None) -> dict[str, np.ndarray]:
    """Per-trial design of one subject from ``nsd_expdesign.mat``.

    Parameters
    ----------
    root : path-like
        The NSD root.
    subject : int or str
        1, ``"subj01"`` or ``"nsd/subj01"``.
    sessions : int, sequence of int or None
        1-based session numbers (an int ``n`` means sessions 1..n); None: every session
        the design holds for this subject.

    Returns
    -------
    table : dict of str to ndarray, each of shape (n_trials,)
        ``session`` and ``trial_in_session`` (1-based), ``masterordering`` (1-based, as
        in the file), ``stimulus_id`` (0-based index into the 73k images), ``shared``
        (bool, in the shared-1000 test set), ``split`` (``"train"``/``"test"``).
    """
    from ..io.matlab import load_mat

    s = _subject_number(subject)
    spec = _spec()
    keys = spec["keys"]["expdesign"]
    path = spec_path("nsd", root, "expdesign")
    design = load_mat(path, keys, hint=_hint("expdesign"))
    mo = np.asarray(design["masterordering"]).ravel()
    subjectim = np.asarray(design["subjectim"])
    sharedix = np.asarray(design["sharedix"]).ravel()
    if subjectim.ndim != 2 or subjectim.shape[0] != spec["dataset"]["n_subjects"]:
        raise ShapeMismatchError(format_error("subjectim", f"shape ({spec['dataset']['n_subjects']}, n_images) in {path}",
                                              subjectim))
    mo = check_indices(mo, "masterordering", subjectim.shape[1], base=1) + 1
    check_indices(subjectim[s - 1], "subjectim", 1 << 62, base=1)
    sessions = _session_list(sessions, s, len(mo))
    tps = int(spec["dataset"]["trials_per_session"])
    rows = np.concatenate([np.arange((x - 1) * tps, x * tps) for x in sessions])
    mo_sel = mo[rows].astype(np.int64)
    shared = mo_sel <= len(sharedix)
    stim = subjectim[s - 1, mo_sel - 1].astype(np.int64) - 1
    return {
        "session": np.repeat(np.asarray(sessions, dtype=np.int64), tps),
        "trial_in_session": np.tile(np.arange(1, tps + 1, dtype=np.int64), len(sessions)),
        "masterordering": mo_sel,
        "stimulus_id": stim,
        "shared": shared,
        "split": np.where(shared, "test", "train"),
    }


def _max_sessions(subject: int, n_design_trials: int | None = None) -> int:
    spec = _spec()
    n = int(spec["dataset"]["sessions_per_subject"][subject - 1])
    if n_design_trials is not None:
        n = min(n, n_design_trials // int(spec["dataset"]["trials_per_session"]))
    return n


def _session_list(sessions: Any, subject: int, n_design_trials: int) -> list[int]:
    n_max = _max_sessions(subject, n_design_trials)
    if sessions is None:
        return list(range(1, n_max + 1))
    if isinstance(sessions, (int, np.integer)) and not isinstance(sessions, bool):
        if not 1 <= int(sessions) <= n_max:
            raise ValidationError(format_error("sessions", f"a number of sessions between 1 and {n_max}", sessions,
                                               f"subj{subject:02d} has {n_max} sessions in this design"))
        return list(range(1, int(sessions) + 1))
    arr = np.asarray(list(sessions))
    if arr.size == 0:
        raise ValidationError(format_error("sessions", "at least one session", "an empty selection",
                                           "Pass None for every session"))
    idx = check_indices(arr, "sessions", n_max, base=1) + 1
    if len(np.unique(idx)) != len(idx):
        raise ValidationError(format_error("sessions", "distinct session numbers", arr.tolist()))
    return [int(x) for x in idx]


# ----------------------------------------------------------------------------- mask and betas
class NSDMask:
    """The nsdgeneral ROI of one subject: volume shape, affine, and the voxels == 1.

    Attributes
    ----------
    shape : tuple of int
        (X, Y, Z) of the func1pt8mm volume.
    affine : ndarray of shape (4, 4)
    flat : ndarray of int, shape (n_voxels,)
        ``np.flatnonzero(mask == 1)`` over the C-ordered volume: the column order of ``X``.
    """

    def __init__(self, shape: tuple[int, ...], affine: np.ndarray, flat: np.ndarray, path: Path) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.affine = affine
        self.flat = flat
        self.path = path

    @property
    def n_voxels(self) -> int:
        """Number of voxels in the ROI."""
        return int(len(self.flat))

    @property
    def coords(self) -> np.ndarray:
        """(n_voxels, 3) integer (x, y, z) positions of the ROI voxels."""
        return np.stack(np.unravel_index(self.flat, self.shape), axis=1)


def read_nsd_mask(root: str | os.PathLike[str], subject: Any) -> NSDMask:
    """Read ``nsdgeneral.nii.gz`` of a subject (``== 1`` is the ROI)."""
    from ..io.nifti import load_nifti

    s = _subject_number(subject)
    path = spec_path("nsd", root, "nsdgeneral", subject=s)
    vol = load_nifti(path, ndim=3, hint=_hint("nsdgeneral", subject=s))
    value = int(_spec()["mask"]["value"])
    flat = np.flatnonzero(vol.data.ravel() == value)
    if flat.size == 0:
        raise ValidationError(format_error(str(path), f"at least one voxel == {value}", "none",
                                           "Check that this is the nsdgeneral ROI file"))
    return NSDMask(vol.shape, vol.affine, flat, path)


def nsd_session_files(root: str | os.PathLike[str], subject: Any, beta_version: str = "b3",
                      source: str = "auto", *, consecutive: bool = True) -> dict[int, tuple[str, Path]]:
    """Session number -> (format, path) of the beta files present.

    With ``source="auto"`` the HDF5 file is used when present (voxel-wise reads), else
    the NIfTI file. With ``consecutive=True`` (default) the listing stops at the first
    missing session (sessions 1..k); ``False`` lists every session on disk, so holes
    show (see :func:`nsd_missing_sessions`).
    """
    check_option(source, "source", _SOURCES)
    s = _subject_number(subject)
    beta_dir = nsd_beta_dir(beta_version)
    found: dict[int, tuple[str, Path]] = {}
    for session in range(1, _max_sessions(s) + 1):
        fields = {"subject": s, "session": session, "beta_dir": beta_dir}
        h5 = spec_path("nsd", root, "betas_hdf5", **fields)
        nii = spec_path("nsd", root, "betas_nifti", **fields)
        if source in ("auto", "hdf5") and h5.is_file():
            found[session] = ("hdf5", h5)
        elif source in ("auto", "nifti") and nii.is_file():
            found[session] = ("nifti", nii)
        elif consecutive:
            break
    return found


def nsd_missing_sessions(found: dict[int, Any]) -> list[int]:
    """Sessions absent below the highest one present (holes in a download)."""
    return [x for x in range(1, max(found, default=0) + 1) if x not in found]


def _refuse_holes(root: Any, s: int, beta_dir: str, source: str) -> None:
    every = nsd_session_files(root, s, beta_dir, source, consecutive=False)
    holes = nsd_missing_sessions(every)
    if holes:
        first = min(holes)
        raise MissingFileError(format_error(
            "sessions", f"every session from 01 to {max(every):02d} of subj{s:02d} ({beta_dir})",
            f"sessions {', '.join(f'{x:02d}' for x in holes)} missing under {root}",
            f"Restore {relative_path('nsd', 'betas_nifti', subject=s, session=first, beta_dir=beta_dir)} (or .hdf5), "
            f"or pass sessions={first - 1} to use only the sessions before the gap" if first > 1 else
            f"Restore {relative_path('nsd', 'betas_nifti', subject=s, session=first, beta_dir=beta_dir)} (or .hdf5), "
            "or pass the sessions present explicitly"))


def _read_session_betas(fmt: str, path: Path, mask: NSDMask, tps: int, verbose: Any = None) -> np.ndarray:
    """Raw stored values (int16, or float for float files) of one session: shape (750, n_voxels)."""
    if fmt == "nifti":
        from ..io.nifti import load_nifti

        vol = load_nifti(path, ndim=4)
        if vol.shape[:3] != mask.shape:
            raise ShapeMismatchError(format_error(str(path), f"a volume of shape {mask.shape} x {tps} (as nsdgeneral)",
                                                  f"shape {vol.shape}", "Use betas and mask of the same subject and "
                                                  "resolution (func1pt8mm)"))
        if vol.shape[3] != tps:
            raise ShapeMismatchError(format_error(str(path), f"{tps} trials on the last axis", f"shape {vol.shape}"))
        if not np.allclose(vol.affine, mask.affine, atol=1e-3):
            raise MetadataMismatchError(format_error(str(path), f"the affine of {mask.path.name}",
                                                     f"{vol.affine.round(3).tolist()} vs "
                                                     f"{mask.affine.round(3).tolist()}",
                                                     "Use betas and mask of the same subject and space"))
        return np.ascontiguousarray(vol.data.reshape(-1, tps)[mask.flat].T)
    from ..io.hdf5 import get_dataset, open_hdf5, read_voxels

    key = _spec()["keys"]["betas_hdf5"]
    with open_hdf5(path) as f:
        ds = get_dataset(f, key, ndim=4)
        X, Y, Z = mask.shape
        coords = mask.coords
        if ds.shape == (tps, Z, Y, X):  # NSD layout as h5py sees it
            return read_voxels(ds, coords[:, ::-1], verbose=verbose)
        if ds.shape == (X, Y, Z, tps):  # same axis order as the NIfTI
            from .._core.errors import DataIntegrityError

            try:
                data = ds[()]
            except OSError as exc:
                raise DataIntegrityError(format_error(str(path), "readable data", f"a read error ({exc})",
                                                      "The file is truncated; download it again")) from exc
            return np.ascontiguousarray(data.reshape(-1, tps)[mask.flat].T)
        raise ShapeMismatchError(format_error(f"{path}[{key!r}]", f"shape ({tps}, {Z}, {Y}, {X}) or ({X}, {Y}, {Z}, "
                                              f"{tps}) matching nsdgeneral {mask.shape}", f"shape {ds.shape}",
                                              "Use betas and mask of the same subject and resolution (func1pt8mm)"))


# ----------------------------------------------------------------------------- normalisation
def _handle_nonfinite(x: np.ndarray, nan_policy: str, where: str) -> int:
    """Apply ``nan_policy`` to the non-finite values of ``x`` (trials x voxels) in place; return their count."""
    if np.issubdtype(x.dtype, np.integer):
        return 0
    bad = ~np.isfinite(x)
    n_bad = int(bad.sum())
    if n_bad and nan_policy == "raise":
        first = np.argwhere(bad)[:5]
        pos = ", ".join(f"(trial {int(i)}, voxel {int(j)})" for i, j in first)  # 0-based rows and columns
        n_vox = int(bad.any(axis=0).sum())
        raise ValidationError(format_error(
            "betas", "only finite values", f"{n_bad} NaN/inf value(s) in {n_vox} voxel(s) of {where}, first at {pos}",
            "Pass nan_policy='zero' (CLI: --nan-policy zero) to replace them with 0, recorded in provenance, "
            "or fix the file"))
    if n_bad:
        x[bad] = 0.0
    return n_bad


def _zscore_session(x: np.ndarray, ref_rows: np.ndarray) -> int:
    """In-place z-score of columns of ``x`` with statistics from ``ref_rows``; zero-variance columns -> 0."""
    ref = x[ref_rows]
    if len(ref) < 2:
        raise ValidationError(format_error("zscore", "at least 2 reference trials per session", len(ref),
                                           "Use zscore='all' or more sessions"))
    mean = ref.mean(axis=0)
    std = ref.std(axis=0)
    zero = std <= np.finfo(np.float64).eps * np.maximum(1.0, np.abs(mean))
    x -= mean
    x /= np.where(zero, 1.0, std)
    x[:, zero] = 0.0
    return int(zero.sum())


def _average_groups(X: np.ndarray, stim: np.ndarray, split: np.ndarray, which: set[str]) -> tuple[np.ndarray,
                                                                                                   np.ndarray,
                                                                                                   np.ndarray]:
    """Group rows to average: same stimulus in a split listed in ``which``; others alone.

    Returns (group of each row, first row of each group, count per group), groups in
    order of first appearance.
    """
    key = np.where(np.isin(split, list(which)), stim, -1 - np.arange(len(stim)))
    key = np.char.add(np.char.add(split.astype(str), ":"), key.astype(str))
    _, first, inverse, counts = np.unique(key, return_index=True, return_inverse=True, return_counts=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[inverse.ravel()], first[order], counts[order]
