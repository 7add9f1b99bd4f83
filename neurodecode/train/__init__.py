"""The one trainer of every neural decoder (accelerate: one device, DDP, multi-node; resumable).

>>> from neurodecode.train import ArrayBatches, TrainConfig, Trainer          # doctest: +SKIP
>>> result = Trainer(model, TrainConfig(epochs=2), out_dir="runs/x").fit(
...     ArrayBatches({"x": X, "y": Y}, batch_size=32))                        # doctest: +SKIP

See :mod:`neurodecode.train._trainer` for what a trainable model provides.
"""

from __future__ import annotations

from ._batches import ArrayBatches, BatchSource, ChoiceRows, IndexedRows, MultiSubjectBatches
from ._checkpoint import latest_checkpoint
from ._config import TrainConfig
from ._trainer import Trainer, TrainResult, make_accelerator

__all__ = ["TrainConfig", "Trainer", "TrainResult", "ArrayBatches", "MultiSubjectBatches", "BatchSource", "IndexedRows", "ChoiceRows",
           "latest_checkpoint", "make_accelerator"]
