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


def full_code(v, n: int, device=None) -> Tensor:
    """A fixed categorical code as an [n] long tensor: an int, a 1-element or an [n] tensor."""
    if torch.is_tensor(v):
        return v.to(device=device, dtype=torch.long).expand(n).clone() if v.numel() == 1 else v.to(device).long()
    return torch.full((n,), int(v), dtype=torch.long, device=device)
