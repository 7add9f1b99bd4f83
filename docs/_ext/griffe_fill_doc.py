"""Griffe extension for the API reference: shared parameter docs and Sphinx roles.

- Expands ``%(name)s`` placeholders the way ``neurodecode._core.docs.fill_doc`` does: the library fills
  shared parameter descriptions into ``__doc__`` at import time, but griffe reads the source statically,
  so without this the reference would show (and warn about) the raw placeholders.
- Renders Sphinx cross-reference roles (``:func:`~neurodecode.data.load_nsd```) as inline code
  (```load_nsd```), since Markdown has no such roles.

Only the docstrings griffe loaded change; the library's code is neither imported nor modified.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

from neurodecode._core.docs import docdict

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|data|mod|obj|exc|const|ref|term):`(~?)([^`<]+?)(?:\s*<([^>]+)>)?`")


def _role(match: re.Match[str]) -> str:
    tilde, target, explicit = match.groups()
    name = target.strip()
    if explicit is None and tilde:
        name = name.rsplit(".", 1)[-1]
    return f"`{name}`"


def expand(text: str) -> str:
    """Replace placeholder lines by their ``docdict`` entries (indented alike) and roles by inline code."""
    out: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        key = stripped[2:-2]
        if stripped.startswith("%(") and stripped.endswith(")s") and key in docdict:
            indent = line[: len(line) - len(line.lstrip())]
            out.extend(indent + entry for entry in docdict[key].splitlines())
        else:
            out.append(line)
    return _ROLE.sub(_role, "\n".join(out))


class FillDoc(griffe.Extension):
    """Apply :func:`expand` to every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and ("%(" in obj.docstring.value or ":`" in obj.docstring.value):
            obj.docstring.value = expand(obj.docstring.value)
