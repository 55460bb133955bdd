"""Part consistency on the synthetic set (``fgtool eval --metric parts``).

A part segmenter is consistent when part k lands on the same region of the object in
every image of a shape family, wherever the object sits and however it is scaled,
rotated or flipped. The synthetic renderer knows each image's pose: ``x = A u + t`` maps
the shape's canonical coordinates ``u`` to pixels (:func:`fgtool.data.synth.scene`). So
every predicted part centre is mapped back into the canonical frame, and per shape family
(parent) and part we measure how far those canonical centres scatter.

Numbers (all in units of the family's radius of gyration ``r``, the RMS distance of the
object's own pixels from their mean in the canonical frame, so 1.0 is the scatter of a
point drawn at random inside the object):

- ``parts_spread``: RMS distance of a part's canonical centre from its mean, averaged over
  families and parts (parts present in fewer than half of a family's images are left out
  and counted in ``parts_missing``). 0 is a part that always sits on the same spot.
- ``parts_spread_max``: the worst (family, part).
- ``parts_separation``: mean distance between the canonical mean centres of two parts of
  one family (K >= 2 only). Parts that all sit on the object's centre are consistent but
  say nothing; separation tells them apart.
- ``parts_fg_spread``: the same scatter for the centre of the whole predicted foreground,
  the reference a K = 1 model is measured by.
- ``parts_gt_spread``: the scatter of the true mask's centre (rasterisation only: ~0).
- ``parts_band_spread`` and ``parts_band_separation`` (K >= 2): the same two numbers for a
  reference part model, the predicted foreground cut into K horizontal bands of equal area,
  top to bottom. Bands follow the picture's rows, not the object, so they are consistent
  only as far as the objects stand upright; parts that are bands score about the same.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..backends.base import PartSegmenter
from ..data.synth import config_from_meta
from ..errors import FgtoolError
from .mix import synth_meta

MIN_PRESENT = 0.5  # a (family, part) counts when the part is present in at least this share of images


def image_indices(data: str | Path, paths: list[Path]) -> list[int]:
    """0-based synthetic image index of each path (from images.txt)."""
    data = Path(data)
    try:
        rows = (data / "images.txt").read_text().splitlines()
    except OSError:
        raise FgtoolError(f"{data}: no images.txt (re-run fgtool data synth)") from None
    by_path = {}
    for line in rows:
        if line.strip():
            idx, rel = line.split(maxsplit=1)
            by_path[(data / "images" / rel).resolve()] = int(idx) - 1
    try:
        return [by_path[Path(p).resolve()] for p in paths]
    except KeyError as e:
        raise FgtoolError(f"{e.args[0]} is not listed in {data / 'images.txt'}") from None


def to_canonical(points: np.ndarray, A: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Pixel coordinates [..., 2] (x, y; pixel c covers [c, c + 1)) -> canonical shape frame."""
    return (np.asarray(points, np.float64) - t) @ np.linalg.inv(A).T


def view_to_pixels(q: np.ndarray, region: tuple[float, float, float, float]) -> np.ndarray:
    """View coordinates in [-1, 1] (x, y) -> the photo's pixels, through the view's region."""
    l, t, r, b = region
    q = np.asarray(q, np.float64)
    return np.stack([l + (q[..., 0] + 1) / 2 * (r - l), t + (q[..., 1] + 1) / 2 * (b - t)], -1)


def mass_centres(prob: np.ndarray, min_mass: float = 0.002) -> np.ndarray:
    """Centres of mass [N, K, 2] in view coordinates [-1, 1] of maps [N, K, H, W]; NaN where a
    map holds less than ``min_mass`` of the image."""
    p = np.asarray(prob, np.float64)
    h, w = p.shape[-2:]
    ys = (np.arange(h) + 0.5) * 2 / h - 1
    xs = (np.arange(w) + 0.5) * 2 / w - 1
    mass = p.sum((2, 3))
    safe = np.maximum(mass, 1e-9)
    cx = (p.sum(2) * xs).sum(2) / safe
    cy = (p.sum(3) * ys).sum(2) / safe
    c = np.stack([cx, cy], -1)
    c[mass / (h * w) < min_mass] = np.nan
    return c


def band_parts(fg: np.ndarray, k: int) -> np.ndarray:
    """[N, H, W] boolean foreground -> [N, K, H, W] 0/1 maps: the foreground cut into ``k``
    horizontal bands of (about) equal area, band 0 at the top."""
    n, h, w = fg.shape
    rows = fg.sum(2).astype(np.float64)  # [N, H]
    share = np.cumsum(rows, 1) / np.maximum(rows.sum(1, keepdims=True), 1)  # foreground above and on a row
    band = np.clip(np.ceil(share * k), 1, k).astype(np.int64) - 1  # [N, H]
    return np.stack([fg & (band == j)[:, :, None] for j in range(k)], 1).astype(np.float64)


def consistency(canon: np.ndarray, fg: np.ndarray, gt: np.ndarray, families: np.ndarray,
                radius: dict[int, float], names: list[str] | None = None) -> dict:
    """The scores of the module doc from canonical centres: ``canon`` [N, K, 2] (NaN = part
    absent), ``fg`` and ``gt`` [N, 2] (predicted / true foreground centres), ``families`` [N]
    parent ids, ``radius`` family -> radius of gyration."""
    k = canon.shape[1]
    spreads, seps, fg_s, gt_s, missing, per = [], [], [], [], 0, {}

    def scatter(u: np.ndarray) -> float:
        u = u[np.isfinite(u).all(1)]
        return float(np.sqrt(((u - u.mean(0)) ** 2).sum(1).mean())) if len(u) >= 2 else float("nan")

    for f in sorted(set(int(v) for v in families)):
        sel, r = families == f, radius[f]
        present = np.isfinite(canon[sel]).all(2).mean(0)  # [K]
        row, means = [], []
        for j in range(k):
            if present[j] < MIN_PRESENT:
                missing += 1
                row.append(None)
                continue
            u = canon[sel, j]
            s = scatter(u) / r
            spreads.append(s)
            row.append(round(s, 4))
            means.append(np.nanmean(u, 0))
        for a in range(len(means)):
            for b in range(a + 1, len(means)):
                seps.append(float(np.linalg.norm(means[a] - means[b])) / r)
        fg_s.append(scatter(fg[sel]) / r)
        gt_s.append(scatter(gt[sel]) / r)
        key = names[f] if names and f < len(names) else str(f)
        per[key] = {"spread": row, "present": [round(float(v), 4) for v in present], "n": int(sel.sum()),
                    "fg_spread": round(fg_s[-1], 4)}
    out = {
        "parts_spread": float(np.mean(spreads)) if spreads else float("nan"),
        "parts_spread_max": float(np.max(spreads)) if spreads else float("nan"),
        "parts_separation": float(np.mean(seps)) if seps else None,
        "parts_fg_spread": float(np.nanmean(fg_s)),
        "parts_gt_spread": float(np.nanmean(gt_s)),
        "parts_missing": missing,
        "parts_k": k,
        "parts_per_family": per,
    }
    return out


@torch.no_grad()
def part_consistency(m, data: str | Path, split: str | None = None, max_images: int = 0,
                     workers: int = 0, min_mass: float = 0.002, progress=None) -> dict:
    """Part consistency of a loaded model ``m`` (``backend.segment_parts``) on a synthetic set."""
    from ..data.evalset import batches as _batches
    from ..data.evalset import eval_set as _eval_set
    from ..data.evalset import view_region as _view_region
    from ..data.synth import PARENT_NAMES, scene
    from ..io.images import image_size
    from ..loading import require_segmenter as _require_segmenter

    if not isinstance(m.backend, PartSegmenter):
        raise FgtoolError(f"--metric parts: model '{m.cfg.model}' has no part segmenter")
    _require_segmenter(m)
    meta = synth_meta(data, "parts")
    if not meta.get("complete"):
        raise FgtoolError(f"{data}: the synthetic set is incomplete (re-run fgtool data synth)")
    cfg, seed = config_from_meta(meta), int(meta["seed"])
    imageset, ds = _eval_set(m, str(data), split, max_images, with_masks=True)
    if not imageset.has_masks:
        raise FgtoolError(f"{data} has no segmentations/ to measure the objects by")
    idx = image_indices(data, [r.path for r in imageset.records])
    k = m.backend.n_parts()
    canon, fg_c, gt_c, fam, band_c = [], [], [], [], []
    r2: dict[int, list[float]] = {}
    done = 0
    for b in _batches(ds, 64, workers):
        probs = m.backend.segment_parts(m.nets, b["image"].to(m.device)).float().cpu().numpy()
        gt = (b["mask"].float().numpy() > 0.5).astype(np.float64)  # [N, 1, H, W]
        cen = mass_centres(probs[:, :k], min_mass)
        cen_fg = mass_centres(1.0 - probs[:, k:], min_mass)[:, 0]
        cen_gt = mass_centres(gt, 0.0)[:, 0]
        cen_band = mass_centres(band_parts(probs[:, k] < 0.5, k), min_mass) if k >= 2 else None
        h, w = gt.shape[-2:]
        for i in range(probs.shape[0]):
            rec = imageset.records[done + i]
            _, parent, _, _, A, t, _ = scene(idx[done + i], seed, cfg)
            region = _view_region(ds, rec, *image_size(rec.path))
            canon.append(to_canonical(view_to_pixels(cen[i], region), A, t))
            fg_c.append(to_canonical(view_to_pixels(cen_fg[i], region), A, t))
            gt_c.append(to_canonical(view_to_pixels(cen_gt[i], region), A, t))
            if cen_band is not None:
                band_c.append(to_canonical(view_to_pixels(cen_band[i], region), A, t))
            fam.append(parent)
            # the object's own pixels in the canonical frame: its radius of gyration
            ys, xs = np.nonzero(gt[i, 0])
            q = np.stack([(xs + 0.5) * 2 / w - 1, (ys + 0.5) * 2 / h - 1], -1)
            u = to_canonical(view_to_pixels(q, region), A, t)
            if len(u) >= 2:
                r2.setdefault(parent, []).append(float(((u - u.mean(0)) ** 2).sum(1).mean()))
        done += probs.shape[0]
        if progress:
            progress("parts", done, len(ds))
    fam_a = np.array(fam)
    radius = {f: float(np.sqrt(np.mean(r2[f]))) if f in r2 else float("nan") for f in set(fam)}
    names = list(PARENT_NAMES[:len(meta["parents"])])
    out = consistency(np.stack(canon), np.stack(fg_c), np.stack(gt_c), fam_a, radius, names=names)
    if band_c:  # the reference: the same foreground cut into K horizontal bands
        ref = consistency(np.stack(band_c), np.stack(fg_c), np.stack(gt_c), fam_a, radius, names=names)
        out["parts_band_spread"], out["parts_band_separation"] = ref["parts_spread"], ref["parts_separation"]
    out["parts_n"] = done
    return out
