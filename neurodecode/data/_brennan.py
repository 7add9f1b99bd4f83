"""Brennan & Hale 2019 EEG (Alice in Wonderland, chapter one), cut into speech segments around word onsets.

Layout (``data_specs/brennan2019.toml``; Deep Blue doi:10.7302/Z29C6VNH, with ``audio.zip`` and ``proc.zip``
unzipped in place)::

    S01.mat ... S49.mat                       FieldTrip raw structure `raw` (one continuous trial, microvolt)
    proc/S01.mat ...                          `proc`: pre-processing parameters of 42 datasets (trl, bad channels)
    audio/DownTheRabbitHoleFinal_SoundFile<k>.wav      the 12 segments of the chapter (k = 1..12)
    AliceChapterOne-EEG.csv                   2129 words: Word, Segment, onset, offset (s in the segment), ...
    datasets.mat                              `use` (33), `low_perf` (8), `high_noise` (8) dataset lists

Facts and their sources (the Deep Blue README; brainmagick ``bm/studies/brennan2019.py``; Brodbeck's Eelbrain
conversion of this release; the authors' ``timelock_single.m`` / ``get_alice2_trials.m``) are listed in the spec
TOML. What matters here:

- The EEG holds 60 electrodes of the easycap M10 layout (``"1"`` .. ``"61"`` without ``"29"``, the online
  reference), ``VEOG`` and sometimes ``Aux5`` (audio copy), in microvolt at 500 Hz. Neither the ``.mat`` files nor
  the word table give the time of the audio in the recording: the segment triggers survive only in each
  subject's ``proc.trl`` (FieldTrip 1-based samples ``[start, stop, offset, segment, tmin, Order]``; ``offset``
  is -150, the 0.3 s before each word). A word's sample is ``start - offset``, which the authors built as the
  segment trigger ``po`` (plus the E-Prime lag) + ``ceil(tmin x 500)``; each segment's ``po`` is recovered from
  all of its rows (which must agree within one sample), and the segment starts at ``(po - 1) / 500`` s.
  brainmagick takes ``start / 500`` as the word onset, 0.3 s early; Eelbrain takes ``po / 500`` (2 ms later).
- Every word of the table is then placed at its segment's start + its ``onset`` (as the Eelbrain conversion
  does), so words whose epoch the authors dropped at the end of a short recording still count where their
  window fits. For S26, S34, S35 and S36 the trigger of segment 1 is missing and ``trl`` labels each segment one
  too low (Eelbrain); the loader relabels them (segment 1's words cannot be placed and are counted).
- Segments and splits follow Défossez et al. (2023) exactly as :mod:`neurodecode.data._meg_masc`: 3 s windows
  from -0.5 s at 120 Hz, the first 0.3 s as baseline, ids ``"<wav stem>@<ms>"``, splits by whole wav file
  (SHA-1 rank of the 12 names of the spec: 3 test, 2 validation, 7 train).
"""

from __future__ import annotations

import csv
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._core.docs import fill_doc
from .._core.errors import DataIntegrityError, MetadataMismatchError, MissingFileError, ValidationError
from .._core.logging import progress
from .._core.specs import load_spec
from .._core.validation import check_option, format_error
from . import _speech_segments as _speech
from ._layout import parse_subject_number
from ._meg_masc import sensor_positions_2d
from ._things_meg import _mne_verbose, _set_diff
from ._trials import Trials

__all__ = ["load_brennan2019", "check_brennan2019", "brennan2019_splits", "read_brennan2019_words",
           "read_brennan2019_sound_onsets", "brennan2019_subjects", "load_brennan2019_audio"]

_NAME = "brennan2019"


def _spec() -> dict[str, Any]:
    return load_spec(_NAME)


def _subject(subject: Any) -> int:
    ds = _spec()["dataset"]
    return parse_subject_number(subject, _NAME, ds["subject_prefix"], int(ds["n_subjects"]))


def _sid(s: int) -> str:
    return str(_spec()["dataset"]["subject_format"]).format(subject=s)


def _rel(key: str, **fields: Any) -> str:
    return str(_spec()["paths"][key]).format(**fields)


def _scalar(value: Any) -> float:
    arr = np.asarray(value, dtype=np.float64).ravel()
    if arr.size != 1:
        raise ValueError(f"expected one number, got {arr.size}")
    return float(arr[0])


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, np.ndarray):
        return [str(v) for v in value.ravel(order="F").tolist()]
    return [v if isinstance(v, str) else "".join(_strings(v)) for v in value]


def _field(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


# --------------------------------------------------------------------------------------------- stimuli


def brennan2019_splits(*, test_fraction: float | None = None, val_fraction: float | None = None) -> dict[str, str]:
    """Split of each of the 12 wav files: ``{"audio/DownTheRabbitHoleFinal_SoundFile1.wav": "train", ...}``.

    The files of the spec are ranked by the SHA-1 of their name (so the split never depends on what is on disk
    or which subjects are read); the first ``ceil(test_fraction * 12)`` ranks are test, the next
    ``ceil(val_fraction * 12)`` validation (defaults 0.2 / 0.1: 3 and 2 files).
    """
    tf, vf = _speech.split_fractions(_spec()["segments"], test_fraction, val_fraction)
    rels = [_rel("audio", segment=k) for k in range(1, int(_spec()["dataset"]["n_segments"]) + 1)]
    out = _speech.rank_splits(rels, tf, vf)
    return {r: out[r] for r in rels}


def read_brennan2019_words(root: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read ``AliceChapterOne-EEG.csv``: one row per word of the chapter.

    Returns
    -------
    words : dict of str to ndarray, each of shape (n_words,)
        ``word`` (str), ``segment`` (int, 1..12), ``onset`` / ``offset`` (float, s from the start of the
        segment's wav), ``order``, ``position``, ``sentence`` (int), ``row`` (1-based line in the file).
    """
    spec = _spec()
    path = Path(root) / _rel("words")
    if not path.is_file():
        raise MissingFileError(format_error("root", f"the word table {_rel('words')}", f"nothing at {path}",
                                            f"Download it from {spec['dataset']['doi']} into the data root"))
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataIntegrityError(format_error(str(path), "a UTF-8 csv file", str(exc))) from exc
    rows = [r for r in rows if any(c.strip() for c in r)]
    header = [c.strip() for c in rows[0]] if rows else []
    missing = [c for c in spec["words"]["required"] if c not in header]
    if missing:
        raise DataIntegrityError(format_error(str(path), f"columns {spec['words']['required']}",
                                              f"columns {header} (missing {missing})",
                                              "Check that this is the Deep Blue AliceChapterOne-EEG.csv"))
    col = {c: header.index(c) for c in spec["words"]["required"]}
    out: dict[str, list[Any]] = {k: [] for k in ("word", "segment", "onset", "offset", "order", "position",
                                                 "sentence", "row")}
    n_seg = int(spec["dataset"]["n_segments"])
    for i, r in enumerate(rows[1:], start=2):
        if len(r) < len(header):
            raise DataIntegrityError(format_error(f"{path}: line {i}", f"{len(header)} fields", f"{len(r)} fields",
                                                  "The file is truncated; download it again"))
        try:
            nums = {k: float(r[col[c]]) for k, c in (("segment", "Segment"), ("onset", "onset"), ("offset", "offset"),
                                                     ("order", "Order"), ("position", "Position"),
                                                     ("sentence", "Sentence"))}
        except ValueError as exc:
            raise DataIntegrityError(format_error(f"{path}: line {i}", "numbers in Segment, onset, offset, Order, "
                                                  "Position, Sentence", str(exc))) from exc
        if not (nums["segment"].is_integer() and 1 <= nums["segment"] <= n_seg):
            raise DataIntegrityError(format_error(f"{path}: line {i} Segment", f"a segment 1..{n_seg}",
                                                  r[col["Segment"]], "The word table belongs to another stimulus"))
        if not (np.isfinite(nums["onset"]) and np.isfinite(nums["offset"]) and 0 <= nums["onset"] <= nums["offset"]):
            raise DataIntegrityError(format_error(f"{path}: line {i}", "0 <= onset <= offset (s in the segment)",
                                                  (r[col["onset"]], r[col["offset"]])))
        out["word"].append(r[col["Word"]].strip())
        for k, v in nums.items():
            out[k].append(v)
        out["row"].append(i)
    res: dict[str, np.ndarray] = {"word": np.array(out["word"], dtype=str)}
    for k in ("segment", "order", "position", "sentence", "row"):
        res[k] = np.array(out[k], dtype=np.int64)
    res["onset"] = np.array(out["onset"], dtype=np.float64)
    res["offset"] = np.array(out["offset"], dtype=np.float64)
    return res


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    from scipy.io import wavfile

    if not path.is_file():
        raise MissingFileError(format_error("sound", "the segment's wav file", f"nothing at {path}",
                                            f"Unzip audio.zip of {_spec()['dataset']['doi']} into the data root "
                                            f"(it holds {_spec()['paths']['audio_dir']}/)"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", wavfile.WavFileWarning)
            rate, data = wavfile.read(path)
    except (ValueError, OSError, wavfile.WavFileWarning) as exc:
        raise DataIntegrityError(format_error("sound", "a readable PCM wav file", f"{path} ({exc})",
                                              "The file is truncated; unzip audio.zip again")) from exc
    return np.asarray(data), int(rate)


def load_brennan2019_audio(root: str | os.PathLike[str], sound: str | int, sr: int | None = None
                           ) -> tuple[np.ndarray, int]:
    """Read one segment's wav as mono float32 in [-1, 1].

    Parameters
    ----------
    root : path-like
        The data root.
    sound : str or int
        ``"audio/DownTheRabbitHoleFinal_SoundFile3.wav"`` (``metadata["sound"]``) or the segment number 1..12.
    sr : int or None
        Output rate (wav2vec2: 16000; polyphase resampling); None keeps the file's.

    Returns
    -------
    wave : ndarray of shape (n_samples,)
    sr : int
    """
    from fractions import Fraction

    from scipy.signal import resample_poly

    rel = _rel("audio", segment=int(sound)) if isinstance(sound, (int, np.integer)) else str(sound)
    x, rate = _read_wav(Path(root) / rel)
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max)
    x = x.astype(np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if sr is not None and int(sr) != rate:
        f = Fraction(int(sr), rate)
        x = resample_poly(x, f.numerator, f.denominator).astype(np.float32)
        rate = int(sr)
    return x, rate


def _wav_seconds(root: Path, segment: int) -> float:
    x, rate = _read_wav(root / _rel("audio", segment=segment))
    return x.shape[0] / float(rate)


# ------------------------------------------------------------------------------------------- subjects


def brennan2019_subjects(root: str | os.PathLike[str], group: str = "use") -> list[str]:
    """Dataset ids of one group of ``datasets.mat``: ``"use"`` (33 in the paper's analysis), ``"low_perf"``,
    ``"high_noise"`` or ``"all"`` (every ``S<SS>.mat`` on disk); e.g. ``["S01", "S03", ...]``."""
    from ..io.matlab import load_mat

    check_option(group, "group", ("use", "low_perf", "high_noise", "all"))
    root = Path(root)
    if group == "all":
        return sorted(p.stem for p in root.glob("S*.mat") if re.fullmatch(r"S\d+", p.stem))
    var = _spec()["datasets_groups"][group]
    names = _strings(load_mat(root / _rel("datasets"), [var], hint="Download datasets.mat from Deep Blue")[var])
    return sorted(re.sub(r"\.mat$", "", n.strip()) for n in names if n.strip())


# ------------------------------------------------------------------------------- proc: segment onsets


def _trl_columns(proc: dict[str, Any], path: Path) -> dict[str, np.ndarray]:
    """``trl`` split into named columns: start, offset, segment, onset (s in the segment)."""
    ps = _spec()["proc"]
    trl = np.asarray(proc.get("trl"), dtype=np.float64)
    names = _strings(proc["varnames"]) if proc.get("varnames") is not None else []
    if trl.ndim != 2 or trl.shape[0] == 0:
        raise DataIntegrityError(format_error(f"{path}: proc.trl", "a (n_words, n_columns) matrix",
                                              f"shape {trl.shape}", "Unzip proc.zip again"))
    lead = list(ps["trl_leading"])
    if trl.shape[1] == len(lead) + len(names):
        cols = lead + names
    elif trl.shape[1] == len(lead) + len(names) + 1:  # S02: one extra column before varnames (Eelbrain)
        cols = lead + ["extra"] + names
    else:
        raise DataIntegrityError(format_error(
            f"{path}: proc.trl", f"{len(lead)} + {len(names)} columns ([start, stop, offset] + varnames {names})",
            f"{trl.shape[1]} columns", "Check that this is a proc file of the Deep Blue proc.zip"))

    def pick(options: Sequence[str], what: str) -> np.ndarray:
        for o in options:
            if o in cols:
                return trl[:, cols.index(o)]
        raise DataIntegrityError(format_error(f"{path}: proc.varnames", f"a {what} column ({list(options)})", names))

    return {"start": trl[:, 0], "offset": trl[:, 2], "segment": pick(ps["segment_names"], "segment"),
            "onset": pick(ps["onset_names"], "word onset")}


def read_brennan2019_sound_onsets(
    root: str | os.PathLike[str], subject: Any, *, raw_sfreq: float | None = None,
    fix_shifted_segments: bool = True,
) -> dict[str, Any]:
    """Where each wav segment starts in a subject's recording, from ``proc/S<SS>.mat``.

    Parameters
    ----------
    root : path-like
        The data root.
    subject : int or str
        1..49, ``"S01"`` or ``"brennan2019/S01"``.
    raw_sfreq : float or None
        Rate of the recording (default the spec's 500 Hz).
    fix_shifted_segments : bool
        Relabel ``trl`` segments one higher for the subjects whose first trigger is missing (S26, S34, S35, S36).

    Returns
    -------
    info : dict
        ``onsets`` ({segment: s from the first sample, i.e. ``(po - 1) / sfreq``}), ``samples`` ({segment: the
        1-based trigger sample ``po``}), ``bads`` (proc's bad channels), ``shifted`` (bool), ``path``.
    """
    from ..io.matlab import load_mat

    spec = _spec()
    s = _subject(subject)
    fs = float(spec["dataset"]["sfreq"] if raw_sfreq is None else raw_sfreq)
    path = Path(root) / _rel("proc", subject=s)
    if not path.is_file():
        raise MissingFileError(format_error(
            "root", f"{_rel('proc', subject=s)} (the segment triggers of {_sid(s)} live only in its proc.trl)",
            f"nothing at {path}", "Unzip proc.zip into the data root; 7 of the 49 datasets have no proc file "
            "(too noisy to pre-process) and cannot be aligned to the audio"))
    var = spec["proc"]["variable"]
    proc = load_mat(path, [var])[var]
    if not isinstance(proc, dict):
        raise DataIntegrityError(format_error(f"{path}: {var}", "a struct", type(proc).__name__))
    cols = _trl_columns(proc, path)
    if not np.all(np.isfinite(cols["start"])) or not np.all(np.isfinite(cols["onset"])):
        raise DataIntegrityError(format_error(f"{path}: proc.trl", "finite samples and onsets", "NaN or inf"))
    # the authors' word sample a = po + ceil(onset * fs) (1-based); po = floor(a - onset * fs) up to rounding
    a = cols["start"] - cols["offset"]
    po_rows = np.floor(a - cols["onset"] * fs + 1e-6)
    shifted = bool(fix_shifted_segments and s in set(spec["dataset"]["shifted_segment_subjects"]))
    labels = cols["segment"].round().astype(np.int64) + (1 if shifted else 0)
    n_seg = int(spec["dataset"]["n_segments"])
    samples: dict[int, int] = {}
    for k in sorted(set(labels.tolist())):
        rows = labels == k
        if not 1 <= k <= n_seg:
            if shifted and k == n_seg + 1:
                continue
            raise DataIntegrityError(format_error(f"{path}: proc.trl segment", f"segments 1..{n_seg}", k,
                                                  "Check that this is a proc file of the Deep Blue proc.zip"))
        med = float(np.median(po_rows[rows]))
        off = np.abs(po_rows[rows] - med)
        if off.max() > 1:
            raise DataIntegrityError(format_error(
                f"{path}: proc.trl segment {k}", "words whose samples minus onsets agree on one segment start",
                f"{int((off > 1).sum())} of {int(rows.sum())} rows off by up to {off.max() / fs:.3f} s",
                "The proc file is corrupted or belongs to another word table"))
        samples[k] = int(round(med))
    bads: list[str] = []
    for keys in spec["proc"]["bad_channel_fields"]:
        v = _field(proc, *keys)
        if v is not None and not (isinstance(v, np.ndarray) and v.size == 0):
            bads += [b for b in _strings(v) if b]
    return {"onsets": {k: (p - 1) / fs for k, p in samples.items()}, "samples": samples,
            "bads": sorted(set(bads), key=lambda b: (not b.isdigit(), int(b) if b.isdigit() else 0, b)),
            "shifted": shifted, "path": path}


# ----------------------------------------------------------------------------------------------- EEG


def _read_raw(path: Path, expected_sfreq: float, s: int) -> dict[str, Any]:
    """Read ``S<SS>.mat`` (FieldTrip raw): data in volt (n_channels, n_samples), labels, first sample."""
    from ..io.matlab import load_mat

    spec = _spec()
    if not path.is_file():
        raise MissingFileError(format_error("root", f"{_rel('raw', subject=s)} (the EEG of {_sid(s)})",
                                            f"nothing at {path}", f"Download it from {spec['dataset']['doi']}"))
    var = spec["raw"]["variable"]
    raw = load_mat(path, [var], hint="Download it again")[var]
    lacking = [f for f in spec["raw"]["fields"] if not isinstance(raw, dict) or f not in raw]
    if lacking:
        raise DataIntegrityError(format_error(f"{path}: {var}", f"a FieldTrip raw structure with {spec['raw']['fields']}",
                                              f"missing {lacking}", "Check that this is an S<SS>.mat of the release"))
    try:
        sf = _scalar(raw["fsample"])
    except ValueError as exc:
        raise DataIntegrityError(format_error(f"{path}: {var}.fsample", "one number", str(exc))) from exc
    hdr_fs = _field(raw, "hdr", "Fs")
    if hdr_fs is not None and not np.isclose(_scalar(hdr_fs), sf):
        raise MetadataMismatchError(format_error(f"{path}: {var}.hdr.Fs", f"the rate of fsample ({sf:g} Hz)",
                                                 f"{_scalar(hdr_fs):g} Hz", "The file is inconsistent; download it again"))
    if not np.isclose(sf, expected_sfreq, rtol=1e-6):
        raise MetadataMismatchError(format_error(
            "raw_sfreq", f"recordings at {expected_sfreq:g} Hz", f"{sf:g} Hz in {path}",
            f"Pass raw_sfreq={sf:g} if the files were resampled on purpose (the release is "
            f"{spec['dataset']['sfreq']:g} Hz)"))
    trials = raw["trial"] if isinstance(raw["trial"], list) else [raw["trial"]]
    if len(trials) != 1:
        raise DataIntegrityError(format_error(f"{path}: {var}.trial", "one continuous trial (the whole recording)",
                                              f"{len(trials)} trials", "Use the raw S<SS>.mat, not epoched data"))
    labels = _strings(raw["label"])
    data = np.asarray(trials[0])
    if data.ndim != 2 or data.shape[0] != len(labels):
        raise DataIntegrityError(format_error(f"{path}: {var}.trial{{1}}", f"({len(labels)} labels, n_samples)",
                                              f"shape {data.shape}", "The file is truncated; download it again"))
    units = _field(raw, "hdr", "chanunit")
    units = _strings(units) if units is not None else [spec["dataset"]["unit"]] * len(labels)
    if len(units) != len(labels):
        raise DataIntegrityError(format_error(f"{path}: {var}.hdr.chanunit", "a unit per channel",
                                              f"{len(units)} units for {len(labels)} channels"))
    scale = {"uv": 1e-6, "µv": 1e-6, "μv": 1e-6, "mv": 1e-3, "v": 1.0}
    eeg = set(_eeg_labels(labels))
    unknown = sorted({f"{c}: {u!r}" for c, u in zip(labels, units) if c in eeg and u.strip().lower() not in scale})
    if unknown:
        raise DataIntegrityError(format_error(f"{path}: {var}.hdr.chanunit", "uV, mV or V for every EEG channel",
                                              unknown[:5], "Check that this is an S<SS>.mat of the release"))
    info = _field(raw, "sampleinfo")
    first = int(np.asarray(info, dtype=np.float64).ravel()[0]) if info is not None and np.size(info) >= 1 else 1
    factors = np.array([scale.get(u.strip().lower(), np.nan) for u in units])[:, None]
    return {"data": data, "factors": factors, "labels": labels, "sfreq": sf, "first_sample": first}


def _eeg_labels(labels: Sequence[str]) -> list[str]:
    import mne

    montage = set(mne.channels.make_standard_montage(_spec()["dataset"]["montage"]).ch_names)
    return [c for c in labels if c in montage]


def _make_raw(data: np.ndarray, names: list[str], sfreq: float, reference: str, verbose: Any) -> Any:
    import mne

    spec = _spec()["dataset"]
    info = mne.create_info(list(names), sfreq, "eeg", verbose="error")
    raw = mne.io.RawArray(data, info, verbose="error")
    if reference != "recorded":
        ref = spec["implicit_reference"]
        if ref not in raw.ch_names:
            mne.add_reference_channels(raw, ref, copy=False)
    raw.set_montage(spec["montage"], on_missing="raise", verbose="error")
    if reference == "mastoids":
        lacking = [c for c in spec["mastoid_references"] if c not in raw.ch_names]
        if lacking:
            raise MetadataMismatchError(format_error("reference", f"the mastoid channels {spec['mastoid_references']}",
                                                     f"{lacking} missing", "Use reference='recorded' or 'average'"))
        raw.set_eeg_reference(list(spec["mastoid_references"]), projection=False, verbose=_mne_verbose(verbose))
    elif reference == "average":
        raw.set_eeg_reference("average", projection=False, verbose=_mne_verbose(verbose))
    return raw


# ---------------------------------------------------------------------------------------------- load


@fill_doc
def load_brennan2019(
    root: str | os.PathLike[str],
    subject: Any,
    *,
    segments: Sequence[int] | None = None,
    tmin: float | None = None,
    tmax: float | None = None,
    sfreq: float | None = None,
    baseline: tuple[float | None, float | None] | None | str = "spec",
    l_freq: float | None = None,
    h_freq: float | None = None,
    reference: str | None = "recorded",
    bads: str | None = "keep",
    raw_sfreq: float | None = None,
    ch_names: Sequence[str] | None = None,
    test_fraction: float | None = None,
    val_fraction: float | None = None,
    fix_shifted_segments: bool = True,
    verbose: Any = None,
) -> Trials:
    """Load one Brennan & Hale 2019 subject as speech segments around word onsets (:class:`Trials`).

    Parameters
    ----------
    root : path-like
        The Deep Blue files with ``audio.zip`` and ``proc.zip`` unzipped (``S01.mat``, ``proc/``, ``audio/``,
        ``AliceChapterOne-EEG.csv``).
    subject : int or str
        1..49, ``"S01"`` or ``"brennan2019/S01"`` (42 have a proc file; :func:`brennan2019_subjects` lists the
        paper's 33).
    segments : sequence of int or None
        Wav segments (1..12) whose words to keep; None: all.
    tmin, tmax : float or None
        Segment window around each word onset, ``tmax`` excluded (default -0.5..2.5 s: 360 samples at 120 Hz).
    sfreq : float or None
        Resample the recording to this rate (MNE polyphase, anti-aliased); default the spec's 120 Hz.
    baseline : tuple or None or "spec"
        Interval whose mean is subtracted from each segment; ``"spec"``: the first 0.3 s (-0.5..-0.2 s).
    l_freq, h_freq : float or None
        Band-pass the continuous recording before resampling; None: no filter (the release is 0.1-200 Hz).
    reference : {"recorded", "mastoids", "average"} or None
        ``"recorded"`` (or None): as stored (online reference at electrode 29, as brainmagick reads it; 60 channels);
        ``"mastoids"``: linked mastoids 25 + 29, as the authors and Eelbrain (61 channels, 29 added);
        ``"average"``: common average over the 61 (29 added).
    bads : {"keep", "drop"} or None
        ``"drop"`` removes the bad channels listed in the subject's proc file (high impedance and rejected);
        ``"keep"`` (default, or None) keeps one channel set for every subject, as the speech runner needs.
    raw_sfreq : float or None
        Expected recording rate (default the spec's 500 Hz); another rate raises.
    ch_names : sequence of str or None
        Expected channel set (e.g. a trained model's); a different set raises. The output follows its order.
    test_fraction, val_fraction : float or None
        Fractions of the 12 wav files in test and validation (default 0.2 / 0.1; :func:`brennan2019_splits`).
    fix_shifted_segments : bool
        Relabel the proc segments of S26, S34, S35, S36 (first trigger missing); see the module docstring.
    %(verbose)s

    Returns
    -------
    trials : Trials
        ``X`` float32 of shape (n_words, n_channels, n_times) in volt; ``stimulus_ids`` ``"<wav stem>@<ms>"``;
        ``split`` from the word's wav file; ``texts`` the word; ``metadata`` with ``sound``
        (``audio/DownTheRabbitHoleFinal_SoundFile<k>.wav``), ``sound_offset`` (s of the onset in the wav),
        ``sequence`` (the sentence number), ``story``, ``session`` (0), ``task`` (0), ``segment``, ``order``,
        ``position``; ``provenance`` records every choice, with ``sensor_positions`` (n_channels x 2, in [0, 1])
        from the easycap-M10 montage.
    """
    from .._core.versions import package_versions

    spec = _spec()
    s = _subject(subject)
    root = Path(root)
    reference = "recorded" if reference is None else reference  # None: the default (recipes pass unset keys)
    bads = "keep" if bads is None else bads
    check_option(reference, "reference", ("recorded", "mastoids", "average"))
    check_option(bads, "bads", ("keep", "drop"))
    win = _speech.segment_window(spec["segments"], tmin, tmax, sfreq, baseline)
    out_sf = win.sfreq
    n_seg = int(spec["dataset"]["n_segments"])
    wanted = list(range(1, n_seg + 1)) if segments is None else sorted({int(k) for k in segments})
    if not wanted or any(not 1 <= k <= n_seg for k in wanted):
        raise ValidationError(format_error("segments", f"segment numbers 1..{n_seg}", segments))
    expected_raw = float(spec["dataset"]["sfreq"] if raw_sfreq is None else raw_sfreq)
    splits = brennan2019_splits(test_fraction=test_fraction, val_fraction=val_fraction)
    words = read_brennan2019_words(root)
    keep_words = np.isin(words["segment"], wanted)
    durations = {k: _wav_seconds(root, k) for k in sorted(set(words["segment"][keep_words].tolist()))}
    _check_durations(words, durations, root)
    raw_path = root / _rel("raw", subject=s)
    rec = _read_raw(raw_path, expected_raw, s)
    sounds = read_brennan2019_sound_onsets(root, s, raw_sfreq=rec["sfreq"], fix_shifted_segments=fix_shifted_segments)
    _check_overlap(sounds["onsets"], words, durations, sounds["path"])
    eeg = _eeg_labels(rec["labels"])
    idx = [rec["labels"].index(c) for c in eeg]
    data = np.asarray(rec["data"][idx], dtype=np.float64) * rec["factors"][idx]
    del rec["data"]
    raw = _make_raw(data, eeg, rec["sfreq"], reference, verbose)
    dropped = [c for c in sounds["bads"] if c in raw.ch_names] if bads == "drop" else []
    names = [c for c in raw.ch_names if c not in dropped]
    if ch_names is not None:
        expected = [str(c) for c in ch_names]
        if set(expected) != set(names):
            raise MetadataMismatchError(format_error(
                "ch_names", "the expected channel set", f"{_sid(s)} has {_set_diff(expected, names)}",
                "Use the same reference= and bads= as the model was trained with"))
        names = expected
    raw.pick(names)
    positions = sensor_positions_2d(raw.info, names)
    _speech.filter_resample(raw, l_freq, h_freq, out_sf, verbose)
    # word onsets in the recording: segment start + onset in the wav; time 0 is the first stored sample
    t0 = (rec["first_sample"] - 1) / rec["sfreq"]
    start = np.array([sounds["onsets"].get(int(k), np.nan) for k in words["segment"]]) - t0
    sel = keep_words & np.isfinite(start)
    n_no_onset = int((keep_words & ~np.isfinite(start)).sum())
    samples = np.round((start + words["onset"]) * out_sf)
    fits = _speech.windows_inside(samples, win, raw.n_times)
    n_outside = int((sel & ~fits).sum())
    rows = np.flatnonzero(sel & fits)
    if not len(rows):
        raise ValidationError(format_error(
            "segments", "words whose window lies inside the recording",
            f"none of {int(keep_words.sum())} in {raw_path} ({n_no_onset} without segment onset, {n_outside} outside)",
            "Check the proc file and the recording, or shorten tmin/tmax"))
    x_all = raw.get_data()
    X = np.concatenate([_speech.cut_segments(x_all, samples[chunk], win)  # chunks bound the float64 copies
                        for chunk in np.array_split(rows, max(1, len(rows) // 256))])
    _speech.check_segments_finite(X, "EEG data", names, f"{raw_path} ({_NAME}/{_sid(s)})",
                                  "The recording holds NaN/inf samples: drop the channel (bads='drop' or "
                                  "ch_names=...) or choose segments= outside the gap")
    rel = [_rel("audio", segment=int(k)) for k in words["segment"][rows]]
    files = [str(raw_path), str(sounds["path"]), str(root / _rel("words"))]
    provenance = {
        "dataset": _NAME, "loader": "neurodecode.data.load_brennan2019", "root": str(root),
        "subject": f"{_NAME}/{_sid(s)}", "files": files, "raw_sfreq": expected_raw, "sfreq": out_sf,
        **_speech.window_provenance(win, l_freq, h_freq),
        "segments": wanted, "reference": reference, "bads": bads, "bad_channels_proc": sounds["bads"],
        "dropped_channels": dropped, "n_channels": len(names), "unit": "V (stored in microvolt)",
        "montage": spec["dataset"]["montage"],
        "sensor_positions": _speech.rounded_positions(positions),
        "sound_onsets": {str(k): round(v, 6) for k, v in sorted(sounds["onsets"].items())},
        "sound_onsets_from": "proc.trl: segment start (po - 1) / fs, po = word sample - ceil(onset x fs)",
        "shifted_segments_fixed": sounds["shifted"],
        "word_onsets": "segment start + AliceChapterOne-EEG.csv onset; window [tmin, tmax) s",
        "split": "by wav file (SHA-1 rank of its name): test 20 %, val 10 % (brennan2019_splits)",
        "stimulus_ids": "<wav stem>@<word onset in the wav, ms>",
        "n_words_without_sound_onset": n_no_onset, "n_words_outside_recording": n_outside,
        "versions": package_versions(("numpy", "mne", "scipy")),
    }
    return _speech.speech_trials(
        X, window=win, subject=f"{_NAME}/{_sid(s)}", ch_names=names,
        stimulus_ids=[_speech.stimulus_id(r, o) for r, o in zip(rel, words["onset"][rows])],
        split=[splits[r] for r in rel], texts=[str(w) for w in words["word"][rows]], sound=rel,
        sound_offset=words["onset"][rows], sequence=[str(v) for v in words["sentence"][rows]],
        story=str(spec["dataset"]["story"]), session=0, task=np.zeros(len(rows), dtype=np.int64),
        provenance=provenance, extra_metadata={k: words[k][rows].copy() for k in ("segment", "order", "position")})


def _check_durations(words: dict[str, np.ndarray], durations: dict[int, float], root: Path, tol: float = 0.05) -> None:
    """Refuse a wav shorter than the last word the table places in it."""
    for k, dur in durations.items():
        last = float(words["offset"][words["segment"] == k].max())
        if last > dur + tol:
            raise DataIntegrityError(format_error(
                "sound", f"{_rel('audio', segment=k)} at least {last:.2f} s long (its last word ends there)",
                f"{dur:.2f} s under {root}", "The wav is truncated or from another recording; unzip audio.zip again"))


def _check_overlap(onsets: dict[int, float], words: dict[str, np.ndarray], durations: dict[int, float],
                   path: Path, tol: float = 0.1) -> None:
    """Refuse segment starts that make two segments of audio overlap (shifted or wrong triggers)."""
    ks = sorted(onsets)
    for a, b in zip(ks, ks[1:]):
        length = durations.get(a, float(words["offset"][words["segment"] == a].max(initial=0.0)))
        if onsets[a] + length > onsets[b] + tol:
            raise DataIntegrityError(format_error(
                f"{path}: proc.trl", f"segment {a} ({length:.2f} s) to end before segment {b} starts",
                f"segment {a} at {onsets[a]:.2f} s, segment {b} at {onsets[b]:.2f} s",
                "The segment triggers are shifted (known for S26, S34, S35, S36: keep fix_shifted_segments=True) "
                "or the proc file belongs to another subject"))


# --------------------------------------------------------------------------------------------- check


def check_brennan2019(
    root: str | os.PathLike[str], subjects: Sequence[Any] | None = None, *, raw_sfreq: float | None = None,
    verbose: Any = None,
) -> tuple[dict[str, Any], list[str]]:
    """Check a Brennan 2019 tree; return ``(report, problems)``. Nothing is raised: every problem is listed.

    Checks the word table, the 12 wav files (present, readable, long enough for their words), and for each
    subject (default: every ``S<SS>.mat`` in the root) its proc file (segment starts consistent, no overlap),
    its recording (rate, one continuous trial, units, the EEG channel set shared by all subjects) and how many
    words fit a 3 s window. The v5 ``.mat`` is one compressed variable, so its samples are read (not kept).
    ``report["warnings"]`` lists words that cannot be placed (no segment start, outside the recording).
    """
    root = Path(root)
    spec = _spec()
    seg = spec["segments"]
    expected_raw = float(spec["dataset"]["sfreq"] if raw_sfreq is None else raw_sfreq)
    problems: list[str] = []
    report: dict[str, Any] = {"subjects": {}, "warnings": []}
    words: dict[str, np.ndarray] | None = None
    try:
        words = read_brennan2019_words(root)
        report["words"] = int(len(words["word"]))
    except Exception as exc:
        problems.append(str(exc))
    durations: dict[int, float] = {}
    for k in range(1, int(spec["dataset"]["n_segments"]) + 1):
        try:
            durations[k] = _wav_seconds(root, k)
        except Exception as exc:
            problems.append(f"segment {k}: {exc}")
    if words is not None and durations:
        try:
            _check_durations(words, durations, root)
        except Exception as exc:
            problems.append(str(exc))
    if subjects is None:
        subjects = brennan2019_subjects(root, "all")
        if not subjects:
            problems.append(f"no subject found: missing {_rel('raw', subject=1)} ... under {root}")
    names: list[str] | None = None
    first_subject = ""
    for subject in progress(list(subjects), desc="check brennan2019", unit="subject", verbose=verbose):
        try:
            s = _subject(subject)
        except Exception as exc:
            problems.append(f"subject {subject}: {exc}")
            continue
        label = _sid(s)
        entry: dict[str, Any] = {}
        sounds = None
        try:
            sounds = read_brennan2019_sound_onsets(root, s, raw_sfreq=expected_raw)
            entry["segments"] = sorted(sounds["onsets"])
            entry["bad_channels"] = sounds["bads"]
            if words is not None:
                _check_overlap(sounds["onsets"], words, durations, sounds["path"])
        except Exception as exc:
            problems.append(f"{label}: {exc}")
        try:
            rec = _read_raw(root / _rel("raw", subject=s), expected_raw, s)
            n_samples = int(rec["data"].shape[1])
            del rec["data"]
            eeg = _eeg_labels(rec["labels"])
            entry.update(n_channels=len(eeg), seconds=round(n_samples / rec["sfreq"], 3))
            if names is None:
                names, first_subject = eeg, label
            elif set(eeg) != set(names):
                problems.append(f"{label}: EEG channel set differs from {first_subject}: {_set_diff(names, eeg)}")
            if sounds is not None and words is not None:
                t0 = (rec["first_sample"] - 1) / rec["sfreq"]
                start = np.array([sounds["onsets"].get(int(k), np.nan) for k in words["segment"]]) - t0
                t = start + words["onset"]
                ok = np.isfinite(t) & (t + float(seg["tmin"]) >= 0) & (t + float(seg["tmax"]) <= n_samples / rec["sfreq"])
                entry["words"] = int(ok.sum())
                n_no = int((~np.isfinite(t)).sum())
                n_out = int((np.isfinite(t) & ~ok).sum())
                if n_no or n_out:
                    report["warnings"].append(f"{label}: {n_no} word(s) without a segment start, {n_out} whose "
                                              f"{float(seg['tmax']) - float(seg['tmin']):g} s window leaves the "
                                              "recording (they are skipped)")
        except Exception as exc:
            problems.append(f"{label}: {exc}")
        report["subjects"][label] = entry
    return report, problems
