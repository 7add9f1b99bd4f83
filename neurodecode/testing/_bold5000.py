"""Fixture writer: a small BOLD5000 tree in the published layout (lists, ROI betas, BIDS events, BOLD, atlas)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._core.specs import load_spec

__all__ = ["write_bold5000_stimuli", "write_bold5000_subject", "write_schaefer_atlas", "make_bold5000_fixture",
           "bold5000_path"]

_DS = "bold5000"


def bold5000_path(root: str | os.PathLike[str], key: str, **fields: Any) -> Path:
    """Absolute path of file ``key`` of ``data_specs/bold5000.toml`` under ``root``."""
    return Path(root) / str(load_spec(_DS)["paths"][key]).format(**fields)


def write_bold5000_stimuli(root: str | os.PathLike[str], images: Mapping[str, tuple[str, np.ndarray]],
                           repeated: Sequence[str]) -> None:
    """Write the presented images and the repeated-image list.

    Parameters
    ----------
    images : mapping of str to (str, ndarray of uint8, shape (h, w, 3))
        Image file name -> (source folder ``COCO`` / ``ImageNet`` / ``Scene``, pixels).
    repeated : sequence of str
        Names written to ``repeated_stimuli_113_list.txt``.
    """
    from PIL import Image

    base = bold5000_path(root, "images")
    for name, (source, pixels) in images.items():
        (base / source).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(base / source / name, quality=95)
    rep = bold5000_path(root, "repeated_list")
    rep.parent.mkdir(parents=True, exist_ok=True)
    rep.write_text("\n".join(repeated) + "\n", encoding="utf-8")


def write_bold5000_subject(
    root: str | os.PathLike[str],
    subject: int,
    presentation: Sequence[Sequence[Sequence[str]]],
    *,
    roi_betas: Mapping[str, np.ndarray] | None = None,
    bold: Mapping[tuple[int, int], np.ndarray] | None = None,
    onsets: Mapping[tuple[int, int], Sequence[float]] | None = None,
    affine: np.ndarray | None = None,
) -> None:
    """Write one subject: presentation lists, ROI betas, and BOLD runs with their BIDS events.

    Parameters
    ----------
    presentation : sequence (sessions) of sequence (runs) of sequence of str
        Image names per run as the lists write them (``rep_<name>`` for repeated presentations).
    roi_betas : mapping of str to ndarray of shape (n_presentations, n_voxels) or None
        ROI name -> betas, rows in presentation order.
    bold : mapping of (session, run) to ndarray of shape (x, y, z, n_trs) or None
        Preprocessed BOLD runs (written as the fMRIPrep derivative).
    onsets : mapping of (session, run) to sequence of float or None
        Image onsets in seconds (events.tsv); default 10 s trials from 6 s.
    affine : ndarray of shape (4, 4) or None
        Affine of the BOLD images (default 2 mm isotropic).
    """
    import nibabel as nib

    spec = load_spec(_DS)
    prefix = str(spec["dataset"]["repeat_prefix"])
    for si, runs in enumerate(presentation, start=1):
        for ri, names in enumerate(runs, start=1):
            p = bold5000_path(root, "presentation_run", subject=subject, session=si, run=ri)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("\n".join(names) + "\n", encoding="utf-8")
            if bold is not None and (si, ri) in bold:
                vol = np.asarray(bold[(si, ri)], dtype=np.float32)
                img = nib.Nifti1Image(vol, np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine)
                img.header.set_zooms((*img.header.get_zooms()[:3], float(spec["dataset"]["tr"])))
                b = bold5000_path(root, "bold", subject=subject, session=si, run=ri)
                b.parent.mkdir(parents=True, exist_ok=True)
                nib.save(img, str(b))
                times = list(onsets[(si, ri)]) if onsets and (si, ri) in onsets else \
                    [6.0 + 10.0 * t for t in range(len(names))]
                e = bold5000_path(root, "events", subject=subject, session=si, run=ri)
                e.parent.mkdir(parents=True, exist_ok=True)
                lines = ["onset\tduration\tImgName"] + [
                    f"{t:.3f}\t{spec['dataset']['stimulus_duration']}\t{n.removeprefix(prefix)}"
                    for t, n in zip(times, names)]
                e.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for roi, arr in (roi_betas or {}).items():
        p = bold5000_path(root, "roi_betas", subject=subject, roi=roi)
        p.parent.mkdir(parents=True, exist_ok=True)
        np.save(p, np.asarray(arr, dtype=np.float32))
    desc = bold5000_path(root, "dataset_description")
    if not desc.exists():
        desc.write_text('{"Name": "BOLD5000 (neurodecode fixture)", "BIDSVersion": "1.0.2"}\n', encoding="utf-8")


def write_schaefer_atlas(folder: str | os.PathLike[str], labels: np.ndarray, names: Sequence[str], *,
                         affine: np.ndarray | None = None) -> tuple[Path, Path]:
    """Write a labels atlas and its lookup table in the Schaefer 2018 release format.

    Parameters
    ----------
    labels : ndarray of int, shape (x, y, z)
        0 background, 1..n parcels.
    names : sequence of str
        Parcel names (``7Networks_LH_Vis_1``...), one per label.

    Returns
    -------
    atlas, lookup : pathlib.Path
        ``Schaefer2018_<n>Parcels_7Networks_order_FSLMNI152_2mm.nii.gz`` and
        ``Schaefer2018_<n>Parcels_7Networks_order.txt`` (``index name r g b 0`` per line).
    """
    import nibabel as nib

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n = len(names)
    atlas = folder / f"Schaefer2018_{n}Parcels_7Networks_order_FSLMNI152_2mm.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(labels, dtype=np.int16),
                             np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine), str(atlas))
    lut = folder / f"Schaefer2018_{n}Parcels_7Networks_order.txt"
    lut.write_text("".join(f"{i}\t{name}\t{(37 * i) % 256}\t{(91 * i) % 256}\t{(13 * i) % 256}\t0\n"
                           for i, name in enumerate(names, start=1)), encoding="utf-8")
    return atlas, lut


def _parcel_names(n_per_network: int) -> list[str]:
    nets = list(load_spec(_DS)["parcels"]["networks"])
    return [f"7Networks_{'LH' if k % 2 == 0 else 'RH'}_{net}_{k + 1}" for net in nets for k in range(n_per_network)]


def make_bold5000_fixture(
    root: str | os.PathLike[str],
    *,
    subjects: Sequence[int] = (1,),
    n_sessions: int = 2,
    runs_per_session: int = 2,
    trials_per_run: int = 4,
    n_repeated: int = 2,
    grid: tuple[int, int, int] = (7, 8, 9),
    parcels_per_network: int = 1,
    roi_voxels: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """A random but faithful BOLD5000 tree: lists, ROI betas, BOLD runs, events, images, atlas.

    The repeated images are shown once per session (``rep_`` from the second presentation on).

    Returns
    -------
    info : dict
        ``atlas``, ``atlas_labels`` (paths), ``names`` (parcel names), ``images`` (all image names),
        ``repeated``, ``n_presentations``.
    """
    rng = np.random.default_rng(seed)
    spec = load_spec(_DS)
    tr = float(spec["dataset"]["tr"])
    names = _parcel_names(parcels_per_network)
    labels = np.zeros(grid, dtype=np.int16)
    flat = labels.reshape(-1)
    flat[:] = rng.integers(0, len(names) + 1, size=flat.size)
    flat[: len(names)] = np.arange(1, len(names) + 1)  # every parcel has a voxel
    atlas, lut = write_schaefer_atlas(Path(root) / "atlas", labels, names)
    per_subject = n_sessions * (runs_per_session * trials_per_run - n_repeated)
    n_unique = per_subject * len(subjects) + n_repeated
    sources = spec["dataset"]["image_sources"]
    image_names = [f"img{i:03d}.jpg" if i % 3 else f"COCO_train2014_{i:012d}.jpg" for i in range(n_unique)]
    images = {n: (sources[i % len(sources)], rng.integers(0, 256, size=(9 + i % 2, 8, 3), dtype=np.uint8))
              for i, n in enumerate(image_names)}
    repeated = image_names[:n_repeated]
    write_bold5000_stimuli(root, images, repeated)
    pool = iter(image_names[n_repeated:])
    n_pres = 0
    for s in subjects:
        presentation = []
        for si in range(n_sessions):
            runs = []
            for ri in range(runs_per_session):
                run = [next(pool) for _ in range(trials_per_run - n_repeated)]
                run += [("rep_" if si > 0 else "") + r for r in repeated] if ri == 0 else \
                    [next(pool) for _ in range(n_repeated)]
                runs.append(run)
            presentation.append(runs)
        n_pres = sum(len(r) for sess in presentation for r in sess)
        betas = {roi: rng.standard_normal((n_pres, roi_voxels + k)).astype(np.float32)
                 for k, roi in enumerate(spec["rois"]["names"])}
        n_t = int(6 + 10 * trials_per_run / tr) + 4
        bold = {(si + 1, ri + 1): (100 + rng.standard_normal((*grid, n_t))).astype(np.float32)
                for si in range(n_sessions) for ri in range(runs_per_session)}
        write_bold5000_subject(root, s, presentation, roi_betas=betas, bold=bold)
    return {"atlas": atlas, "atlas_labels": lut, "names": names, "images": image_names, "repeated": repeated,
            "n_presentations": n_pres}
