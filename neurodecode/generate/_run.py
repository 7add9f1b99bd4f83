"""``reconstruct``: brain data + trained decoder + recipe -> a BIDS-style derivative of images and captions.

NSD recipes are reconstructed here; the M/EEG recipes (``[data] dataset`` "things-eeg2" or
"things-meg": ATM images; "zuco": GLIM sentences) by :mod:`neurodecode.generate._run_meeg`, which
:func:`reconstruct` dispatches to and which writes the same layout with the helpers below.

Layout written under ``out_dir``::

    dataset_description.json                      (BIDS derivative description)
    sub-01/recon/sub-01_stim-00042_desc-<recipe>_recon.png
    sub-01/recon/sub-01_stim-00042_desc-<recipe>_caption.txt   (when the recipe has a captioner)
    provenance.json                               (one entry per run: recipe, weights + hashes,
                                                   seeds, versions, timings, device)

Resumable: items whose outputs exist are skipped; every file is written atomically, right
after its batch, so an interrupted run loses at most one batch. Seeds depend on the item's
position in the subject's test list (``seed + index``), never on the batch, the rank or the
resume point, so a resumed or distributed run writes the same images as one uninterrupted run.
Under ``torchrun`` / ``accelerate launch`` (``RANK`` / ``WORLD_SIZE`` in the environment)
process ``r`` takes items ``r, r + world, ...``: no item is done twice.
"""

from __future__ import annotations

import inspect
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import MetadataMismatchError, ValidationError
from .._core.files import atomic_path, atomic_write, sha256_file, write_json
from .._core.logging import logger, progress
from .._core.validation import format_error

__all__ = ["reconstruct", "output_paths", "distributed_rank"]

_GENERATE_KEYS = ("generator", "weights", "steps", "guidance", "batch_size", "seed", "preset", "compile", "dtype",
                  "config", "options", "captioner", "captioner_weights", "captioner_config", "captioner_options",
                  "preview_vae")


def distributed_rank() -> tuple[int, int]:
    """``(rank, world_size)`` from the launcher's environment (``torchrun``, ``accelerate launch``); (0, 1) alone."""
    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0)
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world < 1 or not 0 <= rank < world:
        raise ValidationError(format_error("RANK/WORLD_SIZE", "0 <= RANK < WORLD_SIZE", f"RANK={rank}, WORLD_SIZE={world}",
                                           "Launch with torchrun or accelerate launch, or unset these variables"))
    return rank, world


def _label(value: Any) -> str:
    """A BIDS label: letters and digits only."""
    return re.sub(r"[^A-Za-z0-9]", "", str(value)) or "x"


def _sub_label(subject: str) -> str:
    """BIDS ``sub-`` label of a namespaced id: ``nsd/subj01`` -> ``01``, ``things-meg/sub-BIGMEG1`` -> ``BIGMEG1``."""
    name = str(subject).split("/")[-1]
    name = re.sub(r"^(sub-|subj)", "", name)
    return f"{int(name):02d}" if name.isdigit() else _label(name)


def _stim_label(stim: Any) -> str:
    if isinstance(stim, (int, np.integer)) or (isinstance(stim, str) and stim.isdigit()):
        return f"{int(stim):05d}"
    return _label(stim)


def describe_derivative(out: Path, recipe_name: str, data_root: Any) -> None:
    """Write the derivative's ``dataset_description.json`` (BIDS) unless it exists."""
    from .._core.versions import package_versions

    if (out / "dataset_description.json").is_file():
        return
    write_json(out / "dataset_description.json", {
        "Name": f"neurodecode reconstructions ({recipe_name})", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "neurodecode", "Version": package_versions(("neurodecode",))["neurodecode"],
                         "Description": "neurodecode reconstruct"}],
        "SourceDatasets": [{"URL": Path(data_root).resolve().as_uri()}],
    })


def append_provenance(out: Path, rank: int, world: int, run: dict[str, Any]) -> None:
    """Add one run to ``provenance.json`` (``provenance_rank-<r>.json`` under a launcher)."""
    import json

    path = out / ("provenance.json" if world == 1 else f"provenance_rank-{rank}.json")
    history: list[Any] = []
    if path.is_file():
        try:
            history = list(json.loads(path.read_text()).get("runs", []))
        except (ValueError, AttributeError):
            logger.warning("could not read %s; starting a new run history", path)
    write_json(path, {"runs": [*history, run]})


def output_paths(out_dir: str | os.PathLike[str], subject: str, stimulus_id: Any, recipe: str) -> dict[str, Path]:
    """Paths of one item's outputs: ``{"image": ..._recon.png, "caption": ..._caption.txt}``."""
    sub = _sub_label(subject)
    stem = f"sub-{sub}_stim-{_stim_label(stimulus_id)}_desc-{_label(recipe)}"
    folder = Path(out_dir) / f"sub-{sub}" / "recon"
    return {"image": folder / f"{stem}_recon.png", "caption": folder / f"{stem}_caption.txt"}


def _check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_write(out_dir / ".write-test") as fh:
            fh.write("ok")
        (out_dir / ".write-test").unlink()
    except OSError as exc:
        raise ValidationError(format_error("out", "a folder this process can write to", f"{out_dir} ({exc.strerror or exc})",
                                           "Choose another --out, or fix the folder's permissions")) from exc


def _decoder_subjects(decoder: Any) -> list[str]:
    """Subjects a decoder was trained for, from its config or checkpoint metadata."""
    found: list[str] = []
    sources = [getattr(decoder, "config", None), getattr(decoder, "pretrained_metadata_", None)]
    for src in sources:
        for key in ("subject", "subjects"):
            value = src.get(key) if isinstance(src, Mapping) else getattr(src, key, None)
            if value is None:
                continue
            found.extend([str(value)] if isinstance(value, str) else [str(v) for v in value])
    return found


def _load_trials(recipe: Mapping[str, Any], data_root: Any, subject: Any, verbose: Any) -> Any:
    data = dict(recipe.get("data", {}))
    dataset = str(data.pop("dataset", "nsd")).lower()
    if dataset != "nsd":  # the M/EEG datasets never reach here (see reconstruct)
        raise ValidationError(format_error("data.dataset", "one of 'nsd', 'things-eeg2', 'things-meg', 'zuco'",
                                           repr(dataset), "Name the dataset the recipe's decoder was trained on"))
    from ..data import load_nsd

    accepted = set(inspect.signature(load_nsd).parameters) - {"root", "subject", "verbose"}
    kwargs = {k: v for k, v in data.items() if k in accepted}
    trials = load_nsd(data_root, subject, verbose=verbose, **kwargs)
    test = trials.test
    if len(test) == 0:
        raise ValidationError(format_error("data", f"test trials for {trials.subject}", "none",
                                           "Check the sessions loaded (the shared images are the test set)"))
    if len(np.unique(test.stimulus_ids)) != len(test):
        test = test.average_repeats()
    return test


def _png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def reconstruct(recipe: Mapping[str, Any], data_root: str | os.PathLike[str], subject: Any,
                checkpoint: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, device: Any = "cpu",
                dtype: Any = None, batch_size: int | None = None, steps: int | None = None, seed: int | None = None,
                generator_weights: str | None = None, limit: int | None = None, verbose: Any = None) -> dict[str, Any]:
    """Reconstruct a subject's test stimuli and write the derivative.

    A recipe whose ``[data] dataset`` is "things-eeg2", "things-meg" or "zuco" goes to
    :func:`~neurodecode.generate._run_meeg.reconstruct_meeg` (ATM images, GLIM sentences; its
    docstring says what it reads), with the same arguments; there ``subject`` may be ``None``
    (every subject of the run) or a list, and ``checkpoint`` is the run folder of
    ``neurodecode train``. The rest of this docstring is the NSD path.

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

    Returns
    -------
    summary : dict
        ``n_items``, ``n_done``, ``n_skipped``, ``rank``, ``world_size``, ``out_dir``, ``timings``.
    """
    from ._run_meeg import MEEG_DATASETS

    if str(dict(recipe.get("data", {})).get("dataset", "nsd")).lower() in MEEG_DATASETS:
        from ._run_meeg import reconstruct_meeg

        return reconstruct_meeg(recipe, data_root, subject, checkpoint, out_dir, device=device, dtype=dtype,
                                batch_size=batch_size, steps=steps, seed=seed, generator_weights=generator_weights,
                                limit=limit, verbose=verbose)
    from .._core.versions import package_versions
    from ..models import load_decoder
    from . import get_generator

    t_start = time.perf_counter()
    out = Path(out_dir)
    _check_writable(out)
    gen_cfg = dict(recipe.get("generate", {}))
    unknown = sorted(set(gen_cfg) - set(_GENERATE_KEYS))
    if unknown:
        raise ValidationError(format_error("generate", f"keys among {list(_GENERATE_KEYS)}", f"unknown {unknown}",
                                           "Put generator-specific settings under [generate.options]"))
    if "generator" not in gen_cfg:
        raise ValidationError(format_error("generate.generator", "a generator name in the recipe", "nothing",
                                           "Add e.g. generator = \"versatile\" to [generate]"))
    recipe_name = str(recipe.get("_source", {}).get("name", "recipe"))
    rank, world = distributed_rank()
    timings: dict[str, float] = {}

    # data
    t0 = time.perf_counter()
    trials = _load_trials(recipe, data_root, subject, verbose)
    if limit is not None:
        if int(limit) < 1:
            raise ValidationError(format_error("limit", "an int >= 1", limit))
        trials = trials.subset(np.arange(min(int(limit), len(trials))), note=f"first {limit} test stimuli")
    timings["load_data_s"] = time.perf_counter() - t0

    # decoder
    t0 = time.perf_counter()
    decoder = load_decoder(checkpoint)
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
    needed = ["image"] + (["caption"] if captioner_name else [])
    todo = [k for k, p in enumerate(paths) if not all(p[n].is_file() for n in needed)]
    base_seed = int(seed if seed is not None else gen_cfg.get("seed", 0))
    bs = int(batch_size or gen_cfg.get("batch_size", 8))
    n_steps = steps if steps is not None else gen_cfg.get("steps")
    summary: dict[str, Any] = {"n_items": n_items, "n_assigned": len(positions), "n_skipped": len(positions) - len(todo),
                               "n_done": 0, "rank": rank, "world_size": world, "out_dir": str(out),
                               "subject": trials.subject, "recipe": recipe_name}
    generator = captioner = None
    if todo:
        t0 = time.perf_counter()
        # all test items at once (cheap next to generation): decoders that re-standardise per batch
        # (Brain-Diffuser) then give the same latents however the run is split or resumed
        every = decoder.predict_latents(trials.X, subject=trials.subject)
        latents = {k: np.asarray(v)[positions[todo]] for k, v in every.items()}
        timings["predict_latents_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        generator = get_generator(
            str(gen_cfg["generator"]), weights=generator_weights or gen_cfg.get("weights"), device=device,
            dtype=dtype or gen_cfg.get("dtype", "float32"), preset=gen_cfg.get("preset"),
            compile=bool(gen_cfg.get("compile", False)), preview_vae=bool(gen_cfg.get("preview_vae", False)),
            config=gen_cfg.get("config"))
        generator.check_latents(latents)  # fail before any work on a wrong space / NaN
        if captioner_name:
            captioner = get_generator(str(captioner_name), weights=gen_cfg.get("captioner_weights", generator_weights),
                                      device=device, config=gen_cfg.get("captioner_config"))
            captioner.check_latents(latents)
        timings["load_generator_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        options = dict(gen_cfg.get("options", {}))
        with progress(total=len(todo), desc=f"reconstruct sub-{_sub_label(trials.subject)}", unit="img",
                      verbose=verbose) as bar:
            for start in range(0, len(todo), bs):
                chunk = list(range(start, min(len(todo), start + bs)))
                sub = {k: v[chunk] for k, v in latents.items()}
                seeds = [base_seed + int(positions[todo[j]]) for j in chunk]
                images = generator.generate(sub, seeds=seeds, steps=n_steps, guidance=gen_cfg.get("guidance"),
                                            batch_size=bs, verbose=False, **options)
                captions = (captioner.generate(sub, seeds=seeds, batch_size=bs, verbose=False,
                                               **dict(gen_cfg.get("captioner_options", {})))
                            if captioner is not None else None)
                for k, j in enumerate(chunk):
                    p = paths[todo[j]]
                    if captions is not None:
                        with atomic_write(p["caption"]) as fh:
                            fh.write(captions[k] + "\n")
                    _png(p["image"], images[k])  # the image last: its presence marks the item done
                bar.update(len(chunk))
                summary["n_done"] += len(chunk)
        timings["generate_s"] = time.perf_counter() - t0
        timings["items_per_s"] = summary["n_done"] / max(timings["generate_s"], 1e-9)
    timings["total_s"] = time.perf_counter() - t_start
    summary["timings"] = timings

    if rank == 0:
        describe_derivative(out, recipe_name, data_root)
    ckpt = Path(checkpoint)
    weights_file = ckpt / "model.safetensors"
    run = {
        "summary": summary, "recipe": {k: v for k, v in recipe.items()},
        "decoder": {"checkpoint": str(ckpt.resolve()), "class": type(decoder).__name__,
                    "sha256": sha256_file(weights_file) if weights_file.is_file() else None},
        "generator": generator.provenance() if generator is not None else None,
        "captioner": captioner.provenance() if captioner is not None else None,
        "seeds": {"base": base_seed, "rule": "seed of item i = base + i (i = position in the test list)",
                  "items": {_stim_label(trials.stimulus_ids[positions[j]]): base_seed + int(positions[j]) for j in todo}},
        "data": {"root": str(Path(data_root).resolve()), "provenance": trials.provenance},
        "steps": n_steps, "batch_size": bs, "versions": package_versions(),
        "device": str(getattr(generator, "device_", device)), "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    append_provenance(out, rank, world, run)
    return summary
