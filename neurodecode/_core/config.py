"""Environment-driven configuration: home and cache folders, offline mode.

Environment variables
---------------------
NEURODECODE_HOME
    Root folder for neurodecode's data (default ``~/.neurodecode``).
NEURODECODE_CACHE
    Feature and weight cache (default ``$NEURODECODE_HOME/cache``).
NEURODECODE_OFFLINE
    ``1`` to never touch the network. ``HF_HUB_OFFLINE=1`` implies it too.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["home_dir", "cache_dir", "is_offline"]

_TRUE = ("1", "true", "yes", "on")


def home_dir() -> Path:
    """Folder for neurodecode's own files (``NEURODECODE_HOME``, default ``~/.neurodecode``)."""
    return Path(os.environ.get("NEURODECODE_HOME", "~/.neurodecode")).expanduser()


def cache_dir() -> Path:
    """Feature/weight cache (``NEURODECODE_CACHE``, default ``$NEURODECODE_HOME/cache``)."""
    env = os.environ.get("NEURODECODE_CACHE")
    return Path(env).expanduser() if env else home_dir() / "cache"


def is_offline() -> bool:
    """Whether network access is forbidden (``NEURODECODE_OFFLINE`` or ``HF_HUB_OFFLINE``)."""
    return any(
        os.environ.get(var, "").strip().lower() in _TRUE
        for var in ("NEURODECODE_OFFLINE", "HF_HUB_OFFLINE")
    )
