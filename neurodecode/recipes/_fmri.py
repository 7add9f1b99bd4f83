"""The NSD neural decoders' runner (MindBridge, MindEye2): ``train()`` and ``reconstruct()`` for their recipes.

Training, each step resumable:

1. load every subject of ``[data]`` (:func:`neurodecode.recipes._data.load_nsd_for_recipe`, the reading
   ``reconstruct`` uses too);
2. compute the targets of ``[latents.<key>]`` once per stimulus into the feature cache (``[latents]
   cache_dir``, default ``$NEURODECODE_CACHE``) and index them per trial; the batch keys are the ones
   the decoder class declares in its ``targets``;
3. seed (``[train] seed``), then build the decoder of ``[decoder]`` (target shapes from the spaces, voxel
   counts from the data), or load ``decoder.init_from`` for fine-tuning (``[finetune]``);
4. train with :class:`~neurodecode.train.Trainer` (``[train]``), checkpoints under ``OUT/checkpoints``;
5. save the model (``save_pretrained`` in ``OUT``), ``recipe.json``, ``provenance.json`` and
   ``metrics.json`` (training metrics plus top-1 identification of each subject's test images beside
   a shuffled-brain control, :func:`neurodecode.metrics.identification_with_control`).

``[train]`` keys beyond :class:`~neurodecode.train.TrainConfig`'s fields: ``subjects_per_step``,
``batch_per_process`` (``batch_size`` counts per process), ``validate``, ``caption_sampling``
(text targets: ``"mean"`` of an image's captions, or one caption per step: ``"cycle"`` takes caption
``step % caption_cycle`` as MindBridge's trainer, ``"random"`` draws one per sample, seeded; see
:class:`~neurodecode.train.ChoiceRows`), ``caption_cycle`` and ``samples_per_epoch`` (an epoch is
``samples_per_epoch // (batch_size x subjects_per_step)`` steps, MindEye2's 30,000; 0: one pass over the
data). ``[finetune]``: ``method``
("reset_tune": MindBridge, only the new subject's embedder and builder train, an anchor subject's
batch is mixed into every step; "full": everything trains on the new subject), ``subject``,
``anchor``, ``n_train`` (first N training trials of the new subject).

``[latents]`` keys beyond the tables: ``augment_views`` (K, default 0) and ``augment_seed``. With K > 0,
each target the decoder class lists in ``augmented_targets`` (MindBridge: ``image_tokens`` through
MindBridge's ``img_augment``; MindEye2: ``convnext_maps_aug``, the ConvNeXt features of ``blur_augs``
copies) is embedded for K augmented views of every training image, once, into the feature cache
(:class:`neurodecode.latents._augment.AugmentedStimuli`: seeded by ``augment_seed``, each image's id and
the view number), and every step draws one view per sample (a seeded
:class:`~neurodecode.train.ChoiceRows`, ``"random"``), so training sees a new augmented target across
epochs. Test identification and validation use the clean targets (a target its views replace, MindBridge's
``image_tokens``, is read clean for the test images only). ``augment_views = 0``: no views
(MindEye2's ``convnext_maps_aug`` is then the clean ``convnext_maps``).

Reconstruction: :func:`neurodecode.recipes._nsd_images.reconstruct_nsd` (predicted latents -> the
``[generate]`` generator, resumable BIDS derivative).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._core.errors import ValidationError
from .._core.logging import logger
from .._core.validation import format_error
from ._data import load_nsd_for_recipe, nsd_subject_ids
from ._nsd_images import reconstruct_nsd
from ._run import RunContext, fit, make_context, seed_everything, write_run_outputs
from ._targets import _is_text_space, caption_targets, choice_targets, compute_targets, gather_targets

__all__ = ["DATASETS", "check_recipe", "train", "reconstruct"]

DATASETS = ("nsd",)
#: ``[latents]`` keys of this runner besides the tables, ``cache_dir``, ``dtype`` and ``device``.
LATENTS_EXTRA = ("augment_views", "augment_seed")


def _targets_of(name: str) -> dict[str, Any]:
    from ..models import decoder_class

    return dict(decoder_class(name).targets)


def check_recipe(recipe: Mapping[str, Any], problems: Any) -> dict[str, Any]:
    """Check the tables of a MindBridge / MindEye2 recipe (see :mod:`neurodecode.recipes._schema`)."""
    from ..models import decoder_class
    from ..train import TrainConfig
    from ._schema import NSDGenerate, check_recipe_tables

    name = str(recipe["decoder"]["name"])
    out = check_recipe_tables(recipe, problems, datasets=DATASETS, decoder_config=decoder_class(name).config_class,
                              generate=NSDGenerate, train_config=TrainConfig,
                              latent_tables=_targets_of(name), latents_extra=LATENTS_EXTRA, finetune=True)
    for key in LATENTS_EXTRA:
        value = out["latents"].get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            problems.add(f"latents.{key}", f"expected a non-negative integer, got {value!r}")
    return out


def reconstruct(recipe: Mapping[str, Any], data_root: Any, subject: Any, checkpoint: Any, out_dir: Any,
                **kwargs: Any) -> dict[str, Any]:
    """Reconstruct a subject's NSD test images (:func:`~neurodecode.recipes._nsd_images.reconstruct_nsd`)."""
    return reconstruct_nsd(recipe, data_root, subject, checkpoint, out_dir, **kwargs)


def train(recipe: Mapping[str, Any], data_root: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
          max_steps: int | None = None, resume: bool = True, device: str = "auto", verbose: Any = None) -> Any:
    """Train a MindBridge / MindEye2 recipe (see the module docstring); called by
    :func:`neurodecode.recipes.train_from_recipe` with a validated recipe.

    Returns
    -------
    result : TrainResult
        ``metrics`` also holds ``test/<subject>/top1`` (identification of the test images among
        themselves from the predicted main target), ``test/<subject>/chance`` and
        ``test/<subject>/shuffled_top1`` (the same with the test trials paired to other trials'
        targets: the shuffled-brain control); MindEye2 also ``test/<subject>/retrieval_top1`` and
        ``retrieval_shuffled_top1``, the same from its retrieval (contrastive) embeddings.
    """
    from .._core.recipes import save_resolved_recipe
    from ..metrics import identification_with_control
    from ..models import build_decoder, decoder_class, load_decoder
    from ..train import MultiSubjectBatches

    ctx: RunContext = make_context(recipe, data_root, out_dir, max_steps=max_steps, resume=resume, device=device,
                                   verbose=verbose)
    spec = _targets_of(ctx.name)
    subjects = nsd_subject_ids(ctx.data["subjects"])
    ft = ctx.finetune
    method = ft.get("method")
    new_subject = anchor = None
    if method is not None:
        if not ctx.init_from:
            raise ValidationError(format_error("decoder.init_from", "the folder of a trained decoder to fine-tune",
                                               "nothing", "Pass --set decoder.init_from=DIR (a `neurodecode train` "
                                               "output folder)"))
        new_subject = nsd_subject_ids(ft.get("subject"))[0]
        anchor = nsd_subject_ids(ft["anchor"])[0] if ft.get("anchor") is not None else None
        subjects = list(dict.fromkeys([new_subject, *([anchor] if anchor else []), *subjects]))
        if method == "reset_tune" and anchor is None:
            raise ValidationError(format_error("finetune.anchor", "a source subject the model was trained on",
                                               "none", "Reset-tuning mixes a source-subject batch into each step"))

    # 1. data
    trials = {s: load_nsd_for_recipe(ctx.root, ctx.data, s, verbose=verbose) for s in subjects}
    train_sets = {s: t.train for s, t in trials.items()}
    test_sets = {s: t.test for s, t in trials.items()}
    n_train = ft.get("n_train")
    if new_subject is not None and n_train:
        keep = min(int(n_train), len(train_sets[new_subject]))
        train_sets[new_subject] = train_sets[new_subject].subset(np.arange(keep),
                                                                  note=f"first {keep} training trials (finetune.n_train)")

    # 2. targets, computed once per stimulus into the cache
    all_ids = np.concatenate([t.stimulus_ids for t in trials.values()])
    tables = {k: v for k, v in ctx.latents.items() if isinstance(v, Mapping)}
    fit_subjects = [new_subject] if method == "full" else ([anchor, new_subject] if method else subjects)
    # augmented views of the training images ([latents] augment_views; the decoder's augmented_targets)
    views, aug_seed = _augment_settings(ctx.latents)
    aug_spec = {k: (str(src), str(tf)) for k, (src, tf) in getattr(decoder_class(ctx.name), "augmented_targets",
                                                                     {}).items() if (tables.get(src) or {}).get("space")}
    # a target its views replace in training (MindBridge's image tokens) is read clean for the test images only
    # (test identification, validation): its training images' clean features are never used
    in_place = {k for k, (src, _) in aug_spec.items() if k == src} if views else set()
    test_ids = np.concatenate([t.stimulus_ids for t in test_sets.values()])
    if not len(test_ids):
        in_place = set()
    targets = compute_targets(ctx.root, {k: v for k, v in tables.items() if k not in in_place}, all_ids,
                              cache_root=ctx.cache_root, captions=ctx.data["captions"], device=ctx.latent_device,
                              dtype=ctx.dtype, verbose=verbose)
    if in_place:
        targets.update(compute_targets(ctx.root, {k: tables[k] for k in in_place}, test_ids,
                                       cache_root=ctx.cache_root, captions=ctx.data["captions"],
                                       device=ctx.latent_device, dtype=ctx.dtype, verbose=verbose))
    shapes = {k: feats.shape[1:] for k, (_, feats) in targets.items()}
    # text targets: one caption per step ([train] caption_sampling) instead of the mean of an image's captions
    sampling = str(ctx.extra.get("caption_sampling") or "mean")
    captions_of: dict[str, Any] = {}
    if sampling != "mean":
        from ..latents import describe_space

        for k, t in tables.items():
            if t.get("space") and k in targets and _is_text_space(describe_space(str(t["space"]))):
                captions_of[k] = caption_targets(ctx.root, tables, k, all_ids, cache_root=ctx.cache_root,
                                                 captions=ctx.data["captions"], device=ctx.latent_device,
                                                 dtype=ctx.dtype, verbose=verbose)

    view_tables: dict[str, Any] = {}
    if views:
        train_ids = np.unique(np.concatenate([train_sets[s].stimulus_ids for s in fit_subjects if s is not None]))
        for key, (src, transform) in aug_spec.items():
            view_tables[key] = _view_targets(ctx.root, tables[src], train_ids, views, transform, aug_seed,
                                             cache_root=ctx.cache_root, device=ctx.latent_device, dtype=ctx.dtype,
                                             verbose=verbose)
    elif any(key != src for key, (src, _) in aug_spec.items()):
        logger.warning("[latents] augment_views = 0: %s get the clean targets (no augmented views)",
                       ", ".join(k for k, (src, _) in aug_spec.items() if k != src))

    # 3. the decoder, initialised under the run's seed
    seed_everything(ctx.config.seed)
    n_vox = {s: t.n_features for s, t in trials.items()}
    if ctx.init_from:
        model = load_decoder(ctx.init_from)
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
                raise ValidationError(format_error("data.subjects", f"subjects known to {ctx.init_from}",
                                                   repr(s), f"The model knows {model.subjects}"))
    else:
        model = build_decoder(ctx.name, subjects=n_vox, target_shapes=shapes, base=ctx.base, **ctx.decoder)

    # 4. batches and training
    def arrays(t: Any, train: bool = False) -> dict[str, Any]:
        clean = {k: v for k, v in targets.items() if not (train and k in view_tables)}  # views replace them
        out = {"x": t.X, **gather_targets(clean, t.stimulus_ids, lazy=True)}  # no copies of repeats
        for k, table in (captions_of.items() if train else ()):
            out[k] = choice_targets(table, t.stimulus_ids, mode=sampling, cycle=int(ctx.extra.get("caption_cycle", 3)))
        for k, table in (view_tables.items() if train else ()):
            out[k] = _view_choice(table, t.stimulus_ids, views)
        for k, (src, _) in aug_spec.items():  # without views (or when evaluating): the clean target
            out.setdefault(k, out[src])
        return out

    train_data = {s: arrays(train_sets[s], train=True) for s in fit_subjects if s is not None}
    per_step = ctx.extra.get("subjects_per_step") or min(2, len(train_data))
    if method == "reset_tune":
        per_step = 2
    per_step = min(per_step, len(train_data))
    # an epoch of `samples_per_epoch` samples over all subjects (MindEye2: 750 x sessions = 30,000), else one pass
    n_epoch = int(ctx.extra.get("samples_per_epoch") or 0)
    if n_epoch < 0:
        raise ValidationError(format_error("train.samples_per_epoch", "a positive number of samples, or 0 for one "
                                           "pass over the data", n_epoch))
    steps = max(1, n_epoch // (ctx.config.batch_size * per_step)) if n_epoch else None
    source = MultiSubjectBatches(train_data, ctx.config.batch_size, subjects_per_step=per_step, steps_per_epoch=steps,
                                 anchor=new_subject if method == "reset_tune" else None)
    val = None
    if ctx.extra.get("validate", False):
        val_subjects = [new_subject] if new_subject is not None else subjects
        val = MultiSubjectBatches({s: arrays(test_sets[s]) for s in val_subjects}, ctx.config.batch_size,
                                  shuffle=False)
    ctx.out.mkdir(parents=True, exist_ok=True)
    save_resolved_recipe(ctx.recipe, ctx.out)
    result = fit(model, ctx.config, source, val, ctx.out, resume)

    # 5. test identification and outputs
    main_key = next(k for k, t in spec.items() if t.required)
    for s in ([new_subject] if new_subject is not None else subjects):
        test = test_sets[s]
        if len(test) < 2:
            continue
        pred = model.predict_latents(test.X, subject=s)
        key = spec[main_key].latent_key or getattr(model.config, "target_key", main_key)
        truth = gather_targets(targets, test.stimulus_ids)[main_key]
        top1, control = identification_with_control(pred[key], truth)
        result.metrics[f"test/{s}/top1"] = top1
        result.metrics[f"test/{s}/chance"] = 1.0 / len(test)
        result.metrics[f"test/{s}/shuffled_top1"] = control
        if "retrieval_embeds" in pred:  # MindEye2's contrastive space (its published retrieval), beside the prior's
            top1, control = identification_with_control(pred["retrieval_embeds"], truth)
            result.metrics[f"test/{s}/retrieval_top1"] = top1
            result.metrics[f"test/{s}/retrieval_shuffled_top1"] = control
    write_run_outputs(ctx, {"steps": result.steps, "resumed_from": result.resumed_from, "metrics": result.metrics}, {
        "subjects": subjects,
        "fine_tune": {"method": method, "subject": new_subject, "anchor": anchor, "init_from": ctx.init_from}
        if method else None,
        "data": {s: t.provenance for s, t in trials.items()},
        "n_train": {s: len(t) for s, t in train_sets.items()}, "n_test": {s: len(t) for s, t in test_sets.items()},
        "targets": {k: {"shape": list(v), "cache_root": str(ctx.cache_root)} for k, v in shapes.items()},
        "augment": {"views": views, "seed": aug_seed, "targets": {k: {"of": src, "transform": tf}
                                                                  for k, (src, tf) in aug_spec.items()}}
        if views else None,
    })
    return result


def _augment_settings(latents: Mapping[str, Any]) -> tuple[int, int]:
    """``[latents] augment_views`` and ``augment_seed``, checked."""
    views, seed = latents.get("augment_views", 0), latents.get("augment_seed", 0)
    for key, value in (("augment_views", views), ("augment_seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValidationError(format_error(f"latents.{key}", "a non-negative integer", repr(value),
                                               "augment_views = 0 turns the augmented views off"))
    return int(views), int(seed)


def _view_targets(root: Any, table: Mapping[str, Any], ids: np.ndarray, views: int, transform: str, seed: int, *,
                  cache_root: Any, device: Any, dtype: str, verbose: Any) -> tuple[np.ndarray, np.ndarray]:
    """``views`` augmented views of each NSD image ``ids`` embedded (once, into the feature cache) in the space
    of ``table``: features of shape (n_ids * views, *shape), image ``ids[j]``'s views at rows ``j * views + k``."""
    from pathlib import Path

    from .._core.specs import load_spec
    from ..latents import FeatureCache, embed_to_cache, get_space
    from ..latents._augment import AugmentedStimuli
    from ._targets import _wait_for_other_processes, target_cache_dir

    table = dict(table)
    name = str(table.pop("space"))
    weights = table.pop("weights", None) or None
    batch_size = int(table.pop("batch_size", 32))
    ids = np.unique(np.asarray(ids, dtype=np.int64))
    stim = AugmentedStimuli(str(Path(root) / load_spec("nsd")["paths"]["stimuli"]), views, transform, seed, ids=ids)
    # beside the clean features of the space, in a folder of its own: <space>@<transform>-views/<hash>
    folder = target_cache_dir(cache_root, f"{name}@{transform}-views", {**table, "weights": weights,
                                                                        "augment": stim.spec()}, stim.ids)
    cache = FeatureCache(folder)
    done = (folder / "manifest.json").is_file() and cache.complete
    if not (done and cache.matches_stimuli(stim)):
        space = get_space(name, weights=weights, device=device, batch_size=batch_size, verbose=verbose, **table)
        logger.info("targets %s: %d augmented views (%s) of %d training images into %s", name, views, transform,
                    len(ids), folder)
        cache = embed_to_cache(space, stim, folder, verbose=verbose, overwrite=done)
        cache = cache if cache.complete else _wait_for_other_processes(folder)
    return ids, cache.load(stim.ids, dtype=dtype)


def _view_choice(table: tuple[np.ndarray, np.ndarray], stimulus_ids: np.ndarray, views: int) -> Any:
    """Per-trial :class:`~neurodecode.train.ChoiceRows` over the trial's image's views (one drawn per step)."""
    from ..train import ChoiceRows

    ids, feats = table
    rows = np.searchsorted(ids, np.asarray(stimulus_ids, dtype=np.int64))
    return ChoiceRows(feats, rows * views, np.full(len(rows), views, dtype=np.int64), mode="random")
