"""Bounding-box geometry.

A box is ``(x, y, w, h)`` in float pixel coordinates: the top-left corner of pixel ``(i, j)``
is at ``(j, i)`` and its centre at ``(j + 0.5, i + 0.5)``. Crops are ``(left, top, right, bottom)``
in the same coordinates (right/bottom exclusive) and may reach outside the image; the dataset
fills such regions by replicating the edge pixels (no hard border a discriminator could learn).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

Box = tuple[float, float, float, float]


def pseudo_box(width: float, height: float, border: float = 0.15) -> Box:
    """Box for sets without annotations: a band of ``border`` (fraction of each side) all round
    is treated as background, the centre ``(1-2*border)`` region as object."""
    if not 0.0 <= border < 0.5:
        raise ValueError(f"pseudo box border must be in [0, 0.5), got {border}")
    return (border * width, border * height, (1 - 2 * border) * width, (1 - 2 * border) * height)


def crop_box_around(box: Sequence[float], width: float, height: float, scale: float = 1.5
                    ) -> tuple[float, float, float, float]:
    """Square crop ``(left, top, right, bottom)`` of side ``scale * max(w, h)`` centred on ``box``.

    ``width``/``height`` (the image size) are only used for degenerate boxes (zero size), which
    fall back to the whole image's square around its centre. The crop may extend outside.
    """
    x, y, w, h = (float(v) for v in box)
    side = scale * max(w, h)
    if side <= 0:
        x, y, w, h = 0.0, 0.0, float(width), float(height)
        side = max(w, h)
    cx, cy = x + w / 2, y + h / 2
    return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def transform_box(box: Sequence[float], crop_ltrb: Sequence[float], out_size, flipped: bool = False
                  ) -> Box:
    """Map ``box`` through: crop to ``crop_ltrb`` -> resize to ``out_size`` (int side or ``(W, H)``)
    -> optional horizontal flip. The result is not clipped to the output (see :func:`box_to_mask`)."""
    l, t, r, b = (float(v) for v in crop_ltrb)
    ow, oh = (out_size, out_size) if isinstance(out_size, (int, float)) else out_size
    sx, sy = ow / (r - l), oh / (b - t)
    x, y, w, h = (float(v) for v in box)
    nx, ny, nw, nh = (x - l) * sx, (y - t) * sy, w * sx, h * sy
    if flipped:
        nx = ow - (nx + nw)
    return (nx, ny, nw, nh)


def box_to_mask(box: Sequence[float], size_hw) -> torch.Tensor:
    """Float ``[1,H,W]`` mask: 1 for pixels whose centre lies inside ``box`` (clipped to the image)."""
    h, w = (size_hw, size_hw) if isinstance(size_hw, int) else size_hw
    x, y, bw, bh = (float(v) for v in box)
    cols = torch.arange(w, dtype=torch.float32) + 0.5
    rows = torch.arange(h, dtype=torch.float32) + 0.5
    inx = (cols >= x) & (cols < x + bw)
    iny = (rows >= y) & (rows < y + bh)
    return (iny[:, None] & inx[None, :]).float()[None]


def patch_bg_labels(box_mask: torch.Tensor, kernel: int, stride: int, padding: int = 0) -> torch.Tensor:
    """Per-patch background labels for a patch discriminator: ``1 - max_pool2d(mask)``.

    Output cell ``(i, j)`` sees input rows ``[i*stride - padding, i*stride - padding + kernel)``
    and the same columns (``kernel`` = receptive field); it is 1 (background) only if no box
    pixel falls in that window, out-of-image padding counting as background. Output size is
    ``floor((H + 2*padding - kernel) / stride) + 1``: FineGAN's 128 px, stride 4, receptive field
    34 gives 24x24. Soft masks give soft labels.
    """
    m = box_mask.float()
    if m.dim() == 3:
        m = m[:, None]
    return 1.0 - F.max_pool2d(m, kernel_size=kernel, stride=stride, padding=padding)
