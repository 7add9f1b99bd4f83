"""`neurodecode evaluate`: placeholder until its issue lands."""

from __future__ import annotations

import typer

from ._placeholder import register_placeholder


def register(app: typer.Typer) -> None:
    register_placeholder(app, "evaluate", "Score reconstructions and write the report", 10)
