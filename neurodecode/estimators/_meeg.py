"""sklearn-style estimator over ATM, the EEG/MEG -> CLIP image embedding decoder, and the one trainer.

>>> dec = ATMDecoder(config="tiny", epochs=20).fit(epochs_train, image_embeds_train)   # doctest: +SKIP
>>> dec.predict(epochs_test).shape                                                    # doctest: +SKIP
(200, 1024)
>>> dec.score(epochs_test, image_embeds_test)        # top-1 among the rows, chance 1/200  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from .._core.errors import ShapeMismatchError, ValidationError
from .._core.validation import check_array, dataclass_from_dict, format_error
from ._ridge import EstimatorNotFittedError

__all__ = ["ATMDecoder"]

#: ATMConfig fields read from the data (a config value must agree with it)
_FROM_DATA = ("n_channels", "n_times", "proj_dim")


class ATMDecoder(BaseEstimator):
    """Fit ATM on EEG/MEG trials and image embeddings; predict embeddings for new trials.

    ATM (:class:`neurodecode.models.atm.ATM`) maps each trial to an embedding aligned with the
    CLIP image embedding of the stimulus (contrastive InfoNCE loss). The model holds its own
    per-channel input scaling, set in ``fit`` from the training trials (mean and standard
    deviation over trials and time), so it takes raw data in any unit (MNE gives volts and
    tesla). Training runs through the one trainer (:class:`neurodecode.train.Trainer`) with the
    settings of the ATM recipe (AdamW, constant learning rate, no weight decay).

    Parameters
    ----------
    config : None, "tiny" or dict
        ``None``: the real-size architecture (the paper's); ``"tiny"``: toy width (tests,
        demos); a dict: :class:`~neurodecode.models.atm.ATMConfig` fields, with an optional
        ``"base"`` key (``"default"`` or ``"tiny"``). The input shape, the embedding width and
        the channel names always come from the data; ``"sfreq"`` is taken from the data when
        they carry it (an ``mne.Epochs``, a Trials), else from the config.
    epochs : int
        Passes over the training trials.
    batch_size : int
        Trials per step (lowered to the number of trials; at least 2 for the contrastive loss).
    lr : float
        Learning rate (AdamW).
    picks : str, list of str or None
        Channels of an ``mne.Epochs`` input (``"eeg"``, ``"meg"``, ``"data"``, names), as
        ``Epochs.get_data(picks=...)``; ``None`` takes every channel, stimulus channels
        included. Unused for arrays.
    device : str
        ``"cpu"``, ``"cuda"`` or ``"auto"``.
    random_state : int
        Seed of the weights and batch order.
    verbose : bool or str or None
        Progress bar and log level.

    Attributes
    ----------
    model_ : ATM
        The trained model (eval mode), with its input scaling; save it with :meth:`save`.
    ch_names_ : list of str or None
        Channel names seen in ``fit`` (``None`` for a plain array).
    sfreq_ : float or None
        Sampling rate (Hz) seen in ``fit`` (``None`` for a plain array, unless the config gave it).
    n_times_ : int
        Samples per trial.
    n_channels_ : int
        Channels per trial.
    tmin_ : float or None
        Time (s) of the first sample of the epochs seen in ``fit``.
    history_ : list of dict
        The trainer's logged metrics.

    Notes
    -----
    ``predict`` refuses trials with other channels (names or order), another sampling rate,
    another window start or another number of samples than in ``fit``, with a message that says
    how to fix them; a plain array carries no names or rate, so only its shape is checked.

    Examples
    --------
    >>> import mne, numpy as np
    >>> from neurodecode.estimators import ATMDecoder
    >>> rng = np.random.default_rng(0)
    >>> info = mne.create_info([f"EEG{i:02d}" for i in range(9)], sfreq=100.0, ch_types="eeg")
    >>> epochs = mne.EpochsArray(1e-6 * rng.standard_normal((12, 9, 11)), info, verbose=False)  # volts
    >>> Y = rng.standard_normal((12, 24))                     # e.g. CLIP image embeddings
    >>> dec = ATMDecoder(config="tiny", epochs=2, batch_size=6).fit(epochs, Y)
    >>> dec.predict(epochs).shape, dec.n_times_, dec.sfreq_
    ((12, 24), 11, 100.0)
    """

    def __init__(self, config: Any = None, *, epochs: int = 40, batch_size: int = 64, lr: float = 3e-4,
                 picks: Any = None, device: str = "cpu", random_state: int = 0, verbose: Any = None) -> None:
        self.config = config
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.picks = picks
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------------------------------ inputs
    def _trials(self, X: Any, *, fitted: bool) -> Any:
        """``X`` through :func:`neurodecode.data.as_brain_array` as float32 (n_trials, n_channels, n_times)."""
        from ..data._inputs import as_brain_array

        expect: dict[str, Any] = {}
        if fitted:
            expect = {"expect_sfreq": self.sfreq_, "expect_ch_names": self.ch_names_, "expect_tmin": self.tmin_}
        brain = as_brain_array(X, picks=self.picks, dtype=np.float32, **expect)
        if brain.X.ndim != 3:
            raise ShapeMismatchError(format_error(
                "X", "trials of shape (n_trials, n_channels, n_times) (an array or mne.Epochs)", brain.X,
                "Pass epoched M/EEG data; a single trial needs X[None]"))
        return brain

    def _config(self, *, n_channels: int, n_times: int, proj_dim: int, sfreq: float | None,
                ch_names: list[str] | None) -> Any:
        from ..models.atm import ATMConfig

        config = self.config
        if config is None or isinstance(config, str):
            fields: dict[str, Any] = {"base": config or "default"}
        elif isinstance(config, Mapping):
            fields = {"base": "default", **{str(k): v for k, v in config.items()}}
        else:
            raise ValidationError(format_error("config", "None, 'tiny' or a dict of ATMConfig fields",
                                               type(config).__name__))
        base = fields.pop("base")
        if base not in ("default", "tiny"):
            raise ValidationError(format_error("config['base']", "'default' or 'tiny'", repr(base)))
        data = {"n_channels": n_channels, "n_times": n_times, "proj_dim": proj_dim}
        for name in _FROM_DATA:
            given = fields.get(name)
            if given is not None and (isinstance(given, bool) or int(given) != data[name]):
                raise ValidationError(format_error(
                    f"config[{name!r}]", f"{data[name]} (read from the data: X has {n_channels} channels x {n_times} "
                    f"samples, Y {proj_dim} dimensions)", repr(given), f"Drop config[{name!r}]; it comes from the data"))
        if fields.get("ch_names") is not None:
            raise ValidationError(format_error("config['ch_names']", "no value (channel names come from the data)",
                                               "a list", "Pass an mne.Epochs, or pick its channels with picks="))
        if fields.get("subject_tokens") or fields.get("subjects"):
            raise ValidationError(format_error(
                "config['subject_tokens']", "False (ATMDecoder fits one model on the trials it is given)",
                repr(fields.get("subject_tokens")),
                "Train joint multi-subject models with a recipe (neurodecode train pipelines/atm_*.toml)"))
        if sfreq is not None:
            given = fields.get("sfreq")
            if given is not None and not math.isclose(float(given), sfreq, rel_tol=1e-6):
                raise ValidationError(format_error(
                    "config['sfreq']", f"{sfreq:g} Hz (the sampling rate of X)", f"{float(given):g} Hz",
                    "Drop config['sfreq']; it comes from the data"))
            fields["sfreq"] = sfreq
        fields.update(data, ch_names=ch_names)
        if base == "tiny":
            fields = {**dataclasses.asdict(ATMConfig.tiny()), **fields}
        return dataclass_from_dict(ATMConfig, fields, "config", ignore=())

    # --------------------------------------------------------------------------------------------- fit
    def fit(self, X: Any, Y: Any, text_embeds: Any = None) -> ATMDecoder:
        """Train ATM on the trials ``X`` and their image embeddings ``Y``.

        Parameters
        ----------
        X : ndarray of shape (n_trials, n_channels, n_times) or mne.Epochs or Trials
            Raw trials, in any unit (the model learns its per-channel scaling from them).
        Y : ndarray of shape (n_trials, dim)
            Image embedding of each trial's stimulus (e.g. pooled CLIP ViT-H-14, dim 1024).
        text_embeds : ndarray of shape (n_trials, dim) or None
            Text embedding of each trial's concept: the loss becomes
            ``image_weight x InfoNCE(image) + (1 - image_weight) x InfoNCE(text)`` (0.99 / 0.01).

        Returns
        -------
        self : ATMDecoder
        """
        import torch

        from ..recipes._meeg import _channel_stats
        from ..train import ArrayBatches, TrainConfig, Trainer

        brain = self._trials(X, fitted=False)
        Xa = np.ascontiguousarray(brain.X)
        n = len(Xa)
        Ya = check_array(Y, "Y", ndim=2, dtype=np.float32)
        if len(Ya) != n:
            raise ShapeMismatchError(format_error("Y", f"{n} rows (one embedding per trial of X)", Ya,
                                                  "Pass one target per trial, in the order of X"))
        arrays = {"x": Xa, "image_embeds": Ya}
        if text_embeds is not None:
            T = check_array(text_embeds, "text_embeds", ndim=2, dtype=np.float32)
            if T.shape != Ya.shape:
                raise ShapeMismatchError(format_error("text_embeds", f"an array of shape {Ya.shape} (like Y)", T,
                                                      "Give one text embedding per trial, in Y's space"))
            arrays["text_embeds"] = T
        if n < 2:
            raise ValidationError(format_error("X", "at least 2 trials (the loss contrasts trials)", f"{n} trial",
                                               "Pass more trials"))
        cfg = self._config(n_channels=Xa.shape[1], n_times=Xa.shape[2], proj_dim=Ya.shape[1], sfreq=brain.sfreq,
                           ch_names=brain.ch_names)
        from ..models.atm import ATM

        torch.manual_seed(int(self.random_state))
        model = ATM(cfg)
        model.set_input_scaling(*_channel_stats([(Xa, None, np.arange(n))]))
        batch = max(2, min(int(self.batch_size), n))
        source = ArrayBatches(arrays, batch, shuffle=True)
        train_cfg = TrainConfig(epochs=int(self.epochs), batch_size=batch, lr=float(self.lr), weight_decay=0.01,  # AdamW default on every parameter, as ATM
                                scheduler="constant", seed=int(self.random_state), device=self.device,
                                checkpoint_every=None, log_every=max(1, source.steps_per_epoch), verbose=self.verbose)
        result = Trainer(model, train_cfg).fit(source)
        model.eval()
        self.model_ = model
        self._set_fitted_from_model(brain_sfreq=brain.sfreq is not None or "sfreq" in _config_fields(self.config),
                                    tmin=None if brain.times is None else float(brain.times[0]))
        self.history_ = result.history
        return self

    def _set_fitted_from_model(self, *, brain_sfreq: bool, tmin: float | None) -> None:
        c = self.model_.config
        self.ch_names_ = None if c.ch_names is None else list(c.ch_names)
        self.sfreq_ = float(c.sfreq) if brain_sfreq else None
        self.n_channels_ = int(c.n_channels)
        self.n_times_ = int(c.n_times)
        self.tmin_ = tmin

    # ------------------------------------------------------------------------------------- predict
    def _check_fitted(self, method: str) -> None:
        if not hasattr(self, "model_"):
            raise EstimatorNotFittedError(format_error(
                "ATMDecoder", "a fitted estimator", "an unfitted one",
                f"Call fit(X, Y) before {method}(), or ATMDecoder.load(path)"))

    def predict(self, X: Any) -> np.ndarray:
        """Embed trials.

        Parameters
        ----------
        X : ndarray of shape (n_trials, n_channels, n_times) or mne.Epochs or Trials
            Raw trials with the channels, sampling rate and window seen in ``fit``.

        Returns
        -------
        emb : ndarray of shape (n_trials, dim)
            The ATM embedding of each trial (float32), in the space of the ``Y`` seen in ``fit``.
        """
        self._check_fitted("predict")
        Xa = self._trials(X, fitted=True).X
        n_ch, n_t = self.n_channels_, self.n_times_
        if Xa.shape[1] != n_ch:
            raise ShapeMismatchError(format_error(
                "X", f"{n_ch} channels on axis 1, as in fit", f"{Xa.shape[1]} channels (shape {Xa.shape})",
                "Use the channels the decoder was fitted on (decoder.ch_names_), in the same order, with axes "
                "(trials, channels, times)"))
        if Xa.shape[2] != n_t:
            rate = f" ({n_t / self.sfreq_:g} s at {self.sfreq_:g} Hz)" if self.sfreq_ else ""
            raise ShapeMismatchError(format_error(
                "X", f"{n_t} samples on axis 2{rate}, as in fit", f"{Xa.shape[2]} samples (shape {Xa.shape})",
                "Cut the same window at the same sampling rate (epochs.crop(tmin, tmax), epochs.resample(sfreq))"))
        emb: np.ndarray = self.model_.encode(Xa)
        return emb

    def score(self, X: Any, Y: Any) -> float:
        """Top-1 identification: how often a trial's embedding is closest to its own row of ``Y``.

        Each predicted embedding is compared (cosine similarity) with the distinct rows of ``Y``
        (a stimulus shown on several trials is one candidate); a trial counts as identified when
        every other candidate is strictly less similar than its own: ties are misses, as in ATM
        and everywhere in :mod:`neurodecode.metrics` (:func:`~neurodecode.metrics.topk_identification`).
        Chance is ``1 / n_distinct``. For ``k``-way scores with random distractors call
        :func:`~neurodecode.metrics.kway_topk` on :meth:`predict`.

        Parameters
        ----------
        X : ndarray of shape (n_trials, n_channels, n_times) or mne.Epochs or Trials
            Raw trials.
        Y : ndarray of shape (n_trials, dim)
            The true image embedding of each trial (e.g. of the test images, one row per trial).

        Returns
        -------
        score : float
            Fraction of trials identified, in [0, 1].
        """
        from ..metrics import topk_identification

        emb = self.predict(X)
        Ya = check_array(Y, "Y", ndim=2, dtype="float")
        if Ya.shape != emb.shape:
            raise ShapeMismatchError(format_error("Y", f"an array of shape {emb.shape} (one embedding per trial)", Ya,
                                                  "Pass the true embedding of each trial of X, in order"))
        n = len(emb)
        if n < 2:
            raise ValidationError(format_error("X", "at least 2 trials (identification among the rows of Y)",
                                               f"{n} trial"))
        candidates, labels = np.unique(Ya, axis=0, return_inverse=True)
        return float(topk_identification(emb, candidates, labels.reshape(-1), (1,))[1])

    # ---------------------------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save the fitted model and the estimator's settings to a folder.

        The folder is the model's ``save_pretrained`` layout (``config.json`` +
        ``model.safetensors``, no pickle), so ``ATM.from_pretrained(path)`` reads it too; the
        estimator's parameters and what it saw in ``fit`` go in the config's metadata.

        Parameters
        ----------
        path : path-like
            Target folder (created).

        Returns
        -------
        path : pathlib.Path
        """
        self._check_fitted("save")
        params = {k: v for k, v in self.get_params().items() if k != "verbose"}
        meta = {"estimator": "ATMDecoder", "params": params, "sfreq_known": self.sfreq_ is not None,
                "tmin": self.tmin_}
        out: Path = self.model_.save_pretrained(path, metadata=meta)
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: str = "cpu") -> ATMDecoder:
        """Load a decoder written by :meth:`save` (or any ATM ``save_pretrained`` folder).

        Parameters
        ----------
        path : path-like
            A local folder.
        device : str
            Where to put the weights.

        Returns
        -------
        decoder : ATMDecoder
            Fitted, ready to ``predict`` and ``score`` (``history_`` is empty).
        """
        from ..models.atm import ATM

        model = ATM.from_pretrained(path, local_files_only=True, device=device)
        meta = dict(getattr(model, "pretrained_metadata_", {}) or {})
        known = set(cls._get_param_names())
        params = {k: v for k, v in dict(meta.get("params", {})).items() if k in known}
        params["device"] = device
        est = cls(**params)
        est.model_ = model
        tmin = meta.get("tmin")
        est._set_fitted_from_model(brain_sfreq=bool(meta.get("sfreq_known", True)),
                                   tmin=None if tmin is None else float(tmin))
        est.history_ = []
        return est


def _config_fields(config: Any) -> Mapping[str, Any]:
    return config if isinstance(config, Mapping) else {}
