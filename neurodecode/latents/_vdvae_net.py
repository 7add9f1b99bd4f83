"""The Very Deep VAE (Child, ICLR 2021) as a torch module, and its released checkpoints.

Written from the published architecture (openai/vdvae ``hps.py`` for the ImageNet-64 setting, the
paper's Figure 3): a stack of residual bottleneck blocks going down in resolution (the encoder),
and a top-down decoder whose blocks each hold one layer of latent variables.

Bottleneck block
    GELU -> 1x1 conv (width -> width / 4) -> GELU -> 3x3 -> GELU -> 3x3 -> GELU -> 1x1 conv to the
    output width (the 3x3 convs are 1x1 at resolutions 1 and 2), with a residual connection where
    input and output widths agree, and an average-pool after it for the encoder's ``d`` blocks.
Encoder
    3x3 stem conv to ``width``, then the blocks of ``enc_blocks`` (``"64x11"``: 11 blocks at 64 px,
    ``"64d2"``: one block then a x2 average-pool). The last activation at each resolution feeds
    the decoder.
Decoder block (one latent layer of ``zdim`` channels at its resolution)
    ``x`` is the running state at the block's resolution (a learned bias at first), plus the
    nearest-neighbour upsampled state of the ``mixin`` resolution for ``"4m1"``-style blocks.
    The prior block maps ``x`` to the prior mean and log-std of ``z`` and a residual for ``x``;
    the posterior block maps ``[x, encoder activation]`` to the posterior mean and log-std;
    ``z`` (a posterior sample when encoding, a prior sample or a given value when decoding) is
    projected by a 1x1 conv and added, then a residual bottleneck block updates ``x``.
Output
    ``x * gain + bias`` at the image resolution, then a 1x1 conv to the parameters of a mixture
    of ``num_mixtures`` discretised logistics per pixel (10 numbers per component for RGB: a
    logit, then per colour channel a mean, a log-scale and an autoregressive coefficient).

:data:`IMAGENET64` is the configuration of OpenAI's released ``imagenet64-iter-1600000-model-ema.th``;
:func:`reference_to_ours` maps its keys (``encoder.in_conv``, ``decoder.dec_blocks.N.enc.c1``...)
onto this module's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._core.errors import ValidationError
from .._core.validation import format_error

__all__ = ["VDVAEConfig", "VDVAE", "IMAGENET64", "TINY", "parse_blocks", "reference_to_ours", "latent_layout"]


@dataclass(frozen=True)
class VDVAEConfig:
    """Architecture of a VDVAE (field names follow the published ``hps.py``).

    Parameters
    ----------
    image_size : int
        Side of the square input and output images.
    width : int
        Channels of every encoder and decoder block.
    zdim : int
        Channels of each latent layer.
    bottleneck_multiple : float
        Inner width of the bottleneck blocks, as a fraction of ``width``.
    enc_blocks, dec_blocks : str
        Block strings (``"64x11,64d2,..."`` and ``"1x2,4m1,4x3,..."``).
    num_mixtures : int
        Components of the discretised-logistic mixture of the output.
    no_bias_above : int
        Resolutions up to this one start the decoder from a learned bias (others from zeros).
    n_latent_layers : int
        How many of the first (coarsest) latent layers form the latent vector (Brain-Diffuser: 31).
    input_shift, input_scale : float
        Pixel normalisation of the encoder input, ``(pixel + shift) * scale``, pixels in [0, 255].
    """

    image_size: int = 64
    width: int = 512
    zdim: int = 16
    bottleneck_multiple: float = 0.25
    enc_blocks: str = "64x11,64d2,32x20,32d2,16x9,16d2,8x8,8d2,4x7,4d4,1x5"
    dec_blocks: str = "1x2,4m1,4x3,8m4,8x7,16m8,16x15,32m16,32x31,64m32,64x12"
    num_mixtures: int = 10
    no_bias_above: int = 64
    n_latent_layers: int = 31
    input_shift: float = -115.92961967
    input_scale: float = 1.0 / 69.37404

    def __post_init__(self) -> None:
        dec = parse_blocks(self.dec_blocks)
        if not 1 <= int(self.n_latent_layers) <= len(dec):
            raise ValidationError(format_error("n_latent_layers", f"an int in [1, {len(dec)}] (the decoder's blocks)",
                                               self.n_latent_layers))
        if max(r for r, _ in dec) != self.image_size:
            raise ValidationError(format_error("dec_blocks", f"blocks reaching image_size={self.image_size}",
                                               self.dec_blocks))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_blocks(spec: str) -> list[tuple[int, int | None]]:
    """``"64x2,64d2,4m1,1"`` -> ``[(64, None), (64, None), (64, 2), (4, 1), (1, None)]``.

    ``RxN``: N blocks at resolution R; ``RdK``: one block at R, then a K-fold average-pool;
    ``RmM``: one decoder block at R that adds the upsampled state of resolution M.
    """
    out: list[tuple[int, int | None]] = []
    for part in str(spec).split(","):
        part = part.strip()
        try:
            if "x" in part:
                res, count = part.split("x")
                out += [(int(res), None)] * int(count)
            elif "d" in part or "m" in part:
                res, other = part.replace("m", "d").split("d")
                out.append((int(res), int(other)))
            else:
                out.append((int(part), None))
        except ValueError as exc:
            raise ValidationError(format_error("block string", "comma-separated 'RxN', 'RdK', 'RmM' or 'R' items",
                                               repr(spec), f"Fix the item {part!r}")) from exc
    return out


#: OpenAI's ImageNet-64 VDVAE (``hps.py``: ``imagenet64`` = ``imagenet32`` with 64 px block strings;
#: width 512, zdim 16, bottleneck 0.25, 10 mixtures; input shift/scale of ``data.py``).
IMAGENET64 = VDVAEConfig()

#: The tiny twin: the same structure at 32 px, width 56, zdim 4 (7 latent layers = 1,924 dims:
#: the coarsest three resolutions and the first layer of the second-finest, as 31 is at 64 px).
TINY = VDVAEConfig(image_size=32, width=56, zdim=4, enc_blocks="32x1,32d2,16x1,16d2,8x1,8d2,4x1,4d4,1x1",
                   dec_blocks="1x1,4m1,4x1,8m4,8x2,16m8,16x2,32m16,32x1", num_mixtures=2, n_latent_layers=7)


def latent_layout(config: VDVAEConfig) -> list[tuple[int, int, int]]:
    """Shape ``(zdim, res, res)`` of each latent layer of the latent vector, coarsest first."""
    blocks = parse_blocks(config.dec_blocks)[: config.n_latent_layers]
    return [(config.zdim, res, res) for res, _ in blocks]


def _conv(c_in: int, c_out: int, k: int) -> nn.Conv2d:
    conv = nn.Conv2d(c_in, c_out, k, padding=k // 2)
    if conv.bias is not None and conv.bias.device.type != "meta":
        nn.init.zeros_(conv.bias)
    return conv


class _Bottleneck(nn.Module):
    """GELU-conv x4 bottleneck (1x1, 3x3, 3x3, 1x1), optionally residual, optionally average-pooled."""

    def __init__(self, c_in: int, c_mid: int, c_out: int, *, spatial: bool, residual: bool,
                 down: int | None = None, last_scale: float = 1.0) -> None:
        super().__init__()
        k = 3 if spatial else 1
        self.conv1, self.conv2 = _conv(c_in, c_mid, 1), _conv(c_mid, c_mid, k)
        self.conv3, self.conv4 = _conv(c_mid, c_mid, k), _conv(c_mid, c_out, 1)
        self.residual, self.down = residual, down
        if last_scale != 1.0 and self.conv4.weight.device.type != "meta":
            with torch.no_grad():
                self.conv4.weight.mul_(last_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            h = conv(F.gelu(h))
        out = x + h if self.residual else h
        return F.avg_pool2d(out, self.down) if self.down else out


class _Encoder(nn.Module):
    def __init__(self, cfg: VDVAEConfig) -> None:
        super().__init__()
        w, mid = cfg.width, int(cfg.width * cfg.bottleneck_multiple)
        blocks = parse_blocks(cfg.enc_blocks)
        self.stem = _conv(3, w, 3)
        self.blocks = nn.ModuleList(
            _Bottleneck(w, mid, w, spatial=res > 2, residual=True, down=down, last_scale=float(np.sqrt(1 / len(blocks))))
            for res, down in blocks)

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """Normalised pixels (n, 3, S, S) -> the last activation at each resolution."""
        x = self.stem(x)
        acts = {int(x.shape[-1]): x}
        for block in self.blocks:
            x = block(x)
            acts[int(x.shape[-1])] = x
        return acts


class _DecoderBlock(nn.Module):
    def __init__(self, cfg: VDVAEConfig, res: int, mixin: int | None, n_blocks: int) -> None:
        super().__init__()
        w, mid, z = cfg.width, int(cfg.width * cfg.bottleneck_multiple), cfg.zdim
        spatial = res > 2
        scale = float(np.sqrt(1 / n_blocks))
        self.res, self.mixin, self.zdim = res, mixin, z
        self.posterior = _Bottleneck(2 * w, mid, 2 * z, spatial=spatial, residual=False)
        self.prior = _Bottleneck(w, mid, 2 * z + w, spatial=spatial, residual=False, last_scale=0.0)
        self.z_proj = _conv(z, w, 1)
        if self.z_proj.weight.device.type != "meta":
            with torch.no_grad():
                self.z_proj.weight.mul_(scale)
        self.resnet = _Bottleneck(w, mid, w, spatial=spatial, residual=True, last_scale=scale)

    def state_in(self, xs: dict[int, torch.Tensor], n: int, like: torch.Tensor) -> torch.Tensor:
        x = xs.get(self.res)
        if x is None:
            x = like.new_zeros((n, like.shape[1], self.res, self.res))
        elif x.shape[0] != n:
            x = x.expand(n, -1, -1, -1)
        if self.mixin is not None:
            x = x + F.interpolate(xs[self.mixin][:, : x.shape[1]], scale_factor=self.res // self.mixin, mode="nearest")
        return x

    def prior_params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feats = self.prior(x)
        z = self.zdim
        return feats[:, :z], feats[:, z:2 * z], x + feats[:, 2 * z:]

    def update(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.resnet(x + self.z_proj(z))


class _Decoder(nn.Module):
    """The top-down blocks, the learned initial state per resolution, the output gain/bias and conv."""

    def __init__(self, cfg: VDVAEConfig) -> None:
        super().__init__()
        dec = parse_blocks(cfg.dec_blocks)
        self.blocks = nn.ModuleList(_DecoderBlock(cfg, r, m, len(dec)) for r, m in dec)
        self.resolutions = sorted({r for r, _ in dec})
        self.res_bias = nn.ParameterList(
            nn.Parameter(torch.zeros(1, cfg.width, r, r)) for r in self.resolutions if r <= cfg.no_bias_above)
        self.gain = nn.Parameter(torch.ones(1, cfg.width, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, cfg.width, 1, 1))
        self.out_conv = _conv(cfg.width, cfg.num_mixtures * 10, 1)


class VDVAE(nn.Module):
    """The VDVAE network (see the module docstring); ``encoder`` and ``decoder`` parts.

    Parameters
    ----------
    config : VDVAEConfig
        Architecture (:data:`IMAGENET64` for the released weights, :data:`TINY` for tests).
    """

    def __init__(self, config: VDVAEConfig = IMAGENET64) -> None:
        super().__init__()
        self.config = config
        self.encoder = _Encoder(config)
        self.decoder = _Decoder(config)
        self.resolutions = self.decoder.resolutions
        self.layout = latent_layout(config)
        self.n_features = int(sum(int(np.prod(s)) for s in self.layout))

    # ------------------------------------------------------------------ helpers
    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels (n, 3, S, S) in [0, 255] -> the encoder's input scale."""
        return (pixels + self.config.input_shift) * self.config.input_scale

    def _initial_state(self, n: int) -> dict[int, torch.Tensor]:
        return {int(b.shape[-1]): b.expand(n, -1, -1, -1) for b in self.decoder.res_bias}

    def split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Latent vectors (n, n_features) -> one (n, zdim, r, r) tensor per latent layer."""
        out, start = [], 0
        for shape in self.layout:
            size = int(np.prod(shape))
            out.append(flat[:, start:start + size].reshape(len(flat), *shape))
            start += size
        return out

    # ------------------------------------------------------------------ encode / decode
    def encode(self, pixels: torch.Tensor, noise: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Pixels (n, 3, S, S) in [0, 255] -> latent vectors (n, n_features).

        Each of the first ``n_latent_layers`` decoder blocks reads its posterior; ``z`` is the
        posterior mean (``noise=None``) or ``mean + exp(log_std) * noise[i]`` (a posterior sample,
        what Brain-Diffuser's ``vdvae_extract_features.py`` stores), and feeds the next blocks.
        Only those blocks run (the later ones cannot change these latents).
        """
        acts = self.encoder(self.normalise(pixels))
        n = pixels.shape[0]
        xs = self._initial_state(n)
        ref = acts[max(acts)]
        zs = []
        for i, block in enumerate(self.decoder.blocks[: self.config.n_latent_layers]):
            x = block.state_in(xs, n, ref)
            qm, qlogstd = block.posterior(torch.cat([x, acts[block.res]], dim=1)).chunk(2, dim=1)
            _, _, x = block.prior_params(x)
            z = qm if noise is None else qm + torch.exp(qlogstd) * noise[i]
            xs[block.res] = block.update(x, z)
            zs.append(z.reshape(n, -1))
        return torch.cat(zs, dim=1)

    def decode_features(self, latents: list[torch.Tensor], noise: list[torch.Tensor], temperature: float = 1.0) -> torch.Tensor:
        """Given latent layers (coarsest first) -> output features (n, num_mixtures * 10, S, S).

        Layers past the given ones are drawn from the prior: ``mean + temperature * std * noise[i]``
        (``noise`` holds one tensor per remaining block).
        """
        n = latents[0].shape[0]
        xs = self._initial_state(n)
        ref = self.decoder.gain.expand(n, -1, 1, 1)
        for i, block in enumerate(self.decoder.blocks):
            x = block.state_in(xs, n, ref)
            pm, plogstd, x = block.prior_params(x)
            if i < len(latents):
                z = latents[i]
            else:
                z = pm + torch.exp(plogstd) * float(temperature) * noise[i - len(latents)]
            xs[block.res] = block.update(x, z)
        h = xs[self.config.image_size] * self.decoder.gain + self.decoder.bias
        return self.decoder.out_conv(h)

    def prior_shapes(self, n_given: int) -> list[tuple[int, int, int]]:
        """Shapes of the prior noise needed by :meth:`decode_features` after ``n_given`` layers."""
        return [(self.config.zdim, r, r) for r, _ in parse_blocks(self.config.dec_blocks)[n_given:]]

    def pixels_from_features(self, feats: torch.Tensor, uniforms: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        """Discretised-logistic mixture -> pixels (n, 3, S, S) in [-1, 1].

        ``uniforms=(u_mix, u_pix)`` of shapes (n, num_mixtures, S, S) and (n, 3, S, S), in (0, 1):
        a sample (the reference's ``out_net.sample``: Gumbel-max choice of the component, then a
        logistic draw). ``None``: the most likely component's means (deterministic).
        """
        m = self.config.num_mixtures
        n, _, hgt, wid = feats.shape
        logits = feats[:, :m]
        params = feats[:, m:].reshape(n, 3, 3 * m, hgt, wid)  # per colour: means | log-scales | coefficients
        means, log_scales, coeffs = params[:, :, :m], params[:, :, m:2 * m].clamp(min=-7.0), torch.tanh(params[:, :, 2 * m:])
        if uniforms is None:
            pick = logits.argmax(1)
        else:
            u_mix = uniforms[0] * (1 - 2e-5) + 1e-5
            pick = (logits - torch.log(-torch.log(u_mix))).argmax(1)
        sel = F.one_hot(pick, m).permute(0, 3, 1, 2).unsqueeze(1).to(feats.dtype)  # (n, 1, m, S, S)
        mu, ls, co = ((t * sel).sum(2) for t in (means, log_scales, coeffs))
        if uniforms is None:
            x = mu
        else:
            u = uniforms[1] * (1 - 2e-5) + 1e-5
            x = mu + torch.exp(ls) * (torch.log(u) - torch.log1p(-u))
        r = x[:, 0].clamp(-1, 1)
        g = (x[:, 1] + co[:, 0] * r).clamp(-1, 1)
        b = (x[:, 2] + co[:, 1] * r + co[:, 2] * g).clamp(-1, 1)
        return torch.stack([r, g, b], dim=1)


# ---------------------------------------------------------------------------------- reference checkpoints
_BLOCK_PARTS = {"enc": "posterior", "prior": "prior", "resnet": "resnet"}


def reference_to_ours(state: dict[str, Any]) -> dict[str, Any]:
    """Rename the keys of an openai/vdvae state dict (``VAE.state_dict()``, optionally DDP-prefixed) to ours.

    ``encoder.in_conv`` -> ``encoder.stem``; ``encoder.enc_blocks.i.cK`` -> ``encoder.blocks.i.convK``;
    ``decoder.dec_blocks.i.{enc,prior,resnet}.cK`` -> ``decoder.blocks.i.{posterior,prior,resnet}.convK``;
    ``decoder.dec_blocks.i.z_proj`` -> ``decoder.blocks.i.z_proj``; ``decoder.bias_xs.j`` ->
    ``decoder.res_bias.j``; ``decoder.out_net.out_conv`` -> ``decoder.out_conv``; ``decoder.gain`` and
    ``decoder.bias`` unchanged. Keys already in our naming pass through.
    """
    out: dict[str, Any] = {}
    for key, value in state.items():
        k = key[len("module."):] if key.startswith("module.") else key
        parts = k.split(".")
        if parts[:2] == ["encoder", "in_conv"]:
            parts = ["encoder", "stem", *parts[2:]]
        elif parts[:2] == ["encoder", "enc_blocks"]:
            parts = ["encoder", "blocks", parts[2], "conv" + parts[3][1:], *parts[4:]]
        elif parts[:2] == ["decoder", "dec_blocks"]:
            if parts[3] in _BLOCK_PARTS:
                parts = ["decoder", "blocks", parts[2], _BLOCK_PARTS[parts[3]], "conv" + parts[4][1:], *parts[5:]]
            else:
                parts = ["decoder", "blocks", *parts[2:]]
        elif parts[:2] == ["decoder", "bias_xs"]:
            parts = ["decoder", "res_bias", *parts[2:]]
        elif parts[:3] == ["decoder", "out_net", "out_conv"]:
            parts = ["decoder", "out_conv", *parts[3:]]
        out[".".join(parts)] = value
    return out
