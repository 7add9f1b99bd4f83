"""Write MEG-MASC BIDS recordings (``_meg.fif`` + ``_events.tsv`` + ``_channels.tsv`` + ``_meg.json``) and wavs.

The published dataset (OpenNeuro ds004276) stores KIT ``.con`` files; MNE cannot write KIT, so the writer
stores each recording as BIDS FIF (``..._meg.fif``), which :func:`neurodecode.data.load_meg_masc` reads
through the same code path as ``.con``. Channels are named as MNE names KIT sensors (``MEG 001`` ...), typed
as KIT first-order axial gradiometers (MNE coil ``FIFFV_COIL_KIT_GRAD``) pointing radially, spread evenly over
a 12 cm helmet cap (a Fibonacci lattice): plausible, not the real geometry. Events follow the release: each row's
``trial_type`` holds a Python dict literal with ``kind`` (``sound`` / ``word`` / ``phoneme``), the text and the
``sound`` file (``stimuli/audio/<story>_<k>.wav``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import ValidationError
from .._core.specs import load_spec
from .._core.validation import check_array, format_error
from ._bids import check_channels, write_root_files, write_tsv

__all__ = ["write_meg_masc_recording", "write_meg_masc_wav", "make_meg_masc_fixture", "kit_channel_names",
           "meg_masc_path", "kit_info"]

_WORDS = ("once", "upon", "a", "time", "there", "lived", "an", "old", "tailor", "who", "sewed", "coats", "for",
          "the", "king", "and", "his", "seven", "daughters", "by", "river")


def _spec() -> dict[str, Any]:
    return load_spec("meg_masc")


def _subject_number(subject: Any) -> int:
    import re

    m = re.fullmatch(r"(?:meg-masc/)?(?:sub-)?0*(\d+)", str(subject).strip())
    n = int(_spec()["dataset"]["n_subjects"])
    if isinstance(subject, bool) or not m or not 1 <= int(m.group(1)) <= n:
        raise ValidationError(format_error("subject", f"a subject 1..{n} or an id like sub-01", repr(subject)))
    return int(m.group(1))


def meg_masc_path(root: str | os.PathLike[str], key: str, *, subject: Any, session: int = 0, task: int = 0) -> Path:
    """Absolute path of MEG-MASC file ``key`` (``raw_fif``, ``raw_con``, ``events``, ``channels``, ``sidecar``)."""
    rel = _spec()["paths"][key].format(subject=_subject_number(subject), session=int(session), task=int(task))
    return Path(root) / rel


def kit_channel_names(n_channels: int | None = None) -> list[str]:
    """``MEG 001`` ... (MNE's KIT names); ``None``: the spec's 208."""
    n = int(_spec()["dataset"]["n_channels"]) if n_channels is None else int(n_channels)
    if n < 1:
        raise ValidationError(format_error("n_channels", "at least 1", n))
    return [f"MEG {i + 1:03d}" for i in range(n)]


def _set_kit_geometry(info: Any) -> None:
    """Radial KIT axial gradiometers on a 12 cm cap (polar angle up to 100 degrees, Fibonacci lattice)."""
    from mne.io.constants import FIFF

    meg = [ch for ch in info["chs"] if ch["kind"] == FIFF.FIFFV_MEG_CH]
    n = len(meg)
    golden = np.pi * (3 - np.sqrt(5))
    zmin = np.cos(np.deg2rad(100))
    for k, ch in enumerate(meg):
        z = 1 - (1 - zmin) * (k + 0.5) / max(n, 1)
        r = np.sqrt(max(1 - z * z, 0.0))
        ez = np.array([r * np.cos(golden * k), r * np.sin(golden * k), z])
        ex = np.cross([0.0, 0.0, 1.0], ez)
        ex = ex / np.linalg.norm(ex) if np.linalg.norm(ex) > 1e-9 else np.array([1.0, 0.0, 0.0])
        ey = np.cross(ez, ex)
        ch["loc"] = np.concatenate([0.12 * ez, ex, ey, ez])
        ch["coil_type"] = FIFF.FIFFV_COIL_KIT_GRAD


def kit_info(ch_names: Sequence[str], sfreq: float) -> Any:
    """``mne.Info`` of KIT-like MEG channels with the geometry the writer uses (head = device frame)."""
    import mne

    info = mne.create_info(list(ch_names), float(sfreq), "mag", verbose="error")
    _set_kit_geometry(info)
    with info._unlock():
        info["dev_head_t"] = mne.transforms.Transform("meg", "head")
    return info


def write_meg_masc_wav(root: str | os.PathLike[str], name: str, wave: Any, sr: int = 16000) -> Path:
    """Write ``stimuli/audio/<name>`` (16-bit PCM mono) from ``wave`` of shape (n_samples,) in [-1, 1]."""
    from scipy.io import wavfile

    from .._core.files import atomic_path

    x = check_array(wave, "wave", ndim=1)
    path = Path(root) / _spec()["paths"]["audio_dir"] / (name if name.endswith(".wav") else f"{name}.wav")
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = np.round(np.clip(x, -1, 1) * 32767).astype(np.int16)
    with atomic_path(path, suffix=".wav") as tmp:
        wavfile.write(tmp, int(sr), pcm)
    return path


def write_meg_masc_recording(
    root: str | os.PathLike[str],
    subject: Any,
    *,
    session: int,
    task: int,
    data: Any,
    sfreq: float,
    ch_names: Sequence[str],
    events: Sequence[Mapping[str, Any]],
    bads: Sequence[str] = (),
) -> Path:
    """Write one MEG-MASC recording in BIDS: ``sub-<SS>/ses-<s>/meg/sub-<SS>_ses-<s>_task-<t>_meg.fif`` + sidecars.

    Also writes ``dataset_description.json`` and completes ``participants.tsv``.

    Parameters
    ----------
    root : path-like
        BIDS root.
    subject : int or str
        1..27 or ``"sub-01"``.
    session, task : int
        Session (0, 1) and story (0..3).
    data : ndarray of shape (n_channels, n_samples)
        Continuous MEG in tesla.
    sfreq : float
        Rate in Hz (MEG-MASC: 1000).
    ch_names : sequence of str
        E.g. :func:`kit_channel_names`.
    events : sequence of dict
        Each with ``onset`` (s from the recording start), optional ``duration`` (s), and the annotation keys
        (``kind``, ``word`` / ``phoneme``, ``sound``, ``story``, ``sequence_id``...), written as the dict
        literal of ``trial_type``.
    bads : sequence of str
        Channels marked bad (``info["bads"]`` and ``status`` in ``_channels.tsv``).

    Returns
    -------
    path : pathlib.Path
        The ``_meg.fif`` written.
    """
    import mne

    from .._core.files import atomic_path, write_json

    spec = _spec()
    s = _subject_number(subject)
    data, names = check_channels(data, ch_names, bads)
    sfreq = float(sfreq)
    info = kit_info(names, sfreq)
    info["line_freq"] = float(spec["dataset"]["power_line_frequency"])
    info["bads"] = list(bads)
    raw = mne.io.RawArray(data.astype(np.float64), info, verbose="error")
    path = meg_masc_path(root, "raw_fif", subject=s, session=session, task=task)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix="_meg.fif") as tmp:
        raw.save(tmp, overwrite=True, verbose="error")
    rows = []
    for k, ev in enumerate(events):
        if "onset" not in ev:
            raise ValidationError(format_error(f"events[{k}]", "a dict with 'onset'", sorted(ev)))
        onset = float(ev["onset"])
        sample = int(round(onset * sfreq))
        if not 0 <= sample < data.shape[1]:
            raise ValidationError(format_error(f"events[{k}].onset", f"a time within the recording "
                                               f"(0 to {data.shape[1] / sfreq:g} s)", onset))
        desc = {key: v for key, v in ev.items() if key not in ("onset", "duration")}
        rows.append([f"{sample / sfreq:.3f}", f"{float(ev.get('duration', 0.0)):.3f}", repr(desc), 1, sample])
    write_tsv(meg_masc_path(root, "events", subject=s, session=session, task=task),
              ["onset", "duration", "trial_type", "value", "sample"], rows)
    write_tsv(meg_masc_path(root, "channels", subject=s, session=session, task=task),
              ["name", "type", "units", "sampling_frequency", "status"],
              [[n, "MEGGRADAXIAL", "T", f"{sfreq:g}", "bad" if n in bads else "good"] for n in names])
    write_json(meg_masc_path(root, "sidecar", subject=s, session=session, task=task), {
        "TaskName": str(task), "Manufacturer": "KIT/Yokogawa", "SamplingFrequency": sfreq,
        "PowerLineFrequency": float(spec["dataset"]["power_line_frequency"]), "DewarPosition": "supine",
        "SoftwareFilters": "n/a", "DigitizedLandmarks": False, "DigitizedHeadPoints": False,
        "MEGChannelCount": len(names), "RecordingDuration": round(data.shape[1] / sfreq, 6),
        "RecordingType": "continuous",
    })
    write_root_files(root, spec, s, bids_version="1.6.0", references=[spec["dataset"]["url"]])
    return path


def story_events(story: str, sounds: Sequence[tuple[str, float, Sequence[tuple[str, float]]]],
                 *, story_uid: int = 0) -> list[dict[str, Any]]:
    """The events of one recording: for each ``(wav name, onset s, [(word, offset in wav s), ...])`` a ``sound``
    row then its ``word`` rows (sequence ids count sentences: one per wav)."""
    rel = _spec()["paths"]["audio_dir"]
    out: list[dict[str, Any]] = []
    for k, (name, onset, words) in enumerate(sounds):
        snd = f"{rel}/{name}"
        out.append({"onset": onset, "story": story, "story_uid": story_uid, "sound_id": k, "kind": "sound",
                    "sound": snd})
        for w, off in words:
            out.append({"onset": onset + off, "duration": 0.3, "story": story, "story_uid": story_uid,
                        "sound_id": k, "kind": "word", "word": w, "sound": snd, "sequence_id": k})
    return out


def make_meg_masc_fixture(
    root: str | os.PathLike[str],
    *,
    subjects: Sequence[Any] = (1,),
    sessions: Sequence[int] = (0,),
    tasks: Sequence[int] = (0,),
    n_sounds: int = 5,
    words_per_sound: int = 3,
    sound_seconds: float = 3.0,
    n_channels: int = 9,
    sfreq: float | None = None,
    audio_sr: int = 16000,
    seed: int = 0,
) -> Path:
    """A random MEG-MASC tree with the release's structure at small scale.

    Each story (task) ``t`` is ``n_sounds`` wav files ``<story>_<k>.wav`` of ``sound_seconds`` of noise-like
    audio, played back to back after 1 s of silence, each with ``words_per_sound`` words; MEG is Gaussian noise
    around 1e-13 T on ``n_channels`` KIT channels at ``sfreq`` (default the spec's 1000 Hz), with 3 s after the
    last sound so every 3 s segment fits.

    Returns
    -------
    root : pathlib.Path
    """
    spec = _spec()
    rng = np.random.default_rng(seed)
    sf = float(spec["dataset"]["sfreq"]) if sfreq is None else float(sfreq)
    names = kit_channel_names(n_channels)
    stories = spec["dataset"]["stories"]
    plan: dict[int, list[tuple[str, float, list[tuple[str, float]]]]] = {}
    for t in tasks:
        items = []
        for k in range(n_sounds):
            name = f"{stories[t]}_{k}.wav"
            if not (Path(root) / spec["paths"]["audio_dir"] / name).is_file():
                write_meg_masc_wav(root, name, 0.1 * rng.standard_normal(int(sound_seconds * audio_sr)), audio_sr)
            offs = np.sort(rng.uniform(0.05, sound_seconds - 0.3, words_per_sound)).round(3)
            words = [(_WORDS[(k * words_per_sound + j) % len(_WORDS)], float(o)) for j, o in enumerate(offs)]
            items.append((name, 1.0 + k * sound_seconds, words))
        plan[t] = items
    for subject in subjects:
        for ses in sessions:
            for t in tasks:
                n_s = int(round((1.0 + n_sounds * sound_seconds + 3.0) * sf))
                data = rng.normal(0.0, 1e-13, size=(len(names), n_s))
                write_meg_masc_recording(root, subject, session=ses, task=t, data=data, sfreq=sf, ch_names=names,
                                         events=story_events(stories[t], plan[t], story_uid=t))
    return Path(root)
