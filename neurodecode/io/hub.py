"""Resolve a local folder or a Hugging Face Hub id to local files, honouring offline mode.

One function decides where weights come from, for every model, latent space and
generator: a local folder is used as it is (never the network); a hub id is looked
up in the local hub cache first and downloaded only when allowed. In offline mode
(``NEURODECODE_OFFLINE=1`` / ``HF_HUB_OFFLINE=1`` / ``local_files_only=True``) a
missing artefact raises :class:`~neurodecode._core.errors.OfflineError` at once,
naming it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._core.config import is_offline
from .._core.errors import MissingFileError, OfflineError
from .._core.validation import format_error

__all__ = ["resolve_model_dir", "looks_like_hub_id"]


def looks_like_hub_id(name: str) -> bool:
    """Whether ``name`` is shaped like ``owner/repo`` and is not an existing path."""
    parts = str(name).split("/")
    return len(parts) == 2 and all(parts) and not Path(name).expanduser().exists() and not str(name).startswith((".", "~"))


def resolve_model_dir(
    name_or_path: str | os.PathLike[str],
    *,
    allow_patterns: Sequence[str] | None = None,
    revision: str | None = None,
    local_files_only: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Return a local folder holding the artefacts of ``name_or_path``.

    Parameters
    ----------
    name_or_path : str or path-like
        A local folder, or a hub id such as ``"stabilityai/sd-turbo"``.
    allow_patterns : sequence of str or None
        Glob patterns of the hub files to fetch (all when ``None``).
    revision : str or None
        Hub revision (branch, tag or commit).
    %(local_files_only)s
    cache_dir : path-like or None
        Hub cache folder (default: huggingface_hub's).

    Returns
    -------
    folder : pathlib.Path

    Raises
    ------
    OfflineError
        Offline and the hub id is not in the local cache.
    MissingFileError
        A path that is neither an existing folder nor a hub id.
    """
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
