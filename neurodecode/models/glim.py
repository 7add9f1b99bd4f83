"""GLIM: sentence-level EEG -> text through a frozen T5 (ZuCo, 2025).

One self-contained file a reader can hold against the paper:

1. **Input**: sentence EEG at 128 Hz, zero-padded to ``(n_channels=128, max_times=1280)``
   (10 s) with the valid length of each trial. Time is cut into patches of
   ``patch_size`` samples, each patch embedded by one Linear; learned positions.
2. **Prompts**: one learned token each for the task, the dataset and the subject
   (index 0 = unknown), prepended to the sequence.
3. **Encoder**: ``n_in_blocks`` pre-norm transformer blocks over the (masked) time
   tokens, compression to ``n_latent`` (96) steps by learned queries cross-attending
   into them (key-padding mask), ``n_out_blocks`` blocks over the latents. Every
   attention is :func:`torch.nn.functional.scaled_dot_product_attention`.
4. **Aligner**: ``n_prefix`` learned queries in the text model's width cross-attend
   into the EEG latents; the result is the *encoder hidden states* of a frozen T5
   (the decoder is conditioned through ``encoder_outputs``, the T5 encoder is not run
   on EEG).
5. **Loss**: ``0.5 x`` CLIP-style contrastive between the pooled aligner output and the
   pooled (frozen) T5-encoder embedding of the target sentence (each through a learned
   linear projection into a shared ``embed_dim`` space), plus ``0.5 x`` the LM
   loss of the T5 decoder on the target (teacher forcing, in training only). Several
   paraphrases per sentence are given as several training rows with the same EEG.
6. **Inference without teacher forcing**: :meth:`GLIM.generate` decodes greedily (or
   with beams) from the EEG prefix alone; :meth:`GLIM.retrieve` ranks candidate
   sentences; :meth:`GLIM.classify` compares with label sentences (zero-shot).

Input scaling (neurodecode's addition). Per-channel statistics (buffers ``input_mean`` and
``input_std`` of shape ``(len(subjects) + 1, n_channels)``: row 0 for trials of no or an unknown
subject, row ``i + 1`` for ``subjects[i]``, as for the subject prompt) are applied as
``(x - mean) / std`` at the start of :meth:`GLIM.encode_eeg`, which every path (``training_step``,
``embed_eeg``, ``similarity``, ``retrieve``, ``classify``, ``generate``, ``predict_latents``) goes
through; samples beyond each sentence's length stay zero. A saved model thus takes RAW data. Set
them with :meth:`GLIM.set_input_scaling`; until then they are the identity and stay out of the
checkpoint (``GLIMConfig.input_scaling``), so checkpoints saved before scaling existed load as identity.

Text model, two tiers. Real: ``google/flan-t5-large`` (d_model 1024) and its
tokenizer, resolved by :func:`neurodecode.io.hub.resolve_model_dir` (offline mode
honoured); its frozen weights are not written by ``save_pretrained`` (they are
reloaded from the hub id). Tiny: a ByT5-style :class:`transformers.T5Config` at toy width
with :class:`transformers.ByT5Tokenizer` (byte-level, needs no vocabulary files, so it
works offline); its random weights are saved with the model.

Freezing (``GLIMConfig.freeze_text_model``; ``None`` = automatic): pretrained weights are
frozen, as in GLIM; the tiny T5's *random* decoder (blocks and final norm) is trained with
the rest, its embeddings and encoder (the text side of the contrastive loss) stay fixed.
A frozen random T5 knows no language: steered only through its cross-attention, its LM loss stays
near chance (ln 384), greedy decoding emits near-arbitrary ids, and two thirds of the byte
vocabulary (sentinels, lone non-ASCII bytes) decode to ``""``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._core.errors import ShapeMismatchError, ValidationError
from .._core.validation import check_array, dataclass_from_dict, format_error
from ..io.checkpoints import PretrainedMixin
from ._scaling import store_channel_scaling
from .losses import clip_loss

__all__ = ["GLIMConfig", "GLIM"]

_TEXT_PREFIX = "text_model."
#: The tiny ByT5-style T5 (byte vocabulary of ByT5Tokenizer: 256 bytes + 3 specials + 125 extra ids).
_TINY_T5: dict[str, Any] = dict(vocab_size=384, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_decoder_layers=1,
                                num_heads=4, dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)


@dataclass
class GLIMConfig:
    """Architecture and loss settings of :class:`GLIM` (defaults: ZuCo, real size).

    Parameters
    ----------
    n_channels, max_times : int
        Padded input shape per sentence (128 x 1280).
    sfreq : float
        Sampling rate (128 Hz); ``max_times / sfreq`` is the longest sentence (10 s).
    patch_size : int
        Samples per input token.
    d_model, n_heads, d_ff, dropout : int, int, int, float
        Encoder width (256), heads, feed-forward width, dropout.
    n_in_blocks, n_out_blocks : int
        Transformer blocks before and after compression (6, 6).
    n_latent : int
        Latent steps after compression (96).
    n_prefix : int
        Aligner queries = length of the T5 encoder states given to the decoder.
    embed_dim : int
        Width of the shared EEG-text space of the contrastive loss (learned linear
        projections of the pooled aligner output and of the pooled T5 embedding).
    tasks, datasets, subjects : list of str
        Prompt vocabularies (index 0 of each embedding is "unknown").
    text_model : str or None
        Hub id or folder of the frozen T5 (real tier); ``None`` (or ``false`` in a
        recipe) builds the tiny ByT5-style T5 from ``text_config``.
    text_config : dict
        ``transformers.T5Config`` fields of the tiny text model.
    freeze_text_model : bool or None
        Freeze the T5 (its weights then stay out of ``save_pretrained`` in the real tier);
        ``False`` trains its decoder blocks and final norm (embeddings, LM head and encoder,
        the text side of the contrastive loss, stay fixed). ``None``: freeze pretrained
        weights (``text_model`` set), train the random tiny T5's decoder (frozen random
        weights carry no language to condition on).
    text_dtype : str
        Precision of the frozen T5 (``"bfloat16"`` at real size on GPU).
    max_text_len : int
        Maximum target tokens.
    contrastive_weight : float
        Weight of the contrastive term; the LM term gets ``1 - contrastive_weight`` (0.5).
    logit_scale_init : float
        Initial contrastive logit scale (learnable).
    input_scaling : bool
        Whether the per-channel input statistics (``input_mean``, ``input_std``) are part of
        the checkpoint. :meth:`GLIM.set_input_scaling` turns it on. ``False`` (the default, and
        what checkpoints saved before input scaling existed read as): identity scaling, not saved.
    """

    n_channels: int = 128
    max_times: int = 1280
    sfreq: float = 128.0
    patch_size: int = 1
    d_model: int = 256
    n_heads: int = 8
    d_ff: int = 1024
    dropout: float = 0.1
    n_in_blocks: int = 6
    n_out_blocks: int = 6
    n_latent: int = 96
    n_prefix: int = 96
    embed_dim: int = 1024
    tasks: list[str] = field(default_factory=lambda: ["NR", "TSR", "SR"])
    datasets: list[str] = field(default_factory=lambda: ["zuco1", "zuco2"])
    subjects: list[str] = field(default_factory=list)
    text_model: str | None = "google/flan-t5-large"
    text_config: dict[str, Any] = field(default_factory=lambda: dict(_TINY_T5))
    freeze_text_model: bool | None = None
    text_dtype: str = "float32"
    max_text_len: int = 64
    contrastive_weight: float = 0.5
    logit_scale_init: float = 1 / 0.07
    input_scaling: bool = False

    def __post_init__(self) -> None:
        for name in ("n_channels", "max_times", "patch_size", "d_model", "n_heads", "n_latent", "n_prefix"):
            if int(getattr(self, name)) < 1:
                raise ValidationError(format_error(name, "a positive integer", getattr(self, name)))
        if self.d_model % self.n_heads:
            raise ValidationError(format_error("n_heads", f"a divisor of d_model={self.d_model}", self.n_heads))
        if self.text_model in (False, "", "none", "tiny"):  # TOML has no null: false means the tiny T5
            self.text_model = None
        self.tasks, self.datasets, self.subjects = ([str(v) for v in vals] for vals in
                                                    (self.tasks, self.datasets, self.subjects))

    @property
    def n_tokens(self) -> int:
        """Time tokens per sentence (``ceil(max_times / patch_size)``)."""
        return -(-self.max_times // self.patch_size)

    @property
    def text_frozen(self) -> bool:
        """Whether the T5 is frozen (``freeze_text_model``, or by default: pretrained weights are)."""
        return bool(self.freeze_text_model) if self.freeze_text_model is not None else self.text_model is not None

    @classmethod
    def tiny(cls, **overrides: Any) -> GLIMConfig:
        """Same structure at toy width, with a tiny ByT5-style T5 (random init, offline)."""
        base: dict[str, Any] = dict(
            n_channels=16, max_times=64, patch_size=4, d_model=32, n_heads=4, d_ff=64, dropout=0.0,
            n_in_blocks=1, n_out_blocks=1, n_latent=8, n_prefix=6, embed_dim=24, text_model=None, max_text_len=32,
        )
        base.update(overrides)
        return cls(**base)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GLIMConfig:
        """Build from a (JSON) dict or a recipe's ``[decoder]`` table (its ``name`` is skipped)."""
        return dataclass_from_dict(cls, d, "decoder")


# --------------------------------------------------------------------------- blocks


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_heads: int, key_mask: torch.Tensor | None,
            dropout: float) -> torch.Tensor:
    b, nq, d = q.shape
    nk = k.shape[1]
    hd = d // n_heads
    q, k, v = (t.view(b, -1, n_heads, hd).transpose(1, 2) for t in (q, k, v))
    mask = key_mask[:, None, None, :].expand(b, 1, nq, nk) if key_mask is not None else None
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
    return y.transpose(1, 2).reshape(b, nq, d)


class _Attention(nn.Module):
    """Multi-head (self or cross) attention via SDPA; ``key_mask`` True = attend."""

    def __init__(self, d: int, n_heads: int, dropout: float, d_kv: int | None = None) -> None:
        super().__init__()
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d_kv or d, 2 * d)
        self.out = nn.Linear(d, d)
        self.n_heads, self.dropout = n_heads, dropout

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        k, v = self.kv(ctx).chunk(2, dim=-1)
        y = _attend(self.q(x), k, v, self.n_heads, key_mask, self.dropout if self.training else 0.0)
        return self.out(y)


class _Block(nn.Module):
    """Pre-norm transformer block: self- (or cross-) attention then GELU feed-forward."""

    def __init__(self, d: int, n_heads: int, d_ff: int, dropout: float, d_kv: int | None = None) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.norm_kv = nn.LayerNorm(d_kv) if d_kv is not None else None
        self.attn = _Attention(d, n_heads, dropout, d_kv)
        self.norm2 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ff, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor | None = None,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm1(x)
        c = h if ctx is None else (self.norm_kv(ctx) if self.norm_kv is not None else ctx)
        x = x + self.drop(self.attn(h, c, key_mask))
        return x + self.drop(self.ff(self.norm2(x)))


# --------------------------------------------------------------------------- text model (two tiers)


def _load_text_model(config: GLIMConfig) -> tuple[Any, Any]:
    """The frozen T5 and its tokenizer: hub/folder (real) or ByT5-style config (tiny)."""
    from transformers import ByT5Tokenizer, T5Config, T5ForConditionalGeneration

    from .._core.device import resolve_dtype

    if config.text_model is None:
        model = T5ForConditionalGeneration(T5Config(**config.text_config))
        tokenizer: Any = ByT5Tokenizer()
    else:
        from transformers import AutoTokenizer

        from .._core.config import is_offline
        from ..io.hub import resolve_model_dir

        folder = resolve_model_dir(config.text_model, local_files_only=is_offline(),
                                   allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"])
        dtype = resolve_dtype(config.text_dtype)
        model = T5ForConditionalGeneration.from_pretrained(folder, dtype=dtype, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model.requires_grad_(False)
    if not config.text_frozen:  # train the decoder; embeddings and encoder (the contrastive text side) stay fixed
        model.decoder.block.requires_grad_(True)
        model.decoder.final_layer_norm.requires_grad_(True)
    model.eval()
    return model, tokenizer


def _drop_text_keys(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    for key in [k for k in state_dict if k.startswith(prefix + _TEXT_PREFIX)]:
        del state_dict[key]


def _ignore_missing_text_keys(module: nn.Module, incompatible: Any) -> None:
    incompatible.missing_keys[:] = [k for k in incompatible.missing_keys if _TEXT_PREFIX not in k]


# --------------------------------------------------------------------------- GLIM


class GLIM(PretrainedMixin, nn.Module):
    """GLIM: sentence EEG -> prefix for a frozen T5 -> text; EEG-text retrieval.

    Parameters
    ----------
    config : GLIMConfig
        Architecture; :meth:`GLIMConfig.tiny` for the toy tier.

    Attributes
    ----------
    input_mean, input_std : Tensor of shape (len(config.subjects) + 1, n_channels)
        Per-channel input statistics, applied as ``(x - mean) / std`` before anything else (row 0:
        no or an unknown subject; row ``i + 1``: ``config.subjects[i]``). Identity until
        :meth:`set_input_scaling`.

    Examples
    --------
    >>> import numpy as np
    >>> model = GLIM(GLIMConfig.tiny(n_channels=7))
    >>> texts = model.generate(np.zeros((2, 7, 50), dtype="float32"), lengths=[50, 30], max_new_tokens=3)
    >>> len(texts)
    2
    """

    config_class = GLIMConfig
    input_mean: torch.Tensor
    input_std: torch.Tensor

    def __init__(self, config: GLIMConfig | None = None) -> None:
        super().__init__()
        self.config = c = config if config is not None else GLIMConfig()
        self.text_model, self.tokenizer = _load_text_model(c)
        d_text = int(self.text_model.config.d_model)
        self.patch_embed = nn.Linear(c.n_channels * c.patch_size, c.d_model)
        self.pos = nn.Parameter(torch.randn(c.n_tokens, c.d_model) * 0.02)
        self.task_embed = nn.Embedding(len(c.tasks) + 1, c.d_model)
        self.dataset_embed = nn.Embedding(len(c.datasets) + 1, c.d_model)
        self.subject_embed = nn.Embedding(len(c.subjects) + 1, c.d_model)
        self.in_blocks = nn.ModuleList(_Block(c.d_model, c.n_heads, c.d_ff, c.dropout) for _ in range(c.n_in_blocks))
        self.latent_queries = nn.Parameter(torch.randn(c.n_latent, c.d_model) * 0.02)
        self.compress = _Block(c.d_model, c.n_heads, c.d_ff, c.dropout, d_kv=c.d_model)
        self.out_blocks = nn.ModuleList(_Block(c.d_model, c.n_heads, c.d_ff, c.dropout) for _ in range(c.n_out_blocks))
        self.latent_norm = nn.LayerNorm(c.d_model)
        text_heads = int(self.text_model.config.num_heads) if d_text % int(self.text_model.config.num_heads) == 0 else 1
        self.prefix_queries = nn.Parameter(torch.randn(c.n_prefix, d_text) * 0.02)
        self.aligner = _Block(d_text, text_heads, 2 * d_text, c.dropout, d_kv=c.d_model)
        self.prefix_norm = nn.LayerNorm(d_text)
        self.eeg_proj = nn.Linear(d_text, c.embed_dim)
        self.text_proj = nn.Linear(d_text, c.embed_dim)
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(c.logit_scale_init)))
        if c.text_model is not None and c.text_frozen:  # frozen hub weights are reloaded from the hub id
            self.register_state_dict_post_hook(_drop_text_keys)
            self.register_load_state_dict_post_hook(_ignore_missing_text_keys)
        n_rows = len(c.subjects) + 1
        self.register_buffer("input_mean", torch.zeros(n_rows, c.n_channels), persistent=c.input_scaling)
        self.register_buffer("input_std", torch.ones(n_rows, c.n_channels), persistent=c.input_scaling)

    @torch.no_grad()
    def set_input_scaling(self, mean: Any, std: Any, subject: str | None = None) -> GLIM:
        """Set the per-channel statistics the model scales its raw inputs with: ``(x - mean) / std``.

        They become part of the model (saved by ``save_pretrained``), so every method taking EEG
        takes raw data; zero padding (beyond each sentence's length) stays zero.

        Parameters
        ----------
        mean, std : array-like of shape (n_channels,)
            Per-channel mean and standard deviation over the valid samples of training sentences,
            in the model's (padded) channel order; ``std`` must be positive (use mean 0 and std 1
            for a zero-padded channel).
        subject : str or None
            The subject (of ``config.subjects``) whose statistics these are. ``None`` sets every
            row: the default for trials of no or an unknown subject and for every known subject
            (set it first, then the known subjects one by one).

        Returns
        -------
        self : GLIM
        """
        c = self.config
        rows = slice(None) if subject is None else int(self.prompt_index("subject", str(subject), 1)[0])
        store_channel_scaling(self, mean, std, rows, c.n_channels,
                              hint="Compute it per channel over the valid samples of the sentences, "
                                   "in the model's (padded) channel order")
        if not c.input_scaling:  # the checkpoint now holds the statistics
            self.config = replace(c, input_scaling=True)
        return self

    def train(self, mode: bool = True) -> GLIM:
        """Set training mode; a frozen text model always stays in eval mode."""
        super().train(mode)
        self.text_model.train(mode and not self.config.text_frozen)
        return self

    # ---- tensors

    def _prompt_ids(self, batch: dict[str, Any], n: int, device: torch.device) -> list[torch.Tensor]:
        out = []
        for key in ("task", "dataset", "subject"):
            v = batch.get(key)
            if v is None:
                out.append(torch.zeros(n, dtype=torch.long, device=device))
            elif isinstance(v, torch.Tensor):
                out.append(v.long().to(device).expand(n) if v.ndim == 0 else v.long().to(device))
            else:
                out.append(torch.from_numpy(self.prompt_index(key, v, n)).to(device))
        return out

    def encode_eeg(self, x: torch.Tensor, lengths: torch.Tensor, prompts: Sequence[torch.Tensor]) -> torch.Tensor:
        """EEG latents.

        Parameters
        ----------
        x : Tensor of shape (batch, n_channels, max_times)
            Raw, zero-padded sentence EEG: the model's input scaling (the row of each trial's
            subject) is applied first, and samples beyond ``lengths`` are set to zero.
        lengths : LongTensor of shape (batch,)
            Valid samples per sentence.
        prompts : three LongTensors of shape (batch,)
            Task, dataset and subject indices (0 = unknown).

        Returns
        -------
        latents : Tensor of shape (batch, n_latent, d_model)
        """
        c = self.config
        b = x.shape[0]
        sub = prompts[2].to(x.device)
        valid = torch.arange(x.shape[-1], device=x.device)[None] < lengths.to(x.device)[:, None]  # (B, T)
        x = torch.where(valid[:, None], (x.float() - self.input_mean[sub][:, :, None]) / self.input_std[sub][:, :, None],
                        0.0)
        pad = c.n_tokens * c.patch_size - x.shape[-1]
        if pad:
            x = F.pad(x, (0, pad))
        tok = x.float().view(b, c.n_channels, c.n_tokens, c.patch_size).permute(0, 2, 1, 3).flatten(2)
        h = self.patch_embed(tok) + self.pos
        starts = torch.arange(c.n_tokens, device=x.device) * c.patch_size
        mask = starts[None] < lengths.to(x.device)[:, None]
        prompt = torch.stack([self.task_embed(prompts[0]), self.dataset_embed(prompts[1]),
                              self.subject_embed(prompts[2])], dim=1)
        h = torch.cat([prompt, h], dim=1)
        mask = torch.cat([torch.ones(b, 3, dtype=torch.bool, device=x.device), mask], dim=1)
        for block in self.in_blocks:
            h = block(h, key_mask=mask)
        z = self.compress(self.latent_queries.expand(b, -1, -1), h, mask)
        for block in self.out_blocks:
            z = block(z)
        return self.latent_norm(z)

    def prefix(self, latents: torch.Tensor) -> torch.Tensor:
        """Aligner: (batch, n_latent, d_model) -> T5 encoder states (batch, n_prefix, d_text)."""
        q = self.prefix_queries.expand(len(latents), -1, -1)
        return self.prefix_norm(self.aligner(q, latents))

    def embed_text_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Text side of the contrastive space: ``text_proj`` of the pooled frozen T5-encoder states.

        Returns
        -------
        emb : Tensor of shape (batch, embed_dim)
        """
        with torch.no_grad():
            h = self.text_model.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            m = attention_mask[..., None].to(h.dtype)
            pooled = ((h * m).sum(1) / m.sum(1).clamp(min=1)).float()
        return self.text_proj(pooled)

    def embed_prefix(self, prefix: torch.Tensor) -> torch.Tensor:
        """EEG side of the contrastive space: ``eeg_proj`` of the mean aligner output, (batch, embed_dim)."""
        return self.eeg_proj(prefix.float().mean(1))

    @property
    def logit_scale(self) -> torch.Tensor:
        """Learnable contrastive scale ``exp(log_logit_scale)``, clamped at 100."""
        return self.log_logit_scale.clamp(max=math.log(100.0)).exp()

    def training_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        """One training step for :class:`neurodecode.train.Trainer` (teacher forcing for the LM term).

        Parameters
        ----------
        batch : dict
            ``"x"``: (batch, n_channels, max_times) raw (scaled by the model); ``"lengths"``: (batch,);
            ``"input_ids"``, ``"attention_mask"``: (batch, n_text_tokens) from :meth:`tokenize`;
            optional ``"task"``, ``"dataset"``, ``"subject"``: (batch,) prompt indices (or id strings).
        step : int
            Global step (unused).

        Returns
        -------
        out : dict
            ``"loss"``, ``"loss_contrastive"``, ``"loss_lm"``.
        """
        x, ids, am = batch["x"], batch["input_ids"].long(), batch["attention_mask"].long()
        if x.shape[0] < 2:
            raise ValidationError(format_error("batch", "at least 2 sentences (contrastive loss)",
                                               f"{x.shape[0]} sentence(s)", "Use a larger batch_size"))
        lengths = batch.get("lengths")
        if lengths is None:
            lengths = torch.full((len(x),), x.shape[-1], device=x.device)
        z = self.encode_eeg(x, lengths, self._prompt_ids(batch, len(x), x.device))
        prefix = self.prefix(z)
        text = self.embed_text_tokens(ids, am)
        loss_c = clip_loss(self.embed_prefix(prefix), text, self.logit_scale)
        from transformers.modeling_outputs import BaseModelOutput

        labels = ids.masked_fill(am == 0, -100)
        t5_dtype = next(self.text_model.parameters()).dtype
        out = self.text_model(encoder_outputs=BaseModelOutput(last_hidden_state=prefix.to(t5_dtype)), labels=labels)
        loss_lm = out.loss.float()
        w = self.config.contrastive_weight
        return {"loss": w * loss_c + (1 - w) * loss_lm, "loss_contrastive": loss_c.detach(),
                "loss_lm": loss_lm.detach()}

    # ---- NumPy API

    def prompt_index(self, kind: str, values: Any, n: int) -> np.ndarray:
        """Indices of task / dataset / subject ids (a single id or one per trial); unknown ids raise."""
        vocab = {"task": self.config.tasks, "dataset": self.config.datasets, "subject": self.config.subjects}[kind]
        vals = np.full(n, values, dtype=object) if isinstance(values, str) else np.asarray(values, dtype=object)
        if len(vals) != n:
            raise ShapeMismatchError(format_error(kind, f"one id per trial ({n})", f"{len(vals)} ids"))
        lookup = {s: i + 1 for i, s in enumerate(vocab)}
        unknown = sorted({str(v) for v in vals} - set(lookup))
        if unknown:
            raise ValidationError(format_error(kind, "one of " + ", ".join(map(repr, vocab)), ", ".join(map(repr, unknown)),
                                               f"Pass {kind}=None for the shared 'unknown' prompt, or list it in "
                                               f"GLIMConfig.{kind}s when training"))
        return np.array([lookup[str(v)] for v in vals], dtype=np.int64)

    def tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Target token ids for training (padded/truncated to ``max_text_len``, with EOS).

        Returns
        -------
        tokens : dict
            ``"input_ids"`` and ``"attention_mask"``, int64 arrays of shape (n_texts, max_text_len).
        """
        if isinstance(texts, str) or len(texts) == 0:
            raise ValidationError(format_error("texts", "a non-empty list of sentences", texts))
        enc = self.tokenizer([str(t) for t in texts], padding="max_length", truncation=True,
                             max_length=self.config.max_text_len, return_tensors="np")
        return {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}

    def check_input(self, X: Any, lengths: Any = None, mask: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Validate padded sentence EEG and return ``(X, lengths)``.

        Parameters
        ----------
        X : array-like of shape (n_sentences, n_channels, n_times)
            ``n_times <= max_times``; shorter inputs are zero-padded.
        lengths : array-like of int, shape (n_sentences,) or None
            Valid samples per sentence.
        mask : array-like of bool, shape (n_sentences, n_times) or None
            Valid samples (alternative to ``lengths``; must be a prefix mask).

        Returns
        -------
        X : ndarray of float32, shape (n_sentences, n_channels, max_times)
        lengths : ndarray of int64, shape (n_sentences,)
        """
        c = self.config
        X = check_array(X, "X", ndim=3, dtype="float")
        if X.shape[1] != c.n_channels:
            raise ShapeMismatchError(format_error(
                "X", f"{c.n_channels} channels on axis 1 (the model's padded montage)", X,
                f"Zero-pad the channels to {c.n_channels} in the model's order, and check the axes are "
                "(sentences, channels, times)"))
        limit = f"at most {c.max_times} samples ({c.max_times / c.sfreq:g} s at {c.sfreq:g} Hz)"
        fix = (f"Drop sentences longer than {c.max_times / c.sfreq:g} s (as GLIM does), or resample to "
               f"{c.sfreq:g} Hz; a model with a larger max_times needs retraining")
        if X.shape[2] > c.max_times:
            raise ShapeMismatchError(format_error("X", limit + " on axis 2", X, fix))
        if mask is not None:
            m = check_array(mask, "mask", ndim=2, dtype=bool)
            if m.shape != (X.shape[0], X.shape[2]):
                raise ShapeMismatchError(format_error("mask", f"shape {(X.shape[0], X.shape[2])}", m))
            lengths = m.sum(1)
            if np.any(m[:, : m.shape[1]] != (np.arange(m.shape[1])[None] < lengths[:, None])):
                raise ValidationError(format_error("mask", "True on a prefix of each row (valid, then padding)", m,
                                                   "Pass lengths instead, or move the valid samples first"))
        if lengths is None:
            lengths = np.full(len(X), X.shape[2])
        lengths = check_array(lengths, "lengths", ndim=1, dtype=np.int64)
        if len(lengths) != len(X):
            raise ShapeMismatchError(format_error("lengths", f"{len(X)} values (one per sentence)", lengths))
        if np.any(lengths > c.max_times):
            bad = np.flatnonzero(lengths > c.max_times)[:5].tolist()
            raise ShapeMismatchError(format_error("lengths", limit, f"longer sentences at rows {bad}", fix))
        if np.any(lengths < 1):
            bad = np.flatnonzero(lengths < 1)[:5].tolist()
            raise ValidationError(format_error("lengths", "at least one valid sample per sentence",
                                               f"empty sentences at rows {bad}", "Drop empty trials"))
        if X.shape[2] < c.max_times:
            X = np.pad(X, ((0, 0), (0, 0), (0, c.max_times - X.shape[2])))
        return np.ascontiguousarray(X, dtype=np.float32), lengths

    def _device(self) -> torch.device:
        return self.prefix_queries.device

    @torch.inference_mode()
    def _prefixes(self, X: Any, lengths: Any, mask: Any, prompts: dict[str, Any], batch_size: int) -> torch.Tensor:
        X, lens = self.check_input(X, lengths, mask)
        n, dev = len(X), self._device()
        idx = {k: (self.prompt_index(k, v, n) if v is not None else np.zeros(n, np.int64)) for k, v in prompts.items()}
        out = []
        for s in range(0, n, batch_size):
            sl = slice(s, s + batch_size)
            p = [torch.from_numpy(idx[k][sl]).to(dev) for k in ("task", "dataset", "subject")]
            z = self.encode_eeg(torch.from_numpy(X[sl]).to(dev), torch.from_numpy(lens[sl]).to(dev), p)
            out.append(self.prefix(z))
        return torch.cat(out)

    def embed_eeg(self, X: Any, lengths: Any = None, *, mask: Any = None, task: Any = None, dataset: Any = None,
                  subject: Any = None, batch_size: int = 64) -> np.ndarray:
        """EEG embeddings in the shared EEG-text space (for retrieval), shape (n_sentences, embed_dim).

        ``X`` is raw sentence EEG (the model applies its input scaling), as in :meth:`generate`.
        """
        was = self.training
        self.eval()
        pre = self._prefixes(X, lengths, mask, {"task": task, "dataset": dataset, "subject": subject}, batch_size)
        self.train(was)
        with torch.inference_mode():
            return self.embed_prefix(pre).cpu().numpy()

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Sentence embeddings in the shared EEG-text space, shape (n_texts, embed_dim)."""
        tok = self.tokenize(texts)
        dev = self._device()
        out = []
        for s in range(0, len(texts), batch_size):
            ids = torch.from_numpy(tok["input_ids"][s:s + batch_size]).to(dev)
            am = torch.from_numpy(tok["attention_mask"][s:s + batch_size]).to(dev)
            out.append(self.embed_text_tokens(ids, am).cpu().numpy())
        return np.concatenate(out)

    def similarity(self, X: Any, texts: Sequence[str], lengths: Any = None, **kwargs: Any) -> np.ndarray:
        """Cosine similarity of each sentence EEG with each text, shape (n_sentences, n_texts)."""
        e = self.embed_eeg(X, lengths, **kwargs)
        t = self.embed_texts(texts)
        e /= np.linalg.norm(e, axis=1, keepdims=True) + 1e-12
        t /= np.linalg.norm(t, axis=1, keepdims=True) + 1e-12
        return np.asarray(e @ t.T)

    def retrieve(self, X: Any, candidate_texts: Sequence[str], lengths: Any = None, **kwargs: Any) -> np.ndarray:
        """EEG-to-text retrieval.

        Parameters
        ----------
        X : array-like of shape (n_sentences, n_channels, n_times)
        candidate_texts : sequence of str, length n_candidates
        lengths : array-like of int, shape (n_sentences,) or None
        **kwargs
            ``mask``, ``task``, ``dataset``, ``subject``, ``batch_size``.

        Returns
        -------
        ranking : ndarray of int, shape (n_sentences, n_candidates)
            Candidate indices, most similar first (``ranking[i, 0]`` is the top-1 for trial i).
        """
        sim = self.similarity(X, candidate_texts, lengths, **kwargs)
        return np.argsort(-sim, axis=1, kind="stable")

    def classify(self, X: Any, label_sentences: Sequence[str], lengths: Any = None, **kwargs: Any) -> np.ndarray:
        """Zero-shot classification: index of the most similar label sentence, shape (n_sentences,).

        ``label_sentences`` describe each class, e.g. ``["This sentence is positive.",
        "This sentence is negative.", "This sentence is neutral."]``.
        """
        return self.retrieve(X, label_sentences, lengths, **kwargs)[:, 0]

    def generate(self, X: Any, lengths: Any = None, *, mask: Any = None, task: Any = None, dataset: Any = None,
                 subject: Any = None, max_new_tokens: int | None = None, num_beams: int = 1,
                 batch_size: int = 64, **generate_kwargs: Any) -> list[str]:
        """Decode sentences from EEG alone (no teacher forcing: the T5 decoder sees only its own tokens).

        Parameters
        ----------
        X : array-like of shape (n_sentences, n_channels, n_times)
            Raw sentence EEG (the model applies its input scaling).
        lengths : array-like of int, shape (n_sentences,) or None
        mask : array-like of bool, shape (n_sentences, n_times) or None
        task, dataset, subject : str, sequence of str or None
            Prompt ids (None = unknown).
        max_new_tokens : int or None
            Defaults to ``max_text_len``.
        num_beams : int
            1 = greedy decoding.
        batch_size : int
            Sentences per pass.
        **generate_kwargs
            Passed to ``transformers`` ``generate`` (e.g. ``repetition_penalty``).

        Returns
        -------
        texts : list of str, length n_sentences
        """
        from transformers.modeling_outputs import BaseModelOutput

        was = self.training
        self.eval()
        pre = self._prefixes(X, lengths, mask, {"task": task, "dataset": dataset, "subject": subject}, batch_size)
        t5_dtype = next(self.text_model.parameters()).dtype
        texts: list[str] = []
        with torch.inference_mode():
            for s in range(0, len(pre), batch_size):
                p = pre[s:s + batch_size].to(t5_dtype)
                ids = self.text_model.generate(
                    encoder_outputs=BaseModelOutput(last_hidden_state=p),
                    attention_mask=torch.ones(p.shape[:2], dtype=torch.long, device=p.device),
                    max_new_tokens=max_new_tokens or self.config.max_text_len, num_beams=num_beams,
                    do_sample=False, **generate_kwargs)
                texts.extend(self.tokenizer.batch_decode(ids, skip_special_tokens=True))
        self.train(was)
        return texts

    def predict_latents(self, X: Any, subject: Any = None, **kwargs: Any) -> dict[str, np.ndarray]:
        """``{"text_embeds": embed_eeg(X, subject=subject, **kwargs)}``: EEG embeddings in the T5 text space."""
        return {"text_embeds": self.embed_eeg(X, subject=subject, **kwargs)}
