"""Logging and progress bars.

neurodecode logs to ``logging.getLogger("neurodecode")``. ``verbose`` arguments
accept ``None`` (keep the current level), a bool (``True`` = INFO, ``False`` =
WARNING) or a level name / number. Progress bars are tqdm bars on stderr, shown
when the effective level is INFO or lower, and hidden everywhere when the
environment variable ``NEURODECODE_PROGRESS=0`` is set.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

__all__ = ["logger", "set_log_level", "use_log_level", "progress", "progress_enabled"]

logger = logging.getLogger("neurodecode")
if not logger.handlers:
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(logging.Formatter("%(levelname)s [neurodecode] %(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False

T = TypeVar("T")

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


def _to_level(verbose: bool | int | str | None) -> int | None:
    if verbose is None:
        return None
    if isinstance(verbose, bool):
        return logging.INFO if verbose else logging.WARNING
    if isinstance(verbose, int):
        return verbose
    key = str(verbose).lower()
    if key not in _LEVELS:
        from .validation import check_option

        check_option(key, "verbose", list(_LEVELS))
    return _LEVELS[key]


def set_log_level(verbose: bool | int | str | None) -> None:
    """Set the neurodecode log level.

    Parameters
    ----------
    verbose : bool | int | str | None
        ``True`` for INFO, ``False`` for WARNING, a level name ("debug", "info",
        "warning", "error") or a logging level number. ``None`` changes nothing.
    """
    level = _to_level(verbose)
    if level is not None:
        logger.setLevel(level)


@contextmanager
def use_log_level(verbose: bool | int | str | None) -> Iterator[None]:
    """Temporarily set the log level (``None`` keeps it)."""
    old = logger.level
    set_log_level(verbose)
    try:
        yield
    finally:
        logger.setLevel(old)


def progress_enabled(verbose: bool | int | str | None = None) -> bool:
    """Whether progress bars should be shown for this ``verbose`` value."""
    if os.environ.get("NEURODECODE_PROGRESS", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    level = _to_level(verbose)
    if level is None:
        level = logger.getEffectiveLevel()
    return level <= logging.INFO


def progress(
    iterable: Iterable[T] | None = None,
    *,
    total: int | None = None,
    desc: str | None = None,
    unit: str = "it",
    verbose: bool | int | str | None = None,
    **kwargs: Any,
) -> Any:
    """Wrap an iterable (or make a manual bar) in a tqdm progress bar on stderr.

    The bar is disabled when :func:`progress_enabled` is false, so loops cost
    nothing extra for quiet callers.

    Parameters
    ----------
    iterable : iterable or None
        What to iterate; ``None`` for a manual bar driven by ``update``.
    total : int or None
        Number of items, if ``len`` is not available.
    desc : str or None
        Label of the bar.
    unit : str
        Unit name ("it", "img", "trial"...).
    verbose : bool | int | str | None
        See :func:`set_log_level`.
    """
    from tqdm.auto import tqdm

    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        disable=not progress_enabled(verbose),
        file=sys.stderr,
        dynamic_ncols=True,
        **kwargs,
    )
