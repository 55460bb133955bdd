"""Landmark regression error (``fgtool eval --metric landmarks``), GANSeg's keypoint metric.

The protocol of the GANSeg paper (Sec. 4.1, Table 1), after SCOPS and Liu et al.: a linear
regression without bias maps the predicted part centres (all K centres, x and y: 2K inputs)
to the ground-truth keypoints (x and y of each of P points). It is fitted on one split and
scored on another as the mean L2 distance between regressed and true keypoints, normalised
per image.

Choices, stated:

- Coordinates: both sides in the model's view, [-1, 1] across the square crop the model
  sees (centred at the crop's middle, so "no bias" means no offset from the crop centre).
- Centres: centres of mass of the soft part maps, with no minimum mass, so every part has one.
- Visibility: a keypoint flagged invisible is left out of the fit (keypoint p is fitted on
  the training images where p is visible, by least squares) and out of the error. A keypoint
  visible in no training image is not scored (``landmarks_unfitted`` counts them).
- Error: the mean over every visible (image, keypoint) of the test split of
  ``|regressed - true| / norm`` with ``norm`` the image's normaliser: the inter-ocular
  distance (the distance between two named keypoints, ``--eyes``) as the paper does on faces,
  else the side of the crop the model sees (on the synthetic set and any full-image view,
  the image side; with boxes, the box's crop).

Keypoints come from CUB's ``parts/part_locs.txt`` (``<image id> <part id> <x> <y>
<visible>``, image ids of ``images.txt``) or from a CSV (``path,x1,y1,...,xP,yP``; an empty
pair is an invisible point; an optional header row starting with ``path``).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..backends.base import PartSegmenter
from ..errors import FgtoolError

# ----------------------------------------------------------------------------- the metric on arrays


def fit(centres: np.ndarray, keypoints: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """Least-squares linear map without bias: ``centres`` [N, K, 2], ``keypoints`` [N, P, 2],
    ``visible`` [N, P] bool -> weights [P, 2K, 2] (NaN for a keypoint visible in no image),
    so that keypoint p of image n is ``centres[n].reshape(2K) @ W[p]``."""
    c = np.asarray(centres, np.float64)
    kp = np.asarray(keypoints, np.float64)
    vis = np.asarray(visible, bool)
    n, k = c.shape[:2]
    x = c.reshape(n, 2 * k)
    if not np.isfinite(x).all():
        raise FgtoolError("landmarks: the part centres hold NaN or inf")
    w = np.full((kp.shape[1], 2 * k, 2), np.nan)
    for p in range(kp.shape[1]):
        sel = vis[:, p]
        if sel.any():
            w[p] = np.linalg.lstsq(x[sel], kp[sel, p], rcond=None)[0]
    return w


def predict(w: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Regressed keypoints [N, P, 2] of ``centres`` [N, K, 2] through ``w`` from :func:`fit`."""
    c = np.asarray(centres, np.float64)
    return np.einsum("nj,pjd->npd", c.reshape(len(c), -1), w)


def error(pred: np.ndarray, keypoints: np.ndarray, visible: np.ndarray, norm: np.ndarray) -> float:
    """Mean over the visible (image, keypoint) pairs of ``|pred - keypoints| / norm[image]``;
    NaN predictions (unfitted keypoints) are left out."""
    d = np.linalg.norm(np.asarray(pred, np.float64) - np.asarray(keypoints, np.float64), axis=-1)
    d = d / np.asarray(norm, np.float64)[:, None]
    sel = np.asarray(visible, bool) & np.isfinite(d)
    if not sel.any():
        raise FgtoolError("landmarks: no visible keypoint in the test split to score")
    return float(d[sel].mean())


def regression_error(train_c, train_kp, train_vis, test_c, test_kp, test_vis, test_norm) -> dict:
    """Fit on the training arrays, score on the test arrays (module doc)."""
    w = fit(train_c, train_kp, train_vis)
    fitted = np.isfinite(w).all((1, 2))
    return {"landmark_error": error(predict(w, test_c), test_kp, test_vis, test_norm),
            "landmarks_unfitted": int((~fitted).sum())}


# ----------------------------------------------------------------------------- readers


def _number(v: str, where: str) -> float:
    try:
        f = float(v)
    except ValueError:
        raise FgtoolError(f"{where}: {v!r} is not a number") from None
    if not np.isfinite(f):
        raise FgtoolError(f"{where}: {v!r} is not a finite number")
    return f


def read_part_locs(path: str | Path, images_txt: str | Path) -> dict[Path, tuple[np.ndarray, np.ndarray]]:
    """CUB ``part_locs.txt`` -> {image path (resolved, under images/): (xy [P, 2], visible [P])}.
    Image ids are those of ``images_txt``; part ids run 1..P (P the largest id in the file);
    a point the file does not list for an image is invisible."""
    path, images_txt = Path(path), Path(images_txt)
    try:
        id_rows = images_txt.read_text().splitlines()
        rows = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise FgtoolError(f"{getattr(e, 'filename', None) or path}: cannot read ({type(e).__name__})") from None
    paths: dict[int, Path] = {}
    for ln, line in enumerate(id_rows, 1):
        f = line.split(maxsplit=1)
        if not f:
            continue
        if len(f) != 2 or not f[0].isdigit():
            raise FgtoolError(f"{images_txt}:{ln}: expected '<id> <path>'")
        paths[int(f[0])] = (images_txt.parent / "images" / f[1].strip()).resolve()
    pts: dict[int, dict[int, tuple[float, float, bool]]] = {}
    for ln, line in enumerate(rows, 1):
        f = line.split()
        if not f:
            continue
        where = f"{path}:{ln}"
        if len(f) != 5:
            raise FgtoolError(f"{where}: expected '<image id> <part id> <x> <y> <visible>', got {len(f)} fields")
        if not (f[0].isdigit() and f[1].isdigit() and int(f[1]) >= 1):
            raise FgtoolError(f"{where}: image and part ids must be positive integers")
        i, p = int(f[0]), int(f[1])
        if i not in paths:
            raise FgtoolError(f"{where}: image id {i} is not listed in {images_txt}")
        if f[4] not in ("0", "1"):
            raise FgtoolError(f"{where}: visible must be 0 or 1, got {f[4]!r}")
        pts.setdefault(i, {})[p] = (_number(f[2], where), _number(f[3], where), f[4] == "1")
    if not pts:
        raise FgtoolError(f"{path} lists no keypoints")
    n_parts = max(p for d in pts.values() for p in d)
    out = {}
    for i, d in pts.items():
        xy, vis = np.zeros((n_parts, 2)), np.zeros(n_parts, bool)
        for p, (x, y, v) in d.items():
            xy[p - 1], vis[p - 1] = (x, y), v
        out[paths[i]] = (xy, vis)
    return out


def read_csv(path: str | Path, root: str | Path) -> dict[Path, tuple[np.ndarray, np.ndarray]]:
    """``path,x1,y1,...,xP,yP`` rows -> {image path (resolved): (xy [P, 2], visible [P])}.
    Paths are relative to ``root`` (or to ``root/images`` when that is where the image is);
    both cells of a point empty = invisible; an optional first row starting with ``path``."""
    path, root = Path(path), Path(root)
    try:
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise FgtoolError(f"{path}: cannot read as CSV ({type(e).__name__})") from None
    out: dict[Path, tuple[np.ndarray, np.ndarray]] = {}
    n_parts = None
    for ln, row in enumerate(rows, 1):
        row = [c.strip() for c in row]
        if not any(row) or (ln == 1 and row[0].lower() == "path"):
            continue
        where = f"{path}:{ln}"
        if len(row) < 3 or len(row) % 2 == 0:
            raise FgtoolError(f"{where}: expected path,x1,y1,...,xP,yP (an odd number of columns, >= 3)")
        p = (len(row) - 1) // 2
        if n_parts is None:
            n_parts = p
        elif p != n_parts:
            raise FgtoolError(f"{where}: {p} keypoints, earlier rows have {n_parts}")
        xy, vis = np.zeros((p, 2)), np.zeros(p, bool)
        for j in range(p):
            a, b = row[1 + 2 * j], row[2 + 2 * j]
            if (a == "") != (b == ""):
                raise FgtoolError(f"{where}: keypoint {j + 1} has only one coordinate")
            if a:
                xy[j], vis[j] = (_number(a, where), _number(b, where)), True
        rel = Path(row[0])
        img = root / rel
        if not img.is_file() and (root / "images" / rel).is_file():
            img = root / "images" / rel
        out[img.resolve()] = (xy, vis)
    if not out:
        raise FgtoolError(f"{path} lists no keypoints")
    return out


def read_keypoints(data: str | Path, keypoints: str | None = None) -> dict[Path, tuple[np.ndarray, np.ndarray]]:
    """The keypoints of the data folder ``data``: ``keypoints`` (a ``.csv`` or a CUB
    ``part_locs.txt``), else ``data/parts/part_locs.txt``."""
    data = Path(data)
    if keypoints is None:
        src = data / "parts" / "part_locs.txt"
        if not src.is_file():
            raise FgtoolError(f"{data} has no parts/part_locs.txt: pass --keypoints FILE (a part_locs.txt "
                              "or a CSV path,x1,y1,...)")
    else:
        src = Path(keypoints)
        if not src.is_file():
            raise FgtoolError(f"--keypoints {keypoints}: no such file")
    if src.suffix.lower() == ".csv":
        return read_csv(src, data)
    if not (data / "images.txt").is_file():
        raise FgtoolError(f"{src}: a part_locs.txt names images by the ids of images.txt, which {data} lacks")
    return read_part_locs(src, data / "images.txt")


def to_view(xy: np.ndarray, region: tuple[float, float, float, float]) -> np.ndarray:
    """Photo pixels [..., 2] -> view coordinates in [-1, 1] across ``region`` (l, t, r, b)."""
    l, t, r, b = region
    xy = np.asarray(xy, np.float64)
    return np.stack([(xy[..., 0] - l) / (r - l) * 2 - 1, (xy[..., 1] - t) / (b - t) * 2 - 1], -1)


# ----------------------------------------------------------------------------- a model on a data folder


def parse_eyes(eyes: str | None) -> tuple[int, int] | None:
    """``--eyes I,J`` (1-based keypoint ids) -> 0-based (i, j)."""
    if eyes is None:
        return None
    f = [v.strip() for v in str(eyes).split(",")]
    if len(f) != 2 or not all(v.isdigit() and int(v) >= 1 for v in f) or f[0] == f[1]:
        raise FgtoolError(f"--eyes must be two different keypoint ids like 1,2, got {eyes!r}")
    return int(f[0]) - 1, int(f[1]) - 1


def _splits(data: str, max_images: int, seed: int):
    """(train ImageSet, test ImageSet, how): the data's own train/test split when it has one
    (train_test_split.txt or split.csv), else a seeded 50/50 split of the whole set."""
    from ..data.datasets import scan

    root = Path(data)
    if root.is_dir() and any((root / f).is_file() for f in ("train_test_split.txt", "split.csv")):
        return (scan(data, split="train", max_images=max_images), scan(data, split="test", max_images=max_images),
                "the data's train/test split")
    full = scan(data, max_images=max_images)
    if len(full) < 2:
        raise FgtoolError(f"{data}: landmarks need at least 2 images (one to fit, one to score)")
    perm = np.random.default_rng(seed).permutation(len(full))
    half = len(full) // 2
    return full.subset(np.sort(perm[:half])), full.subset(np.sort(perm[half:])), f"a 50/50 split (seed {seed})"


def _centres(m, imageset, kps, workers: int, progress=None):
    """(part centres [N, K, 2], foreground centres [N, 1, 2], keypoints [N, P, 2], visible
    [N, P], view sides [N]) in view coordinates, for the images of ``imageset`` with keypoints."""
    import torch

    from ..data.datasets import ImageDataset, drop_undecodable
    from ..data.evalset import batches as _batches
    from ..data.evalset import box_mode as _box_mode
    from ..data.evalset import view_region as _view_region
    from ..io.images import image_size
    from .parts import mass_centres

    keep = [i for i, r in enumerate(imageset.records) if Path(r.path).resolve() in kps]
    imageset = drop_undecodable(imageset.subset(keep))
    if not len(imageset):
        return None
    d = m.cfg.data
    ds = ImageDataset(imageset, d.size, train=False, box_mode=_box_mode(m.cfg), crop_scale=d.crop_scale,
                      crop_clip=d.crop_clip, pseudo_border=d.pseudo_border, flip=False)
    k = m.backend.n_parts()
    cen, fg, xy, vis = [], [], [], []
    done = 0
    with torch.no_grad():
        for b in _batches(ds, 64, workers):
            probs = m.backend.segment_parts(m.nets, b["image"].to(m.device)).float()
            cen.append(m.backend.part_centres(probs, min_mass=0.0).cpu().numpy())
            fg.append(mass_centres(1.0 - probs[:, k:].cpu().numpy(), 0.0))
            for i in range(probs.shape[0]):
                rec = imageset.records[done + i]
                p, v = kps[Path(rec.path).resolve()]
                xy.append(to_view(p, _view_region(ds, rec, *image_size(rec.path))))
                vis.append(v)
            done += probs.shape[0]
            if progress:
                progress("landmarks", done, len(ds))
    return np.concatenate(cen), np.concatenate(fg), np.stack(xy), np.stack(vis)


def landmark_regression(m, data: str, keypoints: str | None = None, eyes: str | None = None,
                        max_images: int = 0, workers: int = 0, seed: int = 0, progress=None) -> dict:
    """The landmark regression error of a loaded part model ``m`` on ``data`` (module doc).
    Also ``landmark_error_fg_centre``: the same regression from the predicted foreground's
    centre alone, the reference that the part centres should beat."""
    from ..loading import require_segmenter as _require_segmenter

    if not isinstance(m.backend, PartSegmenter):
        raise FgtoolError(f"--metric landmarks: model '{m.cfg.model}' has no part centres")
    _require_segmenter(m)
    pair = parse_eyes(eyes)
    kps = read_keypoints(data, keypoints)
    n_points = len(next(iter(kps.values()))[1])
    if pair is not None and max(pair) >= n_points:
        raise FgtoolError(f"--eyes {eyes}: the keypoints have {n_points} points")
    train_set, test_set, how = _splits(data, max_images, seed)
    tr, te = _centres(m, train_set, kps, workers, progress), _centres(m, test_set, kps, workers, progress)
    if tr is None or te is None:
        raise FgtoolError(f"{data}: the keypoints cover no image of the {'train' if tr is None else 'test'} split")
    (tr_c, tr_fg, tr_kp, tr_v), (te_c, te_fg, te_kp, te_v) = tr, te
    if pair is None:
        norm, norm_by = np.full(len(te_kp), 2.0), "the side of the model's view"
    else:
        i, j = pair
        ok = te_v[:, i] & te_v[:, j]
        norm = np.where(ok, np.linalg.norm(te_kp[:, i] - te_kp[:, j], axis=-1), np.nan)
        te_v = te_v & ok[:, None] & (norm > 0)[:, None]
        norm, norm_by = np.where(norm > 0, norm, np.nan), f"the distance of keypoints {i + 1} and {j + 1}"
    res = regression_error(tr_c, tr_kp, tr_v, te_c, te_kp, te_v, norm)
    ref = regression_error(tr_fg, tr_kp, tr_v, te_fg, te_kp, te_v, norm)
    return {**res, "landmark_error_fg_centre": ref["landmark_error"], "landmarks_k": int(tr_c.shape[1]),
            "landmarks_points": n_points, "landmarks_fit": len(tr_kp), "landmarks_test": len(te_kp),
            "landmarks_scored": int(te_v.sum()), "landmarks_split": how, "landmarks_norm": norm_by}
