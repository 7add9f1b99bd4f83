"""Checkpoints that are not on the Hugging Face hub (VDVAE, VICRegL ConvNeXt): where they are looked for, the
error that says how to get them, what ``neurodecode download`` lists, and the one-time safetensors conversion.

Each such checkpoint is described once by an :class:`ExternalCheckpoint`; the space modules keep their public
functions (``find_vdvae_weights``, ``vdvae_artefacts``, ...) as thin wrappers around it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._core.errors import MissingFileError, OfflineError
from .._core.logging import logger
from .._core.validation import format_error

__all__ = ["ExternalCheckpoint"]


@dataclass(frozen=True)
class ExternalCheckpoint:
    """A released checkpoint file outside the hub.

    Parameters
    ----------
    folder : str
        Sub-folder of ``$NEURODECODE_HOME/weights`` where it is looked for (e.g. ``"vdvae"``).
    file : str
        The released file name (a pickle: read only behind ``allow_pickle=True``).
    url : str
        Where a user downloads it.
    what : str
        Its description in messages ("OpenAI's ImageNet-64 VDVAE weights").
    convert : str
        The dotted name of the conversion function named in messages.
    licence : str
        The weights' licence, listed by ``neurodecode download``.
    any_single : tuple of str
        Suffixes of any single file a folder may hold instead of the named ones (``()``: only the named ones).
    """

    folder: str
    file: str
    url: str
    what: str
    convert: str
    licence: str
    any_single: tuple[str, ...] = ()

    @property
    def safetensors_file(self) -> str:
        """The converted file's name: the released name with ``.safetensors``."""
        return str(Path(self.file).with_suffix(".safetensors"))

    def default_dir(self) -> Path:
        """``$NEURODECODE_HOME/weights/<folder>``."""
        from .._core.config import home_dir

        return home_dir() / "weights" / self.folder

    def find(self, weights: Any = None) -> Path:
        """The file to read: ``weights`` (a file or folder) or the default folder's file (safetensors first).

        Raises
        ------
        OfflineError
            Nothing found and offline mode is on.
        MissingFileError
            Nothing found.
        """
        from .._core.config import is_offline

        folder = self.default_dir() if weights is None else Path(str(weights)).expanduser()
        if folder.is_file():
            return folder
        if folder.is_dir():
            for name in (self.safetensors_file, self.file):
                if (folder / name).is_file():
                    return folder / name
            found = sorted(p for suffix in self.any_single for p in folder.glob(f"*{suffix}"))
            if len(found) == 1:
                return found[0]
        fix = (f"Download {self.file} once from {self.url} (on a machine with network access), put it in "
               f"{self.default_dir()} or pass weights='/path/to/{self.file}', then convert it to safetensors once "
               f"with {self.convert}(path, allow_pickle=True)")
        expected = f"{self.what} ({self.file} or {self.safetensors_file})"
        if is_offline():
            raise OfflineError(format_error("weights", expected, f"nothing at {folder} and offline mode is on", fix))
        raise MissingFileError(format_error("weights", expected, f"nothing at {folder}", fix))

    def artefacts(self, name: str, *, weights: Any = None, tiny: bool = False, kind: str = "latent space") -> list[Any]:
        """What ``neurodecode download`` lists for ``name``: nothing to fetch (random init), the local file, or a
        note saying where to download it (never fetched: it is not on the hub)."""
        from ..io.hub import ExternalArtefact

        if (weights is None and tiny) or (isinstance(weights, str) and weights == "random"):
            return [ExternalArtefact(name, "random", "random init (seeded), nothing to fetch")]
        if weights is not None:
            return [ExternalArtefact(str(weights), "folder", f"{kind} {name}: a local checkpoint (read as is)")]
        return [ExternalArtefact(self.file, "note", f"{kind} {name}: download once from {self.url} into "
                                 f"{self.default_dir()} (not on the hub), then convert it with "
                                 f"{self.convert}(path, allow_pickle=True)", licence=self.licence)]

    def save_converted(self, module: Any, config: Any, src_file: Path, dst: Any, fmt: str) -> Path:
        """Write ``module``'s weights as safetensors beside ``src_file`` (or at ``dst``), with its config."""
        from ..io.checkpoints import save_state_dict

        out = Path(dst) if dst is not None else src_file.with_name(self.safetensors_file)
        save_state_dict(module.state_dict(), out, metadata={"format": fmt, "config": json.dumps(config.to_dict())})
        logger.info("%s: %s converted to %s", self.what, src_file, out)
        return out
