"""The common container every loader returns: arrays plus everything needed to interpret them."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import ShapeMismatchError, ValidationError
from .._core.validation import check_option, format_error

__all__ = ["Trials"]

_SPLITS = ("train", "val", "test")


@dataclass
class Trials:
    """Brain responses for one subject, with stimulus ids, split and provenance.

    Parameters
    ----------
    X : ndarray
        Responses. fMRI: shape (n_trials, n_voxels). EEG/MEG: shape (n_trials, n_channels,
        n_times). Sentence-level EEG: shape (n_trials, n_channels, max_times) zero-padded,
        with ``lengths``.
    stimulus_ids : ndarray of shape (n_trials,)
        Stimulus of each trial (NSD: 0-based index into the 73k images; THINGS: image id
        strings; ZuCo: sentence index).
    subject : str
        Namespaced subject id, e.g. ``"nsd/subj01"``.
    split : ndarray of str, shape (n_trials,)
        ``"train"``, ``"val"`` or ``"test"`` for each trial.
    sfreq : float or None
        Sampling rate in Hz (M/EEG).
    ch_names : list of str or None
        Channel names (M/EEG), in the order of axis 1 of ``X``.
    times : ndarray of shape (n_times,) or None
        Time of each sample in seconds relative to stimulus onset.
    texts : list of str or None
        Text of each trial's stimulus (sentences read, or captions).
    lengths : ndarray of int, shape (n_trials,) or None
        Valid samples per trial when ``X`` is padded.
    metadata : dict of str to ndarray
        Per-trial columns (session, repetition, concept, task...), each of length n_trials.
    provenance : dict
        Every choice made while loading (files, beta version, normalisation, repeats,
        sessions, versions); travels with the arrays and is saved with every output.
    """

    X: np.ndarray
    stimulus_ids: np.ndarray
    subject: str
    split: np.ndarray
    sfreq: float | None = None
    ch_names: list[str] | None = None
    times: np.ndarray | None = None
    texts: list[str] | None = None
    lengths: np.ndarray | None = None
    metadata: dict[str, np.ndarray] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.stimulus_ids = np.asarray(self.stimulus_ids)
        self.split = np.asarray(self.split, dtype=str)
        n = len(self.X)
        columns: dict[str, Any] = {"stimulus_ids": self.stimulus_ids, "split": self.split}
        if self.texts is not None:
            columns["texts"] = self.texts
        if self.lengths is not None:
            self.lengths = np.asarray(self.lengths, dtype=np.int64)
            columns["lengths"] = self.lengths
        columns.update({f"metadata[{k!r}]": v for k, v in self.metadata.items()})
        for name, col in columns.items():
            if len(col) != n:
                raise ShapeMismatchError(
                    format_error(name, f"one entry per trial ({n})", f"{len(col)} entries",
                                 "Build the container from aligned arrays")
                )
        bad = sorted(set(np.unique(self.split)) - set(_SPLITS))
        if bad:
            raise ValidationError(format_error("split", f"values in {_SPLITS}", bad))
        if self.ch_names is not None and self.X.ndim >= 3 and len(self.ch_names) != self.X.shape[1]:
            raise ShapeMismatchError(
                format_error("ch_names", f"{self.X.shape[1]} names (axis 1 of X)", f"{len(self.ch_names)} names")
            )
        if self.times is not None and self.X.ndim >= 3 and len(self.times) != self.X.shape[-1]:
            raise ShapeMismatchError(
                format_error("times", f"{self.X.shape[-1]} samples (last axis of X)", f"{len(self.times)} samples")
            )

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return len(self.X)

    def __repr__(self) -> str:
        counts = ", ".join(f"{s}={int((self.split == s).sum())}" for s in _SPLITS if (self.split == s).any())
        extra = f", sfreq={self.sfreq:g}" if self.sfreq else ""
        return f"<Trials {self.subject}: X{tuple(self.X.shape)} {self.X.dtype}, {counts}{extra}>"

    @property
    def n_features(self) -> int:
        """Size of one trial's response flattened (voxels, or channels x times)."""
        return int(np.prod(self.X.shape[1:]))

    def subset(self, index: Any, *, note: str | None = None) -> Trials:
        """A new container with the trials selected by ``index`` (boolean mask or integer indices)."""
        idx = np.asarray(index)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise ShapeMismatchError(format_error("index", f"a boolean mask of length {len(self)}", idx))
            idx = np.flatnonzero(idx)
        if idx.size == 0:
            raise ValidationError(format_error("index", "a non-empty selection of trials", "an empty selection",
                                               "Check the split, subject or session filters"))
        prov = copy.deepcopy(self.provenance)
        if note:
            prov.setdefault("selections", []).append(note)
        return Trials(
            X=self.X[idx], stimulus_ids=self.stimulus_ids[idx], subject=self.subject, split=self.split[idx],
            sfreq=self.sfreq, ch_names=self.ch_names, times=self.times,
            texts=[self.texts[i] for i in idx] if self.texts is not None else None,
            lengths=self.lengths[idx] if self.lengths is not None else None,
            metadata={k: np.asarray(v)[idx] for k, v in self.metadata.items()}, provenance=prov,
        )

    def select_split(self, split: str) -> Trials:
        """Trials of one split (``"train"``, ``"val"`` or ``"test"``)."""
        check_option(split, "split", _SPLITS)
        return self.subset(self.split == split, note=f"split={split}")

    @property
    def train(self) -> Trials:
        """The training trials."""
        return self.select_split("train")

    @property
    def test(self) -> Trials:
        """The test trials."""
        return self.select_split("test")

    def average_repeats(self) -> Trials:
        """Average the trials that share a stimulus (and split), in order of first appearance.

        Per-trial metadata keep the first trial's value; ``metadata["n_repeats"]`` counts
        the averaged trials. Recorded in ``provenance["repeats"]``.
        """
        keys = np.array([f"{s}\x00{i}" for s, i in zip(self.split, self.stimulus_ids.astype(str))])
        _, first, inverse, counts = np.unique(keys, return_index=True, return_inverse=True, return_counts=True)
        order = np.argsort(first)
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        group = rank[inverse]
        sums = np.zeros((len(order),) + self.X.shape[1:], dtype=np.float64)
        np.add.at(sums, group, self.X.astype(np.float64, copy=False))
        Xavg = (sums / counts[order].reshape((-1,) + (1,) * (self.X.ndim - 1))).astype(
            self.X.dtype if np.issubdtype(self.X.dtype, np.floating) else np.float32)
        firsts = first[order]
        prov = copy.deepcopy(self.provenance)
        prov["repeats"] = "averaged"
        meta = {k: np.asarray(v)[firsts] for k, v in self.metadata.items()}
        meta["n_repeats"] = counts[order]
        return Trials(
            X=Xavg, stimulus_ids=self.stimulus_ids[firsts], subject=self.subject, split=self.split[firsts],
            sfreq=self.sfreq, ch_names=self.ch_names, times=self.times,
            texts=[self.texts[i] for i in firsts] if self.texts is not None else None,
            lengths=self.lengths[firsts] if self.lengths is not None else None, metadata=meta, provenance=prov,
        )

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Atomically write the container to an HDF5 file (provenance as JSON)."""
        import json

        import h5py

        from .._core.files import _json_default, atomic_path

        with atomic_path(path, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
            f.create_dataset("X", data=self.X)
            f.create_dataset("stimulus_ids", data=self.stimulus_ids.astype("S") if self.stimulus_ids.dtype.kind in "US"
                             else self.stimulus_ids)
            f.create_dataset("split", data=self.split.astype("S"))
            for name in ("times", "lengths"):
                val = getattr(self, name)
                if val is not None:
                    f.create_dataset(name, data=val)
            if self.texts is not None:
                f.create_dataset("texts", data=np.array(self.texts, dtype=object), dtype=h5py.string_dtype())
            g = f.create_group("metadata")
            for k, v in self.metadata.items():
                v = np.asarray(v)
                g.create_dataset(k, data=v.astype("S") if v.dtype.kind in "UO" else v)
            f.attrs["subject"] = self.subject
            f.attrs["sfreq"] = -1.0 if self.sfreq is None else float(self.sfreq)
            f.attrs["ch_names"] = json.dumps(self.ch_names)
            f.attrs["provenance"] = json.dumps(self.provenance, default=_json_default)
            f.attrs["format"] = "neurodecode-trials-1"
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Trials:
        """Read a container written by :meth:`save`."""
        import json

        from ..io.hdf5 import open_hdf5

        with open_hdf5(path, "r") as f:
            def text(a: np.ndarray) -> np.ndarray:
                return a.astype(str) if a.dtype.kind == "S" else a

            return cls(
                X=f["X"][()], stimulus_ids=text(f["stimulus_ids"][()]), subject=str(f.attrs["subject"]),
                split=text(f["split"][()]),
                sfreq=None if f.attrs["sfreq"] < 0 else float(f.attrs["sfreq"]),
                ch_names=json.loads(f.attrs["ch_names"]),
                times=f["times"][()] if "times" in f else None,
                texts=[t.decode() if isinstance(t, bytes) else str(t) for t in f["texts"][()]] if "texts" in f else None,
                lengths=f["lengths"][()] if "lengths" in f else None,
                metadata={k: text(v[()]) for k, v in f["metadata"].items()},
                provenance=json.loads(f.attrs["provenance"]),
            )


def stack_subjects(trials: Sequence[Trials]) -> dict[str, Trials]:
    """Index several subjects' containers by subject id, refusing duplicates."""
    out: dict[str, Trials] = {}
    for t in trials:
        if t.subject in out:
            raise ValidationError(format_error("trials", "one container per subject", f"two for {t.subject!r}"))
        out[t.subject] = t
    return out
