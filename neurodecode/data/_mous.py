"""MOUS (Schoffelen et al. 2019), auditory part: CTF recordings of people listening to Dutch sentences, cut into
speech segments around word onsets.

Layout (``data_specs/mous.toml``; Donders Repository DSC_3011020.09_236, BIDS)::

    sub-A<NNNN>/meg/sub-A<NNNN>_task-auditory_meg.ds      (CTF folder; or _meg.fif, what fixtures write)
                   sub-A<NNNN>_task-auditory_events.tsv    (FieldTrip data2bids: onset duration sample type value)
                   sub-A<NNNN>_task-auditory_channels.tsv  sub-A<NNNN>_task-auditory_meg.json
    stimuli/audio_files/EQ_Ramp_Int2_Int1LPF<NNN>.wav       (one sentence or word list per wav)
    stimuli/stimuli.txt                                     ("<uid> <sentence>" lines; not needed)
    derivatives/phonemes/EQ_Ramp_Int2_Int1LPF<NNN>.TextGrid (word timings: NOT in the Donders release, see below)

Where the facts come from (read for facts only, nothing copied): brainmagick's study behind its ``audio_mous``
selection (``facebookresearch/brainmagick`` ``bm/studies/schoffelen2019/{schoffelen2019,paths,preproc}.py``):
subjects ``sub-A2002`` .. ``sub-A2125``, the raw ``*.ds`` that is not ``rest``, 1200 Hz, 273 data channels, the
wav named by the Presentation code ``Start File <NNN>.wav``, the ``Audio onset`` event that follows it as the
start of the wav (word time = Audio onset + TextGrid word start), the word timings in
``derivatives/phonemes/EQ_Ramp_Int2_Int1LPF%.3i.TextGrid`` (Praat TextGrids from a forced aligner, word tier
``ORT-MAU``, phoneme tier ``MAU``). brainmagick does not find these TextGrids in the release: it downloads them
from ``https://ai.honu.io/papers/brainmagick/derivatives.zip`` into ``derivatives/``; so must a user here.
Public analysis scripts that read the BIDS release show the events.tsv rows used here (``type`` ``Sound`` with a
value holding ``Start File <NNN>.wav``, ``Nothing`` rows ``Audio onset`` / ``End of file``, ``Picture`` rows
``ZINNEN`` / ``WOORDEN`` opening a sentence / word-list block). FieldTrip's ``data2bids`` (``event2table``),
with which the release was written, sets ``onset = (sample - 1) / Fs`` with a 1-based ``sample``.

The events.tsv is read, never the Presentation log: each ``Sound`` row opens a wav presentation whose start is
the onset of the next ``Audio onset`` row before the next ``Sound`` / ``End of file`` row (the ``Sound`` row's own
onset when no ``Audio onset`` follows; counted in the provenance). Each word of the wav's TextGrid word tier
(silences dropped) is one segment (Défossez et al. 2023): the window ``tmin``..``tmax`` (default -0.5..2.5 s, 3 s
at 120 Hz) around ``audio onset + word start``. Its stimulus id ``"<wav stem>@<ms>"`` names the audio it was heard
with. Splits are by whole wav file (SHA-1 rank of the name under ``stimuli/audio_files``: the first 20 % test,
the next 10 % validation, the same for every subject).

MNE reads CTF (``mne.io.read_raw_ctf``) but cannot write it: the fixture writes a BIDS FIF twin
(``..._meg.fif``) that this module reads through the same code (a ``.fif`` beside a ``.ds`` wins).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._core.docs import fill_doc
from .._core.errors import DataIntegrityError, MetadataMismatchError, MissingFileError, ValidationError
from .._core.logging import progress
from .._core.specs import load_spec
from .._core.validation import format_error
from . import _speech_segments as _speech
from ._meg_masc import sensor_positions_2d
from ._things_meg import _check_windows, _mne_verbose, _set_diff
from ._trials import Trials

__all__ = ["load_mous", "find_mous_recordings", "read_mous_events", "read_textgrid", "read_mous_word_timings",
           "mous_splits", "load_mous_audio", "check_mous"]

_REC_RE = re.compile(r"^sub-A(\d+)_task-auditory(?:_run-(\d+))?_meg\.(fif|ds)$")


def _spec() -> dict[str, Any]:
    return load_spec("mous")


def _subject(subject: Any) -> int:
    """``2002``, ``"A2002"``, ``"sub-A2002"`` or ``"mous/sub-A2002"`` -> 2002 (auditory subjects only)."""
    ds = _spec()["dataset"]
    lo, hi = int(ds["subject_min"]), int(ds["subject_max"])
    text = str(subject).strip()
    if "/" in text:
        ns, _, text = text.partition("/")
        if ns != ds["subject_namespace"]:
            raise ValidationError(format_error("subject", "a 'mous' subject id", repr(subject), "Use e.g. mous/sub-A2002"))
    m = re.fullmatch(r"(?:sub-)?([AV])?(\d{4})", text)
    if isinstance(subject, bool) or not m or (m.group(1) or "A") != "A" or not lo <= int(m.group(2)) <= hi:
        raise ValidationError(format_error(
            "subject", f"an auditory MOUS subject sub-A{lo}..sub-A{hi} (or its number)", repr(subject),
            "The sub-V1xxx subjects read the sentences (visual task): they have no audio"))
    return int(m.group(2))


def _subject_id(s: int) -> str:
    return str(_spec()["dataset"]["subject_format"]).format(subject=s)


def _rel(key: str, **fields: Any) -> str:
    return str(_spec()["paths"][key]).format(**fields)


def _sound_rel(number: int) -> str:
    """``stimuli/audio_files/EQ_Ramp_Int2_Int1LPF186.wav`` for stimulus 186."""
    return f"{_rel('audio_dir')}/{_rel('audio_file', number=int(number))}"


def _textgrid_rel(number: int) -> str:
    return f"{_rel('word_timings_dir')}/{_rel('word_timings_file', number=int(number))}"


def find_mous_recordings(root: str | os.PathLike[str], subject: Any, *,
                         runs: Sequence[int] | None = None) -> list[tuple[int, Path]]:
    """List a subject's auditory recordings as ``(run, path)``, sorted (run 1 when the name has no ``_run-``;
    a ``.fif`` twin wins over the ``.ds`` folder).

    Parameters
    ----------
    root : path-like
        BIDS root of the MOUS collection.
    subject : int or str
        2002..2125, ``"sub-A2002"`` or ``"mous/sub-A2002"``.
    runs : sequence of int or None
        Runs to keep; None: every one on disk.

    Returns
    -------
    recordings : list of (int, pathlib.Path)
    """
    root = Path(root)
    s = _subject(subject)
    example = _rel("raw_ds", subject=s)
    meg_dir = (root / example).parent
    if not meg_dir.is_dir():
        raise MissingFileError(format_error(
            "root", f"a MOUS BIDS root holding {_subject_id(s)}/meg/", f"nothing at {meg_dir}",
            f"Expected e.g. {example} under {root}; download the collection DSC_3011020.09_236 from the Donders "
            "Repository"))
    found: dict[int, Path] = {}
    for p in sorted(meg_dir.iterdir()):
        m = _REC_RE.match(p.name)
        if m and int(m.group(1)) == s:
            run = int(m.group(2) or 1)
            if run not in found or m.group(3) == "fif":
                found[run] = p
    out = [(run, p) for run, p in sorted(found.items()) if runs is None or run in {int(r) for r in runs}]
    if not out:
        raise MissingFileError(format_error(
            "root", f"auditory recordings of {_subject_id(s)}" + ("" if runs is None else f" (runs {list(runs)})"),
            f"none under {meg_dir}", f"Expected {example} (or _meg.fif)"))
    return out


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(re.sub(r"_meg\.(fif|ds)$", f"_{suffix}", path.name))


def read_mous_events(path: str | os.PathLike[str], sfreq: float) -> dict[str, Any]:
    """Parse one recording's ``_events.tsv`` into its wav presentations.

    Parameters
    ----------
    path : path-like
        The events file (FieldTrip ``data2bids`` columns ``onset``, ``duration``, ``sample``, ``type``, ``value``).
    sfreq : float
        Rate of the recording: a ``sample`` column must agree with ``onset`` at this rate.

    Returns
    -------
    events : dict
        ``number`` (int array, the stimulus number of each wav played, in order), ``sound`` (``stimuli/...wav``
        paths), ``onset`` (s from the recording start where the wav starts), ``has_audio_onset`` (bool: the
        ``Audio onset`` row was found), ``context`` (``"sentence"``, ``"word_list"`` or ``""``), ``row`` (1-based
        line of the ``Sound`` row in the file), all of shape (n_sounds,).
    """
    ev = _spec()["events"]
    path = Path(path)
    cols, onset = _speech.read_events_table(path, ev["columns"], "sound onsets",
                                            "Check that this is a MOUS events file (FieldTrip data2bids)")
    if "sample" in cols:
        try:
            sample = np.array([float(v) if v not in ("n/a", "") else np.nan for v in cols["sample"]])
        except ValueError as exc:
            raise DataIntegrityError(format_error(f"{path}:sample", "numbers or n/a", str(exc))) from exc
        expected = onset * float(sfreq) + float(ev["sample_base"])
        bad = np.isfinite(sample) & (np.abs(sample - expected) > 1.5)
        if bad.any():
            raise MetadataMismatchError(format_error(
                "sfreq", f"events whose sample = onset x {sfreq:g} Hz + {ev['sample_base']}",
                f"{int(bad.sum())} rows disagreeing in {path} (first: line {int(np.flatnonzero(bad)[0]) + 2})",
                "The events file belongs to another recording or rate; use the matching files"))
    types = [t.strip() for t in cols["type"]]
    values = [v.strip() for v in cols["value"]]
    sound_re, audio_re, end_re = (re.compile(ev[k]) for k in ("sound_pattern", "audio_onset_pattern", "end_pattern"))
    contexts = {k: v for k, v in ev["contexts"].items()}
    context = ""
    out: dict[str, list[Any]] = {k: [] for k in ("number", "onset", "has_audio_onset", "context", "row")}
    open_sound = False
    for i in np.argsort(onset, kind="stable"):
        t, v = types[i], values[i]
        if t == ev["block_type"]:
            hit = [c for c in contexts if re.search(rf"\b{c}\b", v)]
            if hit:
                context = contexts[hit[0]]
        m = sound_re.search(v) if t == ev["sound_type"] else None
        if m:
            out["number"].append(int(m.group(1)))
            out["onset"].append(float(onset[i]))
            out["has_audio_onset"].append(False)
            out["context"].append(context)
            out["row"].append(int(i) + 2)
            open_sound = True
        elif open_sound and audio_re.search(v):
            out["onset"][-1] = float(onset[i])
            out["has_audio_onset"][-1] = True
            open_sound = False
        elif open_sound and end_re.search(v):
            open_sound = False
    return {"number": np.array(out["number"], dtype=np.int64),
            "sound": np.array([_sound_rel(n) for n in out["number"]], dtype=str),
            "onset": np.array(out["onset"], dtype=np.float64),
            "has_audio_onset": np.array(out["has_audio_onset"], dtype=bool),
            "context": np.array(out["context"], dtype=str), "row": np.array(out["row"], dtype=np.int64)}


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1].replace('""', '"')
    return text


def read_textgrid(path: str | os.PathLike[str]) -> dict[str, list[tuple[float, float, str]]]:
    """Read the interval tiers of a Praat TextGrid (the long text format WebMAUS writes).

    Returns
    -------
    tiers : dict of str to list of (float, float, str)
        Tier name -> its intervals ``(xmin, xmax, text)`` in seconds from the start of the audio.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(format_error("word_timings", "a Praat TextGrid of word timings", f"nothing at {path}",
                                            "Put brainmagick's derivatives (phonemes/*.TextGrid) under derivatives/"))
    raw = path.read_bytes()
    enc = "utf-16" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8"
    try:
        text = raw.decode(enc)
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    if "TextGrid" not in text[:200]:
        raise DataIntegrityError(format_error(str(path), "a Praat TextGrid ('Object class = \"TextGrid\"')",
                                              repr(text[:60]), "The file is truncated or not a TextGrid"))
    tiers: dict[str, list[tuple[float, float, str]]] = {}
    current: list[tuple[float, float, str]] | None = None
    interval: dict[str, Any] = {}
    try:
        for line in text.splitlines():
            s = line.strip()
            if s.startswith("item [") and s.endswith(":") and s != "item []:":
                current = None
            elif s.startswith("name =") and current is None:
                current = tiers.setdefault(_unquote(s.split("=", 1)[1]), [])
            elif s.startswith("intervals [") and current is not None:
                interval = {}
            elif current is not None and s.startswith(("xmin =", "xmax =")) and interval is not None:
                interval[s[:4]] = float(re.sub(r"[^0-9eE+\-.]", "", s.split("=", 1)[1]))
            elif current is not None and s.startswith("text =") and {"xmin", "xmax"} <= set(interval):
                current.append((interval["xmin"], interval["xmax"], _unquote(s.split("=", 1)[1])))
                interval = {}
    except ValueError as exc:
        raise DataIntegrityError(format_error(str(path), "numeric xmin/xmax in a Praat TextGrid", str(exc),
                                              "The file is corrupted; extract it again")) from exc
    if not tiers:
        raise DataIntegrityError(format_error(str(path), "interval tiers in a Praat TextGrid (long text format)",
                                              "none", "The file is truncated (extract it again) or in Praat's short "
                                              "format (save it as a text file from Praat)"))
    return tiers


def read_mous_word_timings(root: str | os.PathLike[str], number: int) -> list[tuple[str, float, float]]:
    """The words of wav ``number`` with their start and stop in the wav (s), from its TextGrid word tier.

    Returns
    -------
    words : list of (str, float, float)
        Silences (``""``, ``"<p:>"``) dropped, sorted by start.
    """
    tg = _spec()["textgrid"]
    path = Path(root) / _textgrid_rel(number)
    tiers = read_textgrid(path)
    if tg["word_tier"] not in tiers:
        raise DataIntegrityError(format_error(str(path), f"a word tier named {tg['word_tier']!r}",
                                              f"tiers {sorted(tiers)}", "Use the MAUS TextGrids of brainmagick"))
    silences = set(tg["silences"])
    words = [(w.strip(), a, b) for a, b, w in tiers[tg["word_tier"]] if w.strip() not in silences]
    return sorted(words, key=lambda r: r[1])


def mous_splits(root: str | os.PathLike[str], *, test_fraction: float | None = None,
                val_fraction: float | None = None) -> dict[str, str]:
    """Split of every wav under ``stimuli/audio_files``: ``{"stimuli/audio_files/EQ_...186.wav": "test", ...}``.

    Files are ranked by the SHA-1 of their name (independent of which subjects are read); the first
    ``ceil(test_fraction * n)`` ranks are test, the next ``ceil(val_fraction * n)`` validation.
    """
    tf, vf = _speech.split_fractions(_spec()["segments"], test_fraction, val_fraction)
    rel = _rel("audio_dir")
    folder = Path(root) / rel
    names = sorted(p.name for p in folder.glob("*.wav")) if folder.is_dir() else []
    if not names:
        raise MissingFileError(format_error("root", f"the stimulus wav files under {folder}", "none",
                                            "Download the stimuli/ folder of the MOUS collection"))
    return _speech.rank_splits([f"{rel}/{name}" for name in names], tf, vf)


def load_mous_audio(root: str | os.PathLike[str], sound: str | int, *, sr: int | None = 16000) -> tuple[np.ndarray, int]:
    """Read one stimulus wav as mono float32 (channels averaged), resampled to ``sr``.

    Parameters
    ----------
    root : path-like
        BIDS root.
    sound : str or int
        ``"stimuli/audio_files/EQ_Ramp_Int2_Int1LPF186.wav"`` (what the loader's ``metadata["sound"]`` holds) or
        the stimulus number (186).
    sr : int or None
        Output rate in Hz; None keeps the file's.

    Returns
    -------
    wave : ndarray of shape (n_samples,)
    sr : int
    """
    from ._meg_masc import load_meg_masc_audio

    rel = _sound_rel(int(sound)) if not isinstance(sound, str) or sound.isdigit() else sound
    if not (Path(root) / rel).is_file():
        raise MissingFileError(format_error("sound", "a wav file of stimuli/audio_files", f"nothing at {Path(root) / rel}",
                                            "Download the stimuli/ folder of the MOUS collection"))
    return load_meg_masc_audio(root, rel, sr=sr)


def _open(path: Path, *, raw_sfreq: float, picks: Any, verbose: Any) -> dict[str, Any]:
    """Read one recording's header, check its rate and sidecar, parse its events and choose its channels."""
    from ..io.meeg import read_raw

    raw = read_raw(path, preload=False, verbose=_mne_verbose(verbose))
    sf = float(raw.info["sfreq"])
    _speech.check_recording_rate(sf, raw_sfreq, path, "MOUS", _spec()["dataset"]["sfreq"], _sibling(path, "meg.json"))
    events = read_mous_events(_sibling(path, "events.tsv"), sf)
    kept = _speech.pick_meg_channels(raw, picks, _sibling(path, "channels.tsv"), path)
    return {"raw": raw, "sfreq": sf, "events": events, "kept": kept}


def _words(root: Path, events: dict[str, Any], splits: dict[str, str], contexts: set[str] | None,
           cache: dict[int, list[tuple[str, float, float]] | None]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Word onsets of one recording: one dict per word whose wav and TextGrid exist; counts of what was dropped."""
    counts = {"sounds": 0, "sounds_without_wav": 0, "sounds_without_word_timings": 0,
              "sounds_without_audio_onset": int((~events["has_audio_onset"]).sum())}
    rows: list[dict[str, Any]] = []
    for k in range(len(events["number"])):
        ctx = str(events["context"][k])
        if contexts is not None and ctx not in contexts:
            continue
        counts["sounds"] += 1
        number, snd = int(events["number"][k]), str(events["sound"][k])
        if snd not in splits:
            counts["sounds_without_wav"] += 1
            continue
        if number not in cache:
            cache[number] = (read_mous_word_timings(root, number)
                             if (root / _textgrid_rel(number)).is_file() else None)
        words = cache[number]
        if words is None:
            counts["sounds_without_word_timings"] += 1
            continue
        for w, start, _ in words:
            rows.append({"word": w, "offset": float(start), "time": float(events["onset"][k]) + float(start),
                         "sound": snd, "number": number, "context": ctx, "row": int(events["row"][k])})
    return rows, counts


def _read_block(raw: Any, names: Sequence[str], *, l_freq: float | None, h_freq: float | None, out_sf: float,
                verbose: Any) -> np.ndarray:
    """Channels ``names`` of ``raw`` read, band-passed and resampled: shape (len(names), n_samples_out)."""
    r = raw.copy().pick(list(names))
    r.load_data(verbose=_mne_verbose(verbose))
    return _speech.filter_resample(r, l_freq, h_freq, out_sf, verbose).get_data()


@fill_doc
def load_mous(
    root: str | os.PathLike[str],
    subject: Any,
    *,
    runs: Sequence[int] | None = None,
    contexts: Sequence[str] | None = None,
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
    block_channels: int = 64,
    verbose: Any = None,
) -> Trials:
    """Load one auditory MOUS subject as speech segments around word onsets (:class:`Trials`).

    Parameters
    ----------
    root : path-like
        BIDS root of the MOUS collection (holding ``sub-A2002/``, ``stimuli/audio_files/`` and
        ``derivatives/phonemes/``).
    subject : int or str
        2002..2125, ``"sub-A2002"`` or ``"mous/sub-A2002"``.
    runs : sequence of int or None
        Runs to read (1 where a recording is not split); None: all on disk.
    contexts : sequence of str or None
        Keep wavs heard in these blocks: ``"sentence"`` (ZINNEN), ``"word_list"`` (WOORDEN); None: all.
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
        ``"meg"``: the MEG sensors (CTF reference sensors and trigger / EEG / misc channels dropped) minus bad
        ones (``info["bads"]`` or ``status`` bad in ``_channels.tsv``).
    raw_sfreq : float or None
        Expected recording rate (default the spec's 1200 Hz); another rate raises.
    ch_names : sequence of str or None
        Expected channel set (e.g. a trained model's); a different set raises. The output follows its order.
    test_fraction, val_fraction : float or None
        Fractions of wav files in test and validation (default 0.2 / 0.1; see :func:`mous_splits`).
    block_channels : int
        Channels read, filtered and resampled at once (a 45 min recording at 1200 Hz holds 26 MB per channel
        in float64): bounds memory; the result does not depend on it.
    %(verbose)s

    Returns
    -------
    trials : Trials
        ``X`` float32 of shape (n_segments, n_channels, n_times) in tesla; ``stimulus_ids``
        ``"<wav stem>@<ms>"``; ``split`` from the segment's wav file; ``texts`` the word; ``metadata`` with
        ``sound`` (``stimuli/audio_files/<stem>.wav``), ``sound_offset`` (s of the word onset in the wav),
        ``sequence`` (the stimulus number of the wav), ``story`` (``"sentence"`` or ``"word_list"``),
        ``session`` (0: MOUS has one), ``task`` (the run); ``provenance`` records every choice, with
        ``sensor_positions`` (n_channels x 2, in [0, 1]) for spatial attention.
    """
    from .._core.versions import package_versions

    spec = _spec()
    s = _subject(subject)
    root = Path(root)
    win = _speech.segment_window(spec["segments"], tmin, tmax, sfreq, baseline)
    out_sf, n_times, i0 = win.sfreq, win.n_times, win.i0
    if int(block_channels) < 1:
        raise ValidationError(format_error("block_channels", "a positive number of channels", block_channels))
    known = set(spec["events"]["contexts"].values())
    wanted_ctx = None if contexts is None else {str(c) for c in contexts}
    if wanted_ctx is not None and not wanted_ctx <= known:
        raise ValidationError(format_error("contexts", f"a subset of {sorted(known)}", sorted(wanted_ctx)))
    expected_raw = float(spec["dataset"]["sfreq"] if raw_sfreq is None else raw_sfreq)
    splits = mous_splits(root, test_fraction=test_fraction, val_fraction=val_fraction)
    recs = find_mous_recordings(root, s, runs=runs)
    Xs: list[np.ndarray] = []
    cols: dict[str, list[Any]] = {k: [] for k in ("id", "split", "word", "sound", "offset", "sequence", "story",
                                                  "task")}
    names: list[str] | None = list(ch_names) if ch_names is not None else None
    positions = None
    totals: dict[str, int] = {}
    grades: list[Any] = []
    cache: dict[int, list[tuple[str, float, float]] | None] = {}
    for run, path in progress(recs, desc=f"mous {_subject_id(s)}", unit="recording", verbose=verbose):
        info = _open(path, raw_sfreq=expected_raw, picks=picks, verbose=verbose)
        raw = info["raw"]
        names = _speech.merge_channel_set(names, info["kept"], expected_given=ch_names is not None, path=path)
        if positions is None:
            positions = sensor_positions_2d(raw.info, names)
        grades.append(getattr(raw, "compensation_grade", None))
        words, counts = _words(root, info["events"], splits, wanted_ctx, cache)
        for k, v in counts.items():
            totals[k] = totals.get(k, 0) + v
        if not words:
            continue
        n_out = int(round(raw.n_times * out_sf / info["sfreq"])) if not np.isclose(out_sf, info["sfreq"]) \
            else raw.n_times
        samples = np.round(np.array([w["time"] for w in words]) * out_sf).astype(np.int64)
        _check_windows(samples, np.array([w["row"] for w in words]), n_out, i0, i0 + n_times - 1, path, out_sf)
        step = int(block_channels)
        data = np.concatenate([_read_block(raw, names[j:j + step], l_freq=l_freq, h_freq=h_freq, out_sf=out_sf,
                                           verbose=verbose) for j in range(0, len(names), step)])
        last = int(samples.max()) + i0 + n_times - 1  # the last sample any window reads
        if last >= data.shape[1]:
            raise DataIntegrityError(format_error("events", f"windows inside the resampled recording "
                                                  f"({data.shape[1]} samples)", f"sample {last} in {path}",
                                                  "Shorten tmax"))
        x = _speech.cut_segments(data, samples, win)
        _speech.check_segments_finite(x, "MEG data", names, f"{path} (mous/{_subject_id(s)})",
                                      "The recording holds NaN/inf samples: mark the channel bad in its _channels.tsv")
        Xs.append(x)
        for w in words:
            cols["id"].append(_speech.stimulus_id(w["sound"], w["offset"]))
            cols["split"].append(splits[w["sound"]])
            cols["word"].append(w["word"])
            cols["sound"].append(w["sound"])
            cols["offset"].append(w["offset"])
            cols["sequence"].append(str(w["number"]))
            cols["story"].append(w["context"])
            cols["task"].append(run)
    if not Xs:
        raise ValidationError(format_error(
            "events", "played wavs with their wav file and word-timing TextGrid",
            f"none usable in {len(recs)} recording(s) of {_subject_id(s)} ({totals})",
            f"Check the events files (type 'Sound', 'Start File <NNN>.wav'), {_rel('audio_dir')}/ and "
            f"{_rel('word_timings_dir')}/ (brainmagick's derivatives.zip)"))
    provenance = {
        "dataset": "mous", "loader": "neurodecode.data._mous.load_mous", "root": str(root),
        "subject": f"mous/{_subject_id(s)}", "files": [str(p) for _, p in recs], "runs": [r for r, _ in recs],
        "raw_sfreq": expected_raw, "sfreq": out_sf, "compensation_grade": grades,
        **_speech.window_provenance(win, l_freq, h_freq),
        "segments": "one per word of the wav's TextGrid word tier (ORT-MAU); onset = the events.tsv 'Audio onset' "
                    "after the wav's 'Sound' row + the word start; window [tmin, tmax) s",
        "word_timings": f"{_rel('word_timings_dir')}/{spec['paths']['word_timings_file']}".replace(
            "{number:03d}", "<NNN>") + " (brainmagick derivatives.zip, not in the Donders release)",
        "contexts": None if wanted_ctx is None else sorted(wanted_ctx),
        "picks": picks if isinstance(picks, str) else list(picks), "n_channels": len(names or []),
        "block_channels": int(block_channels),
        "sensor_positions": _speech.rounded_positions(positions),
        "split": "by wav file (SHA-1 rank of its name): test 20 %, val 10 % (mous_splits)",
        "stimulus_ids": "<wav stem>@<word onset in the wav, ms>",
        **{f"n_{k}": v for k, v in totals.items()},
        "versions": package_versions(("numpy", "mne", "scipy")),
    }
    return _speech.speech_trials(
        np.concatenate(Xs), window=win, subject=f"mous/{_subject_id(s)}", ch_names=names or [],
        stimulus_ids=cols["id"], split=cols["split"], texts=cols["word"], sound=cols["sound"],
        sound_offset=cols["offset"], sequence=cols["sequence"], story=cols["story"], session=0, task=cols["task"],
        provenance=provenance)


def check_mous(
    root: str | os.PathLike[str], subjects: Sequence[Any] | None = None, *, raw_sfreq: float | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Check a MOUS auditory tree without loading the samples; return ``(report, problems)``.

    Reads each recording's header, events and channels files; checks the rate, the channel set across subjects,
    that every wav played exists with its word-timing TextGrid, that every 3 s segment lies inside its
    recording, and that each ``Sound`` row is followed by an ``Audio onset`` row. Nothing is raised: every
    problem is listed.
    """
    root = Path(root)
    spec = _spec()
    seg = spec["segments"]
    expected_raw = float(spec["dataset"]["sfreq"] if raw_sfreq is None else raw_sfreq)
    problems: list[str] = []
    report: dict[str, Any] = {"subjects": {}, "warnings": []}
    splits = _speech.splits_or_problem(lambda: mous_splits(root), problems)
    if not (root / _rel("stimuli_text")).is_file():
        report["warnings"].append(f"no {_rel('stimuli_text')} (sentence texts; not needed to load)")
    if subjects is None:
        subjects = sorted(int(m.group(1)) for p in root.glob("sub-A*") if (m := re.fullmatch(r"sub-A(\d{4})", p.name)))
        if not subjects:
            problems.append(f"no subject found: missing {_rel('raw_ds', subject=2002)} (or _meg.fif) under {root}")
    first_names: list[str] | None = None
    first_label = ""
    lacking_wav: set[str] = set()
    lacking_tg: set[int] = set()
    for subject in subjects:
        try:
            s = _subject(subject)
            recs = find_mous_recordings(root, s)
        except Exception as exc:
            problems.append(f"subject {subject}: {exc}")
            continue
        n_words = 0
        n_sounds = 0
        for run, path in recs:
            label = f"{_subject_id(s)} run-{run}"
            try:
                info = _open(path, raw_sfreq=expected_raw, picks="meg", verbose=None)
                if first_names is None:
                    first_names, first_label = info["kept"], label
                elif set(info["kept"]) != set(first_names):
                    problems.append(f"{label}: channel set differs from {first_label}: "
                                    f"{_set_diff(first_names, info['kept'])}")
                ev = info["events"]
                n_sounds += len(ev["number"])
                if not len(ev["number"]):
                    problems.append(f"{label}: no 'Sound' row naming a wav ('Start File <NNN>.wav') in its events")
                no_onset = int((~ev["has_audio_onset"]).sum())
                if no_onset:
                    problems.append(f"{label}: {no_onset} 'Sound' row(s) without a following 'Audio onset' row "
                                    f"(events.tsv lines {ev['row'][~ev['has_audio_onset']][:5].tolist()})")
                missing = sorted({str(x) for x in ev["sound"]} - set(splits)) if splits else []
                if missing:
                    lacking_wav |= set(missing)
                    problems.append(f"{label}: {len(missing)} wav file(s) played are missing: {missing[:5]}")
                no_tg = sorted({int(n) for n in ev["number"] if not (root / _textgrid_rel(int(n))).is_file()})
                if no_tg:
                    lacking_tg |= set(no_tg)
                    problems.append(f"{label}: {len(no_tg)} wav(s) without word timings "
                                    f"({_rel('word_timings_dir')}/...): {[_rel('word_timings_file', number=n) for n in no_tg[:5]]}")
                words, _ = _words(root, ev, splits, None, {})
                sf = info["sfreq"]
                i0, i1 = int(round(float(seg["tmin"]) * sf)), int(round(float(seg["tmax"]) * sf)) - 1
                samples = np.round(np.array([w["time"] for w in words], dtype=np.float64) * sf)
                _check_windows(samples, np.array([w["row"] for w in words], dtype=np.int64),
                               info["raw"].n_times, i0, i1, path, sf)
                n_words += len(words)
            except Exception as exc:
                problems.append(f"{label}: {exc}")
        report["subjects"][_subject_id(s)] = {"recordings": len(recs), "sounds": n_sounds, "words": n_words}
    report["missing_wavs"] = len(lacking_wav)
    report["missing_word_timings"] = len(lacking_tg)
    return report, problems
