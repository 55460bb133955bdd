"""``fgtool info`` and ``fgtool models``: a checkpoint's config, step and capabilities; the registered models."""

from __future__ import annotations

from .. import checkpoint as ckpt
from .. import registry
from ..loading import load


def info(ckpt_path: str) -> dict:
    m = load(ckpt_path, device="cpu")
    # count every net the model trains, discriminators included (load keeps only inference nets)
    params = {k: sum(p.numel() for p in v.parameters()) for k, v in m.backend.build().items()}
    return {"checkpoint": str(ckpt_path), "model": m.cfg.model, "step": m.step,
            "capabilities": m.backend.capabilities(), "params": params,
            "format_version": ckpt.VERSION, "config": m.cfg.to_dict()}


def models() -> list[dict]:
    return [{"name": n, "capabilities": registry.capabilities(n)} for n in registry.names()]
