"""MEG-MASC loader: BIDS recordings through MNE, word-onset segments, wav-level splits, audio, check-data."""

import numpy as np
import pytest
from typer.testing import CliRunner

from neurodecode._core.errors import DataIntegrityError, MetadataMismatchError, MissingFileError
from neurodecode.data import load_meg_masc, load_meg_masc_audio
from neurodecode.data._meg_masc import meg_masc_splits, read_meg_masc_events
from neurodecode.testing import kit_channel_names, make_meg_masc_fixture, meg_masc_path, write_meg_masc_wav
from neurodecode.testing._meg_masc import story_events, write_meg_masc_recording

SF = 120.0


def _ramp(n_ch, n_s):
    # exact in float32 (FIF stores single precision): channel c, sample t -> 1000 c + t
    return 1000.0 * np.arange(n_ch)[:, None] + np.arange(n_s)[None, :]


def _tree(root, *, n_ch=7, sounds=(("lw1_0.wav", 1.0, [("once", 0.25), ("upon", 1.0)]),
                                   ("lw1_1.wav", 4.0, [("a", 0.5)]))):
    for name, _, _ in sounds:
        write_meg_masc_wav(root, name, np.zeros(1600), 16000)
    data = _ramp(n_ch, int(9.0 * SF))
    write_meg_masc_recording(root, 1, session=0, task=0, data=data, sfreq=SF, ch_names=kit_channel_names(n_ch),
                             events=story_events("lw1", sounds))
    return data


def test_known_answer_segments_ids_and_offsets(tmp_path):
    data = _tree(tmp_path)
    t = load_meg_masc(tmp_path, "sub-01", raw_sfreq=SF, baseline=None)
    assert t.subject == "meg-masc/sub-01" and t.sfreq == SF and t.ch_names == kit_channel_names(7)
    assert t.X.shape == (3, 7, 360) and t.X.dtype == np.float32
    np.testing.assert_allclose(t.times, -0.5 + np.arange(360) / SF)
    # word onsets in the recording: 1.25, 2.0, 4.5 s -> samples 150, 240, 540; windows start 60 samples before
    for k, onset_sample in enumerate((150, 240, 540)):
        np.testing.assert_array_equal(t.X[k], data[:, onset_sample - 60:onset_sample + 300])
    assert t.stimulus_ids.tolist() == ["lw1_0@250", "lw1_0@1000", "lw1_1@500"]
    np.testing.assert_allclose(t.metadata["sound_offset"], [0.25, 1.0, 0.5])
    assert t.metadata["sound"].tolist() == ["stimuli/audio/lw1_0.wav"] * 2 + ["stimuli/audio/lw1_1.wav"]
    assert list(t.texts) == ["once", "upon", "a"] and t.metadata["story"].tolist() == ["lw1"] * 3
    pos = np.asarray(t.provenance["sensor_positions"])
    assert pos.shape == (7, 2) and pos.min() >= 0 and pos.max() <= 1 and len(np.unique(pos, axis=0)) == 7
    # the paper's baseline (first 0.3 s) removes each channel's mean over the first 36 samples
    b = load_meg_masc(tmp_path, 1, raw_sfreq=SF)
    expected = data[:, 90:450] - data[:, 90:126].mean(axis=1, keepdims=True)
    np.testing.assert_allclose(b.X[0], expected, atol=1e-3)
    assert b.provenance["baseline"] == [-0.5, -0.2]


def test_splits_are_whole_wav_files_and_shared_by_subjects(tmp_path):
    make_meg_masc_fixture(tmp_path, subjects=(1, 2), sessions=(0, 1), tasks=(0, 1), n_sounds=6, sfreq=200.0)
    splits = meg_masc_splits(tmp_path)
    assert len(splits) == 12 and sorted(set(splits.values())) == ["test", "train", "val"]
    assert list(splits.values()).count("test") == 3 and list(splits.values()).count("val") == 2  # ceil(.2, .1 x 12)
    a = load_meg_masc(tmp_path, 1, raw_sfreq=200.0)
    b = load_meg_masc(tmp_path, 2, raw_sfreq=200.0, sessions=[1], tasks=[1])
    for t in (a, b):
        for snd, sp in zip(t.metadata["sound"], t.split):
            assert splits[snd] == sp
    assert set(b.metadata["session"]) == {1} and set(b.metadata["task"]) == {1}
    assert len(a) == 2 * 2 * 6 * 3  # sessions x stories x wavs x words


def test_audio_is_read_and_resampled(tmp_path):
    sr = 8000
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(sr) / sr)
    write_meg_masc_wav(tmp_path, "lw1_0.wav", tone, sr)
    x, rate = load_meg_masc_audio(tmp_path, "stimuli/audio/lw1_0.wav", sr=16000)
    assert rate == 16000 and x.shape == (16000,) and x.dtype == np.float32
    ref = 0.5 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    np.testing.assert_allclose(x[100:-100], ref[100:-100], atol=2e-3)  # edges carry the filter's transient
    with pytest.raises(MissingFileError, match="stimuli"):
        load_meg_masc_audio(tmp_path, "lw1_9.wav")


def test_events_are_literals_never_code(tmp_path):
    _tree(tmp_path)
    ev_path = meg_masc_path(tmp_path, "events", subject=1)
    ev = read_meg_masc_events(ev_path, SF)
    assert ev["kind"].tolist() == ["sound", "word", "word", "sound", "word"]
    lines = ev_path.read_text().splitlines()
    lines[2] = "\t".join(lines[2].split("\t")[:2] + ["__import__('os').getcwd()"] + lines[2].split("\t")[3:])
    ev_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataIntegrityError, match="dict literal"):
        read_meg_masc_events(ev_path, SF)


def test_bad_inputs_teach(tmp_path):
    _tree(tmp_path)
    with pytest.raises(MetadataMismatchError, match="raw_sfreq=120"):
        load_meg_masc(tmp_path, 1)  # the spec's 1000 Hz expected
    with pytest.raises(MissingFileError, match="sub-02"):
        load_meg_masc(tmp_path, 2, raw_sfreq=SF)
    (tmp_path / "stimuli" / "audio" / "lw1_1.wav").unlink()
    t = load_meg_masc(tmp_path, 1, raw_sfreq=SF)  # words of a missing wav are dropped and counted
    assert len(t) == 2 and t.provenance["n_words_without_wav"] == 1
    bad = meg_masc_path(tmp_path, "raw_con", subject=1, session=1, task=0)
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a KIT file")
    with pytest.raises(DataIntegrityError, match="KIT"):
        load_meg_masc(tmp_path, 1, raw_sfreq=SF, sessions=[1])


def test_check_data_lists_every_problem(tmp_path):
    make_meg_masc_fixture(tmp_path, subjects=(1, 2), tasks=(0, 1), n_sounds=3)  # the spec's 1000 Hz
    from neurodecode.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["check-data", "meg-masc", str(tmp_path), "--json"])
    assert ok.exit_code == 0, ok.output
    meg_masc_path(tmp_path, "raw_fif", subject=2, task=1).unlink()
    (tmp_path / "stimuli" / "audio" / "lw1_2.wav").unlink()
    res = runner.invoke(app, ["check-data", "meg-masc", str(tmp_path)])
    assert res.exit_code == 1
    assert "sub-02: missing ses-0 task-1" in res.output
    assert "lw1_2.wav" in res.output and "sub-01 ses-0 task-0" in res.output
