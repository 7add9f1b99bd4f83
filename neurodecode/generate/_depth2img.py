"""Stable Diffusion 2 depth img2img from a decoded depth map, an init image and a caption (Takagi & Nishimoto).

The "+ decoded depth" variant of Takagi & Nishimoto's tech report (arXiv 2306.11536; code
``yu-takagi/StableDiffusionReconstruction``, ``codes/diffusion_sd2/diffusion_decoding.py``) runs
SD-2.0-depth (``512-depth-ema.ckpt``; diffusers ``stabilityai/stable-diffusion-2-depth``): its UNet reads
5 channels, the 4 latent channels plus the depth map at latent size, min-max scaled to [-1, 1] (the LDM
``c_concat``), and attends to the caption's OpenCLIP-H text tokens. The depth map is *given* (decoded
from the brain: DPT-large hidden states decoded by ridge, then DPT's neck and head), so the pipeline's
own depth estimator is neither loaded nor run. Init image (the reference's GAN reconstruction; here the
decoded init latent or any image) resized to 512 px, img2img strength 0.8, DDIM 50 steps, eta 0,
guidance 5 with the empty prompt as unconditional text (and the same depth), five samples per image.

The computation is diffusers' ``StableDiffusionDepth2ImgPipeline`` with ``depth_map=`` (the depth map
resized bicubic to the latent size, then min-max scaled per item), through the shared batched loop of
:mod:`._sd_img2img`; ``init_noise`` as there (``"ldm"`` the reference's noising level by default).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from ._base import denoise, tiny_unet_config, tiny_vae
from ._sd_img2img import SDImg2ImgGenerator, ddim_config, tiny_clip_text_encoder, tiny_clip_tokenizer

__all__ = ["Depth2ImgGenerator", "depth_condition"]


def depth_condition(depth_maps: Any, size: tuple[int, int]) -> Any:
    """Depth maps (b, h, w) -> the UNet's 5th channel (b, 1, *size): bicubic resize, per-item min-max to [-1, 1].

    As diffusers' ``StableDiffusionDepth2ImgPipeline.prepare_depth_map`` with ``depth_map=`` given (and the
    reference's ``c_concat``, which is resized to 64 x 64 and min-max scaled the same way).
    """
    import torch

    d = torch.nn.functional.interpolate(depth_maps[:, None].float(), size=tuple(size), mode="bicubic",
                                        align_corners=False)
    lo = torch.amin(d, dim=(1, 2, 3), keepdim=True)
    hi = torch.amax(d, dim=(1, 2, 3), keepdim=True)
    return 2.0 * (d - lo) / (hi - lo).clamp_min(torch.finfo(d.dtype).tiny) - 1.0


class _ConcatUNet:
    """The depth UNet called like a plain one: ``depth`` (a UNet keyword of :func:`denoise`) joins the input channels."""

    def __init__(self, unet: Any) -> None:
        self.unet = unet

    def __call__(self, x: Any, t: Any, *, encoder_hidden_states: Any, return_dict: bool = False, depth: Any) -> Any:
        import torch

        return self.unet(torch.cat([x, depth.to(x.dtype)], dim=1), t, encoder_hidden_states=encoder_hidden_states,
                         return_dict=return_dict)


class Depth2ImgGenerator(SDImg2ImgGenerator):
    """SD-2-depth img2img from a decoded depth map, a decoded init latent (or image) and a caption.

    Expects ``latents["depth_maps"]`` (n, h, w) (any size and scale: resized to the latent grid and min-max
    scaled per item); ``latents["vae_latents"]`` (n, 4, h, w) raw VAE latents, decoded by this VAE and resized
    to 512 px, **or** ``latents["init_images"]`` (n, H, W, 3) in 0-255; and ``latents["captions"]`` (n str)
    **or** ``latents["clip_text_tokens"]`` (n, 77, 1024) (SD-2's OpenCLIP-H text condition).

    Options of :meth:`generate`: as :class:`~neurodecode.generate._sd_img2img.SDImg2ImgGenerator`
    (``strength`` 0.8, ``init_noise``, ``size``, ``scheduler``). Defaults: 50 DDIM steps, guidance 5.
    :meth:`generate_samples` gives five samples per image.
    """

    name = "sd2-depth"
    default_weights = "stabilityai/stable-diffusion-2-depth"
    default_steps = 50
    default_guidance = 5.0
    licence = "CreativeML OpenRAIL++-M"
    purpose = "SD-2-depth UNet (5 input channels), VAE, OpenCLIP-H text encoder and tokenizer (no depth estimator)"
    optional_keys = ("init_images", "captions")
    #: Tiny tier: text width 48 (not sd-img2img's 40), 32 px images.
    TINY: ClassVar[dict[str, Any]] = {"text_width": 48, "sample_size": 16}

    def _build_tiny(self) -> dict[str, Any]:
        from diffusers import DDIMScheduler, UNet2DConditionModel

        cfg = self.tiny_config
        width = int(cfg["text_width"])
        unet = UNet2DConditionModel(**{**tiny_unet_config(cfg["sample_size"], width), "in_channels": 5})
        return {"unet": unet, "vae": tiny_vae(2 * cfg["sample_size"]),
                "text_encoder": tiny_clip_text_encoder(width, hidden_act="gelu"),
                "tokenizer": tiny_clip_tokenizer(pad_token="!"), "scheduler": DDIMScheduler(**ddim_config())}

    # hub_files and _build_real: SD-img2img's (UNet, VAE, text encoder, tokenizer, scheduler); the repository's
    # depth_estimator (DPT-hybrid) is never loaded: the depth map is given

    def _extra_expects(self) -> dict[str, tuple[int | None, ...]]:
        return {"depth_maps": (None, None, None)}

    def _denoise(self, sched: Any, lat: Any, timesteps: Any, *, cond: Any, uncond: Any, guidance: float,
                 latents: Mapping[str, np.ndarray], generators: list[Any], **options: Any) -> Any:
        depth = depth_condition(self._tensor(latents["depth_maps"]), tuple(lat.shape[-2:])).to(lat.dtype)
        return denoise(_ConcatUNet(self.components_["unet"]), sched, lat, timesteps, cond=cond, uncond=uncond,
                       guidance=guidance, unet_kwargs={"depth": depth}, generators=generators)
