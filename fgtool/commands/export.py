"""``fgtool export``: a checkpoint's inference weights and config as one safetensors file."""

from __future__ import annotations

from pathlib import Path

from .. import checkpoint as ckpt
from .. import export as exported
from .. import registry
from ..io.paths import check_output


def export(ckpt_path: str, out: str) -> dict:
    """Write the nets that sample/mix/gif/cluster/segment use (the backend's inference nets,
    EMA weights where the run kept them) and the run's config to ``out`` (safetensors)."""
    src = Path(ckpt_path)
    src = src / "last.pt" if src.is_dir() else src
    check_output(out, [src], suffix=".safetensors")
    ck = ckpt.load(src)
    nets = registry.get(ck["config"]["model"]["name"]).inference_nets
    res = exported.write(ck, nets, out)
    return {"checkpoint": str(src), "out": str(out), "model": ck["config"]["model"]["name"], "step": ck["step"],
            **res}
