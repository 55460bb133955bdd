"""Exported models: a checkpoint's inference weights (EMA where the run kept one) and its config
in one safetensors file, for sharing a trained model without its optimisers and discriminators.

Tensors are named ``<net>.<state-dict key>`` (``G.fc.weight``); the metadata holds the format
name and version, the model, the step and the resolved config as JSON. Reading it back gives
the same dict shape as :func:`fgtool.checkpoint.load`, so every command that takes ``--ckpt``
takes an export too."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .errors import FgtoolError
from .io.paths import check_regular_input, is_regular
from .migrations import CONFIG_VERSION

FORMAT = "fgtool-export"
VERSION = 1


def write(ck: dict, nets: tuple[str, ...] | None, out: str | Path) -> dict:
    """Write the nets ``nets`` (None: all) of a loaded checkpoint ``ck``, each with its EMA
    weights where the checkpoint has them, to ``out`` (atomically); returns what was written."""
    from safetensors.torch import save

    names = [k for k in ck["nets"] if nets is None or k in nets]
    tensors = {}
    for k in names:
        sd = {**ck["nets"][k], **ck["ema"].get(k, {})}
        for key, v in sd.items():
            if not torch.is_tensor(v):
                raise FgtoolError(f"net {k} holds a non-tensor entry {key!r}; it cannot be exported")
            tensors[f"{k}.{key}"] = v.detach().cpu().contiguous().clone()  # no shared storage
    meta = {"format": FORMAT, "version": str(VERSION), "config_version": str(CONFIG_VERSION),
            "model": ck["config"]["model"]["name"],
            "step": str(ck["step"]), "config": json.dumps(ck["config"])}
    data = save(tensors, metadata=meta)
    ckpt.atomic_write(out, lambda f: f.write(data))
    return {"nets": names, "ema": [k for k in names if k in ck["ema"]], "tensors": len(tensors),
            "bytes": len(data)}


def is_export(path: str | Path) -> bool:
    """A regular file that starts like a safetensors file (an 8-byte header length, then JSON)."""
    p = Path(path)
    if not is_regular(p):
        return False
    try:
        with open(p, "rb") as f:
            head = f.read(9)
        size = p.stat().st_size
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and 0 < struct.unpack("<Q", head[:8])[0] < size


def read(path: str | Path) -> dict:
    """An export as a checkpoint dict (config, step, nets; no EMA, optimisers or RNG), validated
    as :func:`fgtool.checkpoint.load` validates a checkpoint: every failure one line."""
    from safetensors import safe_open

    p = Path(path)
    check_regular_input(p, "checkpoint")
    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            flat = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # truncated or damaged file
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FgtoolError(f"{p} is not a readable safetensors file ({reason[:160]})") from None
    if meta.get("format") != FORMAT:
        raise FgtoolError(f"{p} is a safetensors file but not an fgtool export (no '{FORMAT}' metadata)")
    try:
        version, step = int(meta["version"]), int(meta["step"])
        config = json.loads(meta["config"])
        config_version = int(meta["config_version"]) if "config_version" in meta else None
    except (KeyError, TypeError, ValueError):
        raise FgtoolError(f"{p} is an fgtool export with damaged metadata") from None
    if version > VERSION:
        raise FgtoolError(f"{p} has export format version {version}; this fgtool reads up to {VERSION}: "
                          "upgrade fgtool")
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict) or step < 0:
        raise FgtoolError(f"{p} is an fgtool export with damaged metadata")
    nets: dict[str, dict] = {}
    for key, v in flat.items():
        net, _, name = key.partition(".")
        nets.setdefault(net, {})[name] = v
    ck = {"model": meta.get("model"), "config": config, "config_version": config_version, "step": step,
          "nets": nets, "ema": {}, "optim": {}, "rng": {}, "extra": {}}
    ckpt.upgrade_config(p, ck)
    ckpt.check_model(p, ck)
    return ck
