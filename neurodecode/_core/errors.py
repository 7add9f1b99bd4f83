"""The neurodecode exception hierarchy.

Every error raised on purpose by neurodecode derives from :class:`NeurodecodeError`
and from the built-in exception a caller would naturally catch (``ValueError`` for
bad values, ``OSError`` for bad files), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "NeurodecodeError",
    "ValidationError",
    "ShapeMismatchError",
    "MetadataMismatchError",
    "DataIntegrityError",
    "MissingFileError",
    "UnsafeCheckpointError",
    "OfflineError",
    "NotFittedError",
]


class NeurodecodeError(Exception):
    """Base class of every error neurodecode raises on purpose."""


class ValidationError(NeurodecodeError, ValueError):
    """A parameter has an invalid value (wrong option, out of range, NaN...)."""


class ShapeMismatchError(ValidationError):
    """An array has the wrong number of dimensions or the wrong size along an axis."""


class MetadataMismatchError(ValidationError):
    """Metadata disagree: sampling rate, channel set, subject, voxel count, affine..."""


class DataIntegrityError(NeurodecodeError, OSError):
    """A file exists but is truncated, corrupted, of the wrong format, or fails a checksum."""


class MissingFileError(NeurodecodeError, FileNotFoundError):
    """An expected file or folder is absent."""


class UnsafeCheckpointError(NeurodecodeError, OSError):
    """A checkpoint would need unpickling, which can run arbitrary code."""


class OfflineError(NeurodecodeError, OSError):
    """An artefact is needed from the network but offline mode is on (or no network)."""


class NotFittedError(NeurodecodeError, AttributeError):
    """A method needing fitted state was called before ``fit``."""
