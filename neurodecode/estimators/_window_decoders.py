"""Trained models behind one small protocol, so a live decoder can run any of them.

A *window decoder* has

- ``spec``: a :class:`~neurodecode.estimators._stream_windows.WindowSpec` (channels, rate, window,
  and the preparation of the recordings it was trained on);
- ``decode(X, subject=None)``: ``X`` of shape (n_windows, n_channels, n_times), raw (the model holds
  its input scaling) -> embeddings of shape (n_windows, dim);
- ``candidates`` (n_candidates, dim) and ``candidate_ids`` (n_candidates,) or None: the image
  embeddings retrieval ranks against;
- ``provenance``: a dict naming the checkpoint.

:func:`load_window_decoder` builds one from a run folder of ``neurodecode train``: an ATM run
(``pipelines/atm_things_*.toml``), a MEG real-time run (``pipelines/meg_realtime_things.toml``, through
its runner's ``load_run``), or a run of a runner module that exposes its own
``load_window_decoder(run, ...)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .._core.errors import MissingFileError, ValidationError
from .._core.validation import format_error
from ._stream_windows import WindowSpec

__all__ = ["WindowDecoder", "ATMWindowDecoder", "load_window_decoder"]

#: The recording rate of each dataset's raw files (what a live stream must match unless told otherwise).
_RAW_RATES = {"things-meg": 1200.0}
#: The test-image folder inside each dataset's image folder (the default retrieval candidates).
_TEST_IMAGES = {"things-meg": "images_test_meg", "things-eeg2": "test_images"}


@runtime_checkable
class WindowDecoder(Protocol):
    """What :class:`~neurodecode.estimators.stream.StreamDecoder` needs from a trained model."""

    spec: WindowSpec
    candidates: np.ndarray | None
    candidate_ids: np.ndarray | None
    provenance: dict[str, Any]

    def decode(self, X: np.ndarray, subject: str | None = None) -> np.ndarray: ...


@dataclass
class ATMWindowDecoder:
    """An ATM model of a run as a window decoder (``decode`` = :meth:`ATM.encode`)."""

    model: Any
    token: str | None
    spec: WindowSpec
    candidates: np.ndarray | None = None
    candidate_ids: np.ndarray | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def decode(self, X: np.ndarray, subject: str | None = None) -> np.ndarray:
        """Embeddings of shape (n_windows, proj_dim) of raw windows (n_windows, n_channels, n_times).

        ``subject`` is not used: the model (and a joint model's subject token) was chosen at loading.
        """
        return np.asarray(self.model.encode(X, self.token,
                                            ch_names=list(self.spec.ch_names), sfreq=self.spec.sfreq))


@dataclass
class MEGRunWindowDecoder:
    """A MEG real-time run (:func:`neurodecode.recipes._meg_realtime.load_run`) as a window decoder.

    One cross-subject model: ``subject`` (resolved at loading) picks its subject layer; None decodes
    with the mean subject layer (an unknown subject). ``decode`` uses the retrieval (CLIP) head.
    """

    run: Any
    subject: str | None
    spec: WindowSpec
    candidates: np.ndarray | None = None
    candidate_ids: np.ndarray | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def decode(self, X: np.ndarray, subject: str | None = None) -> np.ndarray:
        """Embeddings (n_windows, latent_dim) of raw windows; ``subject`` is not used (chosen at loading)."""
        return np.asarray(self.run.decode(X, self.subject, head="clip"))


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise MissingFileError(format_error("checkpoint", f"a run folder of `neurodecode train` with {path.name}",
                                            f"nothing at {path}", f"Pass the --out folder of the training run ({what})"))
    return dict(json.loads(path.read_text(encoding="utf-8")))


def _run_root(path: Path) -> Path:
    """The run folder holding ``recipe.json`` (``path`` or its parent, for ``RUN/<sub-XX>``)."""
    for p in (path, path.parent):
        if (p / "recipe.json").is_file():
            return p
    raise MissingFileError(format_error("checkpoint", "a run folder of `neurodecode train` (with recipe.json)",
                                        f"no recipe.json in {path} or its parent",
                                        "Pass the --out folder of the training run, or one subject's folder in it"))


def _atm_folder(run: Path, given: Path, subject: str | None) -> tuple[Path, str | None]:
    from ..recipes._derivative import model_class

    if model_class(given) == "ATM":
        cfg = dict(_read_json(given / "config.json", "the model's config").get("config", {}))
        if cfg.get("subject_tokens") and cfg.get("subjects"):
            names = [str(s) for s in cfg["subjects"]]
            if subject is None:
                raise ValidationError(format_error("subject", f"one of the joint model's subjects {names}", "none",
                                                   "Pass --subject (the model holds one token per subject)"))
            match = [s for s in names if s == subject or s.rsplit("/", 1)[-1] == str(subject).rsplit("/", 1)[-1]]
            if not match:
                raise ValidationError(format_error("subject", f"one of {names}", repr(subject)))
            return given, match[0]
        return given, None
    folders = sorted(p for p in given.iterdir() if p.is_dir() and model_class(p) == "ATM")
    if not folders:
        raise MissingFileError(format_error("checkpoint", "an ATM model (config.json + model.safetensors)",
                                            f"none in {given}", "Pass the run folder of an ATM recipe"))
    if subject is None:
        if len(folders) > 1:
            raise ValidationError(format_error("subject", f"one of the run's subjects {[p.name for p in folders]}",
                                               "none", "Pass --subject (one model per subject)"))
        return folders[0], None
    want = str(subject).rsplit("/", 1)[-1]
    want = want if want.startswith("sub-") else f"sub-{want}"
    hit = [p for p in folders if p.name == want or p.name.endswith(want.removeprefix("sub-"))]
    if not hit:
        raise ValidationError(format_error("subject", f"one of {[p.name for p in folders]}", repr(subject)))
    return hit[0], None


def _candidates(recipe: dict[str, Any], prov: dict[str, Any], run: Path, candidates: Any, device: Any,
                verbose: Any) -> tuple[np.ndarray | None, np.ndarray | None, dict[str, Any]]:
    """Embeddings of the candidate images in the run's image space (through the feature cache)."""
    from ..latents._stimuli import IMAGE_SUFFIXES
    from ..recipes._meeg import _space_table
    from ..recipes._run import resolve_cache_root
    from ..recipes._targets import _load_or_embed

    if candidates is False:
        return None, None, {"candidates": None}
    if isinstance(candidates, tuple):
        ids, emb = candidates
        return np.asarray(emb, np.float32), np.asarray(ids).astype(str), {"candidates": "given embeddings"}
    table = _space_table(recipe.get("latents", {}).get("image"), "image")
    if not table:
        raise ValidationError(format_error("checkpoint", "a run with a [latents] image space", "none"))
    if candidates is None:
        folder = Path(str(prov.get("targets", {}).get("image", {}).get("folder", "")))
        sub = _TEST_IMAGES.get(str(recipe["data"].get("dataset")))
        if not sub or not (folder / sub).is_dir():
            raise MissingFileError(format_error(
                "candidates", "a folder of candidate images (default: the test images the run was trained beside)",
                f"nothing at {folder / sub if sub else folder}", "Pass --candidates DIR (images found below it, "
                "identified by file stem)"))
        folder = folder / sub
    else:
        folder = Path(candidates).expanduser()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not p.name.startswith("."))
    if not files:
        raise MissingFileError(format_error("candidates", "a folder of images", f"none under {folder}"))
    rel = np.array([p.relative_to(folder).as_posix() for p in files])
    table = dict(table)
    name = str(table.pop("space"))
    weights = table.pop("weights", None) or None
    batch = int(table.pop("batch_size", 32))
    cache = _load_or_embed(name, table, weights, str(folder), rel, resolve_cache_root(recipe.get("latents", {}), run),
                           device, batch, verbose)
    emb = np.asarray(cache.load(rel, dtype="float32"), dtype=np.float32)
    return emb, np.array([p.stem for p in files]), {"candidates": str(folder), "space": name, "n": len(files)}


def load_window_decoder(checkpoint: Any, *, subject: str | None = None, candidates: Any = None,
                        raw_sfreq: float | None = None, device: Any = "cpu", verbose: Any = None) -> Any:
    """A window decoder from the run folder of ``neurodecode train``.

    Parameters
    ----------
    checkpoint : path-like
        The run folder (or one subject's model folder in it).
    subject : str or None
        Which model of a run with one model per subject, or the subject token of a joint model;
        None when the run holds one model.
    candidates : None, path-like, False or (ids, embeddings)
        Retrieval candidates: None, the test images of the dataset the run was trained on; a folder
        of images (embedded in the run's image space, through the feature cache, identified by file
        stem); ``False``, none (embeddings only); or ids (n,) and embeddings (n, dim).
    raw_sfreq : float or None
        Accept a stream at this rate although the training recordings had another (the window is
        then resampled from it); None: the training recordings' rate.
    device : str
    verbose : bool or str or None

    Returns
    -------
    decoder : WindowDecoder
    """
    import importlib

    from .._core.device import resolve_device
    from ..recipes import RUNNERS

    given = Path(checkpoint).expanduser()
    if not given.is_dir():
        raise MissingFileError(format_error("checkpoint", "the run folder of `neurodecode train`",
                                            f"nothing at {given}", "Pass the --out folder of the training run"))
    run = _run_root(given)
    recipe = _read_json(run / "recipe.json", "the resolved recipe")
    name = str(recipe.get("decoder", {}).get("name"))
    if name == "meg_brain_module":
        return _meg_run_decoder(run, recipe, subject, candidates, raw_sfreq, device, verbose)
    if name != "atm":
        module = importlib.import_module(RUNNERS[name]) if name in RUNNERS else None
        loader = getattr(module, "load_window_decoder", None)
        if loader is None:
            raise ValidationError(format_error(
                "checkpoint", "a run of an M/EEG image decoder that decodes windows live (atm, or a runner "
                "providing load_window_decoder)", f"a {name!r} run",
                "Train an M/EEG image decoder (e.g. pipelines/atm_things_meg.toml)"))
        return loader(given, subject=subject, candidates=candidates, raw_sfreq=raw_sfreq, device=device,
                      verbose=verbose)
    from ..models.atm import ATM

    prov = _read_json(run / "provenance.json", "the run's provenance")
    folder, token = _atm_folder(run, given, subject)
    dev = resolve_device(device)
    model = ATM.from_pretrained(folder, device=str(dev))
    data = dict(recipe.get("data", {}))
    cfg = model.config
    window = [float(v) for v in data.get("window", [0.0, 1.0])]
    dataset = str(data.get("dataset"))
    rate = raw_sfreq if raw_sfreq is not None else (data.get("raw_sfreq") or _RAW_RATES.get(dataset, cfg.sfreq))
    spec = WindowSpec(ch_names=tuple(cfg.ch_names), sfreq=float(cfg.sfreq), tmin=window[0], n_times=int(cfg.n_times),
                      raw_sfreq=float(rate), l_freq=data.get("l_freq") or None, h_freq=data.get("h_freq") or None,
                      baseline=None)
    emb, ids, cand_prov = _candidates(recipe, prov, run, candidates, dev, verbose)
    if emb is not None and emb.shape[1] != int(cfg.proj_dim):
        raise ValidationError(format_error("candidates", f"embeddings of width {cfg.proj_dim} (the model's)",
                                           f"width {emb.shape[1]}", "Embed the candidates in the run's image space"))
    from .._core.files import sha256_file

    provenance = {"checkpoint": str(folder.resolve()), "run": str(run.resolve()), "decoder": "atm",
                  "recipe": str(recipe.get("_source", {}).get("name", "recipe")),
                  "sha256": sha256_file(folder / "model.safetensors"), "subject_token": token,
                  "dataset": dataset, **cand_prov}
    return ATMWindowDecoder(model=model, token=token, spec=spec, candidates=emb, candidate_ids=ids,
                            provenance=provenance)


def _meg_run_decoder(run: Path, recipe: dict[str, Any], subject: str | None, candidates: Any,
                     raw_sfreq: float | None, device: Any, verbose: Any) -> MEGRunWindowDecoder:
    """Wrap the MEG real-time runner's :func:`load_run` (its model and the test images' embeddings)."""
    from .._core.device import resolve_device
    from .._core.files import sha256_file
    from ..recipes._meg_realtime import load_run

    dev = resolve_device(device)
    loaded = load_run(run, device=str(dev))
    cfg = loaded.model.config
    if not cfg.ch_names:
        raise ValidationError(format_error("checkpoint", "a model that names its channels (config ch_names)",
                                           "none", "Retrain from recordings with channel names"))
    token = None
    if subject is not None:
        want = str(subject).rsplit("/", 1)[-1]
        hit = [s for s in loaded.subjects if str(s).rsplit("/", 1)[-1].removeprefix("sub-") == want.removeprefix("sub-")]
        if not hit:
            raise ValidationError(format_error("subject", f"one of the run's subjects {loaded.subjects} (or none: the "
                                               "mean subject layer)", repr(subject)))
        token = str(hit[0])
    data = dict(recipe.get("data", {}))
    dataset = str(data.get("dataset"))
    rate = raw_sfreq if raw_sfreq is not None else (data.get("raw_sfreq") or _RAW_RATES.get(dataset, cfg.sfreq))
    spec = WindowSpec(ch_names=tuple(cfg.ch_names), sfreq=float(cfg.sfreq), tmin=float(cfg.tmin),
                      n_times=int(cfg.n_times), raw_sfreq=float(rate), l_freq=data.get("l_freq") or None,
                      h_freq=data.get("h_freq") or None, baseline=None)  # the model baseline-corrects itself
    emb: np.ndarray | None
    ids: np.ndarray | None
    if candidates is None:  # the run's test images, embedded at training
        emb, ids = loaded.candidate_embeds[:loaded.n_test], loaded.candidate_ids[:loaded.n_test]
        cand_prov: dict[str, Any] = {"candidates": "the run's test images (candidates.npz)", "space": loaded.space,
                                     "n": int(loaded.n_test)}
    else:
        prov = _read_json(run / "provenance.json", "the run's provenance")
        emb, ids, cand_prov = _candidates(recipe, prov, run, candidates, dev, verbose)
    provenance = {"checkpoint": str(run.resolve()), "run": str(run.resolve()), "decoder": "meg_brain_module",
                  "recipe": str(recipe.get("_source", {}).get("name", "recipe")),
                  "sha256": sha256_file(run / "model.safetensors"), "subject": token, "dataset": dataset, **cand_prov}
    return MEGRunWindowDecoder(run=loaded, subject=token, spec=spec, candidates=emb, candidate_ids=ids,
                               provenance=provenance)
