"""Reconstruct NSD test images from a trained decoder: the shared ``reconstruct`` of the NSD runners.

MindBridge, MindEye2 and Brain-Diffuser runs all end the same way: the decoder predicts the latents of a
subject's test trials (read with :func:`~neurodecode.recipes._data.load_nsd_for_recipe`, exactly as in
training), the ``[generate]`` generator draws an image per item (and a captioner, if named, a
caption), and everything is written as the derivative of :mod:`neurodecode.recipes._derivative`.

Resumable: items whose outputs exist are skipped; every file is written atomically, right after its
batch, and ``provenance.json`` is updated after every batch, so an interrupted run loses at most one
batch and never the record of what it wrote. Seeds depend on the item's position in the subject's
test list (``seed + index``), never on the batch, the rank or the resume point, so a resumed or
distributed run writes the same images as one uninterrupted run (up to float rounding across batch
compositions: see docs/troubleshooting.md).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import MetadataMismatchError, ValidationError
from .._core.files import atomic_write, sha256_file
from .._core.logging import progress
from .._core.validation import format_error
from ._data import load_nsd_for_recipe
from ._derivative import (
    ProvenanceLog,
    _check_writable,
    _decoder_subjects,
    _png,
    _stim_label,
    _sub_label,
    describe_derivative,
    distributed_rank,
    output_paths,
)

__all__ = ["reconstruct_nsd", "NearestTrainingImage", "NEAREST"]

#: ``[generate.options]`` given to a generator's constructor rather than to each ``generate`` call.
_BUILD_OPTIONS = ("uncond", "decode_only", "allow_pickle", "converted_dir", "refiner", "converter")

#: ``[generate] generator`` of the retrieval fallback (not a diffusion model: see :class:`NearestTrainingImage`).
NEAREST = "nearest-training-image"


class NearestTrainingImage:
    """The retrieval fallback: each item's image is the subject's TRAINING image whose target is most
    similar (cosine) to the decoded latent.

    For decoders whose latent space no registered generator reads yet (MindEye2's 256 x 1664 bigG tokens,
    until its SDXL unCLIP lands), this turns the decoded latent into a picture with no weights beyond the
    target space, as MindEye's retrieval submodule does. It never shows a test image (the gallery is the
    subject's training stimuli), so what it writes is a retrieval, not a reconstruction: the provenance
    says so and records each chosen NSD id.

    Parameters
    ----------
    recipe : dict
        The validated recipe (its ``[latents]`` table of the decoder's main target gives the space).
    data_root, subject : path-like, int or str
        The NSD root and subject: the gallery is the subject's training images.
    decoder : model
        The trained decoder (its ``targets`` declaration maps the batch key to the predicted key).
    size : int or None
        Output side in pixels (default: the stored images').
    """

    name = NEAREST

    def __init__(self, recipe: Mapping[str, Any], data_root: Any, subject: Any, decoder: Any, *, cache_root: Any,
                 device: Any = "cpu", verbose: Any = None, size: int | None = None) -> None:
        from ..data import load_nsd_stimuli
        from ._targets import compute_targets

        declared = getattr(type(decoder), "targets", None) or {}
        main = next((b for b, t in declared.items() if t.required), None)
        if main is None or not isinstance(recipe["latents"].get(main), Mapping):
            raise ValidationError(format_error("generate.generator", f"a decoder with a [latents.<key>] main target "
                                               f"for {NEAREST!r}", type(decoder).__name__,
                                               "Use it with MindBridge / MindEye2 recipes"))
        self.key = declared[main].latent_key or getattr(decoder.config, "target_key", main)
        train = load_nsd_for_recipe(data_root, recipe["data"], subject, verbose=verbose).train
        self.ids = np.unique(train.stimulus_ids)
        targets = compute_targets(data_root, {main: recipe["latents"][main]}, self.ids,
                                  cache_root=cache_root, captions=recipe["data"]["captions"], device=device,
                                  dtype="float32",
                                  verbose=verbose)
        feats = targets[main][1].reshape(len(self.ids), -1).astype(np.float64)
        self.gallery = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
        self.root, self.size, self.space = data_root, size, str(recipe["latents"][main].get("space"))
        self._load = load_nsd_stimuli
        self.chosen: list[int] = []

    def check_latents(self, latents: Mapping[str, Any]) -> None:
        if self.key not in latents:
            raise ValidationError(format_error("latents", f"the key {self.key!r}", sorted(latents)))
        width = int(np.prod(np.asarray(latents[self.key]).shape[1:]))
        if width != self.gallery.shape[1]:
            raise ValidationError(format_error(self.key, f"{self.gallery.shape[1]} features per item (the "
                                               f"{self.space} targets)", width))

    def generate(self, latents: Mapping[str, Any], **_: Any) -> np.ndarray:
        pred = np.asarray(latents[self.key], dtype=np.float64).reshape(len(latents[self.key]), -1)
        pred = pred / np.maximum(np.linalg.norm(pred, axis=1, keepdims=True), 1e-12)
        best = self.ids[(pred @ self.gallery.T).argmax(1)]
        self.chosen += [int(i) for i in best]
        return self._load(self.root, best, size=self.size)

    def provenance(self) -> dict[str, Any]:
        return {"generator": NEAREST, "kind": "retrieval among the subject's training images (no test image)",
                "space": self.space, "latent_key": self.key, "gallery_size": int(len(self.ids)),
                "chosen_nsd_ids": self.chosen}


def _test_trials(recipe: Mapping[str, Any], data_root: Any, subject: Any, verbose: Any) -> Any:
    trials = load_nsd_for_recipe(data_root, recipe["data"], subject, verbose=verbose)
    test = trials.test
    if len(test) == 0:
        raise ValidationError(format_error("data", f"test trials for {trials.subject}", "none",
                                           "Check the sessions loaded (the shared images are the test set)"))
    if len(np.unique(test.stimulus_ids)) != len(test):
        test = test.average_repeats()
    return test




def _save_latents(out: Path, recipe: Mapping[str, Any], data_root: Any, trials: Any, every: Mapping[str, Any],
                  decoder: Any, device: Any, verbose: Any) -> None:
    """Every predicted latent of the subject's test items into ``OUT/latents/`` (:func:`neurodecode.metrics.
    save_predicted_latents`); with ``retrieval`` among ``[evaluate] metrics``, the true latents too (embedded
    through the feature cache with the recipe's ``[latents]`` tables), so ``evaluate`` scores retrieval."""
    from ..metrics import save_predicted_latents
    from ._run import resolve_cache_root
    from ._targets import compute_targets, gather_targets

    declared = getattr(type(decoder), "targets", None) or {}
    to_key = {b: (t.latent_key or getattr(decoder.config, "target_key", b)) for b, t in declared.items()}
    truth: dict[str, np.ndarray] = {}
    if "retrieval" in recipe["evaluate"]["metrics"]:
        # only the tables whose prediction is saved (not, e.g., MindEye2's ConvNeXt maps: a training-only target
        # whose weights need not be present at reconstruction time)
        tables = {b: t for b, t in recipe["latents"].items()
                  if isinstance(t, Mapping) and t.get("space") and to_key.get(b, b) in every}
        targets = compute_targets(data_root, tables, trials.stimulus_ids,
                                  cache_root=resolve_cache_root(recipe["latents"], out), captions=recipe["data"]["captions"],
                                  device=device, dtype="float32", verbose=verbose)
        truth = {to_key.get(b, b): v for b, v in gather_targets(targets, trials.stimulus_ids).items()}
    ids = [_stim_label(i) for i in trials.stimulus_ids]
    for key, pred in every.items():
        pred = np.asarray(pred)
        target = truth.get(key)
        save_predicted_latents(out, trials.subject, ids, pred.reshape(len(pred), -1),
                               None if target is None else np.asarray(target).reshape(len(pred), -1), space=key)


def reconstruct_nsd(recipe: Mapping[str, Any], data_root: str | os.PathLike[str], subject: Any,
                checkpoint: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, device: Any = "cpu",
                dtype: Any = None, batch_size: int | None = None, steps: int | None = None, seed: int | None = None,
                generator_weights: str | None = None, limit: int | None = None, verbose: Any = None,
                trials: Any = None, decoder: Any = None, captions_fn: Any = None,
                prompts_fn: Any = None) -> dict[str, Any]:
    """Reconstruct a subject's test stimuli and write the derivative.

    Parameters
    ----------
    recipe : dict
        Resolved recipe (:func:`neurodecode._core.recipes.load_recipe`). Its ``[generate]`` table:
        ``generator`` (a name of :data:`neurodecode.generate.GENERATORS`), ``weights``, ``steps``,
        ``guidance``, ``batch_size``, ``seed``, ``preset`` (memory), ``compile``, ``dtype``,
        ``preview_vae``, ``config`` (tiny tier), ``options`` (generator options: ``strength``,
        ``text_weight``...), and optionally ``captioner`` (``"git"``) with ``captioner_weights``,
        ``captioner_config``, ``captioner_options``. ``[data]`` holds ``load_nsd`` options.
    data_root : path-like
        NSD root.
    subject : int or str
        1, ``"subj01"`` or ``"nsd/subj01"``.
    checkpoint : path-like
        Decoder folder written by ``save_pretrained``.
    out_dir : path-like
        Derivative root.
    device, dtype : str
        Compute device and precision (dtype default: the recipe's, else float32).
    batch_size, steps, seed : int or None
        Override the recipe.
    generator_weights : str or None
        Override the generator weights (``"tiny"``, a hub id or a folder).
    limit : int or None
        Only the first ``limit`` test stimuli.
    verbose : bool or str or None
        Progress bar (items/s) and logging.
    trials : Trials or None
        The test items, already loaded (a runner with another input view, e.g. NVL's patched volumes);
        None reads them with the recipe's ``[data]``.
    decoder : object or None
        The decoder, already loaded (``checkpoint`` is then only recorded); None loads ``checkpoint``.
    captions_fn : callable or None
        ``captions_fn(rows) -> list of str``: the caption of the test items ``rows`` (positions in the
        test list), written as each item's ``_recon.txt`` (a decoder that writes text itself, e.g. NVL's
        language model); used when no ``captioner`` is named.
    prompts_fn : callable or None
        ``prompts_fn(rows) -> list of str``: a text prompt per test item ``rows``, passed to the generator
        as ``prompts=`` (NVL: the language model's Stable Diffusion prompt for unCLIP).

    Returns
    -------
    summary : dict
        ``n_items``, ``n_done``, ``n_skipped``, ``rank``, ``world_size``, ``out_dir``, ``timings``.
    """
    from .._core.versions import package_versions
    from ..generate import get_generator
    from ..models import load_decoder

    t_start = time.perf_counter()
    out = Path(out_dir)
    _check_writable(out)
    gen_cfg = dict(recipe["generate"])
    if not gen_cfg.get("generator"):
        raise ValidationError(format_error("generate.generator", "a generator name in the recipe", "nothing",
                                           "Add e.g. generator = \"versatile\" to [generate]"))
    recipe_name = str(recipe.get("_source", {}).get("name", "recipe"))
    rank, world = distributed_rank()
    timings: dict[str, float] = {}

    # data
    t0 = time.perf_counter()
    trials = _test_trials(recipe, data_root, subject, verbose) if trials is None else trials
    every_X = trials.X  # the whole test set is predicted at once, whatever the limit (see below)
    if limit is not None and len(trials) > int(limit):
        trials = trials.subset(np.arange(min(int(limit), len(trials))), note=f"first {limit} test stimuli")
    timings["load_data_s"] = time.perf_counter() - t0

    # decoder
    t0 = time.perf_counter()
    decoder = load_decoder(checkpoint) if decoder is None else decoder
    known = _decoder_subjects(decoder)
    if known and trials.subject not in known:
        raise MetadataMismatchError(format_error(
            "checkpoint", f"a decoder trained for {trials.subject}", f"one trained for {', '.join(sorted(set(known)))}",
            "Pass the checkpoint of this subject, or --subject matching the checkpoint"))
    timings["load_decoder_s"] = time.perf_counter() - t0

    # items of this process
    n_items = len(trials)
    positions = np.arange(rank, n_items, world)
    paths = [output_paths(out, trials.subject, trials.stimulus_ids[i], recipe_name) for i in positions]
    captioner_name = gen_cfg.get("captioner")
    needed = ["image"] + (["caption"] if captioner_name or captions_fn is not None else [])
    todo = [k for k, p in enumerate(paths) if not all(p[n].is_file() for n in needed)]
    base_seed = int(seed if seed is not None else gen_cfg.get("seed", 0))
    bs = int(batch_size or gen_cfg.get("batch_size", 8))
    n_steps = steps if steps is not None else gen_cfg.get("steps")
    summary: dict[str, Any] = {"n_items": n_items, "n_assigned": len(positions), "n_skipped": len(positions) - len(todo),
                               "n_done": 0, "rank": rank, "world_size": world, "out_dir": str(out),
                               "subject": trials.subject, "recipe": recipe_name}
    generator = captioner = lowlevel = None
    if todo:
        t0 = time.perf_counter()
        # all test items at once (cheap next to generation): decoders that re-standardise per batch
        # (Brain-Diffuser) then give the same latents however the run is split, resumed or limited
        every = {k: np.asarray(v)[:n_items] for k, v in decoder.predict_latents(every_X, subject=trials.subject).items()}
        latents = {k: np.asarray(v)[positions[todo]] for k, v in every.items()}
        timings["predict_latents_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if gen_cfg["generator"] == NEAREST:
            from ._run import resolve_cache_root

            generator = NearestTrainingImage(recipe, data_root, subject, decoder, device=device, verbose=verbose,
                                             cache_root=resolve_cache_root(recipe["latents"], out),
                                             **dict(gen_cfg.get("options", {})))
        else:
            # options that decide what a generator loads go to its constructor (Versatile Diffusion's `uncond`
            # "encoded" needs its CLIP encoders at load time); the rest are per-call options
            built = {k: gen_cfg["options"][k] for k in _BUILD_OPTIONS if k in gen_cfg["options"]}
            generator = get_generator(
                str(gen_cfg["generator"]), weights=generator_weights or gen_cfg.get("weights"), device=device,
                dtype=dtype or gen_cfg["dtype"] or "float32", preset=gen_cfg.get("preset"),
                compile=bool(gen_cfg.get("compile", False)), preview_vae=bool(gen_cfg.get("preview_vae", False)),
                config=gen_cfg.get("config"), **built)
        if gen_cfg["lowlevel"]:  # a first stage draws the low-level image; the generator starts from it
            lowlevel = get_generator(str(gen_cfg["lowlevel"]), weights=gen_cfg["lowlevel_weights"], device=device)
            lowlevel.check_latents({"vae_latents": latents["vae_latents"]} if "vae_latents" in latents else latents)
            generator.check_latents({k: v for k, v in latents.items() if k != "vae_latents"})
        else:
            generator.check_latents(latents)  # fail before any work on a wrong space / NaN
        if captioner_name:
            captioner = get_generator(str(captioner_name), weights=gen_cfg["captioner_weights"],
                                      device=device, config=gen_cfg.get("captioner_config"))
            captioner.check_latents(latents)
        timings["load_generator_s"] = time.perf_counter() - t0
        if rank == 0:  # after the checks: nothing is written for latents a generator refuses
            _save_latents(out, recipe, data_root, trials, every, decoder, device, verbose)
    if rank == 0:
        describe_derivative(out, recipe_name, data_root)
    ckpt = Path(checkpoint)
    weights_file = ckpt / "model.safetensors"
    log = ProvenanceLog(out, rank, world, {
        "recipe": {k: v for k, v in recipe.items()},
        "decoder": {"checkpoint": str(ckpt.resolve()), "class": type(decoder).__name__,
                    "sha256": sha256_file(weights_file) if weights_file.is_file() else None},
        "generator": generator.provenance() if generator is not None else None,
        "captioner": captioner.provenance() if captioner is not None else None,
        "lowlevel": None if lowlevel is None else {**lowlevel.provenance(), "encoded_by": "the generator's own VAE "
                                                  "(posterior mean): its img2img init"},
        "seeds": {"base": base_seed, "rule": "seed of item i = base + i (i = position in the test list)"},
        "data": {"root": str(Path(data_root).resolve()), "provenance": trials.provenance},
        "steps": n_steps, "batch_size": bs, "versions": package_versions(),
        "device": str(getattr(generator, "device_", device)), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    if todo:
        t0 = time.perf_counter()
        options = {k: v for k, v in gen_cfg.get("options", {}).items() if k not in _BUILD_OPTIONS}
        with progress(total=len(todo), desc=f"reconstruct sub-{_sub_label(trials.subject)}", unit="img",
                      verbose=verbose) as bar:
            for start in range(0, len(todo), bs):
                chunk = list(range(start, min(len(todo), start + bs)))
                sub = {k: v[chunk] for k, v in latents.items()}
                seeds = [base_seed + int(positions[todo[j]]) for j in chunk]
                blurry = None
                if lowlevel is not None:  # Brain-Diffuser: VDVAE image -> the generator's VAE -> img2img init
                    lo = dict(gen_cfg["lowlevel_options"])
                    blurry = lowlevel.generate({"vae_latents": sub["vae_latents"]}, seeds=seeds, batch_size=bs,
                                               verbose=False, **lo)
                    sub["vae_latents"] = generator.encode_images(blurry, size=lo.get("size"))
                if prompts_fn is not None:
                    options["prompts"] = list(prompts_fn(positions[[todo[j] for j in chunk]]))
                images = generator.generate(sub, seeds=seeds, steps=n_steps, guidance=gen_cfg.get("guidance"),
                                            batch_size=bs, verbose=False, **options)
                captions = (captioner.generate(sub, seeds=seeds, batch_size=bs, verbose=False,
                                               **dict(gen_cfg.get("captioner_options", {})))
                            if captioner is not None else None)
                if captions is None and captions_fn is not None:
                    captions = list(captions_fn(positions[[todo[j] for j in chunk]]))
                for k, j in enumerate(chunk):
                    p = paths[todo[j]]
                    if captions is not None:
                        with atomic_write(p["caption"]) as fh:
                            fh.write(captions[k] + "\n")
                    if blurry is not None:
                        _png(p["blurry"], blurry[k])
                    _png(p["image"], images[k])  # the image last: its presence marks the item done
                bar.update(len(chunk))
                summary["n_done"] += len(chunk)
                log.add_items({_stim_label(trials.stimulus_ids[positions[todo[j]]]): seeds[k]
                               for k, j in enumerate(chunk)}, n_done=summary["n_done"])
        timings["generate_s"] = time.perf_counter() - t0
        timings["items_per_s"] = summary["n_done"] / max(timings["generate_s"], 1e-9)
    timings["total_s"] = time.perf_counter() - t_start
    summary["timings"] = timings
    log.finish(summary=summary, **({"generator": generator.provenance()} if isinstance(generator, NearestTrainingImage)
                                   else {}))
    return summary
