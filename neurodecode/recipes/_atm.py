"""The ATM runner: train ATM from a recipe on THINGS-EEG2 or THINGS-MEG, and reconstruct images.

:func:`train` runs the frame of :func:`~neurodecode.recipes._meeg.train_meeg` with :func:`train_atm`: load each subject's trials cropped to ``[data] window``; embed the targets once per stimulus into
the feature cache (the pooled image embedding of every image found under ``[data] images``, and the
text embedding of ``[latents] text_template`` filled with each concept); build, scale, train and save
one ATM per fold, then its stage-1 diffusion prior (``[decoder.prior]``: ``epochs``, ``lr``,
``batch_size`` and :class:`~neurodecode.models.atm.ATMPriorConfig` fields) on the trained encoder's
embeddings of the training trials, into ``<model folder>/prior``; score the test trials.

Which models. ``[data] mode = "within"``: one model per subject in ``OUT/<sub-XX>/`` (trained and
tested on that subject), or, with ``[decoder] subject_tokens = true``, one joint model in ``OUT/`` with
a token per subject. ``mode = "loso"``: one model per held-out subject in ``OUT/<sub-XX>/``, trained on
the other subjects' training trials and tested on the held-out subject's test trials (its subject
token is the shared "unknown" one). A model fitted on several subjects draws each batch from one
subject (:class:`~neurodecode.train.MultiSubjectBatches`).

Input scaling (``[data] scaling = "channel-zscore"``). Each model holds the per-channel statistics of
the training trials of the subjects it is fitted on (:meth:`~neurodecode.models.atm.ATM.set_input_scaling`,
set before training, saved with the weights): pooled over those subjects for trials of no or an
unknown subject (a per-subject model: its subject's own statistics; ``loso``: the held-out subject
is scaled with the training subjects' pooled statistics), and with subject tokens also per subject.
The data stay raw; the model scales them in training, evaluation and every later use.

Test metrics (``metrics.json``): zero-shot identification of each test trial's image among all test
images (the ``n``-way case of the ATM protocol, 200-way on the real data, so no random distractors
are drawn): ``test/<subject>/top1``, ``top5``, ``chance`` (``1 / n``), ``n_way`` and, with the
prior, ``prior_top1`` (the same from image embeddings sampled by the prior). Smaller ``k``-way scores
with random distractors come from :func:`neurodecode.metrics.kway_topk` on the encoder's embeddings.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import DataIntegrityError, MetadataMismatchError, ValidationError
from .._core.logging import logger, progress
from .._core.validation import check_option, format_error
from ..metrics import derangement, topk_identification
from ._data import load_things_for_recipe, things_image_paths
from ._derivative import (
    loader_verbose,
    model_class,
    not_a_run,
    output_paths,
    pick_subjects,
    sha_or_none,
    things_stim_label,
)
from ._meeg import (
    _channel_stats,
    _check_field,
    _set_input_scaling,
    _space_table,
    _tiny_fields,
    _val_source,
    generate_items,
    reconstruct_meeg,
    train_meeg,
)
from ._run import fit as _fit
from ._targets import _load_or_embed

__all__ = ["DATASETS", "check_recipe", "train", "reconstruct", "train_atm"]

DATASETS = ("things-eeg2", "things-meg")
#: ``[decoder.prior]`` keys that set the prior's own training (the others are ATMPriorConfig fields); what is
#: not given follows ``[train]``. The reference: Adam 1e-3, cosine with 500 warm-up steps, grad clip 1.0,
#: batch 1024, 150 epochs.
PRIOR_TRAIN_KEYS = ("epochs", "lr", "batch_size", "optimizer", "scheduler", "grad_clip", "weight_decay",
                    "warmup_steps")

_IMAGE_DIRS = {"things-eeg2": "image_set", "things-meg": "stimuli"}


def _fold_name(subject: str) -> str:
    return str(subject).rsplit("/", 1)[-1]


def _embed(table: Mapping[str, Any], stimuli: Any, ids: np.ndarray, *, cache_root: Path, device: Any,
           dtype: str, verbose: Any) -> np.ndarray:
    """Features of ``ids`` in the space of ``table``, computed once into the feature cache."""
    table = dict(table)
    name = str(table.pop("space"))
    weights = table.pop("weights", None) or None
    batch_size = int(table.pop("batch_size", 32))
    cache = _load_or_embed(name, table, weights, stimuli, ids, cache_root, device, batch_size, verbose)
    return np.asarray(cache.load(ids, dtype=dtype))


# ---------------------------------------------------------------------------------------- THINGS data
def _load_things(root: Path, dataset: str, data: Mapping[str, Any], subject: Any, verbose: Any) -> Any:
    """One subject's THINGS trials cropped to ``data.window``: (train single trials, test).

    The loading lives in :func:`neurodecode.recipes._data.load_things_for_recipe`, shared with
    ``neurodecode reconstruct``.
    """

    parts = load_things_for_recipe(root, dataset, data, subject, verbose=verbose)
    return parts["train"], parts["test"]


def _concept_text(concept: str) -> str:
    """``"00001_aardvark"`` -> ``"aardvark"``; underscores become spaces."""
    return re.sub(r"^\d+_", "", str(concept)).replace("_", " ")




# ---------------------------------------------------------------------------------------- ATM
def _atm_config(decoder: Mapping[str, Any], base: str, *, n_channels: int, n_times: int, sfreq: float,
                proj_dim: int, ch_names: list[str], subjects: list[str]) -> Any:
    from ..models.atm import ATMConfig

    fields = {k: v for k, v in decoder.items() if k not in ("prior",)}
    _check_field(fields, "n_channels", n_channels, "the data's channels")
    _check_field(fields, "n_times", n_times, "samples in data.window")
    _check_field(fields, "sfreq", sfreq, "the data's sampling rate")
    _check_field(fields, "proj_dim", proj_dim, "the image space's width")
    fields["ch_names"] = ch_names
    fields["subjects"] = subjects if fields.get("subject_tokens") else []
    return ATMConfig.from_dict({**_tiny_fields(ATMConfig), **fields} if base == "tiny" else fields)


def train_atm(ctx: Any) -> tuple[dict[str, Any], dict[str, float], dict[str, Any]]:
    """Load THINGS, embed the targets, train ATM (and its prior) per fold, score the test concepts.

    Parameters
    ----------
    ctx : RunContext
        The validated recipe and run settings (:func:`~neurodecode.recipes._run.make_context`, called by
        :func:`~neurodecode.recipes._meeg.train_meeg`).

    Returns
    -------
    results : dict of str to TrainResult
        Per model (``"sub-XX"``, ``"joint"``) and prior (``"sub-XX/prior"``).
    metrics : dict of str to float
        The test metrics (see the module docstring).
    provenance : dict
        What ``provenance.json`` records beyond the recipe.
    """
    from ..models.atm import ATM, ATMDiffusionPrior, ATMPriorConfig
    from ..train import ArrayBatches, IndexedRows, MultiSubjectBatches

    root, out, data, latents, decoder = ctx.root, ctx.out, ctx.data, ctx.latents, ctx.decoder
    dataset, verbose, base = ctx.dataset, ctx.verbose, ctx.base
    mode = str(data.get("mode", "within"))
    check_option(mode, "data.mode", ("within", "loso"))
    subjects_in = data.get("subjects")
    subjects_in = [subjects_in] if isinstance(subjects_in, (str, int)) else list(subjects_in or [])
    if not subjects_in:
        raise ValidationError(format_error("data.subjects", "at least one subject", subjects_in))
    scaling = str(data.get("scaling", "none"))
    check_option(scaling, "data.scaling", ("channel-zscore", "none"))

    # 1. data
    trials: dict[str, tuple[Any, Any]] = {}
    for s in progress(subjects_in, desc="load", unit="subject", verbose=verbose):
        tr, te = _load_things(root, dataset, data, s, verbose)
        trials[tr.subject] = (tr, te)
    subjects = list(trials)
    n_ch = {s: tr.X.shape[1] for s, (tr, _) in trials.items()}
    want_ch = data.get("n_channels")
    bad = {s: c for s, c in n_ch.items() if want_ch is not None and c != int(want_ch)}
    if bad:
        raise ValidationError(format_error("data.n_channels", f"{want_ch} channels per subject", str(bad),
                                           "Check the preprocessing variant, or set data.n_channels"))

    def train_stats(subjects_: list[str]) -> tuple[np.ndarray, np.ndarray]:  # over their training trials
        return _channel_stats([(trials[s][0].X, None, np.arange(len(trials[s][0]))) for s in subjects_])

    # 2. targets, once per stimulus
    img_tbl = _space_table(latents.get("image"), "image")
    if not img_tbl:
        raise ValidationError(format_error("latents.image", "an image space for ATM (e.g. 'clip-vit-h-14')", "none"))
    txt_tbl = _space_table(latents.get("text"), "text")
    template = str(latents.get("text_template", "This picture is {concept}"))
    try:
        template.format(concept="x")
    except (KeyError, IndexError, ValueError) as exc:
        raise ValidationError(format_error("latents.text_template", "a text with one {concept} placeholder",
                                           repr(template), f"Fix the template ({type(exc).__name__}: {exc})")) from None
    all_ids, all_con = [], []
    for tr, te in trials.values():
        all_ids += [tr.stimulus_ids.astype(str), te.stimulus_ids.astype(str)]
        all_con += [tr.metadata["concept"].astype(str), te.metadata["concept"].astype(str)]
    ids_cat, first = np.unique(np.concatenate(all_ids), return_index=True)
    con_cat = np.concatenate(all_con)[first]
    folder = Path(str(data.get("images") or _IMAGE_DIRS[dataset])).expanduser()
    folder = folder if folder.is_absolute() else root / folder  # relative to the data root
    rel = things_image_paths(folder, ids_cat, con_cat)
    common = {"cache_root": ctx.cache_root, "device": ctx.latent_device, "dtype": ctx.dtype,
              "verbose": verbose}
    image_feats = _embed(img_tbl, str(folder), rel, **common)  # row i: stimulus ids_cat[i]
    text_feats: np.ndarray | None = None
    concepts: Any = None
    if txt_tbl:
        concepts = np.unique(con_cat)
        texts = [template.format(concept=_concept_text(c)) for c in concepts]
        text_feats = _embed(txt_tbl, texts, concepts, **common)
    targets_prov = {"image": {"space": img_tbl["space"], "shape": list(image_feats.shape[1:]), "folder": str(folder)},
                    "text": {"space": txt_tbl.get("space"), "template": template,
                             "shape": list(text_feats.shape[1:])} if text_feats is not None else None,
                    "cache_root": str(ctx.cache_root)}

    def arrays(tr: Any) -> dict[str, Any]:
        rows = np.searchsorted(ids_cat, tr.stimulus_ids.astype(str))
        out_: dict[str, Any] = {"x": tr.X, "image_embeds": IndexedRows(image_feats, rows)}
        if text_feats is not None:
            out_["text_embeds"] = IndexedRows(text_feats, np.searchsorted(concepts, tr.metadata["concept"].astype(str)))
        return out_

    # 3-4. one model per fold
    tokens = bool(decoder.get("subject_tokens", False))
    if mode == "within" and tokens:
        folds = [("", subjects, subjects)]
    elif mode == "within":
        folds = [(_fold_name(s), [s], [s]) for s in subjects]
    else:
        if len(subjects) < 2:
            raise ValidationError(format_error("data.subjects", "at least two subjects for data.mode='loso'",
                                               subjects, "Add subjects or use data.mode='within'"))
        folds = [(_fold_name(s), [o for o in subjects if o != s], [s]) for s in subjects]
    ch_names = {s: list(tr.ch_names or []) for s, (tr, _) in trials.items()}
    if len({tuple(c) for c in ch_names.values()}) > 1 and (tokens or mode == "loso"):
        raise ValidationError(format_error("data.subjects", "one channel set for a model shared by subjects",
                                           "subjects with different channels", "Train within subject"))
    prior_tbl = dict(decoder.get("prior") or {})
    config, extra, batch = ctx.config, ctx.extra, ctx.config.batch_size
    results: dict[str, Any] = {}
    metrics: dict[str, float] = {}
    models: dict[str, str] = {}
    for name, fit_subjects, test_subjects in folds:
        fdir = out / name if name else out
        tr0, _ = trials[fit_subjects[0]]
        cfg = _atm_config(decoder, base, n_channels=tr0.X.shape[1], n_times=tr0.X.shape[2], sfreq=float(tr0.sfreq),
                          proj_dim=int(image_feats.shape[1]), ch_names=ch_names[fit_subjects[0]],
                          subjects=fit_subjects if tokens else [])
        model = ATM(cfg)
        if scaling == "channel-zscore":  # the model scales its raw inputs, from the first step on
            _set_input_scaling(model, train_stats(fit_subjects),
                               {s: train_stats([s]) for s in fit_subjects} if tokens else {})
        if len(fit_subjects) > 1:  # one subject per batch, each with its id (its token with subject_tokens)
            train_src: Any = MultiSubjectBatches({s: arrays(trials[s][0]) for s in fit_subjects}, batch)
        else:
            train_src = ArrayBatches(arrays(trials[fit_subjects[0]][0]), batch)
        val = None
        if extra.get("validate"):  # the test trials; a subject's token only if the model knows the subject
            v_parts = [arrays(trials[s][1]) for s in test_subjects]
            v_arr = v_parts[0] if len(v_parts) == 1 else _concat_arrays(v_parts)
            if tokens and mode == "within":
                v_arr["subject"] = np.concatenate([model.subject_index(s, len(trials[s][1])) for s in test_subjects])
            val = _val_source(v_arr, batch)
        logger.info("ATM %s: training on %s", name or "joint", ", ".join(fit_subjects))
        result = _fit(model, config, train_src, val, fdir, ctx.resume)
        results[name or "joint"] = result
        models[name or "joint"] = str(fdir)

        prior = None
        if prior_tbl:
            pcfg_fields = {k: v for k, v in prior_tbl.items() if k not in PRIOR_TRAIN_KEYS}
            _check_field(pcfg_fields, "embed_dim", int(image_feats.shape[1]), "the image space's width")
            _check_field(pcfg_fields, "cond_dim", int(cfg.proj_dim), "ATM's proj_dim")
            prior = ATMDiffusionPrior(ATMPriorConfig.from_dict(pcfg_fields))
            tbl = {**ctx.train_table, **{k: prior_tbl[k] for k in PRIOR_TRAIN_KEYS if k in prior_tbl}}
            emb_parts = []
            for s in fit_subjects:
                a = arrays(trials[s][0])
                emb_parts.append({"eeg_embeds": model.encode(trials[s][0].X, s if tokens else None),
                                  "image_embeds": a["image_embeds"]})
            p_arr = emb_parts[0] if len(emb_parts) == 1 else _concat_arrays(emb_parts)
            pconf = _train_config(tbl)
            p_res = _fit(prior, pconf, ArrayBatches(p_arr, pconf.batch_size), None, fdir / "prior", ctx.resume)
            results[(name or "joint") + "/prior"] = p_res

        # 5. zero-shot identification among the test images
        for s in test_subjects:
            te = trials[s][1]
            test_ids, labels = np.unique(te.stimulus_ids.astype(str), return_inverse=True)
            if len(test_ids) < 2:
                continue
            cand = image_feats[np.searchsorted(ids_cat, test_ids)]
            emb = model.encode(te.X, s if tokens and mode == "within" else None)
            n = len(test_ids)
            scores = topk_identification(emb, cand, labels, (1, 5))
            key = f"test/{s}" if mode == "within" else f"test/{s}/loso"
            # the shuffled-brain control: each trial scored against another trial's image (seeded, no fixed point)
            wrong = labels[derangement(len(labels), np.random.default_rng(0))]
            metrics.update({f"{key}/top1": scores[1], f"{key}/chance": 1.0 / n, f"{key}/n_way": float(n),
                            f"{key}/shuffled_top1": topk_identification(emb, cand, wrong, (1,))[1]})
            if n > 5:
                metrics[f"{key}/top5"] = scores[5]
            if prior is not None:
                sampled = prior.sample(emb, seed=int(config.seed))
                metrics[f"{key}/prior_top1"] = topk_identification(sampled, cand, labels, (1,))[1]
    prov = {"mode": mode, "subject_tokens": tokens, "models": models,
            "data": {s: {"train": tr.provenance, "test": te.provenance} for s, (tr, te) in trials.items()},
            "n_train": {s: len(tr) for s, (tr, _) in trials.items()},
            "n_test": {s: len(te) for s, (_, te) in trials.items()},
            "scaling": {"method": scaling, "statistics": "per channel, from the training trials of the subjects a "
                        "model is fitted on: pooled (no or an unknown subject), and per subject with subject tokens",
                        "applied": "inside each model (input_mean / input_std, saved with it): it takes raw data"},
            "targets": targets_prov, "prior": bool(prior_tbl)}
    return results, metrics, prov


def _concat_arrays(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate per-subject batch arrays (IndexedRows over one shared table keep sharing it)."""
    from ..train import IndexedRows

    out: dict[str, Any] = {}
    for key in parts[0]:
        vals = [p[key] for p in parts]
        if isinstance(vals[0], IndexedRows):
            out[key] = IndexedRows(vals[0].table, np.concatenate([v.index.numpy() for v in vals]))
        else:
            out[key] = np.concatenate(vals)
    return out


def _train_config(values: Mapping[str, Any]) -> Any:
    from ..train import TrainConfig

    return TrainConfig.from_dict(values)


def check_recipe(recipe: Mapping[str, Any], problems: Any) -> dict[str, Any]:
    """Check the tables of an ATM recipe (see :mod:`neurodecode.recipes._schema`)."""
    from ..models.atm import ATMConfig, ATMPriorConfig
    from ..train import TrainConfig
    from ._schema import ATMGenerate, check_recipe_tables

    return check_recipe_tables(recipe, problems, datasets=DATASETS, decoder_config=ATMConfig, generate=ATMGenerate,
                               train_config=TrainConfig,
                               decoder_tables={"prior": (ATMPriorConfig, PRIOR_TRAIN_KEYS)},
                               latents_extra=("image", "text", "text_template"))


def train(recipe: Mapping[str, Any], data_root: Any, out_dir: Any, **kwargs: Any) -> Any:
    """Train an ATM recipe (:func:`~neurodecode.recipes._meeg.train_meeg` with :func:`train_atm`)."""
    return train_meeg(recipe, data_root, out_dir, train_atm, **kwargs)


def reconstruct(recipe: Mapping[str, Any], data_root: Any, subject: Any, checkpoint: Any, out_dir: Any,
                **kwargs: Any) -> dict[str, Any]:
    """Images from an ATM run: encode -> prior (seeded per item) -> the ``[generate]`` generator, per subject.

    ``checkpoint`` is the run folder of ``neurodecode train pipelines/atm_*.toml``: one model per subject
    in ``RUN/<sub-XX>/`` with its diffusion prior in ``RUN/<sub-XX>/prior/``, or one joint model (subject
    tokens) in ``RUN/`` with ``RUN/prior/``; a single subject's folder ``RUN/<sub-XX>`` is accepted too.
    The stimulus label is the image's file stem, letters and digits only (``aardvark_01b.jpg`` ->
    ``stim-aardvark01b``); ``neurodecode evaluate --truth`` pairs a folder of the THINGS test images with
    these names.
    """
    return reconstruct_meeg(recipe, data_root, subject, checkpoint, out_dir, _reconstruct_atm, outputs="image",
                            **kwargs)


# ---------------------------------------------------------------------------------------- ATM
def _atm_models(run: Path, recipe_name: str) -> dict[str, tuple[Path, str | None]]:
    """Run subject -> (model folder, subject token or None) of an ATM run folder."""
    cls = model_class(run)
    if cls == "ATM":
        cfg = dict(json.loads((run / "config.json").read_text(encoding="utf-8")).get("config", {}))
        if cfg.get("subject_tokens") and cfg.get("subjects"):  # a joint model: one token per subject
            return {str(s): (run, str(s)) for s in cfg["subjects"]}
        return {run.name: (run, None)}  # one subject's folder (RUN/<sub-XX>)
    if cls is not None:
        raise not_a_run(run, "atm", recipe_name, f"a {cls} checkpoint")
    found: dict[str, tuple[Path, str | None]] = {}
    others: list[str] = []
    for child in sorted(p for p in run.iterdir() if p.is_dir()):
        c = model_class(child)
        if c == "ATM":
            found[child.name] = (child, None)
        elif c is not None and child.name != "prior":
            others.append(f"{child.name}: {c}")
    if not found:
        raise not_a_run(run, "atm", recipe_name, "no ATM model (" + (", ".join(others[:3]) if others else
                                                                      "no folder with a config.json") + ")")
    return found


def _generator_settings(gen_tbl: Mapping[str, Any], ctx: dict[str, Any], embed_dim: int) -> dict[str, Any]:
    """The generator name, weights, steps, guidance, options and batching of an ATM ``[generate]`` table."""
    from ..generate import GENERATORS

    name = gen_tbl.get("generator")
    if not name:
        raise ValidationError(format_error("generate.generator", "a generator name in the recipe", "nothing",
                                           "Add e.g. generator = \"sdxl-turbo\" to [generate]"))
    if name not in GENERATORS:
        raise ValidationError(format_error("generate.generator", "one of " + ", ".join(map(repr, GENERATORS)),
                                           repr(name), "ATM draws images with \"sdxl-turbo\" (IP-Adapter)"))
    weights = ctx.generator_weights or gen_tbl.get("weights")
    config = gen_tbl.get("config")
    if weights == "tiny" and config is None and name == "sdxl-turbo":
        config = {"embed_dim": int(embed_dim)}  # the tiny tier's width follows the run's image space
    options = dict(gen_tbl.get("options", {}))
    steps = ctx.steps if ctx.steps is not None else gen_tbl.get("steps")
    return {"name": name, "weights": weights, "config": config, "options": options,
            "steps": None if steps is None else int(steps),
            "guidance": gen_tbl.get("guidance"),
            "latent_key": str(gen_tbl.get("latent_key", "clip_image_embeds")),
            "batch_size": int(ctx.batch_size or gen_tbl.get("batch_size", 8)),
            "seed": int(ctx.seed if ctx.seed is not None else gen_tbl.get("seed", 0)),
            "dtype": ctx.dtype or gen_tbl.get("dtype", "float32"), "preset": gen_tbl.get("preset"),
            "compile": bool(gen_tbl.get("compile", False)), "preview_vae": bool(gen_tbl.get("preview_vae", False))}


def _atm_test_trials(ctx: dict[str, Any], subject: str) -> Any:

    test = load_things_for_recipe(ctx.root, ctx.dataset, ctx.data, subject, splits=("test",),
                                  verbose=loader_verbose(ctx.verbose))["test"]
    if len(test) == 0:
        raise ValidationError(format_error("data", f"test trials for {test.subject}", "none",
                                           "Check the data root: the THINGS test images are the test set"))
    if len(np.unique(test.stimulus_ids.astype(str))) != len(test):  # one output per stimulus
        test = test.average_repeats()
    if ctx.limit is not None:
        test = test.subset(np.arange(min(ctx.limit, len(test))), note=f"first {ctx.limit} test stimuli")
    return test


def _reconstruct_atm(ctx: dict[str, Any], requested: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Encode -> prior (seeded per item) -> generator, per subject of an ATM run."""
    from ..generate import get_generator
    from ..models.atm import ATM, ATMDiffusionPrior

    run, out, rank, world, timings = ctx.run, ctx.out, ctx.rank, ctx.world, ctx.timings
    models = _atm_models(run, ctx.recipe_name)
    subjects = pick_subjects(requested, list(models), run)
    gen_tbl = dict(ctx.recipe["generate"])
    generator: Any = None
    settings: dict[str, Any] | None = None
    per_subject: dict[str, Any] = {}
    prov: dict[str, Any] = {"decoder": {}, "seeds": {}, "data_provenance": {}}
    for name in subjects:
        folder, token = models[name]
        prior_dir = folder / "prior"
        if model_class(prior_dir) != "ATMDiffusionPrior":
            raise not_a_run(run, "atm", ctx.recipe_name,
                             f"no diffusion prior in {prior_dir} (train with a [decoder.prior] table)")
        t0 = time.perf_counter()
        test = _atm_test_trials(ctx, token or name)
        own = token or name
        if own.rsplit("/", 1)[-1] != test.subject.rsplit("/", 1)[-1]:
            raise MetadataMismatchError(format_error("--subject", f"the data of {own}", f"{test.subject}",
                                                     "Name the subject as the run does (e.g. sub-01)"))
        timings["load_data_s"] = timings.get("load_data_s", 0.0) + time.perf_counter() - t0
        labels = [things_stim_label(s) for s in test.stimulus_ids]
        if len(set(labels)) != len(labels):
            dup = next(lab for lab in labels if labels.count(lab) > 1)
            raise DataIntegrityError(format_error("stimulus ids", "one BIDS label per test image", f"two images "
                                                  f"labelled stim-{dup}", "Rename the images so their stems differ "
                                                  "in letters or digits"))
        positions = np.arange(rank, len(test), world)
        paths = [output_paths(out, test.subject, labels[i], ctx.recipe_name)["image"] for i in positions]
        todo = [k for k, p in enumerate(paths) if not p.is_file()]
        entry = {"n_items": len(test), "n_assigned": len(positions), "n_skipped": len(positions) - len(todo),
                 "n_done": 0}
        per_subject[test.subject] = entry
        model_file = folder / "model.safetensors"
        prov["decoder"][test.subject] = {"checkpoint": str(folder.resolve()), "class": "ATM", "subject_token": token,
                                         "sha256": sha_or_none(model_file),
                                         "prior": {"checkpoint": str(prior_dir.resolve()),
                                                   "sha256": sha_or_none(prior_dir / "model.safetensors")}}
        prov["data_provenance"][test.subject] = test.provenance
        if not todo:
            continue
        t0 = time.perf_counter()
        model = ATM.from_pretrained(folder, device=str(ctx.device))
        prior = ATMDiffusionPrior.from_pretrained(prior_dir, device=str(ctx.device))
        timings["load_decoder_s"] = timings.get("load_decoder_s", 0.0) + time.perf_counter() - t0
        if settings is None:
            settings = _generator_settings(gen_tbl, ctx, int(prior.config.embed_dim))
        base = settings["seed"]
        t0 = time.perf_counter()
        # every test trial at once (eval mode: a trial's embedding does not depend on the others)
        emb = model.encode(test.X, token, ch_names=test.ch_names or None, sfreq=test.sfreq)
        rows = positions[todo]
        seeds = [base + int(i) for i in rows]
        embeds = np.concatenate([prior.sample(emb[i:i + 1], seed=s) for i, s in zip(rows, seeds)])
        latents = {settings["latent_key"]: embeds}
        timings["predict_latents_s"] = timings.get("predict_latents_s", 0.0) + time.perf_counter() - t0
        if generator is None:
            t0 = time.perf_counter()
            generator = get_generator(settings["name"], weights=settings["weights"], device=ctx.device,
                                      dtype=settings["dtype"], preset=settings["preset"], compile=settings["compile"],
                                      preview_vae=settings["preview_vae"], config=settings["config"])
            timings["load_generator_s"] = time.perf_counter() - t0
        generator.check_latents(latents)  # fail before any work on a wrong space / NaN
        prov["seeds"][test.subject] = {labels[int(i)]: {"stimulus_id": str(test.stimulus_ids[int(i)]), "seed": s}
                                       for i, s in zip(rows, seeds)}
        keys = [f"{test.subject}/{labels[int(r)]}" for r in rows]
        timings["generate_s"] = timings.get("generate_s", 0.0) + generate_items(
            generator, latents, todo, paths, seeds, keys, settings, ctx.log, test.subject, entry, ctx.verbose)
    if settings is not None:
        timings["items_per_s"] = sum(e["n_done"] for e in per_subject.values()) / max(timings["generate_s"], 1e-9)
    gen_prov = None
    if generator is not None and settings is not None:
        gen_prov = {**generator.provenance(),
                    **{k: settings[k] for k in ("steps", "guidance", "options", "latent_key", "batch_size", "config")}}
    extra = {"decoder": prov["decoder"], "data_provenance": prov["data_provenance"], "generator": gen_prov,
             "seeds": {"base": None if settings is None else settings["seed"],
                       "rule": "seed of item i = base + i (i = position in the subject's test list); the prior's "
                               "initial noise and the generator's noise both use it",
                       "items": prov["seeds"]}}
    return per_subject, extra


