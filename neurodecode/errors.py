"""The exceptions neurodecode raises: a small hierarchy that subclasses the built-ins.

>>> from neurodecode.errors import ValidationError
>>> issubclass(ValidationError, ValueError)
True

Catch :class:`NeurodecodeError` for anything the toolkit reports on purpose; each message names the
parameter or file, what was expected, what came and how to fix it.
"""

from ._core.errors import (
    DataIntegrityError,
    MetadataMismatchError,
    MissingFileError,
    NeurodecodeError,
    NotFittedError,
    OfflineError,
    ShapeMismatchError,
    UnsafeCheckpointError,
    ValidationError,
)

__all__ = ["NeurodecodeError", "ValidationError", "ShapeMismatchError", "MetadataMismatchError", "DataIntegrityError",
           "MissingFileError", "UnsafeCheckpointError", "OfflineError", "NotFittedError"]
