"""GIT's own image-encoder tokens: the latent space a GIT captioner reads.

``git-large-coco-tokens``
    The tokens of ``microsoft/git-large-coco``'s image encoder (a CLIP ViT-L/14 fine-tuned with
    GIT): CLS + 256 patches, *after* the encoder's final LayerNorm and *before* GIT's visual
    projection: ``(257, 1024)``. This is what :class:`~neurodecode.generate._captions.GitCaptioner`
    consumes (under the latent key ``"git_image_tokens"``); CLIP ViT-L/14's projected tokens
    (257 x 768) are another space and do not fit it. Images: shorter side resized to 224
    (bicubic), centre crop 224, CLIP mean / std (GIT's ``CLIPImageProcessor``).
``git-large-coco-tokens-tiny``
    The same code on a random 1-layer GIT vision encoder of width 20 and 16 px images:
    ``(17, 20)``, the tiny GIT captioner's input. Its width differs on purpose from the tiny CLIP
    spaces (16), so a decoder predicting CLIP tokens cannot be fed to the captioner unnoticed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._core.logging import logger
from ._base import LatentSpace, seeded

__all__ = ["GitTokenSpace", "build_git_space", "git_artefacts", "GIT_HUB_ID", "TINY_GIT_VISION"]

GIT_HUB_ID = "microsoft/git-large-coco"
#: The tiny GIT vision encoder (shared with the tiny GIT captioner's ``TINY``): 17 x 20 tokens.
TINY_GIT_VISION: dict[str, Any] = {"hidden_size": 20, "intermediate_size": 40, "num_hidden_layers": 1,
                                   "num_attention_heads": 2, "image_size": 16, "patch_size": 4}
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def git_files(dtype: Any = None) -> tuple[tuple[str, ...], ...]:
    """The files read from ``microsoft/git-large-coco`` (config and weights; the image encoder is inside)."""
    from ..io.hub import transformers_model_files

    return transformers_model_files("", dtype)


def git_artefacts(name: str, *, weights: Any = None, dtype: Any = None, tiny: bool = False, **options: Any) -> list[Any]:
    """What the GIT token space reads (see :func:`neurodecode.latents.space_artefacts`)."""
    from ..io.hub import ExternalArtefact, HubArtefact

    if weights == "random" or (weights is None and tiny):
        return [ExternalArtefact(name, "random", "random init (seeded), nothing to fetch")]
    target = str(weights) if weights is not None else GIT_HUB_ID
    if Path(target).expanduser().exists():
        return [ExternalArtefact(target, "folder", f"latent space {name}: a local folder (read as is)")]
    return [HubArtefact(target, git_files(dtype), "MIT", f"latent space {name}: GIT-large-coco image encoder")]


class GitTokenSpace(LatentSpace):
    """GIT image-encoder tokens (see the module docstring). Build it with :func:`~neurodecode.latents.get_space`."""

    def __init__(self, name: str, *, encoder: Any, weights: str, weights_file: Path | None, device: Any, dtype: Any,
                 batch_size: int, verbose: Any) -> None:
        cfg = encoder.config
        size, patch = int(cfg.image_size), int(cfg.patch_size)
        shape = ((size // patch) ** 2 + 1, int(cfg.hidden_size))
        pre = {"kind": "clip-image-processor", "size": size, "mode": "RGB", "mean": list(_CLIP_MEAN),
               "std": list(_CLIP_STD), "interpolation": "bicubic", "resize_mode": "shortest", "fill_color": 0}
        super().__init__(name, shape=shape, modality="image", device=device, dtype=dtype, batch_size=batch_size,
                         verbose=verbose, preprocessing=pre, weights=weights,
                         extra_key={"output": "git_image_tokens", "vision_config": cfg.to_diff_dict()})
        self.encoder = encoder.to(self._device).eval()
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self._weights_file = weights_file
        self._transform: Any = None


    def _encode_image_batch(self, items: list[Any]) -> Any:
        import torch

        from .clip import _image_transform, _to_pil

        if self._transform is None:
            self._transform = _image_transform(self.preprocessing)
        pixels = torch.stack([self._transform(_to_pil(im)) for im in items]).to(self._device)
        dtype = next(self.encoder.parameters()).dtype
        # GitVisionModel: embeddings -> encoder -> post_layernorm on every token (CLS included), unprojected
        return self.encoder(pixel_values=pixels.to(dtype)).last_hidden_state


def build_git_space(name: str, *, weights: Any = None, device: Any = "cpu", dtype: Any = "float32",
                    batch_size: int = 32, verbose: Any = None, tiny: bool = False, seed: int = 0) -> GitTokenSpace:
    """Registry builder of ``git-large-coco-tokens`` / ``-tiny`` (see :func:`~neurodecode.latents.get_space`)."""
    from transformers import GitVisionConfig, GitVisionModel

    weights_file: Path | None = None
    if weights == "random" or (weights is None and tiny):
        config = GitVisionConfig(**TINY_GIT_VISION) if tiny else GitVisionConfig(
            hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=224,
            patch_size=14)  # microsoft/git-large-coco config.json, vision_config
        with seeded(seed):
            encoder = GitVisionModel(config)
        tag = f"random-init:seed={seed}"
    else:
        from transformers import GitForCausalLM

        from ..io.hub import group_choice, pick_variant, resolve_files, weight_group

        target = str(weights) if weights is not None else GIT_HUB_ID
        folder = resolve_files(target, git_files(), what="GIT image-encoder weights")
        model = GitForCausalLM.from_pretrained(folder, variant=pick_variant(folder, "", None, base="model"))
        encoder = GitVisionModel(model.config.vision_config)
        encoder.vision_model = model.git.image_encoder.vision_model
        choice = group_choice(folder, weight_group("", "model"))
        weights_file = folder / choice if choice else None
        tag = f"folder:{folder}" if Path(target).expanduser().is_dir() else f"hub:{target}"
        del model
    logger.info("latent space %s: %s", name, tag)
    return GitTokenSpace(name, encoder=encoder.float(), weights=tag, weights_file=weights_file, device=device,
                         dtype=dtype, batch_size=batch_size, verbose=verbose)
