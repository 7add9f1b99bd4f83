"""MEG brain module for image decoding (Benchetrit, Banville & King, ICLR 2024): MEG window -> image embedding.

One self-contained decoder file a reader can hold against the paper ("Brain decoding: toward real-time
reconstruction of visual perception", arXiv 2310.19812). No official code exists; the brain module is
Défossez et al.'s (2023), whose facts come from brainmagick's defaults (see :mod:`._meeg_blocks`).

1. **Input preparation** (inside the model, so a saved model takes RAW windows, e.g. MEG in tesla):
   baseline correction (the mean of the first ``baseline_samples`` samples, the pre-stimulus part, is
   subtracted per channel), per-channel robust scaling ``(x - median) / IQR`` with statistics of the
   training windows (:meth:`MEGBrainModule.set_input_scaling`, one row per subject plus a pooled row
   for unknown subjects), then clamping at ``+-clamp`` (20; brainmagick's RobustScaler + clip).
2. **Spatial attention** to ``spatial_channels`` (270) virtual channels over the Fourier-embedded 2-D
   sensor positions (``pos_dim`` 2048), with spatial dropout of a random disc (radius 0.2) in training.
3. ``initial_linear``: a 1x1 conv 270 -> 270.
4. **Subject layer**: one 270 x 270 matrix per training subject (one model for all subjects); a
   trial of an unknown subject uses the mean of the subjects' matrices.
5. **Dilated residual conv stack**: ``depth`` 10 blocks of width 320, kernel 3, dilations 1..16 twice,
   batch norm, GELU, a GLU after every second block.
6. 1x1 conv to ``out_channels`` (2048) and GELU, then **temporal aggregation** (``"affine"``: a
   learned ``Linear(n_times, 1)``, the paper's choice; ``"mean"``; ``"attention"``).
7. **Two heads** (LayerNorm, GELU, Linear to the latent width): ``clip`` (retrieval) and ``mse``
   (regression, the embedding handed to a generator).
8. **Loss** ``lambda x CLIP + (1 - lambda) x MSE`` (``clip_weight`` = lambda): CLIP is the InfoNCE of
   cosine similarities between the clip head's outputs and the batch's target embeddings scaled by a
   learnable temperature (``exp(logit_scale)``, initialised at 1 / 0.07 and clamped at 100), MEG ->
   image direction (``clip_symmetric=True`` averages both directions); MSE is the mean squared error
   of the mse head against the (raw) targets.

Facts not verified against the paper (marked in ``docs/decoders/meg_realtime.md``): the conv output
width 2048, the LayerNorm-GELU-Linear heads, the one-directional InfoNCE, lambda's default 0.75.

Time-resolved decoding: a model of a short window (e.g. 250 ms, ``n_times`` 30 at 120 Hz,
``baseline_samples`` 0 because the window may start after onset: baseline-correct the epochs first).
Given longer trials, :meth:`training_step` crops one random window of ``n_times`` samples per batch
(the "one model over shifting windows" option); :meth:`encode` takes windows of exactly ``n_times``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._core.errors import MetadataMismatchError, ShapeMismatchError, ValidationError
from .._core.validation import check_array, check_option, dataclass_from_dict, format_error
from ..io.checkpoints import PretrainedMixin
from ._meeg_blocks import (
    TEMPORAL_AGGREGATIONS,
    DilatedConvStack,
    SpatialAttention,
    SubjectLayers,
    TemporalAggregation,
    sensor_positions,
    subject_indices,
)
from ._scaling import store_channel_scaling

__all__ = ["MEGBrainModuleConfig", "MEGBrainModule", "robust_channel_statistics"]


@dataclass
class MEGBrainModuleConfig:
    """Architecture, input preparation and loss of :class:`MEGBrainModule` (defaults: THINGS-MEG, paper size).

    Parameters
    ----------
    n_channels, n_times : int
        Input shape per window (THINGS-MEG: 271 sensors; -0.5 to 1.0 s at 120 Hz = 180 samples).
    sfreq : float
        Sampling rate the model was trained at (Hz).
    tmin : float
        Time of the first sample relative to image onset (s), for documentation and live decoding.
    ch_names : list of str or None
        Channel names in the model's order; checked against those callers pass.
    layout : str or None
        MNE layout the positions come from (``"CTF-275"``) when ``positions`` is not given.
    positions : list of [x, y] (or None per channel) or None
        2-D sensor positions in [0, 1] (:func:`~neurodecode.models._meeg_blocks.sensor_positions`);
        None entries are channels without a position (ignored by the attention).
    subjects : list of str
        Namespaced subject ids, one subject layer each (order fixes the index).
    baseline_samples : int
        Samples at the start of each window averaged and subtracted per channel (60: -0.5 to 0 s at
        120 Hz); 0: none.
    clamp : float or None
        Clamp of the scaled input (20, brainmagick's); None: no clamp.
    spatial_channels, pos_dim, spatial_dropout : int, int, float
        Spatial attention (270, 2048, disc radius 0.2).
    initial_linear : bool
        1x1 conv after the attention (True).
    hidden, depth, kernel_size, dilation_growth, dilation_period, glu, glu_context, batch_norm, conv_dropout
        The conv stack (320, 10, 3, 2, 5, 2, 1, True, 0.0).
    out_channels : int
        Width of the 1x1 conv after the stack (2048).
    aggregation : {"affine", "mean", "attention"}
        Temporal aggregation ("affine").
    latent_dim : int
        Target embedding width (768 for CLIP ViT-L/14 pooled, 1024 ViT-H-14, 1536 DINOv2-giant CLS).
    clip_weight : float
        lambda of ``lambda x CLIP + (1 - lambda) x MSE`` (0.75); chosen on a validation split by the recipe.
    clip_symmetric : bool
        Average the MEG->image and image->MEG cross-entropies (False: MEG->image only).
    logit_scale_init, logit_scale_max : float
        Initial value and clamp of the learnable log temperature multiplier (ln(1/0.07), ln 100).
    latent_key : str
        Key of :meth:`MEGBrainModule.predict_latents` (a :data:`~neurodecode.models.LATENT_KEYS` name).
    input_scaling : bool
        Whether the per-channel statistics are part of the checkpoint (set by ``set_input_scaling``).
    """

    n_channels: int = 271
    n_times: int = 180
    sfreq: float = 120.0
    tmin: float = -0.5
    ch_names: list[str] | None = None
    layout: str | None = "CTF-275"
    positions: list[list[float] | None] | None = None
    subjects: list[str] = field(default_factory=list)
    baseline_samples: int = 60
    clamp: float | None = 20.0
    spatial_channels: int = 270
    pos_dim: int = 2048
    spatial_dropout: float = 0.2
    initial_linear: bool = True
    hidden: int = 320
    depth: int = 10
    kernel_size: int = 3
    dilation_growth: int = 2
    dilation_period: int | None = 5
    glu: int = 2
    glu_context: int = 1
    batch_norm: bool = True
    conv_dropout: float = 0.0
    out_channels: int = 2048
    aggregation: str = "affine"
    latent_dim: int = 768
    clip_weight: float = 0.75
    clip_symmetric: bool = False
    logit_scale_init: float = math.log(1 / 0.07)
    logit_scale_max: float = math.log(100.0)
    latent_key: str = "clip_image_embeds"
    input_scaling: bool = False

    def __post_init__(self) -> None:
        for name in ("n_channels", "n_times", "spatial_channels", "hidden", "depth", "out_channels", "latent_dim"):
            if int(getattr(self, name)) < 1:
                raise ValidationError(format_error(name, "a positive integer", getattr(self, name)))
        check_option(self.aggregation, "aggregation", list(TEMPORAL_AGGREGATIONS))
        if not 0.0 <= float(self.clip_weight) <= 1.0:
            raise ValidationError(format_error("clip_weight", "lambda in [0, 1] (1: CLIP loss only, 0: MSE only)",
                                               self.clip_weight))
        if not 0 <= int(self.baseline_samples) < int(self.n_times):
            raise ValidationError(format_error("baseline_samples", f"0 to n_times - 1 = {self.n_times - 1}",
                                               self.baseline_samples,
                                               "Count the pre-stimulus samples of the window (0: no baseline)"))
        if self.ch_names is not None:
            self.ch_names = [str(c) for c in self.ch_names]
            if len(self.ch_names) != self.n_channels:
                raise ValidationError(format_error("ch_names", f"{self.n_channels} names (n_channels)",
                                                   f"{len(self.ch_names)} names"))
        if self.positions is not None:
            self.positions = [None if p is None or not np.all(np.isfinite(p)) else [float(p[0]), float(p[1])]
                              for p in self.positions]
            if len(self.positions) != self.n_channels:
                raise ValidationError(format_error("positions", f"{self.n_channels} entries (n_channels)",
                                                   f"{len(self.positions)} entries"))
        self.subjects = [str(s) for s in self.subjects]

    @classmethod
    def tiny(cls, **overrides: Any) -> MEGBrainModuleConfig:
        """Same structure at toy width, distinct per component (random init, offline).

        Without ``positions``/``ch_names``, the channels sit on a deterministic spiral in the unit square.
        """
        base: dict[str, Any] = dict(n_channels=17, n_times=40, sfreq=40.0, tmin=-0.5, baseline_samples=20,
                                    spatial_channels=14, pos_dim=32, hidden=12, depth=4, out_channels=20,
                                    latent_dim=24, layout=None)  # latent 24 = clip-vit-h-14-tiny
        base.update(overrides)
        if base.get("positions") is None and base.get("ch_names") is None:
            base["positions"] = spiral_positions(int(base["n_channels"])).tolist()
        return cls(**base)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MEGBrainModuleConfig:
        """Build from a (JSON) dict or a recipe's ``[decoder]`` table (its ``name`` and nested tables are skipped)."""
        return dataclass_from_dict(cls, d, "decoder", ignore=("name", "selection", "time", "ridge", "retrieval"))


def spiral_positions(n: int) -> np.ndarray:
    """``n`` distinct deterministic positions in [0, 1]^2 (a sunflower spiral), shape (n, 2)."""
    k = np.arange(n) + 0.5
    r = np.sqrt(k / n) / 2
    theta = k * math.pi * (3 - math.sqrt(5))
    return np.stack([0.5 + r * np.cos(theta), 0.5 + r * np.sin(theta)], axis=1)


def robust_channel_statistics(X: Any, baseline_samples: int = 0, *, max_trials: int | None = 2000,
                              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel median and inter-quartile range of (baseline-corrected) windows.

    Parameters
    ----------
    X : array-like of shape (n_trials, n_channels, n_times)
        Raw training windows.
    baseline_samples : int
        As :attr:`MEGBrainModuleConfig.baseline_samples` (the model's own correction is applied first).
    max_trials : int or None
        Use at most this many trials (a seeded random subset; brainmagick fits its scaler on a sample).
    seed : int

    Returns
    -------
    median, iqr : ndarray of shape (n_channels,)
        ``iqr`` (75th minus 25th percentile over trials and time) is 1 where a channel is constant.
    """
    X = np.asarray(X)
    rows = np.arange(len(X))
    if max_trials is not None and len(X) > max_trials:
        rows = np.sort(np.random.default_rng(seed).choice(len(X), max_trials, replace=False))
    x = X[rows].astype(np.float64)
    if baseline_samples:
        x = x - x[:, :, :baseline_samples].mean(axis=2, keepdims=True)
    flat = x.transpose(1, 0, 2).reshape(x.shape[1], -1)
    q25, q50, q75 = np.percentile(flat, [25, 50, 75], axis=1)
    iqr = q75 - q25
    return q50, np.where(iqr > 0, iqr, 1.0)


class _Head(nn.Module):
    """LayerNorm -> GELU -> Linear."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_in)
        self.linear = nn.Linear(d_in, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(F.gelu(self.norm(x)))


class MEGBrainModule(PretrainedMixin, nn.Module):
    """Cross-subject MEG brain module with CLIP and MSE heads (Benchetrit et al., 2024).

    Parameters
    ----------
    config : MEGBrainModuleConfig
        :meth:`MEGBrainModuleConfig.tiny` for the toy tier.

    Attributes
    ----------
    positions : Tensor of shape (n_channels, 2)
        Sensor positions in [0, 1] (NaN: no position).
    input_mean, input_std : Tensor of shape (n_subjects + 1, n_channels)
        Per-channel median and IQR of the training windows (row 0 pooled, row ``i + 1`` subject ``i``);
        identity until :meth:`set_input_scaling`.

    Examples
    --------
    >>> import numpy as np
    >>> model = MEGBrainModule(MEGBrainModuleConfig.tiny(n_channels=7, n_times=9, baseline_samples=3,
    ...                                                  subjects=["a", "b"]))
    >>> out = model.encode(np.zeros((3, 7, 9), dtype="float32"), subject="a")
    >>> out.shape
    (3, 24)
    """

    config_class = MEGBrainModuleConfig
    positions: torch.Tensor
    input_mean: torch.Tensor
    input_std: torch.Tensor

    def __init__(self, config: MEGBrainModuleConfig | None = None) -> None:
        super().__init__()
        self.config = c = config if config is not None else MEGBrainModuleConfig()
        if c.positions is not None:
            pos = np.array([[np.nan, np.nan] if p is None else p for p in c.positions], dtype=np.float32)
        elif c.ch_names is not None and c.layout:
            pos = sensor_positions(ch_names=c.ch_names, layout=c.layout)
        else:
            raise ValidationError(format_error(
                "positions", "sensor positions, or ch_names with a layout", "neither",
                "Pass positions=sensor_positions(info).tolist(), or ch_names and layout='CTF-275'"))
        self.register_buffer("positions", torch.from_numpy(pos))
        self.spatial = SpatialAttention(c.spatial_channels, c.pos_dim, c.spatial_dropout)
        self.initial = nn.Conv1d(c.spatial_channels, c.spatial_channels, 1) if c.initial_linear else nn.Identity()
        self.subject_layers = SubjectLayers(c.spatial_channels, c.spatial_channels, max(1, len(c.subjects)))
        self.convs = DilatedConvStack(c.spatial_channels, c.hidden, c.depth, c.kernel_size, c.dilation_growth,
                                      c.dilation_period, c.batch_norm, c.conv_dropout, c.glu, c.glu_context)
        self.final = nn.Conv1d(c.hidden, c.out_channels, 1)
        self.aggregate = TemporalAggregation(c.aggregation, n_times=c.n_times, channels=c.out_channels)
        self.clip_head = _Head(c.out_channels, c.latent_dim)
        self.mse_head = _Head(c.out_channels, c.latent_dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(c.logit_scale_init)))
        n_rows = len(c.subjects) + 1
        self.register_buffer("input_mean", torch.zeros(n_rows, c.n_channels), persistent=c.input_scaling)
        self.register_buffer("input_std", torch.ones(n_rows, c.n_channels), persistent=c.input_scaling)

    # ---- input scaling

    @torch.no_grad()
    def set_input_scaling(self, center: Any, scale: Any, subject: str | None = None) -> MEGBrainModule:
        """Set the per-channel robust statistics applied after the baseline: ``(x - center) / scale``.

        Parameters
        ----------
        center, scale : array-like of shape (n_channels,)
            Median and inter-quartile range per channel of the baseline-corrected training windows
            (:func:`robust_channel_statistics`); ``scale`` must be positive.
        subject : str or None
            The subject they belong to; None sets every row (set it first, then subjects one by one).

        Returns
        -------
        self : MEGBrainModule
        """
        c = self.config
        rows: int | slice = slice(None) if subject is None else int(self.subject_index(subject, 1)[0]) + 1
        store_channel_scaling(self, center, scale, rows, c.n_channels,
                              hint="Use robust_channel_statistics(X_train, baseline_samples) in the model's "
                                   "channel order")
        if not c.input_scaling:
            self.config = replace(c, input_scaling=True)
        return self

    def prepare(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Baseline, robust scaling (row ``idx + 1``; -1 = pooled) and clamp of raw windows (B, C, T)."""
        c = self.config
        if c.baseline_samples:
            x = x - x[:, :, :c.baseline_samples].mean(dim=2, keepdim=True)
        rows = idx + 1
        x = (x - self.input_mean[rows][:, :, None]) / self.input_std[rows][:, :, None]
        if c.clamp is not None:
            x = x.clamp(-float(c.clamp), float(c.clamp))
        return x

    # ---- forward

    def _subject_mix(self, h: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Subject layer per trial; index -1 (unknown subject) uses the mean of the subjects' matrices."""
        w = self.subject_layers.weights
        known = idx >= 0
        if bool(known.all()):
            return self.subject_layers(h, idx)
        mats = torch.where(known[:, None, None], w[idx.clamp(min=0)], w.mean(0, keepdim=True))
        return torch.einsum("bct,bcd->bdt", h, mats.to(h.dtype))

    def forward(self, x: torch.Tensor, subject: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Embed a batch of raw windows.

        Parameters
        ----------
        x : Tensor of shape (batch, n_channels, n_times)
        subject : LongTensor of shape (batch,) or None
            Index into ``config.subjects`` per trial, -1 for an unknown subject (None: all unknown).

        Returns
        -------
        out : dict
            ``"clip"`` and ``"mse"``: Tensors of shape (batch, latent_dim).
        """
        idx = subject.long() if subject is not None else torch.full((len(x),), -1, dtype=torch.long, device=x.device)
        h = self.prepare(x, idx)
        h = self.spatial(h, self.positions)
        h = self.initial(h)
        h = self._subject_mix(h, idx)
        h = self.convs(h)
        z = self.aggregate(F.gelu(self.final(h)))
        return {"clip": self.clip_head(z), "mse": self.mse_head(z)}

    # ---- loss

    def temperature_multiplier(self) -> torch.Tensor:
        """``exp(logit_scale)``, clamped at ``exp(logit_scale_max)``."""
        return self.logit_scale.clamp(max=self.config.logit_scale_max).exp()

    def loss(self, out: dict[str, torch.Tensor], target: torch.Tensor) -> dict[str, torch.Tensor]:
        """``lambda x CLIP + (1 - lambda) x MSE`` (see the module docstring).

        Parameters
        ----------
        out : dict
            :meth:`forward`'s ``"clip"`` and ``"mse"``, each (batch, latent_dim).
        target : Tensor of shape (batch, latent_dim)
            Image embeddings (row i belongs to trial i).

        Returns
        -------
        losses : dict
            ``"loss"``, ``"loss_clip"``, ``"loss_mse"``, ``"temperature"`` (the multiplier).
        """
        c = self.config
        t = target.float()
        logits = self.temperature_multiplier() * F.normalize(out["clip"].float(), dim=-1) @ F.normalize(t, dim=-1).T
        labels = torch.arange(len(logits), device=logits.device)
        clip = F.cross_entropy(logits, labels)
        if c.clip_symmetric:
            clip = 0.5 * (clip + F.cross_entropy(logits.T, labels))
        mse = F.mse_loss(out["mse"].float(), t)
        lam = float(c.clip_weight)
        return {"loss": lam * clip + (1 - lam) * mse, "loss_clip": clip.detach(), "loss_mse": mse.detach(),
                "temperature": self.temperature_multiplier().detach()}

    def _subject_tensor(self, subject: Any, n: int, device: Any) -> torch.Tensor | None:
        if subject is None or isinstance(subject, torch.Tensor):
            return subject
        return torch.from_numpy(self.subject_index(subject, n)).to(device)

    def training_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        """One step for :class:`neurodecode.train.Trainer`.

        Parameters
        ----------
        batch : dict
            ``"x"``: (batch, n_channels, T) raw windows, ``T >= n_times`` (longer windows are cropped at
            one random offset per batch: training over shifting windows); ``"image_embeds"``:
            (batch, latent_dim); optional ``"subject"``: (batch,) indices (-1 unknown) or id(s).
        step : int
            Global step (unused).
        """
        x = batch["x"]
        if x.shape[0] < 2 and self.config.clip_weight > 0:
            raise ValidationError(format_error("batch", "at least 2 trials (contrastive loss)", f"{x.shape[0]} trial(s)",
                                               "Use a larger batch_size or drop the last incomplete batch"))
        n_t = self.config.n_times
        if x.shape[-1] > n_t:
            off = int(torch.randint(0, x.shape[-1] - n_t + 1, ()).item())
            x = x[..., off:off + n_t]
        subject = self._subject_tensor(batch.get("subject"), len(x), x.device)
        return self.loss(self(x.float(), subject), batch["image_embeds"])

    def validation_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        """The loss on a validation batch (windows of exactly ``n_times``, or the first ``n_times`` samples)."""
        x = batch["x"][..., :self.config.n_times]
        subject = self._subject_tensor(batch.get("subject"), len(x), x.device)
        return self.loss(self(x.float(), subject), batch["image_embeds"])

    # ---- NumPy API

    def subject_index(self, subject: str | Sequence[str] | np.ndarray | None, n: int) -> np.ndarray:
        """Index of each of ``n`` trials' subject in ``config.subjects`` (-1: None, an unknown subject)."""
        return subject_indices(self.config.subjects, subject, n, unit="trial")

    def check_input(self, X: Any, *, ch_names: Sequence[str] | None = None, sfreq: float | None = None) -> np.ndarray:
        """Validate windows against the model (channels and their order, rate, length); float32 out."""
        c = self.config
        X = check_array(X, "X", ndim=3, dtype="float")
        if sfreq is not None and not math.isclose(float(sfreq), c.sfreq, rel_tol=1e-6):
            raise MetadataMismatchError(format_error("sfreq", f"{c.sfreq:g} Hz (the model's rate)", f"{float(sfreq):g} Hz",
                                                     f"Resample first, e.g. epochs.resample({c.sfreq:g})"))
        if ch_names is not None and c.ch_names is not None and [str(n) for n in ch_names] != c.ch_names:
            got = [str(n) for n in ch_names]
            missing = [n for n in c.ch_names if n not in got][:5]
            raise MetadataMismatchError(format_error(
                "ch_names", f"the model's {len(c.ch_names)} channels in its order",
                f"{len(got)} channels (missing e.g. {missing or 'none'})",
                "Pick and order them, e.g. epochs.pick(model.config.ch_names)"))
        if X.shape[1] != c.n_channels:
            raise ShapeMismatchError(format_error("X", f"{c.n_channels} channels on axis 1", X,
                                                  "Axes are (trials, channels, times)"))
        if X.shape[2] != c.n_times:
            raise ShapeMismatchError(format_error(
                "X", f"{c.n_times} samples on axis 2 ({c.n_times / c.sfreq:g} s at {c.sfreq:g} Hz from "
                f"{c.tmin:g} s)", X, "Crop the epochs to the model's window and resample to its rate"))
        return np.ascontiguousarray(X, dtype=np.float32)

    @torch.inference_mode()
    def encode(self, X: Any, subject: str | Sequence[str] | None = None, *, head: str = "clip",
               ch_names: Sequence[str] | None = None, sfreq: float | None = None,
               batch_size: int = 256) -> np.ndarray:
        """Embed raw windows (eval mode).

        Parameters
        ----------
        X : array-like of shape (n_windows, n_channels, n_times)
        subject : str, sequence of str or None
            Subject of all windows or of each; None: an unknown subject.
        head : {"clip", "mse", "both"}
            Which head's output (retrieval: ``"clip"``; generation: ``"mse"``).
        ch_names, sfreq : optional
            Checked against the model.
        batch_size : int

        Returns
        -------
        emb : ndarray of shape (n_windows, latent_dim)
            (or a dict of both heads' outputs with ``head="both"``).
        """
        check_option(head, "head", ["clip", "mse", "both"])
        X = self.check_input(X, ch_names=ch_names, sfreq=sfreq)
        idx = self.subject_index(subject, len(X))
        was = self.training
        self.eval()
        device = self.positions.device
        parts: dict[str, list[np.ndarray]] = {"clip": [], "mse": []}
        for s in range(0, len(X), batch_size):
            out = self(torch.from_numpy(X[s:s + batch_size]).to(device), torch.from_numpy(idx[s:s + batch_size]).to(device))
            for k in parts:
                parts[k].append(out[k].float().cpu().numpy())
        self.train(was)
        if head == "both":
            return {k: np.concatenate(v) for k, v in parts.items()}  # type: ignore[return-value]
        return np.concatenate(parts[head])

    def predict_latents(self, X: Any, subject: str | Sequence[str] | None = None, **kwargs: Any) -> dict[str, np.ndarray]:
        """``{config.latent_key: encode(X, subject, head="mse")}``: the regressed embedding a generator takes."""
        return {self.config.latent_key: self.encode(X, subject, head="mse", **kwargs)}
