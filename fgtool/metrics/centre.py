"""The centre floor for foreground masks (``fgtool eval --metric iou,dice --baseline centre``).

The mask that knows nothing about the image: an ellipse centred in the photo, its axes in
the photo's own proportions (a circle on a square image), covering the mean object area of
the set, that is the mean foreground fraction of the ground-truth masks. It is scored like
any model's masks (:func:`fgtool.metrics.segmentation.seg_metrics`: IoU and DICE per image,
then averaged), on each photo's whole frame at the mask's own resolution. A segmenter that
does not beat it has learned little more than "objects sit in the middle".

A fraction above pi/4 (the ellipse inscribed in the frame) is drawn clipped to the frame.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import FgtoolError
from .segmentation import _per_image_dice, _per_image_iou


def centre_ellipse(h: int, w: int, fraction: float) -> np.ndarray:
    """bool [h, w]: the pixels (centres at c + 0.5) inside the centred ellipse of area
    ``fraction * h * w`` with semi-axes in the proportion w : h."""
    r = math.sqrt(max(float(fraction), 0.0) / math.pi)
    if r == 0:
        return np.zeros((h, w), bool)
    ys = (np.arange(h) + 0.5 - h / 2) / (h * r)
    xs = (np.arange(w) + 0.5 - w / 2) / (w * r)
    return ys[:, None] ** 2 + xs[None, :] ** 2 <= 1.0


def read_mask(path) -> np.ndarray:
    """A ground-truth mask as bool [H, W] (grey level >= 127.5, as the data loader reads it)."""
    from PIL import Image

    try:
        with Image.open(path) as m:
            m.load()
            return np.asarray(m.convert("L"), np.float32) >= 127.5
    except Exception as exc:
        raise FgtoolError(f"cannot read mask {path}: {' '.join(str(exc).split())}") from None


def centre_scores(masks: list[np.ndarray]) -> dict:
    """The floor on ground-truth masks (bool [H, W] each, any sizes): ``iou``, ``dice``,
    ``n`` and the ``fg_fraction`` the ellipses cover."""
    if not masks:
        raise FgtoolError("no masks to score")
    frac = float(np.mean([m.mean() for m in masks]))
    ious, dices = [], []
    for m in masks:
        p, g = centre_ellipse(*m.shape, frac)[None], np.asarray(m, bool)[None]
        ious.append(_per_image_iou(p, g)[0])
        dices.append(_per_image_dice(p, g)[0])
    return {"iou": float(np.mean(ious)), "dice": float(np.mean(dices)), "n": len(masks), "fg_fraction": frac}


def centre_floor(data: str, split: str | None = None, max_images: int = 0, progress=None) -> dict:
    """:func:`centre_scores` on the masks of the data folder ``data``."""
    from ..data.datasets import scan

    imageset = scan(data, split=split, max_images=max_images)
    if not imageset.has_masks:
        raise FgtoolError(f"{data} has no segmentations/ to score against")
    masks = []
    for i, r in enumerate(imageset.records):
        masks.append(read_mask(r.mask_path))
        if progress and (i % 200 == 0 or i + 1 == len(imageset.records)):
            progress("masks", i + 1, len(imageset.records))
    return centre_scores(masks)
