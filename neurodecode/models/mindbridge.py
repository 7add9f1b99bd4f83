"""MindBridge (Wang et al., CVPR 2024): one cross-subject fMRI decoder with per-subject embedders and builders.

Pipeline (real size; the reference is littlepure2333/MindBridge @2a3943f, ``src/models.py``)::

    voxels (n_s) --AdaptiveMaxPool1d--> 8192 --ReLU bottleneck adapter (8192->128->8192)--> Linear 2048
      --LayerNorm/GELU/Dropout 0.5-->  shared embedding e (2048)         [per-subject embedder]
    e --4 residual MLP blocks (2048)--> h                                 [shared translator]
    h --Linear--> 257 x 768 CLIP image tokens ; h --Linear--> 77 x 768 CLIP text tokens   [shared heads]
    e --Linear 2048->8192, LayerNorm, GELU, adapter--> pooled voxels       [per-subject builder]

Losses (the reference's ``src/trainer.py``, ``train_step``), over the concatenated batch of every
subject of the step: SoftCLIP (temperature 0.005) + 1e4 x MSE, both between the flattened,
L2-normalised predicted and target token vectors (257 x 768 -> 197,376 values per item), for the
image and the text tokens; the brain reconstruction MSE (builder(embedder(x)) vs the pooled
voxels); the cycle loss for one pair of subjects per step (A's embedding -> builder_B ->
embedder_B, MSE back to A's embedding, gradients into both sides). Reset-tuning adapts to a new
subject: only its embedder and builder train, every step mixes in a source-subject batch, and
the cycle runs from the source subject to the new one.

Batches (from :class:`neurodecode.train.MultiSubjectBatches`) hold ``"subject"``, ``"x"``
(n, n_voxels), ``"image_tokens"`` (n, 257, 768) and optionally ``"text_tokens"``
(n, 77, 768); several subjects per step come as ``{"parts": [batch_a, batch_b, ...]}`` (the
reference puts all four training subjects in every step). Targets are expected VD-normalised
(see :func:`vd_normalize`); since the losses only see directions, :meth:`MindBridge.predict_latents`
divides each predicted token set by the norm of its token 0, as the reference does before generation.
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
from ._targets import DecoderTarget
from .adapters import AdapterBank, MindBridgeBuilder, MindBridgeEmbedder
from .losses import broadcast_from_main, soft_clip_loss

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
        SoftCLIP temperature (0.005, the reference's ``utils.soft_clip_loss`` default).
    gather_negatives : bool
        With several training processes, SoftCLIP scores the global batch (all processes' rows)
        instead of each process's own (the reference: 200 rows per GPU). ``False`` gives the
        reference's per-process loss.
    renormalize_outputs : bool
        :meth:`MindBridge.predict_latents` divides each item's predicted tokens by the norm of its
        token 0 (the reference's ``utils.reconstruction``), giving VD-normalised tokens.
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
    clip_temperature: float = 0.005
    gather_negatives: bool = True
    renormalize_outputs: bool = True

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
    #: batch key -> what it trains (read by the recipe runner and the contract tests)
    targets = {"image_tokens": DecoderTarget("image_tokens", "clip_image_tokens", True),
               "text_tokens": DecoderTarget("text_tokens", "clip_text_tokens", False)}
    #: batch key -> (the target it augments, a transform of :mod:`neurodecode.latents._augment`): with
    #: ``[latents] augment_views = K`` the recipe runner embeds K augmented views of every training image
    #: (MindBridge's ``img_augment``, on by default in ``src/options.py``) and each step draws one per sample
    augmented_targets = {"image_tokens": ("image_tokens", "mindbridge")}

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

    def optimizer_param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """Trainer hook: weight decay on every trainable parameter except biases (the reference's
        ``prepare_optimizer``: its LayerNorm gains, named by position, are decayed too)."""
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if p.requires_grad:
                (no_decay if "bias" in name else decay).append(p)
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return [g for g in groups if g["params"]]

    # -- losses --------------------------------------------------------------------------------------
    def token_loss(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(SoftCLIP, MSE) between predicted and target tokens; the total is ``clip + mse_weight * mse``.

        Both compare the flattened, L2-normalised vectors (the reference's ``train_step``); the MSE
        is the mean over all their values.
        """
        if pred.shape != target.shape:
            raise ShapeMismatchError(format_error("target tokens", f"shape {tuple(pred.shape)}",
                                                  f"shape {tuple(target.shape)}",
                                                  "Match the decoder's image_tokens/text_tokens to the latent space"))
        p = F.normalize(pred.flatten(1).float(), dim=-1)
        t = F.normalize(target.flatten(1).float(), dim=-1)
        clip = soft_clip_loss(p, t, self.config.clip_temperature, gather=self.config.gather_negatives)
        return clip, F.mse_loss(p, t)

    def cycle_loss(self, e_a: torch.Tensor, subject_b: str) -> torch.Tensor:
        """MSE between ``e_a`` and embedder_B(builder_B(e_a)) (gradients flow into both, as in the reference)."""
        emb_b: MindBridgeEmbedder = self.embedders[subject_b]  # type: ignore[assignment]
        back = emb_b.embed_pooled(self.builders[subject_b](e_a))
        return F.mse_loss(back, e_a)

    def _cycle_pair(self, subjects: list[str]) -> tuple[int, int] | None:
        """Indices (a, b) of the parts joined by this step's cycle loss, or ``None`` with one subject.

        Reset-tuning: from the first source part to the new subject's part (the reference's
        ``adapting`` pair); otherwise two distinct subjects drawn at random (torch's global RNG; under
        several processes process 0's draw, broadcast, so every process joins the same pair).
        """
        if len(set(subjects)) < 2:
            return None
        tuning = self.tuning_subject
        if tuning is not None and tuning in subjects:
            b = subjects.index(tuning)
            return next(i for i, s in enumerate(subjects) if s != tuning), b
        # one draw for every process (process 0's): the trainer seeds each rank's generator differently
        device = next(self.parameters()).device
        order = broadcast_from_main(torch.randperm(len(subjects)).to(device)).tolist()
        a = order[0]
        return a, next(i for i in order[1:] if subjects[i] != subjects[a])

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, torch.Tensor]:
        """All MindBridge losses on one batch (one subject) or ``{"parts": [...]}`` (several subjects).

        The token and reconstruction losses see the concatenation of all parts (one SoftCLIP over
        every subject's rows); the cycle loss joins one pair of parts (see :meth:`_cycle_pair`).
        Returns ``"loss"`` and the unweighted terms ``clip_image``, ``mse_image``, ``clip_text``,
        ``mse_text``, ``recon``, ``cycle``.
        """
        c = self.config
        parts = batch["parts"] if "parts" in batch else [batch]
        zero = next(self.parameters()).new_zeros(())
        subjects, embeddings, pooled, recon = [], [], [], []
        for part in parts:
            subject = part["subject"]
            emb: MindBridgeEmbedder = self.embedders[subject]  # type: ignore[assignment]
            p = emb.pool(part["x"])
            e = emb.embed_pooled(p)
            subjects.append(subject)
            embeddings.append(e)
            pooled.append(p)
            recon.append(self.builders[subject](e))
        out = self.heads(torch.cat(embeddings))
        terms = dict.fromkeys(("clip_image", "mse_image", "clip_text", "mse_text", "recon", "cycle"), zero)
        terms["clip_image"], terms["mse_image"] = self.token_loss(
            out["image_tokens"], torch.cat([part["image_tokens"] for part in parts]))
        if "text_tokens" in out:
            rows, texts, lo = [], [], 0
            for part, e in zip(parts, embeddings):
                if "text_tokens" in part:
                    rows.append(torch.arange(lo, lo + len(e), device=e.device))
                    texts.append(part["text_tokens"])
                lo += len(e)
            if texts:
                idx = torch.cat(rows)
                terms["clip_text"], terms["mse_text"] = self.token_loss(out["text_tokens"][idx], torch.cat(texts))
        terms["recon"] = F.mse_loss(torch.cat(recon), torch.cat(pooled).to(recon[0].dtype))
        pair = self._cycle_pair(subjects)
        if pair is not None:
            a, b = pair
            terms["cycle"] = self.cycle_loss(embeddings[a], subjects[b])
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
            ``"clip_text_tokens"``: ndarray of shape (n_trials, 77, 768) (real sizes), float32;
            each item divided by the norm of its token 0 when ``config.renormalize_outputs``.
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
                v = v.float()
                if self.config.renormalize_outputs:
                    v = v / (v[:, 0].norm(dim=-1)[:, None, None] + 1e-6)
                chunks.setdefault(k, []).append(v.cpu().numpy())
        self.train(was)
        names = {"image_tokens": "clip_image_tokens", "text_tokens": "clip_text_tokens"}
        return {names[k]: np.concatenate(v) for k, v in chunks.items()}
