"""MindEye2 (Scotti et al., ICML 2024): a shared-subject fMRI decoder with a diffusion prior.

Pipeline (real size; the reference is MedARC-AI/MindEyeV2 @c184718, ``src/models.py`` and
``src/Train.ipynb``)::

    voxels (n_s) --Linear--> 4096                                      [per-subject linear adapter]
    --4 residual MLP blocks (LayerNorm, Linear, GELU, Dropout 0.15, Linear) + token-mixing blocks-->
    --Linear--> 256 x 1664 brain tokens (OpenCLIP ViT-bigG-14 patch space)       [shared backbone]
    brain tokens --projector (LayerNorm, GELU, Linear) x 3 per token--> retrieval embedding
    brain tokens --dalle2-style diffusion prior (259,865,216 parameters)--> target tokens
    4096 --Linear 64 x 7 x 7, GroupNorm, CNN upsampler--> 4 x 28 x 28 SD-VAE latent   [low level]
         \\-- 1x1-conv projector --> 49 x 512 tokens matched to VICRegL ConvNeXt-XL features

Losses (``Train.ipynb``): prior MSE x 30 + contrastive (BiMixCo at temperature 0.006 during the
first ``int(0.33 x epochs)`` epochs, then SoftCLIP with a temperature cosine-annealed from 0.004 to
0.0075 over the remaining epochs) + 0.5 x (L1 on the 0.18215-scaled VAE latent + 0.1 x soft
contrast against ConvNeXt features). Batches hold ``"subject"``, ``"x"``, ``"tokens"`` (n, T, D)
and optionally ``"vae_latents"`` (raw SD-VAE latents, n, 4, 28, 28), ``"convnext_maps"`` and
``"convnext_maps_aug"`` (n, 49, 512); several subjects per step come as ``{"parts": [...]}``.

Deliberate differences from the released code are config options with the reference behaviour
available (``backbone_residual``, ``mixco_labels``, ``gather_negatives``); see
``docs/decoders/mindeye2.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._core.errors import ShapeMismatchError, ValidationError
from .._core.validation import check_array, check_option, dataclass_from_dict, format_error
from ..io.checkpoints import PretrainedMixin
from ._dalle2_prior import GainNorm, prior_layers, rotary_frequencies, run_layers, sinusoidal_time, time_mlp
from ._targets import DecoderTarget
from .adapters import AdapterBank, LinearAdapter
from .losses import MIXCO_LABELS, cosine_anneal, mixco_batch, mixco_loss, soft_clip_loss, soft_cont_loss

__all__ = ["MindEye2Config", "MindEye2", "DiffusionPrior", "LowLevelHead"]

NSD_VOXELS = {"nsd/subj01": 15724, "nsd/subj02": 14278, "nsd/subj03": 15226, "nsd/subj04": 13153,
              "nsd/subj05": 13039, "nsd/subj06": 17907, "nsd/subj07": 12682, "nsd/subj08": 14386}

#: ``backbone_residual`` options: "paper" (every residual block adds its output) or "reference" (the
#: released ``BrainNetwork.forward`` with seq_len = 1, where the residual bookkeeping of the
#: token-mixing blocks drops the MLP blocks' outputs: they get exactly zero gradient).
BACKBONE_RESIDUAL = ("paper", "reference")


@dataclass
class MindEye2Config:
    """Sizes, losses and schedules of :class:`MindEye2` (defaults: the reference's real size).

    Parameters
    ----------
    subjects : dict of str to int
        Subject id -> number of voxels (default: the 8 NSD subjects with nsdgeneral).
    width : int
        Shared width (4096; 1024 in the low-compute preset).
    n_blocks : int
        Residual MLP blocks (4).
    dropout : float
        Dropout in the blocks (0.15).
    backbone_residual : {"paper", "reference"}
        See :data:`BACKBONE_RESIDUAL`. "paper" (ours) keeps the blocks working.
    target_tokens : list of int
        (n_tokens, dim) of the target latent: (256, 1664) for ViT-bigG-14 patch tokens.
    target_key : str
        Key of ``predict_latents``'s output (``"clip_bigg_tokens"``).
    prior_depth, prior_heads : int
        Prior transformer depth (6) and query heads (32).
    prior_dim_head : int or None
        Width of a head (``None``: token dim / heads = 52); keys and values have one shared head.
    prior_dim : int or None
        Prior width; must be the token dim (the reference has no projection). Kept for old configs.
    prior_timesteps, prior_sampling_steps : int
        Training timesteps of the cosine schedule (100) and DDIM sampling steps (20).
    prior_cond_drop : float
        Probability of replacing each item's brain tokens, and independently its noisy target
        tokens, by learned null embeddings while training (0.2).
    prior_eta : float
        DDIM ``eta`` of the sampler (1.0).
    lowlevel_shape : list of int or None
        (c, h, w) of the SD-VAE latent of the low-level head (4, 28, 28 at 224 px); ``None``: no head.
    lowlevel_channels : list of int
        Channels of the upsampler's stages, low to high resolution ((32, 64, 128)); the latent is
        reached after ``len - 1`` doublings, so h and w must be divisible by ``2 ** (len - 1)``.
    lowlevel_in_channels, lowlevel_groups : int
        Channels of the map made by the first Linear (64) and GroupNorm groups in the upsampler (32).
    lowlevel_feature_dim : int
        Width of the tokens matched to the ConvNeXt features (512).
    lowlevel_dropout : float
        Dropout after the first Linear (0.3).
    vae_scale : float
        The head predicts the VAE latent times this factor (SD's 0.18215) and the L1 compares
        scaled values, as the reference; batches and ``predict_latents`` carry raw latents.
    lowlevel_cont_weight, lowlevel_cont_temperature : float
        Weight (0.1) and temperature (0.2) of the ConvNeXt soft contrast inside the low-level loss.
    convnext_shape : list of int or None
        (n_tokens, dim) of the teacher's features (VICRegL ConvNeXt-XL maps: 49 x 512 at 224 px; read
        from the ``convnext_maps`` latent space); must be the low-level head's (grid h x w, feature dim).
        ``predict_latents`` then returns the head's tokens as ``"convnext_maps"``. ``None``: not set.
    prior_weight, clip_weight, lowlevel_weight : float
        Loss weights (30, 1, 0.5).
    mixco_fraction : float
        BiMixCo during the first ``int(mixco_fraction * epochs)`` epochs (0.33), then SoftCLIP.
    mixco_temperature : float
        BiMixCo temperature (0.006).
    mixco_labels : {"sum", "reference"}
        Soft labels of BiMixCo: "sum" (ours) offsets each subject's partners into the concatenated
        batch and gives a sample mixed with itself label 1; "reference" reproduces the released
        code (partners not offset per subject, a self-pair gets ``1 - beta``).
    clip_temperature_start, clip_temperature_end : float
        SoftCLIP temperature cosine-annealed over the SoftCLIP epochs (0.004 -> 0.0075).
    clip_temperature : float or None
        A constant SoftCLIP temperature instead of the schedule.
    gather_negatives : bool
        With several training processes the contrastive losses score the global batch (the
        reference scores each GPU's own rows).
    """

    subjects: dict[str, int] = field(default_factory=lambda: dict(NSD_VOXELS))
    width: int = 4096
    n_blocks: int = 4
    dropout: float = 0.15
    backbone_residual: str = "paper"
    target_tokens: list[int] = field(default_factory=lambda: [256, 1664])
    target_key: str = "clip_bigg_tokens"
    prior_depth: int = 6
    prior_heads: int = 32
    prior_dim_head: int | None = None
    prior_dim: int | None = None
    prior_timesteps: int = 100
    prior_sampling_steps: int = 20
    prior_cond_drop: float = 0.2
    prior_eta: float = 1.0
    lowlevel_shape: list[int] | None = field(default_factory=lambda: [4, 28, 28])
    lowlevel_channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    lowlevel_in_channels: int = 64
    lowlevel_groups: int = 32
    lowlevel_feature_dim: int = 512
    lowlevel_dropout: float = 0.3
    vae_scale: float = 0.18215
    lowlevel_cont_weight: float = 0.1
    lowlevel_cont_temperature: float = 0.2
    convnext_shape: list[int] | None = None
    prior_weight: float = 30.0
    clip_weight: float = 1.0
    lowlevel_weight: float = 0.5
    mixco_fraction: float = 0.33
    mixco_temperature: float = 0.006
    mixco_labels: str = "sum"
    clip_temperature_start: float = 0.004
    clip_temperature_end: float = 0.0075
    clip_temperature: float | None = None
    gather_negatives: bool = True

    def __post_init__(self) -> None:
        check_option(self.backbone_residual, "backbone_residual", BACKBONE_RESIDUAL)
        check_option(self.mixco_labels, "mixco_labels", MIXCO_LABELS)
        dim = int(self.target_tokens[1])
        if self.prior_dim is not None and int(self.prior_dim) != dim:
            raise ValidationError(format_error("prior_dim", f"None or the token dim {dim}", self.prior_dim,
                                               "The prior works at the token width (no projection); drop prior_dim"))
        if self.prior_dim_head is None and dim % self.prior_heads:
            raise ValidationError(format_error("prior_heads", f"a divisor of the token dim {dim}", self.prior_heads,
                                               "Or set prior_dim_head"))
        if self.lowlevel_shape is not None:
            step = 2 ** (len(self.lowlevel_channels) - 1)
            c, h, w = (int(v) for v in self.lowlevel_shape)
            if h % step or w % step:
                raise ValidationError(format_error(
                    "lowlevel_shape", f"(c, h, w) with h and w divisible by {step}", list(self.lowlevel_shape),
                    "Use a VAE latent of 4 x 28 x 28 (224 px), 4 x 32 x 32 (256 px), or change lowlevel_channels"))
        if self.convnext_shape is not None:
            want = None
            if self.lowlevel_shape is not None:
                step = 2 ** (len(self.lowlevel_channels) - 1)
                want = [(int(self.lowlevel_shape[1]) // step) * (int(self.lowlevel_shape[2]) // step),
                        int(self.lowlevel_feature_dim)]
            if [int(v) for v in self.convnext_shape] != want:
                raise ValidationError(format_error(
                    "convnext_shape", f"the low-level head's feature tokens {want}" if want else
                    "None without a low-level head (lowlevel_shape)", list(self.convnext_shape),
                    "Use the ConvNeXt space of the head's size (vicregl-convnext-xl at 224 px: 49 x 512; its tiny "
                    "twin: 16 x 6 at 128 px), or drop [latents.convnext_maps]"))

    @classmethod
    def low_compute(cls, **overrides: Any) -> MindEye2Config:
        """The paper's low-compute variant (shared width 1024)."""
        return cls(**{"width": 1024, **overrides})

    @classmethod
    def tiny(cls, subjects: dict[str, int] | None = None, **overrides: Any) -> MindEye2Config:
        """The same structure at toy width (random init, offline)."""
        values: dict[str, Any] = dict(subjects=dict(subjects or {"nsd/subj01": 9, "nsd/subj02": 11}), width=16,
                                      target_tokens=[3, 8], prior_depth=2, prior_heads=2, prior_timesteps=100,
                                      prior_sampling_steps=20, lowlevel_shape=[2, 8, 8], lowlevel_channels=[4, 8, 8],
                                      lowlevel_in_channels=4, lowlevel_groups=2, lowlevel_feature_dim=6)
        values.update(overrides)
        return cls(**values)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MindEye2Config:
        return dataclass_from_dict(cls, values, "decoder")


# ------------------------------------------------------------------------------------------- backbone
def _mlp_block(dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim))


class _Backbone(nn.Module):
    """The shared residual MLP (``BrainNetwork``'s mixer blocks at sequence length 1).

    ``channel`` blocks mix the 4096 features; ``token`` blocks mix over the sequence axis, of
    length 1 here, so each adds a learned constant. See :data:`BACKBONE_RESIDUAL` for ``mode``.
    """

    def __init__(self, width: int, n_blocks: int, dropout: float, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.channel = nn.ModuleList([_mlp_block(width, dropout) for _ in range(n_blocks)])
        self.token = nn.ModuleList([_mlp_block(1, dropout) for _ in range(n_blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, None, :]  # (batch, seq = 1, width)
        if self.mode == "paper":
            for channel, token in zip(self.channel, self.token):
                x = x + channel(x)
                xt = x.transpose(1, 2)
                x = (xt + token(xt)).transpose(1, 2)
            return x[:, 0]
        res_c, res_t = x, x.transpose(1, 2)
        for channel, token in zip(self.channel, self.token):
            x = channel(x) + res_c
            res_c = x
            x = token(x.transpose(1, 2)) + res_t  # the reference adds the token residual, not x
            res_t = x
            x = x.transpose(1, 2)
        return x[:, 0]


# ---------------------------------------------------------------------------------------- diffusion prior
class DiffusionPrior(nn.Module):
    """The dalle2-pytorch-style diffusion prior of MindEye2 (``PriorNetwork`` + ``BrainDiffusionPrior``).

    The sequence is ``[brain tokens (n), timestep token (1), noisy target tokens + learned
    positions (n)]``; a bidirectional transformer (``depth`` x [multi-query attention with
    rotary positions and a T5 relative-position bias, SwiGLU feed-forward]), a stable LayerNorm
    and a final Linear; the last ``n`` outputs predict the clean tokens (x0). Training replaces
    each item's brain tokens, and independently its noisy tokens, by learned null embeddings with
    probability ``cond_drop``. Cosine noise schedule over ``timesteps``; DDIM sampling with ``eta``.

    Parameters
    ----------
    n_tokens, dim : int
        Token count and width of the target (256, 1664).
    depth, heads : int
        Transformer depth (6) and query heads (32).
    dim_head : int or None
        Head width (``dim // heads``).
    timesteps : int
        Diffusion timesteps (100).
    cond_drop : float
        Condition dropout (0.2).
    ff_mult : int
        Feed-forward expansion (4).
    """

    def __init__(self, n_tokens: int, dim: int, depth: int, heads: int, dim_head: int | None = None,
                 timesteps: int = 100, cond_drop: float = 0.2, ff_mult: int = 4) -> None:
        super().__init__()
        dim_head = dim_head or dim // heads
        self.n_tokens, self.dim, self.timesteps, self.cond_drop = n_tokens, dim, timesteps, cond_drop
        self.time_mlp = time_mlp(dim)
        self.positions = nn.Parameter(torch.randn(n_tokens, dim) * dim ** -0.5)
        self.null_brain = nn.Parameter(torch.randn(n_tokens, dim))
        self.null_image = nn.Parameter(torch.randn(n_tokens, dim))
        self.rel_pos_bias = nn.Embedding(32, heads)
        self.layers = prior_layers(dim, depth, heads, dim_head, ff_mult)
        self.norm = GainNorm(dim, stable=True)
        self.project_out = nn.Linear(dim, dim, bias=False)
        self.register_buffer("rotary_freqs", rotary_frequencies(dim_head), persistent=False)
        # cosine schedule (float64, as dalle2-pytorch): betas from alpha-bar, clipped at 0.999
        x = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64)
        abar = torch.cos((x / timesteps + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = (1 - abar[1:] / abar[:-1]).clamp(0, 0.999)
        cum = torch.cumprod(1 - betas, 0)
        self.register_buffer("alphas_cumprod", cum.float(), persistent=False)
        self.register_buffer("alphas_cumprod_prev", F.pad(cum[:-1], (1, 0), value=1.0).float(), persistent=False)

    def _time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        return self.time_mlp(sinusoidal_time(t, self.dim))  # type: ignore[no-any-return]

    def denoise(self, noisy: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, cond_drop: float = 0.0) -> torch.Tensor:
        """Predicted clean tokens (n, n_tokens, dim) from noisy tokens at timesteps ``t`` given ``cond``."""
        b, n = noisy.shape[:2]
        if cond_drop > 0:
            keep_brain = torch.rand(b, device=noisy.device) < 1 - cond_drop
            keep_image = torch.rand(b, device=noisy.device) < 1 - cond_drop
            cond = torch.where(keep_brain[:, None, None], cond, self.null_brain.to(cond.dtype)[None])
            noisy = torch.where(keep_image[:, None, None], noisy, self.null_image.to(noisy.dtype)[None])
        h = torch.cat([cond, self._time_embedding(t)[:, None].to(cond.dtype), noisy + self.positions.to(noisy.dtype)],
                      dim=1)
        h = run_layers(h, self.layers, self.rel_pos_bias, self.rotary_freqs)
        return self.project_out(self.norm(h))[:, -n:]  # type: ignore[no-any-return]

    def loss(self, target: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """MSE of the predicted clean tokens at a random timestep (with condition dropout)."""
        n = target.shape[0]
        t = torch.randint(0, self.timesteps, (n,), device=target.device)
        abar = self.alphas_cumprod[t].view(n, 1, 1)
        noise = torch.randn_like(target)
        noisy = abar.sqrt() * target + (1 - abar).sqrt() * noise
        return F.mse_loss(self.denoise(noisy, t, cond, self.cond_drop), target)

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, steps: int = 20, generator: torch.Generator | None = None,
               eta: float = 1.0) -> torch.Tensor:
        """DDIM sampling as dalle2-pytorch's ``p_sample_loop_ddim`` (timesteps ``linspace(-1, T, steps + 1)``)."""
        n = cond.shape[0]

        def randn() -> torch.Tensor:
            return torch.randn((n, self.n_tokens, self.dim), generator=generator, device="cpu").to(cond.device,
                                                                                                   cond.dtype)

        times = torch.linspace(-1.0, self.timesteps, steps + 1)[:-1].int().tolist()[::-1]
        x = randn()
        abar_prev, abar = self.alphas_cumprod_prev, self.alphas_cumprod
        for time, time_next in zip(times[:-1], times[1:]):
            x0 = self.denoise(x, torch.full((n,), time, device=cond.device, dtype=torch.long), cond)
            if time_next < 0:
                return x0
            a, a_next = abar_prev[time], abar_prev[time_next]
            eps = ((1 / abar[time]).sqrt() * x - x0) / (1 / abar[time] - 1).sqrt()
            c1 = eta * ((1 - a / a_next) * (1 - a_next) / (1 - a)).sqrt()
            c2 = ((1 - a_next) - c1 ** 2).sqrt()
            noise = randn() if time_next > 0 else torch.zeros_like(x)
            x = x0 * a_next.sqrt() + c1 * noise + c2 * eps
        return x


# -------------------------------------------------------------------------------------- low-level head
class _ResnetBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in, eps=1e-6)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, c_out, eps=1e-6)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))
        return h + (self.conv_shortcut(x) if self.conv_shortcut is not None else x)  # type: ignore[no-any-return]


class _SpatialAttention(nn.Module):
    """One-head self-attention over the positions of a feature map, with a residual connection."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.to_q, self.to_k, self.to_v = (nn.Linear(channels, channels) for _ in range(3))
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        s = self.group_norm(x).flatten(2).transpose(1, 2)  # (b, hw, c)
        y = F.scaled_dot_product_attention(self.to_q(s)[:, None], self.to_k(s)[:, None], self.to_v(s)[:, None])[:, 0]
        return x + self.to_out[0](y).transpose(1, 2).reshape(b, c, h, w)  # type: ignore[no-any-return]


class _MidBlock(nn.Module):
    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([_ResnetBlock(channels, channels, groups) for _ in range(2)])
        self.attentions = nn.ModuleList([_SpatialAttention(channels, groups)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resnets[1](self.attentions[0](self.resnets[0](x)))  # type: ignore[no-any-return]


class _Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # type: ignore[no-any-return]


class _UpBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, groups: int, upsample: bool) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([_ResnetBlock(c_in, c_out, groups), _ResnetBlock(c_out, c_out, groups)])
        self.upsamplers = nn.ModuleList([_Upsample(c_out)]) if upsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for r in self.resnets:
            x = r(x)
        return self.upsamplers[0](x) if self.upsamplers is not None else x


class _Upsampler(nn.Module):
    """VAE-decoder-style CNN: conv in, mid block (2 resnets around one attention), up blocks of two
    resnets each (doubling the resolution between them), GroupNorm, SiLU, conv out."""

    def __init__(self, c_in: int, c_out: int, channels: list[int], groups: int) -> None:
        super().__init__()
        rev = list(reversed(channels))
        self.conv_in = nn.Conv2d(c_in, rev[0], 3, padding=1)
        self.mid_block = _MidBlock(rev[0], groups)
        self.up_blocks = nn.ModuleList([_UpBlock(rev[max(i - 1, 0)], c, groups, i < len(rev) - 1)
                                        for i, c in enumerate(rev)])
        self.conv_norm_out = nn.GroupNorm(groups, channels[0], eps=1e-6)
        self.conv_out = nn.Conv2d(channels[0], c_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mid_block(self.conv_in(x))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))  # type: ignore[no-any-return]


class LowLevelHead(nn.Module):
    """MindEye2's low-level submodule: shared features -> (scaled VAE latent, feature tokens).

    ``Linear(width, c0 * h0 * w0) -> Dropout -> GroupNorm(1, c0)`` makes a small map (64 x 7 x 7),
    the :class:`_Upsampler` turns it into the latent (4 x 28 x 28), and a 1x1-conv projector
    turns the same map into ``h0 * w0`` tokens of ``feature_dim`` (49 x 512) for the ConvNeXt
    soft contrast. 15,158,628 parameters at real size.
    """

    def __init__(self, width: int, shape: list[int], channels: list[int], in_channels: int, groups: int,
                 feature_dim: int, dropout: float) -> None:
        super().__init__()
        c, h, w = (int(v) for v in shape)
        step = 2 ** (len(channels) - 1)
        self.grid = (in_channels, h // step, w // step)
        self.lin = nn.Linear(width, in_channels * self.grid[1] * self.grid[2])
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.GroupNorm(1, in_channels)
        self.upsampler = _Upsampler(in_channels, c, channels, groups)
        self.maps_projector = nn.Sequential(
            nn.Conv2d(in_channels, feature_dim, 1, bias=False), nn.GroupNorm(1, feature_dim), nn.ReLU(True),
            nn.Conv2d(feature_dim, feature_dim, 1, bias=False), nn.GroupNorm(1, feature_dim), nn.ReLU(True),
            nn.Conv2d(feature_dim, feature_dim, 1))

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.norm(self.dropout(self.lin(h)).view(len(h), *self.grid))
        return self.upsampler(m), self.maps_projector(m).flatten(2).transpose(1, 2)


# ------------------------------------------------------------------------------------------------- model
class MindEye2(PretrainedMixin, nn.Module):
    """MindEye2: linear subject adapters, shared residual MLP, diffusion prior, retrieval and low-level heads.

    Parameters
    ----------
    config : MindEye2Config
        Sizes (``MindEye2Config.tiny()`` for a toy model, ``low_compute()`` for width 1024).

    Examples
    --------
    >>> model = MindEye2(MindEye2Config.tiny())
    >>> out = model.predict_latents(np.zeros((2, 9), np.float32), subject="nsd/subj01")
    >>> out["clip_bigg_tokens"].shape, out["vae_latents"].shape
    ((2, 3, 8), (2, 2, 8, 8))
    """

    config_class = MindEye2Config
    #: batch key -> what it trains (read by the recipe runner and the contract tests)
    targets = {"tokens": DecoderTarget("target_tokens", None, True),
               "vae_latents": DecoderTarget("lowlevel_shape", "vae_latents", False),
               "convnext_maps": DecoderTarget("convnext_shape", "convnext_maps", False)}
    #: batch key -> (the target it augments, a transform of :mod:`neurodecode.latents._augment`): the
    #: teacher's features of augmented copies (``blur_augs``) for the soft contrast, ``[latents] augment_views``
    #: views per training image, one drawn per sample and step
    augmented_targets = {"convnext_maps_aug": ("convnext_maps", "mindeye2")}

    def __init__(self, config: MindEye2Config | None = None) -> None:
        super().__init__()
        self.config = config = config or MindEye2Config()
        n_tok, dim = config.target_tokens
        self.adapters = AdapterBank()
        subjects, config.subjects = dict(config.subjects), {}
        for subject, n in subjects.items():
            self._add(subject, int(n))
        self.backbone = _Backbone(config.width, config.n_blocks, config.dropout, config.backbone_residual)
        self.to_tokens = nn.Linear(config.width, n_tok * dim)
        self.retrieval = nn.Sequential(nn.LayerNorm(dim), nn.GELU(), nn.Linear(dim, dim),
                                       nn.LayerNorm(dim), nn.GELU(), nn.Linear(dim, dim),
                                       nn.LayerNorm(dim), nn.GELU(), nn.Linear(dim, dim))
        self.prior = DiffusionPrior(n_tok, dim, config.prior_depth, config.prior_heads, config.prior_dim_head,
                                    config.prior_timesteps, config.prior_cond_drop)
        self.lowlevel = (LowLevelHead(config.width, config.lowlevel_shape, config.lowlevel_channels,
                                      config.lowlevel_in_channels, config.lowlevel_groups,
                                      config.lowlevel_feature_dim, config.lowlevel_dropout)
                         if config.lowlevel_shape else None)
        self.mixco_steps = 0
        self._steps_per_epoch: int | None = None
        self._epochs: int | None = None

    def _add(self, subject: str, n_voxels: int) -> None:
        self.adapters.add(LinearAdapter(subject, n_voxels, self.config.width))
        self.config.subjects[subject] = n_voxels

    @property
    def subjects(self) -> list[str]:
        return self.adapters.subjects

    def add_subject(self, subject: str, n_voxels: int) -> None:
        """Add a new subject's linear adapter (fine-tune the whole model on it afterwards)."""
        device = next(self.parameters()).device
        self._add(subject, int(n_voxels))
        self.adapters[subject].to(device)

    def optimizer_param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """Trainer hook: the reference's groups (``Train.ipynb``): the subject adapters decay entirely
        (biases included); elsewhere every parameter decays except those whose name holds "bias". The
        reference's LayerNorm gains are named by position, so they decay; its relative-position
        bias table (``rel_pos_bias``) does not."""
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if p.requires_grad:
                (no_decay if "bias" in name and not name.startswith("adapters.") else decay).append(p)
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return [g for g in groups if g["params"]]

    # -- schedules -----------------------------------------------------------------------------------
    def configure_training(self, total_steps: int, steps_per_epoch: int) -> None:
        """Trainer hook: epochs of the run, for BiMixCo's phase and the SoftCLIP temperature schedule."""
        self._steps_per_epoch = max(int(steps_per_epoch), 1)
        self._epochs = max(-(-int(total_steps) // self._steps_per_epoch), 1)
        self.mixco_steps = self.mixco_epochs * self._steps_per_epoch

    @property
    def mixco_epochs(self) -> int:
        """``int(mixco_fraction * epochs)`` (0 before :meth:`configure_training`)."""
        return int(self.config.mixco_fraction * self._epochs) if self._epochs else 0

    def clip_temperature_at(self, step: int) -> float:
        """SoftCLIP temperature at ``step``: cosine from start to end over the SoftCLIP epochs."""
        c = self.config
        if c.clip_temperature is not None:
            return float(c.clip_temperature)
        if not self._epochs or not self._steps_per_epoch:
            return float(c.clip_temperature_start)
        epoch = step // self._steps_per_epoch
        return cosine_anneal(c.clip_temperature_start, c.clip_temperature_end, epoch - self.mixco_epochs,
                             self._epochs - self.mixco_epochs)

    # -- forward ---------------------------------------------------------------------------------------
    def backbone_forward(self, x: torch.Tensor, subject: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(shared features (n, width), brain tokens (n, T, D))."""
        h = self.backbone(self.adapters[subject](x))
        return h, self.to_tokens(h).view(len(h), *self.config.target_tokens)

    def forward(self, x: torch.Tensor, subject: str) -> dict[str, torch.Tensor]:
        h, tokens = self.backbone_forward(x, subject)
        out = {"brain_tokens": tokens, "retrieval": self.retrieval(tokens)}
        if self.lowlevel is not None:
            latent, feats = self.lowlevel(h)
            out["vae_latents"] = latent / self.config.vae_scale
            out["lowlevel_features"] = feats
        return out

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, torch.Tensor]:
        """Prior MSE x 30 + BiMixCo or SoftCLIP + 0.5 x (L1 on the scaled latent + 0.1 x ConvNeXt soft contrast).

        Returns ``"loss"``, ``"prior"``, ``"clip"``, ``"lowlevel"`` (L1 + 0.1 x contrast, unweighted),
        ``"lowlevel_l1"``, ``"lowlevel_cont"`` and ``"clip_temperature"``.
        """
        c = self.config
        parts = batch["parts"] if "parts" in batch else [batch]
        use_mixco = step < self.mixco_steps
        hs, toks, targets, perms, betas, selects = [], [], [], [], [], []
        offset = 0
        for part in parts:
            x, target = part["x"], part["tokens"]
            if tuple(target.shape[1:]) != tuple(c.target_tokens):
                raise ShapeMismatchError(format_error("tokens", f"shape (n, {c.target_tokens[0]}, {c.target_tokens[1]})",
                                                      f"shape {tuple(target.shape)}",
                                                      "Set decoder.target_tokens to the latent space's token shape"))
            if use_mixco:
                x, perm, beta, select = mixco_batch(x)
                perms.append(perm + offset if c.mixco_labels == "sum" else perm)
                betas.append(beta)
                selects.append(select)
            h, tokens = self.backbone_forward(x, part["subject"])
            hs.append(h)
            toks.append(tokens)
            targets.append(target.to(tokens.dtype))
            offset += len(x)
        tokens, target = torch.cat(toks), torch.cat(targets)
        retr = self.retrieval(tokens)
        zero = tokens.new_zeros(())
        if use_mixco:
            perm, beta, select = torch.cat(perms), torch.cat(betas), torch.cat(selects)
            clip = mixco_loss(retr, target, perm, beta, temperature=c.mixco_temperature, labels=c.mixco_labels,
                              gather=c.gather_negatives)
            temperature = c.mixco_temperature
        else:
            temperature = self.clip_temperature_at(step)
            clip = soft_clip_loss(retr, target, temperature, gather=c.gather_negatives)
        prior = self.prior.loss(target, tokens)
        l1 = cont = zero
        if self.lowlevel is not None and all("vae_latents" in p for p in parts):
            pred, feats = self.lowlevel(torch.cat(hs))
            latent = torch.cat([p["vae_latents"] for p in parts]).to(pred.dtype) * c.vae_scale
            if use_mixco:  # the latent targets are mixed like the inputs (Train.ipynb)
                shape = (-1,) + (1,) * (latent.dim() - 1)
                b = beta.to(latent.dtype).reshape(shape)
                latent = torch.where(select.reshape(shape), latent * b + latent[perm] * (1 - b), latent)
            l1 = F.l1_loss(pred, latent)
            if all("convnext_maps" in p and "convnext_maps_aug" in p for p in parts):
                dim = feats.shape[-1]
                teacher = torch.cat([p["convnext_maps"] for p in parts]).reshape(-1, dim)
                teacher_aug = torch.cat([p["convnext_maps_aug"] for p in parts]).reshape(-1, dim)
                cont = soft_cont_loss(feats.reshape(-1, dim), teacher, teacher_aug, c.lowlevel_cont_temperature,
                                      gather=c.gather_negatives)
        low = l1 + c.lowlevel_cont_weight * cont
        loss = c.prior_weight * prior + c.clip_weight * clip + c.lowlevel_weight * low
        return {"loss": loss, "prior": prior, "clip": clip, "lowlevel": low, "lowlevel_l1": l1,
                "lowlevel_cont": cont, "clip_temperature": zero + temperature}

    @torch.no_grad()
    def predict_latents(self, X: Any, subject: str, *, batch_size: int = 64, use_prior: bool = True,
                        seed: int = 0) -> dict[str, np.ndarray]:
        """Predict target tokens (through the diffusion prior) and the low-level latent from fMRI.

        Parameters
        ----------
        X : ndarray of shape (n_trials, n_voxels)
            Betas of ``subject``.
        subject : str
            Subject id.
        batch_size : int
            Trials per forward pass.
        use_prior : bool
            Turn the backbone tokens into target tokens with the diffusion prior
            (``prior_sampling_steps`` DDIM steps, eta ``prior_eta``); ``False`` returns the backbone tokens.
        seed : int
            Seed of the prior's noise.

        Returns
        -------
        latents : dict
            ``config.target_key`` (``"clip_bigg_tokens"``): ndarray of shape (n_trials, 256, 1664);
            ``"retrieval_embeds"``: ndarray of shape (n_trials, 256, 1664); with a low-level head,
            ``"vae_latents"``: ndarray of shape (n_trials, 4, 28, 28), raw (unscaled) SD-VAE latents.
        """
        X = check_array(X, "X", ndim=2, dtype=np.float32)
        self.adapters[subject].check_input(torch.empty(0, X.shape[1], device="meta"))
        was = self.training
        self.eval()
        device = next(self.parameters()).device
        g = torch.Generator().manual_seed(seed)
        chunks: dict[str, list[np.ndarray]] = {}
        for lo in range(0, len(X), batch_size):
            out = self(torch.from_numpy(X[lo:lo + batch_size]).to(device), subject)
            tokens = (self.prior.sample(out["brain_tokens"], self.config.prior_sampling_steps, g, self.config.prior_eta)
                      if use_prior else out["brain_tokens"])
            result = {self.config.target_key: tokens, "retrieval_embeds": out["retrieval"]}
            if "vae_latents" in out:
                result["vae_latents"] = out["vae_latents"]
            if "lowlevel_features" in out and self.config.convnext_shape is not None:
                result["convnext_maps"] = out["lowlevel_features"]
            for k, v in result.items():
                chunks.setdefault(k, []).append(v.float().cpu().numpy())
        self.train(was)
        return {k: np.concatenate(v) for k, v in chunks.items()}
