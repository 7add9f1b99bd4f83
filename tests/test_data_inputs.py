"""as_brain_array: arrays, Trials, mne.Epochs and nibabel images become arrays with their metadata; errors teach."""

from __future__ import annotations

import subprocess
import sys

import mne
import nibabel as nib
import numpy as np
import pytest

from neurodecode._core.errors import MetadataMismatchError, ShapeMismatchError, ValidationError
from neurodecode.data import BrainArray, Trials, as_brain_array

N_EP, N_CH, N_T = 7, 9, 11  # asymmetric: a transposed axis cannot pass
NAMES = [f"EEG{i:03d}" for i in range(N_CH)]


def _epochs(data=None, sfreq=250.0, names=NAMES, tmin=-0.1, types="eeg"):
    data = np.random.default_rng(0).standard_normal((N_EP, len(names), N_T)) if data is None else data
    info = mne.create_info(list(names), sfreq, types)
    return mne.EpochsArray(data, info, tmin=tmin, verbose=False)


def _volumes(shape=(4, 5, 6), n=7, seed=1):
    """A 4-D float image (one volume per trial) and a boolean mask of 13 voxels, on an oblique grid."""
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((*shape, n)).astype(np.float32)
    affine = np.array([[2.0, 0, 0, -10], [0, 2.5, 0, 4], [0, 0, 3, 7], [0, 0, 0, 1]])
    mask = np.zeros(shape, bool)
    mask[1:3, 2:5, 1] = True
    mask[3, 0, 2:5] = True
    mask[0, 4, 0:4] = True
    return data, affine, mask


def test_array_is_taken_as_is():
    X = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    brain = as_brain_array(X)
    assert isinstance(brain, BrainArray) and brain.kind == "array"
    assert brain.X is X  # no copy, no cast
    assert brain.sfreq is None and brain.ch_names is None and brain.times is None and brain.subject is None
    assert as_brain_array(X, dtype=np.float64).X.dtype == np.float64
    assert as_brain_array([[1, 2], [3, 4]]).X.shape == (2, 2)


def test_trials_give_their_metadata():
    X = np.random.default_rng(2).standard_normal((N_EP, N_CH, N_T)).astype(np.float32)
    times = np.arange(N_T) / 125.0
    trials = Trials(X=X, stimulus_ids=np.arange(N_EP), subject="things-eeg2/sub-01", split=["train"] * N_EP,
                    sfreq=125.0, ch_names=NAMES, times=times)
    brain = as_brain_array(trials)
    assert brain.kind == "trials" and brain.subject == "things-eeg2/sub-01"
    np.testing.assert_array_equal(brain.X, X)
    assert brain.sfreq == 125.0 and brain.ch_names == NAMES
    np.testing.assert_array_equal(brain.times, times)
    with pytest.raises(MetadataMismatchError, match="125 Hz"):
        as_brain_array(trials, expect_sfreq=250.0)


def test_epochs_become_trials_channels_times_with_metadata():
    data = np.random.default_rng(3).standard_normal((N_EP, N_CH, N_T)) * 1e-6  # volts
    epochs = _epochs(data)
    brain = as_brain_array(epochs)
    assert brain.kind == "epochs" and brain.X.shape == (N_EP, N_CH, N_T)
    np.testing.assert_array_equal(brain.X, data)  # MNE's SI units, axes (epochs, channels, times)
    assert brain.sfreq == 250.0 and brain.ch_names == NAMES
    np.testing.assert_allclose(brain.times, -0.1 + np.arange(N_T) / 250.0)
    f32 = as_brain_array(epochs, dtype=np.float32).X
    assert f32.dtype == np.float32
    np.testing.assert_array_equal(f32, data.astype(np.float32))
    # picks by names keep the given order, as Epochs.get_data(picks=...) does
    picked = as_brain_array(epochs, picks=["EEG004", "EEG001"])
    assert picked.ch_names == ["EEG004", "EEG001"]
    np.testing.assert_array_equal(picked.X, data[:, [4, 1]])


def test_epochs_picks_by_type_and_bads():
    names = ["MEG 0111", "MEG 0112", "EEG 001", "EEG 002", "STI 014"]
    data = np.random.default_rng(4).standard_normal((N_EP, 5, N_T))
    epochs = _epochs(data, names=names, types=["mag", "grad", "eeg", "eeg", "stim"])
    epochs.info["bads"] = ["EEG 002"]
    everything = as_brain_array(epochs)  # picks=None: every channel, as get_data() gives them
    assert everything.ch_names == names
    eeg = as_brain_array(epochs, picks="eeg")  # a type drops the bad channel, as in MNE
    assert eeg.ch_names == ["EEG 001"]
    np.testing.assert_array_equal(eeg.X, data[:, [2]])
    assert as_brain_array(epochs, picks="meg").ch_names == ["MEG 0111", "MEG 0112"]
    assert as_brain_array(epochs, picks="data").ch_names == ["MEG 0111", "MEG 0112", "EEG 001"]
    with pytest.raises(ValidationError, match="picks: expected channel types.*'ecog'"):
        as_brain_array(epochs, picks="ecog")


def test_4d_image_and_list_of_3d_images_inside_a_mask():
    data, affine, mask = _volumes()
    expected = np.stack([data[..., t][mask] for t in range(data.shape[3])])  # (trials, voxels), known answer
    assert expected.shape == (7, 13)
    img = nib.Nifti1Image(data, affine)
    for m in (mask, nib.Nifti1Image(mask.astype(np.uint8), affine)):
        brain = as_brain_array(img, mask=m)
        assert brain.kind == "image" and brain.X.shape == (7, 13)
        np.testing.assert_array_equal(brain.X, expected)
        np.testing.assert_array_equal(brain.affine, affine)
    vols = [nib.Nifti1Image(data[..., t], affine) for t in range(7)]
    np.testing.assert_array_equal(as_brain_array(vols, mask=mask).X, expected)
    np.testing.assert_array_equal(as_brain_array(vols[2], mask=mask).X, expected[2:3])  # a 3-D image is one trial


def test_mask_from_a_nifti_file_and_integer_data(tmp_path):
    data, affine, mask = _volumes()
    stored = np.round(data * 100).astype(np.int16)
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), tmp_path / "mask.nii.gz")
    brain = as_brain_array(nib.Nifti1Image(stored, affine), mask=tmp_path / "mask.nii.gz")
    assert brain.X.dtype == np.float64  # integer volumes become floating
    np.testing.assert_array_equal(brain.X, np.stack([stored[..., t][mask] for t in range(7)]))


def test_image_errors_teach():
    data, affine, mask = _volumes()
    img = nib.Nifti1Image(data, affine)
    with pytest.raises(ValidationError, match="mask: expected a 3-D brain mask.*got None.*never guesses"):
        as_brain_array(img)
    with pytest.raises(ShapeMismatchError, match=r"mask: expected the grid of X, shape \(4, 5, 6\).*"
                                                  r"\(4, 5, 7\).*resample_to_img"):
        as_brain_array(img, mask=np.ones((4, 5, 7), bool))
    shifted = affine.copy()
    shifted[0, 3] += 2.0
    with pytest.raises(MetadataMismatchError, match="mask: expected the affine of X.*resample_to_img"):
        as_brain_array(img, mask=nib.Nifti1Image(mask.astype(np.uint8), shifted))
    with pytest.raises(ValidationError, match="binary mask.*threshold"):
        as_brain_array(img, mask=mask * 0.7)
    with pytest.raises(ValidationError, match="empty mask"):
        as_brain_array(img, mask=np.zeros(mask.shape, bool))
    with pytest.raises(ValidationError, match=r"non-image entries at positions \[1\]"):
        as_brain_array([nib.Nifti1Image(data[..., 0], affine), data[..., 1]], mask=mask)
    bad = data.copy()
    bad[1, 3, 1, 4] = np.nan  # inside the mask (trial 4)
    bad[0, 0, 0, 0] = np.nan  # outside the mask: irrelevant
    with pytest.raises(ValidationError, match=r"1 NaN/inf.*trial 4, voxel \(1, 3, 1\)"):
        as_brain_array(nib.Nifti1Image(bad, affine), mask=mask)


def test_epochs_errors_teach():
    data = np.random.default_rng(5).standard_normal((N_EP, N_CH, N_T))
    data[3, 5, 4] = np.inf
    with pytest.raises(ValidationError, match=r"1 NaN/inf.*epoch 3, channel 'EEG005', time 0.06 s"):
        as_brain_array(_epochs(data, sfreq=100.0, tmin=0.02))
    epochs = _epochs()
    with pytest.raises(MetadataMismatchError, match=r"sfreq: expected 500 Hz.*got 250 Hz.*resample\(500\)"):
        as_brain_array(epochs, expect_sfreq=500.0)
    with pytest.raises(MetadataMismatchError, match=r"missing: \['Cz'\]; extra: \['EEG008'\]"):
        as_brain_array(epochs, expect_ch_names=NAMES[:8] + ["Cz"])
    swapped = [NAMES[1], NAMES[0], *NAMES[2:]]
    with pytest.raises(MetadataMismatchError, match="'EEG000' at position 0 where 'EEG001'.*reorder_channels"):
        as_brain_array(epochs, expect_ch_names=swapped)
    with pytest.raises(MetadataMismatchError, match=r"starting at 0 s.*got epochs starting at -0.1 s.*crop"):
        as_brain_array(epochs, expect_tmin=0.0)
    # matching metadata passes (tmin within half a sample)
    assert as_brain_array(epochs, expect_sfreq=250.0, expect_ch_names=NAMES, expect_tmin=-0.1 + 1e-3).X.shape == (
        N_EP, N_CH, N_T)


def test_other_errors_teach():
    X = np.ones((3, 4))
    X[2, 1] = np.nan
    with pytest.raises(ValidationError, match=r"only finite values.*\(2, 1\)"):
        as_brain_array(X)
    with pytest.raises(ValidationError, match="Load the file first: nibabel.load"):
        as_brain_array("sub-01_bold.nii.gz")
    raw = mne.io.RawArray(np.zeros((2, 50)), mne.create_info(2, 100.0, "eeg"), verbose=False)
    with pytest.raises(ValidationError, match="epoched trials.*RawArray.*mne.Epochs\\(raw, events"):
        as_brain_array(raw)
    with pytest.raises(ValidationError, match="non-empty"):
        as_brain_array(np.zeros((0, 3)))


def test_importing_the_data_layer_imports_neither_mne_nor_nibabel():
    code = ("import sys; import neurodecode.data as d; d.as_brain_array([[1.0, 2.0]]); "
            "print('mne' in sys.modules, 'nibabel' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split() == ["False", "False"], out.stdout
