"""Live decoding: read an MEG/EEG stream, cut a window per event marker (or every ``hop`` seconds),
prepare it as the offline loaders prepare their epochs, decode it with a trained model, and write
each result as it comes.

>>> from neurodecode.estimators.stream import StreamDecoder                                  # doctest: +SKIP
>>> live = StreamDecoder("runs/atm-meg/sub-BIGMEG1", "lsl://MEG", markers="lsl://Markers",
...                      out="live.jsonl", max_windows=100)                           # doctest: +SKIP
>>> for result in live.iter_results():                                                # doctest: +SKIP
...     print(result["event"], result["top_k"][0]["id"], f"{result['latency_s'] * 1e3:.0f} ms")

Events. A marker at LSL time ``t`` (plus ``marker_delay``) is placed on the data sample whose
timestamp is nearest; its window is cut once every sample it needs has arrived (the window plus the
resampling and filter margins, :mod:`~neurodecode.estimators._stream_windows`). Without markers,
windows start every ``hop`` seconds from the first sample received.

Each result (a dict yielded, and one JSON line appended and flushed to ``out``): ``index``,
``event`` (the marker's label, None with ``hop``), ``event_sample`` (stream sample counter from the
first sample received), the LSL times ``event_time``, ``window_end_time`` (the window's last
sample), ``sample_time`` (the last sample the window needs), ``received_time`` (when that sample
was pulled), ``written_time`` (when the line is written), ``latency_s`` = ``written_time -
sample_time`` (acquisition of the last sample -> result written), ``decode_s`` (model time for the
batch the window was decoded in), ``embedding`` (dim,), and ``top_k`` (``id``, ``score``: cosine
similarity with each candidate image, best first). The file starts with a ``{"type": "start"}``
line (stream, model, preparation) and ends with ``{"type": "end"}``.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import MetadataMismatchError, ValidationError
from .._core.logging import logger, progress
from .._core.validation import format_error
from ._stream_sources import ArraySource, LSLSource, StreamMeta, StreamNotFoundError, parse_lsl_url
from ._stream_windows import WindowPlan, channel_picks, extract_window, plan_windows

__all__ = ["StreamDecoder", "ArraySource", "LSLSource", "StreamNotFoundError"]


class _Ring:
    """The latest samples (model channels), their timestamps and arrival times, by stream sample counter."""

    def __init__(self, n_channels: int, capacity: int) -> None:
        self.capacity = int(capacity)
        self.data = np.zeros((n_channels, 2 * self.capacity))
        self.ts = np.zeros(2 * self.capacity)
        self.recv = np.zeros(2 * self.capacity)
        self.start = 0  # stream sample of column 0
        self.n = 0  # valid columns

    @property
    def stop(self) -> int:
        return self.start + self.n

    def append(self, x: np.ndarray, ts: np.ndarray, recv: float) -> None:
        k = len(ts)
        if k >= self.capacity:  # a chunk longer than the buffer: only its newest samples are kept
            self.start, self.n = self.stop + k - self.capacity, 0
            x, ts, k = x[:, k - self.capacity:], ts[k - self.capacity:], self.capacity
        if self.n + k > 2 * self.capacity:  # keep the newest capacity - k, move them to the front
            keep = self.capacity - k
            drop = self.n - keep
            for a in (self.data, self.ts, self.recv):
                a[..., :keep] = a[..., drop:self.n]
            self.start += drop
            self.n = keep
        self.data[:, self.n:self.n + k] = x
        self.ts[self.n:self.n + k] = ts
        self.recv[self.n:self.n + k] = recv
        self.n += k

    def sample_at(self, t: float) -> int | None:
        """Stream sample whose timestamp is nearest ``t`` (None if ``t`` is before the buffer)."""
        ts = self.ts[:self.n]
        i = int(np.searchsorted(ts, t))
        if i == 0 and (self.n == 0 or t < ts[0] - 0.5 * _period(ts)):
            return None
        i = min(i, self.n - 1)
        if i > 0 and abs(ts[i - 1] - t) <= abs(ts[i] - t):
            i -= 1
        return self.start + i


def _period(ts: np.ndarray) -> float:
    return float(np.median(np.diff(ts[-64:]))) if len(ts) > 1 else 0.0


class StreamDecoder:
    """Decode a live MEG/EEG stream window by window with a trained model.

    Parameters
    ----------
    decoder : path-like or WindowDecoder
        The run folder of ``neurodecode train`` (ATM on THINGS-MEG / THINGS-EEG2, or a runner with
        its own ``load_window_decoder``), or a loaded window decoder
        (:func:`~neurodecode.estimators._window_decoders.load_window_decoder`).
    source : str or source
        ``"lsl://NAME"`` (the data stream) or a source object (:class:`ArraySource`, :class:`LSLSource`).
    markers : str or None
        ``"lsl://NAME"`` of the marker stream (with an ``"lsl://"`` source); None: markers from the
        source object, or, with ``hop``, none.
    hop : float or None
        Without markers: seconds between window starts.
    subject : str or None
        Which model of a per-subject run (or the token of a joint model).
    events : sequence of str or None
        Marker labels to decode (None: every marker).
    top_k : int
        Candidates listed per result.
    out : path-like or None
        JSON-lines file the results are appended to (flushed per line).
    max_windows : int or None
        Stop after this many results (None: until the stream stays silent ``timeout`` seconds).
    timeout : float
        Seconds to wait for the streams to appear, and without a new sample before stopping.
    marker_delay : float
        Seconds added to every marker's time (a known constant lag of the markers behind the data,
        e.g. a photodiode delay; mne-lsl's ``PlayerLSL`` stamps each annotation one sample period
        before its data sample: replays through it use ``1 / sfreq``).
    candidates : None, path-like, False or (ids, embeddings)
        Retrieval candidates, when ``decoder`` is a path (see ``load_window_decoder``).
    raw_sfreq : float or None
        Accept a stream at this rate although the model's training recordings had another.
    buffer_s : float or None
        Seconds of samples kept (None: the longest window's span plus 5 s).
    device : str
        Where the model runs (``"cpu"``, ``"cuda"``, ``"auto"``).
    verbose : bool or str or None

    Attributes
    ----------
    decoder_ : WindowDecoder
    stream_ : StreamMeta
    plan_ : WindowPlan
    results_ : list of dict
        The results of the last :meth:`run`.
    """

    def __init__(self, decoder: Any, source: Any, *, markers: str | None = None, hop: float | None = None,
                 subject: str | None = None, events: Sequence[str] | None = None, top_k: int = 5,
                 out: Any = None, max_windows: int | None = None, timeout: float = 10.0, marker_delay: float = 0.0,
                 candidates: Any = None, raw_sfreq: float | None = None, buffer_s: float | None = None,
                 device: str = "cpu", verbose: Any = None) -> None:
        self.decoder = decoder
        self.source = source
        self.markers = markers
        self.hop = hop
        self.subject = subject
        self.events = events
        self.top_k = top_k
        self.out = out
        self.max_windows = max_windows
        self.timeout = timeout
        self.marker_delay = marker_delay
        self.candidates = candidates
        self.raw_sfreq = raw_sfreq
        self.buffer_s = buffer_s
        self.device = device
        self.verbose = verbose

    # ------------------------------------------------------------------------------------------ set-up
    def _check_params(self) -> None:
        if self.hop is not None and (not isinstance(self.hop, (int, float)) or not self.hop > 0):
            raise ValidationError(format_error("hop", "seconds between windows (> 0)", self.hop))
        if self.max_windows is not None and int(self.max_windows) < 1:
            raise ValidationError(format_error("max_windows", "an int >= 1 or None", self.max_windows))
        if int(self.top_k) < 1:
            raise ValidationError(format_error("top_k", "an int >= 1", self.top_k))
        if not self.timeout > 0:
            raise ValidationError(format_error("timeout", "seconds > 0", self.timeout))

    def _resolve_source(self) -> Any:
        if isinstance(self.source, str):
            name = parse_lsl_url(self.source, "source")
            markers = parse_lsl_url(self.markers, "markers") if self.markers else None
            if markers is None and self.hop is None:
                raise ValidationError(format_error("markers / hop", "a marker stream (markers='lsl://NAME') or a "
                                                   "fixed hop in seconds", "neither",
                                                   "Pass --markers lsl://<name> to decode each event, or --hop S"))
            return LSLSource(name, markers=markers, timeout=float(self.timeout))
        if self.markers:
            raise ValidationError(format_error("markers", "None with a source object (it brings its markers)",
                                               repr(self.markers)))
        return self.source

    def _resolve_decoder(self) -> Any:
        from ._window_decoders import WindowDecoder, load_window_decoder

        if isinstance(self.decoder, WindowDecoder):
            return self.decoder
        return load_window_decoder(self.decoder, subject=self.subject, candidates=self.candidates,
                                   raw_sfreq=self.raw_sfreq, device=self.device, verbose=self.verbose)

    def _check_stream(self, meta: StreamMeta, decoder: Any) -> tuple[np.ndarray, WindowPlan]:
        spec = decoder.spec
        expected = self.raw_sfreq if self.raw_sfreq is not None else spec.raw_sfreq
        if expected is not None and not math.isclose(float(expected), meta.sfreq, rel_tol=1e-6):
            raise MetadataMismatchError(format_error(
                "stream sfreq", f"{float(expected):g} Hz (the rate of the recordings the model was trained on)",
                f"{meta.sfreq:g} Hz from stream {meta.name!r}",
                f"Stream at {float(expected):g} Hz, or accept this rate with raw_sfreq={meta.sfreq:g} "
                f"(--raw-sfreq {meta.sfreq:g}): windows are then resampled from it to {spec.sfreq:g} Hz"))
        picks = channel_picks(spec.ch_names, meta.ch_names, meta.name)
        return picks, plan_windows(spec, meta.sfreq)

    # ------------------------------------------------------------------------------------------ running
    def run(self) -> list[dict[str, Any]]:
        """Decode until ``max_windows`` results or ``timeout`` seconds without samples; return the results."""
        return list(self.iter_results())

    def iter_results(self) -> Iterator[dict[str, Any]]:
        """Yield each result as soon as it is decoded (and written to ``out``)."""
        self._check_params()
        decoder = self._resolve_decoder()
        source = self._resolve_source()
        meta = source.open()
        try:
            yield from self._loop(decoder, source, meta)
        finally:
            source.close()

    def _loop(self, decoder: Any, source: Any, meta: StreamMeta) -> Iterator[dict[str, Any]]:
        picks, plan = self._check_stream(meta, decoder)
        self.decoder_, self.stream_, self.plan_ = decoder, meta, plan
        self.results_: list[dict[str, Any]] = []
        start, stop = plan.extent(0)
        span = stop - start
        buffer_s = self.buffer_s if self.buffer_s is not None else span / meta.sfreq + 5.0
        if buffer_s * meta.sfreq < 2 * span:
            raise ValidationError(format_error("buffer_s", f"at least {2 * span / meta.sfreq:.3g} s (two windows "
                                               "with their margins)", buffer_s))
        ring = _Ring(len(picks), int(math.ceil(buffer_s * meta.sfreq)))
        cands = decoder.candidates
        unit = None
        if cands is not None:
            unit = cands / np.maximum(np.linalg.norm(cands, axis=1, keepdims=True), 1e-12)
        wanted = None if self.events is None else {str(e) for e in self.events}
        marker_queue: deque[tuple[str, float]] = deque()
        pending: deque[tuple[str | None, int]] = deque()
        hop = None if self.hop is None else max(1, int(round(float(self.hop) * meta.sfreq)))
        next_hop = -start  # the first window starts at the first sample received
        use_markers = self.hop is None
        writer = _Writer(self.out)
        writer.write({"type": "start", "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                      "stream": {"name": meta.name, "sfreq": meta.sfreq, "n_channels": len(meta.ch_names)},
                      "markers": self.markers if isinstance(self.source, str) else None, "hop": self.hop,
                      "marker_delay": self.marker_delay, "decoder": decoder.provenance, "spec": decoder.spec.to_dict(),
                      "plan": {"up": plan.up, "down": plan.down, "resample_margin_out": plan.margin_out,
                               "filter_margin": plan.filter_margin, "margin_s": plan.latency_s},
                      "subject": self.subject, "top_k": int(self.top_k)})
        n_done, reason = 0, "source exhausted"
        last_sample = time.monotonic()
        bar = progress(total=self.max_windows, desc=f"stream {meta.name}", unit="window", verbose=self.verbose)
        try:
            while True:
                x, ts = source.pull()
                if len(ts):
                    ring.append(np.asarray(x, np.float64).T[picks], ts, source.clock())
                    last_sample = time.monotonic()
                marker_queue.extend(source.pull_markers() if use_markers else [])
                # markers -> stream samples, once the data reach them
                while marker_queue and ring.n and marker_queue[0][1] + self.marker_delay <= ring.ts[ring.n - 1]:
                    label, t = marker_queue.popleft()
                    if wanted is not None and label not in wanted:
                        continue
                    s = ring.sample_at(t + self.marker_delay)
                    if s is None:
                        logger.warning("stream: marker %r at %.3f came before the buffered samples; skipped", label, t)
                        continue
                    pending.append((label, s))
                while hop is not None and plan.extent(next_hop)[1] <= ring.stop:
                    pending.append((None, next_hop))
                    next_hop += hop
                ready: list[tuple[str | None, int]] = []
                while pending and plan.extent(pending[0][1])[1] <= ring.stop:
                    event = pending.popleft()
                    if plan.extent(event[1])[0] < ring.start:
                        logger.warning("stream: the window of event %r (sample %d) starts before the buffered "
                                       "samples (%d); skipped", event[0], event[1], ring.start)
                        continue
                    ready.append(event)
                if self.max_windows is not None:
                    ready = ready[:int(self.max_windows) - n_done]
                if ready:
                    for result in self._decode(decoder, plan, ring, ready, unit, source, writer, n_done):
                        n_done += 1
                        self.results_.append(result)
                        bar.update(1)
                        yield result
                if self.max_windows is not None and n_done >= int(self.max_windows):
                    reason = "max_windows"
                    break
                if not len(ts):
                    if getattr(source, "exhausted", False):  # what is still pending cannot complete
                        break
                    if time.monotonic() - last_sample > float(self.timeout):
                        if ring.stop == 0:
                            raise StreamNotFoundError(format_error(
                                "source", f"samples from stream {meta.name!r}",
                                f"none in {self.timeout:g} s", "Check that the acquisition is running"))
                        reason = f"no sample for {self.timeout:g} s"
                        break
                    time.sleep(0.001)
        finally:
            bar.close()
            writer.write({"type": "end", "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "n_windows": n_done,
                          "reason": reason, "samples": int(ring.stop)})
            writer.close()

    def _decode(self, decoder: Any, plan: WindowPlan, ring: _Ring, ready: list[tuple[str | None, int]],
                unit: np.ndarray | None, source: Any, writer: _Writer, index0: int) -> Iterator[dict[str, Any]]:
        X = np.stack([extract_window(plan, ring.data[:, :ring.n], s, offset=ring.start) for _, s in ready])
        t0 = time.perf_counter()
        emb = np.asarray(decoder.decode(X, self.subject), np.float32)
        decode_s = time.perf_counter() - t0
        k = int(self.top_k)
        scores = None
        if unit is not None:
            e = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
            scores = e @ unit.T
        for j, (label, s) in enumerate(ready):
            last = plan.extent(s)[1] - 1 - ring.start
            end = min(plan.window_end(s), ring.stop - 1) - ring.start
            result: dict[str, Any] = {
                "type": "window", "index": index0 + j, "event": label, "event_sample": int(s),
                "event_time": float(ring.ts[s - ring.start]), "window_end_time": float(ring.ts[end]),
                "sample_time": float(ring.ts[last]), "received_time": float(ring.recv[last]),
                "decode_s": decode_s, "embedding": emb[j]}
            if scores is not None:
                order = np.argsort(-scores[j], kind="stable")[:k]
                result["top_k"] = [{"id": str(decoder.candidate_ids[i]), "score": float(scores[j, i])} for i in order]
            result["written_time"] = float(source.clock())
            result["latency_s"] = result["written_time"] - result["sample_time"]
            writer.write(result)
            yield result


class _Writer:
    """Append-only JSON lines, one ``write`` and a flush per result (None: nothing written)."""

    def __init__(self, path: Any) -> None:
        self._fh = None
        if path is not None:
            p = Path(path).expanduser()
            p.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(p, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            return
        rec = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in record.items()}
        self._fh.write(json.dumps(rec) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
