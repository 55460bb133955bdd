"""The package's shape: generic code reaches a backend's optional abilities through the
protocols in fgtool/backends/base.py, never by probing for a method by name."""

from __future__ import annotations

import ast
from pathlib import Path

from fgtool import registry
from fgtool.backends.base import PROTOCOLS, Backend

PKG = Path(__file__).resolve().parents[1] / "fgtool"


def _backend_methods() -> set[str]:
    """Names of the methods of Backend, the ability protocols and every registered model."""
    names: set[str] = set()
    for cls in [Backend, *PROTOCOLS, *(registry.get(n) for n in registry.names())]:
        for klass in cls.__mro__:
            if klass.__module__.startswith("fgtool.backends"):
                names |= {k for k, v in vars(klass).items()
                          if callable(v) or isinstance(v, (staticmethod, classmethod))}
    return names


def probes(source: str, methods: set[str]) -> list[str]:
    """``hasattr``/``getattr`` calls in ``source`` that look up a backend method: the name is
    one of ``methods``, or the object is spelled with "backend"."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("hasattr", "getattr") and len(node.args) >= 2):
            continue
        obj, attr = node.args[0], node.args[1]
        named = isinstance(attr, ast.Constant) and attr.value in methods
        if named or "backend" in ast.unparse(obj):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_probe_check_finds_probes():
    methods = _backend_methods()
    assert {"segment_parts", "remove_object", "translate", "assign", "code_sizes", "encode"} <= methods
    assert probes("hasattr(m.backend, 'segment_parts')", methods)
    assert probes("getattr(be, 'feature_ready', None)", methods)
    assert probes("getattr(m.backend, name)", methods)
    assert not probes("getattr(m.cfg.model_cfg, 'seg_start', 0)", methods)
    assert not probes("getattr(net, '_orig_mod', net)", methods)


def test_no_backend_method_probes_outside_backends():
    methods = _backend_methods()
    bad = []
    for p in sorted(PKG.rglob("*.py")):
        if "backends" in p.relative_to(PKG).parts:
            continue
        bad += [f"{p.relative_to(PKG.parent)}:{hit}" for hit in probes(p.read_text(), methods)]
    assert not bad, "use the protocols in fgtool/backends/base.py:\n" + "\n".join(bad)


# ----------------------------------------------------------------------------- import cycles


def module_name(path: Path, root: Path = PKG) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking(node: ast.AST) -> bool:
    t = node.test if isinstance(node, ast.If) else None
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` (imports for
    annotations only, never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if _type_checking(node) and child in node.body:
                continue
            todo.append(child)


def import_graph(root: Path = PKG) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, at any depth (function-level imports
    too), with relative imports resolved; ``from pkg import name`` counts as an import of
    ``pkg.name`` where that is a module, else of ``pkg``."""
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    top = root.name
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        deps: set[str] = set()
        for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - (node.level - 1)]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                targets = [f"{src}.{a.name}" if f"{src}.{a.name}" in files else src for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in files:  # import a.b.c of a function-less path: the nearest module
                    t = t.rpartition(".")[0]
                if t and (t == top or t.startswith(top + ".")) and t != mod:
                    deps.add(t)
        graph[mod] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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


def test_the_cycle_check_finds_cycles(tmp_path):
    pkg = tmp_path / "fgtool"
    (pkg / "metrics").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "metrics" / "__init__.py").write_text("")
    (pkg / "api.py").write_text("from .metrics.mix import score\n")
    (pkg / "metrics" / "mix.py").write_text("def score():\n    from ..api import _helper\n")
    (pkg / "other.py").write_text("import fgtool.metrics.mix\nfrom fgtool import api\n")
    g = import_graph(pkg)
    assert g["fgtool.api"] == {"fgtool.metrics.mix"}
    assert g["fgtool.metrics.mix"] == {"fgtool.api"}
    assert g["fgtool.other"] == {"fgtool.metrics.mix", "fgtool.api"}
    assert cycles(g) == [["fgtool.api", "fgtool.metrics.mix"]]
    (pkg / "metrics" / "mix.py").write_text("def score():\n    from ..io import _helper\n")
    assert cycles(import_graph(pkg)) == []
    # an import for annotations only is no cycle
    (pkg / "metrics" / "mix.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                             "    from ..api import Thing\nelse:\n    import fgtool.other\n")
    assert import_graph(pkg)["fgtool.metrics.mix"] == {"fgtool.other"}


def test_no_import_cycles_inside_the_package():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


# ----------------------------------------------------------------------------- file size


MAX_LINES = 600


def test_no_module_over_600_lines():
    long = {str(p.relative_to(PKG.parent)): n for p in sorted(PKG.rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these modules (over {MAX_LINES} lines): {long}"
