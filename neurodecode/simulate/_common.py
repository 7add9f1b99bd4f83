"""What every simulator shares: the result object, deterministic ground-truth files, argument checks."""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import ValidationError
from .._core.files import atomic_path
from .._core.validation import format_error

__all__ = ["SimulationResult", "save_truth_npz", "load_truth", "check_subjects", "check_snr", "summarise_ceiling"]

#: Ideal-observer scores averaged over subjects in ``ceiling.json``.
CEILING_KEYS = ("two_way_identification", "top1_retrieval", "top5_retrieval", "mean_rank")


@dataclass
class SimulationResult:
    """Where a simulation wrote its files, and its ideal-observer ceiling.

    Attributes
    ----------
    dataset : str
        ``"nsd"``, ``"things-eeg2"``, ``"things-meg"`` or ``"zuco"``.
    out : pathlib.Path
        The output folder: it holds the dataset tree, ``truth/`` and ``ceiling.json``.
    root : pathlib.Path
        Root of the dataset tree (``out / dataset``), what the loaders take.
    truth : pathlib.Path
        Folder of the ground truth (``out / "truth"``), outside the dataset tree.
    ceiling : dict
        Content of ``ceiling.json``: ideal-observer scores on the test split.
    subjects : list
        Subjects written (numbers or ids, as the layout names them).
    data : dict
        In-memory arrays per subject (responses before quantisation, trial design), for tests and
        benchmarks; not saved beyond what the tree and ``truth/`` hold.
    """

    dataset: str
    out: Path
    root: Path
    truth: Path
    ceiling: dict[str, Any]
    subjects: list[Any]
    data: dict[Any, dict[str, Any]] = field(default_factory=dict, repr=False)


def save_truth_npz(path: str | os.PathLike[str], **arrays: Any) -> Path:
    """Atomically write a ``.npz`` without pickles and with fixed zip timestamps (same input, same bytes)."""
    path = Path(path)
    with atomic_path(path, suffix=".npz") as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for name, value in arrays.items():
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.ascontiguousarray(np.asarray(value)), allow_pickle=False)
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, buf.getvalue(), compresslevel=1)
    return path


def load_truth(out: str | os.PathLike[str], name: str) -> dict[str, np.ndarray]:
    """Read ``out/truth/<name>.npz`` (no pickles) into a dict of arrays.

    Parameters
    ----------
    out : path-like
        Output folder of a simulation (holding ``truth/``).
    name : str
        File stem, e.g. ``"subj01"``, ``"features"``, ``"sub-01"``.
    """
    from .._core.validation import check_path

    path = check_path(Path(out) / "truth" / f"{name}.npz", "name", kind="file",
                      hint=f"Files available: {sorted(p.stem for p in (Path(out) / 'truth').glob('*.npz'))}")
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def check_subjects(subjects: Any, valid: Sequence[int], param: str = "subjects") -> list[int]:
    """Subjects as a sorted list of unique ints from ``valid``."""
    if isinstance(subjects, (int, np.integer)):
        subjects = [subjects]
    try:
        out = sorted({int(s) for s in subjects})
    except (TypeError, ValueError) as exc:
        raise ValidationError(format_error(param, "a sequence of subject numbers", subjects)) from exc
    bad = [s for s in out if s not in valid]
    if not out or bad:
        raise ValidationError(format_error(param, f"subject numbers among {list(valid)}", subjects,
                                           f"Remove {bad}" if bad else "Give at least one subject"))
    return out


def check_snr(snr: Any) -> float:
    """A strictly positive, finite signal-to-noise multiplier."""
    try:
        value = float(snr)
    except (TypeError, ValueError) as exc:
        raise ValidationError(format_error("snr", "a positive number", snr)) from exc
    if not np.isfinite(value) or value <= 0:
        raise ValidationError(format_error("snr", "a positive finite number", snr,
                                           "Use e.g. snr=1.0 (higher means cleaner responses)"))
    return value


def summarise_ceiling(per_subject: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """The content of ``ceiling.json``: subject-averaged ideal-observer scores, then ``fields``.

    Parameters
    ----------
    per_subject : dict of str to dict
        Each subject's :func:`~neurodecode.simulate._ideal.ideal_observer` scores (a score missing from the
        first subject is left out; ``n_test`` and ``chance`` are read from the first subject).
    **fields
        Further entries (dataset, snr, seed, method...), added last.
    """
    first = next(iter(per_subject.values()))
    out: dict[str, Any] = {k: float(np.mean([v[k] for v in per_subject.values()])) for k in CEILING_KEYS
                           if k in first}
    out.update(n_test=int(first.get("n_test", 0)), chance=first.get("chance"), per_subject=per_subject)
    out.update(fields)
    return out
