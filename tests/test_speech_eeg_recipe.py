"""Speech on EEG, end to end (known answer): simulated Broderick 2019 tree -> tiny SimpleConv -> beats its
shuffled control and chance; the simulator's tree, signal and ceiling."""

import json

import numpy as np
import pytest

from neurodecode.data._broderick import check_broderick2019, load_broderick2019, read_broderick2019_words
from neurodecode.simulate.speech import SENTENCES, simulate_broderick2019


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    return simulate_broderick2019(out, subjects=(4,), runs=(1, 2, 3, 4, 5), sentences_per_run=1)


def test_tree_is_the_natural_speech_layout_and_loads(small):
    root = small.root
    assert sorted(p.name for p in (root / "EEG" / "Subject4").iterdir()) == [f"Subject4_Run{r}.mat" for r in range(1, 6)]
    assert (root / "Stimuli" / "Envelopes" / "audio3_128Hz.mat").is_file()
    report, problems = check_broderick2019(root)
    assert problems == [] and report["subjects"]["4"]["runs"] == 5
    t = load_broderick2019(root, 4)
    assert t.X.shape[1:] == (128, 360) and t.subject == "broderick2019/Subject4"
    # each run speaks one sentence: its words, in order, at the onsets of its word table
    run1 = [w for w, k in zip(t.texts, t.metadata["task"]) if k == 1]
    assert " ".join(run1) == SENTENCES[0].rstrip(".")
    words = read_broderick2019_words(root / "Stimuli" / "Text" / "Run1.mat")
    np.testing.assert_allclose(t.metadata["sound_offset"][t.metadata["task"] == 1], words["onset"])
    assert words["onset"][0] >= 1.0  # 1 s of silence opens every run
    truth = json.loads((small.truth / "model.json").read_text())
    assert truth["runs"]["audio1.wav"] == [SENTENCES[0]] and truth["montage"] == "biosemi128"


def test_signal_is_speech_locked_in_volts_and_ceiling_beats_chance(small):
    rec = small.data[4]["recordings"][2]
    clean, data = rec["clean"], rec["data"]
    rms = lambda a: float(np.sqrt(np.mean(a ** 2)))  # noqa: E731
    assert clean.shape[0] == 128
    # the scale is set on the first run: 1 uV of speech-driven EEG over the scalp
    assert rms(small.data[4]["recordings"][1]["clean"]) == pytest.approx(1e-6, rel=1e-6)
    assert 2 < rms(data - clean) / rms(clean) < 4.5  # noise 3 x the speech-driven RMS (per run, roughly)
    assert rms(clean[:, : int(0.9 * 128)]) < 0.05 * rms(clean)  # the silence before the speech drives nothing
    c = json.loads((small.out / "ceiling.json").read_text())
    assert c["n_test"] >= 2 and c["top1_retrieval"] > c["chance"]["top1_retrieval"]
    # the mastoids come from the same forward model: referencing to them changes the data, it stays finite
    m = load_broderick2019(small.root, 4, runs=[2], reference="mastoids", baseline=None)
    t = load_broderick2019(small.root, 4, runs=[2], baseline=None)
    assert np.isfinite(m.X).all() and not np.allclose(m.X, t.X)


@pytest.mark.slow
def test_recipe_beats_its_shuffled_control_and_chance(tmp_path_factory):
    from neurodecode.recipes import load_recipe, train_from_recipe

    # snr 3 (noise RMS = the speech-driven RMS), as the MEG-MASC recipe test: at the default snr the tiny model
    # needs more data and training than a unit test affords
    sim = simulate_broderick2019(tmp_path_factory.mktemp("sim"), subjects=(1, 2), runs=range(1, 11),
                                 sentences_per_run=3, snr=3.0, seed=1)
    recipe = load_recipe("pipelines/speech_eeg_broderick.toml", preset="tiny",
                         overrides=["train.epochs=10", "latents.cache_dir=\"out\""])
    out = tmp_path_factory.mktemp("run")
    m = train_from_recipe(recipe, sim.root, out, device="cpu").metrics
    assert m["test/all/n_candidates"] >= 40
    assert m["test/all/top10"] > 2 * m["test/all/chance_top10"]
    assert m["test/all/top1"] > m["test/all/shuffled_top1"] + 0.1
    for s in ("broderick2019/Subject1", "broderick2019/Subject2"):
        assert m[f"test/{s}/top10"] > m[f"test/{s}/shuffled_top10"]
    ceiling = json.loads((sim.out / "ceiling.json").read_text())
    assert m["test/all/top1"] <= ceiling["top1_retrieval"] + 1e-9 or ceiling["top1_retrieval"] == 1.0
    prov = json.loads((out / "provenance.json").read_text())
    assert "broderick2019" in json.dumps(prov) and "sensor_positions" in json.dumps(prov)
    from neurodecode.models import load_decoder

    model = load_decoder(out)
    assert model.config.subjects == ["broderick2019/Subject1", "broderick2019/Subject2"]
    assert model.config.n_channels == 128 and len(model.config.ch_names) == 128
