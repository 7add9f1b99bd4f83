"""A pixel-space unCLIP: a small conditional diffusion model that draws an image from CLIP image tokens.

This is the generator of the embedded demo's miniature model set (trained by
``pipelines/demo/train_models.py`` on Fashion-MNIST with the demo's tiny CLIP), and
works for any CLIP token space by configuration. The denoiser is a diffusers
``UNet2DConditionModel`` that cross-attends to the CLIP tokens and adds the pooled
(CLS) token to its time embedding (``class_embed_type="projection"``). Sampling is
DDIM with classifier-free guidance; the null condition is all-zero tokens, which
training shows with probability ``cond_drop``.

Two tiers, one code path: :meth:`PixelUnCLIP.from_pretrained` loads trained weights
(the shipped demo folder), ``PixelUnCLIP(PixelUnCLIPConfig(...))`` is the random tiny tier.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .._core.errors import ShapeMismatchError
from .._core.logging import progress
from .._core.validation import check_array, format_error
from ..io.checkpoints import PretrainedMixin

__all__ = ["PixelUnCLIP", "PixelUnCLIPConfig"]


@dataclass
class PixelUnCLIPConfig:
    """Architecture and noise schedule of :class:`PixelUnCLIP`.

    ``attention_levels`` is the number of coarsest UNet levels that cross-attend to the
    tokens (the pooled token also enters every residual block through the time embedding).
    """

    image_size: int = 32
    channels: int = 1
    cond_tokens: int = 17
    cond_dim: int = 64
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    attention_head_dim: int = 8
    attention_levels: int = 1
    norm_num_groups: int = 8
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    cond_drop: float = 0.1
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PixelUnCLIPConfig:
        d = dict(d)
        d["block_out_channels"] = tuple(d.get("block_out_channels", cls.block_out_channels))
        return cls(**d)


class PixelUnCLIP(PretrainedMixin, nn.Module):
    """Conditional pixel diffusion from CLIP image tokens.

    Parameters
    ----------
    config : PixelUnCLIPConfig
        Architecture. Expects conditioning tokens of shape (cond_tokens, cond_dim)
        whose first token is the pooled/CLS token.
    """

    config_class = PixelUnCLIPConfig
    expects = "clip_image_tokens"

    def __init__(self, config: PixelUnCLIPConfig | None = None) -> None:
        super().__init__()
        from diffusers import UNet2DConditionModel

        self.config = config = config or PixelUnCLIPConfig()
        n = len(config.block_out_channels)
        k = min(max(config.attention_levels, 1), n)  # cross-attention only at the k coarsest levels
        self.unet = UNet2DConditionModel(
            sample_size=config.image_size,
            in_channels=config.channels,
            out_channels=config.channels,
            block_out_channels=tuple(config.block_out_channels),
            down_block_types=("DownBlock2D",) * (n - k) + ("CrossAttnDownBlock2D",) * k,
            up_block_types=("CrossAttnUpBlock2D",) * k + ("UpBlock2D",) * (n - k),
            layers_per_block=config.layers_per_block,
            cross_attention_dim=config.cond_dim,
            attention_head_dim=config.attention_head_dim,
            norm_num_groups=config.norm_num_groups,
            class_embed_type="projection",
            projection_class_embeddings_input_dim=config.cond_dim,
        )
        betas = self._betas(config)
        alphas_cumprod = torch.cumprod(1 - betas, 0)
        self.register_buffer("alphas_cumprod", alphas_cumprod, persistent=False)

    @staticmethod
    def _betas(config: PixelUnCLIPConfig) -> torch.Tensor:
        from diffusers import DDPMScheduler

        sched = DDPMScheduler(num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule)
        return sched.betas.float()

    # ----------------------------------------------------------------- checks
    def _check_tokens(self, tokens: Any) -> np.ndarray:
        arr = check_array(tokens, "latents['clip_image_tokens']", ndim=3, dtype=np.float32)
        want = (self.config.cond_tokens, self.config.cond_dim)
        if tuple(arr.shape[1:]) != want:
            raise ShapeMismatchError(
                format_error("latents['clip_image_tokens']", f"CLIP image tokens of shape (n, {want[0]}, {want[1]})",
                             arr, "Use a decoder trained for this generator's CLIP space")
            )
        return arr

    # --------------------------------------------------------------- training
    def denoise(self, x: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Predicted noise for noisy images ``x`` (n, C, H, W) at timesteps ``t`` given ``tokens`` (n, T, D)."""
        return self.unet(x, t, encoder_hidden_states=tokens, class_labels=tokens[:, 0]).sample

    def training_loss(self, images: torch.Tensor, tokens: torch.Tensor,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """Epsilon-prediction MSE with condition dropout.

        Parameters
        ----------
        images : Tensor of shape (n, C, H, W)
            Targets scaled to [-1, 1].
        tokens : Tensor of shape (n, cond_tokens, cond_dim)
            Conditioning CLIP tokens.
        """
        n = images.shape[0]
        dev = images.device
        t = torch.randint(0, self.config.num_train_timesteps, (n,), generator=generator).to(dev)
        noise = torch.randn(images.shape, generator=generator).to(dev)
        a = self.alphas_cumprod.to(dev)[t].reshape(n, 1, 1, 1)
        noisy = a.sqrt() * images + (1 - a).sqrt() * noise
        keep = (torch.rand(n, generator=generator) >= self.config.cond_drop).to(dev).reshape(n, 1, 1)
        cond = tokens * keep
        return torch.nn.functional.mse_loss(self.denoise(noisy, t, cond), noise)

    # --------------------------------------------------------------- sampling
    @torch.inference_mode()
    def generate(self, latents: dict[str, Any], *, seeds: int | list[int] = 0, steps: int = 25,
                 guidance: float = 3.0, batch_size: int = 64, verbose: Any = None) -> np.ndarray:
        """Draw one image per conditioning item (DDIM, eta 0, classifier-free guidance).

        Parameters
        ----------
        latents : dict
            Must hold ``"clip_image_tokens"`` of shape (n, cond_tokens, cond_dim).
        seeds : int or list of int
            Seed of each item's initial noise (an int ``s`` means ``s, s+1, ...``), so a
            batch gives the same images as one item at a time.
        steps : int
            DDIM steps.
        guidance : float
            Classifier-free guidance scale (1 disables guidance).
        batch_size : int
            Items denoised together.

        Returns
        -------
        images : ndarray of uint8, shape (n, image_size, image_size, 3)
        """
        from diffusers import DDIMScheduler

        if "clip_image_tokens" not in latents:
            raise ShapeMismatchError(format_error("latents", "a dict with 'clip_image_tokens'", sorted(latents)))
        tokens = self._check_tokens(latents["clip_image_tokens"])
        n = len(tokens)
        seed_list = list(range(seeds, seeds + n)) if isinstance(seeds, int) else list(seeds)
        if len(seed_list) != n:
            raise ShapeMismatchError(format_error("seeds", f"{n} seeds (one per item)", f"{len(seed_list)}"))
        dev = next(self.parameters()).device
        c = self.config
        sched = DDIMScheduler(num_train_timesteps=c.num_train_timesteps, beta_schedule=c.beta_schedule,
                              clip_sample=True, set_alpha_to_one=True)
        sched.set_timesteps(steps)
        out = np.empty((n, c.image_size, c.image_size, 3), np.uint8)
        for start in progress(range(0, n, batch_size), desc="generate", unit="batch", verbose=verbose):
            sl = slice(start, min(start + batch_size, n))
            cond = torch.as_tensor(tokens[sl], device=dev)
            x = torch.stack([torch.randn((c.channels, c.image_size, c.image_size),
                                         generator=torch.Generator().manual_seed(int(s))) for s in seed_list[sl]]).to(dev)
            null = torch.zeros_like(cond)
            for t in sched.timesteps:
                tt = torch.full((len(x),), int(t), device=dev)
                if guidance == 1.0:
                    eps = self.denoise(x, tt, cond)
                else:
                    e = self.denoise(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([cond, null]))
                    e_c, e_u = e.chunk(2)
                    eps = e_u + guidance * (e_c - e_u)
                x = sched.step(eps, t, x).prev_sample
            img = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            out[sl] = np.repeat(img, 3, axis=-1) if c.channels == 1 else img
        return out

    def describe(self) -> dict[str, Any]:
        """Config and parameter count, for provenance."""
        return {"class": type(self).__name__, "config": asdict(self.config),
                "n_parameters": sum(p.numel() for p in self.parameters())}
