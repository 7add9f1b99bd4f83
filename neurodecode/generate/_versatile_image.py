"""Versatile Diffusion image variation: an image from predicted CLIP image tokens alone (optionally img2img).

The decoders that predict CLIP ViT-L/14 image tokens but no text tokens (STTM; MindEye1, whose
reconstruction sets Versatile Diffusion's ``text_to_image_strength`` to 0) draw their images with the
image half of Versatile Diffusion. In our dual-guided UNet (:class:`~neurodecode.generate._versatile.
VersatileGenerator`) every cross-attention block returns ``x + mix * text residual + (1 - mix) * image
residual``; at ``mix = 0`` the text transformers' residuals are multiplied by zero, so the UNet is the
image UNet alone, whatever the text tokens hold. This generator is that setting: it expects
``clip_image_tokens`` only (and optionally ``vae_latents`` for img2img at ``strength``), feeds
all-zero text tokens to the unused half, and refuses a non-zero ``text_weight``. Same weights, files,
schedulers and options as ``"versatile"`` otherwise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._core.errors import ValidationError
from .._core.validation import format_error
from ._versatile import VersatileGenerator

__all__ = ["VersatileImageVariation"]


class VersatileImageVariation(VersatileGenerator):
    """Versatile Diffusion conditioned on predicted CLIP image tokens only (image variation, text weight 0).

    Expects ``latents["clip_image_tokens"]`` of shape (n, 257, 768) (real tier; VD-normalised) and
    optionally ``latents["vae_latents"]`` of shape (n, 4, h, w) (raw VAE latents) to run img2img at
    ``strength``. Options of :meth:`generate` as ``"versatile"`` (``strength``, ``scheduler``,
    ``renorm``, ``uncond``, ``height``/``width``), without ``text_weight`` (fixed at 0).

    Examples
    --------
    >>> gen = VersatileImageVariation("tiny")                              # doctest: +SKIP
    >>> images = gen.generate({"clip_image_tokens": tokens, "vae_latents": lowlevel}, seeds=0, strength=0.85)  # doctest: +SKIP
    """

    name = "versatile-image"
    purpose = "Versatile Diffusion image UNet (image variation from CLIP image tokens), VAE"

    def _expects(self) -> dict[str, tuple[int | None, ...]]:
        return {"clip_image_tokens": super()._expects()["clip_image_tokens"]}

    def _generate_batch(self, latents: dict[str, np.ndarray], generators: list[Any], *, steps: int, guidance: float,
                        text_weight: float = 0.0, **options: Any) -> Any:
        if float(text_weight) != 0.0:
            raise ValidationError(format_error(
                "text_weight", "0 (image variation: no text tokens are predicted)", text_weight,
                "Use generator = \"versatile\" with a decoder that predicts clip_text_tokens for dual guidance"))
        _, n_txt, width = super()._expects()["clip_text_tokens"]
        img = np.asarray(latents["clip_image_tokens"])
        text = np.zeros((len(img), int(n_txt or 77), int(width or img.shape[-1])), dtype=np.float32)
        return super()._generate_batch({**latents, "clip_text_tokens": text}, generators, steps=steps,
                                       guidance=guidance, text_weight=0.0, **options)
