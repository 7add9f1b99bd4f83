"""EEG -> text ranking scores of GLIM's protocol: retrieval in blocks of 24 sentences, zero-shot classification.

Both rank candidates by the cosine similarity of the EEG embedding to text embeddings and use
:func:`~neurodecode.metrics.true_rank` (ties are misses).

- Retrieval (GLIM ``test_step`` with ``strict=True`` on its ``GLIMSampler`` batches): the test items,
  in their fixed order, are cut into blocks of ``block`` (24) items reading DISTINCT sentences; in
  each block an EEG embedding must find its own sentence's embedding among the block's sentences.
  Blocks are formed pass by pass: walk the remaining items in order, put an item in the open block
  unless its sentence is already there (then it waits), emit the block when full; the open block's
  items go back after the waiting ones; stop when fewer than ``block`` distinct sentences remain.
  The items left over are dropped (reported).
- Zero-shot classification: each EEG embedding against the embeddings of label sentences
  (:func:`zero_shot_prompts`, GLIM's templates), top-k accuracy over the items with a label
  (``-1`` = no label, ignored as GLIM's ``ignore_index=-1``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._core.errors import ShapeMismatchError, ValidationError
from .._core.validation import check_array, check_option, format_error
from ._retrieval import true_rank

__all__ = ["retrieval_blocks", "block_retrieval", "other_sentence_pairing", "ZERO_SHOT_TASKS", "zero_shot_prompts",
           "zero_shot_targets", "zero_shot_classification"]

#: GLIM's zero-shot tasks (model/glim.py): label names, the sentence template, the top-k reported.
ZERO_SHOT_TASKS: dict[str, dict[str, Any]] = {
    "sentiment": {"labels": ("negative", "neutral", "positive"),
                  "template": "Sentiment classification: It is <MASK>.", "topk": (1,)},
    "relation": {"labels": ("awarding", "education", "employment", "foundation", "job title", "nationality",
                            "political affiliation", "visit", "marriage"),
                 "template": "Relation classification: It is about <MASK>.", "topk": (1, 3)},
    # ZuCo task 1 (SR, movie reviews) against tasks 2 and 3 (NR / TSR, Wikipedia biographies)
    "corpus": {"labels": ("movie", "biography"), "topk": (1,),
               "sentences": ("The topic is about: movie, good or bad",
                             "The topic is about: life experiences, relationship")},
}
_CORPUS = {"task1": 0, "sr": 0, "task2": 1, "nr": 1, "task3": 1, "tsr": 1}


def _unit(x: np.ndarray) -> np.ndarray:
    x = x.reshape(len(x), -1).astype(np.float64)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n > 0, n, 1.0)


def retrieval_blocks(sentence_ids: Sequence[Any], block: int = 24) -> tuple[list[list[int]], list[int]]:
    """GLIM's fixed-order blocks of ``block`` items reading distinct sentences.

    Parameters
    ----------
    sentence_ids : sequence of hashable, length n_items
        Which sentence each test item read (its text, or a sentence id), in test order.
    block : int
        Items per block (24 in GLIM).

    Returns
    -------
    blocks : list of list of int
        Item indices of each full block, in the order formed.
    dropped : list of int
        Items in no block (sorted).
    """
    if int(block) < 2:
        raise ValidationError(format_error("block", "at least 2 items per block", block))
    block = int(block)
    remaining = list(range(len(sentence_ids)))
    ids = list(sentence_ids)
    blocks: list[list[int]] = []
    while len({ids[i] for i in remaining}) >= block:
        waiting: list[int] = []
        current: list[int] = []
        used: set[Any] = set()
        for i in remaining:
            if ids[i] in used:
                waiting.append(i)
                continue
            used.add(ids[i])
            current.append(i)
            if len(current) == block:
                blocks.append(current)
                current, used = [], set()
        remaining = waiting + current
    return blocks, sorted(remaining)


def block_retrieval(eeg_emb: Any, text_emb: Any, sentence_ids: Sequence[Any] | None = None, *, block: int = 24,
                    topk: Sequence[int] = (1, 5, 10)) -> dict[str, Any]:
    """EEG -> sentence retrieval top-k within GLIM's blocks of ``block`` distinct sentences.

    Parameters
    ----------
    eeg_emb : array-like of shape (n_items, dim)
        EEG embedding of each test item (GLIM's ``eeg_emb_vector``), in test order.
    text_emb : array-like of shape (n_items, dim)
        Embedding of the sentence each item read (GLIM's ``text_emb_vector``), same order.
    sentence_ids : sequence of hashable or None
        Sentence of each item (text or id); ``None``: every item reads its own sentence.
    block : int
        Candidates per block (24; chance ``k / block``).
    topk : sequence of int
        Ranks counted as a hit.

    Returns
    -------
    result : dict
        ``"top{k}"``: mean accuracy over the blocked items; ``"per_block"``: dict of
        ``"top{k}"`` -> ndarray of shape (n_blocks,); ``"per_item"``: ``"top{k}"`` -> ndarray of
        shape (n_items,) (NaN for dropped items); ``"chance"``; ``"blocks"``; ``"n_blocks"``;
        ``"dropped"`` (item indices left out); ``"block"``.
    """
    e = check_array(eeg_emb, "eeg_emb", dtype="float")
    t = check_array(text_emb, "text_emb", dtype="float")
    if e.ndim < 2 or t.shape != e.shape:
        raise ShapeMismatchError(format_error("text_emb", f"an array of shape {e.shape} (one row per EEG item)", t,
                                              "Embed the sentence each item read, in the same order"))
    sids = list(range(len(e))) if sentence_ids is None else list(sentence_ids)
    if len(sids) != len(e):
        raise ShapeMismatchError(format_error("sentence_ids", f"{len(e)} entries", f"{len(sids)}"))
    blocks, dropped = retrieval_blocks(sids, block)
    if not blocks:
        raise ValidationError(format_error("eeg_emb", f"at least {block} items reading distinct sentences",
                                           f"{len(set(sids))} distinct sentences", "Score more test items"))
    ks = [int(k) for k in topk]
    eu, tu = _unit(e), _unit(t)
    per_item = {f"top{k}": np.full(len(e), np.nan) for k in ks}
    per_block = {f"top{k}": np.empty(len(blocks)) for k in ks}
    for b, idx in enumerate(blocks):
        rank = true_rank(eu[idx] @ tu[idx].T, np.arange(len(idx)))
        for k in ks:
            hit = (rank < k).astype(float)
            per_item[f"top{k}"][idx] = hit
            per_block[f"top{k}"][b] = hit.mean()
    out: dict[str, Any] = {f"top{k}": float(per_block[f"top{k}"].mean()) for k in ks}
    out.update({"per_block": per_block, "per_item": per_item, "chance": {f"top{k}": min(1.0, k / block) for k in ks},
                "blocks": blocks, "n_blocks": len(blocks), "dropped": dropped, "block": int(block)})
    return out


def other_sentence_pairing(sentence_ids: Sequence[Any], random_state: int = 0) -> np.ndarray:
    """A fixed permutation pairing each item with an item that read another sentence (a shuffled-brain control).

    ``block_retrieval(eeg_emb[pairing], text_emb, sentence_ids)`` scores every item's sentence against the EEG
    of a trial that read something else, so it sits at chance whatever the model. Items reading the same
    sentence (several subjects, repeats) are never paired: a plain derangement could pair them and count a
    true match.

    Parameters
    ----------
    sentence_ids : sequence of hashable
        Sentence of each item.
    random_state : int
        Seed of the permutation.

    Returns
    -------
    pairing : ndarray of int, shape (n_items,)
        A permutation with ``sentence_ids[pairing[i]] != sentence_ids[i]`` for every i.
    """
    _, sid = np.unique(np.asarray([str(s) for s in sentence_ids]), return_inverse=True)
    n = len(sid)
    if n < 2 or np.bincount(sid).max() * 2 > n:
        raise ValidationError(format_error("sentence_ids", "items with no sentence read by more than half of them",
                                           f"{n} items, the most read sentence {int(np.bincount(sid).max()) if n else 0}"
                                           " times", "Score more distinct sentences"))
    rng = np.random.default_rng(random_state)
    pairing = rng.permutation(n)
    for _ in range(1000):  # swap the clashes away: each swap keeps a permutation
        bad = np.flatnonzero(sid[pairing] == sid)
        if not len(bad):
            return pairing
        for i in bad:
            j = int(rng.integers(n))
            if sid[pairing[j]] != sid[i] and sid[pairing[i]] != sid[j]:
                pairing[i], pairing[j] = pairing[j], pairing[i]
    raise ValidationError(format_error("sentence_ids", "a pairing of items with other sentences",  # pragma: no cover
                                       "none found in 1000 rounds"))


def zero_shot_prompts(task: str) -> list[str]:
    """The candidate sentences GLIM embeds for a zero-shot task (labels in their templates).

    Parameters
    ----------
    task : {"sentiment", "relation", "corpus"}

    Returns
    -------
    sentences : list of str
        One per class, in the class order of :func:`zero_shot_targets`.
    """
    check_option(task, "task", list(ZERO_SHOT_TASKS))
    spec = ZERO_SHOT_TASKS[task]
    if "sentences" in spec:
        return list(spec["sentences"])
    return [spec["template"].replace("<MASK>", label) for label in spec["labels"]]


def zero_shot_targets(task: str, labels: Sequence[Any]) -> np.ndarray:
    """Class index of each item for a zero-shot task (``-1`` where the item has no such label).

    Parameters
    ----------
    task : {"sentiment", "relation", "corpus"}
    labels : sequence of str or None
        Sentiment or relation label of each item (``"nan"``, ``""`` or ``None``: none); for
        ``"corpus"``, the ZuCo task of each item (``"task1"``/``"SR"`` -> movie,
        ``"task2"``/``"NR"``/``"task3"``/``"TSR"`` -> biography).

    Returns
    -------
    targets : ndarray of int of shape (n_items,)
    """
    check_option(task, "task", list(ZERO_SHOT_TASKS))
    out = np.full(len(labels), -1, dtype=np.int64)
    names = [str(x).strip().lower() for x in ZERO_SHOT_TASKS[task]["labels"]]
    for i, lab in enumerate(labels):
        key = "" if lab is None else str(lab).strip().lower()
        if task == "corpus":
            out[i] = _CORPUS.get(key, -1)
        elif key in names:
            out[i] = names.index(key)
    return out


def zero_shot_classification(eeg_emb: Any, candidate_emb: Any, targets: Any, topk: Sequence[int] = (1,)
                             ) -> dict[str, Any]:
    """Zero-shot top-k accuracy of EEG embeddings against class-sentence embeddings.

    Parameters
    ----------
    eeg_emb : array-like of shape (n_items, dim)
        EEG embedding of each item.
    candidate_emb : array-like of shape (n_classes, dim)
        Embeddings of :func:`zero_shot_prompts` (same text path as the sentences).
    targets : array-like of int of shape (n_items,)
        Class of each item, ``-1`` for none (ignored); see :func:`zero_shot_targets`.
    topk : sequence of int
        Ranks counted as a hit (GLIM: top-1; top-1 and top-3 for relations).

    Returns
    -------
    result : dict
        ``"top{k}"``: accuracy over the labelled items; ``"per_item"``: ``"top{k}"`` -> ndarray of
        shape (n_items,) (NaN when unlabelled); ``"predictions"``: most similar class per item;
        ``"n_scored"``; ``"chance"`` (``k / n_classes``).
    """
    e = check_array(eeg_emb, "eeg_emb", ndim=2, dtype="float")
    c = check_array(candidate_emb, "candidate_emb", ndim=2, dtype="float")
    if e.shape[1] != c.shape[1]:
        raise ShapeMismatchError(format_error("candidate_emb", f"{e.shape[1]} features like eeg_emb", c))
    y = np.asarray(targets)
    if y.shape != (len(e),) or not np.issubdtype(y.dtype, np.integer) or (len(y) and (y.min() < -1
                                                                                     or y.max() >= len(c))):
        raise ValidationError(format_error("targets", f"{len(e)} integers in [-1, {len(c)})", y))
    scored = y >= 0
    if not scored.any():
        raise ValidationError(format_error("targets", "at least one labelled item", "all -1"))
    sim = _unit(e) @ _unit(c).T
    rank = true_rank(sim[scored], y[scored])
    out: dict[str, Any] = {"per_item": {}, "chance": {}}
    for k in (int(k) for k in topk):
        hit = np.full(len(e), np.nan)
        hit[scored] = rank < k
        out[f"top{k}"] = float(np.nanmean(hit))
        out["per_item"][f"top{k}"] = hit
        out["chance"][f"top{k}"] = min(1.0, k / len(c))
    out["predictions"] = sim.argmax(axis=1)
    out["n_scored"] = int(scored.sum())
    return out
