import numpy as np
import pytest

from neurodecode._core.errors import DataIntegrityError, ShapeMismatchError, ValidationError
from neurodecode.data import Trials
from neurodecode.io.hdf5 import open_hdf5, read_rows


def _trials():
    X = np.arange(7 * 8, dtype=np.float32).reshape(7, 8)
    return Trials(X=X, stimulus_ids=np.array([5, 3, 5, 9, 3, 5, 2]), subject="nsd/subj01",
                  split=np.array(["train", "test", "train", "train", "test", "train", "test"]),
                  metadata={"session": np.array([1, 1, 1, 2, 2, 2, 2])}, provenance={"beta_version": "b3"})


def test_average_repeats_known_answer():
    t = _trials().average_repeats()
    assert t.stimulus_ids.tolist() == [5, 3, 9, 2]
    assert t.split.tolist() == ["train", "test", "train", "test"]
    np.testing.assert_allclose(t.X[0], (np.arange(8) + np.arange(16, 24) + np.arange(40, 48)) / 3)
    np.testing.assert_allclose(t.X[1], (np.arange(8, 16) + np.arange(32, 40)) / 2)
    assert t.metadata["n_repeats"].tolist() == [3, 2, 1, 1]
    assert t.provenance["repeats"] == "averaged"


def test_split_selection_and_errors():
    t = _trials()
    assert len(t.train) == 4 and len(t.test) == 3
    assert t.test.provenance["selections"] == ["split=test"]
    with pytest.raises(ValidationError, match="split"):
        t.select_split("validation")
    with pytest.raises(ValidationError, match="non-empty selection"):
        t.subset(np.zeros(7, bool))
    with pytest.raises(ShapeMismatchError, match="stimulus_ids: expected one entry per trial"):
        Trials(X=np.ones((7, 8)), stimulus_ids=np.arange(6), subject="s", split=["train"] * 7)


def test_save_load_round_trip(tmp_path):
    t = _trials()
    t.texts = [f"sentence {i}" for i in range(7)]
    t.save(tmp_path / "t.h5")
    back = Trials.load(tmp_path / "t.h5")
    np.testing.assert_array_equal(back.X, t.X)
    assert back.stimulus_ids.tolist() == t.stimulus_ids.tolist()
    assert back.split.tolist() == t.split.tolist()
    assert back.texts == t.texts and back.provenance == t.provenance
    assert back.metadata["session"].tolist() == t.metadata["session"].tolist()


def test_read_rows_unsorted_repeats(tmp_path):
    import h5py

    data = np.arange(9 * 7).reshape(9, 7)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["d"] = data
    with open_hdf5(tmp_path / "a.h5") as f:
        np.testing.assert_array_equal(read_rows(f["d"], [4, 1, 4, 8]), data[[4, 1, 4, 8]])
        np.testing.assert_array_equal(read_rows(f["d"], [6, 6], axis=1), data[:, [6, 6]])
        with pytest.raises(ValidationError, match="out-of-range"):
            read_rows(f["d"], [9])


def test_html_saved_as_hdf5(tmp_path):
    p = tmp_path / "nsd_stimuli.hdf5"
    p.write_text("<!DOCTYPE html><html><body>Access denied</body></html>")
    with pytest.raises(DataIntegrityError, match="HTML page"):
        with open_hdf5(p):
            pass
