"""GLIM's text protocol against torchmetrics (what GLIM computed with), references files, tokenizer, extras."""

from __future__ import annotations

import numpy as np
import pytest

from neurodecode._core.errors import ValidationError
from neurodecode.metrics import (
    evaluate_text,
    merge_paraphrases,
    read_paraphrases,
    read_references,
    word_tokenize,
    write_references,
)

PREDS = ["the cat sat on a mat", "a dog runs in the park", "he reads a book", "birds fly over the blue sea",
         "she likes green tea", "we walk home"]
# [sentence read, paraphrases...]; item 2: paraphrases of 5 and 3 words around a 4-word prediction
# (closest-length tie: torchmetrics takes the first, NLTK the shorter)
REFS = [
    ["the cat sat on the mat", "a cat was sitting on the mat", "the cat is on a mat"],
    ["a dog is running in the park", "the dog runs in a park", "in the park a dog runs"],
    ["he read an old book", "he reads the old book", "he reads books"],
    ["birds fly above the sea", "birds are flying over the sea", "the birds fly over blue water"],
    ["she likes tea", "she enjoys green tea", "green tea is what she likes"],
    ["we walked home late", "we went home on foot", "late we walked home"],
]


def _glim_by_torchmetrics(preds, refs):
    """GLIM model/glim.py:365-405 with torchmetrics, written here: per sentence, then the mean."""
    import torch
    from torchmetrics.functional.text import bleu_score, rouge_score, word_error_rate

    out = {}
    for variant, pick in (("paraphrases", lambda rs: list(rs[1:])), ("raw", lambda rs: [rs[0]])):
        for n in range(1, 5):
            out[f"bleu{n}@{variant}"] = float(np.mean([bleu_score([p], [pick(rs)], n_gram=n).item()
                                                       for p, rs in zip(preds, refs)]))
        r = [rouge_score([p], [pick(rs)], rouge_keys="rouge1") for p, rs in zip(preds, refs)]
        for key, tm in (("rouge1_p", "precision"), ("rouge1_r", "recall"), ("rouge1_f", "fmeasure")):
            out[f"{key}@{variant}"] = float(torch.stack([x[f"rouge1_{tm}"] for x in r]).mean())
    out["wer@raw"] = float(np.mean([word_error_rate([p], [rs[0]]).item() for p, rs in zip(preds, refs)]))
    return out


def test_glim_protocol_matches_torchmetrics_per_sentence_means():
    want = _glim_by_torchmetrics(PREDS, REFS)
    res = evaluate_text(PREDS, REFS, metrics="bleu1,bleu2,bleu3,bleu4,rouge1_p,rouge1_r,rouge1_f,wer",
                        protocol="glim", n_boot=50)
    assert set(want) <= set(res)
    for key, value in want.items():
        assert res[key]["value"] == pytest.approx(value, abs=1e-6), key
    assert res["protocol"]["name"] == "glim" and res["wer@raw"]["higher_is_better"] is False
    # the closest-length tie of item 2 is broken toward the first paraphrase (5 words): a brevity penalty
    assert res["bleu1@paraphrases"]["per_item"][2] == pytest.approx(np.exp(1 - 5 / 4) * 3 / 4)
    # per-sentence means differ from corpus BLEU on the same items
    corpus = evaluate_text(PREDS, [r[1:] for r in REFS], metrics="bleu2", protocol="corpus", n_boot=50)
    assert corpus["bleu2"]["value"] != pytest.approx(res["bleu2@paraphrases"]["value"], abs=1e-3)
    # the shuffled pairing is worse than the true one
    assert res["bleu1@raw"]["shuffled"] < res["bleu1@raw"]["value"]


def test_glim_rouge_best_reference_ties_as_torchmetrics():
    # two paraphrases with the same ROUGE-1 F up to float64 rounding (P=1/4, R=1/7 and P=3/20, R=3/13):
    # torchmetrics compares F in float32, so they tie and the first wins (R = 1/7)
    words = [f"w{i}" for i in range(20)]
    pred = " ".join(words)
    ref_a = " ".join(words[:5] + [f"a{i}" for i in range(30)])
    ref_b = " ".join(words[5:8] + [f"b{i}" for i in range(10)])
    want = _glim_by_torchmetrics([pred], [["raw sentence", ref_a, ref_b]])
    res = evaluate_text([pred], [["raw sentence", ref_a, ref_b]], metrics="rouge1_p,rouge1_r", protocol="glim",
                        n_boot=10)
    assert res["rouge1_r@paraphrases"]["value"] == pytest.approx(want["rouge1_r@paraphrases"], abs=1e-6)
    assert res["rouge1_r@paraphrases"]["value"] == pytest.approx(1 / 7)


def test_glim_protocol_without_paraphrases_and_with_some_missing():
    raw_only = [r[0] for r in REFS]
    res = evaluate_text(PREDS, raw_only, metrics="bleu1,wer", protocol="glim", n_boot=20)
    assert res["bleu1@paraphrases"]["value"] is None and "paraphrases" in res["bleu1@paraphrases"]["reason"]
    assert res["bleu1@raw"]["value"] > 0 and res["wer@raw"]["value"] > 0
    mixed = [REFS[0], *raw_only[1:]]
    with pytest.raises(ValidationError, match="paraphrases"):
        evaluate_text(PREDS, mixed, metrics="bleu1", protocol="glim", n_boot=20)


def test_references_tsv_roundtrip_merge_and_paraphrase_table(tmp_path):
    table = tmp_path / "glim.csv"  # GLIM's released table exported with pandas' to_csv (column names kept)
    table.write_text(
        ",input text,lexical simplification (v0),naive rewritten\n"
        '0,"the cat sat on the mat","a cat was sitting on the mat","the cat is on a mat"\n'
        '1,"he read an old book","he read a book","an old book was read by him"\n', encoding="utf-8")
    para = read_paraphrases(table)
    assert para["he read an old book"] == ["he read a book", "an old book was read by him"]
    rows = [{"sub": "YAG", "stim": "NR0001", "subject": "zuco/YAG", "reference": "the cat sat  on the mat"},
            {"sub": "YAG", "stim": "NR0002", "subject": "zuco/YAG", "reference": "no paraphrase here"}]
    merged, missing = merge_paraphrases(rows, para)
    assert missing == [1] and merged[0]["paraphrases"] == ["a cat was sitting on the mat", "the cat is on a mat"]
    path = write_references(tmp_path / "references.tsv", rows, paraphrases=para)
    head = path.read_text(encoding="utf-8").splitlines()[0].split("\t")
    assert head[:6] == ["sub", "stim", "subject", "task", "sentence_index", "reference"]
    assert head[6:] == ["paraphrase_1", "paraphrase_2"]
    refs = read_references(path)
    assert refs[("YAG", "NR0001")] == ["the cat sat  on the mat", "a cat was sitting on the mat", "the cat is on a mat"]
    assert refs[("YAG", "NR0002")] == ["no paraphrase here"]
    # a second subject into the same file keeps the first one's rows
    write_references(path, [{"sub": "YAC", "stim": "NR0001", "reference": "x y", "paraphrases": ["y x"]}])
    again = read_references(path)
    assert again[("YAC", "NR0001")] == ["x y", "y x"] and again[("YAG", "NR0001")] == refs[("YAG", "NR0001")]


def test_word_tokenize_follows_nltk_word_tokenize():
    from nltk.tokenize import word_tokenize as nltk_word_tokenize

    single = ["A man rides a horse.", "Don't stop, it's 3.5 dollars!", 'She said "hello" (twice).']
    for s in single:  # one sentence: nltk's own function without the sentence splitter
        assert word_tokenize(s) == nltk_word_tokenize(s, preserve_line=True)
    # several sentences: each sentence's final period is split, as punkt + the treebank words do
    text = "Mr. Smith went home. He slept. The U.S. army left."
    want = [t for s in ("Mr. Smith went home.", "He slept.", "The U.S. army left.")
            for t in nltk_word_tokenize(s, preserve_line=True)]
    assert word_tokenize(text) == want
    assert word_tokenize(text) != text.split()


def test_missing_extra_is_a_teaching_error(monkeypatch):
    import sys

    from neurodecode.metrics import MissingDependencyError, rouge_scores

    monkeypatch.setitem(sys.modules, "rouge_score", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "rouge_score.rouge_scorer", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'neurodecode\[metrics\]'"):
        rouge_scores(["a b"], ["a b"])
    with pytest.raises(ImportError):  # still an ImportError for callers that catch that
        evaluate_text(["a b"], ["a b"], metrics="rouge1_f", n_boot=10)
