"""Known-answer fMRI: NSD-layout betas simulated from real images through a documented encoding model.

The model (all of it saved in ``OUT/truth/``):

1. **Volume and ROI.** A small ellipsoidal "brain" (``volume_shape``) with an nsdgeneral-style mask: -1
   outside the brain, 0 inside, 1 for a posterior cortical cap (occipital and ventral temporal cortex). The
   number of ROI voxels differs per subject, in proportion to NSD's real nsdgeneral counts
   (``n_voxels`` is subject 1's count).
2. **Retinotopy.** The posterior 55 % of the ROI is "early" cortex (V1-V3-like): each voxel's population
   receptive field (pRF, a 2-D Gaussian) is placed smoothly by its position: left hemisphere -> right
   visual field, dorsal -> lower field, posterior -> fovea (eccentricity grows anteriorly, with a cortical
   magnification that over-represents the fovea); pRF size grows with eccentricity. The anterior 45 % is
   "higher" cortex (ventral-temporal-like) with large, near-foveal pRFs.
3. **Features.** Early voxels pool Gabor energy (:func:`~neurodecode.simulate._features.gabor_energy`: 3
   scales x 4 orientations) over their pRF, weight the channels (preferred scale shifts coarser with
   eccentricity, random orientation bias) and apply a compressive exponent 0.5 (compressive spatial
   summation, Kay et al. 2013). Higher voxels read a random linear mix of semantic features
   (:func:`~neurodecode.simulate._features.semantic_features`: a category embedding plus a non-linear image
   projection) plus a little pooled energy.
4. **Scaling and noise.** Each voxel's clean response over the stimulus set is standardised and scaled to a
   signal standard deviation of 0.5-2 % signal change around a 0.5-2.5 % baseline. Single-trial noise is
   Gaussian with the voxel's noise-ceiling SNR ``ncsnr`` drawn log-normally (median 0.35 x ``snr``, early
   voxels higher), so that the distribution of noise ceilings looks like NSD's nsdgeneral (many voxels near
   20-40 %, a tail up to 70-80 %).
5. **Sessions.** Each session adds a per-voxel offset and a linear drift across its 750 trials (both of
   the order of the signal), so per-session z-scoring matters. Betas are written as int16 x 300.

6. **ROIs and noise ceilings on disk.** NSD's ROI files are written from the same model
   (:func:`nsd_roi_atlases`: ``streams``, ``prf-visualrois``, ``prf-eccrois`` and ``floc-*`` volumes with their
   ``.mgz.ctab`` tables and ``lh.``/``rh.`` versions), and each voxel's true ``ncsnr`` as
   ``betas_fithrf_GLMdenoise_RR/ncsnr.nii.gz`` (the SNR of the single-trial noise, without the session offsets
   and drifts, which per-session z-scoring removes only in part).

The ideal observer knows all of this: it removes the true offsets and drifts, averages the repeats of each
shared test image, and ranks the test candidates by the Gaussian likelihood of the response under their
clean responses and the true noise.
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
from .._core.logging import logger
from .._core.validation import check_array, format_error
from ..data._nsd_rois import noise_ceiling
from ._common import SimulationResult, check_snr, check_subjects, save_truth_npz, summarise_ceiling
from ._features import gabor_energy, semantic_features
from ._ideal import ideal_observer

__all__ = ["simulate_nsd", "nsd_encoding_model", "nsd_volume", "nsd_roi_atlases"]

_NSDGENERAL = (15724, 14278, 15226, 13153, 13039, 17907, 12682, 14386)
_TRIALS_PER_SESSION = 750
_REPEATS = 3
_EARLY_FRACTION = 0.55
_COMPRESSION = 0.5


# ----------------------------------------------------------------------------- volume and retinotopy
def nsd_volume(volume_shape: tuple[int, int, int], n_voxels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An ellipsoidal brain with a posterior nsdgeneral-style ROI of ``n_voxels`` voxels.

    Parameters
    ----------
    volume_shape : tuple of int (X, Y, Z)
        X: right-left, Y: posterior-anterior, Z: inferior-superior.
    n_voxels : int
        Number of ROI voxels (value 1).
    seed : int
        Seed of the subject-specific boundary of the ROI.

    Returns
    -------
    mask : ndarray of shape (X, Y, Z), dtype int16
        -1 outside the brain, 0 inside, 1 in the ROI.
    coords : ndarray of shape (n_voxels, 3)
        Normalised ellipsoid coordinates (each in [-1, 1]) of the ROI voxels, in
        ``np.flatnonzero(mask == 1)`` order.
    """
    rng = np.random.default_rng([seed, 101])
    shape = tuple(int(s) for s in volume_shape)
    xn, yn, zn = _ellipsoid_grids(shape)
    r = np.sqrt(xn**2 + yn**2 + zn**2)
    mask = np.where(r <= 1.0, 0, -1).astype(np.int16)
    cortex = (r <= 1.0) & (r >= 0.6) & (yn < 0.1) & (zn < 0.7)
    # subject-specific, smooth boundary: posterior voxels first, perturbed by a low-order random field
    a = rng.normal(0, 0.08, size=4)
    score = yn + a[0] * xn + a[1] * zn + a[2] * xn * zn + a[3] * (zn**2) + rng.normal(0, 0.02, size=yn.shape)
    cand = np.flatnonzero(cortex.ravel())
    if n_voxels > cand.size:
        raise ValidationError(format_error(
            "n_voxels", f"at most {cand.size} voxels for volume_shape={shape} (per subject, after scaling "
            "by NSD's nsdgeneral counts)", n_voxels, "Use a larger volume_shape or fewer voxels"))
    chosen = np.sort(cand[np.argsort(score.ravel()[cand], kind="stable")[:n_voxels]])
    mask.ravel()[chosen] = 1
    coords = np.stack([xn.ravel()[chosen], yn.ravel()[chosen], zn.ravel()[chosen]], axis=1)
    return mask, coords


def _ellipsoid_grids(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised (x, y, z) coordinates of every voxel of the ellipsoidal brain (radius 1 at its surface)."""
    grids = np.meshgrid(*[np.linspace(-1, 1, s) * (s - 1) / s for s in shape], indexing="ij")
    xn, yn, zn = (g / 0.92 for g in grids)
    return xn, yn, zn


#: NSD's image half-width in degrees of visual angle (8.4 deg square stimuli): the pRF unit of 1.
_HALF_WIDTH_DEG = 4.2


def nsd_roi_atlases(mask: np.ndarray, coords: np.ndarray,
                    model: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """NSD-style ROI label volumes consistent with a simulated subject's retinotopy.

    Only ROI (``mask == 1``) voxels carry labels (other brain voxels are 0, outside the brain -1), so the
    atlases partition the simulated nsdgeneral region:

    - ``streams``: the early (retinotopic) voxels are ``early``; the higher voxels are ``ventral`` (lower
      third of the z range), ``parietal`` (upper part) or ``lateral`` (between), the first 15 % of the
      posterior-to-anterior rank after early cortex being their ``mid*`` stream.
    - ``prf-visualrois``: the early region cut in three posterior-to-anterior bands (V1, V2, V3; the
      simulator has one continuous map, so these are bands, not areas bounded by polar-angle reversals),
      ``v`` for the ventral half (upper visual field in the simulated pRFs, as in cortex) and ``d`` for the
      dorsal half; ``hV4`` is the midventral stream.
    - ``prf-eccrois``: early voxels by their simulated pRF eccentricity, with the image half-width = 4.2 deg
      (NSD's 8.4 deg stimuli): < 0.5, < 1, < 2, < 4 and >= 4 deg.
    - ``floc-faces`` / ``-bodies`` / ``-places`` / ``-words``: anatomical placeholders in the higher cortex
      where the real ones lie (FFA / FBA / PPA / VWFA ventral, OFA / EBA / OWFA lateral, OPA / RSC dorsal;
      words in the left hemisphere). The simulated tuning is not category-selective by these ROIs.

    Parameters
    ----------
    mask : ndarray of shape (X, Y, Z)
        -1 outside the brain, 0 brain, 1 ROI (:func:`nsd_volume`).
    coords : ndarray of shape (n_voxels, 3)
        Normalised coordinates of the ROI voxels, in ``np.flatnonzero(mask == 1)`` order.
    model : dict
        :func:`nsd_encoding_model` output (``early`` and ``eccentricity`` are read).

    Returns
    -------
    atlases : dict of str to ndarray of int16, shape (X, Y, Z)
    hemispheres : ndarray of int8, shape (X, Y, Z)
        1 (left: ``x < 0``, the hemisphere whose pRFs are in the right visual field) or 2 (right) in the
        brain, 0 outside.
    """
    flat = np.flatnonzero(mask.ravel() == 1)
    xn, yn, zn = coords.T
    n = len(flat)
    order = np.argsort(yn, kind="stable")
    frac = np.empty(n)
    frac[order] = (np.arange(n) + 0.5) / n
    early = np.asarray(model["early"], bool)
    zr = (zn - zn.min()) / max(np.ptp(zn), 1e-9) * 2 - 1
    mid = ~early & (frac < _EARLY_FRACTION + 0.15)
    ventral, parietal = zr < -1 / 3, zr > 1 / 3
    lateral = ~ventral & ~parietal
    outer = np.abs(xn) >= np.median(np.abs(xn))
    left = xn < 0

    def volume(codes: np.ndarray) -> np.ndarray:
        vol = np.where(mask >= 0, 0, -1).astype(np.int16)
        vol.ravel()[flat] = codes
        return vol

    streams = np.where(early, 1, 0)
    for mid_code, far_code, where in ((2, 5, ventral), (3, 6, lateral), (4, 7, parietal)):
        streams = np.where(~early & where & mid, mid_code, streams)
        streams = np.where(~early & where & ~mid, far_code, streams)
    band = np.minimum((frac / _EARLY_FRACTION * 3).astype(int), 2)
    prf = np.where(early, 1 + 2 * band + (zr >= 0), 0)  # V1v 1, V1d 2, V2v 3, V2d 4, V3v 5, V3d 6
    prf = np.where(streams == 2, 7, prf)  # hV4
    deg = np.asarray(model["eccentricity"]) * _HALF_WIDTH_DEG
    ecc = np.where(early, 1 + np.searchsorted(np.array([0.5, 1.0, 2.0, 4.0]), deg, side="right"), 0)
    far = ~early & ~mid
    late = frac >= 0.85
    faces = np.select([mid & lateral & outer, far & ventral & outer & ~late, far & ventral & outer & late],
                      [1, 2, 3], 0)  # OFA, FFA-1, FFA-2
    bodies = np.select([far & lateral & outer, far & ventral & ~outer & ~late, far & ventral & ~outer & late],
                       [1, 2, 3], 0)  # EBA, FBA-1, FBA-2
    places = np.select([~early & parietal & ~late, far & ventral & ~outer & late, ~early & parietal & late & ~outer],
                       [1, 2, 3], 0)  # OPA, PPA, RSC
    words = np.select([left & mid & lateral, left & far & ventral & outer & ~late,
                       left & far & ventral & outer & late], [1, 2, 3], 0)  # OWFA, VWFA-1, VWFA-2
    atlases = {"streams": volume(streams), "prf-visualrois": volume(prf), "prf-eccrois": volume(ecc),
               "floc-faces": volume(faces), "floc-bodies": volume(bodies), "floc-places": volume(places),
               "floc-words": volume(words)}
    gx = _ellipsoid_grids(mask.shape)[0]
    hemis = np.where(mask >= 0, np.where(gx < 0, 1, 2), 0).astype(np.int8)
    return atlases, hemis


def _retinotopy(coords: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """pRF centres (x, y in [-1, 1], y up), sizes and roles from ROI coordinates (see the module docstring)."""
    xn, yn, zn = coords.T
    n = len(yn)
    order = np.argsort(yn, kind="stable")
    frac = np.empty(n)
    frac[order] = (np.arange(n) + 0.5) / n  # 0 = most posterior
    early = frac < _EARLY_FRACTION
    hemi = np.where(xn < 0, 1.0, -1.0)  # left hemisphere sees the right visual field
    zr = (zn - zn.min()) / max(np.ptp(zn), 1e-9) * 2 - 1  # -1 ventral .. 1 dorsal
    angle = -zr * (np.pi / 2) * 0.9  # dorsal -> lower field
    ecc_early = 0.03 + 0.97 * (frac / _EARLY_FRACTION) ** 1.6  # cortical magnification
    ecc_high = 0.35 * (frac - _EARLY_FRACTION) / (1 - _EARLY_FRACTION)
    ecc = np.where(early, ecc_early, ecc_high)
    x = hemi * ecc * np.cos(angle) + rng.normal(0, 0.03, n)
    y = ecc * np.sin(angle) + rng.normal(0, 0.03, n)
    sigma = np.where(early, 0.07 + 0.22 * ecc, 0.5 + 0.3 * rng.random(n)) * np.exp(rng.normal(0, 0.1, n))
    return {"prf_x": x, "prf_y": y, "prf_sigma": sigma, "eccentricity": ecc, "polar_angle": angle,
            "early": early}


def _prf_matrix(x: np.ndarray, y: np.ndarray, sigma: np.ndarray, grid: int) -> np.ndarray:
    """(n_voxels, grid * grid) Gaussian pRF weights over the feature grid, each row summing to 1."""
    centres = (np.arange(grid) + 0.5) / grid * 2 - 1
    gx = centres[None, None, :]
    gy = -centres[None, :, None]  # row 0 is the top of the image (y = +1)
    w = np.exp(-((gx - x[:, None, None]) ** 2 + (gy - y[:, None, None]) ** 2) / (2 * sigma[:, None, None] ** 2))
    w = w.reshape(len(x), -1)
    return w / (w.sum(1, keepdims=True) + 1e-12)


# ----------------------------------------------------------------------------- encoding model
def nsd_encoding_model(
    energy: np.ndarray,
    semantic: np.ndarray,
    coords: np.ndarray,
    *,
    snr: float = 1.0,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Draw one subject's voxel tuning and compute the clean responses to every stimulus.

    Parameters
    ----------
    energy : ndarray of shape (n_stimuli, n_channels, grid, grid)
        Gabor energy of the stimuli (scale-major channels, 3 scales x 4 orientations by default).
    semantic : ndarray of shape (n_stimuli, n_semantic)
        Semantic features of the stimuli.
    coords : ndarray of shape (n_voxels, 3)
        Normalised coordinates of the ROI voxels (from :func:`nsd_volume`).
    snr : float
        Multiplier of every voxel's noise-ceiling SNR (``ncsnr``); 1 gives the NSD-like default.
    seed : int
        Seed of this subject's tuning.

    Returns
    -------
    model : dict of str to ndarray
        ``clean`` (n_stimuli, n_voxels) responses in percent signal change, ``noise_sd`` (n_voxels,) single-trial
        noise, ``ncsnr``, ``noise_ceiling`` (percent, for 3-trial averages), ``signal_sd``, ``baseline``, the pRF
        parameters (``prf_x``, ``prf_y``, ``prf_sigma``, ``eccentricity``, ``polar_angle``), ``early`` (bool),
        ``channel_weights`` (n_voxels, n_channels), ``semantic_weights`` (n_semantic, n_voxels) and
        ``energy_weight`` (n_voxels,).
    """
    rng = np.random.default_rng([seed, 202])
    n_stim, n_chan, grid, _ = energy.shape
    n_vox = len(coords)
    ret = _retinotopy(coords, rng)
    early = ret["early"]
    prf = _prf_matrix(ret["prf_x"], ret["prf_y"], ret["prf_sigma"], grid).astype(np.float32)
    flat = np.ascontiguousarray(energy.reshape(n_stim, n_chan, grid * grid).transpose(1, 0, 2), dtype=np.float32)
    pooled = np.matmul(flat, prf.T).transpose(1, 2, 0)  # (n_stim, n_vox, n_chan)

    # early voxels: scale preference shifts coarser with eccentricity, random orientation bias
    n_scales = max(1, n_chan // 4)
    n_orient = n_chan // n_scales
    pref = np.clip(ret["eccentricity"], 0, 1) * (n_scales - 1) + rng.normal(0, 0.3, n_vox)
    w_scale = np.exp(-((np.arange(n_scales)[None, :] - pref[:, None]) ** 2) / (2 * 0.7**2))
    w_orient = 0.3 + rng.gamma(1.0, 1.0, size=(n_vox, n_orient))
    chan_w = (w_scale[:, :, None] * w_orient[:, None, :]).reshape(n_vox, n_chan)
    chan_w /= chan_w.sum(1, keepdims=True)
    chan_w[~early] = 0.0
    drive_early = np.einsum("nvc,vc->nv", pooled, chan_w) ** _COMPRESSION

    # higher voxels: semantic mix plus a little pooled energy
    sem_w = rng.standard_normal((semantic.shape[1], n_vox)) / np.sqrt(semantic.shape[1])
    sem_w[:, early] = 0.0
    energy_w = np.where(early, 0.0, rng.uniform(0.0, 0.4, n_vox))
    total = pooled.mean(2) ** _COMPRESSION
    total = (total - total.mean(0)) / (total.std(0) + 1e-8)
    drive_high = semantic.astype(np.float64) @ sem_w + energy_w * total

    drive = np.where(early, drive_early, drive_high)
    z = (drive - drive.mean(0)) / (drive.std(0) + 1e-8)
    signal_sd = rng.uniform(0.5, 2.0, n_vox)
    baseline = rng.uniform(0.5, 2.5, n_vox)
    clean = baseline + signal_sd * z
    ncsnr = snr * np.exp(rng.normal(np.log(0.35), 0.45, n_vox)) * np.where(early, 1.15, 0.85)
    noise_sd = signal_sd / ncsnr
    nc = noise_ceiling(ncsnr, _REPEATS)
    return {"clean": clean.astype(np.float32), "noise_sd": noise_sd, "ncsnr": ncsnr, "noise_ceiling": nc,
            "signal_sd": signal_sd, "baseline": baseline, "prf_x": ret["prf_x"], "prf_y": ret["prf_y"],
            "prf_sigma": ret["prf_sigma"], "eccentricity": ret["eccentricity"],
            "polar_angle": ret["polar_angle"], "early": early, "channel_weights": chan_w,
            "semantic_weights": sem_w, "energy_weight": energy_w}


# ----------------------------------------------------------------------------- design
def _design(n_stimuli: int, n_sessions: int, n_shared: int, subjects: Sequence[int],
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """NSD-style subjectim (8, n_img), masterordering (n_trials,), sharedix (n_shared,): all 1-based."""
    n_img = n_sessions * _TRIALS_PER_SESSION // _REPEATS
    n_unique = n_img - n_shared
    if n_stimuli < n_img:
        raise ValidationError(format_error(
            "stimuli", f"at least {n_img} images ({n_sessions} sessions x 250 images)", f"{n_stimuli} images",
            "Pass more stimuli or fewer n_sessions"))
    perm = rng.permutation(n_stimuli) + 1
    sharedix = np.sort(perm[:n_shared])
    pool = perm[n_shared:]
    subjectim = np.empty((8, n_img), dtype=np.int64)
    subjectim[:, :n_shared] = sharedix
    order = list(subjects) + [s for s in range(1, 9) if s not in subjects]
    disjoint = True
    for k, s in enumerate(order):
        block = pool[k * n_unique:(k + 1) * n_unique]
        if len(block) < n_unique:  # pool exhausted: draw this subject's images from the whole pool
            block = rng.choice(pool, size=n_unique, replace=False)
            disjoint = disjoint and s not in subjects
        subjectim[s - 1, n_shared:] = block
    masterordering = rng.permutation(np.repeat(np.arange(1, n_img + 1), _REPEATS))
    return subjectim, masterordering, sharedix, disjoint


# ----------------------------------------------------------------------------- main entry
@fill_doc
def simulate_nsd(
    out: str | os.PathLike[str],
    *,
    subjects: Sequence[int] = (1, 2),
    n_sessions: int = 2,
    n_shared: int = 100,
    n_voxels: int = 400,
    snr: float = 1.0,
    seed: int = 0,
    image_size: int = 32,
    volume_shape: tuple[int, int, int] = (24, 28, 22),
    stimuli: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    n_stimuli: int | None = None,
    formats: Sequence[str] = ("nifti", "hdf5"),
    annotations: str = "shipped",
    volume_shapes: str = "same",
    verbose: Any = None,
) -> SimulationResult:
    """Simulate NSD betas for real images and write them as an NSD tree, with ground truth and ceiling.

    Writes ``out/nsd/`` (the NSD root: what :func:`neurodecode.data.load_nsd` reads), ``out/truth/``
    (``model.json``, ``features.npz`` and ``subjXX.npz``: every parameter of the encoding model, the clean
    responses, noise levels, session offsets and drifts, the trial design) and ``out/ceiling.json`` (the ideal
    observer on the shared test images, mean over subjects, and per subject).

    Parameters
    ----------
    out : path-like
        Output folder (created).
    subjects : sequence of int
        NSD subject numbers (1-8) to simulate.
    n_sessions : int
        Sessions per subject (750 trials each; 250 images x 3 repeats per session).
    n_shared : int
        Shared test images (seen by every subject), at most ``250 * n_sessions - 1``.
    n_voxels : int
        ROI voxels of subject 1; other subjects scale with NSD's nsdgeneral counts (subject 6 has 14 % more).
    snr : float
        Multiplier of every voxel's SNR; 1 is NSD-like, lower is noisier.
    seed : int
        Seed of everything (same seed, same files).
    image_size : int
        Side of the stimuli written to ``nsd_stimuli.hdf5`` and used to compute the features.
    volume_shape : tuple of int
        Shape (X, Y, Z) of the brain volume.
    stimuli : ndarray of shape (n_stimuli, H, W, 3), uint8, or None
        Images; default the shipped Fashion-MNIST subset (:func:`~neurodecode.simulate.load_stimuli`).
    labels : ndarray of shape (n_stimuli,) or None
        Category of each image (0-based), feeding the category half of the semantic features (default: the
        shipped labels when ``stimuli`` is None, else none).
    n_stimuli : int or None
        Use only the first ``n_stimuli`` shipped images (when ``stimuli`` is None).
    formats : sequence of {"nifti", "hdf5"}
        Beta files to write.
    annotations : {"shipped", "image"}
        Captions written as COCO annotations: ``"shipped"`` (default) the shipped caption and class of each
        Fashion-MNIST image (placeholders for user images); ``"image"`` known-answer captions and depth maps
        that are deterministic functions of each image (:mod:`neurodecode.simulate._annotations`: brightness,
        size, texture, shape and colour words; depth from a ground-plane ramp and the blurred luminance),
        the depth maps in ``nsddata_stimuli/stimuli/nsd/nsd_depth_simulated.hdf5`` (read them with
        :func:`~neurodecode.simulate.load_simulated_depth`).
    volume_shapes : {"same", "nsd"}
        ``"same"`` (default): every subject's volume is ``volume_shape``; ``"nsd"``: ``volume_shape`` is
        subject 1's and the others are scaled by the ratio of NSD's func1pt8mm grids (subject 2: 82 x 106 x 84
        vs 81 x 104 x 83...), so whole-volume models must resample (:func:`~neurodecode.data.load_nsd_volumes`).
    %(verbose)s

    Returns
    -------
    result : SimulationResult
        Paths, ceiling and, in ``result.data[subject]``: ``betas`` (n_trials, n_voxels) float percent signal
        change as written (int16 / 300), ``trial_stimulus`` (0-based stimulus index per trial),
        ``trial_session`` (1-based), ``is_test`` (bool), ``nuisance`` (offset + drift per trial and voxel),
        ``clean`` (n_stimuli, n_voxels), ``noise_sd``.
    """
    from .._core.logging import use_log_level
    from .._core.validation import check_option
    from ..testing import write_nsd_tree
    from .stimuli import load_stimuli, resize_images

    subjects = check_subjects(subjects, range(1, 9))
    snr = check_snr(snr)
    check_option(annotations, "annotations", ("shipped", "image"))
    check_option(volume_shapes, "volume_shapes", ("same", "nsd"))
    n_sessions, n_shared, n_voxels, image_size = (_check_int(v, p, lo) for v, p, lo in (
        (n_sessions, "n_sessions", 1), (n_shared, "n_shared", 2), (n_voxels, "n_voxels", 4),
        (image_size, "image_size", 8)))
    n_img = n_sessions * _TRIALS_PER_SESSION // _REPEATS
    if n_shared >= n_img:
        raise ValidationError(format_error("n_shared", f"fewer than {n_img} (images per subject)", n_shared,
                                           "Lower n_shared or add sessions"))
    source = "user"
    captions = None
    if stimuli is None:
        source = "fashion-mnist (shipped, neurodecode/assets)"
        stimuli, shipped_labels, class_names, captions = load_stimuli("fashion-mnist", n=n_stimuli, size=image_size)
        labels = shipped_labels if labels is None else labels
    else:
        stimuli = check_array(stimuli, "stimuli", ndim=4).astype(np.uint8)
        stimuli = resize_images(stimuli, image_size)
    if labels is not None:
        labels = check_array(labels, "labels", shape=(len(stimuli),)).astype(np.int64)
    out = Path(out)
    rng = np.random.default_rng(seed)
    with use_log_level(verbose):
        logger.info("simulate nsd: features of %d stimuli", len(stimuli))
        energy = gabor_energy(stimuli)
        semantic = semantic_features(energy, labels, seed=seed)
        subjectim, masterordering, sharedix, disjoint = _design(len(stimuli), n_sessions, n_shared, subjects, rng)
        n_trials = n_sessions * _TRIALS_PER_SESSION
        masks: dict[int, np.ndarray] = {}
        betas: dict[int, np.ndarray] = {}
        atlases: dict[int, dict[str, np.ndarray]] = {}
        hemispheres: dict[int, np.ndarray] = {}
        ncsnr: dict[int, np.ndarray] = {}
        data: dict[Any, dict[str, Any]] = {}
        per_subject: dict[str, Any] = {}
        truth = out / "truth"
        for s in subjects:
            n_s = int(round(n_voxels * _NSDGENERAL[s - 1] / _NSDGENERAL[0]))
            mask, coords = nsd_volume(_subject_shape(volume_shape, s, volume_shapes), n_s, seed * 1000 + s)
            model = nsd_encoding_model(energy, semantic, coords, snr=snr, seed=seed * 1000 + s)
            srng = np.random.default_rng([seed, s, 303])
            offsets = srng.normal(0, 1.0, (n_sessions, n_s)) * model["signal_sd"]
            drifts = srng.normal(0, 1.0, (n_sessions, n_s)) * model["signal_sd"]
            stim = subjectim[s - 1, masterordering[:n_trials] - 1] - 1
            session = np.repeat(np.arange(n_sessions), _TRIALS_PER_SESSION)
            pos = np.tile(np.arange(_TRIALS_PER_SESSION) / (_TRIALS_PER_SESSION - 1) - 0.5, n_sessions)
            nuisance = offsets[session] + drifts[session] * pos[:, None]
            noise = srng.standard_normal((n_trials, n_s)) * model["noise_sd"]
            raw = model["clean"][stim] + nuisance + noise
            written = np.clip(np.round(raw * 300), -32768, 32767) / 300  # what int16 x 300 keeps
            masks[s], betas[s] = mask, written
            atlases[s], hemispheres[s] = nsd_roi_atlases(mask, coords, model)
            ncsnr[s] = model["ncsnr"]
            is_test = masterordering[:n_trials] <= n_shared
            ceiling = _nsd_ideal(written, nuisance, stim, is_test, model)
            per_subject[f"subj{s:02d}"] = ceiling | {"n_voxels": n_s,
                                                     "median_noise_ceiling": float(np.median(model["noise_ceiling"]))}
            save_truth_npz(truth / f"subj{s:02d}.npz", **{k: v for k, v in model.items()},
                           session_offset=offsets, session_drift=drifts, trial_stimulus=stim,
                           trial_session=session + 1, is_test=is_test, mask=mask, voxel_coords=coords)
            data[s] = {"betas": written, "trial_stimulus": stim, "trial_session": session + 1, "is_test": is_test,
                       "nuisance": nuisance, "clean": model["clean"], "noise_sd": model["noise_sd"]}
        # two captions per shipped image (its caption and its class); a user's stimuli get placeholders
        caps = None if captions is None else [[str(c), f"an image of a {str(class_names[k]).lower()}"]
                                              for c, k in zip(captions, labels)]  # type: ignore[arg-type]
        if annotations == "image":
            from ._annotations import known_answer_captions

            caps = known_answer_captions(stimuli)
        root = write_nsd_tree(out / "nsd", stimuli=stimuli, subjectim=subjectim, masterordering=masterordering,
                              sharedix=sharedix, betas=betas, masks=masks, formats=formats, captions=caps,
                              rois=atlases, hemispheres=hemispheres, ncsnr=ncsnr)
        if annotations == "image":
            from ._annotations import known_answer_depth, write_simulated_depth

            write_simulated_depth(root, known_answer_depth(stimuli))
        save_truth_npz(truth / "features.npz", gabor_energy=energy.astype(np.float16), semantic=semantic,
                       labels=np.full(len(stimuli), -1) if labels is None else labels,
                       subjectim=subjectim, masterordering=masterordering, sharedix=sharedix)
        params = {"dataset": "nsd", "subjects": subjects, "n_sessions": n_sessions, "n_shared": n_shared,
                  "n_voxels": n_voxels, "snr": snr, "seed": seed, "image_size": image_size,
                  "volume_shape": list(volume_shape), "volume_shapes": volume_shapes,
                  "subject_volume_shapes": {f"subj{x:02d}": list(masks[x].shape) for x in subjects},
                  "annotations": annotations, "n_stimuli": len(stimuli),
                  "stimuli": source,
                  "train_images_disjoint_across_subjects": disjoint,
                  "features": {"gabor_energy": "3 scales (H/16, H/8, H/4 px) x 4 orientations, 16 x 16 grid",
                               "semantic": "16-d category embedding + 16-d tanh random projection"},
                  "model": __doc__}
        write_json(truth / "model.json", params)
        ceiling = summarise_ceiling(per_subject, dataset="nsd", snr=snr, seed=seed,
                                    method="Gaussian likelihood under the true model; known offsets/drifts "
                                           "removed; test repeats averaged")
        write_json(out / "ceiling.json", ceiling)
    return SimulationResult("nsd", out, Path(root), truth, ceiling, list(subjects), data)


def _subject_shape(volume_shape: Sequence[int], subject: int, mode: str) -> tuple[int, int, int]:
    """Subject ``subject``'s volume: ``volume_shape``, or scaled by NSD's func1pt8mm grids (``mode="nsd"``)."""
    shape = tuple(int(v) for v in volume_shape)
    if mode == "same":
        return shape  # type: ignore[return-value]
    from .._core.specs import load_spec

    grids = load_spec("nsd")["volumes"]["func1pt8mm_shapes"]
    return tuple(max(4, int(round(v * a / b))) for v, a, b in zip(shape, grids[subject - 1], grids[0]))  # type: ignore[return-value]


def _nsd_ideal(betas: np.ndarray, nuisance: np.ndarray, stim: np.ndarray, is_test: np.ndarray,
               model: dict[str, np.ndarray]) -> dict[str, Any]:
    ids = np.unique(stim[is_test])
    clean_resid = betas - nuisance
    avg = np.stack([clean_resid[is_test & (stim == i)].mean(0) for i in ids])
    reps = np.array([(is_test & (stim == i)).sum() for i in ids])
    # unequal repeat counts (truncated designs) -> per-row noise; use the common count when equal
    sd = model["noise_sd"] / np.sqrt(reps.min())
    return ideal_observer(avg, model["clean"][ids], sd)


def _check_int(value: Any, param: str, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValidationError(format_error(param, f"an integer >= {lo}", value))
    return int(value)
