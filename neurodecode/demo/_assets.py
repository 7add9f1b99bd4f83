"""The demo's miniature model set shipped inside the package: paths, checksums, loaders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .._core.errors import DataIntegrityError, MissingFileError
from .._core.files import sha256_file
from .._core.validation import format_error

__all__ = ["demo_models_dir", "verify_demo_models", "load_demo_clip", "load_demo_diffusion"]

_FILES = ("clip/open_clip_config.json", "clip/open_clip_model.safetensors", "diffusion/config.json",
          "diffusion/model.safetensors")


def demo_models_dir() -> Path:
    """Folder of the shipped miniature models (``neurodecode/assets/demo_models``)."""
    return Path(__file__).resolve().parents[1] / "assets" / "demo_models"


def verify_demo_models(folder: Path | None = None) -> dict[str, str]:
    """Check every shipped file against ``MANIFEST.json`` (sha256); return the checksums.

    Raises
    ------
    MissingFileError
        A file or the manifest is absent (rebuild with ``pipelines/demo/train_models.py``).
    DataIntegrityError
        A checksum differs (a truncated or modified file).
    """
    root = folder or demo_models_dir()
    manifest = root / "MANIFEST.json"
    if not manifest.is_file():
        raise MissingFileError(format_error("demo models", f"{manifest}", "no manifest",
                                            "Rebuild them: python pipelines/demo/train_models.py"))
    expected = json.loads(manifest.read_text())["sha256"]
    problems = []
    for rel in _FILES:
        path = root / rel
        if not path.is_file():
            problems.append(f"missing {path}")
        elif sha256_file(path) != expected.get(rel):
            problems.append(f"checksum mismatch for {path}")
    if problems:
        raise DataIntegrityError(format_error("demo models", "the shipped files with their recorded checksums",
                                              "; ".join(problems), "Reinstall neurodecode or rebuild the models"))
    return dict(expected)


def load_demo_clip(*, output: str = "image_tokens", normalize: str | None = "vd", device: Any = "cpu") -> Any:
    """The demo's tiny CLIP as a latent space (``neurodecode.latents``), e.g. VD-normalised image tokens."""
    from ..latents import get_space

    return get_space("clip-custom", weights=demo_models_dir() / "clip", output=output, normalize=normalize,
                     device=device)


def load_demo_diffusion(*, device: Any = "cpu") -> Any:
    """The demo's pixel unCLIP diffusion model (:class:`neurodecode.generate.PixelUnCLIP`)."""
    from ..generate import PixelUnCLIP

    return PixelUnCLIP.from_pretrained(demo_models_dir() / "diffusion", device=str(device))
