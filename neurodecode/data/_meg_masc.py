"""MEG-MASC (Gwilliams et al. 2023): BIDS KIT recordings of people listening to stories, cut into speech segments.

Layout (``data_specs/meg_masc.toml``, OpenNeuro ds004276)::

    sub-<SS>/ses-<0|1>/meg/sub-<SS>_ses-<0|1>_task-<0..3>_meg.con   (KIT; or _meg.fif, what fixtures write)
                                                       ..._events.tsv  ..._channels.tsv  ..._meg.json
    stimuli/audio/<story>_<k>.wav

Each recording is one story (``task``), played as a series of wav files. Every row of ``_events.tsv`` holds in
``trial_type`` a Python dict literal (read with :func:`ast.literal_eval`, never ``eval``) whose ``kind`` is
``sound`` (a wav file starts), ``word`` or ``phoneme``, with the ``word``/``phoneme`` text and the ``sound``
file. A word's position inside its wav is its onset minus the onset of the last ``sound`` event of the same
file (so nothing depends on an unverified in-dict time key).

A segment (Défossez et al. 2023) is the window ``tmin``..``tmax`` (default -0.5..2.5 s, 3 s at 120 Hz) around
a word onset. Its stimulus id ``"<wav stem>@<ms>"`` names the audio it was heard with: the wav file and the
word onset inside it in milliseconds. Splits are by whole wav files (no audio shared between train and test):
each wav file under ``stimuli/audio`` gets a rank from a hash of its name; the first 20 % of ranks are test, the
next 10 % validation, the same for every subject and session.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from .._core.docs import fill_doc
from .._core.errors import DataIntegrityError, MetadataMismatchError, MissingFileError, ValidationError
from .._core.logging import progress
from .._core.specs import load_spec
from .._core.validation import format_error
from . import _speech_segments as _speech
from ._layout import parse_subject_number, relative_path
from ._things_meg import _check_windows, _mne_verbose, _set_diff
from ._trials import Trials

__all__ = ["load_meg_masc", "find_meg_masc_recordings", "read_meg_masc_events", "meg_masc_splits",
           "load_meg_masc_audio", "check_meg_masc", "sensor_positions_2d"]

_REC_RE = re.compile(r"_ses-(\d+)_task-(\d+)_meg\.(fif|con)$")


def _spec() -> dict[str, Any]:
    return load_spec("meg_masc")


def _subject(subject: Any) -> int:
    ds = _spec()["dataset"]
    return parse_subject_number(subject, "meg_masc", ds["subject_prefix"], int(ds["n_subjects"]))


def _subject_id(s: int) -> str:
    return str(_spec()["dataset"]["subject_format"]).format(subject=s)


def find_meg_masc_recordings(
    root: str | os.PathLike[str], subject: Any, *, sessions: Sequence[int] | None = None,
    tasks: Sequence[int] | None = None,
) -> list[tuple[int, int, Path]]:
    """List a subject's recordings as ``(session, task, path)``, sorted (a ``.fif`` twin wins over ``.con``).

    Parameters
    ----------
    root : path-like
        BIDS root of ds004276.
    subject : int or str
        1..27, ``"sub-01"`` or ``"meg-masc/sub-01"``.
    sessions, tasks : sequence of int or None
        Sessions (0, 1) and tasks (stories 0..3) to keep; None: every one on disk.

    Returns
    -------
    recordings : list of (int, int, pathlib.Path)
    """
    root = Path(root)
    s = _subject(subject)
    example = relative_path("meg_masc", "raw_con", subject=s, session=0, task=0)
    subj_dir = root / example.split("/", 1)[0]
    if not subj_dir.is_dir():
        raise MissingFileError(format_error("root", f"a MEG-MASC BIDS root holding {_subject_id(s)}/",
                                            f"nothing at {subj_dir}", f"Expected e.g. {example} under {root}; "
                                            "download ds004276 from OpenNeuro"))
    found: dict[tuple[int, int], Path] = {}
    for p in sorted(subj_dir.glob("ses-*/meg/*_meg.*")):
        m = _REC_RE.search(p.name)
        if m and ((key := (int(m.group(1)), int(m.group(2)))) not in found or m.group(3) == "fif"):
            found[key] = p
    out = [(ses, task, p) for (ses, task), p in sorted(found.items())
           if (sessions is None or ses in set(sessions)) and (tasks is None or task in set(tasks))]
    if not out:
        raise MissingFileError(format_error(
            "root", f"recordings of {_subject_id(s)}" + ("" if sessions is None and tasks is None else
                                                         f" (sessions {sessions}, tasks {tasks})"),
            f"none under {subj_dir}", f"Expected {example} (or _meg.fif)"))
    return out


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(re.sub(r"_meg\.(fif|con)$", f"_{suffix}", path.name))


def _parse_description(text: str, where: str) -> dict[str, Any]:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError) as exc:
        raise DataIntegrityError(format_error(where, "a Python dict literal in trial_type (MEG-MASC annotations)",
                                              repr(text[:80]), "Check that this is a MEG-MASC events file")) from exc
    if not isinstance(value, dict):
        raise DataIntegrityError(format_error(where, "a dict in trial_type", type(value).__name__))
    return value


def _sound_path(value: Any) -> str:
    """The wav path of a ``sound`` entry, normalised to ``stimuli/audio/<stem>.wav`` (lower-case folders).

    brainmagick strips a float-like ``.0`` before the extension (``lw1_0.0.wav`` -> ``lw1_0.wav``); both
    spellings are accepted.
    """
    p = PurePosixPath(str(value).replace("\\", "/"))
    stem = re.sub(r"\.0$", "", p.name[:-4] if p.name.lower().endswith(".wav") else p.name)
    return str(PurePosixPath(_spec()["paths"]["audio_dir"]) / f"{stem}.wav")


def read_meg_masc_events(path: str | os.PathLike[str], sfreq: float) -> dict[str, np.ndarray]:
    """Parse one recording's ``_events.tsv``.

    Parameters
    ----------
    path : path-like
        The events file.
    sfreq : float
        Rate of the recording (to turn onsets into samples when no ``sample`` column exists).

    Returns
    -------
    events : dict of str to ndarray, each of shape (n_events,)
        ``onset`` (s from the recording start), ``sample`` (0-based), ``kind``, ``word``, ``phoneme``,
        ``sound`` (``stimuli/audio/<stem>.wav``), ``story``, ``sequence`` (the sentence / word-list id, or
        ``""``), ``sound_offset`` (s since the start of the event's wav file; NaN when no ``sound`` event
        precedes it).
    """
    ev = _spec()["events"]
    path = Path(path)
    cols, onset = _speech.read_events_table(path, ev["columns"], "word onsets",
                                            "Check that this is a MEG-MASC events file")
    if "sample" in cols and all(v not in ("n/a", "") for v in cols["sample"]):
        sample = np.array([float(v) for v in cols["sample"]])
        bad = np.abs(sample - onset * sfreq) > 1.5
        if bad.any():
            raise MetadataMismatchError(format_error(
                "sfreq", f"events whose sample = onset x {sfreq:g} Hz", f"{int(bad.sum())} rows disagreeing in {path}",
                "The events file belongs to another recording or rate; use the matching files"))
    else:
        sample = np.round(onset * sfreq)
    n = len(onset)
    out: dict[str, list[Any]] = {k: [] for k in ("kind", "word", "phoneme", "sound", "story", "sequence")}
    for i, text in enumerate(cols["trial_type"]):
        d = _parse_description(text, f"{path}: row {i + 2}")
        out["kind"].append(str(d.get(ev["kind_key"], "")))
        out["word"].append(str(d.get(ev["word_key"], "") or ""))
        out["phoneme"].append(str(d.get(ev["phoneme_key"], "") or ""))
        out["sound"].append(_sound_path(d[ev["sound_key"]]) if d.get(ev["sound_key"]) else "")
        out["story"].append(str(d.get(ev["story_key"], "") or ""))
        seq = d.get(ev["sequence_key"], "")
        out["sequence"].append("" if seq in (None, "") else str(int(seq) if isinstance(seq, float) and
                                                                seq.is_integer() else seq))
    kind = np.array(out["kind"], dtype=str)
    sound = np.array(out["sound"], dtype=str)
    offset = np.full(n, np.nan)
    started: dict[str, float] = {}
    for i in np.argsort(onset, kind="stable"):
        if kind[i] == ev["sound_kind"] and sound[i]:
            started[sound[i]] = onset[i]
        if sound[i] in started:
            offset[i] = onset[i] - started[sound[i]]
    res = {"onset": onset, "sample": sample, "kind": kind, "sound": sound, "sound_offset": offset}
    res.update({k: np.array(out[k], dtype=str) for k in ("word", "phoneme", "story", "sequence")})
    return res


def meg_masc_splits(root: str | os.PathLike[str], *, test_fraction: float | None = None,
                    val_fraction: float | None = None) -> dict[str, str]:
    """Split of every wav file under ``stimuli/audio``: ``{"stimuli/audio/lw1_0.wav": "test", ...}``.

    Files are ranked by the SHA-1 of their name (independent of which subjects are read); the first
    ``ceil(test_fraction * n)`` ranks are test, the next ``ceil(val_fraction * n)`` validation.
    """
    tf, vf = _speech.split_fractions(_spec()["segments"], test_fraction, val_fraction)
    folder = Path(root) / _spec()["paths"]["audio_dir"]
    names = sorted(p.name for p in folder.glob("*.wav")) if folder.is_dir() else []
    if not names:
        raise MissingFileError(format_error("root", f"the stimuli wav files under {folder}", "none",
                                            "Download the stimuli/ folder of ds004276 with the recordings"))
    rel = _spec()["paths"]["audio_dir"]
    return _speech.rank_splits([f"{rel}/{name}" for name in names], tf, vf)


def load_meg_masc_audio(root: str | os.PathLike[str], sound: str, *, sr: int | None = 16000) -> tuple[np.ndarray, int]:
    """Read one stimulus wav as mono float32, resampled to ``sr`` (polyphase, anti-aliased).

    Parameters
    ----------
    root : path-like
        BIDS root.
    sound : str
        ``"stimuli/audio/lw1_0.wav"`` (what :func:`read_meg_masc_events` returns) or a file name.
    sr : int or None
        Output rate in Hz (wav2vec2: 16000); None keeps the file's.

    Returns
    -------
    wave : ndarray of shape (n_samples,)
        In [-1, 1].
    sr : int
    """
    from fractions import Fraction

    from scipy.io import wavfile
    from scipy.signal import resample_poly

    path = Path(root) / (sound if "/" in sound else f"{_spec()['paths']['audio_dir']}/{sound}")
    if not path.is_file():
        raise MissingFileError(format_error("sound", "a wav file of the stimuli folder", f"nothing at {path}",
                                            "Download the stimuli/ folder of ds004276"))
    try:
        rate, data = wavfile.read(path)
    except (ValueError, OSError) as exc:
        raise DataIntegrityError(format_error("sound", "a readable PCM wav file", f"{path} ({exc})",
                                              "The file is truncated; download it again")) from exc
    x = np.asarray(data)
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max)
    x = x.astype(np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if sr is not None and int(sr) != int(rate):
        f = Fraction(int(sr), int(rate))
        x = resample_poly(x, f.numerator, f.denominator).astype(np.float32)
        rate = int(sr)
    return x, int(rate)


def sensor_positions_2d(info: Any, picks: Sequence[str]) -> np.ndarray:
    """2-D sensor positions in [0, 1] (azimuthal equidistant projection of the 3-D positions about their centre).

    Returns
    -------
    pos : ndarray of shape (n_channels, 2)
    """
    idx = [info["ch_names"].index(c) for c in picks]
    xyz = np.array([info["chs"][i]["loc"][:3] for i in idx], dtype=np.float64)
    if not np.isfinite(xyz).all() or np.allclose(xyz, 0):
        raise MetadataMismatchError(format_error("info", "sensor positions in the recording", "none or NaN",
                                                 "Use a recording with its sensor geometry"))
    centre = xyz.mean(axis=0) - np.array([0.0, 0.0, np.ptp(xyz[:, 2]) / 2])
    d = xyz - centre
    r = np.linalg.norm(d, axis=1)
    theta = np.arccos(np.clip(d[:, 2] / np.where(r > 0, r, 1), -1, 1))
    phi = np.arctan2(d[:, 1], d[:, 0])
    xy = np.column_stack([theta * np.cos(phi), theta * np.sin(phi)])
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    return (xy - lo) / np.where(hi > lo, hi - lo, 1.0)


def _open(path: Path, *, raw_sfreq: float, picks: Any, preload: bool, verbose: Any) -> dict[str, Any]:
    from ..io.meeg import read_raw

    raw = read_raw(path, preload=preload, verbose=_mne_verbose(verbose))
    sf = float(raw.info["sfreq"])
    _speech.check_recording_rate(sf, raw_sfreq, path, "MEG-MASC", _spec()["dataset"]["sfreq"],
                                 _sibling(path, "meg.json"))
    events = read_meg_masc_events(_sibling(path, "events.tsv"), sf)
    kept = _speech.pick_meg_channels(raw, picks, _sibling(path, "channels.tsv"), path)
    return {"raw": raw, "sfreq": sf, "events": events, "kept": kept}


@fill_doc
def load_meg_masc(
    root: str | os.PathLike[str],
    subject: Any,
    *,
    sessions: Sequence[int] | None = None,
    tasks: Sequence[int] | None = None,
    tmin: float | None = None,
    tmax: float | None = None,
    sfreq: float | None = None,
    baseline: tuple[float | None, float | None] | None | str = "spec",
    l_freq: float | None = None,
    h_freq: float | None = None,
    picks: str | Sequence[str] = "meg",
    raw_sfreq: float | None = None,
    ch_names: Sequence[str] | None = None,
    test_fraction: float | None = None,
    val_fraction: float | None = None,
    verbose: Any = None,
) -> Trials:
    """Load one MEG-MASC subject as speech segments around word onsets (:class:`Trials`).

    Parameters
    ----------
    root : path-like
        BIDS root of ds004276 (holding ``sub-01/`` ... and ``stimuli/audio/``).
    subject : int or str
        1..27, ``"sub-01"`` or ``"meg-masc/sub-01"``.
    sessions, tasks : sequence of int or None
        Sessions (0, 1) and stories (tasks 0..3) to read; None: all on disk.
    tmin, tmax : float or None
        Segment window around each word onset, ``tmax`` excluded (default -0.5..2.5 s: 360 samples at 120 Hz).
    sfreq : float or None
        Resample each recording to this rate (polyphase, anti-aliased); default the spec's 120 Hz.
    baseline : tuple or None or "spec"
        Interval whose mean is subtracted from each segment; ``"spec"``: the paper's first 0.3 s
        (-0.5..-0.2 s); None: no baseline.
    l_freq, h_freq : float or None
        Band-pass the continuous recording before resampling; None: no filter.
    picks : "meg" or sequence of str
        ``"meg"``: the MEG sensors (reference sensors and trigger / misc channels dropped) minus bad ones.
    raw_sfreq : float or None
        Expected recording rate (default the spec's 1000 Hz); another rate raises.
    ch_names : sequence of str or None
        Expected channel set (e.g. a trained model's); a different set raises. The output follows its order.
    test_fraction, val_fraction : float or None
        Fractions of wav files in test and validation (default 0.2 / 0.1; see :func:`meg_masc_splits`).
    %(verbose)s

    Returns
    -------
    trials : Trials
        ``X`` float32 of shape (n_segments, n_channels, n_times) in tesla; ``stimulus_ids``
        ``"<wav stem>@<ms>"``; ``split`` from the segment's wav file; ``texts`` the word at the onset;
        ``metadata`` with ``sound`` (``stimuli/audio/<stem>.wav``), ``sound_offset`` (s of the word onset in
        the wav), ``sequence`` (sentence id), ``story``, ``session``, ``task``; ``provenance`` records every
        choice, with ``sensor_positions`` (n_channels x 2, in [0, 1]) for spatial attention.
    """
    from .._core.versions import package_versions

    spec = _spec()
    s = _subject(subject)
    root = Path(root)
    win = _speech.segment_window(spec["segments"], tmin, tmax, sfreq, baseline)
    out_sf, n_times, i0 = win.sfreq, win.n_times, win.i0
    expected_raw = float(spec["dataset"]["sfreq"] if raw_sfreq is None else raw_sfreq)
    splits = meg_masc_splits(root, test_fraction=test_fraction, val_fraction=val_fraction)
    recs = find_meg_masc_recordings(root, s, sessions=sessions, tasks=tasks)
    Xs: list[np.ndarray] = []
    cols: dict[str, list[Any]] = {k: [] for k in ("id", "split", "word", "sound", "offset", "sequence", "story",
                                                  "session", "task")}
    names: list[str] | None = list(ch_names) if ch_names is not None else None
    positions = None
    n_unknown_sound = n_no_offset = 0
    ev_spec = spec["events"]
    for ses, task, path in progress(recs, desc=f"meg-masc {_subject_id(s)}", unit="recording", verbose=verbose):
        info = _open(path, raw_sfreq=expected_raw, picks=picks, preload=True, verbose=verbose)
        raw, ev = info["raw"], info["events"]
        names = _speech.merge_channel_set(names, info["kept"], expected_given=ch_names is not None, path=path)
        raw.pick(names)
        if positions is None:
            positions = sensor_positions_2d(raw.info, names)
        _speech.filter_resample(raw, l_freq, h_freq, out_sf, verbose)
        words = np.flatnonzero(ev["kind"] == ev_spec["word_kind"])
        n_unknown_sound += int(sum(ev["sound"][i] not in splits for i in words))
        n_no_offset += int(np.isnan(ev["sound_offset"][words]).sum())
        words = np.array([i for i in words if ev["sound"][i] in splits and np.isfinite(ev["sound_offset"][i])],
                         dtype=np.int64)
        if not len(words):
            continue
        samples = np.round(ev["onset"][words] * out_sf).astype(np.int64)
        _check_windows(samples, words + 2, raw.n_times, i0, i0 + n_times - 1, path, out_sf)
        x = _speech.cut_segments(raw.get_data(), samples, win)
        _speech.check_segments_finite(x, "MEG data", names, f"{path} (meg-masc/{_subject_id(s)})",
                                      "The recording holds NaN/inf samples: mark the channel bad in its _channels.tsv")
        Xs.append(x)
        for i in words:
            snd, off = ev["sound"][i], float(ev["sound_offset"][i])
            cols["id"].append(_speech.stimulus_id(snd, off))
            cols["split"].append(splits[snd])
            cols["word"].append(ev["word"][i])
            cols["sound"].append(snd)
            cols["offset"].append(off)
            cols["sequence"].append(ev["sequence"][i] or f"{PurePosixPath(snd).stem}")
            cols["story"].append(ev["story"][i])
        cols["session"] += [ses] * len(words)
        cols["task"] += [task] * len(words)
    if not Xs:
        raise ValidationError(format_error("events", "word events whose wav file is in stimuli/audio",
                                           f"none in {len(recs)} recording(s) of {_subject_id(s)}",
                                           "Check the events files (kind 'word') and the stimuli folder"))
    provenance = {
        "dataset": "meg-masc", "loader": "neurodecode.data.load_meg_masc", "root": str(root),
        "subject": f"meg-masc/{_subject_id(s)}", "files": [str(p) for _, _, p in recs],
        "sessions": sorted({x for x, _, _ in recs}), "tasks": sorted({t for _, t, _ in recs}),
        "raw_sfreq": expected_raw, "sfreq": out_sf, **_speech.window_provenance(win, l_freq, h_freq),
        "segments": "one per word onset (events kind 'word'); window [tmin, tmax) s",
        "picks": picks if isinstance(picks, str) else list(picks), "n_channels": len(names or []),
        "sensor_positions": _speech.rounded_positions(positions),
        "split": "by wav file (SHA-1 rank of its name): test 20 %, val 10 % (meg_masc_splits)",
        "stimulus_ids": "<wav stem>@<word onset in the wav, ms>",
        "n_words_without_wav": n_unknown_sound, "n_words_without_sound_onset": n_no_offset,
        "versions": package_versions(("numpy", "mne", "scipy")),
    }
    return _speech.speech_trials(
        np.concatenate(Xs), window=win, subject=f"meg-masc/{_subject_id(s)}", ch_names=names or [],
        stimulus_ids=cols["id"], split=cols["split"], texts=cols["word"], sound=cols["sound"],
        sound_offset=cols["offset"], sequence=cols["sequence"], story=cols["story"], session=cols["session"],
        task=cols["task"], provenance=provenance)


def check_meg_masc(
    root: str | os.PathLike[str], subjects: Sequence[Any] | None = None, *, raw_sfreq: float | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Check a MEG-MASC tree without loading the samples; return ``(report, problems)``.

    Reads each recording's header, its events and channels files; checks the rate, the channel set across
    recordings, that every word's wav file exists, that every 3 s segment lies inside its recording, and that
    no session / story is missing while others are present. Nothing is raised: every problem is listed.
    """
    root = Path(root)
    spec = _spec()
    seg = spec["segments"]
    expected_raw = float(spec["dataset"]["sfreq"] if raw_sfreq is None else raw_sfreq)
    problems: list[str] = []
    report: dict[str, Any] = {"subjects": {}, "warnings": []}
    splits = _speech.splits_or_problem(lambda: meg_masc_splits(root), problems)
    if subjects is None:
        subjects = sorted(int(m.group(1)) for p in root.glob("sub-*") if (m := re.fullmatch(r"sub-(\d+)", p.name)))
        if not subjects:
            problems.append(f"no subject found: missing {relative_path('meg_masc', 'raw_con', subject=1, session=0, task=0)}"
                            f" (or _meg.fif) under {root}")
    all_pairs: set[tuple[int, int]] = set()
    per_subject: dict[int, set[tuple[int, int]]] = {}
    for subject in subjects:
        try:
            s = _subject(subject)
            recs = find_meg_masc_recordings(root, s)
        except Exception as exc:
            problems.append(f"subject {subject}: {exc}")
            continue
        per_subject[s] = {(ses, task) for ses, task, _ in recs}
        all_pairs |= per_subject[s]
        names: list[str] | None = None
        n_words = 0
        sounds: set[str] = set()
        for ses, task, path in recs:
            label = f"{_subject_id(s)} ses-{ses} task-{task}"
            try:
                info = _open(path, raw_sfreq=expected_raw, picks="meg", preload=False, verbose=None)
                if names is None:
                    names = info["kept"]
                elif set(info["kept"]) != set(names):
                    problems.append(f"{label}: channel set differs from the first recording: "
                                    f"{_set_diff(names, info['kept'])}")
                ev = info["events"]
                words = np.flatnonzero(ev["kind"] == spec["events"]["word_kind"])
                lacking = sorted({ev["sound"][i] for i in words} - set(splits)) if splits else []
                if lacking:
                    problems.append(f"{label}: {len(lacking)} wav file(s) named by its words are missing: "
                                    f"{lacking[:5]}")
                sf = info["sfreq"]
                i0, i1 = int(round(float(seg["tmin"]) * sf)), int(round(float(seg["tmax"]) * sf)) - 1
                _check_windows(ev["sample"][words], words + 2, info["raw"].n_times, i0, i1, path, sf)
                n_words += len(words)
                sounds |= {ev["sound"][i] for i in words}
            except Exception as exc:
                problems.append(f"{label}: {exc}")
        report["subjects"][str(s)] = {"recordings": len(recs), "n_channels": len(names or []), "words": n_words,
                                      "wav_files": len(sounds)}
    for s, pairs in sorted(per_subject.items()):
        lacking_pairs = sorted(all_pairs - pairs)
        if lacking_pairs:
            problems.append(f"{_subject_id(s)}: missing " + ", ".join(f"ses-{a} task-{b}" for a, b in lacking_pairs)
                            + " (present for other subjects of this tree)")
    return report, problems
