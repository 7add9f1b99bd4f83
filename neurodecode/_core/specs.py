"""Access to the machine-readable dataset specs in ``data_specs/*.toml``.

The loaders read file layouts, dataset keys, shapes and expected counts from these
specs instead of scattering constants through the code.
"""

from __future__ import annotations

import sys
from functools import cache
from importlib import resources
from typing import Any

from .errors import MissingFileError
from .validation import format_error

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["load_spec", "available_specs", "spec_path", "DATASETS"]

#: The datasets neurodecode reads, by the name recipes and the command line use (spec ``<name>.toml`` with
#: ``-`` as ``_``). The one list: ``neurodecode.data.DATASETS``, the CLI and the recipe schema all read it.
DATASETS: tuple[str, ...] = ("nsd", "things-eeg2", "things-meg", "zuco", "meg-masc", "bold5000", "broderick2019", "mous",
                               "brennan2019")


def _specs_dir() -> Any:
    return resources.files("neurodecode") / "data_specs"


def available_specs() -> list[str]:
    """Names of the dataset specs shipped with neurodecode (e.g. ``"nsd"``)."""
    return sorted(p.name[:-5] for p in _specs_dir().iterdir() if p.name.endswith(".toml"))


def spec_path(name: str) -> Any:
    """Path (a Traversable) of the spec file for dataset ``name``."""
    key = name.replace("-", "_")
    path = _specs_dir() / f"{key}.toml"
    if not path.is_file():
        raise MissingFileError(
            format_error("dataset", "one of " + ", ".join(available_specs()), name,
                         "Use a dataset name with a spec in data_specs/")
        )
    return path


def load_spec(name: str) -> dict[str, Any]:
    """Parsed ``data_specs/<name>.toml`` (``-`` and ``_`` are interchangeable in ``name``).

    The returned dict is cached: do not mutate it.
    """
    return _load_spec(name.replace("-", "_"))


@cache
def _load_spec(key: str) -> dict[str, Any]:
    with spec_path(key).open("rb") as fh:
        return tomllib.load(fh)
