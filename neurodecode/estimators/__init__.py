"""sklearn-style estimators (``fit`` / ``predict`` / ``score``) over NumPy arrays and :class:`~neurodecode.data.Trials`."""

from ._neural import NeuralDecoder
from ._ridge import RidgeDecoder

__all__ = ["NeuralDecoder", "RidgeDecoder"]
