"""The brain-encoder runner (``pipelines/brain_encoder_nsd.toml``): fit the transformer brain encoder (image ->
voxels) and its ridge baseline on NSD, and report noise-ceiling-normalised accuracy per ROI.

Per subject of ``[data]``:

1. load the NSD trials (:func:`~neurodecode.recipes._data.load_nsd_for_recipe`; the training repeats
   averaged when ``[data] average_train_repeats``, the test repeats averaged by default);
2. embed every stimulus once into ``[latents.image_tokens]`` (``dinov2-base-q-tokens``: the reference's
   DINOv2 query features, 256 x 768), through the feature cache;
3. ROI queries: one group per label of the atlas ``[decoder] roi_atlas`` (``"streams"`` by default; per
   hemisphere with ``hemispheres = true`` when NSD's ``lh.``/``rh.`` files exist), plus the unlabelled voxels
   (:func:`neurodecode.data.nsd_voxel_labels`); ``roi_atlas = ""`` or a tree without atlases: one group;
4. train :class:`~neurodecode.models.brain_encoder.TransformerBrainEncoder` with the shared trainer (MSE on
   the voxels standardised with the training statistics; AdamW, ``[train] lr_drop``: the reference's StepLR,
   x ``lr_drop_gamma`` every ``lr_drop`` epochs); fit :class:`~neurodecode.models.brain_encoder.
   RidgeBrainEncoder` on the same features (``[decoder] baseline = "ridge"``);
5. score both on the test images: per-voxel r, r^2 and r^2 / NC (NC from NSD's ``ncsnr``, for the number of
   trials averaged) with :func:`neurodecode.metrics.encoding_accuracy`, per ROI (mean and median), a shuffled
   control (each test prediction against another image's response), in ``metrics.json``:
   ``test/<subject>/<model>/<roi>/{r,r2,nc_r2}_{mean,median}`` and ``.../all/shuffled_r_mean``;
6. save ``OUT/sub-XX/encoder/`` and ``OUT/sub-XX/ridge/`` (``save_pretrained``; the encoder folder also holds
   ``space.json``, what :func:`load_encoder` and ``neurodecode simulate nsd --encoder`` read), the
   per-voxel scores (``OUT/sub-XX/voxel_scores.npz``) and voxel maps of r^2 / NC (or r) plotted with nilearn
   (``OUT/sub-XX/nc_r2_<model>.png``).

``reconstruct`` identifies each test response's image among the subject's training images with the encoder
(no generator): see :func:`reconstruct`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import MissingFileError, ValidationError
from .._core.logging import logger
from .._core.validation import format_error
from ._data import load_nsd_for_recipe, nsd_subject_ids
from ._targets import compute_targets

__all__ = ["DATASETS", "check_recipe", "train", "reconstruct", "StepLRTrainer", "load_encoder", "train_encoder",
           "EncoderTrain", "brain_correlation_of_reconstructions", "brain_correlation_report"]

DATASETS = ("nsd",)
_LATENT_KEYS = ("image_tokens",)
_FROM_DATA = ("n_voxels", "n_groups", "roi_names", "subject", "space", "feature_dim", "grid")
_DECODER_EXTRA = ("roi_atlas", "hemispheres", "baseline", "ridge_pool", "ridge_alphas", "plot")


@dataclass
class EncoderTrain:
    """``[train]`` keys of the encoder runner (the rest are :class:`~neurodecode.train.TrainConfig` fields)."""

    lr_drop: int | None = 4
    lr_drop_gamma: float = 0.1
    validate: bool = False


@dataclass
class EncoderGenerate:
    """The encoder generates nothing: ``[generate]`` stays empty."""


def check_recipe(recipe: Mapping[str, Any], problems: Any) -> dict[str, Any]:
    """Check the tables of a brain-encoder recipe (see :mod:`neurodecode.recipes._schema`)."""
    from ..models.brain_encoder import BrainEncoderConfig
    from ..train import TrainConfig
    from ._schema import check_recipe_tables

    out = check_recipe_tables(recipe, problems, datasets=DATASETS, decoder_config=BrainEncoderConfig,
                              generate=EncoderGenerate, train_config=TrainConfig, train_table=EncoderTrain,
                              decoder_extra=_DECODER_EXTRA, latent_tables=_LATENT_KEYS)
    for key in _FROM_DATA:
        if key in out["decoder"]:
            problems.add(f"decoder.{key}", "comes from the data and the latent space; remove it from the recipe")
    if out["decoder"].get("baseline", "ridge") not in ("ridge", "none"):
        problems.add("decoder.baseline", f"expected 'ridge' or 'none', got {out['decoder']['baseline']!r}")
    if not str(dict(out.get("latents", {}).get("image_tokens", {})).get("space", "")):
        problems.add("latents.image_tokens.space", "a token space, e.g. 'dinov2-base-q-tokens'")
    return out


def reconstruct(recipe: Mapping[str, Any], data_root: Any, subject: Any, checkpoint: Any, out_dir: Any, *,
                device: Any = "cpu", batch_size: int | None = None, limit: int | None = None, verbose: Any = None,
                **_: Any) -> dict[str, Any]:
    """Identify each test response's image among the subject's *training* images with the encoder (no generator).

    An encoder reconstructs by identification (Kay et al. 2008; Naselaris et al. 2009 with an image prior): every
    training image of the subject (the prior; never a test image) is encoded into predicted voxels, and each test
    response gets the candidate whose prediction correlates best with it across voxels. The chosen image is
    written as the item's ``_recon.png`` (a BIDS-style derivative like every ``reconstruct``); the provenance
    names each chosen NSD id and its correlation.

    Parameters
    ----------
    recipe : dict
        The validated brain-encoder recipe.
    data_root : path-like
        The NSD root.
    subject : int or str
        The subject (one of the run).
    checkpoint : path-like
        The run folder (or ``RUN/sub-XX`` / ``RUN/sub-XX/encoder``).
    out_dir : path-like
        Derivative root.
    device : str
        Where the latent space runs.
    batch_size : int or None
        Candidates encoded per forward pass.
    limit : int or None
        Only the first ``limit`` test stimuli.
    verbose : bool or str or None

    Returns
    -------
    summary : dict
        ``n_items``, ``n_done``, ``n_skipped``, ``rank``, ``world_size``, ``out_dir``, ``timings``.
    """
    import time

    from .._core.versions import package_versions
    from ..data import load_nsd_stimuli
    from ..latents import get_space
    from ..models.brain_encoder import load_brain_encoder
    from ._derivative import ProvenanceLog, _png, describe_derivative, distributed_rank, output_paths

    t_start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recipe_name = str(recipe.get("_source", {}).get("name", "recipe"))
    rank, world = distributed_rank()
    s = nsd_subject_ids(subject)[0]
    enc, space_name, weights = load_brain_encoder(checkpoint, s)
    trials = load_nsd_for_recipe(Path(data_root), recipe["data"], s, verbose=verbose)
    test, train_ids = trials.test, np.unique(trials.train.stimulus_ids)
    if len(np.unique(test.stimulus_ids)) != len(test):
        test = test.average_repeats()
    if limit is not None:
        test = test.subset(np.arange(min(int(limit), len(test))), note=f"first {limit} test stimuli")
    if enc.config.n_voxels != test.n_features:
        raise ValidationError(format_error("checkpoint", f"an encoder of {test.n_features} voxels (this subject's)",
                                           f"{enc.config.n_voxels} voxels", "Pass the run of this subject and [data]"))
    positions = np.arange(rank, len(test), world)
    paths = [output_paths(out, test.subject, test.stimulus_ids[i], recipe_name) for i in positions]
    todo = [k for k, p in enumerate(paths) if not p["image"].is_file()]
    summary: dict[str, Any] = {"n_items": len(test), "n_assigned": len(positions),
                               "n_skipped": len(positions) - len(todo), "n_done": 0, "rank": rank,
                               "world_size": world, "out_dir": str(out), "subject": test.subject,
                               "recipe": recipe_name}
    chosen: dict[str, Any] = {}
    if todo:
        space = get_space(space_name, weights=weights, device=device, verbose=verbose)
        candidates = load_nsd_stimuli(Path(data_root), train_ids)
        pred = enc.predict(space.encode_images(candidates, batch_size=batch_size))  # (n_candidates, n_voxels)
        measured = test.X[positions[todo]]
        scores = _row_z(measured) @ _row_z(pred).T / pred.shape[1]  # Pearson r across voxels, every pair
        best = np.nanargmax(np.nan_to_num(scores, nan=-np.inf), axis=1)
        for j, k in enumerate(todo):
            _png(paths[k]["image"], candidates[best[j]])
            label = paths[k]["image"].name.split("_stim-")[1].split("_")[0]
            chosen[label] = {"nsd_id": int(train_ids[best[j]]), "r": float(scores[j, best[j]])}
        summary["n_done"] = len(todo)
    if rank == 0:
        describe_derivative(out, recipe_name, data_root)
    log = ProvenanceLog(out, rank, world, {
        "recipe": dict(recipe), "decoder": {"checkpoint": str(Path(checkpoint).resolve()), "class": type(enc).__name__},
        "generator": {"generator": "encoder-identification", "space": space_name, "prior": "the subject's training "
                      "images", "n_candidates": int(len(train_ids)), "chosen_nsd_ids": [v["nsd_id"]
                                                                                         for v in chosen.values()]},
        "data": {"root": str(Path(data_root).resolve()), "provenance": test.provenance},
        "versions": package_versions(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
    log.add_items(chosen, n_done=summary["n_done"])
    summary["timings"] = {"total_s": time.perf_counter() - t_start}
    log.finish(summary=summary)
    return summary


def brain_correlation_of_reconstructions(recons: Any, encoder_run: Any, data_root: Any, subject: Any, *,
                                         data: Mapping[str, Any] | None = None, protocol: str = "mindeye2",
                                         model: str = "encoder", device: Any = "cpu", seed: int = 0,
                                         verbose: Any = None, n_boot: int = 1000) -> dict[str, Any]:
    """MindEye2's brain correlation of a ``reconstruct`` derivative, with a trained brain encoder as GNet.

    Parameters
    ----------
    recons : path-like
        A reconstruct derivative (``sub-XX/recon/*_stim-<nsd id>_*_recon.png``) of any NSD decoder.
    encoder_run : path-like
        A brain-encoder run of the same subject (its ROI groups are the ROIs scored).
    data_root : path-like
        The NSD root.
    subject : int or str
    data : mapping or None
        A validated ``[data]`` table (``load_nsd`` options); default: the encoder run's own (``recipe.json``),
        so the measured responses are read as the encoder was trained on them.
    protocol : {"mindeye2", "per-voxel"}
        See :func:`neurodecode.metrics.brain_correlation`.
    model : {"encoder", "ridge"}
    device : str
    seed : int
        Seed of the shuffled control and of the bootstrap.
    verbose : bool or str or None
    n_boot : int
        Bootstrap resamples of each ROI's 95 % CI (over images).

    Returns
    -------
    result : dict
        :func:`~neurodecode.metrics.brain_correlation`'s result (per ROI ``brain_corr``, ``ci``, ``shuffled``
        and ``seen``, the encoder's ceiling on the seen images) plus ``subject``, ``n_items``, ``item_ids``
        (the NSD ids scored, in the order of ``per_item``) and ``encoder``.
    """
    from ..data import load_nsd_stimuli
    from ..latents import get_space
    from ..metrics import brain_correlation
    from ..metrics._sources import find_images, item_key
    from ..models.brain_encoder import load_brain_encoder

    s = nsd_subject_ids(subject)[0]
    enc, space_name, weights = load_brain_encoder(encoder_run, s, model=model)
    if data is None:  # the run's own reading of the data (its recipe.json, up to two folders above the model)
        import json

        here = Path(encoder_run)
        found = next((p / "recipe.json" for p in (here, here.parent, here.parent.parent)
                      if (p / "recipe.json").is_file()), None)
        if found is None:
            raise MissingFileError(format_error("data", "the [data] table the encoder was trained with",
                                                f"no recipe.json in or above {here}",
                                                "Pass data= (a recipe's [data] table)"))
        data = json.loads(found.read_text(encoding="utf-8"))["data"]
    test = load_nsd_for_recipe(Path(data_root), data, s, verbose=verbose).test
    if len(np.unique(test.stimulus_ids)) != len(test):
        test = test.average_repeats()
    files = [p for p in find_images(recons) if f"sub-{s.split('subj')[-1]}" in p.name or "sub-" not in p.name]
    ids = np.array([int(item_key(p)) for p in files])
    rows = {int(i): k for k, i in enumerate(test.stimulus_ids)}
    keep = [k for k, i in enumerate(ids) if int(i) in rows]
    if len(keep) < 2:
        raise ValidationError(format_error("recons", f"at least 2 reconstructions of {s}'s test images",
                                           f"{len(keep)} in {recons}", "Pass the derivative of this subject"))
    from PIL import Image

    recon_imgs = [np.asarray(Image.open(files[k]).convert("RGB")) for k in keep]
    measured = test.X[[rows[int(ids[k])] for k in keep]]
    seen = load_nsd_stimuli(Path(data_root), ids[keep])
    space = get_space(space_name, weights=weights, device=device, verbose=verbose)

    def encode(images: Any) -> np.ndarray:
        return np.asarray(enc.predict(space.encode_images(images)))

    roi_model = enc
    if not hasattr(enc, "membership") and model != "encoder":  # the ridge baseline: the run's ROI groups
        try:
            roi_model = load_brain_encoder(encoder_run, s, model="encoder")[0]
        except MissingFileError:
            roi_model = enc
    mem = roi_model.membership.numpy().astype(bool) if hasattr(roi_model, "membership") else None
    names = list(getattr(roi_model.config, "roi_names", []))
    rois = {n: m for n, m in zip(names, mem)} if mem is not None and len(names) > 1 else None
    res = brain_correlation(recon_imgs, measured, encode, rois=rois, protocol=protocol, seen=seen, seed=seed,
                            n_boot=n_boot)
    return {**res, "subject": s, "n_items": len(keep), "item_ids": [int(i) for i in ids[keep]],
            "encoder": str(encoder_run), "space": space_name}


def brain_correlation_report(recons: Any, encoder_run: Any, data_root: Any = None, subjects: Any = None, *,
                             model: str = "encoder", protocol: str = "mindeye2", n_boot: int = 1000, seed: int = 0,
                             device: Any = "cpu", verbose: Any = None) -> dict[str, Any]:
    """:func:`brain_correlation_of_reconstructions` for every subject of a derivative, pooled per ROI with CIs
    (``neurodecode evaluate --brain-correlation``).

    Parameters
    ----------
    recons : path-like
        A reconstruct derivative of NSD test images.
    encoder_run : path-like
        A brain-encoder run (``pipelines/brain_encoder_nsd.toml``) holding the subjects' encoders.
    data_root : path-like or None
        The NSD root (default: the encoder run's ``provenance.json`` ``data_root``).
    subjects : int, str, list of them, or None
        Default: every ``sub-XX`` of ``recons`` that the encoder run has.
    model, protocol, n_boot, seed, device, verbose
        As :func:`brain_correlation_of_reconstructions`.

    Returns
    -------
    result : dict
        ``subjects`` (each subject's result), ``rois`` (pooled over subjects: per ROI the mean over every
        scored image, its bootstrap CI over images, the shuffled control and the seen-image ceiling, both
        weighted by images), ``protocol`` (its name and description), ``encoder``, ``model``, ``data_root``,
        ``n_items``.
    """
    import json

    from ..metrics._stats import bootstrap_ci

    run = Path(encoder_run)
    if data_root is None:
        prov = run / "provenance.json"
        data_root = json.loads(prov.read_text(encoding="utf-8")).get("data_root") if prov.is_file() else None
    if data_root is None or not Path(data_root).exists():
        raise MissingFileError(format_error("--data", "the NSD root of the test responses", str(data_root),
                                            "Pass --data NSD_ROOT (the encoder run records none that exists)"))
    if subjects is None or (not isinstance(subjects, (str, int)) and not list(subjects)):
        labels = sorted({p.name for p in Path(recons).glob("sub-*") if p.is_dir()})
        subjects = [lab[4:] for lab in labels if (run / lab).is_dir()]
        if not subjects:
            raise ValidationError(format_error("--brain-correlation", "an encoder run with a subject of the "
                                               "reconstructions", f"{run} for {', '.join(labels) or 'no sub-XX'}",
                                               "Train the encoder for these subjects, or pass --subject"))
    chosen = [subjects] if isinstance(subjects, (str, int)) else list(subjects)
    per = {}
    for s in chosen:
        res = brain_correlation_of_reconstructions(recons, run, data_root, s, protocol=protocol, model=model,
                                                   device=device, seed=seed, verbose=verbose, n_boot=n_boot)
        per[res["subject"]] = res
    key = "per_item" if protocol == "mindeye2" else "per_voxel"
    shared = [r for r in next(iter(per.values()))["rois"] if all(r in p["rois"] for p in per.values())]
    pooled: dict[str, Any] = {}
    for roi in shared:
        vals = np.concatenate([np.asarray(p[key][roi], np.float64) for p in per.values()])
        w = np.array([len(p[key][roi]) for p in per.values()], np.float64)
        ok = vals[np.isfinite(vals)]
        entry: dict[str, Any] = {"value": float(ok.mean()) if len(ok) else float("nan"), "chance": 0.0,
                                 "n": int(len(ok)), "n_voxels": {s: p["rois"][roi]["n_voxels"] for s, p in per.items()}}
        entry["ci"] = [float(v) for v in bootstrap_ci(vals, int(n_boot), seed)] if n_boot and len(ok) > 1 else None
        for k in ("shuffled", "seen"):
            got = [p["rois"][roi].get(k) for p in per.values()]
            entry[k] = None if any(g is None for g in got) else float(np.average(got, weights=w))
        pooled[roi] = entry
    description = ("MindEye2's brain correlation (Scotti et al. 2024, GNet there; here the trained transformer brain "
                   f"encoder '{model}' of {run}): each reconstruction is encoded into the subject's voxels and "
                   + ("correlated across each ROI's voxels with the measured test response (repeats averaged), mean "
                      "over images; 95 % CI: percentile bootstrap over images" if protocol == "mindeye2" else
                      "each voxel correlated across images, mean over the ROI's voxels; CI over voxels")
                   + "; shuffled: each reconstruction against another image's response; seen: the encoder's own "
                     "prediction for the seen images (its ceiling); chance 0")
    return {"protocol": {"name": protocol, "description": description}, "rois": pooled, "subjects": per,
            "encoder": str(run), "model": model, "data_root": str(data_root),
            "n_items": int(sum(p["n_items"] for p in per.values()))}


def _row_z(a: np.ndarray) -> np.ndarray:
    """Each row centred and scaled to unit variance (ddof 0; a constant row stays 0)."""
    x = np.asarray(a, dtype=np.float64)
    x = x - x.mean(1, keepdims=True)
    sd = x.std(1, keepdims=True)
    return np.asarray(x / np.where(sd > 0, sd, 1.0))


def _folder(subject: str) -> str:
    name = re.sub(r"^(sub-|subj)", "", subject.split("/")[-1])
    return f"sub-{int(name):02d}" if name.isdigit() else f"sub-{re.sub(r'[^A-Za-z0-9]', '', name)}"


# ------------------------------------------------------------------------------------------ training
def _trainer_class() -> type:
    from ..train import Trainer

    class _StepLR(Trainer):
        """The shared trainer with the reference's StepLR: lr x ``gamma`` every ``lr_drop`` epochs."""

        def __init__(self, *args: Any, lr_drop: int | None = None, gamma: float = 0.1, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.lr_drop, self.gamma, self._spe = lr_drop, float(gamma), 1

        def fit(self, train: Any, val: Any = None, *, resume: bool = True) -> Any:
            self._spe = int(train.steps_per_epoch)
            return super().fit(train, val, resume=resume)

        def _build_scheduler(self, config: Any, optimizer: Any, lr: float, total: int) -> Any:  # type: ignore[override]
            import torch

            if not self.lr_drop:
                return Trainer._build_scheduler(config, optimizer, lr, total)
            return torch.optim.lr_scheduler.StepLR(optimizer, step_size=int(self.lr_drop) * self._spe,
                                                   gamma=self.gamma)

    return _StepLR


#: The trainer subclass with StepLR (built lazily: torch and accelerate are imported on first use).
StepLRTrainer: Any = None


def train_encoder(model: Any, features: Any, Y: np.ndarray, config: Any, out: Path | None, *, lr_drop: int | None = 4,
                  gamma: float = 0.1, resume: bool = True, val: tuple[Any, np.ndarray] | None = None) -> Any:
    """Train a :class:`~neurodecode.models.brain_encoder.TransformerBrainEncoder` with the shared trainer.

    Parameters
    ----------
    model : TransformerBrainEncoder
    features : ndarray or IndexedRows, (n_samples, n_tokens, feature_dim)
    Y : ndarray of shape (n_samples, n_voxels)
        Responses (standardised inside the model with their mean and std, stored with it).
    config : TrainConfig
        Epochs, batch size, lr, weight decay, gradient clipping, seed, device...
    out : Path or None
        Checkpoints folder (None: no checkpoints).
    lr_drop, gamma : int or None, float
        StepLR every ``lr_drop`` epochs (None: ``config.scheduler``).
    resume : bool
    val : (features, Y) or None
        Validation data (loss after every epoch).

    Returns
    -------
    result : TrainResult
    """
    import shutil

    import torch

    from ..train import ArrayBatches

    global StepLRTrainer
    if StepLRTrainer is None:
        StepLRTrainer = _trainer_class()
    model.set_target_stats(Y)
    n = len(Y)
    batches = ArrayBatches({"x": features, "y": np.asarray(Y, dtype=np.float32)},
                           batch_size=min(int(config.batch_size), n), shuffle=True)
    val_batches = None if val is None else ArrayBatches({"x": val[0], "y": np.asarray(val[1], dtype=np.float32)},
                                                       batch_size=min(int(config.batch_size), len(val[1])),
                                                       shuffle=False)
    if out is not None:
        if not resume and (out / "checkpoints").exists():
            shutil.rmtree(out / "checkpoints")
        out.mkdir(parents=True, exist_ok=True)
    result = StepLRTrainer(model, config, out_dir=out, lr_drop=lr_drop, gamma=gamma).fit(batches, val_batches,
                                                                                       resume=resume)
    model.to("cpu").eval()
    with torch.no_grad():
        model.fitted.fill_(True)
    return result


# ------------------------------------------------------------------------------------------ loading
def load_encoder(run: str | os.PathLike[str], subject: Any = None, *, model: str = "encoder") -> tuple[Any, str, Any]:
    """A trained encoder of a run (see :func:`neurodecode.models.brain_encoder.load_brain_encoder`)."""
    from ..models.brain_encoder import load_brain_encoder

    return load_brain_encoder(run, subject, model=model)


# ------------------------------------------------------------------------------------------ ROIs, ceilings, maps
def _roi_groups(root: Path, trials: Any, atlas: str, hemispheres: bool) -> tuple[np.ndarray, list[str], str]:
    """ROI groups of the subject's columns, from NSD's atlas when the tree has it (else one group)."""
    from ..models.brain_encoder import roi_groups

    n = trials.n_features
    if atlas:
        try:
            from ..data import nsd_voxel_labels

            labels = nsd_voxel_labels(root, trials, atlas)
        except (ImportError, MissingFileError, OSError) as exc:
            logger.warning("brain encoder: no %r atlas for %s (%s); one query group for every voxel", atlas,
                           trials.subject, type(exc).__name__)
        else:
            names = np.where(labels.values > 0, labels.names.astype(str), "")
            hemi = labels.hemisphere if hemispheres else None
            if hemi is not None and (hemi == "").any():
                hemi = np.where(hemi == "", "lh", hemi)  # a voxel in neither file: keep it with the left
            mem, groups = roi_groups(names, hemisphere=hemi)
            return mem, groups, f"{atlas}{' per hemisphere' if hemi is not None else ''}"
    return np.ones((1, n), dtype=bool), ["nsdgeneral"], "one group"


def _noise_ceiling(root: Path, trials: Any, test: Any) -> np.ndarray | None:
    """Each test column's noise ceiling (fraction) for the number of trials averaged, or None without ncsnr."""
    from ..metrics import noise_ceiling_from_ncsnr

    try:
        from ..data import read_nsd_ncsnr

        ncsnr = read_nsd_ncsnr(root, trials)
    except (ImportError, MissingFileError, OSError) as exc:
        logger.warning("brain encoder: no ncsnr for %s (%s); r^2 is not normalised", trials.subject,
                       type(exc).__name__)
        return None
    reps = np.asarray(test.metadata.get("n_repeats", np.ones(len(test))), dtype=np.float64)
    # NSD data manual: unequal repeats -> 1/n is the mean of 1/n_i over the images
    n_eff = 1.0 / float(np.mean(1.0 / reps))
    return noise_ceiling_from_ncsnr(ncsnr, n_eff)


def plot_voxel_map(values: np.ndarray, root: Path, subject: str, png: Path, *, title: str) -> Path | None:
    """Plot per-voxel values in the subject's nsdgeneral volume with nilearn (slices along z) to ``png``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import nibabel as nib
        from nilearn import plotting

        from ..data._nsd_files import read_nsd_mask
    except ImportError as exc:  # pragma: no cover - nilearn and matplotlib are dependencies
        logger.warning("voxel map not plotted: %s", exc)
        return None
    mask = read_nsd_mask(root, subject)
    if mask.n_voxels != len(values):
        logger.info("voxel map of %s skipped: %d values for %d nsdgeneral voxels (ROI selection)", subject,
                    len(values), mask.n_voxels)
        return None
    vol = np.zeros(int(np.prod(mask.shape)), dtype=np.float32)
    vol[mask.flat] = np.nan_to_num(np.asarray(values, dtype=np.float32))
    img = nib.Nifti1Image(vol.reshape(mask.shape), mask.affine)
    png.parent.mkdir(parents=True, exist_ok=True)
    display = plotting.plot_stat_map(img, bg_img=None, display_mode="z", cut_coords=5, colorbar=True, title=title,
                                     output_file=str(png), black_bg=True)
    if display is not None:  # pragma: no cover - output_file closes it
        display.close()
    return png


# ------------------------------------------------------------------------------------------ the runner
def _scores(prefix: str, pred: np.ndarray, measured: np.ndarray, nc: np.ndarray | None,
            rois: dict[str, np.ndarray], seed: int) -> tuple[dict[str, float], dict[str, Any]]:
    from ..metrics import derangement, encoding_accuracy

    res = encoding_accuracy(pred, measured, noise_ceiling=nc, rois=rois)
    metrics: dict[str, float] = {}
    for roi, row in res["rois"].items():
        metrics[f"{prefix}/{roi}/n_voxels"] = row["n_voxels"]
        for k in ("r", "r2", "nc_r2"):
            if k in row:
                metrics[f"{prefix}/{roi}/{k}_mean"] = row[k]["mean"]
                metrics[f"{prefix}/{roi}/{k}_median"] = row[k]["median"]
    perm = derangement(len(pred), np.random.default_rng(seed))
    shuffled = encoding_accuracy(pred[perm], measured)
    metrics[f"{prefix}/all/shuffled_r_mean"] = shuffled["rois"]["all"]["r"]["mean"]
    return metrics, res


def train(recipe: Mapping[str, Any], data_root: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
          max_steps: int | None = None, resume: bool = True, device: str = "auto", verbose: Any = None) -> Any:
    """Fit the brain encoder (and its ridge baseline) per subject of a validated recipe; score the test images.

    Parameters
    ----------
    recipe : dict
        A validated recipe whose ``[decoder] name`` is ``"brain_encoder"``.
    data_root : path-like
        The NSD root.
    out_dir : path-like
        Run folder (see the module docstring).
    max_steps : int or None
        Stop the encoder's training after this many optimizer steps.
    resume : bool
        Continue from the checkpoints in ``out_dir``.
    device : str
    verbose : bool or str or None

    Returns
    -------
    result : TrainResult
        ``metrics``: the test scores (module docstring) and the encoder's last training loss.
    """
    import copy

    from .._core.files import write_json
    from .._core.recipes import save_resolved_recipe
    from ..models.brain_encoder import BrainEncoderConfig, RidgeBrainEncoder, RidgeEncoderConfig
    from ..models.brain_encoder import TransformerBrainEncoder as Encoder
    from ..train import IndexedRows, TrainResult
    from ._run import make_context, seed_everything, write_run_outputs

    clean = copy.deepcopy(dict(recipe))
    train_tbl = dict(clean.get("train", {}))
    lr_drop = train_tbl.pop("lr_drop", 4)
    gamma = float(train_tbl.pop("lr_drop_gamma", 0.1))
    clean["train"] = train_tbl
    ctx = make_context(clean, data_root, out_dir, max_steps=max_steps, resume=resume, device=device,
                       verbose=verbose)
    seed_everything(ctx.config.seed)
    decoder = dict(ctx.decoder)
    atlas = str(decoder.pop("roi_atlas", "streams") or "")
    hemispheres = bool(decoder.pop("hemispheres", True))
    baseline = str(decoder.pop("baseline", "ridge"))
    ridge_pool = str(decoder.pop("ridge_pool", "mean"))
    ridge_alphas = decoder.pop("ridge_alphas", None)
    plot = bool(decoder.pop("plot", True))
    table = dict(ctx.latents["image_tokens"])
    space_name, space_weights = str(table["space"]), table.get("weights") or None

    subjects = nsd_subject_ids(ctx.data["subjects"])
    trials = {s: load_nsd_for_recipe(ctx.root, ctx.data, s, verbose=verbose) for s in subjects}
    ids = np.concatenate([t.stimulus_ids for t in trials.values()])
    targets = compute_targets(ctx.root, {"image_tokens": table}, ids, cache_root=ctx.cache_root,
                              device=ctx.latent_device, dtype=ctx.dtype, verbose=verbose)
    feat_ids, feats = targets["image_tokens"]
    if feats.ndim != 3:
        raise ValidationError(format_error("latents.image_tokens.space", "a token space (n_tokens x width)",
                                           f"{space_name!r} of shape {feats.shape[1:]}",
                                           "Use 'dinov2-base-q-tokens' or 'dinov2-base-tokens'"))
    side = int(round(np.sqrt(feats.shape[1])))
    if side * side != feats.shape[1]:
        raise ValidationError(format_error("latents.image_tokens.space", "a square grid of patch tokens (no CLS)",
                                           f"{feats.shape[1]} tokens", "Use a space whose tokens exclude CLS"))
    ctx.out.mkdir(parents=True, exist_ok=True)
    save_resolved_recipe(ctx.recipe, ctx.out)

    def rows(t: Any) -> Any:
        return IndexedRows(feats, np.searchsorted(feat_ids, t.stimulus_ids))

    metrics: dict[str, Any] = {}
    prov: dict[str, Any] = {"subjects": subjects, "models": {}, "rois": {}, "space": space_name,
                            "data": {s: t.provenance for s, t in trials.items()}}
    last = None
    for k, (s, t) in enumerate(trials.items()):
        sub = ctx.out / _folder(s)
        tr, te = t.train, t.test
        mem, names, how = _roi_groups(ctx.root, t, atlas, hemispheres)
        prov["rois"][s] = {"groups": names, "source": how, "n_voxels": mem.sum(1).astype(int).tolist()}
        make = BrainEncoderConfig.tiny if ctx.base == "tiny" else BrainEncoderConfig
        config = make(**{**decoder, "n_voxels": t.n_features, "n_groups": len(names), "roi_names": names,
                         "subject": s, "space": space_name, "feature_dim": int(feats.shape[2]), "grid": (side, side)})
        model = Encoder(config, membership=mem)
        val = (rows(te), te.X) if ctx.extra.get("validate") and len(te) else None
        last = train_encoder(model, rows(tr), tr.X, ctx.config, sub, lr_drop=lr_drop,
                             gamma=gamma, resume=resume, val=val)
        model.save_pretrained(sub / "encoder", metadata={"subject": s, "rois": names, "atlas": how})
        write_json(sub / "encoder" / "space.json", {"space": space_name, "weights": space_weights})
        prov["models"][s] = {"encoder": str(sub / "encoder")}
        if len(te) < 3:
            logger.warning("%s: %d test images, no test scores", s, len(te))
            continue
        rois = {n: m for n, m in zip(names, mem)}
        nc = _noise_ceiling(ctx.root, t, te)
        test_x = feats[np.searchsorted(feat_ids, te.stimulus_ids)]
        m_enc, res_enc = _scores(f"test/{s}/transformer", model.predict(test_x), te.X, nc, rois, ctx.config.seed + k)
        metrics.update(m_enc)
        voxel: dict[str, Any] = {f"transformer_{key}": res_enc[key] for key in ("r", "r2", "nc_r2") if key in res_enc}
        if baseline == "ridge":
            rcfg = RidgeEncoderConfig(n_voxels=t.n_features, feature_shape=tuple(feats.shape[1:]), pool=ridge_pool,
                                      space=space_name, subject=s,
                                      **({"alphas": tuple(ridge_alphas)} if ridge_alphas else {}))
            ridge = RidgeBrainEncoder(rcfg).fit(feats[np.searchsorted(feat_ids, tr.stimulus_ids)], tr.X,
                                                verbose=verbose)
            ridge.save_pretrained(sub / "ridge", metadata={"subject": s})
            write_json(sub / "ridge" / "space.json", {"space": space_name, "weights": space_weights})
            prov["models"][s]["ridge"] = str(sub / "ridge")
            m_r, res_r = _scores(f"test/{s}/ridge", ridge.predict(test_x), te.X, nc, rois, ctx.config.seed + k)
            metrics.update(m_r)
            voxel.update({f"ridge_{key}": res_r[key] for key in ("r", "r2", "nc_r2") if key in res_r})
        if nc is not None:
            voxel["noise_ceiling"] = nc
        np.savez_compressed(sub / "voxel_scores.npz", **voxel)
        if plot:
            what = "nc_r2" if nc is not None else "r"
            for model_name in ("transformer", "ridge"):
                key = f"{model_name}_{what}"
                if key in voxel:
                    png = plot_voxel_map(voxel[key], ctx.root, s, sub / f"{what}_{model_name}.png",
                                         title=f"{s} {model_name}: {'r^2 / NC' if what == 'nc_r2' else 'r'}")
                    if png is not None:
                        prov["models"][s][f"map_{model_name}"] = str(png)
        metrics[f"test/{s}/n_test"] = len(te)
    steps = int(last.steps) if last is not None else 0
    if last is not None and "loss" in last.metrics:
        metrics["train/loss"] = float(last.metrics["loss"])
    write_run_outputs(ctx, {"steps": steps, "resumed_from": 0, "metrics": metrics}, prov)
    return TrainResult(history=list(last.history) if last is not None else [], metrics=metrics, checkpoint=None,
                       steps=steps, resumed_from=0)
