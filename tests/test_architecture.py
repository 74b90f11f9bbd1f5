"""The package's layout keeps its layers (docs/architecture.md): imports run downwards only, no
import circle, no module reaches into another's private names, and the public API resolves.

Imports are read from the source with ``ast`` (nothing is imported), at module level and inside
functions alike, so a circle hidden in a function body counts too.
"""

from __future__ import annotations

import ast
import importlib
import re
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "rtopt"

LAYERS = ("common", "model", "dose", "problem", "backends", "planning", "decisions", "outputs",
          "cli")
"""Sub-packages from the bottom up; a module may import its own layer and the layers below.  The
package root (``rtopt/__init__.py``, the lazy public API) and ``rtopt/__main__.py`` sit above
them all."""

ROOT_CONSTANTS = {"__version__"}
"""Names any layer may read from the package root (constants it defines itself: importing them
loads nothing else, the root's re-exports being lazy)."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _resolve(name: str) -> str:
    """The module an import of ``name`` loads (its longest prefix that is a module here)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _imports(module: str) -> list[tuple[str, str | None, int, ast.AST]]:
    """``(target module, imported name or None, line, node)`` of every rtopt import of
    ``module``, at module level and inside functions."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(_resolve(a.name), None, node.lineno, node) for a in node.names
                    if a.name == "rtopt" or a.name.startswith("rtopt.")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            if base != "rtopt" and not base.startswith("rtopt."):
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                if sub in MODULES:                      # a sub-module, imported by name
                    out.append((sub, None, node.lineno, node))
                else:
                    out.append((_resolve(base), a.name, node.lineno, node))
    return out


IMPORTS = {m: _imports(m) for m in MODULES}


def _layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return len(LAYERS)                              # the package root: above everything
    return LAYERS.index(parts[1])


def test_every_sub_package_is_a_known_layer():
    subs = {p.parent.name for p in PKG.glob("*/__init__.py")}
    assert subs == set(LAYERS), (sorted(subs - set(LAYERS)), sorted(set(LAYERS) - subs))


def test_imports_run_downwards_only():
    upward = []
    for src, edges in IMPORTS.items():
        for dst, name, line, _ in edges:
            if dst == "rtopt" and name in ROOT_CONSTANTS:
                continue
            if _layer(dst) > _layer(src):
                upward.append(f"{MODULES[src].relative_to(ROOT)}:{line}: {src} imports {dst}"
                              + (f".{name}" if name else ""))
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def _cycles() -> list[list[str]]:
    graph = defaultdict(set)
    for src, edges in IMPORTS.items():
        for dst, *_ in edges:
            if dst != src and dst != "rtopt":
                graph[src].add(dst)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:                          # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
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
                found.append(sorted(comp))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(MODULES)))
    try:
        for v in sorted(MODULES):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return found


def test_no_import_circles():
    assert _cycles() == []


def test_cycle_finder_finds_a_circle(monkeypatch):
    # the check above must be able to fail: a made-up edge back from the model to the CLI
    edges = dict(IMPORTS)
    edges["rtopt.model.parameters"] = IMPORTS["rtopt.model.parameters"] + [
        ("rtopt.cli", None, 0, None)]
    edges["rtopt.cli"] = IMPORTS["rtopt.cli"] + [("rtopt.model.parameters", None, 0, None)]
    monkeypatch.setitem(globals(), "IMPORTS", edges)
    assert any({"rtopt.cli", "rtopt.model.parameters"} <= set(c) for c in _cycles())


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_module_imports_another_modules_private_names():
    found = []
    for src, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        bound = {}                                      # local name -> imported rtopt object
        for dst, name, line, node in IMPORTS[src]:
            if dst == src:
                continue
            if name is not None and _private(name):
                found.append(f"{path.relative_to(ROOT)}:{line}: {dst}.{name}")
            for a in node.names:
                if a.name.startswith("rtopt") or isinstance(node, ast.ImportFrom):
                    bound[a.asname or a.name.split(".")[0]] = dst
            package, _, mod = dst.rpartition(".")
            if _private(mod) and not (src == package or src.startswith(package + ".")):
                found.append(f"{path.relative_to(ROOT)}:{line}: private module {dst}")
        for node in ast.walk(tree):         # alias._name, Backend._helper, Backend()._helper
            if not (isinstance(node, ast.Attribute) and _private(node.attr)):
                continue
            base = node.value
            while isinstance(base, (ast.Call, ast.Attribute, ast.Subscript)):
                base = base.func if isinstance(base, ast.Call) else base.value
            if isinstance(base, ast.Name) and base.id in bound:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: "
                             f"{ast.unparse(node)} ({bound[base.id]})")
    assert not found, "private names used across modules:\n" + "\n".join(sorted(set(found)))


def _readme_library_names() -> set[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return set(re.findall(r"(?<![\w/.])rtopt\.([A-Za-z_]\w*)", text))


def test_public_api_resolves():
    import rtopt

    names = set(rtopt.__all__) | _readme_library_names()
    assert {"solve", "Problem", "Plan", "simulate"} <= names
    missing = []
    for name in sorted(names):
        try:
            obj = getattr(rtopt, name)
        except AttributeError:
            try:
                obj = importlib.import_module(f"rtopt.{name}")     # a sub-package, e.g. rtopt.cli
            except ImportError:
                missing.append(name)
                continue
        assert obj is not None, name
    assert not missing, f"documented names that do not resolve: {missing}"
    assert callable(rtopt.solve) and callable(rtopt.simulate)
    import rtopt.planning.solve  # noqa: F401  (the module does not hide the function)

    assert callable(rtopt.solve)


def test_architecture_page_matches_the_tree():
    """docs/architecture.md names every sub-package in its codemap, and only those."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `rtopt/(\w+)/` ", text, flags=re.MULTILINE))
    subs = {p.parent.name for p in PKG.glob("*/__init__.py")}
    assert listed == subs, (sorted(listed - subs), sorted(subs - listed))
    layer_line = re.search(r"^Layers, bottom up: (.*)$", text, flags=re.MULTILINE)
    assert layer_line, "the page states the layer order"
    assert tuple(re.findall(r"`(\w+)`", layer_line.group(1))) == LAYERS
    files = set(re.findall(r"`(\w+\.py)`", text.split("The simulator (")[1].split("## ")[0]))
    assert files == {p.name for p in (PKG / "model" / "simulator").glob("*.py")} - {"__init__.py"}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("rtopt.model")))
def test_the_model_imports_no_solver_layer(module):
    """The one statement of the science imports nothing above it (no back-end, no CLI)."""
    assert all(_layer(dst) <= LAYERS.index("model") for dst, *_ in IMPORTS[module]
               if dst != "rtopt")


LOCAL_IMPORTS_ALLOWED = {
    ("rtopt.model.uncertainty", "rtopt.model.simulator"):
        "sampling biology needs the simulator (numba); instance validation reads this module",
    ("rtopt.decisions.distributed", "rtopt"):
        "the version probe runs on a Dask worker, where rtopt may be missing",
}
"""Function-local imports of rtopt modules outside the CLI, with the reason each is local."""


def test_rtopt_imports_are_at_module_level_outside_the_cli():
    """Inside functions only where start-up time needs it: the CLI (``rtopt --help`` loads no
    numpy), the package root (lazy API), the back-end registry (optional solver libraries)."""
    found = []
    for src, path in MODULES.items():
        if src.startswith("rtopt.cli") or src in ("rtopt", "rtopt.__main__"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        local = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef,
                                                                ast.AsyncFunctionDef))
                 for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
        for dst, _, line, node in IMPORTS[src]:
            if id(node) in local and (src, dst) not in LOCAL_IMPORTS_ALLOWED:
                found.append(f"{path.relative_to(ROOT)}:{line}: {dst}")
    assert not found, "move to the top of the module (or state why here):\n" + "\n".join(found)
