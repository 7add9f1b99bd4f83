"""Recipes: TOML files in ``pipelines/`` that name everything a run needs.

A recipe has sections ``[data]``, ``[latents]``, ``[decoder]``, ``[train]``,
``[generate]``, ``[evaluate]``, ``[weights]`` and ``[presets.<name>]`` (overrides
applied by ``--preset <name>``, e.g. ``tiny``). ``--set section.key=value``
overrides any field; values are parsed as TOML literals when possible (``3``,
``1e-4``, ``true``, ``[1, 2]``, ``"text"``) and kept as strings otherwise. The
resolved recipe is saved beside every output.
"""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .errors import ValidationError
from .files import write_json
from .validation import check_path, format_error

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["load_recipe", "apply_overrides", "deep_merge", "save_resolved_recipe"]


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``update`` into a copy of ``base`` (tables merge, other values replace)."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(recipe: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (nested keys with dots)."""
    out = copy.deepcopy(dict(recipe))
    for item in overrides:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise ValidationError(format_error("--set", "section.key=value", repr(item),
                                               "Write e.g. --set train.epochs=3"))
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        node = out
        for k in keys[:-1]:
            if not isinstance(node.setdefault(k, {}), dict):
                raise ValidationError(format_error("--set", f"{k!r} to be a table", repr(node[k])))
            node = node[k]
        node[keys[-1]] = _parse_value(raw.strip())
    return out


def load_recipe(path: str | os.PathLike[str], *, preset: str | None = None,
                overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Read a recipe, apply a preset and ``--set`` overrides, and record where it came from.

    Parameters
    ----------
    path : path-like
        The recipe TOML file.
    preset : str or None
        Name of a ``[presets.<name>]`` table to merge over the recipe (e.g. ``"tiny"``).
    overrides : iterable of str
        ``section.key=value`` strings applied last.

    Returns
    -------
    recipe : dict
        The resolved recipe; ``recipe["_source"]`` holds the path, preset and overrides.
    """
    p = check_path(path, "recipe", kind="file", hint="Recipes live in pipelines/*.toml")
    try:
        raw = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValidationError(format_error("recipe", "valid TOML", f"{p}: {exc}")) from exc
    presets = raw.pop("presets", {})
    recipe = raw
    if preset is not None:
        if preset not in presets:
            raise ValidationError(format_error("preset", "one of " + (", ".join(map(repr, presets)) or "(none defined)"),
                                               repr(preset), f"Add [presets.{preset}] to {p.name} or drop --preset"))
        recipe = deep_merge(recipe, presets[preset])
    overrides = list(overrides)
    recipe = apply_overrides(recipe, overrides)
    recipe["_source"] = {"path": str(p), "name": p.stem, "preset": preset, "overrides": overrides}
    return recipe


def save_resolved_recipe(recipe: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> Path:
    """Write the resolved recipe as ``recipe.json`` in ``out_dir`` (atomically)."""
    return write_json(Path(out_dir) / "recipe.json", dict(recipe))
