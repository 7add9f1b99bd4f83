"""The dalle2-pytorch diffusion-prior network shared by MindEye2 and WAVE.

MindEye1's ``VersatileDiffusionPriorNetwork`` (which WAVE's ``reconstruct.py`` builds with ``depth=6,
dim_head=64, heads=dim // 64, causal=False, learned_query_mode="pos_emb"``) and MindEye2's ``PriorNetwork`` wrap
the same non-causal ``FlaggedCausalTransformer`` of dalle2-pytorch:

- a continuous timestep embedding: sinusoidal features of width ``dim`` then an MLP
  ``Linear(dim, 2 dim), SiLU, Linear(2 dim, 2 dim), SiLU, Linear(2 dim, dim)``;
- ``depth`` x [multi-query attention (``heads`` queries, one key/value head, a learned null key/value, cosine
  similarity x 16, rotary positions on the first ``min(32, dim_head)`` features, a T5 relative-position bias
  over 32 buckets), SwiGLU feed-forward], each pre-normed by a gain-only LayerNorm and residual;
- a "stable" LayerNorm (divided by its max first) and a bias-free ``Linear(dim, dim)``.

Each decoder file keeps its own conditioning tokens, noise schedule, loss and sampler; the blocks live here
once. Facts from dalle2-pytorch (``Attention``, ``FeedForward``, ``RelPosBias``, ``LayerNorm``, ``MLP``,
``SinusoidalPosEmb``) and MindEye1 / MindEye2 ``models.py``, read and written anew.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class GainNorm(nn.Module):
    """LayerNorm with a gain and no bias (eps 1e-5 in float32, 1e-3 otherwise); ``stable`` divides by the max."""

    def __init__(self, dim: int, stable: bool = False) -> None:
        super().__init__()
        self.stable = stable
        self.g = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eps = 1e-5 if x.dtype == torch.float32 else 1e-3
        if self.stable:
            x = x / x.amax(dim=-1, keepdim=True).detach()
        var, mean = torch.var_mean(x, dim=-1, unbiased=False, keepdim=True)
        return (x - mean) * (var + eps).rsqrt() * self.g


def _rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


def relative_buckets(n_query: int, n_key: int, n_buckets: int = 32, max_distance: int = 128,
                     device: Any = None) -> torch.Tensor:
    """T5-style buckets of ``max(query - key, 0)`` (key 0 is the null key), shape (n_query, n_key)."""
    dist = (torch.arange(n_query, device=device)[:, None] - torch.arange(n_key, device=device)[None]).clamp_min(0)
    exact = n_buckets // 2
    large = exact + (torch.log(dist.clamp_min(1).float() / exact) / math.log(max_distance / exact)
                     * (n_buckets - exact)).long()
    return torch.where(dist < exact, dist, large.clamp_max(n_buckets - 1))


class PriorAttention(nn.Module):
    """Multi-query attention: ``heads`` queries, one key/value head, a learned null key/value,
    cosine similarity scaled by 16, rotary positions on the first ``min(32, dim_head)`` features."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        self.norm = GainNorm(dim)
        self.null_kv = nn.Parameter(torch.randn(2, dim_head))
        self.to_q = nn.Linear(dim, heads * dim_head, bias=False)
        self.to_kv = nn.Linear(dim, 2 * dim_head, bias=False)
        self.to_out = nn.Sequential(nn.Linear(heads * dim_head, dim, bias=False), GainNorm(dim))

    def forward(self, x: torch.Tensor, bias: torch.Tensor, rotary: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        x = self.norm(x)
        q = self.to_q(x).view(b, n, self.heads, self.dim_head).transpose(1, 2)  # (b, h, n, d)
        k, v = self.to_kv(x).chunk(2, dim=-1)  # (b, n, d)
        r = rotary.shape[-1]
        cos, sin = rotary.cos().to(q.dtype), rotary.sin().to(q.dtype)
        q = torch.cat([q[..., :r] * cos + _rotate_pairs(q[..., :r]) * sin, q[..., r:]], dim=-1)
        k = torch.cat([k[..., :r] * cos + _rotate_pairs(k[..., :r]) * sin, k[..., r:]], dim=-1)
        nk, nv = self.null_kv.to(k.dtype).unbind(0)
        k = torch.cat([nk.expand(b, 1, -1), k], dim=1)
        v = torch.cat([nv.expand(b, 1, -1), v], dim=1)
        q, k = F.normalize(q, dim=-1) * 4.0, F.normalize(k, dim=-1) * 4.0  # cosine similarity x 16
        k = k[:, None].expand(b, self.heads, n + 1, self.dim_head)
        v = v[:, None].expand(b, self.heads, n + 1, self.dim_head)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=1.0)
        return self.to_out(y.transpose(1, 2).reshape(b, n, -1))  # type: ignore[no-any-return]


class SwiGLUFeedForward(nn.Module):
    """Pre-normed SwiGLU feed-forward: ``Linear(dim, 2 mult dim)``, ``h * SiLU(gate)``, ``Linear(mult dim, dim)``."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.norm = GainNorm(dim)
        self.inp = nn.Linear(dim, 2 * mult * dim, bias=False)
        self.out = nn.Linear(mult * dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, gate = self.inp(self.norm(x)).chunk(2, dim=-1)
        return self.out(h * F.silu(gate))  # type: ignore[no-any-return]


def time_mlp(dim: int) -> nn.Sequential:
    """dalle2's ``MLP(dim, dim)`` on the sinusoidal timestep features (expansion 2, depth 2, no norm)."""
    return nn.Sequential(nn.Linear(dim, 2 * dim), nn.SiLU(), nn.Linear(2 * dim, 2 * dim), nn.SiLU(),
                         nn.Linear(2 * dim, dim))


def sinusoidal_time(t: torch.Tensor, dim: int) -> torch.Tensor:
    """dalle2's ``SinusoidalPosEmb(dim)`` of timesteps ``t`` (batch,): ``[sin, cos]`` of ``dim // 2`` frequencies."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * -(math.log(10000) / (half - 1)))
    arg = t.float()[:, None] * freqs[None]
    return torch.cat([arg.sin(), arg.cos()], dim=-1)


def prior_layers(dim: int, depth: int, heads: int, dim_head: int, ff_mult: int) -> nn.ModuleList:
    """``depth`` x [``PriorAttention``, ``SwiGLUFeedForward``]."""
    return nn.ModuleList([nn.ModuleList([PriorAttention(dim, heads, dim_head), SwiGLUFeedForward(dim, ff_mult)])
                          for _ in range(depth)])


def rotary_frequencies(dim_head: int) -> torch.Tensor:
    """Inverse frequencies of the rotary embedding on ``min(32, dim_head)`` features (base 10000)."""
    rot = min(32, dim_head)
    return 1.0 / 10000 ** (torch.arange(0, rot, 2)[: rot // 2].float() / rot)


def run_layers(h: torch.Tensor, layers: nn.ModuleList, rel_pos_bias: nn.Embedding,
               rotary_freqs: torch.Tensor) -> torch.Tensor:
    """The residual attention / feed-forward stack over the token sequence ``h`` (batch, length, dim)."""
    length = h.shape[1]
    bias = rel_pos_bias(relative_buckets(length, length + 1, device=h.device)).permute(2, 0, 1)
    pos = torch.arange(length, device=h.device, dtype=torch.float32)
    rotary = (pos[:, None] * rotary_freqs.to(h.device)[None]).repeat_interleave(2, dim=-1)
    for attn, ff in layers:  # type: ignore[misc]
        h = attn(h, bias, rotary) + h
        h = ff(h) + h
    return h
