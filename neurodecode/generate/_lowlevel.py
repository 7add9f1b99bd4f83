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
from ._base import Generator, denoise, empty_prompt_ids, fresh_scheduler, prepare_latents

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
        from diffusers import AutoencoderKL, UNet2DConditionModel, UniPCMultistepScheduler
        from transformers import CLIPTextConfig, CLIPTextModel

        cfg = self.tiny_config
        width = int(cfg["width"])
        unet = UNet2DConditionModel(sample_size=cfg["sample_size"], in_channels=4, out_channels=4,
                                    block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=width,
                                    attention_head_dim=8, norm_num_groups=32,
                                    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
        vae = AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
                            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                            norm_num_groups=32, sample_size=2 * cfg["sample_size"])
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=1000, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=cfg["text_tokens"],
            bos_token_id=998, eos_token_id=999, pad_token_id=999))
        scheduler = UniPCMultistepScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
        return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "scheduler": scheduler, "tokenizer": None}

    def _build_real(self, name_or_path: str) -> dict[str, Any]:
        from diffusers import AutoencoderKL, UNet2DConditionModel, UniPCMultistepScheduler
        from transformers import CLIPTextModel, CLIPTokenizer

        from ..io.hub import resolve_model_dir

        folder = resolve_model_dir(name_or_path, allow_patterns=[
            "model_index.json", "unet/*.json", "unet/*.safetensors", "vae/*.json", "vae/*.safetensors",
            "text_encoder/*.json", "text_encoder/*.safetensors", "tokenizer/*", "scheduler/*"])
        return {
            "unet": UNet2DConditionModel.from_pretrained(folder, subfolder="unet"),
            "vae": AutoencoderKL.from_pretrained(folder, subfolder="vae"),
            "text_encoder": CLIPTextModel.from_pretrained(folder, subfolder="text_encoder"),
            "scheduler": UniPCMultistepScheduler.from_pretrained(folder, subfolder="scheduler"),
            "tokenizer": CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer"),
        }

    def _expects(self) -> dict[str, tuple[int | None, ...]]:
        return {"vae_latents": (None, int(self.components_["vae"].config.latent_channels), None, None)}

    def _prompt(self) -> Any:
        if getattr(self, "prompt_", None) is None:
            c = self.components_
            ids = empty_prompt_ids(c["text_encoder"], c.get("tokenizer")).to(self.execution_device)
            self.prompt_ = c["text_encoder"](input_ids=ids).last_hidden_state
        return self.prompt_

    def _generate_batch(self, latents: dict[str, np.ndarray], generators: list[Any], *, steps: int, guidance: float,
                        strength: float = 0.85, scheduler: str = "unipc") -> Any:
        from .._core.errors import ValidationError

        c = self.components_
        init = self._tensor(latents["vae_latents"]) * float(c["vae"].config.scaling_factor)
        if float(strength) == 0.0:
            return self._decode(init)
        if not 0.0 < float(strength) <= 1.0:
            raise ValidationError(format_error("strength", "a number in [0, 1]", strength,
                                               "0 decodes the latent as it is; 0.75-0.85 refines it"))
        sched = fresh_scheduler(c["scheduler"], scheduler)
        lat, timesteps = prepare_latents(sched, generators, shape=tuple(init.shape[1:]), steps=steps,
                                         device=self.execution_device, dtype=self.torch_dtype_, init_latents=init,
                                         strength=strength)
        cond = self._prompt().expand(init.shape[0], -1, -1)
        lat = denoise(c["unet"], sched, lat, timesteps, cond=cond, uncond=cond, guidance=guidance,
                      generators=generators)
        return self._decode(lat)
