"""The speech runner (Défossez et al. 2023): train SimpleConv on M/EEG speech segments against speech features.

:func:`train` runs the frame of :func:`~neurodecode.recipes._meeg.train_meeg` with :func:`train_speech`:

1. **Data.** Each subject of ``[data] subjects`` through the loader of ``[data] dataset``
   (:func:`neurodecode.data.load_meg_masc`, ``neurodecode.data._broderick.load_broderick2019`` (EEG),
   ``neurodecode.data._mous.load_mous``, ``neurodecode.data._brennan.load_brennan2019`` (EEG)): 3 s segments
   (``[data] window``, default -0.5..2.5 s) at every word onset, resampled to ``[data] sfreq`` (120 Hz), the
   paper's baseline (first 0.3 s), splits by whole wav file (test 20 %, validation 10 %).
2. **Targets.** ``[latents] speech`` (``wav2vec2-xlsr-53``, or ``mel``; ``-tiny`` twins) of every wav file,
   computed once per file into the per-wav cache (``<cache>/speech``), at the brain's rate; each segment's
   target is the window heard ``[latents] offset`` s (0.15) before it
   (:func:`neurodecode.latents.wav2vec2.speech_windows`), z-scored per feature with the training segments'
   statistics (brainmagick's StandardScaler on features).
3. **Model.** One :class:`~neurodecode.models.SimpleConv` for all subjects (a subject layer each), its input
   shape, rate, channel names and sensor positions read from the data, its per-channel robust scaling
   (median / IQR of each subject's training segments, pooled for unknown subjects), trained with the CLIP
   loss (negatives: the other segments of the batch, gathered across processes under DDP). Each batch holds
   one subject's segments (:class:`~neurodecode.train.MultiSubjectBatches`); the reference mixes subjects.
4. **Evaluation** (``metrics.json``, ``segments.json``): zero-shot identification of each test segment among
   all unique test segments (:func:`neurodecode.metrics.segment_retrieval`): ``test/<subject>/top1``,
   ``top10``, ``shuffled_top1``..., at segment level (``word_top1``... and ``sentence_top1``... at the word and
   sentence levels), and the same over all subjects with chance (``test/all/top1``, ``test/all/chance_top1``...);
   ``segments.json`` holds every score with its bootstrap CI and the paper's numbers as comparison rows.

Speech runs have no reconstruction step: :func:`reconstruct` explains so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import ValidationError
from .._core.files import write_json
from .._core.logging import logger, progress
from .._core.validation import format_error
from ._meeg import _check_field, _tiny_fields, train_meeg
from ._run import fit as _fit

__all__ = ["DATASETS", "check_recipe", "train", "reconstruct", "train_speech"]

#: ``[data] dataset`` values the speech runner reads (the first is the default); see :func:`_loader`.
DATASETS = ("meg-masc", "broderick2019", "mous", "brennan2019")


@dataclass
class SpeechGenerate:
    """``[generate]`` of a speech recipe: nothing is generated (segment identification only)."""


def check_recipe(recipe: Mapping[str, Any], problems: Any) -> dict[str, Any]:
    """Check the tables of a speech recipe (see :mod:`neurodecode.recipes._schema`)."""
    from ..models.simpleconv import SimpleConvConfig
    from ..train import TrainConfig
    from ._schema import check_recipe_tables

    out = check_recipe_tables(recipe, problems, datasets=DATASETS, decoder_config=SimpleConvConfig,
                              generate=SpeechGenerate, train_config=TrainConfig,
                              latents_extra=("speech", "offset", "weights", "resample"))
    speech = out["latents"].get("speech", "wav2vec2-xlsr-53")
    from ..latents.wav2vec2 import SPEECH_SPACES

    if str(speech).removesuffix("-tiny") not in SPEECH_SPACES:
        problems.add("latents.speech", f"expected one of {sorted(SPEECH_SPACES)} (or a -tiny twin), got {speech!r}")
    return out


def train(recipe: Mapping[str, Any], data_root: Any, out_dir: Any, **kwargs: Any) -> Any:
    """Train a speech recipe (:func:`~neurodecode.recipes._meeg.train_meeg` with :func:`train_speech`)."""
    return train_meeg(recipe, data_root, out_dir, train_speech, **kwargs)


def reconstruct(recipe: Mapping[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Speech decoders identify segments; there is nothing to reconstruct."""
    raise ValidationError(format_error(
        "decoder.name", "a decoder that reconstructs stimuli", "'simpleconv' (speech segment identification)",
        "The test scores are computed by `neurodecode train` (metrics.json, segments.json in the run folder)"))


def _loader(dataset: str) -> tuple[Any, tuple[str, ...]]:
    """The loader of ``[data] dataset`` and the ``[data]`` keys it takes besides the common contract (every
    speech loader takes ``tmin``, ``tmax``, ``sfreq``, ``baseline``, ``l_freq``, ``h_freq``, ``raw_sfreq``,
    ``verbose``); imported here, lazily, so that one dataset's optional pieces never block another."""
    if dataset == "meg-masc":
        from ..data._meg_masc import load_meg_masc

        return load_meg_masc, ("sessions", "tasks")
    if dataset == "broderick2019":
        from ..data._broderick import load_broderick2019

        return load_broderick2019, ("runs", "reference")
    if dataset == "mous":
        from ..data._mous import load_mous

        return load_mous, ("runs", "contexts")
    if dataset == "brennan2019":
        from ..data._brennan import load_brennan2019

        return load_brennan2019, ("segments", "reference", "bads")
    raise ValidationError(format_error("data.dataset", f"one of {', '.join(DATASETS)}", repr(dataset)))


def _load(ctx: Any, subject: Any) -> Any:
    data = ctx.data
    load, extra = _loader(str(data.get("dataset", DATASETS[0])))
    window = [float(v) for v in data.get("window", [-0.5, 2.5])]
    if len(window) != 2 or window[1] <= window[0]:
        raise ValidationError(format_error("data.window", "[start, stop] seconds around the word onset", window))
    baseline = data.get("baseline", [-0.5, -0.2])
    return load(ctx.root, subject, tmin=window[0], tmax=window[1], sfreq=float(data.get("sfreq", 120.0)),
                baseline=None if baseline is None else tuple(baseline), l_freq=data.get("l_freq"),
                h_freq=data.get("h_freq"), raw_sfreq=data.get("raw_sfreq"),
                verbose=False if ctx.verbose in (None, False) else ctx.verbose,
                **{k: data.get(k) for k in extra})


def train_speech(ctx: Any) -> tuple[dict[str, Any], dict[str, float], dict[str, Any]]:
    """Load the speech dataset, compute the speech targets, train one SimpleConv, score the test segments.

    Returns
    -------
    results : dict of str to TrainResult
        ``{"joint": ...}``.
    metrics : dict of str to float
        The test metrics (see the module docstring).
    provenance : dict
    """
    from ..latents.wav2vec2 import SpeechFeatureCache, get_speech_space, speech_windows
    from ..metrics import segment_retrieval
    from ..metrics._segments import SPEECH_PAPER_RESULTS
    from ..models.simpleconv import SimpleConv, SimpleConvConfig, robust_statistics
    from ..train import ArrayBatches, MultiSubjectBatches

    data, latents, decoder = ctx.data, ctx.latents, ctx.decoder
    subjects_in = data.get("subjects")
    subjects_in = [subjects_in] if isinstance(subjects_in, (str, int)) else list(subjects_in or [])
    if not subjects_in:
        raise ValidationError(format_error("data.subjects", "at least one subject", subjects_in))
    scaling = str(data.get("scaling", "robust"))
    clip = data.get("clip", 20.0)

    # 1. data
    trials = {}
    for s in progress(subjects_in, desc="load", unit="subject", verbose=ctx.verbose):
        t = _load(ctx, s)
        trials[t.subject] = t
    subjects = list(trials)
    first = trials[subjects[0]]
    for s, t in trials.items():
        if list(t.ch_names or []) != list(first.ch_names or []):
            raise ValidationError(format_error("data.subjects", "one channel set for the shared model",
                                               f"{s} differs from {subjects[0]}", "Train on subjects of one system"))

    # 2. targets, once per wav file
    space_name = str(latents.get("speech", "wav2vec2-xlsr-53"))
    rate = float(first.sfreq or 120.0)
    space = get_speech_space(space_name, weights=latents.get("weights"), rate=rate,
                             resample=str(latents.get("resample", "nearest")), device=ctx.latent_device)
    sounds = sorted({str(x) for t in trials.values() for x in t.metadata["sound"]})
    feats = SpeechFeatureCache(Path(ctx.cache_root) / "speech").features(
        space, {snd: ctx.root / snd for snd in sounds}, verbose=ctx.verbose)
    offset = float(latents.get("offset", 0.15))
    n_times = first.X.shape[2]
    tmin = float(first.times[0]) if first.times is not None else -0.5
    targets = {s: speech_windows(feats, list(t.metadata["sound"]), t.metadata["sound_offset"], rate=rate, tmin=tmin,
                                 n_times=n_times, offset=offset) for s, t in trials.items()}
    train_rows = {s: np.flatnonzero(t.split == "train") for s, t in trials.items()}
    if any(len(r) < 2 for r in train_rows.values()):
        raise ValidationError(format_error("data", "training segments for every subject",
                                           {s: len(r) for s, r in train_rows.items()}, "Add stories or sessions"))
    pooled = np.concatenate([targets[s][train_rows[s]] for s in subjects])
    f_mean = pooled.mean(axis=(0, 2))
    f_std = pooled.std(axis=(0, 2))
    f_std = np.where(f_std > 0, f_std, 1.0)
    for s in subjects:
        targets[s] = ((targets[s] - f_mean[None, :, None]) / f_std[None, :, None]).astype(np.float32)

    # 3. model
    fields: dict[str, Any] = dict(decoder)
    _check_field(fields, "n_channels", int(first.X.shape[1]), "the data's channels")
    _check_field(fields, "n_times", int(n_times), "the segment length at data.sfreq")
    _check_field(fields, "sfreq", rate, "data.sfreq")
    _check_field(fields, "out_dim", int(space.dim), f"the width of {space_name}")
    fields["ch_names"] = list(first.ch_names or [])
    fields["positions"] = first.provenance.get("sensor_positions")
    fields["subjects"] = subjects
    fields["tmin"] = tmin
    fields["clamp"] = None if clip is None else float(clip)
    model = SimpleConv(SimpleConvConfig.from_dict({**_tiny_fields(SimpleConvConfig), **fields}
                                                  if ctx.base == "tiny" else fields))
    if scaling == "robust":
        model.set_input_scaling(*robust_statistics(np.concatenate([trials[s].X[train_rows[s]] for s in subjects])))
        for s in subjects:
            model.set_input_scaling(*robust_statistics(trials[s].X[train_rows[s]]), subject=s)
    elif scaling == "channel-zscore":
        Xp = np.concatenate([trials[s].X[train_rows[s]] for s in subjects])
        model.set_input_scaling(Xp.mean(axis=(0, 2)), np.where(Xp.std(axis=(0, 2)) > 0, Xp.std(axis=(0, 2)), 1.0))
    batch = int(ctx.config.batch_size)
    parts = {s: {"x": trials[s].X[train_rows[s]], "speech": targets[s][train_rows[s]]} for s in subjects}
    if len(subjects) > 1:
        src: Any = MultiSubjectBatches(parts, batch)
    else:
        src = ArrayBatches(parts[subjects[0]], batch, extra={"subject": subjects[0]})
    logger.info("SimpleConv: training on %s", ", ".join(subjects))
    result = _fit(model, ctx.config, src, None, ctx.out, ctx.resume)
    model.eval()

    # 4. evaluation: every test segment among the unique test segments
    metrics: dict[str, float] = {}
    preds, labels_id, subs = [], [], []
    cand: dict[str, tuple[np.ndarray, str, str]] = {}
    for s, t in trials.items():
        rows = np.flatnonzero(t.split == "test")
        if not len(rows):
            continue
        preds.append(model.encode(t.X[rows], s))
        ids = t.stimulus_ids[rows].astype(str)
        labels_id += list(ids)
        subs += [s] * len(rows)
        for i, r in zip(ids, rows):
            cand.setdefault(i, (targets[s][r], str(t.texts[r] if t.texts is not None else ""),
                                str(t.metadata["sequence"][r])))
    if not preds:
        raise ValidationError(format_error("data", "test segments (the test wav files' words)", "none",
                                           "Add stories: 20 % of the wav files are the test set"))
    cand_ids = sorted(cand)
    index = {c: k for k, c in enumerate(cand_ids)}
    scores = segment_retrieval(np.concatenate(preds), np.stack([cand[c][0] for c in cand_ids]),
                               np.array([index[i] for i in labels_id]), words=[cand[c][1] for c in cand_ids],
                               sentences=[cand[c][2] for c in cand_ids], subjects=subs,
                               topk=[int(k) for k in (ctx.evaluate.get("topk") or (1, 10))],
                               n_boot=int(ctx.evaluate.get("bootstrap", 1000) or 1000),
                               random_state=int(ctx.config.seed))
    for level in ("segment", "word", "sentence"):
        if level not in scores:
            continue
        prefix = "" if level == "segment" else f"{level}_"
        for k in scores["topk"]:
            metrics[f"test/all/{prefix}top{k}"] = scores[level][f"top{k}"]
            metrics[f"test/all/{prefix}shuffled_top{k}"] = scores[level][f"shuffled_top{k}"]
            metrics[f"test/all/{prefix}chance_top{k}"] = scores[level][f"chance_top{k}"]
            for s, by in scores["by_subject"].items():
                metrics[f"test/{s}/{prefix}top{k}"] = by[level][f"top{k}"]
                metrics[f"test/{s}/{prefix}shuffled_top{k}"] = by[level][f"shuffled_top{k}"]
        metrics[f"test/all/{prefix}n_candidates"] = scores[level]["n_candidates"]
    write_json(ctx.out / "segments.json", {"scores": scores, "paper": SPEECH_PAPER_RESULTS,
                                           "protocol": "zero-shot segment identification among the unique test "
                                                       "segments (Défossez et al. 2023), cosine ranking"})
    prov = {"subjects": subjects, "data": {s: t.provenance for s, t in trials.items()},
            "targets": {"space": space_name, "dim": space.dim, "rate": rate, "offset_s": offset,
                        "cache": str(Path(ctx.cache_root) / "speech"), "n_wav": len(sounds),
                        "standardised": "per feature, training segments' mean and std"},
            "scaling": scaling, "clip": clip}
    return {"joint": result}, metrics, prov
