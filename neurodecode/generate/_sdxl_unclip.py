"""MindEye2's own image stage: its SDXL unCLIP on bigG patch tokens, then optional SDXL img2img refinement.

MindEye2 (Scotti et al., ICML 2024) decodes fMRI into OpenCLIP ViT-bigG/14 image patch tokens
(256 x 1664, CLS excluded) and draws them with an SDXL UNet fine-tuned by the authors to attend to
those tokens instead of text (``unclip6_epoch0_step110000.ckpt`` in the ``pscotti/mindeyev2`` dataset
repository; config ``src/generative_models/configs/unclip6.yaml`` of MedARC-AI/MindEyeV2). What the
released code does, and we do by default (``src/utils.py`` ``unclip_recon``, ``src/recon_inference.ipynb``,
``src/enhanced_recon_inference.ipynb``):

Stage 1 (unCLIP)
    SDXL UNet (320/640/1280, transformer depth 1/2/10, 64-channel heads, linear projections) whose
    cross-attention context is the 256 x 1664 tokens and whose vector condition is only the
    size/crop embedding (no pooled text): ``original_size = (768, 768)`` and ``crop = (0, 0)``, each
    scalar a 256-wide sinusoidal embedding, 1024 in all. The SDXL VAE (scale 0.13025). SGM's
    ``EulerEDMSampler`` with ``LegacyDDPMDiscretization`` (the scaled-linear DDPM schedule, timesteps
    ``linspace(999, 0, n, endpoint=False)`` floored) and epsilon prediction, **38 steps**, classifier-free
    guidance **5** whose unconditional tokens are **Gaussian noise** (``randn_like`` of the tokens),
    start ``z + sigma_max * (noise + 0.04 * offset)`` with ``z``, ``noise`` standard normal and one
    ``offset`` scalar per item (the training offset noise), 96 x 96 latents (768 px). Decoded images
    are mapped to ``[0, 1]`` with ``clamp(x * 0.8 + 0.2)`` (the reference's mapping).

Stage 2 (refinement, ``refine=True``; the paper's reported reconstructions)
    The stage-1 image (stored at 256 px by the reference, then resized to 768) is encoded by an SDXL
    base VAE (posterior sample), noised to the sigma at step 13 of a **25-step** schedule of the same
    sampler, and denoised over the remaining 12 steps by SDXL base with the predicted **caption** as the
    prompt, a fixed negative prompt, guidance **5**, size conditioning ``(768, 768)``, crop ``(0, 0)``,
    target ``(1024, 1024)``; decoded with ``(x + 1) / 2``. The caption comes from ``captions=`` or from
    GIT-large-coco reading the bigG tokens through a :class:`~neurodecode.generate._converter.TokenConverter`
    (``converter=``), as MindEye2 captions (``max_length`` 20).

Weights: the released checkpoint is a torch pickle (a Lightning ``.ckpt``): it is read only with
``allow_pickle=True`` (and then with ``torch.load(weights_only=True)``) and converted once by
:func:`convert_unclip_checkpoint` into a diffusers folder (``unet/``, ``vae/``, safetensors) that later
runs read directly. The key mapping is diffusers' own single-file converter (the one behind
``from_single_file`` for SDXL checkpoints); the UNet configuration is read off the checkpoint's shapes.
The refiner is ``stabilityai/stable-diffusion-xl-base-1.0`` (the reference used a community fine-tune
of it, ZavyChromaXL v3; pass its diffusers folder as ``refiner=`` to match).

Every random draw (start noise, offset, unconditional tokens, VAE posterior sample, img2img noise)
comes from the item's own generator, so a batch gives the same images as one-at-a-time generation.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .._core.errors import MissingFileError, OfflineError, ValidationError
from .._core.validation import check_option, format_error
from ._base import (
    SD_BETAS,
    Generator,
    denoise,
    expand_seeds,
    load_subfolders,
    randn_items,
    tiny_text_config,
    tiny_vae,
)

__all__ = ["SDXLUnCLIPGenerator", "convert_unclip_checkpoint", "reference_timesteps", "NEGATIVE_PROMPT",
           "UNCLIP_REPO", "UNCLIP_FILE", "REFINER_REPO"]

#: Hub *dataset* repository and file of MindEye2's SDXL unCLIP checkpoint.
UNCLIP_REPO = "pscotti/mindeyev2"
UNCLIP_FILE = "unclip6_epoch0_step110000.ckpt"
#: The refiner (img2img with the caption as prompt).
REFINER_REPO = "stabilityai/stable-diffusion-xl-base-1.0"
#: The reference's negative prompt of the refinement (``src/enhanced_recon_inference.ipynb``).
NEGATIVE_PROMPT = ("painting, extra fingers, mutated hands, poorly drawn hands, poorly drawn face, deformed, ugly, "
                   "blurry, bad anatomy, bad proportions, extra limbs, cloned face, skinny, glitchy, double torso, "
                   "extra arms, extra hands, mangled fingers, missing lips, ugly face, distorted face, extra legs, "
                   "anime")
#: Unconditional tokens of stage 1: ``"randn"`` Gaussian noise (the reference), ``"zeros"``.
UNCOND = ("randn", "zeros")
#: Stage-1 decoded image -> [0, 1]: ``"reference"`` ``x * 0.8 + 0.2`` (``unclip_recon``), ``"standard"`` ``(x + 1) / 2``.
OUTPUT_MAPS = ("reference", "standard")

_MARKER = "sdxl_unclip.json"
_BIGG_WIDTH, _BIGG_TOKENS = 1664, 256
_HEAD_CHANNELS = 64  # unclip6.yaml: num_head_channels 64 (not stored in the weights)


# ------------------------------------------------------------------------------------------ schedule
def reference_timesteps(n_steps: int, n_train: int = 1000) -> np.ndarray:
    """SGM ``LegacyDDPMDiscretization`` timesteps of an ``n_steps`` schedule, noisiest first.

    ``linspace(n_train - 1, 0, n_steps, endpoint=False)`` floored to integers (MindEye2's sampler; it
    differs from diffusers' ``"trailing"`` spacing for most step counts, e.g. 38).

    Returns
    -------
    timesteps : ndarray of int64, shape (n_steps,)
    """
    n = int(n_steps)
    if not 1 <= n <= int(n_train):
        raise ValidationError(format_error("steps", f"an int in [1, {n_train}]", n_steps))
    if n == int(n_train):
        return np.arange(n_train - 1, -1, -1, dtype=np.int64)
    return np.linspace(n_train - 1, 0, n, endpoint=False).astype(np.int64)


def _scheduler(n_steps: int, device: Any) -> Any:
    """An Euler (EDM, no churn) scheduler over the reference's discrete timesteps (epsilon prediction)."""
    from diffusers import EulerDiscreteScheduler

    sched: Any = EulerDiscreteScheduler(**SD_BETAS, num_train_timesteps=1000, prediction_type="epsilon")
    sched.set_timesteps(timesteps=[int(t) for t in reference_timesteps(n_steps)], device=device)
    return sched


# ------------------------------------------------------------------------------------------ conversion
def _unet_config(sd: dict[str, Any], *, sample_size: int, head_channels: int = _HEAD_CHANNELS) -> dict[str, Any]:
    """The diffusers ``UNet2DConditionModel`` configuration of an SGM ``UNetModel`` state dict (read off shapes)."""
    def blocks(prefix: str) -> int:
        return 1 + max(int(k.split(".")[1]) for k in sd if k.startswith(prefix))

    n_in = blocks("input_blocks.")
    downs = [k for k in sd if re.fullmatch(r"input_blocks\.\d+\.0\.op\.weight", k)]
    n_levels = len(downs) + 1
    layers = (n_in - 1 - len(downs)) // n_levels
    channels, attn, depth = [], [], []
    for level in range(n_levels):
        first = 1 + level * (layers + 1)
        channels.append(int(sd[f"input_blocks.{first}.0.out_layers.3.weight"].shape[0]))
        has = f"input_blocks.{first}.1.proj_in.weight" in sd
        attn.append(has)
        pat = re.compile(rf"input_blocks\.{first}\.1\.transformer_blocks\.(\d+)\.")
        found = [int(m.group(1)) for k in sd if (m := pat.match(k))]
        depth.append(1 + max(found) if found else 1)
    cross = next(int(v.shape[1]) for k, v in sd.items() if k.endswith("attn2.to_k.weight"))
    adm = int(sd["label_emb.0.0.weight"].shape[1])
    linear = next(v.ndim == 2 for k, v in sd.items() if k.endswith(".proj_in.weight"))
    return {
        "sample_size": int(sample_size), "in_channels": int(sd["input_blocks.0.0.weight"].shape[1]),
        "out_channels": int(sd["out.2.weight"].shape[0]), "block_out_channels": tuple(channels),
        "layers_per_block": int(layers), "transformer_layers_per_block": tuple(depth),
        "attention_head_dim": tuple(max(1, c // int(head_channels)) for c in channels),
        "use_linear_projection": bool(linear), "norm_num_groups": 32, "cross_attention_dim": cross,
        "down_block_types": tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        "up_block_types": tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        # the vector condition: original size (2 scalars) + crop (2 scalars), one sinusoidal embedding each
        "addition_embed_type": "text_time", "addition_time_embed_dim": adm // 4,
        "projection_class_embeddings_input_dim": adm,
    }


def _vae_config(sd: dict[str, Any], *, sample_size: int) -> dict[str, Any]:
    """The diffusers ``AutoencoderKL`` configuration of an LDM autoencoder state dict (read off shapes)."""
    n = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder.down."))
    channels = tuple(int(sd[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) for i in range(n))
    layers = 1 + max(int(k.split(".")[4]) for k in sd if k.startswith("encoder.down.0.block."))
    return {"in_channels": int(sd["encoder.conv_in.weight"].shape[1]), "out_channels": int(sd["decoder.conv_out.weight"].shape[0]),
            "latent_channels": int(sd["encoder.conv_out.weight"].shape[0]) // 2, "block_out_channels": channels,
            "layers_per_block": int(layers), "down_block_types": ("DownEncoderBlock2D",) * n,
            "up_block_types": ("UpDecoderBlock2D",) * n, "norm_num_groups": 32, "sample_size": int(sample_size),
            "scaling_factor": 0.13025, "force_upcast": True}


def _fingerprint(path: Path) -> str:
    """Size + sha256 of the first and last 8 MiB: names a checkpoint's conversion without reading it whole."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        h.update(fh.read(8 << 20))
        if size > 16 << 20:
            fh.seek(size - (8 << 20))
            h.update(fh.read())
    return h.hexdigest()[:16]


def _is_converted(folder: Path) -> bool:
    return (folder / _MARKER).is_file() and (folder / "unet" / "config.json").is_file() and \
        (folder / "vae" / "config.json").is_file()


def convert_unclip_checkpoint(src: Any, dst: Any, *, allow_pickle: bool = False, dtype: Any = "float16",
                              sample_size: int = 96) -> Path:
    """Convert MindEye2's SGM checkpoint (UNet + first-stage VAE) into a diffusers folder, once.

    Parameters
    ----------
    src : path-like
        ``unclip6_epoch0_step110000.ckpt`` (a torch pickle) or a ``.safetensors`` file with the same keys
        (``model.diffusion_model.*``, ``first_stage_model.*``; other keys, e.g. the bigG image embedder of
        ``conditioner.*`` and the optimiser state, are ignored).
    dst : path-like
        Folder to write: ``unet/`` and ``vae/`` (diffusers layout, safetensors) and ``sdxl_unclip.json``.
    allow_pickle : bool
        Must be True to read a pickle; it is then read with ``torch.load(weights_only=True)``.
    dtype : str
        Precision of the written weights (``"float16"`` halves the ~10 GB of the UNet; ``"float32"``).
    sample_size : int
        Latent side the UNet is run at by default (96: 768 px, as MindEye2 samples).

    Returns
    -------
    folder : pathlib.Path
        ``dst``, complete (written under a temporary name, then renamed).
    """
    import pickle
    import shutil
    import tempfile

    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    from .._core.device import resolve_dtype
    from .._core.errors import DataIntegrityError
    from ..io.checkpoints import load_state_dict

    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    try:
        state = load_state_dict(src, allow_pickle=allow_pickle)
    except pickle.UnpicklingError as exc:
        raise DataIntegrityError(format_error(
            "checkpoint", "a checkpoint readable with torch.load(weights_only=True)", f"{src}: {exc}",
            "In a trusted environment, save only its 'state_dict' (torch.save(ckpt['state_dict'], ...)) or "
            "as safetensors, and pass that file")) from exc
    unet_keys = [k for k in state if k.startswith("model.diffusion_model.")]
    vae_keys = [k for k in state if k.startswith("first_stage_model.")]
    if not unet_keys or not vae_keys:
        raise DataIntegrityError(format_error(
            "checkpoint", "an SGM DiffusionEngine state dict (model.diffusion_model.*, first_stage_model.*)",
            f"{src} with {len(unet_keys)} UNet and {len(vae_keys)} VAE keys (first keys: {sorted(state)[:3]})",
            f"Pass MindEye2's {UNCLIP_FILE}"))
    torch_dtype = resolve_dtype(dtype, torch.device("cpu"))
    unet_sd = {k[len("model.diffusion_model."):]: state[k] for k in unet_keys}
    vae_sd = {k[len("first_stage_model."):]: state[k] for k in vae_keys}
    unet_cfg = _unet_config(unet_sd, sample_size=sample_size)
    vae_cfg = _vae_config(vae_sd, sample_size=8 * int(sample_size))
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=f".{dst.name}-") as tmp:
        parts: tuple[tuple[str, Any, dict[str, Any], dict[str, Any]], ...] = (
            ("unet", UNet2DConditionModel, unet_cfg, convert_ldm_unet_checkpoint({k: state[k] for k in unet_keys},
                                                                                  unet_cfg)),
            ("vae", AutoencoderKL, vae_cfg, convert_ldm_vae_checkpoint({k: state[k] for k in vae_keys}, vae_cfg)))
        for sub, cls, cfg, converted in parts:
            model: Any
            with torch.device("meta"):
                model = cls(**cfg)
            missing, unexpected = model.load_state_dict(converted, strict=False, assign=True)
            if missing or unexpected:
                raise DataIntegrityError(format_error(
                    "checkpoint", f"every {sub} weight of the configuration read off its shapes",
                    f"missing {sorted(missing)[:5]} ({len(missing)}), unexpected {sorted(unexpected)[:5]} "
                    f"({len(unexpected)})", "The file is not MindEye2's SGM unCLIP checkpoint"))
            if next(model.parameters()).dtype != torch_dtype:
                model.to(torch_dtype)
            model.save_pretrained(Path(tmp) / sub, safe_serialization=True)
            del model
        marker = {"source": str(src), "source_name": src.name, "converted_dtype": str(torch_dtype).replace("torch.", ""),
                  "n_unet_keys": len(unet_keys), "n_vae_keys": len(vae_keys), "ignored_keys": len(state) - len(
                      unet_keys) - len(vae_keys), "converter": "diffusers.loaders.single_file_utils"}
        (Path(tmp) / _MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")
        if dst.exists():
            shutil.rmtree(dst)
        Path(tmp).rename(dst)
        Path(tmp).mkdir()  # the context manager removes its (now empty) folder
    return dst


# ------------------------------------------------------------------------------------------ tiny prompts
def _tiny_prompt_ids(texts: Sequence[str], n_tokens: int, vocab: int) -> Any:
    """Token ids of the tiny tier (no BPE vocabulary): start, one id per word (crc32), end, end-padded."""
    import zlib

    import torch

    ids = torch.full((len(texts), n_tokens), vocab - 1, dtype=torch.long)
    for i, text in enumerate(texts):
        words = [zlib.crc32(w.encode()) % (vocab - 2) for w in str(text).lower().split()][: n_tokens - 2]
        ids[i, 0] = vocab - 2
        ids[i, 1:1 + len(words)] = torch.tensor(words, dtype=torch.long)
    return ids


class SDXLUnCLIPGenerator(Generator):
    """MindEye2's SDXL unCLIP from bigG patch tokens, with optional SDXL img2img refinement (module docstring).

    Expects ``latents["clip_bigg_tokens"]`` of shape (n, 256, 1664) (real tier; tiny tier (n, 16, 48),
    the ``clip-bigg-14-tokens-tiny`` space).

    Options of :meth:`generate` (defaults are the reference's): ``steps`` (38), ``guidance`` (5),
    ``uncond`` (``"randn"`` or ``"zeros"``), ``offset_noise`` (0.04), ``output_map`` (``"reference"``:
    ``x * 0.8 + 0.2``; ``"standard"``), ``height``/``width`` (768 real), and the refinement:
    ``refine`` (False), ``captions`` (one str per item; else ``converter`` must be set), ``refine_steps``
    (25), ``refine_timepoint`` (13: the last 12 steps run), ``refine_guidance`` (5), ``negative_prompt``,
    ``refine_input_size`` (256: the stage-1 image round-trips through the reference's stored size;
    ``None`` skips it), ``refine_target_size`` (1024), ``caption_max_length`` (20).

    Parameters
    ----------
    weights : None, "tiny", str or path-like
        ``None``: ``unclip6_epoch0_step110000.ckpt`` from the hub dataset ``pscotti/mindeyev2`` (cache first);
        a path to that file (or a ``.safetensors`` with its keys), a folder holding it, or a folder
        written by :func:`convert_unclip_checkpoint`.
    allow_pickle : bool
        Read the released torch pickle (with ``torch.load(weights_only=True)``) to convert it once.
    converted_dir : path-like or None
        Where the conversion is written (default: ``NEURODECODE_CACHE/sdxl-unclip/<fingerprint>``).
    refiner : None or str
        SDXL base weights of the refinement (hub id or diffusers folder; ``None``: ``REFINER_REPO``,
        or the tiny twin when ``weights="tiny"``).
    captioner : None or str
        GIT weights of the caption route (``None``: ``microsoft/git-large-coco``, tiny with the tiny tier).
    converter : None, path-like or TokenConverter
        bigG -> GIT token converter used to caption when ``captions`` are not given.
    **kwargs
        See :class:`~neurodecode.generate._base.Generator`.
    """

    name = "sdxl-unclip"
    default_weights = ""  # a dataset repository: resolved by _build_real (see UNCLIP_REPO)
    default_steps = 38
    default_guidance = 5.0
    latent_family = "sdxl"
    licence: ClassVar[str] = "MIT (MindEye2 repository); fine-tuned from SDXL base: CreativeML Open RAIL++-M"
    purpose: ClassVar[str] = "MindEye2 SDXL unCLIP (UNet on bigG tokens + SDXL VAE)"
    #: Tiny tier: ``clip-bigg-14-tokens-tiny`` (16 x 48); 64-channel heads as the reference; 32 px images.
    #: The refiner's text encoders are 24 and 40 wide (its UNet attends to 64, not 48).
    TINY: ClassVar[dict[str, Any]] = {"width": 48, "tokens": 16, "channels": (64, 128), "time_dim": 8,
                                      "sample_size": 16, "text_widths": (24, 40), "text_tokens": 11}

    def __init__(self, weights: Any = None, *, allow_pickle: bool = False, converted_dir: Any = None,
                 refiner: Any = None, captioner: Any = None, converter: Any = None, **kwargs: Any) -> None:
        super().__init__(weights, **kwargs)
        self.allow_pickle = bool(allow_pickle)
        self.converted_dir = converted_dir
        self.refiner = refiner
        self.captioner = captioner
        self.converter = converter

    # ------------------------------------------------------------------ declared weights
    @classmethod
    def artefacts(cls, weights: Any = None, dtype: Any = None, *, refine: bool = False, **kwargs: Any) -> list[Any]:
        """The unCLIP checkpoint (a hub *dataset* file: listed with its command, fetched by the generator) and,
        with ``refine=True``, SDXL base."""
        from ..io.hub import (
            ExternalArtefact,
            HubArtefact,
            clip_tokenizer_files,
            diffusers_model_files,
            transformers_model_files,
        )

        if isinstance(weights, str) and weights == "tiny":
            return [ExternalArtefact(f"{cls.name} (tiny)", "random", "tiny tier: random init, nothing to fetch")]
        if weights:
            main = ExternalArtefact(str(weights), "folder", f"{cls.name}: the unCLIP checkpoint or its conversion")
        else:
            main = ExternalArtefact(
                f"{UNCLIP_REPO} (dataset) {UNCLIP_FILE}", "authors",
                f"MindEye2's SDXL unCLIP, read by the {cls.name} generator: `hf download {UNCLIP_REPO} {UNCLIP_FILE} "
                "--repo-type dataset`, then allow_pickle=True converts it once to safetensors", licence=cls.licence)
        out: list[Any] = [main]
        if refine:
            files = (*diffusers_model_files("unet", dtype), *diffusers_model_files("vae", dtype),
                     *transformers_model_files("text_encoder", dtype), *transformers_model_files("text_encoder_2", dtype),
                     *clip_tokenizer_files("tokenizer"), *clip_tokenizer_files("tokenizer_2"))
            out.append(HubArtefact(REFINER_REPO, files, "CreativeML Open RAIL++-M",
                                   f"{cls.name} generator: SDXL base img2img refinement"))
        return out

    # ------------------------------------------------------------------ building
    def _build_tiny(self) -> dict[str, Any]:
        from diffusers import UNet2DConditionModel

        cfg = self.tiny_config
        channels = tuple(int(c) for c in cfg["channels"])
        unet = UNet2DConditionModel(
            sample_size=int(cfg["sample_size"]), in_channels=4, out_channels=4, block_out_channels=channels,
            layers_per_block=1, transformer_layers_per_block=(1, 2),
            attention_head_dim=tuple(c // _HEAD_CHANNELS for c in channels), use_linear_projection=True,
            norm_num_groups=32, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=int(cfg["width"]),
            addition_embed_type="text_time", addition_time_embed_dim=int(cfg["time_dim"]),
            projection_class_embeddings_input_dim=4 * int(cfg["time_dim"]))
        vae = tiny_vae(2 * int(cfg["sample_size"]), scaling_factor=0.13025, force_upcast=True)
        return {"unet": unet, "vae": vae, "n_tokens": int(cfg["tokens"])}

    def _build_real(self, name_or_path: str) -> dict[str, Any]:
        from diffusers import AutoencoderKL, UNet2DConditionModel

        folder = self._converted_folder(name_or_path)
        parts = load_subfolders(folder, {"unet": UNet2DConditionModel, "vae": AutoencoderKL}, self.torch_dtype_)
        width = int(parts["unet"].config.cross_attention_dim)
        # bigG patch tokens: 256 (CLS excluded); other widths (test fixtures) take any token count
        return {**parts, "n_tokens": _BIGG_TOKENS if width == _BIGG_WIDTH else None, "source": str(folder)}

    def _converted_folder(self, name_or_path: str) -> Path:
        """The diffusers folder of the unCLIP weights: given as such, or converted (once) from the checkpoint."""
        from .._core.config import cache_dir

        path = Path(name_or_path).expanduser() if name_or_path else None
        if path is not None and path.is_dir() and _is_converted(path):
            return path
        if path is not None and path.is_dir():
            found = [p for p in (path / UNCLIP_FILE, path / UNCLIP_FILE.replace(".ckpt", ".safetensors")) if p.is_file()]
            if not found:
                raise MissingFileError(format_error(
                    "weights", f"a folder written by convert_unclip_checkpoint, or one holding {UNCLIP_FILE}",
                    f"{path} (neither)", f"Pass the checkpoint file, or run `hf download {UNCLIP_REPO} {UNCLIP_FILE} "
                    "--repo-type dataset`"))
            src = found[0]
        elif path is not None and path.is_file():
            src = path
        else:
            src = self._dataset_file(name_or_path or UNCLIP_REPO)
        dst = Path(self.converted_dir).expanduser() if self.converted_dir else \
            cache_dir() / "sdxl-unclip" / f"{src.stem}-{_fingerprint(src)}"
        if not _is_converted(dst):
            from .._core.logging import logger

            logger.info("converting %s into %s (once)", src, dst)
            from .._core.errors import UnsafeCheckpointError

            try:
                convert_unclip_checkpoint(src, dst, allow_pickle=self.allow_pickle,
                                          dtype="float32" if self._load_dtype_name() == "float32" else "float16")
            except UnsafeCheckpointError as exc:
                raise UnsafeCheckpointError(format_error(
                    "allow_pickle", "True to read the released torch pickle once (torch.load(weights_only=True))",
                    f"False for {src}", "Build the generator with allow_pickle=True, or convert it once with "
                    "neurodecode.generate._sdxl_unclip.convert_unclip_checkpoint(SRC, DIR, allow_pickle=True) and "
                    "pass weights=DIR (in a recipe: [generate] weights = \"DIR\")")) from exc
        return dst

    @staticmethod
    def _dataset_file(repo: str) -> Path:
        """``UNCLIP_FILE`` of the hub dataset ``repo``: from the hub cache, else downloaded (unless offline)."""
        from huggingface_hub import hf_hub_download, try_to_load_from_cache

        from .._core.config import is_offline
        from ..io.hub import hub_cache_dir, looks_like_hub_id

        if not looks_like_hub_id(repo):
            raise MissingFileError(format_error("weights", "the unCLIP checkpoint file, its folder or a hub dataset id",
                                                repo, "Check the path"))
        cached = try_to_load_from_cache(repo, UNCLIP_FILE, cache_dir=str(hub_cache_dir()), repo_type="dataset")
        if isinstance(cached, str):
            return Path(cached)
        if is_offline():
            raise OfflineError(format_error(
                "sdxl-unclip generator weights", "weights available locally (offline mode is on)",
                f"hub dataset {repo!r}: {UNCLIP_FILE} not in the local cache",
                f"On a machine with network run `hf download {repo} {UNCLIP_FILE} --repo-type dataset` and copy "
                "the hub cache, or pass the file (weights=PATH, allow_pickle=True)"))
        return Path(hf_hub_download(repo, UNCLIP_FILE, repo_type="dataset", cache_dir=str(hub_cache_dir())))

    def _expects(self) -> dict[str, tuple[int | None, ...]]:
        c = self.components_
        return {"clip_bigg_tokens": (None, c["n_tokens"], int(c["unet"].config.cross_attention_dim))}

    # ------------------------------------------------------------------ the refiner and the captioner
    def _refiner(self) -> dict[str, Any]:
        """SDXL base (UNet, VAE, both text encoders and tokenizers), built once, on the generator's device."""
        cached: dict[str, Any] | None = getattr(self, "refiner_", None)
        if cached is not None:
            return cached
        import torch

        if self.is_tiny and self.refiner is None:
            parts = self._tiny_refiner()
        else:
            from diffusers import AutoencoderKL, UNet2DConditionModel
            from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

            from ..io.hub import resolve_files

            files = self.artefacts(None, self._load_dtype_name(), refine=True)[1].files
            folder = resolve_files(str(self.refiner or REFINER_REPO), files, what="sdxl-unclip refiner (SDXL base)")
            parts = load_subfolders(folder, {
                "unet": UNet2DConditionModel, "vae": AutoencoderKL, "text_encoder": CLIPTextModel,
                "text_encoder_2": CLIPTextModelWithProjection, "tokenizer": CLIPTokenizer, "tokenizer_2": CLIPTokenizer},
                self.torch_dtype_)
        for value in parts.values():
            if isinstance(value, torch.nn.Module):
                value.eval().requires_grad_(False)
                if any(p.is_floating_point() and p.dtype != self.torch_dtype_ for p in value.parameters()):
                    value.to(dtype=self.torch_dtype_)
                value.to(device=self.execution_device)
        self.refiner_ = parts
        return parts

    def _tiny_refiner(self) -> dict[str, Any]:
        import torch
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTextModelWithProjection

        cfg = self.tiny_config
        w1, w2 = (int(w) for w in cfg["text_widths"])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed + 1)
            unet = UNet2DConditionModel(
                sample_size=int(cfg["sample_size"]), in_channels=4, out_channels=4, block_out_channels=(32, 64),
                layers_per_block=1, attention_head_dim=(2, 4), use_linear_projection=True, norm_num_groups=32,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=w1 + w2,
                addition_embed_type="text_time", addition_time_embed_dim=8,
                projection_class_embeddings_input_dim=6 * 8 + w2)
            vae = tiny_vae(2 * int(cfg["sample_size"]), scaling_factor=0.13025, force_upcast=True)
            te1 = CLIPTextModel(tiny_text_config(w1, int(cfg["text_tokens"])))
            te2 = CLIPTextModelWithProjection(tiny_text_config(w2, int(cfg["text_tokens"]), projection_dim=w2))
        return {"unet": unet, "vae": vae, "text_encoder": te1, "text_encoder_2": te2, "tokenizer": None,
                "tokenizer_2": None}

    def _encode_prompts(self, parts: dict[str, Any], texts: Sequence[str]) -> tuple[Any, Any]:
        """SDXL prompt embeddings: penultimate hidden states of both encoders concatenated (n, 77, 2048) and the
        second encoder's projected pooled output (n, 1280) (SGM's ``FrozenCLIPEmbedder`` layer 11 and
        ``FrozenOpenCLIPEmbedder2`` ``"penultimate"`` with ``always_return_pooled``)."""
        import torch

        hidden = []
        pooled = None
        for enc_key, tok_key in (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2")):
            enc, tok = parts[enc_key], parts[tok_key]
            length = int(enc.config.max_position_embeddings)
            if tok is not None:
                ids = tok(list(texts), padding="max_length", max_length=length, truncation=True,
                          return_tensors="pt").input_ids
            else:
                ids = _tiny_prompt_ids(texts, length, int(enc.config.vocab_size))
            out = enc(ids.to(self.execution_device), output_hidden_states=True)
            hidden.append(out.hidden_states[-2])
            pooled = out[0]
        return torch.cat(hidden, dim=-1), pooled

    def _captions(self, tokens: np.ndarray, converter: Any, max_length: int) -> list[str]:
        """Captions of bigG tokens through GIT and the token converter (MindEye2's caption route)."""
        from ._captions import GitCaptioner

        converter = converter if converter is not None else self.converter
        if converter is None:
            raise ValidationError(format_error(
                "captions", "one caption per item, or a bigG -> GIT token converter (converter=)",
                "neither", "Pass captions=[...] to generate, or converter=FOLDER (a fitted TokenConverter)"))
        key = id(converter)
        cap = getattr(self, "captioner_", None)
        if cap is None or getattr(self, "captioner_key_", None) != key:
            weights = "tiny" if self.is_tiny and self.captioner is None else self.captioner
            cap = GitCaptioner(weights, converter=converter, device=self.device, dtype=self.dtype, verbose=False)
            self.captioner_, self.captioner_key_ = cap, key
        return list(cap.generate({"clip_bigg_tokens": tokens}, batch_size=len(tokens), max_length=int(max_length),
                                 verbose=False))

    # ------------------------------------------------------------------ generation
    def generate(self, latents: Any, *, captions: Sequence[str] | None = None, seeds: int | Sequence[int] = 0,
                 batch_size: int = 8, **options: Any) -> Any:
        """Generate one image per item (see :meth:`Generator.generate`); ``captions`` are the refinement's prompts.

        Parameters
        ----------
        captions : list of str or None
            One prompt per item for ``refine=True`` (else predicted through ``converter``).
        """
        if captions is None:
            return super().generate(latents, seeds=seeds, batch_size=batch_size, **options)
        n = len(np.asarray(next(iter(latents.values()))))
        if isinstance(captions, str) or len(captions) != n:
            raise ValidationError(format_error("captions", f"a list of {n} str (one per item)", captions))
        all_seeds = expand_seeds(seeds, n)
        bs = max(1, int(batch_size))
        chunks = [super(SDXLUnCLIPGenerator, self).generate(
            {k: np.asarray(v)[s:s + bs] for k, v in latents.items()}, seeds=all_seeds[s:s + bs], batch_size=bs,
            captions_=list(captions[s:s + bs]), **options) for s in range(0, n, bs)]
        return np.concatenate(chunks, axis=0)

    def _generate_batch(self, latents: dict[str, np.ndarray], generators: list[Any], *, steps: int, guidance: float,
                        uncond: str = "randn", offset_noise: float = 0.04, output_map: str = "reference",
                        height: int | None = None, width: int | None = None, refine: bool = False,
                        captions_: list[str] | None = None, converter: Any = None, caption_max_length: int = 20,
                        refine_steps: int = 25, refine_timepoint: int = 13, refine_guidance: float = 5.0,
                        negative_prompt: str = NEGATIVE_PROMPT, refine_input_size: int | None = 256,
                        refine_target_size: int = 1024, **unknown: Any) -> Any:
        import torch

        if unknown:
            raise ValidationError(format_error("options", "options of the sdxl-unclip generator", sorted(unknown),
                                               "See SDXLUnCLIPGenerator's docstring for the options"))

        check_option(uncond, "uncond", UNCOND)
        check_option(output_map, "output_map", OUTPUT_MAPS)
        c = self.components_
        unet, vae = c["unet"], c["vae"]
        dev, dtype = self.execution_device, self.torch_dtype_
        tokens = self._tensor(latents["clip_bigg_tokens"])
        b = tokens.shape[0]
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        h = int(height or unet.config.sample_size * factor)
        w = int(width or unet.config.sample_size * factor)
        shape = (int(unet.config.in_channels), h // factor, w // factor)
        # draws in the reference's order: start latent z, unconditional tokens, noise, offset
        z = randn_items(shape, generators, device=dev, dtype=torch.float32)
        u_tokens = randn_items(tuple(tokens.shape[1:]), generators, device=dev, dtype=dtype)
        noise = randn_items(shape, generators, device=dev, dtype=torch.float32)
        offset = randn_items((1, 1, 1), generators, device=dev, dtype=torch.float32)
        sched = _scheduler(steps, dev)
        sigma_max = float(sched.sigmas[0])
        lat = (z + sigma_max * (noise + float(offset_noise) * offset)).to(dtype)
        time_ids = torch.tensor([[h, w, 0, 0]], device=dev, dtype=dtype).expand(b, -1)  # original size, crop
        vector = {"added_cond_kwargs": {"text_embeds": tokens.new_zeros((b, 0)), "time_ids": time_ids}}
        uc = u_tokens if uncond == "randn" else torch.zeros_like(tokens)
        lat = denoise(unet, sched, lat, sched.timesteps, cond=tokens, uncond=uc, guidance=guidance,
                      unet_kwargs=vector, generators=generators)
        images = self._decode_raw(vae, lat)
        images = (images * 0.8 + 0.2) if output_map == "reference" else (images + 1.0) / 2.0
        images = images.clamp(0, 1)
        if not refine:
            return images
        if captions_ is None:
            captions_ = self._captions(latents["clip_bigg_tokens"], converter, caption_max_length)
        return self._refine(images, captions_, generators, steps=refine_steps, timepoint=refine_timepoint,
                            guidance=refine_guidance, negative_prompt=negative_prompt, input_size=refine_input_size,
                            target_size=refine_target_size)

    @staticmethod
    def _decode_raw(vae: Any, latents: Any) -> Any:
        """Scaled latents -> decoded images in about [-1, 1] (float32; the SDXL VAE runs in float32 as SGM's
        ``disable_first_stage_autocast``)."""
        import torch

        if getattr(vae.config, "force_upcast", False) and next(vae.parameters()).dtype != torch.float32:
            vae.to(torch.float32)
        scale = float(vae.config.scaling_factor)
        return vae.decode(latents.to(next(vae.parameters()).dtype) / scale).sample.float()

    def _refine(self, images: Any, prompts: Sequence[str], generators: list[Any], *, steps: int, timepoint: int,
                guidance: float, negative_prompt: str, input_size: int | None, target_size: int) -> Any:
        """SDXL base img2img from ``images`` (b, 3, H, W) in [0, 1]: the reference's refinement (module docstring)."""
        import torch
        import torch.nn.functional as F

        steps, timepoint = int(steps), int(timepoint)
        if not 2 <= timepoint <= steps + 1:
            raise ValidationError(format_error("refine_timepoint", f"an int in [2, {steps + 1}] (the last "
                                               "refine_timepoint - 1 steps of the refine_steps schedule are run)",
                                               timepoint, "MindEye2 uses 13 of 25"))
        parts = self._refiner()
        unet, vae = parts["unet"], parts["vae"]
        dev, dtype = self.execution_device, self.torch_dtype_
        b, _, h, w = images.shape
        x = images.float()
        if input_size is not None and (h, w) != (int(input_size),) * 2:
            # the reference stores stage-1 images at 256 px and resizes them back before refining
            x = F.interpolate(x, size=(int(input_size),) * 2, mode="bilinear", antialias=True, align_corners=False)
            x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
        if getattr(vae.config, "force_upcast", False) and next(vae.parameters()).dtype != torch.float32:
            vae.to(torch.float32)  # the SDXL VAE overflows in float16 (SGM encodes and decodes in float32)
        vdtype = next(vae.parameters()).dtype
        dist = vae.encode((x * 2 - 1).to(vdtype)).latent_dist
        eps = randn_items(tuple(dist.mean.shape[1:]), generators, device=dev, dtype=torch.float32)
        z = (dist.mean.float() + dist.std.float() * eps) * float(vae.config.scaling_factor)  # posterior sample
        sched = _scheduler(steps, dev)
        start = steps + 1 - timepoint  # index of sigmas[-timepoint] in the (steps + 1)-long sigma list
        noise = randn_items(tuple(z.shape[1:]), generators, device=dev, dtype=torch.float32)
        lat = (z + float(sched.sigmas[start]) * noise).to(dtype)
        sched.set_begin_index(start)
        cond, pooled = self._encode_prompts(parts, list(prompts))
        ucond, upooled = self._encode_prompts(parts, [negative_prompt])
        time_ids = torch.tensor([[h, w, 0, 0, int(target_size), int(target_size)]], device=dev,
                                dtype=dtype).expand(b, -1)
        kw = {"added_cond_kwargs": {"text_embeds": pooled.to(dtype), "time_ids": time_ids}}
        ukw = {"added_cond_kwargs": {"text_embeds": upooled.to(dtype).expand(b, -1), "time_ids": time_ids}}
        lat = denoise(unet, sched, lat, sched.timesteps[start:], cond=cond.to(dtype),
                      uncond=ucond.to(dtype).expand(b, -1, -1), guidance=guidance, unet_kwargs=kw, uncond_kwargs=ukw,
                      generators=generators)
        return ((self._decode_raw(vae, lat) + 1.0) / 2.0).clamp(0, 1)

    def provenance(self) -> dict[str, Any]:
        out = {**super().provenance(), "reference": "MedARC-AI/MindEyeV2 unclip6.yaml + utils.unclip_recon; "
               "enhanced_recon_inference (refinement)", "sampler": "Euler (EDM, no churn), LegacyDDPM timesteps"}
        if getattr(self, "refiner_", None) is not None:
            out["refiner"] = "tiny" if self.is_tiny and self.refiner is None else str(self.refiner or REFINER_REPO)
        return out
