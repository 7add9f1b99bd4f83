"""Image-autoencoder latent spaces on diffusers' ``AutoencoderKL``: the low-level targets.

``sd-vae``
    The Stable Diffusion VAE (default ``stabilityai/sd-vae-ft-mse``; or any ``AutoencoderKL``
    folder, or a Stable Diffusion pipeline folder / hub id holding ``vae/``). Images are
    resized to ``image_size`` (default 256) and encoded to the posterior mean: shape
    ``(4, image_size / 8, image_size / 8)``, (4, 32, 32) at 256 px. MindEye2's low-level head
    and Brain-Diffuser's SD-VAE option regress onto it.
``sd-vae-tiny``
    The same code on the tiny ``AutoencoderKL`` the tiny generators use (two levels of width
    32 / 64, one x2 downsampling), randomly initialised with a fixed seed, offline: 32 px
    images -> (4, 16, 16), the latent size of the tiny generators.

``sd14-vae-320``
    Takagi & Nishimoto's ``init_latent`` (``img2feat_sd.py``): Stable Diffusion 1.4's VAE
    (``CompVis/stable-diffusion-v1-4``, ``vae/``) on the image resized to 320 px with PIL's Lanczos, a
    posterior *sample* times 0.18215 (LDM's ``get_first_stage_encoding``): (4, 40, 40). The sample's noise
    is seeded by the resized pixels and ``sample_seed``, so an image always gets the same latent. Its tiny
    twin encodes 40 px images: (4, 20, 20).

Latent scale
    By default the latents are *raw* (before the VAE's scaling factor). That is the
    ``vae_latents`` convention of :mod:`neurodecode.generate`, whose generators multiply by
    ``vae.config.scaling_factor`` themselves before img2img. ``scaled=True`` returns diffusers'
    UNet-space latents ``(z - shift_factor) * scaling_factor`` (0.18215 for SD, no shift), the
    scale MindEye2 trains its low-level head on; latents of that kind must be divided by the
    factor again before they are given to a generator.

Preprocessing (recorded in the cache key)
    RGB images as uint8 in [0, 255] or floats in [0, 1], channels-last ``(H, W, 3)`` or
    channels-first ``(3, H, W)`` (channels-last wins when both axes have size 3); the shorter
    side is resized to ``image_size`` (bicubic, antialiased), the centre is cropped to
    ``image_size`` x ``image_size``, values are clamped to [0, 1] and mapped to [-1, 1].

:meth:`VaeSpace.decode_latents` is the inverse (latents -> uint8 images), for previews and checks.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import DataIntegrityError, MissingFileError, OfflineError, ShapeMismatchError, ValidationError
from .._core.logging import logger
from .._core.validation import check_finite, check_option, describe, format_error
from .._core.versions import package_versions
from ._base import LatentSpace, seeded

__all__ = ["VaeSpace", "DEFAULT_VAE", "SD_VAE_CONFIG", "SAMPLES", "INTERPOLATIONS", "tiny_vae", "build_vae_space", "vae_files",
           "vae_subfolder", "vae_artefacts"]

#: Hub id of the real tier's weights.
DEFAULT_VAE = "stabilityai/sd-vae-ft-mse"

#: How a latent is read from the posterior: the mean (deterministic), or a sample seeded by the image's own pixels
#: and ``sample_seed`` (the same image always gets the same draw, whatever the batch split): LDM's
#: ``get_first_stage_encoding``, which Takagi & Nishimoto's init latents use.
SAMPLES = ("mean", "sample")
#: How images are resized: torch's antialiased bicubic, or PIL's Lanczos (Takagi & Nishimoto's ``load_img_from_arr``).
INTERPOLATIONS = ("bicubic", "lanczos")

#: Architecture of the Stable Diffusion VAE (83.7 M parameters): ``weights="random"`` builds it offline.
SD_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 2, "act_fn": "silu", "norm_num_groups": 32, "sample_size": 256, "scaling_factor": 0.18215,
}

_WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
_TINY_IMAGE_SIZE = 32
_REAL_IMAGE_SIZE = 256


def _autoencoder_kl() -> Any:
    """diffusers' ``AutoencoderKL`` (imported on first use, with an install hint)."""
    try:
        from diffusers import AutoencoderKL
    except ImportError as exc:  # pragma: no cover - diffusers is a dependency
        raise ImportError(format_error("diffusers", "the diffusers package (image-autoencoder latent spaces)",
                                       "not installed", "pip install 'diffusers>=0.30'")) from exc
    return AutoencoderKL


def tiny_vae(sample_size: int, **overrides: Any) -> Any:
    """The tiny tier's ``AutoencoderKL``: 4 latent channels, one x2 downsampling, ``sample_size`` px images.

    Shared by the ``sd-vae-tiny`` space and the tiny generators of :mod:`neurodecode.generate`.

    Parameters
    ----------
    sample_size : int
        Nominal image size in pixels (latents are ``sample_size / 2`` on a side).
    **overrides
        Other ``AutoencoderKL`` config values (e.g. ``scaling_factor=0.13025`` for SDXL).

    Returns
    -------
    vae : diffusers.AutoencoderKL
        Randomly initialised from torch's current RNG (wrap the call in a seeded context).
    """
    return _autoencoder_kl()(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
                             down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                             norm_num_groups=32, sample_size=sample_size, **overrides)


# ------------------------------------------------------------------------------------------- input images
def _as_pixel_list(images: Any) -> list[Any]:
    """Check images and return them one by one as (H, W, 3) arrays (uint8 or float in [0, 1]) or PIL images.

    Accepts an array (n, H, W, 3) or (n, 3, H, W) (NumPy or torch), or a list of PIL images /
    (H, W, 3) or (3, H, W) arrays. Channels-first arrays are returned as channels-last views.
    """
    if hasattr(images, "detach") and hasattr(images, "cpu"):  # a torch tensor
        images = images.detach().cpu().numpy()
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or 3 not in (images.shape[-1], images.shape[1]):
            raise ShapeMismatchError(format_error(
                "images", "an array of shape (n_images, height, width, 3) or (n_images, 3, height, width)", images,
                "Pass RGB images with a leading image axis; one image needs one too (img[None])"))
        arr = images if images.shape[-1] == 3 else np.moveaxis(images, 1, -1)
        _check_values(arr, "images")
        return list(arr)
    if isinstance(images, (list, tuple)):
        out = []
        for i, im in enumerate(images):
            if hasattr(im, "detach") and hasattr(im, "cpu"):
                im = im.detach().cpu().numpy()
            if isinstance(im, np.ndarray):
                if im.ndim != 3 or 3 not in (im.shape[-1], im.shape[0]):
                    raise ShapeMismatchError(format_error(
                        f"images[{i}]", "an array of shape (height, width, 3) or (3, height, width)", im))
                im = im if im.shape[-1] == 3 else np.moveaxis(im, 0, -1)
                _check_values(im, f"images[{i}]")
            elif not hasattr(im, "convert"):
                raise ValidationError(format_error(f"images[{i}]", "a PIL image or an RGB array", describe(im)))
            out.append(im)
        return out
    raise ValidationError(format_error(
        "images", "an array (n, H, W, 3) / (n, 3, H, W) or a list of PIL images or arrays", describe(images)))


def _check_values(arr: np.ndarray, param: str) -> None:
    if arr.dtype == np.uint8:
        return
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValidationError(format_error(
            param, "uint8 pixel values in [0, 255] or floats in [0, 1]", arr,
            "Convert with arr.astype(np.uint8) if the values are 0-255 integers"))
    check_finite(arr, param)
    if arr.size and (float(arr.min()) < 0.0 or float(arr.max()) > 1.0):
        raise ValidationError(format_error(
            param, "float pixel values in [0, 1]", f"values in [{float(arr.min()):.4g}, {float(arr.max()):.4g}]",
            "Divide 0-255 floats by 255; map [-1, 1] images with (x + 1) / 2"))


# ------------------------------------------------------------------------------------------------ space
class VaeSpace(LatentSpace):
    """An image-autoencoder target space on a diffusers ``AutoencoderKL`` (see the module docstring).

    Build it with :func:`~neurodecode.latents.get_space` (``"sd-vae"``, ``"sd-vae-tiny"``).

    Attributes
    ----------
    vae : diffusers.AutoencoderKL
        The frozen autoencoder (float32 weights; ``dtype`` runs it under autocast).
    image_size : int
        Side of the square images the encoder sees.
    sample : {"mean", "sample"}
        How the latent is read from the posterior (see :data:`SAMPLES`).
    interpolation : {"bicubic", "lanczos"}
        How images are resized (see :data:`INTERPOLATIONS`).
    scaled : bool
        Whether the latents are multiplied by the VAE's scaling factor (diffusers' UNet space).
    scaling_factor, shift_factor : float
        From the VAE's config (``shift_factor`` is 0 when the config has none).

    Examples
    --------
    >>> space = get_space("sd-vae-tiny")                            # doctest: +SKIP
    >>> z = space.encode_images(images)           # (n, 4, 16, 16)   # doctest: +SKIP
    >>> previews = space.decode_latents(z)        # (n, 32, 32, 3) uint8  # doctest: +SKIP
    """

    def __init__(self, name: str, *, vae: Any, image_size: int, sample: str, scaled: bool, weights: str,
                 weights_file: Path | None, device: Any, dtype: Any, batch_size: int, verbose: Any,
                 compile: bool = False, interpolation: str = "bicubic", sample_seed: int = 0) -> None:
        import torch

        check_option(sample, "sample", SAMPLES)
        check_option(interpolation, "interpolation", INTERPOLATIONS)
        cfg = vae.config
        factor = 2 ** (len(cfg.block_out_channels) - 1)
        size = int(image_size)
        if size < factor or size % factor:
            raise ValidationError(format_error(
                "image_size", f"a positive multiple of the VAE's downsampling factor {factor}", image_size,
                f"Use e.g. {max(factor, size - size % factor)} (latents are image_size / {factor} on a side)"))
        pre = {"kind": "vae", "size": size, "resize_mode": "shortest", "crop": "center", "interpolation": interpolation,
               "antialias": True, "input": "uint8 / 255 or float in [0, 1]", "range": [-1.0, 1.0]}
        if interpolation == "lanczos":
            pre["antialias"] = "PIL"
        config_key = {k: v for k, v in dict(cfg).items() if not str(k).startswith("_")}
        super().__init__(name, shape=(int(cfg.latent_channels), size // factor, size // factor), modality="image",
                         device=device, dtype=dtype, batch_size=batch_size, verbose=verbose, preprocessing=pre,
                         weights=weights, extra_key={"sample": sample, "scaled": bool(scaled),
                                                     **({"sample_seed": int(sample_seed)} if sample == "sample" else {}),
                                                     "vae_config": config_key,
                                                     "library": package_versions(("diffusers",))})
        if self._dtype == torch.float16 and getattr(cfg, "force_upcast", False):
            logger.info("latent space %s: the VAE runs in float32 (its config sets force_upcast: float16 overflows)",
                        name)
            self._dtype, self.dtype = torch.float32, "float32"
        self.image_size = size
        self.sample = sample
        self.sample_seed = int(sample_seed)
        self.interpolation = interpolation
        self.scaled = bool(scaled)
        self.scaling_factor = float(getattr(cfg, "scaling_factor", 1.0) or 1.0)
        self.shift_factor = float(getattr(cfg, "shift_factor", None) or 0.0)
        self._factor = factor
        self._weights_file = weights_file
        self.vae = vae.to(self._device).eval()  # float32 weights (built so, or loaded with torch_dtype)
        for p in self.vae.parameters():
            p.requires_grad_(False)
        self._forward = torch.compile(self._forward_tensor) if compile else self._forward_tensor


    # ------------------------------------------------------------------ public
    def encode_images(self, images: Any, *, batch_size: int | None = None) -> np.ndarray:
        """Encode images into VAE latents.

        Parameters
        ----------
        images : ndarray of shape (n_images, height, width, 3) or (n_images, 3, height, width), or list
            uint8 in [0, 255] or floats in [0, 1] (NumPy or torch), or a list of PIL images /
            single-image arrays; any size (resized and centre-cropped to ``image_size``).
        batch_size : int or None
            Override the space's batch size.

        Returns
        -------
        latents : ndarray of shape (n_images, c, image_size / f, image_size / f), float32
            ``f`` is the VAE's downsampling factor (8 for SD): (n, 4, 32, 32) at 256 px.
        """
        items = _as_pixel_list(images)
        return self._run(items, self._encode_image_batch, batch_size, unit="img")

    def decode_latents(self, latents: Any, *, batch_size: int | None = None) -> np.ndarray:
        """Decode latents of this space back to images (the inverse of :meth:`encode_images`).

        Parameters
        ----------
        latents : array-like of shape (n, c, h, w)
            Latents in this space's scale (raw, or scaled when ``scaled=True``); ``c`` must be the
            VAE's latent channels, ``h`` and ``w`` may differ from ``shape``.
        batch_size : int or None
            Override the space's batch size.

        Returns
        -------
        images : ndarray of shape (n, h * f, w * f, 3), uint8
        """
        import torch

        arr = np.asarray(latents.detach().cpu().numpy() if hasattr(latents, "detach") else latents)
        if arr.ndim != 4 or arr.shape[1] != self.shape[0]:
            raise ShapeMismatchError(format_error(
                "latents", f"an array of shape (n, {self.shape[0]}, h, w), e.g. (n, {', '.join(map(str, self.shape))})",
                arr, "Pass latents from encode_images (or a decoder's 'vae_latents'); one latent needs z[None]"))
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValidationError(format_error("latents", "a float array", arr))
        check_finite(arr, "latents")
        n, (h, w) = len(arr), arr.shape[2:]
        out = np.empty((n, h * self._factor, w * self._factor, 3), dtype=np.uint8)
        bs = int(batch_size or self.batch_size)
        with torch.inference_mode(), self._autocast():
            for start in range(0, n, bs):
                z = torch.as_tensor(arr[start:start + bs], dtype=torch.float32, device=self._device)
                if self.scaled:
                    z = z / self.scaling_factor + self.shift_factor
                img = self.vae.decode(z).sample.float().clamp(-1, 1)
                u8 = ((img + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
                out[start:start + bs] = u8.cpu().numpy()
        return out

    # ------------------------------------------------------------------ internals
    def _pixels(self, im: Any) -> Any:
        """One image -> float tensor (3, image_size, image_size) in [-1, 1] on the space's device."""
        import torch
        import torch.nn.functional as F

        if hasattr(im, "convert"):
            im = np.asarray(im.convert("RGB"))
        arr = np.ascontiguousarray(im)
        if not arr.flags.writeable:  # e.g. np.asarray of a PIL image; torch wants writable memory
            arr = arr.copy()
        t = torch.from_numpy(arr).to(self._device).permute(2, 0, 1)[None]
        t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
        size = self.image_size
        h, w = t.shape[-2:]
        if (h, w) != (size, size) and self.interpolation == "lanczos":
            t = _lanczos(t[0].cpu(), size).to(self._device)[None]
        elif (h, w) != (size, size):
            scale = size / min(h, w)
            nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
            t = F.interpolate(t, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
            top, left = (nh - size) // 2, (nw - size) // 2
            t = t[..., top:top + size, left:left + size]
        return t[0].clamp(0.0, 1.0) * 2.0 - 1.0

    def _forward_tensor(self, x: Any) -> Any:
        """Pixels (n, 3, S, S) in [-1, 1] -> latents (n, *shape) (posterior mean, optionally scaled)."""
        z = self.vae.encode(x).latent_dist.mean
        if self.scaled:
            z = (z - self.shift_factor) * self.scaling_factor
        return z

    def _encode_image_batch(self, items: list[Any]) -> Any:
        import torch

        with torch.autocast(device_type=self._device.type, enabled=False):
            pixels = torch.stack([self._pixels(im) for im in items])
        if self.sample == "mean":
            return self._forward(pixels)
        # a posterior sample per image, its noise seeded by the image's pixels and sample_seed (batch-independent)

        dist = self.vae.encode(pixels).latent_dist
        eps = torch.stack([torch.randn(tuple(dist.mean.shape[1:]), dtype=torch.float32, generator=torch.Generator(
            "cpu").manual_seed(_content_seed(p.float().cpu().numpy(), self.sample_seed))) for p in pixels])
        z = dist.mean + dist.std * eps.to(dist.mean.device, dist.mean.dtype)
        if self.scaled:
            z = (z - self.shift_factor) * self.scaling_factor
        return z


def _lanczos(t: Any, size: int) -> Any:
    """(3, H, W) float in [0, 1] -> (3, size, size): shorter side to ``size`` with PIL's Lanczos, centre crop.

    Per channel in PIL's 32-bit float mode, so no 8-bit rounding is added; for a square image this is
    ``Image.resize((size, size), LANCZOS)`` of the reference.
    """
    import torch
    from PIL import Image

    h, w = int(t.shape[-2]), int(t.shape[-1])
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    chans = [np.asarray(Image.fromarray(c.numpy().astype(np.float32), mode="F").resize(
        (nw, nh), resample=Image.Resampling.LANCZOS)) for c in t]
    top, left = (nh - size) // 2, (nw - size) // 2
    out = np.stack(chans)[:, top:top + size, left:left + size]
    return torch.from_numpy(np.ascontiguousarray(out))


# ---------------------------------------------------------------------------------------------- builder
def vae_files(sub: str = "") -> tuple[tuple[str, ...], ...]:
    """The exact files the ``sd-vae`` space reads: ``config.json`` + one weights file, in ``sub``.

    The weights are held in float32 whatever the compute dtype (autocast runs the reduced one), so
    the full-precision safetensors come first; a folder or cache holding only the ``fp16`` variant
    or only the pickled ``.bin`` is accepted as well (the order of
    :func:`~neurodecode.io.hub.weight_group` for float32).

    Parameters
    ----------
    sub : str
        ``""`` (a VAE repository, e.g. ``stabilityai/sd-vae-ft-mse``) or ``"vae"`` (a Stable
        Diffusion pipeline's ``vae/``).

    Returns
    -------
    files : tuple of file groups
        See :func:`~neurodecode.io.hub.resolve_files`.
    """
    from ..io.hub import diffusers_model_files

    return diffusers_model_files(sub, None)


def vae_subfolder(target: Any, subfolder: str | None = None) -> str:
    """Where the ``AutoencoderKL`` sits in ``target`` (a folder or a hub id): ``""`` or ``"vae"``.

    ``subfolder`` decides when given. Otherwise a folder (or the cached snapshot of a hub id)
    holding ``config.json`` is a VAE repository and one holding only ``vae/config.json`` is a
    pipeline; anything else (nothing cached yet, a partial cache) is read as a VAE repository,
    so the missing ``config.json`` is what gets named.
    """
    if subfolder is not None:
        check_option(subfolder, "subfolder", ("", "vae"))
        return subfolder
    from ..io.hub import cached_snapshot, looks_like_hub_id

    path = Path(str(target)).expanduser()
    folder = path if path.is_dir() else cached_snapshot(str(target)) if looks_like_hub_id(str(target)) else None
    if folder is not None and not (folder / "config.json").is_file() and (folder / "vae" / "config.json").is_file():
        return "vae"
    return ""


def _load_folder(folder: Path, sub: str) -> tuple[Any, Path, str]:
    """An ``AutoencoderKL`` from ``folder/sub`` (every file of :func:`vae_files` present), float32 weights."""
    from ..io.hub import group_choice, pick_variant

    where = folder / sub if sub else folder
    try:
        class_name = json.loads((where / "config.json").read_text(encoding="utf-8")).get("_class_name")
    except (json.JSONDecodeError, AttributeError) as exc:
        raise DataIntegrityError(format_error("weights", "a JSON config.json", str(where / "config.json"),
                                              "Re-download or re-save the folder")) from exc
    if class_name not in (None, "AutoencoderKL"):
        raise ValidationError(format_error("weights", "an AutoencoderKL (KL-regularised VAE)", f"a {class_name} in "
                                           f"{where}", "Point weights at a Stable-Diffusion-class VAE"))
    choice = group_choice(folder, vae_files(sub)[1])
    if choice is None:  # pragma: no cover - resolve_files checked it
        raise MissingFileError(format_error("weights", f"{_WEIGHTS_FILE} in {where}", str(where)))
    import torch

    kwargs: dict[str, Any] = {"torch_dtype": torch.float32, "low_cpu_mem_usage": True,
                              "variant": pick_variant(folder, sub, None)}
    if choice.endswith(".bin"):
        kwargs["use_safetensors"] = False  # a pickle-only folder (older repositories), as the generators read it
    try:
        vae = _autoencoder_kl().from_pretrained(str(folder), subfolder=sub or None, local_files_only=True, **kwargs)
    except (OSError, ValueError, RuntimeError) as exc:
        raise DataIntegrityError(format_error("weights", "an AutoencoderKL loadable by diffusers", str(where),
                                              f"Check the folder ({exc})")) from exc
    return vae, folder / choice, str(where.resolve())


def build_vae_space(name: str, *, weights: Any = None, device: Any = "cpu", dtype: Any = "float32",
                    batch_size: int = 32, verbose: Any = None, tiny: bool = False, hub_id: str = DEFAULT_VAE,
                    image_size: int | None = None, sample: str = "mean", scaled: bool = False, seed: int = 0,
                    interpolation: str = "bicubic", sample_seed: int = 0,
                    compile: bool = False, subfolder: str | None = None,
                    tiny_image_size: int | None = None) -> VaeSpace:
    """Registry builder of the image-autoencoder spaces (see :func:`~neurodecode.latents.get_space`).

    Parameters
    ----------
    name : str
        Registry name (``"sd-vae"`` or ``"sd-vae-tiny"``).
    weights : None, "random" or path-like or str
        ``None``: ``hub_id`` (tiny twin: seeded random init). ``"random"``: the architecture with
        seeded random weights (SD VAE, or the tiny one for the twin). A local ``AutoencoderKL``
        folder, a Stable Diffusion folder holding ``vae/``, or a hub id of either. Exactly the
        files of :func:`vae_files` are read (full-precision safetensors, else the ``fp16``
        variant, else the pickled ``.bin``), from the folder or the hub cache (``snapshots/`` +
        ``refs/main``).
    device, dtype, batch_size, verbose
        See :func:`~neurodecode.latents.get_space`.
    tiny : bool
        Build the tiny twin.
    hub_id : str
        Hub id of the published weights (default ``stabilityai/sd-vae-ft-mse``).
    image_size : int or None
        Side of the encoded images, a multiple of the downsampling factor (default 256; tiny 32).
    sample : {"mean", "sample"}
        The posterior mean (deterministic, default), or a posterior sample whose noise is seeded by the
        image's resized pixels and ``sample_seed`` (LDM's ``get_first_stage_encoding``; ``sd14-vae-320``).
    interpolation : {"bicubic", "lanczos"}
        Resize with torch's antialiased bicubic (default) or PIL's Lanczos (``sd14-vae-320``, as Takagi).
    sample_seed : int
        Seed of the posterior samples (combined with each image's pixels).
    scaled : bool
        Multiply the latents by the VAE's scaling factor (diffusers' UNet space); default raw,
        the ``vae_latents`` convention of :mod:`neurodecode.generate`.
    seed : int
        Seed of a random initialisation.
    compile : bool
        ``torch.compile`` the encoder (GPU).
    subfolder : {None, "", "vae"}
        Where the ``AutoencoderKL`` sits in ``weights`` (see :func:`vae_subfolder`); ``None``
        finds it (``config.json`` at the root, else ``vae/``). Give ``"vae"`` to fetch a
        pipeline's ``vae/`` from a hub id that is not cached yet.
    tiny_image_size : int or None
        Image size of the tiny twin when it differs from 32 px (a real space encoding at another
        size than 256 gives its twin another size too: ``sd14-vae-320-tiny`` encodes 40 px).

    Returns
    -------
    space : VaeSpace

    Raises
    ------
    OfflineError
        Offline and the hub cache lacks files of :func:`vae_files` (named: a partial cache is
        refused here, not later inside diffusers).
    MissingFileError
        A local folder lacking files (named).
    """
    check_option(sample, "sample", SAMPLES)
    weights_file: Path | None = None
    if weights is None and tiny or weights == "random":
        import torch

        from .._core.device import resolve_device

        # built on the CPU (seeded there, the same on every device) unless shapes only are wanted
        build_on = "meta" if resolve_device(device).type == "meta" else "cpu"
        with seeded(seed), torch.device(build_on):
            vae = tiny_vae(_TINY_IMAGE_SIZE) if tiny else _autoencoder_kl()(**SD_VAE_CONFIG)
        tag = f"random-init:seed={seed}"
    else:
        from ..io.hub import resolve_files

        target = weights if weights is not None else hub_id
        local = Path(str(target)).expanduser()
        if local.is_dir() and subfolder is None and not (local / "config.json").is_file() \
                and not (local / "vae" / "config.json").is_file():
            raise MissingFileError(format_error(
                "weights", "an AutoencoderKL folder (config.json + diffusion_pytorch_model.safetensors) or a Stable "
                "Diffusion folder with vae/", f"{local} without config.json or vae/config.json",
                f"Save one with AutoencoderKL.save_pretrained(FOLDER), or download {DEFAULT_VAE}"))
        sub = vae_subfolder(target, subfolder)
        try:
            folder = resolve_files(target, vae_files(sub), what=f"VAE weights {str(target)!r}")
        except OfflineError as exc:
            raise OfflineError(f"VAE weights {str(target)!r}: {exc}") from exc
        vae, weights_file, where = _load_folder(folder, sub)
        tag = f"folder:{where}" if local.is_dir() else f"hub:{target}"
    if tiny and tiny_image_size is not None:
        image_size = int(tiny_image_size)
    elif image_size is None:
        image_size = _TINY_IMAGE_SIZE if tiny else _REAL_IMAGE_SIZE
    logger.info("latent space %s: %s", name, tag)
    return VaeSpace(name, vae=vae, image_size=image_size, sample=sample, scaled=scaled, weights=tag,
                    weights_file=weights_file, device=device, dtype=dtype, batch_size=batch_size, verbose=verbose,
                    compile=compile, interpolation=interpolation, sample_seed=sample_seed)


def vae_artefacts(name: str, *, weights: Any = None, dtype: Any = None, tiny: bool = False,
                  hub_id: str = "stabilityai/sd-vae-ft-mse", subfolder: str | None = None,
                  **options: Any) -> list[Any]:
    """Files of the ``sd-vae`` space: an ``AutoencoderKL`` (``config.json`` + weights), what its builder resolves.

    The same list as the builder's (:func:`~neurodecode.latents.vae.vae_files` in the subfolder
    :func:`~neurodecode.latents.vae.vae_subfolder` finds); the weights are held in float32 whatever
    ``dtype``, so the full-precision file is preferred.
    """
    from ..io.hub import ExternalArtefact, HubArtefact

    if weights == "random" or (weights is None and tiny):
        return [ExternalArtefact(name, "random", "random init (seeded), nothing to fetch")]
    target = str(weights) if weights is not None else hub_id
    if Path(target).expanduser().exists():
        return [ExternalArtefact(target, "folder", f"latent space {name}: a local folder (read as is)")]
    licence = {"stabilityai/sd-vae-ft-mse": "MIT",
               "CompVis/stable-diffusion-v1-4": "CreativeML OpenRAIL-M"}.get(target, "unknown (see the model card)")
    return [HubArtefact(target, vae_files(vae_subfolder(target, subfolder)), licence,
                        f"latent space {name}: SD VAE")]


def _content_seed(pixels: np.ndarray, seed: int) -> int:
    """A 63-bit seed from an image's resized pixels and the space's seed (same image -> same draw)."""
    digest = hashlib.sha256(np.ascontiguousarray(pixels).tobytes() + int(seed).to_bytes(8, "little", signed=True))
    return int.from_bytes(digest.digest()[:8], "little") >> 1
