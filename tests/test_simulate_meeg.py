"""Known-answer THINGS-EEG2 / THINGS-MEG / ZuCo: layouts read back by the real loaders, ceilings, controls."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from neurodecode.cli import app
from neurodecode.data import convert_things_eeg2, load_things_eeg2, load_things_meg, load_zuco
from neurodecode.simulate import _forward as fw
from neurodecode.simulate import load_truth, make_sentences, simulate_things_eeg2, simulate_things_meg, simulate_zuco


def _check_data(dataset, root, *subjects):
    args = [a for s in subjects for a in ("--subject", str(s))]
    result = CliRunner().invoke(app, ["check-data", dataset, str(root), "--json", *args])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and report["subjects"]
    return report


EEG_SMALL = {"n_train_concepts": 3, "images_per_concept": 4, "n_test": 7, "train_repetitions": 2,
             "test_repetitions": 8}


@pytest.fixture(scope="module")
def eeg(tmp_path_factory):
    return simulate_things_eeg2(tmp_path_factory.mktemp("eeg") / "out", subjects=(2,), seed=1, **EEG_SMALL)


def test_things_eeg2_layout_read_back_by_the_loader(eeg):
    trials = load_things_eeg2(eeg.root, 2, allow_pickle=True)  # pickled dicts, as published
    assert trials.X.shape == (3 * 4 * 2 + 7 * 8, 63, 250) and trials.sfreq == 250.0
    assert trials.ch_names == list(fw.EEG63) and np.isclose(trials.times[0], 0.0)
    assert "the last 250" in trials.provenance["times"]  # the files keep the 300-entry epoch times
    train_con = set(trials.metadata["concept"][trials.split == "train"])
    test_con = set(trials.metadata["concept"][trials.split == "test"])
    assert len(train_con) == 3 and len(test_con) == 7 and not train_con & test_con
    np.testing.assert_allclose(trials.X[trials.split == "test"].reshape(7, 8, 63, 250), eeg.data[2]["test"])
    stim = load_truth(eeg.out, "stimuli")
    # zero-shot: test images come from classes never used in training
    assert not set(stim["test_labels"]) & set(stim["train_labels"])
    assert list(stim["test_files"]) == list(dict.fromkeys(trials.stimulus_ids[trials.split == "test"]))
    # a user's first step: convert the pickled files once; then `neurodecode check-data` validates the tree
    convert_things_eeg2(eeg.root, 2, allow_pickle=True)
    _check_data("things-eeg2", eeg.root, 2)
    ceiling = json.loads((eeg.out / "ceiling.json").read_text())
    assert ceiling["n_test"] == 7 and 0.5 < ceiling["two_way_identification"] <= 1.0


def test_eeg_sources_have_realistic_latencies(eeg):
    truth = load_truth(eeg.out, "sub-02")
    early, lat = truth["early"], truth["latency"]
    assert 0.08 < lat[early].mean() < 0.12 and 0.2 < lat[~early].mean() < 0.3
    # image-specific signal: early sources dominate near 100 ms, higher ones near 250 ms
    times = np.round(np.arange(250) / 250, 6)  # the ATM release: 0..1 s after onset (data[..., 50:])
    clean = eeg.data[2]["clean"]
    var_t = (clean - clean.mean(0)).var(axis=(0, 1))
    assert 0.05 < times[np.argmax(var_t)] < 0.35
    # noise factors reproduce the covariance the ideal observer whitens with
    w = fw.whiten(fw.draw_noise(np.random.default_rng(0), 60, truth["l_space"], truth["l_time"], 1.0),
                  truth["l_space"], truth["l_time"])
    assert abs(w.std() - 1) < 0.03


def test_eeg_ceiling_drops_with_noise_and_shuffled_labels_are_at_chance(tmp_path, eeg):
    from neurodecode.simulate._ideal import identification_scores

    low = simulate_things_eeg2(tmp_path / "low", subjects=(2,), seed=1, snr=0.1, **EEG_SMALL)
    assert low.ceiling["mean_rank"] > eeg.ceiling["mean_rank"]
    assert low.ceiling["two_way_identification"] < eeg.ceiling["two_way_identification"]
    # shuffled-brain control: the ideal observer's scores with test responses permuted sit at chance
    d = eeg.data[2]
    wt = fw.whiten(d["test"].mean(1, dtype=np.float64), d["l_space"], d["l_time"])
    wm = fw.whiten(d["clean"][-7:].astype(np.float64), d["l_space"], d["l_time"])
    ll = -((wt[:, None] - wm[None]) ** 2).sum(-1)
    rng = np.random.default_rng(0)
    shuffled = [identification_scores(ll[rng.permutation(7)])["two_way_identification"] for _ in range(200)]
    assert abs(np.mean(shuffled) - 0.5) < 0.03


def test_things_meg_bids_runs_read_back_by_the_loader(tmp_path):
    res = simulate_things_meg(tmp_path / "meg", subjects=(3,), n_sessions=2, n_train_concepts=3, n_test=4, seed=2)
    # recorded rate 1200 Hz as published; 1-s epochs (1200 samples) as the simulator's ceiling uses
    trials = load_things_meg(res.root, 3, tmax=1199 / 1200, average_test_repeats=True)
    assert trials.X.shape == (3 * 2 + 4, 271, 1200) and trials.sfreq == 1200.0
    assert "MRO11-1609" not in trials.ch_names
    test = trials.split == "test"
    order = [int(i.split("test")[1].split("_")[0]) - 1 for i in trials.stimulus_ids[test]]
    np.testing.assert_allclose(trials.X[test], res.data[3]["test_epochs"][order], rtol=1e-5, atol=1e-18)
    assert 1e-14 < np.abs(trials.X).mean() < 1e-11  # tesla, MEG-sized
    assert res.ceiling["n_test"] == 4 and 0.5 <= res.ceiling["two_way_identification"] <= 1.0
    assert _check_data("things-meg", res.root)


def test_zuco_sentences_eeg_read_back_by_the_loader(tmp_path):
    sentences = make_sentences(9, seed=4)
    assert len(set(sentences)) == 9 and all(s.endswith(".") for s in sentences)
    res = simulate_zuco(tmp_path / "zuco", subjects=("YAG",), sentences=sentences, space="minilm-l6-tiny", seed=4)
    trials = load_zuco(res.root, "YAG", version=2, task="NR")
    assert trials.X.shape[:2] == (9, 105) and trials.texts == sentences and trials.sfreq == 500.0
    for i in (0, 8):
        np.testing.assert_allclose(trials.X[i, :, :trials.lengths[i]], res.data["YAG"]["eeg"][i], rtol=1e-5,
                                   atol=1e-4)
    # longer sentences give longer recordings (reading time follows the words)
    n_chars = np.array([len(s) for s in sentences])
    assert np.corrcoef(n_chars, trials.lengths)[0, 1] > 0.9
    assert "YAG" in _check_data("zuco", res.root)["subjects"]
    all_s = res.ceiling["per_subject"]["YAG"]["all_sentences"]
    assert all_s["n"] == 9 and 0.5 < all_s["two_way_identification"] <= 1.0


def test_zuco_with_the_real_minilm_embedding_carries_sentence_information(tmp_path):
    res = simulate_zuco(tmp_path / "z", subjects=("YAC",), n_sentences=30, snr=1.0, seed=0)
    truth = load_truth(res.out, "sentences")
    assert truth["embedding"].shape == (30, 384)
    all_s = res.ceiling["per_subject"]["YAC"]["all_sentences"]
    assert all_s["two_way_identification"] > 0.75 and all_s["top1_retrieval"] > 3 / 30


def test_ar1_cholesky_closed_form_matches_numpy():
    cov = 0.8 ** np.abs(np.subtract.outer(np.arange(9), np.arange(9)))
    np.testing.assert_allclose(fw.ar1_cholesky(9, 0.8), np.linalg.cholesky(cov), atol=1e-12)
