"""Recipes: run a ``pipelines/*.toml`` end to end (train -> reconstruct), one runner per decoder family.

>>> from neurodecode.recipes import load_recipe, train_from_recipe, reconstruct        # doctest: +SKIP
>>> recipe = load_recipe("pipelines/mindbridge_nsd.toml", preset="tiny")              # doctest: +SKIP
>>> train_from_recipe(recipe, "sim/nsd", "runs/mb")                                    # doctest: +SKIP
>>> reconstruct(recipe, "sim/nsd", 1, "runs/mb", "recons/mb")                          # doctest: +SKIP

:data:`RUNNERS` maps ``[decoder] name`` to the module that runs it (imported lazily). Each runner
module declares the datasets it reads and its tables, and provides ``train()`` and ``reconstruct()``;
runner modules import only the shared modules of this package (``_run``, ``_derivative``, ``_data``,
``_targets``, ``_schema``, ``_meeg``, ``_nsd_images``) and lower layers, never each other.
Every recipe is validated whole by :func:`validate_recipe` before any work, by both verbs.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import Any

from .._core.errors import ValidationError
from .._core.recipes import load_recipe
from .._core.validation import format_error

__all__ = ["RUNNERS", "load_recipe", "validate_recipe", "train_from_recipe", "reconstruct", "runner"]

#: ``[decoder] name`` -> the runner module (imported on first use).
RUNNERS: dict[str, str] = {
    "mindbridge": "neurodecode.recipes._fmri",
    "mindeye2": "neurodecode.recipes._fmri",
    "brain_diffuser": "neurodecode.recipes._brain_diffuser",
    "atm": "neurodecode.recipes._atm",
    "glim": "neurodecode.recipes._glim",
    "simpleconv": "neurodecode.recipes._speech",
    "brain_encoder": "neurodecode.recipes._encoder",
    "meg_brain_module": "neurodecode.recipes._meg_realtime",
    "sttm": "neurodecode.recipes._sttm",
    "nvl": "neurodecode.recipes._nvl",
    "wave": "neurodecode.recipes._wave",
    "takagi": "neurodecode.recipes._multi_input",
    "brain_captioning": "neurodecode.recipes._multi_input",
}


def runner(name: Any) -> Any:
    """The runner module of decoder ``name`` (a key of :data:`RUNNERS`)."""
    if name not in RUNNERS:
        raise ValidationError(format_error("decoder.name", "one of " + ", ".join(map(repr, RUNNERS)), repr(name),
                                           "Set [decoder] name in the recipe to a decoder neurodecode runs"))
    return importlib.import_module(RUNNERS[name])


def validate_recipe(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """Check a resolved recipe whole and return it normalised (see :mod:`neurodecode.recipes._schema`).

    Parameters
    ----------
    recipe : dict
        From :func:`load_recipe` (preset and overrides applied).

    Returns
    -------
    recipe : dict
        The same tables, checked, with ``"none"``/``"all"`` normalised and defaults filled in
        (``_source`` kept; a recipe already validated is returned as is).

    Raises
    ------
    ValidationError
        Listing every unknown section or key (with close matches) and every wrongly typed value.
    """
    from ._schema import SECTIONS, RecipeProblems

    if recipe.get("_validated"):
        return dict(recipe)
    source = dict(recipe.get("_source", {}))
    problems = RecipeProblems(str(source.get("path", "recipe")))
    for key in recipe:
        if key not in SECTIONS and key not in ("_source", "_validated"):
            problems.unknown("", key, SECTIONS)
    name = dict(recipe.get("decoder", {})).get("name")
    if name not in RUNNERS:
        problems.add("decoder.name", f"expected one of {', '.join(map(repr, RUNNERS))}, got {name!r}")
        problems.raise_if_any()
    out = runner(str(name)).check_recipe(recipe, problems)
    problems.raise_if_any()
    out["_source"] = source
    out["_validated"] = True
    return out


def train_from_recipe(recipe: Mapping[str, Any], data_root: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                      *, max_steps: int | None = None, resume: bool = True, device: str = "auto",
                      verbose: Any = None) -> Any:
    """Train the decoder a recipe describes on the data under ``data_root``; outputs go to ``out_dir``.

    Parameters
    ----------
    recipe : dict
        A resolved recipe (:func:`load_recipe`); validated here.
    data_root : path-like
        The dataset root (NSD, THINGS-EEG2, THINGS-MEG or ZuCo, as ``[data] dataset`` says).
    out_dir : path-like
        Run folder: the model(s), ``checkpoints/``, ``metrics.json``, ``recipe.json``, ``provenance.json``.
    max_steps : int or None
        Stop after this many optimizer steps (overrides ``train.max_steps``).
    resume : bool
        Continue from the last checkpoint in ``out_dir`` (``False`` deletes old checkpoints first).
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"`` (overrides ``train.device`` unless ``"auto"``).
    verbose : bool or str or None
        Progress bars and log level.

    Returns
    -------
    result : neurodecode.train.TrainResult
        ``metrics`` holds the test scores the runner reports (with a shuffled-brain control).
    """
    checked = validate_recipe(recipe)
    return runner(checked["decoder"]["name"]).train(checked, data_root, out_dir, max_steps=max_steps, resume=resume,
                                                    device=device, verbose=verbose)


def reconstruct(recipe: Mapping[str, Any], data_root: str | os.PathLike[str], subject: Any,
                checkpoint: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, device: Any = "cpu",
                dtype: Any = None, batch_size: int | None = None, steps: int | None = None, seed: int | None = None,
                generator_weights: str | None = None, limit: int | None = None, verbose: Any = None) -> dict[str, Any]:
    """Reconstruct the test stimuli of a trained recipe and write a BIDS-style derivative.

    Parameters
    ----------
    recipe : dict
        The recipe the run was trained with (validated here, with the same ``[data]`` reading as training).
    data_root : path-like
        The dataset root.
    subject : int, str, list of them, or None
        Subject(s) to reconstruct (NSD: one; M/EEG: ``None`` = every subject of the run).
    checkpoint : path-like
        The decoder folder (NSD neural decoders) or the run folder of ``neurodecode train``.
    out_dir : path-like
        Derivative root.
    device, dtype : str or None
        Compute device and generator precision.
    batch_size, steps, seed : int or None
        Override the recipe's ``[generate]``.
    generator_weights : str or None
        Override the generator weights (``"tiny"``, a hub id or a folder).
    limit : int or None
        Only the first ``limit`` test stimuli (per subject).
    verbose : bool or str or None

    Returns
    -------
    summary : dict
        ``n_items``, ``n_done``, ``n_skipped``, ``rank``, ``world_size``, ``out_dir``, ``timings``...
    """
    checked = validate_recipe(recipe)
    if limit is not None and int(limit) < 1:
        raise ValidationError(format_error("limit", "an int >= 1", limit))
    return runner(checked["decoder"]["name"]).reconstruct(
        checked, data_root, subject, checkpoint, out_dir, device=device, dtype=dtype, batch_size=batch_size,
        steps=steps, seed=seed, generator_weights=generator_weights, limit=limit, verbose=verbose)
