"""`neurodecode check-data` and `neurodecode prepare`: validate a dataset tree, build the fast cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ._common import fail, handle_errors, print_json

_DATASETS = ("nsd", "things-eeg2", "things-meg", "zuco")


def check_nsd(root: Path, subjects: list[int] | None) -> tuple[dict[str, Any], list[str]]:
    """Check an NSD tree; return (report, problems). Every problem is listed, nothing raised."""
    from ..data._layout import relative_path
    from ..data._nsd import _read_session_betas, nsd_session_files, nsd_trial_table, read_nsd_mask
    from ..io.hdf5 import get_dataset, open_hdf5

    problems: list[str] = []
    report: dict[str, Any] = {"subjects": {}}

    def attempt(label: str, fn: Any) -> Any:
        try:
            return fn()
        except Exception as exc:  # every problem is collected, none stops the check
            problems.append(f"{label}: {exc}")
            return None

    for key in ("expdesign", "stimuli"):
        if not (root / relative_path("nsd", key)).is_file():
            problems.append(f"missing {relative_path('nsd', key)} (expected under {root})")
    if (root / relative_path("nsd", "stimuli")).is_file():
        def _stim() -> None:
            with open_hdf5(root / relative_path("nsd", "stimuli")) as f:
                get_dataset(f, "imgBrick", ndim=4)
        attempt("stimuli", _stim)
    if subjects is None:
        subjects = [s for s in range(1, 9) if (root / relative_path("nsd", "nsdgeneral", subject=s)).is_file()]
        if not subjects:
            problems.append(f"no subject found: missing {relative_path('nsd', 'nsdgeneral', subject=1)}")
    for s in subjects:
        mask = attempt(f"subj{s:02d} mask", lambda s=s: read_nsd_mask(root, s))
        found = nsd_session_files(root, s, "b3")
        if not found:
            problems.append(f"subj{s:02d}: missing "
                            f"{relative_path('nsd', 'betas_nifti', subject=s, session=1, beta_dir='betas_fithrf_GLMdenoise_RR')}"
                            " (or .hdf5)")
            continue
        if mask is not None:
            for session, (fmt, path) in found.items():
                attempt(f"subj{s:02d} session {session:02d}",
                        lambda fmt=fmt, path=path, mask=mask: _read_session_betas(fmt, path, mask, 750))
        table = attempt(f"subj{s:02d} design", lambda s=s, found=found: nsd_trial_table(root, s, sorted(found)))
        if table is None or mask is None:
            continue
        train = table["split"] == "train"
        report["subjects"][str(s)] = {
            "sessions": len(found), "n_voxels": mask.n_voxels,
            "train_trials": int(train.sum()), "test_trials": int((~train).sum()),
            "train_images": int(len(np.unique(table["stimulus_id"][train]))),
            "test_images": int(len(np.unique(table["stimulus_id"][~train]))),
        }
    return report, problems


def _check_generic(dataset: str, root: Path, subjects: list[int] | None) -> tuple[dict[str, Any], list[str]]:
    problems: list[str] = []
    report: dict[str, Any] = {"subjects": {}}
    for s in subjects or [1]:
        try:
            from ..data import load_things_eeg2

            t = load_things_eeg2(root, s, split="test")
            report["subjects"][str(s)] = {"n_trials": len(t), "n_channels": len(t.ch_names or []),
                                          "sfreq": t.sfreq}
        except Exception as exc:
            problems.append(f"subject {s}: {exc}")
    return report, problems


import numpy as np  # noqa: E402  (numpy is light; used by check_nsd)


def register(app: typer.Typer) -> None:
    @app.command("check-data")
    @handle_errors
    def check_data(
        dataset: str = typer.Argument(..., help="nsd, things-eeg2, things-meg or zuco."),
        root: Path = typer.Argument(..., help="Root folder of the local download."),
        subject: list[str] = typer.Option(None, "--subject", "-s", help="Subject(s) to check (default: all found)."),
        json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
    ) -> None:
        """Validate a local dataset tree against data_specs/ and report what it holds."""
        if dataset not in _DATASETS:
            fail(f"dataset: expected one of {', '.join(_DATASETS)}, got {dataset!r}.", 2)
        if not root.is_dir():
            fail(f"root: expected an existing folder, got {root}.", 1)
        if dataset == "zuco":
            from ..data._zuco import load_zuco

            report: dict[str, Any] = {"subjects": {}}
            problems: list[str] = []
            files = sorted(root.rglob("results*_*.mat"))
            if not files:
                problems.append(f"no results<SUBJECT>_<TASK>.mat file under {root}")
            for f in files:
                subj, _, task = f.stem[len("results"):].partition("_")
                if subject and subj not in subject:
                    continue
                version = 1 if subj.startswith("Z") else 2
                try:
                    t = load_zuco(root, subj, version=version, task=task)
                    report["subjects"].setdefault(subj, {})[task] = {"sentences": len(t), "n_channels": t.X.shape[1]}
                except Exception as exc:
                    problems.append(f"{f}: {exc}")
        else:
            import re

            nums = [int(re.sub(r"\D", "", str(s)) or 0) for s in subject] if subject else None
            if dataset == "things-meg":
                from ..data._things_meg import check_things_meg

                report, problems = check_things_meg(root, nums)
            elif dataset == "nsd":
                report, problems = check_nsd(root, nums)
            else:
                report, problems = _check_generic(dataset, root, nums)
        report["problems"] = problems
        report["ok"] = not problems
        if json_out:
            print_json(report)
        else:
            for sid, info in report["subjects"].items():
                typer.echo(f"{dataset} subject {sid}: " + ", ".join(f"{k}={v}" for k, v in info.items()))
        if problems:
            fail("\n".join(problems), 1)

    @app.command("prepare")
    @handle_errors
    def prepare(
        dataset: str = typer.Argument(..., help="nsd (the only dataset with a cache)."),
        root: Path = typer.Argument(..., help="Root folder of the local download."),
        subject: list[str] = typer.Option(..., "--subject", "-s", help="Subject(s) to convert."),
        out: Path = typer.Option(..., "--out", "-o", help="Cache folder."),
        beta_version: str = typer.Option("b3", "--beta-version", help="b1, b2 or b3."),
        sessions: int = typer.Option(None, "--sessions", help="Use sessions 1..N (default: all on disk)."),
    ) -> None:
        """One-time conversion into the fast per-subject cache (resumable, atomic)."""
        if dataset != "nsd":
            fail(f"dataset: expected 'nsd' (the only dataset with a cache), got {dataset!r}.", 2)
        from ..data import prepare_nsd

        for s in subject:
            folder = prepare_nsd(root, s, out, beta_version=beta_version, sessions=sessions)
            typer.echo(str(folder))
