"""`neurodecode embed`: placeholder until its issue lands."""

from __future__ import annotations

import typer

from ._placeholder import register_placeholder


def register(app: typer.Typer) -> None:
    register_placeholder(app, "embed", "Fill the feature cache for a latent space", 4)
