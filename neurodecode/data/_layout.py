"""Dataset layouts from ``data_specs/*.toml``: path formatting and subject-id parsing."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from .._core.errors import ValidationError
from .._core.specs import load_spec
from .._core.validation import format_error

__all__ = ["spec_path", "relative_path", "parse_subject_number"]


def relative_path(dataset: str, key: str, **fields: Any) -> str:
    """Dataset-relative path of file ``key`` (``[paths]`` of the dataset's spec) with fields filled."""
    return str(load_spec(dataset)["paths"][key]).format(**fields)


def spec_path(dataset: str, root: str | os.PathLike[str], key: str, **fields: Any) -> Path:
    """Absolute path of file ``key`` under ``root``."""
    return Path(root) / relative_path(dataset, key, **fields)


def parse_subject_number(subject: Any, dataset: str, prefix: str, n_subjects: int) -> int:
    """Turn ``1``, ``"1"``, ``"subj01"``, ``"sub-01"`` or ``"nsd/subj01"`` into the 1-based subject number."""
    namespace = load_spec(dataset)["dataset"].get("subject_namespace", dataset)
    text = str(subject).strip()
    if "/" in text:
        ns, _, text = text.partition("/")
        if ns != namespace:
            raise ValidationError(format_error("subject", f"a {namespace!r} subject id", repr(subject),
                                               f"Use e.g. {namespace}/{prefix}01"))
    m = re.fullmatch(rf"(?:{re.escape(prefix)})?0*(\d+)", text)
    if isinstance(subject, bool) or not m:
        raise ValidationError(format_error("subject", f"a subject number or id like {prefix}01", repr(subject)))
    number = int(m.group(1))
    if not 1 <= number <= n_subjects:
        raise ValidationError(format_error("subject", f"a subject between 1 and {n_subjects} (1-based)", repr(subject),
                                           "Subjects are numbered from 1" if number == 0 else None))
    return number
