"""Training targets of the neural decoders: which latent feeds which batch key, and the cached features.

Every target is computed once per stimulus, into a :class:`~neurodecode.latents.FeatureCache`
(never inside a training step), and read back per trial by stimulus id.

- Image spaces embed NSD images straight from ``nsd_stimuli.hdf5`` (streamed, never all in memory).
- Text spaces embed captions: NSD's COCO annotation files (``captions_*.json``, mapped to NSD ids
  through ``nsd_stim_info_merged.csv``'s ``cocoId``) or a JSON ``{"nsd id": [captions]}``; each
  caption is embedded once and the features of one image's captions are averaged.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import MissingFileError, ValidationError
from .._core.logging import logger
from .._core.validation import format_error

__all__ = ["DECODER_TARGETS", "decoder_targets", "target_cache_dir", "compute_targets", "read_nsd_captions",
           "caption_targets", "choice_targets"]

#: decoder name -> {batch key: (config field holding its shape, predict_latents key, required)}
DECODER_TARGETS: dict[str, dict[str, tuple[str, str | None, bool]]] = {
    "mindbridge": {"image_tokens": ("image_tokens", "clip_image_tokens", True),
                   "text_tokens": ("text_tokens", "clip_text_tokens", False)},
    "mindeye2": {"tokens": ("target_tokens", None, True),
                 "vae_latents": ("lowlevel_shape", "vae_latents", False)},
}


def decoder_targets(name: str) -> dict[str, tuple[str, str | None, bool]]:
    """The batch keys decoder ``name`` trains on: ``{key: (config field, latent key, required)}``."""
    if name not in DECODER_TARGETS:
        raise ValidationError(format_error("decoder.name", "a neural decoder trained by the trainer: "
                                           + ", ".join(map(repr, DECODER_TARGETS)), repr(name),
                                           "Check [decoder] name (brain_diffuser is fitted in closed form by the same verb)"))
    return DECODER_TARGETS[name]


def _short_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def target_cache_dir(cache_root: str | os.PathLike[str], space: str, options: Mapping[str, Any],
                     ids: np.ndarray) -> Path:
    """Folder of one (space, options, stimulus set) cache: ``ROOT/features/<space>/<hash>``."""
    ident = {"space": space, "options": {k: options[k] for k in sorted(options)},
             "ids": hashlib.sha256("\n".join(map(str, np.asarray(ids).tolist())).encode()).hexdigest()}
    return Path(cache_root) / "features" / space / _short_hash(ident)


# ----------------------------------------------------------------------------------------------- captions
def read_nsd_captions(root: str | os.PathLike[str], files: str | Sequence[str]) -> dict[int, list[str]]:
    """Captions of NSD images, keyed by 0-based NSD id.

    Parameters
    ----------
    root : path-like
        The NSD root (relative ``files`` are read from it).
    files : str or list of str
        COCO caption annotation files (``{"annotations": [{"image_id", "caption"}, ...]}``, mapped
        through ``nsd_stim_info_merged.csv``) or JSON files ``{"<nsd id>": ["caption", ...]}``.

    Returns
    -------
    captions : dict of int to list of str
    """
    paths = [files] if isinstance(files, (str, os.PathLike)) else list(files)
    out: dict[int, list[str]] = {}
    coco: dict[int, list[str]] = {}
    for f in paths:
        p = Path(f) if Path(f).is_absolute() else Path(root) / f
        if not p.is_file():
            raise MissingFileError(format_error(
                "data.captions", "a caption file", str(p),
                "NSD ships COCO captions in nsddata_stimuli/stimuli/nsd/annotations/captions_{train,val}2017.json; "
                "or turn text targets off with --set latents.text_tokens.space=''"))
        doc = json.loads(p.read_text(encoding="utf-8"))
        if isinstance(doc, dict) and "annotations" in doc:
            for ann in doc["annotations"]:
                coco.setdefault(int(ann["image_id"]), []).append(str(ann["caption"]).strip())
        elif isinstance(doc, dict):
            for key, caps in doc.items():
                out.setdefault(int(key), []).extend([caps] if isinstance(caps, str) else [str(c) for c in caps])
        else:
            raise ValidationError(format_error("data.captions", "a COCO annotation file or {nsd id: [captions]}",
                                               f"a JSON {type(doc).__name__} in {p}"))
    if coco:
        import csv

        from .._core.specs import load_spec

        info = Path(root) / load_spec("nsd")["paths"]["stim_info"]
        if not info.is_file():
            raise MissingFileError(format_error("stim_info", "nsd_stim_info_merged.csv (nsdId -> cocoId)",
                                                str(info), "It maps COCO captions to NSD ids; restore it"))
        with open(info, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                caps = coco.get(int(row["cocoId"]))
                if caps:
                    out.setdefault(int(row["nsdId"]), []).extend(caps)
    return out


# ------------------------------------------------------------------------------------------------- compute
def _load_or_embed(space_name: str, options: dict[str, Any], weights: Any, stimuli: Any, ids: np.ndarray,
                   cache_root: Path, device: Any, batch_size: int, verbose: Any) -> Any:
    from ..latents import FeatureCache, embed_to_cache, get_space

    folder = target_cache_dir(cache_root, space_name, {**options, "weights": weights}, ids)
    cache = FeatureCache(folder)
    stale = False
    if (folder / "manifest.json").is_file() and cache.complete:
        if cache.matches_stimuli(stimuli, ids):  # keyed by content: other stimuli under the same ids never hit
            logger.info("targets %s: cache hit at %s", space_name, folder)
            return cache
        stale = True
    space = get_space(space_name, weights=weights, device=device, batch_size=batch_size, verbose=verbose,
                      **options)
    logger.info("targets %s: %s %d stimuli into %s", space_name,
                "the cached stimuli differ (see above): re-embedding" if stale else "embedding", len(ids), folder)
    cache = embed_to_cache(space, stimuli, folder, ids=ids, verbose=verbose, overwrite=stale)
    return cache if cache.complete else _wait_for_other_processes(folder)


#: Seconds a process of a parallel run waits for the others' shards while no new shard appears.
SHARD_STALL_S = 1800.0


def _wait_for_other_processes(folder: Path, poll_s: float = 0.5) -> Any:
    """Under ``torchrun`` each process embeds its own shards; training needs every target, so wait until
    the other processes' shards complete the cache (merged by whichever finishes last). Gives up after
    :data:`SHARD_STALL_S` seconds without a new shard; the load then names the missing shards."""
    import time

    from ..latents import FeatureCache

    logger.info("targets: waiting for the other processes' shards in %s", folder)
    last, since = -1, time.monotonic()
    while True:
        cache = FeatureCache(folder)  # a fresh read: the manifest is merged once every shard is recorded
        if cache.complete:
            return cache
        n = len(list(folder.glob("shard-*.json")))
        if n > last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since > SHARD_STALL_S:
            return cache
        time.sleep(poll_s)


def _is_text_space(spec: Any) -> bool:
    return str(spec.options.get("output", "")).startswith("text") or spec.builder.endswith(":build_text_space")


def _caption_features(root: Any, key: str, name: str, table: Mapping[str, Any], weights: Any, ids: np.ndarray,
                      captions: Any, cache_root: Path, device: Any, batch_size: int,
                      verbose: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every caption of every image embedded (once, into the cache): rows in image order, then caption order."""
    if not captions:
        raise ValidationError(format_error(
            f"latents.{key}", "caption files in data.captions for a text space", "none",
            "Set data.captions (NSD: nsddata_stimuli/stimuli/nsd/annotations/captions_train2017.json and "
            "captions_val2017.json), or turn text targets off with --set latents." + key + ".space=''"))
    caps = read_nsd_captions(root, captions)
    missing = [int(i) for i in ids if not caps.get(int(i))]
    if missing:
        raise ValidationError(format_error("data.captions", "at least one caption per training image",
                                           f"{len(missing)} images without one (e.g. NSD ids {missing[:3]})",
                                           "Check the caption files cover every COCO image of the run"))
    texts, text_ids, counts = [], [], []
    for i in ids:
        counts.append(len(caps[int(i)]))
        for k, c in enumerate(caps[int(i)]):
            texts.append(c)
            text_ids.append(f"{int(i)}:{k}")
    cache = _load_or_embed(name, dict(table), weights, texts, np.asarray(text_ids), cache_root, device, batch_size,
                           verbose)
    counts_arr = np.asarray(counts, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts_arr)[:-1]]).astype(np.int64)
    return cache.load(np.asarray(text_ids), dtype="float32"), starts, counts_arr


def caption_targets(root: str | os.PathLike[str], latents: Mapping[str, Any], key: str, stimulus_ids: np.ndarray, *,
                    cache_root: str | os.PathLike[str], captions: Any, device: Any = "cpu", dtype: str = "float32",
                    verbose: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each caption's features of the text target ``key`` (the same cache rows :func:`compute_targets` averages).

    Returns
    -------
    ids : ndarray of int, shape (n_stimuli,)
        Sorted unique NSD ids.
    features : ndarray of shape (n_captions, *target_shape)
        Image ``ids[j]``'s captions are rows ``starts[j]`` to ``starts[j] + counts[j] - 1``.
    starts, counts : ndarray of int, shape (n_stimuli,)
    """
    from ..latents import describe_space

    table = dict(latents[key])
    name = str(table.pop("space", "") or "")
    weights = table.pop("weights", None) or None
    batch_size = int(table.pop("batch_size", 32))
    if not name or not _is_text_space(describe_space(name)):
        raise ValidationError(format_error(f"latents.{key}.space", "a text space (captions)", repr(name)))
    ids = np.unique(np.asarray(stimulus_ids, dtype=np.int64))
    feats, starts, counts = _caption_features(root, key, name, table, weights, ids, captions, Path(cache_root),
                                              device, batch_size, verbose)
    return ids, feats.astype(dtype), starts, counts


def choice_targets(caption_table: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], stimulus_ids: np.ndarray,
                   *, mode: str = "cycle", cycle: int = 3) -> Any:
    """Per-trial :class:`~neurodecode.train.ChoiceRows`: one caption of the trial's image per step."""
    from ..train import ChoiceRows

    ids, feats, starts, counts = caption_table
    rows = np.searchsorted(ids, np.asarray(stimulus_ids, dtype=np.int64))
    return ChoiceRows(feats, starts[rows], counts[rows], mode=mode, cycle=cycle)


def compute_targets(root: str | os.PathLike[str], latents: Mapping[str, Any], stimulus_ids: np.ndarray, *,
                    cache_root: str | os.PathLike[str], captions: Any = None, device: Any = "cpu",
                    dtype: str = "float32", verbose: Any = None) -> dict[str, Any]:
    """Embed (once) and read the targets of ``stimulus_ids`` for each batch key.

    Parameters
    ----------
    root : path-like
        The NSD root.
    latents : dict
        ``{batch key: {"space": name, "weights": ..., "batch_size": ..., **space options}}``;
        an empty ``space`` turns the target off.
    stimulus_ids : ndarray of int, shape (n_stimuli,)
        Unique 0-based NSD ids needed by the run.
    cache_root : path-like
        Root of the feature caches.
    captions : str, list of str or None
        Caption files for text spaces (see :func:`read_nsd_captions`).
    device : str or torch.device
        Where the latent models run.
    dtype : {"float32", "float16"}
        Returned dtype of the features.

    Returns
    -------
    targets : dict of str to (ids, features)
        ``ids`` of shape (n_stimuli,) and ``features`` of shape (n_stimuli, *target_shape), per batch key.
    """
    from .._core.specs import load_spec
    from ..latents import describe_space

    ids = np.unique(np.asarray(stimulus_ids, dtype=np.int64))
    out: dict[str, Any] = {}
    for key, table in latents.items():
        if not isinstance(table, Mapping):
            continue
        table = dict(table)
        name = str(table.pop("space", "") or "")
        if not name:
            continue
        weights = table.pop("weights", None) or None
        batch_size = int(table.pop("batch_size", 32))
        spec = describe_space(name)
        if _is_text_space(spec):
            per_caption, starts, counts = _caption_features(root, key, name, table, weights, ids, captions,
                                                            Path(cache_root), device, batch_size, verbose)
            sums = np.add.reduceat(per_caption.astype(np.float64), starts, axis=0)
            feats = sums / counts.reshape(-1, *[1] * (per_caption.ndim - 1))
            out[key] = (ids, feats.astype(dtype))
        else:
            hdf5 = Path(root) / load_spec("nsd")["paths"]["stimuli"]
            cache = _load_or_embed(name, table, weights, str(hdf5), ids, Path(cache_root), device, batch_size,
                                   verbose)
            out[key] = (ids, cache.load(ids, dtype=dtype))
    return out


def gather_targets(targets: Mapping[str, Any], stimulus_ids: np.ndarray, *, lazy: bool = False) -> dict[str, Any]:
    """Per-trial targets: row ``i`` is the target of ``stimulus_ids[i]``.

    With ``lazy=True`` each entry is an :class:`~neurodecode.train.IndexedRows` over the
    per-stimulus table, so repeated stimuli are not copied (batches gather their rows).
    """
    from ..train import IndexedRows

    out: dict[str, Any] = {}
    for key, (ids, feats) in targets.items():
        rows = np.searchsorted(ids, np.asarray(stimulus_ids, dtype=np.int64))
        out[key] = IndexedRows(feats, rows) if lazy else feats[rows]
    return out
