"""Per-channel input scaling held by an M/EEG decoder (shared by ATM and GLIM; not a decoder itself).

A decoder registers two buffers, ``input_mean`` and ``input_std`` of shape (n_rows, n_channels)
(one row per subject, or a single row), applies ``(x - mean) / std`` to its raw input, and sets
them with :func:`store_channel_scaling`, which validates the statistics and makes the buffers part
of the checkpoint from then on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from .._core.errors import ShapeMismatchError, ValidationError
from .._core.validation import check_array, format_error

__all__ = ["store_channel_scaling"]


def _channel_stat(value: Any, name: str, n_channels: int, hint: str) -> np.ndarray:
    arr = check_array(value, name, dtype=np.float64)
    if arr.shape != (n_channels,):
        raise ShapeMismatchError(format_error(name, f"one value per channel, shape ({n_channels},)", arr, hint))
    return arr


@torch.no_grad()
def store_channel_scaling(module: nn.Module, mean: Any, std: Any, rows: int | slice, n_channels: int, *,
                          hint: str) -> None:
    """Check ``mean`` / ``std`` (finite, one per channel, ``std > 0``) and write them into row(s) ``rows``.

    Parameters
    ----------
    module : torch.nn.Module
        Holds the buffers ``input_mean`` and ``input_std`` of shape (n_rows, n_channels).
    mean, std : array-like of shape (n_channels,)
        Per-channel statistics, in the model's channel order.
    rows : int or slice
        The row of one subject, or ``slice(None)`` for every row.
    n_channels : int
        The model's number of channels.
    hint : str
        How to compute the statistics (the fix of a shape error).
    """
    m = _channel_stat(mean, "mean", n_channels, hint)
    sd = _channel_stat(std, "std", n_channels, hint)
    mean_buf, ref = module.get_buffer("input_mean"), module.get_buffer("input_std")
    m_t, sd_t = (torch.as_tensor(v, dtype=ref.dtype, device=ref.device) for v in (m, sd))
    bad = np.flatnonzero(~(sd_t > 0).cpu().numpy())  # in the buffers' precision: no std rounds to 0
    if bad.size:
        raise ValidationError(format_error(
            "std", "positive values (one per channel)", f"{sd[bad[0]]:g} at channel(s) {bad[:5].tolist()}",
            "Use 1 for a constant (e.g. zero-padded) channel"))
    mean_buf[rows] = m_t
    ref[rows] = sd_t
    for name in ("input_mean", "input_std"):  # from now on the statistics are part of the checkpoint
        module.register_buffer(name, getattr(module, name), persistent=True)
