"""The torch ridge solver against sklearn's Ridge / RidgeCV, in both forms, both precisions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge, RidgeCV

from neurodecode._core.errors import ShapeMismatchError, ValidationError
from neurodecode.models.ridge import ridge_decompose, ridge_fit, ridge_predict

ALPHAS = np.logspace(-2, 4, 13)
# (n_samples, n_features): kernel form (n < p) and primal form (n >= p)
SHAPES = {"kernel": (23, 41), "primal": (47, 9)}


def _problem(n, p, t=7, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p)) * rng.uniform(0.5, 2.0, p) + rng.standard_normal(p)
    W = rng.standard_normal((p, t)) * rng.uniform(0, 1, t)  # targets with varied signal -> varied alphas
    Y = X @ W + rng.standard_normal((n, t)) * rng.uniform(0.5, 8.0, t) + rng.standard_normal(t) * 3
    return X, Y


@pytest.mark.parametrize("form", ["kernel", "primal"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_loo_matches_ridgecv_float64(form, fit_intercept):
    X, Y = _problem(*SHAPES[form])
    sk = RidgeCV(alphas=ALPHAS, alpha_per_target=True, fit_intercept=fit_intercept).fit(X, Y)
    sol = ridge_fit(X, Y, ALPHAS, cv="loo", fit_intercept=fit_intercept, dtype="float64")
    assert sol.form == form
    assert len(np.unique(sk.alpha_)) > 2  # the problem really exercises per-target selection
    np.testing.assert_array_equal(sol.best_alphas.numpy(), sk.alpha_)
    np.testing.assert_allclose(sol.coef.numpy(), sk.coef_.T, rtol=0, atol=1e-8)
    np.testing.assert_allclose(sol.intercept.numpy(), sk.intercept_, rtol=0, atol=1e-8)
    np.testing.assert_allclose(sol.cv_scores.max(0).values.numpy(), sk.best_score_, rtol=1e-9)
    assert sol.cv_scores.shape == (len(ALPHAS), Y.shape[1])


@pytest.mark.parametrize("form", ["kernel", "primal"])
def test_loo_matches_ridgecv_float32(form):
    X, Y = _problem(*SHAPES[form], seed=1)
    sk = RidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(X, Y)
    sol = ridge_fit(X.astype(np.float32), Y.astype(np.float32), ALPHAS, dtype="float32")
    assert sol.coef.dtype == torch.float32
    np.testing.assert_array_equal(sol.best_alphas.numpy(), sk.alpha_)
    scale = np.abs(sk.coef_).max()
    np.testing.assert_allclose(sol.coef.numpy(), sk.coef_.T, rtol=0, atol=1e-4 * scale)
    np.testing.assert_allclose(sol.intercept.numpy(), sk.intercept_, rtol=1e-4, atol=1e-4)


def test_float32_loo_accurate_with_tiny_alpha_and_intercept():
    # Near-interpolation regime in the kernel form: a naive "subtract 1/n" intercept correction cancels
    # catastrophically in float32; the complement-basis decomposition must still agree with float64.
    X, Y = _problem(19, 60, seed=3)
    grid = [1e-3, 1e-2, 1e-1, 1.0]
    s64 = ridge_fit(X, Y, grid, dtype="float64").cv_scores.numpy()
    s32 = ridge_fit(X, Y, grid, dtype="float32").cv_scores.numpy()
    np.testing.assert_allclose(s32, s64, rtol=2e-3)


@pytest.mark.parametrize("form", ["kernel", "primal"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_fixed_alpha_matches_sklearn_ridge(form, fit_intercept):
    X, Y = _problem(*SHAPES[form], seed=2)
    sk = Ridge(alpha=3.0, fit_intercept=fit_intercept).fit(X, Y)
    sol = ridge_fit(X, Y, 3.0, cv=None, fit_intercept=fit_intercept, dtype="float64")
    np.testing.assert_allclose(sol.coef.numpy(), sk.coef_.T, atol=1e-10)
    np.testing.assert_allclose(sol.intercept.numpy(), sk.intercept_, atol=1e-10)
    assert sol.cv_scores is None
    np.testing.assert_array_equal(sol.best_alphas.numpy(), np.full(Y.shape[1], 3.0))
    np.testing.assert_allclose(ridge_predict(X, sol).numpy(), sk.predict(X), atol=1e-9)


def test_per_target_alphas_without_cv_match_sklearn():
    X, Y = _problem(*SHAPES["kernel"], seed=4)
    alphas = np.array([0.5, 1, 2, 4, 8, 16, 32.0])
    sk = Ridge(alpha=alphas).fit(X, Y)
    sol = ridge_fit(X, Y, alphas, cv=None, dtype="float64")
    np.testing.assert_allclose(sol.coef.numpy(), sk.coef_.T, atol=1e-10)


@pytest.mark.parametrize("form", ["kernel", "primal"])
def test_cholesky_per_alpha_and_eigendecomposition_agree(form, monkeypatch):
    import neurodecode.models.ridge as ridge_mod

    X, Y = _problem(*SHAPES[form], seed=8)
    alphas = np.array([0.5, 3.0, 0.5, 40.0, 3.0, 3.0, 0.5, 40.0, 7.0][: Y.shape[1]])
    by_cholesky = ridge_fit(X, Y, alphas, cv=None, dtype="float64")  # 4 distinct alphas: 4 factors
    monkeypatch.setattr(ridge_mod, "_MAX_CHOLESKY_ALPHAS", 1)  # force the eigendecomposition path
    by_eigh = ridge_fit(X, Y, alphas, cv=None, dtype="float64")
    sk = Ridge(alpha=alphas).fit(X, Y)
    np.testing.assert_allclose(by_cholesky.coef.numpy(), sk.coef_.T, atol=1e-10)
    np.testing.assert_allclose(by_eigh.coef.numpy(), by_cholesky.coef.numpy(), atol=1e-10)
    np.testing.assert_array_equal(by_cholesky.best_alphas.numpy(), alphas)


def test_overflowing_column_sums_are_reported():
    X = np.full((7, 9), 3e38, dtype=np.float32)
    with pytest.raises(ValidationError, match="overflows"):
        ridge_fit(X, np.ones((7, 8)), 1.0, cv=None)


@pytest.mark.parametrize("form", ["kernel", "primal"])
def test_joint_alpha_matches_ridgecv(form):
    X, Y = _problem(*SHAPES[form], seed=5)
    sk = RidgeCV(alphas=ALPHAS, alpha_per_target=False).fit(X, Y)
    sol = ridge_fit(X, Y, ALPHAS, alpha_per_target=False, target_batch=3, dtype="float64")
    np.testing.assert_array_equal(sol.best_alphas.numpy(), np.full(Y.shape[1], sk.alpha_))
    np.testing.assert_allclose(sol.coef.numpy(), sk.coef_.T, atol=1e-8)


def test_groups_choose_one_alpha_per_group():
    X, Y = _problem(*SHAPES["kernel"], seed=6)
    groups = np.array([0, 0, 0, 1, 1, 2, 2])
    sol = ridge_fit(X, Y, ALPHAS, groups=groups, dtype="float64")
    for g in range(3):
        cols = groups == g
        sk = RidgeCV(alphas=ALPHAS).fit(X, Y[:, cols])
        assert np.all(sol.best_alphas.numpy()[cols] == sk.alpha_)


@pytest.mark.parametrize("form", ["kernel", "primal"])
def test_kfold_matches_manual_sklearn_loop(form):
    X, Y = _problem(*SHAPES[form], seed=7)
    grid = [0.1, 1.0, 10.0, 100.0]
    k = 4
    sse = np.zeros((len(grid), Y.shape[1]))
    for test in np.array_split(np.arange(len(X)), k):
        train = np.setdiff1d(np.arange(len(X)), test)
        for i, a in enumerate(grid):
            pred = Ridge(alpha=a).fit(X[train], Y[train]).predict(X[test])
            sse[i] += ((Y[test] - pred) ** 2).sum(0)
    sol = ridge_fit(X, Y, grid, cv=k, dtype="float64")
    np.testing.assert_allclose(sol.cv_scores.numpy(), -sse / len(X), rtol=1e-9)
    expected = np.asarray(grid)[np.argmin(sse, 0)]
    np.testing.assert_array_equal(sol.best_alphas.numpy(), expected)


def test_target_batching_and_sources_give_identical_results(tmp_path):
    import h5py

    X, Y = _problem(*SHAPES["kernel"], t=10, seed=8)
    Y3 = Y.reshape(len(Y), 5, 2)  # trailing target shape, flattened in C order
    whole = ridge_fit(X, Y, ALPHAS, target_batch=10, dtype="float64")
    ref = ridge_fit(X, Y, ALPHAS, target_batch=3, dtype="float64")
    # batch size only changes BLAS blocking: same alphas, same numbers to rounding
    np.testing.assert_array_equal(ref.best_alphas.numpy(), whole.best_alphas.numpy())
    for field in ("coef", "intercept", "cv_scores"):
        np.testing.assert_allclose(getattr(ref, field).numpy(), getattr(whole, field).numpy(), rtol=1e-12, atol=1e-15)
    with h5py.File(tmp_path / "y.h5", "w") as f:
        f["Y"] = Y3
    mm = np.lib.format.open_memmap(tmp_path / "y.npy", mode="w+", dtype=np.float64, shape=Y.shape)
    mm[:] = Y
    mm.flush()
    with h5py.File(tmp_path / "y.h5", "r") as f:
        sources = {
            "nd-array": (Y3, {}),
            "h5py": (f["Y"], {}),
            "memmap": (np.load(tmp_path / "y.npy", mmap_mode="r"), {}),
            "callable": (lambda a, b: Y[:, a:b], {"n_targets": 10}),
            "iterator": (iter([Y[:, :3], Y[:, 3:6], Y[:, 6:9], Y[:, 9:]]), {}),  # blocks used as they come
        }
        for name, (src, kw) in sources.items():
            sol = ridge_fit(X, src, ALPHAS, target_batch=3, dtype="float64", **kw)
            for field in ("coef", "intercept", "best_alphas", "cv_scores"):  # same batches: bitwise equal
                np.testing.assert_array_equal(getattr(sol, field).numpy(), getattr(ref, field).numpy(),
                                              err_msg=f"{name}: {field}")


def test_deterministic_and_shared_decomposition():
    X, Y = _problem(*SHAPES["kernel"], seed=9)
    a = ridge_fit(X, Y, ALPHAS, dtype="float32")
    b = ridge_fit(X, Y, ALPHAS, dtype="float32")
    assert torch.equal(a.coef, b.coef) and torch.equal(a.best_alphas, b.best_alphas)
    dec = ridge_decompose(X, dtype="float64")
    s1 = ridge_fit(dec, Y[:, :3], ALPHAS)
    eig_id = id(dec.eigh()[1])
    s2 = ridge_fit(dec, Y[:, 3:], ALPHAS)
    assert id(dec.eigh()[1]) == eig_id  # decomposed once, reused
    full = ridge_fit(X, Y, ALPHAS, dtype="float64")
    np.testing.assert_allclose(torch.cat([s1.coef, s2.coef], 1).numpy(), full.coef.numpy(), atol=1e-12)


def test_intercept_recovers_offsets():
    rng = np.random.default_rng(10)
    X = rng.standard_normal((60, 8)) + 5.0
    W = rng.standard_normal((8, 3))
    Y = X @ W + np.array([10.0, -20.0, 0.5])
    sol = ridge_fit(X, Y, 1e-8, cv=None, dtype="float64")
    np.testing.assert_allclose(sol.intercept.numpy(), [10.0, -20.0, 0.5], atol=1e-5)
    np.testing.assert_allclose(sol.coef.numpy(), W, atol=1e-6)
    no_int = ridge_fit(X, Y, 1e-8, cv=None, fit_intercept=False, dtype="float64")
    np.testing.assert_array_equal(no_int.intercept.numpy(), 0.0)


@pytest.mark.parametrize("form", ["kernel", "primal"])
def test_prediction_std_matches_in_sample_predictions(form):
    X, Y = _problem(*SHAPES[form], seed=11)
    for cv, alphas in (("loo", ALPHAS), (None, 2.0)):
        sol = ridge_fit(X, Y, alphas, cv=cv, return_prediction_std=True, dtype="float64")
        np.testing.assert_allclose(sol.prediction_std.numpy(), ridge_predict(X, sol).numpy().std(0), rtol=1e-8)


def test_bad_inputs_teach():
    X, Y = _problem(*SHAPES["kernel"])
    with pytest.raises(ShapeMismatchError, match="same number of samples"):
        ridge_fit(X, Y[:-1])
    Xn = X.copy()
    Xn[2, 3] = np.nan
    with pytest.raises(ValidationError, match=r"X: expected only finite values.*\(2, 3\)"):
        ridge_fit(Xn, Y)
    Yn = Y.copy()
    Yn[1, 5] = np.inf
    with pytest.raises(ValidationError, match=r"Y: expected only finite values.*\(1, 5\)"):
        ridge_fit(X, Yn, target_batch=2)
    for bad in ([1.0, 0.0], [-1.0], []):
        with pytest.raises(ValidationError, match="alphas"):
            ridge_fit(X, Y, bad)
    with pytest.raises(ValidationError, match="cv"):
        ridge_fit(X, Y, cv="gcv")
    with pytest.raises(ValidationError, match="one alpha, or one per target"):
        ridge_fit(X, Y, [1.0, 2.0], cv=None)
    with pytest.raises(ValidationError, match="float32"):
        ridge_fit(X, Y, dtype="float16")
    with pytest.raises(ValidationError, match="n_targets"):
        ridge_fit(X, lambda a, b: Y[:, a:b])
    sol = ridge_fit(X, Y, 1.0, cv=None)
    with pytest.raises(ShapeMismatchError, match=f"{X.shape[1]}"):
        ridge_predict(X[:, :-1], sol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    X, Y = _problem(*SHAPES["kernel"])
    cpu = ridge_fit(X, Y, ALPHAS, dtype="float64")
    gpu = ridge_fit(X, Y, ALPHAS, dtype="float64", device="cuda")
    np.testing.assert_array_equal(gpu.best_alphas.cpu().numpy(), cpu.best_alphas.numpy())
    np.testing.assert_allclose(gpu.coef.cpu().numpy(), cpu.coef.numpy(), atol=1e-8)


def test_coef_out_receives_weights_batch_by_batch():
    X, Y = _problem(*SHAPES["kernel"], seed=12)
    ref = ridge_fit(X, Y, ALPHAS, target_batch=3, dtype="float64")
    out = torch.full((X.shape[1], Y.shape[1]), np.nan, dtype=torch.float64)
    sol = ridge_fit(X, Y, ALPHAS, target_batch=3, dtype="float64", coef_out=out)
    assert sol.coef is out
    np.testing.assert_array_equal(out.numpy(), ref.coef.numpy())
    with pytest.raises(ShapeMismatchError, match="coef_out"):
        ridge_fit(X, Y, ALPHAS, coef_out=torch.empty((X.shape[1], 2)))
