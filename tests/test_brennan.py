"""Brennan & Hale 2019 loader: FieldTrip .mat + proc.trl alignment, word segments, wav splits, errors, check."""

import numpy as np
import pytest

from neurodecode._core.errors import DataIntegrityError, MetadataMismatchError, MissingFileError, ValidationError
from neurodecode.data._brennan import (
    brennan2019_splits,
    brennan2019_subjects,
    check_brennan2019,
    load_brennan2019,
    load_brennan2019_audio,
    read_brennan2019_sound_onsets,
)
from neurodecode.testing._brennan import (
    brennan2019_channel_names,
    brennan2019_path,
    brennan2019_trl,
    make_brennan2019_fixture,
    write_brennan2019_datasets,
    write_brennan2019_proc,
    write_brennan2019_raw,
    write_brennan2019_wav,
    write_brennan2019_words,
)

FS = 500.0
# segment k's trigger at the 1-based sample 501 + 600 (k - 1): it starts (500 + 600 (k - 1)) / 500 s in
TRIGGERS = {k: 501 + 600 * (k - 1) for k in range(1, 13)}
N_SAMPLES = 501 + 600 * 12 + 1500


def _words(per_segment=((0.25, 0.5),) * 12):
    w = {k: [] for k in ("word", "segment", "onset", "offset", "sentence", "position", "order")}
    for k, onsets in enumerate(per_segment, start=1):
        for j, on in enumerate(onsets):
            w["word"].append(f"w{k}_{j}")
            w["segment"].append(k)
            w["onset"].append(on)
            w["offset"].append(on + 0.2)
            w["sentence"].append(k)
            w["position"].append(j + 1)
            w["order"].append(len(w["order"]) + 1)
    return w


def _ramp():
    # microvolt; channel c, sample t -> 1000 c + t (VEOG last)
    return 1000.0 * np.arange(61)[:, None] + np.arange(N_SAMPLES)[None, :]


def _tree(root, *, subject=1, words=None, trigger_missing=False, **proc_kw):
    words = _words() if words is None else words
    write_brennan2019_words(root, words)
    for k in range(1, 13):
        write_brennan2019_wav(root, k, np.zeros(8000), 8000)  # 1 s each
    data = _ramp()
    write_brennan2019_raw(root, subject, data)
    trl = brennan2019_trl(TRIGGERS, words, n_samples=N_SAMPLES, trigger_missing=trigger_missing,
                          extra_column=proc_kw.pop("extra_column", False))
    write_brennan2019_proc(root, subject, trl, **proc_kw)
    return data, words


def test_known_answer_word_samples_ids_and_offsets(tmp_path):
    data, words = _tree(tmp_path)
    t = load_brennan2019(tmp_path, "S01", sfreq=FS, baseline=None)
    assert t.subject == "brennan2019/S01" and t.sfreq == FS
    assert t.ch_names == brennan2019_channel_names()[:60] and "29" not in t.ch_names
    assert t.X.shape == (24, 60, 1500) and t.X.dtype == np.float32
    np.testing.assert_allclose(t.times, -0.5 + np.arange(1500) / FS)
    # word j of segment k: segment start 500 + 600 (k - 1) samples (0-based) + onset x 500
    for i, (k, on) in enumerate(zip(words["segment"], words["onset"])):
        s = 500 + 600 * (k - 1) + int(round(on * FS))
        np.testing.assert_allclose(t.X[i], data[:60, s - 250:s + 1250] * 1e-6, rtol=1e-6)
    # the authors' epoch zero (trl start - offset, 1-based) is the same sample: not brainmagick's start / 500
    trl = brennan2019_trl(TRIGGERS, words)
    np.testing.assert_array_equal(trl[:, 0] - trl[:, 2] - 1, [500 + 600 * (k - 1) + on * FS
                                                               for k, on in zip(words["segment"], words["onset"])])
    assert t.stimulus_ids[:3].tolist() == ["DownTheRabbitHoleFinal_SoundFile1@250",
                                           "DownTheRabbitHoleFinal_SoundFile1@500",
                                           "DownTheRabbitHoleFinal_SoundFile2@250"]
    assert t.metadata["sound"][2] == "audio/DownTheRabbitHoleFinal_SoundFile2.wav"
    assert (tmp_path / t.metadata["sound"][2]).is_file()
    np.testing.assert_allclose(t.metadata["sound_offset"], words["onset"])
    assert list(t.texts) == words["word"] and t.metadata["sequence"].tolist() == [str(k) for k in words["sentence"]]
    assert t.metadata["segment"].tolist() == words["segment"] and set(t.metadata["session"]) == {0}
    assert t.provenance["sound_onsets"]["3"] == pytest.approx((500 + 1200) / FS)
    assert t.provenance["n_words_without_sound_onset"] == 0 and t.provenance["n_words_outside_recording"] == 0
    # default: 120 Hz, 3 s windows, the paper's baseline (mean of the first 0.3 s is zero)
    d = load_brennan2019(tmp_path, 1, segments=[1, 2])
    assert d.X.shape == (4, 60, 360) and set(d.metadata["segment"]) == {1, 2}
    np.testing.assert_allclose(d.X[:, :, :36].mean(axis=2), 0, atol=1e-9)
    pos = np.asarray(d.provenance["sensor_positions"])
    assert pos.shape == (60, 2) and pos.min() >= 0 and pos.max() <= 1 and len(np.unique(pos, axis=0)) == 60
    assert np.linalg.norm(pos[0] - 0.5) < 0.1  # electrode 1 of easycap M10 is the vertex


def test_windows_leaving_the_recording_are_counted(tmp_path):
    words = _words(((0.25, 0.5),) * 11 + ((0.5, 0.75),))
    data, _ = _tree(tmp_path, words=words)
    write_brennan2019_raw(tmp_path, 1, data[:, :8700])
    # segment 12 starts at 14.2 s, the recording ends at 17.4 s: a word at 14.2 + 0.75 s has no 2.5 s after it
    t = load_brennan2019(tmp_path, 1, sfreq=FS, baseline=None)
    assert len(t) == 23 and t.provenance["n_words_outside_recording"] == 1
    assert t.stimulus_ids[-1] == "DownTheRabbitHoleFinal_SoundFile12@500"


def test_shifted_trigger_subjects_are_realigned(tmp_path):
    data, words = _tree(tmp_path)
    write_brennan2019_raw(tmp_path, 26, data)
    write_brennan2019_proc(tmp_path, 26, brennan2019_trl(TRIGGERS, words, n_samples=N_SAMPLES, trigger_missing=True))
    on = read_brennan2019_sound_onsets(tmp_path, 26)
    assert on["shifted"] and sorted(on["onsets"]) == list(range(2, 13))
    assert on["onsets"][2] == pytest.approx(1100 / FS)
    a = load_brennan2019(tmp_path, 1, sfreq=FS, baseline=None)
    b = load_brennan2019(tmp_path, "brennan2019/S26", sfreq=FS, baseline=None)
    assert b.provenance["n_words_without_sound_onset"] == 2 and b.provenance["shifted_segments_fixed"]
    np.testing.assert_array_equal(b.X, a.X[2:])  # segment 1 has no trigger; the rest at the true samples
    assert b.stimulus_ids.tolist() == a.stimulus_ids[2:].tolist()
    raw = read_brennan2019_sound_onsets(tmp_path, 26, fix_shifted_segments=False)
    assert raw["onsets"][1] == pytest.approx(1100 / FS)  # as stored: labelled one segment too low


def test_proc_with_extra_column_and_overlap(tmp_path):
    _tree(tmp_path, extra_column=True)  # S02's layout: one more column before varnames
    assert read_brennan2019_sound_onsets(tmp_path, 1)["samples"] == TRIGGERS
    words = _words()
    bad = {**TRIGGERS, 4: TRIGGERS[3] + 100}  # segment 4 starting 0.2 s into segment 3 (1 s long)
    write_brennan2019_proc(tmp_path, 1, brennan2019_trl(bad, words, n_samples=N_SAMPLES))
    with pytest.raises(DataIntegrityError, match="segment 3"):
        load_brennan2019(tmp_path, 1)
    trl = brennan2019_trl(TRIGGERS, words, n_samples=N_SAMPLES)
    trl[3, 0] += 7  # one word 7 samples away from the others of its segment
    write_brennan2019_proc(tmp_path, 1, trl)
    with pytest.raises(DataIntegrityError, match="agree on one segment start"):
        load_brennan2019(tmp_path, 1)


def test_splits_are_whole_wav_files_and_shared_by_subjects(tmp_path):
    splits = brennan2019_splits()
    assert len(splits) == 12 and list(splits.values()).count("test") == 3  # ceil(0.2 x 12)
    assert list(splits.values()).count("val") == 2 and list(splits.values()).count("train") == 7
    assert brennan2019_splits(test_fraction=0.5)["audio/DownTheRabbitHoleFinal_SoundFile1.wav"] in ("test", "train",
                                                                                                     "val")
    make_brennan2019_fixture(tmp_path, subjects=(3, 5), words_per_segment=3)
    a, b = load_brennan2019(tmp_path, 3), load_brennan2019(tmp_path, 5, segments=[1, 5, 9])
    for t in (a, b):
        assert [splits[s] for s in t.metadata["sound"]] == t.split.tolist()
    assert len(a) == 36 and len(b) == 9 and sorted(set(a.split)) == ["test", "train", "val"]
    with pytest.raises(ValidationError, match="fractions"):
        brennan2019_splits(test_fraction=0.7, val_fraction=0.4)


def test_reference_bads_and_channel_set(tmp_path):
    data, words = _tree(tmp_path, bads=["27"], impedance_bads=["3"])
    m = load_brennan2019(tmp_path, 1, sfreq=FS, baseline=None, reference="mastoids", segments=[1])
    assert len(m.ch_names) == 61 and "29" in m.ch_names
    names = brennan2019_channel_names()[:60]
    x = data[:60, 375:1875] * 1e-6  # word 1: sample 625, window from 625 - 250
    ref = x[names.index("25")] / 2  # linked mastoids: 29 is zero as recorded
    np.testing.assert_allclose(m.X[0, m.ch_names.index("7")], x[names.index("7")] - ref, rtol=1e-5)
    np.testing.assert_allclose(m.X[0, m.ch_names.index("29")], -ref, rtol=1e-5)
    plain = load_brennan2019(tmp_path, 1, segments=[1])
    unset = load_brennan2019(tmp_path, 1, segments=[1], reference=None, bads=None)  # what a recipe passes
    assert unset.ch_names == plain.ch_names and len(plain.ch_names) == 60
    np.testing.assert_array_equal(unset.X, plain.X)
    d = load_brennan2019(tmp_path, 1, bads="drop", segments=[1])
    assert d.provenance["bad_channels_proc"] == ["3", "27"] and len(d.ch_names) == 58
    assert "3" not in d.ch_names and "27" not in d.ch_names
    with pytest.raises(MetadataMismatchError, match="ch_names"):
        load_brennan2019(tmp_path, 1, ch_names=d.ch_names)
    order = list(reversed(d.ch_names))
    r = load_brennan2019(tmp_path, 1, bads="drop", segments=[1], ch_names=order)
    assert r.ch_names == order
    np.testing.assert_array_equal(r.X, d.X[:, ::-1])


def test_bad_inputs_teach(tmp_path):
    data, words = _tree(tmp_path)
    with pytest.raises(MetadataMismatchError, match="raw_sfreq=500"):
        load_brennan2019(tmp_path, 1, raw_sfreq=250.0)
    with pytest.raises(MissingFileError, match="S02.mat"):
        load_brennan2019(tmp_path, 2)
    write_brennan2019_raw(tmp_path, 2, data)
    with pytest.raises(MissingFileError, match="proc.zip"):
        load_brennan2019(tmp_path, 2)  # no proc/S02.mat
    write_brennan2019_raw(tmp_path, 3, data, sfreq=250.0)
    write_brennan2019_proc(tmp_path, 3, brennan2019_trl(TRIGGERS, words, n_samples=N_SAMPLES))
    with pytest.raises(MetadataMismatchError, match="250 Hz"):
        load_brennan2019(tmp_path, 3)
    nan = data.copy()
    nan[4, 700:710] = np.nan  # channel "5" inside the first word's window
    write_brennan2019_raw(tmp_path, 4, nan)
    write_brennan2019_proc(tmp_path, 4, brennan2019_trl(TRIGGERS, words, n_samples=N_SAMPLES))
    with pytest.raises(ValidationError, match="NaN"):
        load_brennan2019(tmp_path, 4, segments=[1])
    p = brennan2019_path(tmp_path, "raw", subject=4)
    p.write_bytes(p.read_bytes()[:2000])
    with pytest.raises(DataIntegrityError, match="truncated"):
        load_brennan2019(tmp_path, 4)
    wav = brennan2019_path(tmp_path, "audio", segment=5)
    wav.write_bytes(wav.read_bytes()[:3000])
    with pytest.raises(DataIntegrityError, match="SoundFile5"):
        load_brennan2019(tmp_path, 1)
    wav.unlink()
    with pytest.raises(MissingFileError, match="audio.zip"):
        load_brennan2019(tmp_path, 1)
    assert len(load_brennan2019(tmp_path, 1, segments=[1, 2])) == 4  # other segments need no wav 5
    write_brennan2019_wav(tmp_path, 5, np.zeros(1000), 8000)  # 0.125 s: shorter than its words
    with pytest.raises(DataIntegrityError, match="at least 0.70 s"):
        load_brennan2019(tmp_path, 1)
    words["segment"][0] = 13
    write_brennan2019_words(tmp_path, words)
    with pytest.raises(DataIntegrityError, match="segment 1..12"):
        load_brennan2019(tmp_path, 1)
    with pytest.raises(ValidationError, match="S01"):
        load_brennan2019(tmp_path, "sub-x")


def test_check_lists_every_problem(tmp_path):
    make_brennan2019_fixture(tmp_path, subjects=(1, 2, 3))
    report, problems = check_brennan2019(tmp_path)
    assert problems == [] and sorted(report["subjects"]) == ["S01", "S02", "S03"]
    assert report["subjects"]["S01"]["words"] == 24 and report["subjects"]["S01"]["n_channels"] == 60
    brennan2019_path(tmp_path, "proc", subject=2).unlink()
    brennan2019_path(tmp_path, "audio", segment=7).unlink()
    write_brennan2019_raw(tmp_path, 1, np.zeros((61, 4600)), sfreq=250.0)
    write_brennan2019_raw(tmp_path, 3, np.zeros((60, 9100)), ch_names=brennan2019_channel_names()[:59] + ["VEOG"])
    report, problems = check_brennan2019(tmp_path)
    text = "\n".join(problems)
    assert "segment 7" in text and "SoundFile7" in text
    assert "S01: " in text and "250 Hz" in text
    assert "S02: " in text and "proc.zip" in text
    assert "S03: EEG channel set differs from S02" in text and "61" in text
    assert report["subjects"]["S02"]["n_channels"] == 60 and "words" not in report["subjects"]["S02"]


def test_audio_and_subject_groups(tmp_path):
    sr = 8000
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(sr) / sr)
    write_brennan2019_wav(tmp_path, 3, tone, sr)
    x, rate = load_brennan2019_audio(tmp_path, 3, sr=16000)
    assert rate == 16000 and x.shape == (16000,) and x.dtype == np.float32
    ref = 0.5 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    np.testing.assert_allclose(x[100:-100], ref[100:-100], atol=2e-3)
    y, r2 = load_brennan2019_audio(tmp_path, "audio/DownTheRabbitHoleFinal_SoundFile3.wav")
    assert r2 == sr and y.shape == (sr,)
    write_brennan2019_datasets(tmp_path, {"use": [1, 3, 12], "low_perf": [7], "high_noise": [2, 46]})
    assert brennan2019_subjects(tmp_path) == ["S01", "S03", "S12"]
    assert brennan2019_subjects(tmp_path, "high_noise") == ["S02", "S46"]
    with pytest.raises(ValidationError, match="group"):
        brennan2019_subjects(tmp_path, "good")


def test_v73_recording_reads_the_same(tmp_path):
    data, _ = _tree(tmp_path)
    a = load_brennan2019(tmp_path, 1, segments=[2, 3])
    write_brennan2019_raw(tmp_path, 1, data, version=73)
    assert brennan2019_path(tmp_path, "raw", subject=1).read_bytes()[:10] == b"MATLAB 7.3"
    b = load_brennan2019(tmp_path, 1, segments=[2, 3])
    np.testing.assert_array_equal(a.X, b.X)
    assert a.ch_names == b.ch_names and a.stimulus_ids.tolist() == b.stimulus_ids.tolist()
