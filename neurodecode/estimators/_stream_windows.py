"""Cut one model window out of a continuous recording exactly as the offline loaders do.

The M/EEG loaders (:func:`neurodecode.data.load_things_meg`) band-pass the whole run (optional, MNE's
zero-phase FIR), resample it with ``mne.io.Raw.resample(method="polyphase")``, move each event onto the
new grid (``np.round(sample * sfreq / raw_sfreq)``) and epoch ``[event + round(tmin * sfreq), ... +
n_times)`` (optional baseline). A live decoder only ever holds a stretch of the recording, so
:func:`extract_window` does the same on a stretch with margins:

- resampling: the output grid is anchored on the event (its sample is output sample 0; output sample
  ``k`` sits at input ``event + k * down / up``, with ``up / down`` the reduced ratio); the stretch
  starts on that grid and reaches ``10 * max(up, down) / up`` input samples beyond the window on each
  side, the half-length of the polyphase filter MNE designs (Kaiser 5.0, the SciPy default); its length
  is a multiple of ``down``, so MNE derives the same ``up / down`` and the same filter from it. Inside
  the margins the output equals the full run's to float rounding. The call is the one MNE makes
  (``scipy.signal.resample_poly`` with that filter, reflected edges), with the filter designed once.
- band-pass: a further margin of half the FIR filter's length (what ``mne.filter.create_filter``
  designs for the rate and band edges), filtered, then dropped.

Why the event anchors the grid: a live stream has no "first sample of the run" (the decoder receives
from whenever it connected), and the event is the one time both share. The loaders anchor their grid
on the run's first sample and round each event onto it, so the windows are the same whenever the
event's sample lies on that grid (a multiple of ``down / up``, e.g. of 6 for 1200 -> 200 Hz; the
simulated THINGS-MEG onsets do); otherwise the offline epoch sits up to half an output sample from the
event and the live one exactly on it. The full run's grid is also this one only when the run's length
is a multiple of ``down`` (MNE derives its ratio from the lengths; for another length it stretches its
grid by under one input sample over the run). The margins are latency: a window is ready ``margin``
seconds after its last sample (55 ms for 1200 -> 200 Hz; a 0.1 Hz high-pass needs ~16 s of future
samples).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from .._core.errors import ValidationError
from .._core.validation import format_error

__all__ = ["WindowSpec", "WindowPlan", "plan_windows", "extract_window"]


@dataclass(frozen=True)
class WindowSpec:
    """What a model's window is, and how the recordings it was trained on were prepared.

    Parameters
    ----------
    ch_names : tuple of str
        The model's channels, in its input order.
    sfreq : float
        The model's rate (after resampling), Hz.
    tmin : float
        Time of the window's first sample relative to the event, seconds (``[data] window[0]``).
    n_times : int
        Samples per window at ``sfreq``.
    raw_sfreq : float or None
        Rate of the recordings the model was trained on; a stream at another rate is refused
        (``None``: any rate, resampled to ``sfreq``).
    l_freq, h_freq : float or None
        Band-pass applied to the continuous recording before resampling (None: none).
    baseline : (float or None, float or None) or None
        MNE baseline interval subtracted from each window (None: none).
    """

    ch_names: tuple[str, ...]
    sfreq: float
    tmin: float
    n_times: int
    raw_sfreq: float | None = None
    l_freq: float | None = None
    h_freq: float | None = None
    baseline: tuple[float | None, float | None] | None = None

    @property
    def i0(self) -> int:
        """First sample of the window relative to the event, at ``sfreq`` (as the loaders round it)."""
        return int(round(self.tmin * self.sfreq))

    def to_dict(self) -> dict[str, Any]:
        return {"ch_names": list(self.ch_names), "sfreq": self.sfreq, "tmin": self.tmin, "n_times": self.n_times,
                "raw_sfreq": self.raw_sfreq, "l_freq": self.l_freq, "h_freq": self.h_freq,
                "baseline": None if self.baseline is None else list(self.baseline)}


@dataclass(frozen=True)
class WindowPlan:
    """The arithmetic of cutting windows of ``spec`` from a stream at ``stream_sfreq`` (see the module).

    ``up / down`` is the reduced resampling ratio; ``filter_margin`` the band-pass margin in input
    samples; ``margin_out`` the resampling margin in output samples.
    """

    spec: WindowSpec
    stream_sfreq: float
    up: int
    down: int
    filter_margin: int
    margin_out: int

    def extent(self, event: int) -> tuple[int, int]:
        """Input samples ``[start, stop)`` the window of the event at input sample ``event`` needs."""
        k_start, n_out = self._output_span()
        s0 = int(event) + k_start * self.down // self.up
        return s0 - self.filter_margin, s0 + n_out * self.down // self.up + self.filter_margin

    def window_end(self, event: int) -> int:
        """Input sample at (or just before) the window's last output sample."""
        return int(event) + (self.spec.i0 + self.spec.n_times - 1) * self.down // self.up

    def _output_span(self) -> tuple[int, int]:
        """First output sample (relative to the event, a multiple of ``up``) and output samples resampled."""
        first = self.spec.i0
        if self.up == self.down == 1:
            return first, self.spec.n_times
        k_start = (first - self.margin_out) // self.up * self.up  # on the grid: an integer input sample
        need = first + self.spec.n_times + self.margin_out - k_start
        n_out = -(-need // self.up) * self.up  # a multiple of up: the input length is a multiple of down
        return k_start, n_out

    @property
    def latency_s(self) -> float:
        """Seconds of samples needed after a window's last sample (the resampling and filter margins)."""
        extra = self.margin_out * self.down / self.up + self.filter_margin if self.up != self.down else \
            self.filter_margin
        return float(extra / self.stream_sfreq)


def plan_windows(spec: WindowSpec, stream_sfreq: float) -> WindowPlan:
    """Work out the resampling ratio and the margins for a stream at ``stream_sfreq`` Hz.

    Parameters
    ----------
    spec : WindowSpec
    stream_sfreq : float
        The stream's nominal rate.

    Returns
    -------
    plan : WindowPlan
    """
    if not stream_sfreq or stream_sfreq <= 0:
        raise ValidationError(format_error("stream sfreq", "a regularly sampled stream (a nominal rate > 0)",
                                           f"{stream_sfreq!r} (an irregular stream)",
                                           "Pass the data stream, not a marker stream, as the source"))
    ratio = Fraction(spec.sfreq / stream_sfreq).limit_denominator(100000)
    if not math.isclose(float(ratio), spec.sfreq / stream_sfreq, rel_tol=1e-9):
        raise ValidationError(format_error("stream sfreq", f"a rate in a simple ratio to the model's {spec.sfreq:g} Hz",
                                           f"{stream_sfreq:g} Hz", "Resample the stream at its source"))
    up, down = ratio.numerator, ratio.denominator
    filter_margin = 0
    if spec.l_freq is not None or spec.h_freq is not None:
        import mne

        h = mne.filter.create_filter(None, stream_sfreq, spec.l_freq, spec.h_freq, verbose="error")
        filter_margin = len(h) // 2 + 1
    margin_out = 0 if up == down == 1 else -(-10 * max(up, down) // down) + 1
    return WindowPlan(spec=spec, stream_sfreq=float(stream_sfreq), up=up, down=down, filter_margin=filter_margin,
                      margin_out=margin_out)


def extract_window(plan: WindowPlan, data: np.ndarray, event: int, offset: int = 0) -> np.ndarray:
    """The model window of one event, prepared as the offline loader prepares its epochs.

    Parameters
    ----------
    plan : WindowPlan
        From :func:`plan_windows`.
    data : ndarray of shape (n_channels, n_samples)
        Continuous samples at the stream's rate, channels in the model's order; column ``j`` is the
        stream's sample ``offset + j``.
    event : int
        The event's input sample (stream sample counter); it is output sample 0.
    offset : int
        Stream sample of ``data[:, 0]``.

    Returns
    -------
    window : ndarray of shape (n_channels, n_times), float32
    """
    spec = plan.spec
    start, stop = plan.extent(event)
    if start < offset or stop > offset + data.shape[1]:
        raise ValidationError(format_error("event", f"samples {start}..{stop} in the buffer",
                                           f"the buffer holds {offset}..{offset + data.shape[1]}",
                                           "Enlarge the stream buffer (buffer_s)"))
    seg = np.asarray(data[:, start - offset:stop - offset], dtype=np.float64)
    if plan.filter_margin:
        import mne

        seg = mne.filter.filter_data(seg, plan.stream_sfreq, spec.l_freq, spec.h_freq, verbose="error")
        seg = seg[:, plan.filter_margin:seg.shape[1] - plan.filter_margin]
    k_start, _ = plan._output_span()
    if not plan.up == plan.down == 1:  # the call mne.filter.resample(method="polyphase") makes, filter cached
        from scipy.signal import resample_poly

        seg = resample_poly(seg, plan.up, plan.down, axis=-1, window=_polyphase_filter(plan.up, plan.down),
                            padtype="reflect")
    first = spec.i0 - k_start
    out = seg[:, first:first + spec.n_times]
    if spec.baseline is not None:
        from mne.baseline import rescale

        times = (spec.i0 + np.arange(spec.n_times)) / spec.sfreq
        out = rescale(out, times, spec.baseline, mode="mean", copy=True, verbose="error")
    return np.ascontiguousarray(out, dtype=np.float32)


@functools.lru_cache(maxsize=8)
def _polyphase_filter(up: int, down: int) -> np.ndarray:
    """The low-pass FIR ``mne.filter.resample(method="polyphase")`` designs for ``up / down`` (SciPy's
    default: Kaiser 5.0, ``10 * max(up, down)`` taps each side, cutoff at the lower Nyquist)."""
    from scipy.signal import firwin

    rate = max(int(up), int(down))
    return np.asarray(firwin(2 * 10 * rate + 1, 1.0 / rate, window=("kaiser", 5.0)), dtype=np.float64)


def channel_picks(model_channels: Sequence[str], stream_channels: Sequence[str], stream: str) -> np.ndarray:
    """Indices of the model's channels in the stream (extra stream channels are ignored).

    Raises
    ------
    MetadataMismatchError
        Naming every model channel the stream lacks.
    """
    from .._core.errors import MetadataMismatchError

    where = {c: i for i, c in enumerate(stream_channels)}
    missing = [c for c in model_channels if c not in where]
    if missing:
        listed = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise MetadataMismatchError(format_error(
            "stream channels", f"the model's {len(model_channels)} channels in stream {stream!r}",
            f"{len(missing)} missing: {listed} (the stream has {len(stream_channels)} channels, e.g. "
            f"{list(stream_channels)[:3]})",
            "Stream the sensors the model was trained on, named as in the training recordings"))
    return np.array([where[c] for c in model_channels], dtype=np.int64)
