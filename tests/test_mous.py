"""MOUS auditory loader: BIDS events (FieldTrip data2bids) + MAUS TextGrids -> word-onset segments, wav splits."""

import numpy as np
import pytest

from neurodecode._core.errors import DataIntegrityError, MetadataMismatchError, MissingFileError, ValidationError
from neurodecode.data._mous import (
    check_mous,
    load_mous,
    load_mous_audio,
    mous_splits,
    read_mous_events,
    read_mous_word_timings,
    read_textgrid,
)
from neurodecode.testing._mous import (
    make_mous_fixture,
    mous_channel_names,
    mous_path,
    mous_sound_events,
    write_mous_recording,
    write_mous_textgrid,
    write_mous_wav,
)

SF = 120.0
# wav 186 (a sentence) starts at 1.0 s, wav 7 (a word list) at 5.5 s; words at known places inside each wav
WORDS = {186: [("Toen", 0.25, 0.5), ("de", 1.0, 1.25)], 7: [("huis", 0.5, 0.75)]}


def _ramp(n_ch, n_s):
    # exact in float32 (FIF stores single precision): channel c, sample t -> 1000 c + t
    return 1000.0 * np.arange(n_ch)[:, None] + np.arange(n_s)[None, :]


def _tree(root, *, n_ch=7, with_audio_onset=True):
    for number, words in WORDS.items():
        write_mous_wav(root, number, np.zeros(800), 8000)
        write_mous_textgrid(root, number, words, 2.0)
    data = _ramp(n_ch, int(10.0 * SF))
    events = mous_sound_events([(186, 1.0, "sentence"), (7, 5.5, "word_list")], sound_seconds=2.0,
                               with_audio_onset=with_audio_onset)
    write_mous_recording(root, 2002, data=data, sfreq=SF, ch_names=mous_channel_names(n_ch), events=events)
    return data


def test_known_answer_segments_ids_and_offsets(tmp_path):
    data = _tree(tmp_path)
    t = load_mous(tmp_path, "sub-A2002", raw_sfreq=SF, baseline=None)
    # the 3 reference sensors and the trigger channel written beside the MEG channels are dropped
    assert t.subject == "mous/sub-A2002" and t.sfreq == SF and t.ch_names == mous_channel_names(7)
    assert t.X.shape == (3, 7, 360) and t.X.dtype == np.float32
    np.testing.assert_allclose(t.times, -0.5 + np.arange(360) / SF)
    # word onsets = Audio onset + TextGrid start: 1.25, 2.0, 6.0 s -> samples 150, 240, 720 (the Sound rows,
    # 46 ms earlier, would put them 5-6 samples earlier); windows start 60 samples before
    for k, onset_sample in enumerate((150, 240, 720)):
        np.testing.assert_array_equal(t.X[k], data[:, onset_sample - 60:onset_sample + 300])
    assert t.stimulus_ids.tolist() == ["EQ_Ramp_Int2_Int1LPF186@250", "EQ_Ramp_Int2_Int1LPF186@1000",
                                       "EQ_Ramp_Int2_Int1LPF007@500"]
    np.testing.assert_allclose(t.metadata["sound_offset"], [0.25, 1.0, 0.5])
    assert t.metadata["sound"].tolist() == ["stimuli/audio_files/EQ_Ramp_Int2_Int1LPF186.wav"] * 2 + [
        "stimuli/audio_files/EQ_Ramp_Int2_Int1LPF007.wav"]
    assert (tmp_path / t.metadata["sound"][0]).is_file()
    assert list(t.texts) == ["Toen", "de", "huis"]
    assert t.metadata["story"].tolist() == ["sentence", "sentence", "word_list"]
    assert t.metadata["sequence"].tolist() == ["186", "186", "7"]
    assert t.metadata["session"].tolist() == [0, 0, 0] and t.metadata["task"].tolist() == [1, 1, 1]
    pos = np.asarray(t.provenance["sensor_positions"])
    assert pos.shape == (7, 2) and pos.min() >= 0 and pos.max() <= 1 and len(np.unique(pos, axis=0)) == 7
    # the paper's baseline (first 0.3 s) removes each channel's mean over the first 36 samples
    b = load_mous(tmp_path, 2002, raw_sfreq=SF)
    expected = data[:, 90:450] - data[:, 90:126].mean(axis=1, keepdims=True)
    np.testing.assert_allclose(b.X[0], expected, atol=1e-3)
    assert b.provenance["baseline"] == [-0.5, -0.2]
    only_lists = load_mous(tmp_path, 2002, raw_sfreq=SF, contexts=["word_list"], baseline=None)
    assert only_lists.stimulus_ids.tolist() == ["EQ_Ramp_Int2_Int1LPF007@500"]


def test_events_follow_the_audio_onset_and_fieldtrip_samples(tmp_path):
    _tree(tmp_path)
    path = mous_path(tmp_path, "events", subject=2002)
    ev = read_mous_events(path, SF)
    assert ev["number"].tolist() == [186, 7] and ev["context"].tolist() == ["sentence", "word_list"]
    np.testing.assert_allclose(ev["onset"], [1.0, 5.5])
    assert ev["has_audio_onset"].all()
    # data2bids' sample is 1-based: sample = onset x rate + 1 holds at 120 Hz, not at another rate
    lines = path.read_text().splitlines()
    assert lines[0].split("\t") == ["onset", "duration", "sample", "type", "value"]
    assert any(line.split("\t")[2] == "121" and "Audio onset" in line for line in lines)
    with pytest.raises(MetadataMismatchError, match="sample = onset x 100"):
        read_mous_events(path, 100.0)
    # without the Audio onset rows, the Sound rows (46 ms earlier) are used and flagged; a value without the
    # Presentation code ("Start File 186.wav") parses too
    text = "\n".join(line for line in lines if "Audio onset" not in line).replace("14 Start File 186", "Start File 186")
    path.write_text(text + "\n")
    ev = read_mous_events(path, SF)
    assert ev["number"].tolist() == [186, 7] and not ev["has_audio_onset"].any()
    np.testing.assert_allclose(ev["onset"], [1.0 - 0.046, 5.5 - 0.046], atol=1 / SF)


def test_textgrid_words_and_errors(tmp_path):
    write_mous_textgrid(tmp_path, 12, [("Toen", 0.02, 0.28), ("de", 0.28, 0.38)], 1.17)
    words = read_mous_word_timings(tmp_path, 12)
    assert words == [("Toen", 0.02, 0.28), ("de", 0.28, 0.38)]  # the leading silence dropped
    tiers = read_textgrid(tmp_path / "derivatives" / "phonemes" / "EQ_Ramp_Int2_Int1LPF012.TextGrid")
    assert sorted(tiers) == ["KAN-MAU", "MAU", "ORT-MAU"] and tiers["MAU"][0] == (0.0, 0.02, "<p:>")
    assert tiers["ORT-MAU"][-1] == (0.38, 1.17, "")
    path = tmp_path / "derivatives" / "phonemes" / "EQ_Ramp_Int2_Int1LPF013.TextGrid"
    path.write_text('File type = "ooTextFile"\nObject class = "TextGrid"\n\nxmin = 0\n')  # truncated
    with pytest.raises(DataIntegrityError, match="truncated"):
        read_mous_word_timings(tmp_path, 13)
    with pytest.raises(MissingFileError, match="derivatives"):
        read_mous_word_timings(tmp_path, 14)


def test_splits_are_whole_wav_files_and_shared_by_subjects(tmp_path):
    make_mous_fixture(tmp_path, subjects=(2002, 2003), n_sounds=10, sfreq=200.0)
    splits = mous_splits(tmp_path)
    assert len(splits) == 10 and list(splits.values()).count("test") == 2 and list(splits.values()).count("val") == 1
    a = load_mous(tmp_path, 2002, raw_sfreq=200.0)
    b = load_mous(tmp_path, "mous/sub-A2003", raw_sfreq=200.0)
    assert len(a) == len(b) == 10 * 3
    for t in (a, b):
        assert [splits[snd] for snd in t.metadata["sound"]] == t.split.tolist()
    assert sorted(set(a.stimulus_ids)) == sorted(set(b.stimulus_ids))  # same words, other orders
    assert set(a.metadata["story"]) == {"sentence", "word_list"}


def test_channel_blocks_do_not_change_the_result(tmp_path):
    make_mous_fixture(tmp_path, n_sounds=2, n_channels=5)  # the spec's 1200 Hz, resampled to 120 Hz
    whole = load_mous(tmp_path, 2002, l_freq=0.5, h_freq=30.0)
    blocks = load_mous(tmp_path, 2002, l_freq=0.5, h_freq=30.0, block_channels=2)
    assert whole.X.shape == (6, 5, 360)
    np.testing.assert_array_equal(whole.X, blocks.X)
    assert blocks.provenance["block_channels"] == 2 and blocks.provenance["filter"] == {"l_freq": 0.5, "h_freq": 30.0}


def test_bad_inputs_teach(tmp_path):
    _tree(tmp_path)
    with pytest.raises(MetadataMismatchError, match="raw_sfreq=120"):
        load_mous(tmp_path, 2002)  # the spec's 1200 Hz expected
    with pytest.raises(MissingFileError, match="sub-A2003"):
        load_mous(tmp_path, 2003, raw_sfreq=SF)
    with pytest.raises(ValidationError, match="visual"):
        load_mous(tmp_path, "sub-V1001", raw_sfreq=SF)
    (tmp_path / "stimuli" / "audio_files" / "EQ_Ramp_Int2_Int1LPF007.wav").unlink()
    t = load_mous(tmp_path, 2002, raw_sfreq=SF)  # the words of a missing wav are dropped and counted
    assert len(t) == 2 and t.provenance["n_sounds_without_wav"] == 1
    (tmp_path / "derivatives" / "phonemes" / "EQ_Ramp_Int2_Int1LPF186.TextGrid").unlink()
    with pytest.raises(ValidationError, match="derivatives.zip"):
        load_mous(tmp_path, 2002, raw_sfreq=SF)
    bad = mous_path(tmp_path, "raw_ds", subject=2002, run=2)
    bad.mkdir()
    (bad / (bad.stem + ".res4")).write_bytes(b"not a CTF header")
    with pytest.raises(DataIntegrityError, match="CTF"):
        load_mous(tmp_path, 2002, raw_sfreq=SF, runs=[2])


def test_nan_and_out_of_range_segments_teach(tmp_path):
    data = _tree(tmp_path)
    data[3, 700:705] = np.nan
    write_mous_recording(tmp_path, 2002, data=data, sfreq=SF, ch_names=mous_channel_names(7),
                         events=mous_sound_events([(186, 1.0, "sentence"), (7, 5.5, "word_list")], sound_seconds=2.0))
    with pytest.raises(ValidationError, match="channel MLF11-4304"):
        load_mous(tmp_path, 2002, raw_sfreq=SF)
    short = data[:, : int(7.0 * SF)]  # the word at 6.0 s needs samples up to 8.5 s
    write_mous_recording(tmp_path, 2002, data=np.nan_to_num(short), sfreq=SF, ch_names=mous_channel_names(7),
                         events=mous_sound_events([(186, 1.0, "sentence"), (7, 5.5, "word_list")], sound_seconds=1.0))
    with pytest.raises(DataIntegrityError, match="outside"):
        load_mous(tmp_path, 2002, raw_sfreq=SF)


def test_audio_is_read_mono_and_resampled(tmp_path):
    sr = 8000
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(sr) / sr)
    write_mous_wav(tmp_path, 186, tone, sr)  # stereo, as the release's wavs
    x, rate = load_mous_audio(tmp_path, 186, sr=16000)
    y, _ = load_mous_audio(tmp_path, "stimuli/audio_files/EQ_Ramp_Int2_Int1LPF186.wav", sr=16000)
    assert rate == 16000 and x.shape == (16000,) and x.dtype == np.float32
    np.testing.assert_array_equal(x, y)
    ref = 0.5 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    np.testing.assert_allclose(x[100:-100], ref[100:-100], atol=2e-3)
    with pytest.raises(MissingFileError, match="audio_files"):
        load_mous_audio(tmp_path, 9)


def test_check_lists_every_problem(tmp_path):
    make_mous_fixture(tmp_path, subjects=(2002, 2003), n_sounds=4, n_channels=5)
    report, problems = check_mous(tmp_path)
    assert problems == [] and report["subjects"]["sub-A2002"] == {"recordings": 1, "sounds": 4, "words": 12}
    (tmp_path / "stimuli" / "audio_files" / "EQ_Ramp_Int2_Int1LPF002.wav").unlink()
    (tmp_path / "derivatives" / "phonemes" / "EQ_Ramp_Int2_Int1LPF003.TextGrid").unlink()
    ev = mous_path(tmp_path, "events", subject=2003)
    lines = ev.read_text().splitlines()
    ev.write_text("\n".join(line for k, line in enumerate(lines) if "Audio onset" not in line or k > 10) + "\n")
    report, problems = check_mous(tmp_path)
    text = "\n".join(problems)
    assert "sub-A2002 run-1: 1 wav file(s) played are missing" in text and "LPF002.wav" in text
    assert "sub-A2003 run-1: 1 wav file(s) played are missing" in text
    assert "EQ_Ramp_Int2_Int1LPF003.TextGrid" in text
    assert "sub-A2003 run-1: 1 'Sound' row(s) without a following 'Audio onset' row" in text
    assert "sub-A2002 run-1" in text and "Audio onset" not in "\n".join(p for p in problems if "sub-A2002" in p)
    assert report["missing_wavs"] == 1 and report["missing_word_timings"] == 1
