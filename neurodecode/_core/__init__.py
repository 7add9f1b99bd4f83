"""Core utilities every layer stands on: errors, validation, logging, devices, config, files."""

from .config import cache_dir, home_dir, is_offline
from .device import backend_report, resolve_device, resolve_dtype
from .docs import docdict, fill_doc
from .errors import (
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
from .files import atomic_path, atomic_write, sha256_file, write_json
from .logging import logger, progress, set_log_level, use_log_level
from .specs import load_spec
from .validation import (
    check_array,
    check_finite,
    check_indices,
    check_option,
    check_path,
    check_positive,
    check_same_length,
    format_error,
)
from .versions import package_versions

__all__ = [
    "DataIntegrityError", "MetadataMismatchError", "MissingFileError", "NeurodecodeError",
    "NotFittedError", "OfflineError", "ShapeMismatchError", "UnsafeCheckpointError", "ValidationError",
    "atomic_path", "atomic_write", "backend_report", "cache_dir", "check_array", "check_finite",
    "check_indices", "check_option", "check_path", "check_positive", "check_same_length", "docdict",
    "fill_doc", "format_error", "home_dir", "is_offline", "load_spec", "logger", "package_versions",
    "progress", "resolve_device", "resolve_dtype", "set_log_level", "sha256_file", "use_log_level",
    "write_json",
]
