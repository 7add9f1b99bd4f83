"""Building blocks of the M/EEG brain module of Défossez et al. (2023), shared by the decoders built on it.

Défossez, Caucheteux, Rapin, Kabeli & King (Nat. Mach. Intell. 2023) decode speech from M/EEG with a
convolutional "brain module" (brainmagick's ``SimpleConv``); Benchetrit, Banville & King (ICLR 2024)
reuse it for images. The pieces, written from the paper and the facts of brainmagick's defaults
(``conf/model/clip_conv.yaml``; no code is taken from it, its licence is CC BY-NC):

- :func:`sensor_positions`: the 2-D sensor layout of a recording (``mne.find_layout`` of its
  ``info``, or a named layout such as ``"CTF-275"``), each axis min-max scaled to [0, 1];
  channels the layout lacks get NaN (masked by the spatial attention).
- :func:`fourier_embedding` / :class:`FourierEmbedding`: ``[cos(2 pi (k x' + l y') / w),
  sin(...)]`` for all integer frequency pairs ``0 <= k, l < n`` with ``x' = x + margin``, ``w = 1 +
  2 margin`` (the positions live in [0, 1]; the margin keeps the periodic basis from wrapping
  the edges onto each other). ``dim = 2 n^2`` (2048: n = 32).
- :class:`SpatialAttention`: ``n_out`` (270) virtual channels, each a softmax-weighted average of
  the input channels; the weights are ``softmax_c(<heads_o, fourier(pos_c)>)``, with channels
  without a position and, in training, channels inside a random disc of radius 0.2 (one disc
  per batch, centre uniform in the unit square) masked out ("spatial dropout").
- :class:`SubjectLayers`: one ``(C, D)`` matrix per subject, ``einsum("bct,bcd->bdt")``.
- :class:`DilatedConvStack`: residual dilated 1-D conv blocks (conv, batch norm, GELU; skip
  connection when the width does not change), dilation doubling and restarting every
  ``dilation_period`` blocks, and a GLU (``Conv1d(ch, 2 ch, 1 + 2 glu_context)`` then GLU over
  channels) after every ``glu``-th block (brainmagick's ``clip_conv``: depth 10, width 320,
  kernel 3, period 5, glu 2, glu_context 1).
- :class:`TemporalAggregation`: ``(B, D, T) -> (B, D)`` by a learned affine map over time
  (Benchetrit's choice), global average pooling, or learned attention over time.
- :class:`ConvTransposeHead`: brainmagick's ``complex_out``: 1x1 conv to ``2 x width``, GELU,
  1x1 transposed conv to the output features (keeps time).

Shapes: ``B`` batch, ``C`` input channels, ``T`` time samples, ``O`` virtual channels, ``D``
feature width. Everything is a plain :class:`torch.nn.Module` on tensors; the decoders own the
NumPy API.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._core.errors import ShapeMismatchError, ValidationError
from .._core.validation import check_option, format_error

__all__ = ["sensor_positions", "subject_indices", "fourier_embedding", "FourierEmbedding", "SpatialAttention", "SubjectLayers",
           "conv_dilations", "DilatedConvStack", "TemporalAggregation", "ConvTransposeHead", "TEMPORAL_AGGREGATIONS"]

#: Temporal aggregation modes of :class:`TemporalAggregation`.
TEMPORAL_AGGREGATIONS = ("affine", "mean", "attention")


# --------------------------------------------------------------------------- sensor positions


def _layout_name(name: str) -> str:
    """CTF channel names carry the compensation / system suffix (``MLC11-1609``); layouts do not."""
    return name.rsplit("-", 1)[0] if "-" in name else name


def sensor_positions(info: Any = None, *, ch_names: Sequence[str] | None = None,
                     layout: Any = None) -> np.ndarray:
    """2-D sensor positions in [0, 1] for the spatial attention, from MNE's layouts.

    Parameters
    ----------
    info : mne.Info or None
        The recording's measurement info; ``mne.channels.find_layout(info)`` gives the layout
        unless ``layout`` is passed. Its ``ch_names`` are the channels (unless ``ch_names``).
    ch_names : sequence of str or None
        Channel names, in the order of the data's channel axis (default: ``info.ch_names``).
        Required when ``info`` is None.
    layout : str, mne.channels.Layout or None
        A layout object, or the name of one shipped with MNE (``"CTF-275"`` for CTF-275 MEG
        such as THINGS-MEG, ``"Vectorview-all"``, ``"EEG1005"`` ...).

    Returns
    -------
    positions : ndarray of float32, shape (n_channels, 2)
        ``x`` and ``y`` of the layout, each min-max scaled to [0, 1] over the channels found;
        NaN for a channel the layout does not have (names are compared as they are, then without
        a CTF ``-NNNN`` suffix on either side: ``MLC11-1609`` is the layout's ``MLC11-2622``).

    Raises
    ------
    ValidationError
        Neither ``info`` nor ``layout`` was given, or fewer than 2 channels are in the layout.

    Examples
    --------
    >>> pos = sensor_positions(ch_names=["MLC11-1609", "MRO11-1609", "BAD"], layout="CTF-275")
    >>> pos.shape, bool(np.isnan(pos[2]).all())
    ((3, 2), True)
    """
    import mne  # lazy: heavy import

    if info is None and layout is None:
        raise ValidationError(format_error("info", "an mne.Info (or a layout name with ch_names)", None,
                                           "Pass raw.info / epochs.info, or layout='CTF-275' and ch_names"))
    names = [str(n) for n in (ch_names if ch_names is not None else info["ch_names"])]
    if layout is None:
        lay = mne.channels.find_layout(info)
    elif isinstance(layout, str):
        lay = mne.channels.read_layout(layout)
    else:
        lay = layout
    index = {_layout_name(str(n)): i for i, n in enumerate(lay.names)}
    index.update({str(n): i for i, n in enumerate(lay.names)})
    rows = [index.get(n, index.get(_layout_name(n), -1)) for n in names]
    found = np.array([r >= 0 for r in rows])
    if found.sum() < 2:
        raise ValidationError(format_error(
            "ch_names", f"at least 2 channels of the layout {getattr(lay, 'kind', '?')!r}",
            f"{int(found.sum())} of {len(names)} (e.g. {names[:3]})",
            "Pass the layout of this sensor system (e.g. layout='CTF-275' for CTF MEG, 'Vectorview-all' for "
            "Neuromag) or an info with digitised positions"))
    xy = np.asarray(lay.pos, dtype=np.float64)[[r for r in rows if r >= 0], :2]
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    pos = np.full((len(names), 2), np.nan, dtype=np.float64)
    pos[found] = (xy - lo) / span
    return pos.astype(np.float32)


# --------------------------------------------------------------------------- Fourier embedding


def _n_freqs(dim: int) -> int:
    n = int(round(math.sqrt(dim / 2)))
    if dim < 2 or 2 * n * n != dim:
        raise ValidationError(format_error("pos_dim", "2 n^2 for an integer n (e.g. 2048 = 2 x 32^2, 32, 8)", dim,
                                           "The embedding holds a cosine and a sine per (k, l) frequency pair"))
    return n


def fourier_embedding(positions: torch.Tensor, dim: int, margin: float = 0.2) -> torch.Tensor:
    """Fourier features of 2-D positions.

    Parameters
    ----------
    positions : Tensor of shape (..., 2)
        ``(x, y)`` in [0, 1].
    dim : int
        ``2 n^2``: ``n^2`` cosines then ``n^2`` sines.
    margin : float
        The basis is periodic over ``[-margin, 1 + margin]``.

    Returns
    -------
    emb : Tensor of shape (..., dim)
        ``emb[..., k n + l] = cos(phi_kl)`` and ``emb[..., n^2 + k n + l] = sin(phi_kl)`` with
        ``phi_kl = 2 pi (k (x + margin) + l (y + margin)) / (1 + 2 margin)``.
    """
    if positions.shape[-1] != 2:
        raise ShapeMismatchError(format_error("positions", "shape (..., 2)", tuple(positions.shape)))
    n = _n_freqs(dim)
    freqs = torch.arange(n, device=positions.device, dtype=positions.dtype) * (2 * math.pi / (1 + 2 * margin))
    p = positions + margin
    phase = p[..., 0, None, None] * freqs[:, None] + p[..., 1, None, None] * freqs[None, :]  # (..., n, n)
    phase = phase.flatten(-2)
    return torch.cat([phase.cos(), phase.sin()], dim=-1)


class FourierEmbedding(nn.Module):
    """Module form of :func:`fourier_embedding` (no parameters)."""

    def __init__(self, dim: int = 2048, margin: float = 0.2) -> None:
        super().__init__()
        _n_freqs(dim)
        self.dim, self.margin = int(dim), float(margin)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return fourier_embedding(positions, self.dim, self.margin)


# --------------------------------------------------------------------------- spatial attention


class SpatialAttention(nn.Module):
    """Softmax attention of ``n_out`` virtual channels over the sensors, keyed by sensor position.

    Parameters
    ----------
    n_out : int
        Virtual channels (270).
    pos_dim : int
        Fourier embedding size ``2 n^2`` (2048).
    dropout_radius : float
        Radius (in the unit square of :func:`sensor_positions`) of the disc of sensors masked
        in training (0.2); 0 turns spatial dropout off.
    margin : float
        Fourier embedding margin (0.2).

    Notes
    -----
    ``weights[b, o, c] = softmax_c(<heads[o], fourier(pos[b, c])> + mask[b, c])`` with ``mask`` 0
    for usable channels and ``-inf`` for channels without a position (NaN) or inside the dropped
    disc; output ``y[b, o, t] = sum_c weights[b, o, c] x[b, c, t]``. One disc per batch (centre
    uniform in the unit square), as brainmagick draws it. A sample whose every usable sensor
    lies in the disc keeps them all (no dropout for it) rather than dividing by zero.
    ``heads`` starts as standard normal / sqrt(pos_dim).
    """

    def __init__(self, n_out: int = 270, pos_dim: int = 2048, dropout_radius: float = 0.2,
                 margin: float = 0.2) -> None:
        super().__init__()
        if int(n_out) < 1:
            raise ValidationError(format_error("n_out", "a positive integer", n_out))
        if float(dropout_radius) < 0:
            raise ValidationError(format_error("dropout_radius", "a radius >= 0 (0: off)", dropout_radius))
        self.embedding = FourierEmbedding(pos_dim, margin)
        self.heads = nn.Parameter(torch.randn(int(n_out), int(pos_dim)) / math.sqrt(pos_dim))
        self.dropout_radius = float(dropout_radius)

    @staticmethod
    def disc_mask(positions: torch.Tensor, center: torch.Tensor, radius: float) -> torch.Tensor:
        """True for the sensors inside the disc ``|pos - center| <= radius`` (NaN positions: False)."""
        return (positions - center).norm(dim=-1) <= radius

    def weights(self, positions: torch.Tensor, center: torch.Tensor | None = None) -> torch.Tensor:
        """Attention weights.

        Parameters
        ----------
        positions : Tensor of shape (C, 2) or (B, C, 2)
            Sensor positions in [0, 1]; NaN rows are channels without a position.
        center : Tensor of shape (2,) or None
            Centre of the dropped disc; None draws one in training (uniform in the unit square,
            from torch's global generator) and drops nothing in eval mode.

        Returns
        -------
        weights : Tensor of shape (O, C) or (B, O, C)
            Rows sum to 1 over the usable channels.
        """
        valid = torch.isfinite(positions).all(dim=-1)
        if not bool(valid.any(dim=-1).all()):
            raise ValidationError(format_error("positions", "at least one finite sensor position per sample",
                                               "a sample with none", "Check the channel names against the layout"))
        pos = torch.where(valid[..., None], positions, torch.zeros_like(positions))
        scores = torch.matmul(self.embedding(pos.to(self.heads.dtype)), self.heads.T)  # (..., C, O)
        usable = valid
        if center is None and self.training and self.dropout_radius > 0:
            center = torch.rand(2, device=positions.device, dtype=pos.dtype)
        if center is not None:
            kept = valid & ~self.disc_mask(pos, center.to(pos), self.dropout_radius)
            usable = torch.where(kept.any(dim=-1, keepdim=True), kept, valid)
        scores = scores.masked_fill(~usable[..., None], float("-inf"))
        return torch.softmax(scores, dim=-2).transpose(-1, -2)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, center: torch.Tensor | None = None) -> torch.Tensor:
        """Mix the sensors into virtual channels.

        Parameters
        ----------
        x : Tensor of shape (B, C, T)
        positions : Tensor of shape (C, 2) or (B, C, 2)
            Shared by the batch, or one layout per sample (see :meth:`weights`).
        center : Tensor of shape (2,) or None
            Dropped disc's centre (None: random in training, none in eval).

        Returns
        -------
        y : Tensor of shape (B, O, T)
        """
        if positions.shape[-2] != x.shape[1]:
            raise ShapeMismatchError(format_error("positions", f"one row per channel of x ({x.shape[1]})",
                                                  tuple(positions.shape)))
        w = self.weights(positions, center).to(x.dtype)
        if w.ndim == 2:
            return torch.einsum("oc,bct->bot", w, x)
        return torch.einsum("boc,bct->bot", w, x)


# --------------------------------------------------------------------------- subject layers


class SubjectLayers(nn.Module):
    """One linear map over channels per subject: ``y[b] = W[s_b]^T x[b]``.

    Parameters
    ----------
    in_channels, out_channels : int
        ``C`` and ``D``.
    n_subjects : int
        Number of matrices.
    init_id : bool
        Start every matrix at the identity (needs ``C == D``); default standard normal. Both are
        scaled by ``1 / sqrt(C)`` as in brainmagick.
    """

    def __init__(self, in_channels: int, out_channels: int, n_subjects: int, init_id: bool = False) -> None:
        super().__init__()
        if int(n_subjects) < 1:
            raise ValidationError(format_error("n_subjects", "a positive integer", n_subjects))
        if init_id and in_channels != out_channels:
            raise ValidationError(format_error("init_id", "in_channels == out_channels for an identity start",
                                               f"{in_channels} != {out_channels}"))
        w = torch.eye(in_channels).repeat(n_subjects, 1, 1) if init_id else torch.randn(n_subjects, in_channels,
                                                                                         out_channels)
        self.weights = nn.Parameter(w / math.sqrt(in_channels))

    def forward(self, x: torch.Tensor, subjects: torch.Tensor) -> torch.Tensor:
        """``x`` (B, C, T), ``subjects`` (B,) integer indices -> (B, D, T)."""
        if subjects.shape != (x.shape[0],):
            raise ShapeMismatchError(format_error("subjects", f"one index per sample, shape ({x.shape[0]},)",
                                                  tuple(subjects.shape)))
        w = self.weights[subjects.long()]
        return torch.einsum("bct,bcd->bdt", x, w.to(x.dtype))

    def extra_repr(self) -> str:
        s, c, d = self.weights.shape
        return f"in_channels={c}, out_channels={d}, n_subjects={s}"


# --------------------------------------------------------------------------- dilated conv stack


def subject_indices(known: Sequence[str], subject: Any, n: int, *, unit: str = "trial") -> np.ndarray:
    """Index of each of ``n`` inputs' subject in ``known`` (-1 for None: a new subject, the subject layers' mean).

    Parameters
    ----------
    known : sequence of str
        The model's subjects (``config.subjects``).
    subject : str, sequence of str or None
        One id for all inputs, one per input, or None.
    n : int
        Number of inputs.
    unit : str
        What an input is called in messages ("trial", "segment").

    Returns
    -------
    index : ndarray of int64, shape (n,)
    """
    if subject is None:
        return np.full(n, -1, dtype=np.int64)
    subs = np.full(n, subject, dtype=object) if isinstance(subject, str) else np.asarray(subject, dtype=object)
    if len(subs) != n:
        raise ShapeMismatchError(format_error("subject", f"one id per {unit} ({n})", f"{len(subs)} ids"))
    lookup = {s: i for i, s in enumerate(known)}
    unknown = sorted({str(s) for s in subs} - set(lookup))
    if unknown:
        raise ValidationError(format_error(
            "subject", "one of " + ", ".join(map(repr, known)) if known else "None (this model knows no subject)",
            ", ".join(map(repr, unknown)), "Pass subject=None for a new subject (the mean of the subject layers)"))
    return np.array([lookup[str(s)] for s in subs], dtype=np.int64)


def conv_dilations(depth: int, growth: int = 2, period: int | None = 5) -> list[int]:
    """Dilation of each block: ``growth ** (k mod period)`` (``growth ** k`` without a period).

    >>> conv_dilations(10, 2, 5)
    [1, 2, 4, 8, 16, 1, 2, 4, 8, 16]
    """
    return [int(growth) ** (k % period if period else k) for k in range(int(depth))]


class _ConvBlock(nn.Module):
    def __init__(self, chin: int, chout: int, kernel: int, dilation: int, batch_norm: bool, dropout: float,
                 activation: bool) -> None:
        super().__init__()
        self.conv = nn.Conv1d(chin, chout, kernel, padding=kernel // 2 * dilation, dilation=dilation)
        self.norm = nn.BatchNorm1d(chout) if batch_norm else nn.Identity()
        self.act = nn.GELU() if activation else nn.Identity()
        self.drop = nn.Dropout(dropout) if dropout else nn.Identity()
        self.residual = chin == chout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.drop(self.act(self.norm(self.conv(x))))
        return x + y if self.residual else y


class DilatedConvStack(nn.Module):
    """Residual dilated conv blocks with periodic GLUs (the body of brainmagick's ``SimpleConv``).

    Parameters
    ----------
    in_channels : int
        Input width (270 after the subject layer).
    hidden : int
        Width of every block (320).
    depth : int
        Number of blocks (10).
    kernel : int
        Odd kernel size (3); padding keeps the length.
    dilation_growth, dilation_period : int, int or None
        See :func:`conv_dilations` (2, 5).
    batch_norm : bool
        BatchNorm1d after each conv (True).
    dropout : float
        Dropout after each activation (0).
    glu, glu_context : int
        A ``Conv1d(hidden, 2 hidden, 1 + 2 glu_context)`` + GLU after every ``glu``-th block (2,
        1); ``glu=0`` for none.
    activation_on_last : bool
        GELU (and batch norm) after the last block too (True, as with brainmagick's
        ``complex_out`` head).

    Notes
    -----
    Block ``k``: ``h = GELU(BN(conv_k(x)))``; ``x = x + h`` when the widths match (all but the
    first block when ``in_channels != hidden``), else ``x = h``; then, if ``(k + 1) % glu == 0``,
    ``x = GLU(conv'(x))``. Input and output: (B, C, T) -> (B, hidden, T).
    """

    def __init__(self, in_channels: int, hidden: int = 320, depth: int = 10, kernel: int = 3,
                 dilation_growth: int = 2, dilation_period: int | None = 5, batch_norm: bool = True,
                 dropout: float = 0.0, glu: int = 2, glu_context: int = 1, activation_on_last: bool = True) -> None:
        super().__init__()
        if int(kernel) % 2 != 1:
            raise ValidationError(format_error("kernel", "an odd kernel size (padding keeps the length)", kernel))
        if int(depth) < 1:
            raise ValidationError(format_error("depth", "at least one block", depth))
        widths = [int(in_channels)] + [int(hidden)] * int(depth)
        dils = conv_dilations(depth, dilation_growth, dilation_period)
        self.blocks = nn.ModuleList(
            _ConvBlock(widths[k], widths[k + 1], kernel, dils[k], batch_norm, dropout,
                       activation_on_last or k < depth - 1) for k in range(depth))
        self.glus = nn.ModuleList(
            nn.Sequential(nn.Conv1d(hidden, 2 * hidden, 1 + 2 * glu_context, padding=glu_context), nn.GLU(dim=1))
            if glu and (k + 1) % glu == 0 else nn.Identity() for k in range(depth))
        self.out_channels = int(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block, glu in zip(self.blocks, self.glus):
            x = glu(block(x))
        return x


# --------------------------------------------------------------------------- heads


class TemporalAggregation(nn.Module):
    """Collapse time: (B, D, T) -> (B, D).

    Parameters
    ----------
    mode : {"affine", "mean", "attention"}
        ``"affine"``: a learned ``Linear(T, 1)`` over time (fixed ``n_times``; Benchetrit et
        al.'s choice); ``"mean"``: global average pooling; ``"attention"``: weights
        ``softmax_t(conv1x1(x))`` (one score per time step from the features), weighted sum.
    n_times : int or None
        Required for ``"affine"``.
    channels : int or None
        Required for ``"attention"``.
    """

    def __init__(self, mode: str = "affine", n_times: int | None = None, channels: int | None = None) -> None:
        super().__init__()
        check_option(mode, "aggregation", list(TEMPORAL_AGGREGATIONS))
        self.mode = mode
        self.n_times = n_times
        self.affine = None
        self.score = None
        if mode == "affine":
            if not n_times or int(n_times) < 1:
                raise ValidationError(format_error("n_times", "the window length for an affine aggregation",
                                                   n_times))
            self.affine = nn.Linear(int(n_times), 1)
        elif mode == "attention":
            if not channels:
                raise ValidationError(format_error("channels", "the feature width for attention pooling", channels))
            self.score = nn.Conv1d(int(channels), 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.affine is not None:
            if x.shape[-1] != self.affine.in_features:
                raise ShapeMismatchError(format_error(
                    "x", f"{self.affine.in_features} time samples (the affine aggregation's window)", tuple(x.shape),
                    "Crop or resample the window to the model's n_times"))
            return self.affine(x).squeeze(-1)
        if self.score is not None:
            w = torch.softmax(self.score(x), dim=-1)  # (B, 1, T)
            return (x * w).sum(dim=-1)
        return x.mean(dim=-1)


class ConvTransposeHead(nn.Module):
    """brainmagick's ``complex_out``: ``Conv1d(D, 2D, 1)``, GELU, ``ConvTranspose1d(2D, out, 1)``; (B, D, T) -> (B, out, T)."""

    def __init__(self, channels: int, out_channels: int) -> None:
        super().__init__()
        self.inp = nn.Conv1d(channels, 2 * channels, 1)
        self.out = nn.ConvTranspose1d(2 * channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.gelu(self.inp(x)))
