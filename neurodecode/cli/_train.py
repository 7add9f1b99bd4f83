"""``neurodecode train``: train a decoder from a recipe (a thin call into :func:`neurodecode.recipes.train_from_recipe`).

Also runs under a launcher, one process per GPU::

    accelerate launch --num_processes 8 -m neurodecode.cli train pipelines/mindbridge_nsd.toml \\
        --data NSD_ROOT --out runs/mindbridge_nsd
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ._common import handle_errors, print_json


def run_train(recipe: Path, data: Path, out: Path, *, preset: str | None = None, overrides: list[str] | None = None,
              max_steps: int | None = None, resume: bool = True, device: str = "auto",
              verbose: Any = None) -> dict[str, Any]:
    """What ``neurodecode train`` does, as a function returning its JSON summary."""
    import time

    from ..recipes import load_recipe, train_from_recipe, validate_recipe
    from ._common import resolve_data_root

    t0 = time.perf_counter()
    resolved = validate_recipe(load_recipe(recipe, preset=preset, overrides=overrides or []))
    data = resolve_data_root(data, resolved["data"]["dataset"])
    result = train_from_recipe(resolved, data, out, max_steps=max_steps, resume=resume, device=device,
                               verbose=verbose)
    return {
        "recipe": resolved["_source"]["name"], "preset": preset, "out": str(out), "steps": result.steps,
        "resumed_from": result.resumed_from, "checkpoint": str(result.checkpoint) if result.checkpoint else None,
        "metrics": result.metrics, "seconds": round(time.perf_counter() - t0, 3),
    }


def _close_process_group() -> None:
    """Under torchrun, tear the process group down before the process exits (gloo's threads left running at
    interpreter exit can abort it: "terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def register(app: typer.Typer) -> None:
    @app.command("train")
    @handle_errors
    def train(
        recipe: Path = typer.Argument(..., help="Recipe TOML, e.g. pipelines/mindbridge_nsd.toml."),
        data: Path = typer.Option(..., "--data", help="Dataset root (the NSD root)."),
        out: Path = typer.Option(..., "--out", help="Run folder: model, checkpoints, metrics, resolved recipe."),
        preset: str = typer.Option(None, "--preset", help="Recipe preset, e.g. 'tiny' (toy width, offline)."),
        set_: list[str] = typer.Option([], "--set", help="Override a recipe field: section.key=value (repeatable)."),
        max_steps: int = typer.Option(None, "--max-steps", min=1, help="Stop after N optimizer steps."),
        resume: bool = typer.Option(True, "--resume/--no-resume",
                                    help="Continue from the last checkpoint in --out (default) or start over."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
        json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
    ) -> None:
        """Train a decoder from a recipe (resumable; every recipe also runs at toy size with --preset tiny)."""
        try:
            summary = run_train(recipe, data, out, preset=preset, overrides=set_, max_steps=max_steps,
                                resume=resume, device=device)
        finally:
            _close_process_group()
        if json_out:
            print_json(summary)
            return
        m = summary["metrics"]
        tops = ", ".join(f"{k.split('/')[1]}/{k.split('/')[2]} top-1 {v:.3f}" for k, v in m.items()
                         if k.startswith("test/") and k.endswith("/top1"))
        typer.echo(f"{summary['recipe']}: {summary['steps']} steps (resumed from {summary['resumed_from']}), "
                   f"loss {m.get('loss', float('nan')):.4g}; model in {summary['out']}" + (f"; {tops}" if tops else ""))
