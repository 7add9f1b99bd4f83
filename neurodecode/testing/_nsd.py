"""Write NSD-layout trees at small scale (the same files, keys, dtypes and index bases as the download)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import ShapeMismatchError, ValidationError
from .._core.specs import load_spec
from .._core.validation import check_array, check_option, format_error

__all__ = ["write_nsd_tree", "make_nsd_fixture", "nsd_path", "nsd_fixture_atlases"]

_DEFAULT_AFFINE = np.array([[-1.8, 0, 0, 72.0], [0, 1.8, 0, -92.0], [0, 0, 1.8, -70.0], [0, 0, 0, 1]])


def nsd_path(root: str | os.PathLike[str], key: str, **fields: Any) -> Path:
    """Absolute path of NSD file ``key`` (a key of ``[paths]`` in ``data_specs/nsd.toml``)."""
    return Path(root) / load_spec("nsd")["paths"][key].format(**fields)


def write_nsd_tree(
    root: str | os.PathLike[str],
    *,
    stimuli: Any,
    subjectim: Any,
    masterordering: Any,
    sharedix: Any,
    betas: Mapping[int, Any],
    masks: Mapping[int, Any],
    affine: Any | None = None,
    beta_version: str = "betas_fithrf_GLMdenoise_RR",
    formats: Sequence[str] = ("nifti", "hdf5"),
    responses: bool = True,
    beta_dtype: str = "int16",
    captions: Sequence[Sequence[str]] | None = None,
    rois: Mapping[int, Mapping[str, Any]] | None = None,
    hemispheres: Mapping[int, Any] | None = None,
    roi_tables: Mapping[str, Sequence[str]] | None = None,
    ncsnr: Mapping[int, Any] | None = None,
) -> Path:
    """Write an NSD tree (real layout, any scale) from arrays.

    Parameters
    ----------
    root : path-like
        Folder to create the tree in (the "NSD root").
    stimuli : ndarray of uint8, shape (n_stimuli, H, W, 3)
        Images, written to ``nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5`` (dataset ``imgBrick``).
    subjectim : ndarray of int, shape (8, n_images_per_subject)
        1-based ids into ``stimuli`` of each subject's images; the first ``len(sharedix)``
        columns of every row are the shared images (same ids for every subject), as in NSD.
    masterordering : ndarray of int, shape (n_trials_total,)
        1-based indices into a subject's ``subjectim`` row, one per trial, 750 trials per
        session. A trial is shared-test when its value is <= ``len(sharedix)``.
    sharedix : ndarray of int, shape (n_shared,)
        1-based stimulus ids of the shared images.
    betas : dict of int to ndarray of shape (n_sessions * 750, n_voxels_in_mask)
        Per subject (1..8), responses in percent signal change; columns follow
        ``np.flatnonzero(mask == 1)`` (C order of the volume). Stored as
        ``round(psc * 300)`` (int16) in (X, Y, Z, 750) volumes, one per session
        (numbered from 01); voxels outside the mask are 0.
    masks : dict of int to ndarray of int, shape (X, Y, Z)
        Per subject, the nsdgeneral volume with values -1 (outside brain), 0 or 1 (ROI).
    affine : ndarray of shape (4, 4) or None
        Affine of every volume (an NSD-like 1.8 mm affine if None).
    beta_version : str
        Folder name of the GLM version (``betas_assumehrf``, ``betas_fithrf`` or
        ``betas_fithrf_GLMdenoise_RR``).
    formats : sequence of {"nifti", "hdf5"}
        Beta files to write: ``betas_sessionNN.nii.gz`` (nibabel) and/or
        ``betas_sessionNN.hdf5`` (dataset ``betas`` of shape (750, Z, Y, X), int16,
        chunks (750, 1, 1, 1): one voxel x all trials, NSD's chunking).
    responses : bool
        Also write ``nsddata/ppdata/subjXX/behav/responses.tsv`` per subject.
    beta_dtype : {"int16", "float32"}
        Storage dtype; ``"float32"`` keeps ``psc * 300`` unrounded (NaN/inf survive), for
        testing bad inputs.
    captions : sequence of sequence of str, or None
        Captions per stimulus, written as COCO annotation files
        (``nsddata_stimuli/stimuli/nsd/annotations/captions_train2017.json``, keyed by the
        ``cocoId`` of ``nsd_stim_info_merged.csv``, i.e. ``100000 + i``; ``captions_val2017.json``
        empty), as the recipes' ``[data] captions`` read them. None: one placeholder caption per
        image (``"image 12"``), so every tree can train text targets.
    rois : dict of int to dict of str to ndarray of int, shape (X, Y, Z), or None
        Per subject, ROI label volumes by atlas name (``{"streams": vol}``): -1 outside the brain,
        0 unlabelled, >= 1 a label. Written as ``func1pt8mm/roi/<atlas>.nii.gz`` (int16) with the label
        table ``nsddata/freesurfer/subjXX/label/<atlas>.mgz.ctab``.
    hemispheres : dict of int to ndarray of int, shape (X, Y, Z), or None
        Per subject, 1 (left) / 2 (right) / 0 per voxel: also writes ``lh.<atlas>.nii.gz`` and
        ``rh.<atlas>.nii.gz`` (the atlas's labels in that hemisphere, 0 in the other, -1 outside the brain).
    roi_tables : dict of str to sequence of str, or None
        Label names per atlas, index = value (default: ``[rois.labels]`` of ``data_specs/nsd.toml``, NSD's
        own tables).
    ncsnr : dict of int to ndarray, or None
        Per subject, the noise-ceiling SNR per mask voxel (shape (n_voxels_in_mask,), 0 elsewhere) or a
        whole (X, Y, Z) volume, written as ``<beta_version>/ncsnr.nii.gz`` (float32).

    Returns
    -------
    root : pathlib.Path
        The NSD root.
    """
    import h5py
    import scipy.io

    from .._core.files import atomic_path, atomic_write
    from ..io.nifti import save_nifti

    spec = load_spec("nsd")
    tpsess = int(spec["dataset"]["trials_per_session"])
    scale = float(spec["scaling"]["betas"])
    root = Path(root)
    for fmt in formats:
        check_option(fmt, "formats", ("nifti", "hdf5"))
    check_option(beta_dtype, "beta_dtype", ("int16", "float32"))
    stimuli = check_array(stimuli, "stimuli", ndim=4)
    if stimuli.shape[-1] != 3 or stimuli.dtype != np.uint8:
        raise ShapeMismatchError(format_error("stimuli", "uint8 images of shape (n, H, W, 3)", stimuli))
    subjectim = check_array(subjectim, "subjectim", ndim=2).astype(np.int64)
    masterordering = check_array(masterordering, "masterordering", ndim=(1, 2)).ravel().astype(np.int64)
    sharedix = check_array(sharedix, "sharedix", ndim=(1, 2)).ravel().astype(np.int64)
    if subjectim.shape[0] != 8:
        raise ShapeMismatchError(format_error("subjectim", "8 rows (one per NSD subject)", subjectim))
    if subjectim.min() < 1 or subjectim.max() > len(stimuli):
        raise ValidationError(format_error("subjectim", f"1-based ids in [1, {len(stimuli)}]",
                                           f"values in [{subjectim.min()}, {subjectim.max()}]"))
    if masterordering.min() < 1 or masterordering.max() > subjectim.shape[1]:
        raise ValidationError(format_error("masterordering", f"1-based indices in [1, {subjectim.shape[1]}]",
                                           f"values in [{masterordering.min()}, {masterordering.max()}]"))
    if not np.array_equal(subjectim[:, : len(sharedix)], np.broadcast_to(sharedix, (8, len(sharedix)))):
        raise ValidationError(format_error("subjectim", "the shared ids (sharedix) in the first columns of every row",
                                           "other values", "Put sharedix in subjectim[:, :len(sharedix)]"))
    aff = _DEFAULT_AFFINE if affine is None else np.asarray(affine, dtype=np.float64)

    # --- stimuli
    stim_path = nsd_path(root, "stimuli")
    with atomic_path(stim_path, suffix=".hdf5") as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset(spec["keys"]["stimuli"], data=stimuli, chunks=(1,) + stimuli.shape[1:])

    # --- experimental design (MATLAB v5, 1-based, shapes as in the real file)
    design = nsd_path(root, "expdesign")
    design.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(design, suffix=".mat") as tmp:
        scipy.io.savemat(str(tmp), {"masterordering": masterordering.reshape(1, -1).astype(np.float64),
                                    "subjectim": subjectim.astype(np.float64),
                                    "sharedix": sharedix.reshape(1, -1).astype(np.float64)})
    _write_stim_info(nsd_path(root, "stim_info"), len(stimuli), subjectim, sharedix, masterordering, tpsess)
    _write_coco_captions(root, [[f"image {i}"] for i in range(len(stimuli))] if captions is None else captions)

    # --- per subject
    for subject, subj_betas in betas.items():
        subject = int(subject)
        if subject not in masks:
            raise ValidationError(format_error("masks", f"a mask for subject {subject}", sorted(masks)))
        mask = check_array(masks[subject], f"masks[{subject}]", ndim=3).astype(np.int16)
        flat = np.flatnonzero(mask.ravel() == 1)
        b = check_array(subj_betas, f"betas[{subject}]", ndim=2, finite=False)
        if b.shape[1] != len(flat):
            raise ShapeMismatchError(format_error(f"betas[{subject}]", f"{len(flat)} columns (voxels == 1 in mask)",
                                                  b))
        if b.shape[0] % tpsess or b.shape[0] > len(masterordering):
            raise ShapeMismatchError(format_error(f"betas[{subject}]", f"a multiple of {tpsess} rows, at most "
                                                  f"{len(masterordering)} (masterordering)", b))
        save_nifti(nsd_path(root, "nsdgeneral", subject=subject), mask, aff)
        n_sessions = b.shape[0] // tpsess
        for s in range(n_sessions):
            rows = b[s * tpsess:(s + 1) * tpsess] * scale
            if beta_dtype == "int16":
                stored = np.clip(np.round(np.nan_to_num(rows)), -32768, 32767).astype(np.int16)
            else:
                stored = rows.astype(np.float32)
            flat_vol = np.zeros((mask.size, tpsess), dtype=stored.dtype)
            flat_vol[flat] = stored.T
            vol = flat_vol.reshape(mask.shape + (tpsess,))
            fields = {"subject": subject, "session": s + 1, "beta_dir": beta_version}
            if "nifti" in formats:
                save_nifti(nsd_path(root, "betas_nifti", **fields), vol, aff)
            if "hdf5" in formats:
                with atomic_path(nsd_path(root, "betas_hdf5", **fields), suffix=".hdf5") as tmp, \
                        h5py.File(tmp, "w") as f:
                    data = np.ascontiguousarray(vol.transpose(3, 2, 1, 0))  # (750, Z, Y, X)
                    f.create_dataset(spec["keys"]["betas_hdf5"], data=data, chunks=(tpsess, 1, 1, 1))
        if rois and subject in rois:
            _write_rois(root, subject, rois[subject], None if hemispheres is None else hemispheres.get(subject),
                        roi_tables, mask, aff)
        if ncsnr and subject in ncsnr:
            snr = np.asarray(ncsnr[subject], dtype=np.float32)
            if snr.shape == (len(flat),):
                full = np.zeros(mask.size, dtype=np.float32)
                full[flat] = snr
                snr = full.reshape(mask.shape)
            if snr.shape != mask.shape:
                raise ShapeMismatchError(format_error(f"ncsnr[{subject}]", f"shape ({len(flat)},) or {mask.shape}",
                                                      snr))
            save_nifti(nsd_path(root, "ncsnr", subject=subject, beta_dir=beta_version), snr, aff)
        if responses:
            resp = nsd_path(root, "responses", subject=subject)
            n = n_sessions * tpsess
            mo = masterordering[:n]
            ids73 = subjectim[subject - 1, mo - 1]
            with atomic_write(resp) as fh:
                fh.write("SUBJECT\tSESSION\tRUN\tTRIAL\t73KID\t10KID\n")
                for t in range(n):
                    sess, k = divmod(t, tpsess)
                    run, trial = _run_trial(k)
                    fh.write(f"{subject}\t{sess + 1}\t{run}\t{trial}\t{ids73[t]}\t{mo[t]}\n")
    return root


def _write_rois(root: Path, subject: int, atlases: Mapping[str, Any], hemi: Any, tables: Any, mask: np.ndarray,
                affine: np.ndarray) -> None:
    from .._core.files import atomic_write
    from ..io.nifti import save_nifti

    names = dict(load_spec("nsd")["rois"]["labels"])
    names.update(tables or {})
    for atlas, vol in atlases.items():
        vol = check_array(vol, f"rois[{subject}][{atlas!r}]", ndim=3).astype(np.int16)
        if vol.shape != mask.shape:
            raise ShapeMismatchError(format_error(f"rois[{subject}][{atlas!r}]", f"shape {mask.shape} (the mask)", vol))
        if atlas not in names:
            raise ValidationError(format_error("roi_tables", f"label names for atlas {atlas!r}", sorted(names)))
        table = list(names[atlas])
        if vol.max() >= len(table) or vol.min() < -1:
            raise ValidationError(format_error(f"rois[{subject}][{atlas!r}]", f"values in [-1, {len(table) - 1}]",
                                               f"[{vol.min()}, {vol.max()}]"))
        save_nifti(nsd_path(root, "roi", subject=subject, atlas=atlas), vol, affine)
        with atomic_write(nsd_path(root, "roi_ctab", subject=subject, atlas=atlas)) as fh:
            fh.write("".join(f"{v} {n}\n" for v, n in enumerate(table)))
        if hemi is not None:
            side = check_array(hemi, f"hemispheres[{subject}]", shape=mask.shape)
            for code, name in ((1, "lh"), (2, "rh")):
                part = np.where(side == code, vol, np.where(vol < 0, -1, 0)).astype(np.int16)
                save_nifti(nsd_path(root, "roi_hemi", subject=subject, atlas=atlas, hemi=name), part, affine)


def nsd_fixture_atlases(brain: Any, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Label volumes of every NSD atlas of the spec over a brain mask, by position (for fixtures).

    ``streams``: the posterior third of the brain is ``early``; the rest is ventral (lower half) / lateral /
    parietal (upper half, outer / inner x), the first anterior band of each as its ``mid*`` stream.
    ``prf-visualrois``: the early band cut in three posterior-to-anterior bands (V1, V2, V3), ventral half
    ``v`` and dorsal half ``d``, and ``hV4`` at the ventral start of the higher band. ``prf-eccrois``: five
    bands of the early region. ``floc-*``: small random patches of the higher (non-early) brain.

    Parameters
    ----------
    brain : ndarray of shape (X, Y, Z)
        Anything >= 0 is brain (an nsdgeneral-style mask: -1 outside).
    seed : int
        Seed of the floc patches.

    Returns
    -------
    atlases : dict of str to ndarray of int16, shape (X, Y, Z)
    hemispheres : ndarray of int8, shape (X, Y, Z)
        1 (left) for the lower half of the x axis, 2 (right) for the upper half, 0 outside the brain.
    """
    rng = np.random.default_rng([seed, 909])
    inside = np.asarray(brain) >= 0
    X, Y, Z = inside.shape
    x, y, z = np.meshgrid(*(np.arange(n) / max(n - 1, 1) for n in (X, Y, Z)), indexing="ij")
    early = inside & (y < 1 / 3)
    higher = inside & ~early
    mid = higher & (y < 0.55)
    lower = z < 0.5
    outer = np.abs(x - 0.5) > 0.25
    out: dict[str, np.ndarray] = {}
    streams = np.where(inside, 0, -1).astype(np.int16)
    streams[early] = 1
    for mid_code, far_code, where in ((2, 5, lower), (3, 6, ~lower & outer), (4, 7, ~lower & ~outer)):
        streams[higher & where & mid] = mid_code
        streams[higher & where & ~mid] = far_code
    out["streams"] = streams
    prf = np.where(inside, 0, -1).astype(np.int16)
    band = np.minimum((y * 9).astype(int), 2)  # 0, 1, 2 within the early third
    for k in range(3):
        prf[early & (band == k) & lower] = 1 + 2 * k   # V1v, V2v, V3v
        prf[early & (band == k) & ~lower] = 2 + 2 * k  # V1d, V2d, V3d
    prf[higher & lower & (y < 0.45)] = 7              # hV4
    out["prf-visualrois"] = prf
    ecc = np.where(inside, 0, -1).astype(np.int16)
    ecc[early] = 1 + np.minimum((y[early] * 15).astype(int), 4)
    out["prf-eccrois"] = ecc
    for atlas, n_labels in (("floc-faces", 5), ("floc-bodies", 4), ("floc-places", 3), ("floc-words", 5)):
        vol = np.where(inside, 0, -1).astype(np.int16)
        cand = np.flatnonzero(higher.ravel())
        if cand.size:
            pick = rng.choice(cand, size=min(cand.size, 3 * n_labels), replace=False)
            vol.ravel()[pick] = np.arange(len(pick)) % n_labels + 1
        out[atlas] = vol
    hemis = np.where(inside, np.where(x < 0.5, 1, 2), 0).astype(np.int8)
    return out, hemis


def _run_trial(k: int) -> tuple[int, int]:
    """NSD runs: 12 per session, odd runs 63 trials, even runs 62 (1-based run and trial)."""
    run = 1
    while True:
        size = 63 if run % 2 else 62
        if k < size:
            return run, k + 1
        k -= size
        run += 1


def _write_coco_captions(root: Path, captions: Sequence[Sequence[str]]) -> None:
    from .._core.files import write_json

    folder = Path(root) / "nsddata_stimuli" / "stimuli" / "nsd" / "annotations"
    anns = [{"image_id": 100000 + i, "id": 100 * i + k, "caption": str(c)}
            for i, caps in enumerate(captions) for k, c in enumerate(caps)]
    write_json(folder / "captions_train2017.json", {"annotations": anns})
    write_json(folder / "captions_val2017.json", {"annotations": []})


def _write_stim_info(path: Path, n_stimuli: int, subjectim: np.ndarray, sharedix: np.ndarray,
                     masterordering: np.ndarray, tpsess: int) -> None:
    from .._core.files import atomic_write

    shared = np.zeros(n_stimuli, bool)
    shared[sharedix - 1] = True
    member = np.zeros((8, n_stimuli), bool)
    for s in range(8):
        member[s, subjectim[s] - 1] = True
    with atomic_write(path) as fh:
        fh.write(",cocoId,cocoSplit,nsdId,shared1000," + ",".join(f"subject{s + 1}" for s in range(8)) + "\n")
        for i in range(n_stimuli):
            cols = [str(i), str(100000 + i), "train2017", str(i), str(bool(shared[i]))]
            cols += [str(int(member[s, i])) for s in range(8)]
            fh.write(",".join(cols) + "\n")


def make_nsd_fixture(
    root: str | os.PathLike[str],
    *,
    subjects: Sequence[int] = (1, 2),
    n_sessions: int = 2,
    volume_shape: tuple[int, int, int] = (7, 8, 9),
    n_shared: int | None = None,
    image_size: int = 16,
    seed: int = 0,
    formats: Sequence[str] = ("nifti", "hdf5"),
    beta_version: str = "betas_fithrf_GLMdenoise_RR",
    rois: bool = True,
) -> Path:
    """A random but structurally faithful NSD tree, built through :func:`write_nsd_tree`.

    Each subject sees ``n_sessions * 250`` images three times each (750 trials per
    session, in a random order), the first ``n_shared`` of them shared by all subjects
    (default: 20 % of a subject's images). Masks differ per subject (different voxel
    counts). Betas are Gaussian percent-signal-change values. With ``rois`` (default) every
    atlas of :func:`nsd_fixture_atlases` is written (with ``lh.``/``rh.`` volumes and ctabs), and a
    uniform(0.05, 1.5) ``ncsnr.nii.gz`` over the mask voxels.

    Returns
    -------
    root : pathlib.Path
        The NSD root.
    """
    rng = np.random.default_rng(seed)
    tpsess = int(load_spec("nsd")["dataset"]["trials_per_session"])
    n_trials = n_sessions * tpsess
    n_img = n_trials // 3
    n_shared = max(1, n_img // 5) if n_shared is None else int(n_shared)
    if not 0 < n_shared < n_img:
        raise ValidationError(format_error("n_shared", f"between 1 and {n_img - 1}", n_shared))
    n_unique = n_img - n_shared
    n_stimuli = n_shared + 8 * n_unique
    perm = rng.permutation(n_stimuli) + 1  # 1-based ids
    sharedix = np.sort(perm[:n_shared])
    subjectim = np.empty((8, n_img), dtype=np.int64)
    for s in range(8):
        subjectim[s, :n_shared] = sharedix
        subjectim[s, n_shared:] = perm[n_shared + s * n_unique: n_shared + (s + 1) * n_unique]
    masterordering = np.concatenate([rng.permutation(np.repeat(np.arange(1, n_img + 1), 3))])
    stimuli = rng.integers(0, 256, size=(n_stimuli, image_size, image_size, 3), dtype=np.uint8)
    masks: dict[int, np.ndarray] = {}
    betas: dict[int, np.ndarray] = {}
    for i, subject in enumerate(subjects):
        mask = np.full(volume_shape, -1, dtype=np.int16)
        inner = tuple(slice(1, n - 1) for n in volume_shape)
        mask[inner] = (rng.random(mask[inner].shape) < 0.45 + 0.05 * i).astype(np.int16)
        masks[int(subject)] = mask
        n_vox = int((mask == 1).sum())
        betas[int(subject)] = rng.normal(0.5, 2.0, size=(n_trials, n_vox))
    atlases: dict[int, dict[str, np.ndarray]] = {}
    hemis: dict[int, np.ndarray] = {}
    snrs: dict[int, np.ndarray] = {}
    if rois:
        for subject, mask in masks.items():
            atlases[subject], hemis[subject] = nsd_fixture_atlases(mask, seed=seed * 100 + subject)
            snrs[subject] = np.random.default_rng([seed, subject, 808]).uniform(0.05, 1.5, int((mask == 1).sum()))
    return write_nsd_tree(root, stimuli=stimuli, subjectim=subjectim, masterordering=masterordering,
                          sharedix=sharedix, betas=betas, masks=masks, formats=formats,
                          beta_version=beta_version, rois=atlases or None, hemispheres=hemis or None,
                          ncsnr=snrs or None)
