"""Known-answer sentence-level EEG (ZuCo 2.0 layout) driven by a real sentence embedding.

The model (saved in ``OUT/truth/``):

1. **Sentences.** Unique English sentences from a small seeded grammar about people and garments (the
   Fashion-MNIST classes), e.g. "The old farmer folded a red coat before the trip." (:func:`make_sentences`),
   or sentences you pass.
2. **Reading.** Words are read one after another; each fixation lasts ``0.16 + 0.015 * len(word)`` s.
3. **Sources** (fixed dipoles under an EGI 105-channel net on a fitted sphere, see
   :mod:`neurodecode.simulate._forward`): 8 occipital sources give a word-locked visual response (peak 110 ms,
   amplitude growing with word length); 12 left-lateralised temporal and frontal sources carry a sustained
   semantic response whose amplitudes are a fixed random projection of the sentence's embedding
   (all-MiniLM-L6-v2 by default, via :func:`neurodecode.latents.get_space`), rising over 300 ms.
4. **Noise.** Background dipoles plus sensor noise, AR(1) in time (coefficient 0.9 at 500 Hz); RMS
   ``20 / snr`` times the RMS of the semantic signal. Units: microvolts; 500 Hz.

Ideal observer: the word timing is known (it would give a sentence away by its length alone), so the
sufficient statistic for the semantic content is the time-averaged response minus the known word-locked
part; candidates (the test sentences) are ranked by its Gaussian likelihood under each candidate's semantic
topography, whitened by the true spatial noise covariance.
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
from ._common import SimulationResult, check_snr, save_truth_npz, summarise_ceiling
from ._ideal import chance_scores, identification_scores

__all__ = ["simulate_zuco", "make_sentences"]

_PEOPLE = ("The old farmer", "My neighbour", "A young girl", "The tired doctor", "Her brother", "The shy student",
           "A tall woman", "The busy chef", "Our teacher", "The little boy", "A famous singer", "The new clerk")
_VERBS = ("folded", "washed", "bought", "lost", "found", "packed", "mended", "sold", "borrowed", "ironed",
          "wore", "painted")
_COLOURS = ("red", "blue", "green", "black", "white", "yellow", "grey", "brown", "striped", "woollen")
_THINGS = ("t-shirt", "pair of trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
           "ankle boot")
_PLACES = ("before the trip", "at the market", "in the morning", "after the storm", "for the wedding",
           "near the station", "during the holidays", "on a cold evening", "at the old shop", "without a word")


def make_sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` unique sentences from a seeded grammar (person, verb, colour, garment, circumstance)."""
    total = len(_PEOPLE) * len(_VERBS) * len(_COLOURS) * len(_THINGS) * len(_PLACES)
    if not 1 <= n <= total:
        raise ValidationError(format_error("n_sentences", f"between 1 and {total}", n))
    rng = np.random.default_rng([seed, 606])
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        p, v, c, t, w = (rng.integers(len(x)) for x in (_PEOPLE, _VERBS, _COLOURS, _THINGS, _PLACES))
        thing = _THINGS[t]
        art = "an" if _COLOURS[c][0] in "aeiou" else "a"
        obj = f"a {_COLOURS[c]} pair of trousers" if thing.startswith("pair") else f"{art} {_COLOURS[c]} {thing}"
        s = f"{_PEOPLE[p]} {_VERBS[v]} {obj} {_PLACES[w]}."
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def _word_timing(sentence: str, sfreq: float) -> tuple[np.ndarray, np.ndarray, int]:
    words = sentence.split()
    dur = np.array([0.16 + 0.015 * len(w) for w in words])
    onsets = np.concatenate([[0.0], np.cumsum(dur)[:-1]])
    lengths = np.array([len(w) for w in words], dtype=np.float64)
    n_times = int(np.ceil((dur.sum() + 0.4) * sfreq))
    return onsets, lengths, n_times


def _ar1_noise(rng: np.random.Generator, l_space: np.ndarray, n_times: int, rho: float, scale: float) -> np.ndarray:
    from scipy.signal import lfilter

    z = rng.standard_normal((len(l_space), n_times))
    zi = (z[:, :1] * 1.0)  # stationary start: x0 = z0
    x = lfilter([np.sqrt(1 - rho**2)], [1.0, -rho], z[:, 1:], axis=1, zi=rho * zi)[0]
    return scale * (l_space @ np.concatenate([zi, x], axis=1))


@fill_doc
def simulate_zuco(
    out: str | os.PathLike[str],
    *,
    subjects: Sequence[str] = ("YAC",),
    task: str = "NR",
    n_sentences: int = 100,
    sentences: Sequence[str] | None = None,
    space: str = "minilm-l6",
    snr: float = 1.0,
    seed: int = 0,
    verbose: Any = None,
) -> SimulationResult:
    """Simulate ZuCo 2.0 sentence-level EEG (MATLAB v7.3, 105 channels, 500 Hz) for real sentence embeddings.

    Writes ``out/zuco/<task dir>/Matlab files/results<SUBJECT>_<TASK>.mat`` (via
    :func:`neurodecode.testing.write_zuco_subject`), ``out/truth/`` (``sentences.npz`` with texts and
    embeddings, ``<SUBJECT>.npz`` with sources, lead field, word timing and noise factors, ``model.json``) and
    ``out/ceiling.json`` (ideal observer over the test split of :func:`neurodecode.data.load_zuco`, which
    splits by the SHA-256 of each sentence, and over all sentences).

    Parameters
    ----------
    out : path-like
        Output folder.
    subjects : sequence of str
        ZuCo 2.0 subject codes (``"YAC"``, ``"YAG"``...).
    task : {"NR", "TSR"}
        Reading task (file and folder names).
    n_sentences : int
        Sentences generated by :func:`make_sentences` (ignored when ``sentences`` is given).
    sentences : sequence of str or None
        Your own sentences (unique).
    space : str
        Sentence embedding space (:func:`neurodecode.latents.get_space`); ``"minilm-l6"`` loads the real
        all-MiniLM-L6-v2 weights offline, ``"minilm-l6-tiny"`` a random tiny twin.
    snr : float
        Signal-to-noise multiplier.
    seed : int
        Seed of everything.
    %(verbose)s

    Returns
    -------
    result : SimulationResult
        ``result.data[subject]`` holds ``eeg`` (list of (105, n_times_i) arrays as written) and ``semantic``
        (the clean time-averaged semantic topographies).
    """
    from .._core.specs import load_spec
    from ..data._zuco import sentence_split
    from ..latents import get_space
    from ..testing import write_zuco_subject

    spec = load_spec("zuco")["versions"]["2"]
    bad = [s for s in subjects if s not in spec["subjects"]]
    if not list(subjects) or bad:
        raise ValidationError(format_error("subjects", f"ZuCo 2.0 subject codes among {spec['subjects']}",
                                           list(subjects), f"Remove {bad}" if bad else "Give at least one"))
    if task not in spec["tasks"]:
        raise ValidationError(format_error("task", f"one of {sorted(spec['tasks'])} (ZuCo 2.0)", task))
    snr = check_snr(snr)
    texts = make_sentences(n_sentences, seed) if sentences is None else [str(s) for s in sentences]
    if len(set(texts)) != len(texts) or len(texts) < 2:
        raise ValidationError(format_error("sentences", "at least 2 unique sentences", f"{len(texts)} with "
                                           f"{len(texts) - len(set(texts))} duplicate(s)"))
    out = Path(out)
    sfreq = 500.0
    with use_log_level(verbose):
        logger.info("simulate zuco: embedding %d sentences with %s", len(texts), space)
        emb = np.asarray(get_space(space).encode_texts(texts), dtype=np.float64)
        emb = (emb - emb.mean(0)) / (emb.std(0) + 1e-8)
        info = fw.egi105_info(sfreq)
        ch_names = list(info["ch_names"])
        sphere, centre = fw.head_sphere(info)
        split = np.array([sentence_split(t) for t in texts])
        timing = [_word_timing(t, sfreq) for t in texts]
        root = out / "zuco"
        data: dict[Any, dict[str, Any]] = {}
        per_subject: dict[str, Any] = {}
        for k, subject in enumerate(subjects):
            rng = np.random.default_rng([seed, k, 707])
            n_vis, n_sem = 8, 12
            d_vis = np.column_stack([rng.uniform(-0.5, 0.5, n_vis), -np.ones(n_vis), rng.uniform(-0.1, 0.3, n_vis)])
            d_sem = np.column_stack([-np.ones(n_sem), rng.uniform(-0.6, 0.8, n_sem), rng.uniform(-0.4, 0.3, n_sem)])
            dirs = np.concatenate([d_vis, d_sem])
            dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
            pos = centre + 0.062 * dirs
            ori = dirs + 0.5 * rng.standard_normal(dirs.shape)
            gain = fw.fixed_gain(info, sphere, pos, ori) * 1e6  # microvolts per A m
            proj = rng.standard_normal((emb.shape[1], n_sem)) / np.sqrt(emb.shape[1])
            sem_amp = emb @ proj * 8e-9  # A m
            vis_gain = rng.uniform(5e-9, 10e-9, n_vis)
            topo = sem_amp @ gain[:, n_vis:].T  # (n_sentences, n_channels) sustained semantic topography
            bg_pos, bg_ori = fw.random_dipoles(rng, 60, centre, 0.07)
            l_space, _ = fw.noise_factors(fw.fixed_gain(info, sphere, bg_pos, bg_ori), 2)
            scale = 20.0 * float(np.sqrt(np.mean(topo**2))) / snr
            eeg, word_part, ramp_mean = [], [], []
            for i, (onsets, lengths, n_t) in enumerate(timing):
                t = np.arange(n_t) / sfreq
                wave = np.exp(-((t[None, :] - onsets[:, None] - 0.11) ** 2) / (2 * 0.02**2))
                vis = (lengths / 6.0) @ wave  # (n_t,)
                words = np.outer(gain[:, :n_vis] @ vis_gain, vis)
                ramp = 1 - np.exp(-np.clip(t - 0.1, 0, None) / 0.1)
                clean = words + np.outer(topo[i], ramp)
                x = clean + _ar1_noise(rng, l_space, n_t, 0.9, scale)
                eeg.append(x)
                word_part.append(words)
                ramp_mean.append(ramp.mean())
            write_zuco_subject(root, subject, task=task, sentences=texts, eeg=eeg, sfreq=sfreq, ch_names=ch_names,
                               version=2)
            # ideal observer on the semantic content (known word timing removed, time-averaged)
            resid = np.stack([(x - w).mean(1) for x, w in zip(eeg, word_part)])
            ramp_mean_arr = np.asarray(ramp_mean)
            scores = _semantic_loglik(resid, topo, ramp_mean_arr, l_space)
            test = np.flatnonzero(split == "test")
            res: dict[str, Any] = {"all_sentences": identification_scores(scores) | {"n": len(texts)}}
            if len(test) >= 2:
                res |= identification_scores(scores[np.ix_(test, test)])
                res |= {"n_test": len(test), "chance": chance_scores(len(test))}
            per_subject[subject] = res
            save_truth_npz(out / "truth" / f"{subject}.npz", gain=gain, source_pos=pos, source_ori=ori,
                           projection=proj, semantic_topography=topo, l_space=l_space, noise_scale=np.float64(scale),
                           ramp_mean=ramp_mean_arr)
            data[subject] = {"eeg": eeg, "semantic": topo, "word_part": word_part}
        if task == "TSR":  # ZuCo 2.0's relation tables: one tsr_<n>.csv per relation, as the release
            _write_relation_tables(root, texts)
        save_truth_npz(out / "truth" / "sentences.npz", texts=np.array(texts), embedding=emb, split=split,
                       n_samples=np.array([n for _, _, n in timing]))
        write_json(out / "truth" / "model.json", {"dataset": "zuco", "version": 2, "task": task,
                                                  "subjects": list(subjects), "space": space, "snr": snr,
                                                  "seed": seed, "sfreq": sfreq, "units": "microvolts",
                                                  "model": __doc__})
        ceiling = summarise_ceiling(
            per_subject, dataset="zuco", snr=snr, seed=seed, space=space, n_sentences=len(texts),
            method="Gaussian likelihood of the time-averaged response (known word-locked part removed) "
                   "under each candidate sentence's semantic topography, spatially whitened")
        write_json(out / "ceiling.json", ceiling)
    return SimulationResult("zuco", out, root, out / "truth", ceiling, list(subjects), data)


def _semantic_loglik(resid: np.ndarray, topo: np.ndarray, ramp_mean: np.ndarray, l_space: np.ndarray) -> np.ndarray:
    """scores[i, j] = -||L^-1 (resid_i - ramp_mean_i * topo_j)||^2 / 2 (per-row noise scale is irrelevant)."""
    from scipy.linalg import solve_triangular

    r = solve_triangular(l_space, resid.T, lower=True).T
    m = solve_triangular(l_space, topo.T, lower=True).T
    pred = ramp_mean[:, None, None] * m[None]  # (n, n, c)
    return -0.5 * ((r[:, None, :] - pred) ** 2).sum(-1)


def _write_relation_tables(root: Path, texts: Sequence[str]) -> None:
    """Relation type of each simulated TSR sentence (a stable function of its text), one table per type."""
    import hashlib

    from ..data._zuco_labels import RELATION_WORDS
    from ..testing import write_zuco_labels

    kinds = sorted(RELATION_WORDS)
    rel = [kinds[int.from_bytes(hashlib.sha256(t.encode("utf-8")).digest()[:4], "big") % len(kinds)] for t in texts]
    number = {kind: n for n, kind in enumerate(sorted(set(rel)), start=1)}
    write_zuco_labels(root, version=2, task="TSR", sentences=list(texts), labels=rel, files=[number[r] for r in rel])
