"""Which shards this process computes, under ``torchrun`` / ``accelerate launch`` / SLURM.

Launchers export ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (torchrun and accelerate do);
each process takes every ``WORLD_SIZE``-th shard, writes its own files (its rank in the
file name) and the last one to finish merges the manifest. No process group or barrier
is needed, so the same code runs on one CPU, several GPUs or several nodes sharing a
file system.
"""

from __future__ import annotations

import os
from typing import Any

from .._core.errors import ValidationError
from .._core.validation import format_error

__all__ = ["process_index", "shards_for_process", "local_device"]


def _env_int(*names: str) -> int | None:
    for name in names:
        value = os.environ.get(name)
        if value not in (None, ""):
            try:
                return int(value)  # type: ignore[arg-type]
            except ValueError as exc:
                raise ValidationError(format_error(name, "an integer environment variable", value)) from exc
    return None


def process_index() -> tuple[int, int]:
    """``(rank, world_size)`` of this process (``(0, 1)`` when not launched in parallel)."""
    world = _env_int("WORLD_SIZE", "SLURM_NTASKS") or 1
    rank = _env_int("RANK", "SLURM_PROCID") or 0
    if not 0 <= rank < world:
        raise ValidationError(format_error("RANK", f"an integer in [0, {world})", rank,
                                           "Check the launcher's RANK / WORLD_SIZE variables"))
    return rank, world


def shards_for_process(n_shards: int, rank: int, world: int) -> list[int]:
    """Shard indices handled by ``rank`` (round robin, so work stays balanced)."""
    return list(range(rank, n_shards, world))


def local_device(device: Any) -> Any:
    """``"cuda"`` becomes ``"cuda:LOCAL_RANK"`` under a launcher; other devices are kept."""
    local = _env_int("LOCAL_RANK")
    if local is not None and str(device) in ("cuda", "auto"):
        import torch

        if torch.cuda.is_available():
            return f"cuda:{local % max(torch.cuda.device_count(), 1)}"
    return device
