"""The VDVAE latent space: Brain-Diffuser's low-level target (first 31 latent layers of the ImageNet-64 VDVAE).

``vdvae``
    OpenAI's ImageNet-64 Very Deep VAE (``imagenet64-iter-1600000-model-ema.th``, the EMA weights
    Brain-Diffuser loads). An image is resized to 64 x 64 (PIL bilinear, no crop, as
    ``vdvae_extract_features.py`` does), normalised with the training set's shift and scale, and
    encoded; the latents of the first 31 decoder layers (2 at 1 x 1, 4 at 4 x 4, 8 at 8 x 8, 16 at
    16 x 16 and the first at 32 x 32, 16 channels each) are flattened and concatenated:
    **91,168 dims**.
``vdvae-tiny``
    The same code on :data:`~neurodecode.latents._vdvae_net.TINY` (32 px, width 56, zdim 4, 7 latent
    layers = 1,924 dims), randomly initialised with a fixed seed, offline.

Posterior samples or means (``sample=``)
    ``"sample"`` (default, the reference): each layer's ``z`` is a draw from its posterior, and the
    draw feeds the next layers, as ``decoder.forward(..., get_latents=True)`` stores it. The draw
    is seeded by ``sample_seed`` and the image's own pixels, so an image always gets the same latent,
    whatever the batch or order. ``"mean"``: the posterior means (deterministic, less noisy).

Weights (real tier)
    The released file cannot be fetched from the Hugging Face Hub: download it once from
    :data:`WEIGHTS_URL` and put it in ``$NEURODECODE_HOME/weights/vdvae/`` (or pass
    ``weights=PATH``). It is a torch pickle: it is read only with ``allow_pickle=True`` (and then
    with ``torch.load(weights_only=True)``); :func:`convert_vdvae_checkpoint` turns it once into a
    safetensors file, found first afterwards.

:meth:`VdvaeSpace.decode_latents` decodes latent vectors back to 64 x 64 images (the remaining
layers drawn from the prior at ``temperature``, pixels sampled from the output mixture), as the
``vdvae`` generator does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import ShapeMismatchError, UnsafeCheckpointError, ValidationError
from .._core.logging import logger
from .._core.validation import check_finite, check_option, format_error
from ._base import LatentSpace, seeded
from ._external import ExternalCheckpoint
from ._vdvae_net import IMAGENET64, TINY, VDVAE, VDVAEConfig, reference_to_ours
from .vae import _as_pixel_list, _content_seed

__all__ = ["VdvaeSpace", "build_vdvae_space", "build_vdvae", "load_vdvae", "convert_vdvae_checkpoint",
           "find_vdvae_weights", "decode_vdvae", "vdvae_artefacts", "WEIGHTS_FILE", "WEIGHTS_URL", "SAMPLES", "PIXELS"]

#: The released EMA weights Brain-Diffuser uses, and where OpenAI publishes them.
WEIGHTS_FILE = "imagenet64-iter-1600000-model-ema.th"
WEIGHTS_URL = f"https://openaipublic.blob.core.windows.net/very-deep-vaes-assets/vdvae-assets-2/{WEIGHTS_FILE}"
SAFETENSORS_FILE = WEIGHTS_FILE.replace(".th", ".safetensors")
_CHECKPOINT = ExternalCheckpoint("vdvae", WEIGHTS_FILE, WEIGHTS_URL, "OpenAI's ImageNet-64 VDVAE weights",
                                 "neurodecode.latents.vdvae.convert_vdvae_checkpoint", "MIT (openai/vdvae)",
                                 any_single=(".safetensors", ".th"))

#: How the latent is read: a posterior sample (the reference) or the posterior mean.
SAMPLES = ("sample", "mean")
#: How pixels are read from the output mixture: a sample (the reference) or the likeliest component's mean.
PIXELS = ("sample", "mode")


def default_weights_dir() -> Path:
    """``$NEURODECODE_HOME/weights/vdvae`` (where the released file is looked for)."""
    return _CHECKPOINT.default_dir()


def build_vdvae(config: VDVAEConfig = IMAGENET64, *, seed: int = 0, device: Any = "cpu") -> VDVAE:
    """A randomly initialised :class:`VDVAE` (seeded; ``device="meta"`` for shapes and counts only)."""
    import torch

    with seeded(seed), torch.device(device):
        return VDVAE(config)


# -------------------------------------------------------------------------------------------- weights
def find_vdvae_weights(weights: Any = None) -> Path:
    """The checkpoint file to read: ``weights`` (file or folder) or the default folder's file.

    In a folder, ``imagenet64-iter-1600000-model-ema.safetensors`` is preferred to the ``.th``.

    Raises
    ------
    OfflineError
        The file is missing and offline mode is on (nothing can be fetched).
    MissingFileError
        The file is missing.
    """
    return _CHECKPOINT.find(weights)


def _read_state(path: Path, allow_pickle: bool) -> dict[str, Any]:
    from ..io.checkpoints import load_state_dict, sniff_checkpoint

    if sniff_checkpoint(path) == "pickle" and not allow_pickle:
        raise UnsafeCheckpointError(format_error(
            "allow_pickle", "a safetensors VDVAE checkpoint, or allow_pickle=True for the released torch pickle",
            f"a pickle at {path}",
            "Convert it once: neurodecode.latents.vdvae.convert_vdvae_checkpoint(path, allow_pickle=True) writes "
            f"{SAFETENSORS_FILE} beside it (read with torch.load(weights_only=True), found first afterwards)"))
    return reference_to_ours(load_state_dict(path, allow_pickle=allow_pickle))


def load_vdvae(path: Any = None, *, config: VDVAEConfig = IMAGENET64, allow_pickle: bool = False) -> tuple[VDVAE, Path]:
    """Build the VDVAE of ``config`` and load the checkpoint found by :func:`find_vdvae_weights`.

    Accepts the released file (reference key names, optionally ``module.``-prefixed) or a
    safetensors file in either naming. Every missing, unexpected or mis-shaped key is listed.

    Returns
    -------
    model : VDVAE
        In eval mode, on the CPU, float32.
    path : pathlib.Path
        The file read.
    """
    import torch

    from ..io.checkpoints import load_into

    file = find_vdvae_weights(path)
    state = _read_state(file, allow_pickle)
    with torch.device("meta"):
        model = VDVAE(config)
    model = model.to_empty(device="cpu")
    load_into(model, {k: v.float() for k, v in state.items()}, source=str(file))
    return model.eval(), file


def convert_vdvae_checkpoint(src: Any, dst: Any = None, *, allow_pickle: bool = False,
                             config: VDVAEConfig = IMAGENET64) -> Path:
    """Convert the released torch-pickle checkpoint once into safetensors (our key names, checked).

    Parameters
    ----------
    src : path-like
        ``imagenet64-iter-1600000-model-ema.th`` (or a folder holding it).
    dst : path-like or None
        Output file (default: ``imagenet64-iter-1600000-model-ema.safetensors`` beside ``src``).
    allow_pickle : bool
        Must be ``True`` to read a pickle (it is read with ``torch.load(weights_only=True)``).
    config : VDVAEConfig
        The architecture the weights must match.

    Returns
    -------
    dst : pathlib.Path
    """
    model, file = load_vdvae(src, config=config, allow_pickle=allow_pickle)
    return _CHECKPOINT.save_converted(model, config, file, dst, "neurodecode-vdvae")


def vdvae_artefacts(name: str, *, weights: Any = None, dtype: Any = None, tiny: bool = False,
                    **options: Any) -> list[Any]:
    """What the ``vdvae`` spaces read (for ``neurodecode download``): the released file is not on the hub."""
    return _CHECKPOINT.artefacts(name, weights=weights, tiny=tiny)


# -------------------------------------------------------------------------------------------- decoding
def _item_noise(shapes: Sequence[tuple[int, ...]], generators: Sequence[Any], *, uniform: bool = False) -> list[Any]:
    """One tensor per shape, (n, *shape): item i's values drawn from ``generators[i]`` (CPU, float32)."""
    import torch

    draw = torch.rand if uniform else torch.randn
    per_item = [[draw(tuple(s), generator=g, dtype=torch.float32) for s in shapes] for g in generators]
    return [torch.stack([item[j] for item in per_item]) for j in range(len(shapes))]


def decode_vdvae(net: VDVAE, latents: Any, generators: Sequence[Any], *, temperature: float = 1.0,
                 pixels: str = "sample") -> Any:
    """Latent vectors (n, n_features) tensor -> images (n, 3, S, S) float in [0, 1].

    The given layers are used as they are; the others are drawn from the prior with their std
    multiplied by ``temperature`` (the reference: 1); the pixels are a sample of the output
    mixture (``"sample"``, the reference's ``out_net.sample``) or the likeliest component's means
    (``"mode"``). Values are the reference's uint8 levels, ``floor((x + 1) * 127.5) / 255``.
    Item ``i``'s randomness comes from ``generators[i]`` only.
    """
    import torch

    check_option(pixels, "pixels", PIXELS)
    n_given = len(net.layout)
    param = next(net.parameters())
    prior = [t.to(param.device, param.dtype) for t in _item_noise(net.prior_shapes(n_given), generators)]
    size, m = net.config.image_size, net.config.num_mixtures
    uniforms = None
    if pixels == "sample":
        u = _item_noise([(m, size, size), (3, size, size)], generators, uniform=True)
        uniforms = (u[0].to(param.device, param.dtype), u[1].to(param.device, param.dtype))
    feats = net.decode_features(net.split(latents.to(param.device, param.dtype)), prior, temperature)
    x = net.pixels_from_features(feats, uniforms).float()
    return torch.floor(((x + 1.0) * 127.5).clamp(0, 255)) / 255.0


# ------------------------------------------------------------------------------------------------ space
class VdvaeSpace(LatentSpace):
    """The VDVAE latent space (see the module docstring); build it with ``get_space("vdvae")``.

    Attributes
    ----------
    net : VDVAE
        The frozen network.
    sample : {"sample", "mean"}
        Posterior samples (the reference) or means.
    sample_seed : int
        Seed of the posterior samples (combined with each image's pixels).
    image_size : int
        Side of the images the encoder sees (64; tiny 32).

    Examples
    --------
    >>> space = get_space("vdvae-tiny")                       # doctest: +SKIP
    >>> z = space.encode_images(images)        # (n, 1924)    # doctest: +SKIP
    >>> previews = space.decode_latents(z)     # (n, 32, 32, 3) uint8  # doctest: +SKIP
    """

    def __init__(self, name: str, *, net: VDVAE, sample: str, sample_seed: int, weights: str, weights_file: Path | None,
                 device: Any, dtype: Any, batch_size: int, verbose: Any) -> None:
        check_option(sample, "sample", SAMPLES)
        cfg = net.config
        pre = {"kind": "vdvae", "size": cfg.image_size, "resize": "PIL bilinear to size x size (no crop)",
               "input": "uint8 (floats in [0, 1] are rounded to uint8 first)", "shift": cfg.input_shift,
               "scale": cfg.input_scale}
        super().__init__(name, shape=(net.n_features,), modality="image", device=device, dtype=dtype,
                         batch_size=batch_size, verbose=verbose, preprocessing=pre, weights=weights,
                         extra_key={"sample": sample,
                                    "sample_seed": int(sample_seed) if sample == "sample" else None,
                                    "vdvae_config": cfg.to_dict()})
        self.net = net.to(self._device).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.sample = sample
        self.sample_seed = int(sample_seed)
        self.image_size = cfg.image_size
        self._weights_file = weights_file


    # ------------------------------------------------------------------ public
    def encode_images(self, images: Any, *, batch_size: int | None = None) -> np.ndarray:
        """Encode images into VDVAE latent vectors.

        Parameters
        ----------
        images : ndarray of shape (n_images, height, width, 3) or (n_images, 3, height, width), or list
            uint8 in [0, 255] or floats in [0, 1], or PIL images; any size (resized to ``image_size``).
        batch_size : int or None
            Override the space's batch size.

        Returns
        -------
        latents : ndarray of shape (n_images, n_features), float32
            91,168 for the real space (tiny: 1,924): the first layers' latents, coarsest first,
            each flattened channel-major.
        """
        return self._run(_as_pixel_list(images), self._encode_image_batch, batch_size, unit="img")

    def decode_latents(self, latents: Any, *, seeds: int | Sequence[int] = 0, temperature: float = 1.0,
                       pixels: str = "sample", batch_size: int | None = None) -> np.ndarray:
        """Decode latent vectors of this space to images (layers beyond them drawn from the prior).

        Parameters
        ----------
        latents : array-like of shape (n, n_features)
            Latents from :meth:`encode_images` or a decoder's ``"vae_latents"`` prediction.
        seeds : int or list of int
            One seed per item (an int ``s`` means ``s, s + 1, ...``).
        temperature : float
            Scale of the prior's std for the layers not given (the reference: 1).
        pixels : {"sample", "mode"}
            Sample the output mixture (the reference) or take its likeliest component's means.
        batch_size : int or None
            Override the space's batch size.

        Returns
        -------
        images : ndarray of shape (n, image_size, image_size, 3), uint8
        """
        import torch

        arr = np.asarray(latents.detach().cpu().numpy() if hasattr(latents, "detach") else latents)
        if arr.ndim != 2 or arr.shape[1] != self.shape[0]:
            raise ShapeMismatchError(format_error(
                "latents", f"an array of shape (n, {self.shape[0]}) ({self.name} latent vectors)", arr,
                "Pass latents from encode_images or a decoder's 'vae_latents'; one latent needs z[None]"))
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValidationError(format_error("latents", "a float array", arr))
        check_finite(arr, "latents")
        n = len(arr)
        all_seeds = [int(seeds) + i for i in range(n)] if isinstance(seeds, (int, np.integer)) else [int(s) for s in seeds]
        if len(all_seeds) != n:
            raise ValidationError(format_error("seeds", f"an int or one seed per item ({n})", f"{len(all_seeds)} seeds"))
        bs = int(batch_size or self.batch_size)
        out = np.empty((n, self.image_size, self.image_size, 3), dtype=np.uint8)
        with torch.inference_mode(), self._autocast():
            for start in range(0, n, bs):
                gens = [torch.Generator("cpu").manual_seed(s) for s in all_seeds[start:start + bs]]
                img = decode_vdvae(self.net, torch.as_tensor(arr[start:start + bs]), gens, temperature=temperature,
                                   pixels=pixels)
                out[start:start + bs] = (img * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return out

    # ------------------------------------------------------------------ internals
    def _pixels(self, im: Any) -> np.ndarray:
        """One image -> uint8 (S, S, 3), resized like the reference (PIL bilinear, no crop)."""
        from PIL import Image

        if not hasattr(im, "convert"):
            arr = np.asarray(im)
            if arr.dtype != np.uint8:
                arr = np.round(arr.astype(np.float64) * 255.0).astype(np.uint8)
            im = Image.fromarray(np.ascontiguousarray(arr))
        im = im.convert("RGB")
        size = self.image_size
        if im.size != (size, size):
            im = im.resize((size, size), resample=Image.Resampling.BILINEAR)
        return np.asarray(im, dtype=np.uint8)

    def _encode_image_batch(self, items: list[Any]) -> Any:
        import torch

        u8 = np.stack([self._pixels(im) for im in items])
        param = next(self.net.parameters())
        pixels = torch.from_numpy(u8).to(param.device).permute(0, 3, 1, 2).float()
        noise = None
        if self.sample == "sample":
            gens = [torch.Generator("cpu").manual_seed(_content_seed(a, self.sample_seed)) for a in u8]
            noise = [t.to(param.device) for t in _item_noise(self.net.layout, gens)]
        return self.net.encode(pixels, noise)


# ---------------------------------------------------------------------------------------------- builder
def build_vdvae_space(name: str, *, weights: Any = None, device: Any = "cpu", dtype: Any = "float32",
                      batch_size: int = 32, verbose: Any = None, tiny: bool = False, sample: str = "sample",
                      seed: int = 0, sample_seed: int = 0, allow_pickle: bool = False,
                      n_latent_layers: int | None = None) -> VdvaeSpace:
    """Registry builder of ``vdvae`` / ``vdvae-tiny`` (see :func:`~neurodecode.latents.get_space`).

    Parameters
    ----------
    name : str
        Registry name.
    weights : None, "random" or path-like
        ``None``: the released ImageNet-64 weights from ``$NEURODECODE_HOME/weights/vdvae/`` (tiny
        twin: seeded random init); ``"random"``: the architecture, randomly initialised (shape checks,
        benchmarks); a checkpoint file or a folder holding it.
    device, dtype, batch_size, verbose
        See :func:`~neurodecode.latents.get_space`.
    tiny : bool
        Build the tiny twin.
    sample : {"sample", "mean"}
        Posterior samples (the reference) or posterior means.
    seed : int
        Seed of a random initialisation.
    sample_seed : int
        Seed of the posterior samples (combined with each image's pixels).
    allow_pickle : bool
        Read the released torch pickle (with ``torch.load(weights_only=True)``).
    n_latent_layers : int or None
        Latent layers in the vector (default: 31; tiny 7).

    Returns
    -------
    space : VdvaeSpace
    """
    from dataclasses import replace

    check_option(sample, "sample", SAMPLES)
    config = TINY if tiny else IMAGENET64
    if n_latent_layers is not None:
        config = replace(config, n_latent_layers=int(n_latent_layers))
    weights_file: Path | None = None
    if (weights is None and tiny) or (isinstance(weights, str) and weights == "random"):
        from .._core.device import resolve_device

        build_on = "meta" if resolve_device(device).type == "meta" else "cpu"
        net = build_vdvae(config, seed=seed, device=build_on)
        tag = f"random-init:seed={seed}"
    else:
        net, weights_file = load_vdvae(weights, config=config, allow_pickle=allow_pickle)
        tag = f"file:{weights_file.resolve()}"
    logger.info("latent space %s: %s", name, tag)
    return VdvaeSpace(name, net=net, sample=sample, sample_seed=sample_seed, weights=tag, weights_file=weights_file, device=device,
                      dtype=dtype, batch_size=batch_size, verbose=verbose)
