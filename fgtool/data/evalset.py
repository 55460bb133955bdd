"""Real images for evaluation, seen the way a model saw them in training (same size,
boxes and crops), and their batches. Shared by the commands and the metrics."""

from __future__ import annotations

from .. import registry


def box_mode(cfg) -> str:
    """data.box_mode "auto" means full images for a model that never uses boxes (C3-GAN)."""
    if cfg.data.box_mode == "auto" and not registry.get(cfg.model).uses_boxes:
        return "none"
    return cfg.data.box_mode


def eval_set(m, data: str, split: str | None = None, max_images: int = 0, with_masks: bool = False):
    """Real images seen the way the model saw them in training (same size, boxes, crops)."""
    from .datasets import ImageDataset, drop_undecodable, scan

    d = m.cfg.data
    imageset = drop_undecodable(scan(data, split=split, max_images=max_images))
    ds = ImageDataset(imageset, d.size, train=False, box_mode=box_mode(m.cfg), crop_scale=d.crop_scale,
                      crop_clip=d.crop_clip,
                      pseudo_border=d.pseudo_border, flip=False, with_masks=with_masks)
    return imageset, ds


def batches(ds, batch_size: int = 64, workers: int = 2):
    from .datasets import eval_loader

    yield from eval_loader(ds, batch_size=batch_size, workers=workers)


def view_region(ds, rec, w: int, h: int) -> tuple[float, float, float, float]:
    """(l, t, r, b) of the photo that an eval-mode :class:`ImageDataset` maps onto its S x S
    input: the object crop for a model that uses real boxes, else the centre crop."""
    import random

    rng = random.Random(0)  # eval views draw nothing from it
    if ds.use_real and rec.box is not None:
        return ds._object_view(rec.box, w, h, rng).region
    return ds._full_view(w, h, rng).region


def photo_frame(ds, rec) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], float, float]:
    """Where the model's S x S view sits in the photo: ``((w, h), side, at, left, top)``, the
    photo's size, the view's size and integer corner in its pixels, and the exact corner."""
    from ..io.images import image_size

    w, h = image_size(rec.path)
    l, t, r, b = view_region(ds, rec, w, h)
    return (w, h), (max(1, round(r - l)), max(1, round(b - t))), (round(l), round(t)), l, t


def photo_mask(fg, frame):
    """A foreground map [1, S, S] of the model's view as the 0/255 mask (PIL "L") of the whole
    photo that ``fgtool segment`` writes, ``frame`` being the view's :func:`photo_frame`: the
    soft map resized (bilinear) to the view's place in the photo, then thresholded at one half
    (:func:`fgtool.io.masks.mask_canvas`); outside the view, background. ``eval --metric
    iou,dice --ckpt`` scores this same mask against the ground truth."""
    from ..io.masks import mask_canvas

    size, side, at, _, _ = frame
    return mask_canvas(fg, size, side, at)
