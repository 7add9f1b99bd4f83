"""Contrastive and regression losses shared by the decoders (pure functions on tensors).

All take batches of row vectors (flatten token targets first) and return a scalar.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["clip_loss", "soft_clip_loss", "mixco_loss", "mixco_batch"]


def _norm(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.flatten(1).float(), dim=-1)


def clip_loss(brain: torch.Tensor, target: torch.Tensor, logit_scale: torch.Tensor | float = 1 / 0.07) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP loss): row i of ``brain`` matches row i of ``target``.

    Parameters
    ----------
    brain, target : Tensor of shape (batch, ...)
        Embeddings, flattened and L2-normalised inside.
    logit_scale : Tensor or float
        Multiplier of the cosine similarities (a learnable ``exp(log_scale)`` in ATM).

    Returns
    -------
    loss : Tensor, scalar
        Mean of the brain->target and target->brain cross-entropies.
    """
    logits = logit_scale * _norm(brain) @ _norm(target).T
    labels = torch.arange(len(logits), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def soft_clip_loss(brain: torch.Tensor, target: torch.Tensor, temperature: float = 0.125) -> torch.Tensor:
    """SoftCLIP (MindEye): cross-entropy towards the target-target similarity distribution.

    The soft labels are ``softmax(t @ t.T / T)`` over the normalised targets, so
    near-duplicate stimuli are not pushed apart. Symmetric over both directions.

    Parameters
    ----------
    brain, target : Tensor of shape (batch, ...)
        Embeddings, flattened and L2-normalised inside.
    temperature : float
        Softmax temperature ``T``.
    """
    b, t = _norm(brain), _norm(target)
    soft = (t @ t.T / temperature).softmax(-1)
    bt = b @ t.T / temperature
    loss1 = -(bt.log_softmax(-1) * soft).sum(-1).mean()
    loss2 = -(bt.T.log_softmax(-1) * soft).sum(-1).mean()
    return 0.5 * (loss1 + loss2)


def mixco_batch(x: torch.Tensor, beta: float = 0.15, s_thresh: float = 0.5,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """MixCo augmentation of brain inputs: mix each sample with a random partner.

    Returns ``(x_mixed, perm, betas, select)``: sample i is ``b_i x_i + (1 - b_i) x_perm[i]``
    where ``select[i]``; untouched otherwise (``betas`` is 1 there).
    """
    n = x.shape[0]
    select = torch.rand(n, generator=generator, device="cpu").to(x.device) <= s_thresh
    perm = torch.randperm(n, generator=generator, device="cpu").to(x.device)
    betas = torch.distributions.Beta(beta, beta).sample((n,)).to(x.device, x.dtype)
    betas = torch.where(select, betas, torch.ones_like(betas))
    shape = (n,) + (1,) * (x.dim() - 1)
    mixed = betas.reshape(shape) * x + (1 - betas.reshape(shape)) * x[perm]
    return mixed, perm, betas, select


def mixco_loss(brain: torch.Tensor, target: torch.Tensor, perm: torch.Tensor, betas: torch.Tensor,
               temperature: float = 0.1, bidirectional: bool = True) -> torch.Tensor:
    """BiMixCo: contrastive loss with soft labels ``b_i`` on i and ``1 - b_i`` on ``perm[i]``.

    Parameters
    ----------
    brain : Tensor of shape (batch, ...)
        Embeddings of the mixed brain inputs.
    target : Tensor of shape (batch, ...)
        Embeddings of the original (unmixed) targets.
    perm, betas : Tensor of shape (batch,)
        From :func:`mixco_batch`.
    temperature : float
        Logit temperature.
    bidirectional : bool
        Also score target -> brain (BiMixCo).
    """
    b, t = _norm(brain), _norm(target)
    logits = b @ t.T / temperature
    n = len(logits)
    probs = torch.zeros_like(logits)
    idx = torch.arange(n, device=logits.device)
    probs[idx, idx] = betas.float()
    probs[idx, perm] += 1 - betas.float()
    loss = -(logits.log_softmax(-1) * probs).sum(-1).mean()
    if bidirectional:
        loss_t = -(logits.T.log_softmax(-1) * probs.T).sum(-1).mean()
        loss = 0.5 * (loss + loss_t)
    return loss
