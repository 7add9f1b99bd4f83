"""`neurodecode stream`: decode a live MEG/EEG LSL stream with a trained run, window by window.

A thin call into :class:`neurodecode.estimators.stream.StreamDecoder`: each window's result (embedding,
top-k candidate images, latency stamps) is appended to ``--out`` as one JSON line, flushed, and a
one-line summary is printed per window (``--json``: one summary document at the end).
"""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import fail, handle_errors, print_json


def register(app: typer.Typer) -> None:
    @app.command("stream", help="Decode a live MEG/EEG LSL stream with a trained run: one window per event marker "
                                "(or every --hop seconds), results appended to a JSON-lines file.")
    @handle_errors
    def stream(
        checkpoint: Path = typer.Option(..., "--checkpoint", help="The run folder of neurodecode train (ATM on "
                                        "THINGS-MEG/EEG2, or a subject's folder in it; the MEG real-time "
                                        "brain module)."),
        source: str = typer.Option(..., "--source", help="lsl://<name> of the data stream."),
        markers: str | None = typer.Option(None, "--markers", help="lsl://<name> of the event-marker stream."),
        hop: float | None = typer.Option(None, "--hop", help="Without markers: seconds between window starts."),
        out: Path | None = typer.Option(None, "--out", help="JSON-lines file the results are appended to."),
        max_windows: int | None = typer.Option(None, "--max-windows", min=1, help="Stop after N windows."),
        subject: str | None = typer.Option(None, "--subject", "-s", help="Which model of a per-subject run "
                                           "(sub-BIGMEG1...), or the subject layer of a cross-subject one."),
        candidates: Path | None = typer.Option(None, "--candidates", help="Folder of candidate images for "
                                               "retrieval (default: the test images of the run's dataset)."),
        top_k: int = typer.Option(5, "--top-k", min=1, help="Candidates listed per window."),
        events: list[str] = typer.Option([], "--event", help="Only markers with this label (repeatable)."),
        marker_delay: float = typer.Option(0.0, "--marker-delay", help="Seconds added to every marker time "
                                           "(1/sfreq for files replayed by mne-lsl's player)."),
        raw_sfreq: float | None = typer.Option(None, "--raw-sfreq", help="Accept a stream at this rate although "
                                               "the training recordings had another."),
        timeout: float = typer.Option(10.0, "--timeout", min=0.001, help="Seconds to wait for the streams, and "
                                      "without samples before stopping."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
        json_: bool = typer.Option(False, "--json", help="Print a summary as JSON at the end."),
    ) -> None:
        for name, value in (("--source", source), ("--markers", markers)):
            if value is not None and (not value.startswith("lsl://") or value == "lsl://"):
                fail(f"{name}: expected lsl://<stream name>, got {value!r}.", 2)
        if (markers is None) == (hop is None):
            fail("stream needs exactly one of --markers lsl://<name> (a window per event) and --hop S (a window "
                 f"every S seconds); got {'both' if markers else 'neither'}.", 2)
        if hop is not None and not hop > 0:
            fail(f"--hop: expected seconds > 0, got {hop}.", 2)
        import numpy as np

        from .._core.logging import logger
        from ..estimators.stream import StreamDecoder

        live = StreamDecoder(checkpoint, source, markers=markers, hop=hop, subject=subject,
                             events=list(events) or None, top_k=top_k, out=out, max_windows=max_windows,
                             timeout=timeout, marker_delay=marker_delay, candidates=candidates, raw_sfreq=raw_sfreq,
                             device=device, verbose=False if json_ else logger.level < 40)
        latencies = []
        for r in live.iter_results():
            latencies.append(r["latency_s"])
            if not json_:
                best = r["top_k"][0]["id"] if r.get("top_k") else "-"
                typer.echo(f"window {r['index']}: event {r['event']} -> {best} "
                           f"(latency {r['latency_s'] * 1e3:.1f} ms)")
        lat = np.asarray(latencies, dtype=np.float64)
        summary = {"n_windows": len(latencies), "out": None if out is None else str(out),
                   "stream": live.stream_.name, "latency_ms": {
                       "median": float(np.median(lat) * 1e3) if lat.size else None,
                       "p95": float(np.percentile(lat, 95) * 1e3) if lat.size else None}}
        if json_:
            print_json(summary)
        else:
            typer.echo(f"{summary['n_windows']} windows decoded" + (f" -> {out}" if out else ""))
