"""SDXL-Turbo + IP-Adapter from a ViT-H image embedding (ATM's stage 2), 1-4 steps, guidance 0.

ATM decodes EEG/MEG into a pooled OpenCLIP ViT-H/14 image embedding (1024) and draws the
image with SDXL-Turbo conditioned through IP-Adapter (``h94/IP-Adapter``,
``sdxl_models/ip-adapter_sdxl_vit-h.safetensors``, scale 1) on the empty prompt, 1-4 steps,
guidance 0, Euler ancestral.

Built on diffusers' ``StableDiffusionXLPipeline`` (current, not deprecated) for loading: the
IP-Adapter is attached with the pipeline's public ``load_ip_adapter`` (the tiny tier passes a
randomly initialised state dict in the published IP-Adapter layout through the same call). The
pipeline's ``__call__`` cannot batch *different* image embeddings (it repeats
``ip_adapter_image_embeds`` over the batch: one image prompt for every item, so items leak
into each other), so generation runs our shared batched loop over the pipeline's UNet, VAE
and scheduler, with the predicted embeddings as the UNet's ``added_cond_kwargs["image_embeds"]``
and per-item ``torch.Generator`` objects (Euler ancestral's noise too), so a batch is identical
to one-at-a-time generation. The empty prompt is encoded once.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ._base import (
    SD_BETAS,
    Generator,
    denoise,
    empty_prompt_ids,
    fresh_scheduler,
    prepare_latents,
    tiny_text_config,
    tiny_vae,
)

__all__ = ["SDXLTurboGenerator"]

IP_ADAPTER = ("h94/IP-Adapter", "sdxl_models", "ip-adapter_sdxl_vit-h.safetensors")


class SDXLTurboGenerator(Generator):
    """Images from a pooled ViT-H image embedding through SDXL-Turbo + IP-Adapter.

    Expects ``latents["clip_image_embeds"]`` of shape (n, 1024) (real tier).

    Options of :meth:`generate`: ``ip_adapter_scale`` (default 1.0), ``height``/``width``
    (default 512 for the real tier), ``scheduler`` (``"euler_a"`` default).

    Parameters
    ----------
    ip_adapter : str or path-like
        Hub id or folder holding ``sdxl_models/ip-adapter_sdxl_vit-h.safetensors`` (real tier).
    **kwargs
        See :class:`~neurodecode.generate._base.Generator`.
    """

    name = "sdxl-turbo"
    default_weights = "stabilityai/sdxl-turbo"
    default_steps = 4
    default_guidance = 0.0
    latent_family = "sdxl"
    #: Tiny tier: ``clip-vit-h-14-tiny`` embeddings (24); 32 px images.
    TINY: ClassVar[dict[str, Any]] = {"embed_dim": 24, "text_width": 32, "text_tokens": 9, "sample_size": 16}

    def __init__(self, weights: Any = None, *, ip_adapter: str = IP_ADAPTER[0], **kwargs: Any) -> None:
        super().__init__(weights, **kwargs)
        self.ip_adapter = ip_adapter

    def _build_tiny(self) -> dict[str, Any]:
        import torch
        from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTextModelWithProjection

        cfg = self.tiny_config
        embed, width = int(cfg["embed_dim"]), int(cfg["text_width"])
        time_dim = 8
        unet = UNet2DConditionModel(
            sample_size=cfg["sample_size"], in_channels=4, out_channels=4, block_out_channels=(32, 64),
            layers_per_block=1, attention_head_dim=(2, 4), use_linear_projection=True, norm_num_groups=32,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=2 * width, addition_embed_type="text_time", addition_time_embed_dim=time_dim,
            projection_class_embeddings_input_dim=6 * time_dim + width)
        vae = tiny_vae(2 * cfg["sample_size"], scaling_factor=0.13025)
        text_encoder = CLIPTextModel(tiny_text_config(width, cfg["text_tokens"]))
        text_encoder_2 = CLIPTextModelWithProjection(tiny_text_config(width, cfg["text_tokens"], projection_dim=width))
        scheduler = EulerAncestralDiscreteScheduler(**SD_BETAS, timestep_spacing="trailing")
        pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                         tokenizer=None, tokenizer_2=None, unet=unet, scheduler=scheduler,
                                         force_zeros_for_empty_prompt=False)
        pipe.set_progress_bar_config(disable=True)
        # A random IP-Adapter in the published layout, loaded through the same public call as the real one.
        cad = int(unet.config.cross_attention_dim)
        ip_layers: dict[str, Any] = {}
        key_id = 1
        for name in unet.attn_processors:
            if name.endswith("attn2.processor"):
                hidden = _hidden_size(unet, name)
                ip_layers[f"{key_id}.to_k_ip.weight"] = torch.randn(hidden, cad) * cad ** -0.5
                ip_layers[f"{key_id}.to_v_ip.weight"] = torch.randn(hidden, cad) * cad ** -0.5
                key_id += 2
        state = {"image_proj": {"proj.weight": torch.randn(4 * cad, embed) * embed ** -0.5,
                                "proj.bias": torch.zeros(4 * cad), "norm.weight": torch.ones(cad),
                                "norm.bias": torch.zeros(cad)},
                 "ip_adapter": ip_layers}
        pipe.load_ip_adapter(state, subfolder="", weight_name="", image_encoder_folder=None)
        return self._components(pipe, embed)

    licence = "Stability AI Non-Commercial Research Community License (non-commercial)"
    purpose = "SDXL-Turbo UNet, VAE, text encoders"

    @classmethod
    def hub_files(cls, dtype: Any = None, **kwargs: Any) -> tuple[tuple[str, ...], ...]:
        """UNet, VAE, both CLIP text encoders and tokenizers, scheduler (fp16 variant preferred in reduced dtypes)."""
        from ..io.hub import clip_tokenizer_files, diffusers_model_files, scheduler_files, transformers_model_files

        return (*diffusers_model_files("unet", dtype), *diffusers_model_files("vae", dtype),
                *transformers_model_files("text_encoder", dtype), *transformers_model_files("text_encoder_2", dtype),
                *clip_tokenizer_files("tokenizer"), *clip_tokenizer_files("tokenizer_2"), *scheduler_files())

    @classmethod
    def extra_artefacts(cls, dtype: Any = None, *, ip_adapter: Any = None, **kwargs: Any) -> list[Any]:
        from pathlib import Path

        from ..io.hub import ExternalArtefact, HubArtefact

        repo, sub, fname = IP_ADAPTER
        target = str(ip_adapter) if ip_adapter is not None else repo
        if Path(target).expanduser().is_dir():
            return [ExternalArtefact(target, "folder", "IP-Adapter: a local folder", extra={"files": [[f"{sub}/{fname}"]]})]
        return [HubArtefact(target, ((f"{sub}/{fname}",),), "Apache-2.0",
                            "sdxl-turbo generator: IP-Adapter for SDXL, ViT-H image encoder variant")]

    def _build_real(self, name_or_path: str) -> dict[str, Any]:
        from diffusers import (
            AutoencoderKL,
            EulerAncestralDiscreteScheduler,
            StableDiffusionXLPipeline,
            UNet2DConditionModel,
        )
        from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

        from ..io.hub import resolve_files
        from ._base import load_subfolders

        folder = self._resolve(name_or_path)
        # components one by one, each in the requested dtype from whichever variant the folder holds
        # (fp16 preferred for reduced dtypes, the full files otherwise, either as fallback)
        parts = load_subfolders(folder, {
            "unet": UNet2DConditionModel, "vae": AutoencoderKL, "text_encoder": CLIPTextModel,
            "text_encoder_2": CLIPTextModelWithProjection, "tokenizer": CLIPTokenizer, "tokenizer_2": CLIPTokenizer,
            "scheduler": EulerAncestralDiscreteScheduler}, self.torch_dtype_)
        pipe = StableDiffusionXLPipeline(**parts)
        pipe.set_progress_bar_config(disable=True)
        repo, sub, fname = IP_ADAPTER
        ip_folder = resolve_files(self.ip_adapter, ((f"{sub}/{fname}",),), what="IP-Adapter weights")
        pipe.load_ip_adapter(str(ip_folder), subfolder=sub, weight_name=fname, image_encoder_folder=None)
        pipe.unet.to(dtype=self.torch_dtype_)
        return self._components(pipe, 1024)

    @staticmethod
    def _components(pipe: Any, embed_dim: int) -> dict[str, Any]:
        return {"pipe": pipe, "unet": pipe.unet, "vae": pipe.vae, "text_encoder": pipe.text_encoder,
                "text_encoder_2": pipe.text_encoder_2, "scheduler": pipe.scheduler, "embed_dim": embed_dim}

    def _expects(self) -> dict[str, tuple[int | None, ...]]:
        proj = self.components_["unet"].encoder_hid_proj.image_projection_layers[0]
        return {"clip_image_embeds": (None, int(proj.image_embeds.in_features))}

    def _prompt(self) -> tuple[Any, Any]:
        """Embeddings of the empty prompt: (tokens (1, L, 2 * width), pooled (1, width))."""
        if getattr(self, "prompt_", None) is None:
            import torch

            c = self.components_
            pipe = c["pipe"]
            if pipe.tokenizer is not None:
                embeds, _, pooled, _ = pipe.encode_prompt("", device=self.execution_device,
                                                          do_classifier_free_guidance=False)
            else:
                dev = self.execution_device
                hidden = []
                for enc in (c["text_encoder"], c["text_encoder_2"]):
                    ids = empty_prompt_ids(enc).to(dev)
                    out = enc(ids, output_hidden_states=True)
                    hidden.append(out.hidden_states[-2])
                    pooled = out[0]
                embeds = torch.cat(hidden, dim=-1)
            self.prompt_ = (embeds, pooled)
        return self.prompt_

    def _generate_batch(self, latents: dict[str, np.ndarray], generators: list[Any], *, steps: int, guidance: float,
                        ip_adapter_scale: float = 1.0, height: int | None = None, width: int | None = None,
                        scheduler: str | None = None) -> Any:
        # diffusers' SDXL pipeline repeats ``ip_adapter_image_embeds`` over the batch (one image
        # prompt for all items), so a batch of *different* embeddings goes through our own loop
        # over the same components (UNet with the IP-Adapter loaded by the pipeline, VAE, scheduler).
        import torch

        c = self.components_
        pipe, unet = c["pipe"], c["unet"]
        pipe.set_ip_adapter_scale(float(ip_adapter_scale))
        sched = fresh_scheduler(c["scheduler"], scheduler)
        embeds = self._tensor(latents["clip_image_embeds"])[:, None]
        b = embeds.shape[0]
        prompt, pooled = self._prompt()
        factor = int(pipe.vae_scale_factor)
        size = int(unet.config.sample_size) * factor
        h, w = int(height or size), int(width or size)
        dev = self.execution_device
        time_ids = torch.tensor([[h, w, 0, 0, h, w]], device=dev, dtype=self.torch_dtype_).expand(b, -1)
        lat, timesteps = prepare_latents(sched, generators, shape=(int(unet.config.in_channels), h // factor, w // factor),
                                         steps=steps, device=dev, dtype=self.torch_dtype_)
        cond_kw = {"added_cond_kwargs": {"text_embeds": pooled.expand(b, -1), "time_ids": time_ids,
                                         "image_embeds": [embeds]}}
        uncond_kw = {"added_cond_kwargs": {"text_embeds": pooled.expand(b, -1), "time_ids": time_ids,
                                           "image_embeds": [torch.zeros_like(embeds)]}}
        prompt_b = prompt.expand(b, -1, -1)
        lat = denoise(unet, sched, lat, timesteps, cond=prompt_b, uncond=prompt_b, guidance=guidance,
                      unet_kwargs=cond_kw, uncond_kwargs=uncond_kw, generators=generators)
        vae = c.get("decoder_vae") or c["vae"]
        if self.torch_dtype_ == torch.float16 and getattr(vae.config, "force_upcast", False):
            vae.to(torch.float32)  # the SDXL VAE overflows in float16 (diffusers does the same)
        return self._decode(lat)


def _hidden_size(unet: Any, name: str) -> int:
    """Channel width of the block that owns attention processor ``name``."""
    channels = list(unet.config.block_out_channels)
    if name.startswith("mid_block"):
        return int(channels[-1])
    block_id = int(name.split(".")[1])
    if name.startswith("up_blocks"):
        return int(list(reversed(channels))[block_id])
    return int(channels[block_id])
