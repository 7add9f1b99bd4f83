"""Registration of verbs whose implementation has not landed yet (they exit 1 and say so)."""

from __future__ import annotations

import typer

from ._common import fail


def register_placeholder(app: typer.Typer, name: str, summary: str, issue: int) -> None:
    """Add verb ``name`` that explains it is not available in this version."""

    @app.command(name, help=f"{summary} (not available yet: issue #{issue})",
                 context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def _verb(ctx: typer.Context) -> None:
        fail(f"`neurodecode {name}` is not available in this version yet (tracked in issue #{issue}).")
