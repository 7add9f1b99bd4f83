"""The MEG real-time runner (Benchetrit, Banville & King, ICLR 2024): THINGS-MEG -> image embedding, retrieval,
generation, time-resolved decoding, and the trained run as a live decoder (:func:`load_run`).

:func:`train` runs the frame of :func:`~neurodecode.recipes._meeg.train_meeg` with :func:`train_meg_realtime`:

1. **Data.** Every subject of ``[data] subjects`` is read through
   :func:`~neurodecode.recipes._data.load_things_for_recipe` (the reading ``reconstruct`` uses) with the
   test repetitions kept apart (single-trial test) and averaged here (averaged test). The data stay raw.
2. **Targets.** The image space ``[latents] image`` embeds every image once into the feature cache.
3. **Validation split.** ``[decoder.selection] val_fraction`` of the TRAINING concepts (seeded) are held
   out, all their images: a zero-shot validation set like the test set. lambda (``clip_weight``) is
   chosen among ``[decoder.selection] clip_weights`` by the validation top-5 of one model per value
   (``OUT/selection/lambda-<v>/``), never on the test set (the paper picked it on its large test set);
   the final model is then refitted on all training concepts (``refit = true``) in ``OUT/``.
4. **One cross-subject model** (:class:`~neurodecode.models.meg_brain_module.MEGBrainModule`): one subject
   layer per subject, batches mixing subjects; robust per-channel input statistics per subject (and
   pooled for unknown subjects) inside the model, so the saved model takes raw windows.
5. **Test** per subject: zero-shot retrieval of each test trial's image among the test images, averaged
   over repetitions (``averaged``) and single trials (``single``), top-1 / top-5, with a shuffled-brain
   control; the larger-set option (``[decoder.retrieval] large_set``) adds distractor images:
   ``large_set_images = "train"``, every training image; ``"test-concepts"``, the images of the test
   concepts found under ``[data] images`` other than the test images (the candidate set of the paper's
   ~2.4k large test set; its MEG trials, which the official split drops from training, are not scored).
6. **Linear baseline** (``[decoder.ridge]``): closed-form ridge (:func:`~neurodecode.models.ridge.ridge_fit`,
   alpha by leave-one-out on the training windows) from the same prepared windows (baseline, robust
   scaling, clamp; optionally time-decimated) to the same targets; its scores sit beside the model's
   (``.../ridge/...``) with the ratio ``gain_top5`` (the paper's "7x").
7. **Time-resolved decoding** (``[decoder.time]``): sliding windows of ``window`` s every ``step`` s over
   the epoch (baseline-corrected with its pre-stimulus part first); ``mode = "per-window"`` trains one
   model per window (``OUT/time/<start_ms>/``), ``mode = "shifting"`` one model on random windows of the
   epoch (``OUT/time/shifting/``) evaluated at every position. Scores per window start in
   ``metrics.json`` (``time/<mode>/<start_ms>ms/top5`` ...), ``time_resolved.json`` and the plot
   ``time_resolved.png``.

``OUT/candidates.npz`` holds the test images' ids and embeddings (then the large set's other images):
:func:`load_run` returns the model with them, for live decoding.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .._core.errors import DataIntegrityError, MetadataMismatchError, MissingFileError, ValidationError
from .._core.logging import logger, progress
from .._core.validation import format_error
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
from ._meeg import _check_field, _space_table, _tiny_fields, generate_items, reconstruct_meeg, train_meeg
from ._run import fit as _fit
from ._targets import _load_or_embed

__all__ = ["DATASETS", "check_recipe", "train", "reconstruct", "train_meg_realtime", "load_run", "MEGRun",
           "SelectionTable", "TimeTable", "RidgeTable", "RetrievalTable", "time_windows"]

DATASETS = ("things-meg",)


# ------------------------------------------------------------------------------------------ tables
@dataclass
class SelectionTable:
    """``[decoder.selection]``: lambda chosen on a validation split of the training concepts."""

    clip_weights: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    val_fraction: float = 0.1
    metric: Literal["top1", "top5"] = "top5"
    refit: bool = True


@dataclass
class TimeTable:
    """``[decoder.time]``: time-resolved decoding on sliding windows."""

    enabled: bool = False
    window: float = 0.25
    step: float = 0.125
    mode: Literal["per-window", "shifting"] = "per-window"
    epochs: int | None = None
    max_steps: int | None = None


@dataclass
class RidgeTable:
    """``[decoder.ridge]``: the linear baseline on the same windows."""

    enabled: bool = True
    alphas: list[float] = field(default_factory=lambda: [1e-1, 1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6])
    decimate: int = 1
    device: str = "cpu"


@dataclass
class RetrievalTable:
    """``[decoder.retrieval]``: which candidate sets the test trials are scored against."""

    large_set: bool = True
    large_set_images: Literal["train", "test-concepts"] = "train"
    topk: list[int] = field(default_factory=lambda: [1, 5])


_TABLES = {"selection": SelectionTable, "time": TimeTable, "ridge": RidgeTable, "retrieval": RetrievalTable}


def _table(decoder: Mapping[str, Any], key: str) -> Any:
    return _TABLES[key](**dict(decoder.get(key) or {}))


def time_windows(times: np.ndarray, window: float, step: float, sfreq: float) -> list[tuple[int, float]]:
    """Start sample and start time of every ``window``-second window every ``step`` seconds within ``times``.

    Returns
    -------
    windows : list of (int, float)
        ``(first sample index, its time in s)``; each window holds ``round(window x sfreq)`` samples.
    """
    n = int(round(window * sfreq))
    hop = max(1, int(round(step * sfreq)))
    if n < 1 or n > len(times):
        raise ValidationError(format_error("decoder.time.window", f"1 to {len(times)} samples "
                                           f"({len(times) / sfreq:g} s at {sfreq:g} Hz)", f"{window} s",
                                           "Use a window shorter than the epoch"))
    return [(s, float(times[s])) for s in range(0, len(times) - n + 1, hop)]


# ------------------------------------------------------------------------------------------ targets
def _concept_of(ids: np.ndarray, concepts: np.ndarray) -> dict[str, str]:
    return {str(i): str(c) for i, c in zip(ids, concepts)}




def _embed(table: Mapping[str, Any], stimuli: Any, ids: np.ndarray, ctx: Any) -> np.ndarray:
    table = dict(table)
    name = str(table.pop("space"))
    weights = table.pop("weights", None) or None
    batch_size = int(table.pop("batch_size", 32))
    cache = _load_or_embed(name, table, weights, stimuli, ids, ctx.cache_root, ctx.latent_device, batch_size,
                           ctx.verbose)
    return np.asarray(cache.load(ids, dtype=ctx.dtype), dtype=np.float32)


# ------------------------------------------------------------------------------------------ model config
def _model_config(ctx: Any, *, n_channels: int, n_times: int, sfreq: float, tmin: float, ch_names: list[str],
                  subjects: list[str], latent_dim: int, baseline_samples: int, clip_weight: float,
                  latent_key: str, check_latent_dim: bool = True) -> Any:
    from ..models.meg_brain_module import MEGBrainModuleConfig

    fields = {k: v for k, v in ctx.decoder.items() if k not in (*_TABLES, "baseline_samples")}
    _check_field(fields, "n_channels", n_channels, "the data's channels")
    _check_field(fields, "sfreq", sfreq, "the data's sampling rate")
    if check_latent_dim:
        _check_field(fields, "latent_dim", latent_dim, "the image space's width")
    else:  # the generation model's width is its own space's
        fields["latent_dim"] = latent_dim
    fields.update(n_times=n_times, tmin=tmin, ch_names=ch_names, subjects=subjects, baseline_samples=baseline_samples,
                  clip_weight=clip_weight, latent_key=latent_key)
    if ctx.base == "tiny":
        tiny = _tiny_fields(MEGBrainModuleConfig)
        tiny.pop("positions", None)
        fields = {**tiny, "layout": "CTF-275", **fields}
    return MEGBrainModuleConfig.from_dict(fields)


def _new_model(cfg: Any, stats: Mapping[str, tuple[np.ndarray, np.ndarray]], seed: int) -> Any:
    from ..models.meg_brain_module import MEGBrainModule
    from ._run import seed_everything

    seed_everything(seed)
    model = MEGBrainModule(cfg)
    model.set_input_scaling(*stats["pooled"])
    for s in cfg.subjects:
        model.set_input_scaling(*stats[s], subject=s)
    return model


# ------------------------------------------------------------------------------------------ scoring
def _retrieval(emb: np.ndarray, cand: np.ndarray, labels: np.ndarray, topk: Sequence[int], key: str,
               metrics: dict[str, float], control: bool = True) -> None:
    n = len(cand)
    ks = [k for k in topk if k < n]
    scores = topk_identification(emb, cand, labels, ks or (1,))
    for k in ks or (1,):
        metrics[f"{key}/top{k}"] = float(scores[k])
    metrics[f"{key}/n_way"] = float(n)
    metrics[f"{key}/chance_top1"] = 1.0 / n
    if control and len(labels) > 1:
        wrong = labels[derangement(len(labels), np.random.default_rng(0))]
        metrics[f"{key}/shuffled_top1"] = float(topk_identification(emb, cand, wrong, (1,))[1])


@dataclass
class _Part:
    """One subject's windows and their rows in the shared embedding table."""

    X: np.ndarray
    rows: np.ndarray
    ids: np.ndarray


def _prepared_flat(model: Any, X: np.ndarray, subject: str | None, decimate: int) -> np.ndarray:
    """The windows as the model sees them before its spatial attention (baseline, scaling, clamp), flattened."""
    import torch

    idx = torch.from_numpy(model.subject_index(subject, len(X)))
    out = []
    with torch.no_grad():
        for a in range(0, len(X), 512):
            x = model.prepare(torch.from_numpy(np.ascontiguousarray(X[a:a + 512], np.float32)), idx[a:a + 512])
            if decimate > 1:
                t = x.shape[-1] // decimate * decimate
                x = x[..., :t].reshape(*x.shape[:2], -1, decimate).mean(-1)
            out.append(x.flatten(1).numpy())
    return np.concatenate(out)


# ------------------------------------------------------------------------------------------ training
def train_meg_realtime(ctx: Any) -> tuple[dict[str, Any], dict[str, float], dict[str, Any]]:
    """Load THINGS-MEG, embed the images, choose lambda on validation, train the cross-subject brain module,
    score it and the ridge baseline on the test images, and (optionally) decode over sliding windows.

    Parameters
    ----------
    ctx : RunContext
        The validated recipe and run settings.

    Returns
    -------
    results : dict of str to TrainResult
    metrics : dict of str to float
    provenance : dict
    """
    from ..models.meg_brain_module import robust_channel_statistics
    from ..train import ArrayBatches, IndexedRows

    root, out, data, latents, verbose = ctx.root, ctx.out, dict(ctx.data), ctx.latents, ctx.verbose
    if str(data.get("mode", "within")) != "within":
        raise ValidationError(format_error("data.mode", "'within' (one cross-subject model with a layer per "
                                           "subject, tested on each subject)", repr(data.get("mode")),
                                           "Drop data.mode; a new subject is decoded with subject=None"))
    selection, tcfg, rcfg, retr = (_table(ctx.decoder, k) for k in ("selection", "time", "ridge", "retrieval"))
    subjects_in = data.get("subjects")
    subjects_in = [subjects_in] if isinstance(subjects_in, (str, int)) else list(subjects_in or [])
    if not subjects_in:
        raise ValidationError(format_error("data.subjects", "at least one subject", subjects_in))
    data["average_test_repetitions"] = False  # single trials kept; averaged here

    # 1. data
    trials: dict[str, tuple[Any, Any]] = {}
    for s in progress(subjects_in, desc="load", unit="subject", verbose=verbose):
        parts = load_things_for_recipe(root, "things-meg", data, s, verbose=verbose)
        trials[parts["train"].subject] = (parts["train"], parts["test"])
    subjects = list(trials)
    tr0 = trials[subjects[0]][0]
    ch_names = list(tr0.ch_names or [])
    if len({tuple(tr.ch_names or []) for tr, _ in trials.values()}) > 1:
        raise ValidationError(format_error("data.subjects", "one channel set for the cross-subject model",
                                           "subjects with different channels",
                                           "Drop the channels some subjects lack (e.g. the bad ones) from all"))
    sfreq, times = float(tr0.sfreq), np.asarray(tr0.times, dtype=np.float64)
    n_times = int(tr0.X.shape[2])
    baseline = int((times < -1e-9).sum())  # the pre-stimulus samples of the window
    given = ctx.decoder.get("baseline_samples")
    if given is not None and int(given) != baseline:
        raise ValidationError(format_error("decoder.baseline_samples", f"{baseline} (the samples before onset in "
                                           f"data.window at {sfreq:g} Hz)", repr(given),
                                           "Drop decoder.baseline_samples (it is read from the window) or fix it"))

    # 2. targets
    img_tbl = _space_table(latents.get("image"), "image")
    if not img_tbl:
        raise ValidationError(format_error("latents.image", "an image space (e.g. 'clip-vit-h-14', 'dinov2-giant')",
                                           "none"))
    ids_all, con_all = [], []
    for tr, te in trials.values():
        ids_all += [tr.stimulus_ids.astype(str), te.stimulus_ids.astype(str)]
        con_all += [tr.metadata["concept"].astype(str), te.metadata["concept"].astype(str)]
    ids_cat, first = np.unique(np.concatenate(ids_all), return_index=True)
    con_cat = np.concatenate(con_all)[first]
    folder = Path(str(data.get("images") or "stimuli")).expanduser()
    folder = folder if folder.is_absolute() else root / folder
    paths = things_image_paths(folder, ids_cat, con_cat)
    feats = _embed(img_tbl, str(folder), paths, ctx)
    gen_key = str(ctx.generate.get("latent_key") or "clip_image_embeds")
    gen_tbl = _space_table(latents.get("generation"), "generation")
    separate_gen = bool(gen_tbl) and gen_tbl["space"] != img_tbl["space"]
    # the key of predict_latents: the generator's for the model whose space the generator takes
    latent_key = "image_embeds" if separate_gen else gen_key

    def rows_of(ids: np.ndarray) -> np.ndarray:
        return np.searchsorted(ids_cat, ids.astype(str))

    # the large set's extra candidates, found before any training (a missing folder fails early)
    test_ids = np.unique(np.concatenate([te.stimulus_ids.astype(str) for _, te in trials.values()]))
    extra_ids, extra = np.zeros(0, str), np.zeros((0, feats.shape[1]), np.float32)
    if retr.large_set and retr.large_set_images == "train":
        extra_ids = np.setdiff1d(ids_cat, test_ids)
        extra = feats[rows_of(extra_ids)]
    elif retr.large_set:
        test_concepts = {str(c) for _, te in trials.values() for c in te.metadata["concept"].astype(str)}
        extra_ids, extra_paths = _concept_images(folder, test_concepts, set(test_ids.tolist()))
        extra = _embed(img_tbl, str(folder), extra_paths, ctx)

    # 3. validation concepts (training concepts only), seeded
    train_concepts = np.unique(np.concatenate([tr.metadata["concept"].astype(str) for tr, _ in trials.values()]))
    rng = np.random.default_rng(int(ctx.config.seed))
    sweep = [float(v) for v in selection.clip_weights] or [float(ctx.decoder.get("clip_weight", 0.75))]
    n_val = int(round(selection.val_fraction * len(train_concepts))) if len(sweep) > 1 else 0
    if len(sweep) > 1:
        n_val = min(max(n_val, 2), len(train_concepts) - 2)
    val_concepts = set(rng.choice(train_concepts, n_val, replace=False).tolist()) if n_val else set()

    def split_parts(val: bool | None) -> dict[str, _Part]:
        """Training windows per subject: all (None), without the validation concepts (False), or only them."""
        outp = {}
        for s, (tr, _) in trials.items():
            if val is None:  # every training window, no copy
                outp[s] = _Part(tr.X, rows_of(tr.stimulus_ids), tr.stimulus_ids.astype(str))
                continue
            is_val = np.isin(tr.metadata["concept"].astype(str), list(val_concepts))
            keep = is_val if val else ~is_val
            outp[s] = _Part(tr.X[keep], rows_of(tr.stimulus_ids[keep]), tr.stimulus_ids[keep].astype(str))
        return outp

    def stats_of(parts: Mapping[str, _Part], n_base: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        st = {s: robust_channel_statistics(p.X, n_base, seed=int(ctx.config.seed)) for s, p in parts.items()}
        pooled = np.concatenate([p.X[:max(1, 2000 // len(parts))] for p in parts.values()])
        st["pooled"] = robust_channel_statistics(pooled, n_base, seed=int(ctx.config.seed))
        return st

    def batches(parts: Mapping[str, _Part], x_of: Any = None, table: np.ndarray | None = None) -> Any:
        """Training batches mixing subjects (a ``subject`` index column); ``x_of(subject, X)`` transforms X."""
        n = sum(len(p.X) for p in parts.values())
        first = next(iter(parts.values())).X
        x = np.empty((n, *first.shape[1:]), dtype=np.float32)
        a = 0
        for s, p in parts.items():
            x[a:a + len(p.X)] = x_of(s, p.X) if x_of else p.X
            a += len(p.X)
        rows = np.concatenate([p.rows for p in parts.values()])
        arrays = {"x": x, "image_embeds": IndexedRows(feats if table is None else table, rows),
                  "subject": np.concatenate([np.full(len(p.X), i, np.int64) for i, p in enumerate(parts.values())])}
        return ArrayBatches(arrays, ctx.config.batch_size, drop_last=True)

    def build(n_t: int, n_base: int, lam: float, gen: np.ndarray | None = None) -> Any:
        return _model_config(ctx, n_channels=len(ch_names), n_times=n_t, sfreq=sfreq, tmin=float(times[0]),
                             ch_names=ch_names, subjects=subjects,
                             latent_dim=int((feats if gen is None else gen).shape[1]), baseline_samples=n_base,
                             clip_weight=lam, latent_key=latent_key if gen is None else gen_key,
                             check_latent_dim=gen is None)

    results: dict[str, Any] = {}
    metrics: dict[str, float] = {}
    topk = [int(k) for k in retr.topk]

    # 3b. lambda on validation
    best = sweep[0]
    if len(sweep) > 1:
        fit_parts, val_parts = split_parts(False), split_parts(True)
        st = stats_of(fit_parts, baseline)
        scores: dict[float, float] = {}
        for lam in sweep:
            name = f"lambda-{lam:g}"
            model = _new_model(build(n_times, baseline, lam), st, int(ctx.config.seed))
            logger.info("MEG real-time: lambda %g on %d validation concepts", lam, len(val_concepts))
            results[f"selection/{name}"] = _fit(model, ctx.config, batches(fit_parts), None, out / "selection" / name,
                                                ctx.resume)
            emb, lab = [], []
            for s, p in val_parts.items():
                emb.append(model.encode(p.X, s))
                lab.append(p.rows)
            val_rows, labels = np.unique(np.concatenate(lab), return_inverse=True)
            k = int(selection.metric[3:])
            scores[lam] = float(topk_identification(np.concatenate(emb), feats[val_rows], labels,
                                                    (min(k, len(val_rows) - 1),))[min(k, len(val_rows) - 1)])
            metrics[f"selection/{name}/val_{selection.metric}"] = scores[lam]
        best = max(sweep, key=lambda v: (scores[v], v))  # ties: the larger lambda
        metrics["selection/lambda"] = best
        metrics["selection/n_val_concepts"] = float(len(val_concepts))

    # 4. the final model
    final_parts = split_parts(None) if (selection.refit or len(sweep) == 1) else split_parts(False)
    stats = stats_of(final_parts, baseline)
    if len(sweep) > 1 and not selection.refit:
        src = out / "selection" / f"lambda-{best:g}"
        for f in ("config.json", "model.safetensors"):
            shutil.copy2(src / f, out / f)
        from ..models.meg_brain_module import MEGBrainModule

        model = MEGBrainModule.from_pretrained(out)
    else:
        model = _new_model(build(n_times, baseline, best), stats, int(ctx.config.seed))
        logger.info("MEG real-time: training the cross-subject model (lambda %g) on %s", best, ", ".join(subjects))
        results["model"] = _fit(model, ctx.config, batches(final_parts), None, out, ctx.resume)
    gen_feats = None
    if separate_gen:  # a second model regresses the generator's space (same lambda, same windows)
        gen_feats = _embed(gen_tbl, str(folder), paths, ctx)
        gen_model = _new_model(build(n_times, baseline, best, gen_feats), stats, int(ctx.config.seed))
        logger.info("MEG real-time: training the generation model on %s", gen_tbl["space"])
        results["generation"] = _fit(gen_model, ctx.config, batches(final_parts, table=gen_feats), None,
                                     out / "generation", ctx.resume)

    # 5. test: averaged and single trial, 200-way (n-way) and the larger set
    cand = np.concatenate([feats[rows_of(test_ids)], extra])
    _save_candidates(out, test_ids, feats[rows_of(test_ids)], extra_ids if retr.large_set else None,
                     extra if retr.large_set else None, str(img_tbl["space"]))
    ridge = _fit_ridge(model, final_parts, feats, rcfg) if rcfg.enabled else None
    for s, (_, te) in trials.items():
        avg = te.average_repeats()
        for kind, tt in (("averaged", avg), ("single", te)):
            labels = np.searchsorted(test_ids, tt.stimulus_ids.astype(str))
            emb = model.encode(tt.X, s)
            _retrieval(emb, cand[:len(test_ids)], labels, topk, f"test/{s}/{kind}", metrics)
            if retr.large_set:
                _retrieval(emb, cand, labels, topk, f"test/{s}/{kind}/large", metrics, control=False)
            if ridge is not None:
                pred = _ridge_predict(ridge, model, tt.X, s, rcfg)
                _retrieval(pred, cand[:len(test_ids)], labels, topk, f"test/{s}/{kind}/ridge", metrics, control=False)
                if retr.large_set:
                    _retrieval(pred, cand, labels, topk, f"test/{s}/{kind}/large/ridge", metrics, control=False)
                k = 5 if f"test/{s}/{kind}/top5" in metrics else 1
                lin = metrics[f"test/{s}/{kind}/ridge/top{k}"]
                metrics[f"test/{s}/{kind}/gain_top{k}"] = metrics[f"test/{s}/{kind}/top{k}"] / lin if lin > 0 else \
                    float("inf")
    for kind in ("averaged", "single"):  # the mean over subjects
        for suffix in ("top1", "top5", "ridge/top1", "ridge/top5", "large/top5"):
            vals = [metrics[f"test/{s}/{kind}/{suffix}"] for s in subjects if f"test/{s}/{kind}/{suffix}" in metrics]
            if vals:
                metrics[f"test/{kind}/{suffix}"] = float(np.mean(vals))

    # 6. time-resolved decoding
    time_prov = None
    if tcfg.enabled:
        time_prov = _time_resolved(ctx, tcfg, trials, times, sfreq, baseline, best, feats, rows_of, test_ids, topk,
                                   build, stats_of, batches, results, metrics)

    prov = {"subjects": subjects, "models": {"model": str(out)},
            "data": {s: {"train": tr.provenance, "test": te.provenance} for s, (tr, te) in trials.items()},
            "n_train": {s: len(tr) for s, (tr, _) in trials.items()},
            "n_test": {s: len(te) for s, (_, te) in trials.items()},
            "window": {"tmin": float(times[0]), "n_times": n_times, "sfreq": sfreq, "baseline_samples": baseline},
            "targets": {"image": {"space": img_tbl["space"], "shape": list(feats.shape[1:]), "folder": str(folder)},
                        "generation": None if gen_feats is None else {
                            "space": gen_tbl["space"], "shape": list(gen_feats.shape[1:]),
                            "model": str(out / "generation")},
                        "cache_root": str(ctx.cache_root)},
            "selection": {"clip_weights": sweep, "chosen": best, "on": "validation split of the training concepts "
                          "(never the test set)", "val_concepts": sorted(val_concepts), "refit": selection.refit,
                          "metric": selection.metric},
            "ridge": asdict(rcfg) if ridge is None else {**asdict(rcfg), "best_alphas": ridge["alphas"]},
            "retrieval": {**asdict(retr), "candidates": {"test": len(test_ids), "large": len(cand)}},
            "scaling": "robust per channel (median / IQR) after the baseline, clamped; inside the model",
            "time_resolved": time_prov}
    return results, metrics, prov


def _concept_images(folder: Path, concepts: set[str], exclude: set[str]) -> tuple[np.ndarray, np.ndarray]:
    """Ids (file stems) and relative paths of the images under ``folder`` whose folder is one of ``concepts``,
    other than the ``exclude`` ids (the test images): the paper's large-set additions."""
    from ..latents._stimuli import IMAGE_SUFFIXES

    found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and p.parent.name in concepts and p.stem not in exclude and p.name not in exclude)
    if not found:
        raise MissingFileError(format_error(
            "decoder.retrieval.large_set_images", "images of the test concepts besides the test images under "
            f"{folder} (THINGS: images_meg/<concept>/ holds the 12 exemplars of every concept)", "none",
            "Point data.images at the full THINGS image set, or use large_set_images = \"train\""))
    return np.array([p.stem for p in found]), np.array([p.relative_to(folder).as_posix() for p in found])


def _save_candidates(out: Path, test_ids: np.ndarray, test_emb: np.ndarray, train_ids: np.ndarray | None,
                     train_emb: np.ndarray | None, space: str) -> None:
    from .._core.files import atomic_path

    arrays: dict[str, Any] = {"test_ids": test_ids.astype(str), "test_embeds": test_emb.astype(np.float32),
                              "space": np.asarray(space)}
    if train_ids is not None and train_emb is not None:
        arrays.update(extra_ids=train_ids.astype(str), extra_embeds=train_emb.astype(np.float32))
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "candidates.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def _fit_ridge(model: Any, parts: Mapping[str, _Part], feats: np.ndarray, rcfg: RidgeTable) -> dict[str, Any]:
    """Ridge from the prepared (flattened, optionally decimated) windows to the targets; alpha by leave-one-out."""
    from ..models.ridge import ridge_fit

    X = np.concatenate([_prepared_flat(model, p.X, s, rcfg.decimate) for s, p in parts.items()])
    Y = feats[np.concatenate([p.rows for p in parts.values()])]
    sol = ridge_fit(X, Y, alphas=[float(a) for a in rcfg.alphas], cv="loo", alpha_per_target=False,
                    device=rcfg.device, dtype="float64" if X.shape[1] < 4096 else "float32")
    return {"solution": sol, "alphas": np.unique(sol.best_alphas.cpu().numpy()).tolist()}


def _ridge_predict(ridge: Mapping[str, Any], model: Any, X: np.ndarray, subject: str, rcfg: RidgeTable) -> np.ndarray:
    from ..models.ridge import ridge_predict

    return np.asarray(ridge_predict(_prepared_flat(model, X, subject, rcfg.decimate), ridge["solution"]).cpu().numpy())


def _time_resolved(ctx: Any, tcfg: TimeTable, trials: Mapping[str, tuple[Any, Any]], times: np.ndarray, sfreq: float,
                   baseline: int, lam: float, feats: np.ndarray, rows_of: Any, test_ids: np.ndarray, topk: list[int],
                   build: Any, stats_of: Any, batches: Any, results: dict[str, Any],
                   metrics: dict[str, float]) -> dict[str, Any]:
    """Retrieval (averaged test, n-way) as a function of the window start; writes the JSON and the plot."""
    out = ctx.out
    wins = time_windows(times, tcfg.window, tcfg.step, sfreq)
    n_w = int(round(tcfg.window * sfreq))

    def base_of(X: np.ndarray) -> np.ndarray:  # per trial and channel: the epoch's pre-stimulus mean
        return X[:, :, :baseline].mean(axis=2, keepdims=True) if baseline else np.zeros(X.shape[:2] + (1,), X.dtype)

    def corrected(X: np.ndarray) -> np.ndarray:  # baseline of the whole epoch, then the windows are cut
        return X - base_of(X)

    bases = {s: base_of(tr.X) for s, (tr, _) in trials.items()}

    def cut(start: int) -> dict[str, _Part]:  # baseline-corrected windows, without copying whole epochs
        return {s: _Part(tr.X[:, :, start:start + n_w] - bases[s], rows_of(tr.stimulus_ids),
                         tr.stimulus_ids.astype(str)) for s, (tr, _) in trials.items()}
    tests = {s: corrected(te.average_repeats().X) for s, (_, te) in trials.items()}
    test_labels = {s: np.searchsorted(test_ids, te.average_repeats().stimulus_ids.astype(str))
                   for s, (_, te) in trials.items()}
    cand = feats[rows_of(test_ids)]
    tbl = dict(ctx.train_table)
    if tcfg.epochs is not None:
        tbl["epochs"] = int(tcfg.epochs)
    if tcfg.max_steps is not None:
        tbl["max_steps"] = int(tcfg.max_steps)
    from ..train import TrainConfig

    tconf = TrainConfig.from_dict(tbl)
    curve: list[dict[str, Any]] = []

    def score(model: Any, start: int, t0: float) -> None:
        entry: dict[str, Any] = {"start_s": t0, "centre_s": t0 + tcfg.window / 2}
        per = []
        for s in trials:
            emb = model.encode(tests[s][:, :, start:start + n_w], s)
            m: dict[str, float] = {}
            _retrieval(emb, cand, test_labels[s], topk, "w", m, control=False)
            per.append(m)
        for k in topk:
            if f"w/top{k}" in per[0]:
                entry[f"top{k}"] = float(np.mean([m[f"w/top{k}"] for m in per]))
                metrics[f"time/{tcfg.mode}/{int(round(t0 * 1000)):+d}ms/top{k}"] = entry[f"top{k}"]
        curve.append(entry)

    if tcfg.mode == "per-window":
        for start, t0 in progress(wins, desc="time windows", unit="window", verbose=ctx.verbose):
            sub = cut(start)
            model = _new_model(build(n_w, 0, lam), stats_of(sub, 0), int(ctx.config.seed))
            name = f"{int(round(t0 * 1000)):+d}ms"
            results[f"window-model/{name}"] = _fit(model, tconf, batches(sub), None, out / "time" / name, ctx.resume)
            score(model, start, t0)
    else:
        # statistics over every window position of the epoch, one model trained on random windows of it
        parts = {s: _Part(tr.X, rows_of(tr.stimulus_ids), tr.stimulus_ids.astype(str)) for s, (tr, _) in trials.items()}
        stats = stats_of({s: _Part(p.X[:2000] - bases[s][:2000], p.rows, p.ids) for s, p in parts.items()}, 0)
        model = _new_model(build(n_w, 0, lam), stats, int(ctx.config.seed))
        src = batches(parts, lambda s, X: X - bases[s])  # one corrected copy, in the batch source
        results["window-model/shifting"] = _fit(model, tconf, src, None, out / "time" / "shifting", ctx.resume)
        for start, t0 in wins:
            score(model, start, t0)
    chance = 1.0 / len(test_ids)
    record = {"mode": tcfg.mode, "window_s": tcfg.window, "step_s": tcfg.step, "clip_weight": lam,
              "n_way": len(test_ids), "chance_top1": chance, "test": "averaged repetitions, mean over subjects",
              "curve": curve}
    from .._core.files import write_json

    write_json(out / "time_resolved.json", record)
    _plot_time_resolved(out / "time_resolved.png", record)
    return {k: v for k, v in record.items() if k != "curve"}


def _plot_time_resolved(path: Path, record: Mapping[str, Any]) -> None:
    """Retrieval top-k against the window centre (the paper's Fig. time-resolved panel), as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .._core.files import atomic_path

    curve = record["curve"]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    x = [c["centre_s"] for c in curve]
    for key in ("top1", "top5"):
        if curve and key in curve[0]:
            ax.plot(x, [100 * c[key] for c in curve], marker="o", label=key)
    ax.axhline(100 * record["chance_top1"], color="grey", ls="--", lw=1, label="chance (top-1)")
    ax.axvline(0.0, color="k", lw=0.8)
    ax.set_xlabel("window centre (s after image onset)")
    ax.set_ylabel(f"retrieval among {record['n_way']} (%)")
    ax.set_title(f"{record['mode']} windows of {record['window_s']:g} s")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------------------ recipe API
def check_recipe(recipe: Mapping[str, Any], problems: Any) -> dict[str, Any]:
    """Check the tables of a MEG real-time recipe (see :mod:`neurodecode.recipes._schema`)."""
    from ..models.meg_brain_module import MEGBrainModuleConfig
    from ..train import TrainConfig
    from ._schema import ATMGenerate, check_recipe_tables

    return check_recipe_tables(recipe, problems, datasets=DATASETS, decoder_config=MEGBrainModuleConfig,
                               generate=ATMGenerate, train_config=TrainConfig,
                               decoder_tables={k: (v, ()) for k, v in _TABLES.items()},
                               latents_extra=("image", "generation"))


def train(recipe: Mapping[str, Any], data_root: Any, out_dir: Any, **kwargs: Any) -> Any:
    """Train a MEG real-time recipe (:func:`~neurodecode.recipes._meeg.train_meeg` with :func:`train_meg_realtime`)."""
    return train_meeg(recipe, data_root, out_dir, train_meg_realtime, **kwargs)


def reconstruct(recipe: Mapping[str, Any], data_root: Any, subject: Any, checkpoint: Any, out_dir: Any,
                **kwargs: Any) -> dict[str, Any]:
    """Images from a MEG real-time run: the mse head's embedding of the averaged test trials -> ``[generate]``.

    ``checkpoint`` is the run folder of ``neurodecode train pipelines/meg_realtime_things.toml`` (one
    cross-subject model in ``RUN/``); every subject of the run by default.
    """
    return reconstruct_meeg(recipe, data_root, subject, checkpoint, out_dir, _reconstruct_meg, outputs="image",
                            **kwargs)


def _generator_settings(gen_tbl: Mapping[str, Any], ctx: Any, embed_dim: int) -> dict[str, Any]:
    from ..generate import GENERATORS

    name = gen_tbl.get("generator")
    if not name or name not in GENERATORS:
        raise ValidationError(format_error("generate.generator", "one of " + ", ".join(map(repr, GENERATORS)),
                                           repr(name), "The MEG real-time recipe draws with \"unclip\" from the "
                                           "regressed pooled CLIP ViT-H-14 embedding"))
    weights = ctx.generator_weights or gen_tbl.get("weights")
    config = gen_tbl.get("config")
    if weights == "tiny" and config is None:
        config = {"embed_dim": int(embed_dim)}
    steps = ctx.steps if ctx.steps is not None else gen_tbl.get("steps")
    return {"name": name, "weights": weights, "config": config, "options": dict(gen_tbl.get("options", {})),
            "steps": None if steps is None else int(steps), "guidance": gen_tbl.get("guidance"),
            "latent_key": str(gen_tbl.get("latent_key", "clip_image_embeds")),
            "batch_size": int(ctx.batch_size or gen_tbl.get("batch_size", 8)),
            "seed": int(ctx.seed if ctx.seed is not None else gen_tbl.get("seed", 0)),
            "dtype": ctx.dtype or gen_tbl.get("dtype", "float32"), "preset": gen_tbl.get("preset"),
            "compile": bool(gen_tbl.get("compile", False)), "preview_vae": bool(gen_tbl.get("preview_vae", False))}


def _reconstruct_meg(ctx: Any, requested: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    from ..generate import get_generator
    from ..models.meg_brain_module import MEGBrainModule

    run, out = ctx.run, ctx.out
    if model_class(run) != "MEGBrainModule":
        raise not_a_run(run, "meg_brain_module", ctx.recipe_name, f"a {model_class(run)} checkpoint" if
                        model_class(run) else "no MEGBrainModule in the folder")
    if (run / "time_resolved.png").is_file():  # the run's decoding-over-time figure travels with its outputs
        from .._core.files import atomic_path

        (out / "figures").mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "figures" / "time_resolved.png", suffix=".png") as tmp:
            tmp.write_bytes((run / "time_resolved.png").read_bytes())
    t0 = time.perf_counter()
    folder = run / "generation" if model_class(run / "generation") == "MEGBrainModule" else run
    model = MEGBrainModule.from_pretrained(folder, device=str(ctx.device))
    ctx.timings["load_decoder_s"] = time.perf_counter() - t0
    subjects = pick_subjects(requested, list(model.config.subjects), run)
    settings = _generator_settings(dict(ctx.recipe["generate"]), ctx, int(model.config.latent_dim))
    if settings["latent_key"] != model.config.latent_key:
        raise ValidationError(format_error("generate.latent_key", f"{model.config.latent_key!r} (what the run's model "
                                           "regresses)", repr(settings["latent_key"]),
                                           "Train with latents.image in the generator's space, or add "
                                           "latents.generation = \"clip-vit-h-14\" (a second model for it)"))
    generator: Any = None
    per_subject: dict[str, Any] = {}
    seeds_prov: dict[str, Any] = {}
    data_prov: dict[str, Any] = {}
    for name in subjects:
        test = load_things_for_recipe(ctx.root, ctx.dataset, ctx.data, name, splits=("test",),
                                      verbose=loader_verbose(ctx.verbose))["test"]
        if len(np.unique(test.stimulus_ids.astype(str))) != len(test):
            test = test.average_repeats()
        if ctx.limit is not None:
            test = test.subset(np.arange(min(ctx.limit, len(test))), note=f"first {ctx.limit} test stimuli")
        if name.rsplit("/", 1)[-1] != test.subject.rsplit("/", 1)[-1]:
            raise MetadataMismatchError(format_error("--subject", f"the data of {name}", test.subject))
        labels = [things_stim_label(s) for s in test.stimulus_ids]
        if len(set(labels)) != len(labels):
            raise DataIntegrityError(format_error("stimulus ids", "one BIDS label per test image", "duplicates"))
        positions = np.arange(ctx.rank, len(test), ctx.world)
        paths = [output_paths(out, test.subject, labels[i], ctx.recipe_name)["image"] for i in positions]
        todo = [k for k, p in enumerate(paths) if not p.is_file()]
        entry = {"n_items": len(test), "n_assigned": len(positions), "n_skipped": len(positions) - len(todo),
                 "n_done": 0}
        per_subject[test.subject] = entry
        data_prov[test.subject] = test.provenance
        if not todo:
            continue
        rows = positions[todo]
        t0 = time.perf_counter()
        latents = model.predict_latents(test.X[rows], name, ch_names=test.ch_names or None, sfreq=test.sfreq)
        ctx.timings["predict_latents_s"] = ctx.timings.get("predict_latents_s", 0.0) + time.perf_counter() - t0
        if generator is None:
            t0 = time.perf_counter()
            generator = get_generator(settings["name"], weights=settings["weights"], device=ctx.device,
                                      dtype=settings["dtype"], preset=settings["preset"], compile=settings["compile"],
                                      preview_vae=settings["preview_vae"], config=settings["config"])
            ctx.timings["load_generator_s"] = time.perf_counter() - t0
        generator.check_latents(latents)
        seeds = [settings["seed"] + int(i) for i in rows]
        seeds_prov[test.subject] = {labels[int(i)]: {"stimulus_id": str(test.stimulus_ids[int(i)]), "seed": s}
                                    for i, s in zip(rows, seeds)}
        keys = [f"{test.subject}/{labels[int(r)]}" for r in rows]
        ctx.timings["generate_s"] = ctx.timings.get("generate_s", 0.0) + generate_items(
            generator, latents, todo, paths, seeds, keys, settings, ctx.log, test.subject, entry, ctx.verbose)
    gen_prov = None if generator is None else {
        **generator.provenance(), **{k: settings[k] for k in ("steps", "guidance", "options", "latent_key",
                                                              "batch_size", "config")}}
    extra = {"decoder": {"checkpoint": str(folder.resolve()), "class": "MEGBrainModule",
                         "sha256": sha_or_none(folder / "model.safetensors"), "head": "mse"},
             "data_provenance": data_prov, "generator": gen_prov,
             "seeds": {"base": settings["seed"], "rule": "seed of item i = base + i (position in the subject's test "
                       "list)", "items": seeds_prov}}
    return per_subject, extra


# ------------------------------------------------------------------------------------------ live decoding API
@dataclass
class MEGRun:
    """A trained MEG real-time run, ready to decode windows (see :func:`load_run`).

    Attributes
    ----------
    model : MEGBrainModule
        In eval mode; takes RAW windows (baseline, scaling and clamp are inside).
    candidate_ids : ndarray of str, shape (n_candidates,)
        Stimulus ids of the candidate images (the test images, then the large set's other images).
    candidate_embeds : ndarray of shape (n_candidates, latent_dim)
        Their embeddings in the run's image space.
    n_test : int
        The first ``n_test`` candidates are the test images.
    space : str
        The image space's name.
    run : Path
    """

    model: Any
    candidate_ids: np.ndarray
    candidate_embeds: np.ndarray
    n_test: int
    space: str
    run: Path

    @property
    def subjects(self) -> list[str]:
        """Subjects with their own subject layer (others decode with ``subject=None``)."""
        return list(self.model.config.subjects)

    @property
    def window(self) -> dict[str, float]:
        """``tmin`` (s, relative to the event), ``n_times`` and ``sfreq`` a window must have."""
        c = self.model.config
        return {"tmin": float(c.tmin), "n_times": int(c.n_times), "sfreq": float(c.sfreq)}

    def decode(self, X: Any, subject: str | None = None, *, head: str = "clip", **kwargs: Any) -> np.ndarray:
        """Embeddings of raw windows.

        Parameters
        ----------
        X : array-like of shape (n_windows, n_channels, n_times)
            Raw windows (MEG in tesla), ``window["tmin"]`` onwards, at the model's rate and channel order.
        subject : str or None
            A subject of the run, or None (unknown: the mean subject layer).
        head : {"clip", "mse"}
            ``"clip"`` for retrieval, ``"mse"`` for the embedding a generator takes.

        Returns
        -------
        emb : ndarray of shape (n_windows, latent_dim)
        """
        return np.asarray(self.model.encode(X, subject, head=head, **kwargs))

    def retrieve(self, X: Any, subject: str | None = None, *, k: int = 5, test_only: bool = True,
                 **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar candidate images (cosine) of each window.

        Returns
        -------
        ids : ndarray of str, shape (n_windows, k)
        scores : ndarray of shape (n_windows, k)
        """
        emb = self.decode(X, subject, **kwargs)
        cand = self.candidate_embeds[:self.n_test] if test_only else self.candidate_embeds
        e = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        c = cand / np.maximum(np.linalg.norm(cand, axis=1, keepdims=True), 1e-12)
        sim = e @ c.T
        k = min(int(k), sim.shape[1])
        top = np.argsort(-sim, axis=1, kind="stable")[:, :k]
        return self.candidate_ids[top], np.take_along_axis(sim, top, axis=1)


def load_run(run: Any, *, device: str = "cpu") -> MEGRun:
    """Load a trained MEG real-time run folder for decoding (offline or live).

    Parameters
    ----------
    run : path-like
        The ``--out`` folder of ``neurodecode train pipelines/meg_realtime_things.toml``.
    device : str

    Returns
    -------
    run : MEGRun
        ``run.decode(X, subject)`` -> (n_windows, latent_dim); ``run.retrieve(X, subject, k=5)``.
    """
    from ..models.meg_brain_module import MEGBrainModule

    folder = Path(run)
    if model_class(folder) != "MEGBrainModule":
        raise not_a_run(folder, "meg_brain_module", "meg_realtime_things", "no MEGBrainModule in the folder")
    cand_file = folder / "candidates.npz"
    if not cand_file.is_file():
        raise MissingFileError(format_error("run", "a run folder with candidates.npz (written by training)",
                                            f"nothing at {cand_file}", "Retrain with this version of neurodecode"))
    model = MEGBrainModule.from_pretrained(folder, device=device)
    with np.load(cand_file, allow_pickle=False) as z:
        ids = [z["test_ids"].astype(str)]
        emb = [z["test_embeds"]]
        if "extra_ids" in z.files:
            ids.append(z["extra_ids"].astype(str))
            emb.append(z["extra_embeds"])
        space = str(z["space"])
    return MEGRun(model=model, candidate_ids=np.concatenate(ids), candidate_embeds=np.concatenate(emb).astype(np.float32),
                  n_test=len(ids[0]), space=space, run=folder)

