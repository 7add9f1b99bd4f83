"""Text metrics: BLEU against NLTK's definition, ROUGE/WER hand values, METEOR honesty, embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from neurodecode._core.errors import ShapeMismatchError
from neurodecode.metrics import bleu_scores, evaluate_text, rouge_scores, word_error_rate

HYPS = ["the cat sat on the mat", "a dog runs in the park today", "he read the old book",
        "birds fly over the sea", "she likes green tea", "the cat is on a mat", "we walk home"]
REFS = ["the cat sat on a mat", "a dog is running in the park", "he reads an old book",
        "birds fly above the sea", "she likes tea", "there is a cat on the mat", "we walked home late"]


def test_bleu_matches_nltk_corpus_bleu():
    from nltk.translate.bleu_score import corpus_bleu

    res = bleu_scores(HYPS, REFS)
    refs_tok = [[r.split()] for r in REFS]
    hyps_tok = [h.split() for h in HYPS]
    for n in range(1, 5):
        want = corpus_bleu(refs_tok, hyps_tok, weights=tuple([1.0 / n] * n))
        assert res[f"bleu{n}"] == pytest.approx(want, rel=1e-9)
    # several references (paraphrases)
    multi = [[r, h] if i % 2 else [r] for i, (r, h) in enumerate(zip(REFS, HYPS))]
    want = corpus_bleu([[x.split() for x in rs] for rs in multi], hyps_tok, weights=(0.5, 0.5))
    assert bleu_scores(HYPS, multi)["bleu2"] == pytest.approx(want, rel=1e-9)


def test_bleu_hand_value():
    # hypothesis "a b c d" vs reference "a b x d e": unigram precision 3/4, bigram 1/3,
    # brevity penalty exp(1 - 5/4)
    res = bleu_scores(["a b c d"], ["a b x d e"])
    bp = np.exp(1 - 5 / 4)
    assert res["bleu1"] == pytest.approx(bp * 3 / 4)
    assert res["bleu2"] == pytest.approx(bp * np.sqrt(3 / 4 * 1 / 3))
    assert res["bleu3"] == 0.0  # no matching trigram, no smoothing


def test_rouge_and_wer_hand_values():
    r = rouge_scores(["a b c d"], ["a b x d e"])
    assert r["rouge1_p"][0] == pytest.approx(3 / 4)
    assert r["rouge1_r"][0] == pytest.approx(3 / 5)
    assert r["rouge1_f"][0] == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert r["rougeL_f"][0] == pytest.approx(2 * 0.75 * 0.6 / 1.35)  # LCS a b d
    w = word_error_rate(["a b c d", "x y"], ["a b x d e", "x y"])
    # 1 substitution + 1 deletion over 5 words; 0 over 2 -> corpus 2 / 7
    assert w["wer"] == pytest.approx(2 / 7)
    np.testing.assert_allclose(w["per_item"], [2 / 5, 0.0])
    with pytest.raises(ShapeMismatchError, match="references"):
        rouge_scores(["a"], ["a", "b"])


def test_evaluate_text_cis_controls_and_meteor_honesty():
    res = evaluate_text(HYPS, REFS, weights="random", n_boot=200,
                        metrics="bleu1,bleu4,rouge1_f,wer,meteor,sentence_sim,clip_text_sim")
    assert res["n_items"] == 7 and res["metrics_version"]
    for m in ("bleu1", "rouge1_f", "wer", "sentence_sim"):
        lo, hi = res[m]["ci"]
        assert lo <= res[m]["value"] <= hi, m
    # the true pairing beats other items' references
    assert res["bleu1"]["value"] > res["bleu1"]["shuffled"] + 0.2
    assert res["wer"]["value"] < res["wer"]["shuffled"]
    assert res["wer"]["higher_is_better"] is False
    from neurodecode.metrics._text import meteor_available

    ok, reason = meteor_available()
    if ok:  # pragma: no cover - WordNet is not installed on our machines
        assert 0 < res["meteor"]["value"] <= 1
    else:
        assert res["meteor"]["value"] is None and "wordnet" in res["meteor"]["reason"].lower()
    assert res["weights"]["sentence_sim"]["tier"] == "random"
    assert "minilm-l6-tiny" in res["weights"]["sentence_sim"]["source"]
    assert "clip-vit-l-14-text-tiny" in res["weights"]["clip_text_sim"]["source"]


def test_sentence_similarity_real_minilm_is_offline():
    from neurodecode.metrics import embedding_similarity

    sims, info = embedding_similarity(["a cat sits on the mat", "stock markets fell sharply"],
                                      [["a cat is sitting on a mat"], ["a kitten rests on a rug"]], weights="real")
    assert info["tier"] == "real"
    assert sims[0] > 0.8 and sims[1] < 0.3  # paraphrase vs unrelated sentence
