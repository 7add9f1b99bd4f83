"""The weights a recipe reads, their licences, and fetching exactly those files into the hub cache.

One source of truth: every latent space (:func:`neurodecode.latents.space_artefacts`) and every
generator (``Generator.artefacts``) declares the repositories and the exact files it reads, per
dtype. :func:`recipe_weights` collects them from the recipe's ``[latents]`` spaces and
``[generate]`` generator / captioner, and adds the recipe's own ``[weights]`` extras (weights read
by a decoder, e.g. GLIM's Flan-T5, and notes). An extra is a table::

    [weights.text_model]
    id = "google/flan-t5-large"               # hub id (or `open_clip = "ViT-H-14/laion2b_s32b_b79k"`)
    files = ["config.json", "model.safetensors", "spiece.model"]   # exact files ("a|b" = alternatives)
    licence = "Apache-2.0"

    [weights.mindbridge]
    kind = "run"                              # not a hub artefact: "run", "authors", "random", "package"...
    note = "a run of pipelines/mindbridge_nsd.toml (decoder.init_from)"
    licence = "yours"

Things that are not hub artefacts (a run of another recipe, the authors' checkpoints, the tiny
tier's random init, a pip package) are listed and never fetched; so are entries whose ``id`` is
not a hub id (``"tiny (random init)"``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._core.errors import OfflineError, ValidationError
from .._core.validation import format_error

__all__ = ["recipe_weights", "download_weights", "recipe_artefacts"]

_EXTERNAL_KINDS = ("run", "authors", "random", "package", "folder", "note")
#: Keys of a ``[latents.<key>]`` table that are not options of the space.
_LATENT_TABLE_KEYS = ("space", "batch_size", "weights", "device", "dtype")


def _as_groups(files: Any) -> tuple[tuple[str, ...], ...]:
    out = []
    for f in files:
        if isinstance(f, str):
            out.append(tuple(p.strip() for p in f.split("|") if p.strip()))
        else:
            out.append(tuple(str(p) for p in f))
    return tuple(out)


def _guess_kind(text: str) -> str:
    low = text.lower()
    if "tiny" in low or "random" in low:
        return "random"
    if "init_from" in low or "train with" in low or "a run of" in low or "none" in low:
        return "run"
    if ".ckpt" in low or ".pth" in low or "author" in low:
        return "authors"
    return "note"


def _extra(name: str, value: Any) -> Any:
    """One ``[weights]`` entry -> a HubArtefact or ExternalArtefact."""
    from ..io.hub import ExternalArtefact, HubArtefact, looks_like_hub_id

    if isinstance(value, str):
        value = {"id": value}
    if not isinstance(value, Mapping):
        raise ValidationError(format_error(f"weights.{name}", "a hub id string or a table (id, files, licence)",
                                           value, 'Write e.g. [weights.vae] id = "owner/repo" licence = "MIT"'))
    licence = str(value.get("licence", value.get("license", "unknown (see the model card)")))
    note = str(value.get("note", value.get("purpose", "")))
    kind = value.get("kind")
    if kind is not None:
        if kind not in (*_EXTERNAL_KINDS, "hub"):
            raise ValidationError(format_error(f"weights.{name}.kind", f"one of {('hub', *_EXTERNAL_KINDS)}", kind))
        if kind != "hub":
            return ExternalArtefact(name, str(kind), note or str(value.get("id", "")), licence)
    hub_id = value.get("id") or value.get("hub_id") or value.get("repo")
    tag = value.get("open_clip")
    files: Any = value.get("files")
    revision = value.get("revision")
    revision = None if revision in (None, "", "main") else str(revision)
    if hub_id and not looks_like_hub_id(str(hub_id)):
        if Path(str(hub_id)).expanduser().exists():
            return ExternalArtefact(str(hub_id), "folder", note or f"[weights.{name}] a local folder", licence)
        return ExternalArtefact(name, _guess_kind(str(hub_id)), note or str(hub_id), licence)
    if tag is not None and not (hub_id and files):
        from ..latents.clip import open_clip_hub_files

        arch, _, pretrained = str(tag).partition("/")
        pretrained = pretrained or str(value.get("tag", ""))
        try:
            hub_id, groups = open_clip_hub_files(arch, pretrained)
        except Exception:  # unknown tag: list it, do not fetch it
            return ExternalArtefact(name, "note", f"open_clip {tag!r}: no hub copy known", licence)
        return HubArtefact(str(hub_id), groups, licence, note or f"[weights.{name}] open_clip {arch}/{pretrained}",
                           revision)
    if not hub_id:
        return ExternalArtefact(name, "note", note or "no hub id", licence)
    if value.get("weight_name") and not files:
        files = [str(value["weight_name"])]
    # no files: the repository must be declared by a space or generator of the recipe (checked when merging)
    return HubArtefact(str(hub_id), _as_groups(files or ()), licence, note or f"[weights.{name}]", revision)


def _recipe_spaces(recipe: Mapping[str, Any]) -> list[tuple[str, str, dict[str, Any], Any]]:
    """(key, space name, options, weights) of every space named in ``[latents]``."""
    from ..latents import available_spaces

    known = set(available_spaces())
    out = []
    for key, value in dict(recipe.get("latents", {}) or {}).items():
        if isinstance(value, str) and value in known:
            out.append((str(key), value, {}, None))
        elif isinstance(value, Mapping) and value.get("space"):
            name = str(value["space"])
            if name not in known:
                raise ValidationError(format_error(f"latents.{key}.space", "a registered latent space", name,
                                                   "List them with neurodecode.latents.available_spaces()"))
            opts = {k: v for k, v in value.items() if k not in _LATENT_TABLE_KEYS}
            out.append((str(key), name, opts, value.get("weights") or None))
    return out


def _generator_kwargs(name: str, weights: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    keys = {"versatile": ("uncond",), "sdxl-turbo": ("ip_adapter",), "lowlevel": ("decode_only",),
            "retrieval": ("space",), "sdxl-unclip": ("refine",)}.get(name, ())
    return {k: options[k] for k in keys if k in options}


def recipe_artefacts(recipe: Mapping[str, Any], *, dtype: Any = None) -> list[tuple[str, Any]]:
    """``(source, artefact)`` pairs of everything a resolved recipe reads (see the module docstring).

    Parameters
    ----------
    recipe : dict
        A resolved recipe (:func:`neurodecode._core.recipes.load_recipe`).
    dtype : str or None
        Load dtype of the generators (default: ``[generate] dtype``, else ``"bfloat16"``, the GPU
        default: fp16 variant files preferred where a repository has them).
    """
    from ..latents import space_artefacts
    from ._registry import GENERATORS, generator_class

    gen = dict(recipe.get("generate", {}) or {})
    dtype = dtype or gen.get("dtype") or "bfloat16"
    pairs: list[tuple[str, Any]] = []
    for key, space, opts, weights in _recipe_spaces(recipe):
        for art in space_artefacts(space, weights=weights, dtype=None, **opts):
            pairs.append((f"latents.{key} ({space})", art))
    options = {**dict(gen.get("options", {}) or {}), **{k: v for k, v in gen.items() if k in ("uncond", "decode_only",
                                                                                              "ip_adapter")}}
    for key, weights_key, opts in (("generator", "weights", options),
                                   ("captioner", "captioner_weights", dict(gen.get("captioner_options", {}) or {}))):
        name = gen.get(key)
        if not name or str(name) not in GENERATORS:
            continue
        cls = generator_class(str(name))
        weights = gen.get(weights_key)
        for art in cls.artefacts(weights, dtype, **_generator_kwargs(str(name), weights, opts)):
            pairs.append((f"generate.{key} ({name})", art))
    for name, value in dict(recipe.get("weights", {}) or {}).items():
        pairs.append((f"weights.{name}", _extra(str(name), value)))
    return pairs


def recipe_weights(recipe: Mapping[str, Any], *, dtype: Any = None) -> list[dict[str, Any]]:
    """Every weight a resolved recipe reads, with its exact files and licence (duplicates merged).

    Returns
    -------
    entries : list of dict
        ``name`` (where it is declared), ``kind`` (``"hub"`` or a non-hub kind), ``id`` (hub id,
        or what it is), ``revision``, ``licence``, ``non_commercial`` (bool), ``files`` (list of
        file groups: alternatives, preferred first), ``fetch`` (bool: a hub artefact), ``purpose``.
    """
    from ..io.hub import HubArtefact

    merged: dict[tuple[str, str | None], tuple[list[str], HubArtefact]] = {}
    others: list[dict[str, Any]] = []
    for source, art in recipe_artefacts(recipe, dtype=dtype):
        if isinstance(art, HubArtefact):
            key = (art.repo, art.revision)
            if key in merged:
                sources, prev = merged[key]
                merged[key] = ([*sources, source], prev.merged(art))
            else:
                merged[key] = ([source], art)
        else:
            others.append({"name": source, **art.as_dict()})
    for sources, art in merged.values():
        if not art.files:
            raise ValidationError(format_error(
                f"{sources[0]}.files", "the exact files read from the repository",
                f"none for {art.repo!r} (no space or generator of the recipe reads it)",
                'List them, e.g. files = ["config.json", "model.safetensors|pytorch_model.bin"] ("a|b": either)'))
    hub = [{"name": ", ".join(sources), **art.as_dict()} for sources, art in merged.values()]
    return hub + others


def download_weights(entries: Sequence[Mapping[str, Any]], *, dry_run: bool = False,
                     cache_dir: Any = None) -> dict[str, Any]:
    """Fetch the files of every hub entry into the hub cache (only the missing ones).

    Offline (``NEURODECODE_OFFLINE=1`` / ``HF_HUB_OFFLINE=1``) nothing is fetched: complete
    entries are reported, and the incomplete ones raise :class:`OfflineError` naming every
    missing file. ``dry_run`` fetches nothing and reports what the cache holds. Non-hub
    entries are listed, never fetched.

    Returns
    -------
    result : dict
        ``{"weights": [entry + {"path", "cached", "missing"}], "non_commercial": [ids],
        "not_fetched": [names of the non-hub entries]}``.
    """
    from .._core.config import is_offline
    from ..io.hub import cached_snapshot, missing_files, resolve_files

    done, failed = [], []
    for e in entries:
        row = dict(e)
        if not e.get("fetch"):
            row.update(path=None, cached=None, missing=[])
            done.append(row)
            continue
        groups = [tuple(g) for g in e["files"]]
        snap = cached_snapshot(e["id"], e.get("revision"), cache_dir)
        missing = missing_files(snap, groups) if snap is not None else [" or ".join(g) for g in groups]
        row.update(cached=not missing, missing=missing, path=str(snap) if snap is not None and not missing else None)
        if not dry_run and missing:
            try:
                row["path"] = str(resolve_files(e["id"], groups, revision=e.get("revision"), cache_dir=cache_dir,
                                                what=f"weights {e['id']}"))
                row.update(cached=True, missing=[])
            except OfflineError:
                failed.append(f"{e['id']} (missing {', '.join(missing)})")
        done.append(row)
    if failed:
        why = "offline mode is on (NEURODECODE_OFFLINE / HF_HUB_OFFLINE)" if is_offline() else "the download failed"
        raise OfflineError(format_error(
            "weights", f"every weight of the recipe fetched ({why})", "missing: " + "; ".join(failed),
            "Run `neurodecode download` on a machine with network access (offline mode off) and copy the hub cache "
            "(~/.cache/huggingface/hub), or point the recipe at local folders"))
    return {"weights": done, "non_commercial": sorted({str(e["id"]) for e in entries if e.get("non_commercial")}),
            "not_fetched": [str(e["name"]) for e in entries if not e.get("fetch")]}
