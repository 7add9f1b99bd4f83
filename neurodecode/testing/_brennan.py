"""Write Brennan & Hale 2019 trees in the Deep Blue layout (``S<SS>.mat``, ``proc/``, ``audio/``, word table).

The writers use the formats of the release: ``scipy.io.savemat`` MATLAB v5 files holding a FieldTrip raw structure
``raw`` (``trial``/``time``/``label``/``fsample``/``sampleinfo``/``hdr``, data in microvolt) and a ``proc`` struct
whose ``trl`` is built the way the authors' ``get_alice2_trials.m`` builds it (word sample = segment trigger +
``ceil(onset x fs)``, epoch -0.3..1 s, rows sorted by start, rows past the recording's end dropped), a 16-column
``AliceChapterOne-EEG.csv`` and 16-bit PCM wav files. ``trigger_missing=True`` reproduces the fault of S26, S34,
S35 and S36 (segment 1's trigger lost, every word placed with the next segment's trigger).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import ShapeMismatchError, ValidationError
from .._core.specs import load_spec
from .._core.validation import check_array, format_error

__all__ = ["brennan2019_path", "brennan2019_channel_names", "write_brennan2019_raw", "write_brennan2019_proc",
           "write_brennan2019_words", "write_brennan2019_wav", "write_brennan2019_datasets", "brennan2019_trl",
           "make_brennan2019_fixture"]

_WORDS = ("alice", "was", "beginning", "to", "get", "very", "tired", "of", "sitting", "by", "her", "sister", "on",
          "the", "bank", "and", "having", "nothing", "do", "once", "or", "twice", "she", "had", "peeped", "into")


def _spec() -> dict[str, Any]:
    return load_spec("brennan2019")


def brennan2019_path(root: str | os.PathLike[str], key: str, *, subject: int = 1, segment: int = 1) -> Path:
    """Absolute path of file ``key`` of the spec (``raw``, ``proc``, ``words``, ``audio``, ``datasets``)."""
    return Path(root) / str(_spec()["paths"][key]).format(subject=int(subject), segment=int(segment))


def brennan2019_channel_names(*, aux: bool = False) -> list[str]:
    """The release's labels: ``"1"`` .. ``"61"`` without ``"29"`` (the reference), ``"VEOG"``, optionally ``"Aux5"``."""
    ref = _spec()["dataset"]["implicit_reference"]
    n = int(_spec()["dataset"]["n_electrodes"])
    return [str(i) for i in range(1, n + 1) if str(i) != ref] + ["VEOG"] + (["Aux5"] if aux else [])


def _cell(items: Sequence[Any], column: bool = True) -> np.ndarray:
    arr = np.empty((len(items), 1) if column else (1, len(items)), dtype=object)
    for i, v in enumerate(items):
        arr.flat[i] = v
    return arr


def _savemat(path: Path, variables: Mapping[str, Any]) -> Path:
    from scipy.io import savemat

    from .._core.files import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".mat") as tmp:
        savemat(str(tmp), dict(variables), do_compression=True, oned_as="row")
    return path


def _save_v73(path: Path, variables: Mapping[str, Any]) -> Path:
    """MATLAB v7.3 (HDF5) with structs as groups and cell arrays as object-reference datasets (as MATLAB)."""
    from ..io.matlab import save_mat_v73

    path.parent.mkdir(parents=True, exist_ok=True)
    return save_mat_v73(path, {k: _as_double(v) for k, v in variables.items()})


def _as_double(value: Any) -> Any:
    """Numbers as MATLAB doubles (as FieldTrip saves them), through structs and cell arrays."""
    if isinstance(value, dict):
        return {k: _as_double(v) for k, v in value.items()}
    if isinstance(value, np.ndarray) and value.dtype == object:
        out = np.empty(value.shape, dtype=object)
        for i, item in enumerate(value.flat):
            out.flat[i] = _as_double(item)
        return out
    if isinstance(value, str):
        return value
    return np.atleast_2d(np.asarray(value, dtype=np.float64))


def write_brennan2019_raw(
    root: str | os.PathLike[str], subject: int, data: Any, *, ch_names: Sequence[str] | None = None,
    sfreq: float = 500.0, unit: str = "uV", version: int = 5,
) -> Path:
    """Write ``S<SS>.mat``: a FieldTrip raw structure ``raw`` holding one continuous trial.

    Parameters
    ----------
    root : path-like
        The data root.
    subject : int
        1..49.
    data : ndarray of shape (n_channels, n_samples)
        Samples in ``unit`` (the release: microvolt).
    ch_names : sequence of str or None
        Labels (default :func:`brennan2019_channel_names`).
    sfreq : float
        ``fsample`` and ``hdr.Fs`` (the release: 500).
    unit : str
        ``hdr.chanunit`` of every channel.
    version : {5, 73}
        MATLAB v5 (``scipy.io.savemat``, what the release's files are: brainmagick reads them with scipy) or
        v7.3 (HDF5, structs as groups, cells as reference arrays).

    Returns
    -------
    path : pathlib.Path
    """
    x = check_array(data, "data", ndim=2, finite=False).astype(np.float64)
    names = brennan2019_channel_names() if ch_names is None else [str(c) for c in ch_names]
    if len(names) != x.shape[0]:
        raise ShapeMismatchError(format_error("ch_names", f"{x.shape[0]} labels (rows of data)", len(names)))
    n = x.shape[1]
    hdr = {"Fs": float(sfreq), "nChans": float(len(names)), "nSamples": float(n), "nSamplesPre": 0.0,
           "nTrials": 1.0, "label": _cell(names), "chantype": _cell(["eeg"] * len(names)),
           "chanunit": _cell([unit] * len(names))}
    raw = {"hdr": hdr, "label": _cell(names), "time": _cell([np.arange(n)[None, :] / float(sfreq)], column=False),
           "trial": _cell([x], column=False), "fsample": float(sfreq),
           "sampleinfo": np.array([[1.0, float(n)]]), "cfg": {"version": {"name": "FieldTrip", "id": "20170322"}}}
    path = brennan2019_path(root, "raw", subject=subject)
    if version == 73:
        return _save_v73(path, {"raw": raw})
    if version != 5:
        raise ValidationError(format_error("version", "5 or 73", version))
    return _savemat(path, {"raw": raw})


def brennan2019_trl(
    triggers: Mapping[int, int], words: Mapping[str, Sequence[Any]], *, sfreq: float = 500.0,
    n_samples: int | None = None, trigger_missing: bool = False, extra_column: bool = False,
) -> np.ndarray:
    """``proc.trl`` as the authors build it: ``[start, stop, offset, segment, tmin, Order]`` per word, 1-based.

    Parameters
    ----------
    triggers : dict of int to int
        Segment number to the 1-based sample of its trigger (E-Prime lag included).
    words : dict
        ``segment``, ``onset`` (s in the segment) and ``order`` of each word.
    sfreq : float
        Recording rate.
    n_samples : int or None
        Recording length: rows whose epoch ends after it are dropped (as ``get_alice2_trials.m``).
    trigger_missing : bool
        Segment 1's trigger lost: the p-th trigger present (segment p + 1's) is used for the words of segment p,
        and segment 12's words find no trigger (the fault of S26, S34, S35, S36).
    extra_column : bool
        One more column after ``offset`` (a trigger code), as in S02's proc file.

    Returns
    -------
    trl : ndarray of shape (n_rows, 6) (7 with ``extra_column``)
    """
    po = [triggers[k] for k in sorted(triggers)]
    if trigger_missing:
        po = po[1:]
    pre, post = int(round(-0.3 * sfreq)), int(round(1.0 * sfreq))
    rows = []
    for seg, onset, order in zip(words["segment"], words["onset"], words["order"]):
        p = int(seg)
        if p > len(po):
            continue
        a = po[p - 1] + math.ceil(float(onset) * sfreq)
        row = [a + pre, a + post, pre] + ([1] if extra_column else []) + [p, float(onset), int(order)]
        rows.append(row)
    trl = np.array(sorted(rows, key=lambda r: r[0]), dtype=np.float64)
    if n_samples is not None:
        trl = trl[trl[:, 1] <= n_samples]
    return trl


def write_brennan2019_proc(
    root: str | os.PathLike[str], subject: int, trl: Any, *, bads: Sequence[str] = (),
    impedance_bads: Sequence[str] = (), varnames: Sequence[str] = ("segment", "tmin", "Order"),
) -> Path:
    """Write ``proc/S<SS>.mat``: the ``proc`` struct (``trl``, ``varnames``, references, bad channels)."""
    t = check_array(trl, "trl", ndim=2)
    proc = {"subject": f"S{int(subject):02d}", "dataset": f"S{int(subject):02d}.eeg",
            "implicitref": _spec()["dataset"]["implicit_reference"],
            "refchannels": _cell(list(_spec()["dataset"]["mastoid_references"]), column=False),
            "trl": t, "varnames": _cell(list(varnames), column=False), "tot_trials": float(t.shape[0]),
            "tot_chans": float(_spec()["dataset"]["n_electrodes"]),
            "impedence": {"bads": _cell(list(impedance_bads)), "imps": np.zeros((0, 0)), "labels": _cell([])},
            "rejections": {"badchans": _cell(list(bads)), "numtrialrej": 0.0}}
    return _savemat(brennan2019_path(root, "proc", subject=subject), {"proc": proc})


def write_brennan2019_words(root: str | os.PathLike[str], words: Mapping[str, Sequence[Any]]) -> Path:
    """Write ``AliceChapterOne-EEG.csv`` with the release's 16 columns.

    ``words`` holds ``word``, ``segment``, ``onset``, ``offset``, ``sentence``, ``position`` (``order`` defaults to
    1, 2, ...); the other columns get plausible values.
    """
    import csv

    from .._core.files import atomic_write

    n = len(words["word"])
    order = list(words.get("order", range(1, n + 1)))
    rng = np.random.default_rng(0)
    path = brennan2019_path(root, "words")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(_spec()["words"]["columns"])
        for i in range(n):
            on, off = float(words["onset"][i]), float(words["offset"][i])
            lf = round(float(rng.uniform(5, 15)), 3)
            w.writerow([words["word"][i], int(words["segment"][i]), f"{on:.6g}", f"{off:.6g}", int(order[i]), lf,
                        lf, lf, f"{rng.uniform(1e-4, 1e-2):.6g}", f"{off - on:.6g}", int(words["position"][i]),
                        int(words["sentence"][i]), int(i % 2), round(float(rng.uniform(2, 12)), 3),
                        round(float(rng.uniform(2, 12)), 3), round(float(rng.uniform(2, 12)), 3)])
    return path


def write_brennan2019_wav(root: str | os.PathLike[str], segment: int, wave: Any, sr: int = 44100) -> Path:
    """Write ``audio/DownTheRabbitHoleFinal_SoundFile<segment>.wav`` (16-bit PCM mono) from ``wave`` in [-1, 1]."""
    from scipy.io import wavfile

    from .._core.files import atomic_path

    x = check_array(wave, "wave", ndim=1)
    path = brennan2019_path(root, "audio", segment=segment)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".wav") as tmp:
        wavfile.write(tmp, int(sr), np.round(np.clip(x, -1, 1) * 32767).astype(np.int16))
    return path


def write_brennan2019_datasets(root: str | os.PathLike[str], groups: Mapping[str, Sequence[int]]) -> Path:
    """Write ``datasets.mat``: ``use`` / ``low_perf`` / ``high_noise`` cell arrays of ``"S01.mat"`` names."""
    unknown = sorted(set(groups) - {"use", "low_perf", "high_noise"})
    if unknown:
        raise ValidationError(format_error("groups", "keys use, low_perf, high_noise", unknown))
    return _savemat(brennan2019_path(root, "datasets"),
                    {k: _cell([f"S{int(s):02d}.mat" for s in v], column=False) for k, v in groups.items()})


def make_brennan2019_fixture(
    root: str | os.PathLike[str],
    *,
    subjects: Sequence[int] = (1,),
    words_per_segment: int = 2,
    segment_seconds: float = 1.0,
    gap_seconds: float = 0.2,
    lead_seconds: float = 1.0,
    tail_seconds: float = 3.0,
    sfreq: float = 500.0,
    audio_sr: int = 8000,
    aux: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """A random Brennan 2019 tree with the release's structure at small scale.

    The 12 segments (wav files of ``segment_seconds`` of noise) are played ``gap_seconds`` apart after
    ``lead_seconds``; each holds ``words_per_segment`` words (one sentence per segment). Every subject's EEG is
    Gaussian noise (about 10 microvolt) on the release's 60 electrodes + VEOG, with ``tail_seconds`` after the
    last segment. Segment ``k``'s trigger is at the 1-based sample ``round(start_k x sfreq) + 1``.

    Returns
    -------
    plan : dict
        ``root``, ``starts`` ({segment: s}), ``words`` (the table written), ``n_samples``.
    """
    rng = np.random.default_rng(seed)
    n_seg = int(_spec()["dataset"]["n_segments"])
    starts = {k: lead_seconds + (k - 1) * (segment_seconds + gap_seconds) for k in range(1, n_seg + 1)}
    words: dict[str, list[Any]] = {k: [] for k in ("word", "segment", "onset", "offset", "sentence", "position")}
    for k in range(1, n_seg + 1):
        write_brennan2019_wav(root, k, 0.1 * rng.standard_normal(int(segment_seconds * audio_sr)), audio_sr)
        offs = np.sort(rng.choice(np.arange(0.02, segment_seconds - 0.25, 0.002), words_per_segment, replace=False))
        for j, on in enumerate(offs):
            words["word"].append(_WORDS[len(words["word"]) % len(_WORDS)])
            words["segment"].append(k)
            words["onset"].append(round(float(on), 3))
            words["offset"].append(round(float(on) + 0.2, 3))
            words["sentence"].append(k)
            words["position"].append(j + 1)
    write_brennan2019_words(root, words)
    words["order"] = list(range(1, len(words["word"]) + 1))
    n_samples = int(round((starts[n_seg] + segment_seconds + tail_seconds) * sfreq))
    names = brennan2019_channel_names(aux=aux)
    triggers = {k: int(round(t * sfreq)) + 1 for k, t in starts.items()}
    for s in subjects:
        write_brennan2019_raw(root, s, rng.normal(0.0, 10.0, size=(len(names), n_samples)), ch_names=names,
                              sfreq=sfreq)
        write_brennan2019_proc(root, s, brennan2019_trl(triggers, words, sfreq=sfreq, n_samples=n_samples))
    return {"root": Path(root), "starts": starts, "words": words, "n_samples": n_samples, "triggers": triggers}
