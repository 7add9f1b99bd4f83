"""Retrieval metrics: fMRI 300-way top-1 (both directions) and M/EEG zero-shot k-way top-k."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._core.errors import ShapeMismatchError, ValidationError
from .._core.validation import check_array, format_error
from ._stats import as_rng

__all__ = ["retrieval_top1", "kway_topk", "cosine_similarity_matrix"]


def _l2_rows(x: np.ndarray) -> np.ndarray:
    x = x.reshape(len(x), -1).astype(np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def cosine_similarity_matrix(a: Any, b: Any) -> np.ndarray:
    """Cosine similarity between the flattened rows of ``a`` (n, ...) and ``b`` (m, ...): shape (n, m)."""
    a = check_array(a, "a", dtype="float")
    b = check_array(b, "b", dtype="float")
    return _l2_rows(a) @ _l2_rows(b).T


def retrieval_top1(
    brain: Any,
    target: Any,
    n_way: int = 300,
    n_repeats: int = 30,
    random_state: Any = 0,
) -> dict[str, Any]:
    """fMRI retrieval top-1 among ``n_way`` random test samples, repeated, both directions.

    MindEye / MindEye2 protocol: draw ``n_way`` test items without replacement, take
    the cosine similarity of the flattened, L2-normalised latents (e.g. 257 x 768
    CLIP tokens) and count a hit when an item's own partner is the most similar;
    repeat ``n_repeats`` times. Chance is ``1 / n_way``.

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
        ``"brain_to_image"`` (forward: find the image from the brain latent, the papers'
        "image retrieval") and ``"image_to_brain"`` (backward, "brain retrieval"): mean
        top-1 accuracies; ``"per_repeat"``: arrays of shape (n_repeats,) for both;
        ``"per_item"``: each item's hit rate over the draws that contained it (NaN if
        never drawn), for bootstrap CIs; ``"chance"``, ``"n_way"``, ``"n_repeats"``,
        ``"random_state"``.
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
    sim = b @ t.T  # sim[i, j] = cos(brain_i, target_j)
    hits = {"brain_to_image": np.zeros(n), "image_to_brain": np.zeros(n)}
    drawn = np.zeros(n)
    per_repeat = {key: np.empty(int(n_repeats)) for key in hits}
    for rep in range(int(n_repeats)):
        idx = rng.choice(n, size=k, replace=False)
        s = sim[np.ix_(idx, idx)]
        fwd = s.argmax(axis=1) == np.arange(k)  # each brain latent -> the images
        bwd = s.argmax(axis=0) == np.arange(k)  # each image -> the brain latents
        per_repeat["brain_to_image"][rep] = fwd.mean()
        per_repeat["image_to_brain"][rep] = bwd.mean()
        hits["brain_to_image"][idx] += fwd
        hits["image_to_brain"][idx] += bwd
        drawn[idx] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        per_item = {key: np.where(drawn > 0, h / np.where(drawn > 0, drawn, 1), np.nan) for key, h in hits.items()}
    return {
        "brain_to_image": float(per_repeat["brain_to_image"].mean()),
        "image_to_brain": float(per_repeat["image_to_brain"].mean()),
        "per_repeat": per_repeat,
        "per_item": per_item,
        "chance": 1.0 / k,
        "n_way": k,
        "n_repeats": int(n_repeats),
        "random_state": random_state if not isinstance(random_state, np.random.Generator) else None,
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
    when the true concept is among the ``t`` candidates most cosine-similar to its brain
    embedding. Chance is ``t / k``. Top-``t`` is reported only where ``t < k``.

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
    for k in ks:
        hits = {t: np.zeros(len(x)) for t in topk if t < k}
        if not hits:
            continue
        for i in range(len(x)):
            others = rng.permutation(n_concepts - 1)[: k - 1]
            others = others + (others >= y[i])  # skip the true concept
            cand_sims = sim[i, others]
            # rank of the true concept: number of distractors strictly more similar
            rank = int((cand_sims > sim[i, y[i]]).sum())
            for t in hits:
                hits[t][i] = rank < t
        for t, h in hits.items():
            key = f"top{t}@{k}"
            out[key] = float(h.mean())
            out["per_item"][key] = h
            out["chance"][key] = t / k
    out["random_state"] = random_state if not isinstance(random_state, np.random.Generator) else None
    return out
