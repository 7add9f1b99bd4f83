"""Device and dtype resolution.

CPU and float32 unless asked. ``"auto"`` picks CUDA when available (and logs the
choice); reduced precision is only used when requested, with a one-time warning.
"""

from __future__ import annotations

import warnings
from typing import Any

from .errors import ValidationError
from .logging import logger
from .validation import check_option, format_error

__all__ = ["resolve_device", "resolve_dtype", "backend_report"]

_DTYPES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "float64": "float64", "fp64": "float64", "double": "float64",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16",
}
_warned_reduced: set[str] = set()


def resolve_device(device: Any = "cpu") -> Any:
    """Turn ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"auto"`` or a ``torch.device`` into a ``torch.device``.

    Parameters
    ----------
    device : str or torch.device or None
        ``None`` means ``"cpu"``. ``"auto"`` picks ``cuda`` when available, else ``cpu``,
        and logs its choice at INFO level.

    Returns
    -------
    device : torch.device
    """
    import torch

    if device is None:
        return torch.device("cpu")
    if isinstance(device, torch.device):
        dev = device
    else:
        name = str(device).lower()
        if name == "auto":
            dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            logger.info("device='auto' chose %s", dev)
            return dev
        try:
            dev = torch.device(name)
        except RuntimeError as exc:
            raise ValidationError(
                format_error("device", "'auto', 'cpu', 'cuda' or 'cuda:N'", device)
            ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValidationError(
            format_error("device", "an available device", str(dev),
                         "No CUDA device is visible here; use device='cpu' or 'auto'")
        )
    return dev


def resolve_dtype(dtype: Any = "float32", device: Any = None) -> Any:
    """Turn a dtype name or ``torch.dtype`` into a ``torch.dtype``.

    Parameters
    ----------
    dtype : str or torch.dtype or None
        ``"float32"`` (default), ``"float64"``, ``"bfloat16"``, ``"float16"``, or ``"auto"``
        (bfloat16 on a CUDA device that supports it, else float32).
    device : torch.device or str or None
        Used by ``"auto"``.

    Returns
    -------
    dtype : torch.dtype
    """
    import torch

    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        name = str(dtype).replace("torch.", "")
    else:
        name = str(dtype).lower()
        if name == "auto":
            dev = resolve_device(device) if device is not None else torch.device("cpu")
            if dev.type == "cuda" and torch.cuda.is_bf16_supported():
                logger.info("dtype='auto' chose bfloat16 on %s", dev)
                name = "bfloat16"
            else:
                name = "float32"
        name = check_option(name, "dtype", list(_DTYPES)) and _DTYPES[name]
    result = getattr(torch, name)
    if name in ("bfloat16", "float16") and name not in _warned_reduced:
        _warned_reduced.add(name)
        warnings.warn(f"neurodecode: computing in reduced precision ({name}).", UserWarning, stacklevel=2)
    return result


def backend_report() -> dict[str, Any]:
    """Describe the compute backends: CUDA devices, bf16 and fused-attention (SDPA) availability.

    Returns
    -------
    report : dict
        Keys ``cuda_available``, ``cuda_devices``, ``cuda_version``, ``bf16_supported``,
        ``sdpa_flash``, ``sdpa_mem_efficient``, ``sdpa_math``, ``mps_available``,
        ``num_threads``.
    """
    import torch

    cuda = torch.cuda.is_available()
    report: dict[str, Any] = {
        "cuda_available": cuda,
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "cuda_version": torch.version.cuda,
        "bf16_supported": bool(cuda and torch.cuda.is_bf16_supported()),
        "sdpa_flash": bool(cuda and torch.backends.cuda.flash_sdp_enabled()
                           and torch.cuda.get_device_capability()[0] >= 8),
        "sdpa_mem_efficient": bool(cuda and torch.backends.cuda.mem_efficient_sdp_enabled()),
        "sdpa_math": True,
        "mps_available": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
        "num_threads": torch.get_num_threads(),
    }
    return report
