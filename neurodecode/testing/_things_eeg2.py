"""Write THINGS-EEG2 preprocessed files (pickled dicts saved with ``np.save``, as published)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._core.specs import load_spec
from .._core.validation import check_array, check_option

__all__ = ["write_things_eeg2_subject", "make_things_eeg2_fixture"]


def _save_published(path: Path, obj: dict[str, Any], *, safe_copy: bool) -> None:
    """Write ``obj`` exactly as THINGS-EEG2 publishes it: a pickled dict inside a ``.npy`` file.

    This *writes* the published (pickle-based) format so the loaders can be tested on it (``np.save``
    pickles an object array); reading it back needs the user's explicit ``allow_pickle=True``. With
    ``safe_copy`` the pickle-free ``.npz`` that :func:`neurodecode.data.convert_things_eeg2` would
    produce is written beside it, so a trusted writer's own tree reads without unpickling.
    """
    from .._core.files import atomic_path
    from ..io.npy import save_npz

    with atomic_path(path, suffix=".npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.array(obj, dtype=object))
    if safe_copy:
        save_npz(path.with_suffix(".npz"), obj)  # lists of names become string arrays


def write_things_eeg2_subject(
    root: str | os.PathLike[str],
    subject: int,
    *,
    train: Any,
    test: Any,
    ch_names: Sequence[str],
    times: Any,
    train_concepts: Sequence[str] | None = None,
    test_concepts: Sequence[str] | None = None,
    images_per_concept: int = 10,
    variant: str = "atm",
    safe_copy: bool = False,
) -> Path:
    """Write one subject's ``preprocessed_eeg_{training,test}.npy`` (and ``image_set/image_metadata.npy``).

    Parameters
    ----------
    root : path-like
        Dataset root.
    subject : int
        1-based subject number (folder ``sub-XX``).
    train : ndarray of shape (n_train_images, n_repetitions, n_channels, n_times)
        Training EEG (published: 16540 x 4 x C x T).
    test : ndarray of shape (n_test_images, n_repetitions, n_channels, n_times)
        Test EEG (published: 200 x 80 x C x T).
    ch_names : sequence of str, length n_channels
    times : ndarray of shape (n_times,)
        Seconds relative to image onset.
    train_concepts, test_concepts : sequence of str or None
        Concept names such as ``"00001_aardvark"``: one per ``images_per_concept`` training
        images, one per test image. Generated if None. Test concepts must differ from
        training ones (zero-shot split).
    images_per_concept : int
        Training images per concept (10 in THINGS-EEG2).
    variant : {"atm", "official"}
        Which published variant's folder to write into.
    safe_copy : bool
        Also write the pickle-free ``.npz`` twins (what ``convert_things_eeg2`` makes), which the
        loader prefers; the published pickled ``.npy`` files are written either way.

    Returns
    -------
    folder : pathlib.Path
        The subject's folder.
    """
    spec = load_spec("things_eeg2")
    check_option(variant, "variant", list(spec["variants"]))
    vdir = spec["variants"][variant]["variant_dir"]
    train = check_array(train, "train", ndim=4, finite=False)
    test = check_array(test, "test", ndim=4, finite=False)
    times = check_array(times, "times", ndim=1)
    root = Path(root)
    for key, data in (("training", train), ("test", test)):
        path = root / spec["paths"][key].format(variant_dir=vdir, subject=subject)
        _save_published(path, {"preprocessed_eeg_data": data, "ch_names": list(ch_names), "times": times},
                        safe_copy=safe_copy)
    n_concepts = len(train) // images_per_concept
    if train_concepts is None:
        train_concepts = [f"{i + 1:05d}_concept{i + 1}" for i in range(n_concepts)]
    if test_concepts is None:
        test_concepts = [f"{n_concepts + i + 1:05d}_testconcept{i + 1}" for i in range(len(test))]
    tr_con = [c for c in train_concepts for _ in range(images_per_concept)][: len(train)]
    tr_files = [f"{c.split('_', 1)[-1]}_{j + 1:02d}s.jpg" for c in train_concepts for j in range(images_per_concept)]
    te_files = [f"{c.split('_', 1)[-1]}_01s.jpg" for c in test_concepts]
    meta = {"train_img_concepts": tr_con, "train_img_files": tr_files[: len(train)],
            "test_img_concepts": list(test_concepts), "test_img_files": te_files}
    _save_published(root / spec["paths"]["image_metadata"], meta, safe_copy=safe_copy)
    return root / spec["paths"]["training"].format(variant_dir=vdir, subject=subject).rsplit("/", 1)[0]


def make_things_eeg2_fixture(
    root: str | os.PathLike[str],
    *,
    subjects: Sequence[int] = (1,),
    variant: str = "atm",
    n_train_concepts: int = 3,
    images_per_concept: int = 10,
    n_test: int = 5,
    train_repetitions: int = 4,
    test_repetitions: int = 8,
    n_times: int | None = None,
    seed: int = 0,
) -> Path:
    """Random THINGS-EEG2 tree in a published variant's channel count, rate and time axis (fewer images)."""
    spec = load_spec("things_eeg2")
    v = spec["variants"][variant]
    rng = np.random.default_rng(seed)
    n_ch = int(v["n_channels"])
    n_t = int(v["n_times"]) if n_times is None else n_times
    times = np.round(v["tmin"] + np.arange(n_t) / v["sfreq"], 6)
    ch_names = list(v.get("ch_names") or [f"EEG{i + 1:03d}" for i in range(n_ch)])
    for s in subjects:
        train = rng.normal(size=(n_train_concepts * images_per_concept, train_repetitions, n_ch, n_t)).astype(np.float32)
        test = rng.normal(size=(n_test, test_repetitions, n_ch, n_t)).astype(np.float32)
        write_things_eeg2_subject(root, s, train=train, test=test, ch_names=ch_names, times=times,
                                  images_per_concept=images_per_concept, variant=variant)
    return Path(root)
