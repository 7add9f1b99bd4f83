"""Neuro-Vision to Language (Shen et al., NeurIPS 2024, arXiv 2404.19438): whole-volume fMRI -> ViT3D -> LLM.

No public code: written from the paper (facts in ``shared/specs/seed-systems.md`` section 5).

Two stages, two classes in this file:

1. :class:`NVL`, the *dual-stream extractor*: each trial's beta volume, resized to one grid for
   every subject (83 x 104 x 81), cut into 14^3 patches and restricted to the patches overlapping
   the union of the subjects' nsdgeneral masks (:func:`neurodecode.data.load_nsd_volumes`), goes
   through a 16-layer Transformer encoder of width 768 (a learned patch embedding 2744 -> 768, a CLS
   token, learned positions per kept patch). Two 2-layer MLPs (hidden 1024) map the last layer's CLS
   to the CLIP ViT-L/14 image embedding (``f_wc``) and to the Stable Diffusion VAE latent (``f_wv``);
   the loss is ``||f_wc(h0) - CLIP||^2 + alpha ||f_wv(h0) - VAE||^2`` with ``alpha = 1/64`` (mean
   squared errors). One model serves every subject (no subject adapters). In training, two repeats
   of the same image are mixed (MixUp, lambda ~ U(0, 1)) when the batch carries ``"x_pair"``.
2. :class:`NVLBrainLLM`: the extractor's *penultimate-layer* hidden states of every token become
   "fMRI tokens", projected by a 2-layer MLP (LLaVA-style) into the embedding space of a causal
   language model, placed before the instruction; the LM answers. Stage 1 trains the projector
   with the LM frozen; stage 2 also adapts the LM (``llm_train="lora"``: LoRA adapters through
   peft, the 24 GB route; ``"full"``: every LM weight, as the paper). Real tier: any Hugging Face
   causal LM by hub id or folder (the paper: Llama-3-8B); tiny tier: a 2-layer ``LlamaConfig`` at toy
   width with the byte-level ``ByT5Tokenizer`` (no vocabulary files, offline).

Concept localisation (:meth:`NVL.concept_map`): GradCAM of the cosine between the predicted CLIP
embedding and a concept's CLIP text embedding, through the extractor (the patch tokens entering the last
block), one value per patch; :func:`ensemble_maps` averages the min-max-normalised maps of extractors with
different patch sizes (the paper: 14, 12, 10). ``method="gradient_x_input"`` is the per-voxel alternative.

The instruction template (:data:`PROMPT`) and the instruction set built from captions
(:func:`instruction_pairs`) are documented in ``docs/decoders/nvl.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._core.errors import ShapeMismatchError, ValidationError
from .._core.validation import check_array, check_option, dataclass_from_dict, format_error
from ..io.checkpoints import PretrainedMixin
from ._targets import DecoderTarget

__all__ = ["NVLConfig", "NVL", "NVLBrainLLM", "PROMPT", "INSTRUCTIONS", "instruction_pairs", "ensemble_maps",
           "CONCEPT_METHODS"]

#: The prompt around the fMRI tokens: ``{fmri}`` marks where the projected tokens go.
PROMPT = "USER: {fmri} {instruction}\nASSISTANT: "
#: The instruction kinds built from captions (paper App. A.2, Tabs 3-6), question -> how the answer is made.
INSTRUCTIONS: dict[str, str] = {
    "brief": "Describe this image briefly.",
    "detailed": "Describe this image in detail.",
    "question": "What is the main object in this image?",
    "sd_prompt": "Provide the corresponding Stable Diffusion prompts for the image.",
    "concept": "Locating the concept of {concept}.",
}
#: Concept-map methods of :meth:`NVL.concept_map` (the first is the paper's).
CONCEPT_METHODS = ("gradcam", "gradient_x_input")
_STOP = set("a an the of on in at to with and is are was were be by for from its it this that these those "
            "there here some two three several many very near next into onto over under his her their".split())

#: Tiny causal LM (Llama at toy width) on ByT5's byte vocabulary (256 bytes + 3 specials + 125 extra ids).
TINY_LLM = {"vocab_size": 384, "hidden_size": 40, "intermediate_size": 72, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
            "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2, "tie_word_embeddings": False}


@dataclass
class NVLConfig:
    """Sizes of the extractor and the language stage (defaults: the paper's real size).

    Parameters
    ----------
    patch_dim : int
        Values per patch (14^3 = 2744).
    n_patches : int
        Patches kept by the mask union (at most 6 x 8 x 6 = 288 on the 83 x 104 x 81 grid).
    width, depth, heads, mlp_ratio, dropout
        The Transformer encoder (768, 16, 12, 4, 0.0).
    clip_shape : list of int
        Shape of one CLIP ViT-L/14 image embedding target ([768]).
    vae_shape : list of int or None
        Shape of one VAE latent target (None: no VAE stream).
    head_hidden : int
        Hidden width of the two 2-layer MLP heads (1024).
    vae_weight : float
        alpha of the VAE term (1/64).
    mixup : bool
        Mix two repeats of the same image in training when the batch carries ``"x_pair"``.
    llm : str or None
        Causal LM hub id or folder (the paper: ``meta-llama/Meta-Llama-3-8B``); None or ``""``: the
        tiny ``llm_config`` (random, offline).
    llm_config : dict
        ``LlamaConfig`` fields of the tiny LM.
    llm_dtype : str
        Dtype of a real LM's weights.
    llm_train : {"none", "lora", "full"}
        Stage 2: what of the LM trains (stage 1 is "none").
    lora_r, lora_alpha : int
        LoRA rank and scale (``llm_train="lora"``).
    max_text_len : int
        Longest answer, in tokens (training targets are cut there).
    """

    patch_dim: int = 2744
    n_patches: int = 288
    width: int = 768
    depth: int = 16
    heads: int = 12
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    clip_shape: list[int] = field(default_factory=lambda: [768])
    vae_shape: list[int] | None = field(default_factory=lambda: [4, 64, 64])
    head_hidden: int = 1024
    vae_weight: float = 1 / 64
    mixup: bool = True
    llm: str | None = "meta-llama/Meta-Llama-3-8B"
    llm_config: dict[str, Any] = field(default_factory=dict)
    llm_dtype: str = "bfloat16"
    llm_train: str = "none"
    lora_r: int = 8
    lora_alpha: int = 16
    max_text_len: int = 64

    def __post_init__(self) -> None:
        check_option(self.llm_train, "llm_train", ("none", "lora", "full"))
        if not self.llm:  # "" (a recipe has no null) means the tiny LM
            self.llm = None
        if self.width % self.heads:
            raise ValidationError(format_error("heads", f"a divisor of width={self.width}", self.heads))
        self.clip_shape = [int(v) for v in np.atleast_1d(self.clip_shape)]
        if len(self.clip_shape) != 1:
            raise ValidationError(format_error("clip_shape", "one pooled embedding width, e.g. [768]", self.clip_shape))
        for name in ("patch_dim", "n_patches", "width", "depth", "head_hidden", "max_text_len"):
            if int(getattr(self, name)) < 1:
                raise ValidationError(format_error(name, "a positive integer", getattr(self, name)))
        if self.vae_shape is not None:
            self.vae_shape = [int(v) for v in self.vae_shape]

    @classmethod
    def tiny(cls, **overrides: Any) -> NVLConfig:
        """Same structure at toy width (random init, offline); ``overrides`` replace fields.

        Widths differ per component: patches of 3^3 = 27 values, encoder 24, heads 28, CLIP 16
        (``clip-vit-l-14-tiny``), VAE 4 x 16 x 16 (``sd-vae-tiny``), LM 40.
        """
        base: dict[str, Any] = dict(patch_dim=27, n_patches=9, width=24, depth=2, heads=4, head_hidden=28,
                                    clip_shape=[16], vae_shape=[4, 16, 16], llm=None, llm_config=dict(TINY_LLM),
                                    max_text_len=48)
        base.update(overrides)
        return cls(**base)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NVLConfig:
        """Build from a (JSON) dict or a recipe's ``[decoder]`` table (``name`` and ``llm_stage`` skipped)."""
        return dataclass_from_dict(cls, dict(d), "decoder", ignore=("name", "llm_stage", "patch_sizes"))


# --------------------------------------------------------------------------- the extractor


class _Block(nn.Module):
    """Pre-norm Transformer encoder layer (fused attention through ``scaled_dot_product_attention``)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, width),
                                 nn.Dropout(dropout))
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.proj(a.transpose(1, 2).reshape(n, t, d))
        return x + self.mlp(self.norm2(x))


def _head(width: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, out))


class NVL(PretrainedMixin, nn.Module):
    """The ViT3D dual-stream extractor: patched fMRI volumes -> CLIP ViT-L/14 embedding and VAE latent.

    Parameters
    ----------
    config : NVLConfig

    Examples
    --------
    >>> model = NVL(NVLConfig.tiny())
    >>> out = model.predict_latents(np.zeros((2, 9, 27), np.float32))
    >>> out["clip_image_embeds"].shape, out["vae_latents"].shape
    ((2, 16), (2, 4, 16, 16))
    """

    config_class = NVLConfig
    #: batch key -> what it trains (read by the recipe runner and the contract tests)
    targets = {"clip": DecoderTarget("clip_shape", "clip_image_embeds", True),
               "vae_latents": DecoderTarget("vae_shape", "vae_latents", False)}

    def __init__(self, config: NVLConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or NVLConfig()
        self.embed = nn.Linear(c.patch_dim, c.width)
        self.cls = nn.Parameter(torch.zeros(1, 1, c.width))
        self.pos = nn.Parameter(torch.zeros(1, c.n_patches + 1, c.width))
        nn.init.trunc_normal_(self.pos, std=0.02)
        nn.init.trunc_normal_(self.cls, std=0.02)
        self.blocks = nn.ModuleList([_Block(c.width, c.heads, c.mlp_ratio, c.dropout) for _ in range(c.depth)])
        self.norm = nn.LayerNorm(c.width)
        self.to_clip = _head(c.width, c.head_hidden, c.clip_shape[0])
        self.to_vae = _head(c.width, c.head_hidden, int(np.prod(c.vae_shape))) if c.vae_shape else None

    # -- forward -----------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(last-layer CLS (n, width), penultimate-layer hidden states of all tokens (n, 1 + n_patches, width))."""
        c = self.config
        if x.dim() != 3 or tuple(x.shape[1:]) != (c.n_patches, c.patch_dim):
            raise ShapeMismatchError(format_error("x", f"shape (n, {c.n_patches}, {c.patch_dim}) (patched volumes)",
                                                  f"shape {tuple(x.shape)}", "Load the data with "
                                                  "neurodecode.data.load_nsd_volumes on the model's patch grid"))
        h = torch.cat([self.cls.expand(len(x), -1, -1), self.embed(x)], dim=1) + self.pos
        penultimate = h
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i == len(self.blocks) - 2:
                penultimate = h
        if len(self.blocks) == 1:
            penultimate = h
        return self.norm(h)[:, 0], penultimate

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        cls, _ = self.encode(x)
        out = {"clip_image_embeds": self.to_clip(cls)}
        if self.to_vae is not None:
            out["vae_latents"] = self.to_vae(cls).view(len(x), *self.config.vae_shape)  # type: ignore[misc]
        return out

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, torch.Tensor]:
        """``||f_wc(h0) - CLIP||^2 + vae_weight ||f_wv(h0) - VAE||^2`` (means), with repeat MixUp.

        ``batch``: ``"x"`` (n, n_patches, patch_dim), ``"clip"`` (n, clip_shape[0]), optionally
        ``"vae_latents"`` (n, *vae_shape) and ``"x_pair"`` (another repeat of the same image).
        """
        x = batch["x"].float()
        if self.config.mixup and "x_pair" in batch and self.training:
            lam = torch.rand(len(x), 1, 1, device=x.device, dtype=x.dtype)
            x = lam * x + (1 - lam) * batch["x_pair"].to(x.dtype)
        out = self(x)
        clip = F.mse_loss(out["clip_image_embeds"], batch["clip"].to(out["clip_image_embeds"].dtype))
        vae = clip.new_zeros(())
        if "vae_latents" in out and "vae_latents" in batch:
            vae = F.mse_loss(out["vae_latents"], batch["vae_latents"].to(out["vae_latents"].dtype))
        return {"loss": clip + self.config.vae_weight * vae, "clip": clip, "vae": vae}

    # -- NumPy API -----------------------------------------------------------------------------------
    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def _check(self, X: Any) -> np.ndarray:
        c = self.config
        X = check_array(X, "X", ndim=3, dtype="float")
        if X.shape[1:] != (c.n_patches, c.patch_dim):
            raise ShapeMismatchError(format_error("X", f"shape (n_trials, {c.n_patches}, {c.patch_dim})",
                                                  f"shape {X.shape}", "Load with neurodecode.data.load_nsd_volumes "
                                                  "and the mask subjects the model was trained with"))
        return np.asarray(X, dtype=np.float32)

    @torch.no_grad()
    def predict_latents(self, X: Any, subject: Any = None, *, batch_size: int = 32) -> dict[str, np.ndarray]:
        """CLIP ViT-L/14 image embedding and VAE latent from patched volumes.

        Parameters
        ----------
        X : ndarray of shape (n_trials, n_patches, patch_dim)
        subject : ignored
            One model serves every subject (kept for the common signature).
        batch_size : int

        Returns
        -------
        latents : dict
            ``"clip_image_embeds"`` (n_trials, clip_shape[0]); ``"vae_latents"`` (n_trials, *vae_shape).
        """
        X = self._check(X)
        was = self.training
        self.eval()
        parts: dict[str, list[np.ndarray]] = {}
        dev = self._device()
        for s in range(0, len(X), batch_size):
            for k, v in self(torch.from_numpy(X[s:s + batch_size]).to(dev)).items():
                parts.setdefault(k, []).append(v.float().cpu().numpy())
        self.train(was)
        return {k: np.concatenate(v) for k, v in parts.items()}

    @torch.no_grad()
    def fmri_tokens(self, X: Any, *, batch_size: int = 32) -> np.ndarray:
        """Penultimate-layer hidden states of every token, shape (n_trials, 1 + n_patches, width)."""
        X = self._check(X)
        dev = self._device()
        out = [self.encode(torch.from_numpy(X[s:s + batch_size]).to(dev))[1].float().cpu().numpy()
               for s in range(0, len(X), batch_size)]
        return np.concatenate(out)

    def concept_map(self, X: Any, concept_embedding: Any, *, method: str = "gradcam") -> np.ndarray:
        """Where in the volume a concept is read from: GradCAM through the extractor (the paper), or gradient x input.

        The score is the cosine similarity between the predicted CLIP embedding and the concept's CLIP
        text embedding.

        - ``"gradcam"`` (default): the activations are the patch tokens entering the last block (the
          output of its first LayerNorm, the usual GradCAM layer of a ViT: the last block's own patch
          outputs do not reach its CLS); each feature is weighted by its gradient averaged over the
          patches, summed over features, ReLU: one value per patch, given to every voxel of the patch.
        - ``"gradient_x_input"``: ``relu(grad * input)`` of the score per voxel (the patch values).

        Parameters
        ----------
        X : ndarray of shape (n_trials, n_patches, patch_dim)
        concept_embedding : ndarray of shape (clip_shape[0],)
        method : {"gradcam", "gradient_x_input"}

        Returns
        -------
        maps : ndarray of shape (n_trials, n_patches, patch_dim)
            Per-voxel map, >= 0 (back to volumes with :func:`neurodecode.data.patches_to_volume`; an
            ensemble over patch sizes with :func:`ensemble_maps`).
        """
        check_option(method, "method", CONCEPT_METHODS)
        X = self._check(X)
        e = check_array(concept_embedding, "concept_embedding", ndim=1, dtype="float")
        if len(e) != self.config.clip_shape[0]:
            raise ShapeMismatchError(format_error("concept_embedding", f"{self.config.clip_shape[0]} values", len(e)))
        dev = self._device()
        was = self.training
        self.eval()
        acts: dict[str, torch.Tensor] = {}
        hook = self.blocks[-1].norm1.register_forward_hook(lambda _m, _i, out: acts.__setitem__("tokens", out))
        try:
            with torch.enable_grad():
                x = torch.from_numpy(X).to(dev).requires_grad_(True)
                pred = self(x)["clip_image_embeds"]
                target = torch.as_tensor(e, dtype=pred.dtype, device=dev)[None]
                score = F.cosine_similarity(pred, target, dim=-1).sum()
                wrt = acts["tokens"] if method == "gradcam" else x
                (grad,) = torch.autograd.grad(score, wrt)
        finally:
            hook.remove()
            self.train(was)
        if method == "gradient_x_input":
            return torch.relu(grad * x).detach().cpu().numpy()
        tokens, grad = acts["tokens"][:, 1:].detach(), grad[:, 1:]  # patch tokens (the CLS dropped)
        cam = torch.relu((grad.mean(dim=1, keepdim=True) * tokens).sum(-1))  # (n, n_patches)
        cam = cam.float().cpu().numpy()
        return np.repeat(cam[:, :, None], X.shape[2], axis=2)


def ensemble_maps(maps: Sequence[Any]) -> np.ndarray:
    """Average of concept maps, each first scaled to [0, 1] (min-max; a constant map becomes zeros).

    The paper ensembles three extractors with patch sizes 14, 12 and 10: their maps, put back on the
    common grid (:func:`neurodecode.data.patches_to_volume`), are averaged after normalisation.

    Parameters
    ----------
    maps : sequence of ndarray, each of the same shape (e.g. (X, Y, Z) volumes)

    Returns
    -------
    ensemble : ndarray of float32, same shape
    """
    arrays = [np.asarray(m, dtype=np.float32) for m in maps]
    if not arrays:
        raise ValidationError(format_error("maps", "at least one map", "none"))
    if any(a.shape != arrays[0].shape for a in arrays):
        raise ShapeMismatchError(format_error("maps", "maps of one shape (the same grid)",
                                              [a.shape for a in arrays]))
    out = np.zeros(arrays[0].shape, dtype=np.float32)
    for a in arrays:
        lo, hi = float(a.min()), float(a.max())
        if hi > lo:
            out += (a - lo) / (hi - lo)
    return out / len(arrays)


# --------------------------------------------------------------------------- the language stage


def _load_llm(config: NVLConfig) -> tuple[Any, Any]:
    """The causal LM and its tokenizer: hub id / folder (real) or a tiny Llama on ByT5 bytes (offline)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, ByT5Tokenizer, LlamaConfig, LlamaForCausalLM

    model: Any
    if config.llm is None:
        torch_state = torch.random.get_rng_state()
        model = LlamaForCausalLM(LlamaConfig(**(config.llm_config or TINY_LLM)))
        torch.random.set_rng_state(torch_state)  # building the LM does not move the run's seed
        tokenizer: Any = ByT5Tokenizer()
    else:
        from .._core.config import is_offline
        from .._core.device import resolve_dtype
        from ..io.hub import resolve_model_dir

        folder = resolve_model_dir(config.llm, local_files_only=is_offline(),
                                   allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken"])
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=resolve_dtype(config.llm_dtype),
                                                     local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


class NVLBrainLLM(PretrainedMixin, nn.Module):
    """fMRI tokens of a trained :class:`NVL` -> 2-layer projector -> a causal LM that answers instructions.

    Parameters
    ----------
    config : NVLConfig
        The extractor's config (its ``llm*`` fields choose the LM).

    Notes
    -----
    Saved weights hold the extractor, the projector and, by ``llm_train``: nothing of the LM
    (``"none"``: reloaded from ``config.llm``), its LoRA adapters (``"lora"``) or all of it (``"full"``).
    The tiny LM is rebuilt from ``llm_config`` and saved whole.
    """

    config_class = NVLConfig

    def __init__(self, config: NVLConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or NVLConfig()
        self.extractor = NVL(c)
        self.extractor.requires_grad_(False)
        self.lm, self.tokenizer = _load_llm(c)
        hidden = int(self.lm.config.hidden_size)
        self.projector = nn.Sequential(nn.Linear(c.width, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.set_llm_train(c.llm_train)
        self.register_state_dict_post_hook(NVLBrainLLM._drop_frozen_lm)

    @classmethod
    def from_extractor(cls, extractor: NVL, **fields: Any) -> NVLBrainLLM:
        """A language stage on a trained extractor (its weights copied and frozen); ``fields``: ``llm*`` config."""
        from dataclasses import replace

        model = cls(replace(extractor.config, **fields))
        model.extractor.load_state_dict(extractor.state_dict())
        return model

    def set_llm_train(self, mode: str) -> None:
        """Stage 1 ``"none"`` (LM frozen), stage 2 ``"lora"`` (peft adapters) or ``"full"``."""
        check_option(mode, "llm_train", ("none", "lora", "full"))
        self.config.llm_train = mode
        self.lm.requires_grad_(mode == "full")
        if mode == "lora" and not hasattr(self.lm, "peft_config"):
            try:
                from peft import LoraConfig, get_peft_model
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise ImportError("llm_train='lora' needs peft: pip install 'neurodecode[llm]'") from exc
            targets = [n for n in ("q_proj", "v_proj") if any(n in m for m, _ in self.lm.named_modules())]
            self.lm = get_peft_model(self.lm, LoraConfig(r=self.config.lora_r, lora_alpha=self.config.lora_alpha,
                                                         target_modules=targets or None, lora_dropout=0.0))

    @staticmethod
    def _drop_frozen_lm(module: NVLBrainLLM, state: Any, prefix: str, local_metadata: Any) -> None:
        """State-dict post-hook: a real, frozen LM is left out of every state dict (it reloads from
        ``config.llm``), also when this model is a submodule (the trainer's checkpoints), under any prefix."""
        if module.config.llm is None or module.config.llm_train == "full":
            return
        keep = "lora_" if module.config.llm_train == "lora" else "\0"
        for key in [k for k in state if k.startswith(prefix + "lm.") and keep not in k]:
            del state[key]

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:  # type: ignore[override]
        if self.config.llm is not None and self.config.llm_train != "full":
            strict = False  # the LM's own weights come from config.llm
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # -- text helpers --------------------------------------------------------------------------------
    def _ids(self, text: str) -> list[int]:
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return ids

    def _prompt_parts(self, instruction: str) -> tuple[list[int], list[int]]:
        before, after = PROMPT.split("{fmri}")
        return self._ids(before), self._ids(after.format(instruction=instruction))

    def _inputs(self, tokens: torch.Tensor, instructions: Sequence[str],
                answers: Sequence[str] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Left-padded ``inputs_embeds``, ``attention_mask`` and (with answers) ``labels``."""
        emb_layer = self.lm.get_input_embeddings()
        dev = emb_layer.weight.device
        fmri = self.projector(tokens.to(dev, next(self.projector.parameters()).dtype)).to(emb_layer.weight.dtype)
        eos = self.tokenizer.eos_token_id
        rows, labels = [], []
        for i, instruction in enumerate(instructions):
            pre, post = self._prompt_parts(instruction)
            ans = [] if answers is None else self._ids(answers[i])[: self.config.max_text_len - 1] + [eos]
            text_ids = torch.tensor(pre + post + ans, dtype=torch.long, device=dev)
            e = emb_layer(text_ids)
            rows.append(torch.cat([e[:len(pre)], fmri[i], e[len(pre):]]))
            labels.append([-100] * (len(pre) + fmri.shape[1] + len(post)) + ans)
        width = max(len(r) for r in rows)
        pad = torch.zeros(emb_layer.weight.shape[1], dtype=rows[0].dtype, device=dev)
        embeds = torch.stack([torch.cat([pad.expand(width - len(r), -1), r]) for r in rows])
        mask = torch.stack([torch.cat([torch.zeros(width - len(r), dtype=torch.long, device=dev),
                                       torch.ones(len(r), dtype=torch.long, device=dev)]) for r in rows])
        lab = None
        if answers is not None:
            lab = torch.tensor([[-100] * (width - len(lb)) + lb for lb in labels], dtype=torch.long, device=dev)
        return embeds, mask, lab

    # -- training ------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, torch.Tensor]:
        """Next-token loss on the answers only.

        ``batch``: ``"x"`` (patched volumes), ``"instruction"`` and ``"answer"``: lists of str, or integer
        tensors indexing ``batch["instruction_texts"]`` / ``batch["answer_texts"]`` (how
        :class:`~neurodecode.train.ArrayBatches` carries text: the tables go in its ``extra``).
        """
        with torch.no_grad():
            _, tokens = self.extractor.encode(batch["x"].float())
        instructions, answers = _texts(batch, "instruction"), _texts(batch, "answer")
        embeds, mask, labels = self._inputs(tokens, instructions, answers)
        out = self.lm(inputs_embeds=embeds, attention_mask=mask, labels=labels)
        return {"loss": out.loss, "lm": out.loss.detach()}

    # -- NumPy API -------------------------------------------------------------------------------------
    @torch.no_grad()
    def answer(self, X: Any, instruction: str | Sequence[str], *, max_new_tokens: int = 32, num_beams: int = 1,
               batch_size: int = 8) -> list[str]:
        """Answer an instruction about each trial (greedy or beam search from the fMRI tokens alone).

        Parameters
        ----------
        X : ndarray of shape (n_trials, n_patches, patch_dim)
        instruction : str or sequence of str
            One for all trials, or one per trial (see :data:`INSTRUCTIONS`).
        max_new_tokens, num_beams, batch_size : int

        Returns
        -------
        answers : list of str
        """
        X = self.extractor._check(X)
        instr = [instruction] * len(X) if isinstance(instruction, str) else [str(s) for s in instruction]
        if len(instr) != len(X):
            raise ShapeMismatchError(format_error("instruction", f"one string or {len(X)} strings", len(instr)))
        was = self.training
        self.eval()
        dev = next(self.projector.parameters()).device
        out: list[str] = []
        for s in range(0, len(X), batch_size):
            _, tokens = self.extractor.encode(torch.from_numpy(X[s:s + batch_size]).to(dev))
            embeds, mask, _ = self._inputs(tokens, instr[s:s + batch_size])
            ids = self.lm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=int(max_new_tokens),
                                   num_beams=int(num_beams), do_sample=False,
                                   pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id)
            out += [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]
        self.train(was)
        return out

    def predict_latents(self, X: Any, subject: Any = None, **kwargs: Any) -> dict[str, np.ndarray]:
        """The extractor's CLIP embedding and VAE latent (see :meth:`NVL.predict_latents`)."""
        return self.extractor.predict_latents(X, subject, **kwargs)


def _texts(batch: dict[str, Any], key: str) -> list[str]:
    value = batch[key]
    if isinstance(value, torch.Tensor):  # indices into the batch's text table
        table = batch[f"{key}_texts"]
        return [str(table[int(i)]) for i in value.reshape(-1).tolist()]
    return [str(v) for v in value]


def main_concept(captions: Sequence[str]) -> str:
    """The most frequent content word of an image's captions (ties: the first seen)."""
    counts: dict[str, int] = {}
    for cap in captions:
        for w in "".join(ch if ch.isalnum() or ch == " " else " " for ch in str(cap).lower()).split():
            if w not in _STOP and not w.isdigit() and len(w) > 2:
                counts[w] = counts.get(w, 0) + 1
    if not counts:
        return "object"
    return max(counts, key=lambda w: (counts[w], -list(counts).index(w)))


def instruction_pairs(captions: Sequence[str], kinds: Sequence[str] = tuple(INSTRUCTIONS)) -> list[tuple[str, str]]:
    """(instruction, answer) pairs for one image, built from its captions (the documented template).

    ``brief``: the first caption; ``detailed``: the captions joined; ``question``: the main concept
    (:func:`main_concept`); ``sd_prompt``: the first caption; ``concept``: "Locating the concept of
    <concept>." -> the concept (the map itself comes from :meth:`NVL.concept_map`).
    """
    caps = [str(c).strip() for c in captions if str(c).strip()]
    if not caps:
        raise ValidationError(format_error("captions", "at least one caption", list(captions)))
    concept = main_concept(caps)
    answers = {"brief": caps[0], "detailed": " ".join(caps), "question": concept, "sd_prompt": caps[0],
               "concept": concept}
    out = []
    for k in kinds:
        check_option(k, "kinds", list(INSTRUCTIONS))
        out.append((INSTRUCTIONS[k].format(concept=concept), answers[k]))
    return out

