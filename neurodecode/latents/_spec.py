"""The registry of latent spaces: a name -> how to build it (filled by ``_registry`` with the built-in ones)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .._core.errors import ValidationError
from .._core.validation import format_error

__all__ = ["SpaceSpec", "register_space", "REGISTRY"]


@dataclass(frozen=True)
class SpaceSpec:
    """How to build a named space.

    Attributes
    ----------
    name : str
        Registry name.
    builder : str
        ``"module:function"`` building the space (imported lazily).
    options : dict
        Keyword arguments given to the builder (architecture, output kind, real weights tag...).
    description : str
        One line for listings.
    """

    name: str
    builder: str
    options: dict[str, Any] = field(default_factory=dict)
    description: str = ""


REGISTRY: dict[str, SpaceSpec] = {}


def register_space(spec: SpaceSpec, *, overwrite: bool = False) -> None:
    """Add a space to the registry (``overwrite`` to replace one)."""
    if spec.name in REGISTRY and not overwrite:
        raise ValidationError(format_error("spec.name", "a name not yet registered", spec.name,
                                           "Pick another name or pass overwrite=True"))
    REGISTRY[spec.name] = spec


