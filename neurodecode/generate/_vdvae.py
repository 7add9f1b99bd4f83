"""VDVAE generator: Brain-Diffuser's first stage, a 64 x 64 image from predicted VDVAE latents.

Brain-Diffuser (``vdvae_reconstruct_images.py``) regresses the first 31 latent layers of OpenAI's
ImageNet-64 VDVAE (91,168 dims, the ``vdvae`` latent space), then decodes them: those layers are
set to the prediction, every later layer is drawn from the prior (temperature 1: the reference
passes ``t=None``), and the pixels are a sample of the output's discretised-logistic mixture. The
64 x 64 result is resized to 512 x 512 (PIL bicubic) and is the init image of the
Versatile-Diffusion img2img stage (DDIM 50, strength 0.75, guidance 7.5, text mix 0.4).

Expects ``latents["vae_latents"]`` of shape (n, 91168) (tiny: (n, 1924), the ``vdvae-tiny``
space: the tiny generator and the tiny space build the same seeded network).

Options of :meth:`generate`: ``size`` (output side, default the VDVAE's 64; 512 for the
img2img init, PIL bicubic as the reference), ``temperature`` (prior std scale of the layers not
given, default 1), ``pixels`` (``"sample"``, the reference, or ``"mode"``). ``steps`` and
``guidance`` are unused.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .._core.validation import format_error
from ..latents.vdvae import WEIGHTS_FILE, WEIGHTS_URL, build_vdvae, decode_vdvae, default_weights_dir, load_vdvae
from ._base import Generator

__all__ = ["VDVAEGenerator"]

#: Not on the hub: the released file is read from a local path (see :mod:`neurodecode.latents.vdvae`).
WEIGHTS: dict[str, dict[str, Any]] = {}


class VDVAEGenerator(Generator):
    """Images from predicted VDVAE latent vectors (the first latent layers; the rest from the prior).

    Parameters
    ----------
    weights : None, "tiny" or path-like
        ``None``: ``imagenet64-iter-1600000-model-ema`` (``.safetensors`` or ``.th``) in
        ``$NEURODECODE_HOME/weights/vdvae/``; a checkpoint file or folder; ``"tiny"``: the
        ``vdvae-tiny`` network (seeded random init, offline).
    allow_pickle : bool
        Read the released torch pickle (with ``torch.load(weights_only=True)``); convert it once
        with :func:`neurodecode.latents.vdvae.convert_vdvae_checkpoint` instead.
    n_latent_layers : int or None
        Latent layers in the vectors (default 31; tiny 7).
    **kwargs
        See :class:`~neurodecode.generate._base.Generator`.
    """

    name = "vdvae"
    default_weights = ""
    default_steps = 1
    default_guidance = 1.0
    licence: ClassVar[str] = "MIT (openai/vdvae)"
    purpose: ClassVar[str] = "ImageNet-64 VDVAE (Brain-Diffuser low-level stage)"

    def __init__(self, weights: Any = None, *, allow_pickle: bool = False, n_latent_layers: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(weights, **kwargs)
        self.allow_pickle = allow_pickle
        self.n_latent_layers = n_latent_layers

    @classmethod
    def artefacts(cls, weights: Any = None, dtype: Any = None, **kwargs: Any) -> list[Any]:
        """The released checkpoint is listed, never fetched (it is not on the hub)."""
        from ..io.hub import ExternalArtefact

        if isinstance(weights, str) and weights == "tiny":
            return [ExternalArtefact(f"{cls.name} (tiny)", "random", "tiny tier: random init, nothing to fetch")]
        if weights:
            return [ExternalArtefact(str(weights), "folder", "vdvae generator: a local VDVAE checkpoint (read as is)")]
        return [ExternalArtefact(WEIGHTS_FILE, "note", f"vdvae generator: download once from {WEIGHTS_URL} into "
                                 f"{default_weights_dir()} (not on the hub)", licence=cls.licence)]

    def _config(self, tiny: bool) -> Any:
        from dataclasses import replace

        from ..latents._vdvae_net import IMAGENET64, TINY

        cfg = TINY if tiny else IMAGENET64
        return replace(cfg, n_latent_layers=int(self.n_latent_layers)) if self.n_latent_layers else cfg

    def _build_tiny(self) -> dict[str, Any]:
        return {"vdvae": build_vdvae(self._config(True), seed=self.seed)}

    def _build_real(self, name_or_path: str) -> dict[str, Any]:
        net, _ = load_vdvae(name_or_path or None, config=self._config(False), allow_pickle=self.allow_pickle)
        return {"vdvae": net}

    def _expects(self) -> dict[str, tuple[int | None, ...]]:
        return {"vae_latents": (None, int(self.components_["vdvae"].n_features))}

    def _generate_batch(self, latents: dict[str, np.ndarray], generators: list[Any], *, steps: int, guidance: float,
                        size: int | None = None, temperature: float = 1.0, pixels: str = "sample") -> Any:
        import torch

        from .._core.errors import ValidationError

        net = self.components_["vdvae"]
        if not float(temperature) >= 0.0:
            raise ValidationError(format_error("temperature", "a number >= 0 (the reference: 1)", temperature))
        images = decode_vdvae(net, torch.as_tensor(latents["vae_latents"]), generators, temperature=temperature,
                              pixels=pixels)
        native = net.config.image_size
        if size is None or int(size) == native:
            return images
        if int(size) < 1:
            raise ValidationError(format_error("size", "a positive int (output side in pixels)", size,
                                               "512 for the Versatile-Diffusion img2img init"))
        return _resize_bicubic(images, int(size))


def _resize_bicubic(images: Any, size: int) -> Any:
    """Float images (b, 3, s, s) holding uint8 levels -> (b, 3, size, size), PIL bicubic like the reference."""
    import torch
    from PIL import Image

    u8 = (images * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = [np.asarray(Image.fromarray(im).resize((size, size), resample=Image.Resampling.BICUBIC)) for im in u8]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255.0
