"""Versatile-Diffusion-style dual guidance: image from predicted CLIP image tokens + text tokens.

Used by MindBridge (mix 0.5, UniPC, 20 steps, guidance 3.5-5) and Brain-Diffuser (img2img
from the low-level image, DDIM 50 steps, strength 0.75, guidance 7.5, mix 0.4).

How it is built (diffusers 0.42.1)
----------------------------------
diffusers moved Versatile Diffusion to ``pipelines/deprecated``. In 0.42.1 the frozen code
still imports (``VersatileDiffusionDualGuidedPipeline`` is exported, the text UNet
``UNetFlatConditionModel`` loads), but it no longer works as a whole: its
``DualTransformer2DModel`` does not accept the ``encoder_attention_mask`` argument that
0.42's ``CrossAttnDownBlock2D`` passes to every attention block (``TypeError`` at the first
step), and the pipeline's ``__call__`` takes a prompt string and a PIL image that it encodes
itself, so it cannot take *predicted* CLIP tokens anyway. So we **write our own denoising
loop** (:func:`~neurodecode.generate._base.denoise`, batched, seeded per item) and our own
dual block (:class:`_DualBlock`, the same mixing rule) **over diffusers components**: the
image ``UNet2DConditionModel``, the transformer blocks of the text ``UNetFlatConditionModel``,
``AutoencoderKL``, the CLIP encoders (for the unconditional embeddings only) and the
UniPC/DDIM schedulers. The weights load unchanged from ``shi-labs/versatile-diffusion``.

Dual guidance: every cross-attention block runs the image-trained transformer on the image
tokens and the text-trained transformer on the text tokens and mixes their residuals,
``text_weight * text + (1 - text_weight) * image`` (diffusers' ``text_to_image_strength``).
The condition is ``[text tokens (77), image tokens (257)]``. The unconditional one is chosen with
``uncond`` (see :data:`UNCOND`): ``"zeros"`` (default, MindBridge: all-zero token tensors for both
inputs; no CLIP encoder is loaded) or ``"encoded"`` (the empty prompt's tokens and a uniform image's
tokens through VD's own CLIP encoders, VD-normalised like the targets; ``uncond_image_value`` is
the image's value in [0, 1], 0.5 by default). ``generate(..., renorm="token0")`` re-normalises the
predicted tokens by the norm of their token 0, as MindBridge's reconstruction does. Both are
recorded in :meth:`provenance` / the run's options.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .._core.validation import format_error
from ._base import (
    SD_BETAS,
    Generator,
    denoise,
    empty_prompt_ids,
    fresh_scheduler,
    load_subfolders,
    tiny_text_config,
    tiny_unet_config,
    tiny_vae,
)

__all__ = ["VersatileGenerator", "UNCOND", "RENORM"]

#: Unconditional inputs of classifier-free guidance: ``"zeros"`` all-zero image and text token tensors
#: (MindBridge's reconstruction, src/utils.py); ``"encoded"`` the empty prompt's tokens and a uniform image's
#: tokens through VD's own CLIP encoders, VD-normalised (Versatile Diffusion's pipeline / Brain-Diffuser).
UNCOND = ("zeros", "encoded")

#: Re-normalisation of the predicted tokens at generation time: ``"token0"`` divides every token of an item
#: by the norm of its token 0 (+ 1e-6), image and text tokens alike (MindBridge's reconstruction).
RENORM = (None, "token0")

_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class VersatileGenerator(Generator):
    """Dual-guided image generation from CLIP image tokens and text tokens.

    Expects ``latents["clip_image_tokens"]`` of shape (n, 257, 768) and
    ``latents["clip_text_tokens"]`` of shape (n, 77, 768) (real tier; VD-normalised), and
    optionally ``latents["vae_latents"]`` of shape (n, 4, h, w) (raw VAE latents, before the
    VAE scaling factor) to run img2img from a low-level image at ``strength``.

    Options of :meth:`generate`: ``text_weight`` (mix, default 0.5), ``strength`` (img2img,
    default 0.75), ``scheduler`` (``"unipc"`` default or ``"ddim"``), ``height``/``width``,
    ``renorm`` (``None`` or ``"token0"``, see :data:`RENORM`), ``uncond`` (overrides the
    constructor's for this call).

    Parameters
    ----------
    uncond : {"zeros", "encoded"}
        Unconditional inputs of classifier-free guidance (see :data:`UNCOND`).
    uncond_image_value : float
        Pixel value in [0, 1] of the uniform unconditional image (``uncond="encoded"``).

    See :class:`~neurodecode.generate._base.Generator` for the constructor parameters.

    Examples
    --------
    >>> gen = VersatileGenerator("tiny")                                   # doctest: +SKIP
    >>> images = gen.generate(decoder.predict_latents(X, subject="nsd/subj01"), seeds=0)  # doctest: +SKIP
    """

    name = "versatile"
    default_weights = "shi-labs/versatile-diffusion"
    default_steps = 20
    default_guidance = 3.5
    optional_keys = ("vae_latents",)
    #: Tiny tier: widths of the ``clip-vit-l-14-tokens-tiny`` (17 x 16) and
    #: ``clip-vit-l-14-text-tokens-tiny`` (77 x 16) latent spaces; 32 px images.
    TINY: ClassVar[dict[str, Any]] = {"width": 16, "text_tokens": 77, "image_size": 16, "patch_size": 4,
                                      "sample_size": 16}

    # ------------------------------------------------------------------ building
    def _build_tiny(self) -> dict[str, Any]:
        from diffusers import UNet2DConditionModel, UniPCMultistepScheduler
        from diffusers.pipelines.deprecated.versatile_diffusion.modeling_text_unet import UNetFlatConditionModel
        from transformers import CLIPTextModelWithProjection, CLIPVisionConfig, CLIPVisionModelWithProjection

        cfg = self.tiny_config
        width = int(cfg["width"])
        image_unet = UNet2DConditionModel(**tiny_unet_config(cfg["sample_size"], width))
        text_unet = UNetFlatConditionModel(**tiny_unet_config(cfg["sample_size"], width, flat=True))
        vae = tiny_vae(2 * cfg["sample_size"])
        text_encoder = CLIPTextModelWithProjection(tiny_text_config(width, cfg["text_tokens"], projection_dim=width))
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2, num_attention_heads=4,
            image_size=cfg["image_size"], patch_size=cfg["patch_size"], projection_dim=width))
        scheduler = UniPCMultistepScheduler(**SD_BETAS)
        return {"unet": _make_dual(image_unet, text_unet), "vae": vae, "text_encoder": text_encoder,
                "image_encoder": image_encoder, "scheduler": scheduler, "tokenizer": None}

    licence = "MIT"
    purpose = "Versatile Diffusion image/text UNets, VAE (+ CLIP encoders for uncond='encoded')"

    @classmethod
    def hub_files(cls, dtype: Any = None, *, uncond: str = "zeros", **kwargs: Any) -> tuple[tuple[str, ...], ...]:
        """The files read: the two UNets, the VAE and the scheduler; the CLIP encoders and tokenizer only
        for ``uncond="encoded"`` (the MindBridge default, all-zero unconditional tokens, needs none)."""
        from ..io.hub import clip_tokenizer_files, diffusers_model_files, scheduler_files, transformers_model_files

        groups = [*diffusers_model_files("image_unet", dtype), *diffusers_model_files("text_unet", dtype),
                  *diffusers_model_files("vae", dtype), *scheduler_files()]
        if uncond == "encoded":
            groups += [*transformers_model_files("text_encoder", dtype),
                       *transformers_model_files("image_encoder", dtype), *clip_tokenizer_files("tokenizer")]
        return tuple(groups)

    def __init__(self, weights: Any = None, *, uncond: str = "zeros", uncond_image_value: float = 0.5,
                 **kwargs: Any) -> None:
        super().__init__(weights, **kwargs)
        from .._core.validation import check_option

        self.uncond = check_option(uncond, "uncond", UNCOND)
        self.uncond_image_value = float(uncond_image_value)

    def _build_real(self, name_or_path: str) -> dict[str, Any]:
        from diffusers import AutoencoderKL, UNet2DConditionModel, UniPCMultistepScheduler
        from diffusers.pipelines.deprecated.versatile_diffusion.modeling_text_unet import UNetFlatConditionModel

        from ._base import load_component

        folder = self._resolve(name_or_path, uncond=self.uncond)
        dtype = self.torch_dtype_
        image_unet = load_component(folder, "image_unet", UNet2DConditionModel, dtype)
        # only the text UNet's transformer blocks are kept: load it as stored (memory-mapped, nothing read yet)
        # and let the dual UNet's cast to ``dtype`` read just those blocks (a whole-UNet cast doubled the peak)
        text_unet = load_component(folder, "text_unet", UNetFlatConditionModel, None)
        parts = {"vae": AutoencoderKL, "scheduler": UniPCMultistepScheduler}
        if self.uncond == "encoded":
            from transformers import CLIPTextModelWithProjection, CLIPTokenizer, CLIPVisionModelWithProjection

            parts.update({"text_encoder": CLIPTextModelWithProjection, "image_encoder": CLIPVisionModelWithProjection,
                          "tokenizer": CLIPTokenizer})
        unet = _make_dual(image_unet, text_unet).to(dtype=dtype)  # the borrowed text blocks too
        del text_unet
        return {"unet": unet, **load_subfolders(folder, parts, dtype)}

    # ------------------------------------------------------------------ inputs
    def _expects(self) -> dict[str, tuple[int | None, ...]]:
        c = self.components_
        width = int(c["unet"].config.cross_attention_dim)
        n_img, n_txt = c.get("n_image_tokens", 257), c.get("n_text_tokens", 77)
        if "image_encoder" in c:
            n_img = (c["image_encoder"].config.image_size // c["image_encoder"].config.patch_size) ** 2 + 1
        if "text_encoder" in c:
            n_txt = int(c["text_encoder"].config.max_position_embeddings)
        return {"clip_image_tokens": (None, n_img, width), "clip_text_tokens": (None, n_txt, width)}

    def _optional_expects(self) -> dict[str, tuple[int | None, ...]]:
        return {"vae_latents": (None, int(self.components_["vae"].config.latent_channels), None, None)}

    def _uncond(self, txt: Any, img: Any, kind: str | None = None) -> tuple[Any, Any]:
        """Unconditional (text, image) tokens of shape (1, n, width): see :data:`UNCOND`."""
        import torch

        from .._core.errors import ValidationError
        from .._core.validation import check_option

        kind = check_option(kind or self.uncond, "uncond", UNCOND)
        if kind == "zeros":
            return torch.zeros_like(txt[:1]), torch.zeros_like(img[:1])
        if "text_encoder" not in self.components_:
            raise ValidationError(format_error(
                "uncond", "'zeros' (no CLIP encoder was loaded)", kind,
                "Build the generator with uncond='encoded' to load VD's CLIP encoders"))
        if getattr(self, "uncond_", None) is not None:
            return self.uncond_
        c = self.components_
        te, ie = c["text_encoder"], c["image_encoder"]
        dev = self.execution_device
        ids = empty_prompt_ids(te, c.get("tokenizer")).to(dev)
        out = te(input_ids=ids)
        text = out.last_hidden_state
        text = te.text_projection(text) / out.text_embeds.norm(dim=-1, keepdim=True)[:, None]
        size = int(ie.config.image_size)
        mean = torch.tensor(_CLIP_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(_CLIP_STD).view(1, 3, 1, 1)
        blank = torch.full((1, 3, size, size), self.uncond_image_value)
        pixels = ((blank - mean) / std).to(device=dev, dtype=self.torch_dtype_)
        vout = ie(pixel_values=pixels)
        image = ie.visual_projection(ie.vision_model.post_layernorm(vout.last_hidden_state))
        image = image / image[:, :1].norm(dim=-1, keepdim=True)
        self.uncond_ = (text.to(txt.dtype), image.to(img.dtype))
        return self.uncond_

    def provenance(self) -> dict[str, Any]:
        return {**super().provenance(), "uncond": self.uncond,
                **({"uncond_image_value": self.uncond_image_value} if self.uncond == "encoded" else {})}

    # ------------------------------------------------------------------ generation
    def _generate_batch(self, latents: dict[str, np.ndarray], generators: list[Any], *, steps: int, guidance: float,
                        text_weight: float = 0.5, strength: float = 0.75, scheduler: str = "unipc",
                        height: int | None = None, width: int | None = None, renorm: str | None = None,
                        uncond: str | None = None) -> Any:
        import torch

        from .._core.errors import ValidationError

        if not 0.0 <= float(text_weight) <= 1.0:
            raise ValidationError(format_error("text_weight", "a number in [0, 1]", text_weight,
                                               "0 = image tokens only, 1 = text tokens only; MindBridge uses 0.5"))
        c = self.components_
        unet = c["unet"]
        sched = fresh_scheduler(c["scheduler"], scheduler)
        from .._core.validation import check_option

        check_option(renorm, "renorm", RENORM)
        img = self._tensor(latents["clip_image_tokens"])
        txt = self._tensor(latents["clip_text_tokens"])
        if renorm == "token0":
            img = img / (img[:, :1].norm(dim=-1, keepdim=True) + 1e-6)
            txt = txt / (txt[:, :1].norm(dim=-1, keepdim=True) + 1e-6)
        b = img.shape[0]
        u_txt, u_img = self._uncond(txt, img, uncond)
        cond = torch.cat([txt, img], dim=1)
        uncond = torch.cat([u_txt, u_img], dim=1).expand(b, -1, -1)
        _set_dual(unet, float(text_weight), txt.shape[1], img.shape[1])
        lat, timesteps = self._start_latents(sched, latents, generators, steps=steps, strength=strength,
                                             height=height, width=width)
        lat = denoise(unet, sched, lat, timesteps, cond=cond, uncond=uncond, guidance=guidance, generators=generators)
        return self._decode(lat)


def _make_dual(image_unet: Any, text_unet: Any) -> Any:
    """Replace each ``Transformer2DModel`` of ``image_unet`` by a ``DualTransformer2DModel``.

    Slot 0 holds the image UNet's transformer, slot 1 the text UNet's transformer at the same
    place (the two UNets share their block layout).
    """
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    names = [n for n, m in image_unet.named_modules() if isinstance(m, Transformer2DModel)]
    for name in names:
        parent_name, index = name.rsplit(".", 1)
        image_block = image_unet.get_submodule(parent_name)[int(index)]
        text_block = text_unet.get_submodule(parent_name)[int(index)]
        image_unet.get_submodule(parent_name)[int(index)] = _dual_block(image_block, text_block)
    image_unet.register_to_config(dual_cross_attention=True)
    return image_unet


def _dual_block(image_block: Any, text_block: Any) -> Any:
    """Build a :class:`_DualBlock` (defined lazily: torch is imported only when a generator is built)."""
    global _DualBlock
    if _DualBlock is None:
        import torch

        class DualBlock(torch.nn.Module):
            """Two transformer blocks on one feature map, each attending to its own condition.

            The condition is ``[text tokens (n_text), image tokens (rest)]``; the output is the
            input plus ``mix * text residual + (1 - mix) * image residual``.
            """

            def __init__(self, image: Any, text: Any) -> None:
                super().__init__()
                self.transformers = torch.nn.ModuleList([image, text])
                self.mix_ratio = 0.5
                self.n_text = 77

            def forward(self, hidden_states: Any, encoder_hidden_states: Any = None, *args: Any,
                        return_dict: bool = True, **kwargs: Any) -> Any:
                kwargs.pop("encoder_attention_mask", None)  # tokens are never padded here
                kwargs.pop("attention_mask", None)
                text = encoder_hidden_states[:, : self.n_text]
                image = encoder_hidden_states[:, self.n_text:]
                r_img = self.transformers[0](hidden_states, encoder_hidden_states=image, return_dict=False,
                                             **kwargs)[0] - hidden_states
                r_txt = self.transformers[1](hidden_states, encoder_hidden_states=text, return_dict=False,
                                             **kwargs)[0] - hidden_states
                out = hidden_states + self.mix_ratio * r_txt + (1.0 - self.mix_ratio) * r_img
                return (out,) if not return_dict else _Output(out)

        _DualBlock = DualBlock
    return _DualBlock(image_block, text_block)


_DualBlock: Any = None


class _Output:
    """Minimal ``Transformer2DModelOutput`` stand-in (``.sample``)."""

    def __init__(self, sample: Any) -> None:
        self.sample = sample


def _set_dual(unet: Any, text_weight: float, n_text: int, n_image: int) -> None:
    """Set the mix and the split point of ``[text tokens, image tokens]`` in every dual block."""
    for module in unet.modules():
        if hasattr(module, "mix_ratio") and hasattr(module, "n_text"):
            module.mix_ratio = text_weight
            module.n_text = n_text
