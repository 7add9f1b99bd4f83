"""ZuCo 1.0 (MATLAB v5) and 2.0 (MATLAB v7.3): sentence-level EEG with the sentence read.

Sentences without usable EEG (empty or all-NaN ``rawData``, as in the release) are
dropped and counted in the provenance. Isolated NaN/inf samples inside a usable
sentence follow ``nan_policy``: replaced by 0 and counted in the provenance (per
channel), or refused with the file, sentence and channel named. The split is by unique sentence: a sentence
goes to train/val/test according to the SHA-256 of its text, so the same sentence
lands in the same split for every subject and task (no text leakage).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import DataIntegrityError, MetadataMismatchError, MissingFileError, ValidationError
from .._core.specs import load_spec
from .._core.validation import check_option, format_error
from ._trials import Trials
from ._zuco_labels import match_labels, read_zuco_labels

__all__ = ["load_zuco", "sentence_split"]


def _spec() -> dict[str, Any]:
    return load_spec("zuco")


def sentence_split(text: str, fractions: dict[str, float] | None = None) -> str:
    """Deterministic split of a sentence from the SHA-256 of its stripped text."""
    fr = fractions or _spec()["split"]["fractions"]
    u = int.from_bytes(hashlib.sha256(text.strip().encode("utf-8")).digest()[:8], "big") / 2.0**64
    edge = 0.0
    for name in ("train", "val", "test"):
        edge += float(fr.get(name, 0.0))
        if u < edge:
            return name
    return "test"


def _find(root: Path, subject: str, task: str, version: int) -> Path:
    spec = _spec()
    v = spec["versions"][str(version)]
    rel = spec["paths"]["results"].format(task_dir=v["task_dirs"][task], subject=subject, task=task)
    p = root / rel
    if p.is_file():
        return p
    hits = sorted(root.rglob(f"results{subject}_{task}.mat")) if root.is_dir() else []
    if hits:
        return hits[0]
    raise MissingFileError(format_error("root", f"results{subject}_{task}.mat", f"nothing under {root}",
                                        f"Expected {rel} under the ZuCo {version}.0 root"))


def load_zuco(
    root: str | os.PathLike[str],
    subject: str,
    *,
    version: int,
    task: str,
    sfreq: float | None = None,
    resample: float | None = None,
    ch_names: list[str] | None = None,
    nan_policy: str = "zero",
    verbose: Any = None,
) -> Trials:
    """Load one ZuCo subject's sentence-level EEG for one task as :class:`Trials`.

    Parameters
    ----------
    root : path-like
        Root of the ZuCo version (holding the task folders); the results file is also
        searched for recursively.
    subject : str
        Subject code (``"ZAB"``, ``"YAC"``) or ``"zuco/ZAB"``.
    version : {1, 2}
        ZuCo 1.0 (MATLAB v5, tasks SR/NR/TSR) or 2.0 (MATLAB v7.3, tasks NR/TSR).
    task : str
        ``"SR"``, ``"NR"`` or ``"TSR"``.
    sfreq : float or None
        Expected sampling rate; defaults to the spec's 500 Hz and is checked against the
        file's ``sfreq`` variable when present (a check of the recording, not a conversion).
    resample : float or None
        Target rate in Hz (GLIM: ``resample=128``). Each sentence is resampled on its own
        with :func:`scipy.signal.resample_poly` at ``up/down``, the rational approximation
        of ``resample / sfreq`` (500 -> 128 Hz: 32/125); its length becomes
        ``ceil(n * up / down)`` and the padding follows. ``sfreq``, ``times``, ``lengths``
        and the provenance describe the resampled data. ``None`` keeps the recorded rate.
    ch_names : list of str or None
        Expected channel set (checked when the file carries channel labels).
    nan_policy : {"zero", "raise"}
        NaN/inf samples inside a sentence with EEG (the release has some): ``"zero"``
        (default, as GLIM) replaces them by 0 and records in the provenance how many, in
        how many sentences and on which channels; ``"raise"`` refuses the file, naming the
        sentence and channel. All-NaN sentences are dropped either way (and counted).
    verbose : bool | str | int | None
        Unused (kept for a uniform signature).

    Returns
    -------
    trials : Trials
        ``X`` float32 of shape (n_sentences, n_channels, max_times), zero-padded, with
        ``lengths``; ``texts`` the sentences; ``stimulus_ids`` the sentence's index in the
        file; ``split`` by unique sentence; ``metadata`` with ``task``, ``sentiment`` and
        ``relation`` (GLIM's label words from ``root/task_materials``, ``""`` where a sentence has
        none or the tables are absent; see :func:`~neurodecode.data._zuco_labels.read_zuco_labels`).
    """
    from ..io.matlab import load_mat, mat_version

    spec = _spec()
    check_option(version, "version", (1, 2))
    check_option(nan_policy, "nan_policy", ("zero", "raise"))
    v = spec["versions"][str(version)]
    check_option(task, "task", list(v["tasks"]))
    subject = str(subject).split("/", 1)[-1] if str(subject).startswith("zuco/") else str(subject)
    expected_sfreq = float(spec["dataset"]["sfreq"] if sfreq is None else sfreq)
    if resample is not None and not (np.isfinite(float(resample)) and float(resample) > 0):
        raise ValidationError(format_error("resample", "a positive target rate in Hz, or None", resample,
                                           "GLIM uses resample=128"))
    path = _find(Path(root), subject, task, version)
    found_version = mat_version(path)
    if found_version != int(v["mat_version"]):
        raise MetadataMismatchError(format_error(
            "version", f"a MATLAB v{v['mat_version']} file for ZuCo {version}.0",
            f"a v{found_version} file at {path}", "Pass the ZuCo version this file belongs to"))
    keys = spec["keys"]
    content = load_mat(path)
    if keys["sentences"] not in content:
        raise DataIntegrityError(format_error("key", f"{keys['sentences']!r} in {path}",
                                              f"variables: {', '.join(sorted(content))}"))
    if "sfreq" in content:
        file_sfreq = float(np.asarray(content["sfreq"]).ravel()[0])
        if not np.isclose(file_sfreq, expected_sfreq):
            raise MetadataMismatchError(format_error("sfreq", f"{expected_sfreq:g} Hz", f"{file_sfreq:g} Hz in {path}",
                                                     f"Pass sfreq={file_sfreq:g} (the recording's rate); "
                                                     "convert with resample=<target Hz>"))
    names = None
    if "chanlocs" in content and isinstance(content["chanlocs"], dict) and "labels" in content["chanlocs"]:
        labels = content["chanlocs"]["labels"]
        names = labels.split() if isinstance(labels, str) else [str(x) for x in labels]
        if ch_names is not None and set(ch_names) != set(names):
            raise MetadataMismatchError(format_error("ch_names", "the expected channel set",
                                                     f"{len(names)} other channels in {path}"))
    records = content[keys["sentences"]]
    records = [records] if isinstance(records, dict) else list(records)
    texts, eegs, idx, dropped = [], [], [], 0
    nan_samples = nan_sentences = 0
    nan_channels: dict[str, int] = {}
    n_ch = None
    for i, rec in enumerate(records):
        if keys["text"] not in rec or keys["eeg"] not in rec:
            raise DataIntegrityError(format_error(f"{keys['sentences']}[{i}]", f"fields {keys['text']!r} and "
                                                  f"{keys['eeg']!r}", f"fields {sorted(rec)}"))
        eeg = np.asarray(rec[keys["eeg"]], dtype=np.float64)
        if eeg.size == 0 or eeg.ndim != 2 or not np.isfinite(eeg).any():
            dropped += 1
            continue
        if n_ch is None:
            n_ch = eeg.shape[0]
        elif eeg.shape[0] != n_ch:
            raise MetadataMismatchError(format_error(f"{keys['sentences']}[{i}].rawData", f"{n_ch} channels",
                                                     f"{eeg.shape[0]} in {path}"))
        bad = ~np.isfinite(eeg)
        if bad.any():
            per_channel = bad.sum(axis=1)
            chans = np.flatnonzero(per_channel)
            label = [names[c] if names is not None and c < len(names) else f"E{c + 1}" for c in chans]
            if nan_policy == "raise":
                raise ValidationError(format_error(
                    f"{keys['sentences']}[{i}].{keys['eeg']}", "only finite EEG samples",
                    f"{int(bad.sum())} NaN/inf sample(s) on channel(s) {', '.join(label[:5])} of sentence {i} in "
                    f"{path} (zuco/{subject}, {task})",
                    "Pass nan_policy='zero' (CLI: --nan-policy zero) to replace them by 0, recorded in provenance"))
            nan_samples += int(bad.sum())
            nan_sentences += 1
            for c, name in zip(chans, label):
                nan_channels[name] = nan_channels.get(name, 0) + int(per_channel[c])
            eeg = np.where(bad, 0.0, eeg)
        texts.append(str(rec[keys["text"]]))
        eegs.append(eeg)
        idx.append(i)
    if not eegs:
        raise ValidationError(format_error("sentences", "at least one sentence with EEG", f"none in {path}"))
    out_sfreq, resampling = expected_sfreq, None
    if resample is not None:
        from fractions import Fraction

        from scipy.signal import resample_poly

        ratio = (Fraction(float(resample)) / Fraction(expected_sfreq)).limit_denominator(1000)
        up, down = ratio.numerator, ratio.denominator
        out_sfreq = expected_sfreq * up / down
        if (up, down) != (1, 1):
            eegs = [resample_poly(e, up, down, axis=1) for e in eegs]  # length ceil(n * up / down)
        resampling = {"from_hz": expected_sfreq, "to_hz": out_sfreq, "up": up, "down": down,
                      "method": "scipy.signal.resample_poly per sentence (before padding); "
                                "lengths = ceil(n * up / down)"}
    lengths = np.array([e.shape[1] for e in eegs])
    X = np.zeros((len(eegs), n_ch or 0, int(lengths.max())), dtype=np.float32)
    for j, e in enumerate(eegs):
        X[j, :, : e.shape[1]] = e
    split = np.array([sentence_split(t) for t in texts])
    if names is None or len(names) != X.shape[1]:
        names = [f"E{c + 1}" for c in range(X.shape[1])]
    provenance = {
        "dataset": "zuco", "loader": "neurodecode.data.load_zuco", "file": str(path), "version": version,
        "task": task, "subject": f"zuco/{subject}", "sfreq": out_sfreq, "sfreq_recorded": expected_sfreq,
        "resample": resampling, "n_sentences_in_file": len(records),
        "n_dropped_no_eeg": dropped, "padding": "zeros after each sentence's length",
        "nan_policy": nan_policy, "n_nonfinite_set_to_zero": nan_samples,
        "n_sentences_with_nonfinite": nan_sentences,
        "nonfinite_per_channel": dict(sorted(nan_channels.items(), key=lambda kv: -kv[1])[:20]),
        "split": f"by unique sentence ({spec['split']['method']}), fractions {dict(spec['split']['fractions'])}",
    }
    metadata = {"task": np.full(len(idx), task), "sentiment": np.full(len(idx), ""),
                "relation": np.full(len(idx), "")}
    table = read_zuco_labels(root, version, task)
    if table is None:
        provenance["labels"] = {"files": [], "note": "no label table for this task under root/task_materials"}
    else:
        matched, info = match_labels(texts, idx, table[0], table[1])
        metadata["sentiment" if task == "SR" else "relation"] = matched
        provenance["labels"] = {"files": table[2], "kind": "sentiment" if task == "SR" else "relation", **info,
                                "matching": "by normalised sentence text; repeated texts by nearest file position"}
    return Trials(X=X, stimulus_ids=np.array(idx), subject=f"zuco/{subject}", split=split, sfreq=out_sfreq,
                  ch_names=names, times=np.arange(X.shape[2]) / out_sfreq, texts=texts, lengths=lengths,
                  metadata=metadata, provenance=provenance)
