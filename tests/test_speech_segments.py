"""Segment retrieval (Défossez et al. 2023): segment / word / sentence top-k, by subject, control, chance."""

import numpy as np
import pytest

from neurodecode._core.errors import ValidationError
from neurodecode.metrics._segments import segment_retrieval


def test_known_answer_ranks_and_levels():
    # 3 candidates in 2 dims x 1 time: words a, b, a; sentences s1, s1, s2
    cands = np.array([[[1.0], [0.0]], [[0.0], [1.0]], [[0.8], [0.6]]])
    # query 0 -> candidate 0 but most similar to candidate 2 (cos 0.8 vs ...)
    pred = np.array([[[0.7], [0.7]],   # cos: 0.707, 0.707, 0.99 -> true 0 ranks 2 (tie with 1 = miss)
                     [[0.0], [1.0]],   # true 1 ranks 0
                     [[0.8], [0.6]]])  # true 2 ranks 0
    r = segment_retrieval(pred, cands, [0, 1, 2], words=["a", "b", "a"], sentences=["s1", "s1", "s2"],
                          topk=(1, 2), n_boot=50)
    seg = r["segment"]
    assert seg["top1"] == pytest.approx(2 / 3) and seg["top2"] == pytest.approx(2 / 3)  # the tie is a miss
    assert seg["chance_top1"] == pytest.approx(1 / 3) and seg["n_candidates"] == 3 and seg["mean_rank"] == pytest.approx(5 / 3)
    # words: group a = mean(cand 0, 2), b = cand 1; query 0 true word a: mean(0.707, 0.99) > 0.707 -> hit
    assert r["word"]["top1"] == pytest.approx(1.0) and r["word"]["n_candidates"] == 2
    # sentences: s1 = mean(c0, c1), s2 = c2; query 0 true s1 (0.707) < s2 (0.99): miss; query 1: s1 (0.5) vs
    # s2 (0.6): miss; query 2: s2: hit
    assert r["sentence"]["top1"] == pytest.approx(1 / 3)
    lo, hi = seg["top1_ci"]
    assert 0 <= lo <= seg["top1"] <= hi <= 1


def test_perfect_predictions_beat_shuffled_control_by_subject():
    rng = np.random.default_rng(0)
    cands = rng.standard_normal((9, 7, 8))
    labels = np.r_[np.arange(9), np.arange(9)]
    pred = cands[labels] + 0.01 * rng.standard_normal((18, 7, 8))
    r = segment_retrieval(pred, cands, labels, subjects=["s1"] * 9 + ["s2"] * 9, n_boot=100)
    assert r["segment"]["top1"] == 1.0 and r["segment"]["shuffled_top1"] < 0.3
    assert set(r["by_subject"]) == {"s1", "s2"} and r["by_subject"]["s2"]["segment"]["n_queries"] == 9
    assert r["segment"]["chance_top10"] == 1.0  # 10 >= 9 candidates


def test_bad_inputs():
    with pytest.raises(ValidationError, match="labels"):
        segment_retrieval(np.zeros((2, 3)), np.ones((2, 3)), [0, 2])
    with pytest.raises(ValidationError, match="shaped like"):
        segment_retrieval(np.zeros((2, 3)), np.ones((2, 4)), [0, 1])
