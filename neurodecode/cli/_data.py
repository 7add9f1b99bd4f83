"""`neurodecode check-data / prepare`: placeholder until its issue lands."""

from __future__ import annotations

import typer

from ._placeholder import register_placeholder


def register(app: typer.Typer) -> None:
    register_placeholder(app, "check-data", "Validate a local dataset tree against data_specs/", 3)
    register_placeholder(app, "prepare", "Convert a dataset into the fast per-subject cache", 3)
