"""THINGS-EEG2: preprocessed EEG of the official (17 ch, 100 Hz) and ATM (63 ch, 250 Hz) releases.

The published files are Python dicts pickled into ``.npy``; reading them needs
``allow_pickle=True``. :func:`convert_things_eeg2` turns them once into pickle-free
``.npz`` (or HDF5) files beside the originals, which :func:`load_things_eeg2` then
prefers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._core.docs import fill_doc
from .._core.errors import DataIntegrityError, MetadataMismatchError, MissingFileError, ShapeMismatchError
from .._core.logging import logger
from .._core.specs import load_spec
from .._core.validation import check_option, format_error
from ._layout import parse_subject_number
from ._trials import Trials

__all__ = ["load_things_eeg2", "convert_things_eeg2", "check_sfreq"]

_PARTS = {"train": "training", "test": "test"}


def _spec() -> dict[str, Any]:
    return load_spec("things_eeg2")


def _subject(subject: Any) -> int:
    return parse_subject_number(subject, "things_eeg2", "sub-", int(_spec()["dataset"]["n_subjects"]))


def _path(root: Path, key: str, variant: str, subject: int) -> Path:
    spec = _spec()
    rel = spec["paths"][key].format(variant_dir=spec["variants"][variant]["variant_dir"], subject=subject)
    p = root / rel
    if not p.exists():  # root may be the variant folder itself
        alt = root / rel.split("/", 1)[1]
        if alt.exists():
            return alt
    return p


def check_sfreq(times: np.ndarray, sfreq: float, where: str) -> float:
    """Check the sampling interval of ``times`` (s) matches ``sfreq`` (Hz); return the measured rate."""
    times = np.asarray(times, dtype=np.float64).ravel()
    if len(times) < 2:
        raise ShapeMismatchError(format_error("times", "at least 2 samples", times))
    steps = np.diff(times)
    measured = 1.0 / float(np.median(steps))
    if not np.isclose(measured, sfreq, rtol=1e-3) or np.ptp(steps) > 1e-3 / sfreq:
        raise MetadataMismatchError(format_error(
            "times", f"samples every {1 / sfreq:g} s ({sfreq:g} Hz) in {where}",
            f"a step of {float(np.median(steps)):g} s ({measured:g} Hz)",
            "Pick the variant that matches the files (variant='official' is 100 Hz, 'atm' 250 Hz)"))
    return measured


#: A value beyond this many times the file's median absolute value is damage, not EEG.
_DAMAGE_FACTOR = 1e6


def _check_values(data: np.ndarray, path: Path, subject: int, ch_names: Sequence[str], chunk: int = 64) -> None:
    """Refuse non-finite or absurd values (flipped or overwritten bytes), naming the file, subject and channel.

    ``data`` is (n_images, n_repetitions, n_channels, n_times). A pickled ``.npy`` keeps its
    array bytes raw, so damage inside them unpickles "fine": random bytes read as float32
    are mostly NaN/inf or many orders of magnitude off the recording's scale.
    """
    if not np.issubdtype(data.dtype, np.floating):
        raise DataIntegrityError(format_error(
            "preprocessed_eeg_data", "a float array", f"dtype {data.dtype} in {path}",
            "Check that this is a THINGS-EEG2 preprocessed file (it may be damaged: download it again)"))
    flat = data.reshape(-1)
    sample = np.asarray(flat[:: max(1, flat.size // 200_000)], dtype=np.float64)
    sample = np.abs(sample[np.isfinite(sample)])
    scale = float(np.median(sample)) if sample.size else 0.0
    limit = _DAMAGE_FACTOR * scale if scale > 0 else np.inf
    n_bad, first = 0, None
    with np.errstate(invalid="ignore", over="ignore"):
        for start in range(0, data.shape[0], chunk):
            block = data[start:start + chunk]
            bad = ~np.isfinite(block) | (np.abs(block) > limit)
            if bad.any():
                n_bad += int(bad.sum())
                if first is None:
                    first = np.argwhere(bad)[0] + np.array([start, 0, 0, 0])
    if n_bad:
        i, r, c, t = (int(v) for v in first)  # type: ignore[union-attr]
        channel = ch_names[c] if c < len(ch_names) else f"#{c}"
        raise DataIntegrityError(format_error(
            "preprocessed_eeg_data", f"finite EEG values on the file's scale (|x| <= {limit:.3g}, "
            f"{_DAMAGE_FACTOR:g} x its median |x|)",
            f"{n_bad} damaged value(s) in {path} (things-eeg2/sub-{subject:02d}), first at image {i}, repetition "
            f"{r}, channel {channel}, sample {t}",
            "The file is corrupted (overwritten or flipped bytes): download it again and compare its size and "
            "checksum with the OSF release"))


def _read_part(root: Path, part: str, variant: str, subject: int, allow_pickle: bool) -> tuple[dict[str, Any], Path]:
    from ..io.npy import load_npy, load_npz

    npz = _path(root, f"{part}_npz", variant, subject)
    h5 = npz.with_suffix(".h5")
    npy = _path(root, part, variant, subject)
    keys = _spec()["keys"]["eeg"]
    if npz.is_file():
        obj: Any = load_npz(npz, allow_pickle=allow_pickle)
        path = npz
    elif h5.is_file():
        from ..io.hdf5 import open_hdf5

        with open_hdf5(h5) as f:
            obj = {k: f[k][()] for k in f.keys()}
        path = h5
    else:
        rel = _spec()["paths"][part].format(variant_dir=_spec()["variants"][variant]["variant_dir"], subject=subject)
        obj = load_npy(npy, allow_pickle=allow_pickle, hint=f"Expected {rel} under the THINGS-EEG2 root")
        path = npy
    if not isinstance(obj, dict):
        raise DataIntegrityError(format_error(str(path), f"a dict with keys {keys}", type(obj).__name__,
                                              "Check that this is a THINGS-EEG2 preprocessed file"))
    missing = [k for k in keys if k not in obj]
    if missing:
        raise DataIntegrityError(format_error(str(path), f"keys {keys}", f"keys: {', '.join(sorted(obj))}",
                                              "Check that this is a THINGS-EEG2 preprocessed file"))
    obj["ch_names"] = [c.decode() if isinstance(c, bytes) else str(c) for c in np.asarray(obj["ch_names"]).ravel()]
    return obj, path


def _image_metadata(root: Path, allow_pickle: bool) -> dict[str, list[str]] | None:
    from ..io.npy import load_npy, load_npz, npy_is_pickled

    npy = root / _spec()["paths"]["image_metadata"]
    npz = npy.with_suffix(".npz")
    if npz.is_file():
        return {k: [str(x) for x in v] for k, v in load_npz(npz, allow_pickle=allow_pickle).items()}
    if npy.is_file() and (allow_pickle or not npy_is_pickled(npy)):
        meta = load_npy(npy, allow_pickle=allow_pickle)
        return {k: [str(x) for x in meta[k]] for k in _spec()["keys"]["image_metadata"] if k in meta}
    return None


@fill_doc
def load_things_eeg2(
    root: str | os.PathLike[str],
    subject: Any,
    *,
    variant: str = "atm",
    average_repeats: bool = False,
    allow_pickle: bool = False,
    split: str | Sequence[str] = ("train", "test"),
    ch_names: Sequence[str] | None = None,
    verbose: Any = None,
) -> Trials:
    """Load one THINGS-EEG2 subject's preprocessed EEG as :class:`Trials`.

    Parameters
    ----------
    root : path-like
        Dataset root (holding ``<variant_dir>/sub-XX/``) or the variant folder itself.
    subject : int or str
        1, ``"sub-01"`` or ``"things-eeg2/sub-01"``.
    variant : {"atm", "official"}
        ``"atm"``: 63 channels at 250 Hz; ``"official"``: 17 posterior channels at 100 Hz.
        The sampling rate is checked against the files' ``times``.
    average_repeats : bool
        Average the repetitions of each image (4 in training, 80 in test).
    %(allow_pickle)s
        Not needed once :func:`convert_things_eeg2` has written the ``.npz`` files.
    split : str or sequence of str
        Which parts to load: ``"train"``, ``"test"`` or both.
    ch_names : sequence of str or None
        Expected channel set (e.g. a trained model's); a different set raises.
    %(verbose)s

    Returns
    -------
    trials : Trials
        ``X`` float32 of shape (n_trials, n_channels, n_times) (n_trials = images x
        repetitions, or images when averaged); ``stimulus_ids`` image file names;
        ``metadata`` with ``concept``, ``image_index`` and ``repetition`` (0-based);
        ``sfreq``, ``ch_names``, ``times``.
    """
    spec = _spec()
    check_option(variant, "variant", list(spec["variants"]))
    parts = [split] if isinstance(split, str) else list(split)
    if not parts:
        raise ShapeMismatchError(format_error("split", "at least one of 'train', 'test'", "an empty selection"))
    for p in parts:
        check_option(p, "split", list(_PARTS))
    s = _subject(subject)
    root = Path(root)
    v = spec["variants"][variant]
    sfreq = float(v["sfreq"])
    meta = _image_metadata(root, allow_pickle)
    Xs, ids, splits, concepts, img_idx, reps, files = [], [], [], [], [], [], []
    times = names = None
    times_layout = "one time entry per sample"
    for part in parts:
        obj, path = _read_part(root, _PARTS[part], variant, s, allow_pickle)
        files.append(str(path))
        data = np.asarray(obj[spec["keys"]["data"]])
        if data.ndim != 4:
            raise ShapeMismatchError(format_error(str(path), "EEG of shape (n_images, n_repetitions, n_channels, "
                                                  "n_times)", data, "Check that this is a preprocessed file"))
        t = np.asarray(obj["times"], dtype=np.float64).ravel()
        if len(t) > data.shape[-1] and variant == "atm":
            # the ATM 250 Hz release epochs -0.2..1.0 s (300 samples), saves data[..., 50:] and keeps the
            # full 300-entry times: the data are the epoch's LAST samples (0 to 1 s after onset)
            times_layout = f"{len(t)} time entries for {data.shape[-1]} samples: the data are the last " \
                           f"{data.shape[-1]} (the ATM release's data[..., {len(t) - data.shape[-1]}:])"
            t = t[len(t) - data.shape[-1]:]
        if len(t) != data.shape[-1]:
            raise ShapeMismatchError(format_error("times", f"{data.shape[-1]} samples (last axis of the EEG)",
                                                  f"{len(t)} in {path}"))
        check_sfreq(t, sfreq, str(path))
        _check_values(data, path, s, obj["ch_names"])
        if len(obj["ch_names"]) != data.shape[2]:
            raise ShapeMismatchError(format_error("ch_names", f"{data.shape[2]} names (axis 2 of the EEG)",
                                                  f"{len(obj['ch_names'])} in {path}"))
        if data.shape[2] != int(v["n_channels"]):
            raise MetadataMismatchError(format_error(
                "variant", f"{v['n_channels']} channels for variant {variant!r}", f"{data.shape[2]} in {path}",
                "Pick the variant that matches the files"))
        expected = list(ch_names) if ch_names is not None else (names or v.get("ch_names"))
        if expected is not None and set(expected) != set(obj["ch_names"]):
            extra = sorted(set(obj["ch_names"]) - set(expected))
            lacking = sorted(set(expected) - set(obj["ch_names"]))
            raise MetadataMismatchError(format_error(
                "ch_names", "the expected channel set", f"{path} has extra {extra[:5]} and lacks {lacking[:5]}",
                "Use files of one preprocessing variant (and the channels your model was trained on)"))
        if times is not None and not np.allclose(times, t):
            raise MetadataMismatchError(format_error("times", "the same time axis in every file", f"another in {path}"))
        times, names = t, obj["ch_names"]
        n_img, n_rep = data.shape[:2]
        key_files, key_con = f"{part}_img_files", f"{part}_img_concepts"
        if meta is not None and key_files in meta and len(meta[key_files]) == n_img:
            img_files, img_con = np.asarray(meta[key_files]), np.asarray(meta[key_con])
        else:
            per = int(spec["dataset"]["train_images_per_concept"]) if part == "train" else 1
            img_files = np.array([f"{part}_{i:05d}" for i in range(n_img)])
            img_con = np.array([f"{part}_concept_{i // per:04d}" for i in range(n_img)])
        if average_repeats:
            Xs.append(data.mean(axis=1, dtype=np.float64).astype(np.float32))
            rep = np.full(n_img, -1)
            idx = np.arange(n_img)
        else:
            Xs.append(data.reshape((n_img * n_rep,) + data.shape[2:]).astype(np.float32))
            idx = np.repeat(np.arange(n_img), n_rep)
            rep = np.tile(np.arange(n_rep), n_img)
        ids.append(img_files[idx])
        concepts.append(img_con[idx])
        img_idx.append(idx)
        reps.append(rep)
        splits.append(np.full(len(idx), part))
    if set(parts) == {"train", "test"}:
        overlap = set(np.concatenate(concepts[:1]).tolist()) & set(np.concatenate(concepts[1:]).tolist())
        if overlap and meta is not None:
            logger.warning("things-eeg2: %d concept(s) in both train and test (expected disjoint)", len(overlap))
    X = np.concatenate(Xs)
    from .._core.versions import package_versions

    provenance = {
        "dataset": "things-eeg2", "loader": "neurodecode.data.load_things_eeg2", "root": str(root),
        "subject": f"things-eeg2/sub-{s:02d}", "variant": variant, "files": files, "sfreq": sfreq,
        "n_channels": len(names or []), "average_repeats": bool(average_repeats),
        "repeats": "averaged" if average_repeats else "single trials", "split": parts,
        "image_ids": "image_metadata file names" if meta is not None else "positional (no image metadata read)",
        "allow_pickle": bool(allow_pickle), "times": times_layout, "versions": package_versions(("numpy",)),
    }
    return Trials(X=X, stimulus_ids=np.concatenate(ids), subject=f"things-eeg2/sub-{s:02d}",
                  split=np.concatenate(splits), sfreq=sfreq, ch_names=list(names or []), times=times,
                  metadata={"concept": np.concatenate(concepts), "image_index": np.concatenate(img_idx),
                            "repetition": np.concatenate(reps)}, provenance=provenance)


def convert_things_eeg2(
    root: str | os.PathLike[str],
    subject: Any,
    *,
    variant: str = "atm",
    allow_pickle: bool = False,
    out_format: str = "npz",
) -> list[Path]:
    """Convert a subject's pickled ``.npy`` files once into pickle-free ``.npz`` (or ``.h5``) files.

    The new files sit beside the originals (``preprocessed_eeg_training.npz``...), and
    ``image_set/image_metadata.npz`` beside the image metadata; :func:`load_things_eeg2`
    prefers them and then needs no ``allow_pickle``. Writes are atomic.

    Parameters
    ----------
    root : path-like
        Dataset root.
    subject : int or str
        Subject.
    variant : {"atm", "official"}
    allow_pickle : bool
        Must be True: reading the originals unpickles them (only for files you trust).
    out_format : {"npz", "hdf5"}

    Returns
    -------
    paths : list of pathlib.Path
        Files written.
    """
    from .._core.files import atomic_path
    from ..io.npy import load_npy, save_npz

    check_option(out_format, "out_format", ("npz", "hdf5"))
    check_option(variant, "variant", list(_spec()["variants"]))
    s = _subject(subject)
    root = Path(root)
    written = []
    for part in _PARTS.values():
        npy = _path(root, part, variant, s)
        if not npy.is_file():
            raise MissingFileError(format_error("root", f"{npy.name} of sub-{s:02d}", f"nothing at {npy}",
                                                "Check the root and variant"))
        obj = load_npy(npy, allow_pickle=allow_pickle)
        arrays = {"preprocessed_eeg_data": np.asarray(obj["preprocessed_eeg_data"]),
                  "ch_names": np.asarray([str(c) for c in obj["ch_names"]]),
                  "times": np.asarray(obj["times"], dtype=np.float64)}
        if out_format == "npz":
            out = npy.with_suffix(".npz")
            save_npz(out, arrays)
        else:
            import h5py

            out = npy.with_suffix(".h5")
            with atomic_path(out, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
                f.create_dataset("preprocessed_eeg_data", data=arrays["preprocessed_eeg_data"])
                f.create_dataset("ch_names", data=arrays["ch_names"].astype("S"))
                f.create_dataset("times", data=arrays["times"])
        written.append(out)
    meta_npy = root / _spec()["paths"]["image_metadata"]
    if meta_npy.is_file():
        meta = load_npy(meta_npy, allow_pickle=allow_pickle)
        out = meta_npy.with_suffix(".npz")
        save_npz(out, {k: np.asarray([str(x) for x in meta[k]]) for k in _spec()["keys"]["image_metadata"]
                       if k in meta})
        written.append(out)
    return written
