"""ATM learns zero-shot retrieval of unseen concepts on a known-answer EEG problem (through the one trainer)."""

from __future__ import annotations

import numpy as np
import torch

from neurodecode.models.atm import ATM, ATMConfig
from neurodecode.train import ArrayBatches, TrainConfig, Trainer

N_CH, N_T, DIM = 17, 24, 16


def _simulate(rng, n_concepts, reps, A, noise):
    """EEG = linear map of a concept embedding, reshaped to channels x time, plus noise."""
    concepts = rng.standard_normal((n_concepts, DIM)).astype(np.float32)
    idx = np.repeat(np.arange(n_concepts), reps)
    X = (concepts[idx] @ A.T).reshape(-1, N_CH, N_T) + noise * rng.standard_normal((len(idx), N_CH, N_T))
    return X.astype(np.float32), concepts, idx


def _topk(emb, targets, true_idx, k):
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    t = targets / np.linalg.norm(targets, axis=1, keepdims=True)
    sim = e @ t.T
    rank = (sim > sim[np.arange(len(sim)), true_idx][:, None]).sum(1)
    return float(np.mean(rank < k))


def _train_and_score(X, Y, X_test, concepts_test, true_idx, seed):
    torch.manual_seed(seed)
    model = ATM(ATMConfig.tiny(n_channels=N_CH, n_times=N_T, proj_dim=DIM, dropout=0.0, conv_dropout=0.0,
                               proj_dropout=0.0))
    Trainer(model, TrainConfig(epochs=25, batch_size=32, lr=2e-3, device="cpu", checkpoint_every=None,
                               seed=seed)).fit(ArrayBatches({"x": X, "image_embeds": Y}, batch_size=32))
    emb = model.encode(X_test)
    return _topk(emb, concepts_test, true_idx, 5), _topk(emb, concepts_test, true_idx, 1)


def test_zero_shot_20way_top5_beats_shuffled_control():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((N_CH * N_T, DIM)).astype(np.float32) / np.sqrt(DIM)
    X, concepts, idx = _simulate(rng, 80, 3, A, noise=1.0)
    X_te, concepts_te, idx_te = _simulate(rng, 20, 1, A, noise=0.5)  # unseen concepts (averaged repeats)
    top5, top1 = _train_and_score(X, concepts[idx], X_te, concepts_te, idx_te, seed=0)
    shuffled = concepts[idx][rng.permutation(len(idx))]
    ctrl5, _ = _train_and_score(X, shuffled, X_te, concepts_te, idx_te, seed=0)
    assert top5 >= 0.7 and top1 > 0.2, (top5, top1)
    assert top5 > ctrl5 + 0.3, (top5, ctrl5)
