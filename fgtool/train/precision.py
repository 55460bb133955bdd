"""Which precision a run trains in.

1. ``train.precision`` when a recipe or ``--set`` names one (``no``, ``fp16``, ``bf16``);
2. else Accelerate's: ``accelerate launch --mixed_precision X``, or the ``mixed_precision`` of
   ``accelerate config``, which ``accelerate launch`` passes on as ACCELERATE_MIXED_PRECISION
   (``accelerate launch`` with neither sets ``no``);
3. else ``auto``: bf16 where the device computes it natively (a GPU with bf16, a CPU with
   AVX512-bf16, AMX or Arm's bf16 instructions), fp32 otherwise. bf16 autocast trains about
   2x faster than fp32 on an AVX512-bf16 CPU (docs/benchmarks.md); on a CPU without those
   instructions it is emulated and slower than fp32.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import FgtoolError

PRECISIONS = ("no", "fp16", "bf16")
_CPU_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # x86 flags; "bf16" in Arm's Features line


def cpu_has_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """True when the CPU lists a native bf16 instruction set (Linux's /proc/cpuinfo)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features") and _CPU_BF16_FLAGS & set(value.split()):
            return True
    return False


def device_has_bf16() -> bool:
    import torch

    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    return cpu_has_bf16()


def resolve(requested: str, env=os.environ) -> tuple[str, str]:
    """(precision, where it came from: "train.precision", "accelerate" or "auto")."""
    if requested != "auto":
        return requested, "train.precision"
    acc = env.get("ACCELERATE_MIXED_PRECISION", "").strip().lower()
    if acc:
        if acc not in PRECISIONS:
            raise FgtoolError(f"accelerate's mixed precision is {acc!r} (ACCELERATE_MIXED_PRECISION); fgtool "
                              "trains in no, fp16 or bf16: pass --mixed_precision bf16 or "
                              "--set train.precision=...")
        return acc, "accelerate"
    return ("bf16" if device_has_bf16() else "no"), "auto"
