"""Resumable training checkpoints without pickles.

A checkpoint is a folder ``checkpoints/step_NNNNNNNN/`` holding

- ``model.safetensors``: the model's state dict;
- ``optimizer.safetensors`` + ``optimizer.json``: the optimizer's tensors, and its
  param groups and non-tensor state;
- ``scheduler.json``: the learning-rate scheduler's state;
- ``rng_rank{R}.safetensors`` + ``rng_rank{R}.json``: each process's torch (CPU and CUDA),
  NumPy and Python RNG states;
- ``trainer_state.json``: step counters, the config and the metric history.

The folder is written under a temporary name and renamed when complete, then the
``checkpoints/latest`` pointer is replaced atomically, so a run killed at any moment
leaves the previous checkpoint usable.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import DataIntegrityError
from .._core.files import atomic_write, write_json
from .._core.validation import format_error
from ..io.checkpoints import load_state_dict, save_state_dict

__all__ = ["save_checkpoint", "latest_checkpoint", "load_checkpoint_files", "optimizer_to_flat",
           "optimizer_from_flat", "rng_state", "set_rng_state"]

LATEST = "latest"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in a JSON checkpoint")


def optimizer_to_flat(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split an optimizer ``state_dict`` into (tensors for safetensors, JSON-serialisable rest)."""
    import torch

    tensors: dict[str, Any] = {}
    scalars: dict[str, Any] = {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            name = f"{idx}.{key}"
            if isinstance(value, torch.Tensor):
                tensors[name] = value.detach().cpu().contiguous()
            else:
                scalars[name] = _jsonable(value)
    meta = {"param_groups": _jsonable(state["param_groups"]), "scalars": scalars,
            "keys": sorted({str(i) for i in state["state"]})}
    return tensors, meta


def optimizer_from_flat(tensors: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """Rebuild an optimizer ``state_dict`` from :func:`optimizer_to_flat`'s output."""
    state: dict[int, dict[str, Any]] = {int(k): {} for k in meta["keys"]}
    for name, value in list(tensors.items()) + list(meta["scalars"].items()):
        idx, key = name.split(".", 1)
        state[int(idx)][key] = value
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def rng_state() -> tuple[dict[str, Any], dict[str, Any]]:
    """This process's RNG states as (tensors, JSON)."""
    import torch

    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    np_state = np.random.get_state()  # noqa: NPY002 (the global state user code may rely on)
    meta = {"python": _jsonable(random.getstate()),
            "numpy": [np_state[0], np_state[1].tolist(), *[_jsonable(v) for v in np_state[2:]]]}
    return tensors, meta


def set_rng_state(tensors: dict[str, Any], meta: dict[str, Any]) -> None:
    """Restore the states saved by :func:`rng_state`."""
    import torch

    torch.set_rng_state(tensors["torch_cpu"].cpu())
    cuda = sorted(k for k in tensors if k.startswith("torch_cuda_"))
    if cuda and torch.cuda.is_available():
        n = min(len(cuda), torch.cuda.device_count())
        torch.cuda.set_rng_state_all([tensors[f"torch_cuda_{i}"].cpu() for i in range(n)])
    py = meta["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npm = meta["numpy"]
    np.random.set_state((npm[0], np.asarray(npm[1], dtype=np.uint32), *npm[2:]))  # noqa: NPY002


def checkpoint_dir(root: Path, step: int) -> Path:
    return root / f"step_{step:08d}"


def save_checkpoint(root: str | os.PathLike[str], step: int, *, model_state: dict[str, Any] | None,
                    optimizer_state: dict[str, Any] | None, scheduler_state: dict[str, Any] | None,
                    trainer_state: dict[str, Any] | None, rank: int = 0, is_main: bool = True,
                    barrier: Any = None, keep: int = 2) -> Path:
    """Write one checkpoint (every rank calls this; the main rank writes all but its RNG file).

    ``barrier`` is a callable synchronising the processes (``accelerator.wait_for_everyone``).
    """
    root = Path(root)
    final = checkpoint_dir(root, step)
    tmp = root / f".{final.name}.partial"
    if is_main:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    if barrier is not None:
        barrier()
    rng_tensors, rng_meta = rng_state()
    save_state_dict(rng_tensors, tmp / f"rng_rank{rank}.safetensors")
    write_json(tmp / f"rng_rank{rank}.json", rng_meta)
    if barrier is not None:
        barrier()
    if is_main:
        if model_state is not None:
            save_state_dict(model_state, tmp / "model.safetensors")
        if optimizer_state is not None:
            tensors, meta = optimizer_to_flat(optimizer_state)
            save_state_dict(tensors, tmp / "optimizer.safetensors")
            write_json(tmp / "optimizer.json", meta)
        write_json(tmp / "scheduler.json", _jsonable(scheduler_state or {}))
        write_json(tmp / "trainer_state.json", _jsonable(trainer_state or {}))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        with atomic_write(root / LATEST) as fh:
            fh.write(final.name + "\n")
        _prune(root, keep, final)
    if barrier is not None:
        barrier()
    return final


def _prune(root: Path, keep: int, current: Path) -> None:
    done = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in done[:-keep] if keep > 0 else []:
        if old != current:
            shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(root: str | os.PathLike[str]) -> Path | None:
    """The folder named by ``root/latest``, or ``None`` if there is no complete checkpoint."""
    root = Path(root)
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    path = root / pointer.read_text().strip()
    if not (path / "trainer_state.json").is_file():
        raise DataIntegrityError(format_error("checkpoint", "a complete checkpoint folder", str(path),
                                              "Delete the checkpoints folder, or pass resume=False to start over"))
    return path


def load_checkpoint_files(path: Path, rank: int = 0) -> dict[str, Any]:
    """Read every file of a checkpoint folder into tensors and dicts (no pickles)."""
    out: dict[str, Any] = {
        "trainer": json.loads((path / "trainer_state.json").read_text()),
        "scheduler": json.loads((path / "scheduler.json").read_text()),
        "model": load_state_dict(path / "model.safetensors") if (path / "model.safetensors").is_file() else None,
    }
    if (path / "optimizer.json").is_file():
        out["optimizer"] = optimizer_from_flat(load_state_dict(path / "optimizer.safetensors"),
                                               json.loads((path / "optimizer.json").read_text()))
    rng_file = path / f"rng_rank{rank}.safetensors"
    if rng_file.is_file():
        out["rng"] = (load_state_dict(rng_file), json.loads((path / f"rng_rank{rank}.json").read_text()))
    return out
