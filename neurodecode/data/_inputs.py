"""The one place where what a lab passes becomes a NumPy array: arrays, Trials, mne.Epochs, nibabel images.

Estimators take brain data in the forms labs already hold (MNE's ``_check_data`` and nilearn's
maskers play this role there). :func:`as_brain_array` converts each form to a NumPy array and
reports the metadata it *found* (sampling rate, channel names, times, subject, affine); nothing is
guessed: images need an explicit ``mask`` on their grid, and a plain array carries no metadata.

==========================================  ========================================================
input                                       array
==========================================  ========================================================
``np.ndarray`` (or array-like)              as is
:class:`~neurodecode.data.Trials`           ``trials.X`` (+ subject, sfreq, ch_names, times)
``mne.Epochs`` / ``mne.EpochsArray``        ``get_data(picks)``: (n_epochs, n_channels, n_times)
                                            (+ sfreq, ch_names, times)
nibabel 4-D image (one volume per trial)    (n_trials, n_voxels) inside ``mask``
or a list of 3-D images                     (+ affine)
==========================================  ========================================================

MNE and nibabel are never imported here: an object can only be an ``mne.Epochs`` or a nibabel
image if its library is already loaded, so the type checks look in ``sys.modules``.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._core.errors import MetadataMismatchError, ShapeMismatchError, ValidationError
from .._core.validation import check_array, format_error

__all__ = ["BrainArray", "as_brain_array"]

_ACCEPTED = ("an array of shape (n_trials, ...), a neurodecode Trials, an mne.Epochs, "
             "or nibabel image(s) with a mask")


@dataclass(frozen=True)
class BrainArray:
    """Brain data as a NumPy array, with the metadata its container carried.

    Attributes
    ----------
    X : ndarray
        The data. M/EEG: shape (n_trials, n_channels, n_times); images: shape (n_trials, n_voxels);
        arrays and Trials: their own shape.
    kind : {"array", "trials", "epochs", "image"}
        What was passed.
    sfreq : float or None
        Sampling rate in Hz (Epochs, M/EEG Trials).
    ch_names : list of str or None
        Channel names in the order of axis 1 (Epochs, M/EEG Trials).
    times : ndarray of shape (n_times,) or None
        Time of each sample in seconds relative to the event (Epochs, Trials that have them).
    subject : str or None
        Subject id (Trials).
    affine : ndarray of shape (4, 4) or None
        Voxel-to-world transform of the images.
    """

    X: np.ndarray
    kind: str
    sfreq: float | None = None
    ch_names: list[str] | None = None
    times: np.ndarray | None = None
    subject: str | None = None
    affine: np.ndarray | None = None


# ----------------------------------------------------------------------------------------- detection
def _is_instance(obj: Any, module: str, *names: str) -> bool:
    """``isinstance(obj, module.<name>)`` for an already-imported library (never imports it)."""
    mod = sys.modules.get(module)
    if mod is None:
        return False
    for name in names:
        cls: Any = mod
        for part in name.split("."):
            cls = getattr(cls, part, None)
            if cls is None:
                break
        if isinstance(cls, type) and isinstance(obj, cls):
            return True
    return False


def _is_image(obj: Any) -> bool:
    return _is_instance(obj, "nibabel", "spatialimages.SpatialImage")


def input_kind(X: Any) -> str:
    """``"trials"``, ``"epochs"``, ``"image"`` (one image or a list of them) or ``"array"`` (anything else)."""
    from ._trials import Trials

    if isinstance(X, Trials):
        return "trials"
    if _is_instance(X, "mne", "BaseEpochs", "epochs.BaseEpochs"):
        return "epochs"
    if _is_image(X) or (isinstance(X, (list, tuple)) and len(X) > 0 and any(_is_image(x) for x in X)):
        return "image"
    return "array"


# ----------------------------------------------------------------------------------------- helpers
def _where(kind: str, index: tuple[int, ...], *, ch_names: Sequence[str] | None = None,
           times: np.ndarray | None = None, voxels: np.ndarray | None = None) -> str:
    """A human location of one array index (epoch/channel/time, trial/voxel coordinates)."""
    if kind == "epochs" and len(index) == 3 and ch_names is not None and times is not None:
        e, c, t = index
        return f"epoch {e}, channel {ch_names[c]!r}, time {float(times[t]):.4g} s"
    if kind == "image" and len(index) == 2 and voxels is not None:
        return f"trial {index[0]}, voxel {tuple(int(v) for v in voxels[index[1]])}"
    return f"index {index}"


def _check_finite_located(arr: np.ndarray, param: str, kind: str, *, fix: str, max_listed: int = 3,
                          **where: Any) -> None:
    """Refuse NaN/inf, naming how many and where (in the container's own terms)."""
    if not np.issubdtype(arr.dtype, np.inexact):
        return
    bad = ~np.isfinite(arr)
    if not bad.any():
        return
    first = np.argwhere(bad)[:max_listed]
    places = "; ".join(_where(kind, tuple(int(i) for i in idx), **where) for idx in first)
    raise ValidationError(format_error(
        param, "only finite values", f"{int(bad.sum())} NaN/inf value(s) in data of shape {arr.shape}, first at "
        f"{places}", fix))


def _as_float(arr: np.ndarray, dtype: Any) -> np.ndarray:
    if dtype is not None:
        return np.asarray(arr, dtype=dtype)
    if not np.issubdtype(arr.dtype, np.floating):
        return arr.astype(np.float64)
    return arr


def _check_expected(got: BrainArray, param: str, *, expect_sfreq: float | None,
                    expect_ch_names: Sequence[str] | None, expect_tmin: float | None, source: str) -> None:
    """Compare the metadata found with the metadata expected (when both are known)."""
    if expect_sfreq is not None and got.sfreq is not None and not math.isclose(
            float(got.sfreq), float(expect_sfreq), rel_tol=1e-6):
        raise MetadataMismatchError(format_error(
            f"{param} sfreq", f"{float(expect_sfreq):g} Hz (the sampling rate {source})", f"{float(got.sfreq):g} Hz",
            f"Resample the data first, e.g. epochs.resample({float(expect_sfreq):g}) in MNE"))
    if expect_ch_names is not None and got.ch_names is not None:
        want, have = [str(c) for c in expect_ch_names], [str(c) for c in got.ch_names]
        missing = [c for c in want if c not in have]
        extra = [c for c in have if c not in want]
        if missing or extra:
            raise MetadataMismatchError(format_error(
                f"{param} ch_names", f"the {len(want)} channels {source}",
                f"{len(have)} channels; missing: {missing[:10] or 'none'}; extra: {extra[:10] or 'none'}",
                "Pick the same channels, e.g. epochs.pick(decoder.ch_names_)"))
        if have != want:
            i = next(i for i, (a, b) in enumerate(zip(have, want)) if a != b)
            raise MetadataMismatchError(format_error(
                f"{param} ch_names", f"the channel order {source}",
                f"{have[i]!r} at position {i} where {want[i]!r} was expected",
                "Reorder the channels, e.g. epochs.reorder_channels(decoder.ch_names_)"))
    if expect_tmin is not None and got.times is not None and len(got.times) and got.sfreq:
        tmin = float(got.times[0])
        if abs(tmin - float(expect_tmin)) > 0.5 / float(got.sfreq):
            raise MetadataMismatchError(format_error(
                f"{param} times", f"epochs starting at {float(expect_tmin):.4g} s (the window {source})",
                f"epochs starting at {tmin:.4g} s",
                f"Crop the epochs to the same window, e.g. epochs.crop(tmin={float(expect_tmin):.4g}, ...)"))


# ----------------------------------------------------------------------------------------- the kinds
def _from_epochs(epochs: Any, param: str, picks: Any, dtype: Any) -> BrainArray:
    try:
        from mne._fiff.pick import _picks_to_idx
    except ImportError:  # pragma: no cover - MNE < 1.6 kept it in mne.io.pick
        from mne.io.pick import _picks_to_idx  # type: ignore[no-redef]

    if picks is None:
        idx = np.arange(len(epochs.ch_names))  # every channel, as Epochs.get_data() without picks
    else:
        try:
            idx = np.asarray(_picks_to_idx(epochs.info, picks), dtype=int)  # as get_data(picks=...) resolves them
        except ValueError as exc:
            raise ValidationError(format_error(
                "picks", "channel types (e.g. 'eeg', 'meg', 'data'), channel names or indices present in the epochs",
                repr(picks), f"Check epochs.get_channel_types() and epochs.ch_names ({exc})")) from exc
    if len(epochs) == 0:
        raise ValidationError(format_error(param, "epochs with at least one trial", "an Epochs with no epochs left",
                                           "Check the rejection thresholds (epochs.drop_log) and the event selection"))
    convert = dtype is not None and np.dtype(dtype) != np.float64
    data = epochs.get_data(picks=idx, copy=not convert)  # a view when we convert anyway
    ch_names = [epochs.ch_names[i] for i in idx]
    times = np.asarray(epochs.times, dtype=np.float64)
    X = _as_float(np.asarray(data), dtype)
    _check_finite_located(X, param, "epochs", ch_names=ch_names, times=times,
                          fix="Reject or interpolate the affected epochs/channels in MNE first")
    return BrainArray(X=X, kind="epochs", sfreq=float(epochs.info["sfreq"]), ch_names=ch_names, times=times)


def _load_mask(mask: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """The mask as a boolean 3-D array and its affine (``None`` for an array mask)."""
    affine = None
    if isinstance(mask, (str, os.PathLike)):
        from ..io.nifti import load_nifti

        vol = load_nifti(mask)
        data, affine = np.asarray(vol.data), vol.affine
    elif _is_image(mask):
        data, affine = np.asarray(mask.dataobj), np.asarray(mask.affine, dtype=np.float64)
    else:
        try:
            data = np.asarray(mask)
        except (TypeError, ValueError) as exc:
            raise ValidationError(format_error("mask", "a 3-D nibabel image or boolean array", mask)) from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ShapeMismatchError(format_error("mask", "a 3-D mask (one value per voxel of the grid)", data,
                                              "Pass a single 3-D volume, e.g. the subject's brain or ROI mask"))
    if data.dtype != bool:
        if not np.issubdtype(data.dtype, np.number) or not np.all(np.isin(data, (0, 1))):
            values = np.unique(data)[:5].tolist() if np.issubdtype(data.dtype, np.number) else data.dtype
            raise ValidationError(format_error(
                "mask", "a binary mask (0/1 or boolean)", f"values {values}",
                "Threshold it yourself, e.g. mask = mask_img.get_fdata() > 0.5 (neurodecode never picks a threshold)"))
        data = data.astype(bool)
    if not data.any():
        raise ValidationError(format_error("mask", "at least one voxel inside", "an empty mask",
                                           "Check the mask file (and its threshold)"))
    return data, affine


def _from_images(X: Any, param: str, mask: Any, dtype: Any) -> BrainArray:
    images = list(X) if isinstance(X, (list, tuple)) else [X]
    not_images = [i for i, img in enumerate(images) if not _is_image(img)]
    if not_images:
        raise ValidationError(format_error(
            param, "a list of nibabel images only", f"non-image entries at positions {not_images[:5]}",
            "Pass a 4-D image or a list of 3-D images (nibabel.load each file)"))
    if mask is None:
        raise ValidationError(format_error(
            "mask", "a 3-D brain mask on the images' grid (a nibabel image, a path to one, or a boolean array)",
            "None", "Pass mask=... (e.g. the subject's nsdgeneral.nii.gz, or nilearn.masking.compute_brain_mask(img)); "
            "neurodecode never guesses which voxels to use"))
    mask_data, mask_affine = _load_mask(mask)
    rows = []
    affine = None
    for pos, img in enumerate(images):
        where = f"{param}[{pos}]" if isinstance(X, (list, tuple)) else param
        shape = tuple(int(s) for s in img.shape)
        if len(shape) not in (3, 4) or (isinstance(X, (list, tuple)) and len(shape) == 4 and shape[3] != 1):
            raise ShapeMismatchError(format_error(
                where, "a 4-D image (one volume per trial) or 3-D images", f"an image of shape {shape}",
                "Pass one volume per trial: a 4-D image, or a list of 3-D images"))
        img_affine = np.asarray(img.affine, dtype=np.float64)
        if shape[:3] != mask_data.shape:
            raise ShapeMismatchError(format_error(
                "mask", f"the grid of {where}, shape {shape[:3]}", f"a mask of shape {mask_data.shape}",
                "Resample the mask to the images, e.g. nilearn.image.resample_to_img(mask, img, "
                "interpolation='nearest'), or use the mask made for these data"))
        if mask_affine is not None and not np.allclose(img_affine, mask_affine):
            raise MetadataMismatchError(format_error(
                "mask", f"the affine of {where} (the same voxel-to-world grid)",
                f"another affine (largest difference {np.abs(img_affine - mask_affine).max():.3g})",
                "Resample the mask to the images, e.g. nilearn.image.resample_to_img(mask, img, "
                "interpolation='nearest')"))
        if affine is not None and not np.allclose(img_affine, affine):
            raise MetadataMismatchError(format_error(
                where, f"the affine of {param}[0] (every trial on one grid)", "another affine",
                "Resample the images to one grid first"))
        affine = img_affine
        data = np.asarray(img.dataobj)  # applies the header's scaling, if any
        if data.ndim == 3:
            data = data[..., None]
        rows.append(np.asarray(data[mask_data]).T)  # (n_volumes, n_voxels)
    values = rows[0] if len(rows) == 1 else np.concatenate(rows)
    X_out = np.ascontiguousarray(_as_float(values, dtype))
    _check_finite_located(X_out, param, "image", voxels=np.argwhere(mask_data),
                          fix="Fix the volumes, or leave those voxels out of the mask")
    return BrainArray(X=X_out, kind="image", affine=affine)


def as_brain_array(X: Any, *, param: str = "X", mask: Any = None, picks: Any = None, dtype: Any = None,
                   expect_sfreq: float | None = None, expect_ch_names: Sequence[str] | None = None,
                   expect_tmin: float | None = None, expect_source: str = "seen in fit") -> BrainArray:
    """Turn brain data as a lab holds it into a NumPy array, with the metadata it carried.

    Parameters
    ----------
    X : ndarray, Trials, mne.Epochs or nibabel image(s)
        - array-like: taken as is (no metadata);
        - :class:`~neurodecode.data.Trials`: ``trials.X`` with its subject, ``sfreq``,
          ``ch_names`` and ``times``;
        - ``mne.Epochs`` / ``mne.EpochsArray``: ``epochs.get_data(picks=picks)``, shape
          (n_epochs, n_channels, n_times), in MNE's SI units (V, T), with ``sfreq``,
          ``ch_names`` and ``times``;
        - a nibabel 4-D image (one volume per trial), a 3-D image (one trial) or a list of
          3-D images: the voxels inside ``mask``, shape (n_trials, n_voxels).
    param : str
        Name of ``X`` in error messages.
    mask : nibabel image, path or ndarray of bool of shape (x, y, z), or None
        Voxels to keep, on the images' grid (same shape; an image or file must also have the
        same affine). Required for images, unused for the other kinds. 0/1 or boolean values
        only: a probabilistic map must be thresholded by the caller.
    picks : str, list of str, list of int or None
        Channels of an ``mne.Epochs``, resolved as ``Epochs.get_data(picks=...)`` does
        (``"eeg"``, ``"meg"``, ``"data"``, names or indices; a type drops bad channels).
        ``None``: every channel, stimulus channels and bad channels included, as
        ``get_data()`` gives them. Unused for the other kinds.
    dtype : dtype or None
        Cast the array to this dtype. ``None``: floating arrays are kept, converted
        containers are floating (integer image data become float64); an array-like is kept as is.
    expect_sfreq, expect_ch_names, expect_tmin : optional
        Metadata the data must match where the container carries them (e.g. what an
        estimator saw in ``fit``): sampling rate in Hz, channel names in order, time of the
        first sample in seconds (within half a sample). A plain array carries none, so none
        are checked for it.
    expect_source : str
        Where the expected values come from, for the messages (``"seen in fit"``).

    Returns
    -------
    brain : BrainArray
        ``brain.X`` and the metadata found (``kind``, ``sfreq``, ``ch_names``, ``times``,
        ``subject``, ``affine``).

    Raises
    ------
    ValidationError
        NaN or infinite values (with where they are: epoch, channel and time; trial and
        voxel), images without a mask, a non-binary or empty mask, an unsupported input.
    ShapeMismatchError
        A mask on another grid than the images.
    MetadataMismatchError
        Another sampling rate, channel set or order, or epoch window than expected; a mask
        image with another affine than the images.

    Examples
    --------
    >>> import mne, numpy as np
    >>> info = mne.create_info(["Fz", "Cz", "Pz"], sfreq=100.0, ch_types="eeg")
    >>> epochs = mne.EpochsArray(np.zeros((4, 3, 50)), info, verbose=False)
    >>> brain = as_brain_array(epochs)
    >>> brain.X.shape, brain.sfreq, brain.ch_names
    ((4, 3, 50), 100.0, ['Fz', 'Cz', 'Pz'])
    """
    kind = input_kind(X)
    if kind == "array" and isinstance(X, (str, bytes, os.PathLike)):
        raise ValidationError(format_error(
            param, _ACCEPTED, repr(str(X)), "Load the file first: nibabel.load(path) for NIfTI, "
            "mne.read_epochs(path) for -epo.fif (or neurodecode.io.read_epochs)"))
    if kind == "array" and _is_instance(X, "mne", "io.BaseRaw", "Evoked"):
        raise ValidationError(format_error(
            param, "epoched trials (mne.Epochs)", f"an {type(X).__name__}",
            "Cut the recording into one epoch per trial first, e.g. mne.Epochs(raw, events, tmin, tmax)"))
    if kind == "epochs":
        out = _from_epochs(X, param, picks, dtype)
    elif kind == "image":
        out = _from_images(X, param, mask, dtype)
    elif kind == "trials":
        arr = _as_float(np.asarray(X.X), dtype)
        _check_finite_located(arr, param, "trials", fix="Remove or impute them, or drop the affected trials")
        out = BrainArray(X=arr, kind="trials", sfreq=None if X.sfreq is None else float(X.sfreq),
                         ch_names=None if X.ch_names is None else [str(c) for c in X.ch_names],
                         times=None if X.times is None else np.asarray(X.times, dtype=np.float64),
                         subject=str(X.subject))
    else:
        if X is None:
            raise ValidationError(format_error(param, _ACCEPTED, None))
        out = BrainArray(X=check_array(X, param, dtype=dtype), kind="array")
    if out.X.size == 0:
        raise ValidationError(format_error(param, "non-empty data", f"data of shape {out.X.shape}",
                                           "Check the selection that produced it"))
    _check_expected(out, param, expect_sfreq=expect_sfreq, expect_ch_names=expect_ch_names,
                    expect_tmin=expect_tmin, source=expect_source)
    return out
