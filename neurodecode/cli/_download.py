"""`neurodecode download`: fetch exactly the files a recipe reads, so later runs work offline."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import handle_errors, print_json


def register(app: typer.Typer) -> None:
    @app.command("download", help="Fetch the files every weight of a recipe reads (hub cache) and list their licences.")
    @handle_errors
    def download(
        pipeline: Path = typer.Option(..., "--pipeline", help="Recipe TOML (pipelines/<recipe>.toml)."),
        preset: str | None = typer.Option(None, "--preset", help="Recipe preset (e.g. tiny: nothing to fetch)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Only list repositories, files, licences; fetch nothing."),
        dtype: str | None = typer.Option(None, "--dtype", help="Load dtype of the generators (float16/bfloat16 "
                                         "prefer fp16 variant files; default: the recipe's, else bfloat16)."),
        json_: bool = typer.Option(False, "--json", help="Print the result as one JSON document."),
    ) -> None:
        from .._core.recipes import load_recipe
        from ..generate import download_weights, recipe_weights

        recipe = load_recipe(pipeline, preset=preset)
        entries = recipe_weights(recipe, dtype=dtype)
        for e in entries:
            flag = "  [NON-COMMERCIAL]" if e["non_commercial"] else ""
            if e["fetch"]:
                files = ", ".join(" | ".join(g) for g in e["files"])
                typer.echo(f"{e['id']}: licence {e['licence']}{flag}\n    files: {files}\n    for: {e['name']}", err=True)
            else:
                typer.echo(f"{e['id']} [{e['kind']}, not fetched]: {e['purpose']} (licence {e['licence']}){flag}",
                           err=True)
        if not any(e["fetch"] for e in entries):
            typer.echo("nothing to fetch from the hub for this recipe", err=True)
        result = download_weights(entries, dry_run=dry_run)
        result = {"recipe": str(pipeline), "preset": preset, "dry_run": dry_run, **result}
        if json_:
            print_json(result)
        elif not dry_run:
            for e in result["weights"]:
                if e["fetch"]:
                    typer.echo(f"{e['id']} -> {e['path']}")
