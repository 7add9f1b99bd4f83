"""STTM's runner: ``train()`` and ``reconstruct()`` for ``pipelines/sttm_*.toml``.

Training, each step resumable:

1. load every subject of ``[data]`` (:func:`neurodecode.recipes._data.load_nsd_for_recipe`, the reading
   ``reconstruct`` uses too; STTM's recipes read Brain-Diffuser's split: repeats averaged, betas / 300,
   no per-session z-score);
2. compute the targets of ``[latents.<key>]`` once per stimulus into the feature cache and index them per
   trial (``image_tokens``: VD-normalised CLIP-L tokens; ``text_embeds``: CLIP-L text embeddings averaged
   over an image's captions; ``vae_latents``: SD-VAE latents of the pixel branch);
3. seed (``[train] seed``), then build the decoder of ``[decoder]`` (target shapes from the spaces, voxel
   counts from the data), or load ``decoder.init_from`` for a new subject (``[finetune]``);
4. store each trained subject's per-voxel training mean and standard deviation in the model (the
   reference's z-score, ``ddof=1``; reconstruction applies the same);
5. train with :class:`~neurodecode.train.Trainer`: every subject in every step (``[train]
   subjects_per_step``, default all), ``batch_size`` samples per subject;
6. save the model, ``recipe.json``, ``provenance.json`` and ``metrics.json`` (training metrics plus top-1
   identification of each subject's test images from the prior's tokens, beside a shuffled-brain control).

``[finetune]`` (new-subject transfer, :class:`STTMFinetune`): ``method = "adapter"`` trains only the new
subject's adapters (high-level and pixel) of the model in ``decoder.init_from``, everything else frozen,
on the first ``n_train`` training trials (or the first ``fraction`` of them) of ``subject``.

Reconstruction: :func:`neurodecode.recipes._nsd_images.reconstruct_nsd` (the pixel branch's
``vae_latents`` are the img2img init of the ``[generate]`` generator, Versatile Diffusion's image
variation ``"versatile-image"``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .._core.errors import ValidationError
from .._core.validation import format_error
from ._data import load_nsd_for_recipe, nsd_subject_ids
from ._nsd_images import reconstruct_nsd
from ._run import RunContext, fit, make_context, seed_everything, write_run_outputs
from ._targets import compute_targets, gather_targets

__all__ = ["DATASETS", "STTMFinetune", "check_recipe", "train", "reconstruct"]

DATASETS = ("nsd",)


@dataclass
class STTMFinetune:
    """``[finetune]`` of an STTM recipe: a new subject from little data.

    Attributes
    ----------
    method : {"adapter"}
        Only the new subject's adapters train (high-level and pixel); the shared decoder, prior and
        pixel blocks stay frozen.
    subject : str or int
        The new subject (unknown to the pretrained model).
    n_train : int or None
        The first ``n_train`` training trials of the new subject.
    fraction : float or None
        Or the first ``fraction`` of them (in (0, 1]); ``n_train`` wins when both are set.
    """

    method: Literal["adapter"] = "adapter"
    subject: str | int | None = None
    n_train: int | None = None
    fraction: float | None = None


def _decoder_class() -> Any:
    from ..models import decoder_class

    return decoder_class("sttm")


def check_recipe(recipe: Mapping[str, Any], problems: Any) -> dict[str, Any]:
    """Check the tables of an STTM recipe (see :mod:`neurodecode.recipes._schema`; ``[finetune]``: :class:`STTMFinetune`)."""
    from ..train import TrainConfig
    from ._schema import NSDGenerate, check_recipe_tables, check_table

    cls = _decoder_class()
    out = check_recipe_tables({k: v for k, v in recipe.items() if k != "finetune"}, problems, datasets=DATASETS,
                              decoder_config=cls.config_class, generate=NSDGenerate, train_config=TrainConfig,
                              latent_tables=dict(cls.targets))
    if "finetune" in recipe:
        ft = check_table(STTMFinetune, recipe["finetune"], "finetune", problems)
        if ft.get("subject") is None:
            problems.add("finetune.subject", "expected the new subject (e.g. \"nsd/subj07\"), got nothing")
        frac = ft.get("fraction")
        if frac is not None and not 0.0 < float(frac) <= 1.0:
            problems.add("finetune.fraction", f"expected a number in (0, 1], got {frac!r}")
        out["finetune"] = ft
    return out


def reconstruct(recipe: Mapping[str, Any], data_root: Any, subject: Any, checkpoint: Any, out_dir: Any,
                **kwargs: Any) -> dict[str, Any]:
    """Reconstruct a subject's NSD test images (:func:`~neurodecode.recipes._nsd_images.reconstruct_nsd`)."""
    return reconstruct_nsd(recipe, data_root, subject, checkpoint, out_dir, **kwargs)


def _keep_first(n: int, ft: Mapping[str, Any]) -> int:
    if ft.get("n_train"):
        return max(1, min(int(ft["n_train"]), n))
    if ft.get("fraction") is not None:
        return max(1, min(int(round(float(ft["fraction"]) * n)), n))
    return n


def train(recipe: Mapping[str, Any], data_root: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
          max_steps: int | None = None, resume: bool = True, device: str = "auto", verbose: Any = None) -> Any:
    """Train an STTM recipe (see the module docstring); called by :func:`neurodecode.recipes.train_from_recipe`.

    Returns
    -------
    result : TrainResult
        ``metrics`` also holds ``test/<subject>/top1`` (identification of the test images among themselves
        from the prior's CLIP tokens), ``test/<subject>/chance`` and ``test/<subject>/shuffled_top1``.
    """
    from .._core.recipes import save_resolved_recipe
    from ..metrics import identification_with_control
    from ..models import build_decoder, load_decoder
    from ..train import MultiSubjectBatches

    ctx: RunContext = make_context(recipe, data_root, out_dir, max_steps=max_steps, resume=resume, device=device,
                                   verbose=verbose)
    ft = ctx.finetune
    new_subject = nsd_subject_ids(ft["subject"])[0] if ft else None
    if ft and not ctx.init_from:
        raise ValidationError(format_error("decoder.init_from", "the folder of a trained STTM run", "nothing",
                                           "Pass --set decoder.init_from=DIR (a `neurodecode train` output folder of "
                                           "pipelines/sttm_nsd.toml trained without the new subject)"))
    subjects = [new_subject] if new_subject is not None else nsd_subject_ids(ctx.data["subjects"])

    # 1. data
    trials = {s: load_nsd_for_recipe(ctx.root, ctx.data, s, verbose=verbose) for s in subjects}
    train_sets = {s: t.train for s, t in trials.items()}
    test_sets = {s: t.test for s, t in trials.items()}
    if new_subject is not None:
        full = len(train_sets[new_subject])
        keep = _keep_first(full, ft)
        if keep < full:
            train_sets[new_subject] = train_sets[new_subject].subset(
                np.arange(keep), note=f"first {keep} of {full} training trials (finetune)")

    # 2. targets, computed once per stimulus into the cache
    all_ids = np.concatenate([t.stimulus_ids for t in trials.values()])
    tables = {k: v for k, v in ctx.latents.items() if isinstance(v, Mapping)}
    targets = compute_targets(ctx.root, tables, all_ids, cache_root=ctx.cache_root, captions=ctx.data["captions"],
                              device=ctx.latent_device, dtype=ctx.dtype, verbose=verbose)
    shapes = {k: feats.shape[1:] for k, (_, feats) in targets.items()}

    # 3. the decoder, initialised under the run's seed
    seed_everything(ctx.config.seed)
    n_vox = {s: t.n_features for s, t in trials.items()}
    if ctx.init_from:
        model = load_decoder(ctx.init_from)
        if type(model).__name__ != "STTM":
            raise ValidationError(format_error("decoder.init_from", "a trained STTM run", type(model).__name__))
        model.train()
        if new_subject is not None:
            if new_subject in model.subjects:
                raise ValidationError(format_error(
                    "finetune.subject", "a subject the pretrained model has not seen", repr(new_subject),
                    "Pretrain without it, e.g. --set 'data.subjects=[...]' on pipelines/sttm_nsd.toml"))
            model.train_adapters_only(new_subject, n_vox[new_subject])
        for s in subjects:
            if s not in model.subjects:
                raise ValidationError(format_error("data.subjects", f"subjects known to {ctx.init_from}", repr(s),
                                                   f"The model knows {model.subjects}"))
    else:
        model = build_decoder("sttm", subjects=n_vox, target_shapes=shapes, base=ctx.base, **ctx.decoder)

    # 4. the reference's z-score: each subject's training mean and std (ddof 1), stored in the model
    for s in subjects:
        model.fit_input_scaling(s, train_sets[s].X)

    # 5. batches and training: every subject in every step
    def arrays(t: Any) -> dict[str, Any]:
        return {"x": t.X, **gather_targets(targets, t.stimulus_ids, lazy=True)}

    train_data = {s: arrays(train_sets[s]) for s in subjects}
    per_step = int(ctx.extra.get("subjects_per_step") or len(train_data))
    source = MultiSubjectBatches(train_data, ctx.config.batch_size, subjects_per_step=min(per_step, len(train_data)))
    val = None
    if ctx.extra.get("validate", False):
        val = MultiSubjectBatches({s: arrays(test_sets[s]) for s in subjects}, ctx.config.batch_size, shuffle=False)
    ctx.out.mkdir(parents=True, exist_ok=True)
    save_resolved_recipe(ctx.recipe, ctx.out)
    result = fit(model, ctx.config, source, val, ctx.out, resume)

    # 6. test identification and outputs
    for s in subjects:
        test = test_sets[s]
        if len(test) < 2:
            continue
        pred = model.predict_latents(test.X, subject=s)
        truth = gather_targets(targets, test.stimulus_ids)["image_tokens"]
        top1, control = identification_with_control(pred["clip_image_tokens"], truth)
        result.metrics[f"test/{s}/top1"] = top1
        result.metrics[f"test/{s}/chance"] = 1.0 / len(test)
        result.metrics[f"test/{s}/shuffled_top1"] = control
    write_run_outputs(ctx, {"steps": result.steps, "resumed_from": result.resumed_from, "metrics": result.metrics}, {
        "subjects": subjects,
        "fine_tune": {**dict(ft), "subject": new_subject, "init_from": ctx.init_from} if ft else None,
        "data": {s: t.provenance for s, t in trials.items()},
        "n_train": {s: len(t) for s, t in train_sets.items()}, "n_test": {s: len(t) for s, t in test_sets.items()},
        "input_scaling": "per-voxel z-score with each subject's training mean and std (ddof 1), stored in the model",
        "targets": {k: {"shape": list(v), "cache_root": str(ctx.cache_root)} for k, v in shapes.items()},
    })
    return result
