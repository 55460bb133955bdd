"""Writing segmentation outputs: mask and part-index PNGs in a photo's own pixels,
their names and palette, and part centres in photo coordinates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def mask_names(imageset) -> list[Path]:
    """Output names: the image's path relative to the data root (CUB: to images/), as .png;
    two images that would share a name (a.jpg, a.png) keep their extension (a.jpg.png)."""
    base = imageset.root / "images" if imageset.layout == "cub" else imageset.root
    rels = []
    for r in imageset.records:
        p = Path(r.path)
        try:
            rels.append(p.relative_to(base))
        except ValueError:
            rels.append(Path(p.name))
    stems = [r.with_suffix(".png") for r in rels]
    dup = {s for s in stems if stems.count(s) > 1}
    return [r.with_name(r.name + ".png") if s in dup else s for r, s in zip(rels, stems)]


def part_palette(k: int) -> list[int]:
    """PNG palette: index 0 = background (black), index j + 1 = part j (``PART_PALETTE[j]``)."""
    from .images import PART_PALETTE

    flat = [0, 0, 0]
    for j in range(k):
        flat += list(PART_PALETTE[j % len(PART_PALETTE)])
    return flat + [0, 0, 0] * (256 - k - 1)


def mask_canvas(fg: torch.Tensor, size: tuple[int, int], side: tuple[int, int], at: tuple[int, int]) -> Image.Image:
    """A foreground probability map [1, h, w] as a 0/255 mask of the photo's ``size`` (w, h):
    resized to the crop the model saw (``side`` at ``at``), thresholded at one half."""
    prob = Image.fromarray((fg[0].clamp(0, 1).numpy() * 255).round().astype(np.uint8), "L")
    on = prob.resize(side, Image.BILINEAR).point(lambda v: 255 if v >= 128 else 0)
    canvas = Image.new("L", size, 0)
    canvas.paste(on, at)
    return canvas


def parts_canvas(probs: torch.Tensor, k: int, palette: list[int], size: tuple[int, int], side: tuple[int, int],
                 at: tuple[int, int]) -> Image.Image:
    """Part probabilities [K+1, h, w] (last: background) as a palette PNG of the photo's
    ``size``: index 0 background, j + 1 part j."""
    lab = probs.argmax(0)
    idx = torch.where(lab == k, torch.zeros_like(lab), lab + 1).to(torch.uint8).numpy()
    pim = Image.fromarray(idx, "P").resize(side, Image.NEAREST)
    pc = Image.new("P", size, 0)
    pc.putpalette(palette)
    pc.paste(pim, at)
    pc.putpalette(palette)
    return pc


def photo_points(centres: torch.Tensor, left: float, top: float, side: tuple[int, int]) -> list:
    """Part centres [K, 2] in [-1, 1] of the crop -> [x, y] in the photo's pixels (None: no part)."""
    return [None if not bool(torch.isfinite(q).all()) else
            [round(left + (float(q[0]) + 1) / 2 * side[0], 2),
             round(top + (float(q[1]) + 1) / 2 * side[1], 2)] for q in centres]
