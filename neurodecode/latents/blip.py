"""BLIP's own image tokens: the latent space Takagi & Nishimoto decode into captions.

``blip-base-capfilt-tokens``
    The output of the BLIP-base vision encoder (ViT-B/16, CLS + patches, after its final
    LayerNorm) at 240 px: ``(226, 768)`` = (240 / 16)^2 + 1 tokens of width 768. This is what
    Takagi & Nishimoto's ``img2feat_blip.py`` saves and ridge-decodes, and what
    :class:`~neurodecode.generate._blip.BlipCaptioner` consumes (latent key ``"blip_image_tokens"``).

    Weights: ``Salesforce/blip-image-captioning-base`` (transformers'
    ``BlipForConditionalGeneration`` layout). transformers' conversion script
    (``convert_blip_original_pytorch_to_hf.py``) builds that model from Salesforce's
    ``model_base_capfilt_large.pth`` (BLIP w/ ViT-B, CapFilt-L), the checkpoint Takagi downloads,
    with its position embeddings interpolated to 384 px (24 x 24 patches). The checkpoint itself
    holds 224 px embeddings (14 x 14) that BLIP interpolates to 15 x 15 when built at 240 px; here
    the 24 x 24 grid is interpolated to 15 x 15 (transformers' ``interpolate_pos_encoding``,
    bicubic), so the position embeddings differ slightly from the reference (said in the docs).

    Preprocessing (the reference's): the image is resized to 240 x 240 (no crop, Lanczos) and
    scaled to [0, 1]; **no mean / std normalisation** (``img2feat_blip.py`` feeds
    ``ToTensor()`` output straight to the encoder). ``pixel_norm="clip"`` applies BLIP's own
    processor normalisation (CLIP mean / std) instead: a named deviation, recorded in the cache key.
``blip-base-capfilt-tokens-tiny``
    The same code on a random 1-layer BLIP vision encoder of width 44 whose native size is
    24 px (patch 4), encoded at 20 px (position embeddings interpolated, as the real tier):
    ``(26, 44)``. Its width differs from every other tiny space (CLIP 16, GIT 20, ViT-H 24, DINOv2 28 / 36,
    MiniLM / T5 32, SD text 40, bigG 48, DPT 52).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .._core.logging import logger
from .._core.validation import check_option
from ._base import LatentSpace, seeded

__all__ = ["BlipTokenSpace", "build_blip_space", "blip_artefacts", "blip_files", "BLIP_HUB_ID", "TINY_BLIP_VISION",
           "BLIP_IMAGE_SIZE", "TINY_BLIP_IMAGE_SIZE", "PIXEL_NORMS", "blip_pixels"]

BLIP_HUB_ID = "Salesforce/blip-image-captioning-base"
#: Takagi's encoding size (``img2feat_blip.py``: ``image_size = 240``) and the tiny twin's.
BLIP_IMAGE_SIZE = 240
TINY_BLIP_IMAGE_SIZE = 20
#: The tiny BLIP vision encoder (shared with the tiny BLIP captioner): native 24 px, patch 4, width 44.
TINY_BLIP_VISION: dict[str, Any] = {"hidden_size": 44, "intermediate_size": 88, "num_hidden_layers": 1,
                                    "num_attention_heads": 2, "image_size": 24, "patch_size": 4,
                                    "initializer_range": 0.02}
#: ``"none"``: pixels in [0, 1] as Takagi's img2feat_blip.py; ``"clip"``: BLIP's processor (CLIP mean / std).
PIXEL_NORMS = ("none", "clip")
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def blip_files(dtype: Any = None) -> tuple[tuple[str, ...], ...]:
    """The files the space reads from ``Salesforce/blip-image-captioning-base`` (config + weights)."""
    from ..io.hub import transformers_model_files

    return transformers_model_files("", dtype)


def blip_artefacts(name: str, *, weights: Any = None, dtype: Any = None, tiny: bool = False,
                   **options: Any) -> list[Any]:
    """What the BLIP token space reads (see :func:`neurodecode.latents.space_artefacts`)."""
    from ..io.hub import ExternalArtefact, HubArtefact

    if weights == "random" or (weights is None and tiny):
        return [ExternalArtefact(name, "random", "random init (seeded), nothing to fetch")]
    target = str(weights) if weights is not None else BLIP_HUB_ID
    if Path(target).expanduser().exists():
        return [ExternalArtefact(target, "folder", f"latent space {name}: a local folder (read as is)")]
    return [HubArtefact(target, blip_files(dtype), "BSD-3-Clause",
                        f"latent space {name}: BLIP-base (CapFilt-L) vision encoder")]


def blip_pixels(images: list[Any], size: int, pixel_norm: str = "none") -> Any:
    """Images -> float tensor ``(n, 3, size, size)``: Lanczos resize to a square, [0, 1], optional CLIP norm.

    The preprocessing of Takagi's ``img2feat_blip.py`` (``pixel_norm="none"``), shared by the
    space and the captioner's pixel route so both see the same pixels.
    """
    import torch
    from PIL import Image

    from .clip import _to_pil

    arrs = [np.asarray(_to_pil(im).convert("RGB").resize((size, size), resample=Image.Resampling.LANCZOS), dtype=np.float32)
            for im in images]
    x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2) / 255.0
    if pixel_norm == "clip":
        x = (x - torch.tensor(_CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(_CLIP_STD).view(1, 3, 1, 1)
    return x.contiguous()


class BlipTokenSpace(LatentSpace):
    """BLIP vision-encoder tokens (see the module docstring). Build it with :func:`~neurodecode.latents.get_space`.

    Attributes
    ----------
    encoder : transformers.BlipVisionModel
        The frozen vision encoder (float32 weights).
    image_size : int
        Side of the square images encoded (240; tiny 20).
    pixel_norm : {"none", "clip"}
        Pixel normalisation (see the module docstring).
    """

    def __init__(self, name: str, *, encoder: Any, image_size: int, pixel_norm: str, weights: str,
                 weights_file: Path | None, device: Any, dtype: Any, batch_size: int, verbose: Any) -> None:
        cfg = encoder.config
        patch = int(cfg.patch_size)
        shape = ((int(image_size) // patch) ** 2 + 1, int(cfg.hidden_size))
        pre = {"kind": "blip-square", "size": int(image_size), "mode": "RGB", "interpolation": "lanczos",
               "resize_mode": "squash", "pixel_norm": pixel_norm,
               **({"mean": list(_CLIP_MEAN), "std": list(_CLIP_STD)} if pixel_norm == "clip" else {})}
        super().__init__(name, shape=shape, modality="image", device=device, dtype=dtype, batch_size=batch_size,
                         verbose=verbose, preprocessing=pre, weights=weights,
                         extra_key={"output": "blip_image_tokens", "vision_config": cfg.to_diff_dict()})
        self.image_size = int(image_size)
        self.pixel_norm = pixel_norm
        self.encoder = encoder.to(self._device).eval()
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self._weights_file = weights_file

    def _encode_image_batch(self, items: list[Any]) -> Any:
        pixels = blip_pixels(items, self.image_size, self.pixel_norm).to(self._device)
        dtype = next(self.encoder.parameters()).dtype
        # BlipVisionModel: embeddings (position grid interpolated to the encoding size) -> encoder -> post_layernorm
        native = int(self.encoder.config.image_size) == self.image_size
        return self.encoder(pixel_values=pixels.to(dtype), interpolate_pos_encoding=not native).last_hidden_state


def _real_vision_config(depth: int | None = None) -> Any:
    from transformers import BlipVisionConfig

    # Salesforce/blip-image-captioning-base config.json, vision_config (= BLIP's ViT-B/16): 768 wide, 12 layers,
    # 12 heads, FFN 3072, native 384 px (the conversion's position grid), patch 16
    return BlipVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12 if depth is None else depth,
                            num_attention_heads=12, image_size=384, patch_size=16,
                            initializer_range=0.02)  # BLIP's default 1e-10 would make random weights ~0


def build_blip_space(name: str, *, weights: Any = None, device: Any = "cpu", dtype: Any = "float32",
                     batch_size: int = 32, verbose: Any = None, tiny: bool = False, seed: int = 0,
                     image_size: int | None = None, pixel_norm: str = "none") -> BlipTokenSpace:
    """Registry builder of ``blip-base-capfilt-tokens`` / ``-tiny`` (see :func:`~neurodecode.latents.get_space`).

    Parameters
    ----------
    weights : None, "random" or path-like or str
        ``None``: ``Salesforce/blip-image-captioning-base`` (tiny twin: seeded random init);
        ``"random"``: the real architecture, random weights; a ``BlipForConditionalGeneration``
        folder or hub id (``config.json`` + ``model.safetensors``, or the fp16 / ``.bin`` variants).
    image_size : int or None
        Side of the encoded images (default 240, Takagi's; tiny 20).
    pixel_norm : {"none", "clip"}
        ``"none"`` (Takagi's reference: pixels in [0, 1]) or ``"clip"`` (BLIP's processor).
    """
    from transformers import BlipVisionConfig, BlipVisionModel

    check_option(pixel_norm, "pixel_norm", PIXEL_NORMS)
    weights_file: Path | None = None
    if weights == "random" or (weights is None and tiny):
        config = BlipVisionConfig(**TINY_BLIP_VISION) if tiny else _real_vision_config()
        with seeded(seed):
            encoder = BlipVisionModel(config)
        tag = f"random-init:seed={seed}"
    else:
        from transformers import BlipForConditionalGeneration

        from ..io.hub import group_choice, pick_variant, resolve_files, weight_group

        target = str(weights) if weights is not None else BLIP_HUB_ID
        folder = resolve_files(target, blip_files(), what="BLIP vision-encoder weights")
        model = BlipForConditionalGeneration.from_pretrained(folder, variant=pick_variant(folder, "", None,
                                                                                          base="model"))
        encoder = model.vision_model
        choice = group_choice(folder, weight_group("", "model"))
        weights_file = folder / choice if choice else None
        tag = f"folder:{folder}" if Path(target).expanduser().is_dir() else f"hub:{target}"
        del model
    if image_size is None:
        image_size = TINY_BLIP_IMAGE_SIZE if tiny else BLIP_IMAGE_SIZE
    logger.info("latent space %s: %s", name, tag)
    return BlipTokenSpace(name, encoder=encoder.float(), image_size=image_size, pixel_norm=pixel_norm, weights=tag,
                          weights_file=weights_file, device=device, dtype=dtype, batch_size=batch_size,
                          verbose=verbose)
