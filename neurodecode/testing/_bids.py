"""BIDS pieces the MEG fixture writers share (THINGS-MEG, MEG-MASC, MOUS): TSV sidecars, the dataset's root
files, and the check of the channel arguments."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import ShapeMismatchError, ValidationError
from .._core.validation import check_array, format_error


def write_tsv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Write a BIDS TSV atomically (``None`` -> ``n/a``)."""
    from .._core.files import atomic_write

    with atomic_write(path) as fh:
        fh.write("\t".join(header) + "\n")
        for row in rows:
            fh.write("\t".join("n/a" if v is None else str(v) for v in row) + "\n")


def check_channels(data: Any, ch_names: Sequence[Any], bads: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """``data`` as a 2-D array with one row per name of ``ch_names``, and ``bads`` among those names."""
    data = check_array(data, "data", ndim=2, finite=False)
    names = [str(c) for c in ch_names]
    if len(names) != data.shape[0]:
        raise ShapeMismatchError(format_error("ch_names", f"{data.shape[0]} names (rows of data)", len(names)))
    unknown = sorted(set(bads) - set(names))
    if unknown:
        raise ValidationError(format_error("bads", "names from ch_names", unknown))
    return data, names


def write_root_files(root: str | os.PathLike[str], spec: Mapping[str, Any], subject: Any, *, bids_version: str,
                     references: Sequence[str]) -> None:
    """``dataset_description.json`` from the dataset spec, and ``subject`` added to ``participants.tsv``."""
    from .._core.files import write_json

    r = Path(root)
    ds = spec["dataset"]
    write_json(r / spec["paths"]["dataset_description"], {
        "Name": ds["title"], "BIDSVersion": bids_version, "DatasetType": "raw", "License": ds["licence"],
        "ReferencesAndLinks": list(references)})
    participants = r / spec["paths"]["participants"]
    known = [line.split("\t")[0] for line in participants.read_text().splitlines()[1:]
             if line.strip()] if participants.is_file() else []
    pid = ds["subject_format"].format(subject=subject)
    write_tsv(participants, ["participant_id"], [[p] for p in sorted(set(known) | {pid})])
