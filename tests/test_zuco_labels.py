"""ZuCo's task_materials label tables: read in the release's layouts and matched to the recorded sentences."""

import numpy as np
import pytest

from neurodecode.data import load_zuco
from neurodecode.data._zuco_labels import RELATION_WORDS, match_labels, read_zuco_labels
from neurodecode.errors import DataIntegrityError
from neurodecode.testing import write_zuco_labels, write_zuco_subject


def _eeg(n, rng):
    return [rng.normal(size=(5, 20 + i)) for i in range(n)]


def test_sentiment_labels_match_by_text_and_skip_the_second_header(tmp_path):
    rng = np.random.default_rng(0)
    sents = ["It is a good film.", "Bad acting, worse plot.", "The cast is fine.", "A triumph of style.",
             "Nothing happens."]
    write_zuco_subject(tmp_path, "ZAB", task="SR", sentences=sents, eeg=_eeg(5, rng), version=1)
    # the table lists the sentences in another order, with a typographic apostrophe, plus one row unknown
    table_sents = [sents[3], sents[1], sents[0].replace("It is", "It\u2019s").replace("It\u2019s", "It is"),
                   "A sentence nobody read.", sents[4]]
    write_zuco_labels(tmp_path, version=1, task="SR", sentences=table_sents, labels=[1, -1, 1, 0, 0])
    tr = load_zuco(tmp_path, "ZAB", version=1, task="SR")
    assert tr.metadata["sentiment"].tolist() == ["positive", "negative", "", "positive", "neutral"]
    assert tr.metadata["relation"].tolist() == [""] * 5
    lab = tr.provenance["labels"]
    assert (lab["n_labelled"], lab["n_unmatched"], lab["kind"]) == (4, 1, "sentiment")


def test_relation_labels_fill_control_rows_and_resolve_repeats_by_position(tmp_path):
    rng = np.random.default_rng(1)
    # TSR repeats a sentence under two relations, one block apart (the release does this)
    sents = ["He won the prize.", "He studied law.", "He was born in Rome.", "She married him.",
             "He studied law.", "He founded a firm."]
    raw = ["AWARD", "AWARD", "CONTROL", "WIFE", "EDUCATION", "FOUNDER"]
    write_zuco_subject(tmp_path, "ZAB", task="TSR", sentences=sents, eeg=_eeg(6, rng), version=1)
    write_zuco_labels(tmp_path, version=1, task="TSR", sentences=sents, labels=raw)
    tr = load_zuco(tmp_path, "ZAB", version=1, task="TSR")
    assert tr.metadata["relation"].tolist() == ["awarding", "awarding", "awarding", "marriage", "education",
                                                "foundation"]
    assert tr.provenance["labels"]["n_ambiguous"] == 2


def test_zuco2_tsr_tables_without_header_over_several_files(tmp_path):
    rng = np.random.default_rng(2)
    sents = [f"Sentence number {i} about a person." for i in range(7)]
    raw = ["NATIONALITY", "CONTROL", "NATIONALITY", "VISITED", "VISITED", "CONTROL", "JOB_TITLE"]
    write_zuco_subject(tmp_path, "YAC", task="TSR", sentences=sents, eeg=_eeg(7, rng), version=2)
    paths = write_zuco_labels(tmp_path, version=2, task="TSR", sentences=sents, labels=raw, n_files=3)
    assert [p.name for p in paths] == ["tsr_1.csv", "tsr_2.csv", "tsr_3.csv"]
    texts, labels, files = read_zuco_labels(tmp_path, 2, "TSR")
    assert len(files) == 3 and texts == sents
    # files: rows 0-2, 3-4, 5-6; a CONTROL row takes its own file's relation (row 5: the next row, not row 4)
    expected = [RELATION_WORDS[x] for x in ["NATIONALITY", "NATIONALITY", "NATIONALITY", "VISITED", "VISITED",
                                            "JOB_TITLE", "JOB_TITLE"]]
    assert labels == expected
    tr = load_zuco(tmp_path, "YAC", version=2, task="TSR")
    assert tr.metadata["relation"].tolist() == expected


def test_no_tables_means_no_labels_and_nr_has_none(tmp_path):
    rng = np.random.default_rng(3)
    write_zuco_subject(tmp_path, "YAC", task="NR", sentences=["A.", "B."], eeg=_eeg(2, rng), version=2)
    tr = load_zuco(tmp_path, "YAC", version=2, task="NR")
    assert tr.metadata["sentiment"].tolist() == ["", ""] and tr.metadata["relation"].tolist() == ["", ""]
    assert read_zuco_labels(tmp_path, 2, "NR") is None
    assert read_zuco_labels(tmp_path, 2, "TSR") is None


def test_unknown_relation_type_is_refused_with_the_file(tmp_path):
    write_zuco_labels(tmp_path, version=1, task="TSR", sentences=["x."], labels=["SPOUSE"])
    with pytest.raises(DataIntegrityError, match="relations_labels_task3.csv"):
        read_zuco_labels(tmp_path, 1, "TSR")


def test_match_labels_against_hand_made_table():
    labels, info = match_labels(["a  b", "c", "d"], [0, 1, 2], ["c", "a b", "a b"], ["x", "y", "z"])
    # "a b" has two rows with different labels: nearest table row to position 0 is row 1 -> "y"
    assert labels.tolist() == ["y", "x", ""]
    assert info == {"n_labelled": 2, "n_unmatched": 1, "n_ambiguous": 1}
