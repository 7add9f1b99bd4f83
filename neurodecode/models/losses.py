"""Contrastive and regression losses shared by the decoders (pure functions on tensors).

All take batches of row vectors (token targets are flattened inside) and return a scalar.

Across processes: when ``torch.distributed`` is initialised with more than one process, the
contrastive losses gather every process's rows (``gather=True``, with gradients) and score the
whole global batch, so the loss and, after DDP's gradient averaging, the gradient equal those of
one process holding the global batch: the number of processes does not change the negatives.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from .._core.validation import check_option

__all__ = ["clip_loss", "soft_clip_loss", "mixco_loss", "mixco_batch", "soft_cont_loss", "cosine_anneal",
           "gather_rows", "broadcast_from_main", "MIXCO_LABELS"]

#: How :func:`mixco_loss` builds its soft labels: "sum" (label ``b_i`` on ``i`` plus ``1 - b_i`` on
#: ``perm[i]``, so a sample mixed with itself has label 1) or "reference" (MindEye2's
#: ``utils.mixco_nce``: the second assignment overwrites the first, a sample mixed with itself
#: gets ``1 - b_i`` and an unmixed one paired with itself gets 0).
MIXCO_LABELS = ("sum", "reference")


def _norm(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.flatten(1).float(), dim=-1)


def _fp32(x: torch.Tensor) -> torch.autocast:
    """Autocast off: similarities divided by temperatures of 0.005 need float32 (bfloat16 resolves
    logits near 200 to 1.0)."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def _world() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class _AllGather(torch.autograd.Function):
    """All processes' (equally sized) tensors stacked, shape (world, ...); the backward pass sums the
    gradients every process computed for this process's slice."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        world = torch.distributed.get_world_size()
        parts = [torch.empty_like(t) for _ in range(world)]
        torch.distributed.all_gather(parts, t.contiguous())
        ctx.rank = torch.distributed.get_rank()
        return torch.stack(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        torch.distributed.all_reduce(grad)
        return grad[ctx.rank]


def gather_rows(*tensors: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], int]:
    """Concatenate each tensor's rows over all processes (rank order), keeping gradients.

    Without an initialised process group of more than one process, the tensors come back as
    they are. Processes may hold different numbers of rows.

    Returns
    -------
    gathered : tuple of Tensor
        Each of shape (n_global, ...).
    offset : int
        Index of this process's first row in the gathered tensors.
    """
    rank, world = _world()
    if world == 1:
        return tuple(tensors), 0
    n_local = torch.tensor([tensors[0].shape[0]], device=tensors[0].device)
    sizes = [torch.zeros_like(n_local) for _ in range(world)]
    torch.distributed.all_gather(sizes, n_local)
    counts = [int(s.item()) for s in sizes]
    n_max = max(counts)
    out = []
    for t in tensors:
        pad = n_max - t.shape[0]
        padded = torch.cat([t, t.new_zeros((pad, *t.shape[1:]))]) if pad else t
        if t.requires_grad:
            stacked = _AllGather.apply(padded)
        else:
            parts = [torch.empty_like(padded) for _ in range(world)]
            torch.distributed.all_gather(parts, padded.contiguous())
            stacked = torch.stack(parts)
        out.append(torch.cat([stacked[r, :c] for r, c in enumerate(counts)]))
    return tuple(out), sum(counts[:rank])


def broadcast_from_main(t: torch.Tensor) -> torch.Tensor:
    """``t`` as process 0 holds it, on every process (a copy); ``t`` itself without a process group of
    more than one.

    For random choices that must agree across processes (e.g. which subjects a multi-subject loss
    pairs): every process draws from its own generator (the trainer seeds ``seed + rank``), and
    process 0's draw is used everywhere, so the step equals that of one process on the global batch.

    Parameters
    ----------
    t : Tensor of any shape
        This process's value, on the device of the process group's backend (CPU for gloo, CUDA for NCCL).

    Returns
    -------
    t0 : Tensor, shape of ``t``
        Process 0's value (no gradient).
    """
    _, world = _world()
    if world == 1:
        return t
    out = t.detach().contiguous().clone()
    torch.distributed.broadcast(out, src=0)
    return out


def clip_loss(brain: torch.Tensor, target: torch.Tensor, logit_scale: torch.Tensor | float = 1 / 0.07, *,
              gather: bool = True) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP loss): row i of ``brain`` matches row i of ``target``.

    Parameters
    ----------
    brain, target : Tensor of shape (batch, ...)
        Embeddings, flattened and L2-normalised inside.
    logit_scale : Tensor or float
        Multiplier of the cosine similarities (a learnable ``exp(log_scale)`` in ATM).
    gather : bool
        Score the global batch when several processes train (see the module docstring).

    Returns
    -------
    loss : Tensor, scalar
        Mean of the brain->target and target->brain cross-entropies.
    """
    if gather:
        (brain, target), _ = gather_rows(brain, target)
    with _fp32(brain):
        logits = logit_scale * _norm(brain) @ _norm(target).T
        labels = torch.arange(len(logits), device=logits.device)
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def soft_clip_loss(brain: torch.Tensor, target: torch.Tensor, temperature: float = 0.125, *,
                   gather: bool = True) -> torch.Tensor:
    """SoftCLIP (MindEye): cross-entropy towards the target-target similarity distribution.

    With ``b``, ``t`` the flattened, L2-normalised rows, ``S = t t^T / T`` and ``L = b t^T / T``::

        loss = ( mean_i CE(L[i], softmax(S[i])) + mean_j CE(L^T[j], softmax(S[j])) ) / 2

    so near-duplicate stimuli are not pushed apart. MindBridge uses ``T = 0.005``; MindEye2
    anneals ``T`` from 0.004 to 0.0075 (see :func:`cosine_anneal`).

    Parameters
    ----------
    brain, target : Tensor of shape (batch, ...)
        Embeddings, flattened and L2-normalised inside.
    temperature : float
        Softmax temperature ``T``.
    gather : bool
        Score the global batch when several processes train.
    """
    if gather:
        (brain, target), _ = gather_rows(brain, target)
    with _fp32(brain):
        b, t = _norm(brain), _norm(target)
        soft = (t @ t.T / temperature).softmax(-1)
        bt = b @ t.T / temperature
        loss1 = -(bt.log_softmax(-1) * soft).sum(-1).mean()
        loss2 = -(bt.T.log_softmax(-1) * soft).sum(-1).mean()
        return 0.5 * (loss1 + loss2)


def soft_cont_loss(student: torch.Tensor, teacher: torch.Tensor, teacher_aug: torch.Tensor,
                   temperature: float = 0.2, *, gather: bool = True) -> torch.Tensor:
    """MindEye2's soft contrastive loss of the low-level branch against a frozen teacher.

    Every row is a token (flatten (batch, tokens, dim) to (batch * tokens, dim) first); rows
    are L2-normalised inside. With ``s``, ``p``, ``a`` the student, teacher and
    augmented-teacher rows::

        loss = ( mean CE(s a^T / T, softmax(p a^T / T)) + mean CE(a s^T / T, softmax(a p^T / T)) ) / 2

    Parameters
    ----------
    student : Tensor of shape (n, dim)
        Predicted feature tokens (MindEye2: the 49 x 512 map of the low-level branch).
    teacher, teacher_aug : Tensor of shape (n, dim)
        The teacher's tokens of the image and of an augmented copy (VICRegL ConvNeXt-XL).
    temperature : float
        ``T`` (0.2 in MindEye2).
    gather : bool
        Score the global batch when several processes train.
    """
    if gather:
        (student, teacher, teacher_aug), _ = gather_rows(student, teacher, teacher_aug)
    with _fp32(student):
        s, p, a = _norm(student), _norm(teacher), _norm(teacher_aug)
        loss1 = -((s @ a.T / temperature).log_softmax(-1) * (p @ a.T / temperature).softmax(-1)).sum(-1).mean()
        loss2 = -((a @ s.T / temperature).log_softmax(-1) * (a @ p.T / temperature).softmax(-1)).sum(-1).mean()
        return 0.5 * (loss1 + loss2)


def mixco_batch(x: torch.Tensor, beta: float = 0.15, s_thresh: float = 0.5,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """MixCo augmentation of brain inputs: mix each selected sample with a random partner.

    Each sample is selected with probability ``s_thresh``; a selected sample ``i`` becomes
    ``b_i x_i + (1 - b_i) x_perm[i]`` with ``b_i ~ Beta(beta, beta)``.

    Returns
    -------
    x_mixed : Tensor, shape of ``x``
    perm : LongTensor of shape (batch,)
        The partners (a random permutation).
    betas : Tensor of shape (batch,)
        ``b_i`` (1 for unselected samples).
    select : BoolTensor of shape (batch,)
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
               temperature: float = 0.1, bidirectional: bool = True, *, labels: str = "sum",
               gather: bool = True) -> torch.Tensor:
    """BiMixCo: contrastive loss with soft labels ``b_i`` on i and ``1 - b_i`` on ``perm[i]``.

    With ``L = b t^T / T`` over the flattened, L2-normalised rows and the label matrix ``P``::

        loss = ( mean_i CE(L[i], P[i]) + mean_j CE(L^T[j], P^T[j]) ) / 2      (bidirectional)

    Parameters
    ----------
    brain : Tensor of shape (batch, ...)
        Embeddings of the mixed brain inputs.
    target : Tensor of shape (batch, ...)
        Embeddings of the original (unmixed) targets.
    perm, betas : Tensor of shape (batch,)
        From :func:`mixco_batch` (``perm`` indexes rows of this batch).
    temperature : float
        Logit temperature (0.006 in MindEye2).
    bidirectional : bool
        Also score target -> brain (BiMixCo).
    labels : {"sum", "reference"}
        See :data:`MIXCO_LABELS` (they differ only where ``perm[i] == i``).
    gather : bool
        Score the global batch when several processes train (``perm`` is shifted to global rows).
    """
    check_option(labels, "labels", MIXCO_LABELS)
    if gather:
        (brain, target), offset = gather_rows(brain, target)
        (perm, betas), _ = gather_rows(perm + offset, betas)  # each process shifts its own partners
    with _fp32(brain):
        b, t = _norm(brain), _norm(target)
        logits = b @ t.T / temperature
        n = len(logits)
        probs = torch.zeros_like(logits)
        idx = torch.arange(n, device=logits.device)
        probs[idx, idx] = betas.float()
        if labels == "sum":
            probs[idx, perm] += 1 - betas.float()
        else:
            probs[idx, perm] = 1 - betas.float()
        loss = -(logits.log_softmax(-1) * probs).sum(-1).mean()
        if bidirectional:
            loss_t = -(logits.T.log_softmax(-1) * probs.T).sum(-1).mean()
            loss = 0.5 * (loss + loss_t)
        return loss


def cosine_anneal(start: float, end: float, index: int, n: int) -> float:
    """Value ``index`` (0-based) of ``n`` values cosine-annealed from ``start`` to ``end``.

    ``end + (start - end) / 2 * (1 + cos(pi * index / (n - 1)))``: ``start`` at 0, ``end`` at ``n - 1``
    (MindEye2's SoftCLIP temperature over its SoftCLIP epochs); ``start`` when ``n == 1``.
    """
    if n <= 1:
        return float(start)
    index = min(max(int(index), 0), n - 1)
    return float(end + (start - end) / 2 * (1 + math.cos(math.pi * index / (n - 1))))
