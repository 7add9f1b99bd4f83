"""Latent target spaces (CLIP image/text tokens and pooled embeddings, sentence encoders) and their feature cache.

>>> from neurodecode.latents import get_space
>>> space = get_space("clip-vit-l-14-tokens-tiny")          # doctest: +SKIP
>>> space.encode_images(images).shape                        # doctest: +SKIP
(n_images, 17, 16)
"""

from __future__ import annotations

from ._base import LatentSpace, available_spaces, describe_space, get_space, space_artefacts
from ._cache import FeatureCache, embed_to_cache
from .clip import build_open_clip, load_open_clip_folder, save_open_clip_folder

__all__ = [
    "LatentSpace",
    "get_space",
    "available_spaces",
    "describe_space",
    "space_artefacts",
    "embed_to_cache",
    "FeatureCache",
    "build_open_clip",
    "save_open_clip_folder",
    "load_open_clip_folder",
]
