"""The reference repositories' loss formulas, rewritten independently in float64 NumPy for the tests.

Each function states the formula it implements and the reference file it is read from; none calls
neurodecode. MindBridge: littlepure2333/MindBridge @2a3943f; MindEye2: MedARC-AI/MindEyeV2 @c184718.
"""

from __future__ import annotations

import math

import numpy as np


def unit_rows(x) -> np.ndarray:
    """Flatten every item and divide by its L2 norm (``nn.functional.normalize(x.flatten(1), dim=-1)``)."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def log_softmax(a: np.ndarray) -> np.ndarray:
    a = a - a.max(axis=1, keepdims=True)
    return a - np.log(np.exp(a).sum(axis=1, keepdims=True))


def softmax(a: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(a))


def soft_clip(preds, targs, temp: float) -> float:
    """``utils.soft_clip_loss`` (both repositories), on already normalised rows.

    clip_clip = targs targs^T / temp; brain_clip = preds targs^T / temp;
    loss1 = -mean_i sum_j log_softmax(brain_clip)_ij softmax(clip_clip)_ij;
    loss2 = the same with brain_clip transposed (and the same soft labels); loss = (loss1 + loss2) / 2.
    """
    p, t = np.asarray(preds, np.float64), np.asarray(targs, np.float64)
    soft = softmax(t @ t.T / temp)
    bc = p @ t.T / temp
    loss1 = -(log_softmax(bc) * soft).sum(1).mean()
    loss2 = -(log_softmax(bc.T) * soft).sum(1).mean()
    return float((loss1 + loss2) / 2)


def mixco_nce(preds, targs, temp: float, perm, betas) -> float:
    """MindEye2 ``utils.mixco_nce`` (bidirectional), on normalised rows.

    probs = diag(betas); probs[i, perm[i]] = 1 - betas[i] (an assignment: it overwrites the diagonal
    where perm[i] == i); loss = (CE(L, probs) + CE(L^T, probs^T)) / 2 with L = preds targs^T / temp.
    """
    p, t = np.asarray(preds, np.float64), np.asarray(targs, np.float64)
    betas = np.asarray(betas, np.float64)
    n = len(p)
    probs = np.diag(betas)
    for i in range(n):
        probs[i, int(perm[i])] = 1 - betas[i]
    logits = p @ t.T / temp
    loss = -(log_softmax(logits) * probs).sum(1).mean()
    loss2 = -(log_softmax(logits.T) * probs.T).sum(1).mean()
    return float((loss + loss2) / 2)


def mixco_sum(preds, targs, temp: float, perm, betas) -> float:
    """BiMixCo with the labels summed: ``b_i`` on i plus ``1 - b_i`` on perm[i] (label 1 on a self-pair)."""
    p, t = np.asarray(preds, np.float64), np.asarray(targs, np.float64)
    betas = np.asarray(betas, np.float64)
    n = len(p)
    probs = np.zeros((n, n))
    for i in range(n):
        probs[i, i] += betas[i]
        probs[i, int(perm[i])] += 1 - betas[i]
    logits = p @ t.T / temp
    loss = -(log_softmax(logits) * probs).sum(1).mean()
    loss2 = -(log_softmax(logits.T) * probs.T).sum(1).mean()
    return float((loss + loss2) / 2)


def soft_cont(student, teacher, teacher_aug, temp: float) -> float:
    """MindEye2 ``utils.soft_cont_loss`` on normalised rows.

    loss1 = CE(student teacher_aug^T / T, softmax(teacher teacher_aug^T / T));
    loss2 = CE(teacher_aug student^T / T, softmax(teacher_aug teacher^T / T)); mean of the two.
    """
    s, p, a = (np.asarray(v, np.float64) for v in (student, teacher, teacher_aug))
    loss1 = -(log_softmax(s @ a.T / temp) * softmax(p @ a.T / temp)).sum(1).mean()
    loss2 = -(log_softmax(a @ s.T / temp) * softmax(a @ p.T / temp)).sum(1).mean()
    return float((loss1 + loss2) / 2)


def cosine_anneal(start: float, end: float, steps: int) -> np.ndarray:
    """MindEye2 ``utils.cosine_anneal``: end + (start - end) / 2 * (1 + cos(pi * arange(steps) / (steps - 1)))."""
    k = np.arange(steps)
    return end + (start - end) / 2 * (1 + np.cos(np.pi * k / (steps - 1)))


def t5_bucket(distance: int, num_buckets: int = 32, max_distance: int = 128) -> int:
    """dalle2-pytorch ``RelPosBias._relative_position_bucket`` for ``n = max(query - key, 0)``."""
    n = max(int(distance), 0)
    exact = num_buckets // 2
    if n < exact:
        return n
    return min(exact + int(math.log(n / exact) / math.log(max_distance / exact) * (num_buckets - exact)),
               num_buckets - 1)


def ddim_times(timesteps: int, steps: int) -> list[int]:
    """dalle2-pytorch ``p_sample_loop_ddim``: reversed(int(linspace(-1, T, steps + 1)[:-1]))."""
    return [int(v) for v in np.linspace(-1.0, timesteps, steps + 1)[:-1].astype(np.float32).astype(np.int64)][::-1]


def cosine_alphas_cumprod(timesteps: int, s: float = 0.008) -> np.ndarray:
    """dalle2-pytorch ``cosine_beta_schedule`` then ``cumprod(1 - betas)``, betas clipped to [0, 0.999]."""
    x = np.linspace(0, timesteps, timesteps + 1)
    abar = np.cos(((x / timesteps) + s) / (1 + s) * np.pi * 0.5) ** 2
    abar = abar / abar[0]
    betas = np.clip(1 - abar[1:] / abar[:-1], 0, 0.999)
    return np.cumprod(1 - betas)


def onecycle_lr(step: int, total: int, max_lr: float, pct_start: float, div: float = 25.0,
                final_div: float = 1e4) -> float:
    """PyTorch's OneCycleLR (cosine annealing, three_phase=False) learning rate after ``step`` steps."""
    initial = max_lr / div
    final = initial / final_div
    up_end = float(pct_start * total) - 1
    down_end = float(total - 1)

    def cos(a: float, b: float, frac: float) -> float:
        return b + (a - b) / 2 * (1 + math.cos(math.pi * frac))

    if step <= up_end:
        return cos(initial, max_lr, step / up_end)
    return cos(max_lr, final, (step - up_end) / (down_end - up_end))
