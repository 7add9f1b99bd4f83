"""CLIP latent spaces on open_clip: image/text, pooled and token targets.

Output kinds (``output=``) and their shapes, for a config with vision grid ``g``
(``(image_size // patch_size) ** 2``), vision width ``w``, joint width ``d``
(``embed_dim``) and text context ``c``:

``image_tokens``
    CLS + patch tokens after the final LayerNorm and the projection: ``(g + 1, d)``.
    ViT-L/14: 257 x 768 (MindBridge, Brain-Diffuser). ``normalize="vd"`` divides every
    token by the norm of the CLS token (Versatile Diffusion).
``image_patch_tokens``
    Patch tokens after the final LayerNorm, unprojected, CLS excluded: ``(g, w)``.
    ViT-bigG/14: 256 x 1664 (MindEye2).
``image_pooled``
    The CLIP image embedding: ``(d,)``. ViT-L/14 768, ViT-H/14 1024. ``normalize="l2"``.
``text_tokens``
    Every token after the final LayerNorm and the projection: ``(c, d)``. ViT-L/14: 77 x 768.
    ``normalize="vd"`` divides by the norm of the pooled (EOS) embedding. The token ids are
    padded with the end-of-text token 49407 (``pad="eot"``, the default, as Versatile Diffusion,
    MindBridge and Brain-Diffuser do through Hugging Face's CLIP tokenizer); ``pad="zero"`` keeps
    open_clip's zero padding. The choice is in the space's preprocessing (cache key, provenance).
``text_pooled``
    The CLIP text embedding (EOS token): ``(d,)``.

Tiny twins keep the token logic at toy width (documented shapes):
``clip-vit-l-14*-tiny``: image tokens (17, 16), pooled (16,), text tokens (77, 16);
``clip-vit-h-14*-tiny``: pooled (24,); ``clip-bigg-14-tokens-tiny``: (16, 48).
Every tokenizer is open_clip's CLIP BPE (49,408 tokens), checked after loading.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

from .._core.errors import DataIntegrityError, MissingFileError, OfflineError, ValidationError
from .._core.files import write_json
from .._core.logging import logger
from .._core.validation import check_option, format_error
from ._base import LatentSpace, seeded

__all__ = [
    "ClipSpace",
    "OUTPUTS",
    "CLIP_VOCAB_SIZE",
    "build_open_clip",
    "save_open_clip_folder",
    "load_open_clip_folder",
    "tiny_clip_config",
    "check_tokenizer_vocab",
    "clip_artefacts",
    "open_clip_hub_files",
    "PAD_MODES",
    "EOT_TOKEN",
]

OUTPUTS = ("image_tokens", "image_patch_tokens", "image_pooled", "text_tokens", "text_pooled")
CLIP_VOCAB_SIZE = 49408
#: CLIP's end-of-text token (the last of the vocabulary).
EOT_TOKEN = 49407
#: How text token ids are padded to the context length: ``"eot"`` repeats the end-of-text token
#: (49407) after the text, as Hugging Face's ``CLIPTokenizer`` of openai/clip-vit-large-patch14 does, so
#: as Versatile Diffusion, MindBridge and Brain-Diffuser's text targets are computed; ``"zero"`` pads with
#: id 0 (open_clip's tokenizer; this package's behaviour before 2026-12).
PAD_MODES = ("eot", "zero")
OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = "open_clip_model.safetensors"

_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

#: Tiny architectures, one per real one: same structure (patch grid, CLS, projection, 77-token
#: text with the real BPE vocabulary), toy widths.
_TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "ViT-L-14": {
        "embed_dim": 16, "quick_gelu": True,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": CLIP_VOCAB_SIZE, "width": 32, "heads": 2, "layers": 2},
    },
    "ViT-H-14": {
        "embed_dim": 24,
        "vision_cfg": {"image_size": 28, "layers": 2, "width": 40, "head_width": 20, "patch_size": 7},
        "text_cfg": {"context_length": 77, "vocab_size": CLIP_VOCAB_SIZE, "width": 40, "heads": 2, "layers": 2},
    },
    "ViT-bigG-14": {
        "embed_dim": 20,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 48, "head_width": 16, "mlp_ratio": 4.9231,
                       "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": CLIP_VOCAB_SIZE, "width": 32, "heads": 2, "layers": 2},
    },
}


def tiny_clip_config(arch: str = "ViT-L-14") -> dict[str, Any]:
    """The tiny twin's open_clip config for a real architecture (a fresh copy)."""
    check_option(arch, "arch", list(_TINY_CONFIGS))
    return copy.deepcopy(_TINY_CONFIGS[arch])


def _real_config(arch: str, tag: str | None) -> dict[str, Any]:
    import open_clip

    cfg = open_clip.get_model_config(arch)
    if cfg is None:  # pragma: no cover - open_clip ships these configs
        raise ValidationError(format_error("arch", "an open_clip model name", arch, "See open_clip.list_models()"))
    cfg = copy.deepcopy(cfg)
    if tag:
        pcfg = open_clip.get_pretrained_cfg(arch, tag) or {}
        if pcfg.get("quick_gelu"):
            cfg["quick_gelu"] = True
    return cfg


def _preprocess_cfg(model_cfg: dict[str, Any], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    size = model_cfg["vision_cfg"].get("image_size", 224)
    cfg = {"size": size, "mode": "RGB", "mean": list(_OPENAI_MEAN), "std": list(_OPENAI_STD),
           "interpolation": "bicubic", "resize_mode": "shortest", "fill_color": 0}
    for k, v in (overrides or {}).items():
        if k in cfg:
            cfg[k] = list(v) if isinstance(v, tuple) else v
    return cfg


def build_open_clip(model_cfg: dict[str, Any], *, seed: int = 0, device: Any = "cpu") -> Any:
    """Build an open_clip model from a config dict, randomly initialised with ``seed``.

    Parameters
    ----------
    model_cfg : dict
        An open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``, optional
        ``quick_gelu``, ``custom_text``), as in open_clip's ``model_configs/*.json``.
    seed : int
        Seed of the random initialisation (torch's global RNG is left untouched).
    device : str or torch.device
        ``"meta"`` builds without allocating memory (shape checks of huge models).

    Returns
    -------
    model : open_clip.CLIP or open_clip.CustomTextCLIP
        In eval mode.
    """
    import torch
    from open_clip.model import CLIP, CustomTextCLIP

    if not isinstance(model_cfg, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= set(model_cfg):
        raise ValidationError(format_error("model_cfg", "a dict with 'embed_dim', 'vision_cfg' and 'text_cfg'",
                                           model_cfg, "Start from neurodecode.latents.clip.tiny_clip_config()"))
    cfg = copy.deepcopy(model_cfg)
    custom = bool(cfg.pop("custom_text", False)) or "hf_model_name" in cfg.get("text_cfg", {})
    for k in ("multimodal_cfg",):
        cfg.pop(k, None)
    cls = CustomTextCLIP if custom else CLIP
    with seeded(seed), torch.device(device):
        model = cls(**cfg)
    return model.eval()


def save_open_clip_folder(model: Any, folder: str | os.PathLike[str], *, model_cfg: dict[str, Any],
                          preprocess_cfg: dict[str, Any] | None = None,
                          metadata: dict[str, Any] | None = None) -> Path:
    """Save an open_clip model as ``open_clip_config.json`` + ``open_clip_model.safetensors``.

    The layout is open_clip's own (``open_clip.create_model("local-dir:FOLDER")`` reads it too);
    ``get_space(name, weights=FOLDER)`` loads it safely (safetensors only).

    Parameters
    ----------
    model : open_clip.CLIP
        The model.
    folder : path-like
        Destination (created).
    model_cfg : dict
        The config the model was built from.
    preprocess_cfg : dict or None
        ``size``, ``mean``, ``std``, ``interpolation``, ``resize_mode``; defaults from the config.
    metadata : dict or None
        Free JSON-able notes stored in the config file (training data, licence...).

    Returns
    -------
    folder : pathlib.Path
    """
    from ..io.checkpoints import save_state_dict

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in model.state_dict().items()}
    save_state_dict(state, folder / OPEN_CLIP_WEIGHTS, metadata={"format": "pt"})
    write_json(folder / OPEN_CLIP_CONFIG, {
        "model_cfg": model_cfg,
        "preprocess_cfg": _preprocess_cfg(model_cfg, preprocess_cfg),
        "neurodecode": dict(metadata or {}),
    })
    return folder


def load_open_clip_folder(folder: str | os.PathLike[str], *, device: Any = "cpu", allow_pickle: bool = False
                          ) -> tuple[Any, dict[str, Any], dict[str, Any], Path]:
    """Load a folder written by :func:`save_open_clip_folder` (or open_clip's hub layout).

    Returns
    -------
    model : open_clip.CLIP
    model_cfg : dict
    preprocess_cfg : dict
    weights_file : pathlib.Path
    """
    folder = Path(folder)
    cfg_path = folder / OPEN_CLIP_CONFIG
    if not cfg_path.is_file():
        raise MissingFileError(format_error(
            "weights", f"a folder holding {OPEN_CLIP_CONFIG} and {OPEN_CLIP_WEIGHTS}",
            f"{folder} without {OPEN_CLIP_CONFIG}", "Save the model with neurodecode.latents.save_open_clip_folder"))
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        model_cfg = cfg["model_cfg"]
    except (json.JSONDecodeError, KeyError) as exc:
        raise DataIntegrityError(format_error("weights", f"a JSON {OPEN_CLIP_CONFIG} with a 'model_cfg'",
                                              str(cfg_path), "Re-save the folder")) from exc
    weights_file = _find_weights(folder, allow_pickle)
    model = build_open_clip(model_cfg, device="meta")
    _load_weights(model, weights_file, allow_pickle=allow_pickle, device=device)
    return model, model_cfg, _preprocess_cfg(model_cfg, cfg.get("preprocess_cfg")), weights_file


def _find_weights(folder: Path, allow_pickle: bool) -> Path:
    for name in (OPEN_CLIP_WEIGHTS, "open_clip_pytorch_model.safetensors", "model.safetensors"):
        if (folder / name).is_file():
            return folder / name
    pickles = [folder / n for n in ("open_clip_pytorch_model.bin", "pytorch_model.bin") if (folder / n).is_file()]
    if pickles and allow_pickle:
        return pickles[0]
    raise MissingFileError(format_error(
        "weights", f"{OPEN_CLIP_WEIGHTS} in {folder}",
        f"pickle-only weights {[p.name for p in pickles]}" if pickles else "no weights file",
        "Pass allow_pickle=True to read a trusted .bin (torch.load(weights_only=True)), or convert it to safetensors"
        if pickles else "Save the model with save_open_clip_folder"))


def _load_weights(model: Any, path: Path, *, allow_pickle: bool, device: Any, dtype: Any = None) -> None:
    """Load ``path`` into a meta-device ``model`` (one copy in host memory), weights in ``dtype``.

    ``dtype=None`` keeps float32 (weights stored in reduced precision, e.g. the shipped demo CLIP,
    compute in float32; ``assign=True`` would otherwise keep their storage dtype); ``bfloat16`` /
    ``float16`` keep the weights in that precision (a bigG tower: 5 GB instead of 10).
    """
    import torch

    from ..io.checkpoints import load_state_dict

    target = torch.float32 if dtype is None else dtype
    state = load_state_dict(path, allow_pickle=allow_pickle)
    for k in list(state):
        v = state[k]
        if v.is_floating_point() and v.dtype != torch.float64 and v.dtype != target:
            state[k] = v.to(target)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as exc:  # size mismatches: the file belongs to another width
        raise DataIntegrityError(format_error(
            "weights", "a state dict matching the model config", f"{path}: {str(exc).splitlines()[1:2]}",
            "The weights belong to another architecture (width); check the file or the space name")) from exc
    unexpected = [k for k in unexpected if k not in ("attn_mask",)]
    if missing or unexpected:
        raise DataIntegrityError(format_error(
            "weights", "a state dict matching the model config", f"{path}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}", "The weights belong to another architecture; check the folder's config"))
    # buffers not in the state dict (text causal mask) are rebuilt on the real device
    for mod in model.modules():
        if hasattr(mod, "attn_mask") and getattr(mod.attn_mask, "is_meta", False):
            mod.attn_mask = _causal_mask(mod.attn_mask.shape[-1])
    model.to(device)


def _weights_dtype(dtype: Any) -> Any:
    """The dtype the weights are kept in: the compute dtype when reduced, else float32."""
    import torch

    from .._core.device import resolve_dtype

    resolved = resolve_dtype(dtype) if dtype not in (None, "auto") else torch.float32
    return resolved if resolved in (torch.bfloat16, torch.float16) else None


def _causal_mask(n: int) -> Any:
    import torch

    mask = torch.empty(n, n)
    mask.fill_(float("-inf"))
    return mask.triu_(1)


def check_tokenizer_vocab(tokenizer: Any, expected: int, what: str) -> None:
    """Raise if a loaded tokenizer's vocabulary does not have the expected size.

    Offline, ``transformers.CLIPTokenizer.from_pretrained`` can return an empty tokenizer
    (vocabulary of 2) without raising; every space checks its tokenizer with this.
    """
    size = len(getattr(tokenizer, "encoder", None) or tokenizer)
    if size != expected:
        raise DataIntegrityError(format_error(
            "tokenizer", f"a {what} tokenizer with {expected} tokens", f"a vocabulary of {size}",
            "The tokenizer files are missing or wrong (offline loads can silently return an empty tokenizer); "
            "download the model files again or pass a complete local folder"))


#: Licences of the open_clip weights the built-in spaces use, by pretrained tag.
_TAG_LICENCES = {"openai": "MIT (OpenAI CLIP)", "laion2b_s32b_b79k": "MIT (OpenCLIP), LAION-2B data",
                 "laion2b_s39b_b160k": "MIT (OpenCLIP), LAION-2B data"}


def open_clip_hub_files(arch: str, tag: str) -> tuple[str, tuple[tuple[str, ...], ...]]:
    """The hub repository open_clip reads ``arch``/``tag`` from, and the file it reads there.

    open_clip's pretrained config names ``hf_hub = "org/name/"`` (the repository, default file) or
    ``"org/name/file.bin"``; open_clip prefers the safetensors twin of the file. E.g. ViT-L-14 /
    openai -> ``timm/vit_large_patch14_clip_224.openai``, ``open_clip_model.safetensors`` (not
    ``openai/clip-vit-large-patch14``, the transformers copy, which open_clip does not read).
    """
    import open_clip

    pcfg = open_clip.get_pretrained_cfg(arch, tag) or {}
    hub = str(pcfg.get("hf_hub", "")).strip("/")
    if not hub:
        raise OfflineError(format_error("weights", f"a hub copy of open_clip ({arch!r}, {tag!r})", "none known",
                                        "Download the weights yourself and pass weights=FOLDER or FILE"))
    parts = hub.split("/")
    repo = "/".join(parts[:2])
    filename = parts[2] if len(parts) > 2 else None
    if filename is None:
        group: tuple[str, ...] = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
    elif filename.endswith((".bin", ".pth", ".pt")):
        group = (filename.rsplit(".", 1)[0] + ".safetensors", filename)
    else:
        group = (filename,)
    return repo, (group,)


def clip_artefacts(name: str, *, weights: Any = None, dtype: Any = None, arch: str | None = None,
                   tag: str | None = None, tiny: bool = False, model_cfg: Any = None, **options: Any) -> list[Any]:
    """What a CLIP space reads (see :func:`neurodecode.latents.space_artefacts`)."""
    from ..io.hub import ExternalArtefact, HubArtefact

    if weights == "random" or (weights is None and (tiny or model_cfg is not None)):
        return [ExternalArtefact(name, "random", "random init (seeded), nothing to fetch")]
    if weights is not None and isinstance(weights, str) and ":" in weights and not Path(weights).exists():
        arch, tag = weights.split(":", 1)
    elif weights is not None:
        return [ExternalArtefact(str(weights), "folder", f"latent space {name}: a local folder or file (read as is)")]
    if arch is None or tag is None:
        return [ExternalArtefact(name, "note", "no published weights: pass weights=FOLDER")]
    repo, files = open_clip_hub_files(arch, tag)
    return [HubArtefact(repo, files, _TAG_LICENCES.get(tag, "unknown (see the model card)"),
                        f"latent space {name}: open_clip {arch}/{tag}")]


def _resolve_tag(arch: str, tag: str, allow_pickle: bool) -> Path:
    """Local path of the published weights of ``arch``/``tag``, via the hub cache (offline-safe)."""
    from ..io.hub import group_choice, resolve_files

    repo, files = open_clip_hub_files(arch, tag)
    try:
        folder = resolve_files(repo, files, what=f"open_clip weights ({arch!r}, {tag!r})")
    except OfflineError as exc:
        raise OfflineError(f"open_clip weights ({arch!r}, {tag!r}) from hub repo {repo!r}: {exc}") from exc
    name = group_choice(folder, files[0])
    assert name is not None
    if name.endswith((".bin", ".pth", ".pt")) and not allow_pickle:
        raise MissingFileError(format_error(
            "weights", f"{files[0][0]} in {folder}", f"pickle-only weights {name}",
            "Pass allow_pickle=True to read a trusted .bin (torch.load(weights_only=True)), or convert it"))
    return folder / name


class ClipSpace(LatentSpace):
    """A CLIP target space on an open_clip model (see the module docstring for output kinds).

    Build it with :func:`~neurodecode.latents.get_space`.
    """

    def __init__(self, name: str, *, model: Any, model_cfg: dict[str, Any], preprocess_cfg: dict[str, Any],
                 output: str, normalize: str | None, weights: str, weights_file: Path | None,
                 device: Any, dtype: Any, batch_size: int, verbose: Any, compile: bool = False,
                 pad: str = "eot") -> None:
        check_option(output, "output", OUTPUTS)
        check_option(pad, "pad", PAD_MODES)
        allowed: tuple[Any, ...] = {"image_tokens": (None, "vd"), "text_tokens": (None, "vd"),
                                    "image_pooled": (None, "l2"), "text_pooled": (None, "l2"),
                                    "image_patch_tokens": (None,)}[output]
        check_option(normalize, "normalize", allowed)
        shape = output_shape(model_cfg, output)
        modality = output.split("_")[0]
        pre = {"kind": "open_clip", **preprocess_cfg} if modality == "image" else {
            "kind": "open_clip-bpe", "context_length": model_cfg["text_cfg"].get("context_length", 77),
            "vocab_size": CLIP_VOCAB_SIZE, "pad_token": EOT_TOKEN if pad == "eot" else 0}
        super().__init__(name, shape=shape, modality=modality, device=device, dtype=dtype, batch_size=batch_size,
                         verbose=verbose, preprocessing=pre, weights=weights,
                         extra_key={"output": output, "normalize": normalize, "model_cfg": model_cfg})
        self.output = output
        self.normalize = normalize
        self.pad = pad
        self.model_cfg = model_cfg
        self._weights_file = weights_file
        self.model = model.to(self._device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._check_structure()
        self._forward = self._forward_tensor
        if compile:
            import torch

            self._forward = torch.compile(self._forward_tensor)
        self._transform: Any = None
        self._tokenizer: Any = None
        if modality == "text":
            self._tokenizer = _clip_tokenizer(model_cfg["text_cfg"].get("context_length", 77))


    def _check_structure(self) -> None:
        if self.output in ("image_tokens", "image_patch_tokens"):
            v = self.model.visual
            if not hasattr(v, "_embeds") or getattr(v, "attn_pool", None) is not None \
                    or getattr(v, "pool_type", "tok") != "tok" or getattr(v, "final_ln_after_pool", False):
                raise ValidationError(format_error("output", "a ViT with a CLS token and token pooling",
                                                   self.model_cfg.get("vision_cfg"),
                                                   "Token targets need a plain CLIP ViT; use output='image_pooled'"))
        if self.output == "text_tokens" and not hasattr(self.model, "token_embedding"):
            raise ValidationError(format_error("output", "a CLIP text tower (not a custom/HF text tower)",
                                               self.model_cfg.get("text_cfg"), "Use output='text_pooled'"))

    # ------------------------------------------------------------------ forward
    def _forward_tensor(self, x: Any) -> Any:
        """Pixels (n, 3, H, W) or token ids (n, context) -> targets (n, *shape), on the model's device."""
        import torch

        m = self.model
        if self.output == "image_pooled":
            out = m.encode_image(x)
        elif self.output == "text_pooled":
            out = m.encode_text(x)
        elif self.output in ("image_tokens", "image_patch_tokens"):
            v = m.visual
            h = v.ln_post(v.transformer(v._embeds(x)))
            if self.output == "image_patch_tokens":
                out = h[:, 1:]
            else:
                out = h @ v.proj
                if self.normalize == "vd":
                    out = out / out[:, :1].norm(dim=-1, keepdim=True)
        else:  # text_tokens
            cast = m.transformer.get_cast_dtype()
            h = m.token_embedding(x).to(cast) + m.positional_embedding.to(cast)
            h = m.ln_final(m.transformer(h, attn_mask=m.attn_mask))
            out = h @ m.text_projection if not isinstance(m.text_projection, torch.nn.Linear) else m.text_projection(h)
            if self.normalize == "vd":
                pooled = out[torch.arange(out.shape[0], device=out.device), x.argmax(dim=-1)]
                out = out / pooled.norm(dim=-1, keepdim=True)[:, None]
        if self.output.endswith("pooled") and self.normalize == "l2":
            out = torch.nn.functional.normalize(out, dim=-1)
        return out

    def _encode_image_batch(self, items: list[Any]) -> Any:
        import torch

        if self._transform is None:
            self._transform = _image_transform(self.preprocessing)
        pixels = torch.stack([self._transform(_to_pil(im)) for im in items]).to(self._device)
        return self._forward(pixels)

    def _encode_text_batch(self, items: list[str]) -> Any:
        ids = self._tokenizer(items)
        if self.pad == "eot":
            ids = pad_with_eot(ids)
        return self._forward(ids.to(self._device))


def pad_with_eot(ids: Any) -> Any:
    """Token ids ``(n, context)`` padded with zeros after the end-of-text token -> padded with it instead.

    The first end-of-text token keeps its place (the pooled position is still ``argmax``, which
    returns the first maximum); every position after it becomes 49407.
    """
    import torch

    is_eot = ids == EOT_TOKEN
    after = torch.cumsum(is_eot.to(torch.int64), dim=-1) > 0
    return torch.where(after, torch.full_like(ids, EOT_TOKEN), ids)


def output_shape(model_cfg: dict[str, Any], output: str) -> tuple[int, ...]:
    """Shape of one target, by config arithmetic (no model needed)."""
    vc, tc = model_cfg["vision_cfg"], model_cfg["text_cfg"]
    d = int(model_cfg["embed_dim"])
    size, patch = vc.get("image_size", 224), vc.get("patch_size", 16)
    size = size if isinstance(size, (list, tuple)) else (size, size)
    grid = (size[0] // patch) * (size[1] // patch)
    return {
        "image_tokens": (grid + 1, d),
        "image_patch_tokens": (grid, int(vc.get("width", 768))),
        "image_pooled": (d,),
        "text_tokens": (int(tc.get("context_length", 77)), d),
        "text_pooled": (d,),
    }[output]


def _to_pil(im: Any) -> Any:
    if hasattr(im, "convert"):
        return im.convert("RGB")
    from PIL import Image

    return Image.fromarray(im, mode="RGB")


def _image_transform(pre: dict[str, Any]) -> Any:
    from open_clip.transform import image_transform

    return image_transform(pre["size"], is_train=False, mean=tuple(pre["mean"]), std=tuple(pre["std"]),
                           resize_mode=pre["resize_mode"], interpolation=pre["interpolation"],
                           fill_color=pre["fill_color"])


def _clip_tokenizer(context_length: int) -> Any:
    from open_clip.tokenizer import SimpleTokenizer

    tok = SimpleTokenizer(context_length=context_length)
    check_tokenizer_vocab(tok, CLIP_VOCAB_SIZE, "CLIP BPE")
    return tok


def build_clip_space(name: str, *, weights: Any = None, device: Any = "cpu", dtype: Any = "float32",
                     batch_size: int = 32, verbose: Any = None, arch: str | None = None, tag: str | None = None,
                     tiny: bool = False, output: str = "image_pooled", normalize: str | None = None,
                     model_cfg: dict[str, Any] | None = None, preprocess_cfg: dict[str, Any] | None = None,
                     seed: int = 0, compile: bool = False, allow_pickle: bool = False,
                     pad: str = "eot") -> ClipSpace:
    """Registry builder for every CLIP space (see :func:`~neurodecode.latents.get_space`)."""
    check_option(output, "output", OUTPUTS)
    weights_file: Path | None = None
    if weights is not None and weights != "random" and not (isinstance(weights, str) and ":" in weights
                                                              and not Path(weights).exists()):
        path = Path(weights).expanduser()
        if path.is_dir() and (path / OPEN_CLIP_CONFIG).is_file():
            model, cfg, pre, weights_file = load_open_clip_folder(path, allow_pickle=allow_pickle)
            cfg_pre = preprocess_cfg or pre
            return ClipSpace(name, model=model, model_cfg=cfg, preprocess_cfg=_preprocess_cfg(cfg, cfg_pre),
                             output=output, normalize=normalize, weights=f"folder:{path.resolve()}",
                             weights_file=weights_file, device=device, dtype=dtype, batch_size=batch_size,
                             verbose=verbose, compile=compile, pad=pad)
        if path.is_file():
            weights_file = path
            tag_text = f"file:{path.resolve()}"
        elif path.is_dir():
            raise MissingFileError(format_error("weights", f"a folder with {OPEN_CLIP_CONFIG}", str(path),
                                                "Save it with neurodecode.latents.save_open_clip_folder"))
        else:
            raise MissingFileError(format_error("weights", "None, 'random', an open_clip tag 'ARCH:TAG', a folder or "
                                                "a .safetensors file", str(weights), "Check the path"))
    elif isinstance(weights, str) and ":" in weights:  # explicit open_clip tag "ViT-L-14:openai"
        arch, tag = weights.split(":", 1)
        tag_text = f"open_clip:{arch}/{tag}"
    else:
        tag_text = ""
    # config
    if model_cfg is not None:
        cfg = copy.deepcopy(model_cfg)
    elif tiny:
        cfg = tiny_clip_config(arch or "ViT-L-14")
    else:
        if arch is None:
            raise ValidationError(format_error("model_cfg", "an open_clip config dict for 'clip-custom'", None,
                                               "Pass model_cfg=... (e.g. neurodecode.latents.clip.tiny_clip_config())"))
        cfg = _real_config(arch, tag if weights is None or tag_text.startswith("open_clip") else None)
    random_init = weights == "random" or (weights is None and (tiny or model_cfg is not None))
    if random_init:
        from .._core.device import resolve_device

        model = build_open_clip(cfg, seed=seed, device=resolve_device(device))
        tag_text = f"random-init:seed={seed}"
    else:
        if weights_file is None:
            assert arch is not None and tag is not None
            weights_file = _resolve_tag(arch, tag, allow_pickle)
            tag_text = tag_text or f"open_clip:{arch}/{tag}"
            import open_clip

            pcfg = open_clip.get_pretrained_cfg(arch, tag) or {}
            preprocess_cfg = {**{k: pcfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in pcfg},
                              **(preprocess_cfg or {})}
            hub_cfg = weights_file.parent / OPEN_CLIP_CONFIG
            if model_cfg is None and hub_cfg.is_file():
                # the repository's own open_clip_config.json (open_clip reads it too for hf-hub models)
                try:
                    cfg = {**json.loads(hub_cfg.read_text(encoding="utf-8"))["model_cfg"],
                           **({"quick_gelu": True} if pcfg.get("quick_gelu") else {})}
                except (ValueError, KeyError) as exc:
                    raise DataIntegrityError(format_error("weights", f"a JSON {OPEN_CLIP_CONFIG} with a 'model_cfg'",
                                                          str(hub_cfg), "Download the file again")) from exc
        model = build_open_clip(cfg, device="meta")
        _load_weights(model, weights_file, allow_pickle=allow_pickle, device="cpu", dtype=_weights_dtype(dtype))
    logger.info("latent space %s: %s", name, tag_text)
    return ClipSpace(name, model=model, model_cfg=cfg, preprocess_cfg=_preprocess_cfg(cfg, preprocess_cfg),
                     output=output, normalize=normalize, weights=tag_text, weights_file=weights_file,
                     device=device, dtype=dtype, batch_size=batch_size, verbose=verbose, compile=compile, pad=pad)
