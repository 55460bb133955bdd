"""The run a command uses when ``--ckpt`` is left out: the newest one under ``runs/`` (of the
current folder) whose model can do the command."""

from __future__ import annotations

import json
from pathlib import Path

from . import registry
from .errors import FgtoolError

RUNS = Path("runs")


def newest_run(can: str, root: Path = RUNS) -> Path:
    """``root/*/last.pt`` of the newest run (by the checkpoint's modification time) whose model,
    read from the run's config.json, has the capability ``can``; a one-line error saying how to
    train one when there is none."""
    found = []
    for ck in root.glob("*/last.pt") if root.is_dir() else []:
        model = _model_of(ck.parent)
        if model in registry.names() and can in registry.capabilities(model):
            try:
                found.append((ck.stat().st_mtime_ns, str(ck), ck))
            except OSError:
                continue
    if found:
        return max(found)[2]
    able = [n for n in registry.names() if can in registry.capabilities(n)]
    where = f"no run under {root}/ has a model that can {can}" if root.is_dir() else f"no {root}/ folder here"
    raise FgtoolError(f"no --ckpt given and {where}; train one first (fgtool train --model {able[0]} --data DIR "
                      f"writes {root}/{able[0]}; models that can {can}: {', '.join(able)}) or pass --ckpt")


def _model_of(run: Path) -> str | None:
    """The model name in a run folder's config.json (None when it is missing or unreadable)."""
    try:
        raw = json.loads((run / "config.json").read_text())
        return raw["model"]["name"] if isinstance(raw["model"]["name"], str) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
