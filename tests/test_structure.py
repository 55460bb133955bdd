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
                names |= {k for k, v in vars(klass).items() if callable(v) or isinstance(v, (staticmethod, classmethod))}
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
