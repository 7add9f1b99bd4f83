"""Safe readers: NIfTI full reads, MATLAB v5/v7.3, pickled .npy, voxel-wise HDF5 reads."""

import h5py
import numpy as np
import pytest
import scipy.io

from neurodecode._core.errors import DataIntegrityError, MissingFileError, UnsafeCheckpointError
from neurodecode.io.hdf5 import read_voxels
from neurodecode.io.matlab import load_mat, mat_version, save_mat_v73
from neurodecode.io.nifti import load_nifti, save_nifti
from neurodecode.io.npy import load_npy, load_npz, save_npz


def test_nifti_round_trip_and_truncation(tmp_path):
    a = np.arange(7 * 8 * 9 * 2, dtype=np.int16).reshape(7, 8, 9, 2)
    aff = np.diag([1.8, 1.8, 1.8, 1.0])
    save_nifti(tmp_path / "x.nii.gz", a, aff)
    v = load_nifti(tmp_path / "x.nii.gz", ndim=4)
    assert v.data.dtype == np.int16 and np.array_equal(v.data, a) and np.allclose(v.affine, aff)
    raw = (tmp_path / "x.nii.gz").read_bytes()
    (tmp_path / "t.nii.gz").write_bytes(raw[: len(raw) - 200])
    with pytest.raises(DataIntegrityError, match="truncated"):
        load_nifti(tmp_path / "t.nii.gz")
    (tmp_path / "h.nii.gz").write_text("<!DOCTYPE html>")
    with pytest.raises(DataIntegrityError, match="HTML page"):
        load_nifti(tmp_path / "h.nii.gz")
    with pytest.raises(MissingFileError, match="x/y.nii.gz"):
        load_nifti(tmp_path / "x" / "y.nii.gz", hint="Expected x/y.nii.gz")


def test_matlab_v5_and_v73_read_the_same(tmp_path):
    m = np.arange(6.0).reshape(2, 3)
    scipy.io.savemat(tmp_path / "a.mat", {"m": m, "s": "héllo"})
    save_mat_v73(tmp_path / "b.mat", {"m": m, "s": "héllo", "st": [{"x": "ab", "y": m}, {"x": "c", "y": m.T}]})
    assert mat_version(tmp_path / "a.mat") == 5 and mat_version(tmp_path / "b.mat") == 73
    a, b = load_mat(tmp_path / "a.mat"), load_mat(tmp_path / "b.mat")
    np.testing.assert_array_equal(a["m"], m)
    np.testing.assert_array_equal(b["m"], m)  # MATLAB axis order restored
    assert a["s"] == b["s"] == "héllo"
    assert b["st"][1]["x"] == "c" and b["st"][1]["y"].shape == (3, 2)
    with pytest.raises(DataIntegrityError, match="variables: m, s"):
        load_mat(tmp_path / "a.mat", ["masterordering"])


def test_pickled_npy_needs_opt_in(tmp_path):
    np.save(tmp_path / "d.npy", np.array({"k": np.ones(3)}, dtype=object), allow_pickle=True)
    with pytest.raises(UnsafeCheckpointError, match="allow_pickle"):
        load_npy(tmp_path / "d.npy")
    assert load_npy(tmp_path / "d.npy", allow_pickle=True)["k"].tolist() == [1, 1, 1]
    np.save(tmp_path / "p.npy", np.arange(4))
    assert load_npy(tmp_path / "p.npy").tolist() == [0, 1, 2, 3]
    save_npz(tmp_path / "s.npz", {"names": np.array(["a", "b"], dtype=object), "x": np.ones(2)})
    out = load_npz(tmp_path / "s.npz")
    assert out["names"].tolist() == ["a", "b"]


def test_read_voxels_known_answer(tmp_path):
    data = np.arange(5 * 9 * 8 * 7, dtype=np.int16).reshape(5, 9, 8, 7)
    with h5py.File(tmp_path / "b.h5", "w") as f:
        f.create_dataset("betas", data=data, chunks=(5, 1, 1, 1))
    vox = np.array([[8, 7, 6], [0, 0, 0], [8, 7, 2], [3, 1, 4], [0, 0, 0]])
    with h5py.File(tmp_path / "b.h5") as f:
        out = read_voxels(f["betas"], vox)
        np.testing.assert_array_equal(out, data[:, vox[:, 0], vox[:, 1], vox[:, 2]])
        with pytest.raises(ValueError, match="out-of-range"):
            read_voxels(f["betas"], [[9, 0, 0]])
