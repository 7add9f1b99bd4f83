"""ATMDecoder: sklearn etiquette, zero-shot identification on a known-answer EEG problem, mne.Epochs in,
input scaling learnt from the training trials, refusal of mismatched trials, save/load."""

from __future__ import annotations

import mne
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError as SkNotFittedError

from neurodecode._core.errors import MetadataMismatchError, NotFittedError, ShapeMismatchError, ValidationError
from neurodecode.estimators import ATMDecoder
from neurodecode.metrics import kway_topk
from neurodecode.models.atm import ATM

N_CH, N_T, DIM = 9, 24, 16
SFREQ, TMIN = 120.0, -0.05
NAMES = [f"EEG{i:03d}" for i in range(N_CH)]
KW = dict(config={"base": "tiny", "dropout": 0.0, "conv_dropout": 0.0, "proj_dropout": 0.0}, epochs=25,
          batch_size=32, lr=2e-3)


def _simulate(rng, A, n_concepts, reps, noise):
    """EEG = a linear map of the concept's embedding, reshaped to channels x time, plus noise."""
    concepts = rng.standard_normal((n_concepts, DIM)).astype(np.float32)
    idx = np.repeat(np.arange(n_concepts), reps)
    X = (concepts[idx] @ A.T).reshape(-1, N_CH, N_T) + noise * rng.standard_normal((len(idx), N_CH, N_T))
    return X.astype(np.float32), concepts[idx]


@pytest.fixture(scope="module")
def problem():
    """240 training trials of 80 concepts; 20 unseen test concepts (one averaged trial each)."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((N_CH * N_T, DIM)).astype(np.float32) / np.sqrt(DIM)
    X, Y = _simulate(rng, A, 80, 3, noise=1.0)
    X_test, Y_test = _simulate(rng, A, 20, 1, noise=0.5)
    return X, Y, X_test, Y_test


@pytest.fixture(scope="module")
def fitted(problem):
    X, Y, _, _ = problem
    return ATMDecoder(**KW).fit(X, Y)


def _epochs(X, sfreq=SFREQ, names=NAMES, tmin=TMIN):
    return mne.EpochsArray(X.astype(np.float64), mne.create_info(list(names), sfreq, "eeg"), tmin=tmin,
                           verbose=False)


def test_init_only_stores_get_params_and_clone():
    est = ATMDecoder(config="tiny", epochs=3, lr=1e-3, picks="eeg", random_state=4)
    params = est.get_params()
    assert params == {"config": "tiny", "epochs": 3, "batch_size": 64, "lr": 1e-3, "picks": "eeg", "device": "cpu",
                      "random_state": 4, "verbose": None}
    twin = clone(est)
    assert twin is not est and twin.get_params() == params
    assert not [k for k in vars(est) if k.endswith("_")]
    with pytest.raises(NotFittedError, match="fit"):
        est.predict(np.zeros((2, N_CH, N_T), np.float32))
    with pytest.raises(SkNotFittedError):
        est.score(np.zeros((2, N_CH, N_T), np.float32), np.zeros((2, DIM)))


def test_identifies_unseen_concepts_and_beats_a_shuffled_control(problem, fitted):
    X, Y, X_test, Y_test = problem
    emb = fitted.predict(X_test)
    assert emb.shape == (20, DIM) and emb.dtype == np.float32
    assert fitted.n_channels_ == N_CH and fitted.n_times_ == N_T and fitted.history_
    assert fitted.ch_names_ is None and fitted.sfreq_ is None and fitted.tmin_ is None  # a plain array: no metadata
    score = fitted.score(X_test, Y_test)
    # the documented definition: own row among the most cosine-similar rows of Y
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    t = Y_test / np.linalg.norm(Y_test, axis=1, keepdims=True)
    sim = e @ t.T
    assert score == pytest.approx(float(np.mean((sim > np.diag(sim)[:, None]).sum(1) == 0)))
    assert score == pytest.approx(kway_topk(emb, Y_test, ks=(20,), topk=(1,))["top1@20"])
    shuffled = ATMDecoder(**KW).fit(X, Y[np.random.default_rng(1).permutation(len(Y))])
    control = shuffled.score(X_test, Y_test)
    chance = 1 / 20
    print(f"top-1 among 20: decoded {score:.2f}, shuffled control {control:.2f}, chance {chance:.2f}")
    assert score >= 0.6 and score > control + 0.4, (score, control, chance)


def test_input_scaling_is_learnt_from_the_training_trials(problem, fitted):
    X, Y, X_test, _ = problem
    stats_mean, stats_std = fitted.model_.input_mean[0].numpy(), fitted.model_.input_std[0].numpy()
    np.testing.assert_allclose(stats_mean, X.astype(np.float64).mean(axis=(0, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats_std, X.astype(np.float64).std(axis=(0, 2)), rtol=1e-5)
    ref = fitted.predict(X_test)
    # MEG-like units. A power of two rescales exactly, so the scaled trials, hence training, are bit-identical;
    # a model that did not learn its scaling from X would see inputs of 1e-13 and another answer
    tesla = 2.0 ** -43  # 1.1e-13
    np.testing.assert_array_equal(ATMDecoder(**KW).fit(X * tesla, Y).predict(X_test * tesla), ref)
    # 1e-13 itself: the same up to float32 rounding of the rescaled data
    small = ATMDecoder(**KW).fit(X * 1e-13, Y).predict(X_test * 1e-13)
    np.testing.assert_allclose(small, ref, atol=0.05 * np.abs(ref).max())


def test_epochs_in_equals_array_in_and_metadata_are_checked(problem, fitted):
    X, Y, X_test, _ = problem
    dec = ATMDecoder(**KW).fit(_epochs(X), Y)
    assert dec.ch_names_ == NAMES and dec.sfreq_ == SFREQ and dec.n_times_ == N_T and dec.tmin_ == pytest.approx(TMIN)
    assert dec.model_.config.ch_names == NAMES and dec.model_.config.sfreq == SFREQ
    np.testing.assert_array_equal(dec.predict(_epochs(X_test)), fitted.predict(X_test))
    np.testing.assert_array_equal(dec.predict(X_test), fitted.predict(X_test))  # a plain array of the right shape
    with pytest.raises(MetadataMismatchError, match="120 Hz.*got 250 Hz.*resample"):
        dec.predict(_epochs(X_test, sfreq=250.0))
    with pytest.raises(MetadataMismatchError, match=r"missing: \['EEG008'\]; extra: \['Cz'\]"):
        dec.predict(_epochs(X_test, names=NAMES[:8] + ["Cz"]))
    with pytest.raises(MetadataMismatchError, match="'EEG002' at position 1 where 'EEG001'.*reorder_channels"):
        dec.predict(_epochs(X_test, names=[NAMES[0], NAMES[2], NAMES[1], *NAMES[3:]]))
    with pytest.raises(MetadataMismatchError, match="starting at -0.05 s.*got epochs starting at 0 s.*crop"):
        dec.predict(_epochs(X_test, tmin=0.0))
    with pytest.raises(ShapeMismatchError, match=r"24 samples on axis 2 \(0.2 s at 120 Hz\), as in fit.*25 samples"):
        dec.predict(np.zeros((2, N_CH, N_T + 1), np.float32))
    with pytest.raises(ShapeMismatchError, match="9 channels on axis 1, as in fit.*8 channels"):
        dec.predict(np.zeros((2, N_CH - 1, N_T), np.float32))
    with pytest.raises(ShapeMismatchError, match=r"\(n_trials, n_channels, n_times\)"):
        dec.predict(np.zeros((2, N_CH * N_T), np.float32))


def test_save_and_load_roundtrip(tmp_path, problem):
    X, Y, X_test, _ = problem
    dec = ATMDecoder(**{**KW, "epochs": 2}, picks="eeg").fit(_epochs(X), Y)
    dec.save(tmp_path / "atm")
    loaded = ATMDecoder.load(tmp_path / "atm")
    assert loaded.get_params() == dec.get_params()
    assert (loaded.ch_names_, loaded.sfreq_, loaded.n_times_, loaded.tmin_) == (
        dec.ch_names_, dec.sfreq_, dec.n_times_, dec.tmin_)
    np.testing.assert_array_equal(loaded.predict(_epochs(X_test)), dec.predict(_epochs(X_test)))
    with pytest.raises(MetadataMismatchError, match="sfreq"):
        loaded.predict(_epochs(X_test, sfreq=100.0))
    # the folder is a plain ATM checkpoint with its input scaling: the model alone takes raw data too
    np.testing.assert_array_equal(ATM.from_pretrained(tmp_path / "atm").encode(X_test), dec.predict(X_test))


def test_fit_refuses_inconsistent_inputs(problem):
    X, Y, _, _ = problem
    est = ATMDecoder(config="tiny", epochs=1)
    with pytest.raises(ShapeMismatchError, match="Y: expected 240 rows"):
        est.fit(X, Y[:-1])
    with pytest.raises(ShapeMismatchError, match=r"text_embeds: expected an array of shape \(240, 16\)"):
        est.fit(X, Y, text_embeds=Y[:, :8])
    with pytest.raises(ShapeMismatchError, match=r"\(n_trials, n_channels, n_times\)"):
        est.fit(X.reshape(len(X), -1), Y)
    with pytest.raises(ValidationError, match=r"config\['n_channels'\]: expected 9"):
        ATMDecoder(config={"base": "tiny", "n_channels": 63}).fit(X, Y)
    with pytest.raises(ValidationError, match=r"config\['sfreq'\]: expected 120 Hz"):
        ATMDecoder(config={"base": "tiny", "sfreq": 250.0}).fit(_epochs(X), Y)
    with pytest.raises(ValidationError, match="subject_tokens.*recipe"):
        ATMDecoder(config={"base": "tiny", "subject_tokens": True}).fit(X, Y)
    with pytest.raises(ValidationError, match="config: expected ATMConfig fields among.*got width"):
        ATMDecoder(config={"base": "tiny", "width": 3}).fit(X, Y)
    bad = X.copy()
    bad[5, 2, 7] = np.nan
    with pytest.raises(ValidationError, match=r"finite.*\(5, 2, 7\)"):
        est.fit(bad, Y)
