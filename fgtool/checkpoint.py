"""Self-describing checkpoints.

One file holds everything ``sample``/``cluster``/``resume`` need: the resolved config
(plain JSON-able values), the model's state dicts, EMA, optimisers, RNG states and step.
It loads with ``torch.load(weights_only=True)``: no pickled classes, so a checkpoint
never breaks when code moves. Writes are atomic (tmp file + fsync + ``os.replace``), so a
kill mid-write leaves the previous file intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

import torch

from .errors import FgtoolError

FORMAT = "fgtool-checkpoint"
VERSION = 1

# mkstemp makes 0600 files; give checkpoints the mode any other file would get (umask)
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write(path: str | Path, write: Callable[[IO], None], binary: bool = True) -> Path:
    """Write through ``write(file)`` to a temp file beside ``path``, fsync, then rename:
    a reader (or a resumed run) sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text), binary=False)


def save(path: str | Path, *, config: dict, step: int, nets: dict, ema: dict | None = None,
         optim: dict | None = None, rng: dict | None = None, extra: dict | None = None) -> None:
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model": config["model"]["name"],
        # config as a JSON string: plain str survives weights_only whatever the values
        "config": json.dumps(config),
        "step": int(step),
        "nets": {k: _cpu(v) for k, v in nets.items()},
        "ema": {k: _cpu(v) for k, v in (ema or {}).items()},
        "optim": optim or {},
        "rng": rng or {},
        "extra": extra or {},
    }
    atomic_torch_save(payload, path)


def _cpu(sd: dict) -> dict:
    return {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in sd.items()}


def load(path: str | Path) -> dict:
    """Load and validate a checkpoint; every failure is one line for the user."""
    p = Path(path)
    if p.is_dir():
        p = p / "last.pt"
    if not p.is_file():
        raise FgtoolError(f"checkpoint not found: {path}")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, foreign pickle, random bytes ...
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FgtoolError(f"{p} is not a readable fgtool checkpoint ({reason[:160]})") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise FgtoolError(f"{p} is not an fgtool checkpoint (no '{FORMAT}' header)")
    version = ck.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise FgtoolError(
            f"{p} has checkpoint format version {version}; this fgtool reads up to {VERSION}: upgrade fgtool"
        )
    try:
        ck["config"] = json.loads(ck["config"])
    except (KeyError, TypeError, ValueError):
        raise FgtoolError(f"{p} is an fgtool checkpoint with a damaged config") from None
    return ck
