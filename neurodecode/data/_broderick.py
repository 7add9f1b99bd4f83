"""Broderick et al. 2018 "Natural Speech" EEG (Dryad doi:10.5061/dryad.070jc), cut into speech segments.

Layout (``data_specs/broderick2019.toml``, relative to the ``Natural Speech`` folder of the Dryad archive)::

    EEG/Subject<k>/Subject<k>_Run<r>.mat      eegData (time x 128), mastoids (time x 2), fs (128)
    Stimuli/Text/Run<r>.mat                   wordVec (cell of words), onset_time, offset_time (s), ...
    Stimuli/Envelopes/audio<r>_128Hz.mat      env (not read here)
    Stimuli/Audio/audio<r>.wav                the run's audio: NOT in the public release (see below)

19 subjects heard 20 runs (about 3 min each) of *The Old Man and the Sea*. Facts verified from public code
(brainmagick ``bm/studies/broderick2019.py`` and independent readers of the Dryad files): the folder and file
names, the ``.mat`` keys, time x channel order, ``fs == 128``, MNE's ``biosemi128`` montage for the channel
positions (brainmagick assigns the 128 columns to its channel names ``A1`` ... ``D32`` in order). The run wavs
are not part of the public Dryad release as far as we could verify (brainmagick downloads them from a separate
archive as ``audio<r>.wav``); put them under ``Stimuli/Audio/``. NOT verified: eegData in microvolts (scaled
by the spec's ``unit_scale`` 1e-6 to volts) and sample 0 of each run being the start of its audio (the word
onsets of ``Stimuli/Text`` are read as seconds from the start of both).

A segment (Défossez et al. 2023) is the window ``tmin``..``tmax`` (default -0.5..2.5 s, 3 s at 120 Hz) around
a word onset; its stimulus id ``"audio<r>@<ms>"`` names the run's wav and the onset inside it. Splits are by
whole runs (one wav each): every run with a ``Stimuli/Text/Run<r>.mat`` gets a rank from the SHA-1 of its wav
name; the first 20 % of ranks are test, the next 10 % validation, the same for every subject.
"""

from __future__ import annotations

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
from .._core.validation import check_option, format_error
from . import _speech_segments as _speech
from ._layout import parse_subject_number, relative_path
from ._things_meg import _mne_verbose, _set_diff
from ._trials import Trials

__all__ = ["load_broderick2019", "check_broderick2019", "find_broderick2019_runs", "read_broderick2019_words",
           "broderick2019_splits", "load_broderick2019_audio", "biosemi128_names"]

_NAME = "broderick2019"


def _spec() -> dict[str, Any]:
    return load_spec(_NAME)


def _subject(subject: Any) -> int:
    ds = _spec()["dataset"]
    return parse_subject_number(subject, _NAME, ds["subject_prefix"], int(ds["n_subjects"]))


def _subject_id(s: int) -> str:
    return str(_spec()["dataset"]["subject_format"]).format(subject=s)


def _sound(run: int) -> str:
    return relative_path(_NAME, "audio", run=int(run))


def biosemi128_names() -> list[str]:
    """The 128 channel names of MNE's ``biosemi128`` montage (``A1`` ... ``D32``), the column order of eegData."""
    import mne

    return list(mne.channels.make_standard_montage(_spec()["dataset"]["montage"]).ch_names)


def find_broderick2019_runs(root: str | os.PathLike[str], subject: Any, *,
                            runs: Sequence[int] | None = None) -> list[tuple[int, Path]]:
    """List a subject's runs on disk as ``(run, path)``, sorted by run.

    Parameters
    ----------
    root : path-like
        The ``Natural Speech`` folder of the Dryad download.
    subject : int or str
        1..19, ``"Subject1"`` or ``"broderick2019/Subject1"``.
    runs : sequence of int or None
        Runs (1..20) to keep; None: every run on disk. A requested run that is missing raises.

    Returns
    -------
    runs : list of (int, pathlib.Path)
    """
    root = Path(root)
    s = _subject(subject)
    example = relative_path(_NAME, "eeg", subject=s, run=1)
    folder = root / PurePosixPath(example).parent
    if not folder.is_dir():
        raise MissingFileError(format_error(
            "root", f"the 'Natural Speech' folder of the Broderick Dryad archive holding {PurePosixPath(example).parent}/",
            f"nothing at {folder}", f"Expected e.g. {example} under {root}; download doi:10.5061/dryad.070jc and "
            "pass its 'Natural Speech' folder"))
    found = {}
    for p in folder.glob(f"{_subject_id(s)}_Run*.mat"):
        m = re.fullmatch(rf"{re.escape(_subject_id(s))}_Run(\d+)\.mat", p.name)
        if m:
            found[int(m.group(1))] = p
    if runs is not None:
        wanted = sorted({int(r) for r in runs})
        lacking = [r for r in wanted if r not in found]
        if lacking:
            raise MissingFileError(format_error(
                "runs", f"runs of {_subject_id(s)} on disk", f"runs {lacking} missing (on disk: {sorted(found)})",
                f"Expected {relative_path(_NAME, 'eeg', subject=s, run=lacking[0])}"))
        found = {r: found[r] for r in wanted}
    if not found:
        raise MissingFileError(format_error("root", f"runs of {_subject_id(s)}", f"none in {folder}",
                                            f"Expected {example} ..."))
    return sorted(found.items())


def read_broderick2019_words(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read one run's word table ``Stimuli/Text/Run<r>.mat``.

    Returns
    -------
    words : dict of str to ndarray, each of shape (n_words,)
        ``word`` (str), ``onset`` and ``offset`` (s from the start of the run's audio).
    """
    from ..io.matlab import load_mat

    keys = _spec()["mat"]
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(format_error("text", "the run's word table (Stimuli/Text/Run<r>.mat)",
                                            f"nothing at {path}", "Download the Stimuli/ folder of 'Natural Speech'"))
    v = load_mat(path, [keys["words"], keys["onset"], keys["offset"]])
    raw_words = v[keys["words"]]
    words = [raw_words] if isinstance(raw_words, str) else [
        w if isinstance(w, str) else "".join(np.asarray(w).ravel().astype(str).tolist()) for w in raw_words]
    try:
        onset = np.asarray(v[keys["onset"]], dtype=np.float64).ravel()
        offset = np.asarray(v[keys["offset"]], dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise DataIntegrityError(format_error(f"{path}:{keys['onset']}", "numeric word times in seconds",
                                              str(exc))) from exc
    if not len(words) == len(onset) == len(offset):
        raise DataIntegrityError(format_error(
            str(path), f"as many {keys['onset']} / {keys['offset']} as words in {keys['words']}",
            f"{len(words)} words, {len(onset)} onsets, {len(offset)} offsets", "The file is damaged; download it again"))
    if not np.isfinite(onset).all():
        raise DataIntegrityError(format_error(f"{path}:{keys['onset']}", "finite onsets",
                                              f"{int((~np.isfinite(onset)).sum())} NaN/inf"))
    return {"word": np.array(words, dtype=str), "onset": onset, "offset": offset}


def broderick2019_splits(root: str | os.PathLike[str], *, test_fraction: float | None = None,
                         val_fraction: float | None = None) -> dict[str, str]:
    """Split of every run with a word table: ``{"Stimuli/Audio/audio3.wav": "test", ...}``.

    Runs (one wav each) are ranked by the SHA-1 of their wav name (independent of which subjects are read);
    the first ``ceil(test_fraction * n)`` ranks are test, the next ``ceil(val_fraction * n)`` validation.
    """
    tf, vf = _speech.split_fractions(_spec()["segments"], test_fraction, val_fraction)
    folder = Path(root) / _spec()["paths"]["text_dir"]
    runs = sorted(int(m.group(1)) for p in folder.glob("Run*.mat") if (m := re.fullmatch(r"Run(\d+)\.mat", p.name))) \
        if folder.is_dir() else []
    if not runs:
        raise MissingFileError(format_error("root", f"the word tables {relative_path(_NAME, 'text', run=1)} ...",
                                            f"none under {folder}",
                                            "Download the Stimuli/ folder of 'Natural Speech' with the EEG"))
    return _speech.rank_splits([_sound(r) for r in runs], tf, vf)


def load_broderick2019_audio(root: str | os.PathLike[str], run: int | str, *,
                             sr: int | None = 16000) -> tuple[np.ndarray, int]:
    """Read one run's wav (``Stimuli/Audio/audio<r>.wav``) as mono float32, resampled to ``sr``.

    Parameters
    ----------
    root : path-like
        The ``Natural Speech`` folder.
    run : int or str
        The run (1..20) or the wav path relative to the root (``metadata["sound"]``).
    sr : int or None
        Output rate (None: the file's).

    Returns
    -------
    wave : ndarray of shape (n_samples,)
    sr : int
    """
    from ._meg_masc import load_meg_masc_audio

    sound = _sound(int(run)) if isinstance(run, (int, np.integer)) else str(run)
    path = Path(root) / sound
    if not path.is_file():
        raise MissingFileError(format_error(
            "run", "the run's audio", f"nothing at {path}",
            "The public Dryad release has no wav files: obtain the 20 run wavs (brainmagick's audio<r>.wav) and put "
            f"them at {_spec()['paths']['audio']}"))
    return load_meg_masc_audio(root, sound, sr=sr)


def _read_eeg(path: Path, *, raw_sfreq: float, header_only: bool = False) -> dict[str, Any]:
    """One run's ``eegData`` / ``mastoids`` (channel x time, in the file's unit) and ``fs``, checked."""
    import scipy.io

    from ..io.matlab import load_mat

    keys = _spec()["mat"]
    n_ch = int(_spec()["dataset"]["n_channels"])
    n_mast = int(_spec()["dataset"]["n_mastoids"])
    if header_only:
        try:
            shapes = {name: shape for name, shape, _ in scipy.io.whosmat(str(path))}
            fs = scipy.io.loadmat(str(path), variable_names=[keys["fs"]]).get(keys["fs"])
        except Exception as exc:
            raise DataIntegrityError(format_error("path", "a readable MATLAB v5 file",
                                                  f"{path} ({type(exc).__name__}: {exc})",
                                                  "The file is truncated or corrupted; download it again")) from exc
        missing = [k for k in (keys["eeg"], keys["mastoids"], keys["fs"]) if k not in shapes]
        if missing or fs is None:
            raise DataIntegrityError(format_error("keys", f"variables {missing or [keys['fs']]} in {path}",
                                                  f"variables: {sorted(shapes)}", "Check that this is a Natural "
                                                  "Speech EEG file"))
        v = {keys["eeg"]: np.empty(shapes[keys["eeg"]], dtype=np.uint8),
             keys["mastoids"]: np.empty(shapes[keys["mastoids"]], dtype=np.uint8), keys["fs"]: fs}
    else:
        v = load_mat(path, [keys["eeg"], keys["mastoids"], keys["fs"]])
    fs = float(np.asarray(v[keys["fs"]], dtype=np.float64).ravel()[0])
    if not np.isclose(fs, raw_sfreq, rtol=1e-6):
        raise MetadataMismatchError(format_error(
            "raw_sfreq", f"runs at {raw_sfreq:g} Hz", f"fs = {fs:g} Hz in {path}",
            f"Pass raw_sfreq={fs:g} if the files were resampled on purpose (the release is at "
            f"{_spec()['dataset']['sfreq']:g} Hz)"))
    eeg, mast = np.asarray(v[keys["eeg"]]), np.asarray(v[keys["mastoids"]])
    if eeg.ndim != 2 or eeg.shape[1] != n_ch:
        fix = ("The array is channel x time: the release stores time x channel; transpose it"
               if eeg.ndim == 2 and eeg.shape[0] == n_ch else "Check that this is a Natural Speech EEG file")
        raise DataIntegrityError(format_error(f"{path}:{keys['eeg']}", f"a (n_times, {n_ch}) array", eeg.shape, fix))
    if mast.ndim != 2 or mast.shape != (eeg.shape[0], n_mast):
        raise DataIntegrityError(format_error(f"{path}:{keys['mastoids']}", f"a ({eeg.shape[0]}, {n_mast}) array "
                                              "(time x mastoid, as long as eegData)", mast.shape,
                                              "The file is damaged; download it again"))
    out: dict[str, Any] = {"fs": fs, "n_times": int(eeg.shape[0])}
    if not header_only:
        out["eeg"] = eeg.T.astype(np.float64)
        out["mastoids"] = mast.T.astype(np.float64)
    return out


@fill_doc
def load_broderick2019(
    root: str | os.PathLike[str],
    subject: Any,
    *,
    runs: Sequence[int] | None = None,
    tmin: float | None = None,
    tmax: float | None = None,
    sfreq: float | None = None,
    baseline: tuple[float | None, float | None] | None | str = "spec",
    l_freq: float | None = None,
    h_freq: float | None = None,
    reference: str | None = None,
    raw_sfreq: float | None = None,
    ch_names: Sequence[str] | None = None,
    test_fraction: float | None = None,
    val_fraction: float | None = None,
    require_audio: bool = True,
    verbose: Any = None,
) -> Trials:
    """Load one Broderick 2019 (Natural Speech) subject as speech segments around word onsets (:class:`Trials`).

    Parameters
    ----------
    root : path-like
        The ``Natural Speech`` folder of the Dryad archive (holding ``EEG/`` and ``Stimuli/``).
    subject : int or str
        1..19, ``"Subject1"`` or ``"broderick2019/Subject1"``.
    runs : sequence of int or None
        Runs (1..20) to read; None: all on disk.
    tmin, tmax : float or None
        Segment window around each word onset, ``tmax`` excluded (default -0.5..2.5 s: 360 samples at 120 Hz).
    sfreq : float or None
        Resample each run to this rate (MNE polyphase, anti-aliased); default the spec's 120 Hz.
    baseline : tuple or None or "spec"
        Interval whose mean is subtracted from each segment; ``"spec"``: the paper's first 0.3 s (-0.5..-0.2 s).
    l_freq, h_freq : float or None
        Band-pass the continuous run (at 128 Hz) before resampling; None: no filter.
    reference : {None, "mastoids", "average"}
        None: the channels as released (what brainmagick reads); ``"mastoids"``: minus the mean of the two
        mastoids (Broderick et al.'s reference); ``"average"``: minus the mean of the 128 channels.
    raw_sfreq : float or None
        Expected ``fs`` of the files (default the spec's 128 Hz); another rate raises.
    ch_names : sequence of str or None
        Expected channel set (a trained model's); a different set raises. The output follows its order.
    test_fraction, val_fraction : float or None
        Fractions of runs in test and validation (default 0.2 / 0.1; see :func:`broderick2019_splits`).
    require_audio : bool
        Raise when a run's wav is missing (the speech recipes need it); False keeps the segments (the
        ``sound`` metadata then names a file that is not there).
    %(verbose)s

    Returns
    -------
    trials : Trials
        ``X`` float32 of shape (n_segments, 128, n_times) in volts; ``stimulus_ids`` ``"audio<r>@<ms>"``;
        ``split`` from the run; ``texts`` the word; ``metadata`` with ``sound`` (``Stimuli/Audio/audio<r>.wav``),
        ``sound_offset`` (s), ``sequence`` (the wav stem), ``story``, ``session`` (0), ``task`` (the run);
        ``provenance`` records every choice, with ``sensor_positions`` (128 x 2 in [0, 1]).

    Notes
    -----
    A word whose window runs past either end of its run is dropped and counted
    (``provenance["n_words_outside_window"]``); a word whose onset lies outside the run means a truncated file
    or a mismatched word table and raises.
    """
    import mne

    from .._core.validation import check_finite
    from .._core.versions import package_versions
    from ._meg_masc import sensor_positions_2d

    spec = _spec()
    s = _subject(subject)
    root = Path(root)
    win = _speech.segment_window(spec["segments"], tmin, tmax, sfreq, baseline)
    out_sf = win.sfreq
    if reference is not None:
        check_option(reference, "reference", ("mastoids", "average"))
    expected_raw = float(spec["dataset"]["sfreq"] if raw_sfreq is None else raw_sfreq)
    scale = float(spec["dataset"]["unit_scale"])
    splits = broderick2019_splits(root, test_fraction=test_fraction, val_fraction=val_fraction)
    recs = find_broderick2019_runs(root, s, runs=runs)
    names = biosemi128_names()
    order = list(ch_names) if ch_names is not None else names
    if set(order) != set(names):
        raise MetadataMismatchError(format_error("ch_names", "the 128 BioSemi channels of the release",
                                                 _set_diff(names, order),
                                                 "Pass the channel set your model was trained on (A1 ... D32)"))
    Xs: list[np.ndarray] = []
    cols: dict[str, list[Any]] = {k: [] for k in ("id", "split", "word", "sound", "offset", "task")}
    n_outside = 0
    montage = mne.channels.make_standard_montage(spec["dataset"]["montage"])
    positions = None
    for run, path in progress(recs, desc=f"broderick2019 {_subject_id(s)}", unit="run", verbose=verbose):
        snd = _sound(run)
        if snd not in splits:
            raise MissingFileError(format_error("root", f"the word table of run {run}",
                                                f"nothing at {root / relative_path(_NAME, 'text', run=run)}",
                                                "Download the Stimuli/Text folder"))
        if require_audio and not (root / snd).is_file():
            raise MissingFileError(format_error(
                "root", f"the audio of run {run} (the speech targets are computed from it)", f"nothing at {root / snd}",
                "The public Dryad release has no wav files: obtain the run wavs (brainmagick's audio<r>.wav) and put "
                f"them at {spec['paths']['audio']}; or pass require_audio=False to read the EEG alone"))
        words = read_broderick2019_words(root / relative_path(_NAME, "text", run=run))
        rec = _read_eeg(path, raw_sfreq=expected_raw)
        eeg = rec["eeg"] * scale
        check_finite(eeg, "EEG data", axes=("channel", "time"), labels={0: names},
                     where=f"{path} ({_NAME}/{_subject_id(s)})",
                     fix="The run holds NaN/inf samples: interpolate the channel or leave the run out (runs=)")
        if reference == "mastoids":
            mast = rec["mastoids"] * scale
            check_finite(mast, "mastoids", where=str(path), fix="Use reference=None or 'average'")
            eeg = eeg - mast.mean(axis=0, keepdims=True)
        elif reference == "average":
            eeg = eeg - eeg.mean(axis=0, keepdims=True)
        duration = rec["n_times"] / rec["fs"]
        beyond = np.flatnonzero((words["onset"] < 0) | (words["onset"] >= duration))
        if beyond.size:
            raise DataIntegrityError(format_error(
                "events", f"word onsets inside the run ({duration:g} s)",
                f"{beyond.size} word(s) outside it (first at {words['onset'][beyond[0]]:g} s; {path})",
                "The EEG file is truncated or the word table belongs to another run; download both again"))
        info = mne.create_info(names, rec["fs"], "eeg")
        raw = mne.io.RawArray(eeg, info, verbose=_mne_verbose(verbose))
        raw.set_montage(montage, verbose=_mne_verbose(verbose))
        if positions is None:
            positions = sensor_positions_2d(raw.info, order)
        _speech.filter_resample(raw, l_freq, h_freq, out_sf, verbose)
        data = raw.get_data(picks=order)
        samples = np.round(words["onset"] * out_sf).astype(np.int64)
        inside = _speech.windows_inside(samples, win, data.shape[1])
        n_outside += int((~inside).sum())
        keep = np.flatnonzero(inside)
        if not keep.size:
            continue
        Xs.append(_speech.cut_segments(data, samples[keep], win))
        for i in keep:
            off = float(words["onset"][i])
            cols["id"].append(_speech.stimulus_id(snd, off))
            cols["word"].append(str(words["word"][i]))
            cols["offset"].append(off)
        cols["split"] += [splits[snd]] * keep.size
        cols["sound"] += [snd] * keep.size
        cols["task"] += [run] * keep.size
    if not Xs:
        raise ValidationError(format_error("tmin/tmax", "word windows inside the runs",
                                           f"none in {len(recs)} run(s) of {_subject_id(s)}",
                                           "Shorten the window or read more runs"))
    sid = f"{_NAME}/{_subject_id(s)}"
    provenance = {
        "dataset": _NAME, "loader": "neurodecode.data._broderick.load_broderick2019", "root": str(root),
        "subject": sid, "files": [str(p) for _, p in recs], "runs": [r for r, _ in recs],
        "raw_sfreq": expected_raw, "sfreq": out_sf, "unit": f"volts (file values x {scale:g}; unit unverified)",
        "reference": reference or "as released", **_speech.window_provenance(win, l_freq, h_freq),
        "segments": "one per word onset (Stimuli/Text onset_time); window [tmin, tmax) s",
        "montage": spec["dataset"]["montage"], "n_channels": len(order),
        "sensor_positions": _speech.rounded_positions(positions),
        "split": "by run / wav file (SHA-1 rank of its name): test 20 %, val 10 % (broderick2019_splits)",
        "stimulus_ids": "audio<run>@<word onset in the run, ms>",
        "n_words_outside_window": n_outside,
        "versions": package_versions(("numpy", "mne", "scipy")),
    }
    return _speech.speech_trials(
        np.concatenate(Xs), window=win, subject=sid, ch_names=order, stimulus_ids=cols["id"], split=cols["split"],
        texts=cols["word"], sound=cols["sound"], sound_offset=cols["offset"],
        sequence=[PurePosixPath(x).stem for x in cols["sound"]], story=str(spec["dataset"]["story"]), session=0,
        task=cols["task"], provenance=provenance)


def check_broderick2019(
    root: str | os.PathLike[str], subjects: Sequence[Any] | None = None, *, raw_sfreq: float | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Check a Natural Speech tree without loading the samples; return ``(report, problems)``.

    Reads each run's variable shapes and ``fs`` (``scipy.io.whosmat``), its word table and checks the rate, the
    time x 128 layout, the mastoids, that every word onset lies inside its run, that each run's wav exists and
    that no run is missing for one subject while present for others. Nothing is raised: every problem is listed.
    """
    root = Path(root)
    spec = _spec()
    expected_raw = float(spec["dataset"]["sfreq"] if raw_sfreq is None else raw_sfreq)
    problems: list[str] = []
    report: dict[str, Any] = {"subjects": {}, "warnings": []}
    splits = _speech.splits_or_problem(lambda: broderick2019_splits(root), problems)
    missing_audio = sorted(snd for snd in splits if not (root / snd).is_file())
    if missing_audio:
        problems.append(f"{len(missing_audio)} run wav(s) missing ({missing_audio[:5]}): the public Dryad release "
                        f"has none; put the run audio at {spec['paths']['audio']} (the speech recipes need it)")
    if subjects is None:
        folder = root / spec["paths"]["eeg_dir"]
        subjects = sorted(int(m.group(1)) for p in folder.glob("Subject*")
                          if (m := re.fullmatch(r"Subject(\d+)", p.name))) if folder.is_dir() else []
        if not subjects:
            problems.append(f"no subject found: missing {relative_path(_NAME, 'eeg', subject=1, run=1)} under {root}")
    words_cache: dict[int, Any] = {}
    per_subject: dict[int, set[int]] = {}
    for subject in subjects:
        try:
            s = _subject(subject)
            recs = find_broderick2019_runs(root, s)
        except Exception as exc:
            problems.append(f"subject {subject}: {exc}")
            continue
        per_subject[s] = {r for r, _ in recs}
        n_words = 0
        for run, path in recs:
            label = f"{_subject_id(s)} run {run}"
            try:
                rec = _read_eeg(path, raw_sfreq=expected_raw, header_only=True)
                if run not in words_cache:
                    words_cache[run] = read_broderick2019_words(root / relative_path(_NAME, "text", run=run))
                onset = words_cache[run]["onset"]
                duration = rec["n_times"] / rec["fs"]
                beyond = int(((onset < 0) | (onset >= duration)).sum())
                if beyond:
                    problems.append(f"{label}: {beyond} word onset(s) beyond the run ({duration:g} s): the EEG file is "
                                    "truncated or the word table belongs to another run")
                n_words += len(onset)
            except Exception as exc:
                problems.append(f"{label}: {exc}")
        report["subjects"][str(s)] = {"runs": len(recs), "words": n_words}
    all_runs = set().union(*per_subject.values()) if per_subject else set()
    for s, got in sorted(per_subject.items()):
        lacking = sorted(all_runs - got)
        if lacking:
            problems.append(f"{_subject_id(s)}: missing runs {lacking} (present for other subjects of this tree)")
    return report, problems
