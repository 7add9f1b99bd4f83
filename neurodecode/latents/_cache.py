"""A checksummed, resumable, shardable cache of latent features.

Layout of a cache folder::

    OUT/manifest.json                      key, stimuli fingerprint, ids, shape, dtype, shards + sha256
    OUT/shard-00000-p0.safetensors         "features" (n, *shape) and "positions" (n,) for one shard
    OUT/shard-00000.json                   that shard's record (written after the shard: marks it done)

Shard ``k`` holds stimuli ``[k * shard_size, (k + 1) * shard_size)``; under a launcher
(``torchrun`` / ``accelerate launch``) process ``r`` computes shards ``r, r + W, ...`` and
puts its rank in the file name; the process that finishes last merges the records into
``manifest.json`` (no recomputation; :meth:`FeatureCache.load` merges too if needed).

Guarantees: every file is written atomically; a killed run keeps its finished shards
and a re-run computes only the rest; a cache whose key (space, weights, preprocessing,
library versions, dtype) or stimuli differ is never reused (it raises, naming the
differences, unless ``overwrite=True``, which recomputes and logs why); every shard's
SHA-256 is checked on load.

The stimuli are identified by content (:func:`~neurodecode.latents._stimuli.stimuli_fingerprint`:
a SHA-256 of the decoded stimulus bytes or of the files, plus the ids), never by ids alone:
two NSD trees with the same ids but other images give two different fingerprints. The
manifest also records the files' stat, so checking a cache against unchanged files
(:meth:`FeatureCache.matches_stimuli`) reads nothing but the manifest.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import DataIntegrityError, MetadataMismatchError, MissingFileError, ValidationError
from .._core.files import sha256_file, write_json
from .._core.logging import logger, progress
from .._core.validation import check_option, format_error
from ._base import LatentSpace, _jsonable, key_hash
from ._sharding import process_index, shards_for_process
from ._stimuli import as_stimuli, fingerprint_diff, stimuli_fingerprint

__all__ = ["FeatureCache", "embed_to_cache", "MANIFEST_NAME"]

MANIFEST_NAME = "manifest.json"
CACHE_FORMAT = "neurodecode-feature-cache"
CACHE_VERSION = 2
_STORE_DTYPES = ("float16", "float32")


def _shard_file(index: int, rank: int) -> str:
    return f"shard-{index:05d}-p{rank}.safetensors"


def _record_file(index: int) -> str:
    return f"shard-{index:05d}.json"


class FeatureCache:
    """A feature cache folder written by :func:`embed_to_cache`.

    Parameters
    ----------
    path : path-like
        The cache folder.

    Attributes
    ----------
    key : dict
        The latent space's cache key the features were computed with.
    ids : ndarray of shape (n_stimuli,)
        Stimulus ids, in storage order.
    shape : tuple of int
        Shape of one target.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._manifest: dict[str, Any] | None = None

    # ---------------------------------------------------------------- metadata
    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest (merged from the shard records when a parallel run left it unmerged)."""
        if self._manifest is None:
            mpath = self.path / MANIFEST_NAME
            if not mpath.is_file():
                raise MissingFileError(format_error("path", f"a feature cache folder with {MANIFEST_NAME}",
                                                    str(self.path), "Fill it with `neurodecode embed` first"))
            try:
                man = json.loads(mpath.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise DataIntegrityError(format_error("manifest", "valid JSON", str(mpath),
                                                      "Delete the folder and embed again")) from exc
            if man.get("format") != CACHE_FORMAT:
                raise DataIntegrityError(format_error("manifest", f"a {CACHE_FORMAT} manifest", str(mpath)))
            if not man.get("complete"):
                man = _finalize(self.path, man)
            self._manifest = man
        return self._manifest

    @property
    def key(self) -> dict[str, Any]:
        return dict(self.manifest["key"])

    @property
    def key_hash(self) -> str:
        return str(self.manifest["key_hash"])

    @property
    def ids(self) -> np.ndarray:
        ids = self.manifest["ids"]
        return np.asarray(ids, dtype=np.int64 if self.manifest["ids_kind"] == "int" else str)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.manifest["shape"])

    @property
    def complete(self) -> bool:
        try:
            return bool(self.manifest.get("complete"))
        except DataIntegrityError:
            return False

    def __len__(self) -> int:
        return int(self.manifest["n"])

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.path)!r})"

    def matches(self, space_or_key: LatentSpace | dict[str, Any]) -> bool:
        """Whether the cache was computed with this space (same key hash)."""
        key = space_or_key.cache_key() if isinstance(space_or_key, LatentSpace) else space_or_key
        return key_hash(key) == self.key_hash

    @property
    def stimuli(self) -> dict[str, Any]:
        """The content fingerprint of the stimuli the features were computed from."""
        return dict(self.manifest.get("stimuli") or {})

    def stimuli_differences(self, stimuli: Any, ids: Any = None) -> list[str]:
        """What differs between the cache's stimuli and ``stimuli`` (empty list: the same content and ids).

        Cheap when the files are unchanged since the cache recorded them (same path, size and
        modification time): only the manifest is read. Otherwise the content is hashed once.
        """
        from ._stimuli import as_stimuli

        man = self.manifest
        stim = as_stimuli(stimuli, ids)
        fresh = stimuli_fingerprint(stim, known=man)
        diffs = fingerprint_diff(man.get("stimuli"), fresh)
        stat = stim.stat()
        if not diffs and stat is not None and man.get("stimuli_stat") != stat:
            _refresh_stat(self.path, man, stat)  # same content under a new stat: remember it (cheap next time)
        return diffs

    def matches_stimuli(self, stimuli: Any, ids: Any = None) -> bool:
        """Whether the cache holds features of exactly these stimuli (content and ids); logs why not.

        Parameters
        ----------
        stimuli : ndarray, list or path-like
            What :func:`embed_to_cache` takes (an ``nsd_stimuli.hdf5``, an image folder...).
        ids : array-like or None
            The ids to embed (NSD: 0-based rows).

        Returns
        -------
        bool
            False when the cache is incomplete or was computed from other stimuli (the reason is
            logged as a warning: re-embed with ``embed_to_cache(..., overwrite=True)``).
        """
        if not self.complete:
            logger.warning("feature cache at %s is incomplete: it will be computed", self.path)
            return False
        diffs = self.stimuli_differences(stimuli, ids)
        if diffs:
            logger.warning("feature cache at %s was computed from other stimuli (%s): it will be recomputed",
                           self.path, "; ".join(diffs[:3]))
            return False
        return True

    # ------------------------------------------------------------------- read
    def verify(self) -> None:
        """Check every shard's SHA-256 against the manifest (raises :class:`DataIntegrityError`)."""
        for rec in self.manifest["shards"]:
            _check_shard(self.path, rec)

    def load(self, ids: Any = None, *, key: LatentSpace | dict[str, Any] | None = None, verify: bool = True,
             dtype: str = "float32") -> np.ndarray:
        """Read features, optionally for given stimulus ids (in that order, repeats allowed).

        Parameters
        ----------
        ids : array-like or None
            Stimulus ids (e.g. a :class:`~neurodecode.data.Trials`' stimulus ids); ``None`` for all,
            in storage order.
        key : LatentSpace or dict or None
            If given, the cache must have been computed with this space / key
            (raises :class:`MetadataMismatchError` otherwise).
        verify : bool
            Check the SHA-256 of every shard read.
        dtype : {"float32", "float16"}
            Returned dtype.

        Returns
        -------
        features : ndarray of shape (n_ids, *shape)
        """
        check_option(dtype, "dtype", _STORE_DTYPES)
        man = self.manifest
        if key is not None:
            fresh = key.cache_key() if isinstance(key, LatentSpace) else key
            if key_hash(fresh) != man["key_hash"]:
                raise MetadataMismatchError(format_error(
                    "key", "features computed with the requested latent space", f"a cache at {self.path} with "
                    f"differences in {_key_diff(man['key'], _jsonable(fresh))}",
                    "Recompute with `neurodecode embed` into another folder (or with --overwrite)"))
        n = int(man["n"])
        if ids is None:
            positions = np.arange(n)
        else:
            index = {v: i for i, v in enumerate(man["ids"])}
            wanted = np.asarray(ids)
            keys = wanted.astype(np.int64).tolist() if man["ids_kind"] == "int" else wanted.astype(str).tolist()
            missing = [k for k in keys if k not in index]
            if missing:
                raise ValidationError(format_error("ids", f"ids present in the cache at {self.path}",
                                                   f"{len(set(missing))} unknown id(s), e.g. {missing[:3]}",
                                                   "Embed those stimuli too (NSD ids are 0-based)"))
            positions = np.array([index[k] for k in keys], dtype=np.int64)
        out = np.empty((len(positions), *man["shape"]), dtype=dtype)
        size = int(man["shard_size"])
        shard_of = positions // size
        for rec in man["shards"]:
            sel = np.nonzero(shard_of == rec["index"])[0]
            if not len(sel):
                continue
            feats = _read_shard(self.path, rec, verify)
            out[sel] = feats[positions[sel] - rec["start"]]
        return out


def _read_shard(folder: Path, rec: dict[str, Any], verify: bool) -> np.ndarray:
    from safetensors.numpy import load_file

    path = folder / rec["file"]
    if verify:
        _check_shard(folder, rec)
    elif not path.is_file():
        raise MissingFileError(format_error("shard", "an existing shard file", str(path),
                                            "Re-run `neurodecode embed` on this folder to recompute it"))
    return load_file(str(path))["features"]


def _check_shard(folder: Path, rec: dict[str, Any]) -> None:
    path = folder / rec["file"]
    if not path.is_file():
        raise MissingFileError(format_error("shard", "an existing shard file", str(path),
                                            "Re-run `neurodecode embed` on this folder to recompute it"))
    digest = sha256_file(path)
    if digest != rec["sha256"]:
        raise DataIntegrityError(format_error(
            "shard", f"SHA-256 {rec['sha256'][:16]}... for {rec['file']}", f"{digest[:16]}... (corrupted file)",
            "Re-run `neurodecode embed` with the same arguments: corrupted shards are recomputed"))


def _key_diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    diffs = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            diffs += _key_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            diffs.append(f"{prefix}{k} ({va!r} vs {vb!r})"[:160])
    return diffs


def _records(folder: Path, key_hash_: str) -> dict[int, dict[str, Any]]:
    out = {}
    for p in folder.glob("shard-*.json"):
        try:
            rec = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, OSError):
            continue
        if rec.get("key_hash") == key_hash_ and (folder / rec.get("file", "")).is_file():
            out[int(rec["index"])] = rec
    return out


def _refresh_stat(folder: Path, man: dict[str, Any], stat: dict[str, Any]) -> None:
    new = dict(man)
    new["stimuli_stat"] = stat
    try:
        write_json(folder / MANIFEST_NAME, new)
        man["stimuli_stat"] = stat
    except OSError as exc:  # a read-only cache still answers, it only stays slow to check
        logger.debug("could not record the stimuli stat in %s: %s", folder, exc)


def _finalize(folder: Path, man: dict[str, Any]) -> dict[str, Any]:
    recs = _records(folder, man["key_hash"])
    missing = [i for i in range(man["n_shards"]) if i not in recs]
    if missing:
        raise DataIntegrityError(format_error(
            "cache", f"{man['n_shards']} finished shards in {folder}", f"{len(missing)} missing (e.g. {missing[:5]})",
            "The run was interrupted or other processes are still running; re-run `neurodecode embed` with the "
            "same arguments to finish it"))
    man = dict(man)
    man["shards"] = [{k: recs[i][k] for k in ("index", "file", "start", "stop", "sha256", "rank")}
                     for i in range(man["n_shards"])]
    man["complete"] = True
    write_json(folder / MANIFEST_NAME, man)
    return man


def embed_to_cache(space: LatentSpace, stimuli: Any, out_dir: str | os.PathLike[str], *, ids: Any = None,
                   batch_size: int | None = None, dtype: str = "float16", shard_size: int = 1024,
                   overwrite: bool = False, verify: bool = True, verbose: Any = None) -> FeatureCache:
    """Compute the features of ``stimuli`` in ``space`` and store them in ``out_dir``.

    Re-running with the same arguments reuses finished shards (resume); a folder holding
    features of another space, weights, preprocessing, library version, dtype or other
    stimuli raises :class:`MetadataMismatchError` unless ``overwrite=True``. Under
    ``torchrun`` / ``accelerate launch`` each process computes its share of shards.

    Parameters
    ----------
    space : LatentSpace
        From :func:`~neurodecode.latents.get_space`.
    stimuli : ndarray, list of str, or path-like
        Images (uint8, (n, H, W, 3)), sentences, an NSD ``nsd_stimuli.hdf5``, an image
        folder (THINGS) or a ``.txt`` file of sentences (see :func:`as_stimuli`).
    out_dir : path-like
        The cache folder.
    ids : array-like or None
        Stimulus ids (NSD: 0-based rows to embed; folders: relative paths; others: labels).
    batch_size : int or None
        Forward batch size (default: the space's).
    dtype : {"float16", "float32"}
        Storage dtype.
    shard_size : int
        Stimuli per shard (an existing cache keeps its own).
    overwrite : bool
        Replace a cache computed with another key or other stimuli.
    verify : bool
        Check the SHA-256 of finished shards before reusing them (corrupted ones are recomputed).
    verbose : bool or str or None
        Progress and logging level.

    Returns
    -------
    cache : FeatureCache
        Complete unless other processes of a parallel run are still working.
    """
    check_option(dtype, "dtype", _STORE_DTYPES)
    if int(shard_size) < 1:
        raise ValidationError(format_error("shard_size", "a positive integer", shard_size))
    stim = as_stimuli(stimuli, ids)
    if stim.modality != space.modality:
        raise ValidationError(format_error("stimuli", f"{space.modality} stimuli for the space {space.name!r}",
                                           f"{stim.modality} stimuli", "Pick a space of the stimuli's modality"))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from .._core.files import clean_orphans

    clean_orphans(out)
    key = _jsonable(space.cache_key())
    khash = key_hash(key)
    mpath = out / MANIFEST_NAME
    old: dict[str, Any] | None = None
    if mpath.is_file():
        try:
            old = json.loads(mpath.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            logger.warning("feature cache manifest %s is unreadable: the cache is recomputed", mpath)
            _clear(out)
    fingerprint = _jsonable(stimuli_fingerprint(stim, known=old))
    n = len(stim)
    ids_arr = stim.ids
    header = {
        "format": CACHE_FORMAT, "version": CACHE_VERSION, "key": key, "key_hash": khash, "stimuli": fingerprint,
        "n": n, "shape": list(space.shape), "dtype": dtype, "shard_size": int(shard_size),
        "n_shards": (n + int(shard_size) - 1) // int(shard_size),
        "ids_kind": "int" if np.issubdtype(ids_arr.dtype, np.integer) else "str", "ids": ids_arr.tolist(),
        "stimuli_stat": stim.stat(), "shards": [], "complete": False,
    }
    if old is not None:
        diffs = _identity_diff(old, header)
        if diffs and not overwrite:
            raise MetadataMismatchError(format_error(
                "out_dir", "an empty folder or a cache of the same space and stimuli",
                f"a cache at {out} that differs in {'; '.join(diffs[:6])}",
                "Use another --out folder, or pass overwrite=True (--overwrite) to recompute it here"))
        if diffs:
            logger.warning("overwriting the feature cache at %s (%s)", out, "; ".join(diffs[:3]))
            _clear(out)
        else:
            header["shard_size"], header["n_shards"] = old["shard_size"], old["n_shards"]
            if old.get("complete"):
                if old.get("stimuli_stat") != header["stimuli_stat"] and header["stimuli_stat"] is not None:
                    _refresh_stat(out, old, header["stimuli_stat"])
                cache = FeatureCache(out)
                if verify:
                    try:
                        cache.verify()
                        logger.info("feature cache hit at %s (same space key and stimulus content)", out)
                        return cache
                    except (DataIntegrityError, MissingFileError) as exc:
                        logger.warning("%s", exc)
                else:
                    return cache
    elif any(out.glob("shard-*")) and old is None:
        if not overwrite:
            raise MetadataMismatchError(format_error("out_dir", "a complete cache or an empty folder",
                                                     f"shard files without {MANIFEST_NAME} in {out}",
                                                     "Use another folder, or pass overwrite=True"))
        _clear(out)
    rank, world = process_index()
    write_json(mpath, header)  # identical in every process: atomic replace is safe
    size = int(header["shard_size"])
    done = _records(out, khash)
    todo = []
    for k in shards_for_process(header["n_shards"], rank, world):
        rec = done.get(k)
        if rec is not None and verify:
            try:
                _check_shard(out, rec)
            except (DataIntegrityError, MissingFileError) as exc:
                logger.warning("recomputing shard %d: %s", k, exc)
                rec = None
        if rec is None:
            todo.append(k)
    logger.info("embed %s: %d stimuli, %d shards (%d to compute here, process %d of %d)",
                space.name, n, header["n_shards"], len(todo), rank, world)
    bar = progress(total=sum(min(size, n - k * size) for k in todo), desc=f"embed {space.name}",
                   unit=space.modality == "image" and "img" or "text", verbose=verbose)
    try:
        for k in todo:
            start, stop = k * size, min((k + 1) * size, n)
            feats = _compute(space, stim, start, stop, batch_size, bar)
            _write_shard(out, k, rank, start, stop, feats.astype(dtype), khash)
    finally:
        bar.close()
        close = getattr(stim, "close", None)
        if close is not None:
            close()
    cache = FeatureCache(out)
    recs = _records(out, khash)
    if len(recs) == header["n_shards"]:
        _finalize(out, header)
    return cache


def _identity_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    diffs = []
    if old.get("key_hash") != new["key_hash"]:
        diffs += [f"key {d}" for d in _key_diff(old.get("key", {}), new["key"])] or ["key"]
    if old.get("stimuli") != new["stimuli"]:
        diffs += [f"stimuli {d}" for d in fingerprint_diff(old.get("stimuli"), new["stimuli"])] or ["stimuli"]
    for field in ("dtype", "n", "ids"):
        if old.get(field) != new[field]:
            diffs.append(field if field == "ids" else f"{field} ({old.get(field)!r} vs {new[field]!r})")
    return diffs


def _clear(out: Path) -> None:
    for p in list(out.glob("shard-*.safetensors")) + list(out.glob("shard-*.json")) + [out / MANIFEST_NAME]:
        p.unlink(missing_ok=True)


def _compute(space: LatentSpace, stim: Any, start: int, stop: int, batch_size: int | None, bar: Any) -> np.ndarray:
    bs = int(batch_size or space.batch_size)
    parts = []
    for s in range(start, stop, bs):
        items = stim.read(s, min(s + bs, stop))
        parts.append(space.encode(items, batch_size=bs))
        bar.update(len(items))
    return np.concatenate(parts, axis=0)


def _write_shard(out: Path, index: int, rank: int, start: int, stop: int, feats: np.ndarray, khash: str) -> None:
    from safetensors.numpy import save_file

    from .._core.files import atomic_path

    name = _shard_file(index, rank)
    with atomic_path(out / name, suffix=".safetensors") as tmp:
        save_file({"features": np.ascontiguousarray(feats), "positions": np.arange(start, stop, dtype=np.int64)},
                  str(tmp), metadata={"key_hash": khash})
    rec = {"index": index, "file": name, "start": start, "stop": stop, "sha256": sha256_file(out / name),
           "rank": rank, "key_hash": khash}
    write_json(out / _record_file(index), rec)
