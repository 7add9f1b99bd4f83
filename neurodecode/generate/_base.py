"""What every generator shares: input checks, per-item seeding, batching, device/dtype, speed presets.

A generator turns the dict returned by a decoder's ``predict_latents`` (keys from
:data:`neurodecode.models.LATENT_KEYS`) into images (uint8, ``(n, H, W, 3)``) or
captions (``list[str]``). Subclasses implement three hooks:

- ``_build_tiny()`` / ``_build_real(name_or_path)``: create the torch components (same
  architecture; the tiny tier is a small config with seeded random init, offline);
- ``_expects()``: the latent keys and per-item shapes the loaded components consume;
- ``_generate_batch(latents, generators, steps, guidance, **options)``: torch in, images
  in ``[0, 1]`` as a float tensor ``(b, 3, H, W)`` out.

The base class handles everything else the same way for every generator:

- **Seeding per item.** Each item ``i`` gets its own ``torch.Generator`` seeded with
  ``seeds[i]``; initial noise is drawn item by item on the CPU and moved to the device, so
  a batch gives the same images as one-at-a-time generation (and the same noise on CPU and
  GPU).
- **Batching** across test items (``batch_size``), under ``torch.inference_mode``.
- **Speed on GPU** (all also valid on CPU): reduced precision (``dtype="bfloat16"``),
  fused SDPA attention (diffusers' ``AttnProcessor2_0``, its default on torch >= 2),
  channels-last UNet memory layout on CUDA, ``torch.compile`` of the UNet with regional
  compilation of its repeated transformer blocks (``compile=True``,
  ``ModelMixin.compile_repeated_blocks``: one compiled block reused, so cold start stays in
  seconds), a tiny preview VAE (``preview_vae=True``: ``AutoencoderTiny``), and memory
  presets (``preset="24gb"``: VAE tiling and slicing, model CPU offload through
  accelerate hooks on CUDA).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from .._core.errors import ShapeMismatchError, ValidationError
from .._core.logging import logger, progress
from .._core.validation import check_option, format_error
from ..latents.vae import tiny_vae as tiny_vae  # the tiny tier's AutoencoderKL, shared with the sd-vae-tiny space

__all__ = ["Generator", "PRESETS", "expand_seeds", "item_generators", "randn_items", "to_uint8"]

#: Memory / speed presets accepted by every generator.
PRESETS = (None, "24gb")

#: Hub ids of the tiny preview decoders (``AutoencoderTiny``), by latent family.
PREVIEW_VAES = {"sd": "madebyollin/taesd", "sdxl": "madebyollin/taesdxl"}


def expand_seeds(seeds: int | Sequence[int], n: int) -> list[int]:
    """One seed per item: an int ``s`` gives ``s, s + 1, ...``; a list must have ``n`` entries.

    Parameters
    ----------
    seeds : int or sequence of int
        Base seed or one seed per item.
    n : int
        Number of items.

    Returns
    -------
    seeds : list of int of length n
    """
    if isinstance(seeds, (int, np.integer)):
        return [int(seeds) + i for i in range(n)]
    out = [int(s) for s in seeds]
    if len(out) != n:
        raise ValidationError(format_error("seeds", f"an int or one seed per item ({n})", f"{len(out)} seeds",
                                           "Pass a single base seed, or a list as long as the latents"))
    return out


def item_generators(seeds: Sequence[int]) -> list[Any]:
    """A CPU ``torch.Generator`` per item, seeded with its own seed."""
    import torch

    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


def randn_items(shape: Sequence[int], generators: Sequence[Any], *, device: Any, dtype: Any) -> Any:
    """Gaussian noise of shape ``(len(generators), *shape)``, item ``i`` drawn from ``generators[i]``.

    Drawn on the CPU in float32 (identical on every device and for every batch split),
    then moved to ``device`` and cast to ``dtype``.
    """
    import torch

    noise = torch.stack([torch.randn(tuple(shape), generator=g, dtype=torch.float32) for g in generators])
    return noise.to(device=device, dtype=dtype)


def to_uint8(images: Any) -> np.ndarray:
    """Float images in ``[0, 1]``, shape ``(n, 3, H, W)`` (torch) -> uint8 ``(n, H, W, 3)`` (NumPy)."""
    arr = images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    return np.round(arr * 255.0).astype(np.uint8)


#: Noise schedule of Stable-Diffusion-class UNets (the tiny tier's schedulers use it too).
SD_BETAS: dict[str, Any] = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}

#: Files read from a Stable-Diffusion-layout repository (UNet, VAE, CLIP text encoder, tokenizer, scheduler):
#: glob patterns, kept for callers that fetch with ``allow_patterns``; the generators use :func:`sd_files`.
SD_FILES = ("model_index.json", "unet/*.json", "unet/*.safetensors", "vae/*.json", "vae/*.safetensors",
            "text_encoder/*.json", "text_encoder/*.safetensors", "tokenizer/*", "scheduler/*")


def sd_files(dtype: Any = None, *, text_encoder: bool = True) -> tuple[tuple[str, ...], ...]:
    """The exact files of a Stable-Diffusion-layout repository (UNet, VAE, CLIP text encoder, tokenizer, scheduler)."""
    from ..io.hub import clip_tokenizer_files, diffusers_model_files, scheduler_files, transformers_model_files

    groups = [*diffusers_model_files("unet", dtype), *diffusers_model_files("vae", dtype), *scheduler_files()]
    if text_encoder:
        groups += [*transformers_model_files("text_encoder", dtype), *clip_tokenizer_files("tokenizer")]
    return tuple(groups)


def load_subfolders(folder: Any, classes: Mapping[str, Any], dtype: Any = None) -> dict[str, Any]:
    """``{name: cls.from_pretrained(folder, subfolder=name, ...)}`` for each entry of ``classes`` (a diffusers layout).

    Models load straight in ``dtype`` with low host memory (diffusers: ``torch_dtype`` and
    ``low_cpu_mem_usage=True``; transformers: ``dtype``), from the ``fp16`` variant files when
    those are what the folder holds for that dtype (see :func:`neurodecode.io.hub.pick_variant`);
    tokenizers and schedulers load as they are.
    """
    return {name: load_component(folder, name, cls, dtype) for name, cls in classes.items()}


def load_component(folder: Any, sub: str, cls: Any, dtype: Any = None) -> Any:
    """One component of a diffusers-layout folder, in ``dtype``, with the variant fallback fp16 -> full."""
    from ..io.hub import pick_variant

    module = getattr(cls, "__module__", "")
    if not hasattr(cls, "from_pretrained") or "scheduler" in module or "tokeniz" in module or \
            "Scheduler" in cls.__name__ or "Tokenizer" in cls.__name__:
        return cls.from_pretrained(folder, subfolder=sub)
    from pathlib import Path

    from ..io.hub import group_choice, weight_group

    prefix = f"{sub}/" if sub else ""
    if module.startswith("transformers"):
        base = "model"
        kwargs: dict[str, Any] = {"dtype": dtype} if dtype is not None else {}
    else:
        base = "diffusion_pytorch_model"
        kwargs = {"low_cpu_mem_usage": True, **({"torch_dtype": dtype} if dtype is not None else {})}
    choice = group_choice(Path(folder), weight_group(prefix, base, _dtype_name(dtype), sharded=True))
    if choice is not None and choice.endswith(".bin"):
        kwargs["use_safetensors"] = False  # a pickle-only folder (older repositories): no safetensors lookup
    variant = pick_variant(folder, sub, _dtype_name(dtype), base=base)
    return cls.from_pretrained(folder, subfolder=sub, variant=variant, **kwargs)


def _dtype_name(dtype: Any) -> str | None:
    return None if dtype is None else str(dtype).replace("torch.", "")


def tiny_unet_config(sample_size: int, cross_attention_dim: int, *, flat: bool = False) -> dict[str, Any]:
    """Architecture of the tiny tier's SD-class UNet: two levels (32, 64), cross-attention on the outer one.

    ``flat=True`` names the blocks of Versatile Diffusion's text UNet (``UNetFlatConditionModel``).
    """
    kind = "Flat" if flat else "2D"
    return {"sample_size": sample_size, "in_channels": 4, "out_channels": 4, "block_out_channels": (32, 64),
            "layers_per_block": 1, "cross_attention_dim": cross_attention_dim, "attention_head_dim": 8,
            "norm_num_groups": 32, "down_block_types": (f"CrossAttnDownBlock{kind}", f"DownBlock{kind}"),
            "up_block_types": (f"UpBlock{kind}", f"CrossAttnUpBlock{kind}")}


def tiny_text_config(width: int, n_tokens: int, **overrides: Any) -> Any:
    """The tiny tier's ``CLIPTextConfig``: 1000 tokens whose last two are start/end (see :func:`empty_prompt_ids`)."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=1000, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
                          num_attention_heads=4, max_position_embeddings=n_tokens, bos_token_id=998,
                          eos_token_id=999, pad_token_id=999, **overrides)


class Generator:
    """Base class of neurodecode generators (see the module docstring).

    Parameters
    ----------
    weights : None, "tiny", str or path-like
        ``None``: the published weights (``default_weights``, a hub id); ``"tiny"``: the same
        architecture at toy width, seeded random init, offline; a hub id or a local folder.
        Hub ids honour offline mode (``NEURODECODE_OFFLINE=1`` / ``HF_HUB_OFFLINE=1``): a
        missing artefact raises :class:`~neurodecode._core.errors.OfflineError` naming it.
    device : str or torch.device
        ``"cpu"`` (default), ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
    dtype : str or torch.dtype
        ``"float32"`` (default), ``"bfloat16"`` or ``"float16"`` (recommended on GPU).
    preset : None or "24gb"
        Memory preset: ``"24gb"`` turns on VAE tiling/slicing and model CPU offload (CUDA).
    compile : bool
        ``torch.compile`` the UNet (regional compilation of repeated blocks).
    preview_vae : bool
        Decode with a tiny VAE (``AutoencoderTiny``): much faster, lower quality previews.
    seed : int
        Seed of the random init of the tiny tier.
    config : dict or None
        Overrides of the tiny tier's architecture (``TINY`` class attribute), e.g.
        ``{"width": 64}`` to match a tiny decoder's latent width.
    verbose : bool or str or None
        Progress bars and log level.

    Attributes
    ----------
    components_ : dict
        The loaded torch components (after :meth:`load`).
    weights_id_ : str
        Where the weights came from (hub id, folder or ``"tiny"``).
    """

    name: ClassVar[str] = ""
    #: "image" (``generate`` returns uint8 images) or "text" (``generate`` returns captions).
    output: ClassVar[str] = "image"
    #: Hub id of the published weights used when ``weights=None``.
    default_weights: ClassVar[str] = ""
    #: Default number of denoising steps and guidance scale (from specs/decoders.md).
    default_steps: ClassVar[int] = 20
    default_guidance: ClassVar[float] = 1.0
    #: Which tiny preview VAE decodes this generator's latents ("sd" or "sdxl").
    latent_family: ClassVar[str] = "sd"

    def __init__(self, weights: Any = None, *, device: Any = "cpu", dtype: Any = "float32", preset: str | None = None,
                 compile: bool = False, preview_vae: bool = False, seed: int = 0, config: dict[str, Any] | None = None,
                 verbose: Any = None) -> None:
        self.weights = weights
        self.device = device
        self.dtype = dtype
        self.preset = preset
        self.compile = compile
        self.preview_vae = preview_vae
        self.seed = seed
        self.config = config
        self.verbose = verbose

    #: Architecture of the tiny tier (overridable through ``config``).
    TINY: ClassVar[dict[str, Any]] = {}
    #: Licence of the published weights (``default_weights``) and what they are.
    licence: ClassVar[str] = "unknown (see the model card)"
    purpose: ClassVar[str] = ""

    # ------------------------------------------------------------------ declared weights
    @classmethod
    def hub_files(cls, dtype: Any = None, **kwargs: Any) -> tuple[tuple[str, ...], ...]:
        """The exact files read from ``default_weights`` (or a folder of the same layout), for ``dtype``.

        Each entry is a group of alternatives, the preferred first (see :mod:`neurodecode.io.hub`).
        """
        return ()

    @classmethod
    def extra_artefacts(cls, dtype: Any = None, **kwargs: Any) -> list[Any]:
        """Weights read from other repositories than the main one (e.g. an IP-Adapter)."""
        return []

    @classmethod
    def artefacts(cls, weights: Any = None, dtype: Any = None, **kwargs: Any) -> list[Any]:
        """Everything this generator reads with ``weights``: :class:`~neurodecode.io.hub.HubArtefact` and
        :class:`~neurodecode.io.hub.ExternalArtefact` entries (the single source of ``neurodecode download``).

        Parameters
        ----------
        weights : None, "tiny", str or path-like
            As for the constructor.
        dtype : str or None
            The load dtype (``"float16"``/``"bfloat16"`` prefer the fp16 variant files).
        **kwargs
            Generator-specific settings that change the files (``decode_only``, ``ip_adapter``...).
        """
        from pathlib import Path

        from ..io.hub import ExternalArtefact, HubArtefact

        if isinstance(weights, str) and weights == "tiny":
            return [ExternalArtefact(f"{cls.name} (tiny)", "random", "tiny tier: random init, nothing to fetch")]
        target = str(weights) if weights is not None else cls.default_weights
        files = cls.hub_files(dtype, **kwargs)
        if Path(target).expanduser().is_dir():
            main: Any = ExternalArtefact(target, "folder", f"{cls.name} generator: a local folder (read as is)",
                                         extra={"files": [list(g) for g in files]})
        else:
            main = HubArtefact(target, files, cls.licence, f"{cls.name} generator: {cls.purpose}")
        return [main, *cls.extra_artefacts(dtype, **kwargs)]

    def _resolve(self, name_or_path: str, **kwargs: Any) -> Any:
        """The folder holding :meth:`hub_files` (folder checked, cache checked, missing files named)."""
        from ..io.hub import resolve_files

        return resolve_files(name_or_path, self.hub_files(self._load_dtype_name(), **kwargs),
                             what=f"{self.name} generator weights")

    def _load_dtype_name(self) -> str:
        return str(getattr(self, "torch_dtype_", self.dtype)).replace("torch.", "")

    # ------------------------------------------------------------------ loading
    @property
    def tiny_config(self) -> dict[str, Any]:
        """The tiny tier's architecture: :attr:`TINY` updated with ``config``."""
        unknown = sorted(set(self.config or {}) - set(self.TINY))
        if unknown:
            raise ValidationError(format_error("config", f"keys among {sorted(self.TINY)}", f"unknown key(s) {unknown}"))
        return {**self.TINY, **(self.config or {})}

    @property
    def is_tiny(self) -> bool:
        """Whether this generator uses the tiny tier."""
        return isinstance(self.weights, str) and self.weights == "tiny"

    def load(self) -> Generator:
        """Build the components (once) and apply the device, dtype and speed settings."""
        if getattr(self, "components_", None) is not None:
            return self
        import torch

        from .._core.device import resolve_device, resolve_dtype

        check_option(self.preset, "preset", PRESETS)
        self.device_ = resolve_device(self.device)
        self.torch_dtype_ = resolve_dtype(self.dtype, self.device_)
        t0 = time.perf_counter()
        if self.is_tiny:
            torch.manual_seed(self.seed)
            components = self._build_tiny()
            self.weights_id_ = "tiny"
        else:
            target = self.weights if self.weights is not None else self.default_weights
            components = self._build_real(str(target))
            self.weights_id_ = str(target)
        self.components_ = components
        self._place()
        self.load_seconds_ = time.perf_counter() - t0
        logger.info("%s generator loaded (%s) in %.1f s", self.name, self.weights_id_, self.load_seconds_)
        return self

    def _place(self) -> None:
        """Move modules to device/dtype, eval mode, and apply the speed and memory settings."""
        import torch

        modules = {k: v for k, v in self.components_.items() if isinstance(v, torch.nn.Module)}
        for mod in modules.values():
            mod.eval()
            mod.requires_grad_(False)
        if self.preview_vae and "vae" in modules:
            self.components_["decoder_vae"] = self._build_preview_vae()
            modules["decoder_vae"] = self.components_["decoder_vae"]
        offload = self.preset == "24gb" and self.device_.type == "cuda"
        for mod in modules.values():
            if any(p.is_floating_point() and p.dtype != self.torch_dtype_ for p in mod.parameters()):
                mod.to(dtype=self.torch_dtype_)
            if not offload:
                mod.to(self.device_)
        unet = self.components_.get("unet")
        if unet is not None and self.device_.type == "cuda":
            unet.to(memory_format=torch.channels_last)
        vae = self.components_.get("vae")
        if self.preset == "24gb" and vae is not None:
            for name in ("enable_tiling", "enable_slicing"):
                if hasattr(vae, name):
                    getattr(vae, name)()
        if offload:
            self._enable_cpu_offload(modules)
        elif self.preset == "24gb":
            logger.info("preset='24gb': model CPU offload needs a CUDA device; kept on %s", self.device_)
        if self.compile and unet is not None:
            if getattr(unet, "_repeated_blocks", None):
                unet.compile_repeated_blocks(fullgraph=True)
            else:  # pragma: no cover - every diffusers UNet2DConditionModel declares its blocks
                self.components_["unet"] = torch.compile(unet)

    def _enable_cpu_offload(self, modules: Mapping[str, Any]) -> None:
        """Chain accelerate offload hooks: each module moves to the GPU when called, the previous one leaves."""
        from accelerate import cpu_offload_with_hook

        hook = None
        for name in ("text_encoder", "text_encoder_2", "image_encoder", "text_unet", "unet", "vae", "decoder_vae"):
            if name in modules:
                _, hook = cpu_offload_with_hook(modules[name], self.device_, prev_module_hook=hook)
        self.execution_device_ = self.device_

    def _build_preview_vae(self) -> Any:
        from diffusers import AutoencoderTiny

        vae = self.components_["vae"]
        if self.is_tiny:  # one x2 upsampling per extra block, like the tiny AutoencoderKL
            n_blocks = len(vae.config.block_out_channels)
            return AutoencoderTiny(in_channels=3, out_channels=3, latent_channels=vae.config.latent_channels,
                                   encoder_block_out_channels=(16,) * n_blocks, decoder_block_out_channels=(16,) * n_blocks,
                                   num_encoder_blocks=(1,) * n_blocks, num_decoder_blocks=(1,) * n_blocks,
                                   upsampling_scaling_factor=2)
        from ..io.hub import resolve_model_dir

        return AutoencoderTiny.from_pretrained(resolve_model_dir(PREVIEW_VAES[self.latent_family]))

    def _build_tiny(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _build_real(self, name_or_path: str) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------------ inputs
    @property
    def expects(self) -> dict[str, tuple[int | None, ...]]:
        """Latent keys this generator consumes and their shapes (``None`` = any size; first axis = items)."""
        self.load()
        return self._expects()

    def _expects(self) -> dict[str, tuple[int | None, ...]]:  # pragma: no cover - abstract
        raise NotImplementedError

    #: Keys that may be given in addition (e.g. a VAE latent for img2img).
    optional_keys: ClassVar[tuple[str, ...]] = ()

    def _optional_expects(self) -> dict[str, tuple[int | None, ...]]:
        return {}

    def check_latents(self, latents: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Check the keys, shapes and finiteness of ``latents``; return float32 arrays.

        Raises
        ------
        ShapeMismatchError
            A missing key, or a shape that is not the space this generator expects (named).
        ValidationError
            NaN or infinite values.
        """
        from ..models import LATENT_KEYS

        if not isinstance(latents, Mapping):
            raise ValidationError(format_error("latents", "a dict of arrays returned by predict_latents", latents,
                                               "Pass decoder.predict_latents(X, subject=...)"))
        expects = self.expects
        wanted = dict(expects)
        optional = self._optional_expects()
        for key in optional:
            if key in latents and latents[key] is not None:
                wanted[key] = optional[key]
        missing = [k for k in expects if k not in latents]
        if missing:
            spaces = "; ".join(f"{k} {_fmt_shape(expects[k])}: {LATENT_KEYS.get(k, '')}" for k in expects)
            raise ShapeMismatchError(format_error(
                "latents", f"the key(s) {', '.join(map(repr, expects))} for the {self.name!r} generator ({spaces})",
                f"keys {sorted(latents)}",
                "Use a decoder that predicts these spaces, or pick the generator matching your decoder's outputs"))
        out: dict[str, np.ndarray] = {}
        n = None
        for key, shape in wanted.items():
            arr = np.asarray(latents[key])
            if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
                raise ShapeMismatchError(format_error(
                    f"latents[{key!r}]",
                    f"shape {_fmt_shape(shape)} ({LATENT_KEYS.get(key, key)}) for the {self.name!r} generator "
                    f"with weights {self.weights_id_!r}",
                    arr,
                    "The decoder predicts another space or width than this generator's weights were trained on: "
                    "use the generator matching the decoder (same CLIP model and tier, e.g. both tiny)"))
            if not np.issubdtype(arr.dtype, np.number):
                raise ValidationError(format_error(f"latents[{key!r}]", "a numeric array", arr))
            arr = arr.astype(np.float32, copy=False)
            bad = ~np.isfinite(arr)
            if bad.any():
                items = sorted({int(i) for i in np.argwhere(bad)[:, 0]})
                raise ValidationError(format_error(
                    f"latents[{key!r}]", "finite values", f"NaN/inf in {len(items)} item(s), first {items[:5]}",
                    "The decoder diverged or its input held NaN: check the brain data (check-data) and the "
                    "checkpoint, or drop those trials"))
            if n is not None and arr.shape[0] != n:
                raise ShapeMismatchError(format_error("latents", "the same number of items for every key",
                                                      f"{arr.shape[0]} for {key!r} vs {n}"))
            n = arr.shape[0]
            out[key] = arr
        return out

    # ------------------------------------------------------------------ generation
    def generate(self, latents: Mapping[str, Any], *, seeds: int | Sequence[int] = 0, steps: int | None = None,
                 guidance: float | None = None, batch_size: int = 8, verbose: Any = None, **options: Any) -> Any:
        """Generate one output per item.

        Parameters
        ----------
        latents : dict of str to ndarray
            What ``predict_latents`` returned; see :attr:`expects` for the keys and shapes.
        seeds : int or list of int
            One seed per item (an int ``s`` means ``s, s + 1, ...``). Item ``i``'s noise only
            depends on ``seeds[i]``, so batching does not change the outputs.
        steps : int or None
            Denoising steps (``None``: the generator's default).
        guidance : float or None
            Classifier-free guidance scale (``None``: the generator's default; <= 1 disables it).
        batch_size : int
            Items per forward pass.
        verbose : bool or str or None
            Progress bar (items/s) and log level.
        **options
            Generator-specific options (``strength``, ``text_weight``, ``height``...).

        Returns
        -------
        images : ndarray of shape (n, H, W, 3), uint8
            For image generators; captioners return a list of n str.
        """
        import torch

        self.load()
        checked = self.check_latents(latents)
        n = len(next(iter(checked.values())))
        all_seeds = expand_seeds(seeds, n)
        if int(batch_size) < 1:
            raise ValidationError(format_error("batch_size", "an int >= 1", batch_size))
        steps = int(steps) if steps is not None else self.default_steps
        guidance = float(guidance) if guidance is not None else self.default_guidance
        results: list[Any] = []
        verbose = self.verbose if verbose is None else verbose
        with progress(total=n, desc=f"generate ({self.name})", unit="img", verbose=verbose) as bar:
            for start in range(0, n, int(batch_size)):
                stop = min(n, start + int(batch_size))
                batch = {k: v[start:stop] for k, v in checked.items()}
                gens = item_generators(all_seeds[start:stop])
                with torch.inference_mode():
                    out = self._generate_batch(batch, gens, steps=steps, guidance=guidance, **options)
                results.append(out if self.output == "text" else to_uint8(out))
                bar.update(stop - start)
        if self.output == "text":
            return [c for chunk in results for c in chunk]
        return np.concatenate(results, axis=0)

    def _generate_batch(self, latents: dict[str, np.ndarray], generators: list[Any], *, steps: int,
                        guidance: float, **options: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------------ shared torch helpers
    @property
    def execution_device(self) -> Any:
        return getattr(self, "execution_device_", None) or self.device_

    def _tensor(self, arr: np.ndarray) -> Any:
        import torch

        return torch.as_tensor(arr).to(device=self.execution_device, dtype=self.torch_dtype_)

    def _decode(self, latents: Any) -> Any:
        """Scaled diffusion latents -> images in [0, 1], shape (b, 3, H, W)."""
        vae = self.components_.get("decoder_vae") or self.components_["vae"]
        scale = float(getattr(vae.config, "scaling_factor", 1.0) or 1.0)
        images = vae.decode(latents.to(dtype=next(vae.parameters()).dtype) / scale).sample
        return (images.float() / 2 + 0.5).clamp(0, 1)

    def encode_images(self, images: Any, *, size: int | None = None) -> np.ndarray:
        """Images -> raw latents of this generator's own VAE (posterior mean): an img2img init (``vae_latents``).

        Brain-Diffuser's second stage starts Versatile Diffusion from the VDVAE image encoded by VD's
        own autoencoder; this is that encoder.

        Parameters
        ----------
        images : ndarray of uint8, shape (n, H, W, 3)
        size : int or None
            Resize (bicubic) to ``size`` x ``size`` first (the VAE's working resolution; default: as given).

        Returns
        -------
        latents : ndarray of float32, shape (n, latent_channels, H / f, W / f)
            Before the VAE scaling factor (the convention of every ``vae_latents`` here).
        """
        import torch

        from .._core.validation import check_array

        self.load()
        arr = check_array(images, "images", ndim=4)
        if size is not None and arr.shape[1:3] != (size, size):
            from PIL import Image

            arr = np.stack([np.asarray(Image.fromarray(np.asarray(a, np.uint8)).resize((size, size), Image.BICUBIC))
                            for a in arr])
        vae = self.components_["vae"]
        x = torch.as_tensor(np.ascontiguousarray(arr.transpose(0, 3, 1, 2)), dtype=torch.float32) / 127.5 - 1.0
        with torch.no_grad():
            dist = vae.encode(x.to(device=self.execution_device, dtype=next(vae.parameters()).dtype)).latent_dist
        return dist.mean.float().cpu().numpy()

    def _vae_init(self, vae_latents: np.ndarray) -> Any:
        """Raw VAE latents (NumPy) -> scaled diffusion latents on the execution device (img2img start)."""
        return self._tensor(vae_latents) * float(self.components_["vae"].config.scaling_factor)

    def _start_latents(self, scheduler: Any, latents: Mapping[str, np.ndarray], generators: Sequence[Any], *,
                       steps: int, strength: float, height: int | None, width: int | None) -> tuple[Any, Any]:
        """Starting latents and timesteps: img2img from ``latents["vae_latents"]`` at ``strength`` when given,
        else pure noise at ``height`` x ``width`` pixels (default: the UNet's sample size)."""
        unet, vae = self.components_["unet"], self.components_["vae"]
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        init = None
        if "vae_latents" in latents:
            init = self._vae_init(latents["vae_latents"])
            shape = tuple(init.shape[1:])
        else:
            h = int(height or unet.config.sample_size * factor) // factor
            w = int(width or unet.config.sample_size * factor) // factor
            shape = (int(unet.config.in_channels), h, w)
            strength = 1.0
        return prepare_latents(scheduler, generators, shape=shape, steps=steps, device=self.execution_device,
                               dtype=self.torch_dtype_, init_latents=init, strength=strength)

    def _empty_prompt(self) -> Any:
        """Hidden states (1, tokens, width) of the empty prompt through ``text_encoder`` (computed once)."""
        if getattr(self, "prompt_", None) is None:
            c = self.components_
            ids = empty_prompt_ids(c["text_encoder"], c.get("tokenizer")).to(self.execution_device)
            self.prompt_ = c["text_encoder"](input_ids=ids).last_hidden_state
        return self.prompt_

    def provenance(self) -> dict[str, Any]:
        """Weights id, tier, device, dtype and settings (for ``provenance.json``)."""
        return {
            "generator": self.name, "weights": getattr(self, "weights_id_", self.weights),
            "device": str(getattr(self, "device_", self.device)), "dtype": str(getattr(self, "torch_dtype_", self.dtype)),
            "preset": self.preset, "compile": self.compile, "preview_vae": self.preview_vae,
            "default_steps": self.default_steps, "default_guidance": self.default_guidance,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(weights={self.weights!r}, device={self.device!r}, dtype={self.dtype!r})"


def _fmt_shape(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("n" if i == 0 else ("any" if s is None else str(s)) for i, s in enumerate(shape)) + ")"


def denoise(unet: Any, scheduler: Any, latents: Any, timesteps: Any, *, cond: Any, uncond: Any | None,
            guidance: float, unet_kwargs: Mapping[str, Any] | None = None,
            uncond_kwargs: Mapping[str, Any] | None = None, generators: Sequence[Any] | None = None) -> Any:
    """The shared denoising loop (classifier-free guidance batched as [uncond, cond]).

    Parameters
    ----------
    unet : diffusers UNet2DConditionModel
    scheduler : diffusers scheduler, with timesteps already set
    latents : Tensor of shape (b, c, h, w)
        Initial latents (noise scaled by ``init_noise_sigma``, or noised init latents).
    timesteps : Tensor
        The timesteps to run.
    cond, uncond : Tensor of shape (b, tokens, dim)
        Cross-attention conditions (``uncond=None`` or ``guidance <= 1``: no guidance).
    guidance : float
        Guidance scale.
    unet_kwargs, uncond_kwargs : dict or None
        Extra UNet inputs (``class_labels``, ``added_cond_kwargs``) for the conditional and
        unconditional halves; tensors are concatenated [uncond, cond].
    generators : list of torch.Generator or None
        Per-item generators for stochastic schedulers (Euler ancestral, DDPM).
    """
    import inspect

    import torch

    step_kw: dict[str, Any] = {}
    if generators is not None and "generator" in inspect.signature(scheduler.step).parameters:
        step_kw["generator"] = list(generators)

    use_cfg = uncond is not None and guidance > 1.0
    kwargs = dict(unet_kwargs or {})
    if use_cfg:
        hidden = torch.cat([uncond, cond])
        kwargs = _cat_kwargs(dict(uncond_kwargs or unet_kwargs or {}), kwargs)
    else:
        hidden = cond
    for t in timesteps:
        model_in = torch.cat([latents] * 2) if use_cfg else latents
        model_in = scheduler.scale_model_input(model_in, t)
        pred = unet(model_in, t, encoder_hidden_states=hidden, return_dict=False, **kwargs)[0]
        if use_cfg:
            pred_u, pred_c = pred.chunk(2)
            pred = pred_u + guidance * (pred_c - pred_u)
        latents = scheduler.step(pred, t, latents, return_dict=False, **step_kw)[0]
    return latents


def _cat_kwargs(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {}
    for key, vb in b.items():
        va = a.get(key, vb)
        if isinstance(vb, dict):
            out[key] = _cat_kwargs(va, vb)
        elif isinstance(vb, torch.Tensor):
            out[key] = torch.cat([va, vb])
        elif isinstance(vb, list) and vb and isinstance(vb[0], torch.Tensor):
            out[key] = [torch.cat([x, y]) for x, y in zip(va, vb)]
        else:
            out[key] = vb
    return out


def prepare_latents(scheduler: Any, generators: Sequence[Any], *, shape: Sequence[int], steps: int, device: Any,
                    dtype: Any, init_latents: Any | None = None, strength: float = 1.0) -> tuple[Any, Any]:
    """Set the scheduler's timesteps and build the starting latents (text-to-image or img2img).

    Parameters
    ----------
    scheduler : diffusers scheduler
    generators : list of torch.Generator
        One per item (the noise of item ``i`` only depends on ``generators[i]``).
    shape : tuple of int
        Per-item latent shape ``(c, h, w)``.
    steps : int
        Denoising steps of a full run.
    init_latents : Tensor of shape (b, c, h, w) or None
        Scaled diffusion latents to start from (img2img); ``None`` starts from noise.
    strength : float in (0, 1]
        Img2img strength: the fraction of the schedule that is run (1 = start from pure noise).

    Returns
    -------
    latents, timesteps : Tensor, Tensor
    """
    if not 0.0 < float(strength) <= 1.0:
        raise ValidationError(format_error("strength", "a number in (0, 1]", strength,
                                           "0.75-0.85 keeps the layout of the low-level image"))
    scheduler.set_timesteps(int(steps), device=device)
    timesteps = scheduler.timesteps
    noise = randn_items(shape, generators, device=device, dtype=dtype)
    if init_latents is None:
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(0)
        return noise * scheduler.init_noise_sigma, timesteps
    order = int(getattr(scheduler, "order", 1))
    n_run = min(int(steps * float(strength)), int(steps))
    n_run = max(n_run, 1)
    t_start = int(steps) - n_run
    timesteps = timesteps[t_start * order:]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(t_start * order)
    start_t = timesteps[:1].repeat(noise.shape[0])
    latents = scheduler.add_noise(init_latents.to(device=device, dtype=dtype), noise, start_t)
    return latents, timesteps


def empty_prompt_ids(text_encoder: Any, tokenizer: Any | None = None) -> Any:
    """Token ids of the empty prompt ``""`` (the unconditional text of classifier-free guidance).

    With the weights' own tokenizer when they ship one; otherwise (tiny tier) built from the
    CLIP convention: start token ``vocab_size - 2``, end token ``vocab_size - 1``, padded with
    the end token to ``max_position_embeddings``.
    """
    import torch

    length = int(text_encoder.config.max_position_embeddings)
    if tokenizer is not None:
        if len(tokenizer) < 1000:  # offline trap: transformers can return an empty tokenizer
            from .._core.errors import DataIntegrityError

            raise DataIntegrityError(format_error("tokenizer", "a CLIP vocabulary (49408 tokens)",
                                                  f"{len(tokenizer)} tokens", "Download the weights again"))
        ids = tokenizer([""], padding="max_length", max_length=length, truncation=True, return_tensors="pt").input_ids
        return ids
    vocab = int(text_encoder.config.vocab_size)
    ids = torch.full((1, length), vocab - 1, dtype=torch.long)
    ids[0, 0] = vocab - 2
    return ids


SCHEDULERS = ("unipc", "ddim", "euler_a", "ddpm")


def fresh_scheduler(base: Any, kind: str | None = None) -> Any:
    """A new scheduler of ``kind`` from ``base``'s config (schedulers keep per-run state; ``None`` keeps the class).

    ``"unipc"`` (UniPC multistep, MindBridge), ``"ddim"`` (Brain-Diffuser), ``"euler_a"``
    (Euler ancestral, SDXL-Turbo), ``"ddpm"``.
    """
    if kind is None:
        return type(base).from_config(base.config)
    import diffusers

    names = {"unipc": "UniPCMultistepScheduler", "ddim": "DDIMScheduler",
             "euler_a": "EulerAncestralDiscreteScheduler", "ddpm": "DDPMScheduler"}
    cls = getattr(diffusers, names[check_option(kind, "scheduler", SCHEDULERS)])
    return cls.from_config(base.config)
