"""sklearn-style brain encoder: images (or their features) -> voxel responses.

>>> est = BrainEncoder(space="dinov2-base-q-tokens-tiny", config="tiny", epochs=3)          # doctest: +SKIP
>>> est.fit(images, Y, roi_labels=labels)                                                 # doctest: +SKIP
>>> est.predict(test_images).shape                                                        # doctest: +SKIP
(n_images, n_voxels)
>>> est.score(test_images, Y_test)             # mean voxel Pearson r                      # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from .._core.errors import ShapeMismatchError, ValidationError
from .._core.validation import check_array, check_option, format_error
from ._ridge import EstimatorNotFittedError

__all__ = ["BrainEncoder"]


class BrainEncoder(BaseEstimator):
    """Fit the transformer brain encoder (or its ridge baseline) from images to voxels; predict and score.

    Parameters
    ----------
    space : str
        Latent space of the inputs (``"dinov2-base-q-tokens"``: the reference's DINOv2 query features;
        ``"-tiny"`` twins for tests). Images are encoded with it; features already in it are used as given.
    model : {"transformer", "ridge"}
        The transformer encoder (:class:`~neurodecode.models.brain_encoder.TransformerBrainEncoder`) or the
        ridge baseline (:class:`~neurodecode.models.brain_encoder.RidgeBrainEncoder`).
    config : None, "tiny" or dict
        Transformer config fields (:class:`~neurodecode.models.brain_encoder.BrainEncoderConfig`; sizes and ROI
        groups come from the data), with an optional ``"base": "tiny"``.
    epochs, batch_size, lr, weight_decay, lr_drop, lr_drop_gamma, grad_clip : int, int, float, float, int, float, float
        The reference's recipe: 15, 16, 5e-4, 1e-4, StepLR every 4 epochs x 0.1, clipping 0.1.
    ridge_pool : {"mean", "flatten"}
        Ridge features: the mean token, or every token.
    space_weights : str or None
        Weights of the latent space (``None``: its published ones; tiny twins: seeded random init).
    device : str
        ``"cpu"``, ``"cuda"`` or ``"auto"``.
    random_state : int
    verbose : bool or str or None

    Attributes
    ----------
    model_ : torch.nn.Module
        The fitted encoder.
    n_voxels_ : int
    roi_names_ : list of str
        The query groups (transformer).
    history_ : list of dict
        The trainer's logged metrics (transformer).
    """

    def __init__(self, space: str = "dinov2-base-q-tokens", *, model: str = "transformer", config: Any = None,
                 epochs: int = 15, batch_size: int = 16, lr: float = 5e-4, weight_decay: float = 1e-4,
                 lr_drop: int | None = 4, lr_drop_gamma: float = 0.1, grad_clip: float | None = 0.1,
                 ridge_pool: str = "mean", space_weights: Any = None, device: str = "cpu", random_state: int = 0,
                 verbose: Any = None) -> None:
        self.space = space
        self.model = model
        self.config = config
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.lr_drop = lr_drop
        self.lr_drop_gamma = lr_drop_gamma
        self.grad_clip = grad_clip
        self.ridge_pool = ridge_pool
        self.space_weights = space_weights
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------------------------------ inputs
    def _features(self, X: Any) -> np.ndarray:
        """uint8 images (n, H, W, 3) or a list of PIL images -> features; float arrays are features already."""
        from ..latents import get_space

        arr = X if isinstance(X, np.ndarray) else None
        is_images = (arr is not None and arr.dtype == np.uint8 and arr.ndim == 4 and arr.shape[-1] == 3) or (
            isinstance(X, (list, tuple)) and len(X) and hasattr(X[0], "convert"))
        if is_images:
            if getattr(self, "_space_obj", None) is None:
                self._space_obj = get_space(self.space, weights=self.space_weights, device=self.device,
                                            verbose=self.verbose)
            return self._space_obj.encode_images(X)
        return check_array(X, "X", dtype="float")

    # --------------------------------------------------------------------------------------------- fit
    def fit(self, X: Any, Y: Any, roi_labels: Any = None, hemisphere: Any = None) -> BrainEncoder:
        """Fit the encoder.

        Parameters
        ----------
        X : uint8 ndarray of shape (n_images, H, W, 3), list of PIL images, or features (n_images, *space shape)
            The training images (encoded with ``space``) or their features.
        Y : ndarray of shape (n_images, n_voxels)
            Responses to them (repeats averaged, typically).
        roi_labels : array of shape (n_voxels,) or None
            One ROI label per voxel (``<= 0`` / ``""``: none): one query per ROI plus the unlabelled group
            (:func:`~neurodecode.models.brain_encoder.roi_groups`). ``None``: one query for every voxel.
        hemisphere : array of shape (n_voxels,) or None
            ``"lh"``/``"rh"`` per voxel: queries per hemisphere, as the reference.

        Returns
        -------
        self : BrainEncoder
        """
        from ..models.brain_encoder import (
            BrainEncoderConfig,
            RidgeBrainEncoder,
            RidgeEncoderConfig,
            TransformerBrainEncoder,
            roi_groups,
        )

        check_option(self.model, "model", ("transformer", "ridge"))
        feats = self._features(X)
        y = check_array(Y, "Y", ndim=2, dtype="float")
        if len(y) != len(feats):
            raise ShapeMismatchError(format_error("Y", f"one row per image ({len(feats)})", y))
        self.n_voxels_ = int(y.shape[1])
        if self.model == "ridge":
            rcfg = RidgeEncoderConfig(n_voxels=self.n_voxels_, feature_shape=tuple(feats.shape[1:]),
                                      pool=self.ridge_pool, space=self.space, subject=None)
            self.model_: Any = RidgeBrainEncoder(rcfg).fit(feats, y, verbose=self.verbose)
            self.roi_names_ = []
            self.history_ = []
            return self
        if feats.ndim != 3:
            raise ValidationError(format_error("space", "a token space (n_tokens x width) for the transformer",
                                               f"{self.space!r}: features of shape {feats.shape[1:]}",
                                               "Use 'dinov2-base-q-tokens', or model='ridge'"))
        side = int(round(np.sqrt(feats.shape[1])))
        if side * side != feats.shape[1]:
            raise ValidationError(format_error("space", "a square grid of patch tokens", feats.shape[1]))
        if roi_labels is None:
            mem, names = np.ones((1, self.n_voxels_), dtype=bool), ["all"]
        else:
            mem, names = roi_groups(roi_labels, hemisphere=hemisphere)
        fields = dict(self.config) if isinstance(self.config, dict) else {}
        base = fields.pop("base", "tiny" if self.config == "tiny" else "default")
        make = BrainEncoderConfig.tiny if base == "tiny" else BrainEncoderConfig
        cfg = make(**{**fields, "n_voxels": self.n_voxels_, "n_groups": len(names), "roi_names": names,
                      "subject": None, "space": self.space, "feature_dim": int(feats.shape[2]), "grid": (side, side)})
        import torch

        torch.manual_seed(self.random_state)
        self.model_ = TransformerBrainEncoder(cfg, membership=mem)
        self.history_ = self._train(feats, y)
        self.roi_names_ = names
        return self

    def _train(self, feats: np.ndarray, y: np.ndarray) -> list[dict[str, Any]]:
        from ..recipes._encoder import train_encoder
        from ..train import TrainConfig

        config = TrainConfig(epochs=int(self.epochs), batch_size=int(self.batch_size), lr=float(self.lr),
                             weight_decay=float(self.weight_decay), grad_clip=self.grad_clip, device=self.device,
                             seed=int(self.random_state), checkpoint_every=None, log_every=1, verbose=self.verbose)
        result = train_encoder(self.model_, feats.astype(np.float32), y, config, None, lr_drop=self.lr_drop,
                               gamma=self.lr_drop_gamma)
        return list(result.history)

    # ----------------------------------------------------------------------------------------- predict
    def predict(self, X: Any) -> np.ndarray:
        """Predicted responses ``(n_images, n_voxels)`` for images or features ``X``."""
        if not hasattr(self, "model_"):
            raise EstimatorNotFittedError(format_error("BrainEncoder", "a fitted estimator", "an unfitted one",
                                                       "Call fit(X, Y) first"))
        return np.asarray(self.model_.predict(self._features(X)), dtype=np.float32)

    def score(self, X: Any, Y: Any) -> float:
        """Mean Pearson r over voxels between predicted and measured responses (higher is better)."""
        from ..metrics import encoding_accuracy

        res = encoding_accuracy(self.predict(X), check_array(Y, "Y", ndim=2, dtype="float"))
        return float(res["rois"]["all"]["r"]["mean"])
