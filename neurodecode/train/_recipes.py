"""Train a neural decoder from a recipe (``pipelines/*.toml``): what ``neurodecode train`` runs.

Datasets: NSD (MindBridge, MindEye2; this module; Brain-Diffuser's ridges in
:mod:`neurodecode.train._recipes_bd`) and THINGS-EEG2, THINGS-MEG (ATM) and ZuCo (GLIM),
whose recipes are handed to :mod:`neurodecode.train._recipes_meeg` (see its docstring).

The NSD steps, each resumable:

1. load every subject of ``[data]`` with :func:`neurodecode.data.load_nsd`;
2. compute the targets of ``[latents]`` once per stimulus into the feature cache
   (``[latents] cache_dir``, default ``$NEURODECODE_CACHE``) and index them per trial;
3. build the decoder of ``[decoder]`` (its target shapes read from the latent spaces, its subjects'
   voxel counts from the data), or load ``decoder.init_from`` for fine-tuning (``[finetune]``);
4. train with :class:`~neurodecode.train.Trainer` (``[train]``), checkpoints under ``OUT/checkpoints``;
5. save the model (``save_pretrained`` in ``OUT``), ``recipe.json``, ``provenance.json`` and
   ``metrics.json`` (training metrics plus top-1 identification of each subject's test images).

Recipe keys read here beyond :class:`~neurodecode.train.TrainConfig`'s fields:

- ``[data]``: ``dataset`` ("nsd"), ``subjects``, ``beta_version`` (or ``betas``), ``sessions``, ``zscore``
  ("train", "all" or "none"), ``average_test_repeats``, ``source``, ``prepared`` (a ``neurodecode
  prepare`` folder), ``captions`` (caption files for text targets);
- ``[latents]``: ``cache_dir``, ``dtype`` ("float32"/"float16"), ``device``, and one table per batch key
  (``image_tokens``, ``text_tokens`` for MindBridge; ``tokens``, ``vae_latents`` for MindEye2) with
  ``space``, ``weights`` and space options (``normalize``...);
- ``[decoder]``: ``name``, ``base`` ("default", "tiny", "low_compute"), ``init_from``, config fields;
- ``[train]``: ``subjects_per_step``, ``batch_per_process`` (``batch_size`` counts per process) and
  ``validate`` (log the test-split losses after every epoch), then the TrainConfig fields;
- ``[finetune]``: ``method`` ("reset_tune": MindBridge, only the new subject's embedder and builder train,
  an anchor subject's batch is mixed into every step; "full": everything trains on the new subject),
  ``subject``, ``anchor``, ``n_train`` (first N training trials of the new subject).
"""

from __future__ import annotations

import copy
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import ValidationError
from .._core.files import write_json
from .._core.logging import logger
from .._core.validation import check_option, format_error
from ._config import TrainConfig
from ._targets import compute_targets, decoder_targets, gather_targets
from ._trainer import TrainResult

__all__ = ["train_from_recipe", "build_decoder", "identification_top1"]

_RECIPE_TRAIN_KEYS = ("subjects_per_step", "batch_per_process", "validate")


def _subject_ids(subjects: Any) -> list[str]:
    from ..data._nsd import nsd_subject_id

    if subjects is None or isinstance(subjects, (str, int)):
        subjects = [subjects]
    return [nsd_subject_id(s) for s in subjects]


def build_decoder(name: str, *, subjects: Mapping[str, int], target_shapes: Mapping[str, Any],
                  base: str = "default", **fields: Any) -> Any:
    """Build decoder ``name`` for ``subjects`` with its target shapes taken from the latent spaces.

    Parameters
    ----------
    name : {"mindbridge", "mindeye2"}
    subjects : dict of str to int
        Subject id -> number of voxels.
    target_shapes : dict of str to tuple of int
        Batch key -> shape of one target (e.g. ``{"image_tokens": (257, 768)}``); optional keys
        left out turn their head off.
    base : {"default", "tiny", "low_compute"}
        The config preset the fields override.
    **fields
        Config fields (a shape field given here must agree with ``target_shapes``).

    Returns
    -------
    model : torch.nn.Module
    """
    from ..models import decoder_class

    spec = decoder_targets(name)
    cls: Any = decoder_class(name)
    cfg_cls = cls.config_class
    for key, (field, _, required) in spec.items():
        shape = target_shapes.get(key)
        if shape is None:
            if required:
                raise ValidationError(format_error(f"latents.{key}", f"a latent space for {name}'s {key}", "none",
                                                   f"Add [latents.{key}] with a space name to the recipe"))
            fields[field] = None
            continue
        shape = [int(v) for v in shape]
        given = fields.get(field)
        if given is not None and [int(v) for v in given] != shape:
            raise ValidationError(format_error(f"decoder.{field}", f"the latent space's shape {shape}", list(given),
                                               f"Drop decoder.{field} (it is read from the space) or change the space"))
        fields[field] = shape
    subjects = {str(k): int(v) for k, v in subjects.items()}
    check_option(base, "decoder.base", ("default", "tiny", "low_compute"))
    if base == "tiny":
        config = cfg_cls.tiny(subjects, **fields)
    elif base == "low_compute":
        if not hasattr(cfg_cls, "low_compute"):
            raise ValidationError(format_error("decoder.base", f"'default' or 'tiny' for {name}", "'low_compute'"))
        config = cfg_cls.low_compute(subjects=subjects, **fields)
    else:
        config = cfg_cls.from_dict({"subjects": subjects, **fields})
    return cls(config)


def identification_top1(pred: np.ndarray, target: np.ndarray) -> float:
    """Fraction of items whose prediction correlates best with their own target (chance ``1/n``).

    Parameters
    ----------
    pred, target : ndarray of shape (n_items, ...)
    """
    p = pred.reshape(len(pred), -1).astype(np.float64)
    t = target.reshape(len(target), -1).astype(np.float64)
    p = (p - p.mean(1, keepdims=True)) / (p.std(1, keepdims=True) + 1e-12)
    t = (t - t.mean(1, keepdims=True)) / (t.std(1, keepdims=True) + 1e-12)
    return float(((p @ t.T).argmax(1) == np.arange(len(p))).mean())


def identification_with_control(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """:func:`identification_top1`, and the same with each item paired to another item's target.

    The shuffled-brain control uses a fixed cyclic shift of a seeded permutation, so no item keeps
    its own target.
    """
    order = np.random.default_rng(0).permutation(len(target))
    wrong = np.empty_like(order)
    wrong[order] = np.roll(order, 1)
    return identification_top1(pred, target), identification_top1(pred, target[wrong])


def _load_data(root: Path, data: Mapping[str, Any], subjects: list[str], verbose: Any) -> dict[str, Any]:
    from ..data import load_nsd

    dataset = str(data.get("dataset", "nsd")).lower()
    if dataset != "nsd":
        raise ValidationError(format_error("data.dataset", "'nsd' (fMRI decoders)", repr(dataset),
                                           "EEG/MEG decoders have their own recipes"))
    sessions = data.get("sessions")
    sessions = None if sessions in (None, "all", "") else sessions
    zscore = data.get("zscore", "train")
    zscore = None if zscore in (None, "none", False) else zscore
    out = {}
    for s in subjects:
        out[s] = load_nsd(root, s, beta_version=str(data.get("beta_version", data.get("betas", "b3"))),
                          sessions=sessions, zscore=zscore,
                          average_test_repeats=bool(data.get("average_test_repeats", True)),
                          source=str(data.get("source", "auto")), cache_dir=data.get("prepared") or None,
                          verbose=verbose)
    return out


def _resolve_cache_root(latents: Mapping[str, Any], out_dir: Path) -> Path:
    from .._core.config import cache_dir

    given = latents.get("cache_dir")
    if given in ("out", "out_dir"):
        return out_dir / "cache"
    return Path(given).expanduser() if given else cache_dir()


def train_from_recipe(recipe: Mapping[str, Any], data_root: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                      *, max_steps: int | None = None, resume: bool = True, device: str = "auto",
                      verbose: Any = None) -> TrainResult:
    """Train the decoder a recipe describes on the data under ``data_root``; outputs go to ``out_dir``.

    Parameters
    ----------
    recipe : dict
        A resolved recipe (:func:`neurodecode._core.recipes.load_recipe`).
    data_root : path-like
        The dataset root (NSD; for the M/EEG recipes see :func:`~neurodecode.train._recipes_meeg.train_meeg_from_recipe`).
    out_dir : path-like
        Run folder: the model (``config.json`` + ``model.safetensors``), ``checkpoints/``,
        ``metrics.jsonl``, ``metrics.json``, ``recipe.json``, ``provenance.json``.
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
    result : TrainResult
        ``metrics`` also holds ``test/<subject>/top1`` (identification of the test images among
        themselves from the predicted main target), ``test/<subject>/chance`` and
        ``test/<subject>/shuffled_top1`` (the same score with the test trials paired to other
        trials' targets: the shuffled-brain control).
    """
    if str(dict(recipe.get("data", {})).get("dataset", "nsd")).lower() != "nsd":  # ATM / GLIM recipes
        from ._recipes_meeg import train_meeg_from_recipe

        return train_meeg_from_recipe(recipe, data_root, out_dir, max_steps=max_steps, resume=resume, device=device,
                                      verbose=verbose)
    from .._core.device import resolve_device
    from .._core.recipes import save_resolved_recipe
    from .._core.versions import package_versions
    from ..data._trials import Trials
    from ..models import load_decoder
    from ._batches import MultiSubjectBatches
    from ._trainer import Trainer

    recipe = copy.deepcopy(dict(recipe))
    root, out = Path(data_root), Path(out_dir)
    data = dict(recipe.get("data", {}))
    latents = dict(recipe.get("latents", {}))
    decoder = dict(recipe.get("decoder", {}))
    train_tbl = dict(recipe.get("train", {}))
    finetune = dict(recipe.get("finetune", {}))
    name = str(decoder.pop("name", ""))
    if name == "brain_diffuser":  # ridge regressions: closed form, no trainer loop
        from ._recipes_bd import fit_brain_diffuser_from_recipe

        if max_steps is not None:
            logger.info("brain_diffuser is fitted in closed form: --max-steps is ignored")
        return fit_brain_diffuser_from_recipe(recipe, data_root, out_dir, resume=resume, device=device,
                                              verbose=verbose)
    spec = decoder_targets(name)
    init_from = decoder.pop("init_from", "") or ""
    base = str(decoder.pop("base", "default"))

    extra = {k: train_tbl.pop(k) for k in _RECIPE_TRAIN_KEYS if k in train_tbl}
    if device != "auto" or "device" not in train_tbl:
        train_tbl["device"] = device
    if max_steps is not None:
        train_tbl["max_steps"] = int(max_steps)
    if train_tbl.get("verbose") is None:
        train_tbl["verbose"] = verbose
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_subject_batch = int(train_tbl.get("batch_size", 32)) * (world if extra.get("batch_per_process") else 1)
    train_tbl["batch_size"] = per_subject_batch
    config = TrainConfig.from_dict(train_tbl)

    subjects = _subject_ids(data.get("subjects"))
    method = str(finetune.get("method", "")) or None
    new_subject = anchor = None
    if method is not None:
        check_option(method, "finetune.method", ("reset_tune", "full"))
        if not init_from:
            raise ValidationError(format_error("decoder.init_from", "the folder of a trained decoder to fine-tune",
                                               "nothing", "Pass --set decoder.init_from=DIR (a `neurodecode train` "
                                               "output folder)"))
        new_subject = _subject_ids(finetune.get("subject"))[0]
        anchor = _subject_ids(finetune["anchor"])[0] if finetune.get("anchor") else None
        subjects = list(dict.fromkeys([new_subject, *([anchor] if anchor else []), *subjects]))
        if method == "reset_tune" and anchor is None:
            raise ValidationError(format_error("finetune.anchor", "a source subject the model was trained on",
                                               "none", "Reset-tuning mixes a source-subject batch into each step"))

    # 1. data
    trials: dict[str, Trials] = _load_data(root, data, subjects, verbose)
    train_sets = {s: t.train for s, t in trials.items()}
    test_sets = {s: t.test for s, t in trials.items()}
    n_train = finetune.get("n_train")
    if new_subject is not None and n_train:
        keep = min(int(n_train), len(train_sets[new_subject]))
        train_sets[new_subject] = train_sets[new_subject].subset(np.arange(keep),
                                                                  note=f"first {keep} training trials (finetune.n_train)")

    # 2. targets, computed once per stimulus into the cache
    dev = resolve_device(latents.get("device") or device)
    all_ids = np.concatenate([t.stimulus_ids for t in trials.values()])
    unknown = sorted(k for k, v in latents.items() if isinstance(v, Mapping) and k not in spec)
    if unknown:
        raise ValidationError(format_error("latents", f"tables among {sorted(spec)} for {name}", unknown,
                                           "Rename the [latents.<key>] tables to the decoder's target keys"))
    cache_root = _resolve_cache_root(latents, out)
    targets = compute_targets(root, {k: v for k, v in latents.items() if k in spec}, all_ids, cache_root=cache_root,
                              captions=data.get("captions"), device=dev,
                              dtype=str(latents.get("dtype", "float32")), verbose=verbose)
    shapes = {k: feats.shape[1:] for k, (_, feats) in targets.items()}

    # 3. the decoder
    n_vox = {s: t.n_features for s, t in trials.items()}
    if init_from:
        model = load_decoder(init_from)
        model.train()
        if new_subject is not None:
            if method == "reset_tune":
                if not hasattr(model, "reset_tune"):
                    raise ValidationError(format_error("finetune.method", f"'full' for {type(model).__name__}",
                                                       "'reset_tune'", "Reset-tuning is MindBridge's method"))
                if new_subject in model.subjects:
                    raise ValidationError(format_error(
                        "finetune.subject", "a subject the pretrained model has not seen", repr(new_subject),
                        "Pretrain without it, e.g. --set 'data.subjects=[...]' on the source recipe"))
                model.reset_tune(new_subject, n_vox[new_subject])
            elif new_subject not in model.subjects:
                model.add_subject(new_subject, n_vox[new_subject])
        for s in subjects:
            if s not in model.subjects:
                raise ValidationError(format_error("data.subjects", f"subjects known to {init_from}",
                                                   repr(s), f"The model knows {model.subjects}"))
    else:
        model = build_decoder(name, subjects=n_vox, target_shapes=shapes, base=base, **decoder)

    # 4. batches and training
    def arrays(t: Trials) -> dict[str, np.ndarray]:
        return {"x": t.X, **gather_targets(targets, t.stimulus_ids, lazy=True)}  # no copies of repeats

    fit_subjects = [new_subject] if method == "full" else ([anchor, new_subject] if method else subjects)
    train_data = {s: arrays(train_sets[s]) for s in fit_subjects if s is not None}
    per_step = int(extra.get("subjects_per_step", min(2, len(train_data))))
    if method == "reset_tune":
        per_step = 2
    source = MultiSubjectBatches(train_data, per_subject_batch, subjects_per_step=min(per_step, len(train_data)),
                                 anchor=new_subject if method == "reset_tune" else None)
    val = None
    if extra.get("validate", False):
        val_subjects = [new_subject] if new_subject is not None else subjects
        val = MultiSubjectBatches({s: arrays(test_sets[s]) for s in val_subjects}, per_subject_batch,
                                  shuffle=False)
    if not resume and (out / "checkpoints").exists():
        logger.warning("resume=False: deleting the previous checkpoints in %s", out / "checkpoints")
        shutil.rmtree(out / "checkpoints")
    out.mkdir(parents=True, exist_ok=True)
    save_resolved_recipe(recipe, out)
    result = Trainer(model, config, out_dir=out).fit(source, val, resume=resume)

    if "loss" not in result.metrics:  # a finished run resumed: report its last logged training metrics
        last: dict[str, Any] = next((h for h in reversed(result.history) if "loss" in h), {})
        result.metrics.update({k: v for k, v in last.items() if k not in ("step", "epoch", "lr", "elapsed_s")})

    # 5. test identification and outputs
    main_key = next(k for k, (_, _, req) in spec.items() if req)
    test_metrics: dict[str, float] = {}
    for s in ([new_subject] if new_subject is not None else subjects):
        test = test_sets[s]
        if len(test) < 2:
            continue
        pred = model.predict_latents(test.X, subject=s)
        key = spec[main_key][1] or getattr(model.config, "target_key", main_key)
        truth = gather_targets(targets, test.stimulus_ids)[main_key]
        top1, control = identification_with_control(pred[key], truth)
        test_metrics[f"test/{s}/top1"] = top1
        test_metrics[f"test/{s}/chance"] = 1.0 / len(test)
        test_metrics[f"test/{s}/shuffled_top1"] = control
    result.metrics.update(test_metrics)
    write_json(out / "metrics.json", {"steps": result.steps, "resumed_from": result.resumed_from,
                                      "metrics": result.metrics})
    write_json(out / "provenance.json", {
        "recipe": recipe.get("_source", {}), "data_root": str(root), "subjects": subjects,
        "fine_tune": {"method": method, "subject": new_subject, "anchor": anchor, "init_from": str(init_from)}
        if method else None,
        "data": {s: t.provenance for s, t in trials.items()},
        "n_train": {s: len(t) for s, t in train_sets.items()}, "n_test": {s: len(t) for s, t in test_sets.items()},
        "targets": {k: {"shape": list(v), "cache_root": str(cache_root)} for k, v in shapes.items()},
        "train_config": config.to_dict(), "device": str(dev),
        "versions": package_versions(("neurodecode", "torch", "accelerate", "numpy")),
    })
    return result
