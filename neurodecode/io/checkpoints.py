"""Safe checkpoints: safetensors first, pickles only on explicit request.

:func:`save_state_dict` / :func:`load_state_dict` read and write flat tensor dicts;
:class:`PretrainedMixin` gives torch modules ``save_pretrained`` / ``from_pretrained``
with a ``config.json`` beside a ``model.safetensors``.

A file is inspected before it is parsed, so each failure gets its own message:
a git-LFS pointer (the weights were never fetched), a truncated safetensors file
(an interrupted download), or a pickle (refused unless ``allow_pickle=True``,
then read with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
from pathlib import Path
from typing import Any, ClassVar

from .._core.docs import fill_doc
from .._core.errors import DataIntegrityError, MetadataMismatchError, MissingFileError, UnsafeCheckpointError
from .._core.files import atomic_path, write_json
from .._core.validation import format_error
from .._core.versions import package_versions
from .hub import resolve_model_dir

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "PretrainedMixin",
    "sniff_checkpoint",
    "save_state_dict",
    "load_state_dict",
    "load_into",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_PICKLE_NAMES = ("pytorch_model.bin", "model.pt", "model.pth", "model.ckpt")
_LFS_PREFIX = b"version https://git-lfs"


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    """A safetensors file: an 8-byte little-endian header length that fits the file, then ``{``.

    Its first byte is the low byte of that length, so about 1 file in 256 starts with ``0x80``, a
    pickle's first byte: the length and the ``{`` tell them apart.
    """
    if size < 9 or len(head) < 9 or head[8:9] != b"{":
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return 8 + header_len <= size


def sniff_checkpoint(path: str | os.PathLike[str]) -> str:
    """Identify a checkpoint file by its bytes.

    Returns
    -------
    kind : {"safetensors", "pickle", "lfs-pointer"}

    Raises
    ------
    DataIntegrityError
        Truncated safetensors, an empty file, or an unknown format.
    """
    p = Path(path)
    size = p.stat().st_size
    with open(p, "rb") as fh:
        head = fh.read(64)
    if head.startswith(_LFS_PREFIX):
        return "lfs-pointer"
    if (head[:2] == b"PK" or head[:1] == b"\x80") and not _looks_like_safetensors(head, size):
        return "pickle"  # torch zip archive or raw pickle protocol >= 2
    if size < 8:
        raise DataIntegrityError(
            format_error("checkpoint", "a safetensors file", f"{p} with only {size} bytes",
                         "The file is empty or truncated; download or save it again")
        )
    (header_len,) = struct.unpack("<Q", head[:8])
    if 8 + header_len > size or header_len > 100_000_000:
        raise DataIntegrityError(
            format_error("checkpoint", "a complete safetensors file",
                         f"{p}: header says {header_len} bytes but the file has {size}",
                         "The file is truncated (interrupted download or copy); fetch it again")
        )
    with open(p, "rb") as fh:
        fh.seek(8)
        header_bytes = fh.read(header_len)
    try:
        header = json.loads(header_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataIntegrityError(
            format_error("checkpoint", "a safetensors file", f"{p} (unreadable header)",
                         "This is not a safetensors file, or it is corrupted")
        ) from exc
    end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + header_len + end > size:
        raise DataIntegrityError(
            format_error("checkpoint", "a complete safetensors file",
                         f"{p}: tensors need {8 + header_len + end} bytes but the file has {size}",
                         "The file is truncated (interrupted download or copy); fetch it again")
        )
    return "safetensors"


def save_state_dict(state_dict: dict[str, Any], path: str | os.PathLike[str],
                    metadata: dict[str, str] | None = None) -> Path:
    """Atomically write a dict of tensors as safetensors (tensors made contiguous, shared storage copied)."""
    from safetensors.torch import save_file

    clean = {k: v.detach().contiguous().clone() if _shares_storage(v, state_dict) else v.detach().contiguous()
             for k, v in state_dict.items()}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(clean, str(tmp), metadata=metadata)
    return Path(path)


def _shares_storage(t: Any, sd: dict[str, Any]) -> bool:
    ptr = t.untyped_storage().data_ptr()
    return sum(1 for v in sd.values() if v.untyped_storage().data_ptr() == ptr) > 1


@fill_doc
def load_state_dict(path: str | os.PathLike[str], *, allow_pickle: bool = False,
                    device: str = "cpu") -> dict[str, Any]:
    """Read a checkpoint into a dict of tensors.

    Parameters
    ----------
    path : path-like
        A ``.safetensors`` file (or, with ``allow_pickle``, a torch pickle).
    %(allow_pickle)s
        Even then the file is read with ``torch.load(weights_only=True)``.
    device : str
        Where to place the tensors.

    Returns
    -------
    state_dict : dict of str to torch.Tensor
    """
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(format_error("path", "an existing checkpoint file", str(p)))
    kind = sniff_checkpoint(p)
    if kind == "lfs-pointer":
        raise DataIntegrityError(
            format_error("checkpoint", "tensor data", f"a git-LFS pointer file at {p}",
                         "The weights were never fetched: run `git lfs pull` in that repository, or download the file")
        )
    if kind == "pickle":
        if not allow_pickle:
            raise UnsafeCheckpointError(
                format_error("allow_pickle", "a safetensors checkpoint", f"a pickle-based checkpoint at {p}",
                             "Unpickling can run arbitrary code. Convert it to safetensors, or pass allow_pickle=True "
                             "if you trust its source (it is then read with torch.load(weights_only=True))")
            )
        import torch

        obj = torch.load(p, map_location=device, weights_only=True)
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        return dict(obj)
    from safetensors.torch import load_file

    try:
        return load_file(str(p), device=device)
    except Exception as exc:  # safetensors raises its own error types
        raise DataIntegrityError(format_error("checkpoint", "a readable safetensors file", f"{p}: {exc}")) from exc


def _config_to_dict(config: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)  # type: ignore[arg-type]
    if isinstance(config, dict):
        return dict(config)
    raise TypeError(f"config must be a dataclass or a dict, got {type(config).__name__}")


class PretrainedMixin:
    """``save_pretrained`` / ``from_pretrained`` for ``torch.nn.Module`` subclasses.

    A subclass sets ``config_class`` (a dataclass) and stores its config as
    ``self.config``; its ``__init__`` takes the config as first argument. The folder
    layout is ``config.json`` (model class, config, package versions) and
    ``model.safetensors``.
    """

    config_class: ClassVar[type]
    config: Any

    def save_pretrained(self, directory: str | os.PathLike[str], *, metadata: dict[str, Any] | None = None) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (atomically).

        Parameters
        ----------
        directory : path-like
            Target folder, created if needed.
        metadata : dict or None
            Extra JSON-serialisable information stored in ``config.json`` (e.g. subject ids).

        Returns
        -------
        directory : pathlib.Path
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        state = self.state_dict()  # type: ignore[attr-defined]
        save_state_dict(state, out / WEIGHTS_NAME, metadata={"model_class": type(self).__name__, "format": "pt"})
        write_json(out / CONFIG_NAME, {
            "model_class": type(self).__name__,
            "config": _config_to_dict(self.config),
            "metadata": metadata or {},
            "versions": package_versions(("neurodecode", "torch", "safetensors")),
        })
        return out

    @classmethod
    @fill_doc
    def from_pretrained(cls, name_or_path: str | os.PathLike[str], *, local_files_only: bool = False,
                        revision: str | None = None, strict: bool = True, allow_pickle: bool = False,
                        device: str = "cpu", **config_overrides: Any) -> Any:
        """Build the model from its config and load its weights.

        Parameters
        ----------
        name_or_path : str or path-like
            Folder written by :meth:`save_pretrained`, or a hub id holding the same files.
        %(local_files_only)s
        revision : str or None
            Hub revision.
        strict : bool
            Refuse missing or unexpected weights (all are listed in the error).
        %(allow_pickle)s
        device : str
            Where to put the weights.
        **config_overrides
            Config fields to override (e.g. ``dropout=0.0``).

        Returns
        -------
        model : instance of this class, in eval mode.
        """
        folder = resolve_model_dir(name_or_path, revision=revision, local_files_only=local_files_only,
                                   allow_patterns=[CONFIG_NAME, WEIGHTS_NAME])
        cfg_path = folder / CONFIG_NAME
        if not cfg_path.is_file():
            raise MissingFileError(format_error("name_or_path", f"a folder with {CONFIG_NAME}", str(folder),
                                                "Save the model with save_pretrained(), which writes it"))
        info = json.loads(cfg_path.read_text())
        if info.get("model_class") not in (None, cls.__name__):
            raise MetadataMismatchError(
                format_error("name_or_path", f"a {cls.__name__} checkpoint", f"a {info['model_class']} checkpoint",
                             f"Load it with {info['model_class']}.from_pretrained")
            )
        fields = dict(info.get("config", {}))
        fields.update(config_overrides)
        config = cls.config_class.from_dict(fields) if hasattr(cls.config_class, "from_dict") else cls.config_class(**fields)
        model: Any = cls(config)  # type: ignore[call-arg]
        weights = folder / WEIGHTS_NAME
        if not weights.is_file():
            alt = next((folder / n for n in _PICKLE_NAMES if (folder / n).is_file()), None)
            if alt is None:
                raise MissingFileError(format_error("name_or_path", f"a folder with {WEIGHTS_NAME}", str(folder)))
            weights = alt
        state = load_state_dict(weights, allow_pickle=allow_pickle, device=device)
        load_into(model, state, strict=strict, source=str(weights))
        model.to(device)
        model.eval()
        model.pretrained_metadata_ = info.get("metadata", {})
        return model


def load_into(model: Any, state: dict[str, Any], *, strict: bool = True, source: str = "state_dict") -> None:
    """Load ``state`` into ``model``, listing every missing, unexpected or mis-shaped key at once."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f"{k}: model {tuple(own[k].shape)} vs file {tuple(state[k].shape)}"
                    for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    problems = []
    if shapes:
        problems.append("shape mismatches: " + "; ".join(shapes[:10]))
    if strict and missing:
        problems.append(f"{len(missing)} missing key(s): " + ", ".join(missing[:10]))
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): " + ", ".join(unexpected[:10]))
    if problems:
        raise MetadataMismatchError(
            format_error("state_dict", f"weights matching {type(model).__name__}'s config", f"{source} with " + " | ".join(problems),
                         "Check the config saved with the weights, or pass strict=False to load a partial match")
        )
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
