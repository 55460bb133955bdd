"""Predictions made by fgtool or by other tools, matched to the images of a data folder
(``fgtool eval --pred``).

* Cluster ids: a JSON file (``fgtool cluster``'s ``{"items": [{"path", "cluster"}, ...]}``,
  a bare list of such items, or a mapping ``{path: cluster}``) or a CSV file (``.csv``:
  ``path,cluster`` rows, a header naming the two columns optional).
* Foreground masks: a folder of PNGs named like the images, as ``fgtool segment`` writes them
  (``NAME.png`` for ``NAME.jpg``, or ``NAME.jpg.png``), relative to the data folder or, in
  the CUB layout, to ``images/``. Grey level >= 128 is foreground; a mask whose values are
  only 0 and 1 is read as 0/1. Each mask is scored against ``segmentations/`` at the
  ground truth's size (a mask of another size is resized, nearest neighbour), per image, then
  averaged over images, like ``--baseline centre``.

A path in a prediction is absolute, relative to the data folder, relative to ``images/`` in
the CUB layout (as ``images.txt`` lists them), or relative to the current folder, tried in
that order. A prediction that covers only part of the set scores that part, with a warning.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from ..errors import FgtoolError

_CLUSTER_FORMS = ("a clusters JSON (items with path and cluster, or {path: cluster}) "
                  "or a CSV of path,cluster rows")


def cluster_id(v, where: str) -> int:
    """A cluster id: an integer (3, 3.0 or "3"), never a truncated 1.5, a bool or a negative."""
    if isinstance(v, str):
        try:
            v = float(v.strip()) if v.strip() else v
        except ValueError:
            pass
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()) \
            or v < 0:
        raise FgtoolError(f"{where}: cluster id {v!r} is not a non-negative integer")
    return int(v)


class _Index:
    """Finds a data set's image from a path written by any tool (see the module docs)."""

    def __init__(self, imageset):
        bases = [imageset.root] + ([imageset.root / "images"] if imageset.layout == "cub" else [])
        self.by_abs: dict[str, int] = {}
        self.by_rel: dict[str, int] = {}
        for i, r in enumerate(imageset.records):
            p = Path(r.path)
            self.by_abs[str(p)] = self.by_abs[str(p.resolve())] = i
            for base in bases:
                for a, b in ((p, base), (p.resolve(), base.resolve())):
                    try:
                        self.by_rel.setdefault(a.relative_to(b).as_posix(), i)
                    except ValueError:
                        pass

    def find(self, path: str) -> int | None:
        p = Path(path).expanduser()
        if not p.is_absolute():
            i = self.by_rel.get(p.as_posix())
            if i is not None:
                return i
            p = p.absolute()
        i = self.by_abs.get(str(p))
        return i if i is not None else self.by_abs.get(str(p.resolve()))


def _entries_json(p: Path, pred: str) -> list[tuple[str, object, str]]:
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
        if isinstance(doc, dict) and "items" not in doc:  # {path: cluster}
            return [(str(k), v, f"{pred}: {k}") for k, v in doc.items()]
        items = doc["items"] if isinstance(doc, dict) else doc
        return [(str(it["path"]), it["cluster"], f"{pred}: item {n}") for n, it in enumerate(items)]
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise FgtoolError(f"{pred} is not {_CLUSTER_FORMS}") from None


def _entries_csv(p: Path, pred: str) -> list[tuple[str, object, str]]:
    import csv
    import io

    try:
        text = p.read_text(encoding="utf-8-sig")  # spreadsheets start with a byte-order mark
        rows = [(n, r) for n, r in enumerate(csv.reader(io.StringIO(text)), 1) if any(c.strip() for c in r)]
    except (UnicodeDecodeError, csv.Error) as e:
        raise FgtoolError(f"{pred} is not a CSV of path,cluster rows: {' '.join(str(e).split())}") from None
    if not rows:
        raise FgtoolError(f"{pred} has no rows")
    head = [c.strip().lower() for c in rows[0][1]]
    ip, ic = 0, 1
    if "path" in head and "cluster" in head:
        ip, ic = head.index("path"), head.index("cluster")
        rows = rows[1:]
    out = []
    for n, r in rows:
        if len(r) <= max(ip, ic):
            raise FgtoolError(f"{pred}: row {n} has no cluster column (expected path,cluster)")
        out.append((r[ip].strip(), r[ic], f"{pred}: row {n}"))
    return out


def _cover(imageset, found: list[int], pred: str, data: str, none: str):
    """The images ``found`` (indices), with a warning when they are not all of them; ``none``:
    the error when there are none."""
    if not found:
        raise FgtoolError(none)
    if len(found) < len(imageset.records):  # scores of a part are not scores of the set: say so
        warnings.warn(f"{pred} covers {len(found)} of the {len(imageset.records)} images in {data}; "
                      f"scoring those {len(found)} only", stacklevel=3)
    return imageset.subset(found)


def read_clusters(pred: str, data: str, split: str | None = None):
    """(the data set's images that ``pred`` names, their cluster ids [N] int64)."""
    from ..data.datasets import scan
    from ..io.paths import check_regular_input

    p = Path(pred)
    check_regular_input(p, "--pred")
    entries = _entries_csv(p, pred) if p.suffix.lower() == ".csv" else _entries_json(p, pred)
    imageset = scan(data, split=split)
    index = _Index(imageset)
    got: dict[int, int] = {}
    miss = None
    for path, v, where in entries:
        c = cluster_id(v, where)
        i = index.find(path)
        if i is None:
            miss = miss or path
        elif i in got:
            raise FgtoolError(f"{where}: {path} is listed twice")
        else:
            got[i] = c
    found = sorted(got)
    none = f"none of the {len(entries)} paths in {pred} is an image of {data}" + (f" (first: {miss})" if miss else "")
    return _cover(imageset, found, pred, data, none), np.array([got[i] for i in found], np.int64)


def _mask_candidates(imageset, rec) -> list[Path]:
    bases = ([imageset.root / "images"] if imageset.layout == "cub" else []) + [imageset.root]
    out = []
    for base in bases:
        try:
            rel = Path(rec.path).relative_to(base)
        except ValueError:
            continue
        out += [rel.with_name(rel.name + ".png"), rel.with_suffix(".png")]
    return out or [Path(Path(rec.path).name).with_suffix(".png")]


def _read_pred_mask(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as m:
            m.load()
            a = np.asarray(m.convert("L"))
    except Exception as exc:
        raise FgtoolError(f"cannot read mask {path}: {' '.join(str(exc).split())}") from None
    return a > 0 if a.max() <= 1 else a >= 128


def mask_scores(pred: str, data: str, split: str | None = None, max_images: int = 0, progress=None) -> dict:
    """``{"iou", "dice", "n"}`` of the mask PNGs in the folder ``pred`` against the ground truth."""
    from ..data.datasets import scan
    from .centre import read_mask
    from .segmentation import _per_image_dice, _per_image_iou, _resize_nearest

    folder = Path(pred)
    imageset = scan(data, split=split, max_images=max_images)
    if not imageset.has_masks:
        raise FgtoolError(f"{data} has no segmentations/ to score against")
    files: dict[int, Path] = {}
    for i, r in enumerate(imageset.records):
        hit = next((folder / c for c in _mask_candidates(imageset, r) if (folder / c).is_file()), None)
        if hit is not None:
            files[i] = hit
    first = folder / _mask_candidates(imageset, imageset.records[0])[-1]
    subset = _cover(imageset, sorted(files), pred, data,
                    f"no mask in {pred} is named like an image of {data} (e.g. {first} for {imageset.records[0].path})")
    ious, dices = [], []
    for n, (i, r) in enumerate(zip(sorted(files), subset.records)):
        g = read_mask(r.mask_path)[None]
        p = _read_pred_mask(files[i])[None]
        if p.shape != g.shape:
            p = _resize_nearest(p, g.shape[1:])
        ious.append(_per_image_iou(p, g)[0])
        dices.append(_per_image_dice(p, g)[0])
        if progress and (n % 200 == 0 or n + 1 == len(files)):
            progress("masks", n + 1, len(files))
    return {"iou": float(np.mean(ious)), "dice": float(np.mean(dices)), "n": len(ious)}
