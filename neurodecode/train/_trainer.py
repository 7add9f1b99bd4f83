"""The one trainer of every neural decoder in neurodecode (built on Hugging Face accelerate).

A model trained here is an ``nn.Module`` with

``training_step(batch: dict, step: int) -> dict[str, Tensor]``
    returning at least ``"loss"``; every other entry is logged (summed on the device,
    read back every ``log_every`` steps: no per-step host synchronisation).

and optionally

``validation_step(batch, step) -> dict[str, Tensor]``
    used on the validation source (defaults to ``training_step`` without gradients);
``configure_training(total_steps: int, steps_per_epoch: int) -> None``
    called once before the first step (e.g. MindEye2 switches BiMixCo -> SoftCLIP after a third);
``optimizer_param_groups(weight_decay: float) -> list[dict]``
    to override the default groups (decay on matrices, none on biases and norms).

One process, several GPUs or several nodes: run the same script with ``accelerate launch``
or ``torchrun``; each process gets its slice of every global batch (DDP). FSDP and DeepSpeed
are selected with ``TrainConfig.distributed`` and passed through to accelerate (untested here).
"""

from __future__ import annotations

import functools
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import ValidationError
from .._core.files import atomic_write, write_json
from .._core.logging import logger, progress
from .._core.validation import format_error
from ._checkpoint import latest_checkpoint, load_checkpoint_files, save_checkpoint, set_rng_state
from ._config import TrainConfig

__all__ = ["Trainer", "TrainResult", "make_accelerator"]

METRICS_NAME = "metrics.jsonl"


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns.

    Attributes
    ----------
    history : list of dict
        One entry per log point (``step``, ``epoch``, ``lr``, averaged training metrics)
        and per validation (keys prefixed ``val/``).
    metrics : dict
        The last logged training metrics and the last validation metrics.
    checkpoint : pathlib.Path or None
        The last step checkpoint folder (``None`` without ``out_dir``).
    steps : int
        Optimizer steps done in total (including those before a resume).
    resumed_from : int
        Step the run resumed from (0 for a fresh run).
    """

    history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None
    steps: int = 0
    resumed_from: int = 0


def make_accelerator(config: TrainConfig) -> Any:
    """Build the ``accelerate.Accelerator`` for ``config`` (device, precision, distributed strategy)."""
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedDataParallelKwargs

    device = str(config.device).lower()
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValidationError(format_error("device", "an available device", device,
                                           "No CUDA device is visible here; use device='cpu' or 'auto'"))
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise ValidationError(format_error("device", "'auto', 'cpu' or 'cuda'", device))
    cpu = device == "cpu" or not torch.cuda.is_available()
    if config.precision == "fp16" and cpu:
        raise ValidationError(format_error("precision", "'fp32' or 'bf16' on CPU", "'fp16'",
                                           "fp16 autocast needs CUDA; use precision='bf16' or 'fp32'"))
    kwargs: dict[str, Any] = {
        "cpu": cpu,
        "mixed_precision": {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[config.precision],
        "kwargs_handlers": [DistributedDataParallelKwargs(find_unused_parameters=True)],
    }
    if config.distributed == "fsdp":
        from accelerate.utils import FullyShardedDataParallelPlugin

        kwargs["fsdp_plugin"] = FullyShardedDataParallelPlugin()
    elif config.distributed == "deepspeed":
        from accelerate.utils import DeepSpeedPlugin

        kwargs["deepspeed_plugin"] = DeepSpeedPlugin(zero_stage=2)
    try:
        return Accelerator(**kwargs)
    except ValueError as exc:
        # accelerate keeps one process-wide state; a single process may rebuild it with other settings
        single = int(os.environ.get("WORLD_SIZE", "1")) == 1
        if "already been initialized" in str(exc) and single:
            AcceleratorState._reset_state(True)
            return Accelerator(**kwargs)
        raise


def _history_at_checkpoint(state: dict[str, Any], metrics: Path | None) -> list[dict[str, Any]]:
    """The metric history of a checkpoint: the first ``metrics_lines`` lines of ``metrics.jsonl``.

    Checkpoints written before the history moved out of the state carry it as ``history``.
    """
    if "history" in state:
        return list(state["history"])
    n = int(state.get("metrics_lines", 0))
    if n == 0:
        return []
    lines: list[dict[str, Any]] = []
    if metrics is not None and metrics.is_file():
        with open(metrics, encoding="utf-8") as fh:
            for line in fh:
                if len(lines) == n:
                    break
                try:
                    lines.append(json.loads(line))
                except json.JSONDecodeError:
                    break
    if len(lines) < n:
        logger.warning("resume: %s holds %d of the %d metric lines logged before the checkpoint; the history "
                       "restarts from what is readable", metrics, len(lines), n)
    return lines


def _clean_leftovers(out: Path, ckpt_root: Path | None) -> None:
    """Remove what a killed run left: temporary files in ``out`` and unfinished checkpoint folders."""
    import shutil

    from .._core.files import clean_orphans

    clean_orphans(out)
    if ckpt_root is not None and ckpt_root.is_dir():
        clean_orphans(ckpt_root)
        for partial in ckpt_root.glob(".step_*.partial"):
            shutil.rmtree(partial, ignore_errors=True)
            logger.info("removed the unfinished checkpoint %s of an interrupted run", partial)


def _constant(_: int) -> float:
    return 1.0


def _warmup_then(step: int, *, warmup: int, total: int, cosine: bool) -> float:
    """Linear warm-up over ``warmup`` steps, then constant or a half cosine to 0 (diffusers' schedules)."""
    if step < warmup:
        return step / max(1, warmup)
    if not cosine:
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def _param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    if hasattr(model, "optimizer_param_groups"):
        groups: list[dict[str, Any]] = model.optimizer_param_groups(weight_decay)
        return groups
    decay: list[Any] = []
    no_decay: list[Any] = []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def _step_module(model: Any) -> Any:
    import torch

    class StepModule(torch.nn.Module):
        """Routes ``forward`` to ``training_step`` so DDP/FSDP hooks and autocast wrap the whole step."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.model = inner

        def forward(self, batch: dict[str, Any], step: int) -> Any:
            return self.model.training_step(batch, step)

    return StepModule(model)


class Trainer:
    """Train a decoder with AdamW/Adam, OneCycle/cosine/constant schedules and resumable checkpoints.

    Parameters
    ----------
    model : torch.nn.Module
        A module with ``training_step(batch, step) -> dict`` (see the module docstring).
    config : TrainConfig or dict or None
        Training settings (defaults if ``None``).
    out_dir : path-like or None
        Where checkpoints (``checkpoints/``), ``metrics.jsonl``, ``train_config.json`` and the
        final model (``save_pretrained`` layout, when the model has it) go. ``None`` keeps
        everything in memory.
    accelerator : accelerate.Accelerator or None
        Reuse an accelerator (built from ``config`` otherwise).

    Examples
    --------
    >>> trainer = Trainer(model, TrainConfig(epochs=3, lr=3e-4), out_dir="runs/x")   # doctest: +SKIP
    >>> result = trainer.fit(ArrayBatches({"x": X, "y": Y}, batch_size=32))         # doctest: +SKIP
    """

    def __init__(self, model: Any, config: TrainConfig | dict[str, Any] | None = None,
                 out_dir: str | os.PathLike[str] | None = None, accelerator: Any = None) -> None:
        self.model = model
        self.config = config
        self.out_dir = out_dir
        self.accelerator = accelerator

    # -- helpers -----------------------------------------------------------------------------------
    def _build_optimizer(self, config: TrainConfig, lr: float) -> Any:
        import torch

        groups = _param_groups(self.model, config.weight_decay)
        if not groups:
            raise ValidationError(format_error("model", "at least one trainable parameter", "none",
                                               "Unfreeze some parameters (requires_grad=True)"))
        cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
        return cls(groups, lr=lr, betas=config.betas)

    @staticmethod
    def _build_scheduler(config: TrainConfig, optimizer: Any, lr: float, total: int) -> Any:
        import torch

        if config.scheduler == "onecycle":
            return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(total, 2),
                                                       pct_start=config.pct_start,
                                                       final_div_factor=config.final_div_factor,
                                                       cycle_momentum=config.cycle_momentum)
        if config.warmup_steps:
            return torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(
                _warmup_then, warmup=config.warmup_steps, total=max(total, 1), cosine=config.scheduler == "cosine"))
        if config.scheduler == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total, 1))
        return torch.optim.lr_scheduler.LambdaLR(optimizer, _constant)

    # -- the loop ----------------------------------------------------------------------------------
    def fit(self, train: Any, val: Any = None, *, resume: bool = True) -> TrainResult:
        """Train on ``train`` (a batch source), validating on ``val`` after every epoch.

        Parameters
        ----------
        train : ArrayBatches or MultiSubjectBatches
            Training batches (anything with ``steps_per_epoch``, ``epoch(...)`` and ``to(device)``).
        val : batch source or None
            Validation batches (use ``shuffle=False``).
        resume : bool
            Continue from ``out_dir/checkpoints/latest`` when it exists.

        Returns
        -------
        result : TrainResult
        """
        import torch

        config = self.config if isinstance(self.config, TrainConfig) else TrainConfig.from_dict(dict(self.config or {}))
        acc = self.accelerator if self.accelerator is not None else make_accelerator(config)
        self.accelerator = acc
        rank, world = acc.process_index, acc.num_processes
        device = acc.device
        out = Path(self.out_dir) if self.out_dir is not None else None
        ckpt_root = out / "checkpoints" if out is not None else None

        spe = int(train.steps_per_epoch)
        if spe < 1:
            raise ValidationError(format_error("train", "a batch source with at least one step per epoch", spe,
                                               "Lower the batch size or add data"))
        total = spe * config.epochs
        if config.max_steps is not None:  # the schedule spans max_steps, whatever the epochs
            total = config.max_steps
        lr = config.lr * (world if config.scale_lr_with_processes else 1)

        torch.manual_seed(config.seed + rank)
        random.seed(config.seed + rank)
        np.random.seed((config.seed + rank) % 2**32)  # noqa: NPY002

        model = self.model
        model.to(device)
        if hasattr(model, "configure_training"):
            model.configure_training(total_steps=total, steps_per_epoch=spe)
        train.to(device, keep_on_device=config.keep_data_on_device)
        if val is not None:
            val.to(device, keep_on_device=config.keep_data_on_device)

        stepper = acc.prepare(_step_module(model))
        optimizer = self._build_optimizer(config, lr)
        scheduler = self._build_scheduler(config, optimizer, lr, total)
        optimizer = acc.prepare(optimizer)
        if config.compile:
            stepper = torch.compile(stepper)

        start, history = 0, []
        if resume and ckpt_root is not None and (path := latest_checkpoint(ckpt_root)) is not None:
            files = load_checkpoint_files(path, rank)
            from ..io.checkpoints import load_into

            load_into(model, {k: v.to(device) for k, v in files["model"].items()}, source=str(path))
            planned = files["trainer"].get("total_steps")
            if planned is not None and int(planned) != total and config.scheduler in ("onecycle", "cosine"):
                raise ValidationError(format_error(
                    "max_steps", f"the {planned} steps the checkpointed run planned its {config.scheduler!r} "
                    "learning-rate schedule for", f"a schedule of {total} steps (from epochs/max_steps)",
                    f"Finish that run with the same settings (max_steps={planned}), or start a new one without "
                    f"resuming (--no-resume / resume=False), or use scheduler='constant', which can be extended; "
                    f"checkpoint: {path}"))
            if "optimizer" in files:
                optimizer.load_state_dict(files["optimizer"])
            scheduler.load_state_dict(files["scheduler"])
            if "rng" in files:
                set_rng_state(*files["rng"])
            start = int(files["trainer"]["step"])
            history = _history_at_checkpoint(files["trainer"], out / METRICS_NAME if out is not None else None)
            logger.info("resumed from %s (step %d)", path, start)
        if out is not None and acc.is_main_process:
            out.mkdir(parents=True, exist_ok=True)
            _clean_leftovers(out, ckpt_root)
            write_json(out / "train_config.json", config.to_dict())
            with atomic_write(out / METRICS_NAME) as fh:  # drop lines logged after the checkpoint
                for entry in history:
                    fh.write(json.dumps(entry) + "\n")

        params = [p for p in model.parameters() if p.requires_grad]
        sums: dict[str, Any] = {}
        n_acc = 0
        last_val: dict[str, float] = {}
        last_train: dict[str, float] = {}
        step = start
        t0 = time.perf_counter()
        bar = progress(total=total, initial=start, desc="train", unit="step",
                       verbose=config.verbose if acc.is_main_process else False)
        last_ckpt: Path | None = None

        def log(entry: dict[str, Any]) -> None:
            history.append(entry)
            if out is not None and acc.is_main_process:
                with open(out / METRICS_NAME, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(entry) + "\n")

        def checkpoint() -> Path | None:
            if ckpt_root is None:
                return None
            # bounded: the metric history lives in metrics.jsonl; the state only says how many of its lines
            # belong to this checkpoint (a resume drops the lines logged after it)
            state = {"step": step, "epoch": step // spe, "steps_per_epoch": spe, "total_steps": total,
                     "world_size": world, "config": config.to_dict(), "metrics_file": METRICS_NAME,
                     "metrics_lines": len(history), "last_metrics": history[-1] if history else {}}
            model_state = (acc.get_state_dict(stepper) if config.distributed != "ddp" else model.state_dict())
            if config.distributed != "ddp" and model_state is not None:
                model_state = {k.removeprefix("model."): v for k, v in model_state.items()}
            return save_checkpoint(ckpt_root, step, model_state=model_state if acc.is_main_process else None,
                                   optimizer_state=optimizer.state_dict() if acc.is_main_process else None,
                                   scheduler_state=scheduler.state_dict(), trainer_state=state, rank=rank,
                                   is_main=acc.is_main_process, barrier=acc.wait_for_everyone,
                                   keep=config.keep_checkpoints)

        epoch = step // spe
        while step < total:
            in_epoch = step - epoch * spe
            finished_epoch = True
            for batch in train.epoch(epoch, seed=config.seed, start=in_epoch, rank=rank, world_size=world):
                model.train()
                outputs = stepper(batch, step)
                loss = outputs["loss"]
                acc.backward(loss)
                if config.grad_clip is not None:
                    acc.clip_grad_norm_(params, config.grad_clip)
                optimizer.step()
                if not acc.optimizer_step_was_skipped:
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                for key, value in outputs.items():
                    if isinstance(value, torch.Tensor) and value.numel() == 1:
                        v = value.detach().float().reshape(())
                        sums[key] = sums[key] + v if key in sums else v
                n_acc += 1
                bar.update(1)
                if step % config.log_every == 0 or step == total:
                    names = sorted(sums)
                    stacked = torch.stack([sums[k] for k in names]) / n_acc
                    stacked = acc.reduce(stacked, reduction="mean") if world > 1 else stacked
                    last_train = dict(zip(names, stacked.cpu().tolist()))
                    entry = {"step": step, "epoch": step / spe, "lr": scheduler.get_last_lr()[0], **last_train,
                             "elapsed_s": round(time.perf_counter() - t0, 3)}
                    log(entry)
                    bar.set_postfix(loss=f"{last_train.get('loss', float('nan')):.4g}")
                    sums, n_acc = {}, 0
                if config.checkpoint_every and step % config.checkpoint_every == 0 and step < total:
                    last_ckpt = checkpoint()
                if step >= total:
                    finished_epoch = step % spe == 0
                    break
            if finished_epoch and val is not None:
                last_val = self._validate(val, step, config, rank, world)
                log({"step": step, "epoch": step / spe, **{f"val/{k}": v for k, v in last_val.items()}})
            epoch += 1
        bar.close()
        if val is not None and not last_val:
            last_val = self._validate(val, step, config, rank, world)
            log({"step": step, "epoch": step / spe, **{f"val/{k}": v for k, v in last_val.items()}})
        if ckpt_root is not None and step > start:
            last_ckpt = checkpoint()
        elif ckpt_root is not None:
            last_ckpt = latest_checkpoint(ckpt_root)
        if out is not None and acc.is_main_process and hasattr(model, "save_pretrained"):
            model.save_pretrained(out, metadata={"trained_steps": step, "train_config": config.to_dict()})
        acc.wait_for_everyone()
        metrics = {**last_train, **{f"val/{k}": v for k, v in last_val.items()}}
        return TrainResult(history=history, metrics=metrics, checkpoint=last_ckpt, steps=step, resumed_from=start)

    def _validate(self, val: Any, step: int, config: TrainConfig, rank: int, world: int) -> dict[str, float]:
        """Average the model's validation outputs over ``val`` (RNG forked: training is not perturbed)."""
        import torch

        model, acc = self.model, self.accelerator
        fn = getattr(model, "validation_step", None) or model.training_step
        devices = [acc.device] if acc.device.type == "cuda" else []
        sums: dict[str, Any] = {}
        n = 0
        was_training = model.training
        model.eval()
        with torch.random.fork_rng(devices=devices), torch.no_grad(), acc.autocast():
            for batch in val.epoch(0, seed=config.seed, rank=rank, world_size=world):
                outputs = fn(batch, step)
                for key, value in outputs.items():
                    if isinstance(value, torch.Tensor) and value.numel() == 1:
                        v = value.detach().float().reshape(())
                        sums[key] = sums[key] + v if key in sums else v
                n += 1
        model.train(was_training)
        if not sums:
            return {}
        names = sorted(sums)
        stacked = torch.stack([sums[k] for k in names]) / max(n, 1)
        if world > 1:
            stacked = acc.reduce(stacked, reduction="mean")
        return {k: float(v) for k, v in zip(names, stacked.cpu().tolist())}

    def __repr__(self) -> str:
        return f"Trainer(model={type(self.model).__name__}, out_dir={self.out_dir!r})"
