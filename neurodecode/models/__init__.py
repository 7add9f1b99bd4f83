"""Torch modules: subject adapters, the published decoders, shared losses and solvers.

Decoders are found by name without importing them all (each lives in its own file):

>>> from neurodecode.models import load_decoder          # doctest: +SKIP
>>> decoder = load_decoder("runs/mindbridge/checkpoint")   # doctest: +SKIP
>>> from neurodecode.models import MindBridge, MindBridgeConfig   # lazy: imports only that file  # doctest: +SKIP

Every decoder class exposes ``predict_latents(X, subject=...) -> dict[str, ndarray]``
with keys from :data:`LATENT_KEYS`, which the generators consume.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["DECODERS", "LATENT_KEYS", "decoder_class", "load_decoder", "build_decoder", "DecoderTarget",
           "BrainDiffuser", "BrainDiffuserConfig", "MindBridge", "MindBridgeConfig", "MindEye2", "MindEye2Config",
           "ATM", "ATMConfig", "GLIM", "GLIMConfig", "MEGBrainModule", "MEGBrainModuleConfig",
           "TransformerBrainEncoder", "BrainEncoderConfig", "RidgeBrainEncoder", "STTM", "STTMConfig",
           "SimpleConv", "SimpleConvConfig", "NVL", "NVLConfig", "NVLBrainLLM",
           "WAVE", "WAVEConfig", "WAVEPrior", "WAVEPriorConfig"]

#: Public class name -> its module (imported on first access, so one decoder never loads the others).
_LAZY = {
    "BrainDiffuser": "brain_diffuser", "BrainDiffuserConfig": "brain_diffuser",
    "MindBridge": "mindbridge", "MindBridgeConfig": "mindbridge",
    "MindEye2": "mindeye2", "MindEye2Config": "mindeye2",
    "ATM": "atm", "ATMConfig": "atm", "GLIM": "glim", "GLIMConfig": "glim",
    "MEGBrainModule": "meg_brain_module", "MEGBrainModuleConfig": "meg_brain_module",
    "build_decoder": "_targets", "DecoderTarget": "_targets",
    "TransformerBrainEncoder": "brain_encoder", "BrainEncoderConfig": "brain_encoder",
    "RidgeBrainEncoder": "brain_encoder",
    "STTM": "sttm", "STTMConfig": "sttm",
    "SimpleConv": "simpleconv", "SimpleConvConfig": "simpleconv",
    "NVL": "nvl", "NVLConfig": "nvl", "NVLBrainLLM": "nvl",
    "WAVE": "wave", "WAVEConfig": "wave", "WAVEPrior": "wave", "WAVEPriorConfig": "wave",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

#: Decoder name -> "module:Class" (imported only when asked for).
DECODERS: dict[str, str] = {
    "brain_diffuser": "neurodecode.models.brain_diffuser:BrainDiffuser",
    "mindbridge": "neurodecode.models.mindbridge:MindBridge",
    "mindeye2": "neurodecode.models.mindeye2:MindEye2",
    "atm": "neurodecode.models.atm:ATM",
    "glim": "neurodecode.models.glim:GLIM",
    "meg_brain_module": "neurodecode.models.meg_brain_module:MEGBrainModule",
    "sttm": "neurodecode.models.sttm:STTM",
    "simpleconv": "neurodecode.models.simpleconv:SimpleConv",
    "nvl": "neurodecode.models.nvl:NVL",
    "wave": "neurodecode.models.wave:WAVE",
}

#: Keys of the dict returned by ``predict_latents`` and their shapes (real tier).
LATENT_KEYS: dict[str, str] = {
    "clip_image_tokens": "(n, 257, 768) CLIP ViT-L/14 image tokens (VD-normalised when the decoder says so)",
    "clip_text_tokens": "(n, 77, 768) CLIP ViT-L/14 text tokens",
    "clip_image_embeds": "(n, d) pooled CLIP image embedding (ViT-H-14: 1024; ViT-L-14: 768)",
    "clip_bigg_tokens": "(n, 256, 1664) OpenCLIP ViT-bigG-14 patch tokens",
    "git_image_tokens": "(n, 257, 1024) GIT-large-coco image-encoder tokens (final LN, unprojected, CLS included)",
    "vae_latents": "(n, c, h, w) image-autoencoder latents for the low-level path",
    "text_embeds": "(n, d) sentence embedding",
    "image_embeds": "(n, d) pooled embedding of another image space (e.g. DINOv2 CLS: giant 1536)",
    "speech_features": "(n, d, t) speech features over a segment (wav2vec2-xlsr-53 layers 14-18: d = 1024, 120 Hz)",
    "blip_image_tokens": "(n, 226, 768) BLIP-base (CapFilt-L) vision-encoder tokens at 240 px (Takagi's captions)",
    "dpt_hidden_states": "(n, 4, 577, 1024) DPT-large backbone hidden states at its 4 backbone_out_indices (depth)",
}


def decoder_class(name: str) -> type:
    """The decoder class registered under ``name`` (or its class name, e.g. ``"MindBridge"``)."""
    from .._core.validation import check_option

    by_class = {v.split(":")[1]: v for v in DECODERS.values()}
    target = DECODERS.get(name) or by_class.get(name)
    if target is None:
        check_option(name, "decoder", list(DECODERS))
    module, cls = str(target).split(":")
    return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]


def load_decoder(path: str | os.PathLike[str], **kwargs: Any) -> Any:
    """Load any decoder saved with ``save_pretrained`` (the class is read from ``config.json``)."""
    from .._core.errors import MissingFileError
    from .._core.validation import format_error

    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        raise MissingFileError(format_error("checkpoint", "a folder written by save_pretrained (with config.json)",
                                            str(path), "Pass the folder that `neurodecode train` wrote"))
    name = json.loads(cfg.read_text())["model_class"]
    return decoder_class(name).from_pretrained(path, **kwargs)
