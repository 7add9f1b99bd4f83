"""Write MOUS auditory trees: BIDS recordings (``_meg.fif`` + ``_events.tsv`` + ``_channels.tsv`` + ``_meg.json``),
stimulus wavs, word-timing TextGrids and ``stimuli/stimuli.txt``.

The release (Donders DSC_3011020.09_236) stores CTF ``.ds`` folders; MNE cannot write CTF, so the writer stores
each recording as a BIDS FIF twin (``sub-A2002_task-auditory_meg.fif``), which
:func:`neurodecode.data._mous.load_mous` reads through the same code path as ``.ds``. Channels are named like
MNE names this DCCN CTF system's sensors (``MLC11-4304`` ...; plausible names, not the real 275-sensor list),
typed as CTF axial gradiometers (MNE coil ``FIFFV_COIL_CTF_GRAD``) spread over a helmet cap, plus CTF reference
sensors (``BG1-4304`` ..., ``ref_meg``) and the trigger channel ``UPPT001`` (``stim``), which the loader drops.
The events follow FieldTrip's ``data2bids`` table (``onset``, ``duration``, ``sample`` 1-based, ``type``,
``value``) with the Presentation rows the loader reads (``Picture`` ZINNEN / WOORDEN, ``Sound`` ``<code> Start
File <NNN>.wav``, ``Nothing`` ``<code> Audio onset`` / ``<code> End of file``) and ``frontpanel trigger`` rows.
Wavs are 16-bit stereo PCM (the scripts reading the release take one of two channels); TextGrids are Praat's
long text format with the MAUS tiers ``ORT-MAU`` (words), ``KAN-MAU`` and ``MAU`` (phonemes).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import ValidationError
from .._core.specs import load_spec
from .._core.validation import check_array, format_error
from ._bids import check_channels, write_root_files, write_tsv

__all__ = ["make_mous_fixture", "write_mous_recording", "write_mous_wav", "write_mous_textgrid",
           "write_mous_stimuli_text", "mous_sound_events", "mous_channel_names", "mous_path"]

_WORDS = ("de", "man", "die", "het", "boek", "las", "zag", "een", "vrouw", "in", "tuin", "met", "hond", "en",
          "kat", "liep", "naar", "huis", "toen", "regen", "viel")
_REGIONS = ("C", "F", "O", "P", "T")


def _spec() -> dict[str, Any]:
    return load_spec("mous")


def _subject_number(subject: Any) -> int:
    ds = _spec()["dataset"]
    m = re.fullmatch(r"(?:mous/)?(?:sub-)?A?(\d{4})", str(subject).strip())
    if isinstance(subject, bool) or not m or not int(ds["subject_min"]) <= int(m.group(1)) <= int(ds["subject_max"]):
        raise ValidationError(format_error("subject", f"an auditory subject {ds['subject_min']}.."
                                           f"{ds['subject_max']} or an id like sub-A2002", repr(subject)))
    return int(m.group(1))


def mous_path(root: str | os.PathLike[str], key: str, *, subject: Any, run: int | None = None) -> Path:
    """Absolute path of MOUS file ``key`` (``raw_fif``, ``raw_ds``, ``events``, ``channels``, ``sidecar``);
    ``run`` adds the BIDS ``_run-<n>`` entity."""
    rel = _spec()["paths"][key].format(subject=_subject_number(subject))
    if run is not None:
        rel = rel.replace("_task-auditory_", f"_task-auditory_run-{int(run)}_")
    return Path(root) / rel


def mous_channel_names(n_channels: int | None = None, *, suffix: str = "-4304") -> list[str]:
    """CTF-style MEG names (``MLC11-4304``, ``MRC11-4304``, ``MZC01-4304``, ...); ``None``: the spec's 273."""
    n = int(_spec()["dataset"]["n_channels"]) if n_channels is None else int(n_channels)
    if n < 1:
        raise ValidationError(format_error("n_channels", "at least 1", n))
    names: list[str] = []
    for row in range(1, 8):
        for col in range(1, 8):
            for region in _REGIONS:
                names += [f"ML{region}{row}{col}{suffix}", f"MR{region}{row}{col}{suffix}"]
                if col == 1:
                    names.append(f"MZ{region}0{row}{suffix}")
    if n > len(names):
        raise ValidationError(format_error("n_channels", f"at most {len(names)}", n))
    return names[:n]


def _ctf_info(meg: Sequence[str], sfreq: float, n_ref: int) -> Any:
    """``mne.Info``: CTF axial gradiometers on a 12 cm cap, ``n_ref`` reference sensors and the trigger channel."""
    import mne
    from mne.io.constants import FIFF

    from ._meg_masc import _set_kit_geometry

    refs = [f"BG{k + 1}-4304" for k in range(n_ref)]
    info = mne.create_info(list(meg) + refs + ["UPPT001"], float(sfreq),
                           ["mag"] * len(meg) + ["ref_meg"] * n_ref + ["stim"], verbose="error")
    _set_kit_geometry(info)  # the lattice of MEG-MASC's fixture, then retyped as CTF sensors
    for k, ch in enumerate(info["chs"]):
        if ch["kind"] == FIFF.FIFFV_MEG_CH:
            ch["coil_type"] = FIFF.FIFFV_COIL_CTF_GRAD
        elif ch["kind"] == FIFF.FIFFV_REF_MEG_CH:
            ch["coil_type"] = FIFF.FIFFV_COIL_CTF_REF_GRAD
            ch["loc"] = np.concatenate([[0.02 * k, 0.0, 0.25], [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]])
    with info._unlock():
        info["dev_head_t"] = mne.transforms.Transform("meg", "head")
    return info


def _audio_path(root: str | os.PathLike[str], number: int) -> Path:
    p = _spec()["paths"]
    return Path(root) / p["audio_dir"] / p["audio_file"].format(number=int(number))


def write_mous_wav(root: str | os.PathLike[str], number: int, wave: Any, sr: int = 44100, *,
                   stereo: bool = True) -> Path:
    """Write ``stimuli/audio_files/EQ_Ramp_Int2_Int1LPF<NNN>.wav`` (16-bit PCM) from ``wave`` (n_samples,) in
    [-1, 1]; ``stereo`` duplicates it on two channels."""
    from scipy.io import wavfile

    from .._core.files import atomic_path

    x = check_array(wave, "wave", ndim=1)
    path = _audio_path(root, number)
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = np.round(np.clip(x, -1, 1) * 32767).astype(np.int16)
    with atomic_path(path, suffix=".wav") as tmp:
        wavfile.write(tmp, int(sr), np.stack([pcm, pcm], axis=1) if stereo else pcm)
    return path


def _q(text: str) -> str:
    return '"' + str(text).replace('"', '""') + '"'


def write_mous_textgrid(root: str | os.PathLike[str], number: int, words: Sequence[tuple[str, float, float]],
                        duration: float) -> Path:
    """Write ``derivatives/phonemes/EQ_Ramp_Int2_Int1LPF<NNN>.TextGrid`` (Praat long format, MAUS tiers).

    Parameters
    ----------
    words : sequence of (str, float, float)
        ``(word, start, stop)`` in s from the start of the wav, in order, not overlapping; the gaps become
        silent intervals (``""`` in ``ORT-MAU``, ``"<p:>"`` in ``MAU``).
    duration : float
        Length of the wav (s).
    """
    from .._core.files import atomic_write

    p = _spec()["paths"]
    path = Path(root) / p["word_timings_dir"] / p["word_timings_file"].format(number=int(number))
    path.parent.mkdir(parents=True, exist_ok=True)
    tiers: dict[str, list[tuple[float, float, str]]] = {"ORT-MAU": [], "KAN-MAU": [], "MAU": []}
    t = 0.0
    for w, a, b in list(words) + [("", float(duration), float(duration))]:
        if a < t - 1e-9 or b < a:
            raise ValidationError(format_error("words", "ordered, non-overlapping (word, start, stop)", (w, a, b)))
        if a > t:
            tiers["ORT-MAU"].append((t, a, ""))
            tiers["KAN-MAU"].append((t, a, ""))
            tiers["MAU"].append((t, a, "<p:>"))
        if w:
            tiers["ORT-MAU"].append((a, b, w))
            tiers["KAN-MAU"].append((a, b, " ".join(w)))
            half = (a + b) / 2  # two "phonemes" per word
            tiers["MAU"] += [(a, half, w[:1]), (half, b, w[1:] or w)]
        t = b
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0 ", f"xmax = {duration:.6f}",
             "tiers? <exists> ", f"size = {len(tiers)}", "item []:"]
    for k, (name, intervals) in enumerate(tiers.items(), start=1):
        lines += [f"    item [{k}]:", '        class = "IntervalTier"', f"        name = {_q(name)}",
                  "        xmin = 0", f"        xmax = {duration:.6f}", f"        intervals: size = {len(intervals)}"]
        for j, (a, b, text) in enumerate(intervals, start=1):
            lines += [f"        intervals [{j}]:", f"            xmin = {a:.6f}", f"            xmax = {b:.6f}",
                      f"            text = {_q(text)}"]
    with atomic_write(path) as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def write_mous_stimuli_text(root: str | os.PathLike[str], sentences: Mapping[int, str]) -> Path:
    """Write ``stimuli/stimuli.txt``: one ``"<number> <sentence>"`` line per stimulus."""
    from .._core.files import atomic_write

    path = Path(root) / _spec()["paths"]["stimuli_text"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as fh:
        for n in sorted(sentences):
            fh.write(f"{int(n)} {sentences[n]}\n")
    return path


def mous_sound_events(sounds: Sequence[tuple[int, float, str]], *, audio_delay: float = 0.046,
                      sound_seconds: float | Sequence[float] = 3.0, with_audio_onset: bool = True
                      ) -> list[dict[str, Any]]:
    """The events of a recording playing ``(number, audio onset s, context)`` wavs, as the release spells them.

    Each wav gets, as in the Presentation logs brainmagick parses: a ``Picture`` row ``ZINNEN`` / ``WOORDEN`` when
    the block context changes, a ``Picture`` fixation row, the ``Sound`` row ``"14 Start File <NNN>.wav"``
    ``audio_delay`` s before the audio onset, the ``Nothing`` rows ``"1 Audio onset"`` (at the onset; left out
    with ``with_audio_onset=False``) and ``"15 End of file"``, plus ``frontpanel trigger`` rows (10: block, 20:
    fixation).
    """
    codes = {v: k for k, v in _spec()["events"]["contexts"].items()}
    lengths = [float(sound_seconds)] * len(sounds) if np.isscalar(sound_seconds) else [float(x) for x in sound_seconds]
    out: list[dict[str, Any]] = []
    context = None
    for (number, onset, ctx), length in zip(sounds, lengths):
        start = float(onset) - float(audio_delay)
        if ctx != context:
            out.append({"onset": start - 0.9, "type": "Picture", "value": codes[ctx]})
            out.append({"onset": start - 0.9, "type": "frontpanel trigger", "value": 10})
            context = ctx
        out.append({"onset": start - 0.5, "type": "Picture", "value": "FIX 3516"})
        out.append({"onset": start - 0.5, "type": "frontpanel trigger", "value": 20})
        out.append({"onset": start, "type": "Sound", "value": f"14 Start File {int(number):03d}.wav"})
        if with_audio_onset:
            out.append({"onset": float(onset), "type": "Nothing", "value": "1 Audio onset"})
        out.append({"onset": float(onset) + length, "type": "Nothing", "value": "15 End of file"})
    return out


def write_mous_recording(
    root: str | os.PathLike[str],
    subject: Any,
    *,
    data: Any,
    sfreq: float,
    ch_names: Sequence[str],
    events: Sequence[Mapping[str, Any]],
    bads: Sequence[str] = (),
    n_ref: int = 3,
    run: int | None = None,
) -> Path:
    """Write one MOUS auditory recording in BIDS: ``sub-A<NNNN>/meg/sub-A<NNNN>_task-auditory_meg.fif`` + sidecars.

    Also writes ``dataset_description.json`` and completes ``participants.tsv``.

    Parameters
    ----------
    root : path-like
        BIDS root.
    subject : int or str
        2002..2125 or ``"sub-A2002"``.
    data : ndarray of shape (n_channels, n_samples)
        Continuous MEG in tesla, one row per name of ``ch_names``.
    sfreq : float
        Rate in Hz (MOUS: 1200).
    ch_names : sequence of str
        E.g. :func:`mous_channel_names`.
    events : sequence of dict
        Each with ``onset`` (s from the recording start), ``type``, ``value`` and optional ``duration`` (s), e.g.
        :func:`mous_sound_events`; written with FieldTrip's 1-based ``sample``, sorted by onset.
    bads : sequence of str
        Channels marked bad (``info["bads"]`` and ``status`` in ``_channels.tsv``).
    n_ref : int
        CTF reference sensors written beside the MEG channels (zeros; the loader must drop them).
    run : int or None
        Adds ``_run-<n>`` to the file names.

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
    info = _ctf_info(names, sfreq, int(n_ref))
    info["line_freq"] = float(spec["dataset"]["power_line_frequency"])
    info["bads"] = list(bads)
    full = np.concatenate([data.astype(np.float64), np.zeros((int(n_ref) + 1, data.shape[1]))])
    rows = []
    for k, ev in enumerate(sorted(events, key=lambda e: float(e["onset"]))):
        if not {"onset", "type", "value"} <= set(ev):
            raise ValidationError(format_error(f"events[{k}]", "a dict with onset, type, value", sorted(ev)))
        sample = int(round(float(ev["onset"]) * sfreq))
        if not 0 <= sample < data.shape[1]:
            raise ValidationError(format_error(f"events[{k}].onset", f"a time within the recording "
                                               f"(0 to {data.shape[1] / sfreq:g} s)", ev["onset"]))
        if ev["type"] == "frontpanel trigger":
            full[-1, sample:sample + 10] = float(ev["value"])
        duration = ev.get("duration")
        rows.append([f"{sample / sfreq:.6f}", "n/a" if duration is None else f"{float(duration):.6f}", sample + 1,
                     ev["type"], ev["value"]])
    raw = mne.io.RawArray(full, info, verbose="error")
    path = mous_path(root, "raw_fif", subject=s, run=run)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix="_meg.fif") as tmp:
        raw.save(tmp, overwrite=True, verbose="error")
    write_tsv(mous_path(root, "events", subject=s, run=run), ["onset", "duration", "sample", "type", "value"], rows)
    chan_rows = [[n, "MEGGRADAXIAL", "T", f"{sfreq:g}", "bad" if n in bads else "good"] for n in names]
    chan_rows += [[c, "MEGREFGRADAXIAL", "T", f"{sfreq:g}", "good"] for c in info["ch_names"][len(names):-1]]
    chan_rows.append(["UPPT001", "TRIG", "n/a", f"{sfreq:g}", "good"])
    write_tsv(mous_path(root, "channels", subject=s, run=run), ["name", "type", "units", "sampling_frequency",
                                                                 "status"], chan_rows)
    write_json(mous_path(root, "sidecar", subject=s, run=run), {
        "TaskName": spec["dataset"]["task"], "Manufacturer": "CTF", "ManufacturersModelName": "CTF-275",
        "SamplingFrequency": sfreq, "PowerLineFrequency": float(spec["dataset"]["power_line_frequency"]),
        "DewarPosition": "upright", "SoftwareFilters": "n/a", "DigitizedLandmarks": False,
        "DigitizedHeadPoints": False, "MEGChannelCount": len(names), "MEGREFChannelCount": int(n_ref),
        "TriggerChannelCount": 1, "RecordingDuration": round(data.shape[1] / sfreq, 6),
        "RecordingType": "continuous"})
    write_root_files(root, spec, s, bids_version="1.2.0", references=[spec["dataset"]["url"], spec["dataset"]["paper"]])
    return path


def make_mous_fixture(
    root: str | os.PathLike[str],
    *,
    subjects: Sequence[Any] = (2002,),
    n_sounds: int = 5,
    words_per_sound: int = 3,
    sound_seconds: float = 3.0,
    n_channels: int = 9,
    sfreq: float | None = None,
    audio_sr: int = 8000,
    first_number: int = 1,
    seed: int = 0,
) -> Path:
    """A random MOUS auditory tree with the release's structure at small scale.

    Wavs ``EQ_Ramp_Int2_Int1LPF<NNN>.wav`` (``first_number`` ...) of ``sound_seconds`` of noise-like stereo audio,
    each with a TextGrid of ``words_per_sound`` words and a ``stimuli.txt`` line; the first half are heard in a
    sentence block (ZINNEN), the rest in a word-list block (WOORDEN). Every subject hears every wav, in a
    subject-specific order, one every ``sound_seconds + 1`` s after 2 s; MEG is Gaussian noise around 1e-13 T on
    ``n_channels`` CTF channels at ``sfreq`` (default the spec's 1200 Hz), with 3 s after the last wav.

    Returns
    -------
    root : pathlib.Path
    """
    spec = _spec()
    rng = np.random.default_rng(seed)
    sf = float(spec["dataset"]["sfreq"]) if sfreq is None else float(sfreq)
    names = mous_channel_names(n_channels)
    numbers = [first_number + k for k in range(n_sounds)]
    sentences = {}
    for k, n in enumerate(numbers):
        if not _audio_path(root, n).is_file():
            write_mous_wav(root, n, 0.1 * rng.standard_normal(int(sound_seconds * audio_sr)), audio_sr)
        starts = np.sort(rng.uniform(0.05, sound_seconds - 0.3, words_per_sound)).round(3)
        words = [(_WORDS[(k * words_per_sound + j) % len(_WORDS)], float(a), float(a) + 0.2)
                 for j, a in enumerate(starts)]
        for j in range(len(words) - 1):  # no overlap
            words[j] = (words[j][0], words[j][1], min(words[j][2], words[j + 1][1]))
        write_mous_textgrid(root, n, words, sound_seconds)
        sentences[n] = " ".join(w for w, _, _ in words)
    write_mous_stimuli_text(root, sentences)
    half = (n_sounds + 1) // 2
    for subject in subjects:
        order = np.concatenate([rng.permutation(half), half + rng.permutation(n_sounds - half)])
        plan = [(numbers[i], 2.0 + j * (sound_seconds + 1.0), "sentence" if i < half else "word_list")
                for j, i in enumerate(order)]
        n_s = int(round((2.0 + n_sounds * (sound_seconds + 1.0) + 3.0) * sf))
        data = rng.normal(0.0, 1e-13, size=(len(names), n_s))
        write_mous_recording(root, subject, data=data, sfreq=sf, ch_names=names,
                             events=mous_sound_events(plan, sound_seconds=sound_seconds))
    return Path(root)
