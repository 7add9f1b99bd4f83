"""MATLAB ``.mat`` files: v5 through scipy, v7.3 (HDF5) through h5py, one entry point.

:func:`load_mat` detects the version from the header and returns plain Python/NumPy
objects in MATLAB's axis order for both versions: numeric arrays keep MATLAB's shape
(h5py shows v7.3 arrays transposed; we transpose back), char arrays become ``str``,
structs become ``dict`` (struct arrays: lists of dicts), cell arrays become lists.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import DataIntegrityError, MissingFileError
from .._core.validation import format_error

__all__ = ["mat_version", "load_mat", "save_mat_v73", "MAT73_HEADER_SIZE"]

MAT73_HEADER_SIZE = 512


def mat_version(path: str | os.PathLike[str]) -> int:
    """MATLAB file version from the header: 5 (v5/v7, scipy) or 73 (v7.3, HDF5)."""
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(format_error("path", "an existing .mat file", str(p), "Check the path"))
    with open(p, "rb") as fh:
        head = fh.read(128)
    if head.startswith(b"MATLAB 7.3"):
        return 73
    if head.startswith(b"MATLAB 5.0") or (len(head) >= 128 and head[:6] == b"MATLAB"):
        return 5
    if head[:8] == b"\x89HDF\r\n\x1a\n":
        return 73
    lowered = head.lower()
    what = ("an HTML page (an error or login page saved instead of the data)"
            if b"<html" in lowered or b"<!doctype" in lowered else "a file without a MATLAB header")
    raise DataIntegrityError(format_error("path", "a MATLAB .mat file", f"{what} at {p}",
                                          "Download the file again and check its size"))


def load_mat(
    path: str | os.PathLike[str], keys: list[str] | tuple[str, ...] | None = None, *, hint: str | None = None,
) -> dict[str, Any]:
    """Read variables from a MATLAB file (v5 or v7.3).

    Parameters
    ----------
    path : path-like
        The ``.mat`` file.
    keys : sequence of str or None
        Variables to read (all if None); a missing one raises, listing the variables present.
    hint : str or None
        Added to the missing-file message.

    Returns
    -------
    variables : dict
        Variable name to value (numeric arrays in MATLAB axis order).
    """
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(format_error("path", "an existing .mat file", str(p), hint or "Check the path"))
    version = mat_version(p)
    if version == 5:
        import scipy.io

        try:
            raw = scipy.io.loadmat(str(p), squeeze_me=False, struct_as_record=True)
        except Exception as exc:  # scipy raises ValueError/TypeError/OSError on corrupt files
            raise DataIntegrityError(
                format_error("path", "a readable MATLAB v5 file", f"{p} ({type(exc).__name__}: {exc})",
                             "The file is truncated or corrupted; download it again")
            ) from exc
        present = sorted(k for k in raw if not k.startswith("__"))
        wanted = present if keys is None else list(keys)
        _check_keys(p, wanted, present)
        return {k: _from_v5(raw[k]) for k in wanted}
    from .hdf5 import open_hdf5

    with open_hdf5(p) as f:
        present = sorted(k for k in f.keys() if not k.startswith("#"))
        wanted = present if keys is None else list(keys)
        _check_keys(p, wanted, present)
        return {k: _from_v73(f, f[k]) for k in wanted}


def _check_keys(p: Path, wanted: list[str], present: list[str]) -> None:
    missing = [k for k in wanted if k not in present]
    if missing:
        raise DataIntegrityError(
            format_error("keys", f"variable(s) {missing} in {p}", f"variables: {', '.join(present) or 'none'}",
                         "Check that this is the right file or version")
        )


def _from_v5(value: Any) -> Any:
    """Convert scipy.io.loadmat output (struct_as_record=True, squeeze_me=False) to plain objects."""
    if isinstance(value, np.ndarray):
        if value.dtype.names:  # struct array
            items = [{name: _from_v5(rec[name]) for name in value.dtype.names} for rec in value.ravel(order="F")]
            return items[0] if value.size == 1 else items
        if value.dtype.kind == "U":
            return "".join(value.ravel().tolist()) if value.size else ""
        if value.dtype == object:
            return [_from_v5(v) for v in value.ravel(order="F")]
    return value


def _decode_chars(arr: np.ndarray) -> str:
    return "".join(chr(c) for c in np.asarray(arr).ravel(order="F") if c)


def _from_v73(f: Any, obj: Any) -> Any:
    import h5py

    if isinstance(obj, h5py.Group):
        cls = obj.attrs.get("MATLAB_class", b"struct")
        cls = cls.decode() if isinstance(cls, bytes) else str(cls)
        fields = [k for k in obj.keys() if not k.startswith("#")]
        values = {k: obj[k] for k in fields}
        # A struct array is stored as a group whose fields are arrays of references.
        ref_fields = {k: v for k, v in values.items()
                      if isinstance(v, h5py.Dataset) and v.dtype == h5py.ref_dtype}
        if ref_fields and len(ref_fields) == len(values):
            n = max(v.size for v in ref_fields.values())
            if n > 1 or any(v.size == 1 for v in ref_fields.values()):
                out = []
                for i in range(n):
                    out.append({k: _from_v73(f, f[v[()].ravel(order="F")[i]]) for k, v in ref_fields.items()})
                return out[0] if n == 1 else out
        return {k: _from_v73(f, v) for k, v in values.items()}
    # dataset
    cls = obj.attrs.get("MATLAB_class", b"")
    cls = cls.decode() if isinstance(cls, bytes) else str(cls)
    if obj.attrs.get("MATLAB_empty", 0):
        return np.zeros((0, 0))
    data = obj[()]
    if obj.dtype == h5py.ref_dtype:
        arr = np.asarray(data).T
        return [_from_v73(f, f[r]) for r in arr.ravel(order="F")]
    if cls == "char":
        return _decode_chars(np.asarray(data).T)
    arr = np.asarray(data)
    return arr.T if arr.ndim >= 2 else arr


def save_mat_v73(path: str | os.PathLike[str], variables: dict[str, Any]) -> Path:
    """Atomically write a MATLAB v7.3 file (HDF5 with the 512-byte MATLAB header) with h5py.

    Supported values: numeric ndarrays (written transposed, as MATLAB does), object ndarrays (cell arrays),
    ``str`` (char), ``dict`` (struct), and ``list`` of dicts with the same keys (struct array,
    stored as reference arrays under ``#refs#``, the layout MATLAB writes).
    """
    import h5py

    from .._core.files import atomic_path

    target = Path(path)
    with atomic_path(target, suffix=".mat") as tmp:
        with h5py.File(tmp, "w", userblock_size=MAT73_HEADER_SIZE) as f:
            refs = f.create_group("#refs#")
            counter = [0]

            def put(group: Any, name: str, value: Any) -> Any:
                if isinstance(value, dict):
                    g = group.create_group(name)
                    g.attrs["MATLAB_class"] = np.bytes_("struct")
                    for k, v in value.items():
                        put(g, k, v)
                    return g
                if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                    g = group.create_group(name)
                    g.attrs["MATLAB_class"] = np.bytes_("struct")
                    for k in value[0]:
                        ref_arr = np.empty((len(value), 1), dtype=h5py.ref_dtype)
                        for i, item in enumerate(value):
                            counter[0] += 1
                            ds = put(refs, f"r{counter[0]}", item[k])
                            ref_arr[i, 0] = ds.ref
                        g.create_dataset(k, data=ref_arr)
                    return g
                if isinstance(value, np.ndarray) and value.dtype == object:  # cell array
                    cell = np.empty(value.shape[::-1], dtype=h5py.ref_dtype)  # HDF5 holds the transpose
                    for i, item in enumerate(value.ravel(order="F")):
                        counter[0] += 1
                        cell.flat[i] = put(refs, f"c{counter[0]}", item).ref
                    ds = group.create_dataset(name, data=cell)
                    ds.attrs["MATLAB_class"] = np.bytes_("cell")
                    return ds
                if isinstance(value, str):
                    codes = np.array([ord(c) for c in value], dtype=np.uint16).reshape(-1, 1)
                    if codes.size == 0:
                        ds = group.create_dataset(name, data=np.zeros(2, np.uint64))
                        ds.attrs["MATLAB_empty"] = np.uint8(1)
                    else:
                        ds = group.create_dataset(name, data=codes)
                    ds.attrs["MATLAB_class"] = np.bytes_("char")
                    return ds
                arr = np.asarray(value)
                if arr.size == 0:
                    ds = group.create_dataset(name, data=np.zeros(2, np.uint64))
                    ds.attrs["MATLAB_empty"] = np.uint8(1)
                    ds.attrs["MATLAB_class"] = np.bytes_("double")
                    return ds
                if arr.ndim < 2:
                    arr = arr.reshape(1, -1)
                ds = group.create_dataset(name, data=arr.T)
                kind = {"f": "double" if arr.dtype == np.float64 else "single", "b": "logical"}.get(
                    arr.dtype.kind, str(arr.dtype))
                ds.attrs["MATLAB_class"] = np.bytes_(kind)
                return ds

            for key, val in variables.items():
                put(f, key, val)
        header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created by: neurodecode.testing HDF5 schema 1.00 ."
        header = header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"
        with open(tmp, "r+b") as fh:
            fh.write(header.ljust(MAT73_HEADER_SIZE, b"\x00"))
    return target
