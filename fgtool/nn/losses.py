"""Loss pieces shared by the backends."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def cosine_logits(h: Tensor, centres: Tensor, tau: float) -> Tensor:
    """[N, K] cosine similarities of features to centres, divided by a temperature."""
    return F.normalize(h.float(), dim=1) @ F.normalize(centres.float(), dim=1).t() / tau


def nt_xent(a: Tensor, b: Tensor, tau: float) -> Tensor:
    """SimCLR's NT-Xent: a[i] and b[i] are two views of one image, every other row of the
    2N batch is a negative."""
    f = F.normalize(torch.cat([a, b]).float(), dim=1)
    n = a.shape[0]
    sim = f @ f.t() / tau
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=sim.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(sim.device)
    return F.cross_entropy(sim, target)


def binary_entropy(m: Tensor, eps: float = 1e-6) -> Tensor:
    """Elementwise -m log m - (1 - m) log(1 - m): pushes soft masks towards 0 or 1."""
    m = m.float().clamp(eps, 1 - eps)
    return -(m * m.log() + (1 - m) * (1 - m).log())
