"""The per-subject NSD cache: masked betas as one (n_trials, n_voxels) int16 ``.npy`` (memmap-able).

Layout of ``<out_dir>/subjXX/<beta_dir>/``::

    betas.npy          int16 (n_trials, n_voxels), file values (percent signal change x 300)
    trial_table.npz    the rows of nsd_trial_table for the prepared sessions
    provenance.json    written last: its presence marks a finished cache
    parts/             per-session pieces while converting (removed at the end)

Each session is converted into ``parts/sessionNN.npy`` atomically, so a killed
conversion restarts at the first missing session; the final array is assembled into a
temporary file and renamed, so nothing half-written is ever visible under a final name.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import DataIntegrityError, MissingFileError, ValidationError
from .._core.files import atomic_path, write_json
from .._core.logging import logger, progress
from .._core.specs import load_spec
from .._core.validation import check_indices, format_error
from ._nsd_files import (
    _read_session_betas,
    _refuse_holes,
    _subject_number,
    nsd_beta_dir,
    nsd_session_files,
    nsd_trial_table,
    read_nsd_mask,
)

__all__ = ["prepare_nsd", "open_nsd_cache", "NSDCache"]

_FORMAT = "neurodecode-nsd-cache-1"


def _folder(out_dir: str | os.PathLike[str], subject: int, beta_dir: str) -> Path:
    return Path(out_dir) / f"subj{subject:02d}" / beta_dir


def prepare_nsd(
    root: str | os.PathLike[str],
    subject: Any,
    out_dir: str | os.PathLike[str],
    *,
    beta_version: str = "b3",
    sessions: Any = None,
    source: str = "auto",
    nan_policy: str = "raise",
    verbose: Any = None,
) -> Path:
    """Convert one subject's masked betas once into the fast cache (see module docstring).

    HDF5 betas are read voxel-wise (only the nsdgeneral voxels; NSD chunks hold one
    voxel x 750 trials), NIfTI betas fully then masked. Re-running skips finished work.

    Parameters
    ----------
    root : path-like
        The NSD root.
    subject : int or str
        1, ``"subj01"`` or ``"nsd/subj01"``.
    out_dir : path-like
        Cache root; the subject's cache goes to ``out_dir/subjXX/<beta_dir>/``.
    beta_version : str
        ``"b1"``, ``"b2"``, ``"b3"`` (default) or the folder name.
    sessions : int, sequence of int or None
        1-based sessions (None: every session on disk).
    source : {"auto", "nifti", "hdf5"}
        Which files to convert from.
    nan_policy : {"raise", "zero"}
        NaN/inf betas (possible in float files): ``"raise"`` (default) refuses the file,
        naming the subject, session, file and first positions, and writes nothing for it;
        ``"zero"`` stores 0 instead and records the count per session in ``provenance.json``.
    verbose : bool | str | int | None
        Log level and progress bars.

    Returns
    -------
    folder : pathlib.Path
        The subject's cache folder (pass ``out_dir`` as ``cache_dir`` to :func:`load_nsd`).
    """
    from .._core.validation import check_option
    from ._nsd_files import _handle_nonfinite

    check_option(nan_policy, "nan_policy", ("raise", "zero"))
    s = _subject_number(subject)
    beta_dir = nsd_beta_dir(beta_version)
    tps = int(load_spec("nsd")["dataset"]["trials_per_session"])
    found = nsd_session_files(root, s, beta_dir, source)
    if not found:
        from ._nsd_files import _hint

        raise MissingFileError(format_error("root", f"beta files of subj{s:02d} ({beta_dir})", f"none under {root}",
                                            _hint("betas_nifti", subject=s, session=1, beta_dir=beta_dir)))
    if sessions is None:
        _refuse_holes(root, s, beta_dir, source)
    table = nsd_trial_table(root, s, sorted(found) if sessions is None else sessions)
    session_list = [int(x) for x in dict.fromkeys(table["session"].tolist())]
    missing = [x for x in session_list if x not in found]
    if missing:
        raise MissingFileError(format_error("sessions", f"beta files for sessions {missing}",
                                            f"only sessions 1-{max(found)} under {root}"))
    folder = _folder(out_dir, s, beta_dir)
    prov_path = folder / "provenance.json"
    if prov_path.is_file():
        done = json.loads(prov_path.read_text())
        if done.get("sessions") == session_list and (folder / "betas.npy").is_file() and \
                (done.get("nan_policy", "raise") == nan_policy or not done.get("n_nonfinite_set_to_zero")):
            logger.info("nsd cache for subj%02d already complete: %s", s, folder)
            return folder
        prov_path.unlink()  # a different selection: rebuild
    mask = read_nsd_mask(root, s)
    parts = folder / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    dtype = None
    nonfinite_path = parts / "nonfinite.json"
    nonfinite: dict[str, int] = json.loads(nonfinite_path.read_text()) if nonfinite_path.is_file() else {}
    for session in progress(session_list, desc=f"prepare nsd/subj{s:02d}", unit="session", verbose=verbose):
        part = parts / f"session{session:02d}.npy"
        if nan_policy == "raise" and nonfinite.pop(f"{session:02d}", None) is not None:
            part.unlink(missing_ok=True)  # converted earlier with nan_policy='zero': check the file again
        if part.is_file():
            arr = np.load(part, mmap_mode="r")
            if arr.shape == (tps, mask.n_voxels):
                dtype = dtype or arr.dtype
                continue
        fmt, path = found[session]
        raw = _read_session_betas(fmt, path, mask, tps, verbose=False)
        if raw.dtype != np.int16:
            raw = raw.astype(np.float32)
            n_bad = _handle_nonfinite(raw, nan_policy, f"subj{s:02d} session {session:02d} ({path})")
            if n_bad:
                nonfinite[f"{session:02d}"] = n_bad
                write_json(nonfinite_path, nonfinite)
                logger.warning("nsd/subj%02d session %02d: %d NaN/inf value(s) stored as 0 (nan_policy='zero')",
                               s, session, n_bad)
        dtype = dtype or raw.dtype
        with atomic_path(part, suffix=".npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, raw.astype(dtype, copy=False))
    assert dtype is not None
    final = folder / "betas.npy"
    with atomic_path(final, suffix=".npy") as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(len(session_list) * tps, mask.n_voxels))
        for i, session in enumerate(session_list):
            out[i * tps:(i + 1) * tps] = np.load(parts / f"session{session:02d}.npy")
        out.flush()
        del out
    from ..io.npy import save_npz

    save_npz(folder / "trial_table.npz", table)
    from .._core.versions import package_versions

    write_json(prov_path, {
        "format": _FORMAT, "subject": f"nsd/subj{s:02d}", "root": str(root), "beta_version": beta_version,
        "beta_dir": beta_dir, "sessions": session_list, "n_voxels": mask.n_voxels, "n_trials": len(session_list) * tps,
        "dtype": str(np.dtype(dtype)), "scaling": "stored values / 300 = percent signal change",
        "mask": "nsdgeneral == 1, np.flatnonzero C order", "mask_shape": list(mask.shape),
        "source_files": {str(x): str(found[x][1]) for x in session_list},
        "nan_policy": nan_policy,
        "n_nonfinite_set_to_zero": {k: v for k, v in sorted(nonfinite.items()) if int(k) in session_list},
        "versions": package_versions(("numpy", "nibabel", "h5py")),
    })
    shutil.rmtree(parts, ignore_errors=True)
    return folder


class NSDCache:
    """A finished per-subject cache, memory-mapped."""

    def __init__(self, folder: Path) -> None:
        self.path = folder
        self.provenance = json.loads((folder / "provenance.json").read_text())
        if self.provenance.get("format") != _FORMAT:
            raise DataIntegrityError(format_error("cache_dir", f"a {_FORMAT} cache", str(folder),
                                                  "Re-create it with `neurodecode prepare nsd`"))
        self.betas = np.load(folder / "betas.npy", mmap_mode="r")
        if self.betas.shape != (self.provenance["n_trials"], self.provenance["n_voxels"]):
            raise DataIntegrityError(format_error("betas.npy", f"shape ({self.provenance['n_trials']}, "
                                                  f"{self.provenance['n_voxels']})", f"{self.betas.shape} in {folder}",
                                                  "Re-create the cache"))
        with np.load(folder / "trial_table.npz", allow_pickle=False) as z:
            self._table = {k: z[k] for k in z.files}
        self.sessions: list[int] = [int(x) for x in self.provenance["sessions"]]
        self.tps = int(load_spec("nsd")["dataset"]["trials_per_session"])

    @property
    def n_voxels(self) -> int:
        """Voxels per trial."""
        return int(self.betas.shape[1])

    def select_sessions(self, sessions: Any) -> list[int]:
        """Validate a session selection against the prepared sessions."""
        if sessions is None:
            return list(self.sessions)
        if isinstance(sessions, (int, np.integer)) and not isinstance(sessions, bool):
            sessions = list(range(1, int(sessions) + 1))
        sel = list(np.asarray(list(sessions)).ravel())
        if not sel:
            raise ValidationError(format_error("sessions", "at least one session", "an empty selection"))
        check_indices(sel, "sessions", max(self.sessions), base=1)
        lacking = [int(x) for x in sel if int(x) not in self.sessions]
        if lacking:
            raise ValidationError(format_error("sessions", f"sessions prepared in {self.path} ({self.sessions})",
                                               lacking, "Run `neurodecode prepare nsd` with these sessions"))
        return [int(x) for x in sel]

    def trial_table(self, sessions: list[int]) -> dict[str, np.ndarray]:
        """Rows of the stored trial table for ``sessions`` (in that order)."""
        rows = np.concatenate([np.flatnonzero(self._table["session"] == x) for x in sessions])
        return {k: v[rows] for k, v in self._table.items()}

    def session_rows(self, session: int) -> np.ndarray:
        """Stored values of one session, shape (750, n_voxels)."""
        i = self.sessions.index(session)
        return np.asarray(self.betas[i * self.tps:(i + 1) * self.tps])


def open_nsd_cache(cache_dir: str | os.PathLike[str], subject: Any, beta_version: str = "b3") -> NSDCache:
    """Open the finished cache of a subject under ``cache_dir`` (or ``cache_dir`` itself)."""
    s = _subject_number(subject)
    beta_dir = nsd_beta_dir(beta_version)
    for folder in (_folder(cache_dir, s, beta_dir), Path(cache_dir)):
        if (folder / "provenance.json").is_file():
            cache = NSDCache(folder)
            if cache.provenance.get("subject") != f"nsd/subj{s:02d}" or cache.provenance.get("beta_dir") != beta_dir:
                continue
            return cache
    raise MissingFileError(format_error("cache_dir", f"a finished cache of subj{s:02d} ({beta_dir})",
                                        f"none in {cache_dir}",
                                        f"Run `neurodecode prepare nsd ROOT --subject {s} --out {cache_dir}` first"))
