"""Captions from predicted latents: a GIT captioner on CLIP tokens, and nearest-neighbour retrieval.

:class:`GitCaptioner`
    GIT (``transformers.GitForCausalLM``; real tier ``microsoft/git-large-coco``) reads the
    tokens of its CLIP ViT-L/14 image encoder (CLS + 256 patches, *before* any projection:
    257 x 1024 for git-large-coco) through its visual projection and writes a caption. We feed
    the predicted tokens in place of the image encoder's output (the encoder is swapped for a
    pass-through module), so the decoder must predict that encoder's tokens. Greedy or beam
    decoding: deterministic, seeds are not needed.

:class:`CaptionRetriever`
    Nearest neighbour, by cosine similarity, of a predicted sentence embedding among a corpus
    of candidate captions embedded in the same text space (default ``"minilm-l6"``,
    all-MiniLM-L6-v2, real and offline; tiny tier ``"minilm-l6-tiny"``), through
    :func:`neurodecode.latents.get_space`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from .._core.errors import ShapeMismatchError, ValidationError
from .._core.validation import format_error
from ._base import Generator

__all__ = ["GitCaptioner", "CaptionRetriever"]

#: Vocabulary of the tiny tier's tokenizer (BERT word-piece format, like GIT's).
_TINY_WORDS = ("a man woman dog cat person people group of two on in with the and is are sitting standing "
               "table street car bus train plate food pizza field grass water sky building room red white blue "
               "black green small large next to near holding riding playing an at top").split()


class GitCaptioner(Generator):
    """Captions from predicted GIT image-encoder tokens through a GIT captioner.

    Expects ``latents["git_image_tokens"]`` of shape (n, 257, 1024) for the real tier: the tokens
    of git-large-coco's own image encoder (after its final LayerNorm, unprojected, CLS included),
    i.e. the ``git-large-coco-tokens`` latent space; tiny tier (n, 17, 20), the
    ``git-large-coco-tokens-tiny`` space. A dict holding only ``"clip_image_tokens"`` is read under
    that key when its shape fits (older recipes); CLIP ViT-L/14's 257 x 768 tokens do not fit the
    real tier and are refused with the shapes named.

    Options of :meth:`generate`: ``max_length`` (default 30 tokens), ``num_beams`` (default 1).

    Parameters
    ----------
    latent_key : str
        The key of ``latents`` holding the tokens (default ``"git_image_tokens"``).
    converter : None, path-like or TokenConverter
        MindEye2's caption route: a fitted :class:`~neurodecode.generate._converter.TokenConverter`
        (or its folder) from bigG patch tokens to GIT tokens; the captioner then reads
        ``latents["clip_bigg_tokens"]`` (n, 256, 1664) and converts them first.
    **kwargs
        See :class:`~neurodecode.generate._base.Generator`.
    """

    name = "git"
    output = "text"
    default_weights = "microsoft/git-large-coco"
    default_steps = 0
    default_guidance = 0.0
    #: Tiny tier: the ``git-large-coco-tokens-tiny`` space's encoder (17 x 20: not CLIP-tiny's width 16).
    TINY: ClassVar[dict[str, Any]] = {"width": 20, "image_size": 16, "patch_size": 4, "hidden": 32}

    def __init__(self, weights: Any = None, *, latent_key: str = "git_image_tokens", converter: Any = None,
                 **kwargs: Any) -> None:
        super().__init__(weights, **kwargs)
        self.latent_key = str(latent_key)
        if converter is not None and not hasattr(converter, "convert"):
            from ._converter import TokenConverter

            converter = TokenConverter.load(converter)
        self.converter = converter

    def check_latents(self, latents: Any) -> dict[str, np.ndarray]:
        if self.converter is not None:
            if "clip_bigg_tokens" not in latents:
                raise ShapeMismatchError(format_error(
                    "latents", f"the key 'clip_bigg_tokens' (n, {self.converter.shape_in[0]}, "
                    f"{self.converter.shape_in[1]}) for the GIT captioner with a token converter", sorted(latents),
                    "Pass the decoder's bigG tokens, or drop converter= to caption GIT tokens directly"))
            latents = {self.latent_key: self.converter.convert(latents["clip_bigg_tokens"])}
        elif self.latent_key not in latents and "clip_image_tokens" in latents:
            latents = {**latents, self.latent_key: latents["clip_image_tokens"]}
        return super().check_latents(latents)

    def _build_tiny(self) -> dict[str, Any]:
        import tempfile
        from pathlib import Path

        from transformers import BertTokenizer, GitConfig, GitForCausalLM

        cfg = self.tiny_config
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_TINY_WORDS]
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "vocab.txt").write_text("\n".join(vocab) + "\n")
            tokenizer = BertTokenizer(str(Path(tmp) / "vocab.txt"), do_lower_case=True)
        config = GitConfig(
            vision_config={"hidden_size": int(cfg["width"]), "intermediate_size": 2 * int(cfg["width"]),
                           "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": int(cfg["image_size"]),
                           "patch_size": int(cfg["patch_size"])},
            vocab_size=len(vocab), hidden_size=int(cfg["hidden"]), num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=2 * int(cfg["hidden"]), max_position_embeddings=64,
            bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
            pad_token_id=tokenizer.pad_token_id)
        return self._components(GitForCausalLM(config), tokenizer)

    licence = "MIT"
    purpose = "GIT-large captioner fine-tuned on COCO (text decoder + visual projection; image encoder unused)"

    @classmethod
    def hub_files(cls, dtype: Any = None, **kwargs: Any) -> tuple[tuple[str, ...], ...]:
        """Config, weights and the BERT word-piece tokenizer of ``microsoft/git-large-coco``."""
        from ..io.hub import transformers_model_files

        return (*transformers_model_files("", dtype), ("tokenizer.json", "vocab.txt"), ("tokenizer_config.json",))

    def _build_real(self, name_or_path: str) -> dict[str, Any]:
        from transformers import AutoTokenizer, GitForCausalLM

        from ..io.hub import pick_variant

        folder = self._resolve(name_or_path)
        model = GitForCausalLM.from_pretrained(folder, dtype=self.torch_dtype_,
                                               variant=pick_variant(folder, "", self._load_dtype_name(), base="model"))
        return self._components(model, AutoTokenizer.from_pretrained(folder))

    @staticmethod
    def _components(model: Any, tokenizer: Any) -> dict[str, Any]:
        vision = model.config.vision_config
        n_tokens = (int(vision.image_size) // int(vision.patch_size)) ** 2 + 1
        model.git.image_encoder = _pass_through()
        return {"model": model, "tokenizer": tokenizer, "n_tokens": n_tokens, "width": int(vision.hidden_size)}

    def _expects(self) -> dict[str, tuple[int | None, ...]]:
        return {self.latent_key: (None, self.components_["n_tokens"], self.components_["width"])}

    def _generate_batch(self, latents: dict[str, np.ndarray], generators: list[Any], *, steps: int, guidance: float,
                        max_length: int = 30, num_beams: int = 1) -> list[str]:
        c = self.components_
        model, tok = c["model"], c["tokenizer"]
        tokens = self._tensor(latents[self.latent_key])[:, None]  # GIT wants a 4-D "pixel_values"
        ids = model.generate(pixel_values=tokens, max_length=int(max_length), num_beams=int(num_beams),
                             do_sample=False)
        return [t.strip() for t in tok.batch_decode(ids, skip_special_tokens=True)]


def _pass_through() -> Any:
    """A module returning its input as ``last_hidden_state`` (stands in for GIT's image encoder)."""
    import torch
    from transformers.modeling_outputs import BaseModelOutput

    class PassThrough(torch.nn.Module):
        def forward(self, pixel_values: Any, *args: Any, **kwargs: Any) -> Any:
            return BaseModelOutput(last_hidden_state=pixel_values[:, 0])

    return PassThrough()


class CaptionRetriever(Generator):
    """The nearest caption of a corpus to each predicted sentence embedding.

    Parameters
    ----------
    corpus : list of str
        Candidate captions (e.g. the training set's COCO captions).
    weights : None, "tiny", str or path-like
        Weights of the text space (``None``: the published ones; ``"tiny"``: the space's
        ``-tiny`` twin; or a folder).
    space : str
        Registered text space of :func:`neurodecode.latents.get_space` (default ``"minilm-l6"``).
    **kwargs
        See :class:`~neurodecode.generate._base.Generator`.

    Expects ``latents["text_embeds"]`` of shape (n, d), d the space's width (384 for MiniLM).
    :meth:`retrieve` also gives the top-k indices and scores.
    """

    name = "retrieval"
    output = "text"
    default_weights = "minilm-l6"
    default_steps = 0
    default_guidance = 0.0

    def __init__(self, corpus: Sequence[str] = (), weights: Any = None, *, space: str = "minilm-l6",
                 **kwargs: Any) -> None:
        super().__init__(weights, **kwargs)
        self.corpus = corpus
        self.space = space

    licence = "Apache-2.0"
    purpose = "text space of caption retrieval"

    @classmethod
    def artefacts(cls, weights: Any = None, dtype: Any = None, *, space: str = "minilm-l6", **kwargs: Any) -> list[Any]:
        from ..latents import space_artefacts

        name = f"{space}-tiny" if isinstance(weights, str) and weights == "tiny" else space
        return space_artefacts(name, weights=None if weights in (None, "tiny", cls.default_weights) else weights,
                               dtype=dtype)

    def _build_tiny(self) -> dict[str, Any]:
        return self._components(f"{self.space}-tiny", None)

    def _build_real(self, name_or_path: str) -> dict[str, Any]:
        weights = None if name_or_path == self.default_weights else name_or_path
        return self._components(self.space, weights)

    def _components(self, space_name: str, weights: Any) -> dict[str, Any]:
        from ..latents import get_space

        corpus = list(self.corpus)
        if not corpus or not all(isinstance(c, str) for c in corpus):
            raise ValidationError(format_error("corpus", "a non-empty list of candidate captions (str)", self.corpus,
                                               "Pass e.g. the training stimuli's captions"))
        space = get_space(space_name, weights=weights, device=self.device, verbose=False)
        emb = np.asarray(space.encode_texts(corpus), dtype=np.float32)
        emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        return {"space": space, "corpus_embeds": emb, "corpus": corpus}

    def _expects(self) -> dict[str, tuple[int | None, ...]]:
        return {"text_embeds": (None, int(self.components_["corpus_embeds"].shape[1]))}

    def retrieve(self, latents: dict[str, Any], k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` corpus indices and cosine similarities for each item.

        Returns
        -------
        indices : ndarray of shape (n, k), int
        scores : ndarray of shape (n, k), float32
        """
        self.load()
        q = self.check_latents(latents)["text_embeds"]
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        sims = q @ self.components_["corpus_embeds"].T
        k = min(int(k), sims.shape[1])
        idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        return idx, np.take_along_axis(sims, idx, axis=1)

    def _generate_batch(self, latents: dict[str, np.ndarray], generators: list[Any], *, steps: int,
                        guidance: float) -> list[str]:
        idx, _ = self.retrieve(latents, k=1)
        return [self.components_["corpus"][int(j)] for j in idx[:, 0]]
