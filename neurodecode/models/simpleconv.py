"""SimpleConv: the brain module of Défossez et al. (2023), decoding speech from M/EEG by contrastive learning.

Défossez, Caucheteux, Rapin, Kabeli & King, "Decoding speech perception from non-invasive brain recordings"
(Nat. Mach. Intell. 5:1097-1107, 2023; brainmagick ``models/simpleconv.py``, ``conf/model/clip_conv.yaml``:
facts only, the code is CC BY-NC and none is taken). Built on the shared blocks of
:mod:`neurodecode.models._meeg_blocks`:

1. input scaling: per-channel robust scaling (median, inter-quartile range of the training segments, as
   sklearn's ``RobustScaler``) then clamp at +-20;
2. spatial attention: 270 virtual channels over Fourier-embedded (2048) 2-D sensor positions, spatial dropout
   of a random disc of radius 0.2 in training;
3. a 1x1 conv 270 -> 270 (``initial_linear``);
4. one 270 x 270 matrix per subject (``SubjectLayers``);
5. 10 residual dilated conv blocks of width 320 (kernel 3, dilation 1, 2, 4, 8, 16 twice; batch norm, GELU), a
   GLU (conv of context 1) after every second block;
6. ``complex_out``: 1x1 conv to 640, GELU, 1x1 transposed conv to the speech features (1024 for wav2vec2-large);
   the time axis is kept: the output is ``(batch, features, n_times)``, 3 s at 120 Hz.

Loss (brainmagick ``ClipLoss``): for brain outputs ``Z`` and speech features ``Y`` of a batch, scores
``s_ij = <Z_i, Y_j / ||Y_j||>`` over features and time, and the cross-entropy of each brain segment against
the batch's speech segments (brain -> speech only; the brain output is not normalised; no temperature).
The negatives are the other segments of the batch; under DDP they are gathered from every process
(:func:`neurodecode.models.losses.gather_rows`) unless ``gather_negatives=False`` (the reference's behaviour:
negatives from the same GPU only). ``loss="mse"`` is the paper's regression baseline.

Differences from the reference, named: the baseline correction (first 0.3 s) is done by the loader
(:func:`neurodecode.data.load_meg_masc`), not the model.
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
from ._meeg_blocks import ConvTransposeHead, DilatedConvStack, SpatialAttention, SubjectLayers, subject_indices
from ._scaling import store_channel_scaling
from .losses import gather_rows

__all__ = ["SimpleConvConfig", "SimpleConv", "clip_segment_scores", "clip_segment_loss", "robust_statistics"]


@dataclass
class SimpleConvConfig:
    """Architecture, input scaling and loss of :class:`SimpleConv` (defaults: the paper, MEG-MASC, wav2vec2).

    Parameters
    ----------
    n_channels, n_times : int
        Input shape per segment (MEG-MASC: 208 KIT sensors; 3 s at 120 Hz = 360).
    sfreq, tmin : float
        Rate (Hz) and the segment's start relative to the word onset (s).
    ch_names : list of str or None
        Channel names in the model's order; checked against those callers pass.
    positions : list of [x, y] (or None) or None
        2-D sensor positions in [0, 1], one per channel (the loader's ``provenance["sensor_positions"]``).
    subjects : list of str
        Namespaced subject ids, one subject layer each.
    clamp : float or None
        Clamp of the scaled input (20).
    spatial_channels, pos_dim, spatial_dropout : int, int, float
        270, 2048, 0.2.
    initial_linear : bool
        1x1 conv after the attention (True).
    hidden, depth, kernel_size, dilation_growth, dilation_period, glu, glu_context, batch_norm, conv_dropout
        320, 10, 3, 2, 5, 2, 1, True, 0.0.
    out_dim : int
        Speech feature width (1024: wav2vec2-large; 40: mel).
    loss : {"clip", "mse"}
        The contrastive loss (the paper's) or the regression baseline.
    gather_negatives : bool
        Gather the negatives from every process under DDP (True); False: this process's batch only.
    input_scaling : bool
        Whether the per-channel statistics are part of the checkpoint (set by ``set_input_scaling``).
    """

    n_channels: int = 208
    n_times: int = 360
    sfreq: float = 120.0
    tmin: float = -0.5
    ch_names: list[str] | None = None
    positions: list[list[float] | None] | None = None
    subjects: list[str] = field(default_factory=list)
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
    out_dim: int = 1024
    loss: str = "clip"
    gather_negatives: bool = True
    input_scaling: bool = False

    def __post_init__(self) -> None:
        for name in ("n_channels", "n_times", "spatial_channels", "hidden", "depth", "out_dim"):
            if int(getattr(self, name)) < 1:
                raise ValidationError(format_error(name, "a positive integer", getattr(self, name)))
        check_option(self.loss, "loss", ["clip", "mse"])
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
    def tiny(cls, **overrides: Any) -> SimpleConvConfig:
        """Same structure at toy width, distinct per component (channels 17, virtual 14, hidden 10, out 20)."""
        base: dict[str, Any] = dict(n_channels=17, n_times=36, sfreq=12.0, spatial_channels=14, pos_dim=32,
                                    hidden=10, depth=4, out_dim=20)  # out 20 = wav2vec2-xlsr-53-tiny
        base.update(overrides)
        if base.get("positions") is None:
            n = int(base["n_channels"])
            k = np.arange(n) + 0.5
            r, th = np.sqrt(k / n) / 2, k * math.pi * (3 - math.sqrt(5))
            base["positions"] = np.stack([0.5 + r * np.cos(th), 0.5 + r * np.sin(th)], 1).tolist()
        return cls(**base)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SimpleConvConfig:
        """Build from a (JSON) dict or a recipe's ``[decoder]`` table (its ``name`` is skipped)."""
        return dataclass_from_dict(cls, d, "decoder", ignore=("name",))


def robust_statistics(X: Any, *, max_trials: int | None = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel median and inter-quartile range over segments and time (``RobustScaler``'s statistics).

    Parameters
    ----------
    X : array-like of shape (n_segments, n_channels, n_times)
    max_trials : int or None
        At most this many segments (a seeded random subset).

    Returns
    -------
    median, iqr : ndarray of shape (n_channels,)
        ``iqr`` is 1 where a channel is constant.
    """
    X = np.asarray(X)
    rows = np.arange(len(X))
    if max_trials is not None and len(X) > max_trials:
        rows = np.sort(np.random.default_rng(seed).choice(len(X), max_trials, replace=False))
    flat = X[rows].astype(np.float64).transpose(1, 0, 2).reshape(X.shape[1], -1)
    q25, q50, q75 = np.percentile(flat, [25, 50, 75], axis=1)
    iqr = q75 - q25
    return q50, np.where(iqr > 0, iqr, 1.0)


def clip_segment_scores(brain: torch.Tensor, speech: torch.Tensor) -> torch.Tensor:
    """brainmagick's ClipLoss scores: ``s_ij = sum_{c,t} brain[i, c, t] speech[j, c, t] / ||speech[j]||``.

    Parameters
    ----------
    brain : Tensor of shape (B, D, T)
    speech : Tensor of shape (B', D, T)

    Returns
    -------
    scores : Tensor of shape (B, B')
    """
    if brain.shape[1:] != speech.shape[1:]:
        raise ShapeMismatchError(format_error("speech", f"segments shaped like the brain output {tuple(brain.shape[1:])}",
                                              tuple(speech.shape[1:])))
    inv = 1.0 / (1e-8 + speech.flatten(1).norm(dim=1))
    return torch.einsum("bct,oct,o->bo", brain, speech, inv)


def clip_segment_loss(brain: torch.Tensor, speech: torch.Tensor, *, gather: bool = True) -> torch.Tensor:
    """Cross-entropy of each brain segment against every speech segment of the (global) batch."""
    if gather:
        (brain, speech), _ = gather_rows(brain, speech)
    with torch.autocast(device_type=brain.device.type, enabled=False):
        scores = clip_segment_scores(brain.float(), speech.float())
        return F.cross_entropy(scores, torch.arange(len(scores), device=scores.device))


class SimpleConv(PretrainedMixin, nn.Module):
    """Speech brain module (Défossez et al. 2023): M/EEG segments -> speech-feature time series.

    Parameters
    ----------
    config : SimpleConvConfig
        :meth:`SimpleConvConfig.tiny` for the toy tier.

    Examples
    --------
    >>> import numpy as np
    >>> model = SimpleConv(SimpleConvConfig.tiny(n_channels=7, n_times=9, subjects=["a", "b"]))
    >>> model.encode(np.zeros((3, 7, 9), dtype="float32"), subject="a").shape
    (3, 20, 9)
    """

    config_class = SimpleConvConfig
    positions: torch.Tensor
    input_mean: torch.Tensor
    input_std: torch.Tensor

    def __init__(self, config: SimpleConvConfig | None = None) -> None:
        super().__init__()
        self.config = c = config if config is not None else SimpleConvConfig()
        if c.positions is None:
            raise ValidationError(format_error(
                "positions", "2-D sensor positions in [0, 1], one per channel", None,
                "Pass positions=trials.provenance['sensor_positions'] (load_meg_masc) or "
                "neurodecode.models._meeg_blocks.sensor_positions(info).tolist()"))
        pos = np.array([[np.nan, np.nan] if p is None else p for p in c.positions], dtype=np.float32)
        self.register_buffer("positions", torch.from_numpy(pos))
        self.spatial = SpatialAttention(c.spatial_channels, c.pos_dim, c.spatial_dropout)
        self.initial = nn.Conv1d(c.spatial_channels, c.spatial_channels, 1) if c.initial_linear else nn.Identity()
        self.subject_layers = SubjectLayers(c.spatial_channels, c.spatial_channels, max(1, len(c.subjects)))
        self.convs = DilatedConvStack(c.spatial_channels, c.hidden, c.depth, c.kernel_size, c.dilation_growth,
                                      c.dilation_period, c.batch_norm, c.conv_dropout, c.glu, c.glu_context)
        self.head = ConvTransposeHead(c.hidden, c.out_dim)
        n_rows = len(c.subjects) + 1
        self.register_buffer("input_mean", torch.zeros(n_rows, c.n_channels), persistent=c.input_scaling)
        self.register_buffer("input_std", torch.ones(n_rows, c.n_channels), persistent=c.input_scaling)

    @torch.no_grad()
    def set_input_scaling(self, center: Any, scale: Any, subject: str | None = None) -> SimpleConv:
        """Set the per-channel robust statistics (:func:`robust_statistics`): ``(x - center) / scale``.

        ``subject`` None sets every row (the pooled row is used for unknown subjects).
        """
        c = self.config
        rows: int | slice = slice(None) if subject is None else int(self.subject_index(subject, 1)[0]) + 1
        store_channel_scaling(self, center, scale, rows, c.n_channels,
                              hint="Use robust_statistics(X_train) in the model's channel order")
        if not c.input_scaling:
            self.config = replace(c, input_scaling=True)
        return self

    def _subject_mix(self, h: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Subject layer per segment; index -1 (unknown subject) uses the mean of the subjects' matrices."""
        w = self.subject_layers.weights
        known = idx >= 0
        if bool(known.all()):
            return self.subject_layers(h, idx)
        mats = torch.where(known[:, None, None], w[idx.clamp(min=0)], w.mean(0, keepdim=True))
        return torch.einsum("bct,bcd->bdt", h, mats.to(h.dtype))

    def forward(self, x: torch.Tensor, subject: torch.Tensor | None = None) -> torch.Tensor:
        """Map raw segments (B, n_channels, T) to speech features (B, out_dim, T).

        ``subject``: LongTensor (B,) of indices into ``config.subjects``, -1 (or None) for an unknown subject.
        """
        c = self.config
        idx = subject.long() if subject is not None else torch.full((len(x),), -1, dtype=torch.long, device=x.device)
        rows = idx + 1
        h = (x - self.input_mean[rows][:, :, None]) / self.input_std[rows][:, :, None]
        if c.clamp is not None:
            h = h.clamp(-float(c.clamp), float(c.clamp))
        h = self.spatial(h, self.positions)
        h = self.initial(h)
        h = self._subject_mix(h, idx)
        return self.head(self.convs(h))

    def loss(self, out: torch.Tensor, speech: torch.Tensor) -> dict[str, torch.Tensor]:
        """``"loss"``: the CLIP segment loss (or MSE); ``"loss_clip"`` / ``"loss_mse"`` detached."""
        if self.config.loss == "mse":
            mse = F.mse_loss(out.float(), speech.float())
            return {"loss": mse, "loss_mse": mse.detach()}
        clip = clip_segment_loss(out, speech, gather=self.config.gather_negatives)
        return {"loss": clip, "loss_clip": clip.detach()}

    def _subject_tensor(self, subject: Any, n: int, device: Any) -> torch.Tensor | None:
        if subject is None or isinstance(subject, torch.Tensor):
            return subject
        return torch.from_numpy(self.subject_index(subject, n)).to(device)

    def training_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        """One step for :class:`neurodecode.train.Trainer`: ``batch["x"]`` (B, C, T) raw segments,
        ``batch["speech"]`` (B, out_dim, T) speech features, optional ``batch["subject"]``."""
        x = batch["x"]
        if x.shape[0] < 2 and self.config.loss == "clip":
            raise ValidationError(format_error("batch", "at least 2 segments (contrastive loss)", f"{x.shape[0]}",
                                               "Use a larger batch_size or drop the last incomplete batch"))
        subject = self._subject_tensor(batch.get("subject"), len(x), x.device)
        return self.loss(self(x.float(), subject), batch["speech"])

    # ---- NumPy API

    def subject_index(self, subject: str | Sequence[str] | np.ndarray | None, n: int) -> np.ndarray:
        """Index of each of ``n`` segments' subject in ``config.subjects`` (-1: None, an unknown subject)."""
        return subject_indices(self.config.subjects, subject, n, unit="segment")

    def check_input(self, X: Any, *, ch_names: Sequence[str] | None = None, sfreq: float | None = None) -> np.ndarray:
        """Validate segments against the model (channels and order, rate, length); float32 out."""
        c = self.config
        X = check_array(X, "X", ndim=3, dtype="float")
        if sfreq is not None and not math.isclose(float(sfreq), c.sfreq, rel_tol=1e-6):
            raise MetadataMismatchError(format_error("sfreq", f"{c.sfreq:g} Hz (the model's rate)",
                                                     f"{float(sfreq):g} Hz", f"Resample to {c.sfreq:g} Hz first"))
        if ch_names is not None and c.ch_names is not None and [str(n) for n in ch_names] != c.ch_names:
            raise MetadataMismatchError(format_error("ch_names", f"the model's {len(c.ch_names)} channels in order",
                                                     f"{len(ch_names)} other channels",
                                                     "Pick and order them as model.config.ch_names"))
        if X.shape[1] != c.n_channels:
            raise ShapeMismatchError(format_error("X", f"{c.n_channels} channels on axis 1", X,
                                                  "Axes are (segments, channels, times)"))
        if X.shape[2] != c.n_times:
            raise ShapeMismatchError(format_error("X", f"{c.n_times} samples on axis 2 ({c.n_times / c.sfreq:g} s "
                                                  f"at {c.sfreq:g} Hz)", X, "Cut segments of the model's length"))
        return np.ascontiguousarray(X, dtype=np.float32)

    @torch.inference_mode()
    def encode(self, X: Any, subject: str | Sequence[str] | None = None, *, ch_names: Sequence[str] | None = None,
               sfreq: float | None = None, batch_size: int = 64) -> np.ndarray:
        """Predicted speech features of raw segments (eval mode).

        Returns
        -------
        Z : ndarray of shape (n_segments, out_dim, n_times)
        """
        X = self.check_input(X, ch_names=ch_names, sfreq=sfreq)
        idx = self.subject_index(subject, len(X))
        was = self.training
        self.eval()
        device = self.positions.device
        parts = [self(torch.from_numpy(X[s:s + batch_size]).to(device),
                      torch.from_numpy(idx[s:s + batch_size]).to(device)).float().cpu().numpy()
                 for s in range(0, len(X), batch_size)]
        self.train(was)
        return np.concatenate(parts)

    def predict_latents(self, X: Any, subject: str | Sequence[str] | None = None, **kwargs: Any) -> dict[str, np.ndarray]:
        """``{"speech_features": encode(X, subject)}``."""
        return {"speech_features": self.encode(X, subject, **kwargs)}
