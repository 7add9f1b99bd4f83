"""The ``neurodecode`` command line: thin verbs over the library.

Each verb lives in its own private module with a ``register(app)`` function; the
modules import only typer at start-up and the heavy libraries inside the command,
so ``neurodecode --help`` stays fast. The app is a :class:`~._common.NeurodecodeTyper`, so every
verb shares the CLI's forms (``--subjects 1 2``, flags shown as flags, ``OSError`` reported once).
"""

from __future__ import annotations

import importlib

import typer

from ._common import STATE, NeurodecodeTyper, configure_logging

__all__ = ["app", "main"]

_VERB_MODULES = ("_info", "_data", "_simulate", "_embed", "_train", "_reconstruct", "_evaluate", "_download",
                 "_stream")


def _build_app() -> NeurodecodeTyper:
    application = NeurodecodeTyper(
        name="neurodecode",
        help="Decode brain activity (fMRI, EEG, MEG) into images and sentences.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @application.callback()
    def _root(
        verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More logging (-vv for debug)."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors."),
        debug: bool = typer.Option(False, "--debug", help="Show Python tracebacks for expected errors."),
    ) -> None:
        STATE["debug"] = debug
        configure_logging(verbose, quiet)

    for name in _VERB_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(application)
    return application


app = _build_app()


def main() -> None:
    """Console-script entry point."""
    app()
