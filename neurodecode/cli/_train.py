"""`neurodecode train`: placeholder until its issue lands."""

from __future__ import annotations

import typer

from ._placeholder import register_placeholder


def register(app: typer.Typer) -> None:
    register_placeholder(app, "train", "Train a decoder from a recipe", 7)
