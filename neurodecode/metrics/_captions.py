"""Caption metrics against COCO captions, as the brain-captioning papers report them (coco-caption protocol).

Brain Captioning, UMBRAE, NVL and Takagi & Nishimoto's "SDRecon" caption rows (NVL Table 1) are scored
with the COCO caption evaluation (``pycocoevalcap``: BLEU-1..4, METEOR 1.5, ROUGE-L, CIDEr-D, SPICE) plus
CLIP-S. Every caption of an image is a reference. Here:

- **tokenisation** (:func:`coco_tokenize`): a Python re-implementation of what coco-caption's
  ``PTBTokenizer`` (Stanford CoreNLP 3.4.1, ``-lowerCase``) does to captions, then its punctuation filter
  (which, applied after lower-casing, keeps the ``-lrb-`` / ``-rrb-`` bracket tokens, as the reference
  does). Checked against the Java tokenizer on typical captions; only a short list of abbreviations
  ("mr.", "st."...) and acronyms ("u.s.") keep their period, where CoreNLP knows many more;
- **BLEU-1..4** (:func:`coco_bleu`): corpus BLEU, the closest reference length per caption (the shorter
  on ties), coco-caption's 1e-15 / 1e-9 smoothing constants;
- **ROUGE-L** (:func:`coco_rouge_l`): per caption, the longest common subsequence against each reference,
  the best precision and the best recall over references combined with beta = 1.2; mean over captions;
- **CIDEr-D** (:func:`cider_d`, Vedantam et al. CVPR 2015, the ``CIDEr`` of coco-caption): tf-idf n-gram
  vectors (n = 1..4; raw counts as in the reference code; document frequencies over the evaluated
  images' reference sets), clipped cosine (``min(g_c, g_r) * g_r``), Gaussian length penalty sigma = 6,
  mean over references and n, times 10; mean over captions;
- **METEOR** (:func:`coco_meteor`): METEOR 1.5 itself (``meteor-1.5.jar`` of ``pycocoevalcap``, English,
  normalised, paraphrase table), which needs Java; NLTK's METEOR is another metric and is not used;
- **SPICE** (:func:`spice_scores`): ``spice-1.0.jar`` of ``pycocoevalcap``, which needs Java and Stanford
  CoreNLP 3.6.0's jars (downloaded once by ``pycocoevalcap``): unavailable otherwise, with the reason;
- **CLIP-S** (:func:`clip_score`, Hessel et al. EMNLP 2021): ``2.5 * max(cos(image, "A photo depicts " +
  caption), 0)`` in a CLIP space (default CLIP ViT-L/14; Hessel used ViT-B/32);
- **sentence similarity**: cosine of all-MiniLM-L6-v2 embeddings, best reference
  (:func:`neurodecode.metrics.embedding_similarity`).

Scores are on the 0-1 scale (CIDEr-D 0-10, CLIP-S 0-2.5); papers print them x 100.
"""

from __future__ import annotations

import math
import re
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import ShapeMismatchError, ValidationError
from .._core.validation import check_option, format_error
from ._deps import MissingDependencyError, require
from ._stats import METRICS_VERSION, as_rng, bootstrap_ci, bootstrap_ci_stat, derangement
from ._text import _as_refs, _bleu_counts, embedding_similarity

__all__ = ["CAPTION_METRICS", "CAPTION_DEFAULT_METRICS", "coco_tokenize", "coco_bleu", "coco_rouge_l", "cider_d",
           "coco_meteor", "spice_scores", "java_metric_available", "clip_score", "evaluate_captions"]

CAPTION_METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rougeL", "cider", "spice", "clip_s",
                   "sentence_sim")
#: Computed by default (``clip_s`` needs the stimulus images; SPICE is added when its jars are there).
CAPTION_DEFAULT_METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rougeL", "cider", "spice", "sentence_sim")

#: coco-caption's PTBTokenizer punctuation filter (its bracket entries are upper case and never match).
_PUNCTUATION = frozenset({"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-",
                          "--", "...", ";"})
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_TOKEN = re.compile(r"""
    n't                                  # split negation (do n't, ca n't)
  | '(?:s|re|ve|ll|d|m)\b                # split clitics ('s, 're...)
  | \d+(?:[.,:/]\d+)+                    # numbers: 3.5, 1,000, 10:30, 1/2
  | (?:[a-z]\.){2,}                      # acronyms: u.s.
  | (?:mr|mrs|ms|dr|jr|sr|st|mt|vs)\.    # abbreviations keep their period
  | [^\W_]+(?:[-'&/][^\W_]+)*            # words, hyphenated words (t-shirt)
  | \.\.\.|--|\S                         # punctuation, one mark at a time
""", re.VERBOSE)


def coco_tokenize(text: str) -> list[str]:
    """Tokens of a caption as coco-caption scores it: lower-cased PTB tokens, punctuation removed.

    Parameters
    ----------
    text : str

    Returns
    -------
    tokens : list of str
        E.g. ``"A dog's toy (red)."`` -> ``["a", "dog", "'s", "toy", "-lrb-", "red", "-rrb-"]``.
    """
    s = str(text).lower().replace("\n", " ")
    s = re.sub(r"(\w)n't\b", r"\1 n't", s)
    s = re.sub(r"(\w)'(s|re|ve|ll|d|m)\b", r"\1 '\2", s)
    tokens = [_BRACKETS.get(t, t) for t in _TOKEN.findall(s)]
    return [t for t in tokens if t not in _PUNCTUATION and t != '"']


def _tokenized(predictions: Sequence[str], references: Sequence[Any]) -> tuple[list[list[str]], list[list[list[str]]]]:
    hyps, refs = _as_refs(predictions, references)
    return [coco_tokenize(h) for h in hyps], [[coco_tokenize(r) for r in rs] for rs in refs]


def _join(hyps: list[list[str]], refs: list[list[list[str]]]) -> tuple[list[str], list[list[str]]]:
    return [" ".join(h) for h in hyps], [[" ".join(r) for r in rs] for rs in refs]


# ------------------------------------------------------------------------------------------------- BLEU
_TINY, _SMALL = 1e-15, 1e-9


def _coco_bleu_value(correct: np.ndarray, guess: np.ndarray, testlen: float, reflen: float, order: int) -> float:
    """coco-caption's BLEU-``order`` from (summed) clipped matches, n-gram counts and lengths."""
    value = 1.0
    for k in range(order):
        value *= (float(correct[k]) + _TINY) / (float(guess[k]) + _SMALL)
    value **= 1.0 / order
    ratio = (testlen + _TINY) / (reflen + _SMALL)
    if ratio < 1:
        value *= math.exp(1 - 1 / ratio)
    return float(value)


def coco_bleu(predictions: Sequence[str], references: Sequence[Any], *, max_n: int = 4) -> dict[str, Any]:
    """Corpus BLEU-1..``max_n`` with coco-caption's tokenisation, closest reference length and smoothing.

    Parameters
    ----------
    predictions : list of str
        One caption per image.
    references : list of str or list of list of str
        The image's reference captions (COCO: five).
    max_n : int

    Returns
    -------
    scores : dict
        ``"bleu1"``... corpus scores in [0, 1]; ``"per_item"``: the same keys mapped to per-caption BLEU
        (n_items,); ``"counts"``: (correct, guess, testlen, reflen) per caption, for bootstrap resampling.
    """
    hyps, refs = _join(*_tokenized(predictions, references))
    correct, _, testlen, reflen = _bleu_counts(hyps, refs, int(max_n), False, "shorter")
    guess = np.maximum(testlen[:, None] - np.arange(int(max_n))[None], 0)
    out: dict[str, Any] = {"per_item": {}, "counts": (correct, guess, testlen, reflen)}
    for order in range(1, int(max_n) + 1):
        out[f"bleu{order}"] = _coco_bleu_value(correct.sum(0), guess.sum(0), testlen.sum(), reflen.sum(), order)
        out["per_item"][f"bleu{order}"] = np.array([_coco_bleu_value(correct[i], guess[i], testlen[i], reflen[i],
                                                                     order) for i in range(len(hyps))])
    return out


# ---------------------------------------------------------------------------------------------- ROUGE-L
def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def coco_rouge_l(predictions: Sequence[str], references: Sequence[Any], *, beta: float = 1.2) -> np.ndarray:
    """Per-caption ROUGE-L as coco-caption: best LCS precision and best LCS recall over references, F(beta).

    Returns
    -------
    scores : ndarray of shape (n_items,)
        The published ROUGE-L is their mean.
    """
    hyps, refs = _tokenized(predictions, references)
    out = np.zeros(len(hyps))
    for i, (h, rs) in enumerate(zip(hyps, refs)):
        lcs = [_lcs(r, h) for r in rs]
        prec = max((c / len(h) if h else 0.0) for c in lcs)
        rec = max((c / len(r) if r else 0.0) for c, r in zip(lcs, rs))
        if prec > 0 and rec > 0:
            out[i] = (1 + beta ** 2) * prec * rec / (rec + beta ** 2 * prec)
    return out


# ---------------------------------------------------------------------------------------------- CIDEr-D
def _ngram_counts(tokens: list[str], max_n: int) -> list[Counter[tuple[str, ...]]]:
    return [Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)) for n in range(1, max_n + 1)]


def cider_d(predictions: Sequence[str], references: Sequence[Any], *, sigma: float = 6.0,
            max_n: int = 4) -> tuple[float, np.ndarray]:
    """CIDEr-D (coco-caption's ``CIDEr``): consensus of a caption with its image's references.

    ``10 / (n_refs * max_n) * sum_refs sum_n exp(-(l_c - l_r)^2 / (2 sigma^2)) * sum_g min(g_c, g_r) g_r /
    (|g_c| |g_r|)`` with ``g = count * (log(n_images) - log(max(1, df)))`` (df: the number of images whose
    references hold the n-gram), ``l`` the number of tokens.

    Parameters
    ----------
    predictions : list of str
    references : list of str or list of list of str
    sigma : float
        Width of the length penalty (6).
    max_n : int
        Highest n-gram order (4).

    Returns
    -------
    score : float
        Mean over captions (the published CIDEr, x 100 in tables).
    per_item : ndarray of shape (n_items,)
    """
    hyps, refs = _tokenized(predictions, references)
    ref_counts = [[_ngram_counts(r, max_n) for r in rs] for rs in refs]
    df: Counter[tuple[str, ...]] = Counter()
    for counts in ref_counts:
        df.update({g for rc in counts for per_n in rc for g in per_n})
    log_n = math.log(float(len(hyps)))

    def vec(counts: list[Counter[tuple[str, ...]]]) -> tuple[list[dict[tuple[str, ...], float]], np.ndarray]:
        vs = [{g: c * (log_n - math.log(max(1.0, df[g]))) for g, c in per_n.items()} for per_n in counts]
        return vs, np.array([math.sqrt(sum(v * v for v in d.values())) for d in vs])

    out = np.zeros(len(hyps))
    for i, (h, rs) in enumerate(zip(hyps, refs)):
        vh, nh = vec(_ngram_counts(h, max_n))
        total = 0.0
        for r, rc in zip(rs, ref_counts[i]):
            vr, nr = vec(rc)
            penalty = math.exp(-((len(h) - len(r)) ** 2) / (2 * sigma ** 2))
            for n in range(max_n):
                val = sum(min(v, vr[n].get(g, 0.0)) * vr[n].get(g, 0.0) for g, v in vh[n].items())
                if nh[n] != 0 and nr[n] != 0:
                    val /= nh[n] * nr[n]
                total += val * penalty
        out[i] = 10.0 * total / (max_n * len(rs))
    return float(out.mean()), out


# ------------------------------------------------------------------------------------- METEOR and SPICE
_SPICE_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")


def java_metric_available(metric: str) -> tuple[bool, str]:
    """Whether coco-caption's Java ``metric`` (``"meteor"`` or ``"spice"``) can run here, and why not."""
    check_option(metric, "metric", ("meteor", "spice"))
    name = "METEOR 1.5" if metric == "meteor" else "SPICE"
    try:
        pkg = require("pycocoevalcap", name)
    except MissingDependencyError as exc:
        return False, str(exc)
    if shutil.which("java") is None:
        return False, (f"{name} runs coco-caption's jar and needs Java 8 or later on the PATH (e.g. apt-get install "
                       "default-jre-headless); it is never estimated without it")
    if metric == "spice":
        lib = Path(pkg.__path__[0]) / "spice" / "lib"
        missing = [j for j in _SPICE_JARS if not (lib / j).is_file()]
        if missing:
            return False, (f"SPICE needs Stanford CoreNLP 3.6.0 in {lib} (missing: {', '.join(missing)}); on a machine "
                           "with network run `python -c \"from pycocoevalcap.spice.get_stanford_models import "
                           "get_stanford_models; get_stanford_models()\"` once")
    return True, ""


def _java_inputs(predictions: Sequence[str], references: Sequence[Any]) -> tuple[dict[int, list[str]], ...]:
    hyps, refs = _join(*_tokenized(predictions, references))
    return {i: rs for i, rs in enumerate(refs)}, {i: [h] for i, h in enumerate(hyps)}


def coco_meteor(predictions: Sequence[str], references: Sequence[Any], *,
                scorer: Any = None) -> tuple[float, np.ndarray]:
    """METEOR 1.5 (coco-caption's ``meteor-1.5.jar``: English, normalised, with its paraphrase table).

    Parameters
    ----------
    predictions, references
        As for :func:`coco_bleu`.
    scorer : pycocoevalcap.meteor.meteor.Meteor or None
        A running METEOR process to reuse (its JVM loads the paraphrase table once); ``None`` starts one
        and ends it.

    Returns
    -------
    score : float
        METEOR's corpus aggregate (what coco-caption reports; not the mean of ``per_item``).
    per_item : ndarray of shape (n_items,)

    Raises
    ------
    MissingDependencyError
        ``pycocoevalcap`` or Java is missing (the message says what to install).
    """
    ok, reason = java_metric_available("meteor")
    if not ok:
        raise MissingDependencyError(reason)
    from pycocoevalcap.meteor.meteor import Meteor

    gts, res = _java_inputs(predictions, references)
    own = scorer is None
    scorer = Meteor() if own else scorer  # one Java process; its __del__ ends it
    try:
        score, per_item = scorer.compute_score(gts, res)
    finally:
        if own:
            del scorer
    return float(score), np.asarray(per_item, dtype=float)


def spice_scores(predictions: Sequence[str], references: Sequence[Any]) -> tuple[float, np.ndarray]:
    """SPICE (coco-caption's ``spice-1.0.jar``): F-score of scene-graph tuples, mean over captions.

    Raises
    ------
    MissingDependencyError
        ``pycocoevalcap``, Java or Stanford CoreNLP 3.6.0's jars are missing (the message says how to get them).
    """
    ok, reason = java_metric_available("spice")
    if not ok:
        raise MissingDependencyError(reason)
    from pycocoevalcap.spice.spice import Spice

    gts, res = _java_inputs(predictions, references)
    score, items = Spice().compute_score(gts, res)
    return float(score), np.array([float(it["All"]["f"]) for it in items])


# ----------------------------------------------------------------------------------------------- CLIP-S
def clip_score(images: Any, captions: Sequence[str], *, weights: str = "real", space: str = "clip-vit-l-14",
               w: float = 2.5, prefix: str = "A photo depicts ", device: Any = "cpu",
               verbose: Any = None) -> np.ndarray:
    """CLIP-S (Hessel et al., EMNLP 2021): ``w * max(cos(image, prefix + caption), 0)`` per image.

    Parameters
    ----------
    images : ndarray of shape (n, H, W, 3)
        The stimulus images (uint8, or floats in [0, 1]).
    captions : list of str
        One decoded caption per image.
    weights : {"real", "random"}
        The CLIP weights of ``space`` and ``space + "-text"``, or their tiny random twins.
    space : str
        Image space of :func:`neurodecode.latents.get_space` whose ``-text`` twin embeds the captions in the same
        joint space (default CLIP ViT-L/14; Hessel et al. used ViT-B/32).
    w : float
        Rescaling weight (2.5).
    prefix : str
        Prepended to every caption (Hessel et al.'s "A photo depicts ").

    Returns
    -------
    scores : ndarray of shape (n,)
        In [0, w]; the published CLIP-S is their mean (x 100 in tables).
    """
    check_option(weights, "weights", ("real", "random"))
    from ..latents import get_space

    if isinstance(captions, str) or not all(isinstance(c, str) for c in captions):
        raise ValidationError(format_error("captions", "a list of str", captions, "Wrap a single caption in a list"))
    arr = np.asarray(images)
    if arr.ndim != 4 or len(arr) != len(captions):
        raise ShapeMismatchError(format_error("images", f"(n, H, W, 3) with n = {len(captions)} captions", arr,
                                              "Pass the stimulus images, one per caption, in the same order"))
    suffix = "" if weights == "real" else "-tiny"
    img_space = get_space(f"{space}{suffix}", device=device, verbose=verbose)
    txt_space = get_space(f"{space}-text{suffix}", device=device, verbose=verbose)
    ei = img_space.encode_images(arr).reshape(len(arr), -1)
    et = txt_space.encode_texts([prefix + c for c in captions]).reshape(len(arr), -1)
    ei = ei / np.maximum(np.linalg.norm(ei, axis=1, keepdims=True), 1e-12)
    et = et / np.maximum(np.linalg.norm(et, axis=1, keepdims=True), 1e-12)
    return float(w) * np.maximum((ei * et).sum(axis=1), 0.0)


# ----------------------------------------------------------------------------------------------- protocol
def _scores(preds: list[str], refs: list[list[str]], metrics: list[str], images: Any, weights: str, device: Any,
            verbose: Any, cache: dict[str, Any], perm: np.ndarray | None = None) -> dict[str, Any]:
    """``{metric: (value, per_item, bootstrap statistic or None)}`` or ``{metric: reason}`` when unavailable."""
    out: dict[str, Any] = {}
    bleu_keys = [m for m in metrics if m.startswith("bleu")]
    if bleu_keys:
        b = coco_bleu(preds, refs, max_n=max(int(k[-1]) for k in bleu_keys))
        c, g, t, r = b["counts"]
        for k in bleu_keys:
            order = int(k[-1])
            out[k] = (b[k], b["per_item"][k],
                      lambda idx, o=order: _coco_bleu_value(c[idx].sum(0), g[idx].sum(0), t[idx].sum(), r[idx].sum(), o))
    if "rougeL" in metrics:
        v = coco_rouge_l(preds, refs)
        out["rougeL"] = (float(v.mean()), v, None)
    if "cider" in metrics:
        value, v = cider_d(preds, refs)
        out["cider"] = (value, v, None)
    for key in ("meteor", "spice"):
        if key in metrics:
            ok, reason = java_metric_available(key)
            if not ok:
                out[key] = reason
                continue
            if key == "meteor":
                if "meteor_scorer" not in cache:
                    from pycocoevalcap.meteor.meteor import Meteor

                    cache["meteor_scorer"] = Meteor()
                value, v = coco_meteor(preds, refs, scorer=cache["meteor_scorer"])
            else:
                value, v = spice_scores(preds, refs)
            out[key] = (value, v, None)
    if "sentence_sim" in metrics:
        v, info = embedding_similarity(preds, refs, "minilm-l6", weights, device=device, verbose=verbose)
        out["sentence_sim"] = (float(v.mean()), v, None)
        cache["sentence_sim_source"] = info
    if "clip_s" in metrics:
        if images is None:
            out["clip_s"] = "CLIP-S scores a caption against its stimulus image: pass images=(n, H, W, 3)"
        else:
            imgs = images if perm is None else np.asarray(images)[perm]
            v = clip_score(imgs, preds, weights=weights, device=device, verbose=verbose)
            out["clip_s"] = (float(v.mean()), v, None)
    return out


def evaluate_captions(
    predictions: Sequence[str],
    references: Sequence[Any],
    *,
    images: Any = None,
    metrics: Any = CAPTION_DEFAULT_METRICS,
    weights: str = "real",
    n_boot: int = 1000,
    n_shuffles: int = 3,
    random_state: int = 0,
    device: Any = "cpu",
    verbose: Any = None,
) -> dict[str, Any]:
    """Score decoded captions with the coco-caption protocol, with CIs and a shuffled-pairing control.

    Parameters
    ----------
    predictions : list of str
        One decoded caption per test image.
    references : list of list of str
        The image's reference captions (COCO: five per image; or re-captions of the stimulus).
    images : ndarray of shape (n, H, W, 3) or None
        The stimulus images, for CLIP-S.
    metrics : sequence of str or str
        Among :data:`CAPTION_METRICS` (comma-separated string allowed).
    weights : {"real", "random"}
        Weights of the embedding models (all-MiniLM-L6-v2, CLIP), or their tiny random twins.
    n_boot, n_shuffles, random_state
        Bootstrap resamples over captions (corpus BLEU recomputed per resample), derangements of the
        shuffled-pairing control (captions against other images' references and images), seed.
    device, verbose
        For the embedding models.

    Returns
    -------
    result : dict
        ``result[metric]`` = {"value", "ci", "chance", "shuffled", "per_item", "higher_is_better"}; an
        unavailable metric is {"value": None, "reason": ...}; plus ``"n_items"``, ``"weights"``,
        ``"metrics_version"`` and ``"protocol"`` (name ``"coco-captions"``).
    """
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    metrics = list(dict.fromkeys(metrics))
    for m in metrics:
        check_option(m, "metrics", CAPTION_METRICS)
    preds, refs = _as_refs(predictions, references)
    if images is not None and len(np.asarray(images)) != len(preds):
        raise ShapeMismatchError(format_error("images", f"one stimulus image per caption ({len(preds)})",
                                              np.asarray(images), "Pass the test images in the captions' order"))
    if int(n_shuffles) < 1:
        raise ValidationError(format_error("n_shuffles", "at least 1", n_shuffles))
    cache: dict[str, Any] = {}
    shuffled: dict[str, list[float]] = {k: [] for k in metrics}
    try:
        scores = _scores(preds, refs, metrics, images, weights, device, verbose, cache)
        if len(preds) >= 2:
            rng = as_rng(random_state)
            for _ in range(int(n_shuffles)):
                perm = derangement(len(preds), rng)
                s = _scores(preds, [refs[j] for j in perm], metrics, images, weights, device, verbose, cache, perm)
                for k, v in s.items():
                    if isinstance(v, tuple):
                        shuffled[k].append(v[0])
    finally:
        cache.pop("meteor_scorer", None)  # ends the METEOR JVM
    out: dict[str, Any] = {}
    used: dict[str, Any] = {}
    for k in metrics:
        entry = scores[k]
        if not isinstance(entry, tuple):
            out[k] = {"value": None, "ci": None, "chance": None, "shuffled": None, "reason": entry}
            continue
        value, per_item, stat = entry
        ci = (bootstrap_ci_stat(len(preds), stat, n_boot=n_boot, random_state=random_state) if stat is not None
              else bootstrap_ci(per_item, n_boot=n_boot, random_state=random_state))
        out[k] = {"value": float(value), "ci": [ci[0], ci[1]], "chance": None,
                  "shuffled": float(np.mean(shuffled[k])) if shuffled[k] else None, "per_item": per_item,
                  "higher_is_better": True}
        if k == "sentence_sim":
            used[k] = cache["sentence_sim_source"]
        elif k == "clip_s":
            used[k] = {"tier": weights, "source": "CLIP ViT-L/14 image / text spaces (neurodecode.latents)"
                       + ("" if weights == "real" else ", tiny random twins: NOT the published weights")}
        else:
            used[k] = {"tier": "none", "source": _SOURCES[k]}
    out["n_items"] = len(preds)
    out["weights"] = used
    out["metrics_version"] = METRICS_VERSION
    out["protocol"] = {"name": "coco-captions", "spec": "coco-caption (pycocoevalcap) + CLIP-S (Hessel et al. 2021)",
                       "tokenizer": "coco_tokenize: lower-cased PTB tokens, coco-caption's punctuation filter",
                       "n_boot": int(n_boot), "ci": 0.95, "random_state": random_state,
                       "n_references": int(max(len(r) for r in refs)),
                       "shuffled_control": f"shuffled pairing (captions vs other images' references), mean of "
                                           f"{int(n_shuffles)}"}
    return out


_SOURCES = {**{f"bleu{n}": "corpus BLEU, coco-caption (closest reference length, 1e-15 / 1e-9 smoothing)"
               for n in range(1, 5)},
            "rougeL": "ROUGE-L, coco-caption (best LCS precision and recall, beta 1.2)",
            "cider": "CIDEr-D, coco-caption (sigma 6, clipped tf-idf, idf over the evaluated references)",
            "meteor": "METEOR 1.5 (pycocoevalcap's meteor-1.5.jar, Java)",
            "spice": "SPICE 1.0 (pycocoevalcap's spice-1.0.jar, Java)"}
