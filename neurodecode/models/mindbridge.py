"""MindBridge (Wang et al., CVPR 2024): one cross-subject fMRI decoder with per-subject embedders and builders.

Pipeline (real size)::

    voxels (n_s) --AdaptiveMaxPool1d--> 8192 --bottleneck adapter (8192->128->8192)--> Linear 2048
      --LayerNorm/GELU/Dropout 0.5-->  shared embedding e (2048)         [per-subject embedder]
    e --4 residual MLP blocks (2048)--> h                                 [shared translator]
    h --Linear--> 257 x 768 CLIP image tokens ; h --Linear--> 77 x 768 CLIP text tokens   [shared heads]
    e --Linear 2048->8192 + adapter--> pooled voxels                      [per-subject builder]

Losses: SoftCLIP + 1e4 x MSE on (Versatile-Diffusion-normalised) image tokens, the same on
text tokens, brain reconstruction MSE (builder(embedder(x)) vs pooled x) and the cycle loss
(A's embedding -> builder_B -> embedder_B, MSE back to A's embedding) between the two
subjects of each step. Reset-tuning adapts to a new subject: only its embedder and
builder train, and every step mixes in a source-subject batch (the cycle loss carries the
shared knowledge over).

Batches (from :class:`neurodecode.train.MultiSubjectBatches`) hold ``"subject"``, ``"x"``
(n, n_voxels), ``"image_tokens"`` (n, 257, 768) and optionally ``"text_tokens"``
(n, 77, 768); two subjects per step come as ``{"parts": [batch_a, batch_b]}``.
Targets are expected already VD-normalised (see :func:`vd_normalize`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._core.errors import ShapeMismatchError, ValidationError
from .._core.validation import check_array, dataclass_from_dict, format_error
from ..io.checkpoints import PretrainedMixin
from .adapters import AdapterBank, MindBridgeBuilder, MindBridgeEmbedder
from .losses import soft_clip_loss

__all__ = ["MindBridgeConfig", "MindBridge", "vd_normalize"]

#: nsdgeneral voxel counts of the NSD subjects used by MindBridge.
NSD_VOXELS = {"nsd/subj01": 15724, "nsd/subj02": 14278, "nsd/subj05": 13039, "nsd/subj07": 12682}


def vd_normalize(tokens: torch.Tensor, index: int | torch.Tensor = 0) -> torch.Tensor:
    """Versatile-Diffusion normalisation: divide each sample's tokens by the norm of one token.

    Parameters
    ----------
    tokens : Tensor of shape (n, n_tokens, dim)
    index : int or Tensor of shape (n,)
        The reference token (0, the CLS token, for images; the EOS position for text).
    """
    idx = torch.as_tensor(index, device=tokens.device).expand(tokens.shape[0])
    ref = tokens[torch.arange(tokens.shape[0], device=tokens.device), idx]
    return tokens / ref.norm(dim=-1).clamp_min(1e-8)[:, None, None]


@dataclass
class MindBridgeConfig:
    """Sizes and loss weights of :class:`MindBridge` (defaults: the paper's real size).

    Parameters
    ----------
    subjects : dict of str to int
        Subject id -> number of voxels (default: NSD subjects 1, 2, 5, 7 with nsdgeneral).
    pooled : int
        Aggregated voxel size (8192).
    bottleneck : int
        Adapter bottleneck (128).
    width : int
        Shared embedding / translator width (2048).
    n_blocks : int
        Residual MLP blocks in the translator (4).
    embed_dropout, block_dropout : float
        Dropout in the embedders (0.5) and in the translator blocks (0.15).
    image_tokens, text_tokens : list of int
        (n_tokens, dim) of the targets: (257, 768) and (77, 768) for CLIP ViT-L/14.
    pool : {"max", "avg", "linear"}
        Voxel aggregation.
    mse_weight, recon_weight, cycle_weight, text_weight : float
        Loss weights (1e4, 1, 1, 1).
    clip_temperature : float
        SoftCLIP temperature.
    """

    subjects: dict[str, int] = field(default_factory=lambda: dict(NSD_VOXELS))
    pooled: int = 8192
    bottleneck: int = 128
    width: int = 2048
    n_blocks: int = 4
    embed_dropout: float = 0.5
    block_dropout: float = 0.15
    image_tokens: list[int] = field(default_factory=lambda: [257, 768])
    text_tokens: list[int] | None = field(default_factory=lambda: [77, 768])
    pool: str = "max"
    mse_weight: float = 1e4
    recon_weight: float = 1.0
    cycle_weight: float = 1.0
    text_weight: float = 1.0
    clip_temperature: float = 0.125

    @classmethod
    def tiny(cls, subjects: dict[str, int] | None = None, **overrides: Any) -> MindBridgeConfig:
        """The same structure at toy width (random init, offline, for tests and demos)."""
        values: dict[str, Any] = dict(subjects=dict(subjects or {"nsd/subj01": 9, "nsd/subj02": 11}), pooled=16,
                                      bottleneck=4, width=12, image_tokens=[3, 8], text_tokens=[2, 8],
                                      mse_weight=10.0)
        values.update(overrides)
        return cls(**values)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MindBridgeConfig:
        return dataclass_from_dict(cls, values, "decoder")


class _ResBlock(nn.Module):
    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(width, width), nn.LayerNorm(width), nn.GELU(), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class MindBridge(PretrainedMixin, nn.Module):
    """MindBridge: per-subject embedders/builders around a shared translator and CLIP-token heads.

    Parameters
    ----------
    config : MindBridgeConfig
        Sizes (use ``MindBridgeConfig.tiny()`` for a toy model).

    Examples
    --------
    >>> model = MindBridge(MindBridgeConfig.tiny())
    >>> out = model.predict_latents(np.zeros((2, 9), np.float32), subject="nsd/subj01")
    >>> out["clip_image_tokens"].shape
    (2, 3, 8)
    """

    config_class = MindBridgeConfig

    def __init__(self, config: MindBridgeConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or MindBridgeConfig()
        self.embedders = AdapterBank()
        self.builders = AdapterBank()
        subjects, config.subjects = dict(config.subjects), {}
        for subject, n in subjects.items():
            self._add(subject, int(n))
        self.translator = nn.Sequential(*[_ResBlock(config.width, config.block_dropout) for _ in range(config.n_blocks)])
        self.image_head = nn.Linear(config.width, int(np.prod(config.image_tokens)))
        self.text_head = nn.Linear(config.width, int(np.prod(config.text_tokens))) if config.text_tokens else None
        self.tuning_subject: str | None = None

    # -- subjects ------------------------------------------------------------------------------------
    def _add(self, subject: str, n_voxels: int) -> None:
        c = self.config
        self.embedders.add(MindBridgeEmbedder(subject, n_voxels, c.pooled, c.bottleneck, c.width, c.embed_dropout, c.pool))
        self.builders.add(MindBridgeBuilder(subject, n_voxels, c.pooled, c.bottleneck, c.width))
        c.subjects[subject] = n_voxels

    @property
    def subjects(self) -> list[str]:
        """Subject ids known to the model."""
        return self.embedders.subjects

    def add_subject(self, subject: str, n_voxels: int) -> None:
        """Add a new subject's embedder and builder (randomly initialised, on the model's device)."""
        device = next(self.parameters()).device
        self._add(subject, int(n_voxels))
        self.embedders[subject].to(device)
        self.builders[subject].to(device)

    def reset_tune(self, subject: str, n_voxels: int | None = None) -> list[str]:
        """Prepare reset-tuning: add ``subject`` if needed, then freeze everything but its embedder and builder.

        Train with ``MultiSubjectBatches({new: ..., source: ...}, subjects_per_step=2, anchor=new)``.
        With shared images, :meth:`align_embedder` first gives the new embedder a closed-form start.

        Returns
        -------
        trainable : list of str
            Names of the parameters left trainable.
        """
        if subject not in self.embedders:
            if n_voxels is None:
                raise ValidationError(format_error("n_voxels", "the new subject's number of voxels", None,
                                                   f"{subject!r} is not in the model yet; pass n_voxels"))
            self.add_subject(subject, n_voxels)
        self.requires_grad_(False)
        self.embedders[subject].requires_grad_(True)
        self.builders[subject].requires_grad_(True)
        self.tuning_subject = subject
        return [n for n, p in self.named_parameters() if p.requires_grad]

    @torch.no_grad()
    def align_embedder(self, subject: str, X: Any, X_source: Any, source: str, *, alpha: float = 1.0) -> MindBridge:
        """Initialise ``subject``'s embedder by ridge alignment to ``source`` on shared stimuli.

        An addition to the paper's reset-tuning (call it after :meth:`reset_tune`, before training).
        From a random start, reset-tuning must find the new subject's map into the shared embedding
        by gradient descent through the frozen translator, which with few trials often stalls in a
        poor optimum. When the new subject saw some images the source subject also saw, the map has
        a closed-form starting point, as in functional alignment: the new embedder's ``proj`` is set
        to the ridge regression from its (pooled, adapted) voxels onto the source embedder's
        pre-normalisation activations for the same images. The bottleneck adapter, LayerNorm and
        builder are left as they are; reset-tuning then refines everything.

        .. warning:: On NSD the only images every subject saw are the shared 1,000, which are the
           standard **test** set. Aligning on them uses test-trial brain responses (not their
           targets, but still the test trials): hold those images out of the evaluation (e.g. split
           the shared images into an alignment part and a test part) and report it.

        Parameters
        ----------
        subject : str
            The new subject (already added, e.g. by :meth:`reset_tune`).
        X : ndarray of shape (n_shared, n_voxels)
            ``subject``'s betas for the shared stimuli.
        X_source : ndarray of shape (n_shared, n_voxels_source)
            ``source``'s betas for the same stimuli, row by row.
        source : str
            A trained subject of the model.
        alpha : float
            Ridge penalty (on the weights, not the bias).

        Returns
        -------
        self : MindBridge
        """
        X = check_array(X, "X", ndim=2, dtype=np.float32)
        X_source = check_array(X_source, "X_source", ndim=2, dtype=np.float32)
        if len(X) != len(X_source):
            raise ShapeMismatchError(format_error("X_source", f"{len(X)} rows (the stimuli of X, same order)",
                                                  f"{len(X_source)} rows", "Pass both subjects' betas of the shared images"))
        if not np.isfinite(alpha) or alpha < 0:
            raise ValidationError(format_error("alpha", "a finite number >= 0", alpha))
        new: MindBridgeEmbedder = self.embedders[subject]  # type: ignore[assignment]
        src: MindBridgeEmbedder = self.embedders[source]  # type: ignore[assignment]
        device = new.proj.weight.device
        target = src.proj(src.adapter(src.pool(torch.from_numpy(X_source).to(device)))).double()
        inputs = new.adapter(new.pool(torch.from_numpy(X).to(device))).double()
        # ridge with an unpenalised bias, via the SVD of the centred inputs (minimum-norm when alpha=0)
        mean_in, mean_out = inputs.mean(0), target.mean(0)
        u, sv, vh = torch.linalg.svd(inputs - mean_in, full_matrices=False)
        # the inputs were computed in the model's precision: directions below its rounding are noise
        keep = sv > sv.max() * max(inputs.shape) * torch.finfo(new.proj.weight.dtype).eps
        scale = torch.where(keep, sv / (sv**2 + float(alpha)).clamp_min(torch.finfo(sv.dtype).tiny),
                            torch.zeros_like(sv))
        weight = vh.T @ (scale[:, None] * (u.T @ (target - mean_out)))  # (pooled, width)
        new.proj.weight.copy_(weight.T.to(new.proj.weight.dtype))
        new.proj.bias.copy_((mean_out - mean_in @ weight).to(new.proj.bias.dtype))
        return self

    # -- forward -------------------------------------------------------------------------------------
    def embed(self, x: torch.Tensor, subject: str) -> torch.Tensor:
        """Shared embedding of ``x`` (n, n_voxels) from ``subject``: (n, width)."""
        return self.embedders[subject](x)  # type: ignore[no-any-return]

    def heads(self, e: torch.Tensor) -> dict[str, torch.Tensor]:
        """Image (and text) tokens from shared embeddings."""
        h = self.translator(e)
        out = {"image_tokens": self.image_head(h).view(len(h), *self.config.image_tokens)}
        if self.text_head is not None and self.config.text_tokens:
            out["text_tokens"] = self.text_head(h).view(len(h), *self.config.text_tokens)
        return out

    def forward(self, x: torch.Tensor, subject: str) -> dict[str, torch.Tensor]:
        return self.heads(self.embed(x, subject))

    # -- losses --------------------------------------------------------------------------------------
    def token_loss(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(SoftCLIP, MSE) between predicted and target tokens; the total is ``clip + mse_weight * mse``."""
        if pred.shape != target.shape:
            raise ShapeMismatchError(format_error("target tokens", f"shape {tuple(pred.shape)}",
                                                  f"shape {tuple(target.shape)}",
                                                  "Match the decoder's image_tokens/text_tokens to the latent space"))
        return soft_clip_loss(pred, target, self.config.clip_temperature), F.mse_loss(pred, target.to(pred.dtype))

    def cycle_loss(self, e_a: torch.Tensor, subject_b: str) -> torch.Tensor:
        """MSE between ``e_a`` and embedder_B(builder_B(e_a)) (the target ``e_a`` is detached)."""
        emb_b: MindBridgeEmbedder = self.embedders[subject_b]  # type: ignore[assignment]
        back = emb_b.embed_pooled(self.builders[subject_b](e_a))
        return F.mse_loss(back, e_a.detach())

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, torch.Tensor]:
        """All MindBridge losses on one batch (one subject) or ``{"parts": [...]}`` (cycle between parts)."""
        c = self.config
        parts = batch["parts"] if "parts" in batch else [batch]
        zero = next(self.parameters()).new_zeros(())
        terms = {"clip_image": zero, "mse_image": zero, "clip_text": zero, "mse_text": zero, "recon": zero,
                 "cycle": zero}
        embeddings = []
        for part in parts:
            subject, x = part["subject"], part["x"]
            emb: MindBridgeEmbedder = self.embedders[subject]  # type: ignore[assignment]
            pooled = emb.pool(x)
            e = emb.embed_pooled(pooled)
            embeddings.append((subject, e))
            out = self.heads(e)
            ci, mi = self.token_loss(out["image_tokens"], part["image_tokens"])
            terms["clip_image"] = terms["clip_image"] + ci
            terms["mse_image"] = terms["mse_image"] + mi
            if "text_tokens" in part and "text_tokens" in out:
                ct, mt = self.token_loss(out["text_tokens"], part["text_tokens"])
                terms["clip_text"] = terms["clip_text"] + ct
                terms["mse_text"] = terms["mse_text"] + mt
            terms["recon"] = terms["recon"] + F.mse_loss(self.builders[subject](e), pooled)
        for i, (s_a, e_a) in enumerate(embeddings):
            for j, (s_b, _) in enumerate(embeddings):
                if i != j and s_a != s_b:
                    terms["cycle"] = terms["cycle"] + self.cycle_loss(e_a, s_b)
        n = len(parts)
        terms = {k: v / n for k, v in terms.items()}
        loss = (terms["clip_image"] + c.mse_weight * terms["mse_image"]
                + c.text_weight * (terms["clip_text"] + c.mse_weight * terms["mse_text"])
                + c.recon_weight * terms["recon"] + c.cycle_weight * terms["cycle"])
        return {"loss": loss, **terms}

    # -- inference -----------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_latents(self, X: Any, subject: str, *, batch_size: int = 256) -> dict[str, np.ndarray]:
        """Predict CLIP tokens from fMRI.

        Parameters
        ----------
        X : ndarray of shape (n_trials, n_voxels)
            Betas of ``subject`` (z-scored as in training).
        subject : str
            Subject id.
        batch_size : int
            Trials per forward pass.

        Returns
        -------
        latents : dict
            ``"clip_image_tokens"``: ndarray of shape (n_trials, 257, 768) and, with a text head,
            ``"clip_text_tokens"``: ndarray of shape (n_trials, 77, 768) (real sizes), float32.
        """
        X = check_array(X, "X", ndim=2, dtype=np.float32)
        self.embedders[subject].check_input(torch.empty(0, X.shape[1], device="meta"))
        was = self.training
        self.eval()
        device = next(self.parameters()).device
        chunks: dict[str, list[np.ndarray]] = {}
        for lo in range(0, len(X), batch_size):
            out = self(torch.from_numpy(X[lo:lo + batch_size]).to(device), subject)
            for k, v in out.items():
                chunks.setdefault(k, []).append(v.float().cpu().numpy())
        self.train(was)
        names = {"image_tokens": "clip_image_tokens", "text_tokens": "clip_text_tokens"}
        return {names[k]: np.concatenate(v) for k, v in chunks.items()}
