"""Find reconstructions on disk and pair them with their ground truth.

Images. Reconstructions: a folder of images (``.png``, ``.jpg``...), or a reconstruct
derivative (``OUT/sub-XX/recon/sub-XX_stim-<id>_desc-<recipe>_recon.png``, ``<id>``
the 0-based NSD stimulus id, or the letters and digits of a THINGS image stem). Ground
truth: the NSD stimuli HDF5 (dataset ``imgBrick``, indexed by stimulus id), or a folder of
images paired by file stem (or by ``stim-<id>`` when the names carry one); a stem that
matches no reconstruction exactly is paired by its BIDS label (letters and digits only), so
the THINGS test images (``aardvark_01b.jpg``) pair with ATM's ``stim-aardvark01b``.

Sentences. Reconstructions: the ``*_recon.txt`` files of a reconstruct derivative (GLIM), one
sentence each. Ground truth: a ``references.tsv`` (see :mod:`._references`: the sentence read,
then ``paraphrase_1``...), by default the derivative's own, or a JSON object ``{stim_id: sentence
or [sentence read, paraphrases...]}`` (keys ``<id>``, ``stim-<id>`` or ``sub-XX/stim-<id>``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import MissingFileError, ValidationError
from .._core.validation import check_path, format_error

__all__ = ["IMAGE_SUFFIXES", "find_images", "load_pairs", "load_by_ids", "item_key", "find_texts", "load_text_pairs", "output_kind",
           "read_text_truth"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
_STIM = re.compile(r"(?:^|_)stim-([A-Za-z0-9]+)")
_SUB = re.compile(r"(?:^|_)sub-([A-Za-z0-9]+)")
_HDF5_SUFFIXES = (".hdf5", ".h5", ".hdf")


def item_key(path: Path) -> str:
    """Pairing key of an image file: its ``stim-<id>`` entity when present, else its stem.

    Integer keys are normalised (``"00042"`` -> ``"42"``).
    """
    m = _STIM.search(path.stem)
    key = m.group(1) if m else path.stem
    return str(int(key)) if key.isdigit() else key


def _bids_label(key: str) -> str:
    """Letters and digits only (a BIDS label), integers normalised like :func:`item_key`."""
    label = re.sub(r"[^A-Za-z0-9]", "", key)
    return str(int(label)) if label.isdigit() else label


def find_images(folder: str | os.PathLike[str], param: str = "recons") -> list[Path]:
    """Image files of ``folder``: a reconstruct derivative's ``*_recon.*`` files, else every image, sorted."""
    root = check_path(folder, param, kind="dir")
    derivative = sorted(p for p in root.glob("sub-*/recon/*_recon.*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if derivative:
        return derivative
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise MissingFileError(
            format_error(param, f"a folder with images ({', '.join(IMAGE_SUFFIXES)})", f"none in {root}",
                         "Point to the folder holding the reconstructions, or to a reconstruct output folder")
        )
    return files


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _stack(images: list[np.ndarray], size: int) -> np.ndarray:
    """Stack uint8 images; when their sizes differ, resize each (bilinear, protocol) to ``size``."""
    if len({im.shape for im in images}) == 1:
        return np.stack(images)
    from ._image import resize_images

    return np.concatenate([resize_images(im[None].astype(np.float32) / 255.0, size) for im in images])


def load_pairs(
    recons: str | os.PathLike[str], truth: str | os.PathLike[str], *, prep_size: int = 256
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Load reconstructions and their ground truth, paired.

    Parameters
    ----------
    recons : path-like
        Folder of reconstructions or a reconstruct derivative.
    truth : path-like
        NSD stimuli HDF5 (``imgBrick``), or a folder of ground-truth images.
    prep_size : int
        Size images are brought to when a set mixes sizes.

    Returns
    -------
    recons : ndarray of shape (n_items, H, W, 3)
    truth : ndarray of shape (n_items, H2, W2, 3)
    ids : list of str
        Item names (``sub-XX/stim-<id>`` for derivatives, else the pairing key).
    """
    files = find_images(recons, "recons")
    keys = [item_key(p) for p in files]
    subs = [(_SUB.search(p.stem).group(1) if _SUB.search(p.stem) else None) for p in files]  # type: ignore[union-attr]
    ids = [f"sub-{s}/stim-{k}" if s else k for s, k in zip(subs, keys)]
    tpath = Path(truth).expanduser()
    if tpath.is_file() and tpath.suffix.lower() in _HDF5_SUFFIXES:
        truth_imgs = _truth_from_hdf5(tpath, keys)
    elif tpath.is_dir():
        tfiles = find_images(tpath, "truth")
        by_key: dict[str, Path] = {}
        by_label: dict[str, list[Path]] = {}
        for p in tfiles:
            by_key.setdefault(item_key(p), p)
            by_label.setdefault(_bids_label(item_key(p)), []).append(p)
        for k in keys:  # a THINGS stem (aardvark_01b) pairs with its BIDS label (stim-aardvark01b)
            if k not in by_key and len(by_label.get(_bids_label(k), [])) == 1:
                by_key[k] = by_label[_bids_label(k)][0]
        missing = [k for k in keys if k not in by_key]
        if missing:
            raise MissingFileError(
                format_error("truth", f"a ground-truth image for every reconstruction in {tpath}",
                             f"{len(missing)} missing (first: {', '.join(missing[:10])})",
                             "Name each truth image like its reconstruction (same file stem, or the same stim-<id>)")
            )
        truth_imgs = [_read_image(by_key[k]) for k in keys]
    else:
        raise MissingFileError(
            format_error("truth", "an NSD stimuli HDF5 file (nsd_stimuli.hdf5) or a folder of images", str(tpath),
                         "Check the path")
        )
    recon_imgs = [_read_image(p) for p in files]
    return _stack(recon_imgs, prep_size), _stack(truth_imgs, prep_size), ids


def load_by_ids(folder: str | os.PathLike[str], ids: list[str], param: str = "blurry", *,
                prep_size: int = 256) -> np.ndarray:
    """Images of ``folder`` in the order of ``ids`` (``sub-XX/stim-<id>`` or a pairing key), e.g. MindEye2's
    blurry low-level reconstructions (``*_blurry.*`` files preferred when the folder also holds others).

    Returns
    -------
    images : ndarray of shape (len(ids), H, W, 3), uint8 (or float when sizes had to be unified)
    """
    root = check_path(folder, param, kind="dir")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    blurry = [p for p in files if p.stem.endswith("_blurry")]
    files = blurry or [p for p in files if not p.stem.endswith("_recon")] or files
    by_id: dict[str, Path] = {}
    for p in files:
        m = _SUB.search(p.stem)
        key = item_key(p)
        by_id.setdefault(f"sub-{m.group(1)}/stim-{key}" if m else key, p)
        by_id.setdefault(key, p)
    missing = [i for i in ids if i not in by_id and i.rpartition("stim-")[2] not in by_id]
    if missing:
        raise MissingFileError(format_error(
            param, f"an image for every reconstruction in {root}", f"{len(missing)} missing (first: "
            f"{', '.join(missing[:5])})", "Name each file like its reconstruction (same sub-XX and stim-<id>)"))
    return _stack([_read_image(by_id.get(i) or by_id[i.rpartition("stim-")[2]]) for i in ids], prep_size)


def _truth_from_hdf5(path: Path, keys: list[str]) -> list[np.ndarray]:
    from ..io.hdf5 import get_dataset, open_hdf5, read_rows

    bad = [k for k in keys if not k.isdigit()]
    if bad:
        raise ValidationError(
            format_error("recons", "file names carrying the 0-based NSD stimulus id (e.g. sub-01_stim-2950_..."
                         "_recon.png or 2950.png) to index the HDF5", f"names such as {bad[:3]}",
                         "Rename the files, or pass a folder of ground-truth images as --truth")
        )
    with open_hdf5(path, hint="the NSD stimuli file nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5") as f:
        ds = get_dataset(f, "imgBrick", ndim=4)
        data = read_rows(ds, np.array([int(k) for k in keys]))
    if data.dtype != np.uint8:
        data = np.clip(data, 0, 255).astype(np.uint8)
    return list(data)


def describe_source(path: Any) -> str:
    """One-line description of a truth source for the provenance."""
    p = Path(path)
    if p.is_file():
        return f"{'hdf5' if p.suffix.lower() in _HDF5_SUFFIXES else 'file'}:{p.resolve()}"
    return f"folder:{p.resolve()}"


# ---------------------------------------------------------------------------------------- sentences
def find_texts(folder: str | os.PathLike[str], param: str = "recons") -> list[Path]:
    """The ``*_recon.txt`` files of a reconstruct derivative (``sub-*/recon/``, else anywhere below), sorted."""
    root = check_path(folder, param, kind="dir")
    files = sorted(root.glob("sub-*/recon/*_recon.txt")) or sorted(root.rglob("*_recon.txt"))
    if not files:
        raise MissingFileError(format_error(
            param, "a reconstruct output folder with sentences (sub-XX/recon/*_recon.txt)", f"none in {root}",
            "Point --recons to the --out folder of `neurodecode reconstruct` on a GLIM recipe"))
    return files


def output_kind(folder: str | os.PathLike[str]) -> str:
    """``"text"`` when ``folder`` holds ``*_recon.txt`` sentences (or a references.tsv) and no images, else ``"image"``."""
    root = Path(folder)
    if not root.is_dir():
        return "image"
    images = any(p.suffix.lower() in IMAGE_SUFFIXES for p in root.glob("sub-*/recon/*_recon.*"))
    texts = any(root.glob("sub-*/recon/*_recon.txt")) or (root / "references.tsv").is_file()
    return "text" if texts and not images else "image"


def _text_key(stim: str, sub: str | None) -> tuple[str | None, str]:
    from ._references import reference_key

    return reference_key(stim, sub)


def read_text_truth(path: str | os.PathLike[str]) -> dict[tuple[str | None, str], list[str]]:
    """References by ``(sub label or None, stim id)``: :func:`~neurodecode.metrics.read_references`."""
    from ._references import read_references

    return read_references(path)


def load_text_pairs(recons: str | os.PathLike[str], truth: str | os.PathLike[str] | None = None, *,
                    paraphrases: str | os.PathLike[str] | None = None
                    ) -> tuple[list[str], list[list[str]], list[str]]:
    """Load decoded sentences and their references, paired by subject and stimulus.

    Parameters
    ----------
    recons : path-like
        A reconstruct output folder with ``sub-XX/recon/*_recon.txt`` files.
    truth : path-like or None
        ``references.tsv`` or JSON (see :func:`read_text_truth`); ``None``: ``recons/references.tsv``.
        A reference keyed by stimulus only serves every subject.
    paraphrases : path-like or None
        A paraphrase table (:func:`~neurodecode.metrics.read_paraphrases`) merged into the items
        that have only their sentence read.

    Returns
    -------
    hypotheses : list of str
    references : list of list of str
        The references of each hypothesis (one, or several paraphrases).
    ids : list of str
        ``sub-XX/stim-<id>`` of each item.
    """
    files = find_texts(recons, "recons")
    table = read_text_truth(Path(recons) / "references.tsv" if truth is None else truth)
    hyps, refs, ids, missing = [], [], [], []
    for f in files:
        m_sub, m_stim = _SUB.search(f.stem), _STIM.search(f.stem)
        sub, stim = _text_key(m_stim.group(1) if m_stim else f.stem, m_sub.group(1) if m_sub else None)
        found = table.get((sub, stim)) or table.get((None, stim))
        name = f"sub-{sub}/stim-{stim}" if sub else stim
        if not found:
            missing.append(name)
            continue
        hyps.append(f.read_text(encoding="utf-8").strip())
        refs.append(found)
        ids.append(name)
    if missing:
        raise MissingFileError(format_error(
            "truth", "a reference sentence for every decoded sentence", f"{len(missing)} missing (first: "
            f"{', '.join(missing[:5])})", "Pass the references.tsv written with these outputs, or a JSON "
            "{stim_id: sentence} covering them"))
    if paraphrases is not None:
        from ._references import merge_paraphrases, read_paraphrases

        para_table = read_paraphrases(paraphrases)
        rows, _ = merge_paraphrases([{"reference": r[0], **({"paraphrases": r[1:]} if len(r) > 1 else {})}
                                     for r in refs], para_table)
        refs = [[row["reference"], *row.get("paraphrases", [])] for row in rows]
    return hyps, refs, ids
