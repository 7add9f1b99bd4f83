"""RidgeDecoder on mne.Epochs and nibabel images: the same model as on the equivalent arrays; mismatches refused."""

from __future__ import annotations

import mne
import nibabel as nib
import numpy as np
import pytest
from sklearn.base import clone

from neurodecode._core.errors import MetadataMismatchError, ShapeMismatchError, ValidationError
from neurodecode.data import Trials
from neurodecode.estimators import RidgeDecoder

GRID = (0.1, 1.0, 10.0, 100.0)
N_EP, N_CH, N_T = 23, 3, 5
NAMES = ["Fz", "Cz", "Pz"]


def _meeg(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N_EP, N_CH, N_T))
    W = rng.standard_normal((N_CH * N_T, 4))
    Y = X.reshape(N_EP, -1) @ W + 0.5 * rng.standard_normal((N_EP, 4))
    return X, Y


def _epochs(X, sfreq=200.0, names=NAMES, tmin=0.0):
    return mne.EpochsArray(X, mne.create_info(list(names), sfreq, "eeg"), tmin=tmin, verbose=False)


def test_epochs_equal_flattened_arrays():
    X, Y = _meeg()
    flat = RidgeDecoder(alphas=GRID, dtype="float64").fit(X.reshape(N_EP, -1), Y)
    dec = RidgeDecoder(alphas=GRID, dtype="float64").fit(_epochs(X), Y)
    assert dec.n_features_in_ == N_CH * N_T
    np.testing.assert_array_equal(dec.best_alphas_, flat.best_alphas_)
    np.testing.assert_allclose(dec.coef_, flat.coef_, atol=1e-12)
    X_new = np.random.default_rng(1).standard_normal((6, N_CH, N_T))
    np.testing.assert_allclose(dec.predict(_epochs(X_new)), flat.predict(X_new.reshape(6, -1)), atol=1e-12)
    assert dec.score(_epochs(X), Y) == pytest.approx(flat.score(X.reshape(N_EP, -1), Y), rel=1e-12)
    assert dec.ch_names_ == NAMES and dec.sfreq_ == 200.0 and dec.n_times_ == N_T and dec.tmin_ == 0.0
    assert flat.ch_names_ is None and flat.sfreq_ is None and flat.n_times_ is None
    # a plain array carries no metadata: only its feature count is checked
    np.testing.assert_allclose(dec.predict(X_new.reshape(6, -1)), flat.predict(X_new.reshape(6, -1)), atol=1e-12)


def test_epochs_picks_parameter():
    X, Y = _meeg()
    data = np.concatenate([X, np.zeros((N_EP, 1, N_T))], axis=1)  # plus a stimulus channel
    info = mne.create_info([*NAMES, "STI 014"], 200.0, ["eeg", "eeg", "eeg", "stim"])
    epochs = mne.EpochsArray(data, info, verbose=False)
    dec = RidgeDecoder(alphas=GRID, dtype="float64", picks="eeg").fit(epochs, Y)
    ref = RidgeDecoder(alphas=GRID, dtype="float64").fit(X.reshape(N_EP, -1), Y)
    assert dec.ch_names_ == NAMES and dec.get_params()["picks"] == "eeg"
    np.testing.assert_allclose(dec.coef_, ref.coef_, atol=1e-12)
    assert RidgeDecoder(alphas=GRID).fit(epochs, Y).n_features_in_ == 4 * N_T  # picks=None: every channel


def test_predict_refuses_other_channels_rate_and_window():
    X, Y = _meeg()
    dec = RidgeDecoder(alphas=GRID).fit(_epochs(X), Y)
    with pytest.raises(MetadataMismatchError, match="200 Hz.*got 100 Hz.*resample"):
        dec.predict(_epochs(X, sfreq=100.0))
    with pytest.raises(MetadataMismatchError, match=r"missing: \['Pz'\]; extra: \['Oz'\]"):
        dec.predict(_epochs(X, names=["Fz", "Cz", "Oz"]))
    with pytest.raises(MetadataMismatchError, match="'Pz' at position 1 where 'Cz'.*reorder_channels"):
        dec.predict(_epochs(X, names=["Fz", "Pz", "Cz"]))
    with pytest.raises(MetadataMismatchError, match="starting at 0 s.*0.1 s.*crop"):
        dec.predict(_epochs(X, tmin=0.1))
    with pytest.raises(ShapeMismatchError, match="5 samples per epoch, as in fit.*6 samples.*crop"):
        dec.predict(_epochs(np.zeros((2, N_CH, N_T + 1))))
    # Trials carrying M/EEG metadata are checked the same way
    trials = Trials(X=X, stimulus_ids=np.arange(N_EP), subject="things-meg/sub-01", split=["test"] * N_EP,
                    sfreq=250.0, ch_names=NAMES)
    with pytest.raises(MetadataMismatchError, match="200 Hz.*got 250 Hz"):
        dec.predict(trials)


def _images(n=19, shape=(5, 4, 3), seed=2):
    rng = np.random.default_rng(seed)
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    data = rng.standard_normal((*shape, n))
    mask = rng.random(shape) > 0.5
    Xm = np.stack([data[..., t][mask] for t in range(n)])
    Y = Xm @ rng.standard_normal((Xm.shape[1], 3)) + 0.3 * rng.standard_normal((n, 3))
    return nib.Nifti1Image(data, affine), mask, Xm, Y, affine


def test_nifti_images_with_mask_equal_masked_arrays():
    img, mask, Xm, Y, affine = _images()
    ref = RidgeDecoder(alphas=GRID, dtype="float64").fit(Xm, Y)
    mask_img = nib.Nifti1Image(mask.astype(np.uint8), affine)
    dec = RidgeDecoder(alphas=GRID, dtype="float64", mask=mask_img).fit(img, Y)
    assert dec.n_features_in_ == int(mask.sum())
    np.testing.assert_allclose(dec.coef_, ref.coef_, atol=1e-12)
    vols = [nib.Nifti1Image(np.asarray(img.dataobj)[..., t], affine) for t in range(3)]
    np.testing.assert_allclose(dec.predict(vols), ref.predict(Xm[:3]), atol=1e-12)
    assert dec.score(img, Y) == pytest.approx(ref.score(Xm, Y), rel=1e-12)
    # clone keeps the mask parameter; the clone is unfitted
    twin = clone(dec)
    assert twin.get_params()["mask"] is not None and not hasattr(twin, "coef_")
    np.testing.assert_allclose(twin.fit(img, Y).coef_, dec.coef_, atol=1e-12)


def test_nifti_without_or_with_a_wrong_mask_is_refused():
    img, mask, _, Y, _ = _images()
    with pytest.raises(ValidationError, match="mask: expected a 3-D brain mask.*never guesses"):
        RidgeDecoder(alphas=GRID).fit(img, Y)
    with pytest.raises(ShapeMismatchError, match=r"mask: expected the grid of X, shape \(5, 4, 3\)"):
        RidgeDecoder(alphas=GRID, mask=np.ones((5, 4, 4), bool)).fit(img, Y)
