"""Known-answer M/EEG for speech: real sentences spoken by espeak-ng, an auditory encoding model, written as
MEG-MASC (:func:`simulate_meg_masc`) or as Broderick 2019 EEG (:func:`simulate_broderick2019`, BioSemi 128 through
the EEG forward model; its differences are in its docstring).

The model (saved in ``OUT/truth/``):

1. **Speech.** Real English sentences (from Aesop's fables, Townsend's 1867 translation, public domain;
   :data:`SENTENCES`, or sentences you pass) are synthesised offline by eSpeak NG (``en-us`` voice) through
   its C library (:func:`synthesize`): the library and its voice data come from the ``espeakng-loader``
   wheel (``pip install espeakng-loader``), else from a system ``libespeak-ng`` (Debian ``espeak-ng``). Its
   word events give each word's onset. Each sentence is one wav file (16 kHz) of a story, as MEG-MASC's
   ``<story>_<k>.wav``; the sentences of a story are played one after another with 0.6 s pauses.
2. **Acoustic features.** The speech envelope in ``n_bands`` (8) log-spaced bands between 100 and 6000 Hz
   (4th-order Butterworth band-pass, Hilbert amplitude, 30 Hz low-pass, ``log1p`` compressed), at the MEG rate.
3. **Sources** (fixed dipoles in a homogeneous sphere under the KIT-like 208-channel helmet the fixtures use;
   :mod:`neurodecode.simulate._forward`): ``n_sources`` (8) bilateral auditory sources, 6 cm from the centre,
   tangential. Source ``s`` is ``sum_b W[s, b] (h_s * f_b)(t)``: a temporal response function ``h_s`` (gamma
   shape peaking at 70-130 ms, 400 ms long) applied to each band envelope ``f_b`` with subject-specific weights
   ``W`` (standard normal); two of them add a word-locked response peaking at 400 ms.
4. **Noise.** Background brain activity (60 random dipoles) plus sensor noise (20 % of the variance),
   AR(1) in time (coefficient 0.95 at 1000 Hz), RMS ``noise / snr`` times the RMS of the speech-driven signal
   (``noise`` = 3). Data in tesla (signal RMS 50 fT).

Ceiling (``ceiling.json``): a matched observer on the test segments (word onsets of the test wav files, -0.5 to
2.5 s, at 120 Hz after the loader's resampling and baseline): it knows every test segment's clean response and
the true spatial noise covariance and ranks the candidates by the whitened squared distance, treating time
samples as independent (not Bayes-optimal under the AR(1) noise, so a decoder could in principle exceed it by
a little; it is the reference the recipes compare to, together with chance and the shuffled control).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._core.docs import fill_doc
from .._core.errors import ValidationError
from .._core.files import write_json
from .._core.logging import logger, use_log_level
from .._core.validation import format_error
from . import _forward as fw
from ._common import SimulationResult, check_snr, check_subjects, save_truth_npz, summarise_ceiling
from ._ideal import chance_scores, identification_scores

__all__ = ["simulate_meg_masc", "simulate_broderick2019", "synthesize", "synthesize_sentences", "SENTENCES", "band_envelopes"]

#: Real sentences (Aesop's fables, G. F. Townsend's translation, 1867; public domain).
SENTENCES: tuple[str, ...] = (
    "A wolf saw a lamb drinking at a river and wished to find a pretext to seize her.",
    "A lion was awakened from sleep by a mouse running over his face.",
    "A hare one day ridiculed the short feet and slow pace of the tortoise.",
    "A fox one day fell into a deep well and could find no means of escape.",
    "A crow having stolen a bit of meat perched in a tree and held it in her beak.",
    "An ant went to the bank of a river to quench its thirst.",
    "A dog lying in a manger prevented the oxen from eating the hay.",
    "The north wind and the sun disputed as to which was the most powerful.",
    "A shepherd boy who watched a flock of sheep near a village brought out the villagers.",
    "A crab said to her son, why do you walk so one sided, my child?",
    "A miser sold all that he had and bought a lump of gold.",
    "A stag overpowered by heat came to a spring to drink.",
    "The mice summoned a council to decide how they might best devise means of warning.",
    "A man and his son were once going with their donkey to market.",
    "A countryman one frosty day found a snake stiff and frozen with cold.",
    "A farmer being on the point of death wished to be sure that his sons would pursue the same pursuit.",
    "A boy put his hand into a pitcher full of filberts.",
    "A father had a family of sons who were perpetually quarrelling among themselves.",
    "A bear roaming the woods in search of berries happened on a fallen tree.",
    "A bat who fell upon the ground and was caught by a weasel pleaded to be spared his life.",
    "The frogs asked Jupiter to send them a king.",
    "A fisherman skilled in music took his flute and his nets to the seashore.",
    "A thirsty crow found a pitcher with a little water in it.",
    "Two travellers were on the road together when a bear suddenly appeared.",
)

_NOISE = 3.0  # noise RMS / speech-driven signal RMS at snr = 1
_SIGNAL_T = 5e-14  # sensor RMS of the speech-driven signal (tesla)
_SIGNAL_V = 1e-6  # scalp RMS of the speech-driven EEG (volt)
_GAP = 0.6  # pause between sentences (s)
_AUDIO_SR = 16000


# ----------------------------------------------------------------------------------------- eSpeak NG
def _to_rate(wave: np.ndarray, native: int, sr: int) -> np.ndarray:
    from fractions import Fraction

    from scipy.signal import resample_poly

    x = wave.astype(np.float32) / 32768.0
    if int(sr) != int(native):
        f = Fraction(int(sr), int(native))
        x = resample_poly(x, f.numerator, f.denominator).astype(np.float32)
    return x


def synthesize(text: str, *, voice: str = "en-us", sr: int = _AUDIO_SR) -> tuple[np.ndarray, int, list[tuple[str, float]]]:
    """Speak ``text`` with eSpeak NG (in this process); return the waveform, its rate and each word's onset.

    Parameters
    ----------
    text : str
        The sentence.
    voice : str
        eSpeak NG voice (``"en-us"``).
    sr : int
        Output rate (the engine speaks at 22050 Hz; resampled with a polyphase filter).

    Returns
    -------
    wave : ndarray of float32, shape (n_samples,)
        In [-1, 1].
    sr : int
    words : list of (str, float)
        Each word event's text and onset in seconds (eSpeak NG joins some unstressed words, e.g. "at a").

    Notes
    -----
    eSpeak NG keeps state from one utterance to the next within a process: the same sentence spoken twice
    differs by a few milliseconds. :func:`synthesize_sentences` is reproducible.
    """
    from ._espeak import speak

    if not isinstance(text, str) or not text.strip():
        raise ValidationError(format_error("text", "a non-empty sentence", repr(text)))
    wave, native, words = speak(text, voice)
    return _to_rate(wave, native, sr), int(sr), words


def synthesize_sentences(texts: Sequence[str], *, voice: str = "en-us",
                         sr: int = _AUDIO_SR) -> list[tuple[np.ndarray, int, list[tuple[str, float]]]]:
    """:func:`synthesize` every text, in order, in a fresh interpreter: the same texts give the same audio.

    eSpeak NG's state carries over between utterances and survives re-initialisation; a fresh process starts
    from the same state every time (``neurodecode/simulate/_espeak.py`` is run by path, without the package).
    """
    import json
    import subprocess
    import sys
    import tempfile

    from . import _espeak

    if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
        raise ValidationError(format_error("texts", "non-empty sentences", texts))
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "texts.json"
        spec.write_text(json.dumps({"texts": list(texts), "voice": voice}))
        res = subprocess.run([sys.executable, _espeak.__file__, str(spec)], capture_output=True, text=True)
        if res.returncode != 0:
            last = (res.stderr.strip().splitlines() or ["no output"])[-1]
            raise (ImportError if "ImportError" in res.stderr else RuntimeError)(f"speech synthesis failed: {last}")
        meta = json.loads((Path(tmp) / "words.json").read_text())
        with np.load(Path(tmp) / "speech.npz", allow_pickle=False) as z:
            return [(_to_rate(z[f"wave{k}"], meta["sr"], sr), int(sr), [(w, float(t)) for w, t in meta["words"][k]])
                    for k in range(len(texts))]


# ----------------------------------------------------------------------------------------- features
def band_envelopes(wave: np.ndarray, sr: int, out_sfreq: float, n_bands: int = 8) -> np.ndarray:
    """Log-compressed amplitude envelopes of ``n_bands`` log-spaced bands (100-6000 Hz) at ``out_sfreq``.

    Returns
    -------
    env : ndarray of shape (n_bands, round(len(wave) / sr * out_sfreq))
    """
    from scipy.signal import butter, hilbert, resample_poly, sosfiltfilt

    edges = np.geomspace(100.0, min(6000.0, 0.45 * sr), n_bands + 1)
    lp = butter(4, 30.0, btype="low", fs=sr, output="sos")
    n_out = int(round(len(wave) / sr * out_sfreq))
    out = np.zeros((n_bands, n_out))
    for b in range(n_bands):
        sos = butter(4, [edges[b], edges[b + 1]], btype="band", fs=sr, output="sos")
        env = sosfiltfilt(lp, np.abs(hilbert(sosfiltfilt(sos, wave))))
        env = resample_poly(np.clip(env, 0, None), int(out_sfreq), sr) if float(out_sfreq).is_integer() else env
        out[b, :] = np.log1p(100.0 * np.clip(env[:n_out], 0, None)) if len(env) >= n_out else \
            np.pad(np.log1p(100.0 * np.clip(env, 0, None)), (0, n_out - len(env)))
    return out


def _gamma_trf(sfreq: float, peak: float, length: float = 0.4) -> np.ndarray:
    t = np.arange(int(round(length * sfreq))) / sfreq
    k = 3.0
    h = (t / peak) ** k * np.exp(k * (1 - t / peak))
    return h / np.abs(h).sum()


# ----------------------------------------------------------------------------------------- simulation
@fill_doc
def simulate_meg_masc(
    out: str | os.PathLike[str],
    *,
    subjects: Sequence[int] = (1, 2),
    sessions: Sequence[int] = (0,),
    tasks: Sequence[int] = (0, 1),
    sentences_per_task: int = 12,
    sentences: Sequence[str] | None = None,
    n_channels: int = 208,
    sfreq: float = 1000.0,
    n_sources: int = 8,
    n_bands: int = 8,
    snr: float = 1.0,
    seed: int = 0,
    verbose: Any = None,
) -> SimulationResult:
    """Simulate MEG-MASC recordings (BIDS FIF, KIT-like channels) of people hearing real synthesised speech.

    Writes ``out/meg-masc/`` (recordings through :func:`neurodecode.testing.write_meg_masc_recording`, the wavs
    under ``stimuli/audio/``), ``out/truth/`` (``model.json``, ``sub-XX.npz``: source weights, TRF peaks, gain)
    and ``out/ceiling.json`` (see the module docstring).

    Parameters
    ----------
    out : path-like
        Output folder.
    subjects : sequence of int
        Subject numbers (1-27).
    sessions, tasks : sequence of int
        Sessions (0, 1) and stories (0-3) recorded for every subject (the same audio in every session).
    sentences_per_task : int
        Sentences (wav files) per story.
    sentences : sequence of str or None
        The sentences, used in order (story ``t`` takes the next ``sentences_per_task``, cycling); default
        :data:`SENTENCES`.
    n_channels : int
        MEG channels (208 as published).
    sfreq : float
        Recording rate (1000 Hz as published; another rate needs ``raw_sfreq`` in the loader).
    n_sources, n_bands : int
        Auditory sources and envelope bands of the encoding model.
    snr : float
        Signal-to-noise multiplier (1: noise RMS 3 x the speech-driven signal RMS).
    seed : int
        Seed of everything.
    %(verbose)s

    Returns
    -------
    result : SimulationResult
        ``result.data[subject]["recordings"]``: per (session, task) the continuous data and the clean signal.
    """
    from ..data._meg_masc import meg_masc_splits
    from ..testing._meg_masc import (
        kit_channel_names,
        kit_info,
        story_events,
        write_meg_masc_recording,
        write_meg_masc_wav,
    )

    subjects = check_subjects(subjects, range(1, 28))
    snr = check_snr(snr)
    sessions = sorted({int(s) for s in sessions})
    tasks = sorted({int(t) for t in tasks})
    if not sessions or not set(sessions) <= {0, 1} or not tasks or not set(tasks) <= {0, 1, 2, 3}:
        raise ValidationError(format_error("sessions/tasks", "sessions in {0, 1} and tasks in {0..3}",
                                           (sessions, tasks)))
    if int(sentences_per_task) < 1:
        raise ValidationError(format_error("sentences_per_task", "at least 1", sentences_per_task))
    pool = list(SENTENCES if sentences is None else sentences)
    if not pool:
        raise ValidationError(format_error("sentences", "at least one sentence", "none"))
    from .._core.specs import load_spec

    stories = load_spec("meg_masc")["dataset"]["stories"]
    out = Path(out)
    root = out / "meg-masc"
    truth = out / "truth"
    rng0 = np.random.default_rng([seed, 2023])
    with use_log_level(verbose):
        # 1. the speech of every story (the same for every subject and session)
        plan: dict[int, list[tuple[str, float, list[tuple[str, float]]]]] = {}
        feats: dict[int, np.ndarray] = {}
        word_times: dict[int, list[float]] = {}
        texts = [pool[(k + i * int(sentences_per_task)) % len(pool)] for i in range(len(tasks))
                 for k in range(int(sentences_per_task))]
        spoken = iter(synthesize_sentences(texts))
        for t in tasks:
            items = []
            onset = 1.0
            env_parts = []
            for k in range(int(sentences_per_task)):
                wave, sr, words = next(spoken)
                name = f"{stories[t]}_{k}.wav"
                write_meg_masc_wav(root, name, wave, sr)
                items.append((name, onset, [(w, round(o, 3)) for w, o in words if w]))
                env_parts.append((onset, band_envelopes(wave, sr, sfreq, n_bands)))
                onset += len(wave) / sr + _GAP
            n_samples = int(round((onset + 3.0) * sfreq))
            f = np.zeros((n_bands, n_samples))
            for on, env in env_parts:
                a = int(round(on * sfreq))
                f[:, a:a + env.shape[1]] = env[:, : n_samples - a]
            feats[t] = f
            plan[t] = items
            word_times[t] = [on + o for _, on, ws in items for _, o in ws]
        # 2. head model
        names = kit_channel_names(n_channels)
        info = kit_info(names, sfreq)
        sphere, centre = fw.head_sphere(info)
        pos, ori = _auditory_dipoles(rng0, n_sources, centre)
        gain = fw.fixed_gain(info, sphere, pos, ori)
        bg_pos, bg_ori = fw.random_dipoles(rng0, 60, centre, 0.07)
        gain_bg = fw.fixed_gain(info, sphere, bg_pos, bg_ori)
        l_space, _ = fw.noise_factors(gain_bg, 2, sensor_fraction=0.2)
        rho = 0.95
        splits = meg_masc_splits(root)
        per_subject: dict[str, Any] = {}
        data_out: dict[Any, dict[str, Any]] = {}
        for s in subjects:
            rng = np.random.default_rng([seed, s, 2023])
            weights = rng.standard_normal((n_sources, n_bands))
            peaks = rng.uniform(0.07, 0.13, n_sources)
            word_amp = np.zeros(n_sources)
            word_amp[:2] = rng.uniform(0.5, 1.0, 2)
            recs: dict[tuple[int, int], dict[str, np.ndarray]] = {}
            scale: float | None = None
            for ses in sessions:
                for t in tasks:
                    f = feats[t]  # log1p envelopes: 0 in silence, so silence drives nothing
                    clean = gain @ _source_activity(f, word_times[t], weights, peaks, word_amp, sfreq)
                    if scale is None:
                        scale = _SIGNAL_T / max(float(np.sqrt(np.mean(clean ** 2))), 1e-30)
                    clean = clean * scale
                    noise = _ar1_noise(rng, l_space, f.shape[1], rho, _NOISE / snr * _SIGNAL_T)
                    data = clean + noise
                    write_meg_masc_recording(root, s, session=ses, task=t, data=data, sfreq=sfreq, ch_names=names,
                                             events=story_events(stories[t], plan[t], story_uid=t))
                    recs[(ses, t)] = {"data": data, "clean": clean}
            groups = [[(r["data"], r["clean"], [on + o for name, on, ws in plan[t] for _, o in ws
                                                 if splits.get(f"stimuli/audio/{name}") == "test"])]
                      for (_ses, t), r in recs.items()]
            per_subject[f"sub-{s:02d}"] = _ceiling(groups, sfreq, l_space, "meg_masc")
            save_truth_npz(truth / f"sub-{s:02d}.npz", weights=weights, trf_peaks=peaks, word_amplitude=word_amp,
                           gain=gain, source_positions=pos, source_orientations=ori, signal_scale=np.array(scale))
            data_out[s] = {"recordings": recs}
        model = {"dataset": "meg-masc", "snr": snr, "seed": seed, "sfreq": sfreq, "n_channels": n_channels,
                 "n_sources": n_sources, "n_bands": n_bands, "noise_rms_ratio": _NOISE / snr, "ar1": rho,
                 "signal_rms_tesla": _SIGNAL_T, "stories": {stories[t]: [i[0] for i in plan[t]] for t in tasks},
                 "sentences": {f"{stories[t]}_{k}.wav": pool[(tasks.index(t) * int(sentences_per_task) + k)
                                                             % len(pool)]
                               for t in tasks for k in range(int(sentences_per_task))},
                 "tts": "eSpeak NG en-us via espeakng-loader (or the system libespeak-ng)"}
        write_json(truth / "model.json", model)
        ceiling = summarise_ceiling(per_subject, dataset="meg-masc", snr=snr, seed=seed,
                                    method="matched observer: true clean test segments, true spatial noise "
                                           "covariance, 120 Hz samples treated as independent")
        write_json(out / "ceiling.json", ceiling)
    logger.info("meg-masc simulation: %s (ceiling top-1 %.3f)", root, ceiling.get("top1_retrieval", float("nan")))
    return SimulationResult(dataset="meg-masc", out=out, root=root, truth=truth, ceiling=ceiling,
                            subjects=list(subjects), data=data_out)


@fill_doc
def simulate_broderick2019(
    out: str | os.PathLike[str],
    *,
    subjects: Sequence[int] = (1, 2),
    runs: Sequence[int] = tuple(range(1, 11)),
    sentences_per_run: int = 3,
    sentences: Sequence[str] | None = None,
    sfreq: float = 128.0,
    n_sources: int = 8,
    n_bands: int = 8,
    snr: float = 1.0,
    seed: int = 0,
    verbose: Any = None,
) -> SimulationResult:
    """Simulate Broderick 2019 "Natural Speech" EEG (BioSemi 128 + 2 mastoids, ``.mat`` files) of people hearing
    real synthesised speech.

    Each run is one wav (``Stimuli/Audio/audio<r>.wav``): 1 s of silence, then ``sentences_per_run`` sentences
    spoken by eSpeak NG with 0.6 s pauses; its words and their onsets go to ``Stimuli/Text/Run<r>.mat``. The EEG
    of a run starts with its audio and lasts 3 s longer. The encoding model is MEG-MASC's (see the module
    docstring) through the EEG forward model of the ``biosemi128`` montage (a 4-shell sphere fitted to the
    electrodes; the mastoids are two more electrodes of the same model), in volts (speech-driven RMS 1 µV over
    the scalp), the AR(1) noise coefficient ``0.95 ** (1000 / sfreq)`` (the same time constant as MEG-MASC's 0.95
    at 1000 Hz). Writes ``out/broderick2019/`` (the ``Natural Speech`` layout, through
    :mod:`neurodecode.testing._broderick`), ``out/truth/`` (``model.json``, ``Subject<k>.npz``) and
    ``out/ceiling.json``: the matched observer of every test segment among all the subject's test segments, as
    :func:`neurodecode.data._broderick.load_broderick2019` cuts them (scalp channels as released, 120 Hz).

    Parameters
    ----------
    out : path-like
        Output folder.
    subjects : sequence of int
        Subject numbers (1-19).
    runs : sequence of int
        Runs (1-20) heard by every subject (the same audio for all).
    sentences_per_run : int
        Sentences per run (taken in order from ``sentences``, cycling).
    sentences : sequence of str or None
        Default :data:`SENTENCES`.
    sfreq : float
        Rate of the files (128 Hz as released; another rate needs ``raw_sfreq`` in the loader).
    n_sources, n_bands : int
        Auditory sources and envelope bands of the encoding model.
    snr : float
        Signal-to-noise multiplier (1: noise RMS 3 x the speech-driven RMS).
    seed : int
        Seed of everything.
    %(verbose)s

    Returns
    -------
    result : SimulationResult
        ``result.data[subject]["recordings"]``: per run the continuous scalp data and its clean part (volts).
    """
    from .._core.specs import load_spec
    from ..data._broderick import broderick2019_splits
    from ..testing._broderick import (
        write_broderick2019_envelope,
        write_broderick2019_run,
        write_broderick2019_wav,
        write_broderick2019_words,
    )

    spec = load_spec("broderick2019")
    subjects = check_subjects(subjects, range(1, int(spec["dataset"]["n_subjects"]) + 1))
    runs = check_subjects(runs, [int(r) for r in spec["dataset"]["runs"]], param="runs")
    snr = check_snr(snr)
    if int(sentences_per_run) < 1:
        raise ValidationError(format_error("sentences_per_run", "at least 1", sentences_per_run))
    pool = list(SENTENCES if sentences is None else sentences)
    if not pool:
        raise ValidationError(format_error("sentences", "at least one sentence", "none"))
    n_ch = int(spec["dataset"]["n_channels"])
    out = Path(out)
    root = out / "broderick2019"
    truth = out / "truth"
    rng0 = np.random.default_rng([seed, 2018])
    per_run = int(sentences_per_run)
    with use_log_level(verbose):
        # 1. the speech of every run (the same for every subject)
        texts = [pool[(k + i * per_run) % len(pool)] for i in range(len(runs)) for k in range(per_run)]
        spoken = iter(synthesize_sentences(texts))
        feats: dict[int, np.ndarray] = {}
        word_times: dict[int, list[float]] = {}
        for r in runs:
            lead = 1.0
            parts, words, sentence_ends = [np.zeros(int(lead * _AUDIO_SR), dtype=np.float32)], [], []
            onset = lead
            for _ in range(per_run):
                wave, sr, ws = next(spoken)
                words += [(w, round(onset + o, 3)) for w, o in ws if w]
                onset += len(wave) / sr
                sentence_ends.append(round(onset, 3))
                parts += [wave, np.zeros(int(_GAP * sr), dtype=np.float32)]
                onset += _GAP
            run_wave = np.concatenate(parts)
            write_broderick2019_wav(root, r, run_wave, _AUDIO_SR)
            on = np.array([o for _, o in words])
            write_broderick2019_words(root, r, [w for w, _ in words], on, np.append(on[1:], sentence_ends[-1]),
                                      sentence_ends=sentence_ends)
            n_samples = int(round((len(run_wave) / _AUDIO_SR + 3.0) * sfreq))
            env = band_envelopes(run_wave, _AUDIO_SR, sfreq, n_bands)
            f = np.zeros((n_bands, n_samples))
            f[:, : env.shape[1]] = env[:, :n_samples]
            write_broderick2019_envelope(root, r, f.mean(axis=0))
            feats[r] = f
            word_times[r] = on.tolist()
        # 2. head model: 128 scalp electrodes + 2 mastoids (rows 128, 129)
        info = fw.biosemi128_info(sfreq, mastoids=True)
        sphere, centre = fw.head_sphere(info)
        pos, ori = _auditory_dipoles(rng0, n_sources, centre)
        gain = fw.fixed_gain(info, sphere, pos, ori)
        bg_pos, bg_ori = fw.random_dipoles(rng0, 60, centre, 0.07)
        l_space, _ = fw.noise_factors(fw.fixed_gain(info, sphere, bg_pos, bg_ori), 2, sensor_fraction=0.2)
        l_scalp = np.linalg.cholesky((l_space @ l_space.T)[:n_ch, :n_ch])
        rho = 0.95 ** (1000.0 / float(sfreq))
        splits = broderick2019_splits(root)
        per_subject: dict[str, Any] = {}
        data_out: dict[Any, dict[str, Any]] = {}
        for s in subjects:
            rng = np.random.default_rng([seed, s, 2018])
            weights = rng.standard_normal((n_sources, n_bands))
            peaks = rng.uniform(0.07, 0.13, n_sources)
            word_amp = np.zeros(n_sources)
            word_amp[:2] = rng.uniform(0.5, 1.0, 2)
            recs: dict[int, dict[str, np.ndarray]] = {}
            scale: float | None = None
            for r in runs:
                clean = gain @ _source_activity(feats[r], word_times[r], weights, peaks, word_amp, sfreq)
                if scale is None:
                    scale = _SIGNAL_V / max(float(np.sqrt(np.mean(clean[:n_ch] ** 2))), 1e-30)
                clean = clean * scale
                noise = _ar1_noise(rng, l_space, clean.shape[1], rho, _NOISE / snr * _SIGNAL_V)
                data = clean + noise
                write_broderick2019_run(root, s, r, data[:n_ch], mastoids=data[n_ch:], sfreq=sfreq)
                recs[r] = {"data": data[:n_ch], "clean": clean[:n_ch], "mastoids": data[n_ch:]}
            groups = [[(recs[r]["data"], recs[r]["clean"],
                        word_times[r] if splits.get(f"Stimuli/Audio/audio{r}.wav") == "test" else [])
                       for r in runs]]
            per_subject[f"Subject{s}"] = _ceiling(groups, sfreq, l_scalp, "broderick2019")
            save_truth_npz(truth / f"Subject{s}.npz", weights=weights, trf_peaks=peaks, word_amplitude=word_amp,
                           gain=gain, source_positions=pos, source_orientations=ori, signal_scale=np.array(scale))
            data_out[s] = {"recordings": recs}
        model = {"dataset": "broderick2019", "snr": snr, "seed": seed, "sfreq": sfreq, "n_channels": n_ch,
                 "mastoids": 2, "montage": "biosemi128", "n_sources": n_sources, "n_bands": n_bands,
                 "noise_rms_ratio": _NOISE / snr, "ar1": rho, "signal_rms_volt": _SIGNAL_V,
                 "runs": {f"audio{r}.wav": texts[i * per_run:(i + 1) * per_run] for i, r in enumerate(runs)},
                 "splits": splits, "tts": "eSpeak NG en-us via espeakng-loader (or the system libespeak-ng)"}
        write_json(truth / "model.json", model)
        ceiling = summarise_ceiling(per_subject, dataset="broderick2019", snr=snr, seed=seed,
                                    method="matched observer: true clean test segments (all test runs of a subject), "
                                           "true spatial noise covariance, 120 Hz samples treated as independent")
        write_json(out / "ceiling.json", ceiling)
    logger.info("broderick2019 simulation: %s (ceiling top-1 %.3f)", root, ceiling.get("top1_retrieval", float("nan")))
    return SimulationResult(dataset="broderick2019", out=out, root=root, truth=truth, ceiling=ceiling,
                            subjects=list(subjects), data=data_out)


def _auditory_dipoles(rng: np.random.Generator, n_sources: int, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bilateral auditory dipoles 6 cm from the head centre, tangential (positions, unit orientations)."""
    side = np.where(np.arange(n_sources) % 2 == 0, 1.0, -1.0)
    d = np.stack([side * 0.85, rng.normal(0, 0.15, n_sources), 0.45 + rng.normal(0, 0.1, n_sources)], 1)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    pos = centre + 0.06 * d
    tang = np.cross(d, rng.standard_normal((n_sources, 3)))
    return pos, tang / np.linalg.norm(tang, axis=1, keepdims=True)


def _source_activity(f: np.ndarray, word_times: Sequence[float], weights: np.ndarray, peaks: np.ndarray,
                     word_amp: np.ndarray, sfreq: float) -> np.ndarray:
    """Source time courses (n_sources, n_samples): each source's TRF applied to its weighted band envelopes
    ``f`` (n_bands, n_samples), plus a word-locked response (peak 400 ms) scaled by ``word_amp``."""
    from scipy.signal import fftconvolve

    n = f.shape[1]
    src = np.zeros((len(weights), n))
    impulses = np.zeros(n)
    for wt in word_times:
        impulses[int(round(wt * sfreq))] = 1.0
    n400 = _gamma_trf(sfreq, 0.4, 0.8)
    for j in range(len(weights)):
        src[j] = fftconvolve(weights[j] @ f, _gamma_trf(sfreq, peaks[j]))[:n]
        src[j] += word_amp[j] * fftconvolve(impulses, n400)[:n] * 5.0
    return src


def _ar1_noise(rng: np.random.Generator, l_space: np.ndarray, n_samples: int, rho: float, rms: float) -> np.ndarray:
    """Spatially coloured (``l_space``), AR(1) in time (``rho``) Gaussian noise of RMS ``rms``."""
    from scipy.signal import lfilter

    z = l_space @ rng.standard_normal((len(l_space), n_samples))
    noise = lfilter([np.sqrt(1 - rho ** 2)], [1.0, -rho], z, axis=1)
    return noise * (rms / float(np.sqrt(np.mean(noise ** 2))))


def _ceiling(groups: Sequence[Sequence[tuple[np.ndarray, np.ndarray, Sequence[float]]]], sfreq: float,
             l_space: np.ndarray, spec: str) -> dict[str, Any]:
    """Matched-observer segment identification of one subject's test segments.

    ``groups``: lists of ``(data, clean, test word onsets in s)`` recordings (channels x samples at ``sfreq``);
    the test segments of a group (cut as the loader of ``spec`` cuts them: resampled, baselined) are each a
    query among all the test segments of the same group; scores are averaged over groups.
    """
    from fractions import Fraction

    from scipy.linalg import solve_triangular
    from scipy.signal import resample_poly

    from .._core.specs import load_spec

    seg = load_spec(spec)["segments"]
    rate, tmin, n_times = float(seg["sfreq"]), float(seg["tmin"]), int(seg["n_times"])
    b0, b1 = 0, int(round((float(seg["baseline"][1]) - tmin) * rate))
    frac = Fraction(rate).limit_denominator(1000) / Fraction(sfreq).limit_denominator(1000)
    scores = []
    for group in groups:
        segs: dict[str, list[np.ndarray]] = {"data": [], "clean": []}
        for data, clean, onsets in group:
            if not len(onsets):
                continue
            for key, arr in (("data", data), ("clean", clean)):
                x = resample_poly(arr, frac.numerator, frac.denominator, axis=1)
                idx = np.round(np.asarray(onsets) * rate).astype(int)[:, None] + int(round(tmin * rate)) + \
                    np.arange(n_times)
                ep = x[:, idx].transpose(1, 0, 2)
                ep = ep - ep[:, :, b0:b1].mean(axis=2, keepdims=True)
                w = solve_triangular(l_space, ep.transpose(1, 0, 2).reshape(len(l_space), -1), lower=True)
                segs[key].append(w.reshape(len(l_space), len(onsets), n_times).transpose(1, 0, 2)
                                 .reshape(len(onsets), -1))
        if sum(len(a) for a in segs["data"]) < 2:
            continue
        q, c = np.concatenate(segs["data"]), np.concatenate(segs["clean"])
        scores.append(-((q[:, None, :] - c[None, :, :]) ** 2).sum(-1))
    if not scores:
        return {"n_test": 0, "chance": None}
    per = [identification_scores(s, (1, 10)) for s in scores]
    n = int(np.mean([len(s) for s in scores]))
    out: dict[str, Any] = {k: float(np.mean([p[k] for p in per])) for k in per[0]}
    out["n_test"] = n
    out["chance"] = chance_scores(n, (1, 10))
    return out
