"""Mask compositing and code helpers shared by the layered generators."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import FgtoolError


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


# ----------------------------------------------------------------------------- translation-equivariant geometry


def pixel_grid(res: int, margin: int, device=None, dtype=torch.float32) -> Tensor:
    """Pixel-centre coordinates [res + 2*margin, res + 2*margin, 2] (x, y): the image is
    [-1, 1]^2 at ``res`` px, and the grid extends ``margin`` pixels beyond it on every side
    (GANSeg eq. 12: range [-1 - 2m/res, 1 + 2m/res] up to the half-pixel offset)."""
    i = torch.arange(res + 2 * margin, device=device, dtype=dtype)
    c = (i - margin + 0.5) * (2.0 / res) - 1.0
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([xx, yy], -1)


def upsample_crop(x: Tensor, margin: int, mode: str = "bilinear") -> Tensor:
    """2x upsampling of a map that carries ``margin`` px on each side, then a crop back to
    ``margin`` px (the margin doubled to 2m): keeps the border band fixed in pixels, so
    the zero-padding of later convs stays away from the image (GANSeg, after StyleGAN3)."""
    kw = {"align_corners": False} if mode == "bilinear" else {}
    up = F.interpolate(x, scale_factor=2, mode=mode, **kw)
    if margin == 0:
        return up
    return up[..., margin:-margin, margin:-margin]


def crop_margin(x: Tensor, margin: int) -> Tensor:
    return x if margin == 0 else x[..., margin:-margin, margin:-margin]


def gaussian_heatmaps(grid: Tensor, centres: Tensor, sigma: Tensor, floor: float = 0.0) -> Tensor:
    """``exp(-|p - x_k|^2 / (sigma_k^2 + floor^2))`` (GANSeg eq. 4, sigma^2 not 2 sigma^2).

    grid [H, W, 2], centres [N, K, 2], sigma [N, K] -> [N, K, H, W]."""
    d2 = ((grid[None, None] - centres[:, :, None, None, :]) ** 2).sum(-1)
    return torch.exp(-d2 / (sigma[:, :, None, None] ** 2 + floor ** 2 + 1e-8))


class RelativeFourier(torch.nn.Module):
    """Low-frequency positional encoding of pixel-to-point offsets (GANSeg eq. 5):
    ``[sin(pi FC(d)), cos(pi FC(d))]`` with ``d = [p - x_1, ..., p - x_P]``. Only offsets
    enter, never absolute coordinates, so moving every point moves the map.

    grid [H, W, 2], points [N, P, 2] -> [N, 2 * (out_ch // 2), H, W]."""

    def __init__(self, n_points: int, out_ch: int, init_scale: float = 1.0):
        super().__init__()
        self.fc = torch.nn.Linear(2 * n_points, out_ch // 2)
        torch.nn.init.normal_(self.fc.weight, 0.0, init_scale / (2 * n_points) ** 0.5)  # low frequencies
        torch.nn.init.zeros_(self.fc.bias)

    def forward(self, grid: Tensor, points: Tensor) -> Tensor:
        d = grid[None, :, :, None, :] - points[:, None, None, :, :]  # [N, H, W, P, 2]
        h = self.fc(d.flatten(3)) * torch.pi  # [N, H, W, C/2]
        return torch.cat([torch.sin(h), torch.cos(h)], -1).permute(0, 3, 1, 2).contiguous()


# ----------------------------------------------------------------------------- mixup (OneGAN)


def sample_beta(n: int, lo: float, hi: float, like: Tensor) -> Tensor:
    """One mixing weight per sample, uniform in [lo, hi], shaped to broadcast over ``like``."""
    u = torch.rand(n, device=like.device, dtype=torch.float32)
    return (lo + (hi - lo) * u).view(n, *[1] * (like.dim() - 1)).to(like.dtype)


def mixup(a: Tensor, b: Tensor, beta: Tensor | float) -> Tensor:
    """``a * (1 - beta) + b * beta``: beta 0 passes ``a`` only, 1 passes ``b`` only."""
    return a * (1.0 - beta) + b * beta


def child_parent_codes(n: int, n_child: int, ratio: int, fix: dict, generator=None, device=None):
    """(c, p) for FineGAN-style hierarchies: c uniform, or fixed, or among the ``ratio``
    children of a fixed p; p = c // ratio. Fixed values may be ints or [n] tensors."""
    kw = {"generator": generator, "device": device}
    if "p" in fix:  # checked here: the message is about p, not about the children it would give
        p = full_code(fix["p"], n, device)
        if p.numel() and (p.min() < 0 or p.max() >= n_child // ratio):
            raise FgtoolError(f"code p must be in 0..{n_child // ratio - 1}")
    if "c" in fix:
        c = full_code(fix["c"], n, device)
        if "p" in fix and c.numel() and bool(((c // ratio) != p).any()):
            raise FgtoolError(f"code c and code p disagree: each parent has {ratio} children, so child c belongs "
                              f"to parent c // {ratio}; fix one of them")
    elif "p" in fix:
        c = p * ratio + torch.randint(0, ratio, (n,), **kw)
    else:
        c = torch.randint(0, n_child, (n,), **kw)
    return c, c // ratio
