"""The weights a recipe needs, their licences, and fetching them into the hub cache.

A recipe's ``[weights]`` table lists every external weight, either as a table per entry::

    [weights.versatile]
    id = "shi-labs/versatile-diffusion"     # hub id (or `open_clip = "ViT-H-14/laion2b_s32b_b79k"`)
    revision = "main"                       # optional
    licence = "MIT"
    files = ["image_unet/*", "vae/*"]       # optional allow-patterns

or as ``name = "owner/repo"``. The generator named in ``[generate]`` (and its captioner) adds
its published weights (``WEIGHTS`` tables of :mod:`neurodecode.generate`) when the recipe
does not list them and does not use the tiny tier.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._core.errors import OfflineError, ValidationError
from .._core.validation import format_error

__all__ = ["recipe_weights", "download_weights"]

_NON_COMMERCIAL = ("non-commercial", "noncommercial", "non commercial", "cc-by-nc", "research only", "research-only")


def _entry(name: str, value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = {"id": value}
    if not isinstance(value, Mapping):
        raise ValidationError(format_error(f"weights.{name}", "a hub id string or a table with id and licence",
                                           value, 'Write e.g. [weights.vae] id = "owner/repo" licence = "MIT"'))
    hub_id = value.get("id") or value.get("hub_id") or value.get("repo")
    tag = value.get("open_clip")
    if hub_id is None and tag is not None:
        hub_id = _open_clip_hub_id(str(tag))
    if not hub_id:
        raise ValidationError(format_error(f"weights.{name}", "an `id` (hub id) or an `open_clip` tag", dict(value)))
    licence = str(value.get("licence", value.get("license", "unknown (see the model card)")))
    files = value.get("files")
    return {"name": name, "id": str(hub_id), "revision": value.get("revision"), "licence": licence,
            "files": list(files) if files else None, "open_clip": tag,
            "non_commercial": bool(value.get("non_commercial", False)) or any(k in licence.lower() for k in _NON_COMMERCIAL)}


def _open_clip_hub_id(tag: str) -> str | None:
    """``"ViT-H-14/laion2b_s32b_b79k"`` -> the hub repo open_clip downloads it from (None if unknown)."""
    model, _, pretrained = tag.partition("/")
    try:
        import open_clip

        cfg = open_clip.get_pretrained_cfg(model, pretrained)
    except Exception:  # open_clip missing or unknown tag
        return None
    hub = (cfg or {}).get("hf_hub") or ""
    return hub.rstrip("/") or None


def recipe_weights(recipe: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every external weight of a resolved recipe, with its licence.

    Returns
    -------
    entries : list of dict
        ``name``, ``id`` (hub id), ``revision``, ``licence``, ``files`` (allow-patterns or
        None), ``non_commercial`` (bool).
    """
    from . import GENERATORS, generator_weights

    entries = [_entry(str(k), v) for k, v in dict(recipe.get("weights", {})).items()]
    listed = {e["id"] for e in entries}
    gen = dict(recipe.get("generate", {}))
    for key, weights_key in (("generator", "weights"), ("captioner", "captioner_weights")):
        name = gen.get(key)
        if not name or gen.get(weights_key) == "tiny" or name not in GENERATORS:
            continue
        for hub_id, info in generator_weights(str(name)).items():
            if hub_id not in listed:
                entries.append(_entry(f"{name}:{hub_id}", {"id": hub_id, **info}))
                listed.add(hub_id)
    return entries


def download_weights(entries: list[dict[str, Any]], *, dry_run: bool = False) -> dict[str, Any]:
    """Fetch each entry into the hub cache (``huggingface_hub.snapshot_download``).

    Offline (``NEURODECODE_OFFLINE=1`` / ``HF_HUB_OFFLINE=1``) nothing is fetched: entries
    already cached are reported, and the missing ones raise :class:`OfflineError` naming them
    all. A network failure is reported the same way.

    Returns
    -------
    result : dict
        ``{"weights": [{id, licence, non_commercial, path}], "non_commercial": [ids]}``.
    """
    from huggingface_hub import snapshot_download

    from .._core.config import is_offline

    offline = is_offline()
    done, missing = [], []
    for e in entries:
        kwargs = {"repo_id": e["id"], "revision": e["revision"], "allow_patterns": e["files"]}
        path = None
        if not dry_run:
            try:
                path = snapshot_download(local_files_only=True, **kwargs)
            except Exception:
                if offline:
                    missing.append(f"{e['id']} (not in the local cache)")
                    continue
                try:
                    path = snapshot_download(**kwargs)
                except Exception as exc:
                    missing.append(f"{e['id']} ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})")
                    continue
        done.append({"id": e["id"], "licence": e["licence"], "non_commercial": e["non_commercial"],
                     "path": str(path) if path else None})
    if missing:
        why = "offline mode is on (NEURODECODE_OFFLINE / HF_HUB_OFFLINE)" if offline else "the download failed"
        raise OfflineError(format_error(
            "weights", f"every weight of the recipe fetched ({why})", "missing: " + "; ".join(missing),
            "Run `neurodecode download` on a machine with network access (offline mode off) and copy the hub cache "
            "(~/.cache/huggingface/hub), or point the recipe at local folders"))
    return {"weights": done, "non_commercial": [e["id"] for e in entries if e["non_commercial"]]}
