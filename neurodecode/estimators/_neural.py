"""sklearn-style estimator over the neural fMRI decoders (MindBridge, MindEye2-style) and the one trainer.

>>> est = NeuralDecoder("mindbridge", config="tiny", epochs=5)                     # doctest: +SKIP
>>> est.fit({"nsd/subj01": X1, "nsd/subj02": X2},
...         {"nsd/subj01": {"clip_image_tokens": T1}, "nsd/subj02": {"clip_image_tokens": T2}})  # doctest: +SKIP
>>> est.predict(X1_test, subject="nsd/subj01")["clip_image_tokens"].shape            # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from .._core.errors import ShapeMismatchError, ValidationError
from .._core.validation import check_array, check_option, format_error
from ._ridge import EstimatorNotFittedError

__all__ = ["NeuralDecoder"]

#: decoder -> {target name accepted by fit: batch key}
_TARGET_NAMES = {
    "mindbridge": {"clip_image_tokens": "image_tokens", "clip_text_tokens": "text_tokens"},
    "mindeye2": {"vae_latents": "vae_latents"},  # any other single name is the token target
}


class NeuralDecoder(BaseEstimator):
    """Fit a cross-subject neural decoder on arrays, predict latents from new brain data.

    Parameters
    ----------
    decoder : {"mindbridge", "mindeye2"}
        Which decoder (:data:`neurodecode.models.DECODERS`).
    config : None, "tiny", "low_compute" or dict
        ``None``: the real-size config; ``"tiny"``: toy width (tests, demos); a dict: config fields,
        with an optional ``"base"`` key (``"default"``, ``"tiny"``, ``"low_compute"``).
        Subjects and target shapes always come from the data.
    epochs : int
        Passes over the training data.
    batch_size : int
        Samples per subject per step (lowered to the smallest subject's number of samples).
    lr : float
        Peak learning rate (OneCycle, AdamW).
    subjects_per_step : int or None
        Subjects in each step (default: 2 for MindBridge's cycle loss when there are several, else 1).
    device : str
        ``"cpu"``, ``"cuda"`` or ``"auto"``.
    random_state : int
        Seed of the weights and batch order.
    verbose : bool or str or None
        Progress bar and log level.

    Attributes
    ----------
    model_ : torch.nn.Module
        The trained decoder.
    subjects_ : list of str
        Subject ids seen in ``fit``.
    n_voxels_ : dict of str to int
        Input size of each subject.
    target_names_ : list of str
        Names of the fitted targets (keys of the ``predict`` output).
    history_ : list of dict
        The trainer's logged metrics.
    """

    def __init__(self, decoder: str = "mindbridge", config: Any = None, *, epochs: int = 10, batch_size: int = 32,
                 lr: float = 3e-4, subjects_per_step: int | None = None, device: str = "cpu", random_state: int = 0,
                 verbose: Any = None) -> None:
        self.decoder = decoder
        self.config = config
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.subjects_per_step = subjects_per_step
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------------------------------ inputs
    def _as_subjects(self, X: Any, Y: Any, subject: str | None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        if isinstance(X, Mapping):
            if not isinstance(Y, Mapping) or set(map(str, Y)) != set(map(str, X)):
                raise ValidationError(format_error(
                    "Y", "a dict {subject: {target name: array}} with the subjects of X", describe_keys(Y),
                    "With X a dict of subjects, give Y per subject too"))
            xs = {str(s): check_array(x, f"X[{s!r}]", ndim=2, dtype=np.float32) for s, x in X.items()}
            ys = {str(s): dict(Y[s]) for s in X}
        else:
            if subject is None:
                raise ValidationError(format_error("subject", "the subject id of X", None,
                                                   "Pass subject='nsd/subj01' or X as {subject: array}"))
            xs = {str(subject): check_array(X, "X", ndim=2, dtype=np.float32)}
            ys = {str(subject): dict(Y)}
        return xs, ys

    def _batch_keys(self, names: list[str]) -> dict[str, str]:
        table = _TARGET_NAMES[self.decoder]
        if self.decoder == "mindbridge":
            unknown = [n for n in names if n not in table]
            if unknown or "clip_image_tokens" not in names:
                raise ValidationError(format_error("Y", "targets 'clip_image_tokens' (+ optional 'clip_text_tokens')",
                                                   sorted(names), "Name the targets as predict_latents returns them"))
            return {n: table[n] for n in names}
        tokens = [n for n in names if n != "vae_latents"]
        if len(tokens) != 1:
            raise ValidationError(format_error("Y", "one token target (e.g. 'clip_bigg_tokens') + optional "
                                               "'vae_latents'", sorted(names)))
        return {n: ("vae_latents" if n == "vae_latents" else "tokens") for n in names}

    # --------------------------------------------------------------------------------------------- fit
    def fit(self, X: Any, Y: Any, subject: str | None = None) -> NeuralDecoder:
        """Train the decoder.

        Parameters
        ----------
        X : ndarray of shape (n_trials, n_voxels) or dict of str to such arrays
            Brain responses of one subject (with ``subject``) or ``{subject: X_s}``.
        Y : dict of str to ndarray of shape (n_trials, ...)
            Targets by name (``"clip_image_tokens"``: (n_trials, n_tokens, dim), ...); with ``X`` a
            dict, ``{subject: {name: array}}``.
        subject : str or None
            Subject id of ``X`` when it is an array.

        Returns
        -------
        self : NeuralDecoder
        """
        from ..models import build_decoder
        from ..train import MultiSubjectBatches, TrainConfig, Trainer

        check_option(self.decoder, "decoder", list(_TARGET_NAMES))
        xs, ys = self._as_subjects(X, Y, subject)
        names = sorted({n for y in ys.values() for n in y})
        keys = self._batch_keys(names)
        data: dict[str, dict[str, np.ndarray]] = {}
        shapes: dict[str, tuple[int, ...]] = {}
        for s, x in xs.items():
            arrays = {"x": x}
            for name, value in ys[s].items():
                arr = check_array(value, f"Y[{s!r}][{name!r}]", dtype=np.float32)
                if len(arr) != len(x):
                    raise ShapeMismatchError(format_error(f"Y[{s!r}][{name!r}]", f"{len(x)} rows (one per trial of X)",
                                                          arr, "Pass one target per trial"))
                if keys[name] in shapes and shapes[keys[name]] != arr.shape[1:]:
                    raise ShapeMismatchError(format_error(f"Y[{s!r}][{name!r}]", f"targets of shape {shapes[keys[name]]}",
                                                          arr, "Every subject's targets live in the same space"))
                shapes[keys[name]] = arr.shape[1:]
                arrays[keys[name]] = arr
            data[s] = arrays
        config = self.config
        if isinstance(config, str) or config is None:
            fields: dict[str, Any] = {"base": config or "default"}
        elif isinstance(config, Mapping):
            fields = {"base": "default", **dict(config)}
        else:
            raise ValidationError(format_error("config", "None, 'tiny', 'low_compute' or a dict of config fields",
                                               type(config).__name__))
        token_name = next((n for n in names if keys[n] == "tokens"), None)
        if token_name is not None:
            fields["target_key"] = token_name
        base = fields.pop("base")
        import torch

        torch.manual_seed(self.random_state)
        self.n_voxels_ = {s: int(x.shape[1]) for s, x in xs.items()}
        model = build_decoder(self.decoder, subjects=self.n_voxels_, target_shapes=shapes, base=base, **fields)
        batch = max(1, min(int(self.batch_size), *(len(x) for x in xs.values())))
        per_step = self.subjects_per_step or (min(2, len(xs)) if self.decoder == "mindbridge" else 1)
        source = MultiSubjectBatches(data, batch, subjects_per_step=int(per_step))
        cfg = TrainConfig(epochs=int(self.epochs), batch_size=batch, lr=float(self.lr), seed=int(self.random_state),
                          device=self.device, checkpoint_every=None, log_every=max(1, source.steps_per_epoch),
                          verbose=self.verbose)
        result = Trainer(model, cfg).fit(source)
        model.eval()
        self.model_ = model
        self.subjects_ = list(xs)
        self.target_names_ = names
        self.history_ = result.history
        return self

    def predict(self, X: Any, subject: str | None = None) -> dict[str, np.ndarray]:
        """Predict the targets from brain responses.

        Parameters
        ----------
        X : ndarray of shape (n_trials, n_voxels)
            Responses of ``subject`` (preprocessed as in ``fit``).
        subject : str or None
            Subject id (may be left out when ``fit`` saw one subject).

        Returns
        -------
        latents : dict of str to ndarray
            One array of shape (n_trials, ...) per fitted target name (and the decoder's extra outputs,
            e.g. MindEye2's ``"retrieval_embeds"``).
        """
        if not hasattr(self, "model_"):
            raise EstimatorNotFittedError(format_error("NeuralDecoder", "a fitted estimator", "not fitted",
                                              "Call fit(X, Y) first"))
        if subject is None:
            if len(self.subjects_) != 1:
                raise ValidationError(format_error("subject", "one of " + ", ".join(map(repr, self.subjects_)),
                                                   None, "Several subjects were fitted: name the one of X"))
            subject = self.subjects_[0]
        if subject not in self.n_voxels_:
            raise ValidationError(format_error("subject", "one of " + ", ".join(map(repr, self.subjects_)),
                                               repr(subject), "Fit with that subject's data first"))
        X = check_array(X, "X", ndim=2, dtype=np.float32)
        if X.shape[1] != self.n_voxels_[subject]:
            raise ShapeMismatchError(format_error(f"X for subject {subject!r}",
                                                  f"shape (n_trials, {self.n_voxels_[subject]})", X,
                                                  "Use the same voxels (mask) as in fit"))
        result: dict[str, np.ndarray] = self.model_.predict_latents(X, subject=subject)
        return result


def describe_keys(obj: Any) -> str:
    return f"keys {sorted(map(str, obj))}" if isinstance(obj, Mapping) else type(obj).__name__
