"""The Brain-Diffuser runner: fit it from a recipe (``pipelines/brain_diffuser_nsd.toml``): what ``neurodecode train`` runs for it.

Brain-Diffuser is ridge regressions, so there is no trainer loop: per subject of ``[data]``,

1. load the subject's NSD trials (:func:`neurodecode.recipes._data.load_nsd_for_recipe`, the same
   ``[data]`` reading as the neural recipes and as ``reconstruct``; ``[data] average_train_repeats =
   true`` averages the training repeats: 8,859 images for subject 1 on the full data);
2. compute each ``[latents.<key>]`` target once per stimulus into the feature cache (keys of
   :data:`neurodecode.models.LATENT_KEYS`: ``clip_image_tokens``, ``clip_text_tokens`` (mean over
   the COCO captions), ``vae_latents``; an empty ``space`` turns a target off);
3. fit :class:`~neurodecode.models.brain_diffuser.BrainDiffuser` (``[decoder]``: ``alphas`` per key,
   ``cv``, ``alpha_per_target``, ``restandardize``, ``target_batch``, ``dtype``; ``n_voxels``,
   ``subject`` and ``target_shapes`` come from the data) with one shared decomposition, on
   ``[train] device``;
4. save it to ``OUT/sub-XX/`` (``save_pretrained``; the folder ``neurodecode reconstruct --checkpoint``
   takes) and score the test images: ``test/<subject>/<key>/top1`` (identification among the test
   images), ``.../shuffled_top1`` (each test trial against another trial's target) and
   ``test/<subject>/chance``.

Re-running skips subjects whose folder holds a fitted model (``resume=False`` refits them).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .._core.errors import ValidationError
from .._core.logging import logger
from .._core.validation import format_error
from ._data import load_nsd_for_recipe, nsd_subject_ids
from ._nsd_images import reconstruct_nsd
from ._targets import compute_targets, gather_targets

__all__ = ["DATASETS", "check_recipe", "train", "reconstruct"]

DATASETS = ("nsd",)
_LATENT_KEYS = ("clip_image_tokens", "clip_text_tokens", "vae_latents")


@dataclass
class BrainDiffuserTrain:
    """``[train]`` of Brain-Diffuser: closed form, so only where and how to solve."""

    solver: Literal["ridge"] = "ridge"
    device: str = "auto"
    seed: int = 0
    zscore_voxels: bool | None = None
    verbose: Any = None


def check_recipe(recipe: Mapping[str, Any], problems: Any) -> dict[str, Any]:
    """Check the tables of a Brain-Diffuser recipe (see :mod:`neurodecode.recipes._schema`)."""
    from ..models.brain_diffuser import BrainDiffuserConfig
    from ._schema import NSDGenerate, check_recipe_tables

    out = check_recipe_tables(recipe, problems, datasets=DATASETS, decoder_config=BrainDiffuserConfig,
                              generate=NSDGenerate, train_table=BrainDiffuserTrain, latent_tables=_LATENT_KEYS)
    for key in ("n_voxels", "subject", "target_shapes"):
        if key in out["decoder"]:
            problems.add(f"decoder.{key}", "comes from the data and the latent spaces; remove it from the recipe")
    return out


def _folder(subject: str) -> str:
    name = re.sub(r"^(sub-|subj)", "", subject.split("/")[-1])
    return f"sub-{int(name):02d}" if name.isdigit() else f"sub-{re.sub(r'[^A-Za-z0-9]', '', name)}"


def reconstruct(recipe: Mapping[str, Any], data_root: Any, subject: Any, checkpoint: Any, out_dir: Any,
                **kwargs: Any) -> dict[str, Any]:
    """Reconstruct a subject's NSD test images from its fitted folder (``RUN/sub-XX``, or ``RUN``)."""
    from pathlib import Path

    run = Path(checkpoint)
    if not (run / "config.json").is_file():
        sub = _folder(nsd_subject_ids(subject)[0])
        if (run / sub / "config.json").is_file():
            run = run / sub
    return reconstruct_nsd(recipe, data_root, subject, run, out_dir, **kwargs)


def train(recipe: Mapping[str, Any], data_root: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
          max_steps: int | None = None, resume: bool = True, device: str = "auto", verbose: Any = None) -> Any:
    """Fit one Brain-Diffuser per subject of a validated recipe and score its test images.

    Parameters
    ----------
    recipe : dict
        A validated recipe whose ``[decoder] name`` is ``"brain_diffuser"``.
    data_root : path-like
        The NSD root.
    out_dir : path-like
        Run folder: ``sub-XX/`` (one fitted decoder each), ``recipe.json``, ``provenance.json``,
        ``metrics.json``.
    max_steps : int or None
        Ignored (closed form), with a log line.
    resume : bool
        Keep subjects already fitted in ``out_dir`` (``False`` refits them).
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"`` (overrides ``[train] device`` unless ``"auto"``).
    verbose : bool or str or None
        Progress bars and log level.

    Returns
    -------
    result : TrainResult
        ``steps`` 0 (closed form); ``metrics`` the test scores (see the module docstring).
    """
    from pathlib import Path

    from .._core.device import resolve_device
    from .._core.files import write_json
    from .._core.recipes import save_resolved_recipe
    from .._core.versions import package_versions
    from ..metrics import identification_with_control
    from ..models.brain_diffuser import BrainDiffuser, BrainDiffuserConfig
    from ..train import TrainResult
    from ._run import resolve_cache_root, seed_everything

    if max_steps is not None:
        logger.info("brain_diffuser is fitted in closed form: --max-steps is ignored")
    root, out = Path(data_root), Path(out_dir)
    data, latents, train_tbl = recipe["data"], recipe["latents"], recipe["train"]
    decoder = {k: v for k, v in recipe["decoder"].items() if k not in ("name", "init_from")}
    base = str(decoder.pop("base", "default"))
    if recipe["decoder"].get("init_from"):
        raise ValidationError(format_error("decoder.init_from", "empty for brain_diffuser (closed form)",
                                           repr(recipe["decoder"]["init_from"])))
    seed_everything(int(train_tbl["seed"]))
    dev = resolve_device(device if device != "auto" else train_tbl["device"])
    subjects = nsd_subject_ids(data["subjects"])
    trials = {s: load_nsd_for_recipe(root, data, s, verbose=verbose) for s in subjects}

    ids = np.concatenate([t.stimulus_ids for t in trials.values()])
    tables = {k: v for k, v in latents.items() if isinstance(v, Mapping)}
    if not any(str(v.get("space", "") or "") for v in tables.values()):
        raise ValidationError(format_error("latents", "at least one [latents.<key>] table with a space",
                                           "none", "e.g. [latents.clip_image_tokens] space = \"clip-vit-l-14-tokens\""))
    targets = compute_targets(root, tables, ids, cache_root=resolve_cache_root(latents, out),
                              captions=data["captions"], device=resolve_device(latents.get("device") or dev),
                              dtype=str(latents.get("dtype", "float32")), verbose=verbose)
    shapes = {k: tuple(int(s) for s in feats.shape[1:]) for k, (_, feats) in targets.items()}
    alphas = dict(decoder.pop("alphas", {}))
    missing = [k for k in shapes if k not in alphas]
    if missing:
        raise ValidationError(format_error("decoder.alphas", "an alpha (or a grid) for every target: "
                                           + ", ".join(shapes), f"none for {missing}",
                                           "Add e.g. [decoder.alphas] clip_image_tokens = [6e4]"))

    out.mkdir(parents=True, exist_ok=True)
    save_resolved_recipe(recipe, out)
    metrics: dict[str, float] = {}
    fitted: dict[str, str] = {}
    n_train: dict[str, int] = {}
    for s, t in trials.items():
        tr = t.train
        n_train[s] = len(tr)
        folder = out / _folder(s)
        config = (BrainDiffuserConfig.tiny if base == "tiny" else BrainDiffuserConfig)(
            n_voxels=t.n_features, subject=s, target_shapes=shapes,
            alphas={k: tuple(np.atleast_1d(np.asarray(alphas[k], dtype=float)).tolist()) for k in shapes},
            **decoder)
        model = None
        if resume and (folder / "model.safetensors").is_file():
            model = BrainDiffuser.from_pretrained(folder)
            if model.config != config:
                logger.warning("%s holds a decoder with another config; refitting it", folder)
                model = None
        if model is None:
            model = BrainDiffuser(config).fit(tr.X, gather_targets(targets, tr.stimulus_ids), device=dev,
                                              verbose=verbose)
            model.save_pretrained(folder, metadata={"subject": s, "recipe": str(recipe.get("_source", {}))})
        fitted[s] = str(folder)
        test = t.test
        if len(test) >= 2:
            pred = model.predict_latents(test.X, s)
            truth = gather_targets(targets, test.stimulus_ids)
            for k in shapes:
                top1, control = identification_with_control(pred[k], truth[k])
                metrics[f"test/{s}/{k}/top1"] = top1
                metrics[f"test/{s}/{k}/shuffled_top1"] = control
            metrics[f"test/{s}/chance"] = 1.0 / len(test)
    write_json(out / "metrics.json", {"steps": 0, "resumed_from": 0, "metrics": metrics})
    write_json(out / "provenance.json", {
        "recipe": recipe.get("_source", {}), "data_root": str(root), "subjects": subjects, "models": fitted,
        "data": {s: t.provenance for s, t in trials.items()}, "n_train": n_train,
        "n_test": {s: len(t.test) for s, t in trials.items()},
        "targets": {k: {"shape": list(v)} for k, v in shapes.items()}, "device": str(dev),
        "versions": package_versions(("neurodecode", "torch", "numpy", "scikit-learn")),
    })
    return TrainResult(history=[], metrics=metrics, checkpoint=None, steps=0, resumed_from=0)
