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

__all__ = ["write_zuco_subject", "make_zuco_fixture", "zuco_path"]


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
