"""`neurodecode simulate`: placeholder until its issue lands."""

from __future__ import annotations

import typer

from ._placeholder import register_placeholder


def register(app: typer.Typer) -> None:
    register_placeholder(app, "simulate", "Write known-answer data in a published layout", 5)
