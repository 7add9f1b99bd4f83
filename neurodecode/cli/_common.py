"""What every CLI verb shares: error handling, log levels, JSON output.

Conventions (specs/cli-and-recipes.md): ``--json`` prints exactly one JSON document
on stdout, logs and progress go to stderr; exit 0 on success, 1 on a problem with
the user's data, weights or environment (explained on stderr, no traceback unless
``--debug``), 2 on bad usage.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])

STATE: dict[str, Any] = {"debug": False}

__all__ = ["STATE", "handle_errors", "print_json", "fail", "configure_logging"]


def configure_logging(verbose: int, quiet: bool) -> None:
    """Map ``-v`` (repeatable) and ``-q`` to the library log level."""
    from .._core.logging import set_log_level

    if quiet:
        set_log_level("error")
    elif verbose >= 2:
        set_log_level("debug")
    elif verbose == 1:
        set_log_level("info")
    else:
        set_log_level("warning")


def fail(message: str, code: int = 1) -> None:
    """Print ``message`` on stderr (one problem per line) and exit with ``code``."""
    for line in str(message).splitlines() or [""]:
        typer.echo(f"error: {line}" if line else "", err=True)
    raise typer.Exit(code)


def handle_errors(func: F) -> F:
    """Turn expected errors into a message on stderr and exit code 1 (traceback with ``--debug``)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .._core.errors import NeurodecodeError

        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except (NeurodecodeError, FileNotFoundError, PermissionError) as exc:
            if STATE["debug"]:
                raise
            fail(str(exc), 1)
        except KeyboardInterrupt:
            typer.echo("interrupted; finished work is kept and a re-run resumes it", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def print_json(obj: Any) -> None:
    """Print one JSON document on stdout."""
    from .._core.files import _json_default

    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")
    sys.stdout.flush()
