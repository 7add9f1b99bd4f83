"""`neurodecode reconstruct / demo`: placeholder until its issue lands."""

from __future__ import annotations

import typer

from ._placeholder import register_placeholder


def register(app: typer.Typer) -> None:
    register_placeholder(app, "reconstruct", "Reconstruct images and captions from brain data", 9)
