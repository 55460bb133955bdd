"""Object removal on the synthetic set (``fgtool eval --metric removal``).

The synthetic renderer knows each image's clean background. :func:`clean_backgrounds`
renders them again (the same random draws as the photo, minus the object and the sensor
noise) into a copy of the set's layout, so the evaluation reads photo and background
through the very same crops. The score is the mean absolute error, in [0, 1] colour
units, between the model's background (``backend.remove_object``) and the true one inside
the true object mask, next to the error of the simplest fill: every object pixel painted
with the mean colour of the visible background of that view. A useful model must beat it.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..backends.base import ObjectRemover
from ..data.synth import config_from_meta
from ..errors import FgtoolError
from .mix import synth_meta


def render_with_background(i: int, seed: int, cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image ``i`` as :func:`fgtool.data.synth.render_one` draws it, and its background alone.

    Returns (photo uint8 HxWx3, mask bool HxW, background uint8 HxWx3). The random draws
    follow render_one's order exactly (a test checks the photos are identical)."""
    from ..data import synth as S

    child, parent, bg, name, A, t, rng = S.scene(i, seed, cfg)
    soft = S._soft_mask(S._shape(name), A, t, cfg.size)
    fg = S._foreground(rng, name, child, A, t, cfg)
    back = S._BACKGROUNDS[bg](rng, cfg.size)
    img = back + (fg - back) * soft[..., None]
    img += rng.normal(0, 2.0, img.shape).astype(np.float32)
    photo = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    clean = np.clip(back + 0.5, 0, 255).astype(np.uint8)
    return photo, soft > 0.5, clean


def clean_backgrounds(data: str | Path, out: str | Path) -> Path:
    """Write the clean background of every image of a synthetic set under ``out``, in the
    same layout (images/, segmentations/, the label and box files), and return ``out``."""
    import cv2

    data, out = Path(data), Path(out)
    meta = synth_meta(data, "removal")
    if not meta.get("complete"):
        raise FgtoolError(f"{data}: the synthetic set is incomplete (re-run fgtool data synth)")
    cfg, seed = config_from_meta(meta), int(meta["seed"])
    out.mkdir(parents=True, exist_ok=True)
    for f in data.iterdir():
        if f.is_file():
            shutil.copy(f, out / f.name)
    seg = out / "segmentations"
    if not seg.exists():
        seg.symlink_to((data / "segmentations").resolve(), target_is_directory=True)
    for line in (data / "images.txt").read_text().splitlines():
        if not line.strip():
            continue
        idx, rel = line.split(maxsplit=1)
        _, _, clean = render_with_background(int(idx) - 1, seed, cfg)
        dst = out / "images" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(dst), cv2.cvtColor(clean, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    return out


@torch.no_grad()
def removal_error(m, data: str | Path, bg_root: str | Path | None = None, split: str | None = None,
                  max_images: int = 0, workers: int = 0, fill: str = "gan") -> dict:
    """Object-removal error of a loaded model ``m`` on a synthetic set (see the module doc).

    ``bg_root``: a folder from :func:`clean_backgrounds` (rendered into a temp folder if None);
    ``fill``: passed to ``remove_object`` (OneGAN: "gan" or "inpaint")."""
    from ..data.evalset import batches as _batches
    from ..data.evalset import eval_set as _eval_set

    if not isinstance(m.backend, ObjectRemover):
        raise FgtoolError(f"--metric removal: model '{m.cfg.model}' cannot remove objects")
    synth_meta(data, "removal")
    tmp = None
    try:
        if bg_root is None:
            tmp = tempfile.mkdtemp(prefix="fgtool-bg-")
            bg_root = clean_backgrounds(data, Path(tmp) / "bg")
        _, ds = _eval_set(m, str(data), split, max_images, with_masks=True)
        _, ds_bg = _eval_set(m, str(bg_root), split, max_images)
        if len(ds) != len(ds_bg):
            raise FgtoolError(f"{bg_root} does not match {data} ({len(ds_bg)} vs {len(ds)} images)")
        err_m = err_f = err_out = 0.0
        n_in = n_out = 0.0
        n = 0
        for b, bb in zip(_batches(ds, 64, workers), _batches(ds_bg, 64, workers)):
            x, true = b["image"].to(m.device), bb["image"].float()
            inside = (b["mask"] > 0.5).float()  # [N,1,H,W]
            pred = m.backend.remove_object(m.nets, x, fill=fill).float().cpu()
            x = x.float().cpu()
            outside = 1.0 - inside
            # the fill: mean colour of the visible background of each view
            flat = (x * outside).sum((2, 3), keepdim=True) / outside.sum((2, 3), keepdim=True).clamp(min=1)
            err_m += float(((pred - true).abs() * inside).sum() / 2 / 3)  # [-1,1] -> [0,1] units, per channel
            err_f += float(((flat - true).abs() * inside).sum() / 2 / 3)
            err_out += float(((pred - true).abs() * outside).sum() / 2 / 3)
            n_in += float(inside.sum())
            n_out += float(outside.sum())
            n += x.shape[0]
        if n_in == 0:
            raise FgtoolError(f"{data}: no object pixels in the evaluated views")
        return {"removal_l1": err_m / n_in, "mean_fill_l1": err_f / n_in,
                "removal_l1_outside": err_out / max(n_out, 1.0), "removal_n": n}
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
