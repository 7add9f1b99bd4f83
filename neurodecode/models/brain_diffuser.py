"""Brain-Diffuser (Ozcelik & VanRullen, Sci Rep 2023): ridge regressions from fMRI to three latent spaces.

The reference (ozcelikfu/brain-diffuser ``scripts/*_regression.py``), and what this module does by default:

1. z-score every voxel once, with the training set's mean and standard deviation (``ddof=1``, as
   ``np.std(train_fmri, axis=0, ddof=1)``); the reference first divides the raw betas by 300, which
   a z-score cancels, and applies no per-session z-score (the data must come in unnormalised);
2. ridge-regress the z-scored voxels (``sklearn.linear_model.Ridge(alpha, fit_intercept=True)``) onto
   - low-level image latents (``"vae_latents"``: the first 31 VDVAE layers, 91,168 dims, alpha 5e4, the
     ``vdvae`` latent space; or any image-autoencoder latent such as the SD VAE's (4, 64, 64)),
   - CLIP-vision tokens (``"clip_image_tokens"``, 257 x 768, alpha 6e4),
   - CLIP-text tokens (``"clip_text_tokens"``, 77 x 768, alpha 1e5; mean over the 5 COCO captions);
3. re-standardise each predicted feature to the training latents' mean and std: ``(p - mean(p)) /
   std(p) * std(y_train) + mean(y_train)``, statistics over the predicted test batch and the training
   latents (``np.std``, ``ddof=0``).

The original refits one sklearn ``Ridge`` per CLIP token (hundreds of fits, each rebuilding the same
kernel). Here one decomposition of the z-scored training voxels (:func:`~neurodecode.models.ridge.ridge_decompose`)
serves all three target groups, every alpha and every feature; with ``cv`` set, alphas are chosen per
group (or per feature) by closed-form leave-one-out.

All learned state (voxel statistics, weights, intercepts, latent statistics, alphas) lives in buffers,
so ``state_dict`` / ``save_pretrained`` / ``from_pretrained`` round-trip the fitted decoder.

Example
-------
>>> import numpy as np
>>> from neurodecode.models.brain_diffuser import BrainDiffuser
>>> model = BrainDiffuser.tiny()
>>> rng = np.random.default_rng(0)
>>> X = rng.standard_normal((40, model.config.n_voxels))
>>> targets = {k: rng.standard_normal((40, *s)) for k, s in model.config.target_shapes.items()}
>>> latents = model.fit(X, targets).predict_latents(X[:5])
>>> latents["clip_image_tokens"].shape
(5, 5, 8)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._core.errors import MetadataMismatchError, NotFittedError, ShapeMismatchError, ValidationError
from .._core.validation import check_array, check_option, dataclass_from_dict, format_error
from ..io.checkpoints import PretrainedMixin
from . import LATENT_KEYS

__all__ = ["BrainDiffuser", "BrainDiffuserConfig"]

_RESTANDARDIZE = ("batch", "train", "none")


def _paper_shapes() -> dict[str, tuple[int, ...]]:
    return {"vae_latents": (91168,), "clip_image_tokens": (257, 768), "clip_text_tokens": (77, 768)}


def _paper_alphas() -> dict[str, tuple[float, ...]]:
    return {"vae_latents": (5e4,), "clip_image_tokens": (6e4,), "clip_text_tokens": (1e5,)}


@dataclass
class BrainDiffuserConfig:
    """Configuration of :class:`BrainDiffuser` (defaults: the paper's setting for NSD subject 1).

    Parameters
    ----------
    n_voxels : int
        Voxels per trial (nsdgeneral mask; 15,724 for subj01).
    subject : str or None
        Namespaced subject id the decoder is fitted for (e.g. ``"nsd/subj01"``).
    target_shapes : dict of str to tuple of int
        Latent spaces (keys from :data:`neurodecode.models.LATENT_KEYS`) and the shape of one item.
        ``vae_latents`` may be a flat VDVAE vector (91,168) or an SD-VAE latent (4, 64, 64).
    alphas : dict of str to tuple of float
        Ridge penalty per group: a single value (the paper's 5e4 / 6e4 / 1e5, with ``cv=None``) or a
        grid searched with ``cv``.
    cv : {"loo"} or int or None
        ``None``: use the given alphas; ``"loo"`` or k: choose from each group's grid.
    alpha_per_target : bool
        With ``cv``: one alpha per latent feature instead of one per group.
    restandardize : {"batch", "train", "none"}
        Re-standardise predictions to the training latents' mean and std. ``"batch"`` (the reference)
        standardises each feature over the predicted batch first; ``"train"`` uses the spread of the
        in-sample training predictions (works for single trials); ``"none"`` returns raw predictions.
    zscore_ddof : {1, 0}
        Delta degrees of freedom of the voxels' training standard deviation (the reference: 1).
    target_batch : int
        Latent features solved at once (memory bound of the fit).
    dtype : {"float32", "float64"}
        Precision of the fit and of the stored weights.
    """

    n_voxels: int = 15724
    subject: str | None = "nsd/subj01"
    target_shapes: dict[str, tuple[int, ...]] = field(default_factory=_paper_shapes)
    alphas: dict[str, tuple[float, ...]] = field(default_factory=_paper_alphas)
    cv: str | int | None = None
    alpha_per_target: bool = False
    restandardize: str = "batch"
    zscore_ddof: int = 1
    target_batch: int = 16384
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if isinstance(self.cv, str) and self.cv.lower() in ("none", ""):
            self.cv = None  # TOML has no null: recipes write cv = "none"
        self.target_shapes = {k: tuple(int(s) for s in np.atleast_1d(v)) for k, v in self.target_shapes.items()}
        self.alphas = {k: tuple(float(a) for a in np.atleast_1d(v)) for k, v in self.alphas.items()}
        bad = sorted(set(self.target_shapes) - set(LATENT_KEYS))
        if bad:
            raise ValidationError(format_error("target_shapes", "keys among " + ", ".join(LATENT_KEYS), bad,
                                               "Name each latent space with a key of neurodecode.models.LATENT_KEYS"))
        missing = sorted(set(self.target_shapes) - set(self.alphas))
        if missing:
            raise ValidationError(format_error("alphas", "one entry per latent space", f"none for {missing}"))
        if int(self.n_voxels) < 1:
            raise ValidationError(format_error("n_voxels", "a positive integer", self.n_voxels))
        check_option(self.restandardize, "restandardize", _RESTANDARDIZE)
        check_option(self.zscore_ddof, "zscore_ddof", (0, 1))
        check_option(self.dtype, "dtype", ["float32", "float64"])

    @classmethod
    def tiny(cls, **overrides: Any) -> BrainDiffuserConfig:
        """Same structure at toy size (37 voxels; latents (4, 4, 4), (5, 8), (3, 8)), alphas chosen by LOO."""
        grid = (0.1, 1.0, 10.0, 100.0, 1000.0)
        fields: dict[str, Any] = {
            "n_voxels": 37, "subject": "nsd/subj01",
            "target_shapes": {"vae_latents": (4, 4, 4), "clip_image_tokens": (5, 8), "clip_text_tokens": (3, 8)},
            "alphas": {"vae_latents": grid, "clip_image_tokens": grid, "clip_text_tokens": grid},
            "cv": "loo", "target_batch": 16,
        }
        fields.update(overrides)
        return cls(**fields)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BrainDiffuserConfig:
        """Build from a JSON-style dict (lists become tuples); unknown keys are refused."""
        return dataclass_from_dict(cls, d, "decoder")


class BrainDiffuser(PretrainedMixin, torch.nn.Module):
    """Brain-Diffuser's ridge decoder: z-scored voxels -> low-level, CLIP-vision and CLIP-text latents.

    Parameters
    ----------
    config : BrainDiffuserConfig or None
        Sizes, alphas and options (``None``: the paper's configuration).

    Notes
    -----
    Buffers per latent space ``k`` (flattened, ``t_k`` features): ``coef_k`` (n_voxels, t_k),
    ``intercept_k``, ``target_mean_k``, ``target_std_k``, ``prediction_std_k``, ``alpha_k``
    (each (t_k,)); plus ``voxel_mean`` / ``voxel_std`` (n_voxels,) and ``fitted``.
    """

    config_class = BrainDiffuserConfig

    def __init__(self, config: BrainDiffuserConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else BrainDiffuserConfig()
        dt = getattr(torch, self.config.dtype)
        p = int(self.config.n_voxels)
        self.register_buffer("voxel_mean", torch.zeros(p, dtype=dt))
        self.register_buffer("voxel_std", torch.ones(p, dtype=dt))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        for name, shape in self.config.target_shapes.items():
            t = int(np.prod(shape))
            # torch.empty: real-size weights (21.9 GB at paper size) cost nothing until written or loaded
            self.register_buffer(f"coef_{name}", torch.empty((p, t), dtype=dt))
            for stat in ("intercept", "target_mean", "target_std", "prediction_std", "alpha"):
                self.register_buffer(f"{stat}_{name}", torch.zeros(t, dtype=dt))

    @classmethod
    def tiny(cls, **overrides: Any) -> BrainDiffuser:
        """A toy-size decoder with the same structure (see :meth:`BrainDiffuserConfig.tiny`)."""
        return cls(BrainDiffuserConfig.tiny(**overrides))

    @property
    def latent_names(self) -> list[str]:
        """The latent spaces this decoder predicts (keys of :data:`~neurodecode.models.LATENT_KEYS`)."""
        return list(self.config.target_shapes)

    def _buffer(self, stat: str, name: str) -> torch.Tensor:
        return getattr(self, f"{stat}_{name}")  # type: ignore[no-any-return]

    # ------------------------------------------------------------------------------- checks
    def _check_voxels(self, X: Any, subject: str | None, param: str = "X") -> np.ndarray:
        from ..data._trials import Trials

        if isinstance(X, Trials):
            subject = subject if subject is not None else X.subject
            X = X.X.reshape(len(X.X), -1)
        arr = check_array(X, param, ndim=2, dtype="float")
        fitted_for = self.config.subject
        if subject is not None and fitted_for is not None and subject != fitted_for:
            raise MetadataMismatchError(format_error(
                "subject", f"{fitted_for!r} (the subject this decoder was fitted for)", repr(subject),
                "Brain-Diffuser weights are subject-specific: load or fit the decoder for that subject"))
        if arr.shape[1] != self.config.n_voxels:
            who = subject or fitted_for or "unknown subject"
            raise ShapeMismatchError(format_error(
                param, f"{self.config.n_voxels} voxels per trial for subject {who} (the decoder's size)",
                f"{arr.shape[1]} voxels (an array of shape {arr.shape})",
                "Use the same voxel mask (nsdgeneral) and subject as the fitted decoder, "
                "or fit a new one with BrainDiffuserConfig(n_voxels=...)"))
        return arr

    # ------------------------------------------------------------------------------- fit
    def fit(self, X_train: Any, targets: dict[str, Any], *, device: Any = "cpu",
            verbose: bool | int | str | None = None) -> BrainDiffuser:
        """Fit every latent space from the training trials with one shared ridge decomposition.

        Parameters
        ----------
        X_train : ndarray of shape (n_trials, n_voxels) or Trials
            Training responses (repeats averaged in the paper: 8,859 images for subj01).
        targets : dict of str to array of shape (n_trials, *target_shapes[key])
            Latents of each training stimulus, for every key of ``config.target_shapes``. Arrays,
            ``np.memmap`` or ``h5py`` datasets (read in column batches).
        device : str or torch.device
            Where to solve (``"cuda"`` for the real size); the weights end on this module's device.
        verbose : bool | str | int | None
            Progress and log level.

        Returns
        -------
        self : BrainDiffuser
        """
        from .ridge import ridge_decompose, ridge_fit

        X = self._check_voxels(X_train, None, "X_train")
        n = X.shape[0]
        missing = [k for k in self.config.target_shapes if k not in targets]
        extra = [k for k in targets if k not in self.config.target_shapes]
        if missing or extra:
            raise ValidationError(format_error(
                "targets", "one array per latent space: " + ", ".join(self.config.target_shapes),
                f"missing {missing}, unexpected {extra}", "Pass exactly the latent spaces named in the config"))
        for name, shape in self.config.target_shapes.items():
            got = tuple(int(s) for s in targets[name].shape)
            if got != (n, *shape):
                raise ShapeMismatchError(format_error(
                    f"targets[{name!r}]", f"an array of shape {(n, *shape)} (one row per trial of X_train)",
                    f"shape {got}", "Check the latent space and that targets follow the trial order of X_train"))
        dt = self.config.dtype
        mean = X.mean(0)
        std = X.std(0, ddof=int(self.config.zscore_ddof)) if n > self.config.zscore_ddof else np.zeros_like(mean)
        std = np.where(std > 0, std, 1.0)
        Xz = (X - mean) / std
        dec = ridge_decompose(Xz, fit_intercept=True, device=device, dtype=dt)
        own = self.voxel_mean.device
        with torch.no_grad():
            self.voxel_mean.copy_(torch.as_tensor(mean))
            self.voxel_std.copy_(torch.as_tensor(std))
            for name in self.config.target_shapes:
                sol = ridge_fit(dec, targets[name], self.config.alphas[name], cv=self.config.cv,
                                alpha_per_target=self.config.alpha_per_target, target_batch=self.config.target_batch,
                                return_prediction_std=True, coef_out=self._buffer("coef", name), verbose=verbose)
                self._buffer("intercept", name).copy_(sol.intercept.to(own))
                self._buffer("target_mean", name).copy_(sol.target_mean.to(own))
                self._buffer("target_std", name).copy_(sol.target_std.to(own))
                self._buffer("prediction_std", name).copy_(sol.prediction_std.to(own))
                self._buffer("alpha", name).copy_(sol.best_alphas.to(own))
            self.fitted.fill_(True)
        return self

    # ------------------------------------------------------------------------------- predict
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw ridge predictions (no re-standardisation) for raw voxels ``x`` of shape (n, n_voxels)."""
        z = (x - self.voxel_mean) / self.voxel_std
        return {name: torch.addmm(self._buffer("intercept", name), z, self._buffer("coef", name))
                for name in self.config.target_shapes}

    def predict_latents(self, X: Any, subject: str | None = None, *,
                        restandardize: str | None = None) -> dict[str, np.ndarray]:
        """Predict every latent space from brain responses.

        Parameters
        ----------
        X : ndarray of shape (n_trials, n_voxels) or Trials
            Responses (raw: the training z-scoring is applied here).
        subject : str or None
            Subject of ``X``; must match ``config.subject`` when both are known.
        restandardize : {"batch", "train", "none"} or None
            Overrides ``config.restandardize``. ``"batch"`` needs at least 2 trials.

        Returns
        -------
        latents : dict of str to ndarray of shape (n_trials, *target_shapes[key])
            Keys from :data:`neurodecode.models.LATENT_KEYS`.
        """
        if not bool(self.fitted):
            raise NotFittedError(format_error("BrainDiffuser", "a fitted decoder", "an unfitted one",
                                              "Call fit(X_train, targets) or load one with from_pretrained()"))
        X = self._check_voxels(X, subject)
        mode = check_option(restandardize or self.config.restandardize, "restandardize", _RESTANDARDIZE)
        if mode == "batch" and len(X) < 2:
            raise ValidationError(format_error(
                "restandardize", "at least 2 trials for 'batch' re-standardisation (the paper's)",
                f"{len(X)} trial", "Predict a batch of trials, or pass restandardize='train'"))
        ref = self.voxel_mean
        with torch.no_grad():
            raw = self.forward(torch.as_tensor(X, dtype=ref.dtype, device=ref.device))
            out = {}
            for name, shape in self.config.target_shapes.items():
                pred = raw[name]
                t_mean, t_std = self._buffer("target_mean", name), self._buffer("target_std", name)
                if mode == "batch":
                    p_mean, p_std = pred.mean(0), pred.std(0, correction=0)
                elif mode == "train":
                    p_mean, p_std = t_mean, self._buffer("prediction_std", name)
                if mode != "none":
                    safe = torch.where(p_std > 0, p_std, torch.ones_like(p_std))
                    pred = (pred - p_mean) / safe * torch.where(p_std > 0, t_std, torch.ones_like(t_std)) + t_mean
                out[name] = pred.cpu().numpy().reshape((len(X), *shape))
        return out
