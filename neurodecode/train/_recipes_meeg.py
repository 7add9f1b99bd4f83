"""Train the M/EEG decoders from a recipe: ATM on THINGS-EEG2 / THINGS-MEG, GLIM on ZuCo.

:func:`neurodecode.train.train_from_recipe` sends every recipe whose ``[data] dataset`` is not
``"nsd"`` here. The steps mirror the NSD path, each resumable:

1. load the subjects of ``[data]`` (:func:`~neurodecode.data.load_things_eeg2`,
   :func:`~neurodecode.data.load_things_meg`, :func:`~neurodecode.data.load_zuco`) with the
   recipe's window, sampling rate, test-repeat averaging, resampling, duration limits and split, and
   scale each channel with statistics of the subject's training trials (``[data] scaling``; the
   statistics are written next to each model in ``input_scaling.json``: apply them before
   ``predict_latents``);
2. ATM: compute the ``[latents]`` targets once per stimulus into the feature cache (the pooled image
   embedding of every image, found under ``[data] images``, and the text embedding of
   ``text_template`` filled with each concept). GLIM needs no cache: its contrastive target is the
   pooled encoder output of its own frozen text model, the network ``[latents] text`` names
   (checked), computed from the tokenised sentence in every step;
3. build the decoder of ``[decoder]`` (its input shape and sampling rate read from the data, its
   output width from the image space; a value given in the recipe must agree);
4. train with :class:`~neurodecode.train.Trainer` (``[train]``); ATM then trains its stage-1
   diffusion prior (``[decoder.prior]``: ``epochs``, ``lr``, ``batch_size`` and
   :class:`~neurodecode.models.atm.ATMPriorConfig` fields) on the trained encoder's embeddings of
   the training trials, into ``<model folder>/prior``;
5. write the model(s) (``save_pretrained``), ``recipe.json``, ``provenance.json`` and
   ``metrics.json`` with test metrics.

Which models. ATM, ``[data] mode = "within"``: one model per subject in ``OUT/<sub-XX>/`` (trained
and tested on that subject), or, with ``[decoder] subject_tokens = true``, one joint model in
``OUT/`` with a token per subject. ``mode = "loso"``: one model per held-out subject in
``OUT/<sub-XX>/``, trained on the other subjects' training trials and tested on the held-out
subject's test trials (its subject token is the shared "unknown" one). A model fitted on several
subjects draws each batch from one subject (:class:`~neurodecode.train.MultiSubjectBatches`). GLIM: one model in ``OUT/``
for every subject, task and ZuCo version, with task / dataset / subject prompts.

Test metrics (``metrics.json``). ATM: zero-shot identification of each test trial's image among all
test images (the ``n``-way case of the ATM protocol, 200-way on the real data, so no random
distractors are drawn): ``test/<subject>/top1``, ``top5``, ``chance`` (``1 / n``), ``n_way`` and,
with the prior, ``prior_top1`` (the same from image embeddings sampled by the prior). Smaller
``k``-way scores with random distractors come from :func:`neurodecode.metrics.kway_topk` on the
encoder's embeddings. GLIM: EEG-to-text retrieval in blocks of ``[evaluate] retrieval_block`` test
trials (shuffled with the seed; the candidates of a trial are the distinct sentences of its block):
``test/retrieval_top{k}`` and ``test/retrieval_chance_top{k}``; and sentences generated from the EEG
alone (no teacher forcing) for every test trial, written with the per-trial retrieval rank and
similarity to ``OUT/generations.json`` (score them with :func:`neurodecode.metrics.evaluate_text`;
the text metrics live in :mod:`neurodecode.metrics`, a layer ``train`` does not import).

Recipe keys read here beyond :class:`~neurodecode.train.TrainConfig`'s fields:

- ``[data]`` all: ``dataset``, ``subjects``, ``scaling`` ("channel-zscore" or "none");
  THINGS: ``sfreq``, ``window`` ([start, stop) in seconds after onset), ``n_channels``,
  ``average_test_repetitions``, ``split`` ("official"), ``mode`` ("within" or "loso"), ``images``
  (image folder; default ``ROOT/image_set`` for THINGS-EEG2, ``ROOT/stimuli`` for THINGS-MEG);
  THINGS-EEG2: ``variant`` ("atm"), ``allow_pickle``; THINGS-MEG: ``sessions``, ``raw_sfreq``,
  ``l_freq``, ``h_freq``; ZuCo: ``versions`` ("zuco1", "zuco2"; read from ``ROOT/zuco1`` and
  ``ROOT/zuco2`` when present, else ``ROOT``), ``tasks``, ``resample_to``, ``channels`` (names
  to keep, in order; default all), ``n_channels`` (zero-padded montage), ``max_times``, ``min_duration``, ``max_duration``, ``split``
  ("unique-sentence"), ``paraphrases`` (false, or a JSON file ``{"sentence": ["paraphrase", ...]}``:
  one training row per paraphrase, relative paths read from the data root);
- ``[latents]``: ``cache_dir``, ``dtype``, ``device``; ATM: ``image``, ``text`` (a space name or a table
  with ``space``, ``weights``, ``batch_size`` and space options; ``""`` turns the text target off),
  ``text_template``; GLIM: ``text``;
- ``[decoder]``: ``name`` ("atm" or "glim"), ``base`` ("default" or "tiny"), config fields;
- ``[train]``: ``validate`` (log the test-split losses after every epoch), then the TrainConfig fields;
- ``[generate]`` (GLIM): ``max_new_tokens``, ``num_beams``, ``batch_size``;
- ``[evaluate]`` (GLIM): ``retrieval_block``, ``retrieval_topk``.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import DataIntegrityError, MissingFileError, UnsafeCheckpointError, ValidationError
from .._core.files import write_json
from .._core.logging import logger, progress
from .._core.validation import check_option, format_error
from ._config import TrainConfig
from ._targets import _load_or_embed
from ._trainer import TrainResult

__all__ = ["train_meeg_from_recipe", "topk_identification"]

DATASETS = {"things-eeg2": "atm", "things-meg": "atm", "zuco": "glim"}
_IMAGE_DIRS = {"things-eeg2": "image_set", "things-meg": "stimuli"}


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


def _fold_name(subject: str) -> str:
    return str(subject).rsplit("/", 1)[-1]


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


def _embed(table: Mapping[str, Any], stimuli: Any, ids: np.ndarray, *, cache_root: Path, device: Any,
           dtype: str, verbose: Any) -> np.ndarray:
    """Features of ``ids`` in the space of ``table``, computed once into the feature cache."""
    table = dict(table)
    name = str(table.pop("space"))
    weights = table.pop("weights", None) or None
    batch_size = int(table.pop("batch_size", 32))
    cache = _load_or_embed(name, table, weights, stimuli, ids, cache_root, device, batch_size, verbose)
    return np.asarray(cache.load(ids, dtype=dtype))


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


def _scale_(X: np.ndarray, mean: np.ndarray, std: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
    """``(X - mean) / std`` per channel, in place; padding (beyond ``lengths``) stays zero."""
    X -= mean[None, :, None].astype(X.dtype)
    X /= std[None, :, None].astype(X.dtype)
    if lengths is not None:
        X *= (np.arange(X.shape[2])[None, :] < np.asarray(lengths)[:, None])[:, None, :]
    return X


def _write_scaling(folder: Path, method: str, stats: Mapping[str, tuple[np.ndarray, np.ndarray]],
                   ch_names: Mapping[str, Any]) -> None:
    write_json(folder / "input_scaling.json", {
        "method": method, "apply": "X[:, c] = (X[:, c] - mean[c]) / std[c] before predict_latents / encode",
        "subjects": {s: {"mean": m.tolist(), "std": sd.tolist(), "ch_names": list(ch_names.get(s) or [])}
                     for s, (m, sd) in stats.items()}})


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


# ---------------------------------------------------------------------------------------- THINGS data
def _load_things(root: Path, dataset: str, data: Mapping[str, Any], subject: Any, verbose: Any) -> Any:
    """One subject's THINGS trials cropped to ``data.window``: (train single trials, test)."""
    from ..data import load_things_eeg2, load_things_meg

    window = [float(v) for v in data.get("window", [0.0, 1.0])]
    if len(window) != 2 or not window[0] < window[1]:
        raise ValidationError(format_error("data.window", "[start, stop] in seconds with start < stop",
                                           data.get("window"), "Write e.g. data.window = [0.0, 1.0]"))
    average = bool(data.get("average_test_repetitions", True))
    split = str(data.get("split", "official"))
    check_option(split, "data.split", ("official",))
    if dataset == "things-meg":
        sfreq = float(data.get("sfreq", 200.0))
        trials = load_things_meg(root, subject, sessions=data.get("sessions") or None, tmin=window[0],
                                 tmax=window[1] - 1.0 / sfreq, sfreq=sfreq, average_test_repeats=average,
                                 exclude_test_concepts=True, raw_sfreq=data.get("raw_sfreq") or None,
                                 l_freq=data.get("l_freq") or None, h_freq=data.get("h_freq") or None,
                                 verbose=verbose)
        return trials.train, trials.test
    variant = str(data.get("variant", "atm"))
    allow = bool(data.get("allow_pickle", False))
    try:
        train: Any = load_things_eeg2(root, subject, variant=variant, split="train", allow_pickle=allow, verbose=verbose)
        test: Any = load_things_eeg2(root, subject, variant=variant, split="test", average_repeats=average,
                                allow_pickle=allow, verbose=verbose)
    except UnsafeCheckpointError as exc:
        raise UnsafeCheckpointError(format_error(
            "data.allow_pickle", "pickle-free .npz twins of the THINGS-EEG2 files, or allow_pickle = true",
            f"false, and only pickled files for {subject} ({exc})",
            "The published preprocessed_eeg_*.npy files are pickles, and unpickling runs code: for a copy you "
            "trust pass --set data.allow_pickle=true, or convert it once with "
            "neurodecode.data.convert_things_eeg2(root, subject, allow_pickle=True)")) from None
    if str(train.provenance.get("image_ids", "")).startswith("positional"):
        raise UnsafeCheckpointError(format_error(
            "data.allow_pickle", "image ids from image_set/image_metadata.npz (or a trusted .npy)",
            "no readable image metadata (image_metadata.npy is a pickle and allow_pickle is false)",
            "Pass --set data.allow_pickle=true for a trusted copy, or convert it with convert_things_eeg2"))
    want = float(data.get("sfreq", train.sfreq))
    if not math.isclose(want, float(train.sfreq)):
        raise ValidationError(format_error("data.sfreq", f"the {variant!r} files' rate ({train.sfreq:g} Hz)",
                                           f"{want:g} Hz", "THINGS-EEG2 is not resampled here: pick the matching "
                                           "data.variant ('atm' 250 Hz, 'official' 100 Hz) or data.sfreq"))
    t = np.asarray(train.times, dtype=np.float64)
    step = 1.0 / float(train.sfreq)
    keep = (t >= window[0] - step / 2) & (t < window[1] - step / 2)
    if t[0] > window[0] + step / 2 or t[-1] + step < window[1] - step / 2:
        raise ValidationError(format_error(
            "data.window", f"a window inside the epochs of the files ({t[0]:g} to {t[-1] + step:g} s)",
            window, "Set data.window within the epoch (the ATM 250 Hz release holds -0.2 to 0.8 s)"))
    cut = np.flatnonzero(keep)
    for tr in (train, test):
        tr.X = np.ascontiguousarray(tr.X[:, :, cut.min():cut.max() + 1])
        tr.times = t[keep]
        tr.provenance["window"] = {"seconds": window, "n_times": int(keep.sum()), "convention": "[start, stop)"}
    return train, test


def _concept_text(concept: str) -> str:
    """``"00001_aardvark"`` -> ``"aardvark"``; underscores become spaces."""
    return re.sub(r"^\d+_", "", str(concept)).replace("_", " ")


def _image_paths(folder: Path, ids: np.ndarray, concepts: np.ndarray) -> np.ndarray:
    """Relative path of the image of every stimulus id (a file name or stem), found under ``folder``."""
    from ..latents._stimuli import IMAGE_SUFFIXES

    if not folder.is_dir():
        raise MissingFileError(format_error(
            "data.images", "the folder of the THINGS images (e.g. image_set/training_images/<concept>/<file>.jpg)",
            f"nothing at {folder}", "Point --set data.images=DIR at the images the recording showed"))
    index: dict[str, list[str]] = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."):
            rel = p.relative_to(folder).as_posix()
            index.setdefault(p.name, []).append(rel)
            index.setdefault(p.stem, []).append(rel)
    out, missing, ambiguous = [], [], []
    for i, c in zip(ids.tolist(), concepts.tolist()):
        found = index.get(str(i), [])
        own = [r for r in found if Path(r).parent.name == str(c)]
        pick = own or found
        if len(set(pick)) == 1:
            out.append(pick[0])
        elif pick:
            ambiguous.append((i, sorted(set(pick))[:2]))
        else:
            missing.append(i)
    if missing or ambiguous:
        got = (f"{len(missing)} stimuli without an image (e.g. {missing[:3]})" if missing else
               f"several images for {ambiguous[0][0]!r}: {ambiguous[0][1]}")
        raise MissingFileError(format_error("data.images", f"one image file per stimulus under {folder}", got,
                                            "Point data.images at the image set the recording showed"))
    return np.asarray(out)


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


def _tiny_fields(cfg_cls: Any) -> dict[str, Any]:
    """The fields of ``cfg_cls.tiny()`` (``decoder.base = "tiny"``), which the recipe's fields override."""
    import dataclasses

    return dataclasses.asdict(cfg_cls.tiny())


def _train_atm(ctx: dict[str, Any]) -> tuple[dict[str, TrainResult], dict[str, float], dict[str, Any]]:
    """Load THINGS, embed the targets, train ATM (and its prior) per fold, score the test concepts."""
    from ..models.atm import ATM, ATMDiffusionPrior, ATMPriorConfig
    from ._batches import ArrayBatches, IndexedRows, MultiSubjectBatches

    root, out, data, latents, decoder = ctx["root"], ctx["out"], ctx["data"], ctx["latents"], ctx["decoder"]
    dataset, verbose, base = ctx["dataset"], ctx["verbose"], ctx["base"]
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
    stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if scaling == "channel-zscore":
        for s, (tr, te) in trials.items():
            stats[s] = _channel_stats([(tr.X, None, np.arange(len(tr)))])
            _scale_(tr.X, *stats[s])
            _scale_(te.X, *stats[s])

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
    rel = _image_paths(folder, ids_cat, con_cat)
    common = {"cache_root": ctx["cache_root"], "device": ctx["latent_device"], "dtype": ctx["dtype"],
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
                    "cache_root": str(ctx["cache_root"])}

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
    config, extra, batch = ctx["config"], ctx["extra"], ctx["config"].batch_size
    results: dict[str, TrainResult] = {}
    metrics: dict[str, float] = {}
    models: dict[str, str] = {}
    for name, fit_subjects, test_subjects in folds:
        fdir = out / name if name else out
        tr0, _ = trials[fit_subjects[0]]
        cfg = _atm_config(decoder, base, n_channels=tr0.X.shape[1], n_times=tr0.X.shape[2], sfreq=float(tr0.sfreq),
                          proj_dim=int(image_feats.shape[1]), ch_names=ch_names[fit_subjects[0]],
                          subjects=fit_subjects if tokens else [])
        model = ATM(cfg)
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
        result = _fit(model, config, train_src, val, fdir, ctx["resume"])
        results[name or "joint"] = result
        models[name or "joint"] = str(fdir)
        if stats:
            _write_scaling(fdir, scaling, {s: stats[s] for s in dict.fromkeys(fit_subjects + test_subjects)}, ch_names)

        prior = None
        if prior_tbl:
            pcfg_fields = {k: v for k, v in prior_tbl.items() if k not in ("epochs", "lr", "batch_size")}
            _check_field(pcfg_fields, "embed_dim", int(image_feats.shape[1]), "the image space's width")
            _check_field(pcfg_fields, "cond_dim", int(cfg.proj_dim), "ATM's proj_dim")
            prior = ATMDiffusionPrior(ATMPriorConfig.from_dict(pcfg_fields))
            tbl = {**ctx["train_tbl"], **{k: prior_tbl[k] for k in ("epochs", "lr", "batch_size") if k in prior_tbl}}
            emb_parts = []
            for s in fit_subjects:
                a = arrays(trials[s][0])
                emb_parts.append({"eeg_embeds": model.encode(trials[s][0].X, s if tokens else None),
                                  "image_embeds": a["image_embeds"]})
            p_arr = emb_parts[0] if len(emb_parts) == 1 else _concat_arrays(emb_parts)
            pconf = TrainConfig.from_dict(tbl)
            p_res = _fit(prior, pconf, ArrayBatches(p_arr, pconf.batch_size), None, fdir / "prior", ctx["resume"])
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
            metrics.update({f"{key}/top1": scores[1], f"{key}/chance": 1.0 / n, f"{key}/n_way": float(n)})
            if n > 5:
                metrics[f"{key}/top5"] = scores[5]
            if prior is not None:
                sampled = prior.sample(emb, seed=int(config.seed))
                metrics[f"{key}/prior_top1"] = topk_identification(sampled, cand, labels, (1,))[1]
    prov = {"mode": mode, "subject_tokens": tokens, "models": models,
            "data": {s: {"train": tr.provenance, "test": te.provenance} for s, (tr, te) in trials.items()},
            "n_train": {s: len(tr) for s, (tr, _) in trials.items()},
            "n_test": {s: len(te) for s, (_, te) in trials.items()},
            "scaling": {"method": scaling, "statistics": "per subject, from its training trials"},
            "targets": targets_prov, "prior": bool(prior_tbl)}
    return results, metrics, prov


def _concat_arrays(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate per-subject batch arrays (IndexedRows over one shared table keep sharing it)."""
    from ._batches import IndexedRows

    out: dict[str, Any] = {}
    for key in parts[0]:
        vals = [p[key] for p in parts]
        if isinstance(vals[0], IndexedRows):
            out[key] = IndexedRows(vals[0].table, np.concatenate([v.index.numpy() for v in vals]))
        else:
            out[key] = np.concatenate(vals)
    return out


# ---------------------------------------------------------------------------------------- GLIM
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
    """Every (subject, task) of the recipe, resampled, length-filtered, padded and scaled: one table."""
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
    ch_names: dict[str, Any] = {}
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
            ch_names[sid] = list(tr.ch_names or [])
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
            if stats:
                _scale_(X, *stats[sid], tr.lengths)
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
    table.update(provenance=prov, skipped=skipped, stats=stats, ch_names=ch_names, sfreq=sfreq,
                 n_channels=n_channels, max_times=max_times, scaling=scaling)
    return table


def _train_glim(ctx: dict[str, Any]) -> tuple[dict[str, TrainResult], dict[str, float], dict[str, Any]]:
    """Load ZuCo, train GLIM (contrastive + LM), score retrieval and generate test sentences."""
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
    if tab["stats"]:
        _write_scaling(out, tab["scaling"], tab["stats"], tab["ch_names"])

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
            "scaling": {"method": tab["scaling"], "statistics": "per subject, from its training sentences"},
            "targets": {"text": {"space": text_tbl.get("space"), "computed": "inside GLIM from its frozen T5 encoder "
                                 "(pooled over tokens) in every step; no feature cache"}}}
    return {"joint": result}, metrics, prov


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
    results, metrics, prov = (_train_glim if name == "glim" else _train_atm)(ctx)

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
