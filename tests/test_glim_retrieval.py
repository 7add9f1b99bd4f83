"""GLIM's EEG-to-text retrieval beats chance on simulated sentence EEG (unseen sentences, through the trainer)."""

from __future__ import annotations

import numpy as np
import torch

from neurodecode.models.glim import GLIM, GLIMConfig
from neurodecode.train import ArrayBatches, TrainConfig, Trainer

WORDS = ("the a cat dog bird man woman king queen city river house red blue green old young big small "
         "runs sings reads walks sleeps eats sees likes hates finds quickly slowly today never").split()


def _sentences(rng, n):
    out: set[str] = set()
    while len(out) < n:
        out.add(" ".join(rng.choice(WORDS, size=rng.integers(3, 6))))
    return sorted(out)


def _simulate(rng, sentences, feats, A, max_times, n_ch):
    """EEG = channel pattern (linear in the sentence's word content) x a slow wave, over a random length."""
    lengths = rng.integers(max_times // 2, max_times + 1, size=len(sentences))
    t = np.arange(max_times)
    X = np.zeros((len(sentences), n_ch, max_times), np.float32)
    for i, (f, n) in enumerate(zip(feats, lengths)):
        X[i, :, :n] = (A @ f)[:, None] * np.sin(2 * np.pi * t[:n] / 16)[None] + 0.3 * rng.standard_normal((n_ch, n))
    return X, lengths


def test_retrieval_block_of_24_above_chance():
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    n_ch, max_times = 12, 48
    # retrieval alone: the reference's temperature-free cosine logits learn slowly beside the LM term at toy size
    model = GLIM(GLIMConfig.tiny(n_channels=n_ch, max_times=max_times, contrastive_weight=1.0))
    train_s, test_s = _sentences(rng, 160)[:136], None
    test_s = [s for s in _sentences(np.random.default_rng(1), 60) if s not in set(train_s)][:24]
    vocab = {w: i for i, w in enumerate(WORDS)}

    def bag(sents):  # the brain "reads" the words: a bag-of-words code drives the channels
        F = np.zeros((len(sents), len(WORDS)), np.float32)
        for i, s in enumerate(sents):
            for w in s.split():
                F[i, vocab[w]] += 1
        return F

    A = rng.standard_normal((n_ch, len(WORDS))).astype(np.float32) / 2
    X, L = _simulate(rng, train_s, bag(train_s), A, max_times, n_ch)
    X_te, L_te = _simulate(rng, test_s, bag(test_s), A, max_times, n_ch)
    tok = model.tokenize(train_s)
    Trainer(model, TrainConfig(epochs=30, batch_size=24, lr=3e-3, device="cpu", checkpoint_every=None)).fit(
        ArrayBatches({"x": X, "lengths": L, **tok}, batch_size=24))
    ranks = model.retrieve(X_te, test_s, L_te)
    pos = np.argmax(ranks == np.arange(24)[:, None], axis=1)
    top1, top5 = np.mean(pos < 1), np.mean(pos < 5)
    assert top5 > 2 * 5 / 24 and top1 > 1 / 24, (top1, top5)  # chance: 5/24 and 1/24


def test_retrieval_known_answer_on_trained_sentences():
    """Six sentences with distinct EEG: after a short fit each EEG retrieves its own sentence first."""
    torch.manual_seed(0)
    sents = ["the cat sat.", "a dog ran!", "birds fly high", "red sun", "old king sleeps", "blue river"]
    # retrieval alone: the reference's temperature-free cosine logits learn slowly beside the LM term at toy size
    model = GLIM(GLIMConfig.tiny(n_channels=8, max_times=40, contrastive_weight=1.0))
    X = np.random.default_rng(4).standard_normal((6, 8, 40)).astype(np.float32)
    lengths = np.array([40, 33, 25, 38, 21, 30])
    Trainer(model, TrainConfig(epochs=40, batch_size=6, lr=3e-3, device="cpu", checkpoint_every=None)).fit(
        ArrayBatches({"x": X, "lengths": lengths, **model.tokenize(sents)}, batch_size=6))
    perm = np.array([3, 0, 5, 1, 4, 2])  # candidates in another order
    ranks = model.retrieve(X, [sents[i] for i in perm], lengths)
    assert perm[ranks[:, 0]].tolist() == list(range(6))
    # zero-shot labels are used as given: give them the template the sentences were trained with
    labels = [model.config.text_template.format(s) for s in (sents[1], sents[0])]
    assert model.classify(X[:2], labels, lengths[:2]).tolist() == [1, 0]
