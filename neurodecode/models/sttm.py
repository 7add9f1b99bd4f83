"""STTM, "See Through Their Minds" (Liu et al., AAAI 2025): a cross-subject fMRI decoder with shallow adapters.

Pipeline (real size; the reference is YulongBonjour/STTM, ``model/CrossBrain_Decoding_torch_decoder_global_constra.py``,
``model/low_level_model_with_sub_head_high_guidance.py`` and ``Train_CrossBrain_Decoding_global_contras.py``)::

    voxels (n_s) --z-score (train statistics)--> Linear 4096, LayerNorm, GELU, Dropout 0.5
        + 1 residual block (Linear, LayerNorm, GELU, Dropout 0.15)                 [per-subject adapter]
    --4 residual blocks (Linear 4096, LayerNorm, GELU, Dropout 0.15)--> h (4096)   [shared backbone]
    h --LayerNorm, GELU, Linear--> 257 x 128 --token self-attention + MLP--> 257 x 768 brain tokens
    brain tokens --projector (LN, GELU, Linear 768->2048->2048->768) per token--> contrastive tokens
    brain tokens --diffusion prior (torch TransformerDecoder, brain tokens as memory)--> CLIP-L image tokens
    voxels --own adapter, 4 blocks (Linear no bias, LN, SiLU)--> + h --merge block--> Linear 64 x 16 x 16
        --GroupNorm, VAE-decoder-style upsampler--> 4 x 64 x 64 SD-VAE latent        [pixel branch]

Losses (``Train_CrossBrain_Decoding_global_contras.py``), every subject of the run in every step:

- first ``int(0.35 x epochs)`` epochs: BiMixCo (temperature 0.006) on the flattened projected tokens
  against the target tokens, + 0.5 x the same between the projected CLS token and the image's CLS
  token ("global image") + 0.5 x between the projected CLS token and the CLIP-L text embedding
  ("global text"); all three share one MixCo draw;
- then SoftCLIP with the temperature cosine-annealed from 0.004 to 0.006 over the SoftCLIP epochs,
  global terms at 0.2;
- the contrastive sum and 30 x the prior MSE are mixed by weights ``(w0, w1)``: fixed (default, the
  mean of the reference's draw) or ``softmax(randn(2))`` redrawn every step (``loss_weighting="random"``);
- the pixel branch: L1 between the predicted and the true 0.18215-scaled SD-VAE latent (the
  reference's low-level loss is not released; this is MindEye1's), guided by the detached backbone
  feature ``h``.

Batches hold ``"subject"``, ``"x"`` (n, n_voxels), ``"image_tokens"`` (n, 257, 768, VD-normalised),
optionally ``"text_embeds"`` (n, 768) and ``"vae_latents"`` (n, 4, 64, 64, raw); several subjects
per step come as ``{"parts": [...]}``. Differences from the released code are listed in
``docs/decoders/sttm.md``; those that change results are options with the reference behaviour available.
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
from ._targets import DecoderTarget
from .adapters import AdapterBank, SubjectAdapter
from .losses import MIXCO_LABELS, cosine_anneal, mixco_batch, mixco_loss, soft_clip_loss

__all__ = ["STTMConfig", "STTM", "CrossAttentionPrior", "PixelBranch"]

#: nsdgeneral voxel counts of the four NSD subjects STTM trains on (hard-coded in the reference).
NSD_VOXELS = {"nsd/subj01": 15724, "nsd/subj02": 14278, "nsd/subj05": 13039, "nsd/subj07": 12682}

#: ``attention_scale``: "reference" multiplies the query-key products by sqrt(head width) (the released
#: ``MultiHeadAttention`` divides by ``head_dim ** -0.5``); "standard" divides by it.
ATTENTION_SCALE = ("reference", "standard")
#: ``loss_weighting``: "fixed" uses ``fixed_weights``; "random" draws ``softmax(randn(2))`` every step.
LOSS_WEIGHTING = ("fixed", "random")


@dataclass
class STTMConfig:
    """Sizes, losses and schedules of :class:`STTM` (defaults: the reference's real size and settings).

    Parameters
    ----------
    subjects : dict of str to int
        Subject id -> number of voxels (default: NSD subjects 1, 2, 5, 7 with nsdgeneral).
    width : int
        Width of the adapters, the backbone and the pixel branch (4096).
    adapter_blocks : int
        Residual blocks in each subject adapter (1).
    adapter_dropout, dropout : float
        Dropout after the adapters' first Linear (0.5) and in every residual block (0.15).
    n_blocks : int
        Shared residual blocks (4).
    target_tokens : list of int
        (n_tokens, dim) of the CLIP image tokens (257, 768).
    token_dim : int
        Width of the tokens made from ``h`` before the token attention (128).
    attention_dim, attention_heads : int
        Query/key/value width (768) and heads (8) of the token self-attention.
    attention_dropout : float
        Dropout on the attention weights (0.1).
    attention_scale : {"reference", "standard"}
        See :data:`ATTENTION_SCALE`.
    projector_width : int
        Hidden width of the per-token projector (2048).
    text_shape : list of int or None
        Shape of the text embedding of the global text contrast ((768,): CLIP-L's pooled text embedding,
        the token width); ``None`` turns the global text term off.
    prior_depth, prior_heads, prior_ff : int
        Prior decoder layers (6), heads (12) and feed-forward width (3072).
    prior_timesteps : int
        Diffusion timesteps (100, cosine schedule).
    prior_sampling_steps : int
        Sampling steps: all ``prior_timesteps`` run the ancestral DDPM sampler (dalle2-pytorch's default);
        fewer run its DDIM sampler (eta 1).
    prior_cond_drop : float
        Probability of replacing an item's brain tokens, and independently its noisy tokens, by the learned
        null embeddings in training (0.2).
    prior_guidance : float
        Classifier-free guidance scale of the sampler (3.5).
    prior_token_drop : list of float
        Fraction range of brain tokens dropped from the prior's memory in training ((0.6, 0.65)).
    prior_embed_scale : float or None
        The target tokens are multiplied by this inside the prior (``None``: sqrt(dim), dalle2-pytorch's
        ``image_embed_scale`` default) and samples divided by it.
    lowlevel_shape : list of int or None
        (c, h, w) of the SD-VAE latent of the pixel branch ((4, 64, 64) at 512 px); ``None``: no branch.
    lowlevel_channels : list of int
        Channels of the upsampler's blocks, high to low resolution ((64, 128, 256)); h and w are reached
        after ``len - 1`` doublings.
    lowlevel_map_channels : int
        Channels of the map made by the branch's Linear (64: 64 x 16 x 16 = 16,384).
    lowlevel_groups : int
        GroupNorm groups of the upsampler (32).
    lowlevel_null_prob : float
        Probability, per training forward, of replacing the low-level path by a learned null vector so only
        the high-level guidance remains (0.4).
    lowlevel_weight : float
        Weight of the pixel branch's L1 loss (1).
    vae_scale : float
        The branch predicts the VAE latent times this factor (SD's 0.18215); batches and
        ``predict_latents`` carry raw latents.
    detach_guidance : bool
        The pixel branch reads the backbone feature without sending gradients into it (the reference
        trains the pixel branch after the high-level model).
    mixco_fraction : float
        BiMixCo during the first ``int(mixco_fraction * epochs)`` epochs (0.35), then SoftCLIP.
    mixco_temperature : float
        BiMixCo temperature (0.006).
    mixco_labels : {"reference", "sum"}
        Soft labels of BiMixCo (see :data:`neurodecode.models.losses.MIXCO_LABELS`).
    clip_temperature_start, clip_temperature_end : float
        SoftCLIP temperature cosine-annealed over the SoftCLIP epochs (0.004 -> 0.006).
    global_weight_mixco, global_weight_softclip : float
        Weight of each global (image, text) term in the two phases (0.5, 0.2).
    prior_weight : float
        Multiplier of the prior MSE (30).
    loss_weighting : {"fixed", "random"}
        See :data:`LOSS_WEIGHTING`.
    fixed_weights : list of float
        ``(w0, w1)`` of the contrastive and prior terms with ``loss_weighting="fixed"`` ((0.5, 0.5): the
        expectation of ``softmax(randn(2))``).
    smoothing_epochs, smoothing_batch : int
        The first ``smoothing_epochs`` SoftCLIP epochs keep only the first ``smoothing_batch`` samples of each
        subject's batch (3, 12; the reference's "small batch for smoothing"); 0 turns it off.
    input_noise : float
        Standard deviation of the Gaussian noise added to the z-scored voxels in training (0.01).
    gather_negatives : bool
        With several training processes the contrastive losses score the global batch.
    """

    subjects: dict[str, int] = field(default_factory=lambda: dict(NSD_VOXELS))
    width: int = 4096
    adapter_blocks: int = 1
    adapter_dropout: float = 0.5
    dropout: float = 0.15
    n_blocks: int = 4
    target_tokens: list[int] = field(default_factory=lambda: [257, 768])
    token_dim: int = 128
    attention_dim: int = 768
    attention_heads: int = 8
    attention_dropout: float = 0.1
    attention_scale: str = "reference"
    projector_width: int = 2048
    text_shape: list[int] | None = field(default_factory=lambda: [768])
    prior_depth: int = 6
    prior_heads: int = 12
    prior_ff: int = 3072
    prior_timesteps: int = 100
    prior_sampling_steps: int = 100
    prior_cond_drop: float = 0.2
    prior_guidance: float = 3.5
    prior_token_drop: list[float] = field(default_factory=lambda: [0.6, 0.65])
    prior_embed_scale: float | None = None
    lowlevel_shape: list[int] | None = field(default_factory=lambda: [4, 64, 64])
    lowlevel_channels: list[int] = field(default_factory=lambda: [64, 128, 256])
    lowlevel_map_channels: int = 64
    lowlevel_groups: int = 32
    lowlevel_null_prob: float = 0.4
    lowlevel_weight: float = 1.0
    vae_scale: float = 0.18215
    detach_guidance: bool = True
    mixco_fraction: float = 0.35
    mixco_temperature: float = 0.006
    mixco_labels: str = "reference"
    clip_temperature_start: float = 0.004
    clip_temperature_end: float = 0.006
    global_weight_mixco: float = 0.5
    global_weight_softclip: float = 0.2
    prior_weight: float = 30.0
    loss_weighting: str = "fixed"
    fixed_weights: list[float] = field(default_factory=lambda: [0.5, 0.5])
    smoothing_epochs: int = 3
    smoothing_batch: int = 12
    input_noise: float = 0.01
    gather_negatives: bool = True

    def __post_init__(self) -> None:
        check_option(self.attention_scale, "attention_scale", ATTENTION_SCALE)
        check_option(self.loss_weighting, "loss_weighting", LOSS_WEIGHTING)
        check_option(self.mixco_labels, "mixco_labels", MIXCO_LABELS)
        dim = int(self.target_tokens[1])
        if dim % self.prior_heads:
            raise ValidationError(format_error("prior_heads", f"a divisor of the token dim {dim}", self.prior_heads))
        if self.attention_dim % self.attention_heads:
            raise ValidationError(format_error("attention_heads", f"a divisor of attention_dim {self.attention_dim}",
                                               self.attention_heads))
        lo, hi = (float(v) for v in self.prior_token_drop)
        if not 0.0 <= lo <= hi < 1.0:
            raise ValidationError(format_error("prior_token_drop", "[low, high] with 0 <= low <= high < 1",
                                               list(self.prior_token_drop), "The reference drops 60-65 %: [0.6, 0.65]"))
        if len(self.fixed_weights) != 2:
            raise ValidationError(format_error("fixed_weights", "[w_contrastive, w_prior]", list(self.fixed_weights)))
        if self.lowlevel_shape is not None:
            step = 2 ** (len(self.lowlevel_channels) - 1)
            _, h, w = (int(v) for v in self.lowlevel_shape)
            if h % step or w % step:
                raise ValidationError(format_error(
                    "lowlevel_shape", f"(c, h, w) with h and w divisible by {step}", list(self.lowlevel_shape),
                    "Use the SD-VAE latent at 512 px (4 x 64 x 64) or change lowlevel_channels"))

    @classmethod
    def tiny(cls, subjects: dict[str, int] | None = None, **overrides: Any) -> STTMConfig:
        """The same structure at toy widths, distinct per component (random init, offline)."""
        values: dict[str, Any] = dict(
            subjects=dict(subjects or {"nsd/subj01": 9, "nsd/subj02": 11}), width=24, target_tokens=[5, 16],
            token_dim=6, attention_dim=12, attention_heads=2, projector_width=20, text_shape=[16], prior_depth=2,
            prior_heads=2, prior_ff=28, prior_sampling_steps=10, lowlevel_shape=[4, 8, 8],
            lowlevel_channels=[4, 8, 12], lowlevel_map_channels=5, lowlevel_groups=4)
        values.update(overrides)
        return cls(**values)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> STTMConfig:
        return dataclass_from_dict(cls, values, "decoder")


# ------------------------------------------------------------------------------------------- adapters
def _block(width: int, dropout: float) -> nn.Sequential:
    """Linear, LayerNorm, GELU, Dropout (the reference's residual block; the residual is added outside)."""
    return nn.Sequential(nn.Linear(width, width), nn.LayerNorm(width), nn.GELU(), nn.Dropout(dropout))


class _InputScaling(SubjectAdapter):
    """Per-voxel z-scoring with a subject's training statistics (buffers, saved with the model)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, subject: str, n_inputs: int) -> None:
        super().__init__(subject, n_inputs)
        self.register_buffer("mean", torch.zeros(n_inputs))
        self.register_buffer("std", torch.ones(n_inputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class STTMAdapter(SubjectAdapter):
    """The shallow subject adapter: ``Linear(n_voxels, width) -> LayerNorm -> GELU -> Dropout`` + residual blocks."""

    def __init__(self, subject: str, n_inputs: int, width: int, n_blocks: int, dropout_in: float,
                 dropout: float) -> None:
        super().__init__(subject, n_inputs)
        self.proj = nn.Sequential(nn.Linear(n_inputs, width), nn.LayerNorm(width), nn.GELU(), nn.Dropout(dropout_in))
        self.blocks = nn.ModuleList([_block(width, dropout) for _ in range(n_blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        h = self.proj(x)
        for block in self.blocks:
            h = h + block(h)
        return h  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------------ token attention
class _TokenAttention(nn.Module):
    """``SelfAttention_with_MLP``: pre-norm multi-head self-attention with a residual, then an MLP to the CLIP width.

    ``y = x + Dropout(MHA(LN(x)))``; output ``Linear(LN(y)) -> LayerNorm -> GELU -> Dropout -> Linear``
    (128 -> 1536 -> 768 at real size). The attention projects to ``attention_dim`` (768) for queries,
    keys and values and back to the token width.
    """

    def __init__(self, token_dim: int, attention_dim: int, heads: int, out_dim: int, dropout: float,
                 attention_dropout: float, scale: str) -> None:
        super().__init__()
        self.heads = heads
        head = attention_dim // heads
        self.scale = math.sqrt(head) if scale == "reference" else 1.0 / math.sqrt(head)
        self.attention_dropout = attention_dropout
        self.layer_norm = nn.LayerNorm(token_dim)
        self.qkv_layer_norm = nn.LayerNorm(token_dim)
        self.q = nn.Linear(token_dim, attention_dim)
        self.k = nn.Linear(token_dim, attention_dim)
        self.v = nn.Linear(token_dim, attention_dim)
        self.projection = nn.Linear(attention_dim, token_dim)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Sequential(nn.Linear(token_dim, 2 * out_dim), nn.LayerNorm(2 * out_dim), nn.GELU(),
                                      nn.Dropout(dropout), nn.Linear(2 * out_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        z = self.layer_norm(x)
        q, k, v = (lin(z).view(b, n, self.heads, -1).transpose(1, 2) for lin in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attention_dropout if self.training else 0.0,
                                           scale=self.scale)
        x = x + self.dropout(self.projection(y.transpose(1, 2).reshape(b, n, -1)))
        return self.out_proj(self.qkv_layer_norm(x))  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------------- diffusion prior
def _sinusoid(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * -(math.log(10000) / (half - 1)))
    arg = t.float()[:, None] * freqs[None]
    return torch.cat([arg.sin(), arg.cos()], dim=-1)


class CrossAttentionPrior(nn.Module):
    """STTM's diffusion prior (``VersatileDiffusionPriorNetwork`` in ``BrainDiffusionPrior``).

    The target sequence is ``[timestep token, noisy image tokens + learned positions]``; the memory is
    the brain tokens + their own learned positions; a ``torch.nn.TransformerDecoder`` (post-norm layers,
    GELU, dropout 0, no final norm) predicts the clean tokens (x0) from its last ``n_tokens`` outputs.
    In training, an item's brain tokens and, independently, its noisy tokens are replaced by learned
    null embeddings with probability ``cond_drop``, and a random 60-65 % of the brain tokens (the same
    count for the batch, a different subset per item, order kept) are dropped from the memory.
    Targets are scaled by ``embed_scale`` (sqrt(dim)); a cosine schedule over ``timesteps``.

    Parameters
    ----------
    n_tokens, dim : int
        Token count and width (257, 768).
    depth, heads, ff : int
        Decoder layers (6), heads (12), feed-forward width (3072).
    timesteps : int
        Diffusion timesteps (100).
    cond_drop : float
        Condition dropout (0.2).
    token_drop : sequence of float
        Fraction range of dropped brain tokens in training ((0.6, 0.65)).
    embed_scale : float or None
        Target scale (``None``: sqrt(dim)).
    """

    alphas_cumprod: torch.Tensor
    alphas_cumprod_prev: torch.Tensor
    posterior_log_variance: torch.Tensor
    posterior_coef1: torch.Tensor
    posterior_coef2: torch.Tensor

    def __init__(self, n_tokens: int, dim: int, depth: int, heads: int, ff: int, timesteps: int = 100,
                 cond_drop: float = 0.2, token_drop: Any = (0.6, 0.65), embed_scale: float | None = None) -> None:
        super().__init__()
        self.n_tokens, self.dim, self.timesteps, self.cond_drop = n_tokens, dim, timesteps, cond_drop
        self.token_drop = (float(token_drop[0]), float(token_drop[1]))
        self.embed_scale = float(embed_scale) if embed_scale is not None else dim ** 0.5
        self.time_mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.SiLU(), nn.Linear(2 * dim, 2 * dim), nn.SiLU(),
                                      nn.Linear(2 * dim, dim))
        self.positions = nn.Parameter(torch.randn(n_tokens, dim) * dim ** -0.5)
        self.brain_positions = nn.Parameter(torch.randn(n_tokens, dim) * dim ** -0.5)
        self.null_brain = nn.Parameter(torch.randn(n_tokens, dim))
        self.null_image = nn.Parameter(torch.randn(n_tokens, dim))
        layer = nn.TransformerDecoderLayer(dim, heads, ff, dropout=0.0, activation="gelu", batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, depth)
        # cosine schedule (float64, as dalle2-pytorch's NoiseScheduler), betas clipped at 0.999
        x = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64)
        abar = torch.cos((x / timesteps + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = (1 - abar[1:] / abar[:-1]).clamp(0, 0.999)
        cum = torch.cumprod(1 - betas, 0)
        prev = F.pad(cum[:-1], (1, 0), value=1.0)
        var = betas * (1 - prev) / (1 - cum)
        for name, value in (("alphas_cumprod", cum), ("alphas_cumprod_prev", prev),
                            ("posterior_log_variance", var.clamp_min(1e-20).log()),
                            ("posterior_coef1", betas * prev.sqrt() / (1 - cum)),
                            ("posterior_coef2", (1 - prev) * (1 - betas).sqrt() / (1 - cum))):
            self.register_buffer(name, value.float(), persistent=False)

    def drop_count(self, generator: torch.Generator | None = None) -> int:
        """Number of brain tokens dropped in a training step: ``randint(int(n * low), int(n * high))``."""
        lo, hi = int(self.n_tokens * self.token_drop[0]), int(self.n_tokens * self.token_drop[1])
        return int(torch.randint(lo, hi + 1, (1,), generator=generator, device="cpu").item())

    def forward(self, noisy: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, *, brain_drop: float = 0.0,
                image_drop: float = 0.0, drop_tokens: bool = False) -> torch.Tensor:
        """Predicted clean (scaled) tokens (n, n_tokens, dim) from noisy tokens at timesteps ``t`` given ``cond``."""
        b = noisy.shape[0]
        keep_brain = torch.rand(b, device=noisy.device) < 1 - brain_drop
        keep_image = torch.rand(b, device=noisy.device) < 1 - image_drop
        cond = torch.where(keep_brain[:, None, None], cond, self.null_brain.to(cond.dtype)[None])
        noisy = torch.where(keep_image[:, None, None], noisy, self.null_image.to(noisy.dtype)[None])
        time = self.time_mlp(_sinusoid(t, self.dim).to(noisy.dtype))[:, None]
        noisy = noisy + self.positions.to(noisy.dtype)
        memory = cond + self.brain_positions.to(cond.dtype)
        if drop_tokens:
            keep = self.n_tokens - self.drop_count()
            order = torch.rand(b, self.n_tokens, device=cond.device).argsort(dim=1)[:, :keep].sort(dim=1).values
            memory = memory[torch.arange(b, device=cond.device)[:, None], order]
        out = self.decoder(torch.cat([time, noisy], dim=1), memory)
        return out[:, -self.n_tokens:]  # type: ignore[no-any-return]

    def loss(self, target: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """MSE of the predicted clean (scaled) tokens at a random timestep, with condition and token dropout."""
        n = target.shape[0]
        x0 = target * self.embed_scale
        t = torch.randint(0, self.timesteps, (n,), device=target.device)
        abar = self.alphas_cumprod[t].view(n, 1, 1).to(x0.dtype)
        noisy = abar.sqrt() * x0 + (1 - abar).sqrt() * torch.randn_like(x0)
        pred = self(noisy, t, cond, brain_drop=self.cond_drop, image_drop=self.cond_drop, drop_tokens=True)
        return F.mse_loss(pred, x0)

    def _guided(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, guidance: float) -> torch.Tensor:
        pred = self(x, t, cond)
        if guidance == 1.0:
            return pred
        null = self(x, t, cond, brain_drop=1.0, image_drop=1.0)
        return null + (pred - null) * guidance

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, steps: int | None = None, generator: torch.Generator | None = None,
               guidance: float = 3.5) -> torch.Tensor:
        """Tokens (n, n_tokens, dim) from brain tokens ``cond``, unscaled.

        ``steps`` equal to ``timesteps`` (default) runs dalle2-pytorch's ancestral DDPM sampler
        (``p_sample_loop_ddpm``), fewer its DDIM sampler with eta 1 (``p_sample_loop_ddim``).
        """
        n = cond.shape[0]
        steps = int(steps or self.timesteps)

        def randn() -> torch.Tensor:
            return torch.randn((n, self.n_tokens, self.dim), generator=generator).to(cond.device, cond.dtype)

        x = randn()
        if steps >= self.timesteps:
            for i in reversed(range(self.timesteps)):
                t = torch.full((n,), i, device=cond.device, dtype=torch.long)
                x0 = self._guided(x, t, cond, guidance)
                mean = self.posterior_coef1[i] * x0 + self.posterior_coef2[i] * x
                x = mean + (0.5 * self.posterior_log_variance[i]).exp() * randn() if i > 0 else mean
            return x / self.embed_scale
        times = torch.linspace(-1.0, self.timesteps, steps + 1)[:-1].int().tolist()[::-1]
        abar_prev, abar = self.alphas_cumprod_prev, self.alphas_cumprod
        for time, time_next in zip(times[:-1], times[1:]):
            x0 = self._guided(x, torch.full((n,), time, device=cond.device, dtype=torch.long), cond, guidance)
            if time_next < 0:
                x = x0
                break
            a, a_next = abar_prev[time], abar_prev[time_next]
            eps = ((1 / abar[time]).sqrt() * x - x0) / (1 / abar[time] - 1).sqrt()
            c1 = ((1 - a / a_next) * (1 - a_next) / (1 - a)).sqrt()
            c2 = ((1 - a_next) - c1 ** 2).sqrt()
            x = x0 * a_next.sqrt() + c1 * (randn() if time_next > 0 else 0.0) + c2 * eps
        return x / self.embed_scale


# ----------------------------------------------------------------------------------------- pixel branch
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


class _MapAttention(nn.Module):
    """One-head self-attention over the positions of a map (the VAE decoder's mid-block attention)."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.to_q, self.to_k, self.to_v = (nn.Linear(channels, channels) for _ in range(3))
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        s = self.group_norm(x).flatten(2).transpose(1, 2)
        y = F.scaled_dot_product_attention(self.to_q(s)[:, None], self.to_k(s)[:, None], self.to_v(s)[:, None])[:, 0]
        return x + self.to_out[0](y).transpose(1, 2).reshape(b, c, h, w)  # type: ignore[no-any-return]


class _MidBlock(nn.Module):
    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([_ResnetBlock(channels, channels, groups) for _ in range(2)])
        self.attentions = nn.ModuleList([_MapAttention(channels, groups)])

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
    """The diffusers VAE ``Decoder`` the reference builds (``UpDecoderBlock2D`` x len(channels),
    ``layers_per_block=1``): conv in, mid block, up blocks of two resnets doubling the resolution
    between them, GroupNorm, SiLU, conv out. Same parameter names, so its weights load into diffusers'."""

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


def _silu_block(width: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, width, bias=False), nn.LayerNorm(width), nn.SiLU(), nn.Dropout(dropout))


class PixelBranch(nn.Module):
    """``Voxel2StableDiffusionModel``: voxels -> SD-VAE latent, guided by the high-level backbone feature.

    Own subject adapters (as the high-level ones), ``n_blocks`` residual blocks (Linear without bias,
    LayerNorm, SiLU, Dropout); ``x + guidance`` (the high-level 4096-d feature; in training the low-level
    ``x`` is replaced by a learned null vector with probability ``null_prob``), a residual merge block,
    ``Linear(width, c0 * h0 * w0, bias=False)``, ``GroupNorm(1, c0)`` and the :class:`_Upsampler`.
    151,044,224 shared parameters before the upsampler at real size.
    """

    def __init__(self, config: STTMConfig) -> None:
        super().__init__()
        c = config
        w = c.width
        assert c.lowlevel_shape is not None
        out_c, h, wd = (int(v) for v in c.lowlevel_shape)
        step = 2 ** (len(c.lowlevel_channels) - 1)
        self.grid = (int(c.lowlevel_map_channels), h // step, wd // step)
        self.null_prob = float(c.lowlevel_null_prob)
        self.adapters = AdapterBank()
        self.null_guidance = nn.Parameter(torch.randn(w))   # used when no guidance is given (null_high_embeds)
        self.null_lowlevel = nn.Parameter(torch.randn(w))   # replaces the low-level path (null_high_embeds_1)
        self.blocks = nn.ModuleList([_silu_block(w, c.dropout) for _ in range(c.n_blocks)])
        self.merge = _silu_block(w, c.dropout)
        self.lin = nn.Linear(w, self.grid[0] * self.grid[1] * self.grid[2], bias=False)
        self.norm = nn.GroupNorm(1, self.grid[0])
        self.upsampler = _Upsampler(self.grid[0], out_c, list(c.lowlevel_channels), c.lowlevel_groups)

    def forward(self, x: torch.Tensor, subject: str, guidance: torch.Tensor | None) -> torch.Tensor:
        """Scaled VAE latent (n, c, h, w) from z-scored voxels ``x`` and the backbone feature ``guidance``."""
        z = self.adapters[subject](x)
        for block in self.blocks:
            z = z + block(z)
        if guidance is None:
            guidance = self.null_guidance.to(z.dtype).expand_as(z)
        elif self.training and float(torch.rand((), device="cpu")) < self.null_prob:
            z = self.null_lowlevel.to(z.dtype).expand_as(z)
        z = z + guidance
        z = z + self.merge(z)
        m = self.norm(self.lin(z).view(len(z), *self.grid))
        return self.upsampler(m)  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------------------------- model
class STTM(PretrainedMixin, nn.Module):
    """STTM: shallow subject adapters, a shared deep decoder to CLIP-L image tokens, a cross-attention
    diffusion prior and a pixel branch guided by the high-level feature.

    Parameters
    ----------
    config : STTMConfig
        Sizes (``STTMConfig.tiny()`` for a toy model).

    Examples
    --------
    >>> model = STTM(STTMConfig.tiny())
    >>> out = model.predict_latents(np.zeros((2, 9), np.float32), subject="nsd/subj01")
    >>> out["clip_image_tokens"].shape, out["vae_latents"].shape, out["text_embeds"].shape
    ((2, 5, 16), (2, 4, 8, 8), (2, 16))
    """

    config_class = STTMConfig
    #: batch key -> what it trains (read by the recipe runner and the contract tests)
    targets = {"image_tokens": DecoderTarget("target_tokens", "clip_image_tokens", True),
               "text_embeds": DecoderTarget("text_shape", "text_embeds", False),
               "vae_latents": DecoderTarget("lowlevel_shape", "vae_latents", False)}

    def __init__(self, config: STTMConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or STTMConfig()
        n_tok, dim = (int(v) for v in config.target_tokens)
        if config.text_shape is not None and [int(v) for v in config.text_shape] != [dim]:
            raise ValidationError(format_error("text_shape", f"[{dim}], the token width (the CLS projection is "
                                               "contrasted with the text embedding)", config.text_shape,
                                               "Use CLIP text and image spaces of the same model"))
        self.input_scaling = AdapterBank()
        self.adapters = AdapterBank()
        self.pixel = PixelBranch(config) if config.lowlevel_shape else None
        subjects, config.subjects = dict(config.subjects), {}
        for subject, n in subjects.items():
            self._add(subject, int(n))
        w = config.width
        self.backbone = nn.ModuleList([_block(w, config.dropout) for _ in range(config.n_blocks)])
        self.to_tokens = nn.Sequential(nn.LayerNorm(w), nn.GELU(), nn.Linear(w, n_tok * config.token_dim))
        self.token_attention = _TokenAttention(config.token_dim, config.attention_dim, config.attention_heads, dim,
                                               config.dropout, config.attention_dropout, config.attention_scale)
        pw = config.projector_width
        self.projector = nn.Sequential(nn.LayerNorm(dim), nn.GELU(), nn.Linear(dim, pw), nn.LayerNorm(pw), nn.GELU(),
                                       nn.Linear(pw, pw), nn.LayerNorm(pw), nn.GELU(), nn.Linear(pw, dim))
        self.prior = CrossAttentionPrior(n_tok, dim, config.prior_depth, config.prior_heads, config.prior_ff,
                                         config.prior_timesteps, config.prior_cond_drop, config.prior_token_drop,
                                         config.prior_embed_scale)
        self.mixco_steps = 0
        self._steps_per_epoch: int | None = None
        self._epochs: int | None = None

    # -- subjects ------------------------------------------------------------------------------------
    def _add(self, subject: str, n_voxels: int) -> None:
        c = self.config
        self.input_scaling.add(_InputScaling(subject, n_voxels))
        self.adapters.add(STTMAdapter(subject, n_voxels, c.width, c.adapter_blocks, c.adapter_dropout, c.dropout))
        if self.pixel is not None:
            self.pixel.adapters.add(STTMAdapter(subject, n_voxels, c.width, c.adapter_blocks, c.adapter_dropout,
                                                c.dropout))
        c.subjects[subject] = n_voxels

    @property
    def subjects(self) -> list[str]:
        """Subject ids known to the model."""
        return self.adapters.subjects

    def add_subject(self, subject: str, n_voxels: int) -> None:
        """Add a new subject's adapters (high-level and pixel), randomly initialised, on the model's device."""
        device = next(self.parameters()).device
        self._add(subject, int(n_voxels))
        for bank in (self.input_scaling, self.adapters, *([self.pixel.adapters] if self.pixel is not None else [])):
            bank[subject].to(device)

    def train_adapters_only(self, subject: str, n_voxels: int | None = None) -> list[str]:
        """New-subject transfer: add ``subject`` if needed, then freeze everything but its adapters.

        Returns
        -------
        trainable : list of str
            Names of the parameters left trainable (the subject's high-level and pixel adapters).
        """
        if subject not in self.adapters:
            if n_voxels is None:
                raise ValidationError(format_error("n_voxels", "the new subject's number of voxels", None,
                                                   f"{subject!r} is not in the model yet; pass n_voxels"))
            self.add_subject(subject, n_voxels)
        self.requires_grad_(False)
        self.adapters[subject].requires_grad_(True)
        if self.pixel is not None:
            self.pixel.adapters[subject].requires_grad_(True)
        return [n for n, p in self.named_parameters() if p.requires_grad]

    @torch.no_grad()
    def fit_input_scaling(self, subject: str, X: Any, ddof: int = 1) -> STTM:
        """Store ``subject``'s per-voxel training mean and standard deviation (``ddof=1``, as the reference).

        Parameters
        ----------
        subject : str
        X : ndarray of shape (n_train, n_voxels)
            The subject's training betas (after /300), before z-scoring.
        ddof : int
            Delta degrees of freedom of the standard deviation.
        """
        X = check_array(X, "X", ndim=2, dtype=np.float64)
        scaling: Any = self.input_scaling[subject]
        scaling.check_input(torch.empty(0, X.shape[1], device="meta"))
        if len(X) <= ddof:
            raise ValidationError(format_error("X", f"more than {ddof} training trials", len(X)))
        std = X.std(0, ddof=ddof)
        std[std == 0] = 1.0  # a constant voxel stays 0 after centring
        scaling.mean.copy_(torch.from_numpy(X.mean(0)).to(scaling.mean))
        scaling.std.copy_(torch.from_numpy(std).to(scaling.std))
        return self

    def optimizer_param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """Trainer hook: the reference's groups (``configure_optimizers``): no decay on parameters whose name
        holds "bias"; everything else (LayerNorm gains included: they are named by position there) decays."""
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for name, p in self.named_parameters():
            if p.requires_grad:
                (no_decay if "bias" in name else decay).append(p)
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
        if not self._epochs or not self._steps_per_epoch:
            return float(c.clip_temperature_start)
        epoch = step // self._steps_per_epoch
        return cosine_anneal(c.clip_temperature_start, c.clip_temperature_end, epoch - self.mixco_epochs,
                             self._epochs - self.mixco_epochs)

    def _smoothing(self, step: int) -> bool:
        if not self._steps_per_epoch or self.config.smoothing_epochs <= 0 or step < self.mixco_steps:
            return False
        return step // self._steps_per_epoch < self.mixco_epochs + self.config.smoothing_epochs

    # -- forward ---------------------------------------------------------------------------------------
    def features(self, x: torch.Tensor, subject: str) -> torch.Tensor:
        """The shared feature h (n, width) from z-scored voxels: the adapter and the 4 shared blocks."""
        h = self.adapters[subject](x)
        for block in self.backbone:
            h = h + block(h)
        return h  # type: ignore[no-any-return]

    def backbone_forward(self, x: torch.Tensor, subject: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(shared feature h (n, width), brain tokens (n, T, D)) from z-scored voxels."""
        h = self.features(x, subject)
        tok = self.to_tokens(h).view(len(h), self.config.target_tokens[0], self.config.token_dim)
        return h, self.token_attention(tok)

    def forward(self, x: torch.Tensor, subject: str) -> dict[str, torch.Tensor]:
        """Raw voxels (n, n_voxels) -> ``brain_tokens``, ``projected`` and (with a pixel branch) raw ``vae_latents``."""
        x = self.input_scaling[subject](x)
        h, tokens = self.backbone_forward(x, subject)
        out = {"brain_tokens": tokens, "projected": self.projector(tokens)}
        if self.pixel is not None:
            out["vae_latents"] = self.pixel(x, subject, h) / self.config.vae_scale
        return out

    def loss_weights(self) -> tuple[float, float]:
        """``(w_contrastive, w_prior)`` of this step (a fresh ``softmax(randn(2))`` with ``loss_weighting="random"``)."""
        if self.config.loss_weighting == "random":
            w = torch.randn(2).softmax(-1)
            return float(w[0]), float(w[1])
        return float(self.config.fixed_weights[0]), float(self.config.fixed_weights[1])

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, torch.Tensor]:
        """One step over every subject of ``batch``: w0 x (tokens + g x (global image + global text)) + w1 x 30 x prior
        (+ the pixel branch's L1).

        Returns ``"loss"``, ``"clip"`` (the token term), ``"global_image"``, ``"global_text"``, ``"prior"``,
        ``"lowlevel"``, ``"clip_temperature"``, ``"w_contrastive"`` and ``"w_prior"``.
        """
        c = self.config
        parts = batch["parts"] if "parts" in batch else [batch]
        use_mixco = step < self.mixco_steps
        smooth = self._smoothing(step)
        use_text = c.text_shape is not None and all("text_embeds" in p for p in parts)
        hs, toks, xs, subjects, targets, texts, latents = [], [], [], [], [], [], []
        perms, betas, selects = [], [], []
        offset = 0
        for part in parts:
            x, target = part["x"], part["image_tokens"]
            if smooth:
                x, target = x[: c.smoothing_batch], target[: c.smoothing_batch]
            if tuple(target.shape[1:]) != tuple(c.target_tokens):
                raise ShapeMismatchError(format_error(
                    "image_tokens", f"shape (n, {c.target_tokens[0]}, {c.target_tokens[1]})",
                    f"shape {tuple(target.shape)}", "Set decoder.target_tokens to the latent space's token shape"))
            x = self.input_scaling[part["subject"]](x)
            if c.input_noise > 0:
                x = x + c.input_noise * torch.randn_like(x)
            xs.append(x)
            subjects.append(part["subject"])
            if use_mixco:
                x, perm, beta, select = mixco_batch(x)
                perms.append(perm + offset)
                betas.append(beta)
                selects.append(select)
            h, tokens = self.backbone_forward(x, part["subject"])
            hs.append(h)
            toks.append(tokens)
            targets.append(target.to(tokens.dtype))
            if use_text:
                texts.append(part["text_embeds"][: len(x)].to(tokens.dtype))
            if "vae_latents" in part:
                latents.append(part["vae_latents"][: len(x)])
            offset += len(x)
        tokens, target = torch.cat(toks), torch.cat(targets)
        projected = self.projector(tokens)
        cls, cls_target = projected[:, 0], target[:, 0]
        zero = tokens.new_zeros(())
        text = torch.cat(texts) if use_text else None
        if use_mixco:
            perm, beta = torch.cat(perms), torch.cat(betas)

            def contrast(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
                return mixco_loss(a, b, perm, beta, temperature=c.mixco_temperature, labels=c.mixco_labels,
                                  gather=c.gather_negatives)

            temperature, g = c.mixco_temperature, c.global_weight_mixco
        else:
            temperature, g = self.clip_temperature_at(step), c.global_weight_softclip

            def contrast(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
                return soft_clip_loss(a, b, temperature, gather=c.gather_negatives)

        clip = contrast(projected, target)
        glob_img = contrast(cls, cls_target)
        glob_txt = contrast(cls, text) if text is not None else zero
        prior = self.prior.loss(target, tokens)
        w0, w1 = self.loss_weights()
        loss = w0 * (clip + g * (glob_img + glob_txt)) + w1 * c.prior_weight * prior
        low = zero
        if self.pixel is not None and len(latents) == len(parts):
            if use_mixco:  # the guidance of the unmixed voxels (the pixel targets are not mixed)
                with torch.set_grad_enabled(torch.is_grad_enabled() and not c.detach_guidance):
                    hs = [self.features(x, s) for x, s in zip(xs, subjects)]
            preds = [self.pixel(x, s, h.detach() if c.detach_guidance else h) for x, s, h in zip(xs, subjects, hs)]
            pred = torch.cat(preds)
            low = F.l1_loss(pred, torch.cat(latents).to(pred.dtype) * c.vae_scale)
            loss = loss + c.lowlevel_weight * low
        return {"loss": loss, "clip": clip, "global_image": glob_img, "global_text": glob_txt, "prior": prior,
                "lowlevel": low, "clip_temperature": zero + temperature, "w_contrastive": zero + w0,
                "w_prior": zero + w1}

    @torch.no_grad()
    def predict_latents(self, X: Any, subject: str, *, batch_size: int = 64, use_prior: bool = True,
                        seed: int = 0, guidance: float | None = None) -> dict[str, np.ndarray]:
        """Predict CLIP-L image tokens (through the diffusion prior), the global embedding and the pixel latent.

        Parameters
        ----------
        X : ndarray of shape (n_trials, n_voxels)
            Betas of ``subject`` (after /300; z-scored inside with the stored training statistics).
        subject : str
            Subject id.
        batch_size : int
            Trials per forward pass.
        use_prior : bool
            Turn the brain tokens into image tokens with the diffusion prior (``prior_sampling_steps``,
            guidance ``prior_guidance``); ``False`` returns the brain tokens.
        seed : int
            Seed of the prior's noise.
        guidance : float or None
            Overrides ``prior_guidance``.

        Returns
        -------
        latents : dict
            ``"clip_image_tokens"``: ndarray of shape (n_trials, 257, 768) (VD-normalised space);
            ``"text_embeds"``: ndarray of shape (n_trials, 768), the projected CLS token, trained against the
            image CLS token and the CLIP-L text embedding; with a pixel branch, ``"vae_latents"``: ndarray
            of shape (n_trials, 4, 64, 64), raw SD-VAE latents (the img2img init of the generator).
        """
        X = check_array(X, "X", ndim=2, dtype=np.float32)
        self.adapters[subject].check_input(torch.empty(0, X.shape[1], device="meta"))
        was = self.training
        self.eval()
        device = next(self.parameters()).device
        g = torch.Generator().manual_seed(seed)
        scale = float(self.config.prior_guidance if guidance is None else guidance)
        chunks: dict[str, list[np.ndarray]] = {}
        for lo in range(0, len(X), batch_size):
            out = self(torch.from_numpy(X[lo:lo + batch_size]).to(device), subject)
            tokens = (self.prior.sample(out["brain_tokens"], self.config.prior_sampling_steps, g, scale)
                      if use_prior else out["brain_tokens"])
            result = {"clip_image_tokens": tokens, "text_embeds": out["projected"][:, 0]}
            if "vae_latents" in out:
                result["vae_latents"] = out["vae_latents"]
            for k, v in result.items():
                chunks.setdefault(k, []).append(v.float().cpu().numpy())
        self.train(was)
        return {k: np.concatenate(v) for k, v in chunks.items()}
