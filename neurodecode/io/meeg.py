"""M/EEG readers through MNE: raw recordings (FIF, CTF ``.ds``, BrainVision) and epochs.

MNE is imported inside the functions (it is heavy). Errors name the file and the
format expected from its extension.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .._core.errors import DataIntegrityError, MissingFileError, ValidationError
from .._core.validation import format_error

__all__ = ["read_raw", "read_epochs", "RAW_FORMATS"]

RAW_FORMATS = {".fif": "FIF (MNE / MEGIN)", ".fif.gz": "FIF (MNE / MEGIN)", ".ds": "CTF (folder)",
               ".vhdr": "BrainVision header", ".con": "KIT/Yokogawa continuous"}


def _suffix(p: Path) -> str:
    name = p.name.lower()
    return ".fif.gz" if name.endswith(".fif.gz") else p.suffix.lower()


def read_raw(path: str | os.PathLike[str], *, preload: bool = True, verbose: Any = "error") -> Any:
    """Read a continuous M/EEG recording with MNE.

    Parameters
    ----------
    path : path-like
        ``.fif`` / ``.fif.gz`` (BIDS MEG derivatives, MNE), ``.ds`` (CTF folder, e.g.
        THINGS-MEG raw) or ``.vhdr`` (BrainVision, e.g. THINGS-EEG2 raw).
    preload : bool
        Read the data into memory now (so a truncated file fails here).
    verbose : str
        MNE's log level for the read.

    Returns
    -------
    raw : mne.io.BaseRaw
        The recording.
    """
    import mne

    p = Path(path)
    kind = _suffix(p)
    if kind not in RAW_FORMATS:
        raise ValidationError(format_error("path", "a file ending in " + ", ".join(RAW_FORMATS), str(p),
                                           "Convert the recording to FIF, or pass a CTF .ds folder or .vhdr"))
    if not p.exists():
        raise MissingFileError(format_error("path", f"an existing {RAW_FORMATS[kind]} recording", str(p),
                                            "Check the path"))
    try:
        if kind in (".fif", ".fif.gz"):
            return mne.io.read_raw_fif(p, preload=preload, verbose=verbose)
        if kind == ".ds":
            return mne.io.read_raw_ctf(p, preload=preload, verbose=verbose)
        if kind == ".con":  # KIT (MEG-MASC); BIDS keeps the marker/head-shape files beside it, unused here
            return mne.io.read_raw_kit(p, preload=preload, verbose=verbose)
        return mne.io.read_raw_brainvision(p, preload=preload, verbose=verbose)
    except (ValueError, OSError, EOFError, RuntimeError, IndexError) as exc:  # MNE's KIT reader: IndexError
        raise DataIntegrityError(
            format_error("path", f"a readable {RAW_FORMATS[kind]} recording", f"{p} ({type(exc).__name__}: {exc})",
                         "The file is truncated or corrupted; download it again")
        ) from exc


def read_epochs(path: str | os.PathLike[str], *, preload: bool = True, verbose: Any = "error") -> Any:
    """Read an MNE epochs file (``-epo.fif``)."""
    import mne

    p = Path(path)
    if not p.is_file():
        raise MissingFileError(format_error("path", "an existing epochs .fif file", str(p), "Check the path"))
    try:
        return mne.read_epochs(p, preload=preload, verbose=verbose)
    except (ValueError, OSError, EOFError, RuntimeError) as exc:
        raise DataIntegrityError(
            format_error("path", "a readable epochs .fif file", f"{p} ({type(exc).__name__}: {exc})",
                         "The file is truncated or corrupted; write it again")
        ) from exc
