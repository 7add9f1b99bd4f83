"""Write Broderick 2019 "Natural Speech" trees (Dryad doi:10.5061/dryad.070jc layout) at small scale.

Files as the release stores them (``data_specs/broderick2019.toml``), written with ``scipy.io.savemat``
(MATLAB v5, what ``scipy.io.loadmat`` reads from the release): ``EEG/Subject<k>/Subject<k>_Run<r>.mat``
(``eegData`` time x 128 and ``mastoids`` time x 2 in microvolts, ``fs``), ``Stimuli/Text/Run<r>.mat``
(``wordVec`` a cell of words, ``onset_time`` / ``offset_time`` in s, ``sentence_boundaries``: here the offset
of each sentence's last word, s; the release's format of that variable is unverified and the loader does not
read it), ``Stimuli/Envelopes/audio<r>_128Hz.mat`` (``env``) and the run's wav under ``Stimuli/Audio/`` (not in the
public release; where the loader expects it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import ShapeMismatchError, ValidationError
from .._core.specs import load_spec
from .._core.validation import check_array, format_error

__all__ = ["broderick2019_path", "write_broderick2019_run", "write_broderick2019_words", "write_broderick2019_wav",
           "write_broderick2019_envelope", "make_broderick2019_fixture"]

_WORDS = ("he", "was", "an", "old", "man", "who", "fished", "alone", "in", "a", "skiff", "the", "gulf", "stream",
          "and", "had", "gone", "eighty", "four", "days", "now", "without", "taking", "fish")


def _spec() -> dict[str, Any]:
    return load_spec("broderick2019")


def broderick2019_path(root: str | os.PathLike[str], key: str, *, subject: int = 1, run: int = 1) -> Path:
    """Absolute path of file ``key`` (``eeg``, ``text``, ``envelope``, ``audio``) of the spec."""
    n = int(_spec()["dataset"]["n_subjects"])
    if isinstance(subject, bool) or not 1 <= int(subject) <= n:
        raise ValidationError(format_error("subject", f"a subject number 1..{n}", repr(subject)))
    return Path(root) / str(_spec()["paths"][key]).format(subject=int(subject), run=int(run))


def _savemat(path: Path, variables: dict[str, Any]) -> None:
    from scipy.io import savemat

    from .._core.files import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".mat") as tmp:
        savemat(str(tmp), variables, do_compression=False, oned_as="column")


def write_broderick2019_run(root: str | os.PathLike[str], subject: int, run: int, data: Any, *,
                            mastoids: Any = None, sfreq: float | None = None, dtype: Any = np.float32) -> Path:
    """Write ``EEG/Subject<k>/Subject<k>_Run<r>.mat``.

    Parameters
    ----------
    root : path-like
        The ``Natural Speech`` folder.
    subject, run : int
        1..19 and 1..20.
    data : ndarray of shape (128, n_times)
        Scalp EEG in volts (stored time x channel in the file's unit, ``data / unit_scale``).
    mastoids : ndarray of shape (2, n_times) or None
        Mastoid channels in volts (None: zeros).
    sfreq : float or None
        ``fs`` (default the spec's 128 Hz).
    dtype : dtype
        Stored precision (float32).

    Returns
    -------
    path : pathlib.Path
    """
    spec = _spec()
    x = check_array(data, "data", ndim=2, finite=False)
    n_ch = int(spec["dataset"]["n_channels"])
    if x.shape[0] != n_ch:
        raise ShapeMismatchError(format_error("data", f"({n_ch}, n_times) in volts", x.shape))
    m = np.zeros((int(spec["dataset"]["n_mastoids"]), x.shape[1])) if mastoids is None else \
        check_array(mastoids, "mastoids", ndim=2, finite=False)
    if m.shape != (int(spec["dataset"]["n_mastoids"]), x.shape[1]):
        raise ShapeMismatchError(format_error("mastoids", f"(2, {x.shape[1]})", m.shape))
    scale = float(spec["dataset"]["unit_scale"])
    fs = float(spec["dataset"]["sfreq"] if sfreq is None else sfreq)
    path = broderick2019_path(root, "eeg", subject=subject, run=run)
    keys = spec["mat"]
    _savemat(path, {keys["eeg"]: (x.T / scale).astype(dtype), keys["mastoids"]: (m.T / scale).astype(dtype),
                    keys["fs"]: np.array([[fs]])})
    return path


def write_broderick2019_words(root: str | os.PathLike[str], run: int, words: Sequence[str], onsets: Any,
                              offsets: Any = None, *, sentence_ends: Any = None) -> Path:
    """Write ``Stimuli/Text/Run<r>.mat``: ``wordVec`` (cell), ``onset_time``, ``offset_time`` (s), and
    ``sentence_boundaries`` (``sentence_ends``, s; empty when None)."""
    keys = _spec()["mat"]
    on = np.asarray(onsets, dtype=np.float64).ravel()
    off = on + 0.25 if offsets is None else np.asarray(offsets, dtype=np.float64).ravel()
    if not len(words) == len(on) == len(off):
        raise ShapeMismatchError(format_error("onsets", f"{len(words)} onsets and offsets (one per word)",
                                              (len(on), len(off))))
    cell = np.empty((len(words), 1), dtype=object)
    for i, w in enumerate(words):
        cell[i, 0] = str(w)
    bounds = np.zeros((0, 1)) if sentence_ends is None else np.asarray(sentence_ends, dtype=np.float64).reshape(-1, 1)
    path = broderick2019_path(root, "text", run=run)
    _savemat(path, {keys["words"]: cell, keys["onset"]: on.reshape(-1, 1), keys["offset"]: off.reshape(-1, 1),
                    keys["sentences"]: bounds})
    return path


def write_broderick2019_envelope(root: str | os.PathLike[str], run: int, env: Any) -> Path:
    """Write ``Stimuli/Envelopes/audio<r>_128Hz.mat`` (``env``, time x 1)."""
    path = broderick2019_path(root, "envelope", run=run)
    _savemat(path, {_spec()["mat"]["envelope"]: np.asarray(env, dtype=np.float64).reshape(-1, 1)})
    return path


def write_broderick2019_wav(root: str | os.PathLike[str], run: int, wave: Any, sr: int = 16000) -> Path:
    """Write ``Stimuli/Audio/audio<r>.wav`` (16-bit PCM mono) from ``wave`` of shape (n_samples,) in [-1, 1]."""
    from scipy.io import wavfile

    from .._core.files import atomic_path

    x = check_array(wave, "wave", ndim=1)
    path = broderick2019_path(root, "audio", run=run)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".wav") as tmp:
        wavfile.write(tmp, int(sr), np.round(np.clip(x, -1, 1) * 32767).astype(np.int16))
    return path


def make_broderick2019_fixture(
    root: str | os.PathLike[str],
    *,
    subjects: Sequence[int] = (1,),
    runs: Sequence[int] = (1, 2, 3),
    words_per_run: int = 4,
    run_seconds: float = 6.0,
    audio: bool = True,
    audio_sr: int = 8000,
    seed: int = 0,
) -> Path:
    """A random Natural Speech tree: ``runs`` of ``run_seconds`` with ``words_per_run`` words each (onsets from
    0.6 s to 3 s before the end, so every 3 s window fits), Gaussian EEG around 10 µV at 128 Hz, noise-like wavs.

    Returns
    -------
    root : pathlib.Path
    """
    spec = _spec()
    rng = np.random.default_rng(seed)
    sf = float(spec["dataset"]["sfreq"])
    n_s = int(round(run_seconds * sf))
    for r in runs:
        on = np.sort(rng.uniform(0.6, run_seconds - 2.6, words_per_run)).round(3)
        words = [_WORDS[(r * words_per_run + j) % len(_WORDS)] for j in range(words_per_run)]
        write_broderick2019_words(root, r, words, on, on + 0.2, sentence_ends=[float(on[-1]) + 0.2])
        write_broderick2019_envelope(root, r, np.abs(rng.standard_normal(n_s)))
        if audio:
            write_broderick2019_wav(root, r, 0.1 * rng.standard_normal(int(run_seconds * audio_sr)), audio_sr)
    for s in subjects:
        for r in runs:
            write_broderick2019_run(root, s, r, rng.normal(0.0, 1e-5, size=(int(spec["dataset"]["n_channels"]), n_s)),
                                    mastoids=rng.normal(0.0, 1e-5, size=(2, n_s)))
    return Path(root)
