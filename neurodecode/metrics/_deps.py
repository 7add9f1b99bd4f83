"""Optional dependencies of the metrics: imported when used, with an error that names the extra to install."""

from __future__ import annotations

import importlib
from typing import Any

from .._core.errors import NeurodecodeError
from .._core.validation import format_error

__all__ = ["MissingDependencyError", "require"]


class MissingDependencyError(NeurodecodeError, ImportError):
    """A package of an optional extra is not installed (the message names the extra)."""


#: module -> (pip distribution, neurodecode extra that installs it)
_EXTRAS = {
    "rouge_score": ("rouge-score", "metrics"),
    "nltk": ("nltk", "metrics"),
    "sentence_transformers": ("sentence-transformers", "text"),
}


def require(module: str, purpose: str) -> Any:
    """Import ``module`` or raise a :class:`MissingDependencyError` naming the extra that installs it.

    Parameters
    ----------
    module : str
        Importable module name (``"rouge_score"``, ``"nltk"``).
    purpose : str
        What needs it, for the message (``"ROUGE"``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        dist, extra = _EXTRAS.get(module.split(".")[0], (module, None))
        fix = (f"pip install 'neurodecode[{extra}]' (or pip install {dist})" if extra else f"pip install {dist}")
        raise MissingDependencyError(format_error(module, f"the {dist} package for {purpose}",
                                                 f"not installed ({exc})", fix)) from None
