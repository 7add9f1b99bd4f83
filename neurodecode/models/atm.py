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
4. **Loss** (``objective="contrastive"``, the retrieval model): ``0.99 x image + 0.01 x text``
   symmetric InfoNCE whose logits are ``s x emb @ normalize(target).T``, as in the reference
   (``Retrieval/ATMS_retrieval.py`` with ``Retrieval/loss.py``): the learnable scale ``s`` is used
   raw (initialised at ``ln(1/0.07) = 2.66``, not exponentiated, not clamped) and multiplies the
   UNnormalised EEG embedding (its norm is about ``sqrt(proj_dim)`` after the final LayerNorm)
   against L2-normalised targets. ``logit_scale_mode="clip"`` keeps the CLIP form instead
   (``exp(s)`` times cosine similarities, clamped at 100). ``objective="generation"`` is the loss
   of the encoder the reference trains for image generation (``Generation/ATMS_reconstruction.py``):
   ``10 x (0.9 x MSE(emb, image) + 0.1 x InfoNCE(emb, image))``, no text term.
   The reference's AdamW decays every parameter (biases, norms and the scale included):
   :meth:`ATM.optimizer_param_groups` does the same (``decay_all_parameters``).

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
        Initial value of the learnable scale parameter ``logit_scale`` (``ln(1/0.07) = 2.659``, the
        reference's; in ``"clip"`` mode it is the log of the multiplier).
    logit_scale_mode : {"raw", "clip"}
        ``"raw"`` (the reference): logits ``= logit_scale x emb @ normalize(target).T`` with the
        UNnormalised embedding and the scale used as is. ``"clip"``: ``exp`` of the parameter (then named
        ``log_logit_scale``, clamped at ``ln 100``) times the cosine similarities.
    objective : {"contrastive", "generation"}
        ``"contrastive"``: ``image_weight`` x image InfoNCE + the rest x text InfoNCE (retrieval).
        ``"generation"``: the reference's encoder for image generation,
        ``generation_loss_scale x (generation_mse_weight x MSE + (1 - generation_mse_weight) x InfoNCE)``
        against the (L2-normalised) image embedding.
    generation_mse_weight, generation_loss_scale : float
        0.9 and 10 (``Generation/ATMS_reconstruction.py``).
    decay_all_parameters : bool
        Weight decay on every parameter, as the reference's ``AdamW(model.parameters())`` (True);
        False: the trainer's default groups (no decay on biases, norms and the scale).
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
    logit_scale_init: float = math.log(1 / 0.07)
    logit_scale_mode: str = "raw"
    objective: str = "contrastive"
    generation_mse_weight: float = 0.9
    generation_loss_scale: float = 10.0
    decay_all_parameters: bool = True
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
        check_option(self.logit_scale_mode, "logit_scale_mode", ["raw", "clip"])
        check_option(self.objective, "objective", ["contrastive", "generation"])
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
        base: dict[str, Any] = dict(n_channels=17, n_times=40, sfreq=100.0, d_model=32, n_heads=2, d_ff=36,
                                    dropout=0.1, n_filters=8, temporal_kernel=5, pool_size=7, pool_stride=3,
                                    proj_dim=24)  # = clip-vit-h-14-tiny
        base.update(overrides)
        return cls(**base)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ATMConfig:
        """Build from a (JSON) dict or a recipe's ``[decoder]`` table (its ``name`` and ``prior`` are skipped).

        A config saved before ``logit_scale_mode`` existed (it has ``logit_scale_init`` but no
        ``logit_scale_mode``) was trained with the CLIP form and a multiplier ``logit_scale_init``:
        it loads as ``logit_scale_mode="clip"`` with the log of that value, so its checkpoint
        (parameter ``log_logit_scale``) loads unchanged.
        """
        d = dict(d)
        if "logit_scale_init" in d and "logit_scale_mode" not in d:
            d["logit_scale_mode"] = "clip"
            d["logit_scale_init"] = math.log(float(d["logit_scale_init"]))
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
        scale = nn.Parameter(torch.tensor(float(config.logit_scale_init)))
        if config.logit_scale_mode == "raw":
            self.logit_scale = scale  # the multiplier itself (reference)
        else:
            self.log_logit_scale = scale  # CLIP form: exp() of it
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
        b_sp, b_pw = self.spatial.bias, self.pointwise.bias
        assert b_sp is not None and b_pw is not None  # the convs are built with biases
        z = F.elu(self._bn_rows(torch.addmm(b_sp, z, ws), self.bn2))  # (B*T', F)
        z = self.conv_drop(z)
        z = torch.addmm(b_pw, z, self.pointwise.weight.reshape(f, f).t())
        return z.view(b, t_out * f)

    @staticmethod
    def _bn_rows(z: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
        """``bn`` (a BatchNorm2d over filters) applied to rows of filter values, shape (N, F)."""
        use_batch = bn.training or bn.running_mean is None
        return F.batch_norm(z, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                            use_batch, bn.momentum if bn.momentum is not None else 0.0, bn.eps)

    def logit_multiplier(self) -> torch.Tensor:
        """The multiplier of the contrastive logits: ``logit_scale`` (raw mode) or ``exp(log_logit_scale)`` (clip)."""
        if self.config.logit_scale_mode == "raw":
            return self.logit_scale
        return self.log_logit_scale.clamp(max=math.log(100.0)).exp()

    def contrastive_logits(self, emb: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Logits of EEG rows against target rows, shape (n_emb, n_target).

        Raw mode (the reference): ``logit_scale x emb @ normalize(target).T`` with ``emb`` NOT
        normalised. Clip mode: ``exp(log_logit_scale) x normalize(emb) @ normalize(target).T``.
        """
        t = F.normalize(target.float(), dim=-1)
        e = emb.float() if self.config.logit_scale_mode == "raw" else F.normalize(emb.float(), dim=-1)
        return self.logit_multiplier() * e @ t.T

    def info_nce(self, emb: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE: mean of the cross-entropies of the logits and of their transpose (row i matches i)."""
        logits = self.contrastive_logits(emb, target)
        labels = torch.arange(len(logits), device=logits.device)
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))

    def loss(self, emb: torch.Tensor, image_embeds: torch.Tensor,
             text_embeds: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The training objective (``config.objective``).

        Parameters
        ----------
        emb : Tensor of shape (batch, proj_dim)
            EEG embeddings (:meth:`forward`).
        image_embeds, text_embeds : Tensor of shape (batch, proj_dim)
            Targets (L2-normalised here, as the reference's features are).

        Returns
        -------
        out : dict
            ``"loss"``; ``"loss_image"`` (InfoNCE), ``"loss_text"`` (when given, contrastive
            objective), ``"loss_mse"`` (generation objective), ``"logit_scale"`` (the multiplier).
        """
        c = self.config
        loss_img = self.info_nce(emb, image_embeds)
        out = {"loss_image": loss_img.detach(), "logit_scale": self.logit_multiplier().detach()}
        if c.objective == "generation":
            mse = F.mse_loss(emb.float(), F.normalize(image_embeds.float(), dim=-1))
            w = c.generation_mse_weight
            out["loss_mse"] = mse.detach()
            out["loss"] = c.generation_loss_scale * (w * mse + (1 - w) * loss_img)
            return out
        if text_embeds is None:
            out["loss"] = loss_img
            return out
        loss_txt = self.info_nce(emb, text_embeds)
        w = c.image_weight
        out["loss_text"] = loss_txt.detach()
        out["loss"] = w * loss_img + (1 - w) * loss_txt
        return out

    def optimizer_param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """Parameter groups for the trainer: every trainable parameter decays (``decay_all_parameters``, the
        reference's ``AdamW(model.parameters())``), or no decay on biases, norms and the scale."""
        params = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        if self.config.decay_all_parameters:
            return [{"params": [p for _, p in params], "weight_decay": float(weight_decay)}]
        decay = [p for _, p in params if p.ndim >= 2]
        rest = [p for _, p in params if p.ndim < 2]
        groups = [{"params": decay, "weight_decay": float(weight_decay)}, {"params": rest, "weight_decay": 0.0}]
        return [g for g in groups if g["params"]]

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
    """Settings of :class:`ATMDiffusionPrior` (defaults: the reference's ``DiffusionPriorUNet(cond_dim=1024,
    dropout=0.1)`` with diffusers' default ``DDPMScheduler``).

    Parameters
    ----------
    embed_dim : int
        Image embedding dimension (1024).
    cond_dim : int
        EEG embedding dimension (1024).
    hidden_dims : list of int
        U-Net widths below the input layer (512, 256, 128, 64); the decoder climbs back symmetrically.
    input_width : int or None
        Width of the input layer (``None``: ``embed_dim``, i.e. 1024, the reference's ``hidden_dim[0]``).
        :attr:`widths` is ``[input_width, *hidden_dims]``.
    time_embed_dim : int
        Size of the sinusoidal timestep features (512) each layer's time MLP reads.
    dropout : float
        Dropout in every encoder and decoder layer (0.1).
    cond_dropout : float
        Probability of training unconditionally (classifier-free guidance), 0.1.
    cond_dropout_mode : {"batch", "sample"}
        ``"batch"`` (the reference): the whole batch is unconditional with probability ``cond_dropout``;
        ``"sample"``: each row independently.
    num_train_timesteps : int
        DDPM training steps (1000).
    num_inference_steps : int
        Sampling steps (50).
    beta_start, beta_end : float
        Linear noise schedule (1e-4, 0.02).
    guidance_scale : float
        Classifier-free guidance at sampling (5.0): ``eps = eps_null + s x (eps_cond - eps_null)``.
    sampler : {"ddpm", "ddim"}
        ``"ddpm"`` (the reference, diffusers' ``DDPMScheduler`` defaults): "leading" timesteps
        ``T // steps`` apart, ancestral steps with the "fixed_small" posterior variance and the x0
        estimate clipped to ``[-clip_sample_range, clip_sample_range]``. ``"ddim"``: deterministic DDIM
        (eta 0) over evenly spaced timesteps, no clipping.
    clip_sample, clip_sample_range : bool, float
        x0 clipping of the DDPM sampler (True, 1.0: diffusers' defaults).
    normalize_targets : bool
        L2-normalise the image embeddings before training (the reference's prior learns the
        L2-normalised ViT-H-14 embeddings), so samples live on that scale.
    """

    embed_dim: int = 1024
    cond_dim: int = 1024
    hidden_dims: list[int] = field(default_factory=lambda: [512, 256, 128, 64])
    input_width: int | None = None
    time_embed_dim: int = 512
    dropout: float = 0.1
    cond_dropout: float = 0.1
    cond_dropout_mode: str = "batch"
    num_train_timesteps: int = 1000
    num_inference_steps: int = 50
    beta_start: float = 1e-4
    beta_end: float = 0.02
    guidance_scale: float = 5.0
    sampler: str = "ddpm"
    clip_sample: bool = True
    clip_sample_range: float = 1.0
    normalize_targets: bool = True

    def __post_init__(self) -> None:
        self.hidden_dims = [int(w) for w in self.hidden_dims]
        if not self.hidden_dims or min(self.widths) < 1:
            raise ValidationError(format_error("hidden_dims", "at least one positive width below the input layer",
                                               self.hidden_dims, "e.g. [512, 256, 128, 64]"))
        if self.time_embed_dim < 2:
            raise ValidationError(format_error("time_embed_dim", "an integer >= 2", self.time_embed_dim))
        check_option(self.cond_dropout_mode, "cond_dropout_mode", ["batch", "sample"])
        check_option(self.sampler, "sampler", ["ddpm", "ddim"])

    @property
    def widths(self) -> list[int]:
        """U-Net widths from the input layer down (``[1024, 512, 256, 128, 64]``)."""
        return [int(self.input_width or self.embed_dim), *self.hidden_dims]

    @classmethod
    def tiny(cls, **overrides: Any) -> ATMPriorConfig:
        """Same structure at toy width (distinct widths per component)."""
        base: dict[str, Any] = dict(embed_dim=24, cond_dim=20, hidden_dims=[16, 8], input_width=28, time_embed_dim=12,
                                    num_train_timesteps=100, num_inference_steps=10)
        base.update(overrides)
        return cls(**base)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ATMPriorConfig:
        """Build from a (JSON) dict or a recipe's ``[decoder.prior]`` table.

        The table's training settings (``epochs``, ``lr``, ``batch_size``, ``optimizer``, ``scheduler``,
        ``warmup_steps``, ``grad_clip``, ``weight_decay``) are skipped; other unknown keys are refused.
        A prior saved before the reference U-Net layout (its config has ``time_dim``) is refused:
        retrain it.
        """
        d = dict(d)
        if "time_dim" in d:
            raise ValidationError(format_error(
                "config", "an ATMPriorConfig of the reference DiffusionPriorUNet layout (per-layer timestep and "
                "condition embeddings, 9,675,648 parameters at real size)",
                "a prior saved with the older MLP U-Net (it has 'time_dim')",
                "Retrain the prior (neurodecode train on the ATM recipe retrains it from the encoder); the old "
                "weights do not fit the new layout"))
        return dataclass_from_dict(cls, d, "decoder.prior",
                                   ignore=("epochs", "lr", "batch_size", "optimizer", "scheduler", "warmup_steps",
                                           "grad_clip", "weight_decay"))


def _timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal timestep features ``[cos(t w_k), sin(t w_k)]`` with ``w_k = 10000^(-k / (dim // 2))``
    (diffusers' ``Timesteps(dim, flip_sin_to_cos=True, downscale_freq_shift=0)``), shape (batch, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([args.cos(), args.sin()], dim=-1)
    return F.pad(emb, (0, dim - 2 * half))


class _TimeMLP(nn.Module):
    """Linear -> SiLU -> Linear from the timestep features to one layer's width."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(d_in, d_out)
        self.linear_2 = nn.Linear(d_out, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


def _prior_layer(d_in: int, d_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_out), nn.LayerNorm(d_out), nn.SiLU(), nn.Dropout(dropout))


class ATMDiffusionPrior(PretrainedMixin, nn.Module):
    """Diffusion prior: EEG embedding -> CLIP image embedding (ATM generation, stage 1).

    The reference's ``DiffusionPriorUNet`` (``Generation/diffusion_prior.py``), an MLP U-Net that
    predicts the noise of a DDPM (linear betas, ``num_train_timesteps``):

    - input layer: Linear ``embed_dim -> widths[0]``, LayerNorm, SiLU;
    - encoder, for each width ``w_i -> w_{i+1}``: add this layer's timestep embedding (its own
      Linear-SiLU-Linear on the sinusoidal features) and condition embedding (its own Linear of the
      EEG embedding; zero for the null condition), then Linear, LayerNorm, SiLU, Dropout; the input
      of each encoder layer is kept as a skip;
    - decoder, symmetric (``w_{i+1} -> w_i``), with its own timestep and condition embeddings, each
      output plus the matching skip;
    - output layer: Linear ``widths[0] -> embed_dim``.

    Training drops the condition (the null condition: no condition term at all) for the whole
    batch with probability ``cond_dropout``; sampling uses classifier-free guidance with
    diffusers' DDPM scheduler maths (see :class:`ATMPriorConfig`).

    Parameters
    ----------
    config : ATMPriorConfig
    """

    config_class = ATMPriorConfig
    alphas_cumprod: torch.Tensor

    def __init__(self, config: ATMPriorConfig | None = None) -> None:
        super().__init__()
        self.config = c = config if config is not None else ATMPriorConfig()
        w, n = c.widths, len(c.widths)
        self.input_layer = nn.Sequential(nn.Linear(c.embed_dim, w[0]), nn.LayerNorm(w[0]), nn.SiLU())
        self.encode_time = nn.ModuleList(_TimeMLP(c.time_embed_dim, w[i]) for i in range(n - 1))
        self.encode_cond = nn.ModuleList(nn.Linear(c.cond_dim, w[i]) for i in range(n - 1))
        self.encode_layers = nn.ModuleList(_prior_layer(w[i], w[i + 1], c.dropout) for i in range(n - 1))
        self.decode_time = nn.ModuleList(_TimeMLP(c.time_embed_dim, w[i]) for i in range(n - 1, 0, -1))
        self.decode_cond = nn.ModuleList(nn.Linear(c.cond_dim, w[i]) for i in range(n - 1, 0, -1))
        self.decode_layers = nn.ModuleList(_prior_layer(w[i], w[i - 1], c.dropout) for i in range(n - 1, 0, -1))
        self.output_layer = nn.Linear(w[0], c.embed_dim)
        # float32 like diffusers' DDPMScheduler (betas linspace, cumprod)
        betas = torch.linspace(c.beta_start, c.beta_end, c.num_train_timesteps, dtype=torch.float32)
        self.register_buffer("alphas_cumprod", torch.cumprod(1.0 - betas, 0), persistent=False)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        if any(k.startswith(prefix + "time_mlp.") for k in state_dict):
            raise ValidationError(format_error(
                "state_dict", "weights of the reference DiffusionPriorUNet layout",
                "a prior saved with the older MLP U-Net (keys 'time_mlp.*')",
                "Retrain the prior; the old weights do not fit the new layout"))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None,
                cond_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted noise.

        Parameters
        ----------
        x_t : Tensor of shape (batch, embed_dim)
            Noisy image embeddings.
        t : Tensor of shape (batch,)
            Timesteps (integer or float).
        cond : Tensor of shape (batch, cond_dim) or None
            EEG embeddings; ``None`` is the null condition (no condition term).
        cond_mask : Tensor of shape (batch,) or None
            1 keeps a row's condition, 0 makes it null (one pass for guided sampling).

        Returns
        -------
        eps : Tensor of shape (batch, embed_dim)
        """
        tf = _timestep_embedding(t, self.config.time_embed_dim)
        keep = None if cond_mask is None else cond_mask.float()[:, None]

        def cond_term(lin: nn.Module) -> torch.Tensor | float:
            if cond is None:
                return 0.0
            e = lin(cond.float())
            return e if keep is None else e * keep

        h = self.input_layer(x_t.float())
        skips = []
        for tm, cl, layer in zip(self.encode_time, self.encode_cond, self.encode_layers):
            skips.append(h)
            h = layer(h + tm(tf) + cond_term(cl))
        for i, (tm, cl, layer) in enumerate(zip(self.decode_time, self.decode_cond, self.decode_layers)):
            h = layer(h + tm(tf) + cond_term(cl)) + skips[-1 - i]
        return self.output_layer(h)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``sqrt(abar_t) x0 + sqrt(1 - abar_t) noise`` (the forward process)."""
        ab = self.alphas_cumprod.to(x0.device)[t.long()][:, None]
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def training_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        """DDPM noise-prediction loss (MSE), with the condition dropped as in :class:`ATMPriorConfig`.

        Parameters
        ----------
        batch : dict
            ``"eeg_embeds"``: (batch, cond_dim) from :meth:`ATM.encode`; ``"image_embeds"``:
            (batch, embed_dim) targets (L2-normalised here with ``normalize_targets``).
        step : int
            Global step (unused).
        """
        c = self.config
        x0, cond = batch["image_embeds"].float(), batch["eeg_embeds"].float()
        if c.normalize_targets:
            x0 = F.normalize(x0, dim=-1)
        n = len(x0)
        t = torch.randint(0, c.num_train_timesteps, (n,), device=x0.device)
        noise = torch.randn_like(x0)
        x_t = self.add_noise(x0, noise, t)
        if c.cond_dropout_mode == "batch":
            pred = self(x_t, t, None) if float(torch.rand(())) < c.cond_dropout else self(x_t, t, cond)
        else:
            keep = (torch.rand(n, device=x0.device) >= c.cond_dropout).float()
            pred = self(x_t, t, cond, keep)
        return {"loss": F.mse_loss(pred, noise)}

    def timesteps(self, num_inference_steps: int | None = None) -> np.ndarray:
        """Sampling timesteps, first to last: DDPM "leading" spacing ``T // steps`` apart
        (50 steps of 1000: 980, 960, ..., 0), or for DDIM evenly spaced from ``T - 1`` to 0."""
        c = self.config
        steps = c.num_inference_steps if num_inference_steps is None else int(num_inference_steps)
        steps = max(1, min(steps, c.num_train_timesteps))
        if c.sampler == "ddpm":
            return (np.arange(steps) * (c.num_train_timesteps // steps))[::-1].astype(np.int64)
        return np.linspace(c.num_train_timesteps - 1, 0, steps).round().astype(np.int64)

    def _ddpm_step(self, x: torch.Tensor, eps: torch.Tensor, t: int, prev: int,
                   noise: torch.Tensor | None) -> torch.Tensor:
        c = self.config
        acp = self.alphas_cumprod
        ab = acp[t]
        ab_prev = acp[prev] if prev >= 0 else torch.ones((), device=acp.device)
        beta = 1 - ab / ab_prev
        x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
        if c.clip_sample:
            x0 = x0.clamp(-c.clip_sample_range, c.clip_sample_range)
        mean = (ab_prev.sqrt() * beta / (1 - ab)) * x0 + ((1 - beta).sqrt() * (1 - ab_prev) / (1 - ab)) * x
        if t > 0 and noise is not None:
            var = ((1 - ab_prev) / (1 - ab) * beta).clamp(min=1e-20)
            mean = mean + var.sqrt() * noise
        return mean

    @torch.inference_mode()
    def sample(self, cond: Any, *, guidance_scale: float | None = None, num_inference_steps: int | None = None,
               seed: int | None = 0, batch_size: int = 1024) -> np.ndarray:
        """Sample image embeddings conditioned on EEG embeddings (classifier-free guidance).

        Parameters
        ----------
        cond : array-like of shape (n, cond_dim)
            EEG embeddings (:meth:`ATM.encode`).
        guidance_scale : float or None
            Classifier-free guidance (``config.guidance_scale`` when None; 1: conditional only,
            0: unconditional only).
        num_inference_steps : int or None
            Sampling steps (``config.num_inference_steps`` when None).
        seed : int or None
            Seed of the CPU generator that draws the initial and the per-step noise (in that order,
            as diffusers' scheduler does).
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
        ts = self.timesteps(num_inference_steps)
        was_training = self.training
        self.eval()
        device = self.alphas_cumprod.device
        gen = torch.Generator(device="cpu")
        if seed is not None:
            gen.manual_seed(int(seed))
        acp = self.alphas_cumprod
        out = []
        for b0 in range(0, len(cond), batch_size):
            cb = torch.as_tensor(cond[b0:b0 + batch_size], dtype=torch.float32, device=device)
            m = len(cb)
            x = torch.randn(m, c.embed_dim, generator=gen).to(device)
            for i, t in enumerate(ts.tolist()):
                tt = torch.full((m,), float(t), device=device)
                if s == 1.0:
                    eps = self(x, tt, cb)
                elif s == 0.0:
                    eps = self(x, tt, None)
                else:
                    mask = torch.cat([torch.ones(m, device=device), torch.zeros(m, device=device)])
                    e_c, e_u = self(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([cb, cb]), mask).chunk(2)
                    eps = e_u + s * (e_c - e_u)
                if c.sampler == "ddpm":
                    prev = t - c.num_train_timesteps // len(ts)
                    noise = torch.randn(m, c.embed_dim, generator=gen).to(device) if t > 0 else None
                    x = self._ddpm_step(x, eps, t, prev, noise)
                else:
                    ab = acp[t]
                    ab_prev = acp[int(ts[i + 1])] if i + 1 < len(ts) else torch.ones((), device=device)
                    x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
                    x = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps
            out.append(x.float().cpu().numpy())
        self.train(was_training)
        return np.concatenate(out)

    def predict_latents(self, eeg_embeds: Any, **kwargs: Any) -> dict[str, np.ndarray]:
        """``{"clip_image_embeds": sample(eeg_embeds, **kwargs)}``."""
        return {"clip_image_embeds": self.sample(eeg_embeds, **kwargs)}
