"""RidgeDecoder: sklearn compatibility, trailing target shapes, Trials input, teaching errors."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import RidgeCV

from neurodecode._core.errors import MetadataMismatchError, NotFittedError, ShapeMismatchError, ValidationError
from neurodecode.data._trials import Trials
from neurodecode.estimators import RidgeDecoder

GRID = (0.1, 1.0, 10.0, 100.0, 1000.0)


def _data(n=31, p=9, shape=(4, 2), seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    W = rng.standard_normal((p, int(np.prod(shape)))) * rng.uniform(0, 1, int(np.prod(shape)))
    Y = (X @ W + rng.standard_normal((n, W.shape[1])) * 2).reshape((n, *shape))
    return X, Y


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.SkipTestWarning")
def test_sklearn_estimator_checks():
    from sklearn.utils.estimator_checks import check_estimator

    # Only check_array_api_input may be skipped: sklearn itself skips it unless SCIPY_ARRAY_API=1 and
    # array-api-compat are set up; RidgeDecoder takes NumPy (and Trials) input by design.
    allowed_skips = {"check_array_api_input"}
    results = check_estimator(RidgeDecoder(), on_fail=None)
    problems = [(r["check_name"], r["status"], str(r["exception"])[:200]) for r in results
                if r["status"] != "passed" and not (r["status"] == "skipped" and r["check_name"] in allowed_skips)]
    assert not problems, problems
    assert sum(r["status"] == "passed" for r in results) > 40


def test_matches_ridgecv_and_reshapes_targets():
    X, Y = _data()
    dec = RidgeDecoder(alphas=GRID, dtype="float64").fit(X, Y)
    sk = RidgeCV(alphas=GRID, alpha_per_target=True).fit(X, Y.reshape(len(Y), -1))
    assert dec.coef_.shape == (8, 9) and dec.intercept_.shape == (8,) and dec.n_features_in_ == 9
    assert dec.target_shape_ == (4, 2)
    np.testing.assert_array_equal(dec.best_alphas_, sk.alpha_)
    np.testing.assert_allclose(dec.coef_, sk.coef_, atol=1e-8)
    pred = dec.predict(X[:5])
    assert pred.shape == (5, 4, 2)
    np.testing.assert_allclose(pred.reshape(5, -1), sk.predict(X[:5]), atol=1e-8)
    raw = dec.score(X, Y, multioutput="raw_values")
    assert raw.shape == (4, 2)
    np.testing.assert_allclose(raw.mean(), dec.score(X, Y), rtol=1e-12)
    np.testing.assert_allclose(dec.score(X, Y), sk.score(X, Y.reshape(len(Y), -1)), rtol=1e-9)


def test_one_dimensional_target_like_sklearn():
    X, Y = _data(shape=(1,))
    y = Y[:, 0]
    dec = RidgeDecoder(alphas=GRID).fit(X, y)
    assert dec.coef_.shape == (9,) and isinstance(dec.intercept_, float)
    assert dec.predict(X).shape == (len(X),)
    assert dec.best_alphas_.shape == (1,)


def test_trials_input_and_subject_check():
    X, Y = _data()
    trials = Trials(X=X.astype(np.float32), stimulus_ids=np.arange(len(X)), subject="nsd/subj01",
                    split=np.array(["train"] * len(X)))
    dec = RidgeDecoder(alphas=GRID).fit(trials, Y)
    assert dec.subject_ == "nsd/subj01"
    np.testing.assert_allclose(dec.predict(trials), dec.predict(X), rtol=1e-5, atol=1e-5)
    other = Trials(X=X, stimulus_ids=np.arange(len(X)), subject="nsd/subj02", split=np.array(["test"] * len(X)))
    with pytest.raises(MetadataMismatchError, match="subj01"):
        dec.predict(other)


def test_float32_default_close_to_float64():
    X, Y = _data(seed=3)
    d32 = RidgeDecoder(alphas=GRID).fit(X.astype(np.float32), Y.astype(np.float32))
    d64 = RidgeDecoder(alphas=GRID, dtype="float64").fit(X, Y)
    np.testing.assert_array_equal(d32.best_alphas_, d64.best_alphas_)
    np.testing.assert_allclose(d32.coef_, d64.coef_, atol=1e-4)
    assert d32.coef_.dtype == np.float32


def test_teaching_errors():
    X, Y = _data()
    dec = RidgeDecoder(alphas=GRID)
    with pytest.raises(NotFittedError, match="fit"):
        dec.predict(X)
    from sklearn.exceptions import NotFittedError as SkNotFitted

    with pytest.raises(SkNotFitted):
        dec.score(X, Y)
    with pytest.raises(ShapeMismatchError, match="same number of samples"):
        dec.fit(X, Y[:-2])
    Xbad = X.copy()
    Xbad[4, 1] = np.nan
    with pytest.raises(ValidationError, match="finite"):
        dec.fit(Xbad, Y)
    Ybad = Y.copy()
    Ybad[0, 1, 1] = np.inf
    with pytest.raises(ValidationError, match="finite"):
        dec.fit(X, Ybad)
    with pytest.raises(ValidationError, match="alphas"):
        RidgeDecoder(alphas=(1.0, -1.0)).fit(X, Y)
    with pytest.raises(ValidationError, match="alphas"):
        RidgeDecoder(alphas=(0.0,)).fit(X, Y)
    dec.fit(X, Y)
    with pytest.raises(ShapeMismatchError, match="X has 7 features, but RidgeDecoder is expecting 9"):
        dec.predict(X[:, :7])
    with pytest.raises(ValidationError, match="multioutput"):
        dec.score(X, Y, multioutput="mean")


def test_h5py_targets_are_read_in_batches(tmp_path):
    import h5py

    X, Y = _data(shape=(6, 3))
    ref = RidgeDecoder(alphas=GRID, dtype="float64").fit(X, Y)
    with h5py.File(tmp_path / "t.h5", "w") as f:
        f["Y"] = Y
    with h5py.File(tmp_path / "t.h5", "r") as f:
        dec = RidgeDecoder(alphas=GRID, dtype="float64", target_batch_size=4).fit(X, f["Y"])
    assert dec.target_shape_ == (6, 3)
    np.testing.assert_array_equal(dec.best_alphas_, ref.best_alphas_)
    np.testing.assert_allclose(dec.coef_, ref.coef_, atol=1e-12)
