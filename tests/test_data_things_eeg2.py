"""THINGS-EEG2 loader: both variants, repeats, safe conversion, and bad inputs."""

import numpy as np
import pytest

from neurodecode._core.errors import (
    MetadataMismatchError,
    MissingFileError,
    ShapeMismatchError,
    UnsafeCheckpointError,
    ValidationError,
)
from neurodecode.data import convert_things_eeg2, load_things_eeg2
from neurodecode.testing import make_things_eeg2_fixture, write_things_eeg2_subject

CH7 = [f"E{i}" for i in range(7)]


def _write(root, rng, *, variant="atm", sfreq=250.0, n_ch=63, ch=None, n_t=9, safe_copy=False):
    times = -0.2 + np.arange(n_t) / sfreq
    train = rng.normal(size=(20, 4, n_ch, n_t)).astype(np.float32)
    test = rng.normal(size=(3, 5, n_ch, n_t)).astype(np.float32)
    ch = ch or [f"EEG{i}" for i in range(n_ch)]
    write_things_eeg2_subject(root, 2, train=train, test=test, ch_names=ch, times=times, variant=variant,
                              safe_copy=safe_copy, train_concepts=["00001_aardvark", "00002_abacus"],
                              test_concepts=["00003_x", "00004_y", "00005_z"])
    return train, test, times


def test_known_answer_atm_layout(tmp_path, rng):
    train, test, times = _write(tmp_path, rng)
    assert (tmp_path / "Preprocessed_data_250Hz/sub-02/preprocessed_eeg_training.npy").is_file()
    t = load_things_eeg2(tmp_path, 2, allow_pickle=True)
    assert t.subject == "things-eeg2/sub-02" and t.sfreq == 250.0 and len(t.ch_names) == 63
    assert t.X.shape == (20 * 4 + 3 * 5, 63, 9)
    np.testing.assert_array_equal(t.X[5], train[1, 1])
    np.testing.assert_array_equal(t.X[80 + 7], test[1, 2])
    assert t.stimulus_ids[5] == "aardvark_02s.jpg" and t.metadata["concept"][5] == "00001_aardvark"
    assert t.metadata["concept"][-1] == "00005_z" and t.metadata["repetition"][7] == 3
    assert (t.split == "test").sum() == 15
    np.testing.assert_allclose(t.times, times)
    a = load_things_eeg2(tmp_path, "things-eeg2/sub-02", allow_pickle=True, average_repeats=True, split="test")
    assert a.X.shape == (3, 63, 9)
    np.testing.assert_allclose(a.X[2], test[2].mean(0), atol=1e-6)
    assert a.provenance["repeats"] == "averaged" and a.provenance["variant"] == "atm"


def test_official_fixture_and_root_as_variant_folder(tmp_path):
    make_things_eeg2_fixture(tmp_path, variant="official", n_train_concepts=2, n_test=3)
    t = load_things_eeg2(tmp_path / "preprocessed_data", 1, variant="official", allow_pickle=True, split="train")
    assert t.X.shape == (2 * 10 * 4, 17, 100) and t.sfreq == 100.0
    assert t.times[0] == pytest.approx(-0.2) and t.times[-1] == pytest.approx(0.79)


def test_pickle_needs_opt_in_and_conversion_removes_the_need(tmp_path, rng):
    train, _, _ = _write(tmp_path, rng)
    with pytest.raises(UnsafeCheckpointError, match="allow_pickle"):
        load_things_eeg2(tmp_path, 2)
    with pytest.raises(UnsafeCheckpointError, match="allow_pickle"):
        convert_things_eeg2(tmp_path, 2)
    out = convert_things_eeg2(tmp_path, 2, allow_pickle=True)
    assert [p.suffix for p in out] == [".npz", ".npz", ".npz"]
    t = load_things_eeg2(tmp_path, 2)  # no pickle needed now
    np.testing.assert_array_equal(t.X[:4], train[0])
    assert t.stimulus_ids[0] == "aardvark_01s.jpg"
    assert t.provenance["files"][0].endswith(".npz")


def test_hdf5_conversion(tmp_path, rng):
    _, test, _ = _write(tmp_path, rng)
    convert_things_eeg2(tmp_path, 2, allow_pickle=True, out_format="hdf5")
    t = load_things_eeg2(tmp_path, 2, split="test")
    np.testing.assert_array_equal(t.X[:5], test[0])
    assert t.ch_names[0] == "EEG0"


def test_sampling_rate_mismatch(tmp_path, rng):
    _write(tmp_path, rng, sfreq=1000.0)
    with pytest.raises(MetadataMismatchError, match="250 Hz.*1000 Hz"):
        load_things_eeg2(tmp_path, 2, allow_pickle=True)


def test_channel_count_and_set_mismatch(tmp_path, rng):
    _write(tmp_path, rng, n_ch=7, ch=CH7)
    with pytest.raises(MetadataMismatchError, match="63 channels"):
        load_things_eeg2(tmp_path, 2, allow_pickle=True)
    _write(tmp_path, rng)
    with pytest.raises(MetadataMismatchError, match="channel set"):
        load_things_eeg2(tmp_path, 2, allow_pickle=True, ch_names=[f"X{i}" for i in range(63)])


def test_missing_file_wrong_dims_empty_split(tmp_path, rng):
    with pytest.raises(MissingFileError, match="Preprocessed_data_250Hz/sub-02/preprocessed_eeg_training.npy"):
        load_things_eeg2(tmp_path, 2, allow_pickle=True)
    times = np.arange(9) / 250.0
    write_things_eeg2_subject(tmp_path, 2, train=np.zeros((2, 1, 63, 9)), test=np.zeros((2, 1, 63, 9)),
                              ch_names=[f"E{i}" for i in range(63)], times=times)
    np.save(tmp_path / "Preprocessed_data_250Hz/sub-02/preprocessed_eeg_test.npy",
            np.array({"preprocessed_eeg_data": np.zeros((2, 63, 9)), "ch_names": ["a"], "times": times}, dtype=object),
            allow_pickle=True)
    with pytest.raises(ShapeMismatchError, match="n_repetitions"):
        load_things_eeg2(tmp_path, 2, allow_pickle=True)
    with pytest.raises(ValidationError, match="empty selection"):
        load_things_eeg2(tmp_path, 2, allow_pickle=True, split=())
    with pytest.raises(ValidationError, match="subject"):
        load_things_eeg2(tmp_path, 11, allow_pickle=True)


def test_writer_safe_copy_loads_without_unpickling(tmp_path):
    from neurodecode._core.errors import UnsafeCheckpointError

    _write(tmp_path / "safe", np.random.default_rng(0), safe_copy=True)
    _write(tmp_path / "pickled", np.random.default_rng(0))
    safe = load_things_eeg2(tmp_path / "safe", 2)  # the pickle-free twins need no opt-in
    with pytest.raises(UnsafeCheckpointError, match="allow_pickle"):
        load_things_eeg2(tmp_path / "pickled", 2)
    ref = load_things_eeg2(tmp_path / "pickled", 2, allow_pickle=True)
    np.testing.assert_array_equal(safe.X, ref.X)
    assert safe.stimulus_ids.tolist() == ref.stimulus_ids.tolist() and safe.sfreq == ref.sfreq
    assert safe.metadata["concept"].tolist() == ref.metadata["concept"].tolist()
