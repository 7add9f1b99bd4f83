"""``reconstruct`` for the M/EEG recipes: ATM (THINGS-EEG2 / THINGS-MEG -> images), GLIM (ZuCo -> sentences).

:func:`neurodecode.generate.reconstruct` sends every recipe whose ``[data] dataset`` is not ``"nsd"``
here. The test trials are read with the recipe's ``[data]`` table through the same loader as
training (:mod:`neurodecode.data._recipe_trials`), RAW: the trained models carry their input
scaling. The derivative has the layout of the NSD path (``output_paths``)::

    dataset_description.json
    sub-01/recon/sub-01_stim-aardvark01b_desc-<recipe>_recon.png    (ATM)
    sub-YAC/recon/sub-YAC_stim-NR0012_desc-<recipe>_recon.txt        (GLIM: one sentence)
    references.tsv                                                   (GLIM: the sentence read)
    provenance.json

**ATM.** ``--checkpoint`` is the run folder of ``neurodecode train pipelines/atm_*.toml``: one
model per subject in ``RUN/<sub-XX>/`` with its diffusion prior in ``RUN/<sub-XX>/prior/``, or one
joint model (subject tokens) in ``RUN/`` with ``RUN/prior/``; a single subject's folder
``RUN/<sub-XX>`` is accepted too. Each test trial (repetitions averaged) is encoded, an image
embedding is sampled from the prior with the item's seed, and the ``[generate]`` generator draws
the image from it with the same seed. The stimulus label is the image's file stem with
everything but letters and digits dropped (BIDS labels): ``aardvark_01b.jpg`` ->
``stim-aardvark01b``; ``neurodecode evaluate --truth`` pairs a folder of the THINGS test images
(``ROOT/image_set/test_images`` for THINGS-EEG2, ``ROOT/stimuli/images_test_meg`` for
THINGS-MEG) with these names.

The ``[generate]`` table of the ATM recipes reads like the NSD recipes': ``generator`` (a registered
generator: ``"sdxl-turbo"``, SDXL-Turbo + IP-Adapter), ``weights`` (``"tiny"``: random tiny weights,
offline, at the width of the run's image space), ``steps``, ``guidance``, ``options`` (e.g.
``ip_adapter_scale``), ``latent_key`` (the key the embedding is given under,
``"clip_image_embeds"``), ``batch_size``, ``seed``, ``dtype``, ``preset``, ``compile``,
``preview_vae``, ``config`` (tiny tier).

**GLIM.** ``--checkpoint`` is the run folder of ``neurodecode train pipelines/glim_zuco.toml``
(one model in ``RUN/``). Every test sentence (split by unique sentence, durations and padding as
in training) of each subject the model knows is decoded from the EEG alone, without teacher
forcing (``[generate]``: ``max_new_tokens``, ``num_beams``, ``batch_size``; greedy decoding with
``num_beams = 1``, so no seed is involved). The label of a sentence is its task and its index in
the subject's task file (``stim-NR0012``). ``references.tsv`` (columns ``sub``, ``stim``,
``subject``, ``task``, ``sentence_index``, ``reference``) holds the sentence read, the truth of
``neurodecode evaluate``.

Both are resumable and atomic like the NSD path: an item whose output exists is skipped, every
file is written through a temporary name right after its batch, and the seed of an item is
``seed + i`` (``i`` its position in the subject's test list), so a resumed or distributed run
(``RANK`` / ``WORLD_SIZE``: process ``r`` takes items ``r, r + world, ...``) writes the same
outputs as one uninterrupted run.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import DataIntegrityError, MetadataMismatchError, MissingFileError, ValidationError
from .._core.files import atomic_write, sha256_file
from .._core.logging import logger, progress
from .._core.validation import check_option, format_error
from ._run import (
    _check_writable,
    _label,
    _png,
    _stim_label,
    _sub_label,
    append_provenance,
    describe_derivative,
    distributed_rank,
    output_paths,
)

__all__ = ["reconstruct_meeg", "MEEG_DATASETS", "things_stim_label", "read_references"]

#: Dataset of a recipe -> the decoder that reconstructs it.
MEEG_DATASETS = {"things-eeg2": "atm", "things-meg": "atm", "zuco": "glim"}

_ATM_KEYS = ("generator", "weights", "steps", "guidance", "latent_key", "batch_size", "seed", "dtype", "preset",
             "compile", "preview_vae", "config", "options")
_GLIM_KEYS = ("name", "max_new_tokens", "num_beams", "batch_size", "seed")
_REF_COLUMNS = ("sub", "stim", "subject", "task", "sentence_index", "reference")


def things_stim_label(stimulus_id: Any) -> str:
    """BIDS label of a THINGS image id: its file stem, letters and digits only.

    ``"aardvark_01b.jpg"`` (THINGS-EEG2) and ``"aardvark_01b"`` (THINGS-MEG) both give ``"aardvark01b"``.
    """
    from ..latents._stimuli import IMAGE_SUFFIXES

    text = str(stimulus_id)
    if Path(text).suffix.lower() in IMAGE_SUFFIXES:
        text = Path(text).stem
    return _stim_label(text)


def _model_class(folder: Path) -> str | None:
    """``model_class`` of the ``config.json`` in ``folder`` (None without one)."""
    cfg = folder / "config.json"
    if not cfg.is_file():
        return None
    try:
        return str(json.loads(cfg.read_text(encoding="utf-8")).get("model_class") or "unnamed model")
    except (ValueError, AttributeError):
        return "unreadable config.json"


def _not_a_run(run: Path, decoder: str, recipe_name: str, got: str) -> ValidationError:
    layout = ("RUN/<sub-XX>/config.json + model.safetensors with RUN/<sub-XX>/prior/ (or a joint model in RUN/)"
              if decoder == "atm" else "RUN/config.json + model.safetensors of a GLIM")
    return ValidationError(format_error(
        "checkpoint", f"the run folder of `neurodecode train pipelines/{recipe_name}.toml` ({layout})",
        f"{run}: {got}", f"Pass --checkpoint the --out folder of that training run (an {decoder.upper()} run)"))


def _subject_matches(requested: Any, name: str) -> bool:
    """Whether a requested subject (``1``, ``"sub-01"``, ``"things-meg/sub-BIGMEG1"``...) names run subject ``name``."""
    req = str(requested).strip().rsplit("/", 1)[-1]
    own = str(name).rsplit("/", 1)[-1]
    if own in (req, f"sub-{req}"):
        return True
    a, b = re.search(r"(\d+)$", req), re.search(r"(\d+)$", own)
    return bool(a and b and int(a.group(1)) == int(b.group(1)) and (req.isdigit() or req.startswith("sub-")))


def _pick_subjects(requested: Any, available: list[str], run: Path) -> list[str]:
    """The run subjects (folder names or namespaced ids) the user asked for; all of them by default."""
    if requested is None or (not isinstance(requested, (str, int)) and not list(requested)):
        return list(available)
    wanted = [requested] if isinstance(requested, (str, int)) else list(requested)
    picked, missing = [], []
    for w in wanted:
        hits = [a for a in available if _subject_matches(w, a)]
        if len(hits) == 1:
            picked.append(hits[0])
        else:
            missing.append(str(w))
    if missing:
        raise ValidationError(format_error(
            "--subject", "subjects of the run: " + ", ".join(available), ", ".join(missing) + f" (not in {run})",
            "Pick subjects the run was trained for, or drop --subject to reconstruct them all"))
    return list(dict.fromkeys(picked))


def _sha(path: Path) -> str | None:
    return sha256_file(path) if path.is_file() else None


def _loader_verbose(verbose: Any) -> Any:
    """``verbose`` for the data loaders: a bool becomes None (bars follow the log level; MNE, which logs
    to stdout, the stream ``--json`` owns, stays at "error"); a level string is passed on."""
    return None if isinstance(verbose, bool) else verbose


def _check_keys(gen: Mapping[str, Any], allowed: tuple[str, ...], decoder: str) -> None:
    unknown = sorted(set(gen) - set(allowed))
    if unknown:
        raise ValidationError(format_error("generate", f"keys among {list(allowed)} for {decoder.upper()}",
                                           f"unknown {unknown}", "Fix the [generate] table of the recipe"))


# ---------------------------------------------------------------------------------------- entry point
def reconstruct_meeg(recipe: Mapping[str, Any], data_root: str | os.PathLike[str], subject: Any,
                     checkpoint: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, device: Any = "cpu",
                     dtype: Any = None, batch_size: int | None = None, steps: int | None = None,
                     seed: int | None = None, generator_weights: str | None = None, limit: int | None = None,
                     verbose: Any = None) -> dict[str, Any]:
    """Reconstruct the test stimuli of an M/EEG recipe's subjects and write the derivative.

    Parameters
    ----------
    recipe : dict
        Resolved recipe whose ``[data] dataset`` is ``"things-eeg2"``, ``"things-meg"`` (ATM) or
        ``"zuco"`` (GLIM); see the module docstring for its ``[generate]`` table.
    data_root : path-like
        The dataset root the run was trained on.
    subject : int, str, list of them, or None
        Subjects to reconstruct (``1``, ``"sub-01"``, ``"things-eeg2/sub-01"``, ``"zuco/YAC"``...);
        ``None``: every subject of the run.
    checkpoint : path-like
        The run folder written by ``neurodecode train`` (see the module docstring).
    out_dir : path-like
        Derivative root.
    device : str
        Compute device (``"auto"``, ``"cpu"``, ``"cuda"``).
    dtype : str or None
        Generator precision (ATM; default: the recipe's, else float32).
    batch_size, steps, seed : int or None
        Override the recipe (``steps``: denoising steps of the ATM generator).
    generator_weights : str or None
        Override the ATM generator weights (``"tiny"``, a hub id or a folder).
    limit : int or None
        Only the first ``limit`` test stimuli of each subject.
    verbose : bool or str or None
        Progress bars and logging.

    Returns
    -------
    summary : dict
        ``n_items``, ``n_assigned``, ``n_done``, ``n_skipped`` summed over subjects, ``subjects``
        (the same per subject), ``outputs`` ("image" or "text"), ``rank``, ``world_size``,
        ``out_dir``, ``recipe``, ``timings``.
    """
    from .._core.device import resolve_device

    t_start = time.perf_counter()
    data = dict(recipe.get("data", {}))
    dataset = str(data.get("dataset", "")).lower()
    check_option(dataset, "data.dataset", list(MEEG_DATASETS))
    decoder = MEEG_DATASETS[dataset]
    named = str(dict(recipe.get("decoder", {})).get("name", decoder))
    if named != decoder:
        raise ValidationError(format_error("decoder.name", f"{decoder!r} for {dataset}", repr(named),
                                           "ATM decodes THINGS-EEG2 / THINGS-MEG, GLIM decodes ZuCo"))
    if limit is not None and int(limit) < 1:
        raise ValidationError(format_error("limit", "an int >= 1", limit))
    root, run, out = Path(data_root), Path(checkpoint), Path(out_dir)
    if not root.exists():
        raise MissingFileError(format_error("--data", f"the {dataset} root", f"nothing at {root}",
                                            "Pass the dataset folder the run was trained on"))
    if not run.is_dir():
        raise MissingFileError(format_error("checkpoint", "the run folder of `neurodecode train`", f"nothing at {run}",
                                            "Pass --checkpoint the --out folder of the training run"))
    _check_writable(out)
    recipe_name = str(recipe.get("_source", {}).get("name", "recipe"))
    rank, world = distributed_rank()
    ctx: dict[str, Any] = {"recipe": recipe, "data": data, "dataset": dataset, "root": root, "run": run, "out": out,
                           "recipe_name": recipe_name, "rank": rank, "world": world,
                           "device": resolve_device(device), "dtype": dtype, "batch_size": batch_size,
                           "steps": steps, "seed": seed, "generator_weights": generator_weights,
                           "limit": None if limit is None else int(limit), "verbose": verbose,
                           "timings": {}}
    if decoder == "atm":
        per_subject, extra = _reconstruct_atm(ctx, subject)
    else:
        per_subject, extra = _reconstruct_glim(ctx, subject)
    timings = ctx["timings"]
    timings["total_s"] = time.perf_counter() - t_start
    summary: dict[str, Any] = {
        key: int(sum(s[key] for s in per_subject.values())) for key in ("n_items", "n_assigned", "n_done", "n_skipped")}
    summary.update(subjects=per_subject, outputs="image" if decoder == "atm" else "text", rank=rank, world_size=world,
                   out_dir=str(out), recipe=recipe_name, timings=timings)
    if rank == 0:
        describe_derivative(out, recipe_name, root)
    from .._core.versions import package_versions

    append_provenance(out, rank, world, {
        "summary": summary, "recipe": dict(recipe), **extra,
        "data": {"root": str(root.resolve()), "dataset": dataset},
        "versions": package_versions(), "device": str(ctx["device"]),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return summary


# ---------------------------------------------------------------------------------------- ATM
def _atm_models(run: Path, recipe_name: str) -> dict[str, tuple[Path, str | None]]:
    """Run subject -> (model folder, subject token or None) of an ATM run folder."""
    cls = _model_class(run)
    if cls == "ATM":
        cfg = dict(json.loads((run / "config.json").read_text(encoding="utf-8")).get("config", {}))
        if cfg.get("subject_tokens") and cfg.get("subjects"):  # a joint model: one token per subject
            return {str(s): (run, str(s)) for s in cfg["subjects"]}
        return {run.name: (run, None)}  # one subject's folder (RUN/<sub-XX>)
    if cls is not None:
        raise _not_a_run(run, "atm", recipe_name, f"a {cls} checkpoint")
    found: dict[str, tuple[Path, str | None]] = {}
    others: list[str] = []
    for child in sorted(p for p in run.iterdir() if p.is_dir()):
        c = _model_class(child)
        if c == "ATM":
            found[child.name] = (child, None)
        elif c is not None and child.name != "prior":
            others.append(f"{child.name}: {c}")
    if not found:
        raise _not_a_run(run, "atm", recipe_name, "no ATM model (" + (", ".join(others[:3]) if others else
                                                                      "no folder with a config.json") + ")")
    return found


def _generator_settings(gen_tbl: Mapping[str, Any], ctx: dict[str, Any], embed_dim: int) -> dict[str, Any]:
    """The generator name, weights, steps, guidance, options and batching of an ATM ``[generate]`` table."""
    from . import GENERATORS

    name = gen_tbl.get("generator")
    if not name:
        raise ValidationError(format_error("generate.generator", "a generator name in the recipe", "nothing",
                                           "Add e.g. generator = \"sdxl-turbo\" to [generate]"))
    if name not in GENERATORS:
        raise ValidationError(format_error("generate.generator", "one of " + ", ".join(map(repr, GENERATORS)),
                                           repr(name), "ATM draws images with \"sdxl-turbo\" (IP-Adapter)"))
    weights = ctx["generator_weights"] or gen_tbl.get("weights")
    config = gen_tbl.get("config")
    if weights == "tiny" and config is None and name == "sdxl-turbo":
        config = {"embed_dim": int(embed_dim)}  # the tiny tier's width follows the run's image space
    options = dict(gen_tbl.get("options", {}))
    steps = ctx["steps"] if ctx["steps"] is not None else gen_tbl.get("steps")
    return {"name": name, "weights": weights, "config": config, "options": options,
            "steps": None if steps is None else int(steps),
            "guidance": gen_tbl.get("guidance"),
            "latent_key": str(gen_tbl.get("latent_key", "clip_image_embeds")),
            "batch_size": int(ctx["batch_size"] or gen_tbl.get("batch_size", 8)),
            "seed": int(ctx["seed"] if ctx["seed"] is not None else gen_tbl.get("seed", 0)),
            "dtype": ctx["dtype"] or gen_tbl.get("dtype", "float32"), "preset": gen_tbl.get("preset"),
            "compile": bool(gen_tbl.get("compile", False)), "preview_vae": bool(gen_tbl.get("preview_vae", False))}


def _atm_test_trials(ctx: dict[str, Any], subject: str) -> Any:
    from ..data._recipe_trials import load_things_for_recipe

    test = load_things_for_recipe(ctx["root"], ctx["dataset"], ctx["data"], subject, splits=("test",),
                                  verbose=_loader_verbose(ctx["verbose"]))["test"]
    if len(test) == 0:
        raise ValidationError(format_error("data", f"test trials for {test.subject}", "none",
                                           "Check the data root: the THINGS test images are the test set"))
    if len(np.unique(test.stimulus_ids.astype(str))) != len(test):  # one output per stimulus
        test = test.average_repeats()
    if ctx["limit"] is not None:
        test = test.subset(np.arange(min(ctx["limit"], len(test))), note=f"first {ctx['limit']} test stimuli")
    return test


def _reconstruct_atm(ctx: dict[str, Any], requested: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Encode -> prior (seeded per item) -> generator, per subject of an ATM run."""
    from ..models.atm import ATM, ATMDiffusionPrior
    from . import get_generator

    run, out, rank, world, timings = ctx["run"], ctx["out"], ctx["rank"], ctx["world"], ctx["timings"]
    models = _atm_models(run, ctx["recipe_name"])
    subjects = _pick_subjects(requested, list(models), run)
    gen_tbl = dict(ctx["recipe"].get("generate", {}))
    _check_keys(gen_tbl, _ATM_KEYS, "atm")  # before any data is read
    generator: Any = None
    settings: dict[str, Any] | None = None
    per_subject: dict[str, Any] = {}
    prov: dict[str, Any] = {"decoder": {}, "seeds": {}, "data_provenance": {}}
    for name in subjects:
        folder, token = models[name]
        prior_dir = folder / "prior"
        if _model_class(prior_dir) != "ATMDiffusionPrior":
            raise _not_a_run(run, "atm", ctx["recipe_name"],
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
        paths = [output_paths(out, test.subject, labels[i], ctx["recipe_name"])["image"] for i in positions]
        todo = [k for k, p in enumerate(paths) if not p.is_file()]
        entry = {"n_items": len(test), "n_assigned": len(positions), "n_skipped": len(positions) - len(todo),
                 "n_done": 0}
        per_subject[test.subject] = entry
        model_file = folder / "model.safetensors"
        prov["decoder"][test.subject] = {"checkpoint": str(folder.resolve()), "class": "ATM", "subject_token": token,
                                         "sha256": _sha(model_file),
                                         "prior": {"checkpoint": str(prior_dir.resolve()),
                                                   "sha256": _sha(prior_dir / "model.safetensors")}}
        prov["data_provenance"][test.subject] = test.provenance
        if not todo:
            continue
        t0 = time.perf_counter()
        model = ATM.from_pretrained(folder, device=str(ctx["device"]))
        prior = ATMDiffusionPrior.from_pretrained(prior_dir, device=str(ctx["device"]))
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
            generator = get_generator(settings["name"], weights=settings["weights"], device=ctx["device"],
                                      dtype=settings["dtype"], preset=settings["preset"], compile=settings["compile"],
                                      preview_vae=settings["preview_vae"], config=settings["config"])
            timings["load_generator_s"] = time.perf_counter() - t0
        generator.check_latents(latents)  # fail before any work on a wrong space / NaN
        prov["seeds"][test.subject] = {labels[int(i)]: {"stimulus_id": str(test.stimulus_ids[int(i)]), "seed": s}
                                       for i, s in zip(rows, seeds)}
        bs = settings["batch_size"]
        t0 = time.perf_counter()
        with progress(total=len(todo), desc=f"reconstruct sub-{_sub_label(test.subject)}", unit="img",
                      verbose=ctx["verbose"]) as bar:
            for start in range(0, len(todo), bs):
                chunk = list(range(start, min(len(todo), start + bs)))
                images = generator.generate({k: v[chunk] for k, v in latents.items()}, seeds=[seeds[j] for j in chunk],
                                            steps=settings["steps"], guidance=settings["guidance"], batch_size=bs,
                                            verbose=False, **settings["options"])
                for k, j in enumerate(chunk):
                    _png(paths[todo[j]], images[k])
                bar.update(len(chunk))
                entry["n_done"] += len(chunk)
        timings["generate_s"] = timings.get("generate_s", 0.0) + time.perf_counter() - t0
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


# ---------------------------------------------------------------------------------------- GLIM
def _zuco_stim_label(task: Any, index: Any) -> str:
    return _stim_label(f"{_label(task)}{int(index):04d}")


def _tsv_cell(value: Any) -> str:
    return re.sub(r"[\t\r\n]+", " ", str(value)).strip()


def read_references(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Rows of a ``references.tsv`` (a header line, then tab-separated cells), as dicts."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    if not lines:
        return []
    head = lines[0].split("\t")
    return [dict(zip(head, line.split("\t"))) for line in lines[1:] if line.strip()]


def _write_references(out: Path, rows: list[dict[str, Any]]) -> None:
    """Merge ``rows`` into ``OUT/references.tsv`` (one row per (sub, stim); the new row wins), atomically."""
    path = out / "references.tsv"
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    if path.is_file():
        for r in read_references(path):
            merged[(r.get("sub", ""), r.get("stim", ""))] = r
    for r in rows:
        merged[(str(r["sub"]), str(r["stim"]))] = r
    with atomic_write(path) as fh:
        fh.write("\t".join(_REF_COLUMNS) + "\n")
        for r in merged.values():
            fh.write("\t".join(_tsv_cell(r.get(c, "")) for c in _REF_COLUMNS) + "\n")


def _reconstruct_glim(ctx: dict[str, Any], requested: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Sentences from the EEG alone for each test sentence of the run's (or the asked) subjects."""
    from ..data._recipe_trials import load_zuco_for_recipe
    from ..models.glim import GLIM

    run, out, rank, world, timings = ctx["run"], ctx["out"], ctx["rank"], ctx["world"], ctx["timings"]
    cls = _model_class(run)
    if cls != "GLIM":
        children = [f"{p.name}: {_model_class(p)}" for p in sorted(run.iterdir()) if _model_class(p)] \
            if run.is_dir() else []
        got = f"a {cls} checkpoint" if cls else ("no config.json" + (f" (sub-folders hold {', '.join(children[:3])})"
                                                                    if children else ""))
        raise _not_a_run(run, "glim", ctx["recipe_name"], got)
    gen_tbl = dict(ctx["recipe"].get("generate", {}))
    _check_keys(gen_tbl, _GLIM_KEYS, "glim")
    for key, value in (("steps", ctx["steps"]), ("generator_weights", ctx["generator_weights"]),
                       ("dtype", ctx["dtype"])):
        if value is not None:
            logger.warning("reconstruct: %s=%r does not apply to GLIM (its own T5 decodes) and is ignored", key, value)
    info = json.loads((run / "config.json").read_text(encoding="utf-8"))
    known = [str(s) for s in dict(info.get("config", {})).get("subjects", [])]
    if not known:
        raise _not_a_run(run, "glim", ctx["recipe_name"], "a GLIM without subjects")
    subjects = _pick_subjects(requested, known, run)
    t0 = time.perf_counter()
    table = load_zuco_for_recipe(ctx["root"], {**ctx["data"], "subjects": subjects}, splits=("test",),
                                 verbose=_loader_verbose(ctx["verbose"]))
    timings["load_data_s"] = time.perf_counter() - t0
    max_new = gen_tbl.get("max_new_tokens")
    num_beams = int(gen_tbl.get("num_beams", 1))
    bs = int(ctx["batch_size"] or gen_tbl.get("batch_size", 16))
    model: Any = None
    per_subject: dict[str, Any] = {}
    refs: list[dict[str, Any]] = []
    items: dict[str, Any] = {}
    for sid in subjects:
        rows = np.flatnonzero(table["subject"] == sid)
        if ctx["limit"] is not None:
            rows = rows[:ctx["limit"]]
        if not len(rows):
            logger.warning("reconstruct: no test sentence for %s (after the duration limits); skipped", sid)
        labels = [_zuco_stim_label(table["task"][r], table["stimulus_id"][r]) for r in rows]
        sub = _sub_label(sid)
        refs += [{"sub": sub, "stim": lab, "subject": sid, "task": table["task"][r],
                  "sentence_index": int(table["stimulus_id"][r]), "reference": str(table["texts"][r])}
                 for lab, r in zip(labels, rows)]
        positions = np.arange(rank, len(rows), world)
        paths = [output_paths(out, sid, labels[i], ctx["recipe_name"])["image"].with_suffix(".txt") for i in positions]
        todo = [k for k, p in enumerate(paths) if not p.is_file()]
        entry = {"n_items": len(rows), "n_assigned": len(positions), "n_skipped": len(positions) - len(todo),
                 "n_done": 0}
        per_subject[sid] = entry
        items[sid] = {labels[int(i)]: {"task": str(table["task"][rows[i]]),
                                       "sentence_index": int(table["stimulus_id"][rows[i]])} for i in positions}
        if not todo:
            continue
        if model is None:
            t0 = time.perf_counter()
            model = GLIM.from_pretrained(run, device=str(ctx["device"]))
            timings["load_decoder_s"] = time.perf_counter() - t0
        sel = rows[positions[todo]]
        t0 = time.perf_counter()
        with progress(total=len(todo), desc=f"reconstruct sub-{sub}", unit="sentence", verbose=ctx["verbose"]) as bar:
            for start in range(0, len(todo), bs):
                chunk = list(range(start, min(len(todo), start + bs)))
                r = sel[chunk]
                texts = model.generate(table["X"][r], table["lengths"][r], task=table["task"][r].tolist(),
                                       dataset=table["dataset"][r].tolist(), subject=sid,
                                       max_new_tokens=None if max_new is None else int(max_new),
                                       num_beams=num_beams, batch_size=bs)
                for k, j in enumerate(chunk):
                    with atomic_write(paths[todo[j]]) as fh:
                        fh.write(texts[k].replace("\n", " ").strip() + "\n")
                bar.update(len(chunk))
                entry["n_done"] += len(chunk)
        timings["generate_s"] = timings.get("generate_s", 0.0) + time.perf_counter() - t0
    if rank == 0 and refs:
        _write_references(out, refs)
    extra = {"decoder": {"checkpoint": str(run.resolve()), "class": "GLIM", "sha256": _sha(run / "model.safetensors")},
             "generator": {"generator": "glim", "teacher_forcing": False, "decoding": "greedy" if num_beams == 1
                           else f"beam search ({num_beams} beams)", "max_new_tokens": max_new, "batch_size": bs},
             "seeds": {"base": None, "rule": "deterministic decoding (do_sample=False): no seed is involved"},
             "items": items, "references": "references.tsv (the sentence read, from the data)",
             "data_provenance": table["provenance"]}
    return per_subject, extra
