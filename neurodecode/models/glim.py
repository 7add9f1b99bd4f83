"""GLIM: sentence-level EEG -> text through a frozen T5 (ZuCo, 2025).

One self-contained file a reader can hold against the reference code (justin-xzliu/GLIM @f812f84,
``model/glim.py``, ``model/modules.py``, ``train.py``; read, not copied):

1. **Input**: sentence EEG at 128 Hz, zero-padded to ``(n_channels=128, max_times=1280)`` (10 s)
   with the valid length of each trial. Each time step is a token of ``n_channels`` values (no
   input projection: the input blocks run at width ``n_channels``), plus fixed sinusoidal
   positions (``[sin(t w_k), cos(t w_k)]``, ``w_k = 10000^(-k / (n_channels / 2))``).
2. **Prompts**: three embedding tables (task / dataset / subject, row 0 = unknown: 3 / 3 / 31
   rows at ZuCo size) at width ``n_channels``; the prompt is their sum weighted by a learnable
   ``sigma`` (initialised at ``rows_k / sum(rows)``). Training replaces each kind's id by 0 with
   probability ``prompt_dropout`` (reference: ``(0, 1, 1)``: dataset and subject always unknown);
   a kind with probability 1 uses row 0 at inference too.
3. **Encoder**: ``n_in_blocks`` (6) DiT-style adaptive-LayerNorm blocks over the time steps (the
   prompt gives shift / scale / gate of attention and MLP, zero-initialised, and, with
   ``temporal_modulate``, a per-time-step scale and shift of the input); Linear ``n_channels ->
   d_model`` (256) and LayerNorm; ``n_out_blocks`` (6) decoder blocks in which ``n_latent`` (96)
   learned queries run causal self-attention then cross-attention into the (masked) time steps;
   LayerNorm. Dropout 0, GELU (tanh) MLPs of ratio 4, LayerNorm eps 1e-6, 8 heads everywhere.
4. **Aligner**: Linear ``d_model -> d_text`` per latent gives the ``n_latent x d_text`` (96 x 1024)
   *encoder hidden states* of the frozen T5: its decoder is conditioned through ``encoder_outputs``
   (the T5 encoder is not run on EEG).
5. **Loss**: ``0.5 x`` contrastive + ``0.5 x`` the T5 decoder's LM loss on the target (teacher forcing,
   training only). Contrastive: a learned query attention-pools (8 heads) the EEG states into one
   vector; another learned query pools the frozen T5 encoding of ``"To English: <sentence>"``
   (``text_template``, the raw sentence, at most ``max_source_len`` = 96 tokens); cosine logits
   WITHOUT temperature, symmetric cross-entropy. Paraphrases are extra training rows with the same
   EEG and source sentence.
6. **Inference without teacher forcing**: :meth:`GLIM.generate` decodes from the EEG states alone
   (beam search with ``num_beams`` = 2, at most ``max_text_len`` = 64 tokens); :meth:`GLIM.retrieve`
   ranks candidate sentences; :meth:`GLIM.classify` compares with label sentences (zero-shot).

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

__all__ = ["GLIMConfig", "GLIM", "sincos_positions"]

_TEXT_PREFIX = "text_model."
#: The tiny ByT5-style T5 (byte vocabulary of ByT5Tokenizer: 256 bytes + 3 specials + 125 extra ids).
_TINY_T5: dict[str, Any] = dict(vocab_size=384, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_decoder_layers=1,
                                num_heads=4, dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
#: Fields of the earlier (patch-token) GLIM layout, with what replaced them.
_REMOVED = {"patch_size": "each time step is a token (no patches)",
            "d_ff": "mlp_ratio (4: feed-forward 4 x width)",
            "n_prefix": "n_latent (the 96 latents are the T5 encoder states)",
            "embed_dim": "the T5 width (the contrastive space is the text model's d_model)",
            "logit_scale_init": "nothing: the contrastive logits are cosines without temperature"}


@dataclass
class GLIMConfig:
    """Architecture and loss settings of :class:`GLIM` (defaults: the reference's ``train.py``, real size).

    Parameters
    ----------
    n_channels : int
        Padded channels per time step (128) = the width of the input blocks (even).
    max_times : int
        Padded samples per sentence (1280) = the length of the position table and of the temporal
        modulation.
    sfreq : float
        Sampling rate (128 Hz); ``max_times / sfreq`` is the longest sentence (10 s).
    d_model : int
        Width of the decoder blocks and latents (256).
    n_heads : int
        Heads of every attention (8): input blocks, decoder blocks, both pooling heads.
    mlp_ratio : int
        Feed-forward width over block width (4).
    dropout : float
        Attention and MLP dropout (0).
    n_in_blocks, n_out_blocks : int
        Adaptive-LayerNorm input blocks and causal decoder blocks (6, 6).
    n_latent : int
        Learned queries = latents = length of the T5 encoder states (96).
    temporal_modulate : bool
        The prompt also scales and shifts each time step in every input block (True).
    causal : bool
        Causal self-attention among the latent queries (True).
    tasks, datasets, subjects : list of str
        Prompt vocabularies (row 0 of each table is "unknown"): ``["NR", "TSR"]`` (ZuCo's SR and
        NR merged into NR, see ``task_aliases``), ``["zuco1", "zuco2"]``, the subject ids.
    task_aliases : dict of str to str
        Task ids read as another (``{"SR": "NR"}``: the reference merges sentiment and normal reading).
    prompt_dropout : list of float
        Probability per kind (task, dataset, subject) of replacing the id by 0 in training; 1.0 also
        uses row 0 at inference (reference: ``[0.0, 1.0, 1.0]``).
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
        Target tokens (LM labels) and the longest generation (64).
    max_source_len : int
        Tokens of the templated sentence on the text side of the contrastive loss (96).
    text_template : str
        Template of that sentence (``"To English: {}"``).
    contrastive_weight : float
        Weight of the contrastive term; the LM term gets ``1 - contrastive_weight`` (0.5).
    num_beams : int
        Beams of :meth:`GLIM.generate` by default (2).
    input_scaling : bool
        Whether the per-channel input statistics (``input_mean``, ``input_std``) are part of
        the checkpoint. :meth:`GLIM.set_input_scaling` turns it on. ``False`` (the default, and
        what checkpoints saved before input scaling existed read as): identity scaling, not saved.
    """

    n_channels: int = 128
    max_times: int = 1280
    sfreq: float = 128.0
    d_model: int = 256
    n_heads: int = 8
    mlp_ratio: int = 4
    dropout: float = 0.0
    n_in_blocks: int = 6
    n_out_blocks: int = 6
    n_latent: int = 96
    temporal_modulate: bool = True
    causal: bool = True
    tasks: list[str] = field(default_factory=lambda: ["NR", "TSR"])
    task_aliases: dict[str, str] = field(default_factory=lambda: {"SR": "NR"})
    datasets: list[str] = field(default_factory=lambda: ["zuco1", "zuco2"])
    subjects: list[str] = field(default_factory=list)
    prompt_dropout: list[float] = field(default_factory=lambda: [0.0, 1.0, 1.0])
    text_model: str | None = "google/flan-t5-large"
    text_config: dict[str, Any] = field(default_factory=lambda: dict(_TINY_T5))
    freeze_text_model: bool | None = None
    text_dtype: str = "float32"
    max_text_len: int = 64
    max_source_len: int = 96
    text_template: str = "To English: {}"
    contrastive_weight: float = 0.5
    num_beams: int = 2
    input_scaling: bool = False

    def __post_init__(self) -> None:
        for name in ("n_channels", "max_times", "d_model", "n_heads", "n_latent", "mlp_ratio", "num_beams",
                     "max_text_len", "max_source_len"):
            if int(getattr(self, name)) < 1:
                raise ValidationError(format_error(name, "a positive integer", getattr(self, name)))
        for name in ("n_channels", "d_model"):
            if int(getattr(self, name)) % self.n_heads:
                raise ValidationError(format_error("n_heads", f"a divisor of {name}={getattr(self, name)}",
                                                   self.n_heads, "Every attention uses n_heads heads"))
        if self.n_channels % 2:
            raise ValidationError(format_error("n_channels", "an even number (sine and cosine positions)",
                                               self.n_channels, "Zero-pad one more channel"))
        if "{}" not in self.text_template:
            raise ValidationError(format_error("text_template", "a template with '{}' for the sentence",
                                               repr(self.text_template)))
        self.prompt_dropout = [float(p) for p in self.prompt_dropout]
        if len(self.prompt_dropout) != 3 or not all(0.0 <= p <= 1.0 for p in self.prompt_dropout):
            raise ValidationError(format_error("prompt_dropout", "three probabilities (task, dataset, subject)",
                                               self.prompt_dropout))
        if self.text_model in (False, "", "none", "tiny"):  # TOML has no null: false means the tiny T5
            self.text_model = None
        self.tasks, self.datasets, self.subjects = ([str(v) for v in vals] for vals in
                                                    (self.tasks, self.datasets, self.subjects))
        self.task_aliases = {str(k): str(v) for k, v in self.task_aliases.items()}

    @property
    def text_frozen(self) -> bool:
        """Whether the T5 is frozen (``freeze_text_model``, or by default: pretrained weights are)."""
        return bool(self.freeze_text_model) if self.freeze_text_model is not None else self.text_model is not None

    @property
    def prompt_rows(self) -> tuple[int, int, int]:
        """Rows of the task / dataset / subject tables (3 / 3 / 31 at ZuCo size)."""
        return len(self.tasks) + 1, len(self.datasets) + 1, len(self.subjects) + 1

    @classmethod
    def tiny(cls, **overrides: Any) -> GLIMConfig:
        """Same structure at toy width (distinct widths: 16 channels, 24 latent width, 32 T5), tiny T5."""
        base: dict[str, Any] = dict(
            n_channels=16, max_times=64, d_model=24, n_heads=4, mlp_ratio=2, n_in_blocks=1, n_out_blocks=2,
            n_latent=8, text_model=None, max_text_len=32, max_source_len=40,
        )
        base.update(overrides)
        return cls(**base)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GLIMConfig:
        """Build from a (JSON) dict or a recipe's ``[decoder]`` table (its ``name`` is skipped).

        Fields of the earlier patch-token layout (``patch_size``, ``d_ff``, ``n_prefix``, ``embed_dim``,
        ``logit_scale_init``) are refused with what replaced them: models saved with that layout cannot
        be loaded (retrain them).
        """
        old = sorted(set(d) & set(_REMOVED))
        if old:
            raise ValidationError(format_error(
                "config", "fields of GLIM's reference layout (time-step tokens, adaptive-LayerNorm prompts, causal "
                "decoder blocks)", "fields of the earlier patch-token layout: " + ", ".join(old),
                "Drop them (" + "; ".join(f"{k}: {_REMOVED[k]}" for k in old) + "). A model saved with that layout "
                "cannot be loaded: retrain it"))
        return dataclass_from_dict(cls, d, "decoder")


# --------------------------------------------------------------------------- blocks


def sincos_positions(n_positions: int, dim: int) -> np.ndarray:
    """Fixed positions ``[sin(p w_k), cos(p w_k)]``, ``w_k = 10000^(-k / (dim / 2))``, shape (n_positions, dim)."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2))
    ang = np.arange(n_positions, dtype=np.float64)[:, None] * omega[None]
    return np.concatenate([np.sin(ang), np.cos(ang)], axis=1)


class _Attention(nn.Module):
    """Multi-head attention (``nn.MultiheadAttention``'s parameters: q/k/v and output projections) via SDPA.

    ``key_mask`` (batch, n_keys) True = attend; ``causal`` masks later queries' keys.
    """

    def __init__(self, d: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)
        self.n_heads, self.dropout = n_heads, dropout

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, key_mask: torch.Tensor | None = None,
                causal: bool = False) -> torch.Tensor:
        b, nq, d = x.shape
        hd = d // self.n_heads
        k, v = self.kv(ctx).chunk(2, dim=-1)
        q, k, v = (t.reshape(b, -1, self.n_heads, hd).transpose(1, 2) for t in (self.q(x), k, v))
        mask = key_mask[:, None, None, :] if key_mask is not None else None
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, nq, d))


def _mlp(d: int, ratio: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d, ratio * d), nn.GELU(approximate="tanh"), nn.Dropout(dropout),
                         nn.Linear(ratio * d, d), nn.Dropout(dropout))


class _AdaLNBlock(nn.Module):
    """Input block: DiT adaptive LayerNorm from the prompt (zero-initialised), with per-time-step modulation.

    ``x <- x * (1 + a_t) + b_t`` (temporal modulation), then
    ``x <- x + g1 * Attn(LN(x) * (1 + s1) + h1)`` and ``x <- x + g2 * MLP(LN(x) * (1 + s2) + h2)``,
    where ``(h1, s1, g1, h2, s2, g2) = Linear(SiLU(p))`` and ``(a, b) = Linear(SiLU(p))`` over time.
    """

    def __init__(self, d: int, n_times: int, n_heads: int, ratio: int, dropout: float, temporal: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d, eps=1e-6, elementwise_affine=False)
        self.attn = _Attention(d, n_heads, dropout)
        self.norm2 = nn.LayerNorm(d, eps=1e-6, elementwise_affine=False)
        self.mlp = _mlp(d, ratio, dropout)
        self.ada = nn.Linear(d, 6 * d)
        self.t_ada = nn.Linear(d, 2 * n_times) if temporal else None
        for lin in (self.ada, self.t_ada):
            if lin is not None:
                nn.init.zeros_(lin.weight)
                nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        sp = F.silu(p)
        if self.t_ada is not None:
            scale, shift = self.t_ada(sp).chunk(2, dim=1)  # (B, T) each
            x = x * (1 + scale[..., None]) + shift[..., None]
        h1, s1, g1, h2, s2, g2 = (v[:, None] for v in self.ada(sp).chunk(6, dim=1))
        a = self.norm1(x) * (1 + s1) + h1
        x = x + g1 * self.attn(a, a, key_mask)
        return x + g2 * self.mlp(self.norm2(x) * (1 + s2) + h2)


class _DecoderBlock(nn.Module):
    """Latent block: (causal) self-attention of the queries, cross-attention into the time steps, MLP (pre-norm)."""

    def __init__(self, d: int, n_heads: int, ratio: int, dropout: float, causal: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d, eps=1e-6)
        self.self_attn = _Attention(d, n_heads, dropout)
        self.norm2 = nn.LayerNorm(d, eps=1e-6)
        self.cross_attn = _Attention(d, n_heads, dropout)
        self.norm3 = nn.LayerNorm(d, eps=1e-6)
        self.mlp = _mlp(d, ratio, dropout)
        self.causal = causal

    def forward(self, q: torch.Tensor, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        h = self.norm1(q)
        q = q + self.self_attn(h, h, causal=self.causal)
        q = q + self.cross_attn(self.norm2(q), x, key_mask)
        return q + self.mlp(self.norm3(q))


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
    """GLIM: sentence EEG -> encoder states of a frozen T5 -> text; EEG-text retrieval.

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
    positions : Tensor of shape (max_times, n_channels)
        The fixed sinusoidal positions (a buffer, not saved).

    Examples
    --------
    >>> import numpy as np
    >>> model = GLIM(GLIMConfig.tiny(n_channels=8))
    >>> texts = model.generate(np.zeros((2, 8, 50), dtype="float32"), lengths=[50, 30], max_new_tokens=3)
    >>> len(texts)
    2
    """

    config_class = GLIMConfig
    input_mean: torch.Tensor
    input_std: torch.Tensor
    positions: torch.Tensor

    def __init__(self, config: GLIMConfig | None = None) -> None:
        super().__init__()
        self.config = c = config if config is not None else GLIMConfig()
        self.text_model, self.tokenizer = _load_text_model(c)
        d_text = int(self.text_model.config.d_model)
        if d_text % c.n_heads:
            raise ValidationError(format_error("n_heads", f"a divisor of the text model's d_model={d_text}",
                                               c.n_heads, "The pooling heads run at the T5 width"))
        rows = c.prompt_rows
        tables = [nn.Embedding(r, c.n_channels) for r in rows]
        for table in tables:
            nn.init.normal_(table.weight, std=0.02)
        self.prompt_tables = nn.ModuleList(tables)
        self.prompt_sigma = nn.Parameter(torch.tensor([r / sum(rows) for r in rows], dtype=torch.float32))
        self.register_buffer("positions", torch.from_numpy(sincos_positions(c.max_times, c.n_channels)).float(),
                             persistent=False)
        self.in_blocks = nn.ModuleList(_AdaLNBlock(c.n_channels, c.max_times, c.n_heads, c.mlp_ratio, c.dropout,
                                                   c.temporal_modulate) for _ in range(c.n_in_blocks))
        self.x_proj = nn.Linear(c.n_channels, c.d_model)
        self.x_norm = nn.LayerNorm(c.d_model, eps=1e-6)
        self.queries = nn.Parameter(torch.randn(c.n_latent, c.d_model))
        self.out_blocks = nn.ModuleList(_DecoderBlock(c.d_model, c.n_heads, c.mlp_ratio, c.dropout, c.causal)
                                        for _ in range(c.n_out_blocks))
        self.latent_norm = nn.LayerNorm(c.d_model, eps=1e-6)
        self.to_text = nn.Linear(c.d_model, d_text)
        self.eeg_query = nn.Parameter(torch.randn(1, 1, d_text))
        self.text_query = nn.Parameter(torch.randn(1, 1, d_text))
        self.eeg_pool = _Attention(d_text, c.n_heads, c.dropout)
        self.text_pool = _Attention(d_text, c.n_heads, c.dropout)
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

    def prompt_embedding(self, prompts: Sequence[torch.Tensor]) -> torch.Tensor:
        """``sum_k sigma_k x table_k[id_k]`` over task, dataset, subject, shape (batch, n_channels).

        In training each kind's id becomes 0 with probability ``prompt_dropout[k]``; a kind with
        probability 1 always uses row 0.
        """
        p = 0.0
        for k, (table, ids) in enumerate(zip(self.prompt_tables, prompts)):
            prob = self.config.prompt_dropout[k]
            ids = ids.long().to(self.prompt_sigma.device)
            if prob >= 1.0:
                ids = torch.zeros_like(ids)
            elif self.training and prob > 0.0:
                ids = torch.where(torch.rand(ids.shape, device=ids.device) < prob, torch.zeros_like(ids), ids)
            p = p + self.prompt_sigma[k] * table(ids)
        assert isinstance(p, torch.Tensor)
        return p

    def encode_eeg(self, x: torch.Tensor, lengths: torch.Tensor, prompts: Sequence[torch.Tensor]) -> torch.Tensor:
        """EEG -> T5 encoder states.

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
        states : Tensor of shape (batch, n_latent, d_text)
            The ``encoder_outputs`` the T5 decoder reads.
        """
        c = self.config
        sub = prompts[2].to(x.device)
        t = x.shape[-1]
        valid = torch.arange(t, device=x.device)[None] < lengths.to(x.device)[:, None]  # (B, T)
        x = torch.where(valid[:, None], (x.float() - self.input_mean[sub][:, :, None]) / self.input_std[sub][:, :, None],
                        0.0)
        if t < c.max_times:
            x = F.pad(x, (0, c.max_times - t))
            valid = F.pad(valid, (0, c.max_times - t))
        h = x.transpose(1, 2) + self.positions  # (B, T, C): one token per time step
        p = self.prompt_embedding(prompts)
        for block in self.in_blocks:
            h = block(h, valid, p)
        h = self.x_norm(self.x_proj(h))
        q = self.queries.expand(len(h), -1, -1)
        for block in self.out_blocks:
            q = block(q, h, valid)
        return self.to_text(self.latent_norm(q))

    def pool_eeg(self, states: torch.Tensor) -> torch.Tensor:
        """EEG side of the contrastive space: learned-query attention pooling of the states, (batch, d_text)."""
        s = states.float()
        return self.eeg_pool(self.eeg_query.expand(len(s), -1, -1), s)[:, 0]

    def encode_text_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Frozen T5 encoder states of tokenised sentences, (batch, n_tokens, d_text), no gradient."""
        with torch.no_grad():
            return self.text_model.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def pool_text(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Text side of the contrastive space: learned-query attention pooling over the valid tokens, (batch, d_text)."""
        h = hidden.float()
        return self.text_pool(self.text_query.expand(len(h), -1, -1), h, attention_mask.bool())[:, 0]

    @staticmethod
    def contrastive_loss(eeg_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """Symmetric cross-entropy of the cosine similarities, no temperature (row i matches i)."""
        logits = F.normalize(eeg_emb.float(), dim=-1) @ F.normalize(text_emb.float(), dim=-1).T
        labels = torch.arange(len(logits), device=logits.device)
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))

    def training_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        """One training step for :class:`neurodecode.train.Trainer` (teacher forcing for the LM term).

        Parameters
        ----------
        batch : dict
            ``"x"``: (batch, n_channels, max_times) raw (scaled by the model); ``"lengths"``: (batch,);
            ``"input_ids"``, ``"attention_mask"``: (batch, max_text_len) LM targets and
            ``"source_ids"``, ``"source_mask"``: (batch, max_source_len) the templated sentences of the
            contrastive text side, all from :meth:`tokenize`; optional ``"task"``, ``"dataset"``,
            ``"subject"``: (batch,) prompt indices (or id strings).
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
        if "source_ids" not in batch:
            raise ValidationError(format_error(
                "batch", "'source_ids' and 'source_mask' (the templated sentence of the contrastive text side)",
                "a batch without them", "Build the token arrays with GLIM.tokenize(targets, sources=sentences)"))
        lengths = batch.get("lengths")
        if lengths is None:
            lengths = torch.full((len(x),), x.shape[-1], device=x.device)
        states = self.encode_eeg(x, lengths, self._prompt_ids(batch, len(x), x.device))
        src_ids, src_mask = batch["source_ids"].long(), batch["source_mask"].long()
        text = self.pool_text(self.encode_text_tokens(src_ids, src_mask), src_mask)
        loss_c = self.contrastive_loss(self.pool_eeg(states), text)
        from transformers.modeling_outputs import BaseModelOutput

        labels = ids.masked_fill(am == 0, -100)
        t5_dtype = next(self.text_model.parameters()).dtype
        out = self.text_model(encoder_outputs=BaseModelOutput(last_hidden_state=states.to(t5_dtype)), labels=labels)
        loss_lm = out.loss.float()
        w = self.config.contrastive_weight
        return {"loss": w * loss_c + (1 - w) * loss_lm, "loss_contrastive": loss_c.detach(),
                "loss_lm": loss_lm.detach()}

    # ---- NumPy API

    def prompt_index(self, kind: str, values: Any, n: int) -> np.ndarray:
        """Indices of task / dataset / subject ids (a single id or one per trial); unknown ids raise.

        Task ids pass through ``task_aliases`` first (``"SR"`` is ``"NR"``).
        """
        vocab = {"task": self.config.tasks, "dataset": self.config.datasets, "subject": self.config.subjects}[kind]
        vals = np.full(n, values, dtype=object) if isinstance(values, str) else np.asarray(values, dtype=object)
        if len(vals) != n:
            raise ShapeMismatchError(format_error(kind, f"one id per trial ({n})", f"{len(vals)} ids"))
        aliases = self.config.task_aliases if kind == "task" else {}
        vals = np.array([aliases.get(str(v), str(v)) for v in vals], dtype=object)
        lookup = {s: i + 1 for i, s in enumerate(vocab)}
        unknown = sorted({str(v) for v in vals} - set(lookup))
        if unknown:
            raise ValidationError(format_error(kind, "one of " + ", ".join(map(repr, vocab)), ", ".join(map(repr, unknown)),
                                               f"Pass {kind}=None for the shared 'unknown' prompt, or list it in "
                                               f"GLIMConfig.{kind}s when training"))
        return np.array([lookup[str(v)] for v in vals], dtype=np.int64)

    def _tok(self, texts: Sequence[str], max_length: int) -> dict[str, np.ndarray]:
        enc = self.tokenizer([str(t) for t in texts], padding="max_length", truncation=True,
                             max_length=max_length, return_tensors="np")
        return {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}

    def tokenize(self, texts: Sequence[str], sources: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Token arrays of a training set.

        Parameters
        ----------
        texts : sequence of str
            LM targets (the sentence or a paraphrase), padded/truncated to ``max_text_len`` with EOS.
        sources : sequence of str or None
            The sentence each row's EEG was recorded on (the reference's contrastive text side), put in
            ``text_template`` and tokenised to ``max_source_len``; ``None``: the targets themselves.

        Returns
        -------
        tokens : dict
            ``"input_ids"``, ``"attention_mask"`` (n_texts, max_text_len) and ``"source_ids"``,
            ``"source_mask"`` (n_texts, max_source_len), int64.
        """
        if isinstance(texts, str) or len(texts) == 0:
            raise ValidationError(format_error("texts", "a non-empty list of sentences", texts))
        src = list(texts) if sources is None else list(sources)
        if isinstance(sources, str) or len(src) != len(texts):
            raise ShapeMismatchError(format_error("sources", f"one sentence per target ({len(texts)})",
                                                  repr(sources) if isinstance(sources, str) else f"{len(src)}"))
        tgt = self._tok(texts, self.config.max_text_len)
        s = self._tok([self.config.text_template.format(str(t)) for t in src], self.config.max_source_len)
        return {**tgt, "source_ids": s["input_ids"], "source_mask": s["attention_mask"]}

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
        return self.queries.device

    @torch.inference_mode()
    def _states(self, X: Any, lengths: Any, mask: Any, prompts: dict[str, Any], batch_size: int) -> torch.Tensor:
        X, lens = self.check_input(X, lengths, mask)
        n, dev = len(X), self._device()
        idx = {k: (self.prompt_index(k, v, n) if v is not None else np.zeros(n, np.int64)) for k, v in prompts.items()}
        out = []
        for s in range(0, n, batch_size):
            sl = slice(s, s + batch_size)
            p = [torch.from_numpy(idx[k][sl]).to(dev) for k in ("task", "dataset", "subject")]
            out.append(self.encode_eeg(torch.from_numpy(X[sl]).to(dev), torch.from_numpy(lens[sl]).to(dev), p))
        return torch.cat(out)

    def embed_eeg(self, X: Any, lengths: Any = None, *, mask: Any = None, task: Any = None, dataset: Any = None,
                  subject: Any = None, batch_size: int = 64) -> np.ndarray:
        """EEG embeddings in the shared EEG-text space (for retrieval), shape (n_sentences, d_text).

        ``X`` is raw sentence EEG (the model applies its input scaling), as in :meth:`generate`.
        """
        was = self.training
        self.eval()
        states = self._states(X, lengths, mask, {"task": task, "dataset": dataset, "subject": subject}, batch_size)
        self.train(was)
        with torch.inference_mode():
            return self.pool_eeg(states).cpu().numpy()

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str], *, template: str | None = None, batch_size: int = 64) -> np.ndarray:
        """Sentence embeddings in the shared EEG-text space, shape (n_texts, d_text).

        Parameters
        ----------
        texts : sequence of str
        template : str or None
            ``None``: ``config.text_template`` (``"To English: {}"``, as the training text side);
            ``"{}"``: the sentences as given (the reference's zero-shot label sentences).
        batch_size : int
        """
        if isinstance(texts, str) or len(texts) == 0:
            raise ValidationError(format_error("texts", "a non-empty list of sentences", texts))
        tpl = self.config.text_template if template is None else template
        tok = self._tok([tpl.format(str(t)) for t in texts], self.config.max_source_len)
        dev = self._device()
        was = self.training
        self.eval()
        out = []
        for s in range(0, len(texts), batch_size):
            ids = torch.from_numpy(tok["input_ids"][s:s + batch_size]).to(dev)
            am = torch.from_numpy(tok["attention_mask"][s:s + batch_size]).to(dev)
            out.append(self.pool_text(self.encode_text_tokens(ids, am), am).cpu().numpy())
        self.train(was)
        return np.concatenate(out)

    def similarity(self, X: Any, texts: Sequence[str], lengths: Any = None, *, template: str | None = None,
                   **kwargs: Any) -> np.ndarray:
        """Cosine similarity of each sentence EEG with each text, shape (n_sentences, n_texts).

        ``template`` as in :meth:`embed_texts`; ``kwargs``: ``mask``, ``task``, ``dataset``, ``subject``,
        ``batch_size``.
        """
        e = self.embed_eeg(X, lengths, **kwargs)
        t = self.embed_texts(texts, template=template)
        e /= np.linalg.norm(e, axis=1, keepdims=True) + 1e-12
        t /= np.linalg.norm(t, axis=1, keepdims=True) + 1e-12
        return np.asarray(e @ t.T)

    def retrieve(self, X: Any, candidate_texts: Sequence[str], lengths: Any = None, **kwargs: Any) -> np.ndarray:
        """EEG-to-text retrieval.

        Parameters
        ----------
        X : array-like of shape (n_sentences, n_channels, n_times)
        candidate_texts : sequence of str, length n_candidates
            Sentences (put in ``text_template``, as in training).
        lengths : array-like of int, shape (n_sentences,) or None
        **kwargs
            ``template``, ``mask``, ``task``, ``dataset``, ``subject``, ``batch_size``.

        Returns
        -------
        ranking : ndarray of int, shape (n_sentences, n_candidates)
            Candidate indices, most similar first (``ranking[i, 0]`` is the top-1 for trial i).
        """
        sim = self.similarity(X, candidate_texts, lengths, **kwargs)
        return np.argsort(-sim, axis=1, kind="stable")

    def classify(self, X: Any, label_sentences: Sequence[str], lengths: Any = None, **kwargs: Any) -> np.ndarray:
        """Zero-shot classification: index of the most similar label sentence, shape (n_sentences,).

        ``label_sentences`` describe each class and are used as given (the reference's
        ``"Sentiment classification: It is <label>."``, no ``text_template``), e.g.
        ``["Sentiment classification: It is positive.", "Sentiment classification: It is negative."]``.
        """
        kwargs.setdefault("template", "{}")
        return self.retrieve(X, label_sentences, lengths, **kwargs)[:, 0]

    def generate(self, X: Any, lengths: Any = None, *, mask: Any = None, task: Any = None, dataset: Any = None,
                 subject: Any = None, max_new_tokens: int | None = None, num_beams: int | None = None,
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
            ``None``: the reference's ``max_length = max_text_len`` (64, the decoder start token included).
        num_beams : int or None
            Beam search width (``config.num_beams``, 2, when None; 1 = greedy).
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
        states = self._states(X, lengths, mask, {"task": task, "dataset": dataset, "subject": subject}, batch_size)
        t5_dtype = next(self.text_model.parameters()).dtype
        length = ({"max_new_tokens": int(max_new_tokens)} if max_new_tokens is not None
                  else {"max_length": self.config.max_text_len, "min_length": 0})
        beams = self.config.num_beams if num_beams is None else int(num_beams)
        texts: list[str] = []
        with torch.inference_mode():
            for s in range(0, len(states), batch_size):
                h = states[s:s + batch_size].to(t5_dtype)
                ids = self.text_model.generate(
                    encoder_outputs=BaseModelOutput(last_hidden_state=h),
                    attention_mask=torch.ones(h.shape[:2], dtype=torch.long, device=h.device),
                    num_beams=beams, do_sample=False, **length, **generate_kwargs)
                texts.extend(self.tokenizer.batch_decode(ids, skip_special_tokens=True))
        self.train(was)
        return texts

    def predict_latents(self, X: Any, subject: Any = None, **kwargs: Any) -> dict[str, np.ndarray]:
        """``{"text_embeds": embed_eeg(X, subject=subject, **kwargs)}``: pooled EEG embeddings in the text space."""
        return {"text_embeds": self.embed_eeg(X, subject=subject, **kwargs)}
