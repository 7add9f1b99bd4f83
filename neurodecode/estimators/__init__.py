"""sklearn-style estimators (``fit`` / ``predict`` / ``score``) over NumPy arrays, :class:`~neurodecode.data.Trials`,
``mne.Epochs`` and nibabel images (converted by :func:`neurodecode.data.as_brain_array`)."""

from ._meeg import ATMDecoder
from ._neural import NeuralDecoder
from ._ridge import RidgeDecoder
from ._stream import ArraySource, LSLSource, StreamDecoder
from ._window_decoders import load_window_decoder

__all__ = ["ATMDecoder", "NeuralDecoder", "RidgeDecoder", "StreamDecoder", "ArraySource", "LSLSource",
           "load_window_decoder"]
