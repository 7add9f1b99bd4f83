"""The built-in latent spaces: real names and their ``-tiny`` twins (see :func:`get_space`)."""

from __future__ import annotations

from typing import Any

from ._spec import SpaceSpec, register_space

__all__ = ["register_builtin", "BUILTIN", "SPACE_ARTEFACTS"]

_CLIP = ".clip:build_clip_space"
_TEXT = ".text:build_text_space"
_VAE = ".vae:build_vae_space"
_VDVAE = ".vdvae:build_vdvae_space"
_GIT = ".git:build_git_space"
_BLIP = ".blip:build_blip_space"
_DPT = ".dpt:build_dpt_space"
_SD_TEXT = ".sd_text:build_sd_text_space"
_DINOV2 = ".dinov2:build_dinov2_space"
_CONVNEXT = ".convnext:build_convnext_space"

#: name -> (builder, options, description); every name also gets a ``-tiny`` twin.
BUILTIN: dict[str, tuple[str, dict[str, Any], str]] = {
    "clip-vit-l-14-tokens": (_CLIP, {"arch": "ViT-L-14", "tag": "openai", "output": "image_tokens"},
                             "CLIP ViT-L/14 image tokens 257 x 768 (final LN + projection); tiny 17 x 16"),
    "clip-vit-l-14": (_CLIP, {"arch": "ViT-L-14", "tag": "openai", "output": "image_pooled"},
                      "CLIP ViT-L/14 image embedding 768; tiny 16"),
    "clip-vit-h-14": (_CLIP, {"arch": "ViT-H-14", "tag": "laion2b_s32b_b79k", "output": "image_pooled"},
                      "OpenCLIP ViT-H/14 image embedding 1024 (ATM); tiny 24"),
    "clip-bigg-14-tokens": (_CLIP, {"arch": "ViT-bigG-14", "tag": "laion2b_s39b_b160k",
                                    "output": "image_patch_tokens"},
                            "OpenCLIP ViT-bigG/14 patch tokens 256 x 1664, no CLS (MindEye2); tiny 16 x 48"),
    "clip-vit-l-14-text-tokens": (_CLIP, {"arch": "ViT-L-14", "tag": "openai", "output": "text_tokens"},
                                  "CLIP ViT-L/14 text tokens 77 x 768; tiny 77 x 16"),
    "clip-vit-l-14-text": (_CLIP, {"arch": "ViT-L-14", "tag": "openai", "output": "text_pooled"},
                           "CLIP ViT-L/14 text embedding 768; tiny 16"),
    "clip-vit-h-14-text": (_CLIP, {"arch": "ViT-H-14", "tag": "laion2b_s32b_b79k", "output": "text_pooled"},
                           "OpenCLIP ViT-H/14 text embedding 1024 (ATM text target); tiny 24"),
    "minilm-l6": (_TEXT, {"family": "bert", "pooling": "mean"},
                  "all-MiniLM-L6-v2 sentence embedding 384, unit norm (offline); tiny 32"),
    "flan-t5-large-encoder": (_TEXT, {"family": "t5", "pooling": "mean"},
                              "Flan-T5-large encoder, mean-pooled 1024; tiny 32"),
    "flan-t5-large-encoder-tokens": (_TEXT, {"family": "t5", "pooling": "tokens", "max_length": 64},
                                     "Flan-T5-large encoder hidden states 64 x 1024 (padding zeroed); tiny 64 x 32"),
    "sd-vae": (_VAE, {"hub_id": "stabilityai/sd-vae-ft-mse"},
               "Stable Diffusion VAE latent (posterior mean, raw) 4 x 32 x 32 at image_size=256 (low-level "
               "targets); tiny 4 x 16 x 16 at 32 px"),
    "git-large-coco-tokens": (_GIT, {}, "GIT-large-coco image-encoder tokens 257 x 1024 (final LN, unprojected, CLS "
                              "included): the GIT captioner's input; tiny 17 x 20"),
    "vdvae": (_VDVAE, {}, "ImageNet-64 VDVAE, first 31 latent layers concatenated 91,168 (Brain-Diffuser's "
              "low-level target, posterior samples); tiny 1,924 at 32 px"),
    "dinov2-base": (_DINOV2, {"size": "base", "output": "cls"},
                    "DINOv2 ViT-B/14 CLS after the final LayerNorm 768 (224 px); tiny 28"),
    "dinov2-base-tokens": (_DINOV2, {"size": "base", "output": "patch_tokens"},
                           "DINOv2 ViT-B/14 patch tokens 256 x 768, final LayerNorm, no CLS (224 px; output='q_tokens'"
                           " for a block's queries); tiny 9 x 28"),
    "dinov2-base-q-tokens": (_DINOV2, {"size": "base", "output": "q_tokens", "block": -1},
                             "DINOv2 ViT-B/14 last block's query features 256 x 768, no CLS (the transformer brain "
                             "encoder's input); tiny 9 x 28"),
    "dinov2-giant": (_DINOV2, {"size": "giant", "output": "cls"},
                     "DINOv2 ViT-g/14 CLS after the final LayerNorm 1536 (224 px; the real-time MEG paper's size); "
                     "tiny 36"),
    "blip-base-capfilt-tokens": (_BLIP, {}, "BLIP-base (CapFilt-L) vision-encoder tokens 226 x 768 at 240 px "
                                 "(Takagi's caption target, pixels unnormalised as the reference); tiny 26 x 44"),
    "dpt-large-hidden": (_DPT, {}, "DPT-large backbone hidden states at backbone_out_indices 4 x 577 x 1024 at 384 px "
                         "(Takagi's depth target); tiny 4 x 17 x 52"),
    "sd14-vae-320": (_VAE, {"hub_id": "CompVis/stable-diffusion-v1-4", "subfolder": "vae", "image_size": 320,
                            "scaled": True, "tiny_image_size": 40, "sample": "sample", "interpolation": "lanczos"},
                     "SD-1.4 VAE latent at 320 px (Lanczos), posterior sample x 0.18215 (Takagi's init_latent) "
                     "4 x 40 x 40; tiny 4 x 20 x 20"),
    "vicregl-convnext-xl": (_CONVNEXT, {"output": "maps"},
                            "VICRegL ConvNeXt-XL (alpha 0.75) maps-projector tokens 49 x 512 at 224 px (MindEye2's "
                            "low-level teacher; local checkpoint, output='backbone' for 49 x 2048); tiny 16 x 6 at 128 px"),
    "sd14-text-cond": (_SD_TEXT, {"output": "text_tokens"}, "SD-1.4 text conditioning of a caption 77 x 768 (final LN; recipes average "
                       "an image's captions, as Takagi's c); tiny 77 x 40"),
}


#: builder -> "module:function" declaring the files the space reads (see ``space_artefacts``).
SPACE_ARTEFACTS: dict[str, str] = {
    _CLIP: ".clip:clip_artefacts",
    _TEXT: ".text:text_artefacts",
    _VAE: ".vae:vae_artefacts",
    _VDVAE: ".vdvae:vdvae_artefacts",
    _GIT: ".git:git_artefacts",
    _DINOV2: ".dinov2:dinov2_artefacts",
    _BLIP: ".blip:blip_artefacts",
    _DPT: ".dpt:dpt_artefacts",
    _SD_TEXT: ".sd_text:sd_text_artefacts",
    _CONVNEXT: ".convnext:convnext_artefacts",
}


def register_builtin() -> None:
    """Fill the registry (called lazily on first use)."""
    for name, (builder, options, description) in BUILTIN.items():
        register_space(SpaceSpec(name, builder, dict(options), description), overwrite=True)
        register_space(SpaceSpec(f"{name}-tiny", builder, {**options, "tiny": True}, f"tiny twin of {name}"),
                       overwrite=True)
    register_space(SpaceSpec("clip-custom", _CLIP, {"output": "image_pooled"},
                             "any open_clip config: get_space('clip-custom', model_cfg=..., output=...)"),
                   overwrite=True)
