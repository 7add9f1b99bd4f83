"""Zero-shot speech-segment identification (Défossez et al. 2023): top-k among N test segments, by subject.

For every test brain segment, the candidates are the speech features of the unique test segments (a segment
heard in several sessions or by several subjects is one candidate). Ranking uses the cosine between the
predicted features and each candidate (brainmagick's ClipLoss score ``<Z, Y / |Y|>`` ranks the candidates of
one segment the same way). Three levels:

- ``segment``: the segment itself must rank in the top ``k``;
- ``word``: candidates grouped by the word at their onset (a group's score is the mean of its segments'
  similarities); the true word must rank in the top ``k`` words;
- ``sentence``: the same with the sentence (or wav file) of each segment.

A tie is a miss (:func:`~neurodecode.metrics.true_rank`). Each score comes with a bootstrap 95 % CI over the
brain segments, its chance level (``k / n_candidates``) and a shuffled control: the same ranking with the
brain segments' candidates permuted (a seeded derangement).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._core.errors import ShapeMismatchError, ValidationError
from .._core.validation import check_array, format_error
from ._retrieval import true_rank
from ._stats import as_rng, bootstrap_ci, derangement

__all__ = ["segment_retrieval", "SEGMENT_LEVELS", "SPEECH_PAPER_RESULTS"]

SEGMENT_LEVELS = ("segment", "word", "sentence")

#: Published numbers (comparison rows; ``source`` says where each comes from).
SPEECH_PAPER_RESULTS: list[dict[str, Any]] = [
    {"dataset": "meg-masc + mous (MEG)", "metric": "segment top-1", "value": 0.41, "n_candidates": ">1,000",
     "source": "Défossez et al. 2023, Nat. Mach. Intell. 5:1097, abstract: 'up to 41% accuracy out of more than "
               "1,000 distinct possibilities on average across participants' (3 s of MEG)"},
    {"dataset": "meg-masc + mous (MEG)", "metric": "segment top-1 (best participants)", "value": 0.80,
     "n_candidates": ">1,000", "source": "Défossez et al. 2023, abstract: 'up to 80% in the best participants'"},
    {"dataset": "MEG", "metric": "segment top-10", "value": 0.725, "n_candidates": 1594,
     "source": "issue 23 (neurodecode tracker), quoting the paper; the per-dataset table was not retrieved here: "
               "unverified"},
]


def _l2(x: np.ndarray) -> np.ndarray:
    x = x.reshape(len(x), -1).astype(np.float64)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)


def _group_scores(sim: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean similarity per group: (n_rows, n_groups) and the group index of each candidate."""
    names, inv = np.unique(groups, return_inverse=True)
    out = np.zeros((len(sim), len(names)))
    np.add.at(out.T, inv, sim.T)
    return out / np.bincount(inv, minlength=len(names))[None, :], inv


def _scores(sim: np.ndarray, labels: np.ndarray, topk: Sequence[int], n_boot: int, rng: np.random.Generator,
            control_perm: np.ndarray) -> dict[str, Any]:
    rank = true_rank(sim, labels)
    ctrl = true_rank(sim, labels[control_perm])
    out: dict[str, Any] = {"n_queries": int(len(sim)), "n_candidates": int(sim.shape[1])}
    for k in topk:
        hits = (rank < k).astype(float)
        out[f"top{k}"] = float(hits.mean())
        out[f"top{k}_ci"] = list(bootstrap_ci(hits, n_boot=n_boot, random_state=rng)) if len(hits) > 1 else None
        out[f"chance_top{k}"] = min(1.0, k / sim.shape[1])
        out[f"shuffled_top{k}"] = float((ctrl < k).mean())
    out["mean_rank"] = float(rank.mean() + 1)
    return out


def segment_retrieval(
    predicted: Any,
    candidates: Any,
    labels: Any,
    *,
    words: Sequence[str] | None = None,
    sentences: Sequence[str] | None = None,
    subjects: Sequence[str] | None = None,
    topk: Sequence[int] = (1, 10),
    n_boot: int = 1000,
    random_state: Any = 0,
) -> dict[str, Any]:
    """Segment, word and sentence identification of predicted speech features among the test candidates.

    Parameters
    ----------
    predicted : array-like of shape (n_segments, ...)
        Predicted speech features of the brain segments (e.g. ``(n, 1024, 360)``).
    candidates : array-like of shape (n_candidates, ...)
        Speech features of the unique test segments.
    labels : array-like of int of shape (n_segments,)
        Candidate of each brain segment.
    words, sentences : sequence of str of length n_candidates, or None
        Word and sentence of each candidate (the ``word`` / ``sentence`` levels are skipped without them).
    subjects : sequence of str of length n_segments, or None
        Subject of each brain segment: scores are also reported per subject (``by_subject``).
    topk : sequence of int
        Ranks counted as hits (the paper: 1 and 10).
    n_boot : int
        Bootstrap resamples of the CIs.
    random_state : int or Generator
        Seed of the bootstrap and of the shuffled control.

    Returns
    -------
    scores : dict
        ``{"segment": {...}, "word": {...}, "sentence": {...}, "by_subject": {subject: {level: {...}}},
        "topk": [...]}``; each level holds ``top{k}``, ``top{k}_ci``, ``chance_top{k}``, ``shuffled_top{k}``,
        ``mean_rank``, ``n_queries``, ``n_candidates``.
    """
    p = check_array(predicted, "predicted", dtype="float")
    c = check_array(candidates, "candidates", dtype="float")
    if p.ndim < 2 or p.shape[1:] != c.shape[1:]:
        raise ShapeMismatchError(format_error("predicted", f"segments shaped like the candidates {c.shape[1:]}", p,
                                              "Predict the same speech features the candidates hold"))
    y = np.asarray(labels)
    if y.shape != (len(p),) or not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= len(c):
        raise ValidationError(format_error("labels", f"{len(p)} candidate indices in [0, {len(c)})", y))
    if len(c) < 2:
        raise ValidationError(format_error("candidates", "at least 2 test segments", len(c)))
    groups = {"word": words, "sentence": sentences}
    for name, g in groups.items():
        if g is not None and len(g) != len(c):
            raise ShapeMismatchError(format_error(name, f"one entry per candidate ({len(c)})", len(g)))
    subs = np.asarray(subjects if subjects is not None else ["all"] * len(p), dtype=str)
    if len(subs) != len(p):
        raise ShapeMismatchError(format_error("subjects", f"one per segment ({len(p)})", len(subs)))
    rng = as_rng(random_state)
    sim = _l2(p) @ _l2(c).T
    ks = [int(k) for k in topk]

    def levels(rows: np.ndarray) -> dict[str, Any]:
        perm = derangement(len(rows), rng) if len(rows) > 1 else np.zeros(1, dtype=np.int64)
        out = {"segment": _scores(sim[rows], y[rows], ks, n_boot, rng, perm)}
        for name, g in groups.items():
            if g is not None:
                gs, inv = _group_scores(sim[rows], np.asarray(g, dtype=str))
                out[name] = _scores(gs, inv[y[rows]], ks, n_boot, rng, perm)
        return out

    result: dict[str, Any] = levels(np.arange(len(p)))
    result["by_subject"] = {str(s): levels(np.flatnonzero(subs == s)) for s in np.unique(subs)}
    result["topk"] = ks
    return result
