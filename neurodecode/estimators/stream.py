"""Live decoding: a trained run applied window by window to an MEG/EEG stream (LSL via mne-lsl).

>>> from neurodecode.estimators.stream import StreamDecoder                          # doctest: +SKIP
>>> StreamDecoder("runs/atm-meg", "lsl://MEG", markers="lsl://Markers", out="live.jsonl").run()  # doctest: +SKIP

:class:`StreamDecoder` reads the stream, cuts a window per event marker (or every ``hop`` seconds),
prepares it as the offline loaders prepare their epochs (:class:`WindowSpec`), decodes it with a
*window decoder* (:func:`load_window_decoder` builds one from a run folder) and yields / writes each
result. :class:`ArraySource` replays an array through the same code; :class:`LSLSource` is the LSL
reader. See ``docs/streaming.md``.
"""

from ._stream import ArraySource, LSLSource, StreamDecoder, StreamNotFoundError
from ._stream_windows import WindowSpec
from ._window_decoders import WindowDecoder, load_window_decoder

__all__ = ["StreamDecoder", "ArraySource", "LSLSource", "StreamNotFoundError", "WindowSpec", "WindowDecoder",
           "load_window_decoder"]
