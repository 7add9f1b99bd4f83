"""The shared segment-cutting core of the speech loaders (neurodecode.data._speech_segments), tested directly."""

import hashlib
import json

import numpy as np
import pytest

from neurodecode._core.errors import MetadataMismatchError, ValidationError
from neurodecode.data import _speech_segments as sp

SEG = {"tmin": -0.5, "tmax": 2.5, "sfreq": 120.0, "baseline": [-0.5, -0.2], "test_fraction": 0.2,
       "val_fraction": 0.1}


def _ramp(n_ch, n_s):
    # channel c, sample t -> 100 c + t (asymmetric: channels and samples cannot be confused)
    return 100.0 * np.arange(n_ch)[:, None] + np.arange(n_s)[None, :]


def test_segment_window_defaults_overrides_and_errors():
    w = sp.segment_window(SEG, None, None, None, "spec")
    assert (w.tmin, w.tmax, w.sfreq, w.baseline, w.n_times, w.i0) == (-0.5, 2.5, 120.0, (-0.5, -0.2), 360, -60)
    np.testing.assert_allclose(w.times, -0.5 + np.arange(360) / 120.0)
    w = sp.segment_window(SEG, -0.2, 0.5, 10, None)
    assert (w.n_times, w.i0, w.baseline) == (7, -2, None) and isinstance(w.sfreq, float)
    with pytest.raises(ValidationError, match="tmax"):
        sp.segment_window(SEG, 1.0, 1.0, None, "spec")
    with pytest.raises(ValidationError, match="sfreq"):
        sp.segment_window(SEG, None, None, 0.0, "spec")
    with pytest.raises(ValidationError, match="baseline"):
        sp.segment_window(SEG, None, None, None, "mean")


def test_cut_segments_known_answer_with_and_without_baseline():
    data = _ramp(3, 50)
    samples = np.array([10, 25, 4])
    w = sp.segment_window(SEG, -0.2, 0.5, 10.0, None)  # i0 = -2, 7 samples
    x = sp.cut_segments(data, samples, w)
    assert x.shape == (3, 3, 7) and x.dtype == np.float32
    for k, s in enumerate(samples):
        np.testing.assert_array_equal(x[k], data[:, s - 2:s + 5])
    # baseline (start, 0 s): the first 2 samples; a ramp minus the mean of its first two samples is j - 0.5
    wb = sp.segment_window(SEG, -0.2, 0.5, 10.0, (None, 0.0))
    xb = sp.cut_segments(data, samples, wb)
    np.testing.assert_array_equal(xb, np.broadcast_to(np.arange(7) - 0.5, (3, 3, 7)))
    # float onset samples (as np.round returns) cut the same windows
    np.testing.assert_array_equal(sp.cut_segments(data, samples.astype(float), w), x)
    for bad in ((0.3, 0.1), (-1.0, 0.0), (0.0, 0.9)):
        with pytest.raises(ValidationError, match="baseline"):
            sp.cut_segments(data, samples, sp.segment_window(SEG, -0.2, 0.5, 10.0, bad))


def test_windows_inside_edges():
    w = sp.segment_window(SEG, -0.2, 0.5, 10.0, None)  # window [s - 2, s + 5)
    inside = sp.windows_inside(np.array([1, 2, 45, 46]), w, 50)
    assert inside.tolist() == [False, True, True, False]


def test_rank_splits_sha1_order_counts_and_name_only():
    names = [f"s{k}.wav" for k in range(7)]
    splits = sp.rank_splits([f"stimuli/audio/{n}" for n in names], 0.2, 0.1)
    ranked = sorted(names, key=lambda n: hashlib.sha1(n.encode()).hexdigest())
    assert [k.split("/")[-1] for k in splits] == ranked  # rank order
    assert list(splits.values()) == ["test", "test", "val"] + ["train"] * 4  # ceil(1.4) = 2, ceil(0.7) = 1
    # only the file name is hashed: the folder and the input order do not matter
    other = sp.rank_splits([f"x/{n}" for n in reversed(names)], 0.2, 0.1)
    assert {k.split("/")[-1]: v for k, v in other.items()} == {k.split("/")[-1]: v for k, v in splits.items()}
    assert sp.split_fractions(SEG, None, 0.3) == (0.2, 0.3)
    with pytest.raises(ValidationError, match="test_fraction/val_fraction"):
        sp.split_fractions(SEG, 0.7, 0.4)


def test_stimulus_id_provenance_and_positions():
    assert sp.stimulus_id("stimuli/audio/lw1_0.wav", 1.2344) == "lw1_0@1234"
    assert sp.stimulus_id("Stimuli/Audio/audio3.wav", 0.0) == "audio3@0"
    w = sp.segment_window(SEG, None, None, 100.0, (None, -0.2))
    prov = sp.window_provenance(w, None, 30.0)
    assert list(prov) == ["resampled", "filter", "tmin", "tmax", "n_times", "baseline"]
    assert prov["filter"] == {"l_freq": None, "h_freq": 30.0} and prov["baseline"] == [None, -0.2]
    assert prov["n_times"] == 300 and "100 Hz" in prov["resampled"]
    assert sp.window_provenance(sp.segment_window(SEG, None, None, None, None), None, None)["filter"] is None
    assert sp.rounded_positions(np.array([[0.1234567, 1.0], [0.0, 0.5]])) == [[0.123457, 1.0], [0.0, 0.5]]
    assert sp.rounded_positions(None) is None


def test_speech_trials_columns_and_broadcast():
    w = sp.segment_window(SEG, -0.2, 0.5, 10.0, None)
    X = np.zeros((2, 3, 7), np.float32)
    t = sp.speech_trials(X, window=w, subject="d/s1", ch_names=["a", "b", "c"], stimulus_ids=["w@1", "w@2"],
                         split=["train", "test"], texts=["hi", "yo"], sound=["w.wav", "w.wav"], sound_offset=[0.5, 1],
                         sequence=["1", "2"], story="tale", session=0, task=[3, 4], provenance={"k": 1},
                         extra_metadata={"order": np.array([7, 8])})
    assert list(t.metadata) == ["sound", "sound_offset", "sequence", "story", "session", "task", "order"]
    assert t.metadata["story"].tolist() == ["tale", "tale"] and t.metadata["session"].tolist() == [0, 0]
    assert t.metadata["session"].dtype == np.int64 and t.metadata["task"].dtype == np.int64
    assert t.metadata["sound_offset"].dtype == np.float64 and t.metadata["sound_offset"].tolist() == [0.5, 1.0]
    assert t.stimulus_ids.tolist() == ["w@1", "w@2"] and t.split.tolist() == ["train", "test"]
    assert t.sfreq == 10.0 and t.ch_names == ["a", "b", "c"] and t.texts == ["hi", "yo"]
    np.testing.assert_allclose(t.times, -0.2 + np.arange(7) / 10.0)
    t2 = sp.speech_trials(X, window=w, subject="d/s1", ch_names=["a", "b", "c"], stimulus_ids=["w@1", "w@2"],
                          split=["train", "test"], texts=["hi", "yo"], sound=["w.wav", "w.wav"], sound_offset=[0.5, 1],
                          sequence=["1", "2"], story=["s1", "s2"], session=[1, 0], task=[3, 4], provenance={})
    assert t2.metadata["story"].tolist() == ["s1", "s2"] and t2.metadata["session"].tolist() == [1, 0]


def test_merge_channel_set_and_finite_check():
    assert sp.merge_channel_set(None, ["a", "b"], expected_given=False, path="r1") == ["a", "b"]
    assert sp.merge_channel_set(["b", "a"], ["a", "b"], expected_given=True, path="r1") == ["b", "a"]
    with pytest.raises(MetadataMismatchError, match="same channel set in every recording.*r2"):
        sp.merge_channel_set(["a", "b"], ["a", "c"], expected_given=False, path="r2")
    with pytest.raises(MetadataMismatchError, match="expected set"):
        sp.merge_channel_set(["a", "b"], ["a"], expected_given=True, path="r2")
    x = np.zeros((2, 3, 4))
    sp.check_segments_finite(x, "MEG data", ["a", "b", "c"], "here", "fix it")
    x[1, 2, 3] = np.nan
    where = r"1 NaN/inf value.* of here, first at \(segment 1, channel c, time 3\)\. fix it"
    with pytest.raises(ValidationError, match=where):
        sp.check_segments_finite(x, "MEG data", ["a", "b", "c"], "here", "fix it")


def test_check_recording_rate_and_sidecar(tmp_path):
    sidecar = tmp_path / "sub-01_meg.json"
    sp.check_recording_rate(1000.0, 1000.0, tmp_path / "r.fif", "X", 1000, sidecar)  # no sidecar: fine
    with pytest.raises(MetadataMismatchError, match="raw_sfreq=500"):
        sp.check_recording_rate(500.0, 1000.0, tmp_path / "r.fif", "X", 1000, sidecar)
    sidecar.write_text(json.dumps({"SamplingFrequency": 1200}))
    with pytest.raises(MetadataMismatchError, match="sub-01_meg.json"):
        sp.check_recording_rate(1000.0, 1000.0, tmp_path / "r.fif", "X", 1000, sidecar)
    problems: list[str] = []
    assert sp.splits_or_problem(lambda: {"a.wav": "train"}, problems) == {"a.wav": "train"} and problems == []
    assert sp.splits_or_problem(lambda: sp.split_fractions(SEG, 2.0, 0.0), problems) == {}
    assert len(problems) == 1 and "test_fraction" in problems[0]


def test_pick_meg_channels_and_filter_resample(tmp_path):
    import mne

    names = ["M1", "M2", "G1", "E1", "R1"]
    info = mne.create_info(names, 100.0, ["mag", "mag", "grad", "eeg", "ref_meg"])
    raw = mne.io.RawArray(_ramp(5, 300) * 1e-12, info, verbose="error")
    tsv = tmp_path / "channels.tsv"
    assert sp.pick_meg_channels(raw, "meg", tsv, "r") == ["M1", "M2", "G1"]  # eeg and reference dropped
    tsv.write_text("name\ttype\tstatus\nM1\tMEGMAG\tgood\nM2\tMEGMAG\tbad\n")
    raw.info["bads"] = ["G1"]
    assert sp.pick_meg_channels(raw, "meg", tsv, "r") == ["M1"]
    assert sp.pick_meg_channels(raw, ["E1", "M2"], tsv, "r") == ["E1", "M2"]
    with pytest.raises(MetadataMismatchError, match="X9"):
        sp.pick_meg_channels(raw, ["M1", "X9"], tsv, "r")
    with pytest.raises(ValidationError, match="picks"):
        sp.pick_meg_channels(raw, "eeg", tsv, "r")
    before = raw.get_data().copy()
    assert sp.filter_resample(raw, None, None, 100.0, None) is raw  # already at the rate: untouched
    np.testing.assert_array_equal(raw.get_data(), before)
    sp.filter_resample(raw, None, None, 50.0, None)
    assert raw.info["sfreq"] == 50.0 and raw.n_times == 150


def test_read_events_table_columns_onsets_and_errors(tmp_path):
    from neurodecode._core.errors import DataIntegrityError, MissingFileError

    path = tmp_path / "sub-01_events.tsv"
    path.write_text("onset\tduration\ttrial_type\n1.5\t0\ta\n0.25\t0\tb\n")
    cols, onset = sp.read_events_table(path, ["onset", "trial_type"], "word onsets", "fix")
    assert onset.dtype == np.float64 and onset.tolist() == [1.5, 0.25] and cols["trial_type"] == ["a", "b"]
    with pytest.raises(MissingFileError, match=r"\(word onsets\)"):
        sp.read_events_table(tmp_path / "none.tsv", ["onset"], "word onsets", "fix")
    with pytest.raises(DataIntegrityError, match=r"missing \['value'\].*Check the file"):
        sp.read_events_table(path, ["onset", "value"], "word onsets", "Check the file")
    path.write_text("onset\ttrial_type\nsoon\ta\n")
    with pytest.raises(DataIntegrityError, match="onset: expected numbers"):
        sp.read_events_table(path, ["onset"], "word onsets", "fix")
