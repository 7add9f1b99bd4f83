"""Synthetic NSD from a trained encoding model: ``neurodecode simulate nsd --encoder RUN OUT``.

Instead of the hand-built encoding model of :func:`~neurodecode.simulate.simulate_nsd` (Gabor-energy pRFs and
semantic features), the clean response of every voxel to every stimulus is what a trained brain encoder
(:class:`~neurodecode.models.brain_encoder.TransformerBrainEncoder` or its ridge baseline, from a run of
``pipelines/brain_encoder_nsd.toml``) predicts from the stimulus's features in the encoder's latent space. The
rest is the simulator's documented model, unchanged:

1. the voxels live in an ellipsoidal volume with an nsdgeneral-style ROI of exactly the encoder's voxel count
   (:func:`~neurodecode.simulate.fmri.nsd_volume`, the volume grown until they fit);
2. each voxel's prediction over the stimulus set is standardised, then scaled to a signal sd of 0.5-2 %
   around a 0.5-2.5 % baseline; single-trial Gaussian noise with the voxel's ``ncsnr`` drawn log-normally
   (median 0.35 x ``snr``);
3. each session adds a per-voxel offset and a linear drift; betas are written as int16 x 300 by
   :func:`neurodecode.testing.write_nsd_tree` in the NSD layout (with ``ncsnr.nii.gz`` when the writer
   supports it), with the NSD-style design (shared test images, 3 repeats);
4. ``truth/`` holds the clean responses, noise levels, nuisance and design; ``ceiling.json`` the ideal
   observer on the shared test images.

So decoders can be pre-trained or checked on synthetic pairs whose brain side comes from a model fitted to real
data (Brain-IT and the TRIBE-v2 augmentation paper use encoders this way).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import ValidationError
from .._core.files import write_json
from .._core.logging import logger, use_log_level
from .._core.validation import check_array, format_error
from ._common import SimulationResult, check_snr, check_subjects, save_truth_npz, summarise_ceiling

__all__ = ["simulate_nsd_from_encoder"]

_TRIALS_PER_SESSION = 750
_REPEATS = 3


def _volume(n_voxels: int, seed: int, volume_shape: tuple[int, int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    """An nsdgeneral-style ROI of exactly ``n_voxels`` voxels (the default volume grown until it fits)."""
    from .fmri import nsd_volume

    if volume_shape is not None:
        return nsd_volume(volume_shape, n_voxels, seed)
    scale = 1.0
    while True:
        shape = tuple(max(8, int(round(s * scale))) for s in (24, 28, 22))
        try:
            return nsd_volume(shape, n_voxels, seed)  # type: ignore[arg-type]
        except ValidationError:
            scale *= 1.2
            if scale > 40:  # pragma: no cover - 60 million voxels
                raise


def simulate_nsd_from_encoder(
    out: str | os.PathLike[str],
    encoder: Any,
    *,
    subject: Any = None,
    model: str = "encoder",
    subjects: Sequence[int] = (1,),
    n_sessions: int = 2,
    n_shared: int = 100,
    snr: float = 1.0,
    seed: int = 0,
    image_size: int = 32,
    stimuli: np.ndarray | None = None,
    n_stimuli: int | None = None,
    volume_shape: tuple[int, int, int] | None = None,
    formats: Sequence[str] = ("nifti", "hdf5"),
    space_weights: Any = None,
    device: Any = "cpu",
    verbose: Any = None,
) -> SimulationResult:
    """Write an NSD tree whose responses come from a trained brain encoder (see the module docstring).

    Parameters
    ----------
    out : path-like
        Output folder: ``out/nsd`` (the NSD root), ``out/truth``, ``out/ceiling.json``.
    encoder : path-like
        A brain-encoder run folder (``neurodecode train pipelines/brain_encoder_nsd.toml``), a subject folder
        or a model folder (:func:`~neurodecode.models.brain_encoder.load_brain_encoder`).
    subject : int, str or None
        Which subject of the run (``None``: its only one).
    model : {"encoder", "ridge"}
        The transformer encoder or the run's ridge baseline.
    subjects : sequence of int
        NSD subject numbers to write (each gets its own voxel tuning draw of scale and noise; the clean
        responses are the encoder's for every one).
    n_sessions, n_shared : int
        Sessions per subject (250 images x 3 repeats each) and shared test images.
    snr : float
        Multiplier of every voxel's noise-ceiling SNR.
    seed : int
        Seed of the design, the noise and the nuisance.
    image_size : int
        Side of the shipped stimuli (when ``stimuli`` is None).
    stimuli : ndarray of shape (n_stimuli, H, W, 3), uint8, or None
        Images (default: the shipped Fashion-MNIST subset).
    n_stimuli : int or None
        Use the first ``n_stimuli`` shipped images.
    volume_shape : tuple of int or None
        Brain volume (default: grown from 24 x 28 x 22 until the encoder's voxels fit).
    formats : sequence of {"nifti", "hdf5"}
    space_weights : str or None
        Weights of the encoder's latent space (default: those the run recorded).
    device : str
        Where the latent space and the encoder run.
    verbose : bool or str or None

    Returns
    -------
    result : SimulationResult
        As :func:`~neurodecode.simulate.simulate_nsd`; ``data[s]`` holds ``betas``, ``trial_stimulus``,
        ``trial_session``, ``is_test``, ``nuisance``, ``clean``, ``noise_sd``.
    """
    from ..latents import get_space
    from ..models.brain_encoder import load_brain_encoder
    from ..testing import write_nsd_tree
    from .fmri import _design, _nsd_ideal
    from .stimuli import load_stimuli, resize_images

    subjects = check_subjects(subjects, range(1, 9))
    snr = check_snr(snr)
    n_img = int(n_sessions) * _TRIALS_PER_SESSION // _REPEATS
    if int(n_sessions) < 1 or not 2 <= int(n_shared) < n_img:
        raise ValidationError(format_error("n_shared", f"2 <= n_shared < {n_img} (images per subject)",
                                           n_shared, "Lower n_shared or add sessions"))
    enc, space_name, run_weights = load_brain_encoder(encoder, subject, model=model)
    captions, labels, class_names = None, None, None
    if stimuli is None:
        stimuli, labels, class_names, captions = load_stimuli("fashion-mnist", n=n_stimuli, size=image_size)
        source = "fashion-mnist (shipped, neurodecode/assets)"
    else:
        stimuli = resize_images(check_array(stimuli, "stimuli", ndim=4).astype(np.uint8), image_size)
        source = "user"
    out = Path(out)
    rng = np.random.default_rng(seed)
    with use_log_level(verbose):
        space = get_space(space_name, weights=space_weights if space_weights is not None else run_weights,
                          device=device, verbose=verbose)
        logger.info("simulate nsd --encoder: %d stimuli through %s and %s", len(stimuli), space_name,
                    type(enc).__name__)
        feats = space.encode_images(stimuli)
        drive = np.asarray(enc.predict(feats), dtype=np.float64)  # (n_stimuli, n_voxels)
        n_vox = drive.shape[1]
        z = (drive - drive.mean(0)) / (drive.std(0) + 1e-8)
        subjectim, masterordering, sharedix, disjoint = _design(len(stimuli), int(n_sessions), int(n_shared),
                                                                subjects, rng)
        n_trials = int(n_sessions) * _TRIALS_PER_SESSION
        masks, betas, ncsnrs, data, per_subject = {}, {}, {}, {}, {}
        truth = out / "truth"
        for s in subjects:
            mask, coords = _volume(n_vox, seed * 1000 + s, volume_shape)
            srng = np.random.default_rng([seed, s, 404])
            signal_sd = srng.uniform(0.5, 2.0, n_vox)
            baseline = srng.uniform(0.5, 2.5, n_vox)
            clean = (baseline + signal_sd * z).astype(np.float32)
            ncsnr = snr * np.exp(srng.normal(np.log(0.35), 0.45, n_vox))
            noise_sd = signal_sd / ncsnr
            offsets = srng.normal(0, 1.0, (int(n_sessions), n_vox)) * signal_sd
            drifts = srng.normal(0, 1.0, (int(n_sessions), n_vox)) * signal_sd
            stim = subjectim[s - 1, masterordering[:n_trials] - 1] - 1
            session = np.repeat(np.arange(int(n_sessions)), _TRIALS_PER_SESSION)
            pos = np.tile(np.arange(_TRIALS_PER_SESSION) / (_TRIALS_PER_SESSION - 1) - 0.5, int(n_sessions))
            nuisance = offsets[session] + drifts[session] * pos[:, None]
            raw = clean[stim] + nuisance + srng.standard_normal((n_trials, n_vox)) * noise_sd
            written = np.clip(np.round(raw * 300), -32768, 32767) / 300
            is_test = masterordering[:n_trials] <= int(n_shared)
            ceiling = _nsd_ideal(written, nuisance, stim, is_test, {"clean": clean, "noise_sd": noise_sd})
            nc = 100 * ncsnr**2 / (ncsnr**2 + 1 / _REPEATS)
            per_subject[f"subj{s:02d}"] = ceiling | {"n_voxels": n_vox, "median_noise_ceiling": float(np.median(nc))}
            masks[s], betas[s] = mask, written
            ncsnr_vol = np.zeros(mask.shape, dtype=np.float32)
            ncsnr_vol.ravel()[np.flatnonzero(mask.ravel() == 1)] = ncsnr
            ncsnrs[s] = ncsnr_vol
            save_truth_npz(truth / f"subj{s:02d}.npz", clean=clean, noise_sd=noise_sd, ncsnr=ncsnr,
                           noise_ceiling=nc, signal_sd=signal_sd, baseline=baseline, encoder_prediction=drive,
                           session_offset=offsets, session_drift=drifts, trial_stimulus=stim,
                           trial_session=session + 1, is_test=is_test, mask=mask, voxel_coords=coords)
            data[s] = {"betas": written, "trial_stimulus": stim, "trial_session": session + 1, "is_test": is_test,
                       "nuisance": nuisance, "clean": clean, "noise_sd": noise_sd}
        caps = None
        if captions is not None and labels is not None and class_names is not None:
            caps = [[str(c), f"an image of a {str(class_names[k]).lower()}"] for c, k in zip(captions, labels)]
        extra: dict[str, Any] = {}
        if "ncsnr" in inspect.signature(write_nsd_tree).parameters:  # writers that know NSD's ncsnr.nii.gz
            extra["ncsnr"] = ncsnrs
        root = write_nsd_tree(out / "nsd", stimuli=stimuli, subjectim=subjectim, masterordering=masterordering,
                              sharedix=sharedix, betas=betas, masks=masks, formats=formats, captions=caps, **extra)
        save_truth_npz(truth / "features.npz", encoder_features=feats.astype(np.float16),
                       labels=np.full(len(stimuli), -1) if labels is None else labels, subjectim=subjectim,
                       masterordering=masterordering, sharedix=sharedix)
        write_json(truth / "model.json", {
            "dataset": "nsd", "simulator": "encoder", "encoder": str(Path(encoder)), "model": type(enc).__name__,
            "encoder_subject": getattr(enc.config, "subject", None), "space": space_name, "space_weights":
            space.weights, "subjects": subjects, "n_sessions": int(n_sessions), "n_shared": int(n_shared),
            "n_voxels": n_vox, "snr": snr, "seed": seed, "image_size": image_size, "n_stimuli": len(stimuli),
            "stimuli": source, "train_images_disjoint_across_subjects": disjoint, "description": __doc__})
        ceiling = summarise_ceiling(per_subject, dataset="nsd", snr=snr, seed=seed,
                                    method="Gaussian likelihood under the true model (the encoder's clean responses); "
                                           "known offsets/drifts removed; test repeats averaged")
        write_json(out / "ceiling.json", ceiling)
    return SimulationResult("nsd", out, Path(root), truth, ceiling, list(subjects), data)
