"""Predicted latents on disk, so ``neurodecode evaluate`` can score retrieval after ``reconstruct``.

Format (one file per subject, safetensors, no pickle)::

    OUT/latents/sub-<label>_desc-<space>_latents.safetensors
        tensors : "predicted"  float32 (n_items, ...)  the latents decoded from the brain
                  "target"     float32 (n_items, ...)  optional: the true latents of the same stimuli
        metadata: "format"  = "neurodecode-predicted-latents"
                  "version" = "1"
                  "subject" = <label>           (e.g. "01", without "sub-")
                  "space"   = <latent space>    (e.g. "clip-vit-bigg-14-tokens")
                  "ids"     = JSON list of the n_items stimulus ids, in row order

Rows pair with the reconstructions by stimulus id (``*_stim-<id>_*``). Retrieval needs
``"target"``; without it :func:`read_predicted_latents` still returns the predictions.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import DataIntegrityError, ShapeMismatchError, ValidationError
from .._core.files import atomic_path
from .._core.validation import check_array, format_error

__all__ = ["save_predicted_latents", "read_predicted_latents", "LATENTS_FORMAT"]

LATENTS_FORMAT = "neurodecode-predicted-latents"
_VERSION = "1"


def _label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", str(text))


def save_predicted_latents(out_dir: str | os.PathLike[str], subject: str, ids: Any, predicted: Any,
                           target: Any = None, *, space: str = "latents") -> Path:
    """Write one subject's predicted (and optionally true) latents for ``neurodecode evaluate``.

    Parameters
    ----------
    out_dir : path-like
        The reconstruct output folder (``OUT``); the file goes to ``OUT/latents/``.
    subject : str
        Subject label or id (``"01"``, ``"sub-01"``, ``"nsd/subj01"``: letters and digits of
        the last part are kept).
    ids : sequence of str or int, length n_items
        Stimulus id of each row (as in the reconstruction file names).
    predicted : array-like of shape (n_items, ...)
        Latents decoded from the brain.
    target : array-like of shape (n_items, ...) or None
        True latents of the same stimuli, same shape (needed for retrieval).
    space : str
        Name of the latent space (recorded; part of the file name).

    Returns
    -------
    path : Path
    """
    pred = check_array(predicted, "predicted", dtype="float").astype(np.float32)
    ids = [str(i) for i in ids]
    if pred.ndim < 2 or len(pred) != len(ids):
        raise ShapeMismatchError(format_error("predicted", f"an array of shape (n_items={len(ids)}, ...)", pred,
                                              "Give one row per stimulus id"))
    tensors = {"predicted": np.ascontiguousarray(pred)}
    if target is not None:
        tgt = check_array(target, "target", dtype="float").astype(np.float32)
        if tgt.shape != pred.shape:
            raise ShapeMismatchError(format_error("target", f"the shape of predicted {pred.shape}", tgt))
        tensors["target"] = np.ascontiguousarray(tgt)
    label = _label(str(subject).rsplit("/", 1)[-1].removeprefix("sub-").removeprefix("subj"))
    if not label:
        raise ValidationError(format_error("subject", "a label with letters or digits", repr(subject)))
    folder = Path(out_dir) / "latents"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"sub-{label}_desc-{_label(space) or 'latents'}_latents.safetensors"
    from safetensors.numpy import save_file

    meta = {"format": LATENTS_FORMAT, "version": _VERSION, "subject": label, "space": str(space),
            "ids": json.dumps(ids)}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def read_predicted_latents(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The predicted-latent files of a reconstruct output folder (``OUT/latents/*_latents.safetensors``).

    Returns
    -------
    entries : list of dict
        Per file: ``"subject"``, ``"space"``, ``"ids"`` (list of str), ``"predicted"`` (ndarray),
        ``"target"`` (ndarray or None), ``"path"``. Empty when the folder has none.
    """
    root = Path(folder)
    files = sorted((root / "latents").glob("*_latents.safetensors")) if root.is_dir() else []
    out = []
    for f in files:
        from safetensors import safe_open

        try:
            with safe_open(str(f), framework="numpy") as fh:
                meta = fh.metadata() or {}
                arrays = {k: fh.get_tensor(k) for k in fh.keys()}
        except Exception as exc:
            raise DataIntegrityError(format_error("latents", "a readable safetensors file", f"{f}: {exc}",
                                                  "Re-run reconstruct for this subject")) from None
        if meta.get("format") != LATENTS_FORMAT or "predicted" not in arrays:
            raise DataIntegrityError(format_error("latents", f"a {LATENTS_FORMAT} file", f"{f} (metadata {meta})"))
        ids = json.loads(meta.get("ids", "[]"))
        if len(ids) != len(arrays["predicted"]):
            raise DataIntegrityError(format_error("latents", f"one id per row in {f}",
                                                  f"{len(ids)} ids for {len(arrays['predicted'])} rows"))
        out.append({"subject": meta.get("subject", ""), "space": meta.get("space", ""), "ids": [str(i) for i in ids],
                    "predicted": arrays["predicted"], "target": arrays.get("target"), "path": f})
    return out
