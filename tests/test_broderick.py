"""Broderick 2019 (Natural Speech) loader: .mat runs and word tables, word-onset segments, run-level splits,
audio, errors that teach, check-data."""

import numpy as np
import pytest

from neurodecode._core.errors import DataIntegrityError, MetadataMismatchError, MissingFileError, ValidationError
from neurodecode.data._broderick import (
    biosemi128_names,
    broderick2019_splits,
    check_broderick2019,
    load_broderick2019,
    load_broderick2019_audio,
    read_broderick2019_words,
)
from neurodecode.testing._broderick import (
    broderick2019_path,
    make_broderick2019_fixture,
    write_broderick2019_run,
    write_broderick2019_wav,
    write_broderick2019_words,
)

SF = 128.0
UV = 1e-6


def _ramp(n_s, n_ch=128):
    # exact in float32 (the writer's precision): channel c, sample t -> (1000 c + t) microvolts
    return (1000.0 * np.arange(n_ch)[:, None] + np.arange(n_s)[None, :]) * UV


def _tree(root, n_s=int(8 * SF)):
    data = _ramp(n_s)
    mast = np.vstack([np.full(n_s, 5.0), np.full(n_s, 7.0)]) * UV
    for run, words, onsets in ((1, ["he", "was", "old"], [1.25, 2.0, 4.5]), (2, ["the", "sea"], [0.75, 3.0])):
        write_broderick2019_words(root, run, words, onsets)
        write_broderick2019_wav(root, run, np.zeros(800), 8000)
        write_broderick2019_run(root, 1, run, data, mastoids=mast)
    return data


def test_known_answer_segments_ids_and_metadata(tmp_path):
    data = _tree(tmp_path)
    t = load_broderick2019(tmp_path, "Subject1", sfreq=SF, baseline=None)
    assert t.subject == "broderick2019/Subject1" and t.sfreq == SF and t.ch_names == biosemi128_names()
    assert t.X.shape == (5, 128, 384) and t.X.dtype == np.float32  # 3 s at 128 Hz, no resampling
    # onsets 1.25, 2.0, 4.5 s (run 1) and 0.75, 3.0 s (run 2) -> samples 160, 256, 576, 96, 384; windows from -64
    for k, s in enumerate((160, 256, 576, 96, 384)):
        np.testing.assert_allclose(t.X[k], data[:, s - 64:s + 320], rtol=1e-6)
    assert t.stimulus_ids.tolist() == ["audio1@1250", "audio1@2000", "audio1@4500", "audio2@750", "audio2@3000"]
    assert list(t.texts) == ["he", "was", "old", "the", "sea"]
    assert t.metadata["sound"].tolist() == ["Stimuli/Audio/audio1.wav"] * 3 + ["Stimuli/Audio/audio2.wav"] * 2
    assert (tmp_path / t.metadata["sound"][0]).is_file()
    np.testing.assert_allclose(t.metadata["sound_offset"], [1.25, 2.0, 4.5, 0.75, 3.0])
    assert t.metadata["task"].tolist() == [1, 1, 1, 2, 2] and t.metadata["sequence"].tolist()[3] == "audio2"
    splits = broderick2019_splits(tmp_path)
    assert t.split.tolist() == [splits[s] for s in t.metadata["sound"]]
    pos = np.asarray(t.provenance["sensor_positions"])
    assert pos.shape == (128, 2) and pos.min() >= 0 and pos.max() <= 1 and len(np.unique(pos, axis=0)) == 128
    # the mastoid reference subtracts their mean (6 uV) from every channel
    m = load_broderick2019(tmp_path, 1, sfreq=SF, baseline=None, reference="mastoids")
    np.testing.assert_allclose(m.X, t.X - 6 * UV, rtol=1e-6, atol=1e-9)
    # the paper's baseline and 120 Hz: 360 samples, the first 0.3 s averages to zero on every channel
    b = load_broderick2019(tmp_path, 1)
    assert b.X.shape == (5, 128, 360) and b.provenance["baseline"] == [-0.5, -0.2]
    np.testing.assert_allclose(b.X[:, :, :36].mean(axis=2), 0, atol=1e-9)
    # at 120 Hz the window of the word at 2.0 s is samples 180..540 of the run resampled by MNE (polyphase)
    import mne

    raw = mne.io.RawArray(data[:4].astype(np.float32).astype(np.float64), mne.create_info(4, SF, "eeg"),
                          verbose="error").resample(120.0, method="polyphase", verbose="error")
    ref = raw.get_data()[:, 180:540]
    np.testing.assert_allclose(b.X[1, :4], ref - ref[:, :36].mean(axis=1, keepdims=True), rtol=1e-4, atol=1e-9)


def test_words_are_read_from_the_cell_array(tmp_path):
    p = write_broderick2019_words(tmp_path, 3, ["santiago", "", "skiff"], [0.5, 1.0, 1.5], [0.9, 1.2, 1.9])
    w = read_broderick2019_words(p)
    assert w["word"].tolist() == ["santiago", "", "skiff"]
    np.testing.assert_allclose(w["offset"], [0.9, 1.2, 1.9])


def test_splits_are_whole_runs_shared_by_subjects(tmp_path):
    make_broderick2019_fixture(tmp_path, subjects=(1, 2), runs=range(1, 11), words_per_run=3)
    splits = broderick2019_splits(tmp_path)
    assert len(splits) == 10 and list(splits.values()).count("test") == 2 and list(splits.values()).count("val") == 1
    a = load_broderick2019(tmp_path, 1)
    b = load_broderick2019(tmp_path, "broderick2019/Subject2", runs=[2, 7])
    assert len(a) == 30 and set(b.metadata["task"]) == {2, 7}
    for t in (a, b):
        assert all(splits[snd] == sp for snd, sp in zip(t.metadata["sound"], t.split))
    # the same run gives the same ids for both subjects: the split never separates them
    assert set(b.stimulus_ids) <= set(a.stimulus_ids)


def test_audio_is_read_and_resampled(tmp_path):
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)
    write_broderick2019_wav(tmp_path, 4, tone, 8000)
    x, sr = load_broderick2019_audio(tmp_path, 4, sr=16000)
    assert sr == 16000 and x.shape == (16000,)
    np.testing.assert_allclose(x[100:-100], 0.5 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)[100:-100],
                               atol=2e-3)
    with pytest.raises(MissingFileError, match="no wav files"):
        load_broderick2019_audio(tmp_path, 5)


def test_bad_inputs_teach(tmp_path):
    data = _tree(tmp_path)
    with pytest.raises(MissingFileError, match="Subject2"):
        load_broderick2019(tmp_path, 2)
    with pytest.raises(MissingFileError, match="runs \\[5\\] missing"):
        load_broderick2019(tmp_path, 1, runs=[1, 5])
    # the public release has no wavs: the error says so and how to read the EEG alone
    broderick2019_path(tmp_path, "audio", run=2).unlink()
    with pytest.raises(MissingFileError, match="require_audio=False"):
        load_broderick2019(tmp_path, 1)
    assert len(load_broderick2019(tmp_path, 1, require_audio=False)) == 5
    # another rate
    write_broderick2019_run(tmp_path, 1, 2, data, sfreq=256.0)
    with pytest.raises(MetadataMismatchError, match="raw_sfreq=256"):
        load_broderick2019(tmp_path, 1, runs=[2], require_audio=False)
    # channel x time instead of time x channel
    from scipy.io import savemat

    path = broderick2019_path(tmp_path, "eeg", subject=1, run=2)
    savemat(path, {"eegData": data.astype(np.float32) / UV, "mastoids": np.zeros((data.shape[1], 2)),
                   "fs": np.array([[128.0]])})
    with pytest.raises(DataIntegrityError, match="transpose"):
        load_broderick2019(tmp_path, 1, runs=[2], require_audio=False)
    # a NaN sample names its channel
    bad = data.copy()
    bad[5, 100] = np.nan
    write_broderick2019_run(tmp_path, 1, 2, bad)
    with pytest.raises(ValidationError, match="channel A6, time 100"):
        load_broderick2019(tmp_path, 1, runs=[2], require_audio=False)
    # a truncated run: a word onset beyond its end
    write_broderick2019_run(tmp_path, 1, 2, data[:, : int(2.0 * SF)])
    with pytest.raises(DataIntegrityError, match="truncated"):
        load_broderick2019(tmp_path, 1, runs=[2], require_audio=False)
    # words whose window leaves the run are dropped and counted (0.75 s: window from 0.25 s fits; 3.0 s does not)
    write_broderick2019_run(tmp_path, 1, 2, data[:, : int(5.0 * SF)])
    t = load_broderick2019(tmp_path, 1, runs=[2], require_audio=False)
    assert t.stimulus_ids.tolist() == ["audio2@750"] and t.provenance["n_words_outside_window"] == 1


def test_check_lists_every_problem(tmp_path):
    make_broderick2019_fixture(tmp_path, subjects=(1, 2), runs=(1, 2, 3))
    report, problems = check_broderick2019(tmp_path)
    assert problems == [] and report["subjects"]["1"] == {"runs": 3, "words": 12}
    broderick2019_path(tmp_path, "eeg", subject=2, run=3).unlink()
    broderick2019_path(tmp_path, "audio", run=1).unlink()
    write_broderick2019_run(tmp_path, 1, 2, np.zeros((128, 64)), sfreq=512.0)
    _, problems = check_broderick2019(tmp_path)
    text = "\n".join(problems)
    assert len(problems) == 3
    assert "Subject2: missing runs [3]" in text and "audio1.wav" in text and "Subject1 run 2" in text
    assert "raw_sfreq=512" in text
