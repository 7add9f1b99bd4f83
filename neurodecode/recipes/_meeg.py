"""What the M/EEG runners share (ATM on THINGS-EEG2 / THINGS-MEG, GLIM on ZuCo): the train and
reconstruct frames around each decoder's own steps, and the input-scaling and table helpers.

Training (:func:`train_meeg`), each step resumable: the runner's ``train_body`` (1) loads the subjects
of ``[data]`` through :mod:`neurodecode.recipes._data` (the reading ``reconstruct`` uses too; data stay
raw: MEG in tesla, EEG as the files hold it), (2) computes its targets (ATM: the feature cache; GLIM: its
own frozen text model), (3) builds the decoder (input shape and rate from the data; a recipe value must
agree) under the run's seed and gives it its per-channel input scaling (``[data] scaling =
"channel-zscore"``: statistics of the training trials, saved with the weights, so a saved model takes
RAW data), (4) trains with :class:`~neurodecode.train.Trainer`, and returns its models' results, test
metrics and provenance; this frame writes ``recipe.json``, ``metrics.json`` and ``provenance.json``.

Reconstruction (:func:`reconstruct_meeg`): checks the run folder and the output folder, builds a
:class:`ReconstructContext` and hands it to the runner's ``reconstruct_body``, then writes the
derivative description and the provenance entry (updated per batch by the bodies).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import MissingFileError, ValidationError
from .._core.logging import logger, progress
from .._core.validation import format_error

__all__ = ["train_meeg", "reconstruct_meeg", "ReconstructContext", "generate_items"]




# ------------------------------------------------------------------------------------------ helpers
def _space_table(value: Any, key: str) -> dict[str, Any]:
    """``"name"`` or ``{space = "name", ...}`` -> a table; ``""``/false -> ``{}`` (off)."""
    if value in (None, "", False):
        return {}
    if isinstance(value, str):
        return {"space": value}
    if isinstance(value, Mapping):
        return dict(value) if value.get("space") else {}
    raise ValidationError(format_error(f"latents.{key}", "a latent space name or a table with 'space'", value,
                                       f"Write e.g. latents.{key} = \"clip-vit-h-14\""))


def _check_field(fields: dict[str, Any], name: str, value: Any, why: str) -> None:
    """Set decoder field ``name`` from the data, refusing a recipe value that disagrees."""
    given = fields.get(name)
    if given is not None:
        try:
            same = math.isclose(float(given), float(value), rel_tol=1e-6) if isinstance(value, float) else \
                int(given) == value and not isinstance(given, bool)
        except (TypeError, ValueError):
            same = False
        if not same:
            raise ValidationError(format_error(f"decoder.{name}", f"{value!r} ({why})", repr(given),
                                               f"Drop decoder.{name} (it is read from the data) or change [data]"))
    fields[name] = value


def _channel_stats(parts: Sequence[tuple[np.ndarray, np.ndarray | None, np.ndarray]],
                   chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation over trials and valid samples, read in chunks.

    Parameters
    ----------
    parts : sequence of (X, lengths, rows)
        ``X`` of shape (n, n_channels, n_times); ``lengths`` (n,) valid samples per trial or None
        (all valid); ``rows`` the trials of ``X`` to use.

    Returns
    -------
    mean, std : ndarray of shape (n_channels,)
        ``std`` is 1 where a channel is constant (e.g. zero padding).
    """
    def chunks() -> Any:
        for X, lengths, rows in parts:
            for a in range(0, len(rows), chunk):
                r = rows[a:a + chunk]
                xb = X[r].astype(np.float64)
                valid = (np.ones((len(r), X.shape[2]), bool) if lengths is None
                         else np.arange(X.shape[2])[None, :] < np.asarray(lengths)[r][:, None])
                yield xb, valid

    n_ch = parts[0][0].shape[1]
    total, count = np.zeros(n_ch), 0
    for xb, valid in chunks():
        total += np.einsum("bct,bt->c", xb, valid)
        count += int(valid.sum())
    mean = total / max(count, 1)
    sq = np.zeros(n_ch)
    for xb, valid in chunks():
        sq += np.einsum("bct,bt->c", (xb - mean[None, :, None]) ** 2, valid)
    std = np.sqrt(sq / max(count, 1))
    return mean, np.where(std > 0, std, 1.0)


def _tiny_fields(cfg_cls: Any) -> dict[str, Any]:
    """The fields of ``cfg_cls.tiny()`` (``decoder.base = "tiny"``), which the recipe's fields override."""
    import dataclasses

    return dataclasses.asdict(cfg_cls.tiny())


def _set_input_scaling(model: Any, pooled: tuple[np.ndarray, np.ndarray],
                       per_subject: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Give ``model`` its input statistics: ``pooled`` for every row, then each known subject's own.

    Parameters
    ----------
    model : ATM or GLIM
        A model with ``set_input_scaling(mean, std, subject=None)``.
    pooled : (mean, std), each of shape (n_channels,)
        Statistics over the training trials of every subject the model is fitted on (the row of
        no or an unknown subject).
    per_subject : mapping of str to (mean, std)
        The same per subject, for a model that knows its subjects (rows of its subject ids).
    """
    model.set_input_scaling(*pooled)
    for subject, (mean, std) in per_subject.items():
        model.set_input_scaling(mean, std, subject=subject)


def _val_source(arrays: Mapping[str, Any], batch_size: int) -> Any:
    from ..train import ArrayBatches

    n = len(next(iter(arrays.values())))
    if n < max(batch_size, 2):
        logger.warning("train.validate: only %d test rows for batches of %d; validation skipped", n, batch_size)
        return None
    return ArrayBatches(arrays, batch_size, shuffle=False, drop_last=True)


# ---------------------------------------------------------------------------------------- train
def train_meeg(recipe: Mapping[str, Any], data_root: str | os.PathLike[str], out_dir: str | os.PathLike[str],
               train_body: Any, *, max_steps: int | None = None, resume: bool = True, device: str = "auto",
               verbose: Any = None) -> Any:
    """Train an M/EEG recipe with the runner's ``train_body(ctx) -> (results, metrics, provenance)``.

    Parameters
    ----------
    recipe : dict
        A validated recipe whose ``[data] dataset`` is "things-eeg2", "things-meg" or "zuco".
    data_root : path-like
        The dataset root (THINGS-EEG2: holding ``Preprocessed_data_250Hz/``; THINGS-MEG: the BIDS
        root; ZuCo: the version root, or a folder with ``zuco1/`` and ``zuco2/``).
    out_dir : path-like
        Run folder: ``recipe.json``, ``provenance.json``, ``metrics.json`` and the model(s), each
        (``config.json`` + ``model.safetensors``, ``checkpoints/``, ``metrics.jsonl``) in ``out_dir``
        or ``out_dir/<subject>``.
    train_body : callable
        The runner's steps on a :class:`~neurodecode.recipes._run.RunContext`.
    max_steps : int or None
        Stop every model (and prior) after this many optimizer steps (overrides ``train.max_steps``).
    resume : bool
        Continue from the last checkpoints (``False`` deletes them first).
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"`` (overrides ``train.device`` unless ``"auto"``).
    verbose : bool or str or None
        Progress bars and log level.

    Returns
    -------
    result : TrainResult
        ``steps`` and ``resumed_from`` summed over the models trained; ``metrics`` holds the test
        metrics, each model's last training metrics under ``<model>/...`` and their mean as ``loss``;
        ``history`` the concatenated histories (each entry with its ``model``).
    """
    from .._core.recipes import save_resolved_recipe
    from ..train import TrainResult
    from ._run import make_context, seed_everything, write_run_outputs

    ctx = make_context(recipe, data_root, out_dir, max_steps=max_steps, resume=resume, device=device,
                       verbose=verbose)
    if ctx.init_from:
        raise ValidationError(format_error("decoder.init_from", "empty for the M/EEG recipes", "a folder",
                                           "Fine-tuning is offered for the NSD decoders only"))
    if not ctx.root.exists():
        raise MissingFileError(format_error("--data", f"the {ctx.dataset} root", f"nothing at {ctx.root}",
                                            "Pass the dataset folder (or `neurodecode simulate` one)"))
    ctx.out.mkdir(parents=True, exist_ok=True)
    save_resolved_recipe(ctx.recipe, ctx.out)
    seed_everything(ctx.config.seed)
    results, metrics, prov = train_body(ctx)

    losses = []
    history: list[dict[str, Any]] = []
    for key, res in results.items():
        history += [{"model": key, **h} for h in res.history]
        if "/" not in key:
            losses += [res.metrics["loss"]] if "loss" in res.metrics else []
        prefix = "" if key == "joint" else f"{key}/"
        metrics.update({f"{prefix}{k}": v for k, v in res.metrics.items() if prefix or not k.startswith("test/")})
    if losses:
        metrics["loss"] = float(np.mean(losses))
    steps = sum(r.steps for r in results.values())
    resumed = sum(r.resumed_from for r in results.values())
    last = list(results.values())[-1]
    write_run_outputs(ctx, {
        "steps": steps, "resumed_from": resumed, "metrics": metrics,
        "models": {k: {"steps": r.steps, "resumed_from": r.resumed_from} for k, r in results.items()}}, prov,
        versions=("neurodecode", "torch", "accelerate", "numpy", "transformers", "open_clip_torch"))
    return TrainResult(history=history, metrics=metrics, checkpoint=last.checkpoint, steps=steps,
                       resumed_from=resumed)


# ---------------------------------------------------------------------------------------- reconstruct
@dataclass
class ReconstructContext:
    """What an M/EEG ``reconstruct_body`` reads: the validated recipe, folders, overrides and the process rank."""

    recipe: dict[str, Any]
    data: dict[str, Any]
    dataset: str
    root: Path
    run: Path
    out: Path
    recipe_name: str
    rank: int
    world: int
    device: Any
    dtype: Any
    batch_size: int | None
    steps: int | None
    seed: int | None
    generator_weights: str | None
    limit: int | None
    verbose: Any
    timings: dict[str, float] = field(default_factory=dict)
    log: Any = None  # the run's ProvenanceLog: bodies record each batch's items as they are written


def reconstruct_meeg(recipe: Mapping[str, Any], data_root: str | os.PathLike[str], subject: Any,
                     checkpoint: str | os.PathLike[str], out_dir: str | os.PathLike[str], reconstruct_body: Any, *,
                     outputs: str, device: Any = "cpu", dtype: Any = None, batch_size: int | None = None,
                     steps: int | None = None, seed: int | None = None, generator_weights: str | None = None,
                     limit: int | None = None, verbose: Any = None) -> dict[str, Any]:
    """Reconstruct the test stimuli of an M/EEG run's subjects with the runner's ``reconstruct_body``.

    Parameters
    ----------
    recipe : dict
        The validated recipe the run was trained with.
    data_root : path-like
        The dataset root the run was trained on.
    subject : int, str, list of them, or None
        Subjects to reconstruct (``1``, ``"sub-01"``, ``"things-eeg2/sub-01"``, ``"zuco/YAC"``...);
        ``None``: every subject of the run.
    checkpoint : path-like
        The run folder written by ``neurodecode train``.
    out_dir : path-like
        Derivative root.
    reconstruct_body : callable
        ``(ctx, subject) -> (per_subject, provenance)`` of the runner.
    outputs : {"image", "text"}
        What the runner writes (reported in the summary).
    device, dtype, batch_size, steps, seed, generator_weights, limit, verbose
        As :func:`neurodecode.recipes.reconstruct`.

    Returns
    -------
    summary : dict
        ``n_items``, ``n_assigned``, ``n_done``, ``n_skipped`` summed over subjects, ``subjects``
        (the same per subject), ``outputs``, ``rank``, ``world_size``, ``out_dir``, ``recipe``, ``timings``.
    """
    import time

    from .._core.device import resolve_device
    from .._core.versions import package_versions
    from ._derivative import ProvenanceLog, _check_writable, describe_derivative, distributed_rank

    t_start = time.perf_counter()
    root, run, out = Path(data_root), Path(checkpoint), Path(out_dir)
    dataset = str(recipe["data"]["dataset"])
    if not root.exists():
        raise MissingFileError(format_error("--data", f"the {dataset} root", f"nothing at {root}",
                                            "Pass the dataset folder the run was trained on"))
    if not run.is_dir():
        raise MissingFileError(format_error("checkpoint", "the run folder of `neurodecode train`", f"nothing at {run}",
                                            "Pass --checkpoint the --out folder of the training run"))
    _check_writable(out)
    recipe_name = str(recipe.get("_source", {}).get("name", "recipe"))
    rank, world = distributed_rank()
    ctx = ReconstructContext(recipe=dict(recipe), data=dict(recipe["data"]), dataset=dataset, root=root, run=run,
                             out=out, recipe_name=recipe_name, rank=rank, world=world, device=resolve_device(device),
                             dtype=dtype, batch_size=batch_size, steps=steps, seed=seed,
                             generator_weights=generator_weights, limit=None if limit is None else int(limit),
                             verbose=verbose)
    ctx.log = ProvenanceLog(out, rank, world, {
        "recipe": dict(recipe), "data": {"root": str(root.resolve()), "dataset": dataset},
        "versions": package_versions(), "device": str(ctx.device), "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
    per_subject, extra = reconstruct_body(ctx, subject)
    ctx.timings["total_s"] = time.perf_counter() - t_start
    summary: dict[str, Any] = {
        key: int(sum(s[key] for s in per_subject.values())) for key in ("n_items", "n_assigned", "n_done", "n_skipped")}
    summary.update(subjects=per_subject, outputs=outputs, rank=rank, world_size=world, out_dir=str(out),
                   recipe=recipe_name, timings=ctx.timings)
    if rank == 0:
        describe_derivative(out, recipe_name, root)
    ctx.log.finish(summary=summary, **extra)
    return summary


def generate_items(generator: Any, latents: Mapping[str, np.ndarray], todo: Sequence[int], paths: Sequence[Any],
                   seeds: Sequence[int], keys: Sequence[str], settings: Mapping[str, Any], log: Any, subject: str,
                   entry: dict[str, Any], verbose: Any) -> float:
    """Draw the images of items ``todo`` in batches and write each one as soon as its batch is done.

    ``latents[k][j]``, ``seeds[j]`` and ``keys[j]`` (the provenance key) belong to item ``todo[j]``, whose image
    goes to ``paths[todo[j]]``; ``entry["n_done"]`` counts them and ``log.add_items`` records each batch.
    Returns the seconds spent.
    """
    from ._derivative import _png, _sub_label

    bs = int(settings["batch_size"])
    t0 = time.perf_counter()
    with progress(total=len(todo), desc=f"reconstruct sub-{_sub_label(subject)}", unit="img", verbose=verbose) as bar:
        for start in range(0, len(todo), bs):
            chunk = list(range(start, min(len(todo), start + bs)))
            images = generator.generate({k: v[chunk] for k, v in latents.items()}, seeds=[seeds[j] for j in chunk],
                                        steps=settings["steps"], guidance=settings["guidance"], batch_size=bs,
                                        verbose=False, **settings["options"])
            for k, j in enumerate(chunk):
                _png(paths[todo[j]], images[k])
            log.add_items({keys[j]: seeds[j] for j in chunk})
            bar.update(len(chunk))
            entry["n_done"] += len(chunk)
    return time.perf_counter() - t0
