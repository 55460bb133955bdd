"""A trained model rebuilt from its checkpoint alone, for the commands and the metrics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import checkpoint as ckpt
from . import config as C
from . import export, registry
from .errors import FgtoolError


@dataclass
class Loaded:
    cfg: C.RunConfig
    backend: Any
    nets: dict
    step: int
    path: Path
    # inference precision: "auto" = bf16 autocast where the device computes bf16 natively
    # (as train.precision=auto), "bf16", or "no" (fp32)
    precision: str = "auto"

    def autocast(self):
        """The context ``sample``, ``cluster`` and ``segment`` run their networks in: bf16
        autocast where supported. Masks and cluster assignments agree with fp32 on a fixed
        set (tests/train/test_inference_precision.py)."""
        from .train.precision import device_has_bf16

        dev = self.device.type
        on = self.precision == "bf16" or (self.precision == "auto" and dev in ("cpu", "cuda") and device_has_bf16())
        return torch.autocast(dev, dtype=torch.bfloat16, enabled=on)

    @property
    def device(self) -> torch.device:
        return next(next(iter(self.nets.values())).parameters()).device


def load(path: str | Path, device: str | None = None) -> Loaded:
    """Rebuild a model from its checkpoint or from an export (:mod:`fgtool.export`) alone (EMA
    weights where present), eval mode."""
    ck = export.read(path) if export.is_export(path) else ckpt.load(path)
    cfg = C.from_dict(ck["config"])
    backend_cls = registry.get(cfg.model)
    backend = backend_cls(cfg.model_cfg, cfg.data.size)
    nets = backend.build()
    if backend.inference_nets:  # discriminators are training-only: don't build what isn't used
        nets = {k: v for k, v in nets.items() if k in backend.inference_nets}
    missing = [k for k in nets if k not in ck["nets"]]
    if missing:
        raise FgtoolError(f"{path}: checkpoint lacks the weights of {', '.join(missing)}")
    try:
        for k, sd in ck["nets"].items():
            if k in nets:
                nets[k].load_state_dict(sd)
        for k, sd in ck["ema"].items():
            if k in nets:
                nets[k].load_state_dict(sd)
    except (RuntimeError, KeyError) as e:
        reason = str(e).splitlines()[0][:100]
        raise FgtoolError(f"{path}: weights do not fit the model described in it ({reason})") from None
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    for m in nets.values():
        m.to(dev).eval()
        if cfg.train.channels_last:  # same memory format as training: same numbers
            m.to(memory_format=torch.channels_last)
    return Loaded(cfg, backend, nets, ck["step"], Path(path))


def require_segmenter(m: Loaded) -> None:
    m.backend.require("segment")
    if not m.backend.segment_ready(m.step):
        start = getattr(m.cfg.model_cfg, "seg_start", None)
        when = "model.seg_start=never: no segmenter stage" if start in (None, "never") else f"model.seg_start={start}"
        raise FgtoolError(f"{m.path} (step {m.step}) has no trained segmenter yet ({when}); "
                          "train past that step first")
