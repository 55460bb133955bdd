"""Mask compositing and code helpers shared by the layered generators."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def composite(fg: Tensor, mask: Tensor, bg: Tensor) -> Tensor:
    """``mask * fg + (1 - mask) * bg``: stitch a foreground layer onto a canvas."""
    return mask * fg + (1.0 - mask) * bg


def one_hot(idx: Tensor, n: int) -> Tensor:
    return F.one_hot(idx.long(), n).float()


def randint(n: int, high: int, generator: torch.Generator | None, device=None) -> Tensor:
    return torch.randint(0, high, (n,), generator=generator, device=device)


def randn(n: int, dim: int, generator: torch.Generator | None, device=None) -> Tensor:
    return torch.randn(n, dim, generator=generator, device=device)
