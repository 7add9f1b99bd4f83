"""What every training runner shares: the run context, ``[train]`` -> TrainConfig, seeding, fit-with-resume,
the feature-cache root and the writers of ``metrics.json`` / ``provenance.json``.

A runner module (:mod:`neurodecode.recipes._fmri`, ``_brain_diffuser``, ``_atm``, ``_glim``) receives a
:class:`RunContext` built here from a validated recipe (:func:`neurodecode.recipes.validate_recipe`),
so every runner reads the same, already checked values.
"""

from __future__ import annotations

import copy
import os
import random
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._core.files import write_json
from .._core.logging import logger

__all__ = ["RunContext", "make_context", "seed_everything", "fit", "write_run_outputs", "resolve_cache_root"]

#: ``[train]`` keys the runners read themselves (the rest are :class:`~neurodecode.train.TrainConfig` fields).
RUNNER_TRAIN_KEYS = ("subjects_per_step", "batch_per_process", "validate", "caption_sampling", "caption_cycle",
                     "samples_per_epoch")


@dataclass
class RunContext:
    """Everything a runner's ``train()`` needs, read once from the validated recipe.

    Attributes
    ----------
    recipe : dict
        The validated, resolved recipe (saved as ``recipe.json``).
    root, out : Path
        Data root and run folder.
    dataset, name : str
        ``[data] dataset`` and ``[decoder] name``.
    data, latents, decoder, generate, evaluate, finetune : dict
        The recipe's tables (``decoder`` without ``name``, ``base`` and ``init_from``).
    base, init_from : str
        ``[decoder] base`` and ``init_from``.
    config : TrainConfig
        ``[train]`` with the command line's device / max steps applied.
    train_table : dict
        The same as a table (for further models of the run, e.g. ATM's prior).
    extra : dict
        The runner-level ``[train]`` keys (:data:`RUNNER_TRAIN_KEYS`).
    cache_root : Path
        Root of the feature caches.
    latent_device : torch.device
        Where the latent models run.
    dtype : str
        ``[latents] dtype``.
    resume : bool
    verbose : bool or str or None
    """

    recipe: dict[str, Any]
    root: Path
    out: Path
    dataset: str
    name: str
    data: dict[str, Any]
    latents: dict[str, Any]
    decoder: dict[str, Any]
    generate: dict[str, Any]
    evaluate: dict[str, Any]
    finetune: dict[str, Any]
    base: str
    init_from: str
    config: Any
    train_table: dict[str, Any]
    extra: dict[str, Any]
    cache_root: Path
    latent_device: Any
    dtype: str
    resume: bool
    verbose: Any = None
    provenance: dict[str, Any] = field(default_factory=dict)


def resolve_cache_root(latents: Mapping[str, Any], out_dir: Path) -> Path:
    """``[latents] cache_dir``: ``""`` -> ``$NEURODECODE_CACHE``, ``"out"`` -> inside the run folder, else the path."""
    from .._core.config import cache_dir

    given = latents.get("cache_dir")
    if given in ("out", "out_dir"):
        return out_dir / "cache"
    return Path(given).expanduser() if given else cache_dir()


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, so model initialisation is reproducible (the trainer re-seeds for its loop)."""
    import torch

    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)  # noqa: NPY002
    torch.manual_seed(int(seed))


def make_context(recipe: Mapping[str, Any], data_root: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                 max_steps: int | None, resume: bool, device: str, verbose: Any) -> RunContext:
    """Build the :class:`RunContext` of a validated recipe (the command line's device and max steps applied)."""
    from .._core.device import resolve_device
    from ..train import TrainConfig

    recipe = copy.deepcopy(dict(recipe))
    out = Path(out_dir)
    latents = dict(recipe.get("latents", {}))
    decoder = dict(recipe.get("decoder", {}))
    name = str(decoder.pop("name", ""))
    base = str(decoder.pop("base", "default"))
    init_from = str(decoder.pop("init_from", "") or "")
    train_tbl = dict(recipe.get("train", {}))
    extra = {k: train_tbl.pop(k) for k in RUNNER_TRAIN_KEYS if k in train_tbl}
    if device != "auto" or "device" not in train_tbl:
        train_tbl["device"] = device
    if max_steps is not None:
        train_tbl["max_steps"] = int(max_steps)
    if train_tbl.get("verbose") is None:
        train_tbl["verbose"] = verbose
    if extra.get("batch_per_process"):
        train_tbl["batch_size"] = int(train_tbl.get("batch_size", 32)) * int(os.environ.get("WORLD_SIZE", "1"))
    config = TrainConfig.from_dict(train_tbl)
    return RunContext(
        recipe=recipe, root=Path(data_root), out=out, dataset=str(recipe["data"]["dataset"]), name=name,
        data=dict(recipe.get("data", {})), latents=latents, decoder=decoder,
        generate=dict(recipe.get("generate", {})), evaluate=dict(recipe.get("evaluate", {})),
        finetune=dict(recipe.get("finetune", {})), base=base, init_from=init_from, config=config,
        train_table=train_tbl, extra=extra,
        cache_root=resolve_cache_root(latents, out), latent_device=resolve_device(latents.get("device") or device),
        dtype=str(latents.get("dtype", "float32")), resume=resume, verbose=verbose)


def fit(model: Any, config: Any, train: Any, val: Any, out: Path, resume: bool) -> Any:
    """Train ``model`` with the one :class:`~neurodecode.train.Trainer` (checkpoints under ``out``), resumable.

    ``resume=False`` deletes earlier checkpoints first. A finished run that is resumed reports the
    last logged training metrics.
    """
    from ..train import Trainer

    if not resume and (out / "checkpoints").exists():
        logger.warning("resume=False: deleting the previous checkpoints in %s", out / "checkpoints")
        shutil.rmtree(out / "checkpoints")
    out.mkdir(parents=True, exist_ok=True)
    result = Trainer(model, config, out_dir=out).fit(train, val, resume=resume)
    if "loss" not in result.metrics:
        last: dict[str, Any] = next((h for h in reversed(result.history) if "loss" in h), {})
        result.metrics.update({k: v for k, v in last.items() if k not in ("step", "epoch", "lr", "elapsed_s")})
    return result


def write_run_outputs(ctx: RunContext, metrics: Mapping[str, Any], provenance: Mapping[str, Any],
                      versions: tuple[str, ...] = ("neurodecode", "torch", "accelerate", "numpy")) -> None:
    """Write ``OUT/metrics.json`` and ``OUT/provenance.json`` (atomically)."""
    from .._core.versions import package_versions

    write_json(ctx.out / "metrics.json", dict(metrics))
    write_json(ctx.out / "provenance.json", {
        "recipe": ctx.recipe.get("_source", {}), "data_root": str(ctx.root), "dataset": ctx.dataset,
        "decoder": ctx.name, **provenance, "train_config": ctx.config.to_dict(), "device": str(ctx.latent_device),
        "versions": package_versions(versions)})
