"""Fit Brain-Diffuser from a recipe (``pipelines/brain_diffuser_nsd.toml``): what ``neurodecode train`` runs for it.

Brain-Diffuser is ridge regressions, so there is no trainer loop: per subject of ``[data]``,

1. load the subject's NSD trials (:func:`neurodecode.data.load_nsd`, the same ``[data]`` keys as the
   neural recipes) and average the training repeats (``[data] average_train_repeats``, default true:
   8,859 images for subject 1 on the full data);
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

import copy
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import ValidationError
from .._core.files import write_json
from .._core.logging import logger
from .._core.validation import format_error
from ._trainer import TrainResult

__all__ = ["fit_brain_diffuser_from_recipe"]

_DECODER_KEYS = ("alphas", "cv", "alpha_per_target", "restandardize", "target_batch", "dtype", "base")
_TRAIN_KEYS = ("device", "seed", "solver", "zscore_voxels", "verbose")


def _folder(subject: str) -> str:
    name = re.sub(r"^(sub-|subj)", "", subject.split("/")[-1])
    return f"sub-{int(name):02d}" if name.isdigit() else f"sub-{re.sub(r'[^A-Za-z0-9]', '', name)}"


def fit_brain_diffuser_from_recipe(recipe: Mapping[str, Any], data_root: str | os.PathLike[str],
                                   out_dir: str | os.PathLike[str], *, resume: bool = True, device: str = "auto",
                                   verbose: Any = None) -> TrainResult:
    """Fit one Brain-Diffuser per subject of a recipe and score its test images.

    Parameters
    ----------
    recipe : dict
        A resolved recipe whose ``[decoder] name`` is ``"brain_diffuser"``.
    data_root : path-like
        The NSD root.
    out_dir : path-like
        Run folder: ``sub-XX/`` (one fitted decoder each), ``recipe.json``, ``provenance.json``,
        ``metrics.json``.
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
    from .._core.device import resolve_device
    from .._core.recipes import save_resolved_recipe
    from .._core.versions import package_versions
    from ..models.brain_diffuser import BrainDiffuser, BrainDiffuserConfig
    from ._recipes import _load_data, _resolve_cache_root, _subject_ids, identification_with_control
    from ._targets import compute_targets, gather_targets

    recipe = copy.deepcopy(dict(recipe))
    root, out = Path(data_root), Path(out_dir)
    data = dict(recipe.get("data", {}))
    latents = dict(recipe.get("latents", {}))
    decoder = {k: v for k, v in dict(recipe.get("decoder", {})).items() if k != "name"}
    train = dict(recipe.get("train", {}))
    for section, given, allowed in (("decoder", decoder, _DECODER_KEYS), ("train", train, _TRAIN_KEYS)):
        unknown = sorted(set(given) - set(allowed))
        if unknown:
            raise ValidationError(format_error(f"[{section}]", "keys among " + ", ".join(allowed) + " for brain_diffuser",
                                               ", ".join(unknown), "Remove or rename them (sizes come from the data)"))
    if str(train.get("solver", "ridge")) != "ridge":
        raise ValidationError(format_error("train.solver", "'ridge' (Brain-Diffuser is closed form)",
                                           repr(train["solver"])))
    base = str(decoder.pop("base", "default"))
    dev = resolve_device(device if device != "auto" else train.get("device", "auto"))
    subjects = _subject_ids(data.get("subjects"))
    trials = _load_data(root, data, subjects, verbose)

    ids = np.concatenate([t.stimulus_ids for t in trials.values()])
    tables = {k: v for k, v in latents.items() if isinstance(v, Mapping)}
    if not any(str(v.get("space", "") or "") for v in tables.values()):
        raise ValidationError(format_error("latents", "at least one [latents.<key>] table with a space",
                                           "none", "e.g. [latents.clip_image_tokens] space = \"clip-vit-l-14-tokens\""))
    targets = compute_targets(root, tables, ids, cache_root=_resolve_cache_root(latents, out),
                              captions=data.get("captions"), device=resolve_device(latents.get("device") or dev),
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
        tr = t.train.average_repeats() if bool(data.get("average_train_repeats", True)) else t.train
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
