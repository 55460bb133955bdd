"""Animated GIF writing/reading through imageio's Pillow plugin (works offline, no ffmpeg).

Note: Pillow merges consecutive identical frames into one longer frame, so a GIF of a
static sequence reads back with fewer frames; it still plays for the same total time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .paths import check_replaceable


def _frame_to_uint8(frame) -> np.ndarray:
    if isinstance(frame, torch.Tensor):
        t = frame.detach().float().cpu()
        if t.dim() != 3 or t.shape[0] not in (1, 3):
            raise ValueError(f"GIF frame tensors must be [3,H,W] in [-1,1], got {tuple(t.shape)}")
        t = ((t + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        arr = t.expand(3, -1, -1).permute(1, 2, 0).numpy()
    else:
        arr = np.asarray(frame)
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise ValueError(f"GIF frame arrays must be HxWx3 uint8, got shape {arr.shape}")
        if arr.dtype != np.uint8:
            raise ValueError(f"GIF frame arrays must be uint8, got {arr.dtype}")
        arr = arr[:, :, :3]
    return np.ascontiguousarray(arr)


def write_gif(frames, path, fps: float = 10, loop: int = 0) -> Path:
    """Write an animated GIF atomically.

    ``frames``: a tensor ``[T,3,H,W]`` or a list of ``[3,H,W]`` tensors, all in ``[-1,1]``,
    or a list of ``HxWx3`` uint8 arrays. ``loop=0`` loops forever.
    """
    import imageio.v3 as iio

    if isinstance(frames, torch.Tensor):
        if frames.dim() != 4:
            raise ValueError(f"expected frames [T,3,H,W], got {tuple(frames.shape)}")
        frames = list(frames)
    arrs: Sequence[np.ndarray] = [_frame_to_uint8(f) for f in frames]
    if not arrs:
        raise ValueError("write_gif: no frames")
    if len({a.shape for a in arrs}) != 1:
        raise ValueError(f"write_gif: frames differ in size: {sorted({a.shape for a in arrs})}")
    path = Path(path)
    check_replaceable(path)  # a device, FIFO, socket or symlink is never swapped for a file
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        # pillow plugin: duration is per frame in milliseconds
        iio.imwrite(tmp, np.stack(arrs), extension=".gif", plugin="pillow",
                    duration=1000.0 / float(fps), loop=int(loop))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_gif(path) -> np.ndarray:
    """All frames of a GIF as uint8 ``[T,H,W,3]``."""
    import imageio.v3 as iio

    arr = np.asarray(iio.imread(path, index=None, plugin="pillow", mode="RGB"))
    if arr.ndim == 3:  # single frame
        arr = arr[None]
    return arr
