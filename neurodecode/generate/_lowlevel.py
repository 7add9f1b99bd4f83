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

class LowLevelGenerator(Generator):
    """Images from predicted VAE latents (decode, or img2img at ``strength``).

    Expects ``latents["vae_latents"]`` of shape (n, 4, h, w): raw VAE latents (before the VAE
    scaling factor), e.g. (n, 4, 64, 64) for 512 px images with the SD VAE.

    Options of :meth:`generate`: ``strength`` (default 0.85; 0 = decode only), ``scheduler``
    (``"unipc"`` default, ``"ddim"``).

    Parameters
    ----------
    decode_only : bool
        Load only a VAE and decode (``strength`` must be 0): ``weights`` is then an
        ``AutoencoderKL`` folder or hub id (default ``stabilityai/sd-vae-ft-mse``, the VAE of the
        ``sd-vae`` space), or a Stable Diffusion folder whose ``vae/`` is read. A folder holding a
        VAE alone turns this on by itself.
    **kwargs
        See :class:`~neurodecode.generate._base.Generator`.
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

    licence = "CreativeML OpenRAIL-M"
    purpose = "SD 1.5 UNet, VAE, CLIP text encoder (low-level img2img)"
    #: The VAE read when ``decode_only`` (the ``sd-vae`` latent space's weights).
    DECODE_ONLY_VAE = "stabilityai/sd-vae-ft-mse"

    def __init__(self, weights: Any = None, *, decode_only: bool = False, **kwargs: Any) -> None:
        super().__init__(weights, **kwargs)
        self.decode_only = bool(decode_only)

    @classmethod
    def hub_files(cls, dtype: Any = None, *, decode_only: bool = False, vae_sub: str = "",
                  **kwargs: Any) -> tuple[tuple[str, ...], ...]:
        from ..io.hub import diffusers_model_files
        from ._base import sd_files

        if decode_only:
            return diffusers_model_files(vae_sub, dtype)
        return sd_files(dtype)

    @classmethod
    def artefacts(cls, weights: Any = None, dtype: Any = None, *, decode_only: bool = False,
                  **kwargs: Any) -> list[Any]:
        if decode_only and weights is None:
            from ..io.hub import HubArtefact

            return [HubArtefact(cls.DECODE_ONLY_VAE, cls.hub_files(dtype, decode_only=True), "MIT",
                                "lowlevel generator (decode only): the SD VAE")]
        return super().artefacts(weights, dtype, decode_only=decode_only, **kwargs)

    def _vae_only_layout(self, name_or_path: str) -> str | None:
        """``""`` (a VAE at the root), ``"vae"`` (a pipeline's ``vae/``) or ``None`` (a full pipeline wanted)."""
        from pathlib import Path

        path = Path(name_or_path).expanduser()
        if path.is_dir() and (path / "config.json").is_file() and not (path / "unet").is_dir():
            return ""  # a folder holding a VAE alone: decode-only by itself
        if not self.decode_only:
            return None
        if path.is_dir():
            return "vae" if (path / "vae").is_dir() else ""
        return "" if name_or_path == self.DECODE_ONLY_VAE else "vae"

    def load(self) -> LowLevelGenerator:
        if self.decode_only and self.weights is None:
            self.weights = self.DECODE_ONLY_VAE
        super().load()
        return self

    def _build_real(self, name_or_path: str) -> dict[str, Any]:
        from diffusers import AutoencoderKL, UNet2DConditionModel, UniPCMultistepScheduler
        from transformers import CLIPTextModel, CLIPTokenizer

        from ._base import load_component

        vae_sub = self._vae_only_layout(name_or_path)
        if vae_sub is not None:
            self.decode_only = True
            folder = self._resolve(name_or_path, decode_only=True, vae_sub=vae_sub)
            return {"vae": load_component(folder, vae_sub, AutoencoderKL, self.torch_dtype_)}
        folder = self._resolve(name_or_path)
        return load_subfolders(folder, {
            "unet": UNet2DConditionModel, "vae": AutoencoderKL, "text_encoder": CLIPTextModel,
            "scheduler": UniPCMultistepScheduler, "tokenizer": CLIPTokenizer}, self.torch_dtype_)

    def _expects(self) -> dict[str, tuple[int | None, ...]]:
        return {"vae_latents": (None, int(self.components_["vae"].config.latent_channels), None, None)}

    def _generate_batch(self, latents: dict[str, np.ndarray], generators: list[Any], *, steps: int, guidance: float,
                        strength: float = 0.85, scheduler: str = "unipc") -> Any:
        from .._core.errors import ValidationError

        c = self.components_
        init = self._vae_init(latents["vae_latents"])
        if float(strength) == 0.0:
            return self._decode(init)
        if "unet" not in c:
            raise ValidationError(format_error(
                "strength", "0 (decode only: only a VAE is loaded)", strength,
                "Pass strength=0, or load a full Stable Diffusion folder (decode_only=False) to refine by img2img"))
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
