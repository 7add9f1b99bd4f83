"""``.npy`` / ``.npz`` reading without silent unpickling.

THINGS-EEG2 ships its preprocessed data as a Python dict pickled into a ``.npy`` file
(``np.save`` of a dict). Unpickling runs arbitrary code, so :func:`load_npy` refuses it
unless the caller opts in with ``allow_pickle=True``; :func:`save_npz` writes a safe
(pickle-free) replacement atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import DataIntegrityError, MissingFileError, UnsafeCheckpointError
from .._core.validation import format_error

__all__ = ["npy_is_pickled", "load_npy", "load_npz", "save_npz"]


def _check_file(p: Path, hint: str | None) -> None:
    if not p.is_file():
        raise MissingFileError(format_error("path", "an existing file", str(p), hint or "Check the path"))


def npy_is_pickled(path: str | os.PathLike[str]) -> bool:
    """Whether a ``.npy`` file holds Python objects (needs unpickling), read from its header only."""
    p = Path(path)
    _check_file(p, None)
    with open(p, "rb") as fh:
        try:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                _, _, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                _, _, dtype = np.lib.format.read_array_header_2_0(fh)
        except ValueError as exc:
            raise DataIntegrityError(
                format_error("path", "a .npy file", f"{p} ({exc})", "Download the file again and check its size")
            ) from exc
    return bool(dtype.hasobject)


def load_npy(path: str | os.PathLike[str], *, allow_pickle: bool = False, hint: str | None = None) -> Any:
    """Read a ``.npy`` file; a pickled dict is returned as a dict (only with ``allow_pickle=True``).

    Parameters
    ----------
    path : path-like
        The file.
    allow_pickle : bool
        Allow unpickling Python objects. Unpickling runs arbitrary code: only opt in for
        files from a source you trust. Default ``False``.
    hint : str or None
        Added to the missing-file message.

    Returns
    -------
    value : ndarray or dict
        The array, or the pickled object (a 0-d object array is unwrapped).
    """
    p = Path(path)
    _check_file(p, hint)
    if npy_is_pickled(p) and not allow_pickle:
        raise UnsafeCheckpointError(
            format_error("allow_pickle", "True to read a pickled .npy file",
                         f"False for {p}, which holds Python objects (a pickle)",
                         "Unpickling runs arbitrary code: pass allow_pickle=True only for files you trust, "
                         "or convert the file once to a safe .npz")
        )
    try:
        value = np.load(p, allow_pickle=allow_pickle)
    except MemoryError:
        raise
    except Exception as exc:  # a damaged pickle raises anything: UnpicklingError, EOFError, KeyError, ...
        raise DataIntegrityError(
            format_error("path", "a complete .npy file", f"{p} ({type(exc).__name__}: {exc})"[:300],
                         "The file is truncated or corrupted (compare its size with the published one); "
                         "download it again")
        ) from exc
    if isinstance(value, np.ndarray) and value.dtype == object and value.ndim == 0:
        return value.item()
    return value


def load_npz(path: str | os.PathLike[str], *, allow_pickle: bool = False, hint: str | None = None
             ) -> dict[str, np.ndarray]:
    """Read every array of a ``.npz`` file into a dict.

    Parameters
    ----------
    path : path-like
        The file.
    allow_pickle : bool
        Allow arrays of Python objects (unpickling runs code: only for files you trust).
        Default ``False``: such a file is refused with :class:`UnsafeCheckpointError`.
    hint : str or None
        Added to the missing-file message.
    """
    p = Path(path)
    _check_file(p, hint)
    try:
        with np.load(p, allow_pickle=allow_pickle) as z:
            return {k: z[k] for k in z.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower() and not allow_pickle:
            raise UnsafeCheckpointError(
                format_error("allow_pickle", "True to read a .npz holding Python objects",
                             f"False for {p}, which holds object arrays (a pickle)",
                             "Unpickling runs arbitrary code: pass allow_pickle=True only for a file you trust, "
                             "or re-create it from arrays of numbers and strings")
            ) from exc
        raise DataIntegrityError(format_error("path", "a readable .npz file", f"{p} ({exc})",
                                              "The file is corrupted; write or download it again")) from exc
    except MemoryError:
        raise
    except Exception as exc:  # zip errors, truncated members, damaged pickles
        raise DataIntegrityError(
            format_error("path", "a readable .npz file", f"{p} ({type(exc).__name__}: {exc})"[:300],
                         "The file is truncated or corrupted; write or download it again")
        ) from exc


def save_npz(path: str | os.PathLike[str], arrays: dict[str, Any], *, compress: bool = False) -> Path:
    """Atomically write arrays (numbers or strings, never objects) to a ``.npz`` file."""
    from .._core.files import atomic_path

    clean: dict[str, np.ndarray] = {}
    for k, v in arrays.items():
        arr = np.asarray(v)
        if arr.dtype == object:
            arr = arr.astype(str)
        clean[k] = arr
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            if compress:
                np.savez_compressed(fh, **clean)  # type: ignore[arg-type]
            else:
                np.savez(fh, **clean)  # type: ignore[arg-type]
    return Path(path)
