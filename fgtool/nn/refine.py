"""Mask refinement: mirror averaging of a segmenter's maps, and OpenCV's GrabCut started from
a soft foreground map; and object removal by inpainting inside a mask.

Used by GANSeg's self-training stage to sharpen the segmenter's own predictions on real
photos before it learns from them (a blob that spills over the background is pulled back
to the colour edge of the object), and by ``fgtool segment`` / ``eval`` (``--tta``,
``--refine``). GrabCut runs on the CPU (numpy), a batch at a time.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def flip_average(fn, x: Tensor) -> Tensor:
    """The mean of ``fn``'s maps [N, C, H, W] of the images ``x`` and of their mirror images,
    mirrored back: one call of ``fn`` on both (``fn`` must treat images independently, e.g. a
    network in eval mode)."""
    a, b = fn(torch.cat([x, x.flip(-1)])).chunk(2)
    return (a + b.flip(-1)) / 2


def _erode(m: np.ndarray, r: int) -> np.ndarray:
    import cv2

    if r <= 0:
        return m
    k = np.ones((2 * r + 1, 2 * r + 1), np.uint8)
    return cv2.erode(m.astype(np.uint8), k, borderType=cv2.BORDER_REPLICATE).astype(bool)


def grabcut_refine(images: Tensor, fg_prob: Tensor, band: int = 2, iters: int = 3) -> Tensor:
    """Hard foreground labels [N, H, W] (bool) refined from ``fg_prob`` [N, H, W] in [0, 1].

    The map thresholded at 0.5 and eroded by ``band`` pixels is sure foreground; its
    complement eroded by ``band`` is sure background; GrabCut (colour GMMs and a contrast
    term, ``iters`` rounds) labels the band in between. ``images`` [N, 3, H, W] in [-1, 1].
    An image whose map has no sure foreground or no sure background keeps the thresholded
    map (GrabCut needs samples of both)."""
    import cv2

    # sequential OpenCV: no thread pool whose locks a later fork (DataLoader workers) could
    # inherit held; at these sizes threads buy nothing
    cv2.setNumThreads(0)
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    x = x.permute(0, 2, 3, 1).cpu().numpy()
    p = fg_prob.detach().float().cpu().numpy()
    out = p > 0.5
    for i in range(len(x)):
        fg = out[i]
        sure_fg, sure_bg = _erode(fg, band), _erode(~fg, band)
        if not sure_fg.any() or not sure_bg.any():
            continue
        mask = np.where(fg, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
        mask[sure_fg] = cv2.GC_FGD
        mask[sure_bg] = cv2.GC_BGD
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        # GrabCut seeds its colour models by k-means from OpenCV's process-wide RNG: reseed it so
        # that an image's result depends on nothing else (a resumed run, a batch of another size)
        cv2.setRNGSeed(0)
        try:
            cv2.grabCut(np.ascontiguousarray(x[i][:, :, ::-1]), mask, None, bgd, fgd, iters,
                        cv2.GC_INIT_WITH_MASK)
        except cv2.error:  # degenerate colour statistics (a flat image): keep the map
            continue
        out[i] = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
    return torch.from_numpy(out).to(fg_prob.device)


def inpaint(images: Tensor, mask: Tensor, grow: int = 1, radius: int = 3) -> Tensor:
    """``images`` [N, 3, H, W] in [-1, 1] with the pixels of ``mask`` [N, H, W] (bool), grown by
    ``grow`` pixels (a mask edge sits on the object's antialiased rim), filled in from their
    surroundings by OpenCV's Navier-Stokes inpainting (``radius`` px neighbourhood)."""
    import cv2

    cv2.setNumThreads(0)
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    x = x.permute(0, 2, 3, 1).cpu().numpy()
    m = mask.detach().cpu().numpy().astype(np.uint8)
    out = np.empty_like(x)
    k = np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)
    for i in range(len(x)):
        mi = cv2.dilate(m[i], k) if grow > 0 else m[i]
        out[i] = cv2.inpaint(np.ascontiguousarray(x[i]), mi, radius, cv2.INPAINT_NS) if mi.any() else x[i]
    y = torch.from_numpy(out).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    return y.to(images.device)
