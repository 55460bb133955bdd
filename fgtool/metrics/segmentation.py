"""Foreground-mask metrics (IoU, DICE) and part mIoU.

Masks are numpy arrays or torch tensors shaped [N,H,W], [N,1,H,W] or [H,W]. Values are
binarised with ``> 0.5``, so bool, 0/1 ints and probabilities all work. Scores are
computed per image and then averaged over images (not pooled over all pixels), and an
image where both masks are empty scores 1.0 (nothing to find, nothing found).

If the prediction's spatial size differs from the ground truth it is resized to the
ground-truth size with nearest-neighbour interpolation (so it stays binary/label-valued).
"""

from __future__ import annotations

import numpy as np

from fgtool.errors import FgtoolError


def _as_numpy(x, name: str) -> np.ndarray:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    arr = np.asarray(x)
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 3:
        raise FgtoolError(f"{name} must be [N,H,W], [N,1,H,W] or [H,W], got shape {tuple(np.shape(x))}")
    if arr.shape[0] == 0:
        raise FgtoolError(f"{name} is empty: no masks to score")
    return arr


def _resize_nearest(arr: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    # index sampling equivalent to torch's mode="nearest": src = floor(dst * in / out)
    h, w = arr.shape[1:]
    ri = np.minimum((np.arange(hw[0]) * h / hw[0]).astype(np.int64), h - 1)
    ci = np.minimum((np.arange(hw[1]) * w / hw[1]).astype(np.int64), w - 1)
    return arr[:, ri][:, :, ci]


def _prepare(pred, gt, binary: bool = True) -> tuple[np.ndarray, np.ndarray]:
    p = _as_numpy(pred, "pred")
    g = _as_numpy(gt, "gt")
    if p.shape[0] != g.shape[0]:
        raise FgtoolError(f"pred and gt hold a different number of masks: {p.shape[0]} vs {g.shape[0]}")
    if p.shape[1:] != g.shape[1:]:
        p = _resize_nearest(p, g.shape[1:])
    if binary:
        p = p.astype(np.float64) > 0.5
        g = g.astype(np.float64) > 0.5
    return p, g


def _per_image_iou(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    inter = (p & g).reshape(len(p), -1).sum(1).astype(np.float64)
    union = (p | g).reshape(len(p), -1).sum(1).astype(np.float64)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def _per_image_dice(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    inter = (p & g).reshape(len(p), -1).sum(1).astype(np.float64)
    total = (p.reshape(len(p), -1).sum(1) + g.reshape(len(g), -1).sum(1)).astype(np.float64)
    return np.where(total > 0, 2 * inter / np.maximum(total, 1), 1.0)


def fg_iou(pred, gt) -> float:
    """Foreground IoU, averaged over images; empty-vs-empty counts as 1.0."""
    p, g = _prepare(pred, gt)
    return float(_per_image_iou(p, g).mean())


def dice(pred, gt) -> float:
    """DICE = 2|A∩B| / (|A|+|B|), averaged over images; empty-vs-empty counts as 1.0."""
    p, g = _prepare(pred, gt)
    return float(_per_image_dice(p, g).mean())


def part_iou(pred_labels, gt_labels, n_parts: int) -> float:
    """Mean IoU over part ids 0..n_parts-1 that occur in either map.

    Intersections and unions are pooled over the whole set (the usual mIoU for part
    segmentation); pixels whose id is outside [0, n_parts) in gt (e.g. 255 = ignore) are
    skipped. Returns 1.0 when no part id occurs anywhere.
    """
    if int(n_parts) < 1:
        raise FgtoolError(f"n_parts must be >= 1, got {n_parts}")
    p, g = _prepare(pred_labels, gt_labels, binary=False)
    p = p.astype(np.int64)
    g = g.astype(np.int64)
    valid = (g >= 0) & (g < n_parts)
    ious = []
    for k in range(int(n_parts)):
        pk = (p == k) & valid
        gk = g == k
        union = int((pk | gk).sum())
        if union == 0:
            continue  # part absent in both: not scored
        ious.append((pk & gk).sum() / union)
    return float(np.mean(ious)) if ious else 1.0


def seg_metrics(pred, gt, groups=None, names=None) -> dict:
    """``{"iou": ..., "dice": ..., "n": ...}`` for foreground masks (see module docs).

    ``groups`` ([N] ints, -1 = unknown): also ``iou_by_group``, the IoU, predicted
    foreground fraction and count per group (e.g. per background class), keyed by
    ``names[g]`` when given. ``pred`` and ``gt`` may also be lists of per-image masks
    ([H,W] each, sizes free: photos of their own sizes)."""
    if isinstance(pred, (list, tuple)):
        if len(pred) != len(gt) or not pred:
            raise FgtoolError(f"pred and gt hold {len(pred)} and {len(gt)} masks: need the same number, > 0")
        pairs = [_prepare(p, g) for p, g in zip(pred, gt)]
        iou = np.concatenate([_per_image_iou(p, g) for p, g in pairs])
        dice = np.concatenate([_per_image_dice(p, g) for p, g in pairs])
        frac = np.array([p.mean() for p, _ in pairs])
    else:
        p, g = _prepare(pred, gt)
        iou, dice, frac = _per_image_iou(p, g), _per_image_dice(p, g), p.reshape(len(p), -1).mean(1)
    out = {
        "iou": float(iou.mean()),
        "dice": float(dice.mean()),
        "n": int(len(iou)),
    }
    if groups is not None:
        groups = np.asarray(groups)
        out["iou_by_group"] = {
            (names[k] if names is not None and 0 <= k < len(names) else str(k)): {
                "iou": round(float(iou[groups == k].mean()), 4),
                "fg_fraction": round(float(frac[groups == k].mean()), 4),
                "n": int((groups == k).sum())}
            for k in sorted(set(int(v) for v in groups)) if k >= 0}
    return out
