"""Train GLIM from a recipe on ZuCo (the GLIM path of :mod:`neurodecode.train._recipes_meeg`).

:func:`train_glim` runs steps 1-5 of :func:`~neurodecode.train._recipes_meeg.train_meeg_from_recipe` for
GLIM: one model in ``OUT/`` for every subject, task and ZuCo version, with task / dataset / subject
prompts. Every (subject, task) of the recipe is loaded, resampled (``[data] resample_to``), filtered by
duration, zero-padded to ``(n_channels, max_times)`` and split by unique sentence into one table.
GLIM needs no feature cache: its contrastive target is the pooled encoder output of its own frozen
text model, the network ``[latents] text`` names (checked), computed from the tokenised sentence in
every step.

Input scaling (``[data] scaling = "channel-zscore"``): the per-channel statistics of each subject's
training sentences (valid samples only) are set on the model before training
(:meth:`~neurodecode.models.glim.GLIM.set_input_scaling`, one row per subject, and the statistics
pooled over every subject for no or an unknown subject); the data stay raw and the saved model
scales them itself (padding stays zero).

Test metrics (``metrics.json``): EEG-to-text retrieval in blocks of ``[evaluate] retrieval_block``
test trials (shuffled with the seed; the candidates of a trial are the distinct sentences of its
block): ``test/retrieval_top{k}`` and ``test/retrieval_chance_top{k}``; and sentences generated from
the EEG alone (no teacher forcing) for every test trial, written with the per-trial retrieval rank
and similarity to ``OUT/generations.json`` (score them with :func:`neurodecode.metrics.evaluate_text`;
the text metrics live in :mod:`neurodecode.metrics`, a layer ``train`` does not import).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import DataIntegrityError, MissingFileError, ValidationError
from .._core.files import write_json
from .._core.logging import logger, progress
from .._core.validation import check_option, format_error
from ._recipes_meeg import (
    _channel_stats,
    _check_field,
    _fit,
    _ranks,
    _set_input_scaling,
    _space_table,
    _tiny_fields,
    _val_source,
)
from ._trainer import TrainResult

__all__ = ["train_glim"]

_ZUCO_VERSIONS = {"zuco1": 1, "zuco2": 2}


def _zuco_subjects(data: Mapping[str, Any], versions: list[int]) -> dict[str, int]:
    """Subject code -> ZuCo version, for ``data.subjects`` ("all" or a list)."""
    from .._core.specs import load_spec

    spec = load_spec("zuco")["versions"]
    owner = {code: v for v in versions for code in spec[str(v)]["subjects"]}
    given = data.get("subjects", "all")
    if given in ("all", None):
        return owner
    given = [given] if isinstance(given, str) else list(given)
    codes = [str(s).split("/", 1)[-1] for s in given]
    unknown = [c for c in codes if c not in owner]
    if unknown:
        raise ValidationError(format_error(
            "data.subjects", "ZuCo subject codes of data.versions " + str([f"zuco{v}" for v in versions]),
            unknown, "ZuCo 1.0 codes start with Z (zuco/ZAB), 2.0 codes with Y (zuco/YAC); check data.versions"))
    return {c: owner[c] for c in codes}


def _paraphrases(root: Path, value: Any) -> dict[str, list[str]]:
    if value in (None, False, "", "none"):
        return {}
    if value is True:
        raise ValidationError(format_error("data.paraphrases", "false or a JSON file {sentence: [paraphrases]}",
                                           "true", "ZuCo ships no paraphrases: name the file that holds them"))
    p = Path(str(value)).expanduser()
    p = p if p.is_absolute() else root / p
    if not p.is_file():
        raise MissingFileError(format_error("data.paraphrases", "a JSON file {sentence: [paraphrases]}",
                                            f"nothing at {p}", "Fix the path or set data.paraphrases=false"))
    doc = json.loads(p.read_text(encoding="utf-8"))
    if not isinstance(doc, dict):
        raise ValidationError(format_error("data.paraphrases", "a JSON object {sentence: [paraphrases]}",
                                           f"a JSON {type(doc).__name__} in {p}"))
    return {str(k).strip(): [v] if isinstance(v, str) else [str(x) for x in v] for k, v in doc.items()}


def _pick_channels(trials: Any, channels: list[str], sid: str) -> Any:
    names = list(trials.ch_names or [])
    missing = [c for c in channels if c not in names]
    if missing:
        raise ValidationError(format_error("data.channels", f"channels of {sid} ({', '.join(names[:5])}, ...)",
                                           f"{len(missing)} unknown: {missing[:5]}", "Fix the names or drop "
                                           "data.channels (all channels, zero-padded to data.n_channels)"))
    pick = [names.index(c) for c in channels]
    trials.X = np.ascontiguousarray(trials.X[:, pick])
    trials.ch_names = list(channels)
    trials.provenance["channels"] = f"{len(pick)} picked by data.channels"
    return trials


def _load_zuco_all(root: Path, data: Mapping[str, Any], verbose: Any) -> dict[str, Any]:
    """Every (subject, task) of the recipe, resampled, length-filtered and padded (raw): one table.

    Returns
    -------
    table : dict
        ``"X"`` (n, n_channels, max_times) float32, zero-padded; ``"lengths"``, ``"texts"``,
        ``"split"``, ``"subject"``, ``"task"``, ``"dataset"`` (n,); ``"stats"``: subject -> per-channel
        (mean, std) of its training sentences (empty without scaling), ``"pooled_stats"`` the same
        over every subject's (or None); ``"provenance"``, ``"skipped"``, ``"sfreq"``, ``"n_channels"``, ``"max_times"``, ``"scaling"``.
    """
    from ..data import load_zuco

    names = data.get("versions", ["zuco1", "zuco2"])
    names = [names] if isinstance(names, str) else list(names)
    for v in names:
        check_option(v, "data.versions", list(_ZUCO_VERSIONS))
    versions = [_ZUCO_VERSIONS[v] for v in names]
    tasks = data.get("tasks", ["SR", "NR", "TSR"])
    tasks = [tasks] if isinstance(tasks, str) else [str(t) for t in tasks]
    check_option(str(data.get("split", "unique-sentence")), "data.split", ("unique-sentence",))
    sfreq = float(data.get("resample_to", 128.0))
    n_channels = int(data.get("n_channels", 128))
    max_times = int(data.get("max_times", 1280))
    lo, hi = float(data.get("min_duration", 0.5)), float(data.get("max_duration", max_times / sfreq))
    if math.ceil(hi * sfreq - 1e-9) > max_times:
        raise ValidationError(format_error("data.max_duration", f"at most data.max_times / resample_to = "
                                           f"{max_times / sfreq:g} s", f"{hi:g} s",
                                           "Lower data.max_duration or raise data.max_times"))
    scaling = str(data.get("scaling", "none"))
    check_option(scaling, "data.scaling", ("channel-zscore", "none"))
    channels = [str(c) for c in data.get("channels") or []]
    from .._core.specs import load_spec

    spec = load_spec("zuco")["versions"]
    subjects = _zuco_subjects(data, versions)
    rows: dict[str, list[Any]] = {k: [] for k in ("X", "lengths", "texts", "split", "subject", "task", "dataset")}
    prov: dict[str, Any] = {}
    skipped: list[str] = []
    stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for code, version in progress(list(subjects.items()), desc="load", unit="subject", verbose=verbose):
        vroot = root / f"zuco{version}" if (root / f"zuco{version}").is_dir() else root
        sid = f"zuco/{code}"
        loaded = []
        for task in [t for t in tasks if t in spec[str(version)]["tasks"]]:
            try:
                tr: Any = load_zuco(vroot, code, version=version, task=task, resample=sfreq, verbose=verbose)
            except MissingFileError:
                skipped.append(f"{sid}/{task}")
                continue
            if channels:
                tr = _pick_channels(tr, channels, sid)
            if tr.X.shape[1] > n_channels:
                raise ValidationError(format_error("data.n_channels", f"at least the {tr.X.shape[1]} channels of "
                                                   f"{sid} (zero-padded montage)", n_channels))
            dur = tr.lengths / float(tr.sfreq)
            keep = (dur >= lo) & (dur <= hi)
            prov[f"{sid}/{task}"] = {**tr.provenance, "n_dropped_duration": int((~keep).sum()),
                                     "durations": f"kept {lo:g} s <= duration <= {hi:g} s"}
            if not keep.any():
                continue
            tr = tr.subset(keep, note=f"{lo:g} s <= duration <= {hi:g} s")
            X = np.zeros((len(tr), n_channels, max_times), np.float32)
            t_len = min(tr.X.shape[2], max_times)
            X[:, :tr.X.shape[1], :t_len] = tr.X[:, :, :t_len]
            loaded.append((task, tr, X))
        if not loaded:
            raise MissingFileError(format_error(
                "data.subjects", f"results{code}_<task>.mat files for tasks {tasks} of ZuCo {version}.0",
                f"none usable for {sid} under {vroot}", "Check the data root (ROOT or ROOT/zuco1, ROOT/zuco2) "
                "and data.tasks, or drop the subject"))
        if scaling == "channel-zscore":
            tr_parts = [(X, tr.lengths, np.flatnonzero(tr.split == "train")) for _, tr, X in loaded]
            if not sum(len(p[2]) for p in tr_parts):
                raise ValidationError(format_error("data.subjects", f"training sentences for {sid}", "none",
                                                   "The unique-sentence split left it none; add data"))
            stats[sid] = _channel_stats(tr_parts)
        for task, tr, X in loaded:
            rows["X"].append(X)
            rows["lengths"].append(tr.lengths)
            rows["texts"] += list(tr.texts or [])
            rows["split"].append(tr.split)
            rows["subject"] += [sid] * len(tr)
            rows["task"] += [task] * len(tr)
            rows["dataset"] += [f"zuco{version}"] * len(tr)
    if skipped:
        logger.warning("zuco: no file for %d (subject, task) pair(s), skipped: %s", len(skipped), ", ".join(skipped[:8]))
    table: dict[str, Any] = {"X": np.concatenate(rows["X"]), "lengths": np.concatenate(rows["lengths"]),
             "texts": np.asarray(rows["texts"], dtype=object), "split": np.concatenate(rows["split"]),
             "subject": np.asarray(rows["subject"]), "task": np.asarray(rows["task"]),
             "dataset": np.asarray(rows["dataset"])}
    leak = ({str(t).strip() for t in table["texts"][table["split"] == "test"]}
            & {str(t).strip() for t in table["texts"][table["split"] == "train"]})
    if leak:
        raise DataIntegrityError(format_error("data.split", "no test sentence in training", f"{len(leak)} shared",
                                              "The unique-sentence split must keep each sentence in one split"))
    pooled = (_channel_stats([(table["X"], table["lengths"], np.flatnonzero(table["split"] == "train"))])
              if stats else None)  # for no or an unknown subject
    table.update(provenance=prov, skipped=skipped, stats=stats, pooled_stats=pooled, sfreq=sfreq,
                 n_channels=n_channels, max_times=max_times, scaling=scaling)
    return table


def train_glim(ctx: dict[str, Any]) -> tuple[dict[str, TrainResult], dict[str, float], dict[str, Any]]:
    """Load ZuCo, train GLIM (contrastive + LM), score retrieval and generate test sentences.

    Parameters
    ----------
    ctx : dict
        The checked recipe and run settings built by
        :func:`~neurodecode.train._recipes_meeg.train_meeg_from_recipe`.

    Returns
    -------
    results : dict of str to TrainResult
        ``{"joint": ...}``.
    metrics : dict of str to float
        The test metrics (see the module docstring).
    provenance : dict
        What ``provenance.json`` records beyond the recipe.
    """
    from ..latents import describe_space
    from ..models.glim import GLIM, GLIMConfig
    from ._batches import ArrayBatches, IndexedRows

    root, out, data, latents, decoder = ctx["root"], ctx["out"], ctx["data"], ctx["latents"], ctx["decoder"]
    text_tbl = _space_table(latents.get("text"), "text")
    if text_tbl:
        spec = describe_space(str(text_tbl["space"]))
        if spec.options.get("family") != "t5" or spec.options.get("pooling") != "mean":
            raise ValidationError(format_error(
                "latents.text", "the pooled T5 encoder space GLIM aligns to ('flan-t5-large-encoder' or its -tiny "
                "twin)", repr(text_tbl["space"]), "GLIM's contrastive target is its own frozen T5's pooled encoder"))
    tab = _load_zuco_all(root, data, ctx["verbose"])
    fields = dict(decoder)
    _check_field(fields, "n_channels", tab["n_channels"], "data.n_channels, the padded montage")
    _check_field(fields, "max_times", tab["max_times"], "data.max_times")
    _check_field(fields, "sfreq", tab["sfreq"], "data.resample_to")
    for key, col in (("tasks", "task"), ("datasets", "dataset")):
        vocab = [str(v) for v in fields.get(key) or getattr(GLIMConfig(text_model=None), key)]
        extra_vals = sorted(set(tab[col].tolist()) - set(vocab))
        if extra_vals:
            raise ValidationError(format_error(f"decoder.{key}", f"every {col} of the data", vocab,
                                               f"Add {extra_vals} to decoder.{key}"))
    subjects = sorted(set(tab["subject"].tolist()))
    fields["subjects"] = subjects
    config = GLIMConfig.from_dict({**_tiny_fields(GLIMConfig), **fields} if ctx["base"] == "tiny" else fields)
    model = GLIM(config)
    if tab["stats"]:  # the model scales its raw inputs, from the first step on
        _set_input_scaling(model, tab["pooled_stats"], tab["stats"])

    para = _paraphrases(root, data.get("paraphrases", False))

    def arrays(mask: np.ndarray, with_paraphrases: bool) -> dict[str, Any]:
        idx = np.flatnonzero(mask)
        row_of, texts = [], []
        for i in idx:
            s = str(tab["texts"][i])
            targets = [s, *para.get(s.strip(), [])] if with_paraphrases else [s]
            row_of += [i] * len(targets)
            texts += targets
        rows = np.asarray(row_of, dtype=np.int64)
        n = len(rows)
        return {"x": IndexedRows(tab["X"], rows), "lengths": tab["lengths"][rows], **model.tokenize(texts),
                "task": model.prompt_index("task", tab["task"][rows], n),
                "dataset": model.prompt_index("dataset", tab["dataset"][rows], n),
                "subject": model.prompt_index("subject", tab["subject"][rows], n)}

    is_train, is_test = tab["split"] == "train", tab["split"] == "test"
    if not is_train.any() or is_test.sum() < 2:
        raise ValidationError(format_error("data", "training sentences and at least 2 test sentences",
                                           f"{int(is_train.sum())} train / {int(is_test.sum())} test",
                                           "Add subjects, tasks or sentences (the split is by unique sentence)"))
    config_t, batch = ctx["config"], ctx["config"].batch_size
    train_src = ArrayBatches(arrays(is_train, True), batch)
    is_val = tab["split"] == "val"
    val = None
    if ctx["extra"].get("validate"):
        val = _val_source(arrays(is_val, False), batch) if is_val.sum() >= batch else None
        if val is None:
            logger.warning("train.validate: %d validation sentences for batches of %d; validation skipped",
                           int(is_val.sum()), batch)
    result = _fit(model, config_t, train_src, val, out, ctx["resume"])

    # retrieval in shuffled blocks of test trials; candidates: the block's distinct sentences
    evaluate, gen = ctx["evaluate"], ctx["generate"]
    test = np.flatnonzero(is_test)
    prompts = {k: tab[k][test].tolist() for k in ("task", "dataset", "subject")}
    emb = model.embed_eeg(tab["X"][test], tab["lengths"][test], **prompts, batch_size=int(gen.get("batch_size", 64)))
    texts = np.asarray([str(t).strip() for t in tab["texts"][test]])
    uniq, inverse = np.unique(texts, return_inverse=True)
    text_emb = model.embed_texts(list(uniq))
    block = int(evaluate.get("retrieval_block", 24))
    ks = [int(k) for k in evaluate.get("retrieval_topk", [1, 5, 10])]
    order = np.random.default_rng(int(config_t.seed)).permutation(len(test))
    rank = np.zeros(len(test), np.int64)
    own_sim = np.zeros(len(test))
    n_cand = np.zeros(len(test), np.int64)
    for b in range(0, len(order), block):
        rows = order[b:b + block]
        cand, lab = np.unique(inverse[rows], return_inverse=True)
        rank[rows], own_sim[rows] = _ranks(emb[rows], text_emb[cand], lab)
        n_cand[rows] = len(cand)
    metrics: dict[str, float] = {"test/n_trials": float(len(test)), "test/n_sentences": float(len(uniq))}
    for k in ks:
        metrics[f"test/retrieval_top{k}"] = float(np.mean(rank < k))
        metrics[f"test/retrieval_chance_top{k}"] = float(np.mean(np.minimum(k, n_cand) / n_cand))

    # sentences from the EEG alone (no teacher forcing)
    generated = model.generate(tab["X"][test], tab["lengths"][test], **prompts,
                               max_new_tokens=int(gen.get("max_new_tokens", config.max_text_len)),
                               num_beams=int(gen.get("num_beams", 1)), batch_size=int(gen.get("batch_size", 64)))
    write_json(out / "generations.json", {
        "teacher_forcing": False, "n": len(generated), "retrieval_block": block,
        "items": [{"subject": prompts["subject"][i], "task": prompts["task"][i], "reference": str(tab["texts"][j]),
                   "generated": g, "retrieval_rank": int(rank[i]), "retrieval_candidates": int(n_cand[i]),
                   "similarity": float(own_sim[i])} for i, (j, g) in enumerate(zip(test, generated))]})
    metrics["test/n_generated"] = float(len(generated))
    prov = {"models": {"joint": str(out)}, "data": tab["provenance"], "skipped": tab["skipped"],
            "n_train": int(is_train.sum()), "n_train_rows": int(train_src.n_samples), "n_test": int(len(test)),
            "n_val": int((tab["split"] == "val").sum()), "paraphrases": bool(para),
            "scaling": {"method": tab["scaling"], "statistics": "per channel, from each subject's training sentences "
                        "(valid samples), and pooled over them for no or an unknown subject",
                        "applied": "inside the model (input_mean / input_std, saved with it): it takes raw data"},
            "targets": {"text": {"space": text_tbl.get("space"), "computed": "inside GLIM from its frozen T5 encoder "
                                 "(pooled over tokens) in every step; no feature cache"}}}
    return {"joint": result}, metrics, prov
