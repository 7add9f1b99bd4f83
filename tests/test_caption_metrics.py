"""Caption metrics (coco-caption protocol + CLIP-S) against outside truth.

Outside truth: pycocoevalcap's own scorers (BLEU, ROUGE-L, CIDEr-D in Python; its Java PTBTokenizer and METEOR
1.5 jar), hand-computed known answers from the published formulas, and the published rows' numbers.
"""

import numpy as np
import pytest

from neurodecode.metrics import (
    CAPTION_METRICS,
    _captions,
    cider_d,
    clip_score,
    coco_bleu,
    coco_meteor,
    coco_rouge_l,
    coco_tokenize,
    evaluate_captions,
    spice_scores,
)
from neurodecode.metrics._deps import MissingDependencyError
from neurodecode.metrics._report import published_rows

REFS = [["A man riding a horse on the beach.", "A person rides a brown horse, near the ocean!",
         "a horse and rider at the sea"],
        ["Two dogs playing in the snow.", "Dogs don't like the cold (or do they?).", "two puppies run in snow",
         "dogs in winter"],
        ["A plate of food with broccoli and rice", "a dish of rice and vegetables", "food on a white plate"],
        ["The cat is sitting on top of a car's hood.", "a cat on a car", "A kitten sits on the hood of a red car."],
        ["A kitchen with a stove, sink, and refrigerator.", "a small kitchen", "kitchen with white cabinets"]]
HYPS = ["a man rides a horse on a beach", "two dogs in the snow", "a plate of rice", "a cat sitting on a car",
        "a kitchen with a sink and a stove"]


def _coco_inputs(hyps, refs):
    gts = {i: [" ".join(coco_tokenize(r)) for r in rs] for i, rs in enumerate(refs)}
    res = {i: [" ".join(coco_tokenize(h))] for i, h in enumerate(hyps)}
    return gts, res


def test_tokenizer_known_answers():
    assert coco_tokenize("A dog's toy (red).") == ["a", "dog", "'s", "toy", "-lrb-", "red", "-rrb-"]
    assert coco_tokenize("Dogs don't like it; can't, won't!") == ["dogs", "do", "n't", "like", "it", "ca", "n't",
                                                                   "wo", "n't"]
    assert coco_tokenize('A T-shirt says "3.5 stars" -- 1,000 times...') == ["a", "t-shirt", "says", "3.5", "stars",
                                                                            "1,000", "times"]


def test_bleu_rouge_cider_equal_pycocoevalcap():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts, res = _coco_inputs(HYPS, REFS)
    ref_bleu, ref_bleu_items = Bleu(4).compute_score(gts, res, verbose=0)
    ours = coco_bleu(HYPS, REFS)
    np.testing.assert_allclose([ours[f"bleu{k}"] for k in range(1, 5)], ref_bleu, rtol=1e-12)
    np.testing.assert_allclose([ours["per_item"][f"bleu{k}"] for k in range(1, 5)], ref_bleu_items, rtol=1e-12)
    ref_rouge, ref_rouge_items = Rouge().compute_score(gts, res)
    np.testing.assert_allclose(coco_rouge_l(HYPS, REFS), ref_rouge_items, rtol=1e-12)
    ref_cider, ref_cider_items = Cider().compute_score(gts, res)
    value, items = cider_d(HYPS, REFS)
    np.testing.assert_allclose(items, ref_cider_items, rtol=1e-10)
    assert value == pytest.approx(ref_cider, rel=1e-10)


def test_hand_computed_known_answers():
    # CIDEr-D: each caption equals its single reference and no n-gram is shared between images: every clipped
    # cosine is 1 and the length penalty exp(0) = 1, so 10 * mean over n = 1..4 of 1 = 10 (captions of >= 4 words;
    # a 3-word caption has no 4-gram: 10 * 3 / 4); a caption sharing nothing: 0
    value, items = cider_d(["red fox jumps high", "blue whale sings loud songs", "green frog"],
                           [["red fox jumps high"], ["blue whale sings loud songs"], ["green frog"]])
    np.testing.assert_allclose(items, [10.0, 10.0, 10.0 * 2 / 4], rtol=1e-12)
    assert cider_d(["purple sky", "blue whale sings"], [["red fox jumps"], ["blue whale sings"]])[1][0] == 0.0
    # length penalty: hypothesis "a b" vs reference "a b c d" (two images, no shared n-grams across images):
    # unigram g_c = (l, l), g_r = (l, l, l, l) with l = log 2: min(g_c, g_r) . g_r / (|g_c| |g_r|) = 2 l^2 / (sqrt(2) l
    # * 2 l) = 1 / sqrt(2); bigram: 1 shared of 1 vs 3: l^2 / (l * sqrt(3) l) = 1 / sqrt(3); 3-, 4-grams: 0
    _, items = cider_d(["a b", "x y z"], [["a b c d"], ["x y z"]])
    want = 10 * np.exp(-4 / 72) * (1 / np.sqrt(2) + 1 / np.sqrt(3)) / 4
    assert items[0] == pytest.approx(want, rel=1e-12)
    # ROUGE-L: "a b c d" vs "a c d e f": LCS 3, P = 3/4, R = 3/5, F_beta with beta = 1.2
    p, r, b2 = 0.75, 0.6, 1.2 ** 2
    assert coco_rouge_l(["a b c d"], [["a c d e f"]])[0] == pytest.approx((1 + b2) * p * r / (r + b2 * p))
    # BLEU: a caption equal to its reference scores 1 (up to coco-caption's 1e-9 smoothing)
    assert coco_bleu(["the cat sat on the mat"], [["The cat sat on the mat."]])["bleu4"] == pytest.approx(1, abs=1e-8)


def test_tokens_equal_the_java_ptb_tokenizer():
    """coco-caption's own tokenizer (Stanford CoreNLP's PTBTokenizer, Java) gives our tokens."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    caps = [c for rs in REFS for c in rs] + HYPS + ["It's 1,000 feet high [really]", "Kids' toys & a U.S. flag",
                                                     'A sign that says "stop" on a pole.', "Mr. Smith's dog can't swim"]
    java = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(caps)})
    assert [" ".join(coco_tokenize(c)) for c in caps] == [java[i][0] for i in range(len(caps))]


@pytest.mark.slow
def test_meteor_15_through_the_jar():
    """METEOR 1.5 runs offline through coco-caption's jar (Java) on our tokens (the JVM loads its paraphrase
    table: ~20 s)."""
    from pycocoevalcap.meteor.meteor import Meteor

    scorer = Meteor()
    score, items = coco_meteor(HYPS + ["the cat sat on the mat"], REFS + [["The cat sat on the mat."]], scorer=scorer)
    assert items.shape == (6,) and 0.2 < score < 0.7
    assert items[5] > 0.9  # identical caption: one chunk, a tiny fragmentation penalty
    assert items[0] > items[2]  # "a man rides a horse on a beach" matches its references better than "a plate of rice"
    five, _ = coco_meteor(HYPS, REFS, scorer=scorer)
    del scorer
    res = evaluate_captions(HYPS, REFS, metrics="meteor", n_boot=10, n_shuffles=2)  # one JVM for all pairings
    assert res["meteor"]["value"] == pytest.approx(five) and res["meteor"]["shuffled"] < five


def test_spice_needs_its_jars_or_says_what_to_install(monkeypatch):
    ok, reason = _captions.java_metric_available("spice")
    if ok:  # Stanford CoreNLP 3.6.0 was fetched on this machine: SPICE runs
        score, items = spice_scores(HYPS, REFS)
        assert 0 <= score <= 1 and items.shape == (5,)
    else:
        assert "stanford-corenlp-3.6.0" in reason and "get_stanford_models" in reason
        with pytest.raises(MissingDependencyError, match="stanford-corenlp"):
            spice_scores(HYPS, REFS)

    def missing(module, purpose):
        raise MissingDependencyError(f"{module}: pip install pycocoevalcap for {purpose}")

    monkeypatch.setattr(_captions, "require", missing)
    ok, reason = _captions.java_metric_available("meteor")
    assert not ok and "pip install pycocoevalcap" in reason
    res = evaluate_captions(HYPS, REFS, metrics="meteor,bleu4", n_boot=10)
    assert res["meteor"]["value"] is None and "pycocoevalcap" in res["meteor"]["reason"]
    assert res["bleu4"]["value"] is not None


def test_clip_score_formula():
    """CLIP-S = 2.5 * max(cos(image, "A photo depicts " + caption), 0) in the CLIP image/text space (tiny twin)."""
    from neurodecode.latents import get_space

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 40, 36, 3), dtype=np.uint8)
    caps = ["a cat", "two dogs on grass", "a red bus", "a plate of food"]
    got = clip_score(images, caps, weights="random")
    ei = get_space("clip-vit-l-14-tiny").encode_images(images)
    et = get_space("clip-vit-l-14-text-tiny").encode_texts(["A photo depicts " + c for c in caps])
    cos = (ei * et).sum(1) / np.linalg.norm(ei, axis=1) / np.linalg.norm(et, axis=1)
    np.testing.assert_allclose(got, 2.5 * np.maximum(cos, 0), rtol=1e-5, atol=1e-6)
    assert (got >= 0).all() and (got <= 2.5).all()


def test_evaluate_captions_protocol_and_controls():
    preds = [rs[0] for rs in REFS]  # a perfect decoder: its captions are references
    refs = [rs[1:] + [rs[0]] for rs in REFS]
    images = np.random.default_rng(1).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    res = evaluate_captions(preds, refs, images=images, metrics=["bleu1", "bleu4", "rougeL", "cider", "clip_s",
                                                                 "sentence_sim", "spice"],
                            weights="random", n_boot=50, n_shuffles=2)
    assert res["protocol"]["name"] == "coco-captions" and res["n_items"] == 5
    for k in ("bleu1", "bleu4", "rougeL", "cider"):
        assert res[k]["value"] > res[k]["shuffled"]  # the matched pairing beats the shuffled one
        lo, hi = res[k]["ci"]
        assert lo <= res[k]["value"] <= hi
    assert res["bleu1"]["value"] == pytest.approx(1.0, abs=1e-8)
    assert res["cider"]["value"] == pytest.approx(cider_d(preds, refs)[0])
    assert res["clip_s"]["value"] is not None and res["sentence_sim"]["per_item"].shape == (5,)
    assert "tiny" in res["weights"]["clip_s"]["source"]
    assert (res["spice"]["value"] is None) == (not _captions.java_metric_available("spice")[0])
    no_images = evaluate_captions(preds, refs, metrics="clip_s,bleu1", n_boot=10)
    assert no_images["clip_s"]["value"] is None and "images" in no_images["clip_s"]["reason"]
    with pytest.raises(ValueError, match="metrics"):
        evaluate_captions(preds, refs, metrics="bleu5")
    assert set(CAPTION_METRICS) >= {"bleu1", "meteor", "rougeL", "cider", "spice", "clip_s", "sentence_sim"}


def test_published_rows_with_sources():
    rows = {r["name"]: r for r in published_rows("coco-captions")}
    bc = rows["Brain Captioning"]["values"]
    assert (bc["bleu1"], bc["bleu4"], bc["meteor"], bc["rougeL"], bc["cider"], bc["spice"], bc["clip_s"]) == (
        0.5596, 0.1451, 0.1668, 0.4069, 0.4130, 0.0906, 0.6431)
    sd = rows["Takagi & Nishimoto (SDRecon, BLIP captions)"]["values"]
    assert (sd["bleu1"], sd["bleu4"], sd["meteor"], sd["rougeL"], sd["cider"], sd["spice"], sd["clip_s"]) == (
        0.3621, 0.0343, 0.1003, 0.2513, 0.1383, 0.0502, 0.6107)
    assert rows["NVL"]["values"]["cider"] == 0.4951
    assert all("NVL" in r["source"] or "Shen" in r["source"] for r in rows.values())
    assert set().union(*(r["values"] for r in rows.values())) <= set(CAPTION_METRICS)


def test_recipes_may_name_caption_and_depth_metrics():
    from neurodecode.recipes._schema import RecipeProblems, _check_metric_names

    ok = RecipeProblems()
    _check_metric_names({"metrics": ["cider", "spice", "clip_s", "si_log", "abs_rel"],
                         "text_metrics": ["bleu4", "rougeL", "cider"]}, ok)
    ok.raise_if_any()
    bad = RecipeProblems()
    _check_metric_names({"metrics": ["ciderr"]}, bad)
    with pytest.raises(ValueError, match="ciderr"):
        bad.raise_if_any()
