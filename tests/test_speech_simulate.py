"""Speech simulator: eSpeak NG sentences, MEG-MASC layout, encoding model, matched-observer ceiling."""

import json

import numpy as np
import pytest

from neurodecode.data import load_meg_masc
from neurodecode.data._meg_masc import read_meg_masc_events
from neurodecode.simulate.speech import SENTENCES, band_envelopes, simulate_meg_masc, synthesize, synthesize_sentences

SF = 200.0


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    return simulate_meg_masc(out, subjects=(3,), tasks=(1,), sentences_per_task=5, n_channels=24, sfreq=SF)


def test_espeak_speaks_every_word_in_order():
    wave, sr, words = synthesize(SENTENCES[1])
    assert sr == 16000 and wave.dtype == np.float32 and 1.0 < len(wave) / sr < 8.0
    assert [w for w, _ in words] == SENTENCES[1].rstrip(".").split()
    # eSpeak NG joins some unstressed words into one event ("at a"): every word is still there, in order
    joined = synthesize(SENTENCES[0])[2]
    assert " ".join(w for w, _ in joined) == SENTENCES[0].rstrip(".") and len(joined) < len(SENTENCES[0].split())
    onsets = np.array([o for _, o in words])
    assert (np.diff(onsets) > 0).all() and onsets[-1] < len(wave) / sr
    # speech: the envelope is louder in the sentence than in the padding espeak leaves at the end
    env = band_envelopes(wave, sr, 100.0, n_bands=3)
    assert env.shape == (3, int(round(len(wave) / sr * 100)))
    assert env[:, int(onsets[1] * 100):int(onsets[-1] * 100)].mean() > env[:, -5:].mean()


def test_tree_loads_and_events_match_the_speech(sim):
    root = sim.root
    assert sorted(p.name for p in (root / "stimuli" / "audio").glob("*.wav")) == \
        [f"cable_spool_fort_{k}.wav" for k in range(5)]
    t = load_meg_masc(root, 3, raw_sfreq=SF)
    assert t.X.shape[1:] == (24, 360) and t.subject == "meg-masc/sub-03"
    per_wav = [[w for w, k in zip(t.texts, t.metadata["sound"]) if k.endswith(f"_{j}.wav")] for j in range(5)]
    assert [" ".join(ws) for ws in per_wav] == [s.rstrip(".").replace(",", "").replace("?", "") for s in SENTENCES[:5]]
    ev = read_meg_masc_events(next(root.glob("sub-03/ses-0/meg/*_events.tsv")), SF)
    assert (ev["kind"] == "sound").sum() == 5 and (ev["kind"] == "word").sum() == len(t.texts)
    truth = json.loads((sim.truth / "model.json").read_text())
    assert truth["sentences"]["cable_spool_fort_0.wav"] == SENTENCES[0]


def test_signal_is_speech_locked_and_ceiling_beats_chance(sim):
    rec = sim.data[3]["recordings"][(0, 1)]
    clean, data = rec["clean"], rec["data"]
    rms = lambda a: float(np.sqrt(np.mean(a ** 2)))  # noqa: E731
    assert rms(clean) == pytest.approx(5e-14, rel=1e-6)
    assert rms(data - clean) == pytest.approx(3 * 5e-14, rel=1e-6)  # noise / signal = 3 at snr 1
    # silence before the first sentence (1 s) carries no speech-driven signal
    assert rms(clean[:, : int(0.9 * SF)]) < 0.05 * rms(clean)
    c = json.loads((sim.out / "ceiling.json").read_text())
    assert c["n_test"] >= 2 and c["top1_retrieval"] > c["chance"]["top1_retrieval"]


def test_sentences_are_reproducible_across_calls():
    a = synthesize_sentences(SENTENCES[:2])
    b = synthesize_sentences(SENTENCES[:2])
    assert all(np.array_equal(x[0], y[0]) and x[2] == y[2] for x, y in zip(a, b))


def test_same_seed_same_data(tmp_path, sim):
    again = simulate_meg_masc(tmp_path, subjects=(3,), tasks=(1,), sentences_per_task=5, n_channels=24, sfreq=SF)
    np.testing.assert_array_equal(again.data[3]["recordings"][(0, 1)]["data"], sim.data[3]["recordings"][(0, 1)]["data"])


@pytest.mark.slow
def test_cli_simulate_meg_masc_then_check_data(tmp_path):
    from typer.testing import CliRunner

    from neurodecode.cli import app

    res = CliRunner().invoke(app, ["simulate", "meg-masc", str(tmp_path), "--subjects", "1", "--json"])
    assert res.exit_code == 0, res.output
    ok = CliRunner().invoke(app, ["check-data", "meg-masc", str(tmp_path), "--json"])
    assert ok.exit_code == 0, ok.output
    c = json.loads((tmp_path / "ceiling.json").read_text())
    assert c["top1_retrieval"] > 5 * c["chance"]["top1_retrieval"]
