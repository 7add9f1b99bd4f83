"""Text metrics for decoded sentences and captions (specs/metrics.md, "Text").

- BLEU-1..4: corpus BLEU with cumulative uniform weights, whitespace tokens, no
  smoothing, several references allowed (the definition of NLTK's ``corpus_bleu``,
  which the EEG-to-text papers use), computed from per-sentence n-gram counts so that
  bootstrap resamples are cheap.
- ROUGE-1 (P/R/F) and ROUGE-L (F): Google's ``rouge-score``; with several references,
  the best-scoring one per sentence.
- WER: ``jiwer``, corpus level (total edits / total reference words) against the first
  (raw) reference.
- METEOR: NLTK, only when its WordNet data is installed; otherwise reported as
  unavailable (``value`` None and a ``reason``), never estimated.
- Sentence-embedding similarity (all-MiniLM-L6-v2) and CLIP-text similarity (ViT-L/14):
  cosine between hypothesis and reference embeddings from :mod:`neurodecode.latents`
  (best reference per sentence).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._core.errors import ShapeMismatchError, ValidationError
from .._core.validation import check_option, format_error
from ._controls import derangement
from ._stats import as_rng, bootstrap_ci, bootstrap_ci_stat

__all__ = ["TEXT_METRICS", "bleu_scores", "rouge_scores", "word_error_rate", "meteor_scores",
           "embedding_similarity", "evaluate_text", "meteor_available"]

TEXT_METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "rouge1_p", "rouge1_r", "rouge1_f", "rougeL_f", "wer",
                "meteor", "sentence_sim", "clip_text_sim")
_LOWER_IS_BETTER = ("wer",)


def _as_refs(hypotheses: Sequence[str], references: Sequence[Any]) -> tuple[list[str], list[list[str]]]:
    if isinstance(hypotheses, str) or not all(isinstance(h, str) for h in hypotheses):
        raise ValidationError(format_error("hypotheses", "a list of str", hypotheses, "Wrap a single sentence in a list"))
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
        raise ValidationError(format_error("hypotheses", "at least one sentence", "none"))
    return list(hypotheses), refs


def _ngrams(tokens: list[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _bleu_counts(hyps: list[str], refs: list[list[str]], max_n: int, lowercase: bool) -> tuple[np.ndarray, ...]:
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
        ref_len[i] = min((abs(len(rt) - len(ht)), len(rt)) for rt in rts)[1]
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
    hypotheses: Sequence[str], references: Sequence[Any], *, max_n: int = 4, lowercase: bool = False
) -> dict[str, Any]:
    """Corpus BLEU-1..``max_n`` (cumulative uniform weights, no smoothing).

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

    Returns
    -------
    scores : dict
        ``"bleu1"`` ... ``"bleu{max_n}"``: corpus scores in [0, 1]; ``"per_item"``: the
        same keys mapped to sentence-level BLEU arrays of shape (n_items,);
        ``"counts"``: the per-sentence statistics (for bootstrap resampling).
    """
    hyps, refs = _as_refs(hypotheses, references)
    num, den, hl, rl = _bleu_counts(hyps, refs, max_n, lowercase)
    out: dict[str, Any] = {"per_item": {}, "counts": (num, den, hl, rl)}
    for order in range(1, max_n + 1):
        key = f"bleu{order}"
        out[key] = _bleu_from_counts(num.sum(0), den.sum(0), hl.sum(), rl.sum(), order)
        out["per_item"][key] = np.array([_bleu_from_counts(num[i], den[i], hl[i], rl[i], order)
                                         for i in range(len(hyps))])
    return out


def rouge_scores(hypotheses: Sequence[str], references: Sequence[Any]) -> dict[str, np.ndarray]:
    """ROUGE-1 precision / recall / F1 and ROUGE-L F1 per sentence (``rouge-score``).

    Returns
    -------
    scores : dict of str to ndarray of shape (n_items,)
        ``"rouge1_p"``, ``"rouge1_r"``, ``"rouge1_f"``, ``"rougeL_f"``.
    """
    from rouge_score import rouge_scorer

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


def word_error_rate(hypotheses: Sequence[str], references: Sequence[Any]) -> dict[str, Any]:
    """Word error rate against the first (raw) reference of each item (``jiwer``).

    Returns
    -------
    result : dict
        ``"wer"``: corpus WER (total edits / total reference words); ``"per_item"``:
        sentence WERs, shape (n_items,); ``"edits"`` and ``"ref_words"``: per-item counts.
    """
    import jiwer

    hyps, refs = _as_refs(hypotheses, references)
    edits = np.zeros(len(hyps))
    n_ref = np.zeros(len(hyps))
    for i, (h, rs) in enumerate(zip(hyps, refs)):
        o = jiwer.process_words(rs[0], h)
        edits[i] = o.substitutions + o.deletions + o.insertions
        n_ref[i] = o.substitutions + o.deletions + o.hits
    with np.errstate(invalid="ignore", divide="ignore"):
        per_item = np.where(n_ref > 0, edits / np.where(n_ref > 0, n_ref, 1), np.nan)
    return {"wer": float(edits.sum() / max(n_ref.sum(), 1)), "per_item": per_item, "edits": edits, "ref_words": n_ref}


def meteor_available() -> tuple[bool, str]:
    """Whether NLTK's WordNet data (needed by METEOR) is installed, and why not."""
    try:
        from nltk.corpus import wordnet

        wordnet.ensure_loaded()
    except ImportError:
        return False, "nltk is not installed (pip install nltk)"
    except LookupError:
        return False, ("NLTK's WordNet data is not installed; on a machine with network run "
                       "`python -m nltk.downloader wordnet` (METEOR is never estimated without it)")
    return True, ""


def meteor_scores(hypotheses: Sequence[str], references: Sequence[Any]) -> np.ndarray | None:
    """Sentence METEOR (NLTK), or ``None`` when WordNet is missing (see :func:`meteor_available`)."""
    ok, _ = meteor_available()
    if not ok:
        return None
    from nltk.translate.meteor_score import meteor_score

    hyps, refs = _as_refs(hypotheses, references)
    return np.array([meteor_score([r.split() for r in rs], h.split()) for h, rs in zip(hyps, refs)])


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


def _text_per_metric(hyps: list[str], refs: list[list[str]], metrics: list[str], weights: str, device: Any,
                     verbose: Any, lowercase: bool, embeddings: dict[str, Any],
                     perm: np.ndarray | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Values, per-item arrays and bootstrap closures of each metric for one pairing."""
    out: dict[str, Any] = {}
    used: dict[str, Any] = {}
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
        used["meteor"] = {"tier": "none", "source": "nltk + WordNet" if m is not None else "unavailable"}
    for key, space in (("sentence_sim", "minilm-l6"), ("clip_text_sim", "clip-vit-l-14-text")):
        if key in metrics:
            if space not in embeddings:  # embed once; shuffled pairings re-pair the embeddings
                embeddings[space] = _embed(hyps, refs, space, weights, device=device, verbose=verbose)
            eh, groups, info = embeddings[space]
            sims = _best_cosine(eh, groups if perm is None else [groups[j] for j in perm])
            out[key] = (float(sims.mean()), sims, None)
            used[key] = info
    return out, used


def evaluate_text(
    hypotheses: Sequence[str],
    references: Sequence[Any],
    metrics: Any = ("bleu1", "bleu2", "bleu3", "bleu4", "rouge1_p", "rouge1_r", "rouge1_f", "rougeL_f", "wer",
                    "meteor", "sentence_sim"),
    weights: str = "real",
    *,
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
    hypotheses : list of str
        Decoded sentences, generated without teacher forcing.
    references : list of str or list of list of str
        The raw sentence, or several references (paraphrases), per hypothesis.
    metrics : sequence of str or str
        Among ``TEXT_METRICS`` (comma-separated string allowed). ``clip_text_sim`` is
        not in the default list (it needs the CLIP ViT-L/14 weights).
    weights : {"real", "random"}
        Weights of the embedding models (recorded per metric).
    lowercase : bool
        Lowercase before BLEU tokenisation.
    n_boot, n_shuffles, random_state
        Bootstrap resamples (over items; corpus BLEU / WER are recomputed per
        resample), derangements of the shuffled-pairing control, seed.

    Returns
    -------
    result : dict
        ``result[metric]`` = {"value", "ci", "chance", "shuffled", "per_item",
        "higher_is_better"}; an unavailable METEOR is {"value": None, "reason": ...};
        plus ``"n_items"``, ``"weights"``, ``"metrics_version"``, ``"protocol"``.
    """
    from ._evaluate import METRICS_VERSION

    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    metrics = list(dict.fromkeys(metrics))
    for m in metrics:
        check_option(m, "metrics", TEXT_METRICS)
    hyps, refs = _as_refs(hypotheses, references)
    if int(n_shuffles) < 1:
        raise ValidationError(format_error("n_shuffles", "at least 1", n_shuffles))
    embeddings: dict[str, Any] = {}
    scores, used = _text_per_metric(hyps, refs, metrics, weights, device, verbose, lowercase, embeddings)
    shuffled: dict[str, list[float]] = {m: [] for m in metrics}
    if len(hyps) >= 2:
        rng = as_rng(random_state)
        for _ in range(int(n_shuffles)):
            perm = derangement(len(hyps), rng)
            s_scores, _ = _text_per_metric(hyps, [refs[j] for j in perm], metrics, weights, device, verbose, lowercase,
                                           embeddings, perm)
            for m, v in s_scores.items():
                if v is not None:
                    shuffled[m].append(v[0])
    out: dict[str, Any] = {}
    for m in metrics:
        entry = scores.get(m)
        if entry is None:
            out[m] = {"value": None, "ci": None, "chance": None, "shuffled": None,
                      "reason": meteor_available()[1] if m == "meteor" else "not computed"}
            continue
        value, per_item, stat = entry
        if stat is not None:
            ci = bootstrap_ci_stat(len(hyps), stat, n_boot=n_boot, random_state=random_state)
        else:
            ci = bootstrap_ci(per_item, n_boot=n_boot, random_state=random_state)
        out[m] = {
            "value": float(value), "ci": [ci[0], ci[1]], "chance": None,
            "shuffled": float(np.mean(shuffled[m])) if shuffled[m] else None,
            "per_item": per_item, "higher_is_better": m not in _LOWER_IS_BETTER,
        }
        used.setdefault(m, {"tier": "none", "source": {"wer": "jiwer"}.get(m, "rouge-score" if m.startswith("rouge")
                                                                             else "n-gram counts (NLTK corpus_bleu definition)")})
    out["n_items"] = len(hyps)
    out["weights"] = used
    out["metrics_version"] = METRICS_VERSION
    out["protocol"] = {"spec": "specs/metrics.md (Text)", "tokenizer": "whitespace" + (", lowercased" if lowercase else ""),
                       "n_boot": int(n_boot), "ci": 0.95, "random_state": random_state,
                       "n_references": int(max(len(r) for r in refs)),
                       "shuffled_control": f"shuffled pairing (hypotheses vs other items' references), mean of {int(n_shuffles)}"}
    return out
