"""Layers without circles (issue 27): the import graph of `rag_app` and `ingest`, read with ast.

Every import counts: at module level, inside a function (a later import is still a dependency,
only a lazy one) and under `if TYPE_CHECKING:` (the module still knows the other one). An
import names the module it loads: `from rag_app.text import words` is an edge to
rag_app.text.words, `from rag_app.answering import answer` one to rag_app.answering (its
__init__). A package's own __init__, run before any of its modules, is not counted as their
dependency. Three checks:

- no circle between modules;
- no circle between packages: `ingest` taken as one node, `rag_app`'s subpackages
  (rag_app.ui, rag_app.eval, ...) each as one and its flat modules each as their own, so
  rag_app.service -> ingest.sync -> ... -> rag_app.service is a circle even when no single
  module closes it;
- the layer table: every module is in one group, and a group imports only the groups LAYERS
  lets it (the README's "Layers" note says the same in words).
"""

from __future__ import annotations

import ast
import builtins
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rag_app", "ingest")

# group -> the module prefixes in it (a prefix covers a package's modules)
GROUPS: dict[str, tuple[str, ...]] = {
    "foundation": ("rag_app.errors", "rag_app.settings", "rag_app.records", "rag_app.kinds",
                   "rag_app.hardware", "rag_app.helptext", "rag_app.terminal", "rag_app.text",
                   "rag_app.names", "rag_app.guard", "rag_app.language", "rag_app.hashing"),
    "models": ("rag_app.embedders", "rag_app.rerank", "rag_app.llm"),
    "index": ("rag_app.index",),
    "ingest": ("ingest",),
    "retrieval": ("rag_app.retrieve", "rag_app.fusion", "rag_app.compress", "rag_app.maps"),
    "answering": ("rag_app.answering", "rag_app.answer"),
    "service": ("rag_app.service",),
    "eval": ("rag_app.eval",),
    "ui": ("rag_app.ui",),
    "api": ("rag_app.api",),
    "cli": ("rag_app.cli", "rag_app.__main__"),
}

# group -> the groups it may import (besides its own)
_BELOW_INGEST = {"foundation", "models", "index"}
LAYERS: dict[str, set[str]] = {
    "foundation": set(),
    "models": {"foundation"},
    "index": {"foundation"},
    "ingest": _BELOW_INGEST,
    "retrieval": _BELOW_INGEST,
    "answering": _BELOW_INGEST | {"retrieval"},
    "service": _BELOW_INGEST | {"ingest", "retrieval"},
    "eval": _BELOW_INGEST | {"ingest", "retrieval", "answering", "service"},
    "ui": _BELOW_INGEST | {"ingest", "retrieval", "answering", "service"},
    "api": _BELOW_INGEST | {"ingest", "retrieval", "answering", "service", "ui"},
    "cli": _BELOW_INGEST | {"ingest", "retrieval", "answering", "service", "eval", "ui", "api"},
}

# Circles known and not yet broken: each one a sorted tuple of the modules in it. The test
# fails on any other circle, and on one of these once it is gone (then strike it here).
KNOWN_MODULE_CIRCLES: set[tuple[str, ...]] = set()
KNOWN_PACKAGE_CIRCLES: set[tuple[str, ...]] = set()
KNOWN_LAYER_BREACHES: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {module it imports: the line of the first such import}."""
    modules = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        edges = graph.setdefault(module, {})
        here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[: len(here) - node.level + 1]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                names = [f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in modules
                         else prefix for alias in node.names]
            else:
                continue
            for name in names:
                target = resolve(name)
                if target is not None and target != module:
                    edges.setdefault(target, node.lineno)
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _one_loop(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest path around the circle through the component's first node, for the message."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph.get(v, ())):
            if w == start:
                return [*paths[v], start]
            if w in members and w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    return component


def _describe(graph: dict[str, set[str]], components: list[list[str]]) -> str:
    return "\n".join(" -> ".join(_one_loop(graph, c)) for c in components)


def _simple(graph: dict[str, dict[str, int]]) -> dict[str, set[str]]:
    return {module: set(edges) for module, edges in graph.items()}


def _unit(module: str) -> str:
    """The node a module counts as in the package graph."""
    parts = module.split(".")
    if parts[0] == "ingest":
        return "ingest"
    package = ".".join(parts[:2])
    return package if _is_package(package) else module


def _is_package(unit: str) -> bool:
    return (ROOT / Path(*unit.split("."))).is_dir()


def group_of(module: str) -> str | None:
    if module in PACKAGES:  # a package's own __init__ (rag_app's is a docstring)
        return "foundation" if module == "rag_app" else module
    for group, prefixes in GROUPS.items():
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return group
    return None


def _check_known(found: set[tuple[str, ...]], known: set[tuple[str, ...]], what: str,
                 describe: str) -> None:
    new = found - known
    gone = known - found
    assert not new, f"new import {what}:\n{describe}"
    assert not gone, f"{what} broken, strike them from tests/test_layers.py: {sorted(gone)}"


def test_no_circle_between_modules() -> None:
    graph = _simple(import_graph())
    components = _circles(graph)
    found = {tuple(c) for c in components}
    new = [c for c in components if tuple(c) not in KNOWN_MODULE_CIRCLES]
    _check_known(found, KNOWN_MODULE_CIRCLES, "circles between modules",
                 _describe(graph, new))


def test_no_circle_between_packages() -> None:
    packages: dict[str, set[str]] = defaultdict(set)
    for module, edges in import_graph().items():
        packages[_unit(module)] |= {_unit(t) for t in edges} - {_unit(module)}
    # a circle of flat modules only is test_no_circle_between_modules' to report
    components = [c for c in _circles(packages) if any(_is_package(u) for u in c)]
    found = {tuple(c) for c in components}
    new = [c for c in components if tuple(c) not in KNOWN_PACKAGE_CIRCLES]
    _check_known(found, KNOWN_PACKAGE_CIRCLES, "circles between packages",
                 _describe(packages, new))


def test_every_module_is_in_one_group() -> None:
    modules = _modules()
    homeless = [m for m in modules if group_of(m) is None]
    assert not homeless, f"put these in a group of GROUPS in tests/test_layers.py: {homeless}"
    twice = [m for m in modules
             if sum(any(m == p or m.startswith(p + ".") for p in prefixes)
                    for prefixes in GROUPS.values()) > 1]
    assert not twice, f"in more than one group: {twice}"


def test_groups_import_only_the_layers_below() -> None:
    assert set(LAYERS) == set(GROUPS)
    breaches: dict[tuple[str, str], list[str]] = defaultdict(list)
    for module, edges in import_graph().items():
        mine = group_of(module)
        for target, line in edges.items():
            theirs = group_of(target)
            if mine is None or theirs is None or theirs == mine or theirs in LAYERS[mine]:
                continue
            breaches[(mine, theirs)].append(f"{module}:{line} imports {target}")
    new = {pair: where for pair, where in breaches.items() if pair not in KNOWN_LAYER_BREACHES}
    assert not new, "imports against the layer table (tests/test_layers.py LAYERS):\n" + "\n".join(
        f"{mine} -> {theirs}: " + "; ".join(where) for (mine, theirs), where in sorted(new.items()))
    gone = KNOWN_LAYER_BREACHES - set(breaches)
    assert not gone, f"layer breaches gone, strike them from KNOWN_LAYER_BREACHES: {sorted(gone)}"


# exceptions of the standard library a project error may also derive from (so that an except
# clause written for those still catches it)
_BUILTIN_ERRORS = {name for name, value in vars(builtins).items()
                   if isinstance(value, type) and issubclass(value, BaseException)}


def test_every_exception_derives_from_the_base_error() -> None:
    """Issue 27 point 4: every exception class defined in rag_app and ingest derives, through
    the project's own classes, from rag_app.errors.RagError (it may also derive from a
    built-in one such as ValueError). Read with ast: a class counts as an exception when one
    of its bases is a built-in exception or such a class of ours."""
    bases: dict[str, list[str]] = {}
    where: dict[str, str] = {}
    for module, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                names = [b.attr if isinstance(b, ast.Attribute) else getattr(b, "id", "")
                         for b in node.bases]
                bases[node.name] = names
                where[node.name] = module

    def is_exception(name: str, seen: frozenset[str] = frozenset()) -> bool:
        if name in _BUILTIN_ERRORS or name == "BaseException":
            return True
        return name in bases and name not in seen and any(
            is_exception(b, seen | {name}) for b in bases[name])

    def from_base(name: str, seen: frozenset[str] = frozenset()) -> bool:
        if name == "RagError":
            return True
        return name in bases and name not in seen and any(
            from_base(b, seen | {name}) for b in bases[name])

    strays = sorted(f"{where[n]}.{n}" for n in bases
                    if n != "RagError" and is_exception(n) and not from_base(n))
    assert not strays, f"exceptions that do not derive from RagError: {strays}"
