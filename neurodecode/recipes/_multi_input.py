"""The multiple-decoded-inputs runner: Takagi & Nishimoto (``takagi``) and Brain Captioning (``brain_captioning``).

Both systems decode several things from NSD fMRI by ridge regression and combine them in Stable Diffusion
(``pipelines/takagi_nsd.toml``, ``pipelines/brain_captioning_nsd.toml``). What ``neurodecode train`` runs, per
subject of ``[data]``:

1. load the subject's NSD trials (:func:`neurodecode.recipes._data.load_nsd_for_recipe`; ``[data] rois``
   selects the voxels, e.g. Takagi's six ``streams`` ROIs);
2. compute each ``[latents.<key>]`` target once per stimulus into the feature cache (text spaces: the mean
   over the image's COCO captions, as Takagi's ``c``);
3. group the targets by the ROIs they are decoded from (``[decoder.rois]``: key -> ROI names of the
   ``streams`` atlas; a key without an entry reads every loaded voxel) and fit one
   :class:`~neurodecode.models.brain_diffuser.BrainDiffuser` ridge per group: one decomposition shared by
   every target of the group (Takagi: ``early`` -> init latent, ``ventral`` -> text condition, the six streams
   -> BLIP tokens and DPT states together), saved to ``OUT/sub-XX/<group>/``;
4. score the test images: ``test/<subject>/<key>/top1`` and ``.../shuffled_top1`` (identification among the
   test images, and the same against another trial's target), ``test/<subject>/chance``.

``neurodecode reconstruct`` predicts every target of the subject's test images (repeats averaged), then writes
the BIDS derivative (:mod:`neurodecode.recipes._derivative`): captions (``[generate] captioner``: ``"blip"``
for Takagi, ``"git"`` for Brain Captioning) as ``*_caption.txt``; depth maps (``[generate] depth``:
``"dpt-depth"``) as ``*_depth.npy`` (64 x 64 in [-1, 1]) and ``*_depth.png``; and images (``[generate]
generator``: ``"sd-img2img"``, ``"sd2-depth"`` or ``"sd-controlnet-depth"``) from the decoded init latent, the
decoded depth and the decoded caption (``text = "caption"``) or decoded text condition (``text = "decoded"``):
``samples`` per image (Takagi: 5), sample 0 as ``*_recon.png`` (what ``neurodecode evaluate`` scores) and all
of them as ``recon/samples/*_sample-<j>.png``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .._core.errors import ValidationError
from .._core.logging import logger, progress
from .._core.validation import format_error
from ._data import load_nsd_for_recipe, nsd_subject_ids

__all__ = ["DATASETS", "check_recipe", "train", "reconstruct", "MultiInputDecoder", "MultiInputGenerate", "TrialRows",
           "trial_targets"]

DATASETS = ("nsd",)
#: The latent keys the runner decodes (keys of neurodecode.models.LATENT_KEYS).
_LATENT_KEYS = ("vae_latents", "clip_text_tokens", "blip_image_tokens", "dpt_hidden_states", "git_image_tokens")
#: The atlas whose labels ``[decoder.rois]`` names (Takagi's ROIs).
ROI_ATLAS = "streams"


@dataclass
class MultiInputDecoder:
    """``[decoder]`` of the multiple-decoded-inputs recipes: ridge settings per target and the ROIs of each target.

    Attributes
    ----------
    alphas : dict of str to list of float
        Ridge penalty grid per latent key (Takagi: 1e-6 ... 1 for the init latent and the text condition,
        1e4 / 2e4 / 4e4 for BLIP and DPT).
    rois : dict of str to list of str
        Per latent key, the ``streams`` ROI names its ridge reads (a subset of the loaded voxels); a key
        without an entry reads every loaded voxel.
    cv, alpha_per_target, restandardize, dtype, target_batch, zscore_ddof
        As :class:`~neurodecode.models.brain_diffuser.BrainDiffuserConfig` (Takagi: himalaya's ``RidgeCV``
        defaults, 5 folds, alpha chosen per target, predictions not re-standardised, voxels standardised
        with sklearn's ``StandardScaler``: ddof 0).
    """

    alphas: dict[str, Any] = field(default_factory=dict)
    rois: dict[str, list[str]] = field(default_factory=dict)
    cv: str | int | None = 5
    alpha_per_target: bool = True
    restandardize: Literal["batch", "train", "none"] = "none"
    dtype: Literal["float32", "float64"] = "float32"
    target_batch: int = 16384
    zscore_ddof: int = 0


@dataclass
class MultiInputTrain:
    """``[train]``: closed form, so only where and how to solve."""

    solver: Literal["ridge"] = "ridge"
    device: str = "auto"
    seed: int = 0
    verbose: Any = None


@dataclass
class MultiInputGenerate:
    """``[generate]``: the image generator, the captioner and the depth decoder, and how they are combined."""

    generator: str = ""
    weights: str | None = None
    steps: int | None = None
    guidance: float | None = None
    batch_size: int = 4
    seed: int = 42
    samples: int = 5
    text: Literal["caption", "decoded"] = "caption"
    dtype: str | None = None
    preset: str | None = None
    compile: bool = False
    config: dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    captioner: str | None = None
    captioner_weights: str | None = None
    captioner_config: dict[str, Any] | None = None
    captioner_options: dict[str, Any] = field(default_factory=dict)
    depth: str | None = None
    depth_weights: str | None = None
    depth_options: dict[str, Any] = field(default_factory=dict)


def check_recipe(recipe: Mapping[str, Any], problems: Any) -> dict[str, Any]:
    """Check the tables of a ``takagi`` / ``brain_captioning`` recipe (see :mod:`neurodecode.recipes._schema`)."""
    from ._schema import check_recipe_tables

    out = check_recipe_tables(recipe, problems, datasets=DATASETS, decoder_config=MultiInputDecoder,
                              generate=MultiInputGenerate, train_table=MultiInputTrain, latent_tables=_LATENT_KEYS)
    dec = out["decoder"]
    keys = [k for k, t in out["latents"].items() if isinstance(t, Mapping) and t.get("space")]
    for key in dec.get("alphas", {}):
        if key not in _LATENT_KEYS:
            problems.add(f"decoder.alphas.{key}", f"expected a latent key among {', '.join(_LATENT_KEYS)}")
    for key in keys:
        if key not in dec.get("alphas", {}):
            problems.add("decoder.alphas", f"an alpha (or a grid) for every target: none for {key!r}")
    for key, names in dec.get("rois", {}).items():
        if key not in keys:
            problems.add(f"decoder.rois.{key}", f"names a target the recipe does not decode ({', '.join(keys)})")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            problems.add(f"decoder.rois.{key}", f"expected a non-empty list of ROI names, got {names!r}")
    gen = out["generate"]
    if int(gen["samples"]) < 1:
        problems.add("generate.samples", f"expected an int >= 1, got {gen['samples']!r}")
    if gen["captioner"] and gen["captioner"] not in ("blip", "git"):
        problems.add("generate.captioner", f"expected 'blip' or 'git', got {gen['captioner']!r}")
    if gen["depth"] and gen["depth"] != "dpt-depth":
        problems.add("generate.depth", f"expected 'dpt-depth', got {gen['depth']!r}")
    if gen["generator"] and gen["text"] == "caption" and not gen["captioner"]:
        problems.add("generate.text", "'caption' needs a captioner ([generate] captioner); or text = 'decoded'")
    return out


# ------------------------------------------------------------------------------------------------ groups
def _groups(keys: list[str], rois: Mapping[str, list[str]]) -> dict[str, tuple[list[str], tuple[str, ...]]]:
    """Targets grouped by the ROIs they read: ``{folder name: (keys, rois)}`` (one ridge decomposition each)."""
    by_rois: dict[tuple[str, ...], list[str]] = {}
    for key in keys:
        by_rois.setdefault(tuple(rois.get(key, ())), []).append(key)
    return {"+".join(ks): (ks, r) for r, ks in by_rois.items()}


def _columns(root: Any, trials: Any, roi_names: tuple[str, ...]) -> np.ndarray:
    """Columns of ``trials.X`` in the named ``streams`` ROIs (all columns for no names)."""
    n = int(trials.X.shape[1])
    if not roi_names:
        return np.arange(n)
    from ..data import nsd_voxel_labels

    labels = nsd_voxel_labels(root, trials, ROI_ATLAS)
    known = sorted(set(str(v) for v in labels.table.values()))
    missing = [r for r in roi_names if r not in known]
    if missing:
        raise ValidationError(format_error("decoder.rois", f"names of the {ROI_ATLAS} atlas ({', '.join(known)})",
                                           missing, "Check [decoder.rois] against the atlas's .mgz.ctab"))
    cols = np.flatnonzero(np.isin(labels.names, list(roi_names)))
    if cols.size == 0:
        raise ValidationError(format_error("decoder.rois", f"ROIs with voxels among the {n} loaded", list(roi_names),
                                           "Load these ROIs: add them to [data] rois"))
    return cols


class TrialRows:
    """Per-trial targets as a read-only array view of a per-stimulus table: ``view[i] = table[rows[i]]``.

    Takagi & Nishimoto fit on single trials (each image up to three times): gathering the targets per
    trial would store each one up to three times (the DPT target alone is 2.4 M values per image). The
    ridge reads targets in column blocks (``Y[:, a:b]``); this view reads those columns of the table and
    gathers the rows, so the per-trial array is never materialised.

    Parameters
    ----------
    table : ndarray of shape (n_stimuli, ...)
        One target per stimulus.
    rows : ndarray of int, shape (n_trials,)
        The table row of each trial.
    """

    def __init__(self, table: np.ndarray, rows: np.ndarray) -> None:
        self.table = table
        self.rows = np.asarray(rows, dtype=np.int64)
        self.shape = (len(self.rows), *table.shape[1:])
        self.dtype = table.dtype
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return int(self.shape[0])

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple) and len(key) >= 1 and key[0] == slice(None):
            return np.asarray(self.table[(slice(None), *key[1:])])[self.rows]
        if key == slice(None):
            return np.asarray(self.table)[self.rows]
        return np.asarray(self.table)[self.rows][key]


def trial_targets(targets: Mapping[str, tuple[np.ndarray, np.ndarray]], stimulus_ids: np.ndarray,
                  keys: list[str]) -> dict[str, TrialRows]:
    """Per-trial :class:`TrialRows` views of the per-stimulus targets of ``keys``."""
    out: dict[str, TrialRows] = {}
    for key in keys:
        ids, feats = targets[key]
        out[key] = TrialRows(feats, np.searchsorted(ids, np.asarray(stimulus_ids, dtype=np.int64)))
    return out


def _sub_folder(subject: str) -> str:
    from ._derivative import _sub_label

    return f"sub-{_sub_label(subject)}"


# ------------------------------------------------------------------------------------------------ train
def train(recipe: Mapping[str, Any], data_root: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
          max_steps: int | None = None, resume: bool = True, device: str = "auto", verbose: Any = None) -> Any:
    """Fit the ridges of every subject of a validated recipe and score the test images.

    Parameters
    ----------
    recipe : dict
        A validated recipe whose ``[decoder] name`` is ``"takagi"`` or ``"brain_captioning"``.
    data_root : path-like
        The NSD root.
    out_dir : path-like
        Run folder: ``sub-XX/<group>/`` (one fitted ridge per ROI group), ``recipe.json``,
        ``provenance.json``, ``metrics.json``.
    max_steps : int or None
        Ignored (closed form).
    resume : bool
        Keep groups already fitted with the same configuration (``False`` refits them).
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"`` (overrides ``[train] device`` unless ``"auto"``).
    verbose : bool or str or None

    Returns
    -------
    result : TrainResult
        ``steps`` 0; ``metrics`` the test scores (see the module docstring).
    """
    from .._core.device import resolve_device
    from .._core.files import write_json
    from .._core.recipes import save_resolved_recipe
    from .._core.versions import package_versions
    from ..metrics import identification_with_control
    from ..models.brain_diffuser import BrainDiffuser, BrainDiffuserConfig
    from ..train import TrainResult
    from ._run import resolve_cache_root, seed_everything
    from ._targets import compute_targets, gather_targets

    if max_steps is not None:
        logger.info("%s is fitted in closed form: --max-steps is ignored", recipe["decoder"]["name"])
    root, out = Path(data_root), Path(out_dir)
    data, latents, train_tbl, dec = recipe["data"], recipe["latents"], recipe["train"], dict(recipe["decoder"])
    seed_everything(int(train_tbl["seed"]))
    dev = resolve_device(device if device != "auto" else train_tbl["device"])
    tables = {k: v for k, v in latents.items() if isinstance(v, Mapping) and str(v.get("space", "") or "")}
    if not tables:
        raise ValidationError(format_error("latents", "at least one [latents.<key>] table with a space", "none"))
    subjects = nsd_subject_ids(data["subjects"])
    trials = {s: load_nsd_for_recipe(root, data, s, verbose=verbose) for s in subjects}
    ids = np.concatenate([t.stimulus_ids for t in trials.values()])
    targets = compute_targets(root, tables, ids, cache_root=resolve_cache_root(latents, out),
                              captions=data["captions"], device=resolve_device(latents.get("device") or dev),
                              dtype=str(latents.get("dtype", "float32")), verbose=verbose)
    shapes = {k: tuple(int(s) for s in feats.shape[1:]) for k, (_, feats) in targets.items()}
    alphas = dict(dec.get("alphas", {}))
    groups = _groups(list(shapes), dict(dec.get("rois", {})))
    ridge = {k: dec[k] for k in ("cv", "alpha_per_target", "restandardize", "dtype", "target_batch", "zscore_ddof")
             if k in dec}
    ridge.setdefault("cv", 5)
    ridge.setdefault("zscore_ddof", 0)
    ridge.setdefault("alpha_per_target", True)
    ridge.setdefault("restandardize", "none")
    if ridge["cv"] == "none":
        ridge["cv"] = None

    out.mkdir(parents=True, exist_ok=True)
    save_resolved_recipe(recipe, out)
    metrics: dict[str, float] = {}
    fitted: dict[str, dict[str, Any]] = {}
    for s, t in trials.items():
        tr, test = t.train, t.test
        if len(np.unique(test.stimulus_ids)) != len(test):
            test = test.average_repeats()
        fitted[s] = {}
        for gname, (keys, rois) in groups.items():
            cols = _columns(root, t, rois)
            folder = out / _sub_folder(s) / gname
            config = BrainDiffuserConfig(
                n_voxels=len(cols), subject=s, target_shapes={k: shapes[k] for k in keys},
                alphas={k: tuple(np.atleast_1d(np.asarray(alphas[k], dtype=float)).tolist()) for k in keys}, **ridge)
            model = None
            if resume and (folder / "model.safetensors").is_file():
                model = BrainDiffuser.from_pretrained(folder)
                if model.config != config:
                    logger.warning("%s holds a ridge with another config; refitting it", folder)
                    model = None
            if model is None:
                model = BrainDiffuser(config).fit(tr.X[:, cols], trial_targets(targets, tr.stimulus_ids, keys),
                                                  device=dev, verbose=verbose)
                model.save_pretrained(folder, metadata={"subject": s, "rois": list(rois), "atlas": ROI_ATLAS,
                                                        "n_voxels": len(cols)})
            fitted[s][gname] = {"folder": str(folder), "keys": keys, "rois": list(rois), "n_voxels": int(len(cols))}
            if len(test) >= 2:
                pred = model.predict_latents(test.X[:, cols], s)
                truth = gather_targets({k: targets[k] for k in keys}, test.stimulus_ids)
                for k in keys:
                    top1, control = identification_with_control(pred[k], truth[k])
                    metrics[f"test/{s}/{k}/top1"] = top1
                    metrics[f"test/{s}/{k}/shuffled_top1"] = control
        if len(test) >= 2:
            metrics[f"test/{s}/chance"] = 1.0 / len(test)
    write_json(out / "metrics.json", {"steps": 0, "resumed_from": 0, "metrics": metrics})
    write_json(out / "provenance.json", {
        "recipe": recipe.get("_source", {}), "data_root": str(root), "subjects": subjects, "models": fitted,
        "data": {s: t.provenance for s, t in trials.items()}, "n_train": {s: len(t.train) for s, t in trials.items()},
        "targets": {k: {"shape": list(v), "space": tables[k]["space"]} for k, v in shapes.items()},
        "roi_atlas": ROI_ATLAS, "device": str(dev),
        "versions": package_versions(("neurodecode", "torch", "numpy", "transformers", "diffusers")),
    })
    return TrainResult(history=[], metrics=metrics, checkpoint=None, steps=0, resumed_from=0)


# ------------------------------------------------------------------------------------------------ reconstruct
def _predict(recipe: Mapping[str, Any], root: Path, trials: Any, run: Path) -> dict[str, np.ndarray]:
    """Every target of the recipe predicted for ``trials`` from the run's group folders."""
    from ..models.brain_diffuser import BrainDiffuser

    keys = [k for k, v in recipe["latents"].items() if isinstance(v, Mapping) and str(v.get("space", "") or "")]
    groups = _groups(keys, dict(recipe["decoder"].get("rois", {})))
    out: dict[str, np.ndarray] = {}
    for gname, (_, rois) in groups.items():
        folder = run / gname
        if not (folder / "config.json").is_file():
            from ._derivative import not_a_run

            raise not_a_run(run, str(recipe["decoder"]["name"]), str(recipe.get("_source", {}).get("name", "recipe")),
                            f"no fitted ridge {gname}/ in it")
        model = BrainDiffuser.from_pretrained(folder)
        if model.config.subject != trials.subject:
            from .._core.errors import MetadataMismatchError

            raise MetadataMismatchError(format_error("checkpoint", f"ridges fitted for {trials.subject}",
                                                     f"{folder} fitted for {model.config.subject}",
                                                     "Pass the run folder of this subject"))
        out.update(model.predict_latents(trials.X[:, _columns(root, trials, rois)], trials.subject))
    return out


def _vae_scaled(recipe: Mapping[str, Any]) -> bool:
    """Whether the recipe's ``vae_latents`` space returns latents times the VAE's scaling factor."""
    from ..latents import describe_space

    table = recipe["latents"].get("vae_latents")
    if not isinstance(table, Mapping) or not table.get("space"):
        return False
    return bool(table.get("scaled", describe_space(str(table["space"])).options.get("scaled", False)))


def reconstruct(recipe: Mapping[str, Any], data_root: str | os.PathLike[str], subject: Any,
                checkpoint: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, device: Any = "cpu",
                dtype: Any = None, batch_size: int | None = None, steps: int | None = None, seed: int | None = None,
                generator_weights: str | None = None, limit: int | None = None, verbose: Any = None) -> dict[str, Any]:
    """Captions, depth maps and images of a subject's test images from a fitted run (see the module docstring).

    Parameters
    ----------
    recipe : dict
        The validated recipe the run was fitted with.
    data_root : path-like
        The NSD root.
    subject : int or str
        One subject.
    checkpoint : path-like
        The run folder of ``neurodecode train`` (or its ``sub-XX/``).
    out_dir : path-like
        Derivative root.
    device, dtype, batch_size, steps, seed, generator_weights, limit, verbose
        As :func:`neurodecode.recipes.reconstruct`.

    Returns
    -------
    summary : dict
        ``n_items``, ``n_done``, ``n_skipped``, ``out_dir``, ``timings``, ``outputs``.
    """
    from .._core.files import atomic_path, atomic_write
    from .._core.versions import package_versions
    from ..generate import get_generator
    from ..generate._depth import depth_to_uint8
    from ._derivative import (
        ProvenanceLog,
        _check_writable,
        _png,
        _stim_label,
        describe_derivative,
        distributed_rank,
        output_paths,
    )

    t_start = time.perf_counter()
    out, root = Path(out_dir), Path(data_root)
    _check_writable(out)
    gen = dict(recipe["generate"])
    recipe_name = str(recipe.get("_source", {}).get("name", "recipe"))
    rank, world = distributed_rank()
    subject_id = nsd_subject_ids(subject)[0]
    run = Path(checkpoint)
    if (run / _sub_folder(subject_id)).is_dir():
        run = run / _sub_folder(subject_id)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    trials = load_nsd_for_recipe(root, recipe["data"], subject_id, verbose=verbose).test
    if len(np.unique(trials.stimulus_ids)) != len(trials):
        trials = trials.average_repeats()
    every_trials = trials  # predicted at once, whatever the limit (see below)
    if limit is not None:
        trials = trials.subset(np.arange(min(int(limit), len(trials))), note=f"first {limit} test stimuli")
    timings["load_data_s"] = time.perf_counter() - t0

    positions = np.arange(rank, len(trials), world)
    paths = [output_paths(out, trials.subject, trials.stimulus_ids[i], recipe_name) for i in positions]
    for p in paths:
        p["depth_npy"] = p["image"].with_name(p["image"].name.replace("_recon.png", "_depth.npy"))
        p["depth_png"] = p["image"].with_name(p["image"].name.replace("_recon.png", "_depth.png"))
    needed = (["caption"] if gen["captioner"] else []) + (["depth_npy"] if gen["depth"] else []) + \
        (["image"] if gen["generator"] else [])
    if not needed:
        raise ValidationError(format_error("generate", "a generator, a captioner or a depth decoder", "none of them",
                                           'Set e.g. [generate] captioner = "blip"'))
    todo = [k for k, p in enumerate(paths) if not all(p[n].is_file() for n in needed)]
    base_seed = int(seed if seed is not None else gen["seed"])
    bs = int(batch_size or gen["batch_size"])
    summary: dict[str, Any] = {"n_items": len(trials), "n_assigned": len(positions), "n_done": 0,
                               "n_skipped": len(positions) - len(todo), "rank": rank, "world_size": world,
                               "out_dir": str(out), "subject": trials.subject, "recipe": recipe_name,
                               "outputs": needed}
    captioner = depth = generator = None
    latents: dict[str, np.ndarray] = {}
    if todo:
        t0 = time.perf_counter()
        # all test items at once: "batch" re-standardisation then gives the same latents however the run is
        # split, resumed or limited
        every = _predict(recipe, root, every_trials, run)
        latents = {k: np.asarray(v)[positions[todo]] for k, v in every.items()}
        timings["predict_latents_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if gen["captioner"]:
            captioner = get_generator(str(gen["captioner"]), weights=gen["captioner_weights"], device=device,
                                      config=gen["captioner_config"])
            captioner.check_latents(latents)
        if gen["depth"]:
            depth = get_generator(str(gen["depth"]), weights=gen["depth_weights"], device=device)
            depth.check_latents(latents)
        if gen["generator"]:
            generator = get_generator(
                str(gen["generator"]), weights=generator_weights or gen["weights"], device=device,
                dtype=dtype or gen["dtype"] or "float32", preset=gen["preset"], compile=bool(gen["compile"]),
                config=gen["config"], n_samples=int(gen["samples"]), scaled_latents=_vae_scaled(recipe))
        timings["load_generators_s"] = time.perf_counter() - t0
    if rank == 0:
        describe_derivative(out, recipe_name, data_root)
    log = ProvenanceLog(out, rank, world, {
        "recipe": dict(recipe), "run": str(run.resolve()),
        "captioner": captioner.provenance() if captioner is not None else None,
        "depth": depth.provenance() if depth is not None else None,
        "generator": generator.provenance() if generator is not None else None,
        "text": gen["text"], "samples": int(gen["samples"]), "vae_latents_scaled": _vae_scaled(recipe),
        "seeds": {"base": base_seed, "rule": "item i (position in the test list): seed base + i; its sample j: "
                  "seed + j * SAMPLE_STRIDE (neurodecode.generate._sd_img2img)"},
        "data": {"root": str(root.resolve()), "provenance": trials.provenance},
        "versions": package_versions(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    if todo:
        t0 = time.perf_counter()
        with progress(total=len(todo), desc=f"reconstruct {_sub_folder(trials.subject)}", unit="img",
                      verbose=verbose) as bar:
            for start in range(0, len(todo), bs):
                chunk = list(range(start, min(len(todo), start + bs)))
                sub = {k: v[chunk] for k, v in latents.items()}
                seeds = [base_seed + int(positions[todo[j]]) for j in chunk]
                captions = maps = images = None
                if captioner is not None:
                    captions = captioner.generate(sub, batch_size=bs, verbose=False, **gen["captioner_options"])
                if depth is not None:
                    maps = depth.generate(sub, batch_size=bs, verbose=False, **gen["depth_options"])
                if generator is not None:
                    inputs = _generator_inputs(generator, sub, captions, maps, gen["text"])
                    images = generator.generate_samples(inputs, seeds=seeds, steps=steps if steps is not None
                                                        else gen["steps"], guidance=gen["guidance"], batch_size=bs,
                                                        verbose=False, **gen["options"])
                for k, j in enumerate(chunk):
                    p = paths[todo[j]]
                    if captions is not None:
                        with atomic_write(p["caption"]) as fh:
                            fh.write(captions[k] + "\n")
                    if maps is not None:
                        p["depth_npy"].parent.mkdir(parents=True, exist_ok=True)
                        with atomic_path(p["depth_npy"], suffix=".npy") as tmp:
                            np.save(tmp, maps[k].astype(np.float32))
                        _png(p["depth_png"], depth_to_uint8(maps[k][None])[0])
                    if images is not None:
                        for s_idx in range(images.shape[1]):
                            name = p["image"].name.replace("_recon.png", f"_sample-{s_idx}.png")
                            _png(p["image"].parent / "samples" / name, images[k, s_idx])
                        _png(p["image"], images[k, 0])  # the image last: its presence marks the item done
                bar.update(len(chunk))
                summary["n_done"] += len(chunk)
                log.add_items({_stim_label(trials.stimulus_ids[positions[todo[j]]]): seeds[k]
                               for k, j in enumerate(chunk)}, n_done=summary["n_done"])
        timings["generate_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start
    summary["timings"] = timings
    log.finish(summary=summary)
    return summary


def _generator_inputs(generator: Any, latents: Mapping[str, np.ndarray], captions: Any, maps: Any,
                      text: str) -> dict[str, Any]:
    """What the image generator reads: the init latent, the decoded caption or text condition, the depth map."""
    inputs: dict[str, Any] = {}
    if "vae_latents" in latents:
        inputs["vae_latents"] = latents["vae_latents"]
    if text == "caption":
        inputs["captions"] = list(captions)
    elif "clip_text_tokens" in latents:
        inputs["clip_text_tokens"] = latents["clip_text_tokens"]
    if maps is not None and "depth_maps" in getattr(generator, "expects", {}):
        inputs["depth_maps"] = maps
    return inputs
