"""`neurodecode reconstruct`: brain data + decoder + recipe -> images (and captions, or sentences) on disk.

NSD recipes take one ``--subject`` and its decoder folder as ``--checkpoint``; the M/EEG recipes
(ATM on THINGS-EEG2 / THINGS-MEG, GLIM on ZuCo) take the run folder of ``neurodecode train`` and
any number of ``--subject`` (default: every subject of the run). With no data arguments it runs
the embedded demo (``neurodecode.demo.run_demo``).
"""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import fail, handle_errors, print_json

_DATA_ARGS = ("--pipeline", "--data", "--checkpoint")


def register(app: typer.Typer) -> None:
    @app.command("reconstruct", help="Reconstruct the test stimuli of a recipe's subjects: images (and captions) "
                                     "for NSD and ATM, sentences for GLIM; with no data arguments, run the embedded "
                                     "demo.")
    @handle_errors
    def reconstruct(
        pipeline: Path | None = typer.Option(None, "--pipeline", help="Recipe TOML (pipelines/<recipe>.toml)."),
        data: Path | None = typer.Option(None, "--data", help="Dataset root (NSD, THINGS-EEG2, THINGS-MEG or ZuCo)."),
        subject: list[str] = typer.Option([], "--subject", "--subjects", "-s", help="NSD: the subject (1, subj01 or nsd/subj01). "
                                          "M/EEG: a subject of the run (sub-01, zuco/YAC...), repeatable; "
                                          "default: all of them."),
        checkpoint: Path | None = typer.Option(None, "--checkpoint", help="NSD: the decoder folder "
                                               "(save_pretrained). M/EEG: the run folder of neurodecode train."),
        out: Path | None = typer.Option(None, "--out", help="Output folder (BIDS-style derivative)."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
        dtype: str | None = typer.Option(None, "--dtype", help="float32, bfloat16 or float16 (default: recipe's)."),
        batch_size: int | None = typer.Option(None, "--batch-size", min=1,
                                              help="Items (images or sentences) per pass."),
        steps: int | None = typer.Option(None, "--steps", min=1, help="Denoising steps of the image generator "
                                         "(default: recipe's)."),
        seed: int | None = typer.Option(None, "--seed", help="Base seed (item i gets seed + i)."),
        preset: str | None = typer.Option(None, "--preset", help="Recipe preset, e.g. tiny."),
        set_: list[str] = typer.Option([], "--set", help="Recipe override section.key=value (repeatable)."),
        generator_weights: str | None = typer.Option(None, "--generator-weights",
                                                     help="Generator weights: tiny, a hub id or a folder."),
        limit: int | None = typer.Option(None, "--limit", min=1, help="Only the first N test stimuli (per subject)."),
        json_: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    ) -> None:
        given = {"--pipeline": pipeline, "--data": data, "--checkpoint": checkpoint}
        if all(v is None for v in given.values()) and not subject:
            _run_demo(out, device, json_)
            return
        missing = [k for k, v in given.items() if v is None] + (["--out"] if out is None else [])
        if missing:
            fail(f"reconstruct needs {', '.join(_DATA_ARGS)} and --out together, and --subject for NSD (missing: "
                 f"{', '.join(missing)}); run it with none of them for the embedded demo.", 2)
        from .._core.logging import logger
        from ..recipes import load_recipe, validate_recipe
        from ..recipes import reconstruct as run
        from ._common import resolve_data_root, split_subjects

        recipe = validate_recipe(load_recipe(pipeline, preset=preset, overrides=set_))  # type: ignore[arg-type]
        dataset = recipe["data"]["dataset"]
        subject = split_subjects(subject)  # `1,2`, `1 2` and repeats
        if dataset == "nsd" and len(subject) != 1:  # bad usage first (exit 2), then the data (exit 1)
            fail(f"reconstruct on NSD needs exactly one --subject (the checkpoint is one subject's decoder); got "
                 f"{len(subject)}. Run it once per subject.", 2)
        data = resolve_data_root(data, dataset)  # type: ignore[arg-type]
        who = subject[0] if dataset == "nsd" else (list(subject) or None)
        summary = run(recipe, data, who, checkpoint, out, device=device, dtype=dtype,  # type: ignore[arg-type]
                      batch_size=batch_size, steps=steps, seed=seed, generator_weights=generator_weights, limit=limit,
                      verbose=logger.level < 40)  # bars unless --quiet
        if json_:
            print_json(summary)
        else:
            subjects = f" of {len(summary['subjects'])} subject(s)" if "subjects" in summary else ""
            typer.echo(f"{summary['n_done']} reconstructed, {summary['n_skipped']} already done "
                       f"({summary['n_assigned']} of {summary['n_items']} items{subjects} on rank {summary['rank']}) "
                       f"-> {out}")


def _run_demo(out: Path | None, device: str, json_: bool) -> None:
    import importlib

    try:
        demo = importlib.import_module("neurodecode.demo")
    except ModuleNotFoundError as exc:
        if exc.name not in ("neurodecode.demo",):
            raise
        fail("the embedded demo is not available in this installation (neurodecode.demo is missing). "
             "Pass --pipeline, --data, --subject, --checkpoint and --out to reconstruct your own data.", 1)
        return
    from .._core.logging import logger

    result = demo.run_demo(out_dir=out or Path("neurodecode-demo"), device=device, verbose=logger.level < 40)
    if json_:
        print_json(result if isinstance(result, dict) else {"result": str(result)})
        return
    if not isinstance(result, dict):
        typer.echo(f"demo written to {result}")
        return
    for line in demo.summary_lines(result):
        typer.echo(line)
