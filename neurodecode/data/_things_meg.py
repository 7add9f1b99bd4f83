"""THINGS-MEG: BIDS runs (CTF ``.ds`` or ``.fif``) read with MNE and epoched around image onsets.

Layout (``data_specs/things_meg.toml``)::

    sub-BIGMEG<s>/ses-<SS>/meg/sub-BIGMEG<s>_ses-<SS>_task-main_run-<RR>_meg.ds   (or _meg.fif)
                                                          ..._events.tsv  ..._channels.tsv  ..._meg.json

Every image onset of ``trial_type`` ``exp`` (a training image, shown once) or ``test``
(one of the 200 test images, shown once per session) becomes one epoch; ``catch`` events
are dropped. The image onset is the events file's ``sample`` column when present (the
photodiode-corrected sample the official preprocessing uses), else ``onset`` x sfreq.
Channels: the MEG sensors (reference sensors, trigger and eye-tracking channels dropped)
minus those marked bad in the file or in ``_channels.tsv`` and the spec's known-bad
``MRO11-1609``: 271 of the 272 recorded.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from .._core.docs import fill_doc
from .._core.errors import DataIntegrityError, MetadataMismatchError, MissingFileError, ValidationError
from .._core.logging import logger, progress
from .._core.specs import load_spec
from .._core.validation import check_option, format_error
from ._layout import parse_subject_number, relative_path
from ._trials import Trials

__all__ = ["load_things_meg", "find_things_meg_runs", "check_things_meg"]

_RUN_RE = re.compile(r"_run-(\d+)_meg\.(fif|ds)$")


def _spec() -> dict[str, Any]:
    return load_spec("things_meg")


def _subject(subject: Any) -> int:
    ds = _spec()["dataset"]
    m = re.fullmatch(r"(?:things-meg/)?(?:sub-)?(?:BIGMEG)?(\d+)", subject.strip()) if isinstance(subject, str) else None
    if m:  # "BIGMEG1" (the BIDS label), "sub-01", "things-meg/sub-BIGMEG1"
        subject = m.group(1)
    return parse_subject_number(subject, "things_meg", ds["subject_prefix"], int(ds["n_subjects"]))


def _subject_id(s: int) -> str:
    return str(_spec()["dataset"]["subject_format"]).format(subject=s)


def find_things_meg_runs(
    root: str | os.PathLike[str], subject: Any, *, sessions: Sequence[int] | None = None,
) -> list[tuple[int, int, Path]]:
    """List a subject's recordings as ``(session, run, path)``, sorted.

    A run stored both as ``_meg.fif`` and ``_meg.ds`` is read from the FIF file.

    Parameters
    ----------
    root : path-like
        BIDS root.
    subject : int or str
        1..4 or ``"sub-BIGMEG1"``.
    sessions : sequence of int or None
        1-based sessions to list (each must have at least one run); None: all found.

    Returns
    -------
    runs : list of (int, int, pathlib.Path)
    """
    root = Path(root)
    s = _subject(subject)
    first = relative_path("things_meg", "raw_fif", subject=s, session=1, run=1)
    subj_dir = root / first.split("/", 1)[0]
    if not subj_dir.is_dir():
        raise MissingFileError(format_error("root", f"a THINGS-MEG BIDS root holding {_subject_id(s)}/",
                                            f"nothing at {subj_dir}", f"Expected e.g. {first} (or _meg.ds) under "
                                            f"{root}; download ds004212 from OpenNeuro"))
    if sessions is None:
        found = sorted(int(m.group(1)) for p in subj_dir.glob("ses-*")
                       if (m := re.fullmatch(r"ses-0*(\d+)", p.name)) and p.is_dir())
    else:
        found = [int(x) for x in sessions]
        if not found:
            raise ValidationError(format_error("sessions", "at least one session (1..12)", "an empty selection"))
    runs: list[tuple[int, int, Path]] = []
    for ses in found:
        folder = (root / relative_path("things_meg", "raw_fif", subject=s, session=ses, run=1)).parent
        by_run: dict[int, Path] = {}
        for p in sorted(folder.glob("*_meg.*")) if folder.is_dir() else []:
            m = _RUN_RE.search(p.name)
            if m and (int(m.group(1)) not in by_run or m.group(2) == "fif"):
                by_run[int(m.group(1))] = p
        if not by_run and sessions is not None:
            raise MissingFileError(format_error(
                "sessions", f"runs of session {ses}", f"none in {folder}",
                f"Expected {relative_path('things_meg', 'raw_fif', subject=s, session=ses, run=1)} (or _meg.ds)"))
        runs += [(ses, r, by_run[r]) for r in sorted(by_run)]
    if not runs:
        raise MissingFileError(format_error("root", f"runs of {_subject_id(s)}", f"none under {subj_dir}",
                                            f"Expected {first} (or _meg.ds)"))
    return runs


def _sibling(path: Path, suffix: str) -> Path:
    """``..._run-01_meg.fif`` -> ``..._run-01_<suffix>``."""
    return path.with_name(_RUN_RE.sub(lambda m: f"_run-{m.group(1)}_{suffix}", path.name))


def _read_tsv(path: Path) -> dict[str, list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    if not rows:
        raise DataIntegrityError(format_error(str(path), "a tab-separated file with a header", "an empty file"))
    header = [h.strip() for h in rows[0]]
    bad = [i + 2 for i, r in enumerate(rows[1:]) if r and len(r) != len(header)]
    if bad:
        raise DataIntegrityError(format_error(str(path), f"{len(header)} columns on every line",
                                              f"another count on line(s) {bad[:5]}", "The file is truncated or "
                                              "was edited; download it again"))
    return {h: [r[i] for r in rows[1:] if r] for i, h in enumerate(header)}


def _read_events(path: Path, sfreq: float) -> dict[str, np.ndarray]:
    """Events of one run: ``sample`` (0-based, from the recording start), ``trial_type``, ``image_path``."""
    spec = _spec()["events"]
    if not path.is_file():
        raise MissingFileError(format_error("events", "the run's BIDS _events.tsv", f"nothing at {path}",
                                            "Every run needs its events file (image onsets); download it again"))
    cols = _read_tsv(path)
    missing = [c for c in spec["columns"] if c not in cols]
    if missing:
        raise DataIntegrityError(format_error(str(path), f"columns {spec['columns']}",
                                              f"columns {sorted(cols)} (missing {missing})",
                                              "Check that this is a THINGS-MEG events file"))

    def num(name: str) -> np.ndarray:
        try:
            return np.array([np.nan if v in ("n/a", "") else float(v) for v in cols[name]])
        except ValueError as exc:
            raise DataIntegrityError(format_error(f"{path}:{name}", "numbers", str(exc))) from exc

    onset = num("onset")
    if "sample" in cols:
        sample = num("sample")
        ok = np.isfinite(sample) & np.isfinite(onset) & (onset > 0)
        if ok.any():
            as_seconds = np.abs(sample[ok] - onset[ok] * sfreq).max() <= 1.5
            as_samples = np.abs(sample[ok] - onset[ok]).max() <= 1.5  # onset given in samples
            if not (as_seconds or as_samples):
                implied = float(np.median(sample[ok] / onset[ok]))
                raise MetadataMismatchError(format_error(
                    "sfreq", f"events whose sample = onset x {sfreq:g} Hz (the recording's rate)",
                    f"samples implying {implied:g} Hz in {path}",
                    "The events file belongs to a recording at another sampling rate; use the matching "
                    "recording or events file"))
    else:
        sample = np.round(onset * sfreq)
    return {"sample": sample, "trial_type": np.array(cols["trial_type"], dtype=str),
            "image_path": np.array(cols["image_path"], dtype=str)}


def _image_id_and_concept(image_path: str) -> tuple[str, str]:
    """``images_meg/aardvark/aardvark_01b.jpg`` -> (``aardvark_01b``, ``aardvark``)."""
    p = PurePosixPath(image_path.replace("\\", "/"))
    parent = p.parent.name
    concept = parent if parent and not parent.startswith("images") else p.stem.rsplit("_", 1)[0]
    return p.stem, concept


def _select_channels(raw: Any, path: Path, picks: str | Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Channels to keep (in file order) and those dropped with the reason."""
    import mne

    names = list(raw.ch_names)
    dropped: dict[str, str] = {}
    if not isinstance(picks, str):
        wanted = [str(c) for c in picks]
        lacking = [c for c in wanted if c not in names]
        if lacking:
            raise MetadataMismatchError(format_error("picks", "channels present in the recording",
                                                     f"{len(lacking)} missing from {path}: {lacking[:10]}"))
        return wanted, {c: "not picked" for c in names if c not in wanted}
    check_option(picks, "picks", ("meg",))
    meg = set(np.asarray(names)[mne.pick_types(raw.info, meg=True, ref_meg=False, exclude=[])].tolist())
    status: dict[str, str] = {}
    chan_tsv = _sibling(path, "channels.tsv")
    if chan_tsv.is_file():
        cols = _read_tsv(chan_tsv)
        if "name" in cols and "status" in cols:
            status = dict(zip(cols["name"], cols["status"]))
    known_bad = {str(c).split("-")[0] for c in _spec()["dataset"]["bad_channels"]}
    kept = []
    for c in names:
        if c not in meg:
            dropped[c] = f"not a MEG sensor ({raw.get_channel_types([c])[0]})"
        elif c in raw.info["bads"]:
            dropped[c] = "marked bad in the recording"
        elif status.get(c, "good").strip().lower() == "bad":
            dropped[c] = "status bad in _channels.tsv"
        elif c.split("-")[0] in known_bad:
            dropped[c] = "known bad (data_specs/things_meg.toml bad_channels)"
        else:
            kept.append(c)
    if not kept:
        raise ValidationError(format_error("picks", "at least one usable MEG channel", f"none in {path}",
                                           "Check the recording's channel types and bads"))
    return kept, dropped


def _set_diff(expected: Sequence[str], got: Sequence[str]) -> str:
    lacking = [c for c in expected if c not in set(got)]
    extra = [c for c in got if c not in set(expected)]
    return f"missing {lacking[:10]}{'...' if len(lacking) > 10 else ''} ({len(lacking)}), " \
           f"extra {extra[:10]}{'...' if len(extra) > 10 else ''} ({len(extra)})"


def _mne_verbose(verbose: Any) -> str:
    """MNE's log level: quiet unless debugging (MNE logs to stdout, which ``--json`` keeps for its document)."""
    return "debug" if str(verbose).lower() == "debug" else "error"


def _open_run(path: Path, *, raw_sfreq: float, picks: Any, preload: bool, verbose: Any) -> dict[str, Any]:
    """Read one run's header (or data), check its rate, parse its events and choose its channels."""
    from ..io.meeg import read_raw

    raw = read_raw(path, preload=preload, verbose=_mne_verbose(verbose))
    sf = float(raw.info["sfreq"])
    if not np.isclose(sf, raw_sfreq, rtol=1e-6):
        raise MetadataMismatchError(format_error(
            "raw_sfreq", f"recordings at {raw_sfreq:g} Hz", f"{sf:g} Hz in {path}",
            f"Pass raw_sfreq={sf:g} if the files were resampled on purpose (THINGS-MEG is recorded at "
            f"{_spec()['dataset']['sfreq']:g} Hz); resample to a common rate with sfreq="))
    sidecar = _sibling(path, "meg.json")
    if sidecar.is_file():
        declared = json.loads(sidecar.read_text()).get("SamplingFrequency")
        if declared not in (None, "n/a") and not np.isclose(float(declared), sf, rtol=1e-6):
            raise MetadataMismatchError(format_error(
                "sfreq", f"the rate declared in {sidecar.name} ({float(declared):g} Hz)", f"{sf:g} Hz in {path}",
                "The recording and its sidecar disagree; download the run again"))
    events = _read_events(_sibling(path, "events.tsv"), sf)
    kept, dropped = _select_channels(raw, path, picks)
    return {"raw": raw, "sfreq": sf, "events": events, "kept": kept, "dropped": dropped}


def _check_windows(samples: np.ndarray, rows: np.ndarray, n_times: int, i0: int, i1: int, path: Path,
                   sfreq: float) -> None:
    """Refuse events whose window [sample + i0, sample + i1] leaves the recording (``rows``: 1-based tsv rows)."""
    samples = np.asarray(samples, dtype=np.float64)
    bad = np.flatnonzero((samples + i0 < 0) | (samples + i1 >= n_times) | ~np.isfinite(samples))
    if bad.size:
        raise DataIntegrityError(format_error(
            "events", f"epoch windows inside the recording ({n_times / sfreq:g} s)",
            f"{bad.size} event(s) outside it in {path} (events.tsv rows {rows[bad[:5]].tolist()})",
            "The recording is truncated or the events belong to another run; or shorten tmin/tmax"))


@fill_doc
def load_things_meg(
    root: str | os.PathLike[str],
    subject: Any,
    *,
    sessions: Sequence[int] | None = None,
    tmin: float | None = None,
    tmax: float | None = None,
    sfreq: float | None = None,
    picks: str | Sequence[str] = "meg",
    baseline: tuple[float | None, float | None] | None = None,
    l_freq: float | None = None,
    h_freq: float | None = None,
    average_test_repeats: bool = False,
    exclude_test_concepts: bool = False,
    raw_sfreq: float | None = None,
    ch_names: Sequence[str] | None = None,
    verbose: Any = None,
) -> Trials:
    """Load one THINGS-MEG subject as epochs around image onsets (:class:`Trials`).

    Parameters
    ----------
    root : path-like
        BIDS root of ds004212 (holding ``sub-BIGMEG1/``...).
    subject : int or str
        1..4, ``"sub-BIGMEG1"`` or ``"things-meg/sub-BIGMEG1"``.
    sessions : sequence of int or None
        1-based sessions to read (default: every session on disk).
    tmin, tmax : float or None
        Epoch window in seconds around image onset, both ends included (default: the
        spec's ATM-style 0 to 0.995 s, 200 samples at 200 Hz).
    sfreq : float or None
        Resample each continuous run to this rate before epoching (MNE's polyphase
        resampling, which low-passes below the new Nyquist); ATM-style: 200. None keeps
        the recorded rate.
    picks : "meg" or sequence of str
        ``"meg"``: the MEG sensors minus bad channels (271 in THINGS-MEG); or explicit names.
    baseline : tuple of (float or None, float or None) or None
        MNE baseline interval subtracted from each epoch (e.g. ``(None, 0)`` with tmin < 0).
    l_freq, h_freq : float or None
        Band-pass the continuous run before resampling (the official preprocessing used
        0.1-40 Hz); None: no filter.
    average_test_repeats : bool
        Average the repetitions of each test image (12 in THINGS-MEG, one per session).
    exclude_test_concepts : bool
        Drop training trials whose concept is also a test concept (ATM's zero-shot split:
        1654 training concepts, 200 disjoint test concepts).
    raw_sfreq : float or None
        Expected recording rate (default: the spec's 1200 Hz); a run at another rate raises.
    ch_names : sequence of str or None
        Expected channel set (e.g. a trained model's); a different set raises, listing
        missing and extra channels. The output follows this order.
    %(verbose)s

    Returns
    -------
    trials : Trials
        ``X`` float32 of shape (n_trials, n_channels, n_times) in tesla; ``stimulus_ids``
        image file stems (``"aardvark_01b"``); ``split`` ``"test"`` for the test images,
        ``"train"`` otherwise; ``metadata`` with ``concept``, ``session``, ``run``,
        ``repetition`` (0-based, per image) and ``n_repeats``; ``sfreq``, ``ch_names``,
        ``times``; ``provenance`` records every choice.
    """
    import mne

    from .._core.versions import package_versions

    spec = _spec()
    ev_spec = spec["events"]
    s = _subject(subject)
    root = Path(root)
    tmin = float(spec["epochs"]["tmin"] if tmin is None else tmin)
    tmax = float(spec["epochs"]["tmax"] if tmax is None else tmax)
    if tmax <= tmin:
        raise ValidationError(format_error("tmax", f"a time after tmin ({tmin:g} s)", f"{tmax:g} s"))
    expected_raw = float(spec["dataset"]["sfreq"] if raw_sfreq is None else raw_sfreq)
    if sfreq is not None and sfreq <= 0:
        raise ValidationError(format_error("sfreq", "a positive rate in Hz (or None)", sfreq))
    runs = find_things_meg_runs(root, s, sessions=sessions)
    Xs: list[np.ndarray] = []
    cols: dict[str, list[Any]] = {k: [] for k in ("id", "concept", "split", "session", "run")}
    names: list[str] | None = list(ch_names) if ch_names is not None else None
    times = None
    dropped_channels: dict[str, str] = {}
    n_catch = n_other = n_annot = 0
    out_sf = expected_raw
    for ses, run, path in progress(runs, desc=f"things-meg {_subject_id(s)}", unit="run", verbose=verbose):
        info = _open_run(path, raw_sfreq=expected_raw, picks=picks, preload=True, verbose=verbose)
        raw, ev, kept = info["raw"], info["events"], info["kept"]
        dropped_channels.update(info["dropped"])
        if names is None:
            names = kept
        elif set(kept) != set(names):
            raise MetadataMismatchError(format_error(
                "ch_names", "the same channel set in every run" if ch_names is None else "the expected channel set",
                f"{path} has {_set_diff(names, kept)}",
                "Mark the extra channels bad, or pass the channel set your model was trained on"))
        raw.pick(names)
        if l_freq is not None or h_freq is not None:
            raw.filter(l_freq, h_freq, verbose=_mne_verbose(verbose))
        keep = np.isin(ev["trial_type"], [ev_spec["train_type"], ev_spec["test_type"]])
        n_catch += int((ev["trial_type"] == ev_spec["catch_type"]).sum())
        n_other += int((~keep).sum() - (ev["trial_type"] == ev_spec["catch_type"]).sum())
        samples = ev["sample"][keep]
        if sfreq is not None and not np.isclose(sfreq, raw.info["sfreq"]):
            samples = samples * float(sfreq) / raw.info["sfreq"]
            raw.resample(float(sfreq), method="polyphase", verbose=_mne_verbose(verbose))
        out_sf = float(raw.info["sfreq"])
        samples = np.round(samples).astype(np.int64) if np.isfinite(samples).all() else samples
        i0, i1 = int(round(tmin * out_sf)), int(round(tmax * out_sf))
        _check_windows(samples, np.flatnonzero(keep) + 1, raw.n_times, i0, i1, path, out_sf)
        if not keep.any():
            continue
        events = np.column_stack([samples + raw.first_samp, np.zeros(len(samples), int),
                                  np.ones(len(samples), int)]).astype(np.int64)
        try:
            epochs = mne.Epochs(raw, events, tmin=tmin, tmax=tmax, baseline=baseline, picks=names, preload=True,
                                reject_by_annotation=True, event_repeated="error", proj=False,
                                verbose=_mne_verbose(verbose))
        except ValueError as exc:
            raise ValidationError(format_error("tmin/tmax/baseline", "a valid epoching of the run",
                                               f"{type(exc).__name__}: {exc} ({path})")) from exc
        sel = np.asarray(epochs.selection)
        n_annot += len(samples) - len(sel)
        data = epochs.get_data(copy=False).astype(np.float32)
        from .._core.validation import check_finite

        check_finite(data, "MEG data", axes=("epoch", "channel", "time"), labels={1: list(epochs.ch_names)},
                     where=f"{path} (things-meg/{_subject_id(s)})",
                     fix="The recording holds NaN/inf samples: mark the channel bad in its _channels.tsv "
                         "(status 'bad'), or pass picks without it")
        Xs.append(data)
        times = epochs.times.copy()
        ids_concepts = [_image_id_and_concept(p) for p in ev["image_path"][keep][sel]]
        cols["id"] += [a for a, _ in ids_concepts]
        cols["concept"] += [b for _, b in ids_concepts]
        cols["split"] += ["test" if t == ev_spec["test_type"] else "train" for t in ev["trial_type"][keep][sel]]
        cols["session"] += [ses] * len(sel)
        cols["run"] += [run] * len(sel)
    if not Xs:
        raise ValidationError(format_error("sessions", "runs with training or test image events",
                                           f"none in {len(runs)} run(s) of {_subject_id(s)}",
                                           "Check the events files' trial_type column (exp / test / catch)"))
    X = np.concatenate(Xs)
    ids = np.array(cols["id"], dtype=str)
    split = np.array(cols["split"], dtype=str)
    concept = np.array(cols["concept"], dtype=str)
    leaked = sorted(set(ids[split == "train"]) & set(ids[split == "test"]))
    if leaked:
        raise DataIntegrityError(format_error("events", "training and test images disjoint",
                                              f"{len(leaked)} image(s) in both, e.g. {leaked[:3]}",
                                              "Check the trial_type column of the events files"))
    repetition = np.zeros(len(ids), dtype=np.int64)
    seen: dict[str, int] = {}
    for i, key in enumerate(ids):
        repetition[i] = seen.get(key, 0)
        seen[key] = repetition[i] + 1
    meta = {"concept": concept, "session": np.array(cols["session"]), "run": np.array(cols["run"]),
            "repetition": repetition, "n_repeats": np.ones(len(ids), dtype=np.int64)}
    n_excluded = 0
    if exclude_test_concepts:
        drop = (split == "train") & np.isin(concept, np.unique(concept[split == "test"]))
        n_excluded = int(drop.sum())
        X, ids, split = X[~drop], ids[~drop], split[~drop]
        meta = {k: v[~drop] for k, v in meta.items()}
    if average_test_repeats and (split == "test").any():
        test = np.flatnonzero(split == "test")
        _, first, inverse, counts = np.unique(ids[test], return_index=True, return_inverse=True, return_counts=True)
        order = np.argsort(first)
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        sums = np.zeros((len(order),) + X.shape[1:], dtype=np.float64)
        np.add.at(sums, rank[inverse.ravel()], X[test])
        Xt = (sums / counts[order][:, None, None]).astype(np.float32)
        firsts = test[first[order]]
        train = np.flatnonzero(split == "train")
        X = np.concatenate([X[train], Xt])
        rows = np.concatenate([train, firsts])
        ids, split = ids[rows], split[rows]
        meta = {k: v[rows] for k, v in meta.items()}
        meta["n_repeats"] = np.concatenate([np.ones(len(train), dtype=np.int64), counts[order]])
        meta["repetition"] = np.concatenate([meta["repetition"][: len(train)], np.full(len(order), -1)])
    if not len(X):
        raise ValidationError(format_error("exclude_test_concepts", "some trials left", "an empty selection"))
    if names is not None and len(names) != int(spec["dataset"]["n_channels"]):
        logger.info("things-meg: %d channels (the release has %d usable)", len(names), spec["dataset"]["n_channels"])
    provenance = {
        "dataset": "things-meg", "loader": "neurodecode.data.load_things_meg", "root": str(root),
        "subject": f"things-meg/{_subject_id(s)}", "files": [str(p) for _, _, p in runs],
        "sessions": sorted({ses for ses, _, _ in runs}), "n_runs": len(runs), "raw_sfreq": expected_raw,
        "sfreq": out_sf, "resampled": None if sfreq is None else f"mne.io.Raw.resample to {out_sf:g} Hz (polyphase, anti-aliased)",
        "filter": None if l_freq is None and h_freq is None else {"l_freq": l_freq, "h_freq": h_freq},
        "tmin": tmin, "tmax": tmax, "baseline": None if baseline is None else list(baseline),
        "picks": picks if isinstance(picks, str) else list(picks), "n_channels": len(names or []),
        "dropped_channels": dropped_channels, "onsets": "events.tsv 'sample' (else onset x sfreq)",
        "n_catch_dropped": n_catch, "n_other_events_ignored": n_other, "n_dropped_by_annotation": n_annot,
        "split": "test = trial_type 'test' (200 images x 12 sessions); train = 'exp' (shown once)",
        "stimulus_ids": "image file stems from events.tsv image_path",
        "exclude_test_concepts": bool(exclude_test_concepts), "n_train_excluded_test_concepts": n_excluded,
        "average_test_repeats": bool(average_test_repeats),
        "repeats": "test averaged" if average_test_repeats else "single trials",
        "versions": package_versions(("numpy", "mne")),
    }
    return Trials(X=X, stimulus_ids=ids, subject=f"things-meg/{_subject_id(s)}", split=split, sfreq=out_sf,
                  ch_names=list(names or []), times=times, metadata=meta, provenance=provenance)


def check_things_meg(
    root: str | os.PathLike[str], subjects: Sequence[Any] | None = None, *, raw_sfreq: float | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Check a THINGS-MEG tree without loading the data; return ``(report, problems)``.

    Reads each run's header (not its samples), its events and channels files, and checks
    the rate, the channel set across runs, that every epoch window (the spec's ATM
    window) lies inside its recording, and that no session or run is missing (holes, or
    fewer sessions than the other subjects of the tree). Nothing is raised: every problem
    is listed.

    Returns
    -------
    report : dict
        ``{"subjects": {"<s>": {"sessions", "runs", "n_channels", "sfreq", "train_epochs",
        "test_epochs", "train_images", "test_images", "catch_events"}}}``.
    problems : list of str
    """
    root = Path(root)
    spec = _spec()
    ev_spec = spec["events"]
    expected_raw = float(spec["dataset"]["sfreq"] if raw_sfreq is None else raw_sfreq)
    problems: list[str] = []
    report: dict[str, Any] = {"subjects": {}}
    if subjects is None:
        subjects = sorted(int(m.group(1)) for p in root.glob(f"{spec['dataset']['subject_prefix']}*")
                          if (m := re.fullmatch(rf"{spec['dataset']['subject_prefix']}(\d+)", p.name)))
        if not subjects:
            problems.append(f"no subject found: missing {relative_path('things_meg', 'raw_fif', subject=1, session=1, run=1)}"
                            f" (or _meg.ds) under {root}")
    warnings: list[str] = []
    report["warnings"] = warnings
    n_sessions: dict[int, int] = {}
    for subject in subjects:
        try:
            s = _subject(subject)
            runs = find_things_meg_runs(root, s)
        except Exception as exc:  # every problem is collected, none stops the check
            problems.append(f"subject {subject}: {exc}")
            continue
        sessions = sorted({ses for ses, _, _ in runs})
        holes = [x for x in range(1, max(sessions) + 1) if x not in sessions]
        if holes:
            problems.append(f"{_subject_id(s)}: missing session(s) {', '.join(f'ses-{x:02d}' for x in holes)} "
                            f"({relative_path('things_meg', 'raw_fif', subject=s, session=holes[0], run=1)} or "
                            f"_meg.ds) while sessions up to ses-{max(sessions):02d} are present")
        n_sessions[s] = max(sessions)
        for ses in sessions:
            run_nums = sorted(r for x, r, _ in runs if x == ses)
            gaps = [r for r in range(1, max(run_nums) + 1) if r not in run_nums]
            if gaps:
                problems.append(f"{_subject_id(s)} ses-{ses:02d}: missing run(s) "
                                f"{', '.join(f'run-{r:02d}' for r in gaps)} while runs up to run-{max(run_nums):02d} "
                                "are present")
        names: list[str] | None = None
        sfreqs: set[float] = set()
        train_ids: list[str] = []
        test_ids: list[str] = []
        n_catch = 0
        for ses, run, path in runs:
            label = f"{_subject_id(s)} ses-{ses:02d} run-{run:02d}"
            try:
                info = _open_run(path, raw_sfreq=expected_raw, picks="meg", preload=False, verbose=None)
                if names is None:
                    names = info["kept"]
                elif set(info["kept"]) != set(names):
                    problems.append(f"{label}: channel set differs from the first run: {_set_diff(names, info['kept'])}")
                ev = info["events"]
                sf = info["sfreq"]
                i0 = int(round(float(spec["epochs"]["tmin"]) * sf))
                i1 = int(round(float(spec["epochs"]["tmax"]) * sf))
                keep = np.isin(ev["trial_type"], [ev_spec["train_type"], ev_spec["test_type"]])
                _check_windows(ev["sample"][keep], np.flatnonzero(keep) + 1, info["raw"].n_times, i0, i1, path, sf)
                sfreqs.add(sf)
                stems = [_image_id_and_concept(p)[0] for p in ev["image_path"]]
                train_ids += [x for x, t in zip(stems, ev["trial_type"]) if t == ev_spec["train_type"]]
                test_ids += [x for x, t in zip(stems, ev["trial_type"]) if t == ev_spec["test_type"]]
                n_catch += int((ev["trial_type"] == ev_spec["catch_type"]).sum())
            except Exception as exc:
                problems.append(f"{label}: {exc}")
        report["subjects"][str(s)] = {
            "sessions": len({ses for ses, _, _ in runs}), "runs": len(runs), "n_channels": len(names or []),
            "sfreq": sorted(sfreqs)[0] if len(sfreqs) == 1 else sorted(sfreqs),
            "train_epochs": len(train_ids), "test_epochs": len(test_ids),
            "train_images": len(set(train_ids)), "test_images": len(set(test_ids)), "catch_events": n_catch,
        }
    if len(set(n_sessions.values())) > 1:
        most = max(n_sessions.values())
        problems.extend(f"{_subject_id(s)}: sessions ses-{n + 1:02d} to ses-{most:02d} missing (other subjects of "
                        f"this tree have {most})" for s, n in sorted(n_sessions.items()) if n < most)
    return report, problems
