"""Stimulus sources for the feature cache: arrays, sentence lists, NSD HDF5, image folders, text files.

Each source knows its length, the ids of its items, how to read a range of them, and a
fingerprint of its content: a SHA-256 over the decoded stimulus bytes (images as the
uint8 arrays the encoder sees, NSD rows as stored in ``imgBrick``) or over the files'
bytes (image folders), plus the ids. The fingerprint is part of the cache identity, so a
cache computed on other stimuli is never reused, even under the same ids.

Hashing file content costs one read of the stimuli; :func:`stimuli_fingerprint` skips it
when the files' stat (path, size, modification time) is the one recorded with a cache's
fingerprint, so checking a cache against unchanged files is cheap.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import ShapeMismatchError, ValidationError
from .._core.validation import check_path, describe, format_error

__all__ = ["Stimuli", "as_stimuli", "stimuli_fingerprint", "fingerprint_diff", "IMAGE_SUFFIXES",
           "FINGERPRINT_VERSION"]

#: Version of the fingerprint recipe (a cache with another version is recomputed).
FINGERPRINT_VERSION = 2
#: Stimuli read per block when hashing a file's content.
_HASH_BLOCK = 64

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")
NSD_DATASET = "imgBrick"


class Stimuli:
    """A sequence of stimuli with ids.

    Attributes
    ----------
    modality : {"image", "text"}
    ids : ndarray of shape (n_stimuli,)
        Integer or string ids (NSD: 0-based 73k indices; folders: relative paths; texts: line numbers).
    """

    modality = "image"

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def read(self, start: int, stop: int) -> Any:  # pragma: no cover - abstract
        """Items at positions ``[start, stop)``: a uint8 array (n, H, W, 3) / list of images, or a list of str."""
        raise NotImplementedError

    def fingerprint(self) -> dict[str, Any]:
        """A JSON-able description identifying the content (computed once, then memoised)."""
        memo = getattr(self, "_fingerprint_memo", None)
        if memo is None:
            memo = {"version": FINGERPRINT_VERSION, **self.cheap_identity(), **self._content()}
            self._fingerprint_memo = memo
        return dict(memo)

    def cheap_identity(self) -> dict[str, Any]:
        """The parts of the fingerprint known without reading the content: source kind, count, ids."""
        return {"source": self.source, "n": len(self), "ids_sha256": _ids_hash(self.ids)}

    def stat(self) -> dict[str, Any] | None:
        """Path, sizes and modification times of the files read (``None`` for in-memory stimuli)."""
        return None

    source = "abstract"

    def _content(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError


def _ids_or_range(ids: Any, n: int, param: str = "ids") -> np.ndarray:
    if ids is None:
        return np.arange(n, dtype=np.int64)
    arr = np.asarray(ids)
    if arr.ndim != 1 or len(arr) != n:
        raise ShapeMismatchError(format_error(param, f"one id per stimulus ({n})", arr, "Pass one id per row"))
    if len(np.unique(arr)) != len(arr):
        raise ValidationError(format_error(param, "unique ids", "repeated ids", "Embed each stimulus once; "
                                           "repeats are resolved at load time with FeatureCache.load(ids=...)"))
    return arr.astype(np.int64) if np.issubdtype(arr.dtype, np.integer) else arr.astype(str)


def _ids_hash(ids: np.ndarray) -> str:
    return hashlib.sha256("\n".join(map(str, ids.tolist())).encode()).hexdigest()


class ArrayStimuli(Stimuli):
    """Images already in memory: uint8 (n, H, W, 3)."""

    def __init__(self, images: np.ndarray, ids: Any = None) -> None:
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValidationError(format_error("stimuli", "uint8 images of shape (n, height, width, 3)", images,
                                               "Convert float images with (x * 255).round().astype(np.uint8)"))
        super().__init__(_ids_or_range(ids, len(images)))
        self.images = images

    def read(self, start: int, stop: int) -> Any:
        return self.images[start:stop]

    source = "array"

    def _content(self) -> dict[str, Any]:
        h = hashlib.sha256(np.ascontiguousarray(self.images).data)
        return {"shape": list(self.images.shape), "content_sha256": h.hexdigest()}


class TextStimuli(Stimuli):
    """Sentences."""

    modality = "text"

    def __init__(self, texts: Sequence[str], ids: Any = None, origin: str = "list") -> None:
        super().__init__(_ids_or_range(ids, len(texts)))
        self.texts = list(texts)
        self.origin = origin

    def read(self, start: int, stop: int) -> Any:
        return self.texts[start:stop]

    source = "text"

    def _content(self) -> dict[str, Any]:
        h = hashlib.sha256("\x1e".join(self.texts).encode("utf-8")).hexdigest()
        return {"origin": self.origin, "content_sha256": h}


class NSDStimuli(Stimuli):
    """``nsd_stimuli.hdf5`` (``imgBrick``, 73,000 x 425 x 425 x 3 uint8); ids are 0-based rows."""

    def __init__(self, path: Path, ids: Any = None) -> None:
        from ..io.hdf5 import get_dataset, open_hdf5

        self.path = path
        with open_hdf5(path, hint="nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5") as f:
            ds = get_dataset(f, NSD_DATASET, ndim=4)
            self.shape = tuple(int(s) for s in ds.shape)
        if ids is None:
            rows = np.arange(self.shape[0], dtype=np.int64)
        else:
            from .._core.validation import check_indices

            rows = check_indices(ids, "ids", self.shape[0])
            if len(np.unique(rows)) != len(rows):
                raise ValidationError(format_error("ids", "unique 0-based NSD ids", "repeated ids",
                                                   "Pass np.unique(ids); repeats are resolved at load time"))
        super().__init__(rows)
        self._file: Any = None

    def read(self, start: int, stop: int) -> Any:
        import h5py

        from ..io.hdf5 import read_rows

        if self._file is None:
            self._file = h5py.File(self.path, "r")
        return read_rows(self._file[NSD_DATASET], self.ids[start:stop])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    source = "nsd-hdf5"

    def stat(self) -> dict[str, Any] | None:
        st = self.path.stat()
        return {"path": str(self.path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def _content(self) -> dict[str, Any]:
        """SHA-256 of the embedded rows' uint8 bytes, in id order (one read of those rows)."""
        h = hashlib.sha256()
        try:
            for start in range(0, len(self), _HASH_BLOCK):
                h.update(np.ascontiguousarray(self.read(start, min(start + _HASH_BLOCK, len(self)))).data)
        finally:
            self.close()
        return {"item_shape": list(self.shape[1:]), "content_sha256": h.hexdigest()}


class FolderStimuli(Stimuli):
    """Image files under a folder (recursively, sorted); ids are the relative POSIX paths."""

    def __init__(self, folder: Path, ids: Any = None) -> None:
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                       and not p.name.startswith("."))
        if not files:
            raise ValidationError(format_error("stimuli", f"image files ({', '.join(IMAGE_SUFFIXES)})",
                                               f"none under {folder}", "Point --stimuli at the image folder"))
        self.folder = folder
        self.files = files
        rel = np.array([p.relative_to(folder).as_posix() for p in files])
        if ids is not None:
            wanted = np.asarray(ids).astype(str)
            index = {r: i for i, r in enumerate(rel)}
            missing = [w for w in wanted if w not in index]
            if missing:
                raise ValidationError(format_error("ids", f"relative paths of images in {folder}",
                                                   f"{len(missing)} unknown, e.g. {missing[:3]}"))
            self.files = [files[index[w]] for w in wanted]
            rel = wanted
        super().__init__(_ids_or_range(rel, len(rel)))

    def read(self, start: int, stop: int) -> Any:
        from PIL import Image

        out = []
        for p in self.files[start:stop]:
            with Image.open(p) as im:
                out.append(np.asarray(im.convert("RGB")))
        return out

    source = "image-folder"

    def stat(self) -> dict[str, Any] | None:
        h = hashlib.sha256()
        for rel, p in zip(self.ids.tolist(), self.files):
            st = p.stat()
            h.update(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        return {"path": str(self.folder.resolve()), "files_sha256": h.hexdigest()}

    def _content(self) -> dict[str, Any]:
        """SHA-256 over each file's relative path and bytes (file checksums; one read of the files)."""
        h = hashlib.sha256()
        for rel, p in zip(self.ids.tolist(), self.files):
            from .._core.files import sha256_file

            h.update(f"{rel}\t{sha256_file(p)}\n".encode())
        return {"content_sha256": h.hexdigest()}


def as_stimuli(source: Any, ids: Any = None) -> Stimuli:
    """Wrap ``source`` into a :class:`Stimuli`.

    Parameters
    ----------
    source : ndarray, list of str, list of images, or path-like
        A uint8 image array (n, H, W, 3); a list of sentences; a list of PIL images / uint8
        arrays; a path to an NSD ``nsd_stimuli.hdf5``; an image folder; a ``.txt`` file of
        sentences, one per line (empty lines skipped).
    ids : array-like or None
        Ids of the stimuli. For NSD, 0-based rows of ``imgBrick`` to embed (default all);
        for a folder, the relative paths to embed; otherwise one label per stimulus
        (default ``0..n-1``).
    """
    if isinstance(source, Stimuli):
        return source
    if isinstance(source, np.ndarray):
        return ArrayStimuli(source, ids)
    if isinstance(source, (list, tuple)):
        if source and all(isinstance(s, str) for s in source):
            return TextStimuli(list(source), ids)
        if source:
            from ._base import as_image_list

            items = as_image_list(list(source))
            return _ListImages(items, ids)
        raise ValidationError(format_error("stimuli", "a non-empty list", source))
    if isinstance(source, (str, os.PathLike)):
        path = check_path(source, "stimuli")
        if path.is_dir():
            return FolderStimuli(path, ids)
        if path.suffix.lower() in (".hdf5", ".h5"):
            return NSDStimuli(path, ids)
        if path.suffix.lower() == ".txt":
            lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
            return TextStimuli([ln for ln in lines if ln], ids, origin=f"text-file:{path.name}")
        raise ValidationError(format_error("stimuli", "an nsd_stimuli.hdf5, an image folder or a .txt file",
                                           str(path), "Pass one of those"))
    raise ValidationError(format_error("stimuli", "an image array, a list of sentences or a path", describe(source)))


class _ListImages(Stimuli):
    def __init__(self, items: list[Any], ids: Any) -> None:
        super().__init__(_ids_or_range(ids, len(items)))
        self.items = items

    def read(self, start: int, stop: int) -> Any:
        return self.items[start:stop]

    source = "image-list"

    def _content(self) -> dict[str, Any]:
        h = hashlib.sha256()
        for im in self.items:
            arr = np.asarray(im.convert("RGB") if hasattr(im, "convert") else im)
            h.update(f"{arr.shape}".encode())
            h.update(np.ascontiguousarray(arr).data)
        return {"content_sha256": h.hexdigest()}


def stimuli_fingerprint(stimuli: Any, ids: Any = None, *, known: dict[str, Any] | None = None) -> dict[str, Any]:
    """The content fingerprint of ``stimuli`` (see the module docstring).

    Parameters
    ----------
    stimuli : Stimuli, ndarray, list or path-like
        Anything :func:`as_stimuli` takes.
    ids : array-like or None
        Ids, as for :func:`as_stimuli`.
    known : dict or None
        A feature cache's manifest (``{"stimuli": ..., "stimuli_stat": ...}``). When its
        recorded stat equals the files' current stat and the ids agree, its fingerprint is
        returned without reading the content.

    Returns
    -------
    fingerprint : dict
        ``version``, ``source``, ``n``, ``ids_sha256`` and ``content_sha256`` (and shapes).
    """
    stim = as_stimuli(stimuli, ids)
    if known:
        old = known.get("stimuli") or {}
        stat = stim.stat()
        cheap = stim.cheap_identity()
        if (stat is not None and known.get("stimuli_stat") == stat and old.get("version") == FINGERPRINT_VERSION
                and all(old.get(k) == v for k, v in cheap.items())):
            return dict(old)
    return stim.fingerprint()


def fingerprint_diff(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints, in words (empty when they agree)."""
    old = old or {}
    if old.get("version") != new.get("version"):
        return [f"fingerprint recipe (version {old.get('version')!r} vs {new.get('version')!r}: computed by an older "
                "neurodecode, which did not hash the content)"]
    out = []
    for k in sorted(set(old) | set(new)):
        if old.get(k) != new.get(k):
            a, b = old.get(k), new.get(k)
            if isinstance(a, str) and len(a) == 64 and isinstance(b, str):
                a, b = a[:12] + "...", b[:12] + "..."
            what = {"content_sha256": "stimulus content", "ids_sha256": "stimulus ids"}.get(k, k)
            out.append(f"{what} ({a!r} vs {b!r})")
    return out
