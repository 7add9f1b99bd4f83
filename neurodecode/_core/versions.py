"""Versions of the packages that change results (recorded in every provenance dict)."""

from __future__ import annotations

from importlib import metadata

__all__ = ["KEY_PACKAGES", "package_versions"]

KEY_PACKAGES = (
    "neurodecode", "torch", "torchvision", "numpy", "scipy", "scikit-learn", "mne", "nibabel",
    "nilearn", "h5py", "diffusers", "transformers", "open_clip_torch", "safetensors", "accelerate",
    "huggingface_hub",
)


def package_versions(packages: tuple[str, ...] = KEY_PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``packages`` (``None`` when not installed), without importing them."""
    out: dict[str, str | None] = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
