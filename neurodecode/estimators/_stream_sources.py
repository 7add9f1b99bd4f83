"""Where a live decoder's samples and event markers come from: an LSL stream (mne-lsl) or an array.

Both sources answer the same four calls: :meth:`open` (the stream's channel names and rate),
:meth:`pull` (new samples with their timestamps, in order, none lost), :meth:`pull_markers` (new
event markers: label and timestamp) and :meth:`close`; :meth:`clock` is the clock the timestamps
are in (LSL's ``local_clock`` for LSL).

:class:`LSLSource` reads with ``mne_lsl.lsl.StreamInlet`` (the inlet under
``mne_lsl.stream.StreamLSL``): the inlet's queue keeps every sample between two pulls, so the
sample counter that places events and windows never skips (``StreamLSL`` keeps a ring buffer read
by windows of time), and it reads marker streams of strings (``StreamLSL`` reads numbers only).
Timestamps are clock-synchronised and de-jittered (``processing_flags``). A marker stream of
strings gives its strings as labels (e.g. a stimulus PC pushing image ids); a numeric one-hot
stream (mne-lsl's player replaying a file's annotations) the name of the channel that is set; a
single numeric channel its value.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._core.errors import NeurodecodeError, ValidationError
from .._core.validation import format_error

__all__ = ["StreamMeta", "ArraySource", "LSLSource", "parse_lsl_url"]


class StreamNotFoundError(NeurodecodeError, TimeoutError):
    """No LSL stream of the requested name answered in time."""


def _lsl() -> Any:
    """``mne_lsl.lsl``, or an error naming the package to install."""
    try:
        import mne_lsl.lsl as lsl
    except ImportError as exc:
        from ..metrics._deps import MissingDependencyError

        raise MissingDependencyError(format_error(
            "mne_lsl", "the mne-lsl package to read LSL streams (it ships liblsl)", f"not installed ({exc})",
            "pip install 'mne-lsl>=1.14'")) from None
    return lsl


@dataclass(frozen=True)
class StreamMeta:
    """The stream's name, channel names and nominal rate (Hz)."""

    name: str
    ch_names: tuple[str, ...]
    sfreq: float


def parse_lsl_url(value: str, param: str) -> str:
    """``"lsl://NAME"`` -> ``"NAME"``."""
    text = str(value)
    if not text.startswith("lsl://") or not text[len("lsl://"):]:
        raise ValidationError(format_error(param, "lsl://<stream name> (the name the LSL outlet announces)",
                                           repr(text), "Write e.g. lsl://MEG (`mne-lsl` lists the streams on "
                                           "the network: python -c \"import mne_lsl.lsl as l; "
                                           "print(l.resolve_streams())\")"))
    return text[len("lsl://"):]


class ArraySource:
    """Replay an in-memory recording as a stream (tests, offline replays, benchmarks).

    Parameters
    ----------
    data : array of shape (n_channels, n_samples)
        The recording.
    sfreq : float
        Its rate (Hz).
    ch_names : sequence of str
        Its channels.
    markers : sequence of (float, str) or None
        Events as (onset in seconds from the first sample, label).
    chunk_size : int
        Samples handed out per :meth:`pull`.
    realtime : bool
        Hand out samples no faster than ``sfreq`` (timestamps follow the clock); ``False``: as fast
        as they are pulled (timestamps ``t0 + i / sfreq``).
    name : str
    """

    def __init__(self, data: Any, sfreq: float, ch_names: Sequence[str], *,
                 markers: Sequence[tuple[float, str]] | None = None, chunk_size: int = 32, realtime: bool = False,
                 name: str = "array") -> None:
        self.data = data
        self.sfreq = sfreq
        self.ch_names = ch_names
        self.markers = markers
        self.chunk_size = chunk_size
        self.realtime = realtime
        self.name = name

    def clock(self) -> float:
        return time.perf_counter()

    def open(self) -> StreamMeta:
        data = np.asarray(self.data)
        if data.ndim != 2 or data.shape[0] != len(self.ch_names):
            raise ValidationError(format_error("data", f"an array of shape (n_channels={len(self.ch_names)}, "
                                               "n_samples)", data.shape))
        self._data = data
        self._pos = 0
        self._t0 = self.clock()
        self._markers = sorted((float(t), str(lab)) for t, lab in (self.markers or []))
        self._next_marker = 0
        return StreamMeta(self.name, tuple(str(c) for c in self.ch_names), float(self.sfreq))

    @property
    def exhausted(self) -> bool:
        return self._pos >= self._data.shape[1]

    def pull(self) -> tuple[np.ndarray, np.ndarray]:
        """The next chunk: samples (n, n_channels) and timestamps (n,)."""
        stop = min(self._pos + int(self.chunk_size), self._data.shape[1])
        if self.realtime:  # no sample before its time
            stop = min(stop, int((self.clock() - self._t0) * self.sfreq))
        stop = max(stop, self._pos)
        idx = np.arange(self._pos, stop)
        self._pos = stop
        return self._data[:, idx].T, self._t0 + idx / float(self.sfreq)

    def pull_markers(self) -> list[tuple[str, float]]:
        """Markers up to the samples handed out so far."""
        out = []
        now = self._pos / float(self.sfreq)
        while self._next_marker < len(self._markers) and self._markers[self._next_marker][0] < now:
            t, lab = self._markers[self._next_marker]
            out.append((lab, self._t0 + t))
            self._next_marker += 1
        return out

    def close(self) -> None:
        return None


class LSLSource:
    """An LSL data stream, with an optional marker stream, read with mne-lsl.

    Parameters
    ----------
    name : str
        The data stream's name (``lsl://NAME`` accepted).
    markers : str or None
        The marker stream's name (``lsl://NAME`` accepted); None: no markers (fixed hop).
    timeout : float
        Seconds to wait for each stream to be found.
    processing_flags : sequence of str
        mne-lsl inlet processing (clock synchronisation and de-jittering by default).
    max_buffered : float
        Seconds the inlet queues between pulls.
    """

    def __init__(self, name: str, *, markers: str | None = None, timeout: float = 10.0,
                 processing_flags: Sequence[str] = ("clocksync", "dejitter"), max_buffered: float = 60.0) -> None:
        self.name = name
        self.markers = markers
        self.timeout = timeout
        self.processing_flags = processing_flags
        self.max_buffered = max_buffered

    def clock(self) -> float:
        """LSL's clock (the timestamps' clock, after clock synchronisation)."""
        if getattr(self, "_local_clock", None) is None:
            self._local_clock = _lsl().local_clock
        return float(self._local_clock())

    @staticmethod
    def _strip(name: str) -> str:
        return name[len("lsl://"):] if str(name).startswith("lsl://") else str(name)

    def _inlet(self, name: str, *, flags: Sequence[str], what: str) -> Any:
        lsl = _lsl()
        StreamInlet, resolve_streams = lsl.StreamInlet, lsl.resolve_streams
        found = resolve_streams(timeout=float(self.timeout), name=name)
        if not found:
            seen = sorted({s.name for s in resolve_streams(timeout=0.5)})
            raise StreamNotFoundError(format_error(
                what, f"an LSL stream named {name!r} on this network", f"none within {self.timeout:g} s (streams "
                f"seen: {seen or 'none'})", "Start the acquisition (or player) first, check the name, or raise "
                "the timeout"))
        inlet = StreamInlet(found[0], max_buffered=int(math.ceil(self.max_buffered)), processing_flags=list(flags) or None)
        inlet.open_stream(timeout=float(self.timeout))
        return inlet

    def open(self) -> StreamMeta:
        name = self._strip(self.name)
        self._data = self._inlet(name, flags=self.processing_flags, what="source")
        sinfo = self._data.get_sinfo()
        ch_names = tuple(sinfo.get_channel_names() or [f"ch{i}" for i in range(sinfo.n_channels)])
        self._mark = None
        self._marker_names: list[str] | None = None
        self._marker_strings = False
        if self.markers:
            self._mark = self._inlet(self._strip(self.markers), flags=("clocksync",), what="markers")
            minfo = self._mark.get_sinfo()
            self._marker_strings = minfo.dtype == "string" or "str" in str(minfo.dtype)
            self._marker_names = list(minfo.get_channel_names() or [])
        return StreamMeta(name, ch_names, float(sinfo.sfreq))

    exhausted = False  # a live stream does not end; the decoder stops after its timeout without samples

    def pull(self) -> tuple[np.ndarray, np.ndarray]:
        data, ts = self._data.pull_chunk(timeout=0.0)
        # the inlet reuses its buffers: copy before the next pull
        return np.array(data, dtype=np.float64, copy=True).reshape(-1, self._data.n_channels), \
            np.array(ts, dtype=np.float64, copy=True).reshape(-1)

    def pull_markers(self) -> list[tuple[str, float]]:
        if self._mark is None:
            return []
        samples, ts = self._mark.pull_chunk(timeout=0.0)
        out = []
        for sample, t in zip(list(samples), np.asarray(ts, dtype=np.float64).tolist()):
            out.append((self._label(sample), float(t)))
        return out

    def _label(self, sample: Any) -> str:
        values = list(sample) if isinstance(sample, (list, tuple, np.ndarray)) else [sample]
        if self._marker_strings:
            return str(values[0])
        arr = np.asarray(values, dtype=np.float64)
        if len(arr) > 1 and self._marker_names:  # one-hot: the channel that is set names the event
            return str(self._marker_names[int(np.argmax(arr != 0))])
        v = float(arr[0])
        return str(int(v)) if v.is_integer() else str(v)

    def close(self) -> None:
        for inlet in (getattr(self, "_data", None), getattr(self, "_mark", None)):
            if inlet is not None:
                try:
                    inlet.close_stream()
                except Exception:
                    pass
