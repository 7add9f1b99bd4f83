"""Generators: predicted latents -> images (diffusers) and captions (transformers).

Every generator consumes the dict returned by a decoder's ``predict_latents(X, subject=...)``
(keys from :data:`neurodecode.models.LATENT_KEYS`), declares the keys and shapes it needs in
``expects``, and has two tiers of weights running one code path: the published ones (hub id
or local folder, offline-aware) and ``"tiny"`` (same architecture, toy width, random init).

>>> from neurodecode.generate import get_generator                    # doctest: +SKIP
>>> gen = get_generator("versatile", weights="tiny")                  # doctest: +SKIP
>>> images = gen.generate(latents, seeds=0, steps=2)                  # (n, 32, 32, 3) uint8  # doctest: +SKIP

Registered names: ``"versatile"`` (VD dual guidance, image + text tokens), ``"unclip"``
(Stable unCLIP from a pooled embedding), ``"sdxl-turbo"`` (SDXL-Turbo + IP-Adapter, ViT-H),
``"lowlevel"`` (VAE latent decode / img2img), ``"git"`` (captions from CLIP tokens),
``"retrieval"`` (nearest caption in a text space). :class:`PixelUnCLIP` (``config.json`` +
``model.safetensors``, a small conditional pixel diffusion model from CLIP image tokens) is the
generator of the embedded demo's miniature model set. Nothing heavy is imported until a generator
is built.
"""

from __future__ import annotations

import os
from typing import Any

from ._download import download_weights, recipe_artefacts, recipe_weights
from ._registry import GENERATORS, generator_class

__all__ = ["GENERATORS", "get_generator", "generator_class", "generator_weights", "recipe_weights", "recipe_artefacts",
           "download_weights", "PixelUnCLIP", "PixelUnCLIPConfig"]


def __getattr__(name: str) -> Any:
    # the pixel unCLIP imports torch/diffusers: load it only when asked for
    if name in ("PixelUnCLIP", "PixelUnCLIPConfig"):
        from . import _pixel_unclip

        return getattr(_pixel_unclip, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

def generator_weights(name: str, *, weights: Any = None, dtype: Any = None, **kwargs: Any) -> dict[str, dict[str, Any]]:
    """The hub weights a generator reads: ``{hub id: {"licence", "purpose", "files"}}``.

    Derived from the generator's own declaration (``artefacts``), the single source of truth of
    ``neurodecode download``; ``files`` lists file groups (alternatives, preferred first).
    """
    from ..io.hub import HubArtefact

    arts = generator_class(name).artefacts(weights, dtype, **kwargs)
    return {a.repo: {"licence": a.licence, "purpose": a.purpose, "files": [list(g) for g in a.files]}
            for a in arts if isinstance(a, HubArtefact)}


def get_generator(name: str, *, weights: str | os.PathLike[str] | None = None, device: Any = "cpu",
                  dtype: Any = "float32", preset: str | None = None, compile: bool = False,
                  **kwargs: Any) -> Any:
    """Build a generator by name (its components load lazily, at the first ``generate`` or ``load()``).

    Parameters
    ----------
    name : str
        One of :data:`GENERATORS`.
    weights : None, "tiny", str or path-like
        ``None``: the published weights (hub id, from the local cache when offline);
        ``"tiny"``: small random-init architecture (offline); or a hub id / local folder.
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
    dtype : str
        ``"float32"`` (default), ``"bfloat16"`` or ``"float16"``.
    preset : None or "24gb"
        Memory preset (VAE tiling/slicing, model CPU offload).
    compile : bool
        ``torch.compile`` the UNet (regional compilation of its repeated blocks).
    **kwargs
        Generator-specific arguments (``preview_vae``, ``config`` for the tiny tier,
        ``corpus`` for ``"retrieval"``, ``ip_adapter`` for ``"sdxl-turbo"``...).

    Returns
    -------
    generator : Generator
    """
    cls = generator_class(name)
    if weights is not None and not isinstance(weights, str):
        weights = os.fspath(weights)
    return cls(weights=weights, device=device, dtype=dtype, preset=preset, compile=compile, **kwargs)
