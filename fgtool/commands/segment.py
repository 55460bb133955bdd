"""``fgtool segment``: foreground (and part) masks of real photos, with overlays and points."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .. import checkpoint as ckpt
from ..backends.base import ObjectRemover, PartSegmenter
from ..data.evalset import batches, eval_set, photo_frame, photo_mask
from ..errors import FgtoolError
from ..io.masks import mask_names, part_palette, parts_canvas, photo_points
from ..io.paths import check_output, member
from ..loading import Loaded, load, require_segmenter
from .options import Progress, check_count

REFINE = ("none", "grabcut")

TTA = ("none", "flip")


def _check_mask_options(refine: str, tta: str = "none") -> None:
    if refine not in REFINE:
        raise FgtoolError(f"--refine must be one of {', '.join(REFINE)}, got {refine!r}")
    if tta not in TTA:
        raise FgtoolError(f"--tta must be one of {', '.join(TTA)}, got {tta!r}")


FILL = ("gan", "inpaint")


def _check_fill(fill: str) -> None:
    if fill not in FILL:
        raise FgtoolError(f"--fill must be one of {', '.join(FILL)}, got {fill!r}")


def _masks(m: "Loaded", x: torch.Tensor, tta: str = "none"):
    """(fg [N,1,H,W], part probabilities [N,K+1,H,W] or None) of the images ``x``.
    ``tta="flip"``: the mean of the maps of ``x`` and of its mirror image, mirrored back."""
    from ..nn.refine import flip_average

    parts = isinstance(m.backend, PartSegmenter)
    seg = m.backend.segment_parts if parts else m.backend.segment

    def fn(v):
        return seg(m.nets, v).float()

    maps = flip_average(fn, x) if tta == "flip" else fn(x)
    return (1.0 - maps[:, -1:], maps) if parts else (maps, None)


def _refined(x: torch.Tensor, fg: torch.Tensor, probs: torch.Tensor | None, refine: str):
    """(fg [N,1,H,W], probs) after ``refine``: "grabcut" redraws each mask's edge by the
    photo's colours (:func:`fgtool.nn.refine.grabcut_refine`, a 1/16-size band either
    side); part maps keep their argmax inside the new mask and turn background outside."""
    if refine == "none":
        return fg, probs
    from ..nn.refine import grabcut_refine

    hard = grabcut_refine(x, fg[:, 0], band=max(1, x.shape[-1] // 16)).to(fg.device)
    fg = hard.float()[:, None]
    if probs is not None:
        probs = torch.cat([probs[:, :-1] * fg, 1.0 - fg], 1)
    return fg, probs


def _check_segment_outputs(outp: Path, names: list[Path], parts: bool, remove_object: bool, points: bool):
    from ..io.paths import check_replaceable

    files = [outp / "overlay.png", outp / "index.json"]
    files += [outp / "parts_overlay.png"] if parts else []
    files += [outp / "points.json"] if points else []
    for rel in names:
        files.append(outp / rel)
        if remove_object:
            files.append(member(outp, rel.with_name(rel.stem + "_bg.png"), "mask name"))
        if parts:
            files.append(member(outp / "parts", rel, "mask name"))
    for f in files:
        check_replaceable(f, "output")


def segment(ckpt_path: str, data: str, out: str, parts: bool = False, points: bool = False,
            batch_size: int = 32, split: str | None = None, max_images: int = 0, workers: int = 2,
            progress: Progress = None, remove_object: bool = False, refine: str = "none", tta: str = "none",
            fill: str = "gan") -> dict:
    """Foreground masks of real photos, one PNG per image (0/255, the photo's own size,
    same relative name) under ``out``, an ``overlay.png`` contact sheet and ``index.json``.
    ``parts``: also part-index PNGs under ``out/parts/`` (palette: 0 background, j + 1 part
    j) and ``parts_overlay.png``. ``points``: part centres (centres of mass of the part
    maps) drawn on the sheets and written to ``points.json`` in the photo's pixels.
    ``refine="grabcut"``: each mask's edge redrawn by the photo's colours (:func:`_refined`).
    ``tta="flip"``: the maps are the mean over the photo and its mirror image (:func:`_masks`).
    ``remove_object``: also NAME_bg.png, the photo with its object removed (``fill``: "gan", the
    model's background generator, or "inpaint", the photo filled in inside its mask)."""
    from PIL import Image

    from ..io.images import (
        contact_sheet,
        draw_points,
        mask_contour,
        mask_overlay,
        part_overlay,
        save_image,
        to_pil,
    )

    _check_mask_options(refine, tta)
    _check_fill(fill)
    m = load(ckpt_path)
    require_segmenter(m)
    name = m.cfg.model
    if parts and not isinstance(m.backend, PartSegmenter):
        raise FgtoolError(f"--parts: model '{name}' segments the foreground only")
    if points and not isinstance(m.backend, PartSegmenter):
        raise FgtoolError(f"--points: model '{name}' has no parts to place points on")
    if remove_object and not isinstance(m.backend, ObjectRemover):
        raise FgtoolError(f"--remove-object: model '{name}' has no background generator for real photos")
    outp = Path(out)
    if outp.exists() and not outp.is_dir():
        raise FgtoolError(f"--out {outp} is a file, not a folder")
    check_count(batch_size, "--batch-size", 1, 4096)  # 4096 photos of 128 px: 800 MB of input alone
    check_count(max_images, "--max-images", 0)
    imageset, ds = eval_set(m, data, split, max_images)
    # every output is named and checked before the first is written: inside --out, never over
    # an input, never through a symlink out of --out, only over regular files
    check_output(outp, [data], folder=True)
    check_output(outp, [ckpt_path], folder=True, holds=False)  # masks are PNGs: beside last.pt is fine
    names = [member(outp, n, "mask name") for n in mask_names(imageset)]
    names = [n.relative_to(outp) for n in names]
    _check_segment_outputs(outp, names, parts, remove_object, points)
    k = m.backend.n_parts() if isinstance(m.backend, PartSegmenter) else 0
    pal = part_palette(k) if parts else None
    sheet_fg, sheet_parts, items, pts_doc = [], [], [], {}
    done, n_sheet = 0, 64
    with torch.no_grad(), m.autocast():
        for batch in batches(ds, batch_size, workers):
            x = batch["image"].to(m.device)
            fg, probs = _refined(x, *_masks(m, x, tta), refine)
            bgs = m.backend.remove_object(m.nets, x, fill=fill).float().cpu() if remove_object else None
            cen = m.backend.part_centres(probs) if points else None
            xs, fg, probs = x.float().cpu(), fg.cpu(), probs.cpu() if probs is not None else None
            for i in range(x.shape[0]):
                j = done + i
                rec, rel = imageset.records[j], names[j]
                frame = photo_frame(ds, rec)  # the crop the model saw, in the photo's pixels
                (w, h), side, at, l, t = frame
                mpath = save_image(photo_mask(fg[i], frame), outp / rel)
                item = {"image": str(rec.path), "mask": str(mpath),
                        "fg_fraction": round(float((fg[i] > 0.5).float().mean()), 4)}
                if bgs is not None:  # the object removed: the background generator's view of the crop
                    bimg = to_pil(bgs[i]).resize(side, Image.BICUBIC)
                    item["background"] = str(save_image(bimg, outp / rel.with_name(rel.stem + "_bg.png")))
                if parts:
                    pc = parts_canvas(probs[i], k, pal, (w, h), side, at)
                    item["parts"] = str(save_image(pc, outp / "parts" / rel))
                if points:
                    pix = photo_points(cen[i].cpu(), l, t, side)
                    item["points"] = pix
                    pts_doc[str(rel)] = pix
                items.append(item)
                if len(sheet_fg) < n_sheet:
                    img = xs[i:i + 1]
                    c1 = cen[i:i + 1].cpu() if points else None
                    ov = mask_contour(mask_overlay(img, fg[i:i + 1]), fg[i:i + 1])
                    sheet_fg.append((draw_points(ov, c1) if points else ov)[0])
                    if parts:
                        lab = probs[i:i + 1].argmax(1)
                        lab = torch.where(lab == k, torch.full_like(lab, -1), lab)
                        pov = part_overlay(img, lab, k)
                        sheet_parts.append((draw_points(pov, c1) if points else pov)[0])
            done += x.shape[0]
            if progress:
                progress("segment", done, len(ds))
    size = max(64, m.cfg.data.size)
    files = {"masks": str(outp)}
    contact_sheet(sheet_fg, outp / "overlay.png", ncol=8, size=size)
    files["overlay"] = str(outp / "overlay.png")
    if parts:
        contact_sheet(sheet_parts, outp / "parts_overlay.png", ncol=8, size=size)
        files.update(parts=str(outp / "parts"), parts_overlay=str(outp / "parts_overlay.png"))
    if points:
        ckpt.atomic_write_text(outp / "points.json", json.dumps(pts_doc, indent=1) + "\n")
        files["points"] = str(outp / "points.json")
    doc = {"checkpoint": str(ckpt_path), "model": name, "step": m.step, "data": str(imageset.root),
           "n": len(items), "n_parts": k if (parts or points) else None, "items": items}
    ckpt.atomic_write_text(outp / "index.json", json.dumps(doc, indent=1) + "\n")
    files["index"] = str(outp / "index.json")
    return {"checkpoint": str(ckpt_path), "model": name, "step": m.step, "data": str(imageset.root),
            "n": len(items), "masks": len(items), "parts": len(items) if parts else 0,
            "points": len(items) if points else 0, "backgrounds": len(items) if remove_object else 0,
            "size": m.cfg.data.size,
            "mean_fg_fraction": round(float(np.mean([it["fg_fraction"] for it in items])), 4), "files": files}


def segment_centre(data: str, out: str, fraction: float | None = None, split: str | None = None,
                   max_images: int = 0, progress: Progress = None) -> dict:
    """``segment --baseline centre``: the centre floor's masks (:func:`fgtool.metrics.centre.centre_ellipse`)
    in ``segment``'s layout (one 0/255 PNG per photo at its size, overlay.png, index.json), so the floor
    can be looked at and scored with ``eval --pred``. ``fraction``: the ellipses' area as a share of
    each photo; None takes the mean of the set's ground-truth masks, as ``eval --baseline centre``."""
    from PIL import Image

    from ..data.datasets import drop_undecodable, scan
    from ..io.images import contact_sheet, image_size, load_image, mask_contour, mask_overlay, save_image
    from ..metrics.centre import centre_ellipse, read_mask

    check_count(max_images, "--max-images", 0)
    if fraction is not None and not 0.0 < fraction <= 1.0:
        raise FgtoolError(f"--fraction is a share of the photo in (0, 1], got {fraction:g}")
    outp = Path(out)
    if outp.exists() and not outp.is_dir():
        raise FgtoolError(f"--out {outp} is a file, not a folder")
    imageset = drop_undecodable(scan(data, split=split, max_images=max_images))
    if fraction is None:
        if not imageset.has_masks:
            raise FgtoolError(f"{data} has no segmentations/ to take the mean object area from: pass --fraction")
        fraction = float(np.mean([read_mask(r.mask_path).mean() for r in imageset.records]))
    check_output(outp, [data], folder=True)
    names = [member(outp, n, "mask name").relative_to(outp) for n in mask_names(imageset)]
    _check_segment_outputs(outp, names, False, False, False)
    items, sheet = [], []
    for j, (rec, rel) in enumerate(zip(imageset.records, names)):
        w, h = image_size(rec.path)
        on = centre_ellipse(h, w, fraction)
        mpath = save_image(Image.fromarray(on.astype(np.uint8) * 255, "L"), outp / rel)
        items.append({"image": str(rec.path), "mask": str(mpath), "fg_fraction": round(float(on.mean()), 4)})
        if len(sheet) < 64:
            img = torch.from_numpy(np.asarray(load_image(rec.path), np.float32)).permute(2, 0, 1)[None] / 127.5 - 1
            m = torch.from_numpy(on).float()[None, None]
            sheet.append(mask_contour(mask_overlay(img, m), m)[0])
        if progress and (j % 200 == 0 or j + 1 == len(imageset.records)):
            progress("segment", j + 1, len(imageset.records))
    contact_sheet(sheet, outp / "overlay.png", ncol=8, size=64)
    doc = {"baseline": "centre", "fraction": fraction, "data": str(imageset.root), "n": len(items), "items": items}
    ckpt.atomic_write_text(outp / "index.json", json.dumps(doc, indent=1) + "\n")
    return {"baseline": "centre", "data": str(imageset.root), "n": len(items), "masks": len(items),
            "fraction": round(fraction, 4),
            "mean_fg_fraction": round(float(np.mean([it["fg_fraction"] for it in items])), 4),
            "files": {"masks": str(outp), "overlay": str(outp / "overlay.png"), "index": str(outp / "index.json")}}
