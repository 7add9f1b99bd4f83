"""Text metrics for decoded sentences and captions (specs/metrics.md, "Text").

``references[i]`` is the sentence read (or the caption), optionally followed by its paraphrases.
Tokens are whitespace tokens for BLEU and WER (NLTK's and torchmetrics' definition).

Two protocols for :func:`evaluate_text`:

- ``"glim"`` (GLIM, model/glim.py:365-405, torchmetrics' ``bleu_score`` / ``rouge_score`` /
  ``word_error_rate``): every score is computed PER SENTENCE and averaged over sentences.
  BLEU-n (cumulative uniform weights, no smoothing) against several references uses the
  reference length closest to the hypothesis' (the first in list order on ties); ROUGE-1 P/R/F
  takes the reference with the best F; WER is against the sentence read. BLEU and ROUGE-1 are
  reported twice, like GLIM: ``<metric>@paraphrases`` (against the paraphrases, GLIM's 8
  variants, without the sentence read) and ``<metric>@raw`` (against the sentence read);
  WER as ``wer@raw``.
- ``"corpus"``: corpus BLEU (NLTK ``corpus_bleu``: n-gram counts and lengths summed over
  sentences, closest reference length, the shorter one on ties) against every reference, corpus
  WER (total edits / total words of the sentences read), ROUGE per sentence (best reference).

Both: ROUGE-L F (``rouge-score``, best reference); METEOR (NLTK, nltk ``word_tokenize``
tokens on both sides as MindEye2; only with NLTK's WordNet data, otherwise reported
unavailable, never estimated); sentence-embedding (all-MiniLM-L6-v2) and CLIP-text
similarity (best reference) from :mod:`neurodecode.latents`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._core.errors import ShapeMismatchError, ValidationError
from .._core.validation import check_option, format_error
from ._deps import require
from ._stats import METRICS_VERSION, as_rng, bootstrap_ci, bootstrap_ci_stat, derangement

__all__ = ["TEXT_METRICS", "TEXT_PROTOCOLS", "bleu_scores", "rouge_scores", "word_error_rate", "meteor_scores",
           "embedding_similarity", "evaluate_text", "meteor_available", "word_tokenize", "glim_metric_names"]

TEXT_METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "rouge1_p", "rouge1_r", "rouge1_f", "rougeL_f", "wer",
                "meteor", "sentence_sim", "clip_text_sim")
TEXT_PROTOCOLS = ("corpus", "glim")
#: Metrics GLIM reports against the paraphrases and against the sentence read.
_GLIM_TWO_WAY = ("bleu1", "bleu2", "bleu3", "bleu4", "rouge1_p", "rouge1_r", "rouge1_f")
_LOWER_IS_BETTER = ("wer",)


def glim_metric_names(metrics: Sequence[str]) -> list[str]:
    """Result keys of :func:`evaluate_text` under ``protocol="glim"`` for base metric names.

    ``bleu1`` -> ``bleu1@paraphrases``, ``bleu1@raw``; ``wer`` -> ``wer@raw``; others unchanged.
    """
    out: list[str] = []
    for m in metrics:
        if m in _GLIM_TWO_WAY:
            out += [f"{m}@paraphrases", f"{m}@raw"]
        else:
            out.append("wer@raw" if m == "wer" else m)
    return out


def _as_refs(hypotheses: Sequence[str], references: Sequence[Any]) -> tuple[list[str], list[list[str]]]:
    if isinstance(hypotheses, str) or not all(isinstance(h, str) for h in hypotheses):
        raise ValidationError(format_error("predictions", "a list of str", hypotheses,
                                           "Wrap a single sentence in a list"))
    if isinstance(references, str):
        raise ValidationError(format_error("references", "a list of str (or of lists of str)", references))
    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    if len(refs) != len(hypotheses):
        raise ShapeMismatchError(
            format_error("references", f"one entry per hypothesis ({len(hypotheses)})", f"{len(refs)} entries",
                         "Give each hypothesis its reference (or a list of paraphrases)")
        )
    bad = [i for i, r in enumerate(refs) if not r or not all(isinstance(x, str) for x in r)]
    if bad:
        raise ValidationError(format_error("references", "non-empty str or lists of str", f"bad entries at {bad[:5]}"))
    if not hypotheses:
        raise ValidationError(format_error("predictions", "at least one sentence", "none"))
    return list(hypotheses), refs


def _ngrams(tokens: list[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _bleu_counts(hyps: list[str], refs: list[list[str]], max_n: int, lowercase: bool, closest: str = "shorter"
                 ) -> tuple[np.ndarray, ...]:
    """Clipped n-gram matches, n-gram totals, hypothesis and closest reference lengths per sentence."""
    n_items = len(hyps)
    num = np.zeros((n_items, max_n))
    den = np.zeros((n_items, max_n))
    hyp_len = np.zeros(n_items)
    ref_len = np.zeros(n_items)
    for i, (h, rs) in enumerate(zip(hyps, refs)):
        ht = (h.lower() if lowercase else h).split()
        rts = [(r.lower() if lowercase else r).split() for r in rs]
        for n in range(1, max_n + 1):
            counts = _ngrams(ht, n)
            max_ref: Counter[tuple[str, ...]] = Counter()
            for rt in rts:
                max_ref |= _ngrams(rt, n)
            num[i, n - 1] = sum(min(c, max_ref[g]) for g, c in counts.items())
            den[i, n - 1] = max(1, len(ht) - n + 1)
        hyp_len[i] = len(ht)
        diffs = [abs(len(rt) - len(ht)) for rt in rts]
        if closest == "first":  # torchmetrics: the first closest reference in list order
            ref_len[i] = len(rts[diffs.index(min(diffs))])
        else:  # NLTK: the shorter of equally close references
            ref_len[i] = min(zip(diffs, (len(rt) for rt in rts)))[1]
    return num, den, hyp_len, ref_len


def _bleu_from_counts(num: np.ndarray, den: np.ndarray, hyp_len: float, ref_len: float, order: int) -> float:
    p = num[:order] / den[:order]
    if np.any(p == 0) or hyp_len == 0:
        return 0.0
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return float(bp * math.exp(np.mean(np.log(p))))


def _bleu_stat(num: np.ndarray, den: np.ndarray, hl: np.ndarray, rl: np.ndarray, order: int) -> Any:
    def stat(idx: np.ndarray) -> float:
        return _bleu_from_counts(num[idx].sum(0), den[idx].sum(0), hl[idx].sum(), rl[idx].sum(), order)

    return stat


def bleu_scores(
    hypotheses: Sequence[str], references: Sequence[Any], *, max_n: int = 4, lowercase: bool = False,
    closest: str = "shorter",
) -> dict[str, Any]:
    """Corpus BLEU-1..``max_n`` and sentence BLEU (cumulative uniform weights, no smoothing).

    Parameters
    ----------
    hypotheses : list of str
        Decoded sentences (generated WITHOUT teacher forcing).
    references : list of str or list of list of str
        One reference per hypothesis, or several (paraphrases).
    max_n : int
        Highest n-gram order.
    lowercase : bool
        Lowercase before whitespace tokenisation.
    closest : {"shorter", "first"}
        Which of several equally close reference lengths counts: the shorter (NLTK) or the
        first in list order (torchmetrics, GLIM).

    Returns
    -------
    scores : dict
        ``"bleu1"`` ... ``"bleu{max_n}"``: corpus scores in [0, 1]; ``"per_item"``: the
        same keys mapped to sentence-level BLEU arrays of shape (n_items,) (GLIM's score
        with ``closest="first"``); ``"counts"``: the per-sentence statistics (for
        bootstrap resampling).
    """
    check_option(closest, "closest", ("shorter", "first"))
    hyps, refs = _as_refs(hypotheses, references)
    num, den, hl, rl = _bleu_counts(hyps, refs, max_n, lowercase, closest)
    out: dict[str, Any] = {"per_item": {}, "counts": (num, den, hl, rl)}
    for order in range(1, max_n + 1):
        key = f"bleu{order}"
        out[key] = _bleu_from_counts(num.sum(0), den.sum(0), hl.sum(), rl.sum(), order)
        out["per_item"][key] = np.array([_bleu_from_counts(num[i], den[i], hl[i], rl[i], order)
                                         for i in range(len(hyps))])
    return out


def rouge_scores(hypotheses: Sequence[str], references: Sequence[Any]) -> dict[str, np.ndarray]:
    """ROUGE-1 precision / recall / F1 and ROUGE-L F1 per sentence (``rouge-score``).

    With several references, each sentence takes the reference with the best F1 (per ROUGE
    type), as ``rouge-score``'s ``score_multi`` and torchmetrics' ``accumulate="best"``.

    Returns
    -------
    scores : dict of str to ndarray of shape (n_items,)
        ``"rouge1_p"``, ``"rouge1_r"``, ``"rouge1_f"``, ``"rougeL_f"``.
    """
    rouge_scorer = _rouge_scorer()
    hyps, refs = _as_refs(hypotheses, references)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=False)
    out = {k: np.zeros(len(hyps)) for k in ("rouge1_p", "rouge1_r", "rouge1_f", "rougeL_f")}
    for i, (h, rs) in enumerate(zip(hyps, refs)):
        s = scorer.score_multi(rs, h)
        out["rouge1_p"][i] = s["rouge1"].precision
        out["rouge1_r"][i] = s["rouge1"].recall
        out["rouge1_f"][i] = s["rouge1"].fmeasure
        out["rougeL_f"][i] = s["rougeL"].fmeasure
    return out


def _rouge_scorer() -> Any:
    return require("rouge_score.rouge_scorer", "ROUGE")


def _rouge1_best_float32(hyps: list[str], refs: list[list[str]]) -> dict[str, np.ndarray]:
    """ROUGE-1 P/R/F with the best reference chosen as torchmetrics does (GLIM): the highest F in
    float32, the first reference on ties (F values equal up to float64 rounding tie in float32)."""
    scorer = _rouge_scorer().RougeScorer(["rouge1"], use_stemmer=False)
    out = {k: np.zeros(len(hyps)) for k in ("rouge1_p", "rouge1_r", "rouge1_f")}
    for i, (h, rs) in enumerate(zip(hyps, refs)):
        scores = [scorer.score(r, h)["rouge1"] for r in rs]
        best = scores[int(np.argmax(np.array([s.fmeasure for s in scores], dtype=np.float32)))]
        out["rouge1_p"][i], out["rouge1_r"][i], out["rouge1_f"][i] = best.precision, best.recall, best.fmeasure
    return out


def _word_edits(ref: list[str], hyp: list[str]) -> int:
    """Word-level Levenshtein distance (substitutions + deletions + insertions)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def word_error_rate(hypotheses: Sequence[str], references: Sequence[Any]) -> dict[str, Any]:
    """Word error rate against the first reference of each item (the sentence read).

    Whitespace tokens, word-level Levenshtein distance (as ``jiwer`` and torchmetrics).

    Returns
    -------
    result : dict
        ``"wer"``: corpus WER (total edits / total reference words); ``"per_item"``:
        sentence WERs, shape (n_items,) (NaN for an empty reference); ``"edits"`` and
        ``"ref_words"``: per-item counts.
    """
    hyps, refs = _as_refs(hypotheses, references)
    edits = np.array([_word_edits(rs[0].split(), h.split()) for h, rs in zip(hyps, refs)], dtype=float)
    n_ref = np.array([len(rs[0].split()) for rs in refs], dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_item = np.where(n_ref > 0, edits / np.where(n_ref > 0, n_ref, 1), np.nan)
    return {"wer": float(edits.sum() / max(n_ref.sum(), 1)), "per_item": per_item, "edits": edits, "ref_words": n_ref}


#: Abbreviations the offline sentence splitter does not split after (lowercase, without the final period).
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st mt vs etc e.g i.e u.s u.k u.n a.m p.m inc ltd co corp no vol fig jan feb mar apr "
    "jun jul aug sep sept oct nov dec gen col lt sgt rev hon gov sen rep ave blvd dept est approx".split())


def word_tokenize(text: str) -> list[str]:
    """NLTK's ``word_tokenize`` (English): sentences split by Punkt, then NLTK's Treebank-style words.

    With NLTK's ``punkt_tab`` data installed this IS ``nltk.word_tokenize``. Without it (the data
    cannot be pip-installed), sentences are split by an untrained Punkt that knows the common
    English abbreviations of ``_ABBREVIATIONS``: the tokens are identical for single sentences
    and for texts whose periods end sentences or follow a listed abbreviation; they can differ
    only at a period after an abbreviation the trained model knows and the list does not.
    """
    nltk = require("nltk", "METEOR's word_tokenize")
    try:
        return list(nltk.word_tokenize(text))
    except LookupError:
        pass
    from nltk.tokenize.destructive import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

    params = PunktParameters()
    params.abbrev_types = set(_ABBREVIATIONS)
    words = NLTKWordTokenizer()
    return [tok for sent in PunktSentenceTokenizer(params).tokenize(text) for tok in words.tokenize(sent)]


def meteor_available() -> tuple[bool, str]:
    """Whether NLTK and its WordNet data (needed by METEOR) are installed, and why not."""
    try:
        require("nltk", "METEOR")
        from nltk.corpus import wordnet

        wordnet.ensure_loaded()
    except ImportError as exc:
        return False, str(exc)
    except LookupError:
        return False, ("NLTK's WordNet data is not installed; on a machine with network run "
                       "`python -m nltk.downloader wordnet` (METEOR is never estimated without it)")
    return True, ""


def meteor_scores(hypotheses: Sequence[str], references: Sequence[Any]) -> np.ndarray | None:
    """Sentence METEOR (NLTK, :func:`word_tokenize` on both sides), or ``None`` without WordNet."""
    ok, _ = meteor_available()
    if not ok:
        return None
    from nltk.translate.meteor_score import meteor_score

    hyps, refs = _as_refs(hypotheses, references)
    return np.array([meteor_score([word_tokenize(r) for r in rs], word_tokenize(h)) for h, rs in zip(hyps, refs)])


def embedding_similarity(
    hypotheses: Sequence[str], references: Sequence[Any], space: str = "minilm-l6", weights: str = "real",
    *, device: Any = "cpu", verbose: Any = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Cosine similarity of hypothesis and reference embeddings (best reference per item).

    Parameters
    ----------
    hypotheses, references
        See :func:`bleu_scores`.
    space : {"minilm-l6", "clip-vit-l-14-text"}
        Text space of :func:`neurodecode.latents.get_space` (sentence embedding or CLIP text).
    weights : {"real", "random"}
        Published weights, or the space's tiny random twin (``<space>-tiny``).

    Returns
    -------
    sims : ndarray of shape (n_items,)
    info : dict
        ``"tier"`` and ``"source"`` of the weights.
    """
    eh, er, info = _embed(hypotheses, references, space, weights, device=device, verbose=verbose)
    return _best_cosine(eh, er), info


def _embed(hypotheses: Sequence[str], references: Sequence[Any], space: str, weights: str, *, device: Any,
           verbose: Any) -> tuple[np.ndarray, list[np.ndarray], dict[str, Any]]:
    """Unit-norm hypothesis embeddings (n, d) and per-item reference embeddings [(n_refs_i, d)]."""
    check_option(space, "space", ("minilm-l6", "clip-vit-l-14-text"))
    check_option(weights, "weights", ("real", "random"))
    from ..latents import get_space

    hyps, refs = _as_refs(hypotheses, references)
    name = space if weights == "real" else f"{space}-tiny"
    sp = get_space(name, device=device, verbose=verbose)
    flat = [r for rs in refs for r in rs]
    eh = sp.encode_texts(hyps).reshape(len(hyps), -1)
    er = sp.encode_texts(flat).reshape(len(flat), -1)
    eh = eh / np.maximum(np.linalg.norm(eh, axis=1, keepdims=True), 1e-12)
    er = er / np.maximum(np.linalg.norm(er, axis=1, keepdims=True), 1e-12)
    bounds = np.cumsum([0] + [len(rs) for rs in refs])
    groups = [er[bounds[i]:bounds[i + 1]] for i in range(len(refs))]
    info = {"tier": weights, "source": f"neurodecode.latents space {name!r} ({sp.weights})"
            + ("" if weights == "real" else ", tiny random twin: NOT the published weights")}
    return eh, groups, info


def _best_cosine(eh: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    return np.array([float((g @ eh[i]).max()) for i, g in enumerate(groups)])


def _glim_scores(hyps: list[str], refs: list[list[str]], metrics: list[str], lowercase: bool) -> dict[str, Any]:
    """GLIM's per-sentence scores: (mean, per_item, None) for each ``<metric>@paraphrases|raw`` and ``wer@raw``."""
    out: dict[str, Any] = {}
    variants = {"raw": [rs[:1] for rs in refs], "paraphrases": [rs[1:] for rs in refs]}
    missing = [i for i, rs in enumerate(refs) if len(rs) < 2]
    bleu_orders = [int(m[-1]) for m in metrics if m.startswith("bleu")]
    rouge_keys = [m for m in metrics if m.startswith("rouge1_")]
    for variant, vrefs in variants.items():
        if variant == "paraphrases" and missing:
            for m in [m for m in metrics if m in _GLIM_TWO_WAY]:
                out[f"{m}@paraphrases"] = None
            continue
        if bleu_orders:
            b = bleu_scores(hyps, vrefs, max_n=max(bleu_orders), lowercase=lowercase, closest="first")
            for order in bleu_orders:
                v = b["per_item"][f"bleu{order}"]
                out[f"bleu{order}@{variant}"] = (float(v.mean()), v, None)
        if rouge_keys:
            r = _rouge1_best_float32(hyps, vrefs)
            for k in rouge_keys:
                out[f"{k}@{variant}"] = (float(r[k].mean()), r[k], None)
    if "wer" in metrics:
        w = word_error_rate(hyps, refs)["per_item"]
        out["wer@raw"] = (float(np.nanmean(w)), w, None)
    return out


def _text_per_metric(hyps: list[str], refs: list[list[str]], metrics: list[str], weights: str, device: Any,
                     verbose: Any, lowercase: bool, embeddings: dict[str, Any], protocol: str,
                     perm: np.ndarray | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Values, per-item arrays and bootstrap closures of each metric for one pairing."""
    out: dict[str, Any] = {}
    used: dict[str, Any] = {}
    if protocol == "glim":
        out.update(_glim_scores(hyps, refs, metrics, lowercase))
        if "rougeL_f" in metrics:
            v = rouge_scores(hyps, refs)["rougeL_f"]
            out["rougeL_f"] = (float(v.mean()), v, None)
    else:
        bleu_keys = [m for m in metrics if m.startswith("bleu")]
        if bleu_keys:
            b = bleu_scores(hyps, refs, max_n=max(int(k[-1]) for k in bleu_keys), lowercase=lowercase)
            num, den, hl, rl = b["counts"]
            for k in bleu_keys:
                order = int(k[-1])
                out[k] = (b[k], b["per_item"][k], _bleu_stat(num, den, hl, rl, order))
        if any(m.startswith("rouge") for m in metrics):
            rs = rouge_scores(hyps, refs)
            for k, v in rs.items():
                if k in metrics:
                    out[k] = (float(v.mean()), v, None)
        if "wer" in metrics:
            w = word_error_rate(hyps, refs)
            e, n = w["edits"], w["ref_words"]
            out["wer"] = (w["wer"], w["per_item"], lambda idx: float(e[idx].sum() / max(n[idx].sum(), 1)))
    if "meteor" in metrics:
        m = meteor_scores(hyps, refs)
        out["meteor"] = None if m is None else (float(m.mean()), m, None)
        used["meteor"] = {"tier": "none", "source": "nltk meteor_score + WordNet, nltk word_tokenize tokens"
                          if m is not None else "unavailable"}
    for key, space in (("sentence_sim", "minilm-l6"), ("clip_text_sim", "clip-vit-l-14-text")):
        if key in metrics:
            if space not in embeddings:  # embed once; shuffled pairings re-pair the embeddings
                embeddings[space] = _embed(hyps, refs, space, weights, device=device, verbose=verbose)
            eh, groups, info = embeddings[space]
            sims = _best_cosine(eh, groups if perm is None else [groups[j] for j in perm])
            out[key] = (float(sims.mean()), sims, None)
            used[key] = info
    return out, used


def _source(name: str, protocol: str) -> str:
    base = name.split("@")[0]
    if base.startswith("bleu"):
        return ("sentence BLEU averaged over sentences, closest reference length (first on ties): torchmetrics "
                "bleu_score as GLIM" if protocol == "glim" else "corpus BLEU: NLTK corpus_bleu definition")
    if base.startswith("rouge"):
        return "rouge-score (best reference per sentence)"
    if base == "wer":
        return ("sentence WER against the sentence read, averaged" if protocol == "glim"
                else "corpus WER (total edits / total words) against the sentence read")
    return base


def evaluate_text(
    predictions: Sequence[str],
    references: Sequence[Any],
    metrics: Any = ("bleu1", "bleu2", "bleu3", "bleu4", "rouge1_p", "rouge1_r", "rouge1_f", "rougeL_f", "wer",
                    "meteor", "sentence_sim"),
    weights: str = "real",
    *,
    protocol: str = "corpus",
    lowercase: bool = False,
    n_boot: int = 1000,
    n_shuffles: int = 3,
    random_state: int = 0,
    device: Any = "cpu",
    verbose: Any = None,
) -> dict[str, Any]:
    """Score decoded sentences with the text protocol, with CIs, chance and shuffled controls.

    Parameters
    ----------
    predictions : list of str
        Decoded sentences, generated without teacher forcing.
    references : list of str or list of list of str
        Per prediction: the sentence read, or a list whose first entry is the sentence read
        and the rest its paraphrases (GLIM's 8 variants; see :func:`read_references`).
    metrics : sequence of str or str
        Among ``TEXT_METRICS`` (comma-separated string allowed). ``clip_text_sim`` is
        not in the default list (it needs the CLIP ViT-L/14 weights).
    weights : {"real", "random"}
        Weights of the embedding models (recorded per metric).
    protocol : {"corpus", "glim"}
        ``"glim"``: GLIM's per-sentence BLEU / ROUGE-1 / WER averaged over sentences, reported
        as ``<metric>@paraphrases`` and ``<metric>@raw`` (``wer@raw``), see the module
        docstring; every item then needs its paraphrases for the ``@paraphrases`` rows (they
        are reported unavailable when no item has any). ``"corpus"``: corpus BLEU and WER.
    lowercase : bool
        Lowercase before BLEU tokenisation.
    n_boot, n_shuffles, random_state
        Bootstrap resamples (over items; corpus BLEU / WER are recomputed per
        resample), derangements of the shuffled-pairing control, seed.

    Returns
    -------
    result : dict
        ``result[key]`` = {"value", "ci", "chance", "shuffled", "per_item",
        "higher_is_better"} for each metric key (see ``protocol``); an unavailable metric is
        {"value": None, "reason": ...}; plus ``"n_items"``, ``"weights"``,
        ``"metrics_version"``, ``"protocol"``.

    Examples
    --------
    >>> res = evaluate_text(["a cat sat"], [["the cat sat", "a cat was sitting"]], metrics="bleu1",
    ...                     protocol="glim", n_boot=10)  # doctest: +SKIP
    >>> res["bleu1@paraphrases"]["value"], res["bleu1@raw"]["value"]  # doctest: +SKIP
    """
    check_option(protocol, "protocol", TEXT_PROTOCOLS)
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    metrics = list(dict.fromkeys(m.split("@")[0] for m in metrics))
    for m in metrics:
        check_option(m, "metrics", TEXT_METRICS)
    hyps, refs = _as_refs(predictions, references)
    if protocol == "glim":
        missing = [i for i, rs in enumerate(refs) if len(rs) < 2]
        if missing and len(missing) < len(refs) and any(m in _GLIM_TWO_WAY for m in metrics):
            raise ValidationError(format_error(
                "references", "the paraphrases of every item, or of none (protocol='glim')",
                f"{len(missing)} of {len(refs)} items without paraphrases (first: {missing[:5]})",
                "Merge the paraphrase table into every item (merge_paraphrases / --paraphrases), or score the "
                "items that have them"))
    if int(n_shuffles) < 1:
        raise ValidationError(format_error("n_shuffles", "at least 1", n_shuffles))
    keys = glim_metric_names(metrics) if protocol == "glim" else metrics
    embeddings: dict[str, Any] = {}
    scores, used = _text_per_metric(hyps, refs, metrics, weights, device, verbose, lowercase, embeddings, protocol)
    shuffled: dict[str, list[float]] = {k: [] for k in keys}
    if len(hyps) >= 2:
        rng = as_rng(random_state)
        for _ in range(int(n_shuffles)):
            perm = derangement(len(hyps), rng)
            s_scores, _ = _text_per_metric(hyps, [refs[j] for j in perm], metrics, weights, device, verbose,
                                           lowercase, embeddings, protocol, perm)
            for k, v in s_scores.items():
                if v is not None:
                    shuffled[k].append(v[0])
    out: dict[str, Any] = {}
    for k in keys:
        entry = scores.get(k)
        if entry is None:
            reason = (meteor_available()[1] if k == "meteor" else
                      "no paraphrases in the references: give each item [sentence read, paraphrase 1, ...]"
                      if k.endswith("@paraphrases") else "not computed")
            out[k] = {"value": None, "ci": None, "chance": None, "shuffled": None, "reason": reason}
            continue
        value, per_item, stat = entry
        if stat is not None:
            ci = bootstrap_ci_stat(len(hyps), stat, n_boot=n_boot, random_state=random_state)
        else:
            ci = bootstrap_ci(per_item, n_boot=n_boot, random_state=random_state)
        out[k] = {
            "value": float(value), "ci": [ci[0], ci[1]], "chance": None,
            "shuffled": float(np.mean(shuffled[k])) if shuffled[k] else None,
            "per_item": per_item, "higher_is_better": k.split("@")[0] not in _LOWER_IS_BETTER,
        }
        used.setdefault(k, {"tier": "none", "source": _source(k, protocol)})
    out["n_items"] = len(hyps)
    out["weights"] = used
    out["metrics_version"] = METRICS_VERSION
    out["protocol"] = {
        "name": protocol, "spec": "specs/metrics.md (Text)" + (", GLIM model/glim.py:365-405" if protocol == "glim"
                                                                 else ""),
        "tokenizer": "whitespace" + (", lowercased" if lowercase else "") + " (METEOR: nltk word_tokenize)",
        "n_boot": int(n_boot), "ci": 0.95, "random_state": random_state,
        "n_references": int(max(len(r) for r in refs)),
        "references": "first = the sentence read, then its paraphrases",
        "shuffled_control": f"shuffled pairing (predictions vs other items' references), mean of {int(n_shuffles)}"}
    return out
