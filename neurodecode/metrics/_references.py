"""The references of decoded sentences on disk: ``references.tsv``, and paraphrase tables to merge into it.

``references.tsv`` (UTF-8, tab-separated, one header line, one row per decoded item)::

    sub  stim    subject   task  sentence_index  reference           paraphrase_1      ...  paraphrase_K
    YAG  NR0012  zuco/YAG  NR    12              <the sentence read> <a paraphrase>    ...  <a paraphrase>

- ``sub`` (subject label, may be empty: the row then serves every subject) and ``stim`` (the
  stimulus label of the ``*_stim-<stim>_..._recon.txt`` file) identify the item;
- ``reference`` is the sentence read (GLIM's "raw" target, WER's reference);
- ``paraphrase_1`` ... ``paraphrase_K`` (optional, possibly empty cells) are its paraphrases
  (GLIM's 8 variants, BLEU's "@paraphrases" references);
- other columns (``subject``, ``task``, ``sentence_index``...) are carried as they are.

Older files with several rows per item (one reference each, the sentence read first) are read
the same way. :func:`read_references` returns ``{(sub or None, stim): [sentence read,
paraphrase 1, ...]}``, the ``references`` argument of :func:`~neurodecode.metrics.evaluate_text`.

Paraphrase tables are the user's (e.g. GLIM's released table, exported to CSV/TSV; we never
ship it): :func:`read_paraphrases` reads one keyed by the sentence read, :func:`merge_paraphrases`
adds its paraphrases to the rows that :func:`write_references` writes.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .._core.errors import MissingFileError, ValidationError
from .._core.files import atomic_write
from .._core.validation import format_error

__all__ = ["REFERENCE_COLUMNS", "GLIM_PARAPHRASE_COLUMNS", "read_references", "write_references",
           "read_paraphrases", "merge_paraphrases", "reference_key"]

#: Leading columns of references.tsv (paraphrase_1..K follow).
REFERENCE_COLUMNS = ("sub", "stim", "subject", "task", "sentence_index", "reference")
#: The 8 paraphrase columns of GLIM's released table (data/datamodule.py), in GLIM's order.
GLIM_PARAPHRASE_COLUMNS = ("lexical simplification (v0)", "lexical simplification (v1)", "semantic clarity (v0)",
                           "semantic clarity (v1)", "syntax simplification (v0)", "syntax simplification (v1)",
                           "naive rewritten", "naive simplified")
_SENTENCE_COLUMNS = ("reference", "sentence", "input text", "raw", "text")
_PARA = re.compile(r"^paraphrase[_ ]?(\d+)$")


def _cell(value: Any) -> str:
    return re.sub(r"[\t\r\n]+", " ", "" if value is None else str(value)).strip()


def _norm_sentence(text: str) -> str:
    return " ".join(str(text).split())


def reference_key(stim: Any, sub: Any = None) -> tuple[str | None, str]:
    """The ``(sub label or None, stim id)`` key of an item (``sub-``/``stim-`` prefixes and zero padding dropped)."""
    st = str(stim).strip()
    st = st[len("stim-"):] if st.startswith("stim-") else st
    st = str(int(st)) if st.isdigit() else st
    su = None if sub in (None, "") else str(sub).strip()
    return (su[len("sub-"):] if su and su.startswith("sub-") else su), st


def _para_columns(head: Sequence[str]) -> list[str]:
    cols = [(int(m.group(1)), c) for c in head if (m := _PARA.match(c.strip().lower()))]
    return [c for _, c in sorted(cols)]


def read_references(path: str | os.PathLike[str]) -> dict[tuple[str | None, str], list[str]]:
    """References by item from a ``references.tsv`` (module docstring) or a JSON file.

    Parameters
    ----------
    path : path-like
        ``references.tsv`` (or a folder holding one), or ``.json``
        ``{stim_id: sentence or [sentence read, paraphrases...]}`` (keys ``<id>``,
        ``stim-<id>`` or ``sub-XX/stim-<id>``).

    Returns
    -------
    references : dict of (str or None, str) to list of str
        The sentence read first, then its paraphrases.
    """
    p = Path(path).expanduser()
    if p.is_dir() and (p / "references.tsv").is_file():  # a reconstruct output folder
        p = p / "references.tsv"
    if not p.is_file():
        raise MissingFileError(format_error(
            "truth", "a references.tsv or a JSON file {stim_id: sentence} for the sentences",
            f"{'no references.tsv in' if p.is_dir() else 'nothing at'} {p}",
            "Pass --truth, or the --out folder of `neurodecode reconstruct` (it writes references.tsv)"))
    out: dict[tuple[str | None, str], list[str]] = {}
    if p.suffix.lower() == ".json":
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValidationError(format_error("truth", "valid JSON", f"{p}: {exc}")) from None
        if not isinstance(doc, dict):
            raise ValidationError(format_error("truth", "a JSON object {stim_id: sentence or [sentences]}",
                                               f"a JSON {type(doc).__name__} in {p}"))
        for key, value in doc.items():
            sub, _, stim = str(key).rpartition("/")
            refs = [value] if isinstance(value, str) else list(value) if isinstance(value, list) else None
            if not refs or not all(isinstance(r, str) for r in refs):
                raise ValidationError(format_error("truth", "a sentence or a list of sentences per stimulus",
                                                   f"{value!r} for {key!r} in {p}"))
            out.setdefault(reference_key(stim, sub or None), []).extend(refs)
        return out
    lines = p.read_text(encoding="utf-8").splitlines()
    head = lines[0].split("\t") if lines else []
    if "stim" not in head or "reference" not in head:
        raise ValidationError(format_error("truth", "a tab-separated file with a header naming 'stim' and "
                                           "'reference' (and optionally 'sub', 'paraphrase_1'...)",
                                           f"columns {head} in {p}",
                                           "Use the references.tsv `neurodecode reconstruct` writes, or a JSON file"))
    paras = _para_columns(head)
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        row = dict(zip(head, line.split("\t")))
        if not row.get("stim") or "reference" not in row:
            raise ValidationError(format_error("truth", f"a stim and a reference on every row of {p}",
                                               f"line {n}: {line[:80]!r}"))
        refs = [row["reference"]] + [row[c] for c in paras if row.get(c, "").strip()]
        out.setdefault(reference_key(row["stim"], row.get("sub")), []).extend(refs)
    return out


def _rows_of(path: Path) -> list[dict[str, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        return []
    head = lines[0].split("\t")
    return [dict(zip(head, line.split("\t"))) for line in lines[1:] if line.strip()]


def write_references(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]], *,
                     paraphrases: Mapping[str, Sequence[str]] | None = None, merge: bool = True) -> Path:
    """Write (or update) a ``references.tsv`` atomically: one row per (sub, stim), the new row wins.

    Parameters
    ----------
    path : path-like
        The file (``OUT/references.tsv``).
    rows : iterable of mapping
        One per item: ``"sub"``, ``"stim"``, ``"reference"`` (the sentence read), optionally
        ``"paraphrases"`` (list of str) and any other column (``"subject"``, ``"task"``...).
    paraphrases : mapping of str to list of str or None
        A paraphrase table (:func:`read_paraphrases`) merged into rows without paraphrases,
        by the sentence read.
    merge : bool
        Keep the rows of an existing file that ``rows`` do not replace (one subject at a
        time into one folder).

    Returns
    -------
    path : Path
    """
    target = Path(path)
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    if merge and target.is_file():
        for r in _rows_of(target):
            paras = [r[c] for c in _para_columns(list(r)) if r.get(c, "").strip()]
            merged[(r.get("sub", ""), r.get("stim", ""))] = {**{k: v for k, v in r.items()
                                                                if not _PARA.match(k.lower())}, "paraphrases": paras}
    new = [dict(r) for r in rows]
    if paraphrases is not None:
        new, _ = merge_paraphrases(new, paraphrases)
    for r in new:
        if not str(r.get("stim", "")).strip() or r.get("reference") is None:
            raise ValidationError(format_error("rows", "a 'stim' and a 'reference' in every row", dict(r)))
        merged[(_cell(r.get("sub", "")), _cell(r["stim"]))] = r
    extra = [c for r in merged.values() for c in r if c not in REFERENCE_COLUMNS and c != "paraphrases"
             and not _PARA.match(str(c).lower())]
    columns = list(REFERENCE_COLUMNS) + list(dict.fromkeys(extra))
    k = max([len(r.get("paraphrases") or []) for r in merged.values()] + [0])
    with atomic_write(target) as fh:
        fh.write("\t".join(columns + [f"paraphrase_{i + 1}" for i in range(k)]) + "\n")
        for r in merged.values():
            paras = [_cell(x) for x in (r.get("paraphrases") or [])]
            cells = [_cell(r.get(c, "")) for c in columns] + paras + [""] * (k - len(paras))
            fh.write("\t".join(cells) + "\n")
    return target


def read_paraphrases(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """A user-supplied paraphrase table, keyed by the sentence read (whitespace-normalised).

    Parameters
    ----------
    path : path-like
        ``.tsv`` / ``.csv`` with a header: the sentence read in a column named ``reference``,
        ``sentence`` or ``input text`` (GLIM's name), its paraphrases in the columns named
        ``paraphrase_1``... or GLIM's 8 variant columns (``GLIM_PARAPHRASE_COLUMNS``, their
        order kept); or ``.json`` ``{sentence: [paraphrases]}``. GLIM's released table is a
        pandas pickle: export it once with ``pandas.read_pickle(f).to_csv("glim.csv")``
        (neurodecode never unpickles it).

    Returns
    -------
    table : dict of str to list of str
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise MissingFileError(format_error("paraphrases", "a paraphrase table (.tsv, .csv or .json)",
                                            f"nothing at {p}"))
    if p.suffix.lower() == ".json":
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValidationError(format_error("paraphrases", "valid JSON", f"{p}: {exc}")) from None
        if not isinstance(doc, dict) or not all(isinstance(v, list) and all(isinstance(x, str) for x in v)
                                                for v in doc.values()):
            raise ValidationError(format_error("paraphrases", "a JSON object {sentence: [paraphrases]}", str(p)))
        return {_norm_sentence(k): list(v) for k, v in doc.items()}
    if p.suffix.lower() not in (".tsv", ".csv", ".txt"):
        raise ValidationError(format_error("paraphrases", "a .tsv, .csv or .json table", str(p),
                                           "Export a pandas table with DataFrame.to_csv"))
    text = p.read_text(encoding="utf-8")
    reader = csv.DictReader(io.StringIO(text), delimiter="\t" if p.suffix.lower() != ".csv" else ",")
    head = [c for c in (reader.fieldnames or [])]
    lower = {c.strip().lower(): c for c in head}
    sent_col = next((lower[c] for c in _SENTENCE_COLUMNS if c in lower), None)
    paras = _para_columns(head) or [lower[c] for c in GLIM_PARAPHRASE_COLUMNS if c in lower]
    if sent_col is None or not paras:
        raise ValidationError(format_error(
            "paraphrases", "a header with the sentence read ('reference', 'sentence' or 'input text') and "
            "paraphrase columns ('paraphrase_1'... or GLIM's 8 variant columns)", f"columns {head} in {p}"))
    table: dict[str, list[str]] = {}
    for row in reader:
        key = _norm_sentence(row.get(sent_col) or "")
        if key:
            table.setdefault(key, [(row.get(c) or "").strip() for c in paras if (row.get(c) or "").strip()])
    return table


def merge_paraphrases(rows: Iterable[Mapping[str, Any]], table: Mapping[str, Sequence[str]]
                      ) -> tuple[list[dict[str, Any]], list[int]]:
    """Add to each row the paraphrases of its sentence read (exact match after whitespace normalisation,
    else case-insensitive).

    Parameters
    ----------
    rows : iterable of mapping
        Rows with a ``"reference"`` (the sentence read); rows that already carry
        ``"paraphrases"`` keep them.
    table : mapping of str to list of str
        From :func:`read_paraphrases`.

    Returns
    -------
    rows : list of dict
        Copies, with ``"paraphrases"`` set where found.
    missing : list of int
        Positions of the rows the table has no paraphrases for.
    """
    norm = {_norm_sentence(k): list(v) for k, v in table.items()}
    folded = {k.casefold(): v for k, v in norm.items()}
    out: list[dict[str, Any]] = []
    missing: list[int] = []
    for i, r in enumerate(rows):
        row = dict(r)
        if not row.get("paraphrases"):
            key = _norm_sentence(row.get("reference", ""))
            found = norm.get(key) or folded.get(key.casefold())
            if found:
                row["paraphrases"] = list(found)
            else:
                missing.append(i)
        out.append(row)
    return out, missing
