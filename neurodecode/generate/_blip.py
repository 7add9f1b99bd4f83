"""Captions from predicted BLIP image tokens: Takagi & Nishimoto's caption decoder.

:class:`BlipCaptioner` runs BLIP's text decoder (transformers ``BlipForConditionalGeneration``,
real tier ``Salesforce/blip-image-captioning-base``: BLIP-base, CapFilt-L) on *given* image
tokens: the ``blip-base-capfilt-tokens`` space (226 x 768 at 240 px), i.e. what a ridge decodes
from the brain. The vision encoder is not run. The defaults are those of Takagi's
``decode_captions.py``: beam search with 3 beams, ``max_length`` 20 and ``min_length`` 5 (counted
over the whole sequence, prompt included, as BLIP's ``generate``), repetition penalty 1.5, prompt
``"a picture of "`` (its [CLS] replaced by the decoder's [DEC] start token, its [SEP] dropped), and
the prompt removed from the decoded text. Deterministic: no seed is used.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .._core.validation import format_error
from ._base import Generator

__all__ = ["BlipCaptioner", "BLIP_PROMPT"]

#: BLIP_Decoder's prompt (BLIP's models/blip.py), kept by Takagi's decode_captions.py.
BLIP_PROMPT = "a picture of "

#: Vocabulary of the tiny tier's tokenizer (BERT word-piece format, like BLIP's).
_TINY_WORDS = ("a picture of man woman dog cat person people group two on in with the and is are sitting standing "
               "table street car bus train plate food pizza field grass water sky building room red white blue "
               "black green small large next to near holding riding playing an at top").split()


class BlipCaptioner(Generator):
    """Captions from predicted BLIP vision-encoder tokens through BLIP's text decoder.

    Expects ``latents["blip_image_tokens"]`` of shape (n, 226, 768) for the real tier (the
    ``blip-base-capfilt-tokens`` space at 240 px); tiny tier (n, 26, 44), the
    ``blip-base-capfilt-tokens-tiny`` space.

    Options of :meth:`generate` (defaults from Takagi's ``decode_captions.py``): ``num_beams`` 3,
    ``max_length`` 20, ``min_length`` 5, ``repetition_penalty`` 1.5, ``prompt`` ``"a picture of "``.

    Parameters
    ----------
    weights : None, "tiny", str or path-like
        ``None``: ``Salesforce/blip-image-captioning-base``; ``"tiny"``; or a
        ``BlipForConditionalGeneration`` folder / hub id.
    latent_key : str
        The key of ``latents`` holding the tokens (default ``"blip_image_tokens"``).
    image_size : int or None
        The size the tokens were encoded at (sets the expected token count: (size / 16)^2 + 1;
        default 240, tiny 20).
    **kwargs
        See :class:`~neurodecode.generate._base.Generator`.
    """

    name = "blip"
    output = "text"
    default_weights = "Salesforce/blip-image-captioning-base"
    default_steps = 0
    default_guidance = 0.0
    licence = "BSD-3-Clause"
    purpose = "BLIP-base (CapFilt-L) caption decoder (text decoder; the vision encoder is not run)"
    #: Tiny tier: the ``blip-base-capfilt-tokens-tiny`` space's encoder (26 x 44) and a 36-wide text decoder.
    TINY: ClassVar[dict[str, Any]] = {"width": 44, "native_size": 24, "image_size": 20, "patch_size": 4,
                                      "hidden": 36}

    def __init__(self, weights: Any = None, *, latent_key: str = "blip_image_tokens", image_size: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(weights, **kwargs)
        self.latent_key = str(latent_key)
        self.image_size = image_size

    @classmethod
    def hub_files(cls, dtype: Any = None, **kwargs: Any) -> tuple[tuple[str, ...], ...]:
        """Config, weights and the BERT word-piece tokenizer of ``Salesforce/blip-image-captioning-base``."""
        from ..io.hub import transformers_model_files

        return (*transformers_model_files("", dtype), ("tokenizer.json", "vocab.txt"), ("tokenizer_config.json",))

    def _build_tiny(self) -> dict[str, Any]:
        import tempfile
        from pathlib import Path

        from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration

        cfg = self.tiny_config
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_TINY_WORDS]
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "vocab.txt").write_text("\n".join(vocab) + "\n")
            tokenizer = BertTokenizer(str(Path(tmp) / "vocab.txt"), do_lower_case=True)
        tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
        width, hidden = int(cfg["width"]), int(cfg["hidden"])
        config = BlipConfig(
            vision_config={"hidden_size": width, "intermediate_size": 2 * width, "num_hidden_layers": 1,
                           "num_attention_heads": 2, "image_size": int(cfg["native_size"]),
                           "patch_size": int(cfg["patch_size"]), "initializer_range": 0.02},
            text_config={"vocab_size": len(tokenizer), "hidden_size": hidden, "intermediate_size": 2 * hidden,
                         "num_hidden_layers": 2, "num_attention_heads": 2, "encoder_hidden_size": width,
                         "max_position_embeddings": 64, "bos_token_id": tokenizer.bos_token_id,
                         "sep_token_id": tokenizer.sep_token_id, "pad_token_id": tokenizer.pad_token_id,
                         "initializer_range": 0.02})
        size = int(self.image_size or cfg["image_size"])
        return self._components(BlipForConditionalGeneration(config), tokenizer, size)

    def _build_real(self, name_or_path: str) -> dict[str, Any]:
        from transformers import AutoTokenizer, BlipForConditionalGeneration

        from ..io.hub import pick_variant

        folder = self._resolve(name_or_path)
        model = BlipForConditionalGeneration.from_pretrained(
            folder, dtype=self.torch_dtype_, variant=pick_variant(folder, "", self._load_dtype_name(), base="model"))
        return self._components(model, AutoTokenizer.from_pretrained(folder), int(self.image_size or 240))

    @staticmethod
    def _components(model: Any, tokenizer: Any, image_size: int) -> dict[str, Any]:
        vision = model.config.vision_config
        n_tokens = (int(image_size) // int(vision.patch_size)) ** 2 + 1
        # only the text decoder runs: the vision encoder is dropped (given tokens stand in for its output)
        return {"text_decoder": model.text_decoder, "text_config": model.config.text_config, "tokenizer": tokenizer,
                "n_tokens": n_tokens, "width": int(vision.hidden_size)}

    def _expects(self) -> dict[str, tuple[int | None, ...]]:
        return {self.latent_key: (None, self.components_["n_tokens"], self.components_["width"])}

    def prompt_ids(self, prompt: str, n: int) -> Any:
        """Token ids of ``prompt`` as BLIP feeds them: [DEC] in place of [CLS], the final [SEP] dropped; (n, len)."""
        c = self.components_
        ids = c["tokenizer"]([prompt], return_tensors="pt").input_ids
        ids[:, 0] = int(c["text_config"].bos_token_id)
        return ids[:, :-1].repeat(n, 1).to(self.execution_device)

    def _generate_batch(  # type: ignore[override]  # named options in place of **options
            self, latents: dict[str, np.ndarray], generators: list[Any], *, steps: int, guidance: float,
            num_beams: int = 3, max_length: int = 20, min_length: int = 5, repetition_penalty: float = 1.5,
            prompt: str = BLIP_PROMPT) -> list[str]:
        import torch

        from .._core.errors import ValidationError

        if int(num_beams) < 1 or int(max_length) < 1 or int(min_length) < 0:
            raise ValidationError(format_error("num_beams / max_length / min_length", "positive integers",
                                               f"{num_beams} / {max_length} / {min_length}"))
        c = self.components_
        embeds = self._tensor(latents[self.latent_key])
        mask = torch.ones(embeds.shape[:-1], dtype=torch.long, device=embeds.device)
        ids = self.prompt_ids(prompt, embeds.shape[0])
        cfg = c["text_config"]
        out = c["text_decoder"].generate(
            input_ids=ids, encoder_hidden_states=embeds, encoder_attention_mask=mask, num_beams=int(num_beams),
            max_length=int(max_length), min_length=int(min_length), repetition_penalty=float(repetition_penalty),
            eos_token_id=int(cfg.sep_token_id), pad_token_id=int(cfg.pad_token_id), do_sample=False)
        texts = c["tokenizer"].batch_decode(out, skip_special_tokens=True)
        return [strip_prompt(t, prompt) for t in texts]


def strip_prompt(text: str, prompt: str) -> str:
    """The caption without its prompt (BLIP's ``caption[len(prompt):]`` on the decoded text), stripped."""
    text, head = text.strip(), prompt.strip()
    if head and text.lower().startswith(head.lower()):
        text = text[len(head):]
    return text.strip()
