"""The BIDS-style derivative every ``reconstruct`` writes: labels, output paths, provenance, writability.

Layout written under ``out_dir``::

    dataset_description.json                      (BIDS derivative description)
    sub-01/recon/sub-01_stim-00042_desc-<recipe>_recon.png
    sub-01/recon/sub-01_stim-00042_desc-<recipe>_caption.txt   (when the recipe has a captioner)
    provenance.json                               (the runs: recipe, weights + hashes, seeds, versions,
                                                   timings, device; updated after every batch)

Under ``torchrun`` / ``accelerate launch`` (``RANK`` / ``WORLD_SIZE``) process ``r`` takes items
``r, r + world, ...`` and writes ``provenance_rank-<r>.json``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import ValidationError
from .._core.files import atomic_path, atomic_write, sha256_file, write_json
from .._core.logging import logger
from .._core.validation import format_error

__all__ = ["output_paths", "distributed_rank", "describe_derivative", "ProvenanceLog"]

def distributed_rank() -> tuple[int, int]:
    """``(rank, world_size)`` from the launcher's environment (``torchrun``, ``accelerate launch``); (0, 1) alone."""
    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0)
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world < 1 or not 0 <= rank < world:
        raise ValidationError(format_error("RANK/WORLD_SIZE", "0 <= RANK < WORLD_SIZE", f"RANK={rank}, WORLD_SIZE={world}",
                                           "Launch with torchrun or accelerate launch, or unset these variables"))
    return rank, world


def _label(value: Any) -> str:
    """A BIDS label: letters and digits only."""
    return re.sub(r"[^A-Za-z0-9]", "", str(value)) or "x"


def _sub_label(subject: str) -> str:
    """BIDS ``sub-`` label of a namespaced id: ``nsd/subj01`` -> ``01``, ``things-meg/sub-BIGMEG1`` -> ``BIGMEG1``."""
    name = str(subject).split("/")[-1]
    name = re.sub(r"^(sub-|subj)", "", name)
    return f"{int(name):02d}" if name.isdigit() else _label(name)


def _stim_label(stim: Any) -> str:
    if isinstance(stim, (int, np.integer)) or (isinstance(stim, str) and stim.isdigit()):
        return f"{int(stim):05d}"
    return _label(stim)


def describe_derivative(out: Path, recipe_name: str, data_root: Any) -> None:
    """Write the derivative's ``dataset_description.json`` (BIDS) unless it exists."""
    from .._core.versions import package_versions

    if (out / "dataset_description.json").is_file():
        return
    write_json(out / "dataset_description.json", {
        "Name": f"neurodecode reconstructions ({recipe_name})", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "neurodecode", "Version": package_versions(("neurodecode",))["neurodecode"],
                         "Description": "neurodecode reconstruct"}],
        "SourceDatasets": [{"URL": Path(data_root).resolve().as_uri()}],
    })


class ProvenanceLog:
    """One run's entry in ``provenance.json``, rewritten (atomically) after every batch.

    A killed ``reconstruct`` therefore leaves the settings and seeds of everything it wrote on disk;
    the entry's ``finished`` is None until :meth:`finish`.

    Parameters
    ----------
    out : Path
        The derivative root.
    rank, world : int
        Process rank and count (``provenance_rank-<r>.json`` when ``world > 1``).
    run : dict
        The run's settings (recipe, decoder, generator, seed rule...).
    """

    def __init__(self, out: Path, rank: int, world: int, run: dict[str, Any]) -> None:
        import json

        self.path = out / ("provenance.json" if world == 1 else f"provenance_rank-{rank}.json")
        self.history: list[Any] = []
        if self.path.is_file():
            try:
                self.history = list(json.loads(self.path.read_text()).get("runs", []))
            except (ValueError, AttributeError):
                logger.warning("could not read %s; starting a new run history", self.path)
        self.run = {"finished": None, **run}
        self._write()

    def _write(self) -> None:
        write_json(self.path, {"runs": [*self.history, self.run]})

    def add_items(self, items: Mapping[str, Any], **fields: Any) -> None:
        """Record finished items (label -> seed or details) and update other fields; rewrite the file."""
        self.run.setdefault("written", {}).update(items)
        self.run.update(fields)
        self._write()

    def finish(self, **fields: Any) -> None:
        """Mark the run finished (time stamp) with its final fields; rewrite the file."""
        self.run.update(fields)
        self.run["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        self._write()


def output_paths(out_dir: str | os.PathLike[str], subject: str, stimulus_id: Any, recipe: str) -> dict[str, Path]:
    """Paths of one item's outputs: ``{"image": ..._recon.png, "caption": ..._caption.txt,
    "blurry": ..._blurry.png}`` (the low-level stage's image, read by ``neurodecode evaluate --blurry``)."""
    sub = _sub_label(subject)
    stem = f"sub-{sub}_stim-{_stim_label(stimulus_id)}_desc-{_label(recipe)}"
    folder = Path(out_dir) / f"sub-{sub}" / "recon"
    return {"image": folder / f"{stem}_recon.png", "caption": folder / f"{stem}_caption.txt",
            "blurry": folder / f"{stem}_blurry.png"}


def _check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_write(out_dir / ".write-test") as fh:
            fh.write("ok")
        (out_dir / ".write-test").unlink()
    except OSError as exc:
        raise ValidationError(format_error("out", "a folder this process can write to", f"{out_dir} ({exc.strerror or exc})",
                                           "Choose another --out, or fix the folder's permissions")) from exc


def _decoder_subjects(decoder: Any) -> list[str]:
    """Subjects a decoder was trained for, from its config or checkpoint metadata."""
    found: list[str] = []
    sources = [getattr(decoder, "config", None), getattr(decoder, "pretrained_metadata_", None)]
    for src in sources:
        for key in ("subject", "subjects"):
            value = src.get(key) if isinstance(src, Mapping) else getattr(src, key, None)
            if value is None:
                continue
            found.extend([str(value)] if isinstance(value, str) else [str(v) for v in value])
    return found


def _png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(image).save(tmp, format="PNG")




# ------------------------------------------------------------------------------ M/EEG runs and subjects
def things_stim_label(stimulus_id: Any) -> str:
    """BIDS label of a THINGS image id: its file stem, letters and digits only.

    ``"aardvark_01b.jpg"`` (THINGS-EEG2) and ``"aardvark_01b"`` (THINGS-MEG) both give ``"aardvark01b"``.
    """
    from ..latents._stimuli import IMAGE_SUFFIXES

    text = str(stimulus_id)
    if Path(text).suffix.lower() in IMAGE_SUFFIXES:
        text = Path(text).stem
    return _stim_label(text)


def model_class(folder: Path) -> str | None:
    """``model_class`` of the ``config.json`` in ``folder`` (None without one)."""
    import json

    cfg = folder / "config.json"
    if not cfg.is_file():
        return None
    try:
        return str(json.loads(cfg.read_text(encoding="utf-8")).get("model_class") or "unnamed model")
    except (ValueError, AttributeError):
        return "unreadable config.json"


def not_a_run(run: Path, decoder: str, recipe_name: str, got: str) -> ValidationError:
    """The error for a ``--checkpoint`` that is not the run folder of ``decoder``."""
    layout = ("RUN/<sub-XX>/config.json + model.safetensors with RUN/<sub-XX>/prior/ (or a joint model in RUN/)"
              if decoder == "atm" else "RUN/config.json + model.safetensors of a GLIM")
    return ValidationError(format_error(
        "checkpoint", f"the run folder of `neurodecode train pipelines/{recipe_name}.toml` ({layout})",
        f"{run}: {got}", f"Pass --checkpoint the --out folder of that training run (an {decoder.upper()} run)"))


def _subject_matches(requested: Any, name: str) -> bool:
    """Whether a requested subject (``1``, ``"sub-01"``, ``"things-meg/sub-BIGMEG1"``...) names run subject ``name``."""
    req = str(requested).strip().rsplit("/", 1)[-1]
    own = str(name).rsplit("/", 1)[-1]
    if own in (req, f"sub-{req}"):
        return True
    a, b = re.search(r"(\d+)$", req), re.search(r"(\d+)$", own)
    return bool(a and b and int(a.group(1)) == int(b.group(1)) and (req.isdigit() or req.startswith("sub-")))


def pick_subjects(requested: Any, available: list[str], run: Path) -> list[str]:
    """The run subjects (folder names or namespaced ids) the user asked for; all of them by default."""
    if requested is None or (not isinstance(requested, (str, int)) and not list(requested)):
        return list(available)
    wanted = [requested] if isinstance(requested, (str, int)) else list(requested)
    picked, missing = [], []
    for w in wanted:
        hits = [a for a in available if _subject_matches(w, a)]
        if len(hits) == 1:
            picked.append(hits[0])
        else:
            missing.append(str(w))
    if missing:
        raise ValidationError(format_error(
            "--subject", "subjects of the run: " + ", ".join(available), ", ".join(missing) + f" (not in {run})",
            "Pick subjects the run was trained for, or drop --subject to reconstruct them all"))
    return list(dict.fromkeys(picked))


def sha_or_none(path: Path) -> str | None:
    """SHA-256 of a file, or None when it is absent."""
    return sha256_file(path) if path.is_file() else None


def loader_verbose(verbose: Any) -> Any:
    """``verbose`` for the data loaders: a bool becomes None (bars follow the log level; MNE, which logs
    to stdout, the stream ``--json`` owns, stays at "error"); a level string is passed on."""
    return None if isinstance(verbose, bool) else verbose
