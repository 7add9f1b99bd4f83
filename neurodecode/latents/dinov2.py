"""DINOv2 image spaces on transformers' ``Dinov2Model`` (``facebook/dinov2-*``).

``dinov2-base``
    ``facebook/dinov2-base`` (ViT-B/14): the CLS token after the final LayerNorm (the model's
    ``pooler_output``): ``(768,)``.
``dinov2-base-tokens``
    The same model's patch tokens after the final LayerNorm, CLS excluded, at 224 px:
    ``(256, 768)`` (a 16 x 16 grid, row-major). ``output="q_tokens"`` gives instead the *query*
    projections of block ``block`` (default the last, ``-1``), CLS excluded: the features the
    transformer brain encoder reads by default (its ``dinov2_q`` backbone, a forward hook on the
    block's ``qkv`` layer); ``output="mean"`` the mean of the normalised patch tokens.
``dinov2-base-q-tokens``
    ``dinov2-base-tokens`` with ``output="q_tokens"`` (last block): ``(256, 768)``.
``dinov2-giant``
    ``facebook/dinov2-giant`` (ViT-g/14, SwiGLU FFN, 40 blocks, 1.1 B parameters; the size the
    real-time MEG paper of Benchetrit et al. 2024 decodes): CLS after the final LayerNorm ``(1536,)``.

Images: shorter side resized to 256 (bicubic), centre crop 224, rescaled by 1/255, normalised with
the ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225): the values of the
repositories' ``preprocessor_config.json`` (``BitImageProcessor``), applied by that same
transformers processor. The position embeddings (trained at 518 px) are interpolated to the 16 x 16
grid by ``Dinov2Model`` itself.

Tiny twins run the same code on random ``Dinov2Config`` models at widths found in no other tiny
space, on 42 px crops (resize 48) with patch 14 (a 3 x 3 grid):
``dinov2-base-tiny`` ``(28,)``, ``dinov2-base-tokens-tiny`` / ``dinov2-base-q-tokens-tiny`` ``(9, 28)``,
``dinov2-giant-tiny`` ``(36,)`` (SwiGLU, as the giant).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from .._core.errors import ValidationError
from .._core.logging import logger
from .._core.validation import check_option, format_error
from ._base import LatentSpace, seeded

__all__ = ["Dinov2Space", "build_dinov2_space", "dinov2_artefacts", "dinov2_files", "DINOV2_HUB", "DINOV2_CONFIGS",
           "DINOV2_PREPROCESSING", "OUTPUTS", "tiny_dinov2_config"]

#: size -> hub repository.
DINOV2_HUB: dict[str, str] = {"base": "facebook/dinov2-base", "giant": "facebook/dinov2-giant"}

#: The published configurations (the repositories' ``config.json``): ``Dinov2Config`` keyword arguments.
DINOV2_CONFIGS: dict[str, dict[str, Any]] = {
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "mlp_ratio": 4,
             "patch_size": 14, "image_size": 518, "layerscale_value": 1.0, "layer_norm_eps": 1e-6,
             "qkv_bias": True, "use_swiglu_ffn": False, "hidden_act": "gelu"},
    "giant": {"hidden_size": 1536, "num_hidden_layers": 40, "num_attention_heads": 24, "mlp_ratio": 4,
              "patch_size": 14, "image_size": 518, "layerscale_value": 1.0, "layer_norm_eps": 1e-6,
              "qkv_bias": True, "use_swiglu_ffn": True, "hidden_act": "gelu"},
}

#: Tiny twins: the same structure at widths no other tiny space uses (CLIP 16/24/48, text 32, GIT 20).
_TINY: dict[str, dict[str, Any]] = {
    "base": {"hidden_size": 28, "num_hidden_layers": 2, "num_attention_heads": 2, "mlp_ratio": 2,
             "patch_size": 14, "image_size": 42, "layerscale_value": 1.0, "layer_norm_eps": 1e-6,
             "qkv_bias": True, "use_swiglu_ffn": False, "hidden_act": "gelu"},
    "giant": {"hidden_size": 36, "num_hidden_layers": 2, "num_attention_heads": 3, "mlp_ratio": 2,
              "patch_size": 14, "image_size": 42, "layerscale_value": 1.0, "layer_norm_eps": 1e-6,
              "qkv_bias": True, "use_swiglu_ffn": True, "hidden_act": "gelu"},
}

#: The repositories' ``preprocessor_config.json`` (``BitImageProcessor``), real tier.
DINOV2_PREPROCESSING: dict[str, Any] = {
    "kind": "BitImageProcessor", "shortest_edge": 256, "crop_size": 224, "resample": "bicubic",
    "rescale_factor": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "mode": "RGB"}
_TINY_PREPROCESSING: dict[str, Any] = {**DINOV2_PREPROCESSING, "shortest_edge": 48, "crop_size": 42}

OUTPUTS = ("cls", "mean", "patch_tokens", "q_tokens")


def tiny_dinov2_config(size: str = "base") -> dict[str, Any]:
    """The tiny twin's ``Dinov2Config`` keyword arguments (a fresh copy)."""
    check_option(size, "size", list(_TINY))
    return copy.deepcopy(_TINY[size])


def dinov2_files(dtype: Any = None) -> tuple[tuple[str, ...], ...]:
    """The files read from a ``facebook/dinov2-*`` repository (config and weights; sharded accepted)."""
    from ..io.hub import transformers_model_files

    return transformers_model_files("", dtype, sharded=True)


def dinov2_artefacts(name: str, *, weights: Any = None, dtype: Any = None, size: str = "base", tiny: bool = False,
                     **options: Any) -> list[Any]:
    """What a DINOv2 space reads (see :func:`neurodecode.latents.space_artefacts`)."""
    from ..io.hub import ExternalArtefact, HubArtefact

    if weights == "random" or (weights is None and tiny):
        return [ExternalArtefact(name, "random", "random init (seeded), nothing to fetch")]
    target = str(weights) if weights is not None else DINOV2_HUB[size]
    if Path(target).expanduser().exists():
        return [ExternalArtefact(target, "folder", f"latent space {name}: a local folder (read as is)")]
    return [HubArtefact(target, dinov2_files(dtype), "Apache-2.0", f"latent space {name}: DINOv2 ViT ({size})")]


def _processor(pre: dict[str, Any]) -> Any:
    from PIL import Image
    from transformers import BitImageProcessor

    return BitImageProcessor(do_resize=True, size={"shortest_edge": int(pre["shortest_edge"])},
                             resample=Image.Resampling.BICUBIC, do_center_crop=True,
                             crop_size={"height": int(pre["crop_size"]), "width": int(pre["crop_size"])},
                             do_rescale=True, rescale_factor=float(pre["rescale_factor"]), do_normalize=True,
                             image_mean=list(pre["mean"]), image_std=list(pre["std"]), do_convert_rgb=True)


class Dinov2Space(LatentSpace):
    """A DINOv2 target space (see the module docstring). Build it with :func:`~neurodecode.latents.get_space`.

    Parameters
    ----------
    output : {"cls", "mean", "patch_tokens", "q_tokens"}
        CLS after the final LayerNorm ``(width,)``; mean of the normalised patch tokens ``(width,)``;
        the normalised patch tokens ``(grid, width)``; the query projections of block ``block``
        ``(grid, width)`` (CLS excluded in both token outputs).
    block : int
        Block whose queries ``q_tokens`` reads (Python indexing: ``-1`` is the last).
    """

    def __init__(self, name: str, *, model: Any, preprocessing: dict[str, Any], output: str, block: int,
                 weights: str, weights_file: Path | None, device: Any, dtype: Any, batch_size: int,
                 verbose: Any) -> None:
        check_option(output, "output", OUTPUTS)
        cfg = model.config
        n_layers = int(cfg.num_hidden_layers)
        if not -n_layers <= int(block) < n_layers:
            raise ValidationError(format_error("block", f"a block index in [-{n_layers}, {n_layers - 1}]", block,
                                               "Use -1 for the last block (the reference's default)"))
        grid = (int(preprocessing["crop_size"]) // int(cfg.patch_size)) ** 2
        width = int(cfg.hidden_size)
        shape = (width,) if output in ("cls", "mean") else (grid, width)
        super().__init__(name, shape=shape, modality="image", device=device, dtype=dtype, batch_size=batch_size,
                         verbose=verbose, preprocessing=preprocessing, weights=weights,
                         extra_key={"output": output, "block": int(block) % n_layers if output == "q_tokens" else None,
                                    "model_config": _config_key(cfg)})
        self.output = output
        self.block = int(block) % n_layers
        self.grid_size = int(preprocessing["crop_size"]) // int(cfg.patch_size)
        self._weights_file = weights_file
        self.model = model.to(self._device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._processor: Any = None

    def pixels(self, images: Any) -> Any:
        """Preprocess images (uint8 ``(n, H, W, 3)`` or PIL list) -> pixel tensor ``(n, 3, crop, crop)``."""
        from ._base import as_image_list

        return self._pixels(as_image_list(images))

    def _pixels(self, items: list[Any]) -> Any:
        import torch

        from .clip import _to_pil

        if self._processor is None:
            self._processor = _processor(self.preprocessing)
        out = self._processor(images=[_to_pil(im) for im in items], return_tensors="pt")["pixel_values"]
        return torch.as_tensor(out)

    def _encode_image_batch(self, items: list[Any]) -> Any:
        pixels = self._pixels(items).to(self._device, next(self.model.parameters()).dtype)
        if self.output != "q_tokens":
            hidden = self.model(pixel_values=pixels).last_hidden_state  # after the final LayerNorm
            if self.output == "cls":
                return hidden[:, 0]
            if self.output == "mean":
                return hidden[:, 1:].mean(dim=1)
            return hidden[:, 1:]
        return self._queries(pixels)[:, 1:]

    def _queries(self, pixels: Any) -> Any:
        """Query projections of block ``self.block`` for every token (CLS first): ``(n, 1 + grid, width)``."""
        attn = self.model.encoder.layer[self.block].attention
        proj = getattr(attn, "q_proj", None) or getattr(getattr(attn, "attention", None), "query", None)
        if proj is None:  # pragma: no cover - a transformers layout we do not know
            raise ValidationError(format_error("output", "a Dinov2Model whose attention has a query projection",
                                               type(attn).__name__, "Use output='patch_tokens'"))
        got: list[Any] = []
        handle = proj.register_forward_hook(lambda _m, _i, out: got.append(out))
        try:
            if self.block == int(self.model.config.num_hidden_layers) - 1:
                self.model(pixel_values=pixels)
            else:  # stop after the block: run the embeddings and the first blocks only
                h = self.model.embeddings(pixels)
                for layer in self.model.encoder.layer[: self.block + 1]:
                    h = layer(h)
                    h = h[0] if isinstance(h, tuple) else h
        finally:
            handle.remove()
        return got[-1]


def _config_key(config: Any) -> dict[str, Any]:
    d = config.to_diff_dict() if hasattr(config, "to_diff_dict") else dict(config)
    for k in ("transformers_version", "_name_or_path", "architectures", "torch_dtype", "dtype"):
        d.pop(k, None)
    return d


def build_dinov2_space(name: str, *, weights: Any = None, device: Any = "cpu", dtype: Any = "float32",
                       batch_size: int = 32, verbose: Any = None, size: str = "base", output: str = "cls",
                       block: int = -1, tiny: bool = False, seed: int = 0) -> Dinov2Space:
    """Registry builder of the ``dinov2-*`` spaces (see :func:`~neurodecode.latents.get_space`)."""
    from transformers import Dinov2Config, Dinov2Model

    check_option(size, "size", list(DINOV2_HUB))
    check_option(output, "output", OUTPUTS)
    pre = dict(_TINY_PREPROCESSING if tiny else DINOV2_PREPROCESSING)
    weights_file: Path | None = None
    if weights == "random" or (weights is None and tiny):
        config = Dinov2Config(**(_TINY[size] if tiny else DINOV2_CONFIGS[size]))
        with seeded(seed):
            model = Dinov2Model(config)
        tag = f"random-init:seed={seed}"
    else:
        from ..io.hub import group_choice, resolve_files, weight_group

        target = str(weights) if weights is not None else DINOV2_HUB[size]
        folder = resolve_files(target, dinov2_files(), what=f"DINOv2 ({size}) weights")
        choice = group_choice(folder, weight_group("", "model", sharded=True))
        if choice is not None and choice.endswith(".bin"):
            raise ValidationError(format_error(
                "weights", "safetensors weights (model.safetensors)", f"pickle-only {folder / choice}",
                "Convert the checkpoint to safetensors (transformers save_pretrained(safe_serialization=True))"))
        model = Dinov2Model.from_pretrained(str(folder), local_files_only=True, use_safetensors=True,
                                            variant="fp16" if choice is not None and ".fp16." in choice else None)
        weights_file = folder / choice if choice and not choice.endswith(".json") else None
        tag = f"folder:{folder}" if Path(target).expanduser().is_dir() else f"hub:{target}"
    logger.info("latent space %s: %s", name, tag)
    return Dinov2Space(name, model=model.float(), preprocessing=pre, output=output, block=block, weights=tag,
                       weights_file=weights_file, device=device, dtype=dtype, batch_size=batch_size, verbose=verbose)
