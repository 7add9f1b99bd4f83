"""Training configuration (one dataclass for every neural decoder)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .._core.errors import ValidationError
from .._core.validation import check_option, dataclass_from_dict, format_error

__all__ = ["TrainConfig"]

OPTIMIZERS = ("adamw", "adam")
SCHEDULERS = ("onecycle", "cosine", "constant")
PRECISIONS = ("fp32", "bf16", "fp16")
DISTRIBUTED = ("ddp", "fsdp", "deepspeed")


@dataclass
class TrainConfig:
    """How to train a decoder with :class:`~neurodecode.train.Trainer`.

    Parameters
    ----------
    epochs : int
        Passes over the training source.
    batch_size : int
        Global batch size (summed over processes). Batch sources take their own
        ``batch_size``; this value is used by the CLI and estimators to build them.
    lr : float
        Peak learning rate (the OneCycle maximum).
    weight_decay : float
        Decoupled weight decay, applied to matrices only (biases and norms get none).
    optimizer : {"adamw", "adam"}
    scheduler : {"onecycle", "cosine", "constant"}
    pct_start : float
        Fraction of the steps spent warming up (OneCycle).
    warmup_steps : int
        ``"cosine"`` and ``"constant"`` only: a linear warm-up from 0 to ``lr`` over this many steps
        first, then the schedule over the remaining steps (diffusers' ``get_cosine_schedule_with_warmup``
        / ``get_constant_schedule_with_warmup``; ATM's diffusion prior: 500). 0: none.
    final_div_factor : float
        OneCycle: the last learning rate is ``lr / 25 / final_div_factor`` (PyTorch's default 1e4;
        MindBridge 100, MindEye2 1000).
    cycle_momentum : bool
        OneCycle: cycle Adam's beta1 inversely to the learning rate (0.95 -> 0.85 -> 0.95), PyTorch's
        default and what MindBridge and MindEye2 ran with.
    betas : tuple of float
        Adam betas.
    max_steps : int or None
        Stop after this many optimizer steps (the schedule spans them); ``None`` runs all epochs.
    seed : int
        Seeds the global torch RNG (plus the process rank) and every batch order.
    precision : {"fp32", "bf16", "fp16"}
        Autocast precision, applied by accelerate (bf16 on GPU; fp16 needs CUDA).
    compile : bool
        ``torch.compile`` the training step.
    device : {"auto", "cpu", "cuda"}
        ``"auto"`` uses CUDA when available.
    grad_clip : float or None
        Clip the global gradient norm to this value.
    checkpoint_every : int or None
        Save a resumable checkpoint every this many steps (and always at the end) when
        the trainer has an ``out_dir``.
    keep_checkpoints : int
        How many step checkpoints to keep (older ones are deleted).
    log_every : int
        Read the device-side metric sums back to the host every this many steps.
    keep_data_on_device : bool
        Move the training arrays to the device once (when they fit) and index them there.
    distributed : {"ddp", "fsdp", "deepspeed"}
        Strategy when several processes run (``accelerate launch`` / ``torchrun``); FSDP and
        DeepSpeed are passed through to accelerate and are not tested on our machines.
    scale_lr_with_processes : bool
        Multiply ``lr`` by the number of processes (MindBridge's recipe).
    verbose : bool or str or None
        Progress bar and log level (see :func:`neurodecode._core.logging.set_log_level`).
    """

    epochs: int = 1
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 1e-2
    optimizer: str = "adamw"
    scheduler: str = "onecycle"
    pct_start: float = 2 / 25
    warmup_steps: int = 0
    final_div_factor: float = 1e4
    cycle_momentum: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    max_steps: int | None = None
    seed: int = 0
    precision: str = "fp32"
    compile: bool = False
    device: str = "auto"
    grad_clip: float | None = None
    checkpoint_every: int | None = 500
    keep_checkpoints: int = 2
    log_every: int = 50
    keep_data_on_device: bool = True
    distributed: str = "ddp"
    scale_lr_with_processes: bool = False
    verbose: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_option(self.optimizer, "optimizer", OPTIMIZERS)
        check_option(self.scheduler, "scheduler", SCHEDULERS)
        check_option(self.precision, "precision", PRECISIONS)
        check_option(self.distributed, "distributed", DISTRIBUTED)
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        for name in ("epochs", "batch_size", "log_every", "keep_checkpoints"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValidationError(format_error(name, "a positive integer", value))
        for name in ("max_steps", "checkpoint_every"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValidationError(format_error(name, "a positive integer or None", value,
                                                   f"Pass {name}=None to turn it off"))
        if not (self.lr > 0):
            raise ValidationError(format_error("lr", "a positive learning rate", self.lr))
        if not (self.final_div_factor > 0):
            raise ValidationError(format_error("final_div_factor", "a positive number", self.final_div_factor))
        if not (0 < self.pct_start < 1):
            raise ValidationError(format_error("pct_start", "a fraction in (0, 1)", self.pct_start))
        w = self.warmup_steps
        if not isinstance(w, int) or isinstance(w, bool) or w < 0:
            raise ValidationError(format_error("warmup_steps", "a non-negative integer", w))
        if w and self.scheduler == "onecycle":
            raise ValidationError(format_error("warmup_steps", "0 with scheduler='onecycle' (it warms up itself)", w,
                                               "Set pct_start for OneCycle, or use scheduler='cosine' or 'constant'"))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a dict (e.g. a recipe's ``[train]`` table), refusing unknown keys with their list."""
        return dataclass_from_dict(cls, values, "train", ignore=())

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of the fields."""
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        return out
