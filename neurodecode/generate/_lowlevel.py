"""Low-level path: an image from a predicted VAE latent, optionally refined by img2img at a strength.

Brain-Diffuser's stage 1 and MindBridge's / MindEye2's low-level option predict the latent of
an image autoencoder; decoding it gives a blurry image with the right layout and colours.
``strength=0`` returns that decoded image; ``strength`` in (0, 1] noises the latent to that
fraction of the schedule and denoises it with a Stable-Diffusion-class UNet conditioned on the
empty prompt (0.75-0.85 keeps the layout). To refine with CLIP guidance as well, pass the VAE
latent to the dual-guided (``versatile``) or ``unclip`` generator instead, which accept an
optional ``vae_latents`` key for img2img.

Built from diffusers components (``UNet2DConditionModel``, ``AutoencoderKL``, UniPC/DDIM) with
the shared batched loop of :mod:`neurodecode.generate._base`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .._core.validation import format_error
from ._base import (
    SD_BETAS,
    SD_FILES,
    Generator,
    denoise,
    fresh_scheduler,
    load_subfolders,
    prepare_latents,
    tiny_text_config,
    tiny_unet_config,
    tiny_vae,
)

__all__ = ["LowLevelGenerator"]

#: Weights used by this generator (id, licence); read by ``neurodecode download``.
WEIGHTS = {
    "stable-diffusion-v1-5/stable-diffusion-v1-5": {
        "licence": "CreativeML OpenRAIL-M", "purpose": "SD 1.5 UNet, VAE, CLIP text encoder (low-level img2img)",
    },
}


class LowLevelGenerator(Generator):
    """Images from predicted VAE latents (decode, or img2img at ``strength``).

    Expects ``latents["vae_latents"]`` of shape (n, 4, h, w): raw VAE latents (before the VAE
    scaling factor), e.g. (n, 4, 64, 64) for 512 px images with the SD VAE.

    Options of :meth:`generate`: ``strength`` (default 0.85; 0 = decode only), ``scheduler``
    (``"unipc"`` default, ``"ddim"``).
    """

    name = "lowlevel"
    default_weights = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    default_steps = 20
    default_guidance = 1.0
    TINY: ClassVar[dict[str, Any]] = {"width": 32, "text_tokens": 9, "sample_size": 16}

    def _build_tiny(self) -> dict[str, Any]:
        from diffusers import UNet2DConditionModel, UniPCMultistepScheduler
        from transformers import CLIPTextModel

        cfg = self.tiny_config
        width = int(cfg["width"])
        unet = UNet2DConditionModel(**tiny_unet_config(cfg["sample_size"], width))
        vae = tiny_vae(2 * cfg["sample_size"])
        text_encoder = CLIPTextModel(tiny_text_config(width, cfg["text_tokens"]))
        scheduler = UniPCMultistepScheduler(**SD_BETAS)
        return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "scheduler": scheduler, "tokenizer": None}

    def _build_real(self, name_or_path: str) -> dict[str, Any]:
        from diffusers import AutoencoderKL, UNet2DConditionModel, UniPCMultistepScheduler
        from transformers import CLIPTextModel, CLIPTokenizer

        from ..io.hub import resolve_model_dir

        folder = resolve_model_dir(name_or_path, allow_patterns=list(SD_FILES))
        return load_subfolders(folder, {
            "unet": UNet2DConditionModel, "vae": AutoencoderKL, "text_encoder": CLIPTextModel,
            "scheduler": UniPCMultistepScheduler, "tokenizer": CLIPTokenizer})

    def _expects(self) -> dict[str, tuple[int | None, ...]]:
        return {"vae_latents": (None, int(self.components_["vae"].config.latent_channels), None, None)}

    def _generate_batch(self, latents: dict[str, np.ndarray], generators: list[Any], *, steps: int, guidance: float,
                        strength: float = 0.85, scheduler: str = "unipc") -> Any:
        from .._core.errors import ValidationError

        c = self.components_
        init = self._vae_init(latents["vae_latents"])
        if float(strength) == 0.0:
            return self._decode(init)
        if not 0.0 < float(strength) <= 1.0:
            raise ValidationError(format_error("strength", "a number in [0, 1]", strength,
                                               "0 decodes the latent as it is; 0.75-0.85 refines it"))
        sched = fresh_scheduler(c["scheduler"], scheduler)
        lat, timesteps = prepare_latents(sched, generators, shape=tuple(init.shape[1:]), steps=steps,
                                         device=self.execution_device, dtype=self.torch_dtype_, init_latents=init,
                                         strength=strength)
        cond = self._empty_prompt().expand(init.shape[0], -1, -1)
        lat = denoise(c["unet"], sched, lat, timesteps, cond=cond, uncond=cond, guidance=guidance,
                      generators=generators)
        return self._decode(lat)
