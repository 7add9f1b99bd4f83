"""``RidgeDecoder``: sklearn-style multi-target ridge on the torch solver (one decomposition, batched targets)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import NotFittedError as _SklearnNotFittedError

from .._core.docs import fill_doc
from .._core.errors import MetadataMismatchError, ShapeMismatchError, ValidationError
from .._core.errors import NotFittedError as _NeurodecodeNotFittedError
from .._core.validation import check_finite, check_option, format_error

if TYPE_CHECKING:
    from ..data._inputs import BrainArray

__all__ = ["RidgeDecoder", "EstimatorNotFittedError"]

DEFAULT_ALPHAS = (0.1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6)


class EstimatorNotFittedError(_NeurodecodeNotFittedError, _SklearnNotFittedError):
    """Raised by ``predict``/``score`` before ``fit``.

    Both :class:`neurodecode._core.errors.NotFittedError` and
    :class:`sklearn.exceptions.NotFittedError`, so either ``except`` clause catches it.
    """


class _NonNumericError(ValidationError, TypeError):
    """Input that cannot be converted to numbers (a ``ValueError`` and a ``TypeError``, as NumPy raises)."""


def _as_design(X: Any, param: str = "X", *, mask: Any = None, picks: Any = None,
               expect: dict[str, Any] | None = None) -> tuple[np.ndarray, BrainArray | None]:
    """X as a 2-D float array, plus what its container told (``None`` for an array-like).

    Trials, mne.Epochs and nibabel images go through :func:`neurodecode.data.as_brain_array` (the one
    conversion place) and are flattened to (n_trials, n_features); array-likes are checked here, the
    sklearn way.
    """
    from ..data._inputs import as_brain_array, input_kind

    brain = None
    if input_kind(X) != "array":
        brain = as_brain_array(X, param=param, mask=mask, picks=picks, **(expect or {}))
        X = brain.X.reshape(len(brain.X), -1)
    if X is None:
        raise ValidationError(format_error(param, "an array of shape (n_trials, n_voxels)", None))
    if hasattr(X, "tocsr") or hasattr(X, "toarray"):
        raise ValidationError(format_error(param, "a dense array", f"a sparse matrix of type {type(X).__name__}",
                                           "Sparse input is not supported; convert it with X.toarray()"))
    try:
        arr = np.asarray(X)
    except (TypeError, ValueError) as exc:
        raise ValidationError(format_error(param, "an array-like of numbers", X, f"Pass a NumPy array ({exc})")) from exc
    if np.iscomplexobj(arr):
        raise ValidationError(format_error(param, "real numbers", arr, "Complex data not supported; pass real values"))
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise _NonNumericError(format_error(param, "a numeric array", f"an array of dtype {arr.dtype}",
                                                f"Convert it to numbers first ({exc})")) from exc
    if arr.ndim != 2:
        raise ShapeMismatchError(format_error(
            param, "a 2-D array of shape (n_trials, n_voxels)", arr,
            "Reshape your data: a single trial needs X.reshape(1, -1), a single voxel X.reshape(-1, 1)"))
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValidationError(format_error(
            param, "a non-empty array",
            f"{arr.shape[0]} sample(s) and {arr.shape[1]} feature(s) (shape={arr.shape}) while a minimum of 1 is required",
            "Check the selection that produced it"))
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    check_finite(arr, param)
    return arr, brain


@fill_doc
class RidgeDecoder(RegressorMixin, BaseEstimator):
    """Multi-target ridge regression with a cross-validated alpha per target, on the torch solver.

    One eigendecomposition of the smaller Gram matrix serves every alpha and every target; targets
    are solved in batches. Numerically equal to sklearn's ``RidgeCV(alpha_per_target=True)`` (LOO)
    and much faster on many targets.

    Parameters
    ----------
    alphas : array-like of shape (n_alphas,)
        Penalty grid (> 0).
    alpha_per_target : bool
        Choose alpha for each target separately (``True``) or one for all targets.
    cv : {"loo"} or int or None
        ``"loo"``: exact closed-form leave-one-out; int k: k contiguous folds; ``None``: no
        search (then ``alphas`` must hold one value, or one per target).
    fit_intercept : bool
        Fit an unpenalised intercept.
    %(device)s
    dtype : {"float32", "float64"}
        Compute precision of the solver.
    target_batch_size : int
        Targets solved at once (bounds memory).
    %(verbose)s
    mask : nibabel image, path or ndarray of bool of shape (x, y, z), or None
        Voxels to use when ``X`` is a nibabel image (4-D, one volume per trial) or a list of
        3-D images: required then, on the images' grid; unused for other inputs. Never guessed.
    picks : str, list of str or None
        Channels of an ``mne.Epochs`` input (``"eeg"``, ``"meg"``, ``"data"``, names), as
        ``Epochs.get_data(picks=...)``; ``None`` takes every channel. Unused for other inputs.

    Attributes
    ----------
    coef_ : ndarray of shape (n_targets, n_features) or (n_features,)
        Weights (1-D when ``Y`` was 1-D), as in sklearn.
    intercept_ : ndarray of shape (n_targets,) or float
        Intercepts.
    best_alphas_ : ndarray of shape (n_targets,)
        Alpha used for each (flattened) target.
    cv_scores_ : ndarray of shape (n_alphas, n_targets) or None
        Negative mean squared CV error of each alpha and target.
    n_features_in_ : int
        Number of features (voxels) seen in ``fit``.
    target_shape_ : tuple of int
        Trailing shape of ``Y`` (``()`` for 1-D ``Y``); predictions take this shape.
    subject_ : str or None
        Subject of the :class:`~neurodecode.data.Trials` used in ``fit``, if any.
    ch_names_ : list of str or None
        Channel names of the ``mne.Epochs`` (or M/EEG Trials) used in ``fit``; ``predict``
        refuses inputs whose channels differ. ``None`` for arrays and images.
    sfreq_ : float or None
        Sampling rate (Hz) of the M/EEG data used in ``fit``, checked likewise.
    n_times_ : int or None
        Samples per trial of 3-D (trials, channels, times) data used in ``fit``.
    tmin_ : float or None
        Time (s) of the first sample of the epochs used in ``fit``, checked likewise.

    Notes
    -----
    Accepted inputs (``X`` in ``fit``, ``predict`` and ``score``), converted by
    :func:`neurodecode.data.as_brain_array`: an array of shape (n_trials, n_features); a
    :class:`~neurodecode.data.Trials`; an ``mne.Epochs`` (flattened to
    (n_epochs, n_channels * n_times), channel-major); nibabel images with ``mask``
    (shape (n_trials, n_voxels)). A plain array carries no channel names or sampling rate, so
    only its number of features is checked against ``fit``.

    Examples
    --------
    >>> import numpy as np
    >>> from neurodecode.estimators import RidgeDecoder
    >>> rng = np.random.default_rng(0)
    >>> X, Y = rng.standard_normal((30, 9)), rng.standard_normal((30, 4, 2))
    >>> dec = RidgeDecoder(alphas=[1.0, 10.0]).fit(X, Y)
    >>> dec.predict(X).shape, dec.coef_.shape
    ((30, 4, 2), (8, 9))

    With ``mne.Epochs`` (7 epochs of 3 channels x 5 samples):

    >>> import mne
    >>> info = mne.create_info(["Fz", "Cz", "Pz"], sfreq=100.0, ch_types="eeg")
    >>> epochs = mne.EpochsArray(rng.standard_normal((7, 3, 5)), info, verbose=False)
    >>> dec = RidgeDecoder(alphas=[1.0]).fit(epochs, rng.standard_normal((7, 2)))
    >>> dec.n_features_in_, dec.ch_names_, dec.sfreq_
    (15, ['Fz', 'Cz', 'Pz'], 100.0)
    """

    def __init__(self, alphas: Any = DEFAULT_ALPHAS, alpha_per_target: bool = True, cv: Any = "loo",
                 fit_intercept: bool = True, device: Any = "cpu", dtype: str = "float32",
                 target_batch_size: int = 4096, verbose: Any = None, *, mask: Any = None,
                 picks: Any = None) -> None:
        self.alphas = alphas
        self.alpha_per_target = alpha_per_target
        self.cv = cv
        self.fit_intercept = fit_intercept
        self.device = device
        self.dtype = dtype
        self.target_batch_size = target_batch_size
        self.verbose = verbose
        self.mask = mask
        self.picks = picks

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        tags.input_tags.sparse = False
        return tags

    # ---------------------------------------------------------------------------------- fit
    def fit(self, X: Any, y: Any) -> RidgeDecoder:
        """Fit the ridge weights and choose the alphas.

        Parameters
        ----------
        X : ndarray of shape (n_trials, n_voxels), Trials, mne.Epochs or nibabel image(s)
            Brain responses (a :class:`~neurodecode.data.Trials` gives ``trials.X``; an
            ``mne.Epochs`` its data flattened to (n_epochs, n_channels * n_times); images the
            voxels inside ``mask``).
        y : ndarray of shape (n_trials,) or (n_trials, n_targets) or (n_trials, *target_shape)
            Targets, e.g. CLIP tokens of shape (n_trials, 257, 768) (flattened internally). An
            ``h5py`` dataset or ``np.memmap`` is read in column batches, never whole.

        Returns
        -------
        self : RidgeDecoder
        """
        from sklearn.utils.validation import _check_feature_names

        from ..models.ridge import ridge_fit

        Y = y
        if Y is None:
            raise ValidationError(format_error(
                "Y", "targets", "None", "This estimator requires y to be passed, but the target y is None"))
        _check_feature_names(self, X, reset=True)
        Xa, brain = _as_design(X, mask=self.mask, picks=self.picks)
        if not (isinstance(Y, np.ndarray) or type(Y).__module__.startswith("h5py")):
            Y = np.asarray(Y)  # lists, pandas, tensors; h5py datasets and memmaps stay on disk
        if isinstance(Y, np.ndarray):
            if np.iscomplexobj(Y):
                raise ValidationError(format_error("Y", "real numbers", Y, "Complex data not supported"))
            if Y.dtype == object or not np.issubdtype(Y.dtype, np.number):
                try:
                    Y = Y.astype(np.float64)
                except (TypeError, ValueError) as exc:
                    raise ValidationError(format_error("Y", "a numeric array", f"an array of dtype {Y.dtype}")) from exc
        y_shape = tuple(int(s) for s in Y.shape)
        if len(y_shape) == 0 or y_shape[0] != Xa.shape[0]:
            raise ShapeMismatchError(format_error(
                "X/Y", "the same number of samples (rows)", f"X with {Xa.shape[0]} rows and Y of shape {y_shape}",
                "Pass one row of Y per trial of X (same trials, same order)"))
        if len(y_shape) > 1 and int(np.prod(y_shape[1:])) == 0:
            raise ValidationError(format_error("Y", "at least one target", f"an array of shape {y_shape}"))
        if isinstance(Y, np.ndarray) and Y.ndim != 2:
            Y2 = Y.reshape(Y.shape[0], -1)
        else:
            Y2 = Y
        sol = ridge_fit(Xa, Y2, self.alphas, cv=self.cv, alpha_per_target=self.alpha_per_target,
                        fit_intercept=self.fit_intercept, target_batch=self.target_batch_size,
                        device=self.device, dtype=self.dtype, verbose=self.verbose)
        coef = sol.coef.T.cpu().numpy()
        intercept = sol.intercept.cpu().numpy()
        self.target_shape_ = y_shape[1:]
        if len(y_shape) == 1:
            self.coef_ = coef[0]
            self.intercept_ = float(intercept[0])
        else:
            self.coef_ = coef
            self.intercept_ = intercept
        self.best_alphas_ = sol.best_alphas.cpu().numpy()
        self.cv_scores_ = None if sol.cv_scores is None else sol.cv_scores.cpu().numpy()
        self.n_features_in_ = int(Xa.shape[1])
        self.subject_ = brain.subject if brain is not None else None
        self.ch_names_ = brain.ch_names if brain is not None else None
        self.sfreq_ = brain.sfreq if brain is not None else None
        three_d = brain is not None and brain.X.ndim == 3
        self.n_times_ = int(brain.X.shape[2]) if three_d and brain is not None else None
        self.tmin_ = (float(brain.times[0]) if three_d and brain is not None and brain.times is not None
                      else None)
        return self

    # ---------------------------------------------------------------------------------- predict
    def _check_fitted(self, method: str) -> None:
        if not hasattr(self, "coef_"):
            raise EstimatorNotFittedError(format_error(
                "RidgeDecoder", "a fitted estimator", "an unfitted one",
                f"Call fit(X, Y) before {method}(); this RidgeDecoder instance is not fitted yet"))

    def _check_predict_X(self, X: Any) -> np.ndarray:
        from sklearn.utils.validation import _check_feature_names

        _check_feature_names(self, X, reset=False)
        expect = {"expect_sfreq": getattr(self, "sfreq_", None), "expect_ch_names": getattr(self, "ch_names_", None),
                  "expect_tmin": getattr(self, "tmin_", None)}
        Xa, brain = _as_design(X, mask=self.mask, picks=self.picks, expect=expect)
        subject = brain.subject if brain is not None else None
        n_times = getattr(self, "n_times_", None)
        if brain is not None and brain.X.ndim == 3 and n_times is not None and brain.X.shape[2] != n_times:
            raise ShapeMismatchError(format_error(
                "X", f"{n_times} samples per epoch, as in fit", f"{brain.X.shape[2]} samples (shape {brain.X.shape})",
                "Crop the epochs to the window used for fitting (epochs.crop(tmin, tmax)) at the same sampling rate"))
        if Xa.shape[1] != self.n_features_in_:
            who = f" (subject {self.subject_})" if self.subject_ else ""
            raise ShapeMismatchError(format_error(
                "X", f"{self.n_features_in_} features (voxels) per trial, as in fit{who}",
                f"X has {Xa.shape[1]} features, but RidgeDecoder is expecting {self.n_features_in_} features as input",
                "Use the same voxel mask (and subject) as for fitting"))
        if subject is not None and self.subject_ is not None and subject != self.subject_:
            raise MetadataMismatchError(format_error(
                "X", f"trials of subject {self.subject_!r} (the fitted one)", f"trials of subject {subject!r}",
                "Fit one RidgeDecoder per subject, or pass that subject's trials"))
        return Xa

    def predict(self, X: Any) -> np.ndarray:
        """Predict targets.

        Parameters
        ----------
        X : ndarray of shape (n_trials, n_voxels), Trials, mne.Epochs or nibabel image(s)
            Brain responses, in the form and with the channels, sampling rate and window seen in ``fit``.

        Returns
        -------
        Y_pred : ndarray of shape (n_trials, *target_shape_)
        """
        self._check_fitted("predict")
        Xa = self._check_predict_X(X)
        coef = np.atleast_2d(self.coef_)
        out = Xa @ coef.T + np.atleast_1d(self.intercept_).astype(coef.dtype)
        return out.reshape((len(Xa),) + tuple(self.target_shape_))

    def score(self, X: Any, y: Any, sample_weight: Any = None, multioutput: str = "uniform_average") -> Any:
        """Coefficient of determination R^2 of the predictions.

        Parameters
        ----------
        X : ndarray of shape (n_trials, n_voxels), Trials, mne.Epochs or nibabel image(s)
            Brain responses (as for ``predict``).
        y : ndarray of shape (n_trials, *target_shape_)
            True targets.
        sample_weight : ndarray of shape (n_trials,) or None
            Sample weights.
        multioutput : {"uniform_average", "raw_values", "variance_weighted"}
            ``"raw_values"`` returns one R^2 per target, shaped like ``target_shape_``.

        Returns
        -------
        score : float or ndarray of shape target_shape_
        """
        from sklearn.metrics import r2_score

        check_option(multioutput, "multioutput", ["uniform_average", "raw_values", "variance_weighted"])
        pred = self.predict(X)
        Ya = np.asarray(y)
        if Ya.shape != pred.shape:
            raise ShapeMismatchError(format_error("Y", f"an array of shape {pred.shape}", Ya))
        n = len(Ya)
        r2 = r2_score(Ya.reshape(n, -1), pred.reshape(n, -1), sample_weight=sample_weight, multioutput=multioutput)
        if multioutput == "raw_values":
            return np.asarray(r2).reshape(tuple(self.target_shape_) or (1,))
        return float(r2)
