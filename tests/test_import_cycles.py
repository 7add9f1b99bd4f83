"""No import circles inside the package, at module level or inside functions (issue: recipes house).

Every ``import``/``from ... import`` statement of every module is read with ``ast`` (wherever it sits:
module level, functions, ``TYPE_CHECKING`` blocks), resolved to the neurodecode module it loads, and
the graph is searched for strongly connected components. A package's ``__init__`` counts as a module
of its own: ``from . import x`` in a submodule depends on the package's ``__init__``, and the
``__init__`` depends on the submodules it imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import neurodecode

ROOT = Path(neurodecode.__file__).parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in ROOT.rglob("*.py")}


def _resolve(mod: str, is_pkg: bool, level: int, target: str | None) -> str:
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, *([target] if target else [])])


def _edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, is_pkg, node.level, node.module) if node.level else (node.module or "")
                subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
                # `from pkg import submodule` loads the submodule; any other name is read from pkg itself
                names = subs + ([base] if len(subs) < len(node.names) else [])
            for name in names:
                if not name.startswith("neurodecode"):
                    continue
                while name and name not in modules:  # `from pkg.mod import func` -> pkg.mod
                    name = name.rsplit(".", 1)[0] if "." in name else ""
                if name and name != mod:
                    graph[mod].add(name)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_checker_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _resolve("neurodecode.recipes._fmri", False, 2, "data") == "neurodecode.data"
    assert _resolve("neurodecode.recipes", True, 1, "_run") == "neurodecode.recipes._run"


def test_no_import_cycles_in_the_package():
    cycles = _cycles(_edges(_modules()))
    assert cycles == [], "import circles (module-level or inside functions):\n" + "\n".join(
        " <-> ".join(c) for c in cycles)
