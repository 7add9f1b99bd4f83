"""Ranking scores: ties miss everywhere, MindEye2's retrieval columns, identification, GLIM's blocks and zero-shot."""

from __future__ import annotations

import numpy as np
import pytest

from neurodecode._core.errors import ValidationError
from neurodecode.metrics import (
    block_retrieval,
    identification_top1,
    identification_with_control,
    kway_topk,
    retrieval_blocks,
    retrieval_top1,
    topk_identification,
    true_rank,
    zero_shot_classification,
    zero_shot_prompts,
    zero_shot_targets,
)


def _mindeye2_columns(brain, image):
    """MindEye2's final_evaluations, written here from its definitions (utils.py:82-88, topk with k=1)."""
    def batchwise_cosine_similarity(z, b):  # ((Z @ B^T) / norms).T: rows index B
        z = z.reshape(len(z), -1)
        b = b.reshape(len(b), -1)
        return ((z @ b.T) / (np.linalg.norm(z, axis=1)[:, None] * np.linalg.norm(b, axis=1)[None, :])).T

    labels = np.arange(len(brain))
    fwd_sim = batchwise_cosine_similarity(brain, image)  # brain, clip
    bwd_sim = batchwise_cosine_similarity(image, brain)  # clip, brain
    fwd = np.mean(np.argsort(fwd_sim, axis=1)[:, -1] == labels)
    bwd = np.mean(np.argsort(bwd_sim, axis=1)[:, -1] == labels)
    return fwd, bwd


def test_retrieval_columns_recompute_mindeye2_transpose():
    rng = np.random.default_rng(3)
    image = rng.normal(size=(9, 7, 8))
    # a "hub" brain latent close to every image makes the two directions differ
    brain = image + rng.normal(size=image.shape) * 1.2
    brain[4] = image.mean(axis=0) * 3 + image[4] * 0.2
    fwd, bwd = _mindeye2_columns(brain, image)
    assert fwd != bwd  # the case separates the two columns
    res = retrieval_top1(brain, image, n_way=300, n_repeats=2)  # n_way capped at 9: every item, any order
    assert res["n_way"] == 9
    assert res["image_retrieval"] == pytest.approx(fwd)  # MindEye2's published "Image retrieval" = FwdRetrieval
    assert res["brain_retrieval"] == pytest.approx(bwd)
    assert "FwdRetrieval" in res["columns"]["image_retrieval"]


def test_true_rank_ties_are_misses():
    sim = np.array([[0.5, 0.5, 0.1], [0.2, 0.9, 0.9], [0.0, 0.0, 0.0], [np.nan, 1.0, 0.0], [0.3, np.nan, 0.1]])
    np.testing.assert_array_equal(true_rank(sim, np.array([0, 2, 1, 0, 0])), [1, 1, 2, 2, 1])
    with pytest.raises(ValidationError, match="labels"):
        true_rank(sim, np.array([0, 1, 2, 3, 0]))


def test_collapsed_encoder_scores_chance_or_below_everywhere():
    rng = np.random.default_rng(0)
    concepts = rng.normal(size=(20, 9))
    zeros = np.zeros((20, 9))
    const = np.ones((20, 9))
    # all-zero embeddings tie with every candidate: all misses at every k (ATM's rule), never 100 %
    z = kway_topk(zeros, concepts, ks=(2, 4, 10, 20), topk=(1, 5))
    assert all(z[key] == 0.0 for key in z["chance"])
    # a constant embedding ranks the concepts the same way for every trial: exactly chance when all
    # concepts are candidates (one trial per concept)
    c = kway_topk(const, concepts, ks=(20,), topk=(1, 5))
    assert c["top1@20"] == pytest.approx(1 / 20) and c["top5@20"] == pytest.approx(5 / 20)
    for emb in (zeros, const):
        top = topk_identification(emb, concepts, None, (1, 5))
        assert top[1] <= 1 / 20 and top[5] <= 5 / 20
    assert identification_top1(zeros, concepts) == 0.0
    ret = retrieval_top1(zeros, concepts, n_way=20, n_repeats=2)
    assert ret["image_retrieval"] == 0.0 and ret["brain_retrieval"] == 0.0


def test_kway_matches_an_independent_atm_style_count():
    rng = np.random.default_rng(1)
    concepts = rng.normal(size=(12, 8))
    labels = rng.integers(0, 12, size=30)
    emb = concepts[labels] + rng.normal(size=(30, 8)) * 1.5
    res = kway_topk(emb, concepts, ks=(12,), topk=(1, 3), labels=labels)
    # k = n_concepts: all concepts are candidates, the draw does not matter
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    c = concepts / np.linalg.norm(concepts, axis=1, keepdims=True)
    s = e @ c.T
    own = s[np.arange(30), labels]
    rank = (s > own[:, None]).sum(1)
    assert res["top1@12"] == pytest.approx(np.mean(rank < 1))
    assert res["top3@12"] == pytest.approx(np.mean(rank < 3))


def test_identification_and_its_shuffled_control():
    rng = np.random.default_rng(2)
    t = rng.normal(size=(7, 8, 9))
    pred = t + rng.normal(size=t.shape) * 0.1
    top1, control = identification_with_control(pred, t)
    assert top1 == 1.0
    # the control pairs each item with another item's target: a seeded permutation shifted by one
    order = np.random.default_rng(0).permutation(7)
    wrong = np.empty_like(order)
    wrong[order] = np.roll(order, 1)
    assert np.all(wrong != np.arange(7))
    assert control == pytest.approx(identification_top1(pred, t[wrong])) and control <= 2 / 7
    # Pearson, not cosine: an offset per item does not change it
    assert identification_top1(pred + 5.0, t) == 1.0


def test_glim_blocks_fixed_order_distinct_sentences_leftovers_dropped():
    # items 0..9 read sentences a a b c d b e f a g (block of 3)
    sids = list("aabcdbefag")
    blocks, dropped = retrieval_blocks(sids, 3)
    # pass 1: [0 a,2 b,3 c] [4 d,5 b,6 e] [7 f,8 a,9 g]; item 1 (a) waits; then 1 distinct left -> stop
    assert blocks == [[0, 2, 3], [4, 5, 6], [7, 8, 9]] and dropped == [1]
    for blk in blocks:
        assert len({sids[i] for i in blk}) == 3
    blocks2, dropped2 = retrieval_blocks(list("aaaabbbccd"), 2)
    assert all(len({"aaaabbbccd"[i] for i in b}) == 2 for b in blocks2)
    assert sorted([i for b in blocks2 for i in b] + dropped2) == list(range(10))


def test_block_retrieval_ranks_within_blocks():
    rng = np.random.default_rng(4)
    text = np.eye(50, 64)[rng.permutation(50)]  # orthogonal sentence embeddings
    eeg = text + rng.normal(size=text.shape) * 0.01
    eeg[3] = text[3] + 2 * text[4]  # item 3 ranks item 4's sentence first, its own second (same block)
    res = block_retrieval(eeg, text, block=24, topk=(1, 5))
    assert res["n_blocks"] == 2 and res["dropped"] == [48, 49]
    assert np.isnan(res["per_item"]["top1"][48])
    assert res["per_item"]["top1"][3] == 0 and res["per_item"]["top5"][3] == 1
    assert res["top1"] == pytest.approx((23 / 24 + 1) / 2) and res["chance"]["top1"] == pytest.approx(1 / 24)
    with pytest.raises(ValidationError, match="distinct"):
        block_retrieval(eeg[:10], text[:10], block=24)


def test_zero_shot_classification_glim_prompts_and_ignored_items():
    assert zero_shot_prompts("sentiment")[2] == "Sentiment classification: It is positive."
    assert zero_shot_prompts("relation")[4] == "Relation classification: It is about job title."
    assert zero_shot_prompts("corpus")[0] == "The topic is about: movie, good or bad"
    y = zero_shot_targets("sentiment", ["negative", "nan", "Positive", None])
    np.testing.assert_array_equal(y, [0, -1, 2, -1])
    np.testing.assert_array_equal(zero_shot_targets("corpus", ["task1", "task3", "NR", "x"]), [0, 1, 1, -1])
    cands = np.eye(3, 5)
    eeg = np.array([[1.0, 0.1, 0, 0, 0], [0, 0, 1.0, 0, 0], [0.1, 0.2, 0.5, 1.0, 0], [0.0, 0, 0, 0, 0]])
    res = zero_shot_classification(eeg, cands, np.array([0, 2, 1, -1]), topk=(1, 2))
    # item 3 is unlabelled (ignored); item 2 ranks class 1 behind class 2 (hit at top-2 only)
    assert res["n_scored"] == 3 and res["top1"] == pytest.approx(2 / 3) and res["top2"] == 1.0
    assert np.isnan(res["per_item"]["top1"][3])


def test_other_sentence_pairing_never_pairs_a_sentence_with_itself():
    from neurodecode.metrics import other_sentence_pairing

    # 3 subjects read 9 sentences (asymmetric: one sentence read 5 times): repeats must never be paired
    ids = [f"s{k}" for k in range(9)] * 3 + ["s0", "s0"]
    pairing = other_sentence_pairing(ids, random_state=4)
    assert sorted(pairing.tolist()) == list(range(len(ids)))  # a permutation
    assert all(ids[j] != ids[i] for i, j in enumerate(pairing))
    np.testing.assert_array_equal(pairing, other_sentence_pairing(ids, random_state=4))  # fixed by the seed
    # a perfect model scores at chance under the pairing: the EEG embedding is its own sentence's embedding
    rng = np.random.default_rng(0)
    emb = {s: rng.standard_normal(8) for s in set(ids)}
    e = np.stack([emb[s] for s in ids])
    assert block_retrieval(e, e, ids, block=9, topk=(1,))["top1"] == 1.0
    assert block_retrieval(e[pairing], e, ids, block=9, topk=(1,))["top1"] == 0.0
    with pytest.raises(ValidationError, match="sentence_ids"):
        other_sentence_pairing(["a", "a", "a", "b"])  # one sentence read by more than half the items
