"""Subject adapters: per-subject maps into (and out of) a shared space, keyed by subject id.

Every adapter knows its subject and input size and refuses other sizes with a message
naming both. Banks are ``nn.ModuleDict`` keyed by a sanitised subject id (never by list
position), so adding or reordering subjects never mixes weights up.

- :class:`LinearAdapter`: one ``Linear(n_voxels, width)`` (MindEye2; linear beats MLP adapters).
- :class:`MindBridgeEmbedder`: adaptive pooling of the voxel vector to a fixed size (8192),
  a residual ReLU bottleneck (8192 -> 128 -> 8192, zero-initialised up-projection), then
  ``Linear -> LayerNorm -> GELU -> Dropout`` to the shared width (2048).
- :class:`MindBridgeBuilder`: the inverse map, ``Linear -> LayerNorm -> GELU`` from the shared width
  to the pooled voxels, then a bottleneck adapter.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from .._core.errors import MetadataMismatchError, ShapeMismatchError, ValidationError
from .._core.validation import check_option, format_error

__all__ = ["subject_key", "SubjectAdapter", "LinearAdapter", "BottleneckAdapter", "MindBridgeEmbedder",
           "MindBridgeBuilder", "AdapterBank", "adaptive_resize"]

POOLING = ("max", "avg", "linear")


def subject_key(subject: str) -> str:
    """Module-safe key of a subject id (``"nsd/subj01"`` -> ``"nsd__subj01"``)."""
    if not isinstance(subject, str) or not subject:
        raise ValidationError(format_error("subject", "a non-empty subject id string", subject,
                                           "Use dataset-namespaced ids such as 'nsd/subj01'"))
    return re.sub(r"[^0-9A-Za-z_-]", "_", subject.replace("/", "__"))


def adaptive_resize(x: torch.Tensor, size: int, mode: str = "max") -> torch.Tensor:
    """Resize the last axis of ``x`` (batch, n) to ``size`` by adaptive max/avg pooling or linear interpolation.

    ``"linear"`` interpolates with ``align_corners=False``, as MindBridge's ``resize`` option.
    """
    check_option(mode, "pool", POOLING)
    if x.shape[-1] == size and mode != "linear":
        return x
    x3 = x.unsqueeze(1)
    if mode == "max":
        out = nn.functional.adaptive_max_pool1d(x3, size)
    elif mode == "avg":
        out = nn.functional.adaptive_avg_pool1d(x3, size)
    else:
        out = nn.functional.interpolate(x3, size=size, mode="linear", align_corners=False)
    return out.squeeze(1)


class SubjectAdapter(nn.Module):
    """Base class: one subject, a fixed input size, a checked ``forward``."""

    def __init__(self, subject: str, n_inputs: int) -> None:
        super().__init__()
        if not isinstance(n_inputs, int) or n_inputs < 1:
            raise ValidationError(format_error("n_inputs", "a positive number of voxels/features", n_inputs))
        self.subject = subject
        self.n_inputs = n_inputs

    def check_input(self, x: torch.Tensor) -> None:
        """Refuse inputs whose last axis is not this subject's size."""
        if x.ndim != 2 or x.shape[-1] != self.n_inputs:
            raise ShapeMismatchError(format_error(
                f"X for subject {self.subject!r}", f"an array of shape (n_trials, {self.n_inputs})",
                f"shape {tuple(x.shape)}",
                f"This adapter was built for {self.subject}'s {self.n_inputs} voxels; check the subject id "
                "and the mask (nsdgeneral) used to extract the betas"))

    def extra_repr(self) -> str:
        return f"subject={self.subject!r}, n_inputs={self.n_inputs}"


class LinearAdapter(SubjectAdapter):
    """``Linear(n_voxels, width)`` for one subject (MindEye2).

    Parameters
    ----------
    subject : str
        Subject id (e.g. ``"nsd/subj01"``).
    n_inputs : int
        Number of voxels of this subject.
    width : int
        Shared width (4096 in MindEye2, 1024 in its low-compute variant).
    """

    def __init__(self, subject: str, n_inputs: int, width: int) -> None:
        super().__init__(subject, n_inputs)
        self.linear = nn.Linear(n_inputs, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.linear(x)


class BottleneckAdapter(nn.Module):
    """Residual bottleneck ``x + up(relu(down(x)))`` that starts as the identity (MindBridge's adapter).

    ``up`` (weights and bias) and ``down``'s bias start at zero, ``down``'s weight with PyTorch's
    default (Kaiming-uniform) initialisation, as in the reference's LoRA-style initialisation.
    """

    def __init__(self, dim: int, bottleneck: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(nn.functional.relu(self.down(x)))


class MindBridgeEmbedder(SubjectAdapter):
    """MindBridge's per-subject embedder: pool -> bottleneck adapter -> Linear -> LayerNorm -> GELU -> Dropout.

    Parameters
    ----------
    subject : str
        Subject id.
    n_inputs : int
        Number of voxels of this subject (12.7k-17.9k with nsdgeneral).
    pooled : int
        Size every subject is pooled to (8192).
    bottleneck : int
        Adapter bottleneck (128).
    width : int
        Shared embedding width (2048).
    dropout : float
        Dropout after the GELU (0.5).
    pool : {"max", "avg", "linear"}
        Aggregation: adaptive max pooling (the paper), average pooling or linear resizing.
    """

    def __init__(self, subject: str, n_inputs: int, pooled: int = 8192, bottleneck: int = 128,
                 width: int = 2048, dropout: float = 0.5, pool: str = "max") -> None:
        super().__init__(subject, n_inputs)
        self.pool_mode = check_option(pool, "pool", POOLING)
        self.pooled = pooled
        self.adapter = BottleneckAdapter(pooled, bottleneck)
        self.proj = nn.Linear(pooled, width)
        self.norm = nn.LayerNorm(width)
        self.drop = nn.Dropout(dropout)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled voxels, shape (batch, pooled): the target of the builder."""
        self.check_input(x)
        return adaptive_resize(x, self.pooled, self.pool_mode)

    def embed_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """Embed already pooled voxels (used by the cycle loss)."""
        return self.drop(nn.functional.gelu(self.norm(self.proj(self.adapter(pooled)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed_pooled(self.pool(x))


class MindBridgeBuilder(SubjectAdapter):
    """MindBridge's per-subject builder: shared embedding -> pooled voxels.

    ``Linear(width, pooled) -> LayerNorm(pooled) -> GELU -> bottleneck adapter`` (18,907,264
    parameters at real size).
    """

    def __init__(self, subject: str, n_inputs: int, pooled: int = 8192, bottleneck: int = 128,
                 width: int = 2048) -> None:
        super().__init__(subject, n_inputs)
        self.width = width
        self.proj = nn.Linear(width, pooled)
        self.norm = nn.LayerNorm(pooled)
        self.adapter = BottleneckAdapter(pooled, bottleneck)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.ndim != 2 or h.shape[-1] != self.width:
            raise ShapeMismatchError(format_error(f"embedding for subject {self.subject!r}",
                                                  f"shape (batch, {self.width})", f"shape {tuple(h.shape)}"))
        return self.adapter(nn.functional.gelu(self.norm(self.proj(h))))


class AdapterBank(nn.Module):
    """Adapters keyed by subject id (``nn.ModuleDict`` under sanitised keys).

    Parameters
    ----------
    adapters : iterable of SubjectAdapter
        Initial adapters (more can be added with :meth:`add`).
    """

    def __init__(self, adapters: Any = ()) -> None:
        super().__init__()
        self.adapters = nn.ModuleDict()
        for a in adapters:
            self.add(a)

    def add(self, adapter: SubjectAdapter) -> SubjectAdapter:
        """Register ``adapter`` under its subject id (refusing a duplicate)."""
        key = subject_key(adapter.subject)
        if key in self.adapters:
            raise MetadataMismatchError(format_error("subject", "a subject not yet in the bank", repr(adapter.subject),
                                                     "Each subject id (after sanitising) must be unique"))
        self.adapters[key] = adapter
        return adapter

    def __getitem__(self, subject: str) -> SubjectAdapter:
        key = subject_key(subject)
        if key not in self.adapters:
            raise MetadataMismatchError(format_error("subject", "one of " + ", ".join(map(repr, self.subjects)),
                                                     repr(subject), "Add the subject first (add_subject) or fix the id"))
        adapter: SubjectAdapter = self.adapters[key]  # type: ignore[assignment]
        return adapter

    def __contains__(self, subject: object) -> bool:
        return isinstance(subject, str) and bool(subject) and subject_key(subject) in self.adapters

    def __iter__(self) -> Iterator[SubjectAdapter]:  # type: ignore[override]
        return iter(self.adapters.values())  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.adapters)

    @property
    def subjects(self) -> list[str]:
        """Subject ids in insertion order."""
        return [a.subject for a in self.adapters.values()]  # type: ignore[misc]

    def forward(self, x: torch.Tensor, subject: str) -> torch.Tensor:
        return self[subject](x)
