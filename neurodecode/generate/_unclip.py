"""Stable unCLIP image variation from a pooled CLIP image embedding (``image_embeds``), plain and img2img.

Stable unCLIP (``stabilityai/stable-diffusion-2-1-unclip``, OpenCLIP ViT-H/14, 1024-d) feeds
the pooled image embedding to the UNet as a class embedding, after *noise augmentation*: the
embedding is standardised (``StableUnCLIPImageNormalizer``), noised to ``noise_level`` with a
DDPM schedule, un-standardised, and concatenated with the timestep embedding of the noise
level. Classifier-free guidance uses an all-zero class embedding and the empty prompt.

We run the same computation as diffusers' ``StableUnCLIPImg2ImgPipeline`` with
``image_embeds=`` (whose "img2img" only means the CLIP image is given as pixels; it always
starts from noise), through the shared batched loop with per-item seeds, and add a real
img2img path: give ``vae_latents`` (raw VAE latents of a low-level image) and ``strength``, or
``init_mix=beta`` to start the full schedule from ``(1 - beta) z + beta noise`` (Neuro-Vision to
Language's start, beta = 0.93). ``prompts=`` (one str per item) conditions the UNet's cross-attention
on a text prompt as the pipeline's ``prompt=`` does (default: the empty prompt, as before); the
unconditional half of classifier-free guidance keeps the empty prompt and a zero class embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from .._core.errors import ValidationError
from .._core.validation import format_error
from ._base import (
    SD_BETAS,
    Generator,
    denoise,
    expand_seeds,
    fresh_scheduler,
    load_subfolders,
    randn_items,
    tiny_text_config,
    tiny_unet_config,
    tiny_vae,
)

__all__ = ["UnCLIPGenerator"]

class UnCLIPGenerator(Generator):
    """Image variation from a pooled CLIP image embedding.

    Expects ``latents["clip_image_embeds"]`` of shape (n, 1024) (OpenCLIP ViT-H/14 for the
    real tier), and optionally ``latents["vae_latents"]`` of shape (n, 4, h, w) for img2img.

    Options of :meth:`generate`: ``prompts`` (one str per item, default the empty prompt),
    ``noise_level`` (0-1000, default 0), ``strength`` (img2img, default 0.75), ``init_mix``
    (None; a beta in (0, 1]: with ``vae_latents``, the whole schedule runs from
    ``(1 - beta) z + beta noise``, ``z`` the scaled VAE latent, instead of img2img at ``strength``),
    ``scheduler`` (``"ddim"`` default, ``"unipc"``), ``height``/``width``.
    """

    name = "unclip"
    default_weights = "stabilityai/stable-diffusion-2-1-unclip"
    default_steps = 20
    default_guidance = 10.0
    optional_keys = ("vae_latents",)
    #: Tiny tier: ``clip-vit-h-14-tiny`` embeddings (24); 32 px images.
    TINY: ClassVar[dict[str, Any]] = {"embed_dim": 24, "text_width": 32, "text_tokens": 9, "sample_size": 16}

    def _build_tiny(self) -> dict[str, Any]:
        from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel
        from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
        from transformers import CLIPTextModel

        cfg = self.tiny_config
        embed, width = int(cfg["embed_dim"]), int(cfg["text_width"])
        unet = UNet2DConditionModel(**tiny_unet_config(cfg["sample_size"], width), class_embed_type="projection",
                                    projection_class_embeddings_input_dim=2 * embed)
        vae = tiny_vae(2 * cfg["sample_size"])
        text_encoder = CLIPTextModel(tiny_text_config(width, cfg["text_tokens"]))
        return {
            "unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": None,
            "image_normalizer": StableUnCLIPImageNormalizer(embedding_dim=embed),
            "image_noising_scheduler": DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
            "scheduler": DDIMScheduler(**SD_BETAS, prediction_type="v_prediction", clip_sample=False,
                                       set_alpha_to_one=False),
        }

    licence = "CreativeML OpenRAIL++-M"
    purpose = "Stable unCLIP (ViT-H) UNet, VAE, text encoder, image normaliser"

    @classmethod
    def hub_files(cls, dtype: Any = None, **kwargs: Any) -> tuple[tuple[str, ...], ...]:
        from ..io.hub import diffusers_model_files, scheduler_files
        from ._base import sd_files

        return (*sd_files(dtype), *diffusers_model_files("image_normalizer", dtype),
                *scheduler_files("image_noising_scheduler"))

    def _build_real(self, name_or_path: str) -> dict[str, Any]:
        from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
        from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
        from transformers import CLIPTextModel, CLIPTokenizer

        folder = self._resolve(name_or_path)
        return load_subfolders(folder, {
            "unet": UNet2DConditionModel, "vae": AutoencoderKL, "text_encoder": CLIPTextModel,
            "tokenizer": CLIPTokenizer, "image_normalizer": StableUnCLIPImageNormalizer,
            "image_noising_scheduler": DDPMScheduler, "scheduler": DDIMScheduler}, self.torch_dtype_)

    def _expects(self) -> dict[str, tuple[int | None, ...]]:
        return {"clip_image_embeds": (None, int(self.components_["image_normalizer"].mean.shape[-1]))}

    def _optional_expects(self) -> dict[str, tuple[int | None, ...]]:
        return {"vae_latents": (None, int(self.components_["vae"].config.latent_channels), None, None)}

    def _class_labels(self, embeds: Any, generators: list[Any], noise_level: int) -> Any:
        """Noise-augmented image embedding + noise-level embedding (as the unCLIP UNet was trained)."""
        import torch
        from diffusers.models.embeddings import get_timestep_embedding

        c = self.components_
        n_train = int(c["image_noising_scheduler"].config.num_train_timesteps)
        if not 0 <= int(noise_level) < n_train:
            raise ValidationError(format_error("noise_level", f"an int in [0, {n_train - 1}]", noise_level,
                                               "0 keeps the embedding as it is (the usual choice for decoding)"))
        noise = randn_items(embeds.shape[1:], generators, device=embeds.device, dtype=embeds.dtype)
        level = torch.full((embeds.shape[0],), int(noise_level), device=embeds.device, dtype=torch.long)
        norm = c["image_normalizer"]
        x = norm.scale(embeds)
        x = c["image_noising_scheduler"].add_noise(x, timesteps=level, noise=noise)
        x = norm.unscale(x)
        level_emb = get_timestep_embedding(level, embedding_dim=x.shape[-1], flip_sin_to_cos=True,
                                           downscale_freq_shift=0).to(x.dtype)
        return torch.cat([x, level_emb], dim=1)

    def _prompt_embeds(self, prompts: Sequence[str]) -> Any:
        """Text-encoder hidden states (b, tokens, width) of one prompt per item (the empty prompt is cached)."""
        import torch

        if all(p == "" for p in prompts):
            return self._empty_prompt().expand(len(prompts), -1, -1)
        c = self.components_
        enc, tok = c["text_encoder"], c.get("tokenizer")
        length = int(enc.config.max_position_embeddings)
        if tok is not None:
            ids = tok(list(prompts), padding="max_length", max_length=length, truncation=True,
                      return_tensors="pt").input_ids
        else:  # tiny tier, no BPE vocabulary: start, one id per word (crc32), end, end-padded (as the empty prompt)
            import zlib

            vocab = int(enc.config.vocab_size)
            ids = torch.full((len(prompts), length), vocab - 1, dtype=torch.long)
            ids[:, 0] = vocab - 2
            for i, text in enumerate(prompts):
                words = [zlib.crc32(w.encode()) % (vocab - 2) for w in str(text).lower().split()][: length - 2]
                if words:
                    ids[i, 1:1 + len(words)] = torch.tensor(words, dtype=torch.long)
        return enc(input_ids=ids.to(self.execution_device)).last_hidden_state

    def generate(self, latents: Any, *, prompts: Sequence[str] | None = None, seeds: int | Sequence[int] = 0,
                 batch_size: int = 8, **options: Any) -> Any:
        """Generate one image per item (see :meth:`Generator.generate`), optionally with a text prompt per item.

        Parameters
        ----------
        prompts : list of str or None
            One prompt per item (NVL: the language model's Stable Diffusion prompt); None: the empty
            prompt for every item (unchanged behaviour).
        """
        if prompts is None:
            return super().generate(latents, seeds=seeds, batch_size=batch_size, **options)
        n = len(np.asarray(next(iter(latents.values())))) if latents else 0
        if isinstance(prompts, str) or len(prompts) != n or not all(isinstance(p, str) for p in prompts):
            raise ValidationError(format_error("prompts", f"a list of {n} str (one per item)", prompts,
                                               "Pass one prompt per item, or None for the empty prompt"))
        all_seeds = expand_seeds(seeds, n)
        bs = max(1, int(batch_size))
        chunks = [super(UnCLIPGenerator, self).generate(
            {k: np.asarray(v)[s:s + bs] for k, v in latents.items()}, seeds=all_seeds[s:s + bs], batch_size=bs,
            prompts_=list(prompts[s:s + bs]), **options) for s in range(0, n, bs)]
        return np.concatenate(chunks, axis=0)

    def _generate_batch(self, latents: dict[str, np.ndarray], generators: list[Any], *, steps: int, guidance: float,
                        noise_level: int = 0, strength: float = 0.75, init_mix: float | None = None,
                        scheduler: str | None = None, height: int | None = None, width: int | None = None,
                        prompts_: list[str] | None = None) -> Any:
        import torch

        c = self.components_
        sched = fresh_scheduler(c["scheduler"], scheduler)
        embeds = self._tensor(latents["clip_image_embeds"])
        b = embeds.shape[0]
        if init_mix is not None and "vae_latents" in latents:
            lat, timesteps = self._mixed_start(sched, latents["vae_latents"], generators, steps=steps, beta=init_mix)
        else:
            lat, timesteps = self._start_latents(sched, latents, generators, steps=steps, strength=strength,
                                                 height=height, width=width)
        labels = self._class_labels(embeds, generators, noise_level)
        empty = self._empty_prompt().expand(b, -1, -1)
        cond = empty if prompts_ is None else self._prompt_embeds(prompts_).to(empty.dtype)
        lat = denoise(c["unet"], sched, lat, timesteps, cond=cond, uncond=empty, guidance=guidance,
                      unet_kwargs={"class_labels": labels},
                      uncond_kwargs={"class_labels": torch.zeros_like(labels)}, generators=generators)
        return self._decode(lat)

    def _mixed_start(self, scheduler: Any, vae_latents: np.ndarray, generators: list[Any], *, steps: int,
                     beta: float) -> tuple[Any, Any]:
        """``(1 - beta) z + beta noise`` (``z``: the scaled VAE latent) and the full schedule (NVL's start)."""
        if not 0.0 < float(beta) <= 1.0:
            raise ValidationError(format_error("init_mix", "a number in (0, 1]", beta,
                                               "NVL uses 0.93: mostly noise, a trace of the decoded VAE latent"))
        init = self._vae_init(vae_latents)
        scheduler.set_timesteps(int(steps), device=self.execution_device)
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(0)
        noise = randn_items(tuple(init.shape[1:]), generators, device=self.execution_device, dtype=init.dtype)
        start = (1.0 - float(beta)) * init + float(beta) * noise
        return start * scheduler.init_noise_sigma, scheduler.timesteps
