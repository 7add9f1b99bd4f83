"""WAVE: whole-brain parcel time series -> CLIP ViT-L/14 space (Wang et al., arXiv 2411.07121).

One self-contained file a reader can hold against the paper and its code (``src/model/fvl.py``, "FVL"):

1. **fMRI foundation encoder**: the learning-from-brains GPT (Thomas, Ré & Poldrack, NeurIPS 2022;
   ``--architecture GPT --training-style CSM``, their defaults: 4 GPT-2 blocks of width 768, 12 heads,
   512 positions, input of 1024 parcels). Each TR's parcel vector is embedded by Linear -> LayerNorm ->
   Dropout and added to a learned embedding of its time ``t_r`` (0.2 s precision, up to 300 s, one extra
   "dummy" entry); a learned ``cls_embed`` (in parcel space) is inserted after the last valid TR with
   the dummy time; a causal GPT-2 runs over the sequence; the output at the CLS position goes through
   the pooler (Linear 768 -> 768, Tanh, Dropout): ``pooler_outputs``. Submodule and parameter names
   follow the learning-from-brains checkpoint (``embedder.*``, ``decoder.*``), so
   :meth:`WAVE.load_encoder_checkpoint` loads ``checkpoints/upstream/GPT/pytorch_model.bin`` unchanged.
2. **Projector**: Linear 768 -> 768 onto the CLIP ViT-L/14 image embedding.
3. **Tri-contrastive loss**: the mean of two symmetric InfoNCE losses, fMRI <-> CLIP image embedding and
   fMRI <-> CLIP text embedding, each with its own learnable logit scale ``exp(s)``, ``s`` initialised
   at ``ln(1/0.07)``.
4. **Prompt learning** (``prompt="token-ids"``, the reference): a meta-net on ``[fMRI || image]`` features
   (Linear 1536 -> 96, ReLU, Linear 96 -> 8) plus a learned 8-d context vector gives 8 values that the
   reference turns into pseudo token ids, ``long(relu(ctx) * 1000)``, inserted after the BOS token of the
   label's CLIP tokens (tokenised to 77 - 8 = 69 tokens) before the frozen CLIP text encoder. Integer ids
   carry no gradient, so in the reference the meta-net is never updated (it stays at its random
   initialisation); neurodecode reproduces that. ``prompt="none"`` contrasts with the plain label's text
   embedding (the reference's ``is_prompt=False``).
5. **Training augmentation** (reference, on by default): 20 % of the input values zeroed at random
   (``sparse_ratio``) and the first 5 TRs of each sample shuffled (``shuffle_trs``).

Inputs follow the loader (:func:`neurodecode.data.load_bold5000` with ``data="parcels"``): ``X`` of shape
(n, n_parcels, n_trs); the model transposes it to the GPT's (n, n_trs, n_parcels) sequence, with the
valid length per sample (``lengths``) and TR times ``t_rs = arange(n_trs) * tr``.

Stage 2, reconstruction (:class:`WAVEPrior`; reference ``src/reconstruct.py`` with ``hidden=True``, the
Versatile Diffusion path of ``script/train_decode.sh``): the encoder's ``pooler_outputs`` (768, before the
projector) go through a ``dim_mapper`` Linear 768 -> 257 x 768 and condition a MindEye1-style diffusion prior
(``VersatileDiffusionPriorNetwork``: 257 tokens of width 768, depth 6, 12 heads of 64, non-causal, a learned
positional embedding added to the noisy image tokens; dalle2's ``DiffusionPrior``: 100 timesteps, cosine
schedule, predicts the clean tokens, conditioning dropped with probability 0.2, targets scaled by
``sqrt(768)``, loss x 30). Its samples are CLIP ViT-L/14 image *tokens* (257 x 768, VD-normalised: every token
divided by the CLS token's norm), re-normalised by token 0 and fed to Versatile Diffusion's image-variation
UNet (text weight 0, guidance 3.5, 20 UniPC steps).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._core.errors import ShapeMismatchError, ValidationError
from .._core.validation import check_array, check_option, dataclass_from_dict, format_error
from ..io.checkpoints import PretrainedMixin, load_state_dict
from ._dalle2_prior import GainNorm, prior_layers, rotary_frequencies, run_layers, sinusoidal_time, time_mlp
from .losses import clip_loss

__all__ = ["WAVEConfig", "WAVE", "prompt_token_ids", "WAVEPriorConfig", "WAVEPrior"]


@dataclass
class WAVEConfig:
    """Architecture and loss of :class:`WAVE` (defaults: the published model).

    Parameters
    ----------
    n_parcels : int
        Input width (learning-from-brains: 1024 DiFuMo parcels; any atlas when not loading its checkpoint).
    embed_dim, n_layers, n_heads, n_positions : int
        GPT-2 encoder (768, 4, 12, 512).
    embedder_layers : int
        Linear layers of the TR embedder (1).
    t_r_precision, t_r_max : float
        Time embedding grid in seconds (0.2, 300).
    dropout : float
        Dropout of embedder, GPT-2 and pooler (0.1).
    clip_dim : int
        CLIP ViT-L/14 embedding width (768); the projector maps ``embed_dim`` to it.
    ctx_dim : int
        Prompt context values (8); the meta-net is ``2 clip_dim -> 2 clip_dim // 16 -> ctx_dim``.
    prompt : {"token-ids", "none"}
    text_length : int
        CLIP text context (77); labels are tokenised to ``text_length - ctx_dim``.
    logit_scale_init : float
        Initial ``s`` of both scales (``ln(1/0.07)``).
    sparse_ratio : float
        Fraction of input values zeroed in training (0.2).
    shuffle_trs : int
        Leading TRs shuffled in training (5; 0 disables).
    tr : float
        Seconds per TR of the inputs (BOLD5000: 2.0).
    """

    n_parcels: int = 1024
    embed_dim: int = 768
    n_layers: int = 4
    n_heads: int = 12
    n_positions: int = 512
    embedder_layers: int = 1
    t_r_precision: float = 0.2
    t_r_max: float = 300.0
    dropout: float = 0.1
    clip_dim: int = 768
    ctx_dim: int = 8
    prompt: str = "token-ids"
    text_length: int = 77
    logit_scale_init: float = field(default_factory=lambda: math.log(1 / 0.07))
    sparse_ratio: float = 0.2
    shuffle_trs: int = 5
    tr: float = 2.0

    def __post_init__(self) -> None:
        check_option(self.prompt, "prompt", ("token-ids", "none"))
        if self.embed_dim % self.n_heads:
            raise ValidationError(format_error("embed_dim", f"a multiple of n_heads ({self.n_heads})", self.embed_dim))

    @classmethod
    def tiny(cls, **overrides: Any) -> WAVEConfig:
        """Toy widths, all distinct (parcels 7, GPT 24 with 2 layers of 3 heads, CLIP 20, context 5)."""
        values: dict[str, Any] = {"n_parcels": 7, "embed_dim": 24, "n_layers": 2, "n_heads": 3, "n_positions": 16,
                                  "clip_dim": 20, "ctx_dim": 5, "text_length": 13, "t_r_max": 60.0}
        values.update(overrides)
        return cls(**values)

    @property
    def n_t_r_embeddings(self) -> int:
        return int(self.t_r_max / self.t_r_precision)


def prompt_token_ids(token_ids: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """The reference's prompt: ``[BOS, long(relu(context) * 1000), tokens[1:]]``.

    Parameters
    ----------
    token_ids : LongTensor of shape (batch, text_length - ctx_dim)
        CLIP tokens of the labels (BOS first).
    context : Tensor of shape (batch, ctx_dim)

    Returns
    -------
    ids : LongTensor of shape (batch, text_length)
    """
    pseudo = (F.relu(context) * 1000).long()
    return torch.cat([token_ids[:, :1], pseudo.to(token_ids.device), token_ids[:, 1:]], dim=1)


class _EmbedModel(nn.Module):
    def __init__(self, c: WAVEConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(c.embedder_layers - 1):
            layers += [nn.Linear(c.n_parcels, c.embed_dim), nn.LayerNorm(c.embed_dim), nn.GELU(), nn.Dropout(c.dropout)]
        first = c.embed_dim if c.embedder_layers > 1 else c.n_parcels
        layers += [nn.Linear(first, c.embed_dim), nn.LayerNorm(c.embed_dim), nn.Dropout(c.dropout)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class _Embedder(nn.Module):
    """TR embedding + time embedding, with the CSM embedder's ``msk_embed`` / ``cls_embed``."""

    def __init__(self, c: WAVEConfig) -> None:
        super().__init__()
        self.c = c
        self.embed_model = _EmbedModel(c)
        self.wt_re = nn.Embedding(c.n_t_r_embeddings + 1, c.embed_dim)  # last row: the dummy time (CLS)
        self.msk_embed = nn.Parameter(torch.randn(1, 1, c.n_parcels))  # CSM pretraining only; kept for the keys
        self.cls_embed = nn.Parameter(torch.randn(1, 1, c.n_parcels))

    def time_ids(self, t_rs: torch.Tensor) -> torch.Tensor:
        c = self.c
        # the reference's arithmetic: seconds rounded to the grid, times int(1 / precision), truncated
        ids = (torch.round(t_rs / c.t_r_precision) * c.t_r_precision * int(1 / c.t_r_precision)).long()
        return torch.where(ids >= 0, ids, torch.full_like(ids, c.n_t_r_embeddings))

    def forward(self, inputs: torch.Tensor, t_rs: torch.Tensor) -> torch.Tensor:
        return self.embed_model(inputs) + self.wt_re(self.time_ids(t_rs))


class _Decoder(nn.Module):
    def __init__(self, c: WAVEConfig) -> None:
        super().__init__()
        from transformers import GPT2Config, GPT2Model

        cfg = GPT2Config(vocab_size=1, n_positions=c.n_positions, n_embd=c.embed_dim, n_layer=c.n_layers,
                         n_head=c.n_heads, n_inner=4 * c.embed_dim, resid_pdrop=c.dropout, attn_pdrop=c.dropout,
                         embd_pdrop=c.dropout, activation_function="gelu", bos_token_id=None, eos_token_id=None)
        cfg._attn_implementation = "sdpa"
        self.transformer = GPT2Model(cfg)
        self.pooler_layer = nn.Sequential(nn.Linear(c.embed_dim, c.embed_dim), nn.Tanh(), nn.Dropout(c.dropout))


class WAVE(PretrainedMixin, nn.Module):
    """WAVE's fMRI encoder, projector, prompt meta-net and logit scales.

    Parameters
    ----------
    config : WAVEConfig
        :meth:`WAVEConfig.tiny` for the toy tier.

    Examples
    --------
    >>> import numpy as np
    >>> model = WAVE(WAVEConfig.tiny()).eval()
    >>> model.predict_latents(np.zeros((3, 7, 5), dtype="float32"))["clip_image_embeds"].shape
    (3, 20)
    """

    config_class = WAVEConfig

    def __init__(self, config: WAVEConfig | None = None) -> None:
        super().__init__()
        self.config = c = config if config is not None else WAVEConfig()
        self.embedder = _Embedder(c)
        self.decoder = _Decoder(c)
        self.fmri_projector = nn.Linear(c.embed_dim, c.clip_dim)
        meta = 2 * c.clip_dim
        self.meta_net = nn.Sequential(nn.Linear(meta, meta // 16), nn.ReLU(), nn.Linear(meta // 16, c.ctx_dim))
        self.context_vector = nn.Parameter(torch.zeros(1, c.ctx_dim))
        self.img_logit_scale = nn.Parameter(torch.tensor(float(c.logit_scale_init)))
        self.txt_logit_scale = nn.Parameter(torch.tensor(float(c.logit_scale_init)))
        self._text_encoder: Callable[[torch.Tensor], torch.Tensor] | None = None

    # ---- encoder

    def pooled(self, inputs: torch.Tensor, lengths: torch.Tensor, t_rs: torch.Tensor) -> torch.Tensor:
        """``pooler_outputs`` of the GPT encoder.

        Parameters
        ----------
        inputs : Tensor of shape (batch, n_trs, n_parcels)
        lengths : LongTensor of shape (batch,)
            Valid TRs per sample (the rest is padding).
        t_rs : Tensor of shape (batch, n_trs)
            Time of each TR in seconds.

        Returns
        -------
        pooled : Tensor of shape (batch, embed_dim)
        """
        b, t, p = inputs.shape
        if p != self.config.n_parcels:
            raise ShapeMismatchError(format_error("X", f"{self.config.n_parcels} parcels", p,
                                                  "Use the atlas the model was trained with"))
        if t + 1 > self.config.n_positions:
            raise ShapeMismatchError(format_error("X", f"at most {self.config.n_positions - 1} TRs", t))
        idx = torch.arange(t + 1, device=inputs.device)[None]
        lengths = lengths.to(inputs.device).long()
        # insert the CLS input (and the dummy time -1) after the last valid TR
        src = torch.where(idx <= lengths[:, None], idx, idx - 1).clamp(max=t - 1)
        seq = torch.gather(inputs, 1, src[..., None].expand(b, t + 1, p))
        seq = torch.where((idx == lengths[:, None])[..., None], self.embedder.cls_embed.to(seq.dtype), seq)
        times = torch.gather(t_rs, 1, src)
        times = torch.where(idx == lengths[:, None], torch.full_like(times, -1.0), times)
        mask = (idx <= lengths[:, None]).long()
        seq = torch.where(mask[..., None].bool(), seq, torch.zeros_like(seq))
        emb = self.embedder(seq, times)
        h = self.decoder.transformer(inputs_embeds=emb, attention_mask=mask, return_dict=True).last_hidden_state
        cls = h[torch.arange(b, device=h.device), lengths]
        return self.decoder.pooler_layer(cls)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor | None = None,
                t_rs: torch.Tensor | None = None) -> torch.Tensor:
        """Projected fMRI features, shape (batch, clip_dim), from inputs of shape (batch, n_trs, n_parcels)."""
        b, t, _ = inputs.shape
        if lengths is None:
            lengths = torch.full((b,), t, dtype=torch.long, device=inputs.device)
        if t_rs is None:
            t_rs = (torch.arange(t, device=inputs.device, dtype=inputs.dtype) * self.config.tr).expand(b, t)
        return self.fmri_projector(self.pooled(inputs, lengths, t_rs))

    # ---- text prompts

    def set_text_encoder(self, encoder: Callable[[torch.Tensor], torch.Tensor] | None) -> WAVE:
        """The frozen CLIP text encoder (token ids (batch, text_length) -> (batch, clip_dim)) for prompts."""
        self._text_encoder = encoder
        return self

    def context(self, fmri: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """The 8 prompt values per sample: ``meta_net([fmri || image]) + context_vector``."""
        return self.meta_net(torch.cat([fmri, image.to(fmri.dtype)], dim=1)) + self.context_vector

    # ---- training

    def augment(self, inputs: torch.Tensor) -> torch.Tensor:
        """Reference augmentation: zero ``sparse_ratio`` of the values, shuffle the first ``shuffle_trs`` TRs."""
        c = self.config
        if c.sparse_ratio > 0:
            inputs = inputs * (torch.rand(inputs.shape, device=inputs.device) > c.sparse_ratio).to(inputs.dtype)
        k = min(c.shuffle_trs, inputs.shape[1])
        if k > 1:
            perm = torch.argsort(torch.rand(inputs.shape[0], k, device=inputs.device), dim=1)
            head = torch.gather(inputs[:, :k], 1, perm[..., None].expand(-1, -1, inputs.shape[2]))
            inputs = torch.cat([head, inputs[:, k:]], dim=1)
        return inputs

    def loss(self, fmri: torch.Tensor, image: torch.Tensor, text: torch.Tensor) -> dict[str, torch.Tensor]:
        """Mean of the symmetric InfoNCE fMRI <-> image and fMRI <-> text losses (separate scales)."""
        li = clip_loss(fmri, image, self.img_logit_scale.exp())
        lt = clip_loss(fmri, text, self.txt_logit_scale.exp())
        return {"loss": 0.5 * (li + lt), "loss_image": li.detach(), "loss_text": lt.detach(),
                "img_logit_scale": self.img_logit_scale.detach().exp(),
                "txt_logit_scale": self.txt_logit_scale.detach().exp()}

    def training_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        """One step for :class:`neurodecode.train.Trainer`.

        Parameters
        ----------
        batch : dict
            ``"x"`` (batch, n_parcels, n_trs); optional ``"lengths"`` (batch,); ``"image_embeds"``
            (batch, clip_dim); ``"text_embeds"`` (batch, clip_dim) with ``prompt="none"``, or
            ``"text_ids"`` (batch, text_length - ctx_dim) with ``prompt="token-ids"`` and a text encoder
            set (:meth:`set_text_encoder`); without one, ``"text_embeds"`` is used.
        step : int
            Unused.
        """
        x = batch["x"].float().transpose(1, 2)
        if x.shape[0] < 2:
            raise ValidationError(format_error("batch", "at least 2 samples (contrastive loss)", x.shape[0],
                                               "Use a larger batch_size or drop the last incomplete batch"))
        if self.training:
            x = self.augment(x)
        fmri = self(x, batch.get("lengths"))
        image = batch["image_embeds"].float()
        if self.config.prompt == "token-ids" and self._text_encoder is not None and "text_ids" in batch:
            with torch.no_grad():  # integer pseudo-tokens: no gradient reaches the meta-net (reference)
                ids = prompt_token_ids(batch["text_ids"].long(), self.context(fmri, image))
                text = self._text_encoder(ids).float()
        else:
            text = batch["text_embeds"].float()
        return self.loss(fmri, image, text)

    # ---- checkpoints

    def load_encoder_checkpoint(self, path: str | os.PathLike[str], *, allow_pickle: bool = False) -> list[str]:
        """Load the learning-from-brains GPT checkpoint (``embedder.*``, ``decoder.*`` keys) into the encoder.

        Parameters
        ----------
        path : path-like
            ``pytorch_model.bin`` (a torch pickle: needs ``allow_pickle``, read with ``weights_only=True``)
            or a ``.safetensors`` conversion of it.

        Returns
        -------
        skipped : list of str
            Keys of the file that are not part of WAVE (the CSM unembedder, a decoding head).
        """
        state = load_state_dict(path, allow_pickle=allow_pickle)
        own = {k: v for k, v in self.state_dict().items() if k.startswith(("embedder.", "decoder."))}
        theirs = {k: v for k, v in state.items() if k in own}
        skipped = sorted(set(state) - set(own))
        missing = sorted(k for k in own if k not in theirs and not k.endswith(".attn.bias")
                         and not k.endswith(".attn.masked_bias"))
        bad = [f"{k}: {tuple(theirs[k].shape)} vs {tuple(own[k].shape)}" for k in theirs
               if tuple(theirs[k].shape) != tuple(own[k].shape)]
        if missing or bad:
            raise ShapeMismatchError(format_error(
                "checkpoint", "the learning-from-brains GPT encoder of this config", f"missing {missing[:5]}, "
                f"shape mismatches {bad[:5]}", "Set n_parcels / embed_dim / n_layers / n_heads / n_positions to "
                "the checkpoint's (defaults: 1024 / 768 / 4 / 12 / 512)"))
        self.load_state_dict(theirs, strict=False)
        return skipped

    # ---- NumPy API

    @torch.no_grad()
    def encode(self, X: Any, lengths: Sequence[int] | np.ndarray | None = None, *, batch_size: int = 64
               ) -> np.ndarray:
        """Projected fMRI features.

        Parameters
        ----------
        X : array-like of shape (n, n_parcels, n_trs)
        lengths : array-like of int, shape (n,) or None
            Valid TRs per sample (default all).

        Returns
        -------
        emb : ndarray of shape (n, clip_dim)
        """
        X = check_array(X, "X", ndim=3)
        if X.shape[1] != self.config.n_parcels:
            raise ShapeMismatchError(format_error("X", f"shape (n, {self.config.n_parcels} parcels, n_trs)",
                                                  X.shape, "Parcels on axis 1, TRs on axis 2 (load_bold5000)"))
        dev = next(self.parameters()).device
        lens = np.full(len(X), X.shape[2]) if lengths is None else np.asarray(lengths)
        out = []
        for i in range(0, len(X), batch_size):
            x = torch.as_tensor(np.asarray(X[i:i + batch_size], dtype=np.float32), device=dev).transpose(1, 2)
            out.append(self(x, torch.as_tensor(lens[i:i + batch_size], device=dev)).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.config.clip_dim), np.float32)

    @torch.no_grad()
    def pooled_features(self, X: Any, lengths: Sequence[int] | np.ndarray | None = None, *, batch_size: int = 64
                        ) -> np.ndarray:
        """The encoder's ``pooler_outputs`` (before the projector): the condition of :class:`WAVEPrior`.

        Parameters
        ----------
        X : array-like of shape (n, n_parcels, n_trs)
        lengths : array-like of int, shape (n,) or None
            Valid TRs per sample (default all).

        Returns
        -------
        pooled : ndarray of shape (n, embed_dim)
        """
        X = check_array(X, "X", ndim=3)
        if X.shape[1] != self.config.n_parcels:
            raise ShapeMismatchError(format_error("X", f"shape (n, {self.config.n_parcels} parcels, n_trs)",
                                                  X.shape, "Parcels on axis 1, TRs on axis 2 (load_bold5000)"))
        dev = next(self.parameters()).device
        lens = np.full(len(X), X.shape[2]) if lengths is None else np.asarray(lengths)
        out = []
        for i in range(0, len(X), batch_size):
            x = torch.as_tensor(np.asarray(X[i:i + batch_size], dtype=np.float32), device=dev).transpose(1, 2)
            b, t, _ = x.shape
            t_rs = (torch.arange(t, device=dev, dtype=x.dtype) * self.config.tr).expand(b, t)
            lens_t = torch.as_tensor(lens[i:i + batch_size], device=dev)
            out.append(self.pooled(x, lens_t, t_rs).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.config.embed_dim), np.float32)

    def predict_latents(self, X: Any, subject: Any = None, *, lengths: Any = None, **kwargs: Any
                        ) -> dict[str, np.ndarray]:
        """``{"clip_image_embeds": encode(X)}``: the fMRI feature in the CLIP ViT-L/14 image space."""
        return {"clip_image_embeds": self.encode(X, lengths, **kwargs)}


# ---------------------------------------------------------------------------------------- stage 2: diffusion prior
@dataclass
class WAVEPriorConfig:
    """Stage 2 of WAVE: the diffusion prior from the fMRI encoder to CLIP image tokens (defaults: the reference).

    Parameters
    ----------
    cond_dim : int
        Width of the condition, the encoder's ``pooler_outputs`` (``WAVEConfig.embed_dim``, 768).
    n_tokens, token_dim : int
        The target: CLIP ViT-L/14 image tokens, 257 x 768 (Versatile Diffusion's image condition).
    depth, heads, dim_head, ff_mult : int
        The dalle2 prior network (MindEye1's ``VersatileDiffusionPriorNetwork``: 6 layers, 12 query heads of 64,
        SwiGLU x 4); ``heads * dim_head`` is the query width.
    timesteps : int
        Diffusion steps of training and of the ancestral (DDPM) sampling (100).
    cond_drop : float
        Probability that a training sample's brain tokens, and independently its noisy image tokens, are replaced
        by their learned null embeddings (0.2: dalle2's ``cond_drop_prob`` sets both).
    loss_weight : float
        Multiplier of the MSE (the reference's ``prior_mult = 30`` on the Versatile Diffusion path).
    embed_scale : float or None
        Targets are multiplied by it for the diffusion and divided back after sampling; ``None``:
        ``sqrt(token_dim)`` (dalle2's default ``image_embed_scale``).
    cond_scale : float
        Classifier-free guidance of the sampler (1.0: none, as the reference samples).
    """

    cond_dim: int = 768
    n_tokens: int = 257
    token_dim: int = 768
    depth: int = 6
    heads: int = 12
    dim_head: int = 64
    ff_mult: int = 4
    timesteps: int = 100
    cond_drop: float = 0.2
    loss_weight: float = 30.0
    embed_scale: float | None = None
    cond_scale: float = 1.0

    def __post_init__(self) -> None:
        for name in ("cond_dim", "n_tokens", "token_dim", "depth", "heads", "dim_head", "ff_mult", "timesteps"):
            if int(getattr(self, name)) < 1:
                raise ValidationError(format_error(name, "a positive integer", getattr(self, name)))
        if not 0.0 <= float(self.cond_drop) < 1.0:
            raise ValidationError(format_error("cond_drop", "a probability in [0, 1)", self.cond_drop))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> WAVEPriorConfig:
        """Build from a saved ``config.json`` or a ``[decoder.prior]`` table; refuses a prior of the earlier layout."""
        if "dropout" in values:  # only the plain-block prior (before the dalle2 network) had this field
            raise ValidationError(format_error(
                "config", "a WAVE prior with the reference's dalle2 network", "a prior of the earlier plain-block "
                "layout (its config has 'dropout')", "Retrain the prior (neurodecode train with the recipe's "
                "[decoder.prior] table); its weights cannot be mapped onto the dalle2 blocks"))
        return dataclass_from_dict(cls, values, "decoder.prior")

    @classmethod
    def tiny(cls, **overrides: Any) -> WAVEPriorConfig:
        """Toy widths (condition 24, 17 tokens of 16: the ``clip-vit-l-14-tokens-tiny`` space; 2 layers, 20 steps)."""
        values: dict[str, Any] = {"cond_dim": 24, "n_tokens": 17, "token_dim": 16, "depth": 2, "heads": 2,
                                  "dim_head": 8, "ff_mult": 2, "timesteps": 20}
        values.update(overrides)
        return cls(**values)

    @property
    def scale(self) -> float:
        return float(self.embed_scale) if self.embed_scale is not None else math.sqrt(self.token_dim)


def _cosine_alphas_cumprod(timesteps: int, s: float = 0.008) -> torch.Tensor:
    """Cumulative products of the cosine schedule (Nichol & Dhariwal 2021; dalle2's prior default), betas <= 0.999."""
    t = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, dim=0)


class WAVEPrior(PretrainedMixin, nn.Module):
    """WAVE's stage-2 diffusion prior: encoder ``pooler_outputs`` -> CLIP ViT-L/14 image tokens.

    The condition (batch, cond_dim) is mapped to ``n_tokens`` brain tokens (the reference's ``dim_mapper``);
    the network, MindEye1's ``VersatileDiffusionPriorNetwork`` (the dalle2 prior transformer of
    :mod:`neurodecode.models._dalle2_prior`, ``learned_query_mode="pos_emb"``, non-causal), sees
    ``[brain tokens, time token, noisy image tokens + learned positions]`` and its last ``n_tokens`` outputs
    predict the clean (scaled) image tokens.

    Parameters
    ----------
    config : WAVEPriorConfig
        :meth:`WAVEPriorConfig.tiny` for the toy tier.

    Examples
    --------
    >>> import numpy as np
    >>> prior = WAVEPrior(WAVEPriorConfig.tiny()).eval()
    >>> prior.sample(np.zeros((2, 24), dtype="float32"), seeds=[0, 1]).shape
    (2, 17, 16)
    """

    config_class = WAVEPriorConfig

    def __init__(self, config: WAVEPriorConfig | None = None) -> None:
        super().__init__()
        self.config = c = config if config is not None else WAVEPriorConfig()
        d = c.token_dim
        self.dim_mapper = nn.Linear(c.cond_dim, c.n_tokens * d)
        self.time_mlp = time_mlp(d)
        self.learned_query = nn.Parameter(torch.randn(c.n_tokens, d) * d ** -0.5)  # "pos_emb" mode
        self.rel_pos_bias = nn.Embedding(32, c.heads)
        self.layers = prior_layers(d, c.depth, c.heads, c.dim_head, c.ff_mult)
        self.norm = GainNorm(d, stable=True)
        self.project_out = nn.Linear(d, d, bias=False)
        self.null_brain_embeds = nn.Parameter(torch.randn(c.n_tokens, d))
        self.null_image_embed = nn.Parameter(torch.randn(c.n_tokens, d))
        self.register_buffer("rotary_freqs", rotary_frequencies(c.dim_head), persistent=False)
        self.register_buffer("alphas_cumprod", _cosine_alphas_cumprod(c.timesteps).float(), persistent=False)

    # ---- network

    def _time_embed(self, t: torch.Tensor) -> torch.Tensor:
        return self.time_mlp(sinusoidal_time(t, self.config.token_dim))  # type: ignore[no-any-return]

    def brain_tokens(self, cond: torch.Tensor) -> torch.Tensor:
        """``dim_mapper(cond)`` as (batch, n_tokens, token_dim)."""
        return self.dim_mapper(cond).view(len(cond), self.config.n_tokens, self.config.token_dim)

    def forward(self, noisy: torch.Tensor, t: torch.Tensor, brain: torch.Tensor,
                keep: torch.Tensor | None = None, keep_image: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted clean (scaled) tokens (batch, n_tokens, token_dim).

        Parameters
        ----------
        noisy : Tensor of shape (batch, n_tokens, token_dim)
        t : LongTensor of shape (batch,)
        brain : Tensor of shape (batch, n_tokens, token_dim)
            :meth:`brain_tokens` of the condition.
        keep, keep_image : BoolTensor of shape (batch,) or None
            False replaces the sample's brain tokens (``keep``), or its noisy image tokens (``keep_image``), by
            their learned null embeddings (the reference's condition dropout and unconditional branch).
        """
        if keep is not None:
            brain = torch.where(keep[:, None, None], brain, self.null_brain_embeds[None].to(brain.dtype))
        if keep_image is not None:
            noisy = torch.where(keep_image[:, None, None], noisy, self.null_image_embed[None].to(noisy.dtype))
        x = torch.cat([brain, self._time_embed(t)[:, None].to(brain.dtype), noisy + self.learned_query[None]], dim=1)
        x = run_layers(x, self.layers, self.rel_pos_bias, self.rotary_freqs)
        return self.project_out(self.norm(x))[:, -self.config.n_tokens:]  # type: ignore[no-any-return]

    # ---- training

    def training_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        """Diffusion loss for :class:`neurodecode.train.Trainer`.

        Parameters
        ----------
        batch : dict
            ``"cond"`` (batch, cond_dim), the encoder's ``pooler_outputs``; ``"tokens"`` (batch, n_tokens,
            token_dim), the VD-normalised CLIP image tokens of the seen image.
        step : int
            Unused.
        """
        c = self.config
        cond = batch["cond"].float()
        x0 = batch["tokens"].float() * c.scale
        b = len(x0)
        t = torch.randint(0, c.timesteps, (b,), device=x0.device)
        ac = self.alphas_cumprod.to(x0.device)[t][:, None, None]
        noise = torch.randn_like(x0)
        noisy = ac.sqrt() * x0 + (1 - ac).sqrt() * noise
        keep = keep_image = None
        if self.training:  # dalle2: brain and image conditions dropped independently, each with cond_drop
            keep = torch.rand(b, device=x0.device) >= c.cond_drop
            keep_image = torch.rand(b, device=x0.device) >= c.cond_drop
        pred = self(noisy, t, self.brain_tokens(cond), keep, keep_image)
        mse = F.mse_loss(pred, x0)
        return {"loss": c.loss_weight * mse, "mse": mse.detach()}

    # ---- sampling

    def _denoise(self, x: torch.Tensor, t: torch.Tensor, brain: torch.Tensor) -> torch.Tensor:
        pred = self(x, t, brain)
        if self.config.cond_scale != 1.0:
            drop = torch.zeros(len(x), dtype=torch.bool, device=x.device)
            null = self(x, t, brain, drop, drop)  # forward_with_cond_scale: both conditions null
            pred = null + (pred - null) * self.config.cond_scale
        return pred

    @torch.no_grad()
    def sample(self, cond: Any, seeds: Sequence[int] | int | None = 0, *, batch_size: int = 32) -> np.ndarray:
        """Ancestral (DDPM) sampling over all ``timesteps``, each item's noise from its own seed.

        Parameters
        ----------
        cond : array-like of shape (n, cond_dim)
            The encoder's ``pooler_outputs`` (:meth:`WAVE.pooled_features`).
        seeds : int, sequence of int of length n, or None
            Item i uses ``seeds[i]`` (an int gives ``seed + i``); the same seed gives the same tokens
            whatever the batch.

        Returns
        -------
        tokens : ndarray of shape (n, n_tokens, token_dim)
            In the target's units (VD-normalised CLIP image tokens).
        """
        c = self.config
        cond_np = check_array(cond, "cond", ndim=2)
        if cond_np.shape[1] != c.cond_dim:
            raise ShapeMismatchError(format_error("cond", f"shape (n, {c.cond_dim})", cond_np.shape,
                                                  "Pass WAVE.pooled_features of the run's encoder"))
        n = len(cond_np)
        if seeds is None or isinstance(seeds, (int, np.integer)):
            base = 0 if seeds is None else int(seeds)
            seed_list = [base + i for i in range(n)]
        else:
            seed_list = [int(s) for s in seeds]
            if len(seed_list) != n:
                raise ValidationError(format_error("seeds", f"{n} seeds (one per item)", len(seed_list)))
        dev = next(self.parameters()).device
        ac = self.alphas_cumprod.to(dev).double()
        ac_prev = torch.cat([torch.ones(1, device=dev, dtype=ac.dtype), ac[:-1]])
        betas = 1 - ac / ac_prev
        coef_x0 = (betas * ac_prev.sqrt() / (1 - ac)).float()
        coef_xt = ((1 - ac_prev) * (1 - betas).sqrt() / (1 - ac)).float()
        var = (betas * (1 - ac_prev) / (1 - ac)).clamp(min=1e-20).float()
        out = []
        for a in range(0, n, batch_size):
            gens = [torch.Generator(device="cpu").manual_seed(s) for s in seed_list[a:a + batch_size]]

            def noise(gs: list[torch.Generator] = gens) -> torch.Tensor:
                return torch.stack([torch.randn((c.n_tokens, c.token_dim), generator=g) for g in gs]).to(dev)

            brain = self.brain_tokens(torch.as_tensor(cond_np[a:a + batch_size], dtype=torch.float32, device=dev))
            x = noise()
            for i in reversed(range(c.timesteps)):
                t = torch.full((len(x),), i, device=dev, dtype=torch.long)
                x0 = self._denoise(x, t, brain)
                mean = coef_x0[i] * x0 + coef_xt[i] * x
                x = mean + var[i].sqrt() * noise() if i > 0 else mean
            out.append((x / c.scale).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, c.n_tokens, c.token_dim), np.float32)
