"""A MindEye2-style shared-subject fMRI decoder (Scotti et al., ICML 2024).

Pipeline (real size)::

    voxels (n_s) --Linear--> 4096                                      [per-subject linear adapter]
    --4 residual MLP blocks (LayerNorm, Linear, GELU, Dropout 0.15, Linear)-->  [shared backbone]
    --Linear--> 256 x 1664 target tokens (OpenCLIP ViT-bigG-14 patches; any latent by config)
    --retrieval projector (3-layer MLP per token)--> contrastive embedding
    --diffusion prior (transformer over the tokens, 100 timesteps, 20 sampling steps)--> tokens
    --optional low-level head--> image-autoencoder (VAE) latent

Losses: prior MSE x 30 + contrastive (BiMixCo during the first third of training, then
SoftCLIP) + low-level L1 x 0.5. Batches hold ``"subject"``, ``"x"``, ``"tokens"`` (n, T, D)
and optionally ``"vae_latents"``; several subjects per step come as ``{"parts": [...]}``.
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
from .._core.validation import check_array, dataclass_from_dict, format_error
from ..io.checkpoints import PretrainedMixin
from .adapters import AdapterBank, LinearAdapter
from .losses import mixco_batch, mixco_loss, soft_clip_loss

__all__ = ["MindEye2Config", "MindEye2"]

NSD_VOXELS = {"nsd/subj01": 15724, "nsd/subj02": 14278, "nsd/subj03": 15226, "nsd/subj04": 13153,
              "nsd/subj05": 13039, "nsd/subj06": 17907, "nsd/subj07": 12682, "nsd/subj08": 14386}


@dataclass
class MindEye2Config:
    """Sizes and loss weights of :class:`MindEye2` (defaults: real size, bigG targets).

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
    target_tokens : list of int
        (n_tokens, dim) of the target latent: (256, 1664) for ViT-bigG-14 patch tokens.
    target_key : str
        Key of ``predict_latents``'s output (``"clip_bigg_tokens"``).
    prior_depth, prior_heads, prior_timesteps, prior_sampling_steps : int
        Diffusion prior: transformer depth (6), heads, training timesteps (100), sampling steps (20).
    prior_dim : int or None
        Prior model width (defaults to the token dim).
    lowlevel_shape : list of int or None
        (c, h, w) of the image-autoencoder latent predicted by the low-level head (``None``: no head).
    prior_weight, clip_weight, lowlevel_weight : float
        Loss weights (30, 1, 0.5).
    mixco_fraction : float
        Fraction of the training steps using BiMixCo before switching to SoftCLIP (1/3).
    clip_temperature, mixco_temperature : float
        SoftCLIP / BiMixCo temperatures.
    """

    subjects: dict[str, int] = field(default_factory=lambda: dict(NSD_VOXELS))
    width: int = 4096
    n_blocks: int = 4
    dropout: float = 0.15
    target_tokens: list[int] = field(default_factory=lambda: [256, 1664])
    target_key: str = "clip_bigg_tokens"
    prior_depth: int = 6
    prior_heads: int = 32
    prior_dim: int | None = None
    prior_timesteps: int = 100
    prior_sampling_steps: int = 20
    lowlevel_shape: list[int] | None = None
    prior_weight: float = 30.0
    clip_weight: float = 1.0
    lowlevel_weight: float = 0.5
    mixco_fraction: float = 1 / 3
    clip_temperature: float = 0.125
    mixco_temperature: float = 0.05

    @classmethod
    def low_compute(cls, **overrides: Any) -> MindEye2Config:
        """The paper's low-compute variant (shared width 1024)."""
        return cls(**{"width": 1024, **overrides})

    @classmethod
    def tiny(cls, subjects: dict[str, int] | None = None, **overrides: Any) -> MindEye2Config:
        """The same structure at toy width (random init, offline)."""
        values: dict[str, Any] = dict(subjects=dict(subjects or {"nsd/subj01": 9, "nsd/subj02": 11}), width=16,
                                      target_tokens=[3, 8], prior_depth=2, prior_heads=2, prior_timesteps=100,
                                      prior_sampling_steps=20, lowlevel_shape=[2, 3, 3])
        values.update(overrides)
        return cls(**values)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MindEye2Config:
        return dataclass_from_dict(cls, values, "decoder")


class _ResBlock(nn.Module):
    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValidationError(format_error("prior_heads", f"a divisor of the prior width {dim}", heads))
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class _PriorLayer(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), _Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class DiffusionPrior(nn.Module):
    """DALL-E-2-style prior: denoise target tokens conditioned on the brain tokens (predicts x0).

    The sequence is ``[brain tokens, noisy target tokens]`` plus positions and a timestep
    embedding; bidirectional SDPA attention; cosine noise schedule over ``timesteps``.
    """

    def __init__(self, n_tokens: int, token_dim: int, dim: int, depth: int, heads: int, timesteps: int) -> None:
        super().__init__()
        self.n_tokens, self.timesteps = n_tokens, timesteps
        self.inp = nn.Linear(token_dim, dim)
        self.cond = nn.Linear(token_dim, dim)
        self.pos = nn.Parameter(torch.zeros(1, 2 * n_tokens, dim))
        self.time = nn.Embedding(timesteps, dim)
        self.layers = nn.ModuleList([_PriorLayer(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.outp = nn.Linear(dim, token_dim)
        s = 0.008
        t = torch.linspace(0, 1, timesteps + 1)
        abar = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
        abar = (abar / abar[0])[1:].clamp(1e-5, 0.9999)
        self.register_buffer("alphas_cumprod", abar, persistent=False)

    def denoise(self, noisy: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = torch.cat([self.cond(cond), self.inp(noisy)], dim=1) + self.pos + self.time(t)[:, None]
        for layer in self.layers:
            h = layer(h)
        return self.outp(self.norm(h[:, self.n_tokens:]))  # type: ignore[no-any-return]

    def loss(self, target: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """MSE of the predicted clean tokens at a random timestep."""
        n = target.shape[0]
        t = torch.randint(0, self.timesteps, (n,), device=target.device)
        abar = self.alphas_cumprod[t].view(n, 1, 1)
        noise = torch.randn_like(target)
        noisy = abar.sqrt() * target + (1 - abar).sqrt() * noise
        return F.mse_loss(self.denoise(noisy, t, cond), target)

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, steps: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Deterministic DDIM sampling in ``steps`` steps from pure noise."""
        n, _, d = cond.shape
        x = torch.randn((n, self.n_tokens, d), generator=generator, device="cpu").to(cond.device, cond.dtype)
        ts = torch.linspace(self.timesteps - 1, 0, steps).round().long().tolist()
        for i, t in enumerate(ts):
            abar = self.alphas_cumprod[t]
            x0 = self.denoise(x, torch.full((n,), t, device=cond.device, dtype=torch.long), cond)
            if i + 1 == len(ts):
                return x0
            eps = (x - abar.sqrt() * x0) / (1 - abar).sqrt()
            abar_next = self.alphas_cumprod[ts[i + 1]]
            x = abar_next.sqrt() * x0 + (1 - abar_next).sqrt() * eps
        return x


class MindEye2(PretrainedMixin, nn.Module):
    """MindEye2-style decoder: linear subject adapters, shared residual MLP, prior, retrieval and low-level heads.

    Parameters
    ----------
    config : MindEye2Config
        Sizes (``MindEye2Config.tiny()`` for a toy model, ``low_compute()`` for width 1024).
    """

    config_class = MindEye2Config

    def __init__(self, config: MindEye2Config | None = None) -> None:
        super().__init__()
        self.config = config = config or MindEye2Config()
        n_tok, dim = config.target_tokens
        self.adapters = AdapterBank()
        subjects, config.subjects = dict(config.subjects), {}
        for subject, n in subjects.items():
            self._add(subject, int(n))
        self.backbone = nn.Sequential(*[_ResBlock(config.width, config.dropout) for _ in range(config.n_blocks)])
        self.to_tokens = nn.Linear(config.width, n_tok * dim)
        self.retrieval = nn.Sequential(nn.LayerNorm(dim), nn.GELU(), nn.Linear(dim, dim),
                                       nn.LayerNorm(dim), nn.GELU(), nn.Linear(dim, dim),
                                       nn.LayerNorm(dim), nn.GELU(), nn.Linear(dim, dim))
        self.prior = DiffusionPrior(n_tok, dim, config.prior_dim or dim, config.prior_depth, config.prior_heads,
                                    config.prior_timesteps)
        self.lowlevel = (nn.Linear(config.width, int(np.prod(config.lowlevel_shape)))
                         if config.lowlevel_shape else None)
        self.mixco_steps = 0

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

    def configure_training(self, total_steps: int, steps_per_epoch: int) -> None:
        """Trainer hook: BiMixCo during the first ``mixco_fraction`` of the steps."""
        self.mixco_steps = int(round(self.config.mixco_fraction * total_steps))

    def backbone_forward(self, x: torch.Tensor, subject: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(shared features (n, width), brain tokens (n, T, D))."""
        h = self.backbone(self.adapters[subject](x))
        return h, self.to_tokens(h).view(len(h), *self.config.target_tokens)

    def forward(self, x: torch.Tensor, subject: str) -> dict[str, torch.Tensor]:
        h, tokens = self.backbone_forward(x, subject)
        out = {"brain_tokens": tokens, "retrieval": self.retrieval(tokens)}
        if self.lowlevel is not None and self.config.lowlevel_shape:
            out["vae_latents"] = self.lowlevel(h).view(len(h), *self.config.lowlevel_shape)
        return out

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, torch.Tensor]:
        """Prior MSE x 30 + BiMixCo (first third) or SoftCLIP + low-level L1 x 0.5."""
        c = self.config
        parts = batch["parts"] if "parts" in batch else [batch]
        use_mixco = step < self.mixco_steps
        hs, toks, targets, perms, betas, lows, low_t = [], [], [], [], [], [], []
        offset = 0
        for part in parts:
            x, target = part["x"], part["tokens"]
            if tuple(target.shape[1:]) != tuple(c.target_tokens):
                raise ShapeMismatchError(format_error("tokens", f"shape (n, {c.target_tokens[0]}, {c.target_tokens[1]})",
                                                      f"shape {tuple(target.shape)}",
                                                      "Set decoder.target_tokens to the latent space's token shape"))
            if use_mixco:
                x, perm, beta, _ = mixco_batch(x)
                perms.append(perm + offset)
                betas.append(beta)
            h, tokens = self.backbone_forward(x, part["subject"])
            hs.append(h)
            toks.append(tokens)
            targets.append(target.to(tokens.dtype))
            if self.lowlevel is not None and "vae_latents" in part:
                lows.append(self.lowlevel(h))
                low_t.append(part["vae_latents"].flatten(1))
            offset += len(x)
        tokens, target = torch.cat(toks), torch.cat(targets)
        retr = self.retrieval(tokens)
        if use_mixco:
            clip = mixco_loss(retr, target, torch.cat(perms), torch.cat(betas), temperature=c.mixco_temperature)
        else:
            clip = soft_clip_loss(retr, target, c.clip_temperature)
        prior = self.prior.loss(target, tokens)
        low = F.l1_loss(torch.cat(lows), torch.cat(low_t).to(tokens.dtype)) if lows else tokens.new_zeros(())
        loss = c.prior_weight * prior + c.clip_weight * clip + c.lowlevel_weight * low
        return {"loss": loss, "prior": prior, "clip": clip, "lowlevel": low}

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
            Refine the backbone tokens with the diffusion prior (20 DDIM steps by default).
        seed : int
            Seed of the prior's starting noise.

        Returns
        -------
        latents : dict
            ``config.target_key`` (``"clip_bigg_tokens"``): ndarray of shape (n_trials, 256, 1664);
            ``"retrieval_embeds"``: ndarray of shape (n_trials, 256, 1664); with a low-level head,
            ``"vae_latents"``: ndarray of shape (n_trials, c, h, w).
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
            tokens = (self.prior.sample(out["brain_tokens"], self.config.prior_sampling_steps, g)
                      if use_prior else out["brain_tokens"])
            result = {self.config.target_key: tokens, "retrieval_embeds": out["retrieval"]}
            if "vae_latents" in out:
                result["vae_latents"] = out["vae_latents"]
            for k, v in result.items():
                chunks.setdefault(k, []).append(v.float().cpu().numpy())
        self.train(was)
        return {k: np.concatenate(v) for k, v in chunks.items()}
