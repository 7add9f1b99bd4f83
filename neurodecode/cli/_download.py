"""`neurodecode download`: pre-fetch every weight a recipe needs, so later runs work offline."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import fail, handle_errors, print_json


def register(app: typer.Typer) -> None:
    @app.command("download", help="Pre-fetch every weight a recipe needs (hub snapshots) and print their licences.")
    @handle_errors
    def download(
        pipeline: Path = typer.Option(..., "--pipeline", help="Recipe TOML (pipelines/<recipe>.toml)."),
        preset: str | None = typer.Option(None, "--preset", help="Recipe preset."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Only list the weights and licences."),
        json_: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        from .._core.recipes import load_recipe
        from ..generate import download_weights, recipe_weights

        recipe = load_recipe(pipeline, preset=preset)
        entries = recipe_weights(recipe)
        if not entries:
            fail(f"{pipeline} declares no weights ([weights] table) and names no generator with published weights.", 1)
        for e in entries:
            flag = "  [NON-COMMERCIAL]" if e["non_commercial"] else ""
            typer.echo(f"{e['id']}: licence {e['licence']}{flag}", err=True)
        result = download_weights(entries, dry_run=dry_run)
        if json_:
            print_json(result)
        elif not dry_run:
            for e in result["weights"]:
                typer.echo(f"{e['id']} -> {e['path']}")
