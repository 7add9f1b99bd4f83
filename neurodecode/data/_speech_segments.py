"""Shared core of the speech loaders (MEG-MASC, MOUS, Brennan 2019, Broderick 2019): word-onset segments.

Every speech loader cuts the same kind of segment (Défossez et al. 2023): the window ``[tmin, tmax)`` s around a
word onset, at ``sfreq`` Hz, minus the mean of a baseline interval, named ``"<wav stem>@<ms>"`` and split by whole
wav file (SHA-1 rank of the file name). This module holds that logic once; the dataset-specific parsing (events,
word tables, recordings) stays in each loader. Most functions here are pure functions of arrays and values; the
few that read a file (:func:`read_events_table`, :func:`check_recording_rate`, :func:`pick_meg_channels`) or change
an MNE Raw in place (:func:`filter_resample`) say so.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

import numpy as np

from .._core.errors import DataIntegrityError, MetadataMismatchError, MissingFileError, ValidationError
from .._core.validation import check_finite, check_option, format_error
from ._things_meg import _mne_verbose, _read_tsv, _set_diff
from ._trials import Trials

__all__ = ["SegmentWindow", "segment_window", "split_fractions", "rank_splits", "windows_inside", "cut_segments",
           "check_segments_finite", "stimulus_id", "window_provenance", "rounded_positions", "speech_trials",
           "merge_channel_set", "check_recording_rate", "pick_meg_channels", "filter_resample",
           "splits_or_problem", "read_events_table"]


class SegmentWindow(NamedTuple):
    """A validated segment window: ``n_times`` samples at ``sfreq`` starting ``i0`` samples from the onset.

    Attributes
    ----------
    tmin, tmax : float
        Window around the onset in s, ``tmax`` excluded.
    sfreq : float
        Output rate in Hz.
    baseline : tuple of (float or None, float or None) or None
        Interval (s) whose mean is subtracted; None: none.
    n_times : int
        ``round((tmax - tmin) * sfreq)``.
    i0 : int
        ``round(tmin * sfreq)``: first sample of the window relative to the onset sample.
    """

    tmin: float
    tmax: float
    sfreq: float
    baseline: tuple[Any, ...] | None
    n_times: int
    i0: int

    @property
    def times(self) -> np.ndarray:
        """Sample times in s, shape (n_times,)."""
        return self.tmin + np.arange(self.n_times) / self.sfreq


def segment_window(seg: Mapping[str, Any], tmin: float | None, tmax: float | None, sfreq: float | None,
                   baseline: Any) -> SegmentWindow:
    """Validate ``tmin``/``tmax``/``sfreq``/``baseline`` against a spec's ``[segments]`` defaults.

    Parameters
    ----------
    seg : mapping
        The spec's ``[segments]`` table (``tmin``, ``tmax``, ``sfreq``, ``baseline``).
    tmin, tmax, sfreq : float or None
        None: the spec's value.
    baseline : tuple or None or "spec"
        ``"spec"``: the spec's interval; None: no baseline; else ``(start, stop)`` in s (either may be None).

    Returns
    -------
    window : SegmentWindow

    Raises
    ------
    ValidationError
        ``tmax <= tmin``, ``sfreq <= 0`` or a string baseline other than ``"spec"``.
    """
    tmin = float(seg["tmin"] if tmin is None else tmin)
    tmax = float(seg["tmax"] if tmax is None else tmax)
    if tmax <= tmin:
        raise ValidationError(format_error("tmax", f"a time after tmin ({tmin:g} s)", f"{tmax:g} s"))
    out_sf = float(seg["sfreq"] if sfreq is None else sfreq)
    if out_sf <= 0:
        raise ValidationError(format_error("sfreq", "a positive rate in Hz", out_sf))
    base = tuple(seg["baseline"]) if isinstance(baseline, str) and baseline == "spec" else baseline
    if isinstance(base, str):
        raise ValidationError(format_error("baseline", "'spec', None or (start, stop)", repr(baseline)))
    return SegmentWindow(tmin, tmax, out_sf, base, int(round((tmax - tmin) * out_sf)), int(round(tmin * out_sf)))


def split_fractions(seg: Mapping[str, Any], test_fraction: float | None,
                    val_fraction: float | None) -> tuple[float, float]:
    """Test and validation fractions (None: the spec's ``[segments]`` value); raise unless both in [0, 1), sum < 1."""
    tf = float(seg["test_fraction"] if test_fraction is None else test_fraction)
    vf = float(seg["val_fraction"] if val_fraction is None else val_fraction)
    if not (0 <= tf < 1 and 0 <= vf < 1 and tf + vf < 1):
        raise ValidationError(format_error("test_fraction/val_fraction", "fractions in [0, 1) summing below 1",
                                           (tf, vf)))
    return tf, vf


def rank_splits(sounds: Sequence[str], test_fraction: float, val_fraction: float) -> dict[str, str]:
    """Split whole wav files by the SHA-1 rank of their file name.

    Parameters
    ----------
    sounds : sequence of str
        Wav paths (``"stimuli/audio/lw1_0.wav"``); only the file name (``lw1_0.wav``) is hashed.
    test_fraction, val_fraction : float
        The first ``ceil(test_fraction * n)`` ranks are ``"test"``, the next ``ceil(val_fraction * n)`` ``"val"``,
        the rest ``"train"``.

    Returns
    -------
    splits : dict of str to str
        Path -> split, in rank order.
    """
    ranked = sorted(sounds, key=lambda p: hashlib.sha1(PurePosixPath(p).name.encode()).hexdigest())
    n_test, n_val = math.ceil(test_fraction * len(ranked)), math.ceil(val_fraction * len(ranked))
    return {p: ("test" if r < n_test else "val" if r < n_test + n_val else "train") for r, p in enumerate(ranked)}


def windows_inside(samples: np.ndarray, window: SegmentWindow, n_total: int) -> np.ndarray:
    """Which onsets' windows ``[sample + i0, sample + i0 + n_times)`` lie inside ``n_total`` samples.

    Parameters
    ----------
    samples : ndarray of shape (n_onsets,)
        Onset samples at ``window.sfreq``.
    window : SegmentWindow
    n_total : int
        Length of the recording at ``window.sfreq``.

    Returns
    -------
    inside : ndarray of bool, shape (n_onsets,)
    """
    return (samples + window.i0 >= 0) & (samples + window.i0 + window.n_times <= n_total)


def cut_segments(data: np.ndarray, samples: np.ndarray, window: SegmentWindow) -> np.ndarray:
    """Cut one window per onset from a continuous recording and subtract the baseline mean.

    Parameters
    ----------
    data : ndarray of shape (n_channels, n_total)
        The recording at ``window.sfreq``.
    samples : ndarray of int, shape (n_onsets,)
        Onset samples; every window must lie inside ``data`` (see :func:`windows_inside`).
    window : SegmentWindow

    Returns
    -------
    segments : ndarray of float32, shape (n_onsets, n_channels, n_times)
        ``segments[k, c, j] = data[c, samples[k] + i0 + j]`` minus its mean over the baseline samples (computed
        in the input precision, then cast).

    Raises
    ------
    ValidationError
        A baseline interval outside ``[tmin, tmax]`` or empty.
    """
    idx = np.asarray(samples).astype(np.int64)[:, None] + window.i0 + np.arange(window.n_times)[None, :]
    x = data[:, idx].transpose(1, 0, 2)
    base = window.baseline
    if base is not None:
        tmin, n_times, sf = window.tmin, window.n_times, window.sfreq
        b0 = 0 if base[0] is None else int(round((float(base[0]) - tmin) * sf))
        b1 = n_times if base[1] is None else int(round((float(base[1]) - tmin) * sf))
        if not 0 <= b0 < b1 <= n_times:
            raise ValidationError(format_error("baseline", f"an interval inside [{tmin:g}, {window.tmax:g}] s", base))
        x = x - x[:, :, b0:b1].mean(axis=2, keepdims=True)
    return x.astype(np.float32)


def check_segments_finite(x: np.ndarray, what: str, ch_names: Sequence[str], where: str, fix: str) -> None:
    """Raise (naming the segments and channels) if ``x`` of shape (n_segments, n_channels, n_times) has NaN/inf."""
    check_finite(x, what, axes=("segment", "channel", "time"), labels={1: list(ch_names)}, where=where, fix=fix)


def stimulus_id(sound: str, offset: float) -> str:
    """``"<wav stem>@<ms>"``: the wav file and the onset inside it (s, rounded to whole ms)."""
    return f"{PurePosixPath(sound).stem}@{int(round(offset * 1000))}"


def window_provenance(window: SegmentWindow, l_freq: float | None, h_freq: float | None) -> dict[str, Any]:
    """The provenance entries every speech loader writes for resampling, filter and window (in this order)."""
    base = window.baseline
    return {"resampled": f"mne.io.Raw.resample to {window.sfreq:g} Hz (polyphase, anti-aliased)",
            "filter": None if l_freq is None and h_freq is None else {"l_freq": l_freq, "h_freq": h_freq},
            "tmin": window.tmin, "tmax": window.tmax, "n_times": window.n_times,
            "baseline": None if base is None else list(base)}


def rounded_positions(positions: np.ndarray | None) -> list[list[float]] | None:
    """Sensor positions of shape (n_channels, 2) rounded to 6 decimals as nested lists (None stays None)."""
    return np.round(positions, 6).tolist() if positions is not None else None


def speech_trials(X: np.ndarray, *, window: SegmentWindow, subject: str, ch_names: Sequence[str],
                  stimulus_ids: Sequence[str], split: Sequence[str], texts: Sequence[str], sound: Sequence[str],
                  sound_offset: Any, sequence: Sequence[str], story: Any, session: Any, task: Any,
                  provenance: dict[str, Any], extra_metadata: Mapping[str, np.ndarray] | None = None) -> Trials:
    """Assemble the :class:`Trials` of speech segments with the common metadata columns.

    Parameters
    ----------
    X : ndarray of float32, shape (n_segments, n_channels, n_times)
    window : SegmentWindow
        Gives ``sfreq`` and ``times``.
    subject : str
        ``"<dataset>/<subject id>"``.
    ch_names : sequence of str, length n_channels
    stimulus_ids, split, texts, sound, sequence : sequence of str, each of length n_segments
    sound_offset : sequence of float, length n_segments
        Onset of each word inside its wav (s).
    story, session : str / int or sequence of length n_segments
        A scalar is repeated for every segment.
    task : sequence of int, length n_segments
    provenance : dict
    extra_metadata : mapping of str to ndarray of shape (n_segments,), optional
        Dataset-specific columns appended after the common ones.

    Returns
    -------
    trials : Trials
        ``metadata`` columns ``sound``, ``sound_offset`` (float64), ``sequence``, ``story``, ``session`` (int64),
        ``task`` (int64), then ``extra_metadata``.
    """
    n = len(stimulus_ids)
    story_col = np.array([story] * n if isinstance(story, str) else story, dtype=str)
    session_col = np.full(n, session, dtype=np.int64) if np.isscalar(session) else np.array(session, dtype=np.int64)
    meta = {"sound": np.array(sound, dtype=str), "sound_offset": np.array(sound_offset, dtype=np.float64),
            "sequence": np.array(sequence, dtype=str), "story": story_col, "session": session_col,
            "task": np.array(task, dtype=np.int64)}
    meta.update(extra_metadata or {})
    return Trials(X=X, stimulus_ids=np.array(stimulus_ids, dtype=str), subject=subject,
                  split=np.array(split, dtype=str), sfreq=window.sfreq, ch_names=list(ch_names), times=window.times,
                  texts=list(texts), metadata=meta, provenance=provenance)


def merge_channel_set(names: list[str] | None, kept: list[str], *, expected_given: bool, path: Any) -> list[str]:
    """The channel set of the recordings read so far: ``kept`` for the first one, else ``names`` once checked.

    Parameters
    ----------
    names : list of str or None
        The set so far (the caller's ``ch_names`` when given); None before the first recording.
    kept : list of str
        The usable channels of this recording.
    expected_given : bool
        Whether ``names`` came from the caller's ``ch_names`` (changes the message only).
    path : path-like
        The recording, for the message.

    Raises
    ------
    MetadataMismatchError
        This recording's set differs.
    """
    if names is None:
        return kept
    if set(kept) != set(names):
        raise MetadataMismatchError(format_error(
            "ch_names", "the expected set" if expected_given else "the same channel set in every recording",
            f"{path} has {_set_diff(names, kept)}",
            "Mark the extra channels bad, or pass the channel set your model was trained on"))
    return names


def check_recording_rate(sf: float, raw_sfreq: float, path: Path, dataset: str, spec_sfreq: float,
                         sidecar: Path) -> None:
    """Raise unless a recording's rate ``sf`` is the expected ``raw_sfreq`` and agrees with its BIDS sidecar.

    Parameters
    ----------
    sf : float
        The rate read from the recording (Hz).
    raw_sfreq : float
        The expected rate.
    path : Path
        The recording, for the message.
    dataset : str
        Its name for the message (``"MEG-MASC"``).
    spec_sfreq : float
        The rate the dataset is recorded at (the spec's), for the message.
    sidecar : Path
        The ``_meg.json`` sidecar; its ``SamplingFrequency`` is checked when the file exists.

    Raises
    ------
    MetadataMismatchError
    """
    if not np.isclose(sf, raw_sfreq, rtol=1e-6):
        raise MetadataMismatchError(format_error(
            "raw_sfreq", f"recordings at {raw_sfreq:g} Hz", f"{sf:g} Hz in {path}",
            f"Pass raw_sfreq={sf:g} if the files were resampled on purpose ({dataset} is recorded at "
            f"{spec_sfreq:g} Hz)"))
    if sidecar.is_file():
        declared = json.loads(sidecar.read_text()).get("SamplingFrequency")
        if declared not in (None, "n/a") and not np.isclose(float(declared), sf, rtol=1e-6):
            raise MetadataMismatchError(format_error(
                "sfreq", f"the rate declared in {sidecar.name} ({float(declared):g} Hz)", f"{sf:g} Hz in {path}",
                "The recording and its sidecar disagree; download it again"))


def pick_meg_channels(raw: Any, picks: Any, channels_tsv: Path, path: Any) -> list[str]:
    """The channels to read from a BIDS MEG recording.

    Parameters
    ----------
    raw : mne.io.BaseRaw
        The recording (header is enough).
    picks : "meg" or sequence of str
        ``"meg"``: the MEG sensors (reference sensors and other channel types dropped) minus those in
        ``info["bads"]`` or with ``status`` bad in ``channels_tsv``; a sequence: exactly these channels.
    channels_tsv : Path
        The recording's BIDS ``_channels.tsv`` (read when it exists).
    path : path-like
        The recording, for messages.

    Returns
    -------
    kept : list of str
        In the recording's order (``"meg"``) or the order of ``picks``.

    Raises
    ------
    MetadataMismatchError
        A picked channel is not in the recording.
    ValidationError
        No usable MEG channel, or ``picks`` an unknown string.
    """
    import mne

    names = list(raw.ch_names)
    if not isinstance(picks, str):
        wanted = [str(c) for c in picks]
        lacking = [c for c in wanted if c not in names]
        if lacking:
            raise MetadataMismatchError(format_error("picks", "channels present in the recording",
                                                     f"{len(lacking)} missing from {path}: {lacking[:10]}"))
        return wanted
    check_option(picks, "picks", ("meg",))
    status: dict[str, str] = {}
    if channels_tsv.is_file():
        c = _read_tsv(channels_tsv)
        status = dict(zip(c.get("name", []), c.get("status", [])))
    meg = set(np.asarray(names)[mne.pick_types(raw.info, meg=True, ref_meg=False, exclude=[])].tolist())
    kept = [c for c in names if c in meg and c not in raw.info["bads"]
            and status.get(c, "good").strip().lower() != "bad"]
    if not kept:
        raise ValidationError(format_error("picks", "at least one usable MEG channel", f"none in {path}"))
    return kept


def filter_resample(raw: Any, l_freq: float | None, h_freq: float | None, sfreq: float, verbose: Any) -> Any:
    """Band-pass ``raw`` (when ``l_freq`` or ``h_freq`` is set), then resample it to ``sfreq`` (MNE polyphase).

    Parameters
    ----------
    raw : mne.io.BaseRaw
        A loaded recording; changed in place.
    l_freq, h_freq : float or None
        Band edges in Hz; both None: no filter.
    sfreq : float
        Output rate in Hz; nothing is done when the recording is already at it.
    verbose : bool or str or None
        Only ``"debug"`` lets MNE log.

    Returns
    -------
    raw : mne.io.BaseRaw
        The same object.
    """
    if l_freq is not None or h_freq is not None:
        raw.filter(l_freq, h_freq, verbose=_mne_verbose(verbose))
    if not np.isclose(sfreq, raw.info["sfreq"]):
        raw.resample(sfreq, method="polyphase", verbose=_mne_verbose(verbose))
    return raw


def splits_or_problem(make_splits: Callable[[], dict[str, str]], problems: list[str]) -> dict[str, str]:
    """``make_splits()``; on any error its message is appended to ``problems`` and ``{}`` returned.

    For the ``check_*`` functions, which list every problem instead of raising.
    """
    try:
        return make_splits()
    except Exception as exc:
        problems.append(str(exc))
        return {}


def read_events_table(path: str | Path, columns: Sequence[str], needed_for: str,
                      fix: str) -> tuple[dict[str, list[str]], np.ndarray]:
    """Read a BIDS ``_events.tsv``, check its columns and parse its ``onset`` column.

    Parameters
    ----------
    path : path-like
        The events file.
    columns : sequence of str
        Columns it must hold.
    needed_for : str
        What the events give, for the missing-file message (``"word onsets"``).
    fix : str
        The hint when columns are missing (``"Check that this is a MEG-MASC events file"``).

    Returns
    -------
    cols : dict of str to list of str
        Every column as text.
    onset : ndarray of float64, shape (n_rows,)

    Raises
    ------
    MissingFileError
        No file at ``path``.
    DataIntegrityError
        Missing columns or a non-numeric onset.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(format_error("events", "the recording's BIDS _events.tsv", f"nothing at {path}",
                                            f"Every recording needs its events file ({needed_for}); download it"))
    cols = _read_tsv(path)
    missing = [c for c in columns if c not in cols]
    if missing:
        raise DataIntegrityError(format_error(str(path), f"columns {columns}",
                                              f"columns {sorted(cols)} (missing {missing})", fix))
    try:
        onset = np.array([float(v) for v in cols["onset"]])
    except ValueError as exc:
        raise DataIntegrityError(format_error(f"{path}:onset", "numbers", str(exc))) from exc
    return cols, onset
