"""Stable Diffusion + ControlNet-depth img2img: low-level init image, decoded depth map, decoded caption (Brain Captioning).

Brain Captioning (Ferrante et al., arXiv 2305.11560) draws the image from a brain-decoded low-level
image, a brain-decoded depth map and the brain-decoded GIT caption, through Stable Diffusion with a depth
ControlNet. No code was released, so the settings are diffusers' defaults for
``StableDiffusionControlNetImg2ImgPipeline`` with the published depth ControlNet
(``lllyasviel/sd-controlnet-depth`` on ``stable-diffusion-v1-5``): strength 0.8, guidance 7.5,
ControlNet scale 1.0, 50 steps; DDIM (eta 0) as the other img2img generators here, where the SD-1.5
repository's pipeline would default to PNDM (``scheduler="unipc"`` / ``"euler_a"`` / ``"ddpm"`` are other choices).

The ControlNet reads the depth map as an image (the MiDaS convention of ``sd-controlnet-depth``: near is
bright): the decoded map is resized (bicubic) to the output size, min-max scaled per item to [0, 1] and
repeated over 3 channels. Init image as :mod:`._sd_img2img` (a VAE latent decoded, or an image; resized to
512 px; posterior sample). The computation is the pipeline's (ControlNet residuals added to the UNet's skip
connections at every step, for both halves of classifier-free guidance) through the shared batched loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from ._base import denoise, load_subfolders, tiny_unet_config, tiny_vae
from ._sd_img2img import SDImg2ImgGenerator, ddim_config, sd_ddim, tiny_clip_text_encoder, tiny_clip_tokenizer

__all__ = ["ControlNetDepthGenerator", "CONTROLNET", "control_image"]

#: The published depth ControlNet for SD 1.5 (trained on MiDaS depth maps).
CONTROLNET = "lllyasviel/sd-controlnet-depth"


def control_image(depth_maps: Any, size: tuple[int, int]) -> Any:
    """Depth maps (b, h, w) -> ControlNet images (b, 3, *size) in [0, 1]: bicubic resize, per-item min-max."""
    import torch

    d = torch.nn.functional.interpolate(depth_maps[:, None].float(), size=tuple(size), mode="bicubic",
                                        align_corners=False)
    lo = torch.amin(d, dim=(1, 2, 3), keepdim=True)
    hi = torch.amax(d, dim=(1, 2, 3), keepdim=True)
    return ((d - lo) / (hi - lo).clamp_min(torch.finfo(d.dtype).tiny)).expand(-1, 3, -1, -1)


class _ControlledUNet:
    """UNet + ControlNet called like a plain UNet: ``control`` and ``control_scale`` are keywords of :func:`denoise`."""

    def __init__(self, unet: Any, controlnet: Any) -> None:
        self.unet, self.controlnet = unet, controlnet

    def __call__(self, x: Any, t: Any, *, encoder_hidden_states: Any, return_dict: bool = False, control: Any,
                 control_scale: float = 1.0) -> Any:
        down, mid = self.controlnet(x, t, encoder_hidden_states=encoder_hidden_states,
                                    controlnet_cond=control.to(x.dtype), conditioning_scale=float(control_scale),
                                    guess_mode=False, return_dict=False)
        return self.unet(x, t, encoder_hidden_states=encoder_hidden_states, down_block_additional_residuals=down,
                         mid_block_additional_residual=mid, return_dict=return_dict)


class ControlNetDepthGenerator(SDImg2ImgGenerator):
    """SD + depth ControlNet img2img from a decoded depth map, a low-level init and a caption (Brain Captioning).

    Expects ``latents["depth_maps"]`` (n, h, w) (any size and scale); ``latents["vae_latents"]`` (n, 4, h, w)
    raw SD-VAE latents **or** ``latents["init_images"]`` (n, H, W, 3) in 0-255 (e.g. a VDVAE low-level image);
    and ``latents["captions"]`` (n str, the decoded GIT captions) **or** ``latents["clip_text_tokens"]``
    (n, 77, 768).

    Options of :meth:`generate`: ``controlnet_scale`` (default 1.0), ``strength`` (0.8), ``init_noise``
    (``"diffusers"`` by default: there is no reference code), ``size``, ``scheduler``. Defaults: 50 DDIM
    steps, guidance 7.5.

    Parameters
    ----------
    controlnet : str or path-like
        Hub id or folder of the ControlNet (``config.json`` + ``diffusion_pytorch_model.safetensors``).
    **kwargs
        See :class:`~neurodecode.generate._sd_img2img.SDImg2ImgGenerator`.
    """

    name = "sd-controlnet-depth"
    default_weights = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    default_steps = 50
    default_guidance = 7.5
    default_init_noise = "diffusers"
    default_n_samples = 1
    licence = "CreativeML OpenRAIL-M"
    purpose = "SD 1.5 UNet, VAE, CLIP ViT-L/14 text encoder and tokenizer (ControlNet img2img)"
    optional_keys = ("init_images", "captions")
    extra_options = ("controlnet_scale",)
    #: Tiny tier: text width 56 (not 40 / 48), ControlNet conditioning embedding (8, 16): one x2 downsampling,
    #: as the tiny VAE (the real one, (16, 32, 96, 256), downsamples x8 as the SD VAE).
    TINY: ClassVar[dict[str, Any]] = {"text_width": 56, "sample_size": 16, "cond_channels": (8, 16)}

    def __init__(self, weights: Any = None, *, controlnet: Any = CONTROLNET, **kwargs: Any) -> None:
        super().__init__(weights, **kwargs)
        self.controlnet = controlnet

    def _build_tiny(self) -> dict[str, Any]:
        import torch
        from diffusers import ControlNetModel, DDIMScheduler, UNet2DConditionModel

        cfg = self.tiny_config
        width = int(cfg["text_width"])
        unet = UNet2DConditionModel(**tiny_unet_config(cfg["sample_size"], width))
        net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=tuple(cfg["cond_channels"]))
        # from_unet starts the zero convolutions at zero (no effect until trained); the tiny twin stands for a
        # trained ControlNet, so they get small random weights
        with torch.no_grad():
            for module in [*net.controlnet_down_blocks, net.controlnet_mid_block, net.controlnet_cond_embedding.conv_out]:
                module.weight.normal_(0.0, 0.5)
        return {"unet": unet, "controlnet": net, "vae": tiny_vae(2 * cfg["sample_size"]),
                "text_encoder": tiny_clip_text_encoder(width), "tokenizer": tiny_clip_tokenizer(),
                "scheduler": DDIMScheduler(**ddim_config())}

    @classmethod
    def hub_files(cls, dtype: Any = None, **kwargs: Any) -> tuple[tuple[str, ...], ...]:
        from ._base import sd_files

        return sd_files(dtype)

    @classmethod
    def extra_artefacts(cls, dtype: Any = None, *, controlnet: Any = None, **kwargs: Any) -> list[Any]:
        from pathlib import Path

        from ..io.hub import ExternalArtefact, HubArtefact, diffusers_model_files

        target = str(controlnet) if controlnet is not None else CONTROLNET
        files = diffusers_model_files("", dtype)
        if Path(target).expanduser().is_dir():
            return [ExternalArtefact(target, "folder", "depth ControlNet: a local folder",
                                     extra={"files": [list(g) for g in files]})]
        return [HubArtefact(target, files, "OpenRAIL (model card)",
                            "sd-controlnet-depth generator: ControlNet conditioned on MiDaS depth, SD 1.5")]

    def _build_real(self, name_or_path: str) -> dict[str, Any]:
        from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        from ..io.hub import diffusers_model_files, resolve_files
        from ._base import load_component

        folder = self._resolve(name_or_path)
        parts = load_subfolders(folder, {
            "unet": UNet2DConditionModel, "vae": AutoencoderKL, "text_encoder": CLIPTextModel,
            "tokenizer": CLIPTokenizer, "scheduler": DDIMScheduler}, self.torch_dtype_)
        cn_folder = resolve_files(str(self.controlnet), diffusers_model_files("", self._load_dtype_name()),
                                  what="depth ControlNet weights")
        parts["controlnet"] = load_component(cn_folder, "", ControlNetModel, self.torch_dtype_)
        parts["scheduler"] = sd_ddim(parts["scheduler"])
        return parts

    def _enable_cpu_offload(self, modules: Mapping[str, Any]) -> None:
        """``preset="24gb"``: the shared offload chain with the ControlNet joined before the UNet (each moves to the
        GPU when called and leaves when the next one is: the ControlNet travels at every step, less memory, slower)."""
        from accelerate import cpu_offload_with_hook

        hook = None
        for name in ("text_encoder", "controlnet", "unet", "vae", "decoder_vae"):
            if name in modules:
                _, hook = cpu_offload_with_hook(modules[name], self.device_, prev_module_hook=hook)
        self.execution_device_ = self.device_

    def _extra_expects(self) -> dict[str, tuple[int | None, ...]]:
        return {"depth_maps": (None, None, None)}

    def _denoise(self, sched: Any, lat: Any, timesteps: Any, *, cond: Any, uncond: Any, guidance: float,
                 latents: Mapping[str, np.ndarray], generators: list[Any], controlnet_scale: float = 1.0,
                 **options: Any) -> Any:
        vae = self.components_["vae"]
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        size = (int(lat.shape[-2]) * factor, int(lat.shape[-1]) * factor)
        control = control_image(self._tensor(latents["depth_maps"]), size).to(lat.dtype)
        net = _ControlledUNet(self.components_["unet"], self.components_["controlnet"])
        return denoise(net, sched, lat, timesteps, cond=cond, uncond=uncond, guidance=guidance,
                       unet_kwargs={"control": control, "control_scale": float(controlnet_scale)},
                       generators=generators)

    def provenance(self) -> dict[str, Any]:
        return {**super().provenance(), "controlnet": str(self.controlnet)}
