"""DPT-large hidden states: the depth latent space of Takagi & Nishimoto.

``dpt-large-hidden``
    The hidden states of ``Intel/dpt-large``'s ViT-L/16 backbone at the four layers its neck
    reads (``backbone_out_indices`` 5, 11, 17, 23): ``(4, 577, 1024)``, 577 = (384 / 16)^2 + 1
    tokens (CLS included, before any LayerNorm), as ``img2feat_dpt.py`` saves them
    (``outputs.hidden_states[1:]`` filtered by ``backbone_out_indices``). Ridge-decoded states go
    through DPT's neck and head (:class:`~neurodecode.generate._depth.DptDepthDecoder`) to a depth map.

    Preprocessing (the reference's): the image is first resized to 512 x 512 (Lanczos,
    ``pre_resize=512``), then given to the repository's own ``DPTImageProcessor``
    (``preprocessor_config.json``: 384 x 384, mean / std 0.5). ``pre_resize=None`` skips the first step.
``dpt-large-hidden-tiny``
    The same code on a random 4-layer DPT of width 52 at 32 px (patch 8, out indices 0-3):
    ``(4, 17, 52)``; its width differs from every other tiny space.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._core.logging import logger
from ._base import LatentSpace, seeded

__all__ = ["DptHiddenSpace", "build_dpt_space", "dpt_artefacts", "dpt_files", "DPT_HUB_ID", "TINY_DPT", "dpt_config",
           "DPT_PRE_RESIZE", "dpt_processor"]

DPT_HUB_ID = "Intel/dpt-large"
#: Takagi's ``img2feat_dpt.py`` resizes every image to 512 x 512 before the DPT processor.
DPT_PRE_RESIZE = 512
#: The tiny DPT (shared with the tiny depth decoder): 4 layers of width 52, 32 px, patch 8 -> 17 tokens.
TINY_DPT: dict[str, Any] = {"hidden_size": 52, "num_hidden_layers": 4, "num_attention_heads": 2,
                            "intermediate_size": 104, "image_size": 32, "patch_size": 8,
                            "backbone_out_indices": (0, 1, 2, 3), "neck_hidden_sizes": (8, 16, 32, 32),
                            "fusion_hidden_size": 12}


def dpt_config(tiny: bool = False, depth: int | None = None) -> Any:
    """``DPTConfig`` of ``Intel/dpt-large`` (``tiny``: the toy twin; ``depth``: fewer backbone layers).

    Intel/dpt-large config.json: ViT-L/16 backbone (1024 wide, 24 layers, 16 heads, FFN 4096,
    384 px, patch 16, qkv bias, LayerNorm eps 1e-12), ``backbone_out_indices`` [5, 11, 17, 23],
    readout ``project``, ``neck_hidden_sizes`` [256, 512, 1024, 1024], reassemble factors
    [4, 2, 1, 0.5], ``fusion_hidden_size`` 256, ``head_in_index`` -1. A reduced ``depth`` keeps the
    widths and reads the four layers ``depth - 4 .. depth - 1`` (at least 4 layers).
    """
    from transformers import DPTConfig

    if tiny:
        return DPTConfig(**TINY_DPT)
    layers = 24
    indices: tuple[int, ...] = (5, 11, 17, 23)
    if depth is not None:
        layers = max(4, int(depth))
        indices = tuple(range(layers - 4, layers))
    return DPTConfig(hidden_size=1024, num_hidden_layers=layers, num_attention_heads=16, intermediate_size=4096,
                     image_size=384, patch_size=16, backbone_out_indices=indices, readout_type="project",
                     neck_hidden_sizes=(256, 512, 1024, 1024), reassemble_factors=(4, 2, 1, 0.5),
                     fusion_hidden_size=256, head_in_index=-1, qkv_bias=True, layer_norm_eps=1e-12)


def dpt_processor(size: int) -> Any:
    """A ``DPTImageProcessor`` at ``size`` px with DPT-large's mean / std (0.5): the tiny tier's processor."""
    from transformers import DPTImageProcessor

    return DPTImageProcessor(size={"height": int(size), "width": int(size)}, keep_aspect_ratio=False,
                             ensure_multiple_of=1, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])


def dpt_files(dtype: Any = None) -> tuple[tuple[str, ...], ...]:
    """The files read from ``Intel/dpt-large``: config, weights and ``preprocessor_config.json``."""
    from ..io.hub import transformers_model_files

    return (*transformers_model_files("", dtype), ("preprocessor_config.json",))


def dpt_artefacts(name: str, *, weights: Any = None, dtype: Any = None, tiny: bool = False,
                  **options: Any) -> list[Any]:
    """What the DPT space reads (see :func:`neurodecode.latents.space_artefacts`)."""
    from ..io.hub import ExternalArtefact, HubArtefact

    if weights == "random" or (weights is None and tiny):
        return [ExternalArtefact(name, "random", "random init (seeded), nothing to fetch")]
    target = str(weights) if weights is not None else DPT_HUB_ID
    if Path(target).expanduser().exists():
        return [ExternalArtefact(target, "folder", f"latent space {name}: a local folder (read as is)")]
    return [HubArtefact(target, dpt_files(dtype), "Apache-2.0", f"latent space {name}: DPT-large backbone")]


def load_dpt_folder(target: str, what: str) -> tuple[Any, Any, Path, Path | None]:
    """``DPTForDepthEstimation`` + its ``DPTImageProcessor`` from a folder or hub id (files of :func:`dpt_files`)."""
    from transformers import DPTForDepthEstimation, DPTImageProcessor

    from ..io.hub import group_choice, pick_variant, resolve_files, weight_group

    folder = resolve_files(target, dpt_files(), what=what)
    model = DPTForDepthEstimation.from_pretrained(folder, variant=pick_variant(folder, "", None, base="model"))
    processor = DPTImageProcessor.from_pretrained(folder)
    choice = group_choice(folder, weight_group("", "model"))
    return model, processor, folder, (folder / choice if choice else None)


class DptHiddenSpace(LatentSpace):
    """DPT backbone hidden states at ``backbone_out_indices`` (see the module docstring).

    Build it with :func:`~neurodecode.latents.get_space`.

    Attributes
    ----------
    backbone : transformers.DPTModel
        The frozen ViT backbone (float32 weights).
    processor : transformers.DPTImageProcessor
        The repository's image processor.
    out_indices : tuple of int
        The backbone layers read (0-based layer outputs).
    pre_resize : int or None
        Side of the square Lanczos resize applied first (512, as the reference).
    """

    def __init__(self, name: str, *, backbone: Any, processor: Any, pre_resize: int | None, weights: str,
                 weights_file: Path | None, device: Any, dtype: Any, batch_size: int, verbose: Any) -> None:
        cfg = backbone.config
        size = processor.size
        height, width = int(size["height"]), int(size["width"])
        patch = int(cfg.patch_size)
        self.out_indices = tuple(int(i) for i in cfg.backbone_out_indices)
        shape = (len(self.out_indices), (height // patch) * (width // patch) + 1, int(cfg.hidden_size))
        pre = {"kind": "dpt-image-processor", "pre_resize": pre_resize, "pre_interpolation": "lanczos",
               "size": [height, width], "mean": list(processor.image_mean), "std": list(processor.image_std),
               "resample": str(getattr(processor, "resample", "")),
               "keep_aspect_ratio": bool(getattr(processor, "keep_aspect_ratio", False))}
        super().__init__(name, shape=shape, modality="image", device=device, dtype=dtype, batch_size=batch_size,
                         verbose=verbose, preprocessing=pre, weights=weights,
                         extra_key={"output": "dpt_hidden_states", "config": cfg.to_diff_dict()})
        self.pre_resize = pre_resize
        self.processor = processor
        self.backbone = backbone.to(self._device).eval()
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self._weights_file = weights_file

    def pixels(self, items: list[Any]) -> Any:
        """Images -> the processor's ``pixel_values`` (n, 3, 384, 384) after the reference's pre-resize."""
        from PIL import Image

        from .clip import _to_pil

        pils = [_to_pil(im).convert("RGB") for im in items]
        if self.pre_resize:
            pils = [p.resize((self.pre_resize, self.pre_resize), resample=Image.Resampling.LANCZOS) for p in pils]
        return self.processor(images=pils, return_tensors="pt")["pixel_values"]

    def _encode_image_batch(self, items: list[Any]) -> Any:
        import torch

        pixels = self.pixels(items).to(self._device, next(self.backbone.parameters()).dtype)
        hidden = self.backbone(pixel_values=pixels, output_hidden_states=True).hidden_states
        # hidden[0] is the embedding output; hidden[1 + i] the output of layer i (no final LayerNorm)
        return torch.stack([hidden[1 + i] for i in self.out_indices], dim=1)


def build_dpt_space(name: str, *, weights: Any = None, device: Any = "cpu", dtype: Any = "float32",
                    batch_size: int = 8, verbose: Any = None, tiny: bool = False, seed: int = 0,
                    pre_resize: int | None = DPT_PRE_RESIZE) -> DptHiddenSpace:
    """Registry builder of ``dpt-large-hidden`` / ``-tiny`` (see :func:`~neurodecode.latents.get_space`).

    Parameters
    ----------
    weights : None, "random" or path-like or str
        ``None``: ``Intel/dpt-large`` (tiny twin: seeded random init); ``"random"``: the real
        architecture, random weights; a ``DPTForDepthEstimation`` folder or hub id
        (``config.json``, ``model.safetensors`` or its variants, ``preprocessor_config.json``).
    pre_resize : int or None
        Square Lanczos resize before the processor (512, as the reference; ``None`` skips it).
    """
    from transformers import DPTModel

    weights_file: Path | None = None
    if weights == "random" or (weights is None and tiny):
        config = dpt_config(tiny)
        with seeded(seed):
            backbone = DPTModel(config, add_pooling_layer=False)
        processor = dpt_processor(int(config.image_size))
        tag = f"random-init:seed={seed}"
    else:
        target = str(weights) if weights is not None else DPT_HUB_ID
        model, processor, folder, weights_file = load_dpt_folder(target, "DPT-large weights")
        backbone = model.dpt
        tag = f"folder:{folder}" if Path(target).expanduser().is_dir() else f"hub:{target}"
        del model
    logger.info("latent space %s: %s", name, tag)
    return DptHiddenSpace(name, backbone=backbone.float(), processor=processor,
                          pre_resize=None if not pre_resize else int(pre_resize), weights=tag,
                          weights_file=weights_file, device=device, dtype=dtype, batch_size=batch_size,
                          verbose=verbose)

