"""The GLIM runner: train GLIM from a recipe on ZuCo, and decode sentences.

:func:`train` runs the frame of :func:`~neurodecode.recipes._meeg.train_meeg` with :func:`train_glim`: one model in ``OUT/`` for every subject, task and ZuCo version, with task / dataset / subject
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
block): ``test/retrieval_top{k}``, ``test/retrieval_chance_top{k}`` and the shuffled-brain control
``test/retrieval_shuffled_top{k}`` (each sentence against the EEG of a trial that read another one,
:func:`~neurodecode.metrics.other_sentence_pairing`); and sentences generated from
the EEG alone (no teacher forcing) for every test trial, written with the per-trial retrieval rank
and similarity to ``OUT/generations.json`` (score them with :func:`neurodecode.metrics.evaluate_text`;
the text metrics live in :mod:`neurodecode.metrics`, a layer ``train`` does not import).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import DataIntegrityError, MissingFileError, ValidationError
from .._core.files import atomic_write, write_json
from .._core.logging import logger, progress
from .._core.validation import format_error
from ._data import load_zuco_for_recipe
from ._derivative import (
    _label,
    _stim_label,
    _sub_label,
    loader_verbose,
    model_class,
    not_a_run,
    output_paths,
    pick_subjects,
    sha_or_none,
)
from ._meeg import (
    _channel_stats,
    _check_field,
    _set_input_scaling,
    _space_table,
    _tiny_fields,
    _val_source,
    reconstruct_meeg,
    train_meeg,
)
from ._run import fit as _fit

__all__ = ["DATASETS", "check_recipe", "train", "reconstruct", "train_glim"]

DATASETS = ("zuco",)

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


def _load_zuco_all(root: Path, data: Mapping[str, Any], verbose: Any) -> dict[str, Any]:
    """Every (subject, task) of the recipe, resampled, length-filtered and padded (raw): one table.

    The loading lives in :func:`neurodecode.recipes._data.load_zuco_for_recipe` (shared with
    ``neurodecode reconstruct``); this adds the input statistics of the training sentences.

    Returns
    -------
    table : dict
        The table of :func:`~neurodecode.recipes._data.load_zuco_for_recipe` (``"X"``
        (n, n_channels, max_times) float32, zero-padded; ``"lengths"``, ``"texts"``, ``"split"``,
        ``"subject"``, ``"task"``, ``"dataset"``, ``"stimulus_id"`` (n,)...), plus ``"stats"``:
        subject -> per-channel (mean, std) of its training sentences (empty without scaling), and
        ``"pooled_stats"`` the same over every subject's (or None).
    """

    table = load_zuco_for_recipe(root, data, verbose=verbose)
    stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if table["scaling"] == "channel-zscore":
        for sid in dict.fromkeys(table["subject"].tolist()):
            rows = np.flatnonzero((table["subject"] == sid) & (table["split"] == "train"))
            if not len(rows):
                raise ValidationError(format_error("data.subjects", f"training sentences for {sid}", "none",
                                                   "The unique-sentence split left it none; add data"))
            stats[sid] = _channel_stats([(table["X"], table["lengths"], rows)])
    leak = ({str(t).strip() for t in table["texts"][table["split"] == "test"]}
            & {str(t).strip() for t in table["texts"][table["split"] == "train"]})
    if leak:
        raise DataIntegrityError(format_error("data.split", "no test sentence in training", f"{len(leak)} shared",
                                              "The unique-sentence split must keep each sentence in one split"))
    pooled = (_channel_stats([(table["X"], table["lengths"], np.flatnonzero(table["split"] == "train"))])
              if stats else None)  # for no or an unknown subject
    table.update(stats=stats, pooled_stats=pooled)
    return table


def train_glim(ctx: Any) -> tuple[dict[str, Any], dict[str, float], dict[str, Any]]:
    """Load ZuCo, train GLIM (contrastive + LM), score retrieval and generate test sentences.

    Parameters
    ----------
    ctx : RunContext
        The validated recipe and run settings (:func:`~neurodecode.recipes._run.make_context`, called by
        :func:`~neurodecode.recipes._meeg.train_meeg`).

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
    from ..train import ArrayBatches, IndexedRows

    root, out, data, latents, decoder = ctx.root, ctx.out, ctx.data, ctx.latents, ctx.decoder
    text_tbl = _space_table(latents.get("text"), "text")
    if text_tbl and describe_space(str(text_tbl["space"])).options.get("family") != "t5":
        raise ValidationError(format_error(
            "latents.text", "a T5 encoder space ('flan-t5-large-encoder' or its -tiny twin): the text side GLIM "
            "aligns to", repr(text_tbl["space"]), "GLIM pools its own frozen T5 (attention pooling on 'To English: "
            "<sentence>'); name that T5 here or leave latents.text out"))
    tab = _load_zuco_all(root, data, ctx.verbose)
    fields = dict(decoder)
    _check_field(fields, "n_channels", tab["n_channels"], "data.n_channels, the padded montage")
    _check_field(fields, "max_times", tab["max_times"], "data.max_times")
    _check_field(fields, "sfreq", tab["sfreq"], "data.resample_to")
    defaults = GLIMConfig(text_model=None)
    aliases = dict(fields.get("task_aliases") or defaults.task_aliases)  # SR is read as NR (GLIM's train.py)
    for key, col in (("tasks", "task"), ("datasets", "dataset")):
        vocab = [str(v) for v in fields.get(key) or getattr(defaults, key)]
        seen = {aliases.get(v, v) if key == "tasks" else v for v in tab[col].tolist()}
        extra_vals = sorted(seen - set(vocab))
        if extra_vals:
            raise ValidationError(format_error(f"decoder.{key}", f"every {col} of the data", vocab,
                                               f"Add {extra_vals} to decoder.{key}"))
    subjects = sorted(set(tab["subject"].tolist()))
    fields["subjects"] = subjects
    config = GLIMConfig.from_dict({**_tiny_fields(GLIMConfig), **fields} if ctx.base == "tiny" else fields)
    model = GLIM(config)
    if tab["stats"]:  # the model scales its raw inputs, from the first step on
        _set_input_scaling(model, tab["pooled_stats"], tab["stats"])

    para = _paraphrases(root, data.get("paraphrases", False))

    def arrays(mask: np.ndarray, with_paraphrases: bool) -> tuple[dict[str, Any], list[str]]:
        """Batch arrays of the rows in ``mask`` (one per paraphrase) and the sentence each row read."""
        idx = np.flatnonzero(mask)
        row_of, texts, sources = [], [], []
        for i in idx:
            s = str(tab["texts"][i])
            targets = [s, *para.get(s.strip(), [])] if with_paraphrases else [s]
            row_of += [i] * len(targets)
            texts += targets  # the LM learns every paraphrase ...
            sources += [s] * len(targets)  # ... while the contrastive side sees the sentence read
        rows = np.asarray(row_of, dtype=np.int64)
        n = len(rows)
        return {"x": IndexedRows(tab["X"], rows), "lengths": tab["lengths"][rows],
                **model.tokenize(texts, sources=sources),
                "task": model.prompt_index("task", tab["task"][rows], n),
                "dataset": model.prompt_index("dataset", tab["dataset"][rows], n),
                "subject": model.prompt_index("subject", tab["subject"][rows], n)}, [t.strip() for t in sources]

    is_train, is_test = tab["split"] == "train", tab["split"] == "test"
    if not is_train.any() or is_test.sum() < 2:
        raise ValidationError(format_error("data", "training sentences and at least 2 test sentences",
                                           f"{int(is_train.sum())} train / {int(is_test.sum())} test",
                                           "Add subjects, tasks or sentences (the split is by unique sentence)"))
    config_t, batch = ctx.config, ctx.config.batch_size
    train_arrays, train_sentences = arrays(is_train, True)
    # no sentence twice in a batch (GLIM's sampler): every other row is a true negative
    train_src = ArrayBatches(train_arrays, batch, groups=train_sentences)
    is_val = tab["split"] == "val"
    val = None
    if ctx.extra.get("validate"):
        val = _val_source(arrays(is_val, False)[0], batch) if is_val.sum() >= batch else None
        if val is None:
            logger.warning("train.validate: %d validation sentences for batches of %d; validation skipped",
                           int(is_val.sum()), batch)
    result = _fit(model, config_t, train_src, val, out, ctx.resume)

    # retrieval as GLIM scores it: fixed-order blocks of `retrieval_block` items reading distinct sentences
    # (leftovers dropped); candidates: the block's sentences (metrics.block_retrieval, ties are misses)
    from ..metrics import block_retrieval, other_sentence_pairing

    evaluate, gen = ctx.evaluate, ctx.generate
    test = np.flatnonzero(is_test)
    prompts = {k: tab[k][test].tolist() for k in ("task", "dataset", "subject")}
    emb = model.embed_eeg(tab["X"][test], tab["lengths"][test], **prompts, batch_size=int(gen.get("batch_size", 64)))
    texts = np.asarray([str(t).strip() for t in tab["texts"][test]])
    uniq, inverse = np.unique(texts, return_inverse=True)
    text_emb = model.embed_texts(list(uniq))
    block = int(evaluate.get("retrieval_block", 24))
    if len(uniq) < block:
        logger.warning("GLIM retrieval: %d distinct test sentences for blocks of %d; using blocks of %d",
                       len(uniq), block, len(uniq))
        block = len(uniq)
    ks = [int(k) for k in evaluate.get("retrieval_topk", [1, 5, 10]) if int(k) <= block]
    scores = block_retrieval(emb, text_emb[inverse], texts.tolist(), block=block, topk=ks)
    metrics: dict[str, float] = {"test/n_trials": float(len(test)), "test/n_sentences": float(len(uniq)),
                                 "test/retrieval_block": float(block), "test/retrieval_n_blocks": float(scores["n_blocks"])}
    # shuffled-brain control: each item's sentence against the EEG of a trial that read another sentence
    try:
        pairing = other_sentence_pairing(texts.tolist())
    except ValidationError as err:  # e.g. one test sentence read by most trials: no such pairing exists
        logger.warning("GLIM retrieval: no shuffled control (%s)", err)
        pairing = None
    shuffled = (block_retrieval(emb[pairing], text_emb[inverse], texts.tolist(), block=block, topk=ks)
                if pairing is not None else None)
    for k in ks:
        metrics[f"test/retrieval_top{k}"] = scores[f"top{k}"]
        metrics[f"test/retrieval_chance_top{k}"] = k / block
        if shuffled is not None:
            metrics[f"test/retrieval_shuffled_top{k}"] = shuffled[f"top{k}"]
    hit1 = scores["per_item"][f"top{ks[0]}"] if ks else np.full(len(test), np.nan)
    metrics.update(_zero_shot_scores(model, emb, tab, test, evaluate.get("zero_shot", [])))

    # sentences from the EEG alone (no teacher forcing)
    generated = model.generate(tab["X"][test], tab["lengths"][test], **prompts,
                               max_new_tokens=gen.get("max_new_tokens") or None,
                               num_beams=int(gen["num_beams"]), batch_size=int(gen["batch_size"]))
    write_json(out / "generations.json", {
        "teacher_forcing": False, "n": len(generated), "retrieval_block": block,
        "items": [{"subject": prompts["subject"][i], "task": prompts["task"][i], "reference": str(tab["texts"][j]),
                   "generated": g, f"retrieval_top{ks[0] if ks else 1}": None if np.isnan(hit1[i]) else bool(hit1[i])}
                  for i, (j, g) in enumerate(zip(test, generated))]})
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


def _zero_shot_scores(model: Any, emb: np.ndarray, tab: Mapping[str, Any], rows: np.ndarray,
                      tasks: Any) -> dict[str, float]:
    """GLIM's zero-shot classification of the test sentences (``[evaluate] zero_shot``).

    Each task's class sentences (:func:`neurodecode.metrics.zero_shot_prompts`) are embedded as given
    (no ``text_template``, as the reference's ``cal_label_embs``) and each test EEG embedding is
    classified by cosine similarity; accuracy over the sentences that have the label: ``sentiment``
    (ZuCo 1.0 task SR), ``relation`` (task TSR; top-1 and top-3), ``corpus`` (SR movie reviews against
    NR/TSR biographies: every sentence). A task whose labels are absent (no ``task_materials`` tables
    under the data root) is reported with ``n_scored = 0`` and a warning, never as a score.
    """
    from ..metrics import ZERO_SHOT_TASKS, zero_shot_classification, zero_shot_prompts, zero_shot_targets

    out: dict[str, float] = {}
    for task in [str(t) for t in tasks or []]:
        labels = tab["task"][rows] if task == "corpus" else tab.get(task, np.full(len(tab["task"]), ""))[rows]
        targets = zero_shot_targets(task, list(labels))
        out[f"test/zero_shot/{task}/n_scored"] = float((targets >= 0).sum())
        if not (targets >= 0).any():
            logger.warning("GLIM zero-shot %s: no test sentence has a %s label (ZuCo's task_materials tables under "
                           "the data root give them); not scored", task, task)
            continue
        cand = model.embed_texts(zero_shot_prompts(task), template="{}")
        res = zero_shot_classification(emb, cand, targets, topk=ZERO_SHOT_TASKS[task]["topk"])
        for k in ZERO_SHOT_TASKS[task]["topk"]:
            out[f"test/zero_shot/{task}/top{k}"] = res[f"top{k}"]
            out[f"test/zero_shot/{task}/chance_top{k}"] = res["chance"][f"top{k}"]
    return out


def _train_config(values: Mapping[str, Any]) -> Any:
    from ..train import TrainConfig

    return TrainConfig.from_dict(values)


def check_recipe(recipe: Mapping[str, Any], problems: Any) -> dict[str, Any]:
    """Check the tables of a GLIM recipe (see :mod:`neurodecode.recipes._schema`)."""
    from ..models.glim import GLIMConfig
    from ..train import TrainConfig
    from ._schema import GLIMGenerate, check_recipe_tables

    return check_recipe_tables(recipe, problems, datasets=DATASETS, decoder_config=GLIMConfig, generate=GLIMGenerate,
                               train_config=TrainConfig, latents_extra=("text",))


def train(recipe: Mapping[str, Any], data_root: Any, out_dir: Any, **kwargs: Any) -> Any:
    """Train a GLIM recipe (:func:`~neurodecode.recipes._meeg.train_meeg` with :func:`train_glim`)."""
    return train_meeg(recipe, data_root, out_dir, train_glim, **kwargs)


def reconstruct(recipe: Mapping[str, Any], data_root: Any, subject: Any, checkpoint: Any, out_dir: Any,
                **kwargs: Any) -> dict[str, Any]:
    """Sentences from a GLIM run, decoded from the EEG alone (no teacher forcing), one per test sentence.

    ``checkpoint`` is the run folder of ``neurodecode train pipelines/glim_zuco.toml`` (one model in
    ``RUN/``). Every test sentence (split by unique sentence, durations and padding as in training) of
    each subject the model knows is decoded (``[generate]``: ``max_new_tokens``, ``num_beams``,
    ``batch_size``). The label of a sentence is its task and its index in the subject's task file
    (``stim-NR0012``); ``references.tsv`` holds the sentence read, the truth of ``neurodecode evaluate``.
    """
    return reconstruct_meeg(recipe, data_root, subject, checkpoint, out_dir, _reconstruct_glim, outputs="text",
                            **kwargs)


def _zuco_stim_label(task: Any, index: Any) -> str:
    return _stim_label(f"{_label(task)}{int(index):04d}")


def _reconstruct_glim(ctx: dict[str, Any], requested: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Sentences from the EEG alone for each test sentence of the run's (or the asked) subjects."""
    from ..models.glim import GLIM

    run, out, rank, world, timings = ctx.run, ctx.out, ctx.rank, ctx.world, ctx.timings
    cls = model_class(run)
    if cls != "GLIM":
        children = [f"{p.name}: {model_class(p)}" for p in sorted(run.iterdir()) if model_class(p)] \
            if run.is_dir() else []
        got = f"a {cls} checkpoint" if cls else ("no config.json" + (f" (sub-folders hold {', '.join(children[:3])})"
                                                                    if children else ""))
        raise not_a_run(run, "glim", ctx.recipe_name, got)
    gen_tbl = dict(ctx.recipe["generate"])
    for key, value in (("steps", ctx.steps), ("generator_weights", ctx.generator_weights),
                       ("dtype", ctx.dtype)):
        if value is not None:
            logger.warning("reconstruct: %s=%r does not apply to GLIM (its own T5 decodes) and is ignored", key, value)
    info = json.loads((run / "config.json").read_text(encoding="utf-8"))
    known = [str(s) for s in dict(info.get("config", {})).get("subjects", [])]
    if not known:
        raise not_a_run(run, "glim", ctx.recipe_name, "a GLIM without subjects")
    subjects = pick_subjects(requested, known, run)
    t0 = time.perf_counter()
    table = load_zuco_for_recipe(ctx.root, {**ctx.data, "subjects": subjects}, splits=("test",),
                                 verbose=loader_verbose(ctx.verbose))
    timings["load_data_s"] = time.perf_counter() - t0
    max_new = gen_tbl.get("max_new_tokens")
    num_beams = int(gen_tbl["num_beams"])
    bs = int(ctx.batch_size or gen_tbl.get("batch_size", 16))
    model: Any = None
    per_subject: dict[str, Any] = {}
    refs: list[dict[str, Any]] = []
    items: dict[str, Any] = {}
    for sid in subjects:
        rows = np.flatnonzero(table["subject"] == sid)
        if ctx.limit is not None:
            rows = rows[:ctx.limit]
        if not len(rows):
            logger.warning("reconstruct: no test sentence for %s (after the duration limits); skipped", sid)
        labels = [_zuco_stim_label(table["task"][r], table["stimulus_id"][r]) for r in rows]
        sub = _sub_label(sid)
        refs += [{"sub": sub, "stim": lab, "subject": sid, "task": table["task"][r],
                  "sentence_index": int(table["stimulus_id"][r]), "reference": str(table["texts"][r])}
                 for lab, r in zip(labels, rows)]
        positions = np.arange(rank, len(rows), world)
        paths = [output_paths(out, sid, labels[i], ctx.recipe_name)["image"].with_suffix(".txt") for i in positions]
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
            model = GLIM.from_pretrained(run, device=str(ctx.device))
            timings["load_decoder_s"] = time.perf_counter() - t0
        sel = rows[positions[todo]]
        t0 = time.perf_counter()
        with progress(total=len(todo), desc=f"reconstruct sub-{sub}", unit="sentence", verbose=ctx.verbose) as bar:
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
                ctx.log.add_items({f"{sid}/{labels[int(positions[todo[j]])]}": "deterministic" for j in chunk})
                bar.update(len(chunk))
                entry["n_done"] += len(chunk)
        timings["generate_s"] = timings.get("generate_s", 0.0) + time.perf_counter() - t0
    if rank == 0 and refs:
        from ..metrics import write_references

        # the sentence read, and its paraphrases when the recipe names a table (data.paraphrases: GLIM's
        # protocol scores BLEU against them; `neurodecode evaluate --protocol glim`)
        para_table = _paraphrases(ctx.root, ctx.data.get("paraphrases"))
        write_references(out / "references.tsv", refs, paraphrases=para_table or None)
    extra = {"decoder": {"checkpoint": str(run.resolve()), "class": "GLIM", "sha256": sha_or_none(run / "model.safetensors")},
             "generator": {"generator": "glim", "teacher_forcing": False, "decoding": "greedy" if num_beams == 1
                           else f"beam search ({num_beams} beams)", "max_new_tokens": max_new, "batch_size": bs},
             "seeds": {"base": None, "rule": "deterministic decoding (do_sample=False): no seed is involved"},
             "items": items, "references": "references.tsv (the sentence read, from the data; paraphrases from data.paraphrases)",
             "data_provenance": table["provenance"]}
    return per_subject, extra
