"""Trials as a recipe's ``[data]`` table describes them: one function per dataset.

Training and reconstruction read the same trials from the same (validated) recipe: this module is the
one place that turns a ``[data]`` table into :class:`~neurodecode.data.Trials`, so the two can never
disagree on betas, sessions, normalisation, a window, a channel pick, a duration limit or a split.

- :func:`load_nsd_for_recipe`: one NSD subject (keys: ``beta_version``, ``sessions``, ``zscore``,
  ``average_test_repeats``, ``average_train_repeats``, ``source``, ``nan_policy``, ``prepared``, ``rois``,
  ``within_nsdgeneral``);
- :func:`load_things_for_recipe`: one subject's THINGS-EEG2 / THINGS-MEG trials cropped to
  ``[data] window`` (keys: ``sfreq``, ``window``, ``average_test_repetitions``, ``split``;
  THINGS-EEG2: ``variant``, ``allow_pickle``; THINGS-MEG: ``sessions``, ``raw_sfreq``,
  ``l_freq``, ``h_freq``);
- :func:`load_zuco_for_recipe`: every (subject, task) of ZuCo resampled, filtered by duration and
  zero-padded into one table (keys: ``versions``, ``tasks``, ``subjects``, ``resample_to``,
  ``channels``, ``n_channels``, ``max_times``, ``min_duration``, ``max_duration``, ``split``,
  ``scaling``).

The data stay raw (the M/EEG decoders carry their own input scaling).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import MissingFileError, UnsafeCheckpointError, ValidationError
from .._core.logging import logger, progress
from .._core.validation import check_option, format_error

__all__ = ["load_nsd_for_recipe", "nsd_subject_ids", "load_things_for_recipe", "load_zuco_for_recipe",
           "zuco_recipe_subjects", "ZUCO_VERSIONS"]

#: ``[data] versions`` names of ZuCo -> version number.
ZUCO_VERSIONS = {"zuco1": 1, "zuco2": 2}


# ---------------------------------------------------------------------------------------- NSD
def nsd_subject_ids(subjects: Any) -> list[str]:
    """Namespaced NSD ids (``nsd/subj01``) of ``[data] subjects`` (one value or a list)."""
    from ..data._nsd_files import nsd_subject_id

    if subjects is None or isinstance(subjects, (str, int)):
        subjects = [subjects]
    return [nsd_subject_id(s) for s in subjects]


def load_nsd_for_recipe(root: str | Path, data: Mapping[str, Any], subject: Any, *, verbose: Any = None) -> Any:
    """One NSD subject's trials as a validated ``[data]`` table describes them (train and reconstruct).

    Parameters
    ----------
    root : path-like
        The NSD root.
    data : mapping
        The validated ``[data]`` table (:class:`~neurodecode.recipes._schema.NSDData`).
    subject : int or str
    verbose : bool or str or None

    Returns
    -------
    trials : Trials
        Every trial of the subject (``.train`` / ``.test`` split), with provenance.
    """
    from ..data import load_nsd

    return load_nsd(root, subject, beta_version=data["beta_version"], sessions=data["sessions"],
                    zscore=data["zscore"], average_test_repeats=data["average_test_repeats"],
                    average_train_repeats=data["average_train_repeats"], source=data["source"],
                    nan_policy=data["nan_policy"], cache_dir=data["prepared"] or None,
                    rois=data.get("rois") or None, within_nsdgeneral=bool(data.get("within_nsdgeneral", False)),
                    verbose=verbose)


# ---------------------------------------------------------------------------------------- THINGS
def load_things_for_recipe(root: str | Path, dataset: str, data: Mapping[str, Any], subject: Any, *,
                           splits: Sequence[str] = ("train", "test"), verbose: Any = None) -> dict[str, Any]:
    """One subject's THINGS trials, cropped to ``data["window"]``.

    Parameters
    ----------
    root : path-like
        THINGS-EEG2 root (holding ``Preprocessed_data_250Hz/``) or THINGS-MEG BIDS root.
    dataset : {"things-eeg2", "things-meg"}
    data : mapping
        The recipe's ``[data]`` table (see the module docstring).
    subject : int or str
        ``1``, ``"sub-01"``, ``"things-eeg2/sub-01"``, ``"sub-BIGMEG1"``...
    splits : sequence of {"train", "test"}
        Which parts to return (THINGS-EEG2 reads only their files; THINGS-MEG reads every run).
    verbose : bool or str or None

    Returns
    -------
    parts : dict of str to Trials
        ``{"train": single trials, "test": trials (repetitions averaged with
        ``average_test_repetitions``)}`` for the requested splits, each ``X`` of shape
        (n_trials, n_channels, n_times) with ``n_times`` the samples of ``window``.
    """
    from ..data import load_things_eeg2, load_things_meg

    root = Path(root)
    splits = list(splits)
    for s in splits:
        check_option(s, "splits", ("train", "test"))
    window = [float(v) for v in data.get("window", [0.0, 1.0])]
    if len(window) != 2 or not window[0] < window[1]:
        raise ValidationError(format_error("data.window", "[start, stop] in seconds with start < stop",
                                           data.get("window"), "Write e.g. data.window = [0.0, 1.0]"))
    average = bool(data.get("average_test_repetitions", True))
    split = str(data.get("split", "official"))
    check_option(split, "data.split", ("official",))
    if dataset == "things-meg":
        sfreq = float(data.get("sfreq") or 200.0)
        trials = load_things_meg(root, subject, sessions=data.get("sessions") or None, tmin=window[0],
                                 tmax=window[1] - 1.0 / sfreq, sfreq=sfreq, average_test_repeats=average,
                                 exclude_test_concepts=True, raw_sfreq=data.get("raw_sfreq") or None,
                                 l_freq=data.get("l_freq") or None, h_freq=data.get("h_freq") or None,
                                 verbose=verbose)
        return {s: getattr(trials, s) for s in splits}
    check_option(dataset, "data.dataset", ("things-eeg2", "things-meg"))
    variant = str(data.get("variant", "atm"))
    allow = bool(data.get("allow_pickle", False))
    parts: dict[str, Any] = {}
    try:
        for s in splits:
            kw = {"average_repeats": average} if s == "test" else {}
            parts[s] = load_things_eeg2(root, subject, variant=variant, split=s, allow_pickle=allow, verbose=verbose,
                                        **kw)
    except UnsafeCheckpointError as exc:
        raise UnsafeCheckpointError(format_error(
            "data.allow_pickle", "pickle-free .npz twins of the THINGS-EEG2 files, or allow_pickle = true",
            f"{str(allow).lower()}, and only pickled files for {subject} ({exc})",
            "The published preprocessed_eeg_*.npy files are pickles, and unpickling runs code: for a copy you "
            "trust pass --set data.allow_pickle=true, or convert it once with "
            "neurodecode.data.convert_things_eeg2(root, subject, allow_pickle=True)")) from None
    first = parts[splits[0]]
    if str(first.provenance.get("image_ids", "")).startswith("positional"):
        raise UnsafeCheckpointError(format_error(
            "data.allow_pickle", "image ids from image_set/image_metadata.npz (or a trusted .npy)",
            "no readable image metadata (image_metadata.npy is a pickle and allow_pickle is false)",
            "Pass --set data.allow_pickle=true for a trusted copy, or convert it with convert_things_eeg2"))
    want = float(data.get("sfreq") or first.sfreq)
    if not math.isclose(want, float(first.sfreq)):
        raise ValidationError(format_error("data.sfreq", f"the {variant!r} files' rate ({first.sfreq:g} Hz)",
                                           f"{want:g} Hz", "THINGS-EEG2 is not resampled here: pick the matching "
                                           "data.variant ('atm' 250 Hz, 'official' 100 Hz) or data.sfreq"))
    t = np.asarray(first.times, dtype=np.float64)
    step = 1.0 / float(first.sfreq)
    keep = (t >= window[0] - step / 2) & (t < window[1] - step / 2)
    if t[0] > window[0] + step / 2 or t[-1] + step < window[1] - step / 2:
        raise ValidationError(format_error(
            "data.window", f"a window inside the epochs of the files ({t[0]:g} to {t[-1] + step:g} s)",
            window, "Set data.window within the epoch (the ATM 250 Hz release holds -0.2 to 0.8 s)"))
    cut = np.flatnonzero(keep)
    for tr in parts.values():
        tr.X = np.ascontiguousarray(tr.X[:, :, cut.min():cut.max() + 1])
        tr.times = t[keep]
        tr.provenance["window"] = {"seconds": window, "n_times": int(keep.sum()), "convention": "[start, stop)"}
    return parts


# ---------------------------------------------------------------------------------------- ZuCo
def zuco_recipe_subjects(data: Mapping[str, Any], versions: list[int]) -> dict[str, int]:
    """Subject code -> ZuCo version, for ``data["subjects"]`` ("all" or a list)."""
    from .._core.specs import load_spec

    spec = load_spec("zuco")["versions"]
    owner = {code: v for v in versions for code in spec[str(v)]["subjects"]}
    given = data.get("subjects", "all")
    if given in ("all", None):
        return owner
    given = [given] if isinstance(given, str) else list(given)
    codes = [str(s).split("/", 1)[-1] for s in given]
    unknown = [c for c in codes if c not in owner]
    if unknown:
        raise ValidationError(format_error(
            "data.subjects", "ZuCo subject codes of data.versions " + str([f"zuco{v}" for v in versions]),
            unknown, "ZuCo 1.0 codes start with Z (zuco/ZAB), 2.0 codes with Y (zuco/YAC); check data.versions"))
    return {c: owner[c] for c in codes}


def _pick_channels(trials: Any, channels: list[str], sid: str) -> Any:
    names = list(trials.ch_names or [])
    missing = [c for c in channels if c not in names]
    if missing:
        raise ValidationError(format_error("data.channels", f"channels of {sid} ({', '.join(names[:5])}, ...)",
                                           f"{len(missing)} unknown: {missing[:5]}", "Fix the names or drop "
                                           "data.channels (all channels, zero-padded to data.n_channels)"))
    pick = [names.index(c) for c in channels]
    trials.X = np.ascontiguousarray(trials.X[:, pick])
    trials.ch_names = list(channels)
    trials.provenance["channels"] = f"{len(pick)} picked by data.channels"
    return trials


def load_zuco_for_recipe(root: str | Path, data: Mapping[str, Any], *, splits: Sequence[str] | None = None,
                         verbose: Any = None) -> dict[str, Any]:
    """Every (subject, task) of the recipe, resampled, length-filtered and zero-padded (raw): one table.

    Parameters
    ----------
    root : path-like
        A ZuCo version root, or a folder holding ``zuco1/`` and ``zuco2/``.
    data : mapping
        The recipe's ``[data]`` table (see the module docstring); ``subjects`` selects the subjects.
    splits : sequence of {"train", "val", "test"} or None
        Keep only the sentences of these splits (``None``: all). The split is by unique sentence,
        so it does not depend on which subjects or tasks are loaded.
    verbose : bool or str or None

    Returns
    -------
    table : dict
        ``"X"`` (n, n_channels, max_times) float32, zero-padded; ``"lengths"``, ``"texts"``,
        ``"split"``, ``"subject"``, ``"task"``, ``"dataset"``, ``"stimulus_id"`` (the sentence's
        index in its subject's task file), ``"sentiment"`` and ``"relation"`` (GLIM's zero-shot label
        words from ZuCo's ``task_materials``, ``""`` where none) of shape (n,); ``"provenance"`` (per subject and task),
        ``"skipped"``, ``"sfreq"``, ``"n_channels"``, ``"max_times"``, ``"scaling"``.
    """
    from .._core.specs import load_spec
    from ..data import load_zuco

    root = Path(root)
    names = data.get("versions", ["zuco1", "zuco2"])
    names = [names] if isinstance(names, str) else list(names)
    for v in names:
        check_option(v, "data.versions", list(ZUCO_VERSIONS))
    versions = [ZUCO_VERSIONS[v] for v in names]
    tasks = data.get("tasks", ["SR", "NR", "TSR"])
    tasks = [tasks] if isinstance(tasks, str) else [str(t) for t in tasks]
    check_option(str(data.get("split", "unique-sentence")), "data.split", ("unique-sentence",))
    keep_splits = None if splits is None else [check_option(s, "splits", ("train", "val", "test")) for s in splits]
    sfreq = float(data.get("resample_to", 128.0))
    n_channels = int(data.get("n_channels", 128))
    max_times = int(data.get("max_times", 1280))
    lo, hi = float(data.get("min_duration", 0.5)), float(data.get("max_duration") or max_times / sfreq)
    if math.ceil(hi * sfreq - 1e-9) > max_times:
        raise ValidationError(format_error("data.max_duration", f"at most data.max_times / resample_to = "
                                           f"{max_times / sfreq:g} s", f"{hi:g} s",
                                           "Lower data.max_duration or raise data.max_times"))
    scaling = str(data.get("scaling", "none"))
    check_option(scaling, "data.scaling", ("channel-zscore", "none"))
    channels = [str(c) for c in data.get("channels") or []]
    spec = load_spec("zuco")["versions"]
    subjects = zuco_recipe_subjects(data, versions)
    rows: dict[str, list[Any]] = {k: [] for k in ("X", "lengths", "texts", "split", "subject", "task", "dataset",
                                                  "stimulus_id", "sentiment", "relation")}
    prov: dict[str, Any] = {}
    skipped: list[str] = []
    for code, version in progress(list(subjects.items()), desc="load", unit="subject", verbose=verbose):
        vroot = root / f"zuco{version}" if (root / f"zuco{version}").is_dir() else root
        sid = f"zuco/{code}"
        usable = 0  # files with sentences within the duration limits
        for task in [t for t in tasks if t in spec[str(version)]["tasks"]]:
            try:
                tr: Any = load_zuco(vroot, code, version=version, task=task, resample=sfreq,
                                    nan_policy=str(data.get("nan_policy", "zero")), verbose=verbose)
            except MissingFileError:
                skipped.append(f"{sid}/{task}")
                continue
            if channels:
                tr = _pick_channels(tr, channels, sid)
            if tr.X.shape[1] > n_channels:
                raise ValidationError(format_error("data.n_channels", f"at least the {tr.X.shape[1]} channels of "
                                                   f"{sid} (zero-padded montage)", n_channels))
            dur = tr.lengths / float(tr.sfreq)
            keep = (dur >= lo) & (dur <= hi)
            prov[f"{sid}/{task}"] = {**tr.provenance, "n_dropped_duration": int((~keep).sum()),
                                     "durations": f"kept {lo:g} s <= duration <= {hi:g} s"}
            usable += bool(keep.any())
            if keep_splits is not None:
                keep &= np.isin(tr.split, keep_splits)
            if not keep.any():
                continue
            tr = tr.subset(keep, note=f"{lo:g} s <= duration <= {hi:g} s")
            rows["X"].append(tr.X[:, :, :max_times])  # padded once at the end: no second full-size copy
            rows["lengths"].append(tr.lengths)
            rows["texts"] += list(tr.texts or [])
            rows["split"].append(tr.split)
            rows["subject"] += [sid] * len(tr)
            rows["task"] += [task] * len(tr)
            rows["dataset"] += [f"zuco{version}"] * len(tr)
            rows["stimulus_id"].append(np.asarray(tr.stimulus_ids))
            for key in ("sentiment", "relation"):  # GLIM's zero-shot labels ("" where none)
                rows[key] += [str(x) for x in tr.metadata.get(key, [""] * len(tr))]
        if not usable:
            raise MissingFileError(format_error(
                "data.subjects", f"results{code}_<task>.mat files for tasks {tasks} of ZuCo {version}.0",
                f"none usable for {sid} under {vroot}", "Check the data root (ROOT or ROOT/zuco1, ROOT/zuco2) "
                "and data.tasks, or drop the subject"))
    if skipped:
        logger.warning("zuco: no file for %d (subject, task) pair(s), skipped: %s", len(skipped),
                       ", ".join(skipped[:8]))
    if not rows["X"]:
        raise ValidationError(format_error("data", f"sentences of the splits {keep_splits or 'any'} within "
                                           f"{lo:g}-{hi:g} s", "none", "Check data.subjects, data.tasks and the "
                                           "duration limits"))
    # one zero-padded table (real size: about 22k sentences x 128 x 1280 float32 = 14.6 GB); the blocks
    # above are the unpadded sentences, so the peak is this table plus the raw data, not twice the table
    X_all = np.zeros((sum(len(b) for b in rows["X"]), n_channels, max_times), np.float32)
    start = 0
    for block in rows["X"]:
        X_all[start:start + len(block), :block.shape[1], :block.shape[2]] = block
        start += len(block)
    rows["X"] = []
    table: dict[str, Any] = {"X": X_all, "lengths": np.concatenate(rows["lengths"]),
                             "texts": np.asarray(rows["texts"], dtype=object), "split": np.concatenate(rows["split"]),
                             "subject": np.asarray(rows["subject"]), "task": np.asarray(rows["task"]),
                             "dataset": np.asarray(rows["dataset"]), "stimulus_id": np.concatenate(rows["stimulus_id"]),
                             "sentiment": np.asarray(rows["sentiment"], dtype=str),
                             "relation": np.asarray(rows["relation"], dtype=str)}
    table.update(provenance=prov, skipped=skipped, sfreq=sfreq, n_channels=n_channels, max_times=max_times,
                 scaling=scaling)
    return table


def things_image_paths(folder: Path, ids: np.ndarray, concepts: np.ndarray) -> np.ndarray:
    """Relative path of the image of every stimulus id (a file name or stem) under ``folder``, the stimulus'
    own concept folder first (THINGS: ``<concept>/<file>.jpg``); every missing or ambiguous one refused."""
    from ..latents._stimuli import IMAGE_SUFFIXES

    if not folder.is_dir():
        raise MissingFileError(format_error(
            "data.images", "the folder of the THINGS images (e.g. image_set/training_images/<concept>/<file>.jpg)",
            f"nothing at {folder}", "Point --set data.images=DIR at the images the recording showed"))
    index: dict[str, list[str]] = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."):
            rel = p.relative_to(folder).as_posix()
            index.setdefault(p.name, []).append(rel)
            index.setdefault(p.stem, []).append(rel)
    out, missing, ambiguous = [], [], []
    for i, c in zip(ids.tolist(), concepts.tolist()):
        found = index.get(str(i), [])
        own = [r for r in found if Path(r).parent.name == str(c)]
        pick = own or found
        if len(set(pick)) == 1:
            out.append(pick[0])
        elif pick:
            ambiguous.append((i, sorted(set(pick))[:2]))
        else:
            missing.append(i)
    if missing or ambiguous:
        got = (f"{len(missing)} stimuli without an image (e.g. {missing[:3]})" if missing else
               f"several images for {ambiguous[0][0]!r}: {ambiguous[0][1]}")
        raise MissingFileError(format_error("data.images", f"one image file per stimulus under {folder}", got,
                                            "Point data.images at the image set the recording showed"))
    return np.asarray(out)
