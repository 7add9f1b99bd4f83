"""BOLD5000 (Chang et al. 2019): ROI betas and whole-brain parcel time series in the published layout.

Two readings of one subject, both returning :class:`~neurodecode.data.Trials` with one row per image
presentation (or per image where repeats are averaged):

- ``data="roi"``: the release-2.0 GLMsingle betas of the ten visual ROIs (one ``.npy`` per ROI, rows in
  presentation order), ``X`` of shape (n_trials, n_voxels);
- ``data="parcels"``: whole-brain parcel time series, the input of fMRI foundation encoders (WAVE): each
  run's preprocessed BOLD (fMRIPrep, MNI space) is reduced to parcels with a labels atlas (a Schaefer 2018
  atlas you provide, read by nilearn's ``NiftiLabelsMasker``), then ``n_trs`` TRs from each image onset
  (``events.tsv``) form one sample: ``X`` of shape (n_trials, n_parcels, n_trs), ``ch_names`` the parcel
  names, ``sfreq`` 1 / TR. The Yeo-7 network of every parcel (from its Schaefer name) is in
  ``provenance["parcel_networks"]``.

The presentation order is the stimulus presentation lists (one folder per session, one text file per run,
read in sorted order as the release and WAVE's loader do); ``rep_`` names are repeated presentations. The
test split is the 113 repeated images of ``repeated_stimuli_113_list.txt`` (WAVE / Mind-Vis), averaged
over their presentations unless ``average_test_repeats=False``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import MetadataMismatchError, MissingFileError, ShapeMismatchError, ValidationError
from .._core.logging import logger
from .._core.specs import load_spec
from .._core.validation import check_option, format_error
from ._layout import parse_subject_number, relative_path, spec_path
from ._trials import Trials

__all__ = ["load_bold5000", "load_bold5000_stimuli", "bold5000_presentation", "schaefer_networks",
           "read_atlas_labels", "parcel_time_series", "check_bold5000", "bold5000_subject"]

_DS = "bold5000"


def bold5000_subject(subject: Any) -> int:
    """``1``, ``"CSI1"`` or ``"bold5000/CSI1"`` as the subject number 1..4."""
    return parse_subject_number(subject, _DS, "CSI", int(load_spec(_DS)["dataset"]["n_subjects"]))


# --------------------------------------------------------------------------------------- presentation order
def bold5000_presentation(root: str | os.PathLike[str], subject: Any) -> dict[str, np.ndarray]:
    """The images of one subject in presentation order, from the stimulus presentation lists.

    Returns
    -------
    table : dict of str to ndarray, each of shape (n_presentations,)
        ``image`` (name with the ``rep_`` prefix removed), ``session`` and ``run`` (1-based, from the
        folder and file names; their order when no number is in the name), ``trial`` (0-based within the
        run), ``repeat_marked`` (the list named it ``rep_``).
    """
    s = bold5000_subject(subject)
    folder = spec_path(_DS, root, "presentation_lists", subject=s)
    if not folder.is_dir():
        raise MissingFileError(format_error(
            "root", f"a BOLD5000 tree with {relative_path(_DS, 'presentation_lists', subject=s)}/", str(folder),
            "Download BOLD5000_Stimuli (it holds Stimuli_Presentation_Lists) into the dataset root"))
    prefix = str(load_spec(_DS)["dataset"]["repeat_prefix"])
    images: list[str] = []
    sessions: list[int] = []
    runs: list[int] = []
    trials: list[int] = []
    marked: list[bool] = []
    session_dirs = sorted(p for p in folder.iterdir() if p.is_dir())
    for si, sdir in enumerate(session_dirs, start=1):
        ms = re.search(r"sess(?:ion)?[-_]?0*(\d+)", sdir.name, re.IGNORECASE)
        session = int(ms.group(1)) if ms else si
        for ri, f in enumerate(sorted(p for p in sdir.iterdir() if p.suffix == ".txt"), start=1):
            mr = re.search(r"run[-_]?0*(\d+)", f.name, re.IGNORECASE)
            run = int(mr.group(1)) if mr else ri
            names = [ln.strip() for ln in f.read_text(encoding="utf-8").splitlines() if ln.strip()]
            for t, name in enumerate(names):
                rep = name.startswith(prefix)
                images.append(name[len(prefix):] if rep else name)
                sessions.append(session)
                runs.append(run)
                trials.append(t)
                marked.append(rep)
    if not images:
        raise MissingFileError(format_error("presentation lists", "session folders with one .txt per run",
                                            f"no image name under {folder}"))
    return {"image": np.asarray(images), "session": np.asarray(sessions, dtype=np.int64),
            "run": np.asarray(runs, dtype=np.int64), "trial": np.asarray(trials, dtype=np.int64),
            "repeat_marked": np.asarray(marked)}


def _repeated_images(root: str | os.PathLike[str]) -> list[str]:
    path = spec_path(_DS, root, "repeated_list")
    if not path.is_file():
        raise MissingFileError(format_error("root", f"the repeated-image list {relative_path(_DS, 'repeated_list')}",
                                            f"nothing at {path}", "It ships with BOLD5000_Stimuli"))
    return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


# ------------------------------------------------------------------------------------------------- atlases
def read_atlas_labels(labels: str | os.PathLike[str] | Sequence[str]) -> list[str]:
    """Parcel names of a labels atlas, in label order 1..n.

    Parameters
    ----------
    labels : path-like or sequence of str
        The Schaefer 2018 lookup table (``Schaefer2018_<N>Parcels_7Networks_order.txt``: ``index name r g b
        a`` per line, tab separated), a file with one name per line, or the names themselves (bytes as
        nilearn's ``fetch_atlas_schaefer_2018`` returns them are decoded). A leading ``Background`` entry
        is dropped.
    """
    if isinstance(labels, (str, os.PathLike)):
        path = Path(labels)
        if not path.is_file():
            raise MissingFileError(format_error("atlas_labels", "the atlas lookup table (.txt)", str(path)))
        names = []
        for line in path.read_text(encoding="utf-8").splitlines():
            parts = line.strip().split()
            if not parts:
                continue
            names.append(parts[1] if len(parts) > 1 and parts[0].isdigit() else parts[0])
    else:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in labels]
    if names and names[0].lower() in ("background", "0"):
        names = names[1:]
    return names


def schaefer_networks(names: Sequence[str]) -> np.ndarray:
    """Yeo-7 network of each Schaefer 2018 parcel, from its name (``7Networks_LH_Vis_1`` -> ``Vis``).

    Parameters
    ----------
    names : sequence of str
        Parcel names of a 7-network Schaefer atlas.

    Returns
    -------
    networks : ndarray of str, shape (n_parcels,)
        One of ``Vis, SomMot, DorsAttn, SalVentAttn, Limbic, Cont, Default``.
    """
    known = list(load_spec(_DS)["parcels"]["networks"])
    out = []
    bad = []
    for name in names:
        parts = str(name).split("_")
        hit = next((p for p in parts if p in known), None)
        if hit is None:
            bad.append(str(name))
        out.append(hit or "")
    if bad:
        raise ValidationError(format_error(
            "atlas_labels", "Schaefer 2018 7-network names such as 7Networks_LH_Vis_1 (network one of "
            + ", ".join(known) + ")", ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else ""),
            "Use the 7Networks version of the Schaefer atlas, or pass networks= explicitly"))
    return np.asarray(out)


def parcel_time_series(bold: Any, atlas: Any, *, standardize: str | bool | None = "zscore_sample") -> np.ndarray:
    """Mean BOLD signal of every parcel at every TR (nilearn ``NiftiLabelsMasker``).

    Parameters
    ----------
    bold : path-like or nibabel image
        4-D BOLD run in the atlas's space.
    atlas : path-like or nibabel image
        3-D labels image (0 = background, 1..n = parcels).
    standardize : str or bool
        nilearn's ``standardize`` (per parcel over the run).

    Returns
    -------
    series : ndarray of shape (n_trs, n_parcels)
        Columns for labels 1..n in order; a label with no voxel in the data's field of view is a column of
        zeros (``keep_masked_labels`` behaviour made explicit).
    """
    import nibabel as nib
    from nilearn.maskers import NiftiLabelsMasker

    atlas_img: Any = nib.load(str(atlas)) if isinstance(atlas, (str, os.PathLike)) else atlas
    bold_img = nib.load(str(bold)) if isinstance(bold, (str, os.PathLike)) else bold
    labels = np.unique(np.asarray(atlas_img.dataobj)).astype(np.int64)
    labels = labels[labels > 0]
    if standardize is True or standardize is False:  # nilearn >= 0.15 spells them "zscore_sample" / None
        standardize = "zscore_sample" if standardize else None
    masker = NiftiLabelsMasker(labels_img=atlas_img, standardize=standardize, resampling_target="data")
    series = np.asarray(masker.fit_transform(bold_img), dtype=np.float32)
    n = int(labels.max()) if labels.size else 0
    out = np.zeros((series.shape[0], n), dtype=np.float32)
    present = getattr(masker, "region_ids_", None)
    ids = [int(v) for k, v in present.items() if k != "background"] if isinstance(present, dict) else list(labels)
    out[:, np.asarray(ids[:series.shape[1]], dtype=np.int64) - 1] = series
    return out


# -------------------------------------------------------------------------------------------------- loading
def _roi_files(root: str | os.PathLike[str], s: int, rois: Sequence[str]) -> list[Path]:
    folder = spec_path(_DS, root, "roi_dir")
    files = []
    for roi in rois:
        exact = spec_path(_DS, root, "roi_betas", subject=s, roi=roi)
        hits = [exact] if exact.is_file() else sorted(folder.glob(f"CSI{s}_*_{roi}.npy")) if folder.is_dir() else []
        if not hits:
            raise MissingFileError(format_error(
                "rois", f"the GLMsingle ROI betas of CSI{s} for {roi}", f"no {exact.name} under {folder}",
                "Download BOLD5000_GLMsingle_ROI_betas (release 2.0) into the dataset root, or pick rois="))
        files.append(hits[0])
    return files


def _read_events(path: Path, n_expected: int, images: np.ndarray) -> np.ndarray:
    import csv

    spec = load_spec(_DS)["events"]
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    if not rows or spec["onset"] not in rows[0]:
        raise MetadataMismatchError(format_error(str(path), f"a BIDS events.tsv with an {spec['onset']!r} column",
                                                 f"columns {list(rows[0]) if rows else []}"))
    if len(rows) != n_expected:
        raise MetadataMismatchError(format_error(str(path), f"{n_expected} events (the run's presentation list)",
                                                 f"{len(rows)} rows"))
    col = next((c for c in spec["image_columns"] if c in rows[0]), None)
    if col is not None:
        named = [Path(r[col]).name.removeprefix(str(load_spec(_DS)["dataset"]["repeat_prefix"])) for r in rows]
        if named != [str(i) for i in images]:
            raise MetadataMismatchError(format_error(str(path), "the images of the run's presentation list",
                                                     f"another order in column {col!r}"))
    return np.asarray([float(r[spec["onset"]]) for r in rows])


def _parcel_samples(root: str | os.PathLike[str], s: int, table: dict[str, np.ndarray], atlas: Any, n_parcels: int,
                    n_trs: int, tr: float, standardize: str | bool, bold_pattern: str | None,
                    files: list[str]) -> tuple[np.ndarray, np.ndarray]:
    n = len(table["image"])
    X = np.zeros((n, n_parcels, n_trs), dtype=np.float32)
    lengths = np.zeros(n, dtype=np.int64)
    keys = list(dict.fromkeys(zip(table["session"].tolist(), table["run"].tolist())))
    for session, run in keys:
        rows = np.flatnonzero((table["session"] == session) & (table["run"] == run))
        fields = {"subject": s, "session": session, "run": run}
        bold = Path(root) / bold_pattern.format(**fields) if bold_pattern else spec_path(_DS, root, "bold", **fields)
        events = spec_path(_DS, root, "events", **fields)
        for p in (bold, events):
            if not p.is_file():
                raise MissingFileError(format_error(
                    "data='parcels'", f"the BOLD run and events of CSI{s} session {session} run {run}",
                    f"nothing at {p}", "Download the fMRIPrep derivative and BIDS events (OpenNeuro ds001499), "
                    "or give bold_pattern= for your derivative's names"))
        onsets = _read_events(events, len(rows), table["image"][rows])
        series = parcel_time_series(bold, atlas, standardize=standardize)
        if series.shape[1] != n_parcels:
            raise ShapeMismatchError(format_error("atlas", f"{n_parcels} parcels (atlas_labels)",
                                                  f"{series.shape[1]} labels in the atlas image"))
        files += [str(bold), str(events)]
        for row, onset in zip(rows, onsets):
            start = int(round(onset / tr))
            window = series[start:start + n_trs]
            X[row, :, :len(window)] = window.T
            lengths[row] = len(window)
    return X, lengths


def load_bold5000(
    root: str | os.PathLike[str],
    subject: Any,
    *,
    data: str = "roi",
    rois: Sequence[str] | None = None,
    atlas: Any = None,
    atlas_labels: Any = None,
    networks: Sequence[str] | None = None,
    n_trs: int | None = None,
    standardize: str | bool | None = None,
    average_test_repeats: bool = True,
    bold_pattern: str | None = None,
) -> Trials:
    """Load one BOLD5000 subject (CSI1..CSI4) as :class:`Trials`.

    Parameters
    ----------
    root : path-like
        Dataset root (holds ``BOLD5000_Stimuli/`` and the ROI betas or the BIDS / fMRIPrep tree).
    subject : int or str
        ``1``..``4``, ``"CSI1"`` or ``"bold5000/CSI1"``.
    data : {"roi", "parcels"}
        ROI betas, shape (n_trials, n_voxels); or whole-brain parcel time series, shape (n_trials,
        n_parcels, n_trs).
    rois : sequence of str or None
        ROIs to concatenate (``data="roi"``); default the ten of the release.
    atlas, atlas_labels : path-like or nibabel image; path-like or sequence of str
        The labels atlas in the BOLD data's space and its parcel names (``data="parcels"``).
    networks : sequence of str or None
        Network of every parcel; default from Schaefer names (:func:`schaefer_networks`).
    n_trs : int or None
        TRs per sample from the image onset (default the spec's 5: the 10 s trial).
    standardize : str, bool or None
        Per-run parcel standardisation (nilearn; default ``"zscore_sample"``).
    average_test_repeats : bool
        Average the presentations of each test image (one row per test image).
    bold_pattern : str or None
        Path of a run's BOLD under ``root`` with ``{subject}``, ``{session}``, ``{run}`` fields, for an
        fMRIPrep derivative named otherwise than the spec.

    Returns
    -------
    trials : Trials
        ``stimulus_ids`` image names; ``split`` "test" for the repeated images, else "train";
        ``metadata`` session, run, trial, n_repeats, source (COCO / ImageNet / Scene when images are on disk).
    """
    check_option(data, "data", ("roi", "parcels"))
    s = bold5000_subject(subject)
    spec = load_spec(_DS)
    table = bold5000_presentation(root, s)
    repeated = set(_repeated_images(root))
    n = len(table["image"])
    files: list[str] = []
    provenance: dict[str, Any] = {"dataset": _DS, "loader": "neurodecode.data.load_bold5000", "root": str(root),
                                  "subject": f"bold5000/CSI{s}", "data": data, "tr": float(spec["dataset"]["tr"]),
                                  "presentation": "Stimuli_Presentation_Lists, sorted session folders and run files",
                                  "test": "the repeated_stimuli_113_list images"}
    kwargs: dict[str, Any] = {}
    if data == "roi":
        rois = list(rois or spec["rois"]["names"])
        blocks, columns, start = [], {}, 0
        for roi, f in zip(rois, _roi_files(root, s, rois)):
            from ..io.npy import load_npy

            arr = np.asarray(load_npy(f), dtype=np.float32)
            if arr.ndim != 2 or arr.shape[0] != n:
                raise ShapeMismatchError(format_error(str(f), f"betas of shape ({n}, n_voxels): one row per "
                                                      "presentation of the lists", arr.shape,
                                                      "Check that the presentation lists belong to this subject"))
            if not np.isfinite(arr).all():
                bad = np.argwhere(~np.isfinite(arr))[:5].tolist()
                raise ValidationError(format_error(str(f), "finite betas", f"NaN/inf at (trial, voxel) {bad}"))
            blocks.append(arr)
            columns[roi] = [start, start + arr.shape[1]]
            start += arr.shape[1]
            files.append(str(f))
        X = np.concatenate(blocks, axis=1)
        provenance.update(rois=rois, roi_columns=columns, betas="GLMsingle TYPED-FITHRF-GLMDENOISE-RR (release 2.0)")
    else:
        if atlas is None or atlas_labels is None:
            raise ValidationError(format_error(
                "atlas", "a labels atlas and its parcel names for data='parcels'", "none",
                "Pass atlas=<Schaefer2018_..._2mm.nii.gz> atlas_labels=<..._order.txt> (nilearn's "
                "fetch_atlas_schaefer_2018 downloads them)"))
        names = read_atlas_labels(atlas_labels)
        nets = np.asarray(networks) if networks is not None else schaefer_networks(names)
        if len(nets) != len(names):
            raise ShapeMismatchError(format_error("networks", f"{len(names)} entries (one per parcel)", len(nets)))
        n_trs = int(n_trs or spec["parcels"]["n_trs"])
        std = spec["parcels"]["standardize"] if standardize is None else standardize
        tr = float(spec["dataset"]["tr"])
        X, lengths = _parcel_samples(root, s, table, atlas, len(names), n_trs, tr, std, bold_pattern, files)
        if (lengths < n_trs).any():
            logger.warning("bold5000 CSI%d: %d sample(s) end past their run and are zero-padded", s,
                           int((lengths < n_trs).sum()))
        kwargs = {"ch_names": names, "sfreq": 1.0 / tr, "times": np.arange(n_trs) * tr, "lengths": lengths}
        provenance.update(atlas=str(atlas) if isinstance(atlas, (str, os.PathLike)) else "in-memory image",
                          n_parcels=len(names), parcel_networks=nets.tolist(), n_trs=n_trs, standardize=std,
                          window=f"{n_trs} TRs from the TR nearest each image onset (events.tsv)")
    split = np.where(np.isin(table["image"], list(repeated)), "test", "train")
    n_rep = np.ones(n, dtype=np.int64)
    meta = {k: table[k] for k in ("session", "run", "trial")}
    ids = table["image"]
    if average_test_repeats and (split == "test").any():
        keep: list[list[int]] = []
        groups: dict[str, list[int]] = {}
        for i, (name, sp) in enumerate(zip(ids, split)):
            if sp == "test":
                groups.setdefault(name, []).append(i)
            else:
                keep.append([i])
        order = keep + list(groups.values())
        X = np.stack([X[g].mean(axis=0) for g in order]).astype(np.float32)
        first = np.asarray([g[0] for g in order])
        n_rep = np.asarray([len(g) for g in order], dtype=np.int64)
        if "lengths" in kwargs:
            kwargs["lengths"] = np.asarray([kwargs["lengths"][g].min() for g in order])
        ids, split = ids[first], split[first]
        meta = {k: v[first] for k, v in meta.items()}
    meta["n_repeats"] = n_rep
    meta["source"] = _sources(root, ids)
    from .._core.versions import package_versions

    provenance.update(files=files, n_presentations=n, average_test_repeats=bool(average_test_repeats),
                      n_test_images=int((split == "test").sum()),
                      versions=package_versions(("numpy", "nilearn") if data == "parcels" else ("numpy",)))
    return Trials(X=X, stimulus_ids=ids, subject=f"bold5000/CSI{s}", split=split, metadata=meta,
                  provenance=provenance, **kwargs)


def _image_index(root: str | os.PathLike[str]) -> dict[str, Path]:
    base = spec_path(_DS, root, "images")
    index: dict[str, Path] = {}
    for source in load_spec(_DS)["dataset"]["image_sources"]:
        d = base / source
        if d.is_dir():
            index.update({p.name: p for p in d.iterdir() if p.is_file()})
    return index


def _sources(root: str | os.PathLike[str], names: np.ndarray) -> np.ndarray:
    index = _image_index(root)
    return np.asarray([index[n].parent.name if n in index else "" for n in names.tolist()])


def load_bold5000_stimuli(root: str | os.PathLike[str], names: Sequence[str], *, size: int | None = None
                          ) -> np.ndarray:
    """The presented images (``Scene_Stimuli/Presented_Stimuli/{COCO,ImageNet,Scene}``) as RGB arrays.

    Parameters
    ----------
    names : sequence of str
        Image file names (``stimulus_ids`` of :func:`load_bold5000`).
    size : int or None
        Resize every image to ``size`` x ``size`` (the images differ in size); None requires equal sizes.

    Returns
    -------
    images : ndarray of uint8, shape (n_images, height, width, 3)
    """
    from PIL import Image

    index = _image_index(root)
    missing = [n for n in names if n not in index]
    if missing:
        raise MissingFileError(format_error("names", "images under " + relative_path(_DS, "images"),
                                            f"{len(missing)} missing, e.g. {missing[:3]}",
                                            "Download BOLD5000_Stimuli into the dataset root"))
    out = []
    for n in names:
        with Image.open(index[n]) as src:
            im = src.convert("RGB")
            if size is not None:
                im = im.resize((size, size), Image.Resampling.BICUBIC)
            out.append(np.asarray(im, dtype=np.uint8))
    if len({a.shape for a in out}) > 1:
        raise ShapeMismatchError(format_error("size", "an int (the images differ in size)", None,
                                              "Pass size=224, for example"))
    return np.stack(out) if out else np.zeros((0, size or 0, size or 0, 3), np.uint8)


# --------------------------------------------------------------------------------------------------- checks
def check_bold5000(root: str | os.PathLike[str], subjects: Sequence[Any] | None = None
                   ) -> tuple[dict[str, Any], list[str]]:
    """Check a BOLD5000 tree: presentation lists, repeated list, ROI betas (rows, finiteness), images.

    Returns
    -------
    report, problems : dict, list of str
        ``report["subjects"]`` per subject counts; every problem of the tree at once.
    """
    from ..io.npy import load_npy

    problems: list[str] = []
    warnings: list[str] = []
    report: dict[str, Any] = {"subjects": {}}
    lists = Path(root) / relative_path(_DS, "presentation_lists", subject=1)
    found = sorted(int(m.group(1)) for p in lists.parent.glob("CSI*") if (m := re.fullmatch(r"CSI(\d+)", p.name)))
    numbers = [bold5000_subject(v) for v in subjects] if subjects else found
    if not numbers:
        problems.append(f"no subject folder CSI<N> under {lists.parent}")
    try:
        repeated = set(_repeated_images(root))
    except MissingFileError as exc:
        problems.append(str(exc))
        repeated = set()
    index = _image_index(root)
    for s in numbers:
        info: dict[str, Any] = {}
        try:
            table = bold5000_presentation(root, s)
        except MissingFileError as exc:
            problems.append(str(exc))
            continue
        n = len(table["image"])
        info.update(presentations=n, sessions=len(set(table["session"].tolist())),
                    test_images=len(set(table["image"].tolist()) & repeated))
        folder = spec_path(_DS, root, "roi_dir")
        roi_files = sorted(folder.glob(f"CSI{s}_*.npy")) if folder.is_dir() else []
        info["roi_files"] = len(roi_files)
        for f in roi_files:
            try:
                arr = np.asarray(load_npy(f))
            except Exception as exc:  # a damaged file is one problem of the list, not the end of the check
                problems.append(f"{f}: unreadable ({exc})")
                continue
            if arr.ndim != 2 or arr.shape[0] != n:
                problems.append(f"{f}: shape {arr.shape}, expected ({n}, n_voxels) (one row per presentation)")
            elif not np.isfinite(arr).all():
                problems.append(f"{f}: {int((~np.isfinite(arr)).sum())} NaN/inf value(s)")
        runs = list(dict.fromkeys(zip(table["session"].tolist(), table["run"].tolist())))
        info["bold_runs"] = sum(spec_path(_DS, root, "bold", subject=s, session=a, run=b).is_file() for a, b in runs)
        if not roi_files and not info["bold_runs"]:
            problems.append(f"CSI{s}: neither ROI betas under {folder} nor BOLD runs ({relative_path(_DS, 'bold', subject=s, session=1, run=1)})")
        if index:
            lacking = sorted(set(table["image"].tolist()) - set(index))
            if lacking:
                problems.append(f"CSI{s}: {len(lacking)} presented image(s) not under "
                                f"{relative_path(_DS, 'images')}, e.g. {lacking[:3]}")
        else:
            warnings.append(f"no image under {relative_path(_DS, 'images')}: stimuli not checked")
        report["subjects"][f"CSI{s}"] = info
    report["warnings"] = list(dict.fromkeys(warnings))
    return report, problems
