"""Stable Diffusion img2img from a decoded init latent and a decoded text condition (Takagi & Nishimoto).

Takagi & Nishimoto (CVPR 2023 and the tech report arXiv 2306.11536; code
``yu-takagi/StableDiffusionReconstruction``, ``codes/diffusion_sd1/diffusion_decoding.py``) decode
two things by ridge regression and combine them in Stable Diffusion 1.4:

- the **init latent**: the SD VAE latent of the image at 320 px (4 x 40 x 40), predicted from
  early visual cortex. It is *decoded* by the VAE (a 320 px image), the image is resized to
  512 px (PIL bicubic, after an 8-bit round trip) and *re-encoded* (a posterior sample, times
  the scaling factor): the img2img start;
- the **text condition**: the SD-1.4 cross-attention condition (CLIP ViT-L/14 text tokens,
  77 x 768), predicted from ventral cortex, or a decoded caption (the "text" variant) encoded by
  SD's own text encoder.

Then DDIM img2img: 50 steps, strength 0.8 (40 steps run), classifier-free guidance 5 against the
empty prompt, eta 0, five samples per image (seed 42).

We run the computation of diffusers' ``StableDiffusionImg2ImgPipeline`` (same components, same
order of random draws: posterior sample, then noise, from the item's own ``torch.Generator``)
through the shared batched loop of :mod:`neurodecode.generate._base`, so a batch equals
one-at-a-time generation and the predicted conditions of different items never mix.

One difference between diffusers and the LDM code Takagi ran is kept as an option,
``init_noise``: LDM's ``stochastic_encode`` noises the init latent to the DDIM timestep *above*
the first one it denoises (801, then denoising from 781 with 50 steps and strength 0.8);
diffusers noises it to the first denoised timestep (781). ``init_noise="ldm"`` (default, the
reference) or ``"diffusers"`` (the plain pipeline).

Shared by ``sd2-depth`` (:mod:`._depth2img`) and ``sd-controlnet-depth`` (:mod:`._controlnet`),
which add a depth map to the same img2img computation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from .._core.errors import ShapeMismatchError, ValidationError
from .._core.validation import check_option, format_error
from ._base import (
    SD_BETAS,
    Generator,
    denoise,
    expand_seeds,
    fresh_scheduler,
    load_subfolders,
    prepare_latents,
    randn_items,
    tiny_unet_config,
    tiny_vae,
)

__all__ = ["SDImg2ImgGenerator", "INIT_NOISE", "SAMPLE_STRIDE"]

#: Where the init latent is noised: ``"ldm"`` one DDIM timestep above the first denoised one (Takagi's LDM
#: ``stochastic_encode``), ``"diffusers"`` at the first denoised timestep (diffusers' img2img pipelines).
INIT_NOISE = ("ldm", "diffusers")

#: Seed of sample ``j`` of an item seeded ``s`` in :meth:`SDImg2ImgGenerator.generate_samples`: ``s + j * SAMPLE_STRIDE``
#: (so sample 0 is what :meth:`~SDImg2ImgGenerator.generate` draws with seed ``s``).
SAMPLE_STRIDE = 1 << 20

#: Latent keys that may replace a required one: the init image instead of its VAE latent, a caption
#: instead of the text tokens.
ALTERNATIVES = {"vae_latents": "init_images", "clip_text_tokens": "captions"}

#: The CLIP BPE's start / end token ids (the tiny tier's text encoder reads the real tokenizer).
_CLIP_VOCAB, _BOS, _EOS = 49408, 49406, 49407


def tiny_clip_tokenizer(pad_token: str = "<|endoftext|>") -> Any:
    """A ``transformers.CLIPTokenizer`` with the real CLIP BPE (open_clip's vocabulary, 49,408 tokens), offline.

    ``pad_token`` as the weights' tokenizer: the end token for SD 1.x, ``"!"`` for SD 2.x (OpenCLIP).
    """
    import tempfile

    from transformers import CLIPTokenizer

    from ..testing._hub import clip_bpe_tokenizer_files

    with tempfile.TemporaryDirectory() as tmp:
        return CLIPTokenizer.from_pretrained(str(clip_bpe_tokenizer_files(tmp, pad_token=pad_token)))


def tiny_clip_text_encoder(width: int, **overrides: Any) -> Any:
    """The tiny tier's CLIP text encoder: the real vocabulary and 77 positions at toy width (random init)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(vocab_size=_CLIP_VOCAB, hidden_size=width, intermediate_size=2 * width,
                                        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                                        bos_token_id=_BOS, eos_token_id=_EOS, pad_token_id=_EOS, **overrides))


def ddim_config() -> dict[str, Any]:
    """The DDIM schedule of Stable Diffusion 1.x / 2.x (``steps_offset=1``, no final alpha of one, no clipping).

    With 50 steps it runs the timesteps 981, 961, ..., 1, as LDM's ``DDIMSampler`` (``ddim_discretize="uniform"``).
    """
    return {**SD_BETAS, "steps_offset": 1, "clip_sample": False, "set_alpha_to_one": False}


def sd_ddim(scheduler: Any) -> Any:
    """A DDIM scheduler on ``scheduler``'s noise schedule with SD's DDIM conventions (:func:`ddim_config`) enforced.

    Repositories ship a PNDM config whose ``steps_offset`` / ``clip_sample`` entries vary with their age (a missing
    ``clip_sample`` would make DDIM clip); the reference LDM sampler neither clips nor starts at timestep 0.
    """
    from diffusers import DDIMScheduler

    fixed = {k: v for k, v in ddim_config().items() if k not in SD_BETAS}
    return DDIMScheduler.from_config(scheduler.config, **fixed)


def img2img_start(scheduler: Any, init_latents: Any, generators: Sequence[Any], *, steps: int, strength: float,
                  init_noise: str, device: Any, dtype: Any) -> tuple[Any, Any]:
    """Noised init latents and the timesteps to run (img2img at ``strength``).

    ``init_noise="diffusers"`` is :func:`~neurodecode.generate._base.prepare_latents`. ``"ldm"`` runs the same
    timesteps but noises to the schedule's timestep just before the first one run (LDM's ``stochastic_encode`` at
    ``t_enc = int(strength * steps)``), or to the first one when the whole schedule runs.
    """
    check_option(init_noise, "init_noise", INIT_NOISE)
    if init_noise == "diffusers":
        return prepare_latents(scheduler, generators, shape=tuple(init_latents.shape[1:]), steps=steps, device=device,
                               dtype=dtype, init_latents=init_latents, strength=strength)
    if not 0.0 < float(strength) <= 1.0:
        raise ValidationError(format_error("strength", "a number in (0, 1]", strength,
                                           "Takagi & Nishimoto use 0.8 (40 of 50 DDIM steps)"))
    scheduler.set_timesteps(int(steps), device=device)
    order = int(getattr(scheduler, "order", 1))
    n_run = max(min(int(steps * float(strength)), int(steps)), 1)
    t_start = int(steps) - n_run
    all_t = scheduler.timesteps
    timesteps = all_t[t_start * order:]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(t_start * order)
    noise = randn_items(tuple(init_latents.shape[1:]), generators, device=device, dtype=dtype)
    t_noise = all_t[t_start * order - 1] if t_start > 0 else all_t[0]
    latents = scheduler.add_noise(init_latents.to(device=device, dtype=dtype), noise,
                                  t_noise.reshape(1).repeat(noise.shape[0]))
    return latents, timesteps


class SDImg2ImgGenerator(Generator):
    """Stable Diffusion 1.4 img2img from a decoded init latent and a decoded text condition (Takagi & Nishimoto).

    Expects ``latents["vae_latents"]`` of shape (n, 4, h, w) (raw VAE latents, before the scaling factor, or
    scaled with ``scaled_latents=True``: 4 x 40 x 40 at 320 px for Takagi's ``init_latent``, the ``sd14-vae-320``
    space) **or** ``latents["init_images"]`` (n, H, W, 3) in
    0-255; and ``latents["clip_text_tokens"]`` of shape (n, 77, 768) (the SD-1.4 condition, CLIP ViT-L/14
    text tokens) **or** ``latents["captions"]`` (n strings, encoded by SD's text encoder).

    Options of :meth:`generate`: ``strength`` (default 0.8), ``init_noise`` (``"ldm"`` default, see
    :data:`INIT_NOISE`), ``size`` (pixels of the re-encoded init image; default the UNet's, 512 for SD 1.4),
    ``scheduler`` (``"ddim"`` default, eta 0). Defaults: 50 steps, guidance 5.

    :meth:`generate` returns one image per item (n, H, W, 3); :meth:`generate_samples` returns
    ``n_samples`` per item (n, n_samples, H, W, 3), five by default as Takagi.

    Parameters
    ----------
    n_samples : int or None
        Samples per image of :meth:`generate_samples` (``None``: ``default_n_samples``, 5 as Takagi).
    scaled_latents : bool
        ``vae_latents`` are given times the VAE's scaling factor (diffusers' UNet space; Takagi's ``init_latent``
        and the ``sd14-vae-320`` space are): they are divided by it before decoding. Default: raw latents, the
        ``vae_latents`` convention of :mod:`neurodecode.generate`.
    **kwargs
        See :class:`~neurodecode.generate._base.Generator`.

    Examples
    --------
    >>> gen = SDImg2ImgGenerator("tiny")                                      # doctest: +SKIP
    >>> images = gen.generate_samples({"vae_latents": z, "captions": caps}, seeds=42)  # (n, 5, H, W, 3)  # doctest: +SKIP
    """

    name = "sd-img2img"
    default_weights = "CompVis/stable-diffusion-v1-4"
    default_steps = 50
    default_guidance = 5.0
    default_strength = 0.8
    default_scheduler = "ddim"
    #: Where the init latent is noised by default (see :data:`INIT_NOISE`).
    default_init_noise = "ldm"
    #: Samples per image of :meth:`generate_samples` (Takagi & Nishimoto: 5).
    default_n_samples = 5
    licence = "CreativeML OpenRAIL-M"
    purpose = "SD 1.4 UNet, VAE, CLIP ViT-L/14 text encoder and tokenizer (img2img)"
    optional_keys = ("init_images", "captions")
    #: Tiny tier: text width 40 (not 768: a real-tier condition is refused), UNet at 16 x 16 latents (32 px).
    TINY: ClassVar[dict[str, Any]] = {"text_width": 40, "sample_size": 16}

    def __init__(self, weights: Any = None, *, n_samples: int | None = None, scaled_latents: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(weights, **kwargs)
        self.n_samples = int(self.default_n_samples if n_samples is None else n_samples)
        self.scaled_latents = bool(scaled_latents)

    # ------------------------------------------------------------------ building
    def _build_tiny(self) -> dict[str, Any]:
        from diffusers import DDIMScheduler, UNet2DConditionModel

        cfg = self.tiny_config
        width = int(cfg["text_width"])
        unet = UNet2DConditionModel(**tiny_unet_config(cfg["sample_size"], width))
        return {"unet": unet, "vae": tiny_vae(2 * cfg["sample_size"]), "text_encoder": tiny_clip_text_encoder(width),
                "tokenizer": tiny_clip_tokenizer(), "scheduler": DDIMScheduler(**ddim_config())}

    @classmethod
    def hub_files(cls, dtype: Any = None, **kwargs: Any) -> tuple[tuple[str, ...], ...]:
        from ._base import sd_files

        return sd_files(dtype)

    def _build_real(self, name_or_path: str) -> dict[str, Any]:
        from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        folder = self._resolve(name_or_path)
        parts = load_subfolders(folder, {
            "unet": UNet2DConditionModel, "vae": AutoencoderKL, "text_encoder": CLIPTextModel,
            "tokenizer": CLIPTokenizer, "scheduler": DDIMScheduler}, self.torch_dtype_)
        parts["scheduler"] = sd_ddim(parts["scheduler"])
        return parts

    # ------------------------------------------------------------------ inputs
    def _text_shape(self) -> tuple[int | None, ...]:
        te = self.components_["text_encoder"]
        return (None, int(te.config.max_position_embeddings), int(te.config.hidden_size))

    def _expects(self) -> dict[str, tuple[int | None, ...]]:
        given: set[str] = getattr(self, "_given", set())
        out: dict[str, tuple[int | None, ...]] = {}
        if ALTERNATIVES["vae_latents"] not in given:
            out["vae_latents"] = (None, int(self.components_["vae"].config.latent_channels), None, None)
        if ALTERNATIVES["clip_text_tokens"] not in given:
            out["clip_text_tokens"] = self._text_shape()
        return {**out, **self._extra_expects()}

    def _extra_expects(self) -> dict[str, tuple[int | None, ...]]:
        return {}

    def _optional_expects(self) -> dict[str, tuple[int | None, ...]]:
        return {"init_images": (None, None, None, 3)}

    def check_latents(self, latents: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Check the inputs (see the class docstring); ``captions`` come back as an array of str.

        Raises
        ------
        ShapeMismatchError
            A missing input, a shape that does not fit the loaded weights, or a caption count that is not
            the number of items.
        """
        if not isinstance(latents, Mapping):
            return super().check_latents(latents)
        self.load()
        given: set[str] = {str(k) for k, v in latents.items() if v is not None}
        captions = latents.get("captions")
        numeric = {k: v for k, v in latents.items() if k != "captions" and v is not None}
        self._given = given
        try:
            out = super().check_latents(numeric)
        finally:
            self._given = set()
        if captions is not None:
            caps = np.asarray(list(captions) if not isinstance(captions, str) else [captions], dtype=object)
            n = len(next(iter(out.values())))
            if caps.ndim != 1 or len(caps) != n or not all(isinstance(c, str) for c in caps):
                raise ShapeMismatchError(format_error("latents['captions']", f"one caption (str) per item ({n})",
                                                      f"{len(caps)} entries",
                                                      "Pass the decoded captions, one per test item"))
            out["captions"] = caps
        return out

    # ------------------------------------------------------------------ generation
    def generate_samples(self, latents: Mapping[str, Any], *, n_samples: int | None = None,
                         seeds: int | Sequence[int] = 42, **kwargs: Any) -> np.ndarray:
        """Several samples per item, as Takagi & Nishimoto's five generations per test image.

        Parameters
        ----------
        latents : dict of str to ndarray
            As for :meth:`generate`.
        n_samples : int or None
            Samples per item (``None``: the constructor's ``n_samples``, 5 by default).
        seeds : int or list of int
            One seed per item (an int ``s`` means ``s, s + 1, ...``; Takagi seeds 42); sample ``j`` of an
            item seeded ``s`` uses seed ``s + j * SAMPLE_STRIDE`` (so sample 0 is :meth:`generate`'s image).
        **kwargs
            Passed to :meth:`generate` (``steps``, ``guidance``, ``batch_size``, options).

        Returns
        -------
        images : ndarray of uint8, shape (n, n_samples, H, W, 3)
        """
        k = int(self.n_samples if n_samples is None else n_samples)
        if k < 1:
            raise ValidationError(format_error("n_samples", "an int >= 1", k, "Takagi & Nishimoto draw 5"))
        checked = self.check_latents(latents)
        n = len(next(iter(checked.values())))
        base = expand_seeds(seeds, n)
        rep = {key: np.repeat(v, k, axis=0) for key, v in checked.items()}
        all_seeds = [s + j * SAMPLE_STRIDE for s in base for j in range(k)]
        images = self.generate(rep, seeds=all_seeds, **kwargs)
        return np.asarray(images).reshape(n, k, *np.asarray(images).shape[1:])

    def _working_size(self, size: int | None) -> int:
        vae = self.components_["vae"]
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        return int(size) if size is not None else int(self.components_["unet"].config.sample_size) * factor

    def init_pixels(self, latents: Mapping[str, np.ndarray], *, size: int | None = None) -> np.ndarray:
        """The init images that are re-encoded, uint8 (n, size, size, 3), as Takagi builds them.

        From ``vae_latents``: VAE-decoded, ``floor(255 * clip((x + 1) / 2, 0, 1))`` (the reference's 8-bit
        cast), resized with PIL bicubic to ``size``; from ``init_images``: rounded to uint8 and resized the
        same way.
        """
        import torch
        from PIL import Image

        self.load()
        size = self._working_size(size)
        if "init_images" in latents:
            arr = np.clip(np.rint(np.asarray(latents["init_images"], dtype=np.float64)), 0, 255).astype(np.uint8)
        else:
            vae = self.components_["vae"]
            z = torch.as_tensor(np.asarray(latents["vae_latents"], dtype=np.float32))
            if self.scaled_latents:
                z = z / float(vae.config.scaling_factor)
            with torch.inference_mode():
                x = vae.decode(z.to(device=self.execution_device, dtype=next(vae.parameters()).dtype)).sample
            x = torch.clamp((x.float() + 1.0) / 2.0, 0.0, 1.0).permute(0, 2, 3, 1).cpu().numpy()
            arr = (255.0 * x).astype(np.uint8)
        if arr.shape[1:3] != (size, size):
            arr = np.stack([np.asarray(Image.fromarray(a).resize((size, size), Image.Resampling.BICUBIC)) for a in arr])
        return arr

    def _init_latents(self, latents: Mapping[str, np.ndarray], generators: Sequence[Any], size: int | None) -> Any:
        """Scaled init latents: each item's init image encoded, posterior sampled with its own generator."""
        import torch

        pixels = self.init_pixels(latents, size=size)
        vae = self.components_["vae"]
        x = torch.as_tensor(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)), dtype=torch.float32) / 255.0
        x = (2.0 * x - 1.0).to(device=self.execution_device, dtype=next(vae.parameters()).dtype)
        z = torch.cat([vae.encode(x[i:i + 1]).latent_dist.sample(generator=g) for i, g in enumerate(generators)])
        return (z * float(vae.config.scaling_factor)).to(self.torch_dtype_)

    def encode_captions(self, captions: Sequence[str]) -> Any:
        """Captions -> the text encoder's last hidden states (n, 77, width) (SD's cross-attention condition)."""
        c = self.components_
        te, tok = c["text_encoder"], c["tokenizer"]
        ids = tok(list(captions), padding="max_length", max_length=int(te.config.max_position_embeddings),
                  truncation=True, return_tensors="pt").input_ids.to(self.execution_device)
        return te(input_ids=ids).last_hidden_state.to(self.torch_dtype_)

    def _condition(self, latents: Mapping[str, np.ndarray]) -> Any:
        if "clip_text_tokens" in latents:
            return self._tensor(latents["clip_text_tokens"])
        return self.encode_captions([str(c) for c in latents["captions"]])

    def _generate_batch(self, latents: dict[str, np.ndarray], generators: list[Any], *, steps: int, guidance: float,
                        strength: float | None = None, init_noise: str | None = None, size: int | None = None,
                        scheduler: str | None = None, **options: Any) -> Any:
        c = self.components_
        sched = fresh_scheduler(c["scheduler"], scheduler or self.default_scheduler)
        strength = self.default_strength if strength is None else float(strength)
        self._check_options(options)
        init = self._init_latents(latents, generators, size)
        cond = self._condition(latents)
        uncond = self._empty_prompt().to(cond.dtype).expand(cond.shape[0], -1, -1)
        init_noise = self.default_init_noise if init_noise is None else init_noise
        lat, timesteps = img2img_start(sched, init, generators, steps=steps, strength=strength, init_noise=init_noise,
                                       device=self.execution_device, dtype=self.torch_dtype_)
        lat = self._denoise(sched, lat, timesteps, cond=cond, uncond=uncond, guidance=guidance, latents=latents,
                            generators=generators, **options)
        return self._decode(lat)

    #: Options of :meth:`generate` that only a subclass reads.
    extra_options: ClassVar[tuple[str, ...]] = ()

    def _check_options(self, options: Mapping[str, Any]) -> None:
        unknown = sorted(set(options) - set(self.extra_options))
        if unknown:
            known = ["strength", "init_noise", "size", "scheduler", *self.extra_options]
            raise ValidationError(format_error("options", f"options among {known}", f"unknown {unknown}"))

    def _denoise(self, sched: Any, lat: Any, timesteps: Any, *, cond: Any, uncond: Any, guidance: float,
                 latents: Mapping[str, np.ndarray], generators: list[Any], **options: Any) -> Any:
        return denoise(self.components_["unet"], sched, lat, timesteps, cond=cond, uncond=uncond, guidance=guidance,
                       generators=generators)

    def provenance(self) -> dict[str, Any]:
        return {**super().provenance(), "default_strength": self.default_strength, "n_samples": self.n_samples,
                "scheduler": self.default_scheduler, "init_noise": self.default_init_noise,
                "sample_seed_stride": SAMPLE_STRIDE, "scaled_latents": self.scaled_latents}
