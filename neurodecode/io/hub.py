"""Resolve a local folder or a Hugging Face Hub id to local files, honouring offline mode.

One module decides where weights come from, for every model, latent space and generator:

- a local folder is used as it is (never the network);
- a hub id is looked up in the local hub cache (Hugging Face's layout:
  ``models--org--name/snapshots/<commit>/...`` with ``refs/<revision>`` holding the commit)
  and the missing files are downloaded only when allowed.

Exact file lists
    Every component declares the files it reads as a tuple of *file groups*; a group is a
    tuple of alternatives, in order of preference (e.g. the fp16 variant, the full-precision
    safetensors, the pickled ``.bin``). A folder or cache is complete when every group has
    one alternative present: complete caches written by diffusers' ``from_pretrained`` or
    ``hf download`` are accepted whichever alternative they hold (fp16-variant only,
    fp32 only, ``.bin`` only). A sharded checkpoint is named by its index file
    (``*.index.json``); it is present when the index and every shard it lists are.
    A partial cache raises :class:`~neurodecode._core.errors.OfflineError` naming the
    missing files (offline), or has just those files fetched (online).

What is not a hub artefact
    :class:`ExternalArtefact` declares what a recipe needs that no download provides: a run
    of another recipe, the authors' checkpoints, a random initialisation, a pip package.
    ``neurodecode download`` lists them and never fetches them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._core.config import is_offline
from .._core.errors import MissingFileError, OfflineError
from .._core.validation import format_error

__all__ = ["resolve_model_dir", "looks_like_hub_id", "resolve_files", "HubArtefact", "ExternalArtefact",
           "FileGroup", "weight_group", "diffusers_model_files", "transformers_model_files", "clip_tokenizer_files",
           "scheduler_files", "missing_files", "hub_cache_dir", "cached_snapshot", "pick_variant",
           "is_non_commercial", "REDUCED_DTYPES", "group_choice"]

#: A file group: alternatives for one file, the preferred first.
FileGroup = tuple[str, ...]

#: dtypes that prefer the ``fp16`` variant files when a repository ships them.
REDUCED_DTYPES = ("float16", "bfloat16", "fp16", "bf16", "torch.float16", "torch.bfloat16")

_NON_COMMERCIAL = ("non-commercial", "noncommercial", "by-nc", "research-only")


def is_non_commercial(licence: str) -> bool:
    """Whether a licence text restricts use to non-commercial research (``CC BY-NC``, "non-commercial"...)."""
    text = "-".join(str(licence).lower().split())
    return any(k in text for k in _NON_COMMERCIAL)


@dataclass(frozen=True)
class HubArtefact:
    """Files of one hub repository that a component reads.

    Attributes
    ----------
    repo : str
        Hub id ``owner/name``.
    files : tuple of FileGroup
        Every group must be present (one of its alternatives).
    licence : str
        Licence of the weights (a non-commercial one is flagged).
    purpose : str
        What reads them (space or generator, component).
    revision : str or None
        Branch, tag or commit (``None``: ``main``).
    """

    repo: str
    files: tuple[FileGroup, ...]
    licence: str
    purpose: str = ""
    revision: str | None = None

    @property
    def non_commercial(self) -> bool:
        return is_non_commercial(self.licence)

    def merged(self, other: HubArtefact) -> HubArtefact:
        """The union of two declarations of the same repository (file groups deduplicated, order kept)."""
        groups = list(self.files) + [g for g in other.files if g not in self.files]
        purpose = "; ".join(p for p in dict.fromkeys((self.purpose, other.purpose)) if p)
        licence = self.licence
        if other.non_commercial and not self.non_commercial:
            licence = f"{self.licence}; {other.licence}"
        return HubArtefact(self.repo, tuple(groups), licence, purpose, self.revision)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": "hub", "id": self.repo, "revision": self.revision, "licence": self.licence,
                "non_commercial": self.non_commercial, "purpose": self.purpose,
                "files": [list(g) for g in self.files], "fetch": True}


@dataclass(frozen=True)
class ExternalArtefact:
    """Something a run needs that is not fetched from the hub (listed, never downloaded).

    Attributes
    ----------
    name : str
        What it is (``"mindbridge"``, ``"clip-vit-l-14-tokens-tiny"``...).
    kind : str
        ``"run"`` (a run of another recipe), ``"authors"`` (the authors' own checkpoints, not
        reused), ``"random"`` (tiny tier: random init, nothing to fetch), ``"package"`` (ships in
        a pip package), ``"folder"`` (a local folder you give), ``"note"``.
    note : str
        How to obtain it.
    licence : str
    """

    name: str
    kind: str
    note: str
    licence: str = "n/a"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def non_commercial(self) -> bool:
        return is_non_commercial(self.licence)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.name, "revision": None, "licence": self.licence,
                "non_commercial": self.non_commercial, "purpose": self.note, "files": [], "fetch": False,
                **self.extra}


# ------------------------------------------------------------------------------------ file groups
def _is_reduced(dtype: Any) -> bool:
    return str(dtype).lower() in REDUCED_DTYPES


def weight_group(prefix: str, base: str, dtype: Any = None, *, sharded: bool = False) -> FileGroup:
    """Alternatives of one weights file, ordered for ``dtype``.

    Parameters
    ----------
    prefix : str
        Subfolder (``"unet/"``) or ``""``.
    base : str
        ``"diffusion_pytorch_model"`` (diffusers) or ``"model"`` (transformers safetensors;
        the pickled name ``pytorch_model.bin`` is added).
    dtype : str or None
        ``"float16"``/``"bfloat16"`` prefer the ``fp16`` variant; otherwise the full file first.
    sharded : bool
        Also accept a sharded checkpoint (its ``*.index.json``).

    Returns
    -------
    group : tuple of str
    """
    pickled = "pytorch_model" if base == "model" else base
    full = [f"{prefix}{base}.safetensors"]
    half = [f"{prefix}{base}.fp16.safetensors"]
    if sharded:
        full.append(f"{prefix}{base}.safetensors.index.json")
        half.append(f"{prefix}{base}.safetensors.index.fp16.json")
    ordered = half + full if _is_reduced(dtype) else full + half
    return (*ordered, f"{prefix}{pickled}.bin", f"{prefix}{pickled}.fp16.bin")


def diffusers_model_files(sub: str, dtype: Any = None, *, sharded: bool = False) -> tuple[FileGroup, ...]:
    """Files of a diffusers model in subfolder ``sub`` (``""`` for a model at the root)."""
    prefix = f"{sub}/" if sub else ""
    return ((f"{prefix}config.json",), weight_group(prefix, "diffusion_pytorch_model", dtype, sharded=sharded))


def transformers_model_files(sub: str, dtype: Any = None, *, sharded: bool = False) -> tuple[FileGroup, ...]:
    """Files of a transformers model in subfolder ``sub`` (``""`` for a model at the root)."""
    prefix = f"{sub}/" if sub else ""
    return ((f"{prefix}config.json",), weight_group(prefix, "model", dtype, sharded=sharded))


def clip_tokenizer_files(sub: str = "tokenizer") -> tuple[FileGroup, ...]:
    """Files of a CLIP BPE tokenizer folder (``vocab.json`` + ``merges.txt`` + its config)."""
    prefix = f"{sub}/" if sub else ""
    return ((f"{prefix}vocab.json",), (f"{prefix}merges.txt",), (f"{prefix}tokenizer_config.json",))


def scheduler_files(sub: str = "scheduler") -> tuple[FileGroup, ...]:
    return ((f"{sub}/scheduler_config.json",),)


# ------------------------------------------------------------------------------------ presence
def _present(folder: Path, name: str) -> bool:
    path = folder / name
    if not path.is_file():
        return False
    if name.endswith(".index.json") or name.endswith(".index.fp16.json"):
        try:
            shards = set(json.loads(path.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return all((path.parent / s).is_file() for s in shards)
    return True


def group_choice(folder: Path, group: FileGroup) -> str | None:
    """The first alternative of ``group`` present in ``folder`` (``None`` if none)."""
    for name in group:
        if _present(folder, name):
            return name
    return None


def missing_files(folder: str | os.PathLike[str], files: Iterable[FileGroup]) -> list[str]:
    """Descriptions of the file groups of ``files`` that have no alternative in ``folder``."""
    folder = Path(folder)
    return [_describe(g) for g in files if group_choice(folder, g) is None]


def _describe(group: FileGroup) -> str:
    return group[0] if len(group) == 1 else " or ".join(group)


def pick_variant(folder: str | os.PathLike[str], sub: str, dtype: Any = None,
                 base: str = "diffusion_pytorch_model") -> str | None:
    """``"fp16"`` when the fp16 variant of ``sub``'s weights is what to load, else ``None``.

    The fp16 files are used for a reduced dtype when present, and for any dtype when they are
    the only weights there (diffusers then upcasts): the fallback fp16 -> full works both ways.
    """
    prefix = f"{sub}/" if sub else ""
    choice = group_choice(Path(folder), weight_group(prefix, base, dtype, sharded=True))
    return "fp16" if choice is not None and ".fp16." in choice else None


# ------------------------------------------------------------------------------------ the hub cache
def hub_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The Hugging Face hub cache (``HF_HUB_CACHE`` / ``HF_HOME`` honoured) or ``cache_dir``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _repo_folder(repo: str, cache_dir: str | os.PathLike[str] | None) -> Path:
    return hub_cache_dir(cache_dir) / ("models--" + repo.replace("/", "--"))


def cached_snapshot(repo: str, revision: str | None = None,
                    cache_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The snapshot folder of ``repo`` at ``revision`` in the hub cache, or ``None``.

    Reads ``refs/<revision>`` (default ``main``) for the commit; a 40-hex revision names the
    snapshot directly.
    """
    root = _repo_folder(repo, cache_dir)
    rev = revision or "main"
    ref = root / "refs" / rev
    if ref.is_file():
        commit = ref.read_text(encoding="utf-8").strip()
    elif len(rev) == 40 and all(c in "0123456789abcdef" for c in rev.lower()):
        commit = rev
    else:
        return None
    snap = root / "snapshots" / commit
    return snap if snap.is_dir() else None


def looks_like_hub_id(name: str) -> bool:
    """Whether ``name`` is shaped like ``owner/repo`` and is not an existing path."""
    parts = str(name).split("/")
    return (len(parts) == 2 and all(parts) and not Path(name).expanduser().exists()
            and not str(name).startswith((".", "~")) and not any(c.isspace() or c in "()" for c in str(name)))


def resolve_files(
    name_or_path: str | os.PathLike[str],
    files: Sequence[FileGroup],
    *,
    revision: str | None = None,
    local_files_only: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    what: str = "weights",
) -> Path:
    """A local folder holding every file group of ``files``, from a folder or the hub cache.

    Parameters
    ----------
    name_or_path : str or path-like
        A local folder (its layout is the repository's), or a hub id.
    files : sequence of FileGroup
        The exact files read (see the module docstring).
    revision : str or None
        Hub revision (branch, tag or commit).
    %(local_files_only)s
    cache_dir : path-like or None
        Hub cache folder (default: huggingface_hub's).
    what : str
        What the files are, for the messages.

    Returns
    -------
    folder : pathlib.Path
        The folder or the cache snapshot folder.

    Raises
    ------
    MissingFileError
        A local folder that lacks files (named), or a path that is neither a folder nor a hub id.
    OfflineError
        Offline and the cache lacks files (named), or a download failed.
    """
    groups = [tuple(g) for g in files]
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        missing = missing_files(path, groups)
        if missing:
            raise MissingFileError(format_error(
                what, f"a folder holding every file it reads ({len(groups)} files)",
                f"{path} lacks {', '.join(missing)}",
                "Copy the missing files from the repository (same relative paths), or run `neurodecode download`"))
        return path
    name = str(name_or_path)
    if not looks_like_hub_id(name):
        raise MissingFileError(format_error(
            what, "an existing local folder or a hub id 'owner/name'", name,
            "Check the path, or give the hub id of the weights"))
    snap = cached_snapshot(name, revision, cache_dir)
    missing_groups = groups if snap is None else [g for g in groups if group_choice(snap, g) is None]
    if not missing_groups:
        assert snap is not None
        return snap
    if local_files_only or is_offline():
        where = f"hub id {name!r}" + (f" at revision {revision!r}" if revision else "")
        state = "not in the local cache" if snap is None else f"partly cached in {snap}"
        raise OfflineError(format_error(
            what, "weights available locally (offline mode is on)",
            f"{where} {state}; missing: {', '.join(_describe(g) for g in missing_groups)}",
            f"On a machine with network run `neurodecode download` (or `hf download {name}`) and copy the hub "
            "cache, or pass a local folder holding the files"))
    return _download_missing(name, missing_groups, revision=revision, cache_dir=cache_dir, what=what)


def _download_missing(repo: str, groups: Sequence[FileGroup], *, revision: str | None,
                      cache_dir: str | os.PathLike[str] | None, what: str) -> Path:
    """Fetch, for each group, the first alternative the repository has (and the shards of an index)."""
    from huggingface_hub import hf_hub_download

    kw: dict[str, Any] = {"repo_id": repo, "revision": revision,
                          "cache_dir": str(cache_dir) if cache_dir is not None else None}
    snap: Path | None = None
    failed: list[str] = []
    for group in groups:
        got = None
        errors = []
        for name in group:
            try:
                local = Path(hf_hub_download(filename=name, **kw))
            except Exception as exc:  # absent alternative, or a network failure
                errors.append(f"{type(exc).__name__}")
                continue
            got = name
            snap = local.parents[len(Path(name).parts) - 1]
            if name.endswith((".index.json", ".index.fp16.json")):
                shards = set(json.loads(local.read_text(encoding="utf-8"))["weight_map"].values())
                sub = str(Path(name).parent)
                for shard in sorted(shards):
                    hf_hub_download(filename=shard if sub == "." else f"{sub}/{shard}", **kw)
            break
        if got is None:
            failed.append(f"{_describe(group)} ({', '.join(sorted(set(errors)))})")
    if failed or snap is None:
        raise OfflineError(format_error(
            what, f"every file downloadable from hub repo {repo!r}", "failed: " + "; ".join(failed),
            "Check the network, the hub id, the revision and your access rights (gated repositories need "
            "`hf auth login`), or pass a local folder"))
    return snap


def resolve_model_dir(
    name_or_path: str | os.PathLike[str],
    *,
    allow_patterns: Sequence[str] | None = None,
    revision: str | None = None,
    local_files_only: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    files: Sequence[FileGroup] | None = None,
) -> Path:
    """Return a local folder holding the artefacts of ``name_or_path``.

    Parameters
    ----------
    name_or_path : str or path-like
        A local folder, or a hub id such as ``"stabilityai/sd-turbo"``.
    allow_patterns : sequence of str or None
        Glob patterns of the hub files to fetch (all when ``None``); ignored when ``files``
        is given.
    revision : str or None
        Hub revision (branch, tag or commit).
    %(local_files_only)s
    cache_dir : path-like or None
        Hub cache folder (default: huggingface_hub's).
    files : sequence of FileGroup or None
        The exact files read: checked in folders and caches (see :func:`resolve_files`).
        Preferred over ``allow_patterns``, which cannot tell a partial cache from a complete one.

    Returns
    -------
    folder : pathlib.Path

    Raises
    ------
    OfflineError
        Offline and the hub id (or one of ``files``) is not in the local cache.
    MissingFileError
        A path that is neither an existing folder nor a hub id.
    """
    if files is not None:
        return resolve_files(name_or_path, files, revision=revision, local_files_only=local_files_only,
                             cache_dir=cache_dir)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    name = str(name_or_path)
    if not looks_like_hub_id(name):
        raise MissingFileError(
            format_error("name_or_path", "an existing local folder or a hub id 'owner/name'", name,
                         "Check the path, or give the hub id of the weights")
        )
    from huggingface_hub import snapshot_download

    offline = local_files_only or is_offline()
    kwargs: dict[str, Any] = dict(repo_id=name, revision=revision, allow_patterns=list(allow_patterns) if allow_patterns else None,
                  cache_dir=str(cache_dir) if cache_dir else None)
    try:
        return Path(snapshot_download(local_files_only=True, **kwargs))
    except Exception as exc:  # not cached locally
        if offline:
            raise OfflineError(
                format_error(
                    "name_or_path", "weights available locally (offline mode is on)",
                    f"hub id {name!r}" + (f" at revision {revision!r}" if revision else "") + " not in the local cache",
                    "On a machine with network run `neurodecode download` (or huggingface-cli download "
                    f"{name}), or pass a local folder holding the files",
                )
            ) from exc
    try:
        return Path(snapshot_download(**kwargs))
    except Exception as exc:
        raise OfflineError(
            format_error("name_or_path", "weights downloadable from the hub", f"{name!r}: {exc}",
                         "Check the network, the hub id and your access rights, or pass a local folder")
        ) from exc
