"""Input checks with one phrasing: parameter, what was expected, what came, how to fix.

Every check raises a subclass of :class:`~neurodecode._core.errors.NeurodecodeError`
whose message follows the pattern::

    <param>: expected <expectation>, got <value>. <How to fix>.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import (
    MissingFileError,
    ShapeMismatchError,
    ValidationError,
)

__all__ = [
    "format_error",
    "describe",
    "check_array",
    "check_finite",
    "check_option",
    "check_positive",
    "check_path",
    "check_indices",
    "check_same_length",
    "dataclass_from_dict",
]


def format_error(param: str, expected: str, got: object, fix: str | None = None) -> str:
    """Build the standard error message.

    Parameters
    ----------
    param : str
        Name of the offending parameter (as the caller spelled it).
    expected : str
        What was expected, phrased to follow "expected".
    got : object
        What came; strings are used as they are, other objects through :func:`describe`.
    fix : str or None
        How to fix it, as a full sentence.
    """
    got_text = got if isinstance(got, str) else describe(got)
    msg = f"{param}: expected {expected}, got {got_text}."
    if fix:
        msg += f" {fix.rstrip('.')}."
    return msg


def describe(value: object) -> str:
    """Short description of a value for error messages (shape and dtype of arrays)."""
    if isinstance(value, np.ndarray) or (hasattr(value, "shape") and hasattr(value, "dtype")):
        return f"an array of shape {tuple(value.shape)} and dtype {value.dtype}"  # type: ignore[attr-defined]
    text = repr(value)
    if len(text) > 120:
        text = text[:117] + "..."
    return f"{text} ({type(value).__name__})"


def check_array(
    x: Any,
    param: str,
    *,
    ndim: int | Sequence[int] | None = None,
    shape: Sequence[int | None] | None = None,
    dtype: str | type | None = None,
    finite: bool = True,
    allow_empty: bool = False,
    copy: bool = False,
) -> np.ndarray:
    """Convert ``x`` to a NumPy array and check it.

    Parameters
    ----------
    x : array-like
        The input.
    param : str
        Its parameter name, used in error messages.
    ndim : int or sequence of int or None
        Allowed numbers of dimensions.
    shape : sequence of (int or None) or None
        Expected shape; ``None`` entries match any size.
    dtype : str or type or None
        If given, the array is cast to this dtype (``"float"`` means float32 or float64
        kept as is, integers and others cast to float64).
    finite : bool
        Refuse NaN and infinite values (reported with their count and first positions).
    allow_empty : bool
        Allow arrays with zero elements.
    copy : bool
        Always return a copy.

    Returns
    -------
    array : ndarray
        The checked array.
    """
    try:
        arr = np.array(x, copy=copy) if copy else np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            format_error(param, "an array-like of numbers", x, f"Pass a NumPy array ({exc})")
        ) from exc
    if arr.dtype == object:
        raise ValidationError(
            format_error(param, "a numeric array", arr, "Ragged or mixed inputs cannot be stacked; pass a rectangular numeric array")
        )
    if dtype == "float":
        if arr.dtype not in (np.float32, np.float64):
            arr = arr.astype(np.float64)
    elif dtype is not None:
        arr = arr.astype(dtype, copy=False)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            exp = " or ".join(str(a) for a in allowed)
            raise ShapeMismatchError(
                format_error(param, f"an array with {exp} dimensions", arr,
                             "Reshape it; a single sample needs a leading axis of size 1 (x[None])")
            )
    if shape is not None:
        if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
            exp = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
            raise ShapeMismatchError(
                format_error(param, f"an array of shape {exp}", arr, "Check the axis order and sizes")
            )
    if not allow_empty and arr.size == 0:
        raise ValidationError(format_error(param, "a non-empty array", arr, "Check the selection that produced it"))
    if finite and np.issubdtype(arr.dtype, np.inexact):
        check_finite(arr, param)
    return arr


def check_finite(arr: np.ndarray, param: str, *, max_listed: int = 5, axes: Sequence[str] | None = None,
                 labels: dict[int, Sequence[Any]] | None = None, where: str | None = None,
                 fix: str | None = None) -> None:
    """Raise if ``arr`` holds NaN or infinite values, naming how many and where.

    Parameters
    ----------
    arr : ndarray
        The array.
    param : str
        Its name, for the message.
    max_listed : int
        Positions listed.
    axes : sequence of str or None
        A name per axis (e.g. ``("trial", "channel", "time")``): positions read ``(trial 3, channel Oz,
        time 10)`` instead of ``(3, 12, 10)``.
    labels : dict of int to sequence or None
        Labels of the entries along some axes (e.g. ``{1: ch_names}``), used in the positions.
    where : str or None
        The file, subject... the array comes from.
    fix : str or None
        How to fix it (a default suggestion otherwise).
    """
    bad = ~np.isfinite(arr)
    if bad.any():
        n_bad = int(bad.sum())
        first = np.argwhere(bad)[:max_listed]

        def name(idx: np.ndarray) -> str:
            if axes is None and not labels:
                return str(tuple(int(i) for i in idx))
            parts = []
            for ax, i in enumerate(idx):
                lab = labels.get(ax) if labels else None
                value = lab[int(i)] if lab is not None and int(i) < len(lab) else int(i)
                parts.append(f"{axes[ax]} {value}" if axes is not None and ax < len(axes) else str(value))
            return "(" + ", ".join(parts) + ")"

        where_text = ", ".join(name(idx) for idx in first)
        src = f" of {where}" if where else ""
        raise ValidationError(
            format_error(
                param,
                "only finite values",
                f"{n_bad} NaN/inf value(s) in an array of shape {arr.shape}{src}, first at {where_text}",
                fix or "Remove or impute them (e.g. np.nan_to_num), or drop the affected voxels/channels",
            )
        )


def check_option(value: Any, param: str, options: Iterable[Any]) -> Any:
    """Check that ``value`` is one of ``options``."""
    opts = list(options)
    if value not in opts:
        raise ValidationError(
            format_error(param, "one of " + ", ".join(repr(o) for o in opts), repr(value),
                         f"Use one of the listed values for {param}")
        )
    return value


def check_positive(value: Any, param: str, *, strict: bool = True, allow_array: bool = False) -> Any:
    """Check that a number (or every entry of an array, if allowed) is positive."""
    arr = np.asarray(value, dtype=float)
    if arr.ndim and not allow_array:
        raise ValidationError(format_error(param, "a single number", value))
    bad = ~np.isfinite(arr) | ((arr <= 0) if strict else (arr < 0))
    if np.any(bad):
        kind = "strictly positive" if strict else "non-negative"
        raise ValidationError(
            format_error(param, f"{kind} finite value(s)", value, f"Give {param} values {'> 0' if strict else '>= 0'}")
        )
    return value


def check_path(
    path: str | os.PathLike[str],
    param: str,
    *,
    must_exist: bool = True,
    kind: str = "any",
    hint: str | None = None,
) -> Path:
    """Check a path exists (and is a file or a folder).

    Parameters
    ----------
    path : str or path-like
        The path.
    param : str
        Parameter name for the message.
    must_exist : bool
        Require the path to exist.
    kind : {"any", "file", "dir"}
        What the path must be.
    hint : str or None
        How to fix it, if it is missing (e.g. the expected dataset-relative path).
    """
    p = Path(path).expanduser()
    if must_exist and not p.exists():
        raise MissingFileError(
            format_error(param, f"an existing {'folder' if kind == 'dir' else 'file'}", str(p),
                         hint or "Check the path and that the download finished")
        )
    if p.exists():
        if kind == "file" and not p.is_file():
            raise ValidationError(format_error(param, "a file", f"a folder {p}"))
        if kind == "dir" and not p.is_dir():
            raise ValidationError(format_error(param, "a folder", f"a file {p}"))
    return p


def check_indices(indices: Any, param: str, n: int, *, base: int = 0) -> np.ndarray:
    """Check integer indices lie in ``[base, n + base)``.

    Parameters
    ----------
    indices : array-like of int
        The indices.
    param : str
        Parameter name for the message.
    n : int
        Number of valid items.
    base : {0, 1}
        Whether the indices count from 0 (Python) or 1 (MATLAB, NSD files).

    Returns
    -------
    indices : ndarray of int64
        The indices, 0-based.
    """
    idx = np.asarray(indices)
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
        if np.issubdtype(idx.dtype, np.floating) and np.all(np.mod(idx, 1) == 0):
            idx = idx.astype(np.int64)
        else:
            raise ValidationError(format_error(param, "integer indices", idx))
    idx = idx.astype(np.int64, copy=False)
    lo, hi = base, n + base - 1
    bad = (idx < lo) | (idx > hi)
    if bad.any():
        first = idx[bad][:5].tolist()
        fix = (
            "These look 0-based; this argument counts from 1 (MATLAB/NSD convention)"
            if base == 1 and np.any(idx == 0)
            else "These look 1-based; this argument counts from 0 (Python convention)"
            if base == 0 and np.any(idx == n)
            else f"Select indices between {lo} and {hi}"
        )
        raise ValidationError(
            format_error(param, f"{base}-based indices in [{lo}, {hi}]",
                         f"{int(bad.sum())} out-of-range value(s), e.g. {first}", fix)
        )
    return idx - base


def check_same_length(param_a: str, a: Any, param_b: str, b: Any) -> int:
    """Check two arrays have the same first dimension and return it."""
    na, nb = len(a), len(b)
    if na != nb:
        raise ShapeMismatchError(
            format_error(f"{param_a}/{param_b}", "the same number of samples",
                         f"{na} and {nb}", "Pass one row per trial in both")
        )
    return na


def dataclass_from_dict(cls: Any, values: Any, section: str, *, ignore: Iterable[str] = ("name",)) -> Any:
    """Build the dataclass ``cls`` from a mapping (a recipe table or a saved config).

    Unknown keys are refused, all listed at once, so a misspelt recipe field never
    silently falls back to its default; keys in ``ignore`` (e.g. the recipe's ``name``
    of the decoder, or a nested table read separately) are skipped.

    Parameters
    ----------
    cls : dataclass type
        The config class.
    values : mapping
        Field values.
    section : str
        Where the values come from, for the message (e.g. ``"decoder"`` or ``"train"``).
    ignore : iterable of str
        Keys to skip.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    skipped = set(ignore)
    unknown = sorted(set(values) - names - skipped)
    if unknown:
        raise ValidationError(
            format_error(section, f"{cls.__name__} fields among " + ", ".join(sorted(names)), ", ".join(unknown),
                         f"Fix the spelling in the recipe's [{section}] table")
        )
    return cls(**{k: v for k, v in values.items() if k in names})
