"""ZuCo loader: v5 and v7.3 files, padding, dropped sentences, split by unique sentence, bad inputs."""

import numpy as np
import pytest

from neurodecode._core.errors import DataIntegrityError, MetadataMismatchError, MissingFileError, ValidationError
from neurodecode.data import load_zuco
from neurodecode.testing import make_zuco_fixture, write_zuco_subject, zuco_path

SENTS = ["The cat sat.", "A dog ran far away.", "It rained."]


@pytest.mark.parametrize(("version", "subject", "task"), [(1, "ZAB", "SR"), (2, "YAC", "TSR")])
def test_known_answer_both_versions(tmp_path, rng, version, subject, task):
    eeg = [rng.normal(size=(7, 9)), np.zeros((0, 0)), rng.normal(size=(7, 4))]
    path = write_zuco_subject(tmp_path, subject, task=task, sentences=SENTS, eeg=eeg, version=version)
    assert path == zuco_path(tmp_path, subject, task, version)
    assert path.read_bytes().startswith(b"MATLAB 7.3" if version == 2 else b"MATLAB 5.0")
    t = load_zuco(tmp_path, f"zuco/{subject}", version=version, task=task)
    assert t.subject == f"zuco/{subject}" and t.X.shape == (2, 7, 9) and t.sfreq == 500.0
    assert t.texts == ["The cat sat.", "It rained."] and t.stimulus_ids.tolist() == [0, 2]
    np.testing.assert_allclose(t.X[0], eeg[0], atol=1e-6)
    np.testing.assert_allclose(t.X[1, :, :4], eeg[2], atol=1e-6)
    assert np.all(t.X[1, :, 4:] == 0) and t.lengths.tolist() == [9, 4]
    assert t.provenance["n_dropped_no_eeg"] == 1 and t.metadata["task"].tolist() == [task, task]


def test_split_by_unique_sentence_is_shared_across_subjects(tmp_path):
    make_zuco_fixture(tmp_path, version=2, n_sentences=30)
    a = load_zuco(tmp_path, "YAC", version=2, task="NR")
    b = load_zuco(tmp_path, "YAG", version=2, task="NR")
    assert len(a) == 29  # one sentence without EEG
    assert dict(zip(a.texts, a.split)) == dict(zip(b.texts, b.split))
    assert set(a.split) <= {"train", "val", "test"} and (a.split == "train").sum() > 10


def test_bad_inputs(tmp_path, rng):
    with pytest.raises(MissingFileError, match="task1 - NR/Matlab files/resultsYAC_NR.mat"):
        load_zuco(tmp_path, "YAC", version=2, task="NR")
    with pytest.raises(ValidationError, match="task"):
        load_zuco(tmp_path, "YAC", version=2, task="SR")
    write_zuco_subject(tmp_path, "YAC", task="NR", sentences=SENTS[:1], eeg=[rng.normal(size=(3, 4))], version=1,
                       sfreq=500)
    # a v5 file where a v7.3 (2.0) file belongs
    import shutil

    dst = zuco_path(tmp_path, "YAC", "NR", 2)
    dst.parent.mkdir(parents=True)
    shutil.copy(zuco_path(tmp_path, "YAC", "NR", 1), dst)
    with pytest.raises(MetadataMismatchError, match="v73"):
        load_zuco(tmp_path, "YAC", version=2, task="NR")
    write_zuco_subject(tmp_path, "YAC", task="NR", sentences=SENTS[:1], eeg=[rng.normal(size=(3, 4))], sfreq=250)
    with pytest.raises(MetadataMismatchError, match="500 Hz"):
        load_zuco(tmp_path, "YAC", version=2, task="NR")
    write_zuco_subject(tmp_path, "YAC", task="NR", sentences=SENTS[:1], eeg=[rng.normal(size=(3, 4))],
                       ch_names=["a", "b", "c"])
    with pytest.raises(MetadataMismatchError, match="channel set"):
        load_zuco(tmp_path, "YAC", version=2, task="NR", ch_names=["a", "b", "x"])
    write_zuco_subject(tmp_path, "YAC", task="NR", sentences=SENTS[:2], eeg=[np.full((3, 4), np.nan), np.zeros(0)])
    with pytest.raises(ValidationError, match="at least one sentence"):
        load_zuco(tmp_path, "YAC", version=2, task="NR")
    p = zuco_path(tmp_path, "YAC", "NR", 2)
    p.write_bytes(b"<html>not found</html>")
    with pytest.raises(DataIntegrityError, match="HTML page"):
        load_zuco(tmp_path, "YAC", version=2, task="NR")


def test_resample_500_to_128_known_answer_sine(tmp_path):
    """A 10 Hz sine at 500 Hz, resampled to 128 Hz: same frequency, lengths ceil(n * 32 / 125), padding after."""
    t = np.arange(500) / 500.0
    sine = np.sin(2 * np.pi * 10 * t)
    eeg = [np.stack([sine, 2 * sine, -sine]), np.stack([sine[:251]] * 3)]
    write_zuco_subject(tmp_path, "YAC", task="NR", sentences=SENTS[:2], eeg=eeg, version=2)
    t128 = load_zuco(tmp_path, "YAC", version=2, task="NR", resample=128)
    assert t128.sfreq == 128.0 and t128.lengths.tolist() == [128, 65]  # ceil(251 * 32 / 125) = 65
    assert t128.X.shape == (2, 3, 128) and np.all(t128.X[1, :, 65:] == 0)
    np.testing.assert_allclose(t128.times, np.arange(128) / 128.0)
    spec = np.abs(np.fft.rfft(t128.X[0, 0]))
    assert np.argmax(spec) == 10  # 1 Hz bins over 1 s: the peak stays at 10 Hz
    mid = slice(10, 118)  # away from the filter's edge effects
    np.testing.assert_allclose(t128.X[0, 0, mid], np.sin(2 * np.pi * 10 * t128.times[mid]), atol=0.05)
    np.testing.assert_allclose(t128.X[0, 1, mid], 2 * t128.X[0, 0, mid], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(t128.X[1, 0, 10:60], t128.X[0, 0, 10:60], atol=0.05)
    prov = t128.provenance
    assert prov["sfreq"] == 128.0 and prov["sfreq_recorded"] == 500.0
    assert (prov["resample"]["up"], prov["resample"]["down"]) == (32, 125)
    plain = load_zuco(tmp_path, "YAC", version=2, task="NR")  # no resample: recorded rate, untouched
    assert plain.sfreq == 500.0 and plain.lengths.tolist() == [500, 251] and plain.provenance["resample"] is None
    with pytest.raises(MetadataMismatchError, match="250 Hz"):  # sfreq= still checks the recording
        load_zuco(tmp_path, "YAC", version=2, task="NR", sfreq=250, resample=128)
    with pytest.raises(ValidationError, match="resample"):
        load_zuco(tmp_path, "YAC", version=2, task="NR", resample=0)
