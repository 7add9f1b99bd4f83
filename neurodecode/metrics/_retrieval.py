"""Ranking scores: one tie rule for every top-k, fMRI 300-way retrieval, M/EEG k-way, identification.

Every ranking score here goes through :func:`true_rank`: the rank of an item's own candidate is the
number of OTHER candidates at least as similar as it, so a tie is a miss (ATM's rule: the true class
is appended last and ``argmax`` breaks ties toward a distractor). A collapsed encoder (constant or
all-zero embeddings) therefore scores 0, never 100 %. :func:`topk_identification` is the one
function the metrics, the estimators and the training path use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._core.errors import ShapeMismatchError, ValidationError
from .._core.validation import check_array, format_error
from ._stats import as_rng

__all__ = ["retrieval_top1", "kway_topk", "cosine_similarity_matrix", "true_rank", "topk_identification",
           "identification_top1", "identification_with_control", "RETRIEVAL_COLUMNS"]

#: Retrieval keys and the published column each one reproduces (MindEye2, final_evaluations).
RETRIEVAL_COLUMNS = {
    "image_retrieval": "MindEye2 'Image retrieval' = FwdRetrieval: for each test image, its own brain sample "
                       "must be the most similar among the n_way brain samples (utils.py:82-88 transposes)",
    "brain_retrieval": "MindEye2 'Brain retrieval' = BwdRetrieval: for each brain sample, its own image must be "
                       "the most similar among the n_way images",
}


def _l2_rows(x: np.ndarray) -> np.ndarray:
    x = x.reshape(len(x), -1).astype(np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def _standard_rows(x: np.ndarray) -> np.ndarray:
    x = x.reshape(len(x), -1).astype(np.float64)
    x = x - x.mean(axis=1, keepdims=True)
    return _l2_rows(x)


def cosine_similarity_matrix(a: Any, b: Any) -> np.ndarray:
    """Cosine similarity between the flattened rows of ``a`` (n, ...) and ``b`` (m, ...): shape (n, m)."""
    a = check_array(a, "a", dtype="float")
    b = check_array(b, "b", dtype="float")
    return _l2_rows(a) @ _l2_rows(b).T


def true_rank(similarity: Any, labels: Any) -> np.ndarray:
    """Rank of each row's own candidate: how many OTHER candidates are at least as similar (0 = best).

    Ties are misses: a candidate exactly as similar as the true one ranks above it. A NaN
    similarity of the true candidate ranks it last; a NaN distractor ranks above it.

    Parameters
    ----------
    similarity : array-like of shape (n_rows, n_candidates)
        Higher is more similar.
    labels : array-like of int of shape (n_rows,)
        Column of each row's own candidate.

    Returns
    -------
    rank : ndarray of int of shape (n_rows,)
        A row is a top-``k`` hit when ``rank < k``.

    Examples
    --------
    >>> true_rank([[0.2, 0.9, 0.2], [0.0, 0.0, 0.0]], [1, 0]).tolist()
    [0, 2]
    """
    sim = np.asarray(similarity, dtype=np.float64)
    if sim.ndim != 2:
        raise ShapeMismatchError(format_error("similarity", "an array of shape (n_rows, n_candidates)", sim))
    y = np.asarray(labels)
    if y.shape != (len(sim),) or not np.issubdtype(y.dtype, np.integer) or (len(y) and (y.min() < 0
                                                                                       or y.max() >= sim.shape[1])):
        raise ValidationError(format_error("labels", f"{len(sim)} integers in [0, {sim.shape[1]})", y))
    rows = np.arange(len(sim))
    own = sim[rows, y]
    beats = (sim >= own[:, None]) | np.isnan(sim)
    beats[rows, y] = False
    rank = beats.sum(axis=1)
    rank[np.isnan(own)] = sim.shape[1] - 1
    return rank.astype(np.int64)


def topk_identification(emb: Any, candidates: Any, labels: Any = None, topk: Sequence[int] = (1, 5), *,
                        similarity: str = "cosine", per_item: bool = False) -> dict[int, Any]:
    """Share of rows whose own candidate is among the ``k`` most similar (ties are misses).

    Parameters
    ----------
    emb : array-like of shape (n_rows, ...)
        Predicted embeddings (flattened per row).
    candidates : array-like of shape (n_candidates, ...)
        Candidate embeddings, same feature count.
    labels : array-like of int of shape (n_rows,) or None
        Row of ``candidates`` that belongs to each row of ``emb``; default ``arange(n_rows)``.
    topk : sequence of int
        Ranks counted as a hit (chance ``k / n_candidates``).
    similarity : {"cosine", "pearson"}
        Cosine of the flattened rows, or their Pearson correlation.
    per_item : bool
        Return the 0/1 hits of every row instead of their mean.

    Returns
    -------
    scores : dict of int to float (or to ndarray of shape (n_rows,) with ``per_item``)
    """
    e = check_array(emb, "emb", dtype="float")
    c = check_array(candidates, "candidates", dtype="float")
    if e.ndim < 2 or c.ndim < 2 or int(np.prod(e.shape[1:])) != int(np.prod(c.shape[1:])):
        raise ShapeMismatchError(format_error("emb", f"rows with the feature count of candidates {c.shape[1:]}", e,
                                              "Embed the brain and the candidates into the same space"))
    if similarity not in ("cosine", "pearson"):
        raise ValidationError(format_error("similarity", "'cosine' or 'pearson'", repr(similarity)))
    norm = _l2_rows if similarity == "cosine" else _standard_rows
    sim = norm(e) @ norm(c).T
    if labels is None:
        if len(e) != len(c):
            raise ShapeMismatchError(format_error("labels", f"given when n_rows ({len(e)}) != n_candidates ({len(c)})",
                                                  None, "Pass labels=<candidate index of each row>"))
        labels = np.arange(len(e))
    rank = true_rank(sim, np.asarray(labels))
    return {int(k): (rank < int(k)).astype(float) if per_item else float(np.mean(rank < int(k))) for k in topk}


def identification_top1(pred: Any, target: Any) -> float:
    """Share of items whose prediction correlates best with their own target (chance ``1 / n``; ties miss).

    Parameters
    ----------
    pred, target : array-like of shape (n_items, ...)
        Predicted and true latents, same order (flattened per item; Pearson correlation).
    """
    return topk_identification(pred, target, None, (1,), similarity="pearson")[1]


def identification_with_control(pred: Any, target: Any) -> tuple[float, float]:
    """:func:`identification_top1`, and the same with each item paired to another item's target.

    The shuffled-brain control uses a fixed derangement: a seeded permutation (``default_rng(0)``)
    cyclically shifted by one, so no item keeps its own target.

    Returns
    -------
    top1, control : float
    """
    t = np.asarray(target)
    order = np.random.default_rng(0).permutation(len(t))
    wrong = np.empty_like(order)
    wrong[order] = np.roll(order, 1)
    return identification_top1(pred, t), identification_top1(pred, t[wrong])


def retrieval_top1(
    brain: Any,
    target: Any,
    n_way: int = 300,
    n_repeats: int = 30,
    random_state: Any = 0,
) -> dict[str, Any]:
    """fMRI retrieval top-1 among ``n_way`` random test samples, repeated, both published columns.

    MindEye / MindEye2 protocol: draw ``n_way`` test items without replacement, take the
    cosine similarity of the flattened, L2-normalised latents (e.g. 256 x 1664 CLIP tokens)
    and count a hit when an item's own partner is strictly the most similar (ties miss);
    repeat ``n_repeats`` times. Chance is ``1 / n_way``. The keys are the published columns
    (see ``RETRIEVAL_COLUMNS``): MindEye2's "Image retrieval" (FwdRetrieval) ranks the brain
    samples for each image, through a transpose in its ``utils.batchwise_cosine_similarity``.

    Parameters
    ----------
    brain : array-like of shape (n_items, ...)
        Latents predicted from the brain.
    target : array-like of shape (n_items, ...)
        The true latents of the same items (e.g. CLIP image embeddings of the stimuli).
    n_way : int
        Candidates per draw (300 in the papers). When there are fewer items, all
        items are used and the ``n_way`` reported says so.
    n_repeats : int
        Number of random draws (30 in the papers).
    random_state : int | numpy.random.Generator | None
        Seed of the draws.

    Returns
    -------
    result : dict
        ``"image_retrieval"`` (MindEye2's "Image retrieval" / FwdRetrieval: for each image,
        its own brain sample among the ``n_way`` brain samples) and ``"brain_retrieval"``
        ("Brain retrieval" / BwdRetrieval: for each brain sample, its own image among the
        images): mean top-1 accuracies; ``"per_repeat"``: arrays of shape (n_repeats,) for
        both; ``"per_item"``: each item's hit rate over the draws that contained it (NaN if
        never drawn), for bootstrap CIs; ``"chance"``, ``"n_way"``, ``"n_repeats"``,
        ``"random_state"``, ``"columns"`` (what each key reproduces).
    """
    b = check_array(brain, "brain", dtype="float")
    t = check_array(target, "target", dtype="float")
    if len(b) != len(t) or b.ndim < 2 or t.ndim < 2:
        raise ShapeMismatchError(
            format_error("brain", f"an array of shape (n_items, ...) with n_items = len(target) = {len(t)}", b,
                         "Pair each brain latent with its stimulus' latent, one row per item")
        )
    b = _l2_rows(b)
    t = _l2_rows(t)
    if b.shape[1] != t.shape[1]:
        raise ShapeMismatchError(format_error("brain", f"{t.shape[1]} features per item like target", b))
    n = len(b)
    if int(n_way) < 2 or int(n_repeats) < 1:
        raise ValidationError(format_error("n_way", "n_way >= 2 and n_repeats >= 1", (n_way, n_repeats)))
    k = min(int(n_way), n)
    if k < 2:
        raise ValidationError(format_error("brain", "at least 2 items", f"{n} item"))
    rng = as_rng(random_state)
    sim = b @ t.T  # sim[i, j] = cos(brain_i, image_j)
    keys = ("image_retrieval", "brain_retrieval")
    hits = {key: np.zeros(n) for key in keys}
    drawn = np.zeros(n)
    per_repeat = {key: np.empty(int(n_repeats)) for key in keys}
    own = np.arange(k)
    for rep in range(int(n_repeats)):
        idx = rng.choice(n, size=k, replace=False)
        s = sim[np.ix_(idx, idx)]
        got = {"image_retrieval": true_rank(s.T, own) == 0,  # each image -> the brain samples
               "brain_retrieval": true_rank(s, own) == 0}  # each brain sample -> the images
        for key in keys:
            per_repeat[key][rep] = got[key].mean()
            hits[key][idx] += got[key]
        drawn[idx] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        per_item = {key: np.where(drawn > 0, h / np.where(drawn > 0, drawn, 1), np.nan) for key, h in hits.items()}
    return {
        "image_retrieval": float(per_repeat["image_retrieval"].mean()),
        "brain_retrieval": float(per_repeat["brain_retrieval"].mean()),
        "per_repeat": per_repeat,
        "per_item": per_item,
        "chance": 1.0 / k,
        "n_way": k,
        "n_repeats": int(n_repeats),
        "random_state": random_state if not isinstance(random_state, np.random.Generator) else None,
        "columns": dict(RETRIEVAL_COLUMNS),
    }


def kway_topk(
    brain_emb: Any,
    concept_emb: Any,
    ks: tuple[int, ...] = (2, 4, 10, 50, 100, 200),
    topk: tuple[int, ...] = (1, 5),
    random_state: Any = 0,
    *,
    labels: Any = None,
) -> dict[str, Any]:
    """Zero-shot k-way identification of test concepts from M/EEG embeddings (ATM protocol).

    For each test trial, ``k - 1`` distractor concepts are drawn at random from the
    other test concepts and added to the true one; the trial counts as a top-``t`` hit
    when fewer than ``t`` distractors are at least as cosine-similar to its brain
    embedding as the true concept (:func:`true_rank`: ties are misses, as in ATM, so a
    collapsed encoder scores 0). Chance is ``t / k``. Top-``t`` is reported only where
    ``t < k``.

    Parameters
    ----------
    brain_emb : array-like of shape (n_trials, n_features)
        Embeddings predicted from the brain (e.g. averaged test repetitions).
    concept_emb : array-like of shape (n_concepts, n_features)
        Embeddings of the test concepts (200 for THINGS-EEG2 / THINGS-MEG).
    ks : tuple of int
        Numbers of candidates; each must be <= n_concepts.
    topk : tuple of int
        Ranks counted as a hit.
    random_state : int | numpy.random.Generator | None
        Seed of the distractor draws.
    labels : array-like of int of shape (n_trials,) or None
        Concept index of each trial; default ``arange(n_trials)`` (one trial per concept).

    Returns
    -------
    result : dict
        ``"top{t}@{k}"`` -> accuracy for each reported pair; ``"per_item"`` maps the same
        keys to arrays of shape (n_trials,) (0/1 hits); ``"chance"`` maps them to ``t / k``;
        ``"random_state"``.
    """
    x = _l2_rows(check_array(brain_emb, "brain_emb", ndim=2, dtype="float"))
    c = _l2_rows(check_array(concept_emb, "concept_emb", ndim=2, dtype="float"))
    if x.shape[1] != c.shape[1]:
        raise ShapeMismatchError(
            format_error("brain_emb", f"{c.shape[1]} features per trial like concept_emb", x,
                         "Embed the brain and the concepts into the same space")
        )
    n_concepts = len(c)
    if labels is None:
        if len(x) != n_concepts:
            raise ShapeMismatchError(
                format_error("labels", f"given when n_trials ({len(x)}) != n_concepts ({n_concepts})", None,
                             "Pass labels=<concept index of each trial>")
            )
        y = np.arange(len(x))
    else:
        y = check_array(labels, "labels", shape=(len(x),))
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= n_concepts:
            raise ValidationError(format_error("labels", f"integers in [0, {n_concepts})", y))
    ks = tuple(int(k) for k in ks)
    bad = [k for k in ks if k < 2 or k > n_concepts]
    if bad:
        raise ValidationError(
            format_error("ks", f"numbers of candidates in [2, {n_concepts}] (the test concepts)", bad,
                         "Drop the larger k or evaluate on more concepts")
        )
    rng = as_rng(random_state)
    sim = x @ c.T  # (n_trials, n_concepts)
    out: dict[str, Any] = {"per_item": {}, "chance": {}}
    rows = np.arange(len(x))
    for k in ks:
        ts = [t for t in topk if t < k]
        if not ts:
            continue
        cand = np.empty((len(x), k), dtype=np.int64)
        for i in range(len(x)):
            others = rng.permutation(n_concepts - 1)[: k - 1]
            cand[i, :-1] = others + (others >= y[i])  # skip the true concept
        cand[:, -1] = y  # the true concept last, as in ATM
        rank = true_rank(sim[rows[:, None], cand], np.full(len(x), k - 1))
        for t in ts:
            key = f"top{t}@{k}"
            h = (rank < t).astype(float)
            out[key] = float(h.mean())
            out["per_item"][key] = h
            out["chance"][key] = t / k
    out["random_state"] = random_state if not isinstance(random_state, np.random.Generator) else None
    return out
