"""ATM: EEG/MEG -> CLIP image embedding (Li et al., NeurIPS 2024), and its diffusion prior.

One self-contained file a reader can hold against the paper:

1. **Channel-attention encoder.** Each channel is a token; its whole time series
   (``n_times`` samples) is embedded to ``d_model`` by one Linear; optional subject
   tokens are prepended; one post-norm transformer encoder layer (SDPA attention,
   GELU feed-forward) and a final LayerNorm; subject tokens are dropped again.
   With ``d_model = 250`` and 4 heads, 250 is not divisible by 4: like the reference
   implementation, each head has ``d_model // n_heads = 62`` dimensions, so the
   query/key/value projections map 250 -> 4 x 62 = 248 and the output projection
   maps 248 -> 250 (``attn_dim`` below).
2. **Temporal-spatial convolution** (ShallowNet-like) over the encoder output
   ``(channels, d_model)``: temporal conv (``n_filters`` x ``1 x 25``), average pool
   (``1 x 51``, stride 5), BatchNorm, ELU, spatial conv over all channels (``C x 1``),
   BatchNorm, ELU, Dropout, 1x1 conv, flatten (40 x 36 = 1440 for ``d_model = 250``).
3. **Projector**: Linear -> ``proj_dim`` (1024, ViT-H-14), residual
   GELU-Linear-Dropout(0.5), LayerNorm.
4. **Loss**: InfoNCE with a learnable logit scale (``exp(log_scale)``, initialised at
   1/0.07, clamped at 100) on ``0.99 x image + 0.01 x text`` targets.

Fusing the temporal conv and the pool. Convolution with a kernel ``w`` (length K,
stride 1) followed by average pooling (length P, stride S) is a composition of two
linear shift-invariant filters with no nonlinearity between them, so it equals ONE
convolution with kernel ``w * box_P / P`` (full convolution, length K + P - 1) and
stride S; the bias passes through the average unchanged. For 250 samples the
fused conv computes 36 outputs of length-75 dot products instead of 226 outputs of
length 25 plus a pool, and skips materialising the 226-long intermediate. The
parameters stay in the unfused form (``temporal.weight`` of shape
``(n_filters, 1, 1, K)``), so checkpoints do not depend on ``fuse_temporal_pool``.
With fusion on, the whole conv stack is also restructured for speed (same maths): the
strided fused conv runs in polyphase form (``pool_stride`` input phases, stride 1), the
spatial and 1x1 convs are matrix products, and batch norm runs on rows of filter
values (see ``ATM._conv_stack_gemm``). ``fuse_temporal_pool=False`` runs the reference
layers (conv, pool, convs) and is the form the tests compare against.

Input scaling (neurodecode's addition, outside the paper). Raw recordings are far from unit
scale (THINGS-MEG is in tesla, about 1e-13), so the model can hold per-channel statistics
(buffers ``input_mean`` and ``input_std`` of shape ``(n_rows, n_channels)``: one row per subject
token, row 0 the "unknown" one, or a single row without subject tokens) and applies ``(x - mean) / std`` at the start
of :meth:`ATM.forward`, which every path (``encode``, ``predict_latents``, ``training_step``)
goes through: a saved model takes RAW data. Set them with :meth:`ATM.set_input_scaling`; until
then they are the identity (0 and 1) and stay out of the checkpoint (``ATMConfig.input_scaling``
records whether they are in it, so checkpoints saved before scaling existed load as identity).

Training goes through the one trainer (:mod:`neurodecode.train`): the model
implements ``training_step(batch, step)`` with batches ``{"x", "image_embeds",
["text_embeds"], ["subject"]}``. Evaluation (k-way retrieval) lives in
:mod:`neurodecode.metrics`; :meth:`ATM.encode` gives the embeddings it needs.
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

from .._core.errors import MetadataMismatchError, ShapeMismatchError, ValidationError
from .._core.validation import check_array, check_option, dataclass_from_dict, format_error
from ..io.checkpoints import PretrainedMixin
from ._scaling import store_channel_scaling
from .losses import clip_loss

__all__ = ["ATMConfig", "ATM", "ATMPriorConfig", "ATMDiffusionPrior", "subject_splits", "fused_temporal_kernel"]


# --------------------------------------------------------------------------- config


@dataclass
class ATMConfig:
    """Architecture and loss settings of :class:`ATM` (defaults: THINGS-EEG2, real size).

    Parameters
    ----------
    n_channels, n_times : int
        Input shape per trial (THINGS-EEG2: 63 x 250; THINGS-MEG: 271 x 200).
    sfreq : float
        Sampling rate the model was trained at (Hz); inputs must match.
    d_model, n_heads, d_ff, dropout : int, int, int, float
        Channel-attention encoder (250, 4, 256, 0.25). Heads get ``d_model // n_heads``
        dimensions each.
    n_filters, temporal_kernel, pool_size, pool_stride : int
        Temporal-spatial conv (40, 25, 51, 5).
    conv_dropout, proj_dropout : float
        Dropout after the spatial conv and in the residual projector (0.5, 0.5).
    proj_dim : int
        Output (target embedding) dimension (1024 for ViT-H-14).
    subject_tokens : bool
        Prepend a learned token per subject (joint training). Subject ``None`` uses
        a shared "unknown subject" token (index 0).
    subjects : list of str
        Namespaced subject ids known to the model (order fixes the token index).
    ch_names : list of str or None
        Channel names in the model's order; checked against the ``ch_names`` callers pass.
    image_weight : float
        Weight of the image term; the text term gets ``1 - image_weight`` (0.99).
    logit_scale_init : float
        Initial logit scale (1 / 0.07).
    fuse_temporal_pool : bool
        Run the temporal conv and the average pool as one strided convolution.
    input_scaling : bool
        Whether the per-channel input statistics (``input_mean``, ``input_std``) are part of
        the checkpoint. :meth:`ATM.set_input_scaling` turns it on. ``False`` (the default, and
        what checkpoints saved before input scaling existed read as): identity scaling, not saved.
    """

    n_channels: int = 63
    n_times: int = 250
    sfreq: float = 250.0
    d_model: int = 250
    n_heads: int = 4
    d_ff: int = 256
    dropout: float = 0.25
    n_filters: int = 40
    temporal_kernel: int = 25
    pool_size: int = 51
    pool_stride: int = 5
    conv_dropout: float = 0.5
    proj_dim: int = 1024
    proj_dropout: float = 0.5
    subject_tokens: bool = False
    subjects: list[str] = field(default_factory=list)
    ch_names: list[str] | None = None
    image_weight: float = 0.99
    logit_scale_init: float = 1 / 0.07
    fuse_temporal_pool: bool = True
    input_scaling: bool = False

    def __post_init__(self) -> None:
        for name in ("n_channels", "n_times", "d_model", "n_heads", "n_filters", "proj_dim"):
            if int(getattr(self, name)) < 1:
                raise ValidationError(format_error(name, "a positive integer", getattr(self, name)))
        if self.d_model // self.n_heads < 1:
            raise ValidationError(format_error("n_heads", f"at most d_model={self.d_model}", self.n_heads))
        if self.n_conv_out < 1:
            raise ValidationError(format_error(
                "d_model", f">= temporal_kernel + pool_size - 1 = {self.temporal_kernel + self.pool_size - 1}",
                self.d_model, "The temporal conv and pool run along the embedded time axis; enlarge d_model"))
        if self.ch_names is not None and len(self.ch_names) != self.n_channels:
            raise ValidationError(format_error("ch_names", f"{self.n_channels} names (n_channels)",
                                               f"{len(self.ch_names)} names"))
        self.subjects = [str(s) for s in self.subjects]
        if self.ch_names is not None:
            self.ch_names = [str(c) for c in self.ch_names]

    @property
    def n_conv_out(self) -> int:
        """Time steps after the temporal conv and pool (36 for d_model 250)."""
        return (self.d_model - self.temporal_kernel + 1 - self.pool_size) // self.pool_stride + 1

    @property
    def flat_dim(self) -> int:
        """Flattened conv features (1440 for the defaults)."""
        return self.n_filters * self.n_conv_out

    @classmethod
    def tiny(cls, **overrides: Any) -> ATMConfig:
        """Same structure at toy width (random init, offline); ``overrides`` replace fields."""
        base: dict[str, Any] = dict(n_channels=17, n_times=40, sfreq=100.0, d_model=32, n_heads=2, d_ff=32,
                                    dropout=0.1, n_filters=8, temporal_kernel=5, pool_size=7, pool_stride=3,
                                    proj_dim=24)  # = clip-vit-h-14-tiny
        base.update(overrides)
        return cls(**base)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ATMConfig:
        """Build from a (JSON) dict or a recipe's ``[decoder]`` table (its ``name`` and ``prior`` are skipped)."""
        return dataclass_from_dict(cls, d, "decoder", ignore=("name", "prior"))


# --------------------------------------------------------------------------- building blocks


def fused_temporal_kernel(weight: torch.Tensor, pool_size: int) -> torch.Tensor:
    """Compose a temporal conv kernel with an average pool of length ``pool_size``.

    Parameters
    ----------
    weight : Tensor of shape (n_filters, 1, 1, K)
        Temporal conv kernel (cross-correlation, as torch convolutions are).

    Returns
    -------
    fused : Tensor of shape (n_filters, 1, 1, K + pool_size - 1)
        ``fused[j] = sum_{i, p: i + p = j} w[i] / pool_size``; convolving with it at the
        pool's stride equals conv (stride 1) then average pool.
    """
    f, _, _, k = weight.shape
    w = weight.reshape(f, 1, k)
    box = torch.full((1, 1, pool_size), 1.0 / pool_size, dtype=weight.dtype, device=weight.device)
    # full convolution of w with the (symmetric) box = cross-correlation with zero padding
    fused = F.conv1d(w, box, padding=pool_size - 1)
    return fused.reshape(f, 1, 1, k + pool_size - 1)


class _ChannelAttention(nn.Module):
    """Multi-head self-attention over channel tokens with ``n_heads * (d_model // n_heads)`` inner width."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        inner = self.head_dim * n_heads
        self.qkv = nn.Linear(d_model, 3 * inner)
        self.out = nn.Linear(inner, d_model)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, n, -1))


class _EncoderLayer(nn.Module):
    """Post-norm transformer encoder layer (attention, GELU feed-forward), as in iTransformer."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.attn = _ChannelAttention(d_model, n_heads, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model))
        self.norm2 = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.drop(self.attn(x)))
        return self.norm2(x + self.drop(self.ff(x)))


class _ResidualProjector(nn.Module):
    """Linear -> dim, then ``x + Dropout(Linear(GELU(x)))``, then LayerNorm."""

    def __init__(self, in_dim: int, dim: int, dropout: float) -> None:
        super().__init__()
        self.inp = nn.Linear(in_dim, dim)
        self.res = nn.Sequential(nn.GELU(), nn.Linear(dim, dim), nn.Dropout(dropout))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        return self.norm(x + self.res(x))


# --------------------------------------------------------------------------- ATM


class ATM(PretrainedMixin, nn.Module):
    """ATM EEG/MEG encoder: trials -> embeddings aligned with CLIP image embeddings.

    Parameters
    ----------
    config : ATMConfig
        Architecture; :meth:`ATMConfig.tiny` for the toy tier.

    Attributes
    ----------
    input_mean, input_std : Tensor of shape (n_rows, n_channels)
        Per-channel input statistics, applied as ``(x - mean) / std`` before anything else
        (row 0: trials of no or an unknown subject; row ``i + 1``: ``config.subjects[i]``, with
        subject tokens only). Identity until :meth:`set_input_scaling`.

    Examples
    --------
    >>> import numpy as np
    >>> model = ATM(ATMConfig.tiny(n_channels=7, n_times=9, d_model=24))
    >>> model.encode(np.zeros((3, 7, 9), dtype="float32")).shape
    (3, 24)
    >>> raw = np.random.default_rng(0).normal(5e-13, 2e-13, (4, 7, 9))  # e.g. MEG in tesla
    >>> _ = model.set_input_scaling(raw.mean(axis=(0, 2)), raw.std(axis=(0, 2)))
    >>> model.encode(raw).shape  # raw data in: the model scales it
    (4, 24)
    """

    config_class = ATMConfig
    input_mean: torch.Tensor
    input_std: torch.Tensor

    def __init__(self, config: ATMConfig | None = None) -> None:
        super().__init__()
        self.config = config = config if config is not None else ATMConfig()
        self.embed = nn.Linear(config.n_times, config.d_model)
        self.subject_embed = nn.Embedding(len(config.subjects) + 1, config.d_model) if config.subject_tokens else None
        self.embed_drop = nn.Dropout(config.dropout)
        self.encoder = _EncoderLayer(config.d_model, config.n_heads, config.d_ff, config.dropout)
        self.encoder_norm = nn.LayerNorm(config.d_model)
        f = config.n_filters
        self.temporal = nn.Conv2d(1, f, (1, config.temporal_kernel))
        self.bn1 = nn.BatchNorm2d(f)
        self.spatial = nn.Conv2d(f, f, (config.n_channels, 1))
        self.bn2 = nn.BatchNorm2d(f)
        self.conv_drop = nn.Dropout(config.conv_dropout)
        self.pointwise = nn.Conv2d(f, f, 1)
        self.projector = _ResidualProjector(config.flat_dim, config.proj_dim, config.proj_dropout)
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(config.logit_scale_init)))
        n_rows = len(config.subjects) + 1 if config.subject_tokens else 1
        self.register_buffer("input_mean", torch.zeros(n_rows, config.n_channels), persistent=config.input_scaling)
        self.register_buffer("input_std", torch.ones(n_rows, config.n_channels), persistent=config.input_scaling)

    # ---- input scaling

    @torch.no_grad()
    def set_input_scaling(self, mean: Any, std: Any, subject: str | None = None) -> ATM:
        """Set the per-channel statistics the model scales its raw inputs with: ``(x - mean) / std``.

        They become part of the model (saved by ``save_pretrained``), so ``encode`` and
        ``predict_latents`` take raw data, e.g. MEG in tesla.

        Parameters
        ----------
        mean, std : array-like of shape (n_channels,)
            Per-channel mean and standard deviation, in the model's channel order (e.g.
            ``X.mean(axis=(0, 2))`` and ``X.std(axis=(0, 2))`` of the training trials); ``std``
            must be positive (use 1 for a constant channel).
        subject : str or None
            With subject tokens, the subject whose statistics these are. ``None`` sets every row:
            the default for trials of no or an unknown subject and for every known subject (set
            it first, then the known subjects one by one).

        Returns
        -------
        self : ATM
        """
        c = self.config
        rows = slice(None) if subject is None else self._scaling_row(subject)
        store_channel_scaling(self, mean, std, rows, c.n_channels,
                              hint="Compute it per channel over trials and time, e.g. X.mean(axis=(0, 2)), "
                                   "in the model's channel order")
        if not c.input_scaling:  # the checkpoint now holds the statistics
            self.config = replace(c, input_scaling=True)
        return self

    def _scaling_row(self, subject: str) -> int:
        if self.subject_embed is None:
            raise ValidationError(format_error(
                "subject", "None (this model has no subject tokens: one set of statistics serves every trial)",
                repr(subject), "Pass subject=None, or build the model with subject_tokens=True and its subjects"))
        return int(self.subject_index(str(subject), 1)[0])

    def _scale_input(self, x: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        """``(x - input_mean[row]) / input_std[row]`` per trial; ``rows`` None uses row 0 for all."""
        if rows is None:
            return (x - self.input_mean[0][:, None]) / self.input_std[0][:, None]
        return (x - self.input_mean[rows][:, :, None]) / self.input_std[rows][:, :, None]

    # ---- forward pieces

    def _temporal_pool(self, h: torch.Tensor) -> torch.Tensor:
        c = self.config
        if c.fuse_temporal_pool:
            w = fused_temporal_kernel(self.temporal.weight, c.pool_size)
            return F.conv2d(h, w, self.temporal.bias, stride=(1, c.pool_stride))
        return F.avg_pool2d(self.temporal(h), (1, c.pool_size), (1, c.pool_stride))

    def forward(self, x: torch.Tensor, subject: torch.Tensor | None = None) -> torch.Tensor:
        """Embed a batch.

        Parameters
        ----------
        x : Tensor of shape (batch, n_channels, n_times)
            Raw trials: the model's input scaling is applied first.
        subject : LongTensor of shape (batch,) or None
            Token index per trial (0 = unknown, i + 1 = ``config.subjects[i]``); used only
            with ``subject_tokens`` (for the token and the row of the input statistics).

        Returns
        -------
        emb : Tensor of shape (batch, proj_dim)
        """
        idx = None
        if self.subject_embed is not None:
            idx = subject.long() if subject is not None else torch.zeros(len(x), dtype=torch.long, device=x.device)
        tokens = self.embed(self._scale_input(x, idx))  # (B, C, d_model)
        n_ch = tokens.shape[1]
        if idx is not None and self.subject_embed is not None:
            tokens = torch.cat([self.subject_embed(idx)[:, None], tokens], dim=1)
        h = self.encoder_norm(self.encoder(self.embed_drop(tokens)))[:, -n_ch:]
        if self.config.fuse_temporal_pool:
            h = self._conv_stack_gemm(h)
        else:
            h = self._temporal_pool(h[:, None])  # (B, F, C, T')
            h = F.elu(self.bn1(h))
            h = F.elu(self.bn2(self.spatial(h)))  # (B, F, 1, T')
            h = self.pointwise(self.conv_drop(h))
            h = h.flatten(2).transpose(1, 2).flatten(1)  # (B, T' * F), time-major like the reference
        return self.projector(h)

    def _conv_stack_gemm(self, h: torch.Tensor) -> torch.Tensor:
        """The temporal-spatial conv stack, restructured for speed (same maths and parameters as the convs).

        The fused temporal kernel (length ``L = K + P - 1``, stride ``S``) runs in polyphase
        form: ``h`` (B, C, D) is viewed as ``S`` interleaved phases of ``D / S`` samples, and the
        kernel as ``S`` phase kernels of ``ceil(L / S)`` taps, so the strided conv becomes a
        stride-1 conv with ``S`` input channels (no 15x window copy, no single-input-channel
        conv, whose backward is slow on CPU). The spatial conv (all channels x all filters) is
        one GEMM and the 1x1 conv a second. BatchNorm2d over filters equals batch norm over
        the filter axis of any layout. The result is flattened time-major like the
        reference's ``b e 1 w -> b (w e)``.
        """
        c = self.config
        b, n_ch, d = h.shape
        f, s = c.n_filters, c.pool_stride
        w = fused_temporal_kernel(self.temporal.weight, c.pool_size).reshape(f, -1)  # (F, L)
        taps = -(-w.shape[1] // s)
        w = F.pad(w, (0, taps * s - w.shape[1])).view(f, taps, s).transpose(1, 2)  # (F, S, taps)
        t_out = c.n_conv_out
        n_blocks = t_out - 1 + taps  # samples beyond D only meet the zero-padded taps
        need = n_blocks * s
        h = F.pad(h, (0, need - d)) if need > d else h[..., :need]
        x = h.reshape(b * n_ch, n_blocks, s).transpose(1, 2)  # (B*C, S, blocks)
        z = F.conv1d(x, w, self.temporal.bias).transpose(1, 2).reshape(-1, f)  # (B*C*T', F)
        z = F.elu(self._bn_rows(z, self.bn1))  # batch norm on rows: fast backward on CPU
        z = z.view(b, n_ch, t_out, f).transpose(1, 2).reshape(b * t_out, n_ch * f)  # (B*T', C*F)
        ws = self.spatial.weight.squeeze(-1).permute(2, 1, 0).reshape(n_ch * f, f)  # (C*F_in, F_out)
        z = F.elu(self._bn_rows(torch.addmm(self.spatial.bias, z, ws), self.bn2))  # (B*T', F)
        z = self.conv_drop(z)
        z = torch.addmm(self.pointwise.bias, z, self.pointwise.weight.reshape(f, f).t())
        return z.view(b, t_out * f)

    @staticmethod
    def _bn_rows(z: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
        """``bn`` (a BatchNorm2d over filters) applied to rows of filter values, shape (N, F)."""
        use_batch = bn.training or bn.running_mean is None
        return F.batch_norm(z, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                            use_batch, bn.momentum if bn.momentum is not None else 0.0, bn.eps)

    @property
    def logit_scale(self) -> torch.Tensor:
        """The learnable logit scale ``exp(log_logit_scale)``, clamped at 100."""
        return self.log_logit_scale.clamp(max=math.log(100.0)).exp()

    def loss(self, emb: torch.Tensor, image_embeds: torch.Tensor,
             text_embeds: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``image_weight x InfoNCE(emb, image) + (1 - image_weight) x InfoNCE(emb, text)``."""
        scale = self.logit_scale
        loss_img = clip_loss(emb, image_embeds, scale)
        out = {"loss_image": loss_img.detach(), "logit_scale": scale.detach()}
        if text_embeds is None:
            out["loss"] = loss_img
            return out
        loss_txt = clip_loss(emb, text_embeds, scale)
        w = self.config.image_weight
        out["loss_text"] = loss_txt.detach()
        out["loss"] = w * loss_img + (1 - w) * loss_txt
        return out

    def training_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        """One training step for :class:`neurodecode.train.Trainer`.

        Parameters
        ----------
        batch : dict
            ``"x"``: (batch, n_channels, n_times) raw trials (scaled by the model);
            ``"image_embeds"``: (batch, proj_dim);
            optional ``"text_embeds"``: (batch, proj_dim); optional ``"subject"``: (batch,)
            token indices (see :meth:`subject_index`), or subject id string(s).
        step : int
            Global step (unused).

        Returns
        -------
        out : dict of str to Tensor
            ``"loss"`` (to minimise), ``"loss_image"``, ``"loss_text"`` (when given), ``"logit_scale"``.
        """
        x = batch["x"]
        if x.shape[0] < 2:
            raise ValidationError(format_error("batch", "at least 2 trials (contrastive loss)", f"{x.shape[0]} trial(s)",
                                               "Use a larger batch_size or drop the last incomplete batch"))
        subject = batch.get("subject")
        if subject is not None and not isinstance(subject, torch.Tensor):  # ids (MultiSubjectBatches gives a str)
            subject = torch.from_numpy(self.subject_index(subject, len(x))).to(x.device)
        emb = self(x.float(), subject)
        return self.loss(emb, batch["image_embeds"], batch.get("text_embeds"))

    # ---- NumPy API

    def subject_index(self, subject: str | Sequence[str] | np.ndarray | None, n: int) -> np.ndarray:
        """Token index of each of ``n`` trials (0 = unknown / no subject tokens).

        Raises a :class:`ValidationError` listing the known subjects for an unknown id.
        """
        if subject is None or self.subject_embed is None:
            return np.zeros(n, dtype=np.int64)
        subs = np.full(n, subject, dtype=object) if isinstance(subject, str) else np.asarray(subject, dtype=object)
        if len(subs) != n:
            raise ShapeMismatchError(format_error("subject", f"one id per trial ({n})", f"{len(subs)} ids"))
        lookup = {s: i + 1 for i, s in enumerate(self.config.subjects)}
        unknown = sorted({str(s) for s in subs} - set(lookup))
        if unknown:
            raise ValidationError(format_error("subject", "one of " + ", ".join(map(repr, self.config.subjects)),
                                               ", ".join(map(repr, unknown)),
                                               "Pass subject=None for an unseen subject (shared token), or train "
                                               "with that subject listed in ATMConfig.subjects"))
        return np.array([lookup[str(s)] for s in subs], dtype=np.int64)

    def check_input(self, X: Any, *, ch_names: Sequence[str] | None = None,
                    sfreq: float | None = None) -> np.ndarray:
        """Validate trials against the model: channel set and order, window, sampling rate.

        Parameters
        ----------
        X : array-like of shape (n_trials, n_channels, n_times)
        ch_names : sequence of str or None
            Channel names of ``X`` (compared with ``config.ch_names`` when both exist).
        sfreq : float or None
            Sampling rate of ``X`` in Hz.

        Returns
        -------
        X : ndarray of float32, shape (n_trials, n_channels, n_times)
        """
        c = self.config
        X = check_array(X, "X", ndim=3, dtype="float")
        if sfreq is not None and not math.isclose(float(sfreq), c.sfreq, rel_tol=1e-6):
            raise MetadataMismatchError(format_error(
                "sfreq", f"{c.sfreq:g} Hz (the model's sampling rate)", f"{float(sfreq):g} Hz",
                f"Resample the data first, e.g. epochs.resample({c.sfreq:g}) in MNE"))
        if ch_names is not None and c.ch_names is not None:
            got, want = [str(n) for n in ch_names], c.ch_names
            missing = [n for n in want if n not in got]
            extra = [n for n in got if n not in want]
            if missing or extra:
                raise MetadataMismatchError(format_error(
                    "ch_names", f"the model's {len(want)} channels",
                    f"{len(got)} channels; missing: {missing or 'none'}; extra: {extra or 'none'}",
                    "Pick the model's channels, e.g. epochs.pick(model.config.ch_names)"))
            if got != want:
                first = next(i for i, (a, b) in enumerate(zip(got, want)) if a != b)
                raise MetadataMismatchError(format_error(
                    "ch_names", "the model's channel order", f"{got[first]!r} at position {first} where the model has "
                    f"{want[first]!r}", "Reorder the channels, e.g. epochs.reorder_channels(model.config.ch_names)"))
        if X.shape[1] != c.n_channels:
            raise ShapeMismatchError(format_error(
                "X", f"{c.n_channels} channels on axis 1 (the model's layout)", X,
                "Check the channel selection for this subject (pass ch_names to see which differ) "
                "and that axes are (trials, channels, times)"))
        if X.shape[2] != c.n_times:
            raise ShapeMismatchError(format_error(
                "X", f"{c.n_times} samples on axis 2 ({c.n_times / c.sfreq:g} s at {c.sfreq:g} Hz)", X,
                "Crop the epochs to the model's window (e.g. epochs.crop(0, ...)) and resample to its sfreq"))
        return np.ascontiguousarray(X, dtype=np.float32)

    @torch.inference_mode()
    def encode(self, X: Any, subject: str | Sequence[str] | None = None, *, ch_names: Sequence[str] | None = None,
               sfreq: float | None = None, batch_size: int = 512) -> np.ndarray:
        """Embed trials (eval mode, no gradients).

        Parameters
        ----------
        X : array-like of shape (n_trials, n_channels, n_times)
            Raw trials, in the units the input statistics were computed in (see
            :meth:`set_input_scaling`); the model scales them.
        subject : str, sequence of str or None
            Subject of all trials, or one per trial (used with ``subject_tokens``).
        ch_names, sfreq : optional
            Checked against the model (see :meth:`check_input`).
        batch_size : int
            Trials per forward pass.

        Returns
        -------
        emb : ndarray of shape (n_trials, proj_dim)
        """
        X = self.check_input(X, ch_names=ch_names, sfreq=sfreq)
        idx = self.subject_index(subject, len(X))
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        out = []
        for s in range(0, len(X), batch_size):
            xb = torch.from_numpy(X[s:s + batch_size]).to(device)
            out.append(self(xb, torch.from_numpy(idx[s:s + batch_size]).to(device)).float().cpu().numpy())
        self.train(was_training)
        return np.concatenate(out)

    def predict_latents(self, X: Any, subject: str | Sequence[str] | None = None, *,
                        prior: ATMDiffusionPrior | None = None, **kwargs: Any) -> dict[str, np.ndarray]:
        """Latents for the generators.

        Parameters
        ----------
        X : array-like of shape (n_trials, n_channels, n_times)
            Raw trials (the model applies its input scaling).
        subject : str, sequence of str or None
        prior : ATMDiffusionPrior or None
            Map the EEG embedding to a CLIP image embedding by sampling the diffusion
            prior (for generation). Without it, the contrastive embedding itself is
            returned (for retrieval).
        **kwargs
            ``ch_names``, ``sfreq``, ``batch_size`` for :meth:`encode`.

        Returns
        -------
        latents : dict
            ``"clip_image_embeds"``: ndarray of shape (n_trials, proj_dim).
        """
        emb = self.encode(X, subject, **kwargs)
        if prior is not None:
            emb = prior.sample(emb)
        return {"clip_image_embeds": emb}


def subject_splits(subjects: Sequence[str] | np.ndarray, split: Sequence[str] | np.ndarray | None = None,
                   *, mode: str = "within") -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Train/test trial indices for within-subject or leave-one-subject-out training.

    Parameters
    ----------
    subjects : array-like of str, shape (n_trials,)
        Subject of each trial (e.g. the concatenation of several ``Trials``).
    split : array-like of str, shape (n_trials,) or None
        ``"train"`` / ``"val"`` / ``"test"`` per trial. Required for ``"within"``. With
        ``"loso"``, training uses the other subjects' ``"train"`` trials and testing the
        held-out subject's ``"test"`` trials (unseen concepts); without it, all trials.
    mode : {"within", "loso"}

    Returns
    -------
    folds : list of (subject, train_idx, test_idx)
        One fold per subject, in sorted subject order.
    """
    check_option(mode, "mode", ["within", "loso"])
    subs = np.asarray(subjects).astype(str)
    if subs.size == 0:
        raise ValidationError(format_error("subjects", "a non-empty array", subs))
    if split is None and mode == "within":
        raise ValidationError(format_error("split", "train/test labels per trial for mode='within'", None,
                                           "Pass the split column of the Trials (trials.split)"))
    sp = np.asarray(split).astype(str) if split is not None else None
    if sp is not None and len(sp) != len(subs):
        raise ShapeMismatchError(format_error("split", f"{len(subs)} labels (one per trial)", f"{len(sp)} labels"))
    is_train = sp == "train" if sp is not None else np.ones(len(subs), bool)
    is_test = sp == "test" if sp is not None else np.ones(len(subs), bool)
    folds = []
    for s in sorted(set(subs.tolist())):
        own = subs == s
        if mode == "within":
            tr, te = own & is_train, own & is_test
        else:
            if own.all():
                raise ValidationError(format_error("subjects", "at least two subjects for mode='loso'", f"only {s!r}"))
            tr, te = ~own & is_train, own & is_test
        folds.append((s, np.flatnonzero(tr), np.flatnonzero(te)))
    return folds


# --------------------------------------------------------------------------- diffusion prior


@dataclass
class ATMPriorConfig:
    """Settings of :class:`ATMDiffusionPrior` (defaults: ATM's stage-1 prior).

    Parameters
    ----------
    embed_dim : int
        Image embedding dimension (1024).
    cond_dim : int
        EEG embedding dimension (1024).
    hidden_dims : list of int
        MLP U-Net widths below ``embed_dim`` (512, 256, 128, 64).
    time_dim : int
        Sinusoidal timestep embedding size.
    dropout : float
        Dropout inside the blocks.
    cond_dropout : float
        Probability of replacing the condition by the null condition during training
        (classifier-free guidance).
    num_train_timesteps, num_inference_steps : int
        DDPM training steps (1000) and DDIM sampling steps (50).
    beta_start, beta_end : float
        Linear noise schedule (DDPM).
    guidance_scale : float
        Classifier-free guidance at sampling (5.0).
    """

    embed_dim: int = 1024
    cond_dim: int = 1024
    hidden_dims: list[int] = field(default_factory=lambda: [512, 256, 128, 64])
    time_dim: int = 256
    dropout: float = 0.0
    cond_dropout: float = 0.1
    num_train_timesteps: int = 1000
    num_inference_steps: int = 50
    beta_start: float = 1e-4
    beta_end: float = 0.02
    guidance_scale: float = 5.0

    @classmethod
    def tiny(cls, **overrides: Any) -> ATMPriorConfig:
        """Same structure at toy width."""
        base: dict[str, Any] = dict(embed_dim=24, cond_dim=24, hidden_dims=[16, 8], time_dim=8,
                                    num_train_timesteps=100, num_inference_steps=10)
        base.update(overrides)
        return cls(**base)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ATMPriorConfig:
        """Build from a (JSON) dict or a recipe's ``[decoder.prior]`` table (its training settings ``epochs``,
        ``lr`` and ``batch_size`` are skipped); other unknown keys are refused."""
        return dataclass_from_dict(cls, d, "decoder.prior", ignore=("epochs", "lr", "batch_size"))


def _timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / max(half, 1))
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([args.cos(), args.sin()], dim=-1)
    return F.pad(emb, (0, dim - 2 * half))


class _PriorBlock(nn.Module):
    """Linear, plus projected (time + condition) embedding, LayerNorm, SiLU, Dropout."""

    def __init__(self, d_in: int, d_out: int, d_emb: int, dropout: float) -> None:
        super().__init__()
        self.lin = nn.Linear(d_in, d_out)
        self.emb = nn.Linear(d_emb, d_out)
        self.norm = nn.LayerNorm(d_out)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.drop(F.silu(self.norm(self.lin(x) + self.emb(emb))))


class ATMDiffusionPrior(PretrainedMixin, nn.Module):
    """Diffusion prior: EEG embedding -> CLIP image embedding (ATM generation, stage 1).

    An MLP U-Net (``embed_dim -> 512 -> 256 -> 128 -> 64`` and back, with skip
    connections added at each width) predicts the noise of a DDPM (linear betas,
    ``num_train_timesteps``) from the noisy image embedding, the timestep and the EEG
    embedding. The condition is dropped (set to zero, the null condition) with
    probability ``cond_dropout`` in training, so sampling can use classifier-free
    guidance: ``eps = eps_null + s x (eps_cond - eps_null)``. Sampling is deterministic
    DDIM (eta 0) over ``num_inference_steps`` evenly spaced timesteps.

    Parameters
    ----------
    config : ATMPriorConfig
    """

    config_class = ATMPriorConfig

    def __init__(self, config: ATMPriorConfig | None = None) -> None:
        super().__init__()
        self.config = config = config if config is not None else ATMPriorConfig()
        d_emb = config.time_dim
        self.time_mlp = nn.Sequential(nn.Linear(config.time_dim, d_emb), nn.SiLU(), nn.Linear(d_emb, d_emb))
        self.cond_mlp = nn.Sequential(nn.Linear(config.cond_dim, d_emb), nn.SiLU(), nn.Linear(d_emb, d_emb))
        widths = [config.embed_dim, *config.hidden_dims]
        self.down = nn.ModuleList(_PriorBlock(a, b, d_emb, config.dropout) for a, b in zip(widths[:-1], widths[1:]))
        self.up = nn.ModuleList(_PriorBlock(b, a, d_emb, config.dropout)
                                for a, b in zip(widths[1:-1][::-1], widths[2:][::-1]))
        self.out = nn.Linear(widths[1], config.embed_dim)
        betas = torch.linspace(config.beta_start, config.beta_end, config.num_train_timesteps, dtype=torch.float64)
        self.register_buffer("alphas_cumprod", torch.cumprod(1 - betas, 0).float(), persistent=False)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """Predicted noise of shape (batch, embed_dim); ``cond=None`` is the null condition."""
        emb = self.time_mlp(_timestep_embedding(t, self.config.time_dim))
        if cond is not None:
            emb = emb + self.cond_mlp(cond.float())
        else:
            emb = emb + self.cond_mlp(torch.zeros(len(x_t), self.config.cond_dim, device=x_t.device))
        h = x_t.float()
        skips = []
        for block in self.down:
            h = block(h, emb)
            skips.append(h)
        skips.pop()  # the bottleneck is h itself
        for block in self.up:
            h = block(h, emb) + skips.pop()
        return self.out(h)

    def training_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        """DDPM noise-prediction loss.

        Parameters
        ----------
        batch : dict
            ``"eeg_embeds"``: (batch, cond_dim) from :meth:`ATM.encode`; ``"image_embeds"``:
            (batch, embed_dim) targets.
        step : int
            Global step (unused).
        """
        x0, cond = batch["image_embeds"].float(), batch["eeg_embeds"].float()
        n = len(x0)
        t = torch.randint(0, self.config.num_train_timesteps, (n,), device=x0.device)
        noise = torch.randn_like(x0)
        ab = self.alphas_cumprod[t][:, None]
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        keep = (torch.rand(n, 1, device=x0.device) >= self.config.cond_dropout).float()
        loss = F.mse_loss(self(x_t, t, cond * keep), noise)
        return {"loss": loss}

    @torch.inference_mode()
    def sample(self, cond: Any, *, guidance_scale: float | None = None, num_inference_steps: int | None = None,
               seed: int | None = 0, batch_size: int = 1024) -> np.ndarray:
        """Sample image embeddings conditioned on EEG embeddings (DDIM, eta 0, with CFG).

        Parameters
        ----------
        cond : array-like of shape (n, cond_dim)
            EEG embeddings (:meth:`ATM.encode`).
        guidance_scale : float or None
            Classifier-free guidance (``config.guidance_scale`` when None; 1 disables it).
        num_inference_steps : int or None
            DDIM steps (``config.num_inference_steps`` when None).
        seed : int or None
            Seed of the initial noise.
        batch_size : int
            Rows per pass.

        Returns
        -------
        image_embeds : ndarray of shape (n, embed_dim)
        """
        c = self.config
        cond = check_array(cond, "cond", ndim=2, dtype="float")
        if cond.shape[1] != c.cond_dim:
            raise ShapeMismatchError(format_error("cond", f"an array of shape (n, {c.cond_dim})", cond,
                                                  "Pass the EEG embeddings from ATM.encode of the matching model"))
        s = c.guidance_scale if guidance_scale is None else float(guidance_scale)
        steps = c.num_inference_steps if num_inference_steps is None else int(num_inference_steps)
        steps = max(1, min(steps, c.num_train_timesteps))
        was_training = self.training
        self.eval()
        device = self.alphas_cumprod.device
        gen = torch.Generator(device="cpu")
        if seed is not None:
            gen.manual_seed(int(seed))
        ts = np.linspace(c.num_train_timesteps - 1, 0, steps).round().astype(np.int64)
        out = []
        for b0 in range(0, len(cond), batch_size):
            cb = torch.as_tensor(cond[b0:b0 + batch_size], dtype=torch.float32, device=device)
            x = torch.randn(len(cb), c.embed_dim, generator=gen).to(device)
            for i, t in enumerate(ts):
                tt = torch.full((len(cb),), int(t), device=device, dtype=torch.long)
                if s == 1.0:
                    eps = self(x, tt, cb)
                else:
                    both = self(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([cb, torch.zeros_like(cb)]))
                    e_c, e_u = both.chunk(2)
                    eps = e_u + s * (e_c - e_u)
                ab = self.alphas_cumprod[int(t)]
                ab_prev = self.alphas_cumprod[int(ts[i + 1])] if i + 1 < len(ts) else torch.tensor(1.0, device=device)
                x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
                x = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps
            out.append(x.float().cpu().numpy())
        self.train(was_training)
        return np.concatenate(out)

    def predict_latents(self, eeg_embeds: Any, **kwargs: Any) -> dict[str, np.ndarray]:
        """``{"clip_image_embeds": sample(eeg_embeds, **kwargs)}``."""
        return {"clip_image_embeds": self.sample(eeg_embeds, **kwargs)}
