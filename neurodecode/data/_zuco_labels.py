"""ZuCo's sentence labels: sentiment (1.0 task SR) and relation type (task TSR), from ``task_materials/``.

ZuCo ships its stimulus tables beside the recordings (``data_specs/zuco.toml``, ``[labels]``):

- ZuCo 1.0 ``task_materials/sentiment_labels_task1.csv``: ``;``-separated, a header row naming
  ``sentence``, ``control`` and ``sentiment_label`` (``-1``, ``0``, ``1``);
- ZuCo 1.0 ``task_materials/relations_labels_task3.csv``: ``;``-separated, a header naming
  ``sentence`` and ``relation-type`` (``AWARD`` ... ``WIFE``, or ``CONTROL`` for the control
  sentences, which belong to the block of their neighbours);
- ZuCo 2.0 ``task_materials/tsr_<n>.csv`` (n = 1..7): ``;``-separated without header,
  ``paragraph_id;sentence_id;sentence;label``, one relation type per file plus ``CONTROL`` rows.

Labels become GLIM's words (its data preparation, step 2): sentiment ``-1 / 0 / 1`` ->
``negative / neutral / positive``; relations ``AWARD, EDUCATION, EMPLOYER, FOUNDER, JOB_TITLE,
NATIONALITY, POLITICAL_AFFILIATION, VISITED, WIFE`` -> ``awarding, education, employment, foundation,
job title, nationality, political affiliation, visit, marriage``. Like GLIM, only SR sentences get a
sentiment and only TSR sentences a relation (task NR's multi-relation table is not a class label).

A recording's sentence is matched to a table row by its text (whitespace collapsed, typographic
quotes and dashes made plain). A sentence that appears in several rows with different labels (task
TSR repeats some sentences under two relations) takes the row nearest its own position in the
file, since both follow the same block order; a sentence found in no row gets no label, and the
count is recorded in the provenance.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import DataIntegrityError
from .._core.specs import load_spec
from .._core.validation import format_error

__all__ = ["SENTIMENT_WORDS", "RELATION_WORDS", "read_zuco_labels", "match_labels", "normalise_sentence"]

#: ZuCo sentiment value -> GLIM's label word.
SENTIMENT_WORDS = {"-1": "negative", "0": "neutral", "1": "positive"}
#: ZuCo relation type -> GLIM's label words.
RELATION_WORDS = {"AWARD": "awarding", "EDUCATION": "education", "EMPLOYER": "employment", "FOUNDER": "foundation",
                  "JOB_TITLE": "job title", "NATIONALITY": "nationality",
                  "POLITICAL_AFFILIATION": "political affiliation", "VISITED": "visit", "WIFE": "marriage"}
_PLAIN = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-",
                        "\u2014": "-"})


def normalise_sentence(text: str) -> str:
    """The key a sentence is matched on: plain quotes and dashes, whitespace collapsed."""
    return re.sub(r"\s+", " ", str(text).translate(_PLAIN)).strip()


def _read_rows(path: Path) -> list[list[str]]:
    raw = path.read_bytes()
    for enc in ("utf-8-sig", "latin-1"):  # the release mixes encodings; latin-1 never fails
        try:
            text = raw.decode(enc)
            break
        except UnicodeDecodeError:
            continue
    return [row for row in csv.reader(io.StringIO(text), delimiter=";") if any(c.strip() for c in row)]


def _column(header: Sequence[str], names: Sequence[str], path: Path) -> int:
    low = [h.strip().lower() for h in header]
    for name in names:
        if name in low:
            return low.index(name)
    raise DataIntegrityError(format_error(f"header of {path}", f"a column named one of {list(names)}",
                                          f"columns {header}", "Check the file against ZuCo's task_materials"))


def _sentiment_table(path: Path) -> tuple[list[str], list[str]]:
    rows = _read_rows(path)
    if not rows:
        raise DataIntegrityError(format_error("file", "a header and labelled sentences", f"an empty {path}"))
    s_col = _column(rows[0], ("sentence",), path)
    l_col = _column(rows[0], ("sentiment_label", "sentiment label", "label"), path)
    texts, labels = [], []
    for row in rows[1:]:  # rows whose label is not -1/0/1 (the release's second header line) are skipped
        if len(row) > max(s_col, l_col) and row[l_col].strip() in SENTIMENT_WORDS:
            texts.append(row[s_col])
            labels.append(SENTIMENT_WORDS[row[l_col].strip()])
    return texts, labels


def _fill_control(labels: list[str], path: Path) -> list[str]:
    """Control sentences take the relation of their block (the previous labelled row, else the next)."""
    out = list(labels)
    for i, lab in enumerate(out):
        if lab == "CONTROL":
            left = next((out[j] for j in range(i - 1, -1, -1) if out[j] != "CONTROL"), None)
            right = next((labels[j] for j in range(i + 1, len(labels)) if labels[j] != "CONTROL"), None)
            out[i] = left or right or ""
    bad = sorted({x for x in out if x and x not in RELATION_WORDS})
    if bad:
        raise DataIntegrityError(format_error(f"relation labels in {path}", f"one of {sorted(RELATION_WORDS)} or "
                                              "CONTROL", ", ".join(bad[:5])))
    return [RELATION_WORDS.get(x, "") for x in out]


def _relation_table(path: Path, has_header: bool) -> tuple[list[str], list[str]]:
    rows = _read_rows(path)
    if has_header:
        if not rows:
            raise DataIntegrityError(format_error("file", "a header and labelled sentences", f"an empty {path}"))
        s_col = _column(rows[0], ("sentence",), path)
        l_col = _column(rows[0], ("relation-type", "relation_type", "relation type", "label"), path)
        body = rows[1:]
    else:  # paragraph_id;sentence_id;sentence;label
        s_col, l_col, body = 2, 3, rows
    body = [r for r in body if len(r) > max(s_col, l_col)]
    return [r[s_col] for r in body], _fill_control([r[l_col].strip().upper() for r in body], path)


def read_zuco_labels(root: str | Path, version: int, task: str) -> tuple[list[str], list[str], list[str]] | None:
    """Sentences and label words of ZuCo ``version``'s ``task`` from its ``task_materials`` tables.

    Parameters
    ----------
    root : path-like
        Root of the ZuCo version (the folder holding ``task_materials/`` and the task folders).
    version : {1, 2}
    task : {"SR", "NR", "TSR"}

    Returns
    -------
    table : tuple of (texts, labels, files) or None
        ``texts`` and ``labels`` (GLIM's words, see the module docstring) of equal length, in file
        order; ``files`` the tables read. ``None`` when the task has no label table (NR) or the
        tables are not under ``root`` (they are optional: the recordings load without them).
    """
    spec = load_spec("zuco").get("labels", {}).get(str(version), {})
    pattern = spec.get(task)
    if pattern is None:
        return None
    root = Path(root)
    files = ([root / pattern.format(n=n) for n in range(1, 100)] if "{n}" in pattern else [root / pattern])
    files = [f for f in files if f.is_file()]
    if not files:
        return None
    texts: list[str] = []
    labels: list[str] = []
    for f in files:
        if task == "SR":
            t, lab = _sentiment_table(f)
        else:
            t, lab = _relation_table(f, has_header="{n}" not in pattern)
        texts += t
        labels += lab
    return texts, labels, [str(f) for f in files]


def match_labels(texts: Sequence[str], positions: Sequence[int], table_texts: Sequence[str],
                 table_labels: Sequence[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """The label of each recorded sentence (``""`` where none), matched by text.

    Parameters
    ----------
    texts : sequence of str, length n_sentences
        The recorded sentences.
    positions : sequence of int, length n_sentences
        Each sentence's index in its recording file (breaks ties between rows of the same text).
    table_texts, table_labels : sequence of str
        From :func:`read_zuco_labels`.

    Returns
    -------
    labels : ndarray of str of shape (n_sentences,)
    info : dict
        ``n_labelled``, ``n_unmatched`` and ``n_ambiguous`` (resolved by position).
    """
    rows: dict[str, list[int]] = {}
    for j, t in enumerate(table_texts):
        rows.setdefault(normalise_sentence(t), []).append(j)
    out = np.full(len(texts), "", dtype=object)
    unmatched = ambiguous = 0
    for i, (t, pos) in enumerate(zip(texts, positions)):
        hits = rows.get(normalise_sentence(t), [])
        if not hits:
            unmatched += 1
            continue
        if len({table_labels[j] for j in hits}) > 1:
            ambiguous += 1
            hits = [min(hits, key=lambda j: abs(j - int(pos)))]
        out[i] = table_labels[hits[0]]
    labelled = int(sum(bool(x) for x in out))
    return out.astype(str), {"n_labelled": labelled, "n_unmatched": unmatched, "n_ambiguous": ambiguous}
