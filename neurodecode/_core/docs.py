"""Shared parameter documentation, filled into docstrings (the MNE/nilearn way).

Write ``%(verbose)s`` in a docstring and decorate the function with :func:`fill_doc`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

__all__ = ["docdict", "fill_doc"]

F = TypeVar("F", bound=Callable[..., object])

docdict: dict[str, str] = {
    "verbose": """verbose : bool | str | int | None
    Log level for this call (``True`` = INFO with progress bars, ``False`` = WARNING,
    or a level name). ``None`` keeps the current neurodecode level.""",
    "device": """device : str | torch.device
    ``"cpu"`` (default), ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when available;
    the choice is logged).""",
    "dtype": """dtype : str | torch.dtype
    Compute precision: ``"float32"`` (default), ``"float64"``, ``"bfloat16"`` or ``"float16"``.""",
    "random_state": """random_state : int | numpy.random.Generator | None
    Seed or generator; the seed used is recorded in the provenance.""",
    "subject": """subject : str
    Namespaced subject id such as ``"nsd/subj01"`` or ``"things-eeg2/sub-01"``.""",
    "allow_pickle": """allow_pickle : bool
    Allow reading a pickle-based file. Unpickling runs arbitrary code: only opt in
    for files from a source you trust. Default ``False``.""",
    "local_files_only": """local_files_only : bool
    Never use the network; load only from a local folder or the local hub cache.""",
}


def fill_doc(obj: F) -> F:
    """Replace ``%(key)s`` placeholders in ``obj.__doc__`` with :data:`docdict` entries.

    Entries are indented to match the placeholder's line.
    """
    doc = obj.__doc__
    if not doc:
        return obj
    lines = doc.splitlines()
    out: list[str] = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("%(") and stripped.endswith(")s") and stripped[2:-2] in docdict:
            indent = line[: len(line) - len(line.lstrip())]
            out.extend(indent + entry for entry in docdict[stripped[2:-2]].splitlines())
        else:
            out.append(line)
    obj.__doc__ = "\n".join(out)
    return obj
