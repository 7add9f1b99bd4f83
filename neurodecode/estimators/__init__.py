"""sklearn-style estimators (``fit`` / ``predict`` / ``score``) over NumPy arrays, :class:`~neurodecode.data.Trials`,
``mne.Epochs`` and nibabel images (converted by :func:`neurodecode.data.as_brain_array`).

Live decoding of a trained run on an LSL stream lives in :mod:`neurodecode.estimators.stream`
(``StreamDecoder``)."""

from ._meeg import ATMDecoder
from ._neural import NeuralDecoder
from ._ridge import RidgeDecoder

__all__ = ["ATMDecoder", "NeuralDecoder", "RidgeDecoder"]
