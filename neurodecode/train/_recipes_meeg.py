"""Train the M/EEG decoders from a recipe: ATM on THINGS-EEG2 / THINGS-MEG, GLIM on ZuCo.

:func:`neurodecode.train.train_from_recipe` sends every recipe whose ``[data] dataset`` is not
``"nsd"`` here. :func:`train_meeg_from_recipe` checks the recipe, then hands it to the decoder's path,
:func:`~neurodecode.train._recipes_atm.train_atm` or :func:`~neurodecode.train._recipes_glim.train_glim`
(each module's docstring says which models it trains and which test metrics it reports); this module
holds what both share. The steps mirror the NSD path, each resumable:

1. load the subjects of ``[data]`` (:func:`~neurodecode.data.load_things_eeg2`,
   :func:`~neurodecode.data.load_things_meg`, :func:`~neurodecode.data.load_zuco`) with the
   recipe's window, sampling rate, test-repeat averaging, resampling, duration limits and split.
   The data stay raw (MEG in tesla, EEG as the files hold it);
2. ATM: compute the ``[latents]`` targets once per stimulus into the feature cache (the pooled image
   embedding of every image, found under ``[data] images``, and the text embedding of
   ``text_template`` filled with each concept). GLIM needs no cache: its contrastive target is the
   pooled encoder output of its own frozen text model, the network ``[latents] text`` names
   (checked), computed from the tokenised sentence in every step;
3. build the decoder of ``[decoder]`` (its input shape and sampling rate read from the data, its
   output width from the image space; a value given in the recipe must agree). With
   ``[data] scaling = "channel-zscore"`` the per-channel mean and standard deviation of the training
   trials are set on the model (``set_input_scaling`` of :class:`~neurodecode.models.atm.ATM` and
   :class:`~neurodecode.models.glim.GLIM`: per subject where the model knows its subjects, pooled
   for the others): the model scales its raw inputs itself, in training and in every later use,
   and the statistics are saved with its weights, so a saved model takes RAW data (apply nothing
   before ``encode`` / ``predict_latents``);
4. train with :class:`~neurodecode.train.Trainer` (``[train]``); ATM then trains its stage-1
   diffusion prior (``[decoder.prior]``) on the trained encoder's embeddings of the training trials,
   into ``<model folder>/prior``;
5. write the model(s) (``save_pretrained``), ``recipe.json``, ``provenance.json`` and
   ``metrics.json`` with test metrics.

Recipe keys read here beyond :class:`~neurodecode.train.TrainConfig`'s fields:

- ``[data]`` all: ``dataset``, ``subjects``, ``scaling`` ("channel-zscore" or "none");
  THINGS: ``sfreq``, ``window`` ([start, stop) in seconds after onset), ``n_channels``,
  ``average_test_repetitions``, ``split`` ("official"), ``mode`` ("within" or "loso"), ``images``
  (image folder; default ``ROOT/image_set`` for THINGS-EEG2, ``ROOT/stimuli`` for THINGS-MEG);
  THINGS-EEG2: ``variant`` ("atm"), ``allow_pickle``; THINGS-MEG: ``sessions``, ``raw_sfreq``,
  ``l_freq``, ``h_freq``; ZuCo: ``versions`` ("zuco1", "zuco2"; read from ``ROOT/zuco1`` and
  ``ROOT/zuco2`` when present, else ``ROOT``), ``tasks``, ``resample_to``, ``channels`` (names
  to keep, in order; default all), ``n_channels`` (zero-padded montage), ``max_times``,
  ``min_duration``, ``max_duration``, ``split`` ("unique-sentence"), ``paraphrases`` (false, or a
  JSON file ``{"sentence": ["paraphrase", ...]}``: one training row per paraphrase, relative paths
  read from the data root);
- ``[latents]``: ``cache_dir``, ``dtype``, ``device``; ATM: ``image``, ``text`` (a space name or a table
  with ``space``, ``weights``, ``batch_size`` and space options; ``""`` turns the text target off),
  ``text_template``; GLIM: ``text``;
- ``[decoder]``: ``name`` ("atm" or "glim"), ``base`` ("default" or "tiny"), config fields; ATM:
  ``[decoder.prior]`` (``epochs``, ``lr``, ``batch_size`` and
  :class:`~neurodecode.models.atm.ATMPriorConfig` fields);
- ``[train]``: ``validate`` (log the test-split losses after every epoch), then the TrainConfig fields;
- ``[generate]`` (GLIM): ``max_new_tokens``, ``num_beams``, ``batch_size``;
- ``[evaluate]`` (GLIM): ``retrieval_block``, ``retrieval_topk``.
"""

from __future__ import annotations

import copy
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import MissingFileError, ValidationError
from .._core.files import write_json
from .._core.logging import logger
from .._core.validation import check_option, format_error
from ._config import TrainConfig
from ._trainer import TrainResult

__all__ = ["train_meeg_from_recipe", "topk_identification"]

DATASETS = {"things-eeg2": "atm", "things-meg": "atm", "zuco": "glim"}


# ------------------------------------------------------------------------------------------ helpers
def _ranks(emb: np.ndarray, candidates: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rank of each trial's own candidate by cosine similarity (0 = best) and that similarity.

    A candidate as similar as the trial's own counts as ranked above it, so a collapsed (constant)
    embedding ranks last, never first.
    """
    def unit(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    sim = unit(emb) @ unit(candidates).T
    own = sim[np.arange(len(sim)), labels]
    return (sim >= own[:, None]).sum(1) - 1, own


def topk_identification(emb: np.ndarray, candidates: np.ndarray, labels: np.ndarray,
                        topk: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Fraction of trials whose own candidate is among the ``k`` most cosine-similar ones.

    Parameters
    ----------
    emb : ndarray of shape (n_trials, n_features)
    candidates : ndarray of shape (n_candidates, n_features)
    labels : ndarray of int, shape (n_trials,)
        Row of ``candidates`` that belongs to each trial.
    topk : sequence of int

    Returns
    -------
    scores : dict of int to float
        ``k -> accuracy`` (chance ``k / n_candidates``); ties count against the trial.
    """
    rank, _ = _ranks(emb, candidates, labels)
    return {int(k): float(np.mean(rank < k)) for k in topk}


def _space_table(value: Any, key: str) -> dict[str, Any]:
    """``"name"`` or ``{space = "name", ...}`` -> a table; ``""``/false -> ``{}`` (off)."""
    if value in (None, "", False):
        return {}
    if isinstance(value, str):
        return {"space": value}
    if isinstance(value, Mapping):
        return dict(value) if value.get("space") else {}
    raise ValidationError(format_error(f"latents.{key}", "a latent space name or a table with 'space'", value,
                                       f"Write e.g. latents.{key} = \"clip-vit-h-14\""))


def _check_field(fields: dict[str, Any], name: str, value: Any, why: str) -> None:
    """Set decoder field ``name`` from the data, refusing a recipe value that disagrees."""
    given = fields.get(name)
    if given is not None:
        try:
            same = math.isclose(float(given), float(value), rel_tol=1e-6) if isinstance(value, float) else \
                int(given) == value and not isinstance(given, bool)
        except (TypeError, ValueError):
            same = False
        if not same:
            raise ValidationError(format_error(f"decoder.{name}", f"{value!r} ({why})", repr(given),
                                               f"Drop decoder.{name} (it is read from the data) or change [data]"))
    fields[name] = value


def _channel_stats(parts: Sequence[tuple[np.ndarray, np.ndarray | None, np.ndarray]],
                   chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation over trials and valid samples, read in chunks.

    Parameters
    ----------
    parts : sequence of (X, lengths, rows)
        ``X`` of shape (n, n_channels, n_times); ``lengths`` (n,) valid samples per trial or None
        (all valid); ``rows`` the trials of ``X`` to use.

    Returns
    -------
    mean, std : ndarray of shape (n_channels,)
        ``std`` is 1 where a channel is constant (e.g. zero padding).
    """
    def chunks() -> Any:
        for X, lengths, rows in parts:
            for a in range(0, len(rows), chunk):
                r = rows[a:a + chunk]
                xb = X[r].astype(np.float64)
                valid = (np.ones((len(r), X.shape[2]), bool) if lengths is None
                         else np.arange(X.shape[2])[None, :] < np.asarray(lengths)[r][:, None])
                yield xb, valid

    n_ch = parts[0][0].shape[1]
    total, count = np.zeros(n_ch), 0
    for xb, valid in chunks():
        total += np.einsum("bct,bt->c", xb, valid)
        count += int(valid.sum())
    mean = total / max(count, 1)
    sq = np.zeros(n_ch)
    for xb, valid in chunks():
        sq += np.einsum("bct,bt->c", (xb - mean[None, :, None]) ** 2, valid)
    std = np.sqrt(sq / max(count, 1))
    return mean, np.where(std > 0, std, 1.0)


def _tiny_fields(cfg_cls: Any) -> dict[str, Any]:
    """The fields of ``cfg_cls.tiny()`` (``decoder.base = "tiny"``), which the recipe's fields override."""
    import dataclasses

    return dataclasses.asdict(cfg_cls.tiny())


def _set_input_scaling(model: Any, pooled: tuple[np.ndarray, np.ndarray],
                       per_subject: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Give ``model`` its input statistics: ``pooled`` for every row, then each known subject's own.

    Parameters
    ----------
    model : ATM or GLIM
        A model with ``set_input_scaling(mean, std, subject=None)``.
    pooled : (mean, std), each of shape (n_channels,)
        Statistics over the training trials of every subject the model is fitted on (the row of
        no or an unknown subject).
    per_subject : mapping of str to (mean, std)
        The same per subject, for a model that knows its subjects (rows of its subject ids).
    """
    model.set_input_scaling(*pooled)
    for subject, (mean, std) in per_subject.items():
        model.set_input_scaling(mean, std, subject=subject)


def _fit(model: Any, config: TrainConfig, train: Any, val: Any, out: Path, resume: bool) -> TrainResult:
    from ._trainer import Trainer

    if not resume and (out / "checkpoints").exists():
        logger.warning("resume=False: deleting the previous checkpoints in %s", out / "checkpoints")
        shutil.rmtree(out / "checkpoints")
    out.mkdir(parents=True, exist_ok=True)
    result = Trainer(model, config, out_dir=out).fit(train, val, resume=resume)
    if "loss" not in result.metrics:  # a finished run resumed: report its last logged training metrics
        last: dict[str, Any] = next((h for h in reversed(result.history) if "loss" in h), {})
        result.metrics.update({k: v for k, v in last.items() if k not in ("step", "epoch", "lr", "elapsed_s")})
    return result


def _val_source(arrays: Mapping[str, Any], batch_size: int) -> Any:
    from ._batches import ArrayBatches

    n = len(next(iter(arrays.values())))
    if n < max(batch_size, 2):
        logger.warning("train.validate: only %d test rows for batches of %d; validation skipped", n, batch_size)
        return None
    return ArrayBatches(arrays, batch_size, shuffle=False, drop_last=True)


# ---------------------------------------------------------------------------------------- entry point
def train_meeg_from_recipe(recipe: Mapping[str, Any], data_root: str | os.PathLike[str],
                           out_dir: str | os.PathLike[str], *, max_steps: int | None = None, resume: bool = True,
                           device: str = "auto", verbose: Any = None) -> TrainResult:
    """Train the M/EEG decoder a recipe describes (see the module docstring); outputs go to ``out_dir``.

    Parameters
    ----------
    recipe : dict
        A resolved recipe whose ``[data] dataset`` is "things-eeg2", "things-meg" or "zuco".
    data_root : path-like
        The dataset root (THINGS-EEG2: holding ``Preprocessed_data_250Hz/``; THINGS-MEG: the BIDS
        root; ZuCo: the version root, or a folder with ``zuco1/`` and ``zuco2/``).
    out_dir : path-like
        Run folder: ``recipe.json``, ``provenance.json``, ``metrics.json`` and the model(s), each
        (``config.json`` + ``model.safetensors``, ``checkpoints/``, ``metrics.jsonl``) in ``out_dir``
        or ``out_dir/<subject>``.
    max_steps : int or None
        Stop every model (and prior) after this many optimizer steps (overrides ``train.max_steps``).
    resume : bool
        Continue from the last checkpoints (``False`` deletes them first).
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"`` (overrides ``train.device`` unless ``"auto"``).
    verbose : bool or str or None
        Progress bars and log level.

    Returns
    -------
    result : TrainResult
        ``steps`` and ``resumed_from`` summed over the models trained; ``metrics`` holds the test
        metrics, each model's last training metrics under ``<model>/...`` and their mean as ``loss``;
        ``history`` the concatenated histories (each entry with its ``model``).
    """
    from .._core.device import resolve_device
    from .._core.recipes import save_resolved_recipe
    from .._core.versions import package_versions
    from ._recipes import _resolve_cache_root

    recipe = copy.deepcopy(dict(recipe))
    root, out = Path(data_root), Path(out_dir)
    data = dict(recipe.get("data", {}))
    dataset = str(data.get("dataset", "")).lower()
    if dataset not in DATASETS:
        raise ValidationError(format_error("data.dataset", "one of 'nsd', " + ", ".join(map(repr, DATASETS)),
                                           repr(dataset), "Name the dataset the recipe trains on"))
    decoder = dict(recipe.get("decoder", {}))
    name = str(decoder.pop("name", ""))
    if name != DATASETS[dataset]:
        raise ValidationError(format_error("decoder.name", f"{DATASETS[dataset]!r} for {dataset}", repr(name),
                                           "ATM decodes THINGS-EEG2 / THINGS-MEG, GLIM decodes ZuCo"))
    base = str(decoder.pop("base", "default"))
    check_option(base, "decoder.base", ("default", "tiny"))
    if decoder.pop("init_from", ""):
        raise ValidationError(format_error("decoder.init_from", "empty for the M/EEG recipes", "a folder",
                                           "Fine-tuning is offered for the NSD decoders only"))
    if not root.exists():
        raise MissingFileError(format_error("--data", f"the {dataset} root", f"nothing at {root}",
                                            "Pass the dataset folder (or `neurodecode simulate` one)"))
    latents = dict(recipe.get("latents", {}))
    train_tbl = dict(recipe.get("train", {}))
    extra = {k: train_tbl.pop(k) for k in ("validate",) if k in train_tbl}
    if device != "auto" or "device" not in train_tbl:
        train_tbl["device"] = device
    if max_steps is not None:
        train_tbl["max_steps"] = int(max_steps)
    if train_tbl.get("verbose") is None:
        train_tbl["verbose"] = verbose
    config = TrainConfig.from_dict(train_tbl)
    dtype = str(latents.get("dtype", "float32"))
    check_option(dtype, "latents.dtype", ("float32", "float16"))
    ctx = {"root": root, "out": out, "data": data, "latents": latents, "decoder": decoder, "base": base,
           "dataset": dataset, "verbose": verbose, "config": config, "train_tbl": train_tbl, "extra": extra,
           "resume": resume, "cache_root": _resolve_cache_root(latents, out), "dtype": dtype,
           "latent_device": resolve_device(latents.get("device") or device),
           "evaluate": dict(recipe.get("evaluate", {})), "generate": dict(recipe.get("generate", {}))}
    out.mkdir(parents=True, exist_ok=True)
    save_resolved_recipe(recipe, out)
    if name == "glim":
        from ._recipes_glim import train_glim as train
    else:
        from ._recipes_atm import train_atm as train
    results, metrics, prov = train(ctx)

    losses = []
    history: list[dict[str, Any]] = []
    for key, res in results.items():
        history += [{"model": key, **h} for h in res.history]
        if "/" not in key:
            losses += [res.metrics["loss"]] if "loss" in res.metrics else []
        prefix = "" if key == "joint" else f"{key}/"
        metrics.update({f"{prefix}{k}": v for k, v in res.metrics.items() if prefix or not k.startswith("test/")})
    if losses:
        metrics["loss"] = float(np.mean(losses))
    steps = sum(r.steps for r in results.values())
    resumed = sum(r.resumed_from for r in results.values())
    last = list(results.values())[-1]
    write_json(out / "metrics.json", {
        "steps": steps, "resumed_from": resumed, "metrics": metrics,
        "models": {k: {"steps": r.steps, "resumed_from": r.resumed_from} for k, r in results.items()}})
    write_json(out / "provenance.json", {
        "recipe": recipe.get("_source", {}), "data_root": str(root), "dataset": dataset, "decoder": name, **prov,
        "train_config": config.to_dict(), "device": str(ctx["latent_device"]),
        "versions": package_versions(("neurodecode", "torch", "accelerate", "numpy", "transformers", "open_clip_torch")),
    })
    return TrainResult(history=history, metrics=metrics, checkpoint=last.checkpoint, steps=steps,
                       resumed_from=resumed)
