"""Depth maps from predicted DPT hidden states: Takagi & Nishimoto's depth decoder.

:class:`DptDepthDecoder` runs DPT's neck (reassemble + fusion) and depth head (transformers
``DPTForDepthEstimation``; real tier ``Intel/dpt-large``) on *given* backbone hidden states: the
``dpt-large-hidden`` space (4 x 577 x 1024), i.e. what a ridge decodes from the brain. The
backbone is not run. As Takagi's ``dptemb2dpt.py``, the predicted depth (384 x 384 for DPT-large) is
resized to 64 x 64 (bicubic, ``align_corners=False``) and min-max scaled per image to [-1, 1]: the
depth input of SD-2-depth (``c_concat``). One difference, named: an image whose predicted depth is
constant (range below 1e-5 of its magnitude, where the reference divides by ~0) maps to zeros.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from .._core.errors import ValidationError
from .._core.logging import progress
from .._core.validation import format_error
from ._base import Generator

__all__ = ["DptDepthDecoder", "depth_to_uint8", "DEPTH_SIZE"]

#: Takagi's ``latentsize = (64, 64)``: SD-2-depth's latent size at 512 px.
DEPTH_SIZE = 64


class DptDepthDecoder(Generator):
    """Depth maps from predicted DPT backbone hidden states through DPT's neck and head.

    Expects ``latents["dpt_hidden_states"]`` of shape (n, 4, 577, 1024) for the real tier (the
    ``dpt-large-hidden`` space); tiny tier (n, 4, 17, 52), the ``dpt-large-hidden-tiny`` space.

    :meth:`generate` returns depth maps of shape (n, size, size), float32 in [-1, 1] (option
    ``size``, default 64); :meth:`predict_depth` the raw predicted depth (n, 384, 384).

    Parameters
    ----------
    weights : None, "tiny", str or path-like
        ``None``: ``Intel/dpt-large``; ``"tiny"``; or a ``DPTForDepthEstimation`` folder / hub id.
    latent_key : str
        The key of ``latents`` holding the states (default ``"dpt_hidden_states"``).
    **kwargs
        See :class:`~neurodecode.generate._base.Generator`.
    """

    name = "dpt-depth"
    output = "depth"
    default_weights = "Intel/dpt-large"
    default_steps = 0
    default_guidance = 0.0
    licence = "Apache-2.0"
    purpose = "DPT-large neck + depth head (the ViT backbone is not run)"
    #: Tiny tier: the ``dpt-large-hidden-tiny`` space's DPT (see :data:`neurodecode.latents.dpt.TINY_DPT`).
    TINY: ClassVar[dict[str, Any]] = {}

    def __init__(self, weights: Any = None, *, latent_key: str = "dpt_hidden_states", **kwargs: Any) -> None:
        super().__init__(weights, **kwargs)
        self.latent_key = str(latent_key)

    @classmethod
    def hub_files(cls, dtype: Any = None, **kwargs: Any) -> tuple[tuple[str, ...], ...]:
        """Config and weights of ``Intel/dpt-large``."""
        from ..io.hub import transformers_model_files

        return transformers_model_files("", dtype)

    def _build_tiny(self) -> dict[str, Any]:
        from transformers import DPTForDepthEstimation

        from ..latents.dpt import dpt_config

        return self._components(DPTForDepthEstimation(dpt_config(tiny=True)))

    def _build_real(self, name_or_path: str) -> dict[str, Any]:
        from transformers import DPTForDepthEstimation

        from ..io.hub import pick_variant

        folder = self._resolve(name_or_path)
        model = DPTForDepthEstimation.from_pretrained(
            folder, dtype=self.torch_dtype_, variant=pick_variant(folder, "", self._load_dtype_name(), base="model"))
        return self._components(model)

    @staticmethod
    def _components(model: Any) -> dict[str, Any]:
        cfg = model.config
        n_tokens = (int(cfg.image_size) // int(cfg.patch_size)) ** 2 + 1
        return {"neck": model.neck, "head": model.head, "n_states": len(cfg.backbone_out_indices),
                "n_tokens": n_tokens, "width": int(cfg.hidden_size)}

    def _expects(self) -> dict[str, tuple[int | None, ...]]:
        c = self.components_
        return {self.latent_key: (None, c["n_states"], c["n_tokens"], c["width"])}

    def _depth(self, states: Any) -> Any:
        """Hidden states (b, 4, tokens, width) -> predicted depth (b, H, W) (DPT's neck, then head)."""
        c = self.components_
        hidden = [states[:, i] for i in range(states.shape[1])]
        return c["head"](c["neck"](hidden, None, None)).float()

    def predict_depth(self, latents: Mapping[str, Any], *, batch_size: int = 8) -> np.ndarray:
        """DPT's raw predicted depth from the states, shape (n, H, W) (384 x 384 for DPT-large), float32."""
        import torch

        self.load()
        checked = self.check_latents(latents)[self.latent_key]
        out = []
        with torch.inference_mode():
            for start in range(0, len(checked), int(batch_size)):
                out.append(self._depth(self._tensor(checked[start:start + int(batch_size)])).cpu().numpy())
        return np.concatenate(out, axis=0)

    def generate(self, latents: Mapping[str, Any], *, seeds: Any = 0, steps: int | None = None,
                 guidance: float | None = None, batch_size: int = 8, verbose: Any = None, size: int = DEPTH_SIZE,
                 **options: Any) -> np.ndarray:
        """Depth maps, resized to ``size`` x ``size`` (bicubic) and min-max scaled per image to [-1, 1].

        Parameters
        ----------
        latents : dict
            ``{"dpt_hidden_states": array of shape (n, 4, tokens, width)}``.
        seeds, steps, guidance
            Unused (deterministic), accepted for the common interface.
        batch_size : int
            Items per forward pass.
        size : int
            Side of the output maps (64: SD-2-depth's latent size, as the reference).

        Returns
        -------
        depth : ndarray of shape (n, size, size), float32 in [-1, 1]
        """
        import torch

        if options:
            raise ValidationError(format_error("options", "none besides size / batch_size", sorted(options)))
        if int(size) < 1 or int(batch_size) < 1:
            raise ValidationError(format_error("size / batch_size", "positive integers", f"{size} / {batch_size}"))
        self.load()
        checked = self.check_latents(latents)[self.latent_key]
        n = len(checked)
        out = np.empty((n, int(size), int(size)), dtype=np.float32)
        verbose = self.verbose if verbose is None else verbose
        with progress(total=n, desc=f"generate ({self.name})", unit="img", verbose=verbose) as bar, \
                torch.inference_mode():
            for start in range(0, n, int(batch_size)):
                stop = min(n, start + int(batch_size))
                depth = self._depth(self._tensor(checked[start:stop]))
                out[start:stop] = scale_depth(depth, int(size)).cpu().numpy()
                bar.update(stop - start)
        return out


def scale_depth(depth: Any, size: int) -> Any:
    """Predicted depth (b, H, W) -> (b, size, size): bicubic resize, then per-image min-max to [-1, 1]."""
    import torch
    import torch.nn.functional as F

    cc = F.interpolate(depth[:, None].float(), size=(size, size), mode="bicubic", align_corners=False)
    lo = torch.amin(cc, dim=(1, 2, 3), keepdim=True)
    hi = torch.amax(cc, dim=(1, 2, 3), keepdim=True)
    span = hi - lo
    # a constant map (bicubic rounding leaves ~1e-7 noise, which min-max would blow up to [-1, 1]) maps to zeros
    varies = span > 1e-5 * torch.maximum(hi.abs(), lo.abs()) + 1e-12
    scaled = torch.where(varies, 2.0 * (cc - lo) / torch.where(varies, span, torch.ones_like(span)) - 1.0,
                         torch.zeros_like(cc))
    return scaled[:, 0]


def depth_to_uint8(depth: np.ndarray) -> np.ndarray:
    """Depth maps in [-1, 1], shape (n, H, W) -> grey uint8 images (n, H, W, 3) for previews (PNG derivatives)."""
    arr = np.asarray(depth, dtype=np.float32)
    if arr.ndim != 3:
        raise ValidationError(format_error("depth", "an array of shape (n, H, W)", arr))
    grey = np.round((np.clip(arr, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)
