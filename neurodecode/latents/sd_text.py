"""Stable Diffusion 1.4's text conditioning: the ``c`` that Takagi & Nishimoto decode from ventral cortex.

``sd14-text-cond``
    SD-1.4's cond stage (``FrozenCLIPEmbedder``: the CLIP ViT-L/14 text transformer, frozen in
    SD 1.x) on one caption: the last hidden state after the final LayerNorm, ``(77, 768)``. The
    caption is tokenised by the repository's CLIP tokenizer, truncated and padded to 77 tokens
    with its pad token (``<|endoftext|>``, id 49407), as ``FrozenCLIPEmbedder`` and diffusers'
    Stable Diffusion pipelines do. Weights: ``CompVis/stable-diffusion-v1-4``'s ``text_encoder/``
    and ``tokenizer/`` (the same files the SD img2img generator reads).

    Takagi's target of an image is the **mean over its 5 COCO captions** of this conditioning
    (``img2feat_sd.py``: ``get_learned_conditioning(prompts).mean(axis=0)``): the recipes' text
    targets average the features of an image's captions (:mod:`neurodecode.recipes._targets`),
    so one caption is one row here.
``sd14-text-cond-tiny``
    The same code on a random 1-layer CLIP text transformer of width 40 with the real CLIP BPE
    (49,408 tokens, from open_clip's vocabulary): ``(77, 40)``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from .._core.logging import logger
from ._base import LatentSpace, seeded

__all__ = ["SdTextCondSpace", "build_sd_text_space", "sd_text_artefacts", "sd_text_files", "SD14_HUB_ID",
           "TINY_SD_TEXT"]

SD14_HUB_ID = "CompVis/stable-diffusion-v1-4"
#: The tiny text transformer: width 40 (distinct from every other tiny space), 77 positions, the CLIP vocabulary.
TINY_SD_TEXT: dict[str, Any] = {"hidden_size": 40, "intermediate_size": 80, "num_hidden_layers": 1,
                                "num_attention_heads": 2}


def sd_text_files(dtype: Any = None) -> tuple[tuple[str, ...], ...]:
    """The files read from a Stable Diffusion repository: ``text_encoder/`` (config + weights) and ``tokenizer/``."""
    from ..io.hub import clip_tokenizer_files, transformers_model_files

    return (*transformers_model_files("text_encoder", dtype), *clip_tokenizer_files("tokenizer"))


def sd_text_artefacts(name: str, *, weights: Any = None, dtype: Any = None, tiny: bool = False,
                      hub_id: str = SD14_HUB_ID, **options: Any) -> list[Any]:
    """What the SD text-conditioning space reads (see :func:`neurodecode.latents.space_artefacts`)."""
    from ..io.hub import ExternalArtefact, HubArtefact

    if weights == "random" or (weights is None and tiny):
        return [ExternalArtefact(name, "random", "random init (seeded), nothing to fetch")]
    target = str(weights) if weights is not None else hub_id
    if Path(target).expanduser().exists():
        return [ExternalArtefact(target, "folder", f"latent space {name}: a local folder (read as is)")]
    return [HubArtefact(target, sd_text_files(dtype), "CreativeML OpenRAIL-M",
                        f"latent space {name}: Stable Diffusion 1.4 text encoder + tokenizer")]


def _real_text_config() -> Any:
    from transformers import CLIPTextConfig

    # CompVis/stable-diffusion-v1-4 text_encoder/config.json (= openai/clip-vit-large-patch14 text_config):
    # 768 wide, 12 layers, 12 heads, FFN 3072, quick_gelu, 77 positions, vocab 49408, bos 49406 / eos 49407
    return CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                          num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                          bos_token_id=49406, eos_token_id=49407, pad_token_id=1)


def _bpe_tokenizer() -> Any:
    """A ``CLIPTokenizer`` on the real CLIP BPE (open_clip's vocabulary), padding with ``<|endoftext|>``."""
    from transformers import CLIPTokenizer

    from ..testing._hub import clip_bpe_tokenizer_files

    with tempfile.TemporaryDirectory() as tmp:
        clip_bpe_tokenizer_files(tmp)
        return CLIPTokenizer.from_pretrained(tmp)


class SdTextCondSpace(LatentSpace):
    """SD-1.x text conditioning of one caption (see the module docstring).

    Build it with :func:`~neurodecode.latents.get_space`.

    Attributes
    ----------
    text_encoder : transformers.CLIPTextModel
        The frozen text transformer (float32 weights).
    tokenizer : transformers.CLIPTokenizer
        Pads to ``max_position_embeddings`` (77) with its pad token.
    """

    modality = "text"

    def __init__(self, name: str, *, text_encoder: Any, tokenizer: Any, weights: str, weights_file: Path | None,
                 device: Any, dtype: Any, batch_size: int, verbose: Any) -> None:
        cfg = text_encoder.config
        length = int(cfg.max_position_embeddings)
        pre = {"kind": "clip-tokenizer", "max_length": length, "padding": "max_length", "truncation": True,
               "pad_token_id": int(tokenizer.pad_token_id), "vocab_size": len(tokenizer)}
        super().__init__(name, shape=(length, int(cfg.hidden_size)), modality="text", device=device, dtype=dtype,
                         batch_size=batch_size, verbose=verbose, preprocessing=pre, weights=weights,
                         extra_key={"output": "sd_text_cond", "text_config": cfg.to_diff_dict()})
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder.to(self._device).eval()
        for p in self.text_encoder.parameters():
            p.requires_grad_(False)
        self._weights_file = weights_file

    def _encode_text_batch(self, items: list[str]) -> Any:
        ids = self.tokenizer(list(items), padding="max_length", max_length=self.shape[0], truncation=True,
                             return_tensors="pt").input_ids.to(self._device)
        return self.text_encoder(input_ids=ids).last_hidden_state


def build_sd_text_space(name: str, *, weights: Any = None, device: Any = "cpu", dtype: Any = "float32",
                        batch_size: int = 32, verbose: Any = None, tiny: bool = False, seed: int = 0,
                        hub_id: str = SD14_HUB_ID, output: str = "text_tokens") -> SdTextCondSpace:
    """Registry builder of ``sd14-text-cond`` / ``-tiny`` (see :func:`~neurodecode.latents.get_space`).

    Parameters
    ----------
    weights : None, "random" or path-like or str
        ``None``: ``hub_id`` (tiny twin: seeded random init); ``"random"``: the real architecture,
        random weights (real CLIP BPE); a Stable Diffusion folder or hub id holding
        ``text_encoder/`` and ``tokenizer/``.
    hub_id : str
        The published weights (default ``CompVis/stable-diffusion-v1-4``).
    output : {"text_tokens"}
        The one output (named so that recipes read the space as a text space: captions in, mean per image).
    """
    from transformers import CLIPTextConfig, CLIPTextModel

    from .._core.validation import check_option

    check_option(output, "output", ("text_tokens",))

    weights_file: Path | None = None
    if weights == "random" or (weights is None and tiny):
        if tiny:
            config = CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, hidden_act="quick_gelu",
                                    bos_token_id=49406, eos_token_id=49407, pad_token_id=1, **TINY_SD_TEXT)
        else:
            config = _real_text_config()
        with seeded(seed):
            text_encoder = CLIPTextModel(config)
        tokenizer = _bpe_tokenizer()
        tag = f"random-init:seed={seed}"
    else:
        from transformers import CLIPTokenizer

        from ..io.hub import group_choice, pick_variant, resolve_files, weight_group

        target = str(weights) if weights is not None else hub_id
        folder = resolve_files(target, sd_text_files(), what="Stable Diffusion text encoder")
        text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder",
                                                     variant=pick_variant(folder, "text_encoder", None, base="model"))
        tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
        choice = group_choice(folder, weight_group("text_encoder/", "model"))
        weights_file = folder / choice if choice else None
        tag = f"folder:{folder}" if Path(target).expanduser().is_dir() else f"hub:{target}"
    logger.info("latent space %s: %s", name, tag)
    return SdTextCondSpace(name, text_encoder=text_encoder.float(), tokenizer=tokenizer, weights=tag,
                           weights_file=weights_file, device=device, dtype=dtype, batch_size=batch_size,
                           verbose=verbose)
