"""neurodecode: decode brain activity (fMRI, EEG, MEG) into what a person saw or read.

The top level stays small and imports nothing heavy; use the subpackages
(``neurodecode.data``, ``neurodecode.latents``, ``neurodecode.models``,
``neurodecode.estimators``...) for the real work.
"""

from importlib import metadata as _metadata

from ._core.errors import NeurodecodeError
from ._core.logging import set_log_level

try:
    __version__ = _metadata.version("neurodecode")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["NeurodecodeError", "__version__", "set_log_level"]
