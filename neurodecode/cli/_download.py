"""`neurodecode download`: placeholder until its issue lands."""

from __future__ import annotations

import typer

from ._placeholder import register_placeholder


def register(app: typer.Typer) -> None:
    register_placeholder(app, "download", "Pre-fetch every weight a recipe needs", 9)
