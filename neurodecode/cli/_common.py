"""What every CLI verb shares: error handling, log levels, JSON output, subjects and data roots.

Conventions (specs/cli-and-recipes.md): ``--json`` prints exactly one JSON document
on stdout, logs and progress go to stderr; exit 0 on success, 1 on a problem with
the user's data, weights or environment (explained on stderr, no traceback unless
``--debug``), 2 on bad usage.

Shared forms, used by every verb:

- ``--subjects`` (alias ``--subject``, ``-s``) takes ``1 2``, ``1,2`` or repeats
  (``-s 1 -s 2``): :class:`NeurodecodeCommand` spreads ``--subjects 1 2`` into repeats
  before parsing, and :func:`split_subjects` / :func:`parse_subjects` split the commas.
- Boolean flags are shown as flags (``--json``), never as ``--json <bool>``.
- ``--data`` may name the output folder of ``neurodecode simulate``: :func:`resolve_data_root`
  accepts it when it holds the requested dataset, or answers with the exact path to use.
- Every ``OSError`` (read-only folder, full disk, a file where a folder should be) is caught
  once, in :func:`handle_errors`, and reported with the path and a fix.
"""

from __future__ import annotations

import errno
import functools
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import typer
from typer.core import TyperCommand, TyperGroup

from .._core.specs import DATASETS

F = TypeVar("F", bound=Callable[..., Any])

STATE: dict[str, Any] = {"debug": False}

__all__ = ["STATE", "handle_errors", "print_json", "fail", "configure_logging", "os_error_message",
           "NeurodecodeTyper", "NeurodecodeCommand", "split_subjects", "parse_subjects", "resolve_data_root",
           "DATASETS", "SUBJECT_OPTIONS", "nan_policy_option", "allow_pickle_option"]

#: Option names whose values may be given as ``--subjects 1 2`` (spread into repeats before parsing).
SUBJECT_OPTIONS = ("--subjects", "--subject", "-s")


def configure_logging(verbose: int, quiet: bool) -> None:
    """Map ``-v`` (repeatable) and ``-q`` to the library log level."""
    from .._core.logging import set_log_level

    if quiet:
        set_log_level("error")
    elif verbose >= 2:
        set_log_level("debug")
    elif verbose == 1:
        set_log_level("info")
    else:
        set_log_level("warning")


def fail(message: str, code: int = 1) -> None:
    """Print ``message`` on stderr (one problem per line) and exit with ``code``."""
    for line in str(message).splitlines() or [""]:
        typer.echo(f"error: {line}" if line else "", err=True)
    raise typer.Exit(code)


_WRITE_FIXES = {
    errno.EACCES: "The folder is not writable by you: choose a writable folder (--out), fix its permissions, or "
                  "point NEURODECODE_HOME / NEURODECODE_CACHE at a writable place",
    errno.EPERM: "The folder is not writable by you: choose a writable folder (--out), fix its permissions, or "
                 "point NEURODECODE_HOME / NEURODECODE_CACHE at a writable place",
    errno.EROFS: "The file system is read-only: choose a folder on a writable disk (--out), or point "
                 "NEURODECODE_HOME / NEURODECODE_CACHE there",
    errno.ENOSPC: "The disk is full: free some space or write to another disk (--out, NEURODECODE_CACHE); "
                  "finished work is kept and re-running the same command resumes it",
    errno.EDQUOT: "Your disk quota is exhausted: free some space or write to another disk (--out, "
                  "NEURODECODE_CACHE); re-running the same command resumes finished work",
    errno.ENOTDIR: "A file stands where a folder is expected: remove or rename it, or choose another path",
    errno.EEXIST: "A file stands where a folder is expected: remove or rename it, or choose another path",
    errno.EISDIR: "A folder stands where a file is expected: remove or rename it, or choose another path",
    errno.ENAMETOOLONG: "Choose a shorter path",
}


def _is_network_error(exc: OSError) -> bool:
    import socket

    module = type(exc).__module__
    return isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror, socket.herror)) or \
        module.startswith(("requests", "urllib3", "huggingface_hub", "http"))


def os_error_message(exc: OSError) -> str:
    """One teaching line for an ``OSError``: the path, what the system said, and how to fix it."""
    if _is_network_error(exc):
        return (f"network: expected to reach the server, got {type(exc).__name__}: {exc}. Check the connection, "
                "or fetch the weights once with `neurodecode download` on a connected machine and run with "
                "NEURODECODE_OFFLINE=1.")
    number = exc.errno
    if number is None:  # h5py and others put the number in the message: "errno = 30"
        m = re.search(r"(?:errno = |\[Errno |code: |os error )(\d+)", str(exc))
        number = int(m.group(1)) if m else None
    code = errno.errorcode.get(number) if number is not None else None
    reason = (exc.strerror or str(exc)) + (f" ({code})" if code else "")
    if exc.filename is not None:
        where = str(exc.filename) + (f" -> {exc.filename2}" if getattr(exc, "filename2", None) else "")
        got = f"{reason} at {where}"
    else:  # h5py and others put the path in the message
        got = (f"{exc}" + (f" ({code})" if code else "")) if str(exc) else reason
    fix = _WRITE_FIXES.get(number if number is not None else -1,
                           "Check the path, its permissions and the free disk space")
    return f"file system: expected to read and write the files of this command, got {got}. {fix}."


def handle_errors(func: F) -> F:
    """Turn expected errors into a message on stderr and exit code 1 (traceback with ``--debug``).

    Caught once here for every verb: neurodecode's own errors (which teach), and any
    ``OSError`` (read-only folder, full disk, missing file), reported with the path and a fix.
    Writes are atomic, so an interrupted or failed write leaves nothing half-written.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .._core.errors import NeurodecodeError

        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except NeurodecodeError as exc:
            if STATE["debug"]:
                raise
            fail(str(exc), 1)
        except OSError as exc:
            if STATE["debug"]:
                raise
            fail(os_error_message(exc), 1)
        except KeyboardInterrupt:
            typer.echo("interrupted; finished work is kept and a re-run resumes it", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def print_json(obj: Any) -> None:
    """Print one JSON document on stdout."""
    from .._core.files import _json_default

    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")
    sys.stdout.flush()


# ------------------------------------------------------------------------------------------ command classes
def _zuco_codes() -> set[str]:
    from .._core.specs import load_spec

    versions = load_spec("zuco")["versions"]
    return {str(c) for v in versions.values() for c in v.get("subjects", [])}


_SUBJECT_PART = re.compile(r"(?:nsd/|things-eeg2/|things-meg/)?(?:\d+|subj\d+|sub-(?:BIGMEG)?\d+|BIGMEG\d+)")


def _looks_like_subjects(token: str) -> bool:
    """Whether ``token`` reads as subject ids (``1``, ``1,2``, ``subj01``, ``sub-01``, ``zuco/YAC``, ``YAC``)."""
    if not token or token.startswith("-"):
        return False
    parts = [p for p in token.split(",") if p]
    if not parts:
        return False
    codes = None
    for p in parts:
        if _SUBJECT_PART.fullmatch(p):
            continue
        codes = _zuco_codes() if codes is None else codes
        if p.removeprefix("zuco/") not in codes:
            return False
    return True


def spread_subject_args(args: Sequence[str], names: Sequence[str] = SUBJECT_OPTIONS) -> list[str]:
    """Rewrite ``--subjects 1 2 3`` into ``--subjects 1 --subjects 2 --subjects 3`` (other tokens unchanged).

    After a subject option and its value, following tokens that read as subject ids are
    given to the same option; the first token that does not (an option, a dataset name,
    a path) ends the list.
    """
    out: list[str] = []
    option: str | None = None
    expect_value = False
    for i, tok in enumerate(args):
        if tok == "--":
            out += list(args[i:])
            break
        if expect_value:
            out.append(tok)
            expect_value = False
            continue
        if option is not None and _looks_like_subjects(tok):
            out += [option, tok]
            continue
        option = None
        out.append(tok)
        if tok in names:
            option, expect_value = tok, True
    return out


def _flags_as_flags(params: list[Any]) -> list[Any]:
    for p in params:
        if (getattr(p, "is_flag", False) or getattr(p, "count", False)) and getattr(p, "metavar", None) is None:
            p.metavar = ""  # help shows `--json`, not `--json <bool>`
    return params


class NeurodecodeCommand(TyperCommand):
    """A typer command with the CLI's shared forms (flags shown as flags, ``--subjects 1 2``)."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _flags_as_flags(super().get_params(ctx))

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        names = [o for p in self.params if {"--subjects", "--subject"} & set(getattr(p, "opts", []))
                 for o in p.opts]
        return super().parse_args(ctx, spread_subject_args(args, names) if names else args)


class NeurodecodeGroup(TyperGroup):
    """The root group: flags shown as flags."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _flags_as_flags(super().get_params(ctx))


class NeurodecodeTyper(typer.Typer):
    """``typer.Typer`` whose commands default to :class:`NeurodecodeCommand`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("cls", NeurodecodeGroup)
        super().__init__(*args, **kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if kwargs.get("cls") is None:
            kwargs["cls"] = NeurodecodeCommand
        return super().command(*args, **kwargs)


# ------------------------------------------------------------------------------------------------ subjects
def split_subjects(values: Sequence[str] | None) -> list[str]:
    """Flatten ``["1,2", "3"]`` into ``["1", "2", "3"]`` (blanks dropped, first occurrence kept)."""
    out: list[str] = []
    for value in values or []:
        for item in str(value).split(","):
            item = item.strip()
            if item and item not in out:
                out.append(item)
    return out


def parse_subjects(values: Sequence[str] | None, dataset: str, *, param: str = "--subjects") -> list[Any] | None:
    """Subjects given on the command line, checked against the dataset's spec.

    Parameters
    ----------
    values : list of str or None
        The option's values (``1 2``, ``1,2`` and repeats all arrive here as strings).
    dataset : {"nsd", "things-eeg2", "things-meg", "zuco"}
    param : str
        Option name for messages.

    Returns
    -------
    subjects : list of int (ZuCo: list of str codes) or None
        ``None`` when no subject was given. NSD accepts ``1``, ``subj01``, ``nsd/subj01``;
        THINGS-EEG2 ``1``, ``sub-01``; THINGS-MEG ``1``, ``sub-BIGMEG1``, ``BIGMEG1``; ZuCo
        codes such as ``YAC`` or ``zuco/YAC``.
    """
    from .._core.errors import ValidationError
    from .._core.validation import check_option, format_error

    check_option(dataset, "dataset", DATASETS)
    items = split_subjects(values)
    if not items:
        return None
    if dataset == "zuco":
        codes = _zuco_codes()
        out = [v.split("/", 1)[1] if v.startswith("zuco/") else v for v in items]
        bad = [v for v in out if v not in codes]
        if bad:
            raise ValidationError(format_error(
                param, "ZuCo subject codes (ZuCo 1.0: ZAB, ZDM...; 2.0: YAC, YAG...)", ", ".join(bad),
                "Use the codes of the results<CODE>_<TASK>.mat files, e.g. --subjects YAC YAG"))
        return out
    parsed: list[Any] = []
    for v in items:
        try:
            parsed.append(_subject_number(dataset, v))
        except ValidationError as exc:
            inner = str(exc).split(": ", 1)[-1].rstrip(".")
            raise ValidationError(f"{param} ({dataset}): {inner}. Give subjects as `1 2`, `1,2` or repeated "
                                  f"{param}.") from None
    return list(dict.fromkeys(parsed))


def _subject_number(dataset: str, value: str) -> int:
    from .._core.specs import load_spec
    from ..data._layout import parse_subject_number

    if dataset == "things-meg":
        m = re.fullmatch(r"(?:things-meg/)?(?:sub-)?(?:BIGMEG)?(\d+)", value)
        value = m.group(1) if m else value
        return parse_subject_number(value, "things_meg", "sub-BIGMEG", int(load_spec("things_meg")["dataset"]["n_subjects"]))
    spec_name = dataset.replace("-", "_")
    if dataset == "bold5000":
        value = value.removeprefix("bold5000/")
    prefix = {"nsd": "subj", "bold5000": "CSI", "broderick2019": "Subject", "brennan2019": "S"}.get(dataset, "sub-")
    return parse_subject_number(value, spec_name, prefix, int(load_spec(spec_name)["dataset"]["n_subjects"]))


# ---------------------------------------------------------------------------------------------- data roots
def _is_root(path: Path, dataset: str) -> bool:
    """Whether ``path`` looks like the root of ``dataset``'s published layout."""
    if not path.is_dir():
        return False
    if dataset == "nsd":
        return (path / "nsddata").is_dir() or (path / "nsddata_betas").is_dir()
    if dataset == "things-meg":
        return any(p.is_dir() for p in path.glob("sub-BIGMEG*"))
    if dataset == "bold5000":
        return (path / "BOLD5000_Stimuli").is_dir()
    if dataset == "meg-masc":
        return (path / "stimuli" / "audio").is_dir() and any(p.is_dir() for p in path.glob("sub-*"))
    if dataset == "mous":
        return (path / "stimuli" / "audio_files").is_dir() and any(p.is_dir() for p in path.glob("sub-A*"))
    if dataset == "broderick2019":
        return (path / "EEG").is_dir() and (path / "Stimuli" / "Text").is_dir()
    if dataset == "brennan2019":
        return (path / "AliceChapterOne-EEG.csv").is_file()
    if dataset == "things-eeg2":
        from .._core.specs import load_spec

        variant_dirs = [v["variant_dir"] for v in load_spec("things_eeg2")["variants"].values()]
        if any((path / d).is_dir() for d in variant_dirs) or (path / "image_set").is_dir():
            return True
        return any(p.is_dir() and any(p.glob("preprocessed_eeg_*")) for p in path.glob("sub-*"))
    from .._core.specs import load_spec

    task_dirs = {d for v in load_spec("zuco")["versions"].values() for d in v["task_dirs"].values()}
    if any((path / d).is_dir() for d in task_dirs) or (path / "zuco1").is_dir() or (path / "zuco2").is_dir():
        return True
    return any(path.glob("results*_*.mat")) or any(path.glob("*/results*_*.mat")) or \
        any(path.glob("*/*/results*_*.mat"))


def resolve_data_root(path: str | Path, dataset: str, *, param: str = "--data") -> Path:
    """The root of ``dataset`` given ``path``: the root itself, or a folder holding exactly one such root.

    ``neurodecode simulate nsd SIM`` writes the NSD tree to ``SIM/nsd``; ``--data SIM``
    is accepted for it (and logged), as is ``--data SIM/nsd``.

    Parameters
    ----------
    path : path-like
        What the user passed.
    dataset : {"nsd", "things-eeg2", "things-meg", "zuco"}
        The dataset the recipe or verb reads.
    param : str
        Option name for messages.

    Returns
    -------
    root : pathlib.Path

    Raises
    ------
    MissingFileError
        ``path`` does not exist, or holds no tree of ``dataset`` (the message names what it
        holds and the exact path to pass when one is found).
    ValidationError
        ``path`` holds several trees of ``dataset`` (the message lists them).
    """
    from .._core.errors import MissingFileError, ValidationError
    from .._core.logging import logger
    from .._core.validation import check_option, format_error

    check_option(dataset, "dataset", DATASETS)
    p = Path(path).expanduser()
    if not p.is_dir():
        raise MissingFileError(format_error(param, f"an existing folder holding the {dataset} tree", str(p),
                                            "Check the path (for simulated data: the folder given to "
                                            f"`neurodecode simulate {dataset}`, or its {dataset}/ subfolder)"))
    if _is_root(p, dataset):
        return p
    children = sorted(c for c in p.iterdir() if c.is_dir() and not c.name.startswith("."))
    hits = [c for c in children if _is_root(c, dataset)]
    if len(hits) == 1:
        logger.info("%s %s holds one %s tree: using %s", param, p, dataset, hits[0])
        return hits[0]
    if len(hits) > 1:
        raise ValidationError(format_error(param, f"a folder holding one {dataset} tree",
                                           f"{len(hits)} under {p}: {', '.join(str(h) for h in hits)}",
                                           f"Pass one of them, e.g. {param} {hits[0]}"))
    others = [f"{c} ({d})" for c in children for d in DATASETS if d != dataset and _is_root(c, d)]
    held = [d for d in DATASETS if d != dataset and _is_root(p, d)]
    if held:
        got = f"{p}, which holds a {' and '.join(held)} tree"
    elif others:
        got = f"{p}, which holds {', '.join(others)}"
    else:
        got = f"{p}, with no {dataset} tree in it or in its subfolders"
    raise MissingFileError(format_error(
        param, f"the root of a {dataset} tree (or a `neurodecode simulate` folder holding one)", got,
        f"Run `neurodecode simulate {dataset} {p}` to make one there, or pass the {dataset} root "
        f"(the folder that holds {_root_marker(dataset)})"))


def _root_marker(dataset: str) -> str:
    return {"nsd": "nsddata/ and nsddata_betas/", "things-meg": "sub-BIGMEG1/ ...",
            "things-eeg2": "the preprocessed-data folder and image_set/",
            "zuco": "the task folders with results<CODE>_<TASK>.mat",
            "meg-masc": "sub-01/ ... and stimuli/audio/", "bold5000": "BOLD5000_Stimuli/",
            "mous": "sub-A2002/ ... and stimuli/audio_files/", "broderick2019": "EEG/Subject1/ ... and Stimuli/Text/",
            "brennan2019": "S01.mat ..., proc/, audio/ and AliceChapterOne-EEG.csv"}[dataset]


# ----------------------------------------------------------------------------------------- shared options
def nan_policy_option(choices: Sequence[str] = ("raise", "zero"), default: str = "raise") -> Any:
    """The ``--nan-policy`` option: what to do with NaN/inf values in the input (recorded in provenance)."""
    return typer.Option(default, "--nan-policy",
                        help=f"NaN/inf values in the data: {', '.join(choices)} ('raise' names the file, subject "
                             "and position; 'zero' replaces them with 0 and records how many in provenance).")


def allow_pickle_option() -> Any:
    """The ``--allow-pickle`` flag: read trusted pickled files (THINGS-EEG2 ``.npy``, ``.bin`` checkpoints)."""
    return typer.Option(False, "--allow-pickle",
                        help="Read pickled files (THINGS-EEG2 .npy, .bin/.pt checkpoints); unpickling runs code: "
                             "only for files you trust.")
