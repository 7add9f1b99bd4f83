import numpy as np
import pytest

from neurodecode._core import (
    MissingFileError,
    ShapeMismatchError,
    ValidationError,
    check_array,
    check_indices,
    check_option,
    check_path,
    check_positive,
    check_same_length,
)
from neurodecode._core.errors import DataIntegrityError, NeurodecodeError, OfflineError


def test_errors_subclass_builtins():
    assert issubclass(ShapeMismatchError, ValueError)
    assert issubclass(DataIntegrityError, OSError)
    assert issubclass(OfflineError, OSError)
    assert issubclass(MissingFileError, FileNotFoundError)
    assert issubclass(ValidationError, NeurodecodeError)


def test_check_array_nan_names_count_and_position():
    x = np.zeros((7, 8))
    x[2, 3] = np.nan
    x[5, 1] = np.inf
    with pytest.raises(ValidationError, match=r"X: expected only finite values, got 2 NaN/inf .*\(2, 3\)"):
        check_array(x, "X")


def test_check_array_ndim_and_shape():
    with pytest.raises(ShapeMismatchError, match=r"betas: expected an array with 2 dimensions, got an array of shape \(7,\)"):
        check_array(np.ones(7), "betas", ndim=2)
    with pytest.raises(ShapeMismatchError, match=r"Y: expected an array of shape \(any, 9\), got an array of shape \(7, 8\)"):
        check_array(np.ones((7, 8)), "Y", shape=(None, 9))
    assert check_array(np.ones((7, 9)), "Y", shape=(None, 9)).shape == (7, 9)


def test_check_array_empty_and_object():
    with pytest.raises(ValidationError, match="non-empty"):
        check_array(np.ones((0, 3)), "X")
    with pytest.raises(ValidationError, match="numeric"):
        check_array(np.array([[1], [1, 2]], dtype=object), "X")


def test_check_array_dtype_float_casts_ints():
    out = check_array(np.arange(6).reshape(2, 3), "X", dtype="float")
    assert out.dtype == np.float64
    f32 = np.ones((2, 3), np.float32)
    assert check_array(f32, "X", dtype="float").dtype == np.float32


def test_check_option_lists_choices():
    with pytest.raises(ValidationError, match=r"beta_version: expected one of 'b1', 'b2', 'b3', got 'b4'"):
        check_option("b4", "beta_version", ["b1", "b2", "b3"])
    assert check_option("b3", "beta_version", ["b1", "b2", "b3"]) == "b3"


def test_check_positive():
    with pytest.raises(ValidationError, match="alphas: expected strictly positive"):
        check_positive([1.0, 0.0], "alphas", allow_array=True)
    with pytest.raises(ValidationError, match="alpha: expected strictly positive"):
        check_positive(-1, "alpha")
    assert check_positive(0, "lr", strict=False) == 0


def test_check_path(tmp_path):
    with pytest.raises(MissingFileError, match=r"root: expected an existing folder, got .*nope.*Download it"):
        check_path(tmp_path / "nope", "root", kind="dir", hint="Download it")
    f = tmp_path / "a.txt"
    f.write_text("x")
    with pytest.raises(ValidationError, match="expected a folder"):
        check_path(f, "root", kind="dir")
    assert check_path(f, "p", kind="file") == f


def test_check_indices_zero_vs_one_based():
    assert check_indices([1, 9], "trials", 9, base=1).tolist() == [0, 8]
    with pytest.raises(ValidationError, match="look 0-based"):
        check_indices([0, 3], "trials", 9, base=1)
    with pytest.raises(ValidationError, match="look 1-based"):
        check_indices([3, 9], "trials", 9, base=0)
    with pytest.raises(ValidationError, match=r"-1"):
        check_indices([-1], "trials", 9)
    with pytest.raises(ValidationError, match="integer"):
        check_indices([0.5], "trials", 9)


def test_check_same_length():
    with pytest.raises(ShapeMismatchError, match="X/Y: expected the same number of samples, got 7 and 8"):
        check_same_length("X", np.ones(7), "Y", np.ones(8))


def test_dataclass_from_dict_refuses_misspelt_fields_and_skips_ignored():
    import dataclasses

    from neurodecode._core.validation import dataclass_from_dict

    @dataclasses.dataclass
    class Cfg:
        width: int = 8
        depth: int = 2

    assert dataclass_from_dict(Cfg, {"name": "mindbridge", "width": 7}, "decoder") == Cfg(width=7)
    with pytest.raises(ValidationError, match=r"decoder: expected Cfg fields among depth, width, got dpeth, wdth"):
        dataclass_from_dict(Cfg, {"wdth": 7, "dpeth": 9}, "decoder")
    with pytest.raises(ValidationError, match="got name"):
        dataclass_from_dict(Cfg, {"name": "x"}, "train", ignore=())
