"""eSpeak NG through its C library (ctypes): text -> 16-bit speech and word onsets.

Self-contained on purpose (only ctypes, json and NumPy): :func:`neurodecode.simulate.speech.synthesize_sentences`
runs it by file path in a fresh interpreter, without importing the package. The library and its voice data
come from the ``espeakng-loader`` wheel, else from a system ``libespeak-ng`` (Debian ``espeak-ng``).

eSpeak NG C API used: ``espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data_dir, 0)`` (returns the rate,
22050 Hz), ``espeak_SetSynthCallback``, ``espeak_SetVoiceByName``, ``espeak_Synth(text, size, 0, POS_CHARACTER,
0, espeakCHARS_UTF8, NULL, NULL)``, ``espeak_Synchronize``; the callback receives the samples and the events
(``espeak_EVENT``: type, unique id, text position, length, audio position, sample, user data, id), of which
the word events (type 1) give each word's first character and first sample.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["speak", "INSTALL_HINT"]

INSTALL_HINT = ("speech synthesis needs eSpeak NG: `pip install espeakng-loader` (ships the library and its voices) "
                "or the Debian package `espeak-ng` (libespeak-ng1)")


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))
_ENGINE: dict[str, Any] = {}
_LOCK = threading.Lock()


def _engine() -> tuple[Any, int]:
    if "lib" in _ENGINE:
        return _ENGINE["lib"], _ENGINE["sr"]
    data_dir: str | None = None
    try:
        import espeakng_loader

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data_dir = os.path.dirname(espeakng_loader.get_data_path())
    except ImportError:
        name = ctypes.util.find_library("espeak-ng")
        if name is None:
            raise ImportError(INSTALL_HINT) from None
        lib = ctypes.CDLL(name)
    lib.espeak_Initialize.restype = ctypes.c_int
    sr = lib.espeak_Initialize(2, 0, data_dir.encode() if data_dir else None, 0)
    if sr <= 0:
        raise ImportError(f"eSpeak NG failed to initialise (code {sr}); {INSTALL_HINT}")
    _ENGINE.update(lib=lib, sr=int(sr))
    return lib, int(sr)


def speak(text: str, voice: str = "en-us") -> tuple[np.ndarray, int, list[tuple[str, float]]]:
    """Speak ``text``: int16 samples at the engine's rate, the rate, and ``(word, onset s)`` per word event.

    eSpeak NG speaks some unstressed words together with a neighbour under one event ("at a"), so a word runs
    from its event's character to the next event's.
    """
    raw = text.encode("utf-8")
    with _LOCK:
        lib, native = _engine()
        chunks: list[np.ndarray] = []
        events: list[tuple[int, int, int]] = []

        def collect(wav: Any, n: int, ev: Any) -> int:
            if n > 0:
                chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            i = 0
            while ev[i].type != 0:
                events.append((ev[i].type, ev[i].text_position, ev[i].sample))
                i += 1
            return 0

        cb = _CALLBACK(collect)
        lib.espeak_SetSynthCallback(cb)
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"voice: expected an eSpeak NG voice such as 'en-us', got {voice!r}")
        buf = ctypes.create_string_buffer(raw)
        lib.espeak_Synth(buf, len(raw) + 1, 0, 1, 0, 1, None, None)
        lib.espeak_Synchronize()
    wave = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
    marks = [(pos, sample) for typ, pos, sample in events if typ == 1]
    words = []
    for i, (pos, sample) in enumerate(marks):
        stop = marks[i + 1][0] - 1 if i + 1 < len(marks) else len(raw)
        words.append((raw[pos - 1: stop].decode("utf-8", "replace").strip().strip(".,;:!?\"'"), sample / native))
    return wave, native, words


def _main(spec_path: str) -> None:
    """Speak every text of ``spec_path`` (JSON ``texts``, ``voice``) in order; write ``speech.npz`` and
    ``words.json`` beside it."""
    spec = json.loads(Path(spec_path).read_text())
    res = [speak(t, spec["voice"]) for t in spec["texts"]]
    folder = Path(spec_path).parent
    np.savez(folder / "speech.npz", **{f"wave{k}": r[0] for k, r in enumerate(res)})  # type: ignore[arg-type]
    (folder / "words.json").write_text(json.dumps({"sr": res[0][1] if res else 0, "words": [r[2] for r in res]}))


if __name__ == "__main__":  # pragma: no cover - run by synthesize_sentences in a fresh process
    _main(sys.argv[1])
