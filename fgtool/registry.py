"""Backends by name. ``--model finegan`` resolves here and nowhere else.

A backend registers itself with ``@register``; its capabilities are read off the ability
protocols it declares (fgtool/backends/base.py), so the CLI can refuse a command a model
cannot do in one line.
"""

from __future__ import annotations

import importlib
import pkgutil

from .errors import FgtoolError

_REGISTRY: dict[str, type] = {}


def register(cls: type) -> type:
    name = getattr(cls, "name", None)
    if not name:
        raise TypeError(f"{cls.__name__} needs a class attribute 'name'")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise TypeError(f"backend name '{name}' is registered twice")
    _REGISTRY[name] = cls
    return cls


def _load_all() -> None:
    # Importing the package modules runs their @register lines. Adding a backend is one
    # file in fgtool/backends/; nothing here needs editing.
    from . import backends

    for mod in pkgutil.iter_modules(backends.__path__):
        if not mod.name.startswith("_") and mod.name != "base":
            importlib.import_module(f"{backends.__name__}.{mod.name}")


def names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def get(name: str) -> type:
    _load_all()
    if name not in _REGISTRY:
        raise FgtoolError(f"unknown model '{name}'; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def capabilities(name_or_cls) -> list[str]:
    cls = get(name_or_cls) if isinstance(name_or_cls, str) else name_or_cls
    return cls.capabilities()
