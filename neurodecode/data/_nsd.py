"""Natural Scenes Dataset: trial table, betas (NIfTI, HDF5 or our cache), splits, z-scoring, repeats.

Conventions (also in ``data_specs/nsd.toml``):

- ``nsd_expdesign.mat`` counts from 1; everything we return counts from 0 except
  ``session`` and ``trial_in_session`` (1-based, like NSD's file names and run logs) and
  the raw ``masterordering`` column (kept 1-based, as in the file).
- ``stimulus_ids`` are 0-based indices into the 73k images of ``nsd_stimuli.hdf5``
  (``subjectim[s, masterordering - 1] - 1``); ``nsd_stim_info_merged.csv``'s ``nsdId``
  uses the same 0-based numbering.
- Columns of ``X`` are the voxels with ``nsdgeneral == 1``, in ``np.flatnonzero`` (C)
  order of the (X, Y, Z) volume. Values are percent signal change (file values / 300)
  before z-scoring.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .._core.docs import fill_doc
from .._core.errors import MissingFileError, ValidationError
from .._core.logging import logger, progress
from .._core.validation import check_indices, check_option, format_error
from ._layout import spec_path
from ._nsd_files import (
    _SOURCES,
    _ZSCORE,
    NSDMask,
    _average_groups,
    _handle_nonfinite,
    _hint,
    _read_session_betas,
    _refuse_holes,
    _spec,
    _subject_number,
    _zscore_session,
    nsd_beta_dir,
    nsd_missing_sessions,
    nsd_session_files,
    nsd_subject_id,
    nsd_trial_table,
    read_nsd_mask,
)
from ._trials import Trials

__all__ = ["load_nsd", "load_nsd_stimuli", "nsd_trial_table", "nsd_subject_id", "nsd_beta_dir", "NSDMask",
           "read_nsd_mask", "nsd_session_files", "nsd_missing_sessions"]

# ----------------------------------------------------------------------------- loader
@fill_doc
def load_nsd(
    root: str | os.PathLike[str],
    subject: Any,
    *,
    beta_version: str = "b3",
    sessions: Any = None,
    zscore: str | None = "train",
    average_test_repeats: bool = True,
    average_train_repeats: bool = False,
    source: str = "auto",
    nan_policy: str = "raise",
    cache_dir: str | os.PathLike[str] | None = None,
    rois: Any = None,
    within_nsdgeneral: bool = False,
    verbose: Any = None,
) -> Trials:
    """Load one NSD subject's single-trial betas, masked by nsdgeneral (or ROIs), as :class:`Trials`.

    Parameters
    ----------
    root : path-like
        The NSD root (holding ``nsddata/``, ``nsddata_betas/``...).
    subject : int or str
        1, ``"subj01"`` or ``"nsd/subj01"``.
    beta_version : str
        ``"b3"`` (``betas_fithrf_GLMdenoise_RR``, default), ``"b2"`` (``betas_fithrf``),
        ``"b1"`` (``betas_assumehrf``) or the folder name.
    sessions : int, sequence of int or None
        1-based sessions; an int ``n`` means 1..n (e.g. 37 for the publicly released
        sessions, 40 for all). None: every session present on disk, consecutive from 1.
    zscore : {"train", "all", None}
        Per-session z-scoring of each voxel: ``"train"`` (default) with statistics from
        the session's training trials only (shared-1000 trials excluded), ``"all"`` over
        all 750 trials of the session (MindEye2's choice), None keeps percent signal
        change. Zero-variance voxels give a RuntimeWarning and are set to 0.
    average_test_repeats : bool
        Average the repeats of each test (shared) image into one trial.
    average_train_repeats : bool
        Average the repeats of each training image too.
    source : {"auto", "nifti", "hdf5"}
        Which beta files to read; ``"auto"`` prefers ``.hdf5`` (voxel-wise reads) and
        falls back to ``.nii.gz``. Ignored when ``cache_dir`` is given.
    nan_policy : {"raise", "zero"}
        NaN/inf betas: raise (naming their count and first positions) or set them to 0.
    cache_dir : path-like or None
        Folder given to :func:`prepare_nsd` (``neurodecode prepare nsd``): read the
        converted int16 cache instead of the original files.
    rois : str, sequence of str, mapping or None
        None (default): the nsdgeneral voxels. Otherwise ROIs of NSD's atlases
        (``func1pt8mm/roi/<atlas>.nii.gz`` named by ``<atlas>.mgz.ctab``): ``"early"``,
        ``("early", "ventral")``, ``"prf-visualrois:V1v"``, ``{"streams": ["early", "ventral"]}``,
        ``"streams"`` / ``{"streams": "*"}`` for every label; the columns are the union of their voxels in
        C order of the volume. Unknown names raise an error listing the valid ones. The atlas files,
        labels and voxel counts are recorded in ``provenance["rois"]``; per-column labels come from
        :func:`nsd_voxel_labels`.
    within_nsdgeneral : bool
        With ``rois``: False (default) takes every ROI voxel wherever it lies, instead of nsdgeneral (as
        Takagi & Nishimoto select the ``streams`` ROIs); True keeps only ROI voxels inside nsdgeneral.
        With ``cache_dir`` (which holds the nsdgeneral voxels only) every selected voxel must lie in
        nsdgeneral.
    %(verbose)s

    Returns
    -------
    trials : Trials
        ``X`` float32 of shape (n_trials, n_voxels); ``stimulus_ids`` 0-based indices
        into the 73k NSD images; ``split`` ``"train"``/``"test"`` (test = shared-1000);
        ``metadata`` with ``session`` (1-based), ``trial_in_session`` (1-based),
        ``masterordering`` (1-based) and, after averaging, ``n_repeats``;
        ``provenance`` with every choice made.
    """
    check_option(zscore, "zscore", _ZSCORE)
    check_option(nan_policy, "nan_policy", ("raise", "zero"))
    check_option(source, "source", _SOURCES)
    s = _subject_number(subject)
    selection = None
    if rois is not None:
        from ._nsd_rois import select_nsd_rois

        selection = select_nsd_rois(root, s, rois, within_nsdgeneral=within_nsdgeneral)
    beta_dir = nsd_beta_dir(beta_version)
    spec = _spec()
    tps = int(spec["dataset"]["trials_per_session"])
    scale = float(spec["scaling"]["betas"])
    files: list[str] = []
    reader: Callable[[int], np.ndarray]
    if cache_dir is not None:
        from ._nsd_cache import open_nsd_cache

        cache = open_nsd_cache(cache_dir, s, beta_dir)
        sessions_list = cache.select_sessions(sessions)
        table = cache.trial_table(sessions_list)
        n_voxels = cache.n_voxels
        reader = cache.session_rows
        if selection is not None:
            from functools import partial

            cols = _cache_columns(root, s, selection, cache.n_voxels, cache_dir)
            n_voxels = len(cols)
            reader = partial(_cached_rows, cache, cols)
        files = [str(cache.path)]
        used_source = "cache"
    else:
        found = nsd_session_files(root, s, beta_dir, source)
        if not found:
            raise MissingFileError(format_error(
                "root", f"beta files of subj{s:02d} ({beta_dir})", f"none under {root}",
                _hint("betas_hdf5" if source == "hdf5" else "betas_nifti", subject=s, session=1, beta_dir=beta_dir)))
        if sessions is None:
            _refuse_holes(root, s, beta_dir, source)
            sessions = sorted(found)
        table = nsd_trial_table(root, s, sessions)
        sessions_list = [int(x) for x in dict.fromkeys(table["session"].tolist())]
        missing = [x for x in sessions_list if x not in found]
        if missing:
            raise MissingFileError(format_error(
                "sessions", f"beta files for sessions {missing}", f"only sessions 1-{max(found)} under {root}",
                _hint("betas_nifti", subject=s, session=missing[0], beta_dir=beta_dir)))
        mask = read_nsd_mask(root, s) if selection is None else selection.mask
        n_voxels = mask.n_voxels
        files = [str(found[x][1]) for x in sessions_list]

        def reader(session: int) -> np.ndarray:
            fmt, path = found[session]
            return _read_session_betas(fmt, path, mask, tps)

        formats_used = sorted({found[x][0] for x in sessions_list})
        used_source = formats_used[0] if len(formats_used) == 1 else "mixed"

    n = len(table["session"])
    X = np.empty((n, n_voxels), dtype=np.float32)
    n_nonfinite = 0
    zero_var: dict[int, int] = {}
    train_rows = ~table["shared"]
    for i, session in enumerate(progress(sessions_list, desc=f"nsd/subj{s:02d} sessions", unit="session",
                                         verbose=verbose)):
        rows = slice(i * tps, (i + 1) * tps)
        x = reader(session).astype(np.float64) / scale
        where = f"subj{s:02d} session {session:02d} ({files[min(i, len(files) - 1)]})"
        n_nonfinite += _handle_nonfinite(x, nan_policy, where)
        if zscore is not None:
            ref = np.flatnonzero(train_rows[rows]) if zscore == "train" else np.arange(tps)
            nz = _zscore_session(x, ref)
            if nz:
                zero_var[session] = nz
        X[rows] = x
    if zero_var:
        warnings.warn(f"nsd/subj{s:02d}: zero-variance voxels in z-scoring were set to 0 (per session: "
                      f"{zero_var})", RuntimeWarning, stacklevel=2)
    stim, split = table["stimulus_id"], table["split"]
    metadata = {k: table[k] for k in ("session", "trial_in_session", "masterordering")}
    which = {name for name, flag in (("test", average_test_repeats), ("train", average_train_repeats)) if flag}
    n_repeats = None
    if which:
        group, firsts, counts = _average_groups(X, stim, split, which)
        sums = np.zeros((len(firsts), n_voxels), dtype=np.float64)
        np.add.at(sums, group, X)
        X = (sums / counts[:, None]).astype(np.float32)
        stim, split = stim[firsts], split[firsts]
        metadata = {k: v[firsts] for k, v in metadata.items()}
        metadata["n_repeats"] = counts
        n_repeats = counts
    from .._core.versions import package_versions

    provenance = {
        "dataset": "nsd",
        "loader": "neurodecode.data.load_nsd",
        "root": str(root),
        "subject": f"nsd/subj{s:02d}",
        "beta_version": beta_version,
        "beta_dir": beta_dir,
        "source": used_source,
        "files": files,
        "sessions": sessions_list,
        "n_sessions": len(sessions_list),
        "mask": "nsdgeneral == 1 (func1pt8mm), voxels in np.flatnonzero C order" if selection is None else
                f"ROIs {', '.join(selection.rois)} ({'within nsdgeneral' if within_nsdgeneral else 'instead of nsdgeneral'}"
                "; func1pt8mm), voxels in np.flatnonzero C order",
        "rois": None if selection is None else selection.provenance(),
        "n_voxels": int(n_voxels),
        "scaling": f"stored int16 / {scale:g} = percent signal change",
        "zscore": {"train": "per session, statistics from train trials only (shared-1000 excluded)",
                   "all": "per session, statistics from all trials of the session", None: "none"}[zscore],
        "zscore_option": zscore,
        "zero_variance_voxels": {str(k): v for k, v in zero_var.items()},
        "nan_policy": nan_policy,
        "n_nonfinite_set_to_zero": n_nonfinite,
        "test_split": "shared-1000 (masterordering <= len(sharedix))",
        "average_test_repeats": bool(average_test_repeats),
        "average_train_repeats": bool(average_train_repeats),
        "repeats": ("averaged: " + ", ".join(sorted(which))) if which else "single trials",
        "stimulus_ids": "0-based index into nsd_stimuli.hdf5 imgBrick (73k)",
        "counts": {
            "train_trials": int((table["split"] == "train").sum()),
            "test_trials": int((table["split"] == "test").sum()),
            "train_images": int(len(np.unique(table["stimulus_id"][table["split"] == "train"]))),
            "test_images": int(len(np.unique(table["stimulus_id"][table["split"] == "test"]))),
        },
        "versions": package_versions(("numpy", "nibabel", "h5py")),
    }
    logger.info("loaded nsd/subj%02d: %d trials x %d voxels from %d session(s) (%s)", s, len(X), n_voxels,
                len(sessions_list), used_source)
    del n_repeats
    return Trials(X=X, stimulus_ids=stim, subject=f"nsd/subj{s:02d}", split=split, metadata=metadata,
                  provenance=provenance)


def _cached_rows(cache: Any, cols: np.ndarray, session: int) -> np.ndarray:
    return np.ascontiguousarray(cache.session_rows(session)[:, cols])


def _cache_columns(root: Any, s: int, selection: Any, n_cached: int, cache_dir: Any) -> np.ndarray:
    """Positions of the selected ROI voxels among the cached nsdgeneral columns."""
    general = read_nsd_mask(root, s)
    if general.n_voxels != n_cached:
        raise ValidationError(format_error("cache_dir", f"a cache of the {general.n_voxels} nsdgeneral voxels under "
                                           f"{root}", f"{n_cached} voxels in {cache_dir}",
                                           "Use the cache prepared from this NSD root"))
    pos = np.searchsorted(general.flat, selection.mask.flat)
    inside = (pos < general.n_voxels) & (general.flat[np.minimum(pos, general.n_voxels - 1)] == selection.mask.flat)
    if not inside.all():
        raise ValidationError(format_error(
            "rois", "ROI voxels inside nsdgeneral (the prepared cache holds only those)",
            f"{int((~inside).sum())} of {len(inside)} selected voxels outside nsdgeneral",
            "Pass within_nsdgeneral=True, or read the original files (no cache_dir)"))
    return pos


# ----------------------------------------------------------------------------- stimuli
def load_nsd_stimuli(root: str | os.PathLike[str], ids: Any, *, size: int | Sequence[int] | None = None) -> np.ndarray:
    """Read NSD images by 0-based 73k id from ``nsd_stimuli.hdf5``.

    Parameters
    ----------
    root : path-like
        The NSD root.
    ids : array-like of int, shape (n,)
        0-based ids (``Trials.stimulus_ids`` of :func:`load_nsd`), any order, repeats allowed.
    size : int, (height, width) or None
        Resize to this size (bilinear, PIL); None keeps the stored size (425 x 425).

    Returns
    -------
    images : ndarray of uint8, shape (n, H, W, 3)
    """
    from ..io.hdf5 import get_dataset, open_hdf5, read_rows

    idx = np.asarray(ids).ravel()
    if idx.size == 0:
        raise ValidationError(format_error("ids", "at least one image id", "an empty selection"))
    path = spec_path("nsd", root, "stimuli")
    with open_hdf5(path, hint=_hint("stimuli")) as f:
        ds = get_dataset(f, _spec()["keys"]["stimuli"], ndim=4)
        check_indices(idx, "ids", ds.shape[0], base=0)
        images = read_rows(ds, idx)
    if size is not None:
        from PIL import Image

        h, w = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
        images = np.stack([np.asarray(Image.fromarray(im).resize((int(w), int(h)), Image.Resampling.BILINEAR))
                           for im in images])
    return images.astype(np.uint8, copy=False)
