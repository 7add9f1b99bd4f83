"""Known-answer EEG/MEG for images: MNE forward model, latency-structured sources, published layouts.

The model (saved in ``OUT/truth/``):

1. **Head and sensors.** See :mod:`neurodecode.simulate._forward`: 63-channel 10-10 EEG on a fitted
   4-shell sphere (THINGS-EEG2), or a CTF-like 271-channel axial-gradiometer helmet (THINGS-MEG).
2. **Sources.** ``n_early`` fixed dipoles on an occipital patch (about 6.5 cm from the sphere centre, toward
   the back), retinotopically organised like the fMRI model (left hemisphere -> right visual field, upper
   patch -> lower field, eccentricity away from the pole), each pooling Gabor energy over its receptive
   field; ``n_higher`` dipoles in bilateral ventral temporal cortex reading semantic features.
3. **Time courses.** Every source carries an image-independent evoked response (P1 ~100 ms, N1 ~170 ms, P2
   ~250 ms); early sources add an image-specific component peaking near 100 ms (sd 20 ms), higher sources
   near 250 ms (sd 45 ms), the image-specific amplitude being the source's standardised feature drive.
4. **Noise.** Background brain activity (random dipoles throughout the head) plus sensor noise, AR(1) in
   time (coefficient 0.8 at 250 Hz): RMS ``noise_rms / snr`` times the RMS of the image-specific signal.

The ideal observer averages each test image's repetitions, whitens with the true noise covariance and ranks
the test images by the Gaussian likelihood under their clean responses.
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
from .._core.validation import check_array, format_error
from . import _forward as fw
from ._common import SimulationResult, check_snr, check_subjects, save_truth_npz, summarise_ceiling
from ._features import gabor_energy, semantic_features
from ._ideal import ideal_observer

__all__ = ["simulate_things_eeg2", "simulate_things_meg", "image_meeg_model"]

_NOISE_RMS = 20.0  # single-trial noise RMS / image-specific signal RMS at snr = 1


def _bump(times: np.ndarray, peak: np.ndarray | float, width: np.ndarray | float) -> np.ndarray:
    return np.exp(-((times[None, :] - np.atleast_1d(peak)[:, None]) ** 2) / (2 * np.atleast_1d(width)[:, None] ** 2))


def _source_layout(rng: np.random.Generator, centre: np.ndarray, n_early: int, n_higher: int,
                   meg: bool) -> dict[str, np.ndarray]:
    """Positions, orientations and receptive fields of the early (occipital) and higher (temporal) sources."""
    # early: a grid over the occipital pole, azimuth in [-40, 40] deg, elevation in [-15, 25] deg
    az = rng.uniform(-40, 40, n_early) * np.pi / 180
    el = rng.uniform(-15, 25, n_early) * np.pi / 180
    d_early = np.stack([np.sin(az) * np.cos(el), -np.cos(az) * np.cos(el), np.sin(el)], axis=1)
    # higher: bilateral ventral temporal
    side = np.where(np.arange(n_higher) % 2 == 0, 1.0, -1.0)
    d_high = np.stack([side * 0.62, -0.55 + rng.normal(0, 0.08, n_higher), -0.45 + rng.normal(0, 0.08, n_higher)], 1)
    d_high /= np.linalg.norm(d_high, axis=1, keepdims=True)
    pos = centre + np.concatenate([0.065 * d_early, 0.06 * d_high])
    radial = np.concatenate([d_early, d_high])
    tang = rng.standard_normal(radial.shape)
    tang -= (tang * radial).sum(1, keepdims=True) * radial
    tang /= np.linalg.norm(tang, axis=1, keepdims=True)
    # EEG sees radial dipoles best, a sphere-model MEG only tangential ones: tilt accordingly
    w_rad = 0.3 if meg else 0.8
    ori = w_rad * radial + np.sqrt(1 - w_rad**2) * tang
    # receptive fields of early sources (visual field [-1, 1]^2, y up)
    ecc = 0.1 + 0.8 * np.abs(az) / (40 * np.pi / 180) * 0.6 + 0.3 * (el - el.min()) / max(np.ptp(el), 1e-9)
    angle = -(el - el.mean()) / max(np.ptp(el), 1e-9) * np.pi * 0.8
    prf_x = -np.sign(az + 1e-12) * ecc * np.cos(angle)
    prf_y = ecc * np.sin(angle)
    return {"pos": pos, "ori": ori, "early": np.r_[np.ones(n_early, bool), np.zeros(n_higher, bool)],
            "prf_x": prf_x, "prf_y": prf_y, "prf_sigma": 0.15 + 0.25 * ecc}


def image_meeg_model(
    energy: np.ndarray,
    semantic: np.ndarray,
    info: Any,
    times: np.ndarray,
    *,
    n_early: int = 24,
    n_higher: int = 16,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Draw sources and compute the clean sensor responses of every image.

    Parameters
    ----------
    energy : ndarray of shape (n_images, n_channels_features, grid, grid)
        Gabor energy of the images.
    semantic : ndarray of shape (n_images, n_semantic)
        Semantic features of the images.
    info : mne.Info
        Sensors (EEG or MEG).
    times : ndarray of shape (n_times,)
        Seconds relative to image onset.
    n_early, n_higher : int
        Numbers of occipital (low-level, ~100 ms) and ventral temporal (semantic, ~250 ms) sources.
    seed : int
        Seed of the sources.

    Returns
    -------
    model : dict of str to ndarray
        ``clean`` (n_images, n_sensors, n_times) in the sensors' unit (EEG: microvolts, MEG: tesla),
        ``specific`` (the image-specific part alone), ``gain`` (n_sensors, n_sources), ``amplitude``
        (n_images, n_sources) standardised feature drive, source ``pos``/``ori``/``early``/``latency``/``width``,
        ``l_space``/``l_time`` (noise Cholesky factors, unit RMS) and ``signal_rms``.
    """
    from .fmri import _prf_matrix

    rng = np.random.default_rng([seed, 404])
    meg = not any(ch["kind"] == 2 for ch in info["chs"])
    unit = 1.0 if meg else 1e6
    sphere, centre = fw.head_sphere(info)
    src = _source_layout(rng, centre, n_early, n_higher, meg)
    gain = fw.fixed_gain(info, sphere, src["pos"], src["ori"]) * unit
    n_img, n_chan, grid, _ = energy.shape
    prf = _prf_matrix(src["prf_x"], src["prf_y"], src["prf_sigma"], grid)
    pooled = np.einsum("ncp,sp->nsc", energy.reshape(n_img, n_chan, -1).astype(np.float64), prf)
    chan_w = rng.gamma(1.0, 1.0, (n_early, n_chan))
    drive_early = np.einsum("nsc,sc->ns", pooled, chan_w) ** 0.5
    drive_high = semantic.astype(np.float64) @ rng.standard_normal((semantic.shape[1], n_higher))
    amp = np.concatenate([drive_early, drive_high], axis=1)
    amp = (amp - amp.mean(0)) / (amp.std(0) + 1e-8)
    early = src["early"]
    n_src = len(early)
    latency = np.where(early, rng.normal(0.10, 0.01, n_src), rng.normal(0.25, 0.03, n_src))
    width = np.where(early, 0.02, 0.045)
    specific_wave = _bump(times, latency, width)  # (n_src, n_times)
    erp = (1.0 * _bump(times, 0.10, 0.015) - 1.4 * _bump(times, 0.17, 0.02) + 0.8 * _bump(times, 0.25, 0.04))
    erp_gain = rng.uniform(10e-9, 20e-9, n_src) * rng.choice([-1, 1], n_src)
    spec_gain = rng.uniform(5e-9, 10e-9, n_src)
    evoked = gain @ (erp_gain[:, None] * erp)  # (n_sensors, n_times), same for every image
    src_specific = amp[:, :, None] * (spec_gain[:, None] * specific_wave)[None]  # (n_img, n_src, n_times)
    specific = np.einsum("ks,nst->nkt", gain, src_specific)
    signal_rms = float(np.sqrt(np.mean(specific**2)))
    # background: 60 random dipoles in the brain + sensor noise, AR(1) in time
    bg_pos, bg_ori = fw.random_dipoles(rng, 60, centre, 0.07)
    gain_bg = fw.fixed_gain(info, sphere, bg_pos, bg_ori)
    sfreq = float(info["sfreq"])
    l_space, l_time = fw.noise_factors(gain_bg, len(times), rho=0.8 ** (250.0 / sfreq))
    return {"clean": (evoked[None] + specific).astype(np.float32), "specific": specific.astype(np.float32),
            "gain": gain, "amplitude": amp, "pos": src["pos"], "ori": src["ori"], "early": early,
            "latency": latency, "width": width, "prf_x": src["prf_x"], "prf_y": src["prf_y"],
            "prf_sigma": src["prf_sigma"], "l_space": l_space, "l_time": l_time,
            "signal_rms": np.float64(signal_rms)}


def _pick_images(labels: np.ndarray, n_train_concepts: int, images_per_concept: int, n_test: int,
                 n_test_classes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    classes = np.unique(labels)
    if not 1 <= n_test_classes < len(classes):
        raise ValidationError(format_error("n_test_classes", f"between 1 and {len(classes) - 1}", n_test_classes))
    perm = rng.permutation(classes)
    test_cls, train_cls = np.sort(perm[:n_test_classes]), np.sort(perm[n_test_classes:])
    pools = {int(c): list(rng.permutation(np.flatnonzero(labels == c))) for c in classes}
    train_idx, concept_class = [], []
    for k in range(n_train_concepts):
        c = int(train_cls[k % len(train_cls)])
        if len(pools[c]) < images_per_concept:
            raise ValidationError(format_error("n_train_concepts", "at most as many images as the stimuli hold",
                                               n_train_concepts, "Lower n_train_concepts or images_per_concept"))
        train_idx += [pools[c].pop() for _ in range(images_per_concept)]
        concept_class.append(c)
    test_idx = []
    for i in range(n_test):
        c = int(test_cls[i % len(test_cls)])
        if not pools[c]:
            raise ValidationError(format_error("n_test", "at most as many images as the held-out classes hold",
                                               n_test, "Lower n_test or raise n_test_classes"))
        test_idx.append(pools[c].pop())
    return np.array(train_idx), np.array(test_idx), np.array(concept_class)


def _concept_name(k: int, name: str, suffix: str) -> str:
    return f"{k:05d}_{name.replace(' ', '-')}-{suffix}"


def _image_set(stimuli: np.ndarray | None, labels: np.ndarray | None,
               class_names: Sequence[str] | np.ndarray | None,
               image_size: int) -> tuple[np.ndarray, np.ndarray, Sequence[str] | np.ndarray]:
    """The images resized to ``image_size`` (default: the shipped Fashion-MNIST subset), their classes and names."""
    from .stimuli import load_stimuli, resize_images

    if stimuli is None:
        stimuli, labels, class_names, _ = load_stimuli("fashion-mnist", size=image_size)
    else:
        stimuli = resize_images(check_array(stimuli, "stimuli", ndim=4).astype(np.uint8), image_size)
        if labels is None:
            raise ValidationError(format_error("labels", "one class per image (concepts are classes)", None))
    labels = check_array(labels, "labels", shape=(len(stimuli),)).astype(np.int64)
    if class_names is None:
        class_names = [f"class{c}" for c in range(int(labels.max()) + 1)]
    return stimuli, labels, class_names


def _draw_images(stimuli: np.ndarray, labels: np.ndarray, n_train_concepts: int, images_per_concept: int,
                 n_test: int, n_test_classes: int,
                 seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pick the training and test images (see :func:`_pick_images`) and compute their features.

    Returns ``train_idx``, ``test_idx``, ``concept_class`` and the Gabor energy and semantic features of the
    training then test images.
    """
    train_idx, test_idx, concept_class = _pick_images(labels, n_train_concepts, images_per_concept, n_test,
                                                      n_test_classes, np.random.default_rng(seed))
    used = np.concatenate([train_idx, test_idx])
    energy = gabor_energy(stimuli[used])
    semantic = semantic_features(energy, labels[used], n_classes=int(labels.max()) + 1, seed=seed)
    return train_idx, test_idx, concept_class, energy, semantic


def _subject_model(dataset: str, subject: int, energy: np.ndarray, semantic: np.ndarray, info: Any,
                   times: np.ndarray, *, seed: int, snr: float) -> tuple[dict[str, np.ndarray], float]:
    """One subject's :func:`image_meeg_model` and the RMS of its single-trial noise."""
    logger.info("simulate %s: subject %d", dataset, subject)
    model = image_meeg_model(energy, semantic, info, times, seed=seed * 1000 + subject)
    return model, _NOISE_RMS * float(model["signal_rms"]) / snr


@fill_doc
def simulate_things_eeg2(
    out: str | os.PathLike[str],
    *,
    subjects: Sequence[int] = (1, 2),
    n_train_concepts: int = 12,
    images_per_concept: int = 10,
    n_test: int = 30,
    n_test_classes: int = 2,
    train_repetitions: int = 4,
    test_repetitions: int = 20,
    snr: float = 1.0,
    seed: int = 0,
    image_size: int = 32,
    stimuli: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    class_names: Sequence[str] | np.ndarray | None = None,
    safe_copy: bool = False,
    verbose: Any = None,
) -> SimulationResult:
    """Simulate THINGS-EEG2 (ATM release: 63 channels, 250 Hz, -0.2 to 0.8 s) for real images.

    Writes ``out/things-eeg2/`` (``Preprocessed_data_250Hz/sub-XX/preprocessed_eeg_{training,test}.npy``
    and ``image_set/image_metadata.npy``, via :func:`neurodecode.testing.write_things_eeg2_subject`, and the
    images as JPEG files in the OSF layout ``image_set/{training,test}_images/<concept>/<file>``),
    ``out/truth/`` (``stimuli.npz`` with the images in file order; ``sub-XX.npz`` with the sources, lead
    field, clean responses and noise factors; ``model.json``) and ``out/ceiling.json``.

    Concepts are image classes: the test images come from ``n_test_classes`` held-out classes (zero-shot,
    disjoint from every training concept, as in THINGS-EEG2), one test image per test concept; each training
    concept holds ``images_per_concept`` images of one training class. Data are in microvolts.

    Parameters
    ----------
    out : path-like
        Output folder.
    subjects : sequence of int
        Subject numbers (1-10).
    n_train_concepts, images_per_concept : int
        Training concepts and images per concept (published: 1,654 x 10).
    n_test : int
        Test images, one per test concept (published: 200).
    n_test_classes : int
        Image classes held out for the test set.
    train_repetitions, test_repetitions : int
        Repetitions per image (published: 4 and 80).
    snr : float
        Signal-to-noise multiplier (1: single-trial noise RMS 20 x the image-specific signal RMS).
    seed : int
        Seed of everything.
    image_size : int
        Side of the images the features are computed on.
    stimuli, labels, class_names
        Images (n, H, W, 3) uint8, their class (0-based) and the class names; default the shipped
        Fashion-MNIST subset.
    safe_copy : bool
        Also write the pickle-free ``.npz`` twins of the published pickled ``.npy`` files (what
        :func:`neurodecode.data.convert_things_eeg2` makes), so the tree loads without ``allow_pickle``.
    %(verbose)s

    Returns
    -------
    result : SimulationResult
        ``result.data[subject]`` holds ``train`` and ``test`` arrays as written, ``clean_test`` and the noise
        factors.
    """
    from ..testing import write_things_eeg2_subject

    subjects = check_subjects(subjects, range(1, 11))
    snr = check_snr(snr)
    stimuli, labels, class_names = _image_set(stimuli, labels, class_names, image_size)
    out = Path(out)
    with use_log_level(verbose):
        train_idx, test_idx, concept_class, energy, semantic = _draw_images(
            stimuli, labels, n_train_concepts, images_per_concept, n_test, n_test_classes, seed)
        n_tr = len(train_idx)
        train_concepts = [_concept_name(k + 1, str(class_names[c]), str(k + 1)) for k, c in enumerate(concept_class)]
        test_concepts = [_concept_name(n_train_concepts + i + 1, str(class_names[labels[j]]), f"test{i + 1}")
                         for i, j in enumerate(test_idx)]
        sfreq = 250.0
        # the ATM release's layout: 250 samples 0..1 s after onset, with the epoch's full 300-entry times
        # (-0.2..0.996 s) kept in the files (the loader takes the last 250)
        epoch_times = np.round(-0.2 + np.arange(300) / sfreq, 6)
        times = epoch_times[50:]
        info = fw.eeg_info(fw.EEG63, sfreq)
        root = out / "things-eeg2"
        data: dict[Any, dict[str, Any]] = {}
        per_subject: dict[str, Any] = {}
        for s in subjects:
            model, scale = _subject_model("things-eeg2", s, energy, semantic, info, times, seed=seed, snr=snr)
            srng = np.random.default_rng([seed, s, 505])
            clean = model["clean"]
            train = (clean[:n_tr, None] + fw.draw_noise(srng, n_tr * train_repetitions, model["l_space"],
                                                         model["l_time"], scale).reshape(
                n_tr, train_repetitions, *clean.shape[1:])).astype(np.float32)
            test = (clean[n_tr:, None] + fw.draw_noise(srng, n_test * test_repetitions, model["l_space"],
                                                        model["l_time"], scale).reshape(
                n_test, test_repetitions, *clean.shape[1:])).astype(np.float32)
            write_things_eeg2_subject(root, s, train=train, test=test, ch_names=list(fw.EEG63), times=epoch_times,
                                      safe_copy=safe_copy,
                                      train_concepts=train_concepts, test_concepts=test_concepts,
                                      images_per_concept=images_per_concept, variant="atm")
            avg = test.mean(axis=1, dtype=np.float64)
            wt = fw.whiten(avg, model["l_space"], model["l_time"])
            wm = fw.whiten(clean[n_tr:].astype(np.float64), model["l_space"], model["l_time"])
            per_subject[f"sub-{s:02d}"] = ideal_observer(wt, wm)
            save_truth_npz(out / "truth" / f"sub-{s:02d}.npz", noise_scale=np.float64(scale),
                           **{k: v for k, v in model.items() if k != "specific"})
            data[s] = {"train": train, "test": test, "clean": clean, "noise_scale": scale,
                       "l_space": model["l_space"], "l_time": model["l_time"]}
        _save_stimuli(out, stimuli, train_idx, test_idx, labels, class_names, train_concepts, test_concepts,
                      images_per_concept)
        write_json(out / "truth" / "model.json", {
            "dataset": "things-eeg2", "variant": "atm", "subjects": subjects, "snr": snr, "seed": seed,
            "n_train_concepts": n_train_concepts, "images_per_concept": images_per_concept, "n_test": n_test,
            "train_repetitions": train_repetitions, "test_repetitions": test_repetitions, "sfreq": sfreq,
            "units": "microvolts", "image_size": image_size, "noise_rms_over_signal_rms_at_snr1": _NOISE_RMS,
            "model": __doc__})
        ceiling = summarise_ceiling(
            per_subject, dataset="things-eeg2", snr=snr, seed=seed, test_repetitions=test_repetitions,
            n_train_concepts=n_train_concepts, images_per_concept=images_per_concept,
            train_repetitions=train_repetitions,
            method="Gaussian likelihood under the true model (whitened by the true noise covariance), "
                   "test repetitions averaged")
        write_json(out / "ceiling.json", ceiling)
    return SimulationResult("things-eeg2", out, root, out / "truth", ceiling, list(subjects), data)


@fill_doc
def simulate_things_meg(
    out: str | os.PathLike[str],
    *,
    subjects: Sequence[int] = (1,),
    n_sessions: int = 4,
    n_train_concepts: int = 10,
    n_test: int = 10,
    n_test_classes: int = 2,
    snr: float = 1.0,
    seed: int = 0,
    sfreq: float = 1200.0,
    soa: float = 1.2,
    image_size: int = 32,
    stimuli: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    class_names: Sequence[str] | np.ndarray | None = None,
    verbose: Any = None,
) -> SimulationResult:
    """Simulate THINGS-MEG continuous runs (BIDS FIF, CTF-like 272 channels, one bad) for real images.

    As in THINGS-MEG, session ``k`` shows exemplar ``k`` of every training concept once and every test image
    once (so test images repeat ``n_sessions`` times), in a random order, one image every ``soa`` seconds.
    Writes ``out/things-meg/`` (via :func:`neurodecode.testing.write_things_meg_subject`, one run per session,
    and the images as ``stimuli/images[_test]_meg/<concept>/<stem>.jpg``, as the events' ``image_path``),
    ``out/truth/`` (``stimuli.npz``, ``sub-BIGMEGX.npz``, ``model.json``) and ``out/ceiling.json`` (ideal
    observer on the 0-0.995 s epochs of the test images, sessions averaged, 271 good channels). Concepts
    are image classes; the test images come from held-out classes (zero-shot). Data are in tesla.

    Parameters
    ----------
    out : path-like
        Output folder.
    subjects : sequence of int
        Subject numbers (1-4).
    n_sessions : int
        Sessions (published: 12); also the number of exemplars per training concept and of test repeats.
    n_train_concepts, n_test : int
        Training concepts and test images.
    n_test_classes : int
        Image classes held out for the test set.
    snr : float
        Signal-to-noise multiplier (1: single-trial noise RMS 20 x the image-specific signal RMS).
    seed : int
        Seed of everything.
    sfreq : float
        Recording rate; 1200 Hz as published (what :func:`neurodecode.data.load_thingsmeg` expects by default;
        with another rate pass ``raw_sfreq`` to the loader).
    soa : float
        Stimulus onset asynchrony in seconds (responses last under 1 s).
    image_size : int
        Side of the images the features are computed on.
    stimuli, labels, class_names
        Images (n, H, W, 3) uint8, their class (0-based) and the class names; default the shipped
        Fashion-MNIST subset.
    %(verbose)s

    Returns
    -------
    result : SimulationResult
        ``result.data[subject]`` holds the continuous ``runs`` (one (272, n_samples) array per session), the
        ``onsets``, ``image_ids`` and ``clean`` epochs.
    """
    from scipy.signal import lfilter

    from ..testing import write_things_meg_subject
    from ..testing._things_meg import ctf_channel_names

    subjects = check_subjects(subjects, range(1, 5))
    snr = check_snr(snr)
    stimuli, labels, class_names = _image_set(stimuli, labels, class_names, image_size)
    out = Path(out)
    with use_log_level(verbose):
        train_idx, test_idx, concept_class, energy, semantic = _draw_images(
            stimuli, labels, n_train_concepts, n_sessions, n_test, n_test_classes, seed)
        n_tr = len(train_idx)
        train_concepts = [f"{str(class_names[c]).replace(' ', '_')}{k + 1}" for k, c in enumerate(concept_class)]
        test_concepts = [f"{str(class_names[labels[j]]).replace(' ', '_')}test{i + 1}" for i, j in enumerate(test_idx)]
        # exemplar k (session k) of concept c is train image c * n_sessions + k
        train_ids = [f"{c}_{k + 1:02d}b" for c in train_concepts for k in range(n_sessions)]
        test_ids = [f"{c}_13s" for c in test_concepts]
        names = ctf_channel_names(None)
        bad = [n for n in names if n.split("-")[0] == "MRO11"]
        good = np.array([n not in bad for n in names])
        info = fw.ctf_info(names, sfreq)
        n_ep = int(round(1.0 * sfreq))
        times = np.arange(n_ep) / sfreq
        root = out / "things-meg"
        data: dict[Any, dict[str, Any]] = {}
        per_subject: dict[str, Any] = {}
        for s in subjects:
            model, scale = _subject_model("things-meg", s, energy, semantic, info, times, seed=seed, snr=snr)
            rho = float(0.8 ** (250.0 / sfreq))
            srng = np.random.default_rng([seed, s, 606])
            clean = model["clean"].astype(np.float64)
            test_epochs = np.zeros((n_test, int(good.sum()), n_ep))
            runs, all_onsets, all_ids = [], [], []
            for ses in range(n_sessions):
                items = [("train", c * n_sessions + ses) for c in range(n_train_concepts)]
                items += [("test", i) for i in range(n_test)]
                order = srng.permutation(len(items))
                n_samp = int(round((len(items) * soa + 2.0) * sfreq))
                z = srng.standard_normal((len(names), n_samp))
                z = lfilter([np.sqrt(1 - rho**2)], [1.0, -rho], z[:, 1:], axis=1, zi=rho * z[:, :1])[0]
                cont = scale * (model["l_space"] @ np.concatenate([srng.standard_normal((len(names), 1)), z], 1))
                onsets = np.round(1.0 + soa * np.arange(len(items)), 6)
                ids, is_test = [], []
                for k, o in zip(order, onsets):
                    part, j = items[k]
                    row = j if part == "train" else n_tr + j
                    smp = int(round(o * sfreq))
                    cont[:, smp:smp + n_ep] += clean[row]
                    ids.append(train_ids[j] if part == "train" else test_ids[j])
                    is_test.append(part == "test")
                for k, o in zip(order, onsets):
                    part, j = items[k]
                    if part == "test":
                        smp = int(round(o * sfreq))
                        test_epochs[j] += cont[good, smp:smp + n_ep] / n_sessions
                write_things_meg_subject(root, s, data=cont, sfreq=sfreq, ch_names=names, onsets=onsets,
                                         image_ids=ids, is_test=np.array(is_test), session=ses + 1, run=1,
                                         bads=bad)
                runs.append(cont)
                all_onsets.append(onsets)
                all_ids.append(ids)
            cs = model["l_space"] @ model["l_space"].T
            l_good = np.linalg.cholesky(cs[np.ix_(good, good)])
            l_time = fw.ar1_cholesky(n_ep, rho)
            wt = fw.whiten(test_epochs, l_good, l_time)
            wm = fw.whiten(clean[n_tr:][:, good], l_good, l_time)
            per_subject[f"sub-BIGMEG{s}"] = ideal_observer(wt, wm)
            save_truth_npz(out / "truth" / f"sub-BIGMEG{s}.npz", noise_scale=np.float64(scale), ar1=np.float64(rho),
                           good_channels=good, **{k: v for k, v in model.items() if k not in ("specific", "l_time")})
            data[s] = {"runs": runs, "onsets": all_onsets, "image_ids": all_ids, "clean": model["clean"],
                       "test_epochs": test_epochs}
        _save_stimuli(out, stimuli, train_idx, test_idx, labels, class_names,
                      [f"{k:05d}_{c}" for k, c in enumerate(train_concepts)],
                      [f"{k:05d}_{c}" for k, c in enumerate(test_concepts)], n_sessions,
                      train_files=train_ids, test_files=test_ids)
        write_json(out / "truth" / "model.json", {
            "dataset": "things-meg", "subjects": subjects, "snr": snr, "seed": seed, "n_sessions": n_sessions,
            "n_train_concepts": n_train_concepts, "n_test": n_test, "sfreq": sfreq, "soa": soa, "units": "tesla",
            "channels": "CTF-275 layout names, 272 recorded, MRO11-1609 bad (271 good)", "image_size": image_size,
            "noise_rms_over_signal_rms_at_snr1": _NOISE_RMS, "model": __doc__})
        ceiling = summarise_ceiling(
            per_subject, dataset="things-meg", snr=snr, seed=seed, test_repetitions=n_sessions,
            method="Gaussian likelihood under the true model (whitened by the true noise covariance), "
                   "0-0.995 s epochs of the 271 good channels, test repetitions (sessions) averaged")
        write_json(out / "ceiling.json", ceiling)
    return SimulationResult("things-meg", out, root, out / "truth", ceiling, list(subjects), data)


def _save_stimuli(out: Path, stimuli: np.ndarray, train_idx: np.ndarray, test_idx: np.ndarray, labels: np.ndarray,
                  class_names: Sequence[str] | np.ndarray, train_concepts: list[str], test_concepts: list[str],
                  images_per_concept: int, train_files: list[str] | None = None,
                  test_files: list[str] | None = None) -> None:
    tr_files = train_files or [f"{c.split('_', 1)[-1]}_{j + 1:02d}s.jpg" for c in train_concepts
                               for j in range(images_per_concept)]
    te_files = test_files or [f"{c.split('_', 1)[-1]}_01s.jpg" for c in test_concepts]
    if train_files is None:  # THINGS-EEG2's OSF image_set: <split>_images/<concept>/<file>
        base = out / "things-eeg2" / "image_set"
        paths = [base / "training_images" / train_concepts[j // images_per_concept] / f for j, f in enumerate(tr_files)]
        paths += [base / "test_images" / c / f for c, f in zip(test_concepts, te_files)]
    else:  # THINGS-MEG's stimuli folder, as the events' image_path: images[_test]_meg/<concept>/<stem>.jpg
        base = out / "things-meg" / "stimuli"
        paths = [base / "images_meg" / f.rsplit("_", 1)[0] / f"{f}.jpg" for f in tr_files]
        paths += [base / "images_test_meg" / f.rsplit("_", 1)[0] / f"{f}.jpg" for f in te_files]
    _write_jpegs(paths, np.concatenate([stimuli[train_idx], stimuli[test_idx]]))
    names = np.asarray([str(c) for c in class_names])
    save_truth_npz(out / "truth" / "stimuli.npz", train_images=stimuli[train_idx], test_images=stimuli[test_idx],
                   train_files=np.array(tr_files), test_files=np.array(te_files),
                   train_labels=labels[train_idx], test_labels=labels[test_idx], class_names=names,
                   train_captions=np.array([f"a photo of a {names[k]}" for k in labels[train_idx]]),
                   test_captions=np.array([f"a photo of a {names[k]}" for k in labels[test_idx]]),
                   source_index_train=train_idx, source_index_test=test_idx)


def _write_jpegs(paths: Sequence[Path], images: np.ndarray) -> None:
    """The stimulus images as the published JPEG files (the decoders' targets are embedded from them)."""
    from PIL import Image

    from .._core.files import atomic_path

    for path, image in zip(paths, images):
        path.parent.mkdir(parents=True, exist_ok=True)
        arr = np.asarray(image)
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        with atomic_path(path) as tmp:
            Image.fromarray(arr.astype(np.uint8)).save(tmp, format="JPEG", quality=95)
