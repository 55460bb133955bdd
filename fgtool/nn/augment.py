"""Batched image augmentations on tensors, for losses that need random views.

They run inside the training step on whatever device the batch is on, draw from the
global torch RNG (which checkpoints save, so a resumed run draws the same numbers), and
work on images in [-1, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# random affine warps of a generated foreground (PerturbGAN / C3-GAN): (scale, rot_deg, shift)
PERTURB = {"weak": ((0.9, 1.1), 2.0, 0.08), "strong": ((0.8, 1.5), 15.0, 0.15), "none": ((1.0, 1.0), 0.0, 0.0)}


def perturb_ranges(preset: str) -> tuple:
    """(scale, rot_deg, shift) of a named preset. Raises ``FgtoolError`` naming the presets
    for an unknown name."""
    from ..errors import FgtoolError

    if preset not in PERTURB:
        raise FgtoolError(f"model.perturb must be one of {', '.join(PERTURB)}, got {preset!r}")
    return PERTURB[preset]


def _u(n: int, lo: float, hi: float, like: Tensor) -> Tensor:
    return torch.rand(n, device=like.device, dtype=torch.float32) * (hi - lo) + lo


def random_affine(x: Tensor, scale: tuple[float, float], rot_deg: float, shift: float,
                  grids: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Warp each image by its own random similarity transform (PerturbGAN / C3-GAN).

    ``scale`` is the sampling-grid scale (above 1 shrinks the content), ``rot_deg`` and
    ``shift`` (in half-widths) are symmetric ranges. Returns the warped batch and the
    sampling grid, so a mask and its foreground can share one warp. Outside: zeros.
    """
    n = x.shape[0]
    if grids is None:
        s = _u(n, *scale, x)
        r = _u(n, -rot_deg, rot_deg, x) * (math.pi / 180.0)
        tx, ty = _u(n, -shift, shift, x), _u(n, -shift, shift, x)
        grids = similarity_grid(s, r, tx, ty, x)
    return warp(x, grids), grids


def similarity_grid(s: Tensor, r: Tensor, tx: Tensor, ty: Tensor, like: Tensor,
                    mirror: Tensor | None = None) -> Tensor:
    """Sampling grids (align_corners) of per-sample similarity transforms: grid scale ``s``,
    rotation ``r`` (radians), shift ``tx, ty`` (half-widths); ``mirror`` scales x (-1 flips)."""
    sx = s if mirror is None else s * mirror
    theta = torch.stack([torch.stack([sx * r.cos(), -s * r.sin(), tx], 1),
                         torch.stack([sx * r.sin(), s * r.cos(), ty], 1)], 1)
    return F.affine_grid(theta, [like.shape[0], 1, like.shape[2], like.shape[3]], align_corners=True)


def warp(x: Tensor, grids: Tensor) -> Tensor:
    """Bilinear resampling of ``x`` on ``grids`` (fp32 inside, float64 stays float64); outside: zeros."""
    dt = torch.promote_types(x.dtype, torch.float32)
    out = F.grid_sample(x.to(dt), grids.to(dt), mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.to(x.dtype)


def shift_window(canvas: Tensor, size: int, random: bool) -> Tensor:
    """A ``size`` x ``size`` window of each canvas: at a random offset per sample
    (``random``, the global RNG) or the centre."""
    room = canvas.shape[-1] - size
    if not random:
        o = room // 2
        return canvas[..., o:o + size, o:o + size]
    off = torch.randint(0, room + 1, (canvas.shape[0], 2), device=canvas.device).tolist()
    return torch.stack([c[:, y:y + size, x:x + size] for c, (y, x) in zip(canvas, off)])


def random_resized_crop(x: Tensor, scale: tuple[float, float] = (0.2, 1.0), ratio=(3 / 4, 4 / 3),
                        flip: bool = True) -> Tensor:
    """torchvision's RandomResizedCrop (+ horizontal flip) for a batch, via one grid_sample."""
    n = x.shape[0]
    area = _u(n, *scale, x)
    logr = _u(n, math.log(ratio[0]), math.log(ratio[1]), x)
    w = (area * logr.exp()).sqrt().clamp(max=1.0)
    h = (area / logr.exp()).sqrt().clamp(max=1.0)
    cx = (torch.rand(n, device=x.device) * 2 - 1) * (1 - w)
    cy = (torch.rand(n, device=x.device) * 2 - 1) * (1 - h)
    sx = w * (torch.where(torch.rand(n, device=x.device) < 0.5, -1.0, 1.0) if flip else 1.0)
    zero = torch.zeros_like(w)
    theta = torch.stack([torch.stack([sx, zero, cx], 1), torch.stack([zero, h, cy], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False).to(x.dtype)


def _gray(x: Tensor) -> Tensor:
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def color_jitter(x: Tensor, p: float = 0.8, brightness: float = 0.4, contrast: float = 0.4,
                 saturation: float = 0.4, hue: float = 0.1, p_gray: float = 0.2) -> Tensor:
    """Colour jitter with probability ``p`` per image, then grayscale with ``p_gray``.

    Factors are drawn as torchvision draws them (brightness in [1-b, 1+b] and so on;
    hue a rotation of the chroma plane by up to ``hue`` turns, in YIQ).
    """
    n = x.shape[0]
    y = (x.float() + 1) / 2  # [0, 1]
    on = (torch.rand(n, device=x.device) < p).float().view(n, 1, 1, 1)
    j = y
    if brightness > 0:
        j = j * _u(n, 1 - brightness, 1 + brightness, x).view(n, 1, 1, 1)
    if contrast > 0:
        m = _gray(j).mean(dim=(1, 2, 3), keepdim=True)
        j = (j - m) * _u(n, 1 - contrast, 1 + contrast, x).view(n, 1, 1, 1) + m
    if saturation > 0:
        g = _gray(j)
        j = (j - g) * _u(n, 1 - saturation, 1 + saturation, x).view(n, 1, 1, 1) + g
    if hue > 0:
        a = _u(n, -hue, hue, x) * 2 * math.pi
        yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                           device=x.device)
        inv = torch.linalg.inv(yiq)
        c, s = a.cos(), a.sin()
        one, zero = torch.ones_like(c), torch.zeros_like(c)
        rot = torch.stack([torch.stack([one, zero, zero], 1), torch.stack([zero, c, -s], 1),
                           torch.stack([zero, s, c], 1)], 1)  # [n,3,3]
        mat = inv @ rot @ yiq
        j = torch.einsum("nij,njhw->nihw", mat, j)
    y = on * j.clamp(0, 1) + (1 - on) * y
    if p_gray > 0:
        gray = (torch.rand(n, device=x.device) < p_gray).float().view(n, 1, 1, 1)
        y = gray * _gray(y).expand_as(y) + (1 - gray) * y
    return (y * 2 - 1).to(x.dtype)


def simclr_view(x: Tensor, crop: tuple[float, float] = (0.2, 1.0), p_jitter: float = 0.8,
                jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1), p_gray: float = 0.2) -> Tensor:
    """One SimCLR view of a batch: random resized crop + flip, colour jitter, grayscale."""
    v = random_resized_crop(x, crop)
    return color_jitter(v, p_jitter, *jitter, p_gray=p_gray)
