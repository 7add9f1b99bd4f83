"""Write ZuCo result files: ``sentenceData`` structs in MATLAB v5 (ZuCo 1.0) or v7.3 (ZuCo 2.0)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import ShapeMismatchError
from .._core.specs import load_spec
from .._core.validation import check_option, format_error

__all__ = ["write_zuco_subject", "write_zuco_labels", "make_zuco_fixture", "zuco_path"]


def zuco_path(root: str | os.PathLike[str], subject: str, task: str, version: int = 2) -> Path:
    """Path of one subject's results file for ``task`` in ZuCo ``version`` (1 or 2)."""
    spec = load_spec("zuco")
    v = spec["versions"][str(version)]
    check_option(task, "task", list(v["tasks"]))
    return Path(root) / spec["paths"]["results"].format(task_dir=v["task_dirs"][task], subject=subject, task=task)


def write_zuco_subject(
    root: str | os.PathLike[str],
    subject: str,
    *,
    task: str,
    sentences: Sequence[str],
    eeg: Sequence[Any],
    sfreq: float = 500.0,
    ch_names: Sequence[str] | None = None,
    version: int = 2,
) -> Path:
    """Write ``results<SUBJECT>_<TASK>.mat`` with one ``sentenceData`` entry per sentence.

    Parameters
    ----------
    root : path-like
        Root of the ZuCo version (holding the task folders).
    subject : str
        Subject code, e.g. ``"ZAB"`` (1.0) or ``"YAC"`` (2.0).
    task : str
        ``"SR"``, ``"NR"`` or ``"TSR"`` (2.0 has no SR).
    sentences : sequence of str
        Sentence texts (``sentenceData.content``).
    eeg : sequence of ndarray of shape (n_channels, n_times_i)
        Sentence-level EEG (``sentenceData.rawData``, channels x samples); an empty array
        or all-NaN array marks a sentence without usable data, as in the release.
    sfreq : float
        Sampling rate (ZuCo: 500 Hz), stored as a top-level ``sfreq`` variable.
    ch_names : sequence of str or None
        Channel labels, stored as ``chanlocs`` names when given.
    version : {1, 2}
        1: MATLAB v5 via scipy; 2: MATLAB v7.3 (HDF5) via h5py.

    Returns
    -------
    path : pathlib.Path
        The file written.
    """
    import scipy.io

    from .._core.files import atomic_path
    from ..io.matlab import save_mat_v73

    check_option(version, "version", (1, 2))
    if len(sentences) != len(eeg):
        raise ShapeMismatchError(format_error("eeg", f"one array per sentence ({len(sentences)})", f"{len(eeg)}"))
    path = zuco_path(root, subject, task, version)
    arrays = [np.asarray(e, dtype=np.float64) for e in eeg]
    for i, a in enumerate(arrays):
        if a.size and a.ndim != 2:
            raise ShapeMismatchError(format_error(f"eeg[{i}]", "an array of shape (n_channels, n_times)", a))
    extra: dict[str, Any] = {"sfreq": np.array([[float(sfreq)]])}
    if version == 2:
        records = [{"content": str(s), "rawData": a} for s, a in zip(sentences, arrays)]
        variables: dict[str, Any] = {"sentenceData": records, **extra}
        if ch_names is not None:
            variables["chanlocs"] = {"labels": " ".join(ch_names)}
        return save_mat_v73(path, variables)
    rec = np.empty((1, len(sentences)), dtype=[("content", object), ("rawData", object)])
    for i, (s, a) in enumerate(zip(sentences, arrays)):
        rec[0, i] = (str(s), a)
    v5: dict[str, Any] = {"sentenceData": rec, **extra}
    if ch_names is not None:
        v5["chanlocs"] = {"labels": " ".join(ch_names)}
    with atomic_path(path, suffix=".mat") as tmp:
        scipy.io.savemat(str(tmp), v5)
    return path


def write_zuco_labels(root: str | os.PathLike[str], *, version: int, task: str, sentences: Sequence[str],
                      labels: Sequence[Any], n_files: int = 1, files: Sequence[int] | None = None) -> list[Path]:
    """Write ZuCo's ``task_materials`` label table(s) for ``task`` in the release's layout.

    Parameters
    ----------
    root : path-like
        Root of the ZuCo version.
    version : {1, 2}
    task : {"SR", "TSR"}
        ``"SR"`` (1.0 only): ``sentiment_labels_task1.csv`` with ``-1``/``0``/``1`` values and the
        release's second header line; ``"TSR"``: 1.0 ``relations_labels_task3.csv`` (header
        ``sentence;relation-type``), 2.0 ``tsr_<n>.csv`` (no header,
        ``paragraph_id;sentence_id;sentence;label``, the rows split in order over ``n_files`` files).
    sentences : sequence of str
    labels : sequence
        Raw ZuCo values: sentiment ``-1``/``0``/``1``; relation types such as ``"AWARD"`` or
        ``"CONTROL"``.
    n_files : int
        ZuCo 2.0 TSR only: how many ``tsr_<n>.csv`` tables (the release has 7, one relation each).
    files : sequence of int or None
        ZuCo 2.0 TSR only: the table number ``n`` (from 1) of each row, instead of ``n_files``.

    Returns
    -------
    paths : list of pathlib.Path
    """
    from .._core.files import atomic_write

    spec = load_spec("zuco")["labels"][str(version)]
    check_option(task, "task", list(spec))
    if len(sentences) != len(labels):
        raise ShapeMismatchError(format_error("labels", f"one per sentence ({len(sentences)})", f"{len(labels)}"))
    pattern = spec[task]
    root = Path(root)
    if "{n}" not in pattern:
        head = "sentence;control;sentiment_label" if task == "SR" else "sentence;relation-type"
        lines = [head] + (["(sentence);(CONTROL or empty);(-1 negative, 0 neutral, 1 positive)"] if task == "SR"
                          else [])
        lines += [f"{s};;{lab}" if task == "SR" else f"{s};{lab}" for s, lab in zip(sentences, labels)]
        path = root / pattern
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as f:
            f.write("\n".join(lines) + "\n")
        return [path]
    if files is not None:
        numbers = np.asarray(files, dtype=int)
        if numbers.shape != (len(sentences),) or (len(numbers) and numbers.min() < 1):
            raise ShapeMismatchError(format_error("files", f"{len(sentences)} table numbers >= 1", numbers))
        parts = [np.flatnonzero(numbers == n) for n in range(1, int(numbers.max(initial=0)) + 1)]
    else:
        parts = np.array_split(np.arange(len(sentences)), max(1, int(n_files)))
    paths = []
    for n, part in enumerate(parts, start=1):
        rows = [f"{n};{k + 1};{sentences[i]};{labels[i]}" for k, i in enumerate(part)]
        path = root / pattern.format(n=n)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as f:
            f.write("\n".join(rows) + "\n")
        paths.append(path)
    return paths


def make_zuco_fixture(
    root: str | os.PathLike[str],
    *,
    version: int = 2,
    subjects: Sequence[str] | None = None,
    task: str = "NR",
    n_sentences: int = 12,
    n_channels: int = 7,
    seed: int = 0,
) -> Path:
    """Random ZuCo files (variable-length sentences, one unusable) for the given version."""
    rng = np.random.default_rng(seed)
    spec = load_spec("zuco")["versions"][str(version)]
    subjects = list(subjects or spec["subjects"][:2])
    words = ["the", "film", "was", "a", "quiet", "triumph", "of", "style", "and", "heart"]
    sentences = [" ".join(rng.choice(words, size=3 + i % 5)) + f" {i}." for i in range(n_sentences)]
    for subj in subjects:
        eeg = [rng.normal(size=(n_channels, 20 + 3 * i)) for i in range(n_sentences)]
        eeg[1] = np.full((n_channels, 5), np.nan)  # a sentence without usable EEG
        write_zuco_subject(root, subj, task=task, sentences=sentences, eeg=eeg, version=version,
                           ch_names=[f"E{i + 1}" for i in range(n_channels)])
    return Path(root)
