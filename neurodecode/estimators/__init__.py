"""sklearn-style estimators (``fit`` / ``predict`` / ``score``) over NumPy arrays, :class:`~neurodecode.data.Trials`,
``mne.Epochs`` and nibabel images (converted by :func:`neurodecode.data.as_brain_array`)."""

from ._meeg import ATMDecoder
from ._neural import NeuralDecoder
from ._ridge import RidgeDecoder

__all__ = ["ATMDecoder", "NeuralDecoder", "RidgeDecoder"]
