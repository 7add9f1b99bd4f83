"""Simulated BOLD5000 whole-brain data with a known answer: which network carries the image.

Encoding model (documented, deterministic under ``seed``):

- **Stimuli.** Shipped Fashion-MNIST images (:func:`~neurodecode.simulate.load_stimuli`, 32 x 32), named
  like BOLD5000 Scene images (``<class><k>.jpg``, e.g. ``ankleboot12.jpg``), spread over the ``COCO``,
  ``ImageNet`` and ``Scene`` folders. ``n_test`` of them are the "repeated" test images, shown once per
  session (``rep_`` from the second session on); every other image is shown once.
- **Image features.** ``f``: the images' ``n_features`` (8) leading principal components of grey pixels,
  each z-scored.
- **Parcels.** A labels atlas on a (10, 9, 8) grid of 2 mm voxels with ``parcels_per_network`` (8) parcels
  per Yeo-7 network, Schaefer names (``7Networks_LH_Default_1``...). Parcel ``p`` of network ``n`` responds
  to an image with amplitude ``gain[n] * w_p . f`` (``w_p`` Gaussian, unit norm): ``gain`` is 1 for the
  default-mode network, 0.1 for the visual network and 0 elsewhere (``network_gains``), so ablating
  ``Default`` must hurt decoding most, then ``Vis``.
- **BOLD.** Per run, each voxel's series is ``100 + sum_k a_kp h(t - onset_k) + noise``: SPM's canonical HRF
  ``h`` (gamma 6 s minus gamma 16 s / 6) at TR 2 s, image onsets every 10 s from 6 s, Gaussian white noise of
  standard deviation ``2 / snr`` per voxel, written as the fMRIPrep derivative with BIDS events.

Ceiling (``ceiling.json``): an ideal observer of the test images' parcel responses at the HRF peak (TR 3 after
onset, repeats and the parcel's voxels averaged), knowing the clean amplitudes and the noise level.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._core.files import write_json
from .._core.logging import logger
from .._core.specs import load_spec
from ._common import SimulationResult, check_snr, check_subjects, save_truth_npz, summarise_ceiling
from ._ideal import ideal_observer
from .stimuli import load_stimuli

__all__ = ["simulate_bold5000", "canonical_hrf", "DEFAULT_GAINS"]

#: Signal gain of each network's parcels (the known answer).
DEFAULT_GAINS: dict[str, float] = {"Default": 1.0, "Vis": 0.1}


def canonical_hrf(t: np.ndarray) -> np.ndarray:
    """SPM's canonical haemodynamic response at times ``t`` (s): gamma(6) - gamma(16) / 6, peak 1."""
    from scipy.stats import gamma

    t = np.asarray(t, dtype=np.float64)
    h = gamma.pdf(t, 6.0) - gamma.pdf(t, 16.0) / 6.0
    peak = np.max(gamma.pdf(np.linspace(0, 30, 3001), 6.0) - gamma.pdf(np.linspace(0, 30, 3001), 16.0) / 6.0)
    return np.where(t >= 0, h / peak, 0.0)


def simulate_bold5000(
    out: str | os.PathLike[str],
    *,
    subjects: Sequence[int] = (1, 2),
    snr: float = 1.0,
    seed: int = 0,
    n_train: int = 96,
    n_test: int = 12,
    n_sessions: int = 2,
    runs_per_session: int = 4,
    n_features: int = 8,
    parcels_per_network: int = 8,
    grid: tuple[int, int, int] = (10, 9, 8),
    network_gains: Mapping[str, float] | None = None,
) -> SimulationResult:
    """Write a simulated BOLD5000 tree (``out/bold5000``), its truth and ceiling (see the module docstring).

    Parameters
    ----------
    out : path-like
        Output folder.
    subjects : sequence of int
        CSI subject numbers (1..4).
    snr : float
        Signal-to-noise multiplier (noise SD ``2 / snr`` per voxel).
    seed : int
        Seed of everything random.
    n_train, n_test : int
        Images shown once (training) and repeated test images per subject (each subject sees its own
        training images and the same test images).
    n_sessions, runs_per_session : int
        Design; the trials of a subject are spread evenly over the runs.
    n_features, parcels_per_network, grid
        Encoding model and atlas size.
    network_gains : mapping of str to float or None
        Gain per network (default :data:`DEFAULT_GAINS`; absent networks 0).

    Returns
    -------
    result : SimulationResult
        ``root`` holds the tree and ``atlas/`` (the Schaefer-format atlas the recipe reads).
    """
    from ..testing._bold5000 import write_bold5000_stimuli, write_bold5000_subject, write_schaefer_atlas

    snr = check_snr(snr)
    subjects = check_subjects(subjects, list(range(1, 5)))
    spec = load_spec("bold5000")
    tr = float(spec["dataset"]["tr"])
    nets = list(spec["parcels"]["networks"])
    gains = dict(DEFAULT_GAINS if network_gains is None else network_gains)
    out = Path(out)
    root, truth = out / "bold5000", out / "truth"
    truth.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    n_images = n_test + n_train * len(subjects)
    images, labels, class_names, _ = load_stimuli("fashion-mnist", n=n_images, size=32)
    sources = list(spec["dataset"]["image_sources"])
    names = [f"{str(class_names[labels[i]]).replace(' ', '').replace('/', '')}{i}.jpg" for i in range(n_images)]
    write_bold5000_stimuli(root, {n: (sources[i % 3], images[i]) for i, n in enumerate(names)}, names[:n_test])
    grey = images.astype(np.float64).mean(axis=3).reshape(n_images, -1) / 255.0
    centred = grey - grey.mean(axis=0)
    proj = np.linalg.svd(centred, full_matrices=False)[2][:n_features].T  # leading principal axes
    feats = centred @ proj
    feats = (feats - feats.mean(0)) / np.where(feats.std(0) > 0, feats.std(0), 1.0)

    parcel_names = [f"7Networks_{'LH' if k % 2 == 0 else 'RH'}_{net}_{k + 1}" for net in nets
                    for k in range(parcels_per_network)]
    parcel_net = np.repeat(nets, parcels_per_network)
    n_parcels = len(parcel_names)
    labels_vol = np.zeros(grid, dtype=np.int16)
    flat = labels_vol.reshape(-1)
    n_vox = flat.size
    flat[:] = (np.arange(n_vox) * n_parcels) // n_vox + 1  # contiguous, near-equal parcels
    atlas, lut = write_schaefer_atlas(root / "atlas", labels_vol, parcel_names)
    w = rng.standard_normal((n_parcels, n_features))
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    gain = np.array([float(gains.get(str(n), 0.0)) for n in parcel_net])
    amplitudes = feats @ (w * gain[:, None]).T  # (n_images, n_parcels)
    noise_sd = 2.0 / snr
    vox_parcel = flat.astype(np.int64) - 1

    per_subject: dict[str, Any] = {}
    data_out: dict[Any, dict[str, Any]] = {}
    n_runs = n_sessions * runs_per_session
    for si, s in enumerate(subjects):
        own = list(range(n_test + si * n_train, n_test + (si + 1) * n_train))
        order = [int(i) for i in rng.permutation(own)]
        chunks = np.array_split(np.asarray(order), n_runs)
        presentation: list[list[list[str]]] = []
        bold: dict[tuple[int, int], np.ndarray] = {}
        test_peaks = np.zeros((n_test, n_parcels))
        for sess in range(n_sessions):
            runs = []
            for r in range(runs_per_session):
                idx = list(chunks[sess * runs_per_session + r])
                if r == 0:  # the test images once per session, in the first run
                    idx = [int(i) for i in rng.permutation(idx + list(range(n_test)))]
                run_names = [("rep_" if (i < n_test and sess > 0) else "") + names[i] for i in idx]
                runs.append(run_names)
                onsets = 6.0 + 10.0 * np.arange(len(idx))
                n_t = int(np.ceil((onsets[-1] + 20.0) / tr))
                t = np.arange(n_t) * tr
                signal = canonical_hrf(t[None, :] - onsets[:, None]).T @ amplitudes[idx]  # (n_t, n_parcels)
                series = 100.0 + signal[:, vox_parcel] + noise_sd * rng.standard_normal((n_t, n_vox))
                bold[(sess + 1, r + 1)] = series.T.reshape(*grid, n_t).astype(np.float32)
                for k, i in enumerate(idx):
                    if i < n_test:
                        peak = int(round(onsets[k] / tr)) + 3
                        test_peaks[i] += np.bincount(vox_parcel, weights=series[peak] - 100.0,
                                                     minlength=n_parcels) / np.bincount(vox_parcel)
            presentation.append(runs)
        write_bold5000_subject(root, s, presentation, bold=bold)
        counts = np.bincount(vox_parcel, minlength=n_parcels)
        peak_h = float(canonical_hrf(np.array([3 * tr]))[0])
        per_subject[f"CSI{s}"] = ideal_observer(test_peaks / n_sessions, amplitudes[:n_test] * peak_h,
                                                noise_sd / np.sqrt(counts * n_sessions))
        save_truth_npz(truth / f"CSI{s}.npz", order=np.asarray(order))
        data_out[s] = {"presentation": presentation}
    save_truth_npz(truth / "model.npz", features=feats, projection=proj, parcel_weights=w, gain=gain,
                   amplitudes=amplitudes, labels=labels.astype(np.int64))
    write_json(truth / "model.json", {"dataset": "bold5000", "snr": snr, "seed": seed, "tr": tr,
                                      "network_gains": gains, "noise_sd": noise_sd, "n_features": n_features,
                                      "images": names, "test_images": names[:n_test],
                                      "parcel_networks": parcel_net.tolist(), "atlas": str(atlas.relative_to(root)),
                                      "atlas_labels": str(lut.relative_to(root))})
    ceiling = summarise_ceiling(per_subject, dataset="bold5000", snr=snr, seed=seed,
                                method="ideal observer: test parcel responses at the HRF peak (TR 3 after onset), "
                                       "voxels and repeats averaged, true clean amplitudes and noise level")
    write_json(out / "ceiling.json", ceiling)
    logger.info("bold5000 simulation: %s (ceiling top-1 %.3f)", root, ceiling.get("top1_retrieval", float("nan")))
    return SimulationResult(dataset="bold5000", out=out, root=root, truth=truth, ceiling=ceiling,
                            subjects=list(subjects), data=data_out)
