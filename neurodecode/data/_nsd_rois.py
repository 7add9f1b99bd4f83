"""NSD regions of interest and noise ceilings: atlas label volumes, ROI voxel selection, per-voxel labels, ncsnr.

NSD ships label volumes in each subject's func1pt8mm space (``nsddata/ppdata/subjXX/func1pt8mm/roi/<atlas>.nii.gz``,
the same grid as the betas; ``lh.<atlas>`` / ``rh.<atlas>`` per hemisphere) with their names in
``nsddata/freesurfer/subjXX/label/<atlas>.mgz.ctab`` (one ``<value> <name>`` line per label). Values: -1 outside
the brain, 0 unlabelled, >= 1 a label. Atlases: ``streams`` (early, midventral, midlateral, midparietal, ventral,
lateral, parietal), ``prf-visualrois`` (V1v ... hV4), ``prf-eccrois``, ``floc-faces`` / ``-bodies`` / ``-places`` /
``-words``, ``Kastner2015``, ``HCP_MMP1``, ``corticalsulc``, ``nsdgeneral``.

An ROI is named ``"<atlas>:<label>"`` (``"prf-visualrois:V1v"``), by its label alone when exactly one atlas on
disk has it (``"early"``), or ``"<atlas>"`` / ``"<atlas>:*"`` for every label of an atlas. Selected voxels are the
union of the named labels, in ``np.flatnonzero`` (C) order of the (X, Y, Z) volume, like the nsdgeneral columns.

The noise ceiling follows the NSD data manual: ``NC = 100 * ncsnr**2 / (ncsnr**2 + 1/n)`` (percent of variance)
for responses averaged over ``n`` trials; with unequal repeats ``1/n`` is the mean of ``1/n_i`` over the images.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import MetadataMismatchError, MissingFileError, ShapeMismatchError, ValidationError
from .._core.validation import format_error
from ._layout import relative_path, spec_path
from ._nsd_files import NSDMask, _subject_number, nsd_beta_dir, read_nsd_mask

__all__ = ["read_nsd_ctab", "nsd_atlases", "NSDAtlas", "read_nsd_atlas", "NSDRoiSelection", "select_nsd_rois",
           "NSDVoxelLabels", "nsd_voxel_labels", "read_nsd_ncsnr", "noise_ceiling"]

_HEMIS = ("lh", "rh")


# ----------------------------------------------------------------------------- atlases
def read_nsd_ctab(path: str | os.PathLike[str]) -> dict[int, str]:
    """Label table of an NSD ``.mgz.ctab`` file: value -> name (``0`` is ``Unknown``).

    Each non-empty line starts with the integer value and the name; further columns (FreeSurfer colour
    tables carry R G B A) and ``#`` comment lines are ignored.
    """
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(format_error("ctab", "an existing .mgz.ctab label table", str(p),
                                            "Download nsddata/freesurfer/subjXX/label/<atlas>.mgz.ctab with the ROIs"))
    table: dict[int, str] = {}
    for k, line in enumerate(p.read_text().splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        try:
            value = int(parts[0])
        except ValueError:
            raise ValidationError(format_error(f"{p} line {k}", "'<integer value> <name>'", repr(line))) from None
        if len(parts) < 2:
            raise ValidationError(format_error(f"{p} line {k}", "'<integer value> <name>'", repr(line)))
        if value in table:
            raise ValidationError(format_error(f"{p} line {k}", "each value once", f"value {value} again"))
        table[value] = parts[1]
    if not table:
        raise ValidationError(format_error(str(p), "at least one label line", "none"))
    return table


def nsd_atlases(root: str | os.PathLike[str], subject: Any) -> list[str]:
    """Atlases of a subject on disk: ``func1pt8mm/roi/<atlas>.nii.gz`` with a ``<atlas>.mgz.ctab`` (sorted)."""
    s = _subject_number(subject)
    folder = spec_path("nsd", root, "roi", subject=s, atlas="x").parent
    names = sorted(p.name[:-len(".nii.gz")] for p in folder.glob("*.nii.gz")
                   if not p.name.startswith(("lh.", "rh.")))
    return [a for a in names if spec_path("nsd", root, "roi_ctab", subject=s, atlas=a).is_file()]


@dataclass
class NSDAtlas:
    """One label volume of a subject.

    Attributes
    ----------
    name : str
        Atlas name (``"streams"``).
    values : ndarray of int, shape (X, Y, Z)
        Label value per voxel (-1 outside the brain, 0 unlabelled).
    table : dict of int to str
        Value -> label name from the ctab.
    affine : ndarray of shape (4, 4)
    path, ctab : pathlib.Path
        The volume and its label table.
    """

    name: str
    values: np.ndarray
    table: dict[int, str]
    affine: np.ndarray
    path: Path
    ctab: Path

    @property
    def labels(self) -> dict[str, int]:
        """Name -> value of the labels (value >= 1)."""
        return {n: v for v, n in self.table.items() if v >= 1}


def read_nsd_atlas(root: str | os.PathLike[str], subject: Any, atlas: str, *, hemi: str | None = None) -> NSDAtlas:
    """Read ``func1pt8mm/roi/[<hemi>.]<atlas>.nii.gz`` and its ``.mgz.ctab`` of one subject.

    Parameters
    ----------
    root : path-like
        The NSD root.
    subject : int or str
    atlas : str
        Atlas name (``"streams"``, ``"prf-visualrois"``...).
    hemi : {"lh", "rh"} or None
        Read the one-hemisphere volume instead of the combined one.
    """
    from ..io.nifti import load_nifti

    s = _subject_number(subject)
    ctab = spec_path("nsd", root, "roi_ctab", subject=s, atlas=atlas)
    if hemi is None:
        path = spec_path("nsd", root, "roi", subject=s, atlas=atlas)
    else:
        path = spec_path("nsd", root, "roi_hemi", subject=s, atlas=atlas, hemi=hemi)
    if not path.is_file():
        present = nsd_atlases(root, s)
        raise MissingFileError(format_error(
            "rois", f"the {atlas!r} atlas of subj{s:02d} ({relative_path('nsd', 'roi', subject=s, atlas=atlas)})",
            f"no such file under {root}",
            f"Atlases present: {', '.join(present)}" if present else
            "Download nsddata/ppdata/subjXX/func1pt8mm/roi/ and nsddata/freesurfer/subjXX/label/*.ctab"))
    if not ctab.is_file():
        raise MissingFileError(format_error(
            "rois", f"the label table {relative_path('nsd', 'roi_ctab', subject=s, atlas=atlas)}",
            f"no such file under {root}", "Download nsddata/freesurfer/subjXX/label/ (the .mgz.ctab files)"))
    vol = load_nifti(path, ndim=3, hint=f"Expected {relative_path('nsd', 'roi', subject=s, atlas=atlas)}")
    values = np.asarray(vol.data)
    if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
        raise ValidationError(format_error(str(path), "integer label values", "non-integer values",
                                           "Use the label volume itself, not a probability map"))
    return NSDAtlas(atlas, values.astype(np.int32), read_nsd_ctab(ctab), vol.affine, path, ctab)


# ----------------------------------------------------------------------------- selection
@dataclass
class NSDRoiSelection:
    """Voxels selected by ROI names: the mask (column order of ``X``) and what made it.

    Attributes
    ----------
    mask : NSDMask
        Selected voxels (``mask.flat`` in C order of the volume: the columns of ``X``).
    rois : list of str
        The ROIs as ``"<atlas>:<label>"``.
    within_nsdgeneral : bool
        Whether the voxels were intersected with nsdgeneral.
    atlases : dict
        Per atlas: ``file``, ``ctab``, ``labels`` (name -> value) and ``n_voxels`` (name -> selected voxels,
        a voxel of two labels of different atlases counted in each).
    """

    mask: NSDMask
    rois: list[str]
    within_nsdgeneral: bool
    atlases: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def n_voxels(self) -> int:
        """Selected voxels (the union over ROIs)."""
        return self.mask.n_voxels

    def provenance(self) -> dict[str, Any]:
        """JSON-friendly record for ``Trials.provenance["rois"]``."""
        return {"rois": list(self.rois), "within_nsdgeneral": self.within_nsdgeneral,
                "n_voxels": self.n_voxels, "atlases": self.atlases,
                "order": "union of the ROIs, np.flatnonzero C order of the (X, Y, Z) volume"}


def _normalise_rois(rois: Any) -> list[tuple[str | None, Any]]:
    """(atlas or None, label name / value / "*") pairs from every accepted spelling of ``rois``."""
    bad = format_error("rois", 'ROI names ("early", "streams:early", "prf-visualrois:V1v"), a list of them, or a '
                       'mapping {atlas: [labels]}', repr(rois), 'e.g. rois=("early", "ventral") or '
                       'rois={"streams": ["early"]}')
    pairs: list[tuple[str | None, Any]] = []
    if isinstance(rois, Mapping):
        for atlas, labels in rois.items():
            if labels in ("*", "all") or labels is None:
                labels = ["*"]
            elif isinstance(labels, (str, int)) and not isinstance(labels, bool):
                labels = [labels]
            if not isinstance(atlas, str) or not isinstance(labels, Sequence) or not labels:
                raise ValidationError(bad)
            pairs += [(atlas, lab) for lab in labels]
    else:
        items = [rois] if isinstance(rois, str) else rois
        if not isinstance(items, Sequence) or not items:
            raise ValidationError(bad)
        for item in items:
            if not isinstance(item, str) or not item.strip():
                raise ValidationError(bad)
            atlas, sep, label = item.strip().partition(":")
            pairs.append((atlas, label or "*") if sep else (None, atlas))
    for _, label in pairs:
        if isinstance(label, bool) or not isinstance(label, (str, int, np.integer)):
            raise ValidationError(bad)
    return pairs


def _resolve(root: Any, s: int, pairs: list[tuple[str | None, Any]]) -> dict[str, list[Any]]:
    """atlas -> labels, bare names looked up in the ctabs of the atlases on disk."""
    present = nsd_atlases(root, s)
    tables: dict[str, dict[int, str]] = {}

    def table(atlas: str) -> dict[int, str]:
        if atlas not in tables:
            tables[atlas] = read_nsd_ctab(spec_path("nsd", root, "roi_ctab", subject=s, atlas=atlas))
        return tables[atlas]

    out: dict[str, list[Any]] = {}
    for atlas, label in pairs:
        if atlas is None:
            owners = [a for a in present if label in table(a).values() and label != table(a).get(0)]
            if not owners and label in present:  # an atlas name alone: every label
                owners, label = [label], "*"
            if not owners:
                listing = "; ".join(f"{a}: {', '.join(n for v, n in sorted(table(a).items()) if v >= 1)}"
                                    for a in present if len(table(a)) <= 40)
                big = [a for a in present if len(table(a)) > 40]
                raise ValidationError(format_error(
                    "rois", f"an ROI name of the atlases of subj{s:02d} on disk", repr(label),
                    f"Valid names - {listing}" + (f"; also {', '.join(big)} (see their .mgz.ctab)" if big else "")
                    if present else "No atlas found: download func1pt8mm/roi/ and freesurfer/subjXX/label/"))
            if len(owners) > 1:
                raise ValidationError(format_error(
                    "rois", "a name found in one atlas only", f"{label!r} in {', '.join(owners)}",
                    "Name the atlas: " + " or ".join(f"'{a}:{label}'" for a in owners)))
            atlas = owners[0]
        elif atlas not in present:
            raise ValidationError(format_error(
                "rois", f"an atlas of subj{s:02d} on disk ({', '.join(present) or 'none found'})", repr(atlas),
                "Check the spelling (atlas names are case-sensitive: Kastner2015, HCP_MMP1) or download "
                "func1pt8mm/roi/ with the .mgz.ctab files"))
        out.setdefault(atlas, []).append(label)
    return out


def select_nsd_rois(root: str | os.PathLike[str], subject: Any, rois: Any, *,
                    within_nsdgeneral: bool = False) -> NSDRoiSelection:
    """Voxels of one subject selected by ROI names (see the module docstring for the spellings).

    Parameters
    ----------
    root : path-like
        The NSD root.
    subject : int or str
    rois : str, sequence of str or mapping of str to list
        ``"early"``, ``("early", "ventral")``, ``"prf-visualrois:V1v"``, ``{"streams": ["early", "ventral"]}``,
        ``{"streams": "*"}`` (every label); label values (int) are accepted in a mapping.
    within_nsdgeneral : bool
        False (default): every voxel of the ROIs, wherever it lies (as Takagi & Nishimoto select the
        ``streams`` ROIs); True: only ROI voxels that are also nsdgeneral voxels (a subset of the default
        :func:`~neurodecode.data.load_nsd` columns).

    Returns
    -------
    selection : NSDRoiSelection
    """
    s = _subject_number(subject)
    wanted = _resolve(root, s, _normalise_rois(rois))
    general = read_nsd_mask(root, s)
    union = np.zeros(general.shape, dtype=bool)
    in_general = np.zeros(general.shape, dtype=bool)
    in_general.ravel()[general.flat] = True
    names: list[str] = []
    record: dict[str, dict[str, Any]] = {}
    for atlas_name, labels in wanted.items():
        atlas = read_nsd_atlas(root, s, atlas_name)
        if atlas.values.shape != general.shape:
            raise ShapeMismatchError(format_error(str(atlas.path), f"a volume of shape {general.shape} (nsdgeneral)",
                                                  f"shape {atlas.values.shape}",
                                                  "Use the func1pt8mm ROI files of the same subject"))
        if not np.allclose(atlas.affine, general.affine, atol=1e-3):
            raise MetadataMismatchError(format_error(str(atlas.path), f"the affine of {general.path.name}",
                                                     atlas.affine.round(3).tolist(),
                                                     "Use the func1pt8mm ROI files of the same subject"))
        by_name = atlas.labels
        chosen: dict[str, int] = {}
        for label in labels:
            if label == "*":
                chosen.update(by_name)
            elif isinstance(label, (int, np.integer)):
                if int(label) not in atlas.table or int(label) < 1:
                    raise ValidationError(format_error(
                        f"rois[{atlas_name!r}]", f"label values of {atlas.ctab.name} ({sorted(by_name.values())})",
                        int(label)))
                chosen[atlas.table[int(label)]] = int(label)
            elif label in by_name:
                chosen[label] = by_name[label]
            else:
                raise ValidationError(format_error(
                    f"rois[{atlas_name!r}]", f"a label of {atlas.ctab.name}: {', '.join(by_name)}", repr(label),
                    "Label names are case-sensitive"))
        counts: dict[str, int] = {}
        for name, value in chosen.items():
            hit = atlas.values == value
            if within_nsdgeneral:
                hit &= in_general
            counts[name] = int(hit.sum())
            union |= hit
            names.append(f"{atlas_name}:{name}")
        record[atlas_name] = {"file": str(atlas.path), "ctab": str(atlas.ctab), "labels": chosen,
                              "n_voxels": counts}
    flat = np.flatnonzero(union.ravel())
    if flat.size == 0:
        raise ValidationError(format_error(
            "rois", "at least one voxel", f"none for {names}" + (" within nsdgeneral" if within_nsdgeneral else ""),
            "Pick other ROIs" + (" or pass within_nsdgeneral=False" if within_nsdgeneral else "")))
    return NSDRoiSelection(NSDMask(general.shape, general.affine, flat, general.path), names, bool(within_nsdgeneral),
                           record)


def _columns(root: Any, s: int, rois: Any, within_nsdgeneral: bool) -> tuple[NSDMask, dict[str, Any] | None]:
    """The columns of ``load_nsd(root, s, rois=rois, ...)`` as a mask, and the ROI record (None: nsdgeneral)."""
    if rois is None:
        return read_nsd_mask(root, s), None
    sel = select_nsd_rois(root, s, rois, within_nsdgeneral=within_nsdgeneral)
    return sel.mask, sel.provenance()


def _subject_and_rois(subject: Any, rois: Any, within_nsdgeneral: bool) -> tuple[int, Any, bool]:
    """Accept a :class:`Trials` from :func:`load_nsd` for ``subject`` (its ROI choice is read back)."""
    prov = getattr(subject, "provenance", None)
    if prov is None:
        return _subject_number(subject), rois, within_nsdgeneral
    if prov.get("dataset") != "nsd" or "subject" not in prov:
        raise ValidationError(format_error("subject", "a subject id or Trials from load_nsd", subject))
    record = prov.get("rois")
    if record:
        return _subject_number(prov["subject"]), list(record["rois"]), bool(record["within_nsdgeneral"])
    return _subject_number(prov["subject"]), None, False


# ----------------------------------------------------------------------------- per-voxel labels
@dataclass
class NSDVoxelLabels:
    """One atlas's label for every column of ``X``.

    Attributes
    ----------
    atlas : str
    values : ndarray of int, shape (n_voxels,)
        Label value per column (-1 outside the brain, 0 unlabelled).
    names : ndarray of str, shape (n_voxels,)
        Label name per column (``""`` outside the brain, the ctab's name of 0, usually ``"Unknown"``,
        when unlabelled).
    hemisphere : ndarray of str, shape (n_voxels,) or None
        ``"lh"`` / ``"rh"`` from the ``lh.`` / ``rh.`` volumes (``""`` where neither labels the voxel);
        None when those files are absent.
    table : dict of int to str
        The atlas's value -> name.
    path : pathlib.Path
    """

    atlas: str
    values: np.ndarray
    names: np.ndarray
    hemisphere: np.ndarray | None
    table: dict[int, str]
    path: Path

    def columns(self, label: str, hemi: str | None = None) -> np.ndarray:
        """Column indices of ``X`` labelled ``label`` (optionally in hemisphere ``hemi``)."""
        if label not in self.table.values():
            raise ValidationError(format_error("label", f"a label of {self.atlas}: {', '.join(self.table.values())}",
                                               repr(label)))
        hit = self.names == label
        if hemi is not None:
            if self.hemisphere is None:
                raise MissingFileError(format_error("hemi", f"lh./rh.{self.atlas}.nii.gz beside {self.path.name}",
                                                    "absent", "Download the per-hemisphere ROI volumes"))
            hit &= self.hemisphere == hemi
        return np.flatnonzero(hit)


def nsd_voxel_labels(root: str | os.PathLike[str], subject: Any, atlas: str = "streams", *, rois: Any = None,
                     within_nsdgeneral: bool = False) -> NSDVoxelLabels:
    """Per-column ROI labels of ``load_nsd(root, subject, rois=rois, within_nsdgeneral=...)``.

    Parameters
    ----------
    root : path-like
        The NSD root.
    subject : int, str or Trials
        A subject, or the :class:`~neurodecode.data.Trials` returned by :func:`~neurodecode.data.load_nsd`
        (its ``rois`` and ``within_nsdgeneral`` are then read from the provenance).
    atlas : str
        Atlas whose labels to report (need not be the one used to select the voxels).
    rois, within_nsdgeneral
        As given to :func:`~neurodecode.data.load_nsd` (ignored when ``subject`` is a Trials).

    Returns
    -------
    labels : NSDVoxelLabels
        ``values`` / ``names`` / ``hemisphere`` of shape (n_voxels,), aligned with the columns of ``X``.

    Examples
    --------
    >>> labels = nsd_voxel_labels(root, trials, "streams")           # doctest: +SKIP
    >>> X_early = trials.X[:, labels.columns("early")]               # doctest: +SKIP
    """
    s, rois, within = _subject_and_rois(subject, rois, within_nsdgeneral)
    mask, _ = _columns(root, s, rois, within)
    vol = read_nsd_atlas(root, s, atlas)
    if vol.values.shape != mask.shape:
        raise ShapeMismatchError(format_error(str(vol.path), f"a volume of shape {mask.shape}",
                                              f"shape {vol.values.shape}"))
    values = vol.values.ravel()[mask.flat]
    lookup = {**vol.table, -1: ""}
    names = np.array([lookup.get(int(v), f"label{int(v)}") for v in values], dtype=object).astype(str)
    hemisphere = None
    lh_path = spec_path("nsd", root, "roi_hemi", subject=s, atlas=atlas, hemi="lh")
    rh_path = spec_path("nsd", root, "roi_hemi", subject=s, atlas=atlas, hemi="rh")
    if lh_path.is_file() and rh_path.is_file():
        hemis = np.full(len(values), "", dtype="<U2")
        for h in _HEMIS:
            side = read_nsd_atlas(root, s, atlas, hemi=h).values.ravel()[mask.flat]
            hemis[side > 0] = h
        hemisphere = hemis
    return NSDVoxelLabels(atlas, values.astype(np.int32), names, hemisphere, dict(vol.table), vol.path)


# ----------------------------------------------------------------------------- noise ceiling
def read_nsd_ncsnr(root: str | os.PathLike[str], subject: Any, beta_version: str = "b3", *, rois: Any = None,
                   within_nsdgeneral: bool = False) -> np.ndarray:
    """Noise-ceiling SNR (``ncsnr.nii.gz`` of a GLM version) for the columns of :func:`load_nsd`.

    Parameters
    ----------
    root : path-like
        The NSD root.
    subject : int, str or Trials
        A subject, or the Trials of :func:`~neurodecode.data.load_nsd` (its ROI choice and beta version
        are then read from the provenance).
    beta_version : str
        ``"b1"``, ``"b2"``, ``"b3"`` (default) or the folder name.
    rois, within_nsdgeneral
        As given to :func:`~neurodecode.data.load_nsd`.

    Returns
    -------
    ncsnr : ndarray of float32, shape (n_voxels,)
        Non-finite values (none expected inside the brain) are set to 0 with a RuntimeWarning.
    """
    from ..io.nifti import load_nifti

    prov = getattr(subject, "provenance", None)
    if prov is not None and prov.get("beta_version"):
        beta_version = prov["beta_version"]
    s, rois, within = _subject_and_rois(subject, rois, within_nsdgeneral)
    beta_dir = nsd_beta_dir(beta_version)
    mask, _ = _columns(root, s, rois, within)
    path = spec_path("nsd", root, "ncsnr", subject=s, beta_dir=beta_dir)
    vol = load_nifti(path, ndim=3, hint=f"Expected {relative_path('nsd', 'ncsnr', subject=s, beta_dir=beta_dir)}")
    if vol.shape != mask.shape:
        raise ShapeMismatchError(format_error(str(path), f"a volume of shape {mask.shape} (the betas' grid)",
                                              f"shape {vol.shape}", "Use ncsnr.nii.gz of the same subject (func1pt8mm)"))
    out = np.asarray(vol.data, dtype=np.float32).ravel()[mask.flat]
    bad = ~np.isfinite(out)
    if bad.any():
        warnings.warn(f"nsd/subj{s:02d}: {int(bad.sum())} non-finite ncsnr value(s) in {path} set to 0",
                      RuntimeWarning, stacklevel=2)
        out[bad] = 0.0
    if (out < 0).any():
        raise ValidationError(format_error(str(path), "ncsnr >= 0 (a ratio of standard deviations)",
                                           f"{int((out < 0).sum())} negative value(s)"))
    return out


def noise_ceiling(ncsnr: Any, n: Any = 1) -> np.ndarray:
    """Noise ceiling in percent of variance, from the noise-ceiling SNR (NSD data manual).

    ``NC = 100 * ncsnr**2 / (ncsnr**2 + 1/n)`` for responses averaged over ``n`` trials. With unequal
    repeats (an array ``n`` of trials per image, e.g. ``trials.metadata["n_repeats"]``) ``1/n`` becomes the
    mean of ``1/n_i`` over the images: A images of 3 trials, B of 2 and C of 1 give
    ``(A/3 + B/2 + C/1) / (A + B + C)``, as the manual writes it.

    Parameters
    ----------
    ncsnr : array-like of shape (n_voxels,) or scalar
        Noise-ceiling SNR per voxel (:func:`read_nsd_ncsnr`), >= 0.
    n : int or array-like of int
        Trials averaged per response: one number, or one per image of the set to be predicted.

    Returns
    -------
    nc : ndarray, shape of ``ncsnr``
        Percent of the variance of the (averaged) responses that the stimulus can explain.
    """
    snr = np.asarray(ncsnr, dtype=np.float64)
    reps = np.asarray(n, dtype=np.float64).ravel()
    if reps.size == 0 or not np.all(np.isfinite(reps)) or np.any(reps < 1):
        raise ValidationError(format_error("n", "trials per response >= 1 (one number or one per image)", n))
    if not np.all(np.isfinite(snr)) or np.any(snr < 0):
        raise ValidationError(format_error("ncsnr", "finite values >= 0", "negative or non-finite values"))
    inv = float(np.mean(1.0 / reps))
    return 100.0 * snr**2 / (snr**2 + inv)
