"""`neurodecode check-data` and `neurodecode prepare`: validate a dataset tree, build the fast cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ._common import (
    DATASETS,
    allow_pickle_option,
    fail,
    handle_errors,
    nan_policy_option,
    parse_subjects,
    print_json,
    resolve_data_root,
)


def run_check(dataset: str, root: Path, subjects: list[str] | None = None, *,
              allow_pickle: bool = False) -> dict[str, Any]:
    """What ``neurodecode check-data`` does, as a function returning its report."""
    from ..data._checks import check_dataset

    parsed = parse_subjects(subjects, dataset, param="--subjects")
    return check_dataset(dataset, resolve_data_root(root, dataset, param="ROOT"), parsed, allow_pickle=allow_pickle)


def register(app: typer.Typer) -> None:
    @app.command("check-data")
    @handle_errors
    def check_data(
        dataset: str = typer.Argument(..., help="nsd, things-eeg2, things-meg, zuco, meg-masc, bold5000, mous, broderick2019 or brennan2019."),
        root: Path = typer.Argument(..., help="Root folder of the local download (or a `neurodecode simulate` "
                                              "folder holding it)."),
        subjects: list[str] = typer.Option(None, "--subjects", "--subject", "-s",
                                           help="Subjects to check: `1 2`, `1,2` or repeated (ZuCo: codes such as "
                                                "YAC). Default: every subject found."),
        allow_pickle: bool = allow_pickle_option(),
        json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
    ) -> None:
        """Validate a local dataset tree against data_specs/: every problem of the tree is listed at once
        (missing sessions or subjects, NaN values per file, voxel counts, damaged files); exit 1 on problems."""
        if dataset not in DATASETS:
            fail(f"DATASET: expected one of {', '.join(DATASETS)}, got {dataset!r}. "
                 "Run `neurodecode check-data --help`.", 2)
        report = run_check(dataset, root, subjects, allow_pickle=allow_pickle)
        if json_out:
            print_json(report)
        else:
            for sid, info in report["subjects"].items():
                typer.echo(f"{dataset} subject {sid}: " + ", ".join(f"{k}={v}" for k, v in info.items()))
            for w in report["warnings"]:
                typer.echo(f"warning: {w}", err=True)
            if not report["problems"]:
                typer.echo(f"{dataset} tree at {report['root']}: no problem found")
        if report["problems"]:
            n = len(report["problems"])
            fail("\n".join(report["problems"]) + f"\n{n} problem(s) in {report['root']}", 1)

    @app.command("prepare")
    @handle_errors
    def prepare(
        dataset: str = typer.Argument(..., help="nsd (the only dataset with a cache)."),
        root: Path = typer.Argument(..., help="Root folder of the local download (or a `neurodecode simulate` "
                                              "folder holding it)."),
        subjects: list[str] = typer.Option(..., "--subjects", "--subject", "-s",
                                           help="Subjects to convert: `1 2`, `1,2` or repeated."),
        out: Path = typer.Option(..., "--out", "-o", help="Cache folder."),
        beta_version: str = typer.Option("b3", "--beta-version", help="b1, b2 or b3."),
        sessions: int = typer.Option(None, "--sessions", help="Use sessions 1..N (default: all on disk)."),
        nan_policy: str = nan_policy_option(),
        json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
    ) -> None:
        """One-time conversion into the fast per-subject cache (resumable, atomic; NaN input refused unless
        --nan-policy zero)."""
        if dataset != "nsd":
            fail(f"DATASET: expected 'nsd' (the only dataset with a cache), got {dataset!r}.", 2)
        from .._core.validation import check_option
        from ..data import prepare_nsd

        check_option(nan_policy, "--nan-policy", ("raise", "zero"))
        from .._core.files import check_writable

        nsd_root = resolve_data_root(root, "nsd", param="ROOT")
        check_writable(out)
        folders = {}
        for s in parse_subjects(subjects, "nsd") or []:
            folders[str(s)] = str(prepare_nsd(nsd_root, s, out, beta_version=beta_version, sessions=sessions,
                                              nan_policy=nan_policy))
        if json_out:
            print_json({"dataset": dataset, "root": str(nsd_root), "out": str(out), "subjects": folders})
            return
        for folder in folders.values():
            typer.echo(folder)
