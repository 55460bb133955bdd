"""Finding a data set's images: the layouts (CUB-200-2011's files, class folders with an
optional split CSV), their records, labels and boxes, and the checks that reject a bad set
before training starts (:func:`fgtool.data.datasets.scan` is the entry point)."""

from __future__ import annotations

import csv
import math
import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from fgtool.errors import FgtoolError, printable
from fgtool.io.images import IMAGE_EXTENSIONS, image_size, list_images
from fgtool.io.paths import is_special, member

_SKIP_HINT = "(remove it, or pass --skip-bad / --set data.skip_bad=true to skip unreadable images)"


BOX_TOLERANCE = 1.0  # px a box may reach past the image border (rounding in annotation tools)


@dataclass
class Record:
    path: Path                # absolute image path
    label: int                # class id, -1 if unknown
    parent: int = -1          # parent label if known (synthetic data: parent_labels.txt)
    bg: int = -1              # background label if known (background_labels.txt)
    box: tuple[float, float, float, float] | None = None  # (x, y, w, h) in original pixels
    mask_path: Path | None = None                         # segmentation mask if present


@dataclass
class ImageSet:
    root: Path
    layout: str               # "cub" | "imagefolder" | "flat"
    records: list[Record]
    classes: list[str] = field(default_factory=list)  # index = label id; [] for flat

    def __len__(self) -> int:
        return len(self.records)

    @property
    def has_boxes(self) -> bool:
        """Every record has a box (partial annotations are not used as real boxes by "auto")."""
        return bool(self.records) and all(r.box is not None for r in self.records)

    @property
    def has_masks(self) -> bool:
        return bool(self.records) and all(r.mask_path is not None for r in self.records)

    @property
    def has_labels(self) -> bool:
        return any(r.label >= 0 for r in self.records)

    def labels(self) -> np.ndarray | None:
        """Class id per record (int64), or None when the set has no labels."""
        if not self.has_labels:
            return None
        return np.array([r.label for r in self.records], dtype=np.int64)

    def subset(self, idx) -> "ImageSet":
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return replace(self, records=[self.records[int(i)] for i in idx], classes=list(self.classes))

    def without(self, drop) -> "ImageSet":
        """The set less the records at the indices ``drop`` (unreadable images); an error when
        none is left."""
        drop = set(drop)
        kept = self.subset([k for k in range(len(self)) if k not in drop])
        if not kept.records:
            raise FgtoolError(f"no readable images in {self.root}")
        return kept


def _no_images(folder: Path) -> FgtoolError:
    return FgtoolError(f"no images found in {folder} (looked for {' '.join(IMAGE_EXTENSIONS)})")


def _visible_dirs(folder: Path) -> list[str]:
    """Sub-folders that are not hidden. A symlink loop (a link to itself, or back to ``folder``
    or above it, which would list every image again) is left out with a warning."""
    here = folder.resolve()
    names = []
    for e in os.scandir(folder):
        if e.name.startswith("."):
            continue
        try:
            if not e.is_dir():
                continue
            target = Path(e.path).resolve(strict=True) if e.is_symlink() else None
        except (OSError, RuntimeError):  # ELOOP: a link that points to itself
            if e.is_symlink():
                warnings.warn(printable(f"ignoring {e.path}: symlink loop"), stacklevel=3)
            continue
        if target is not None and (target == here or target in here.parents):
            warnings.warn(printable(f"ignoring {e.path}: symlink back to {target} (a loop)"), stacklevel=3)
            continue
        names.append(e.name)
    return sorted(names)


def _read_table(path: Path, ncols: int, last_rest: bool = False) -> dict[int, list[str]]:
    """``<id> <v1> ...`` lines -> {id: [v1, ...]}; ``last_rest`` keeps spaces in the last column."""
    out: dict[int, list[str]] = {}
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as e:
        raise FgtoolError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise FgtoolError(f"cannot read {path}: {e.strerror or e}") from None
    for lineno, line in enumerate(lines, 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        parts = s.split(maxsplit=ncols) if last_rest else s.split()
        if len(parts) < ncols + 1 or (not last_rest and len(parts) > ncols + 1):
            raise FgtoolError(f"{path} line {lineno}: expected {ncols + 1} columns, got {len(parts)}: {s[:80]!r}")
        try:
            key = int(parts[0])
        except ValueError:
            raise FgtoolError(f"{path} line {lineno}: bad image id {parts[0]!r}") from None
        if key in out:
            raise FgtoolError(f"{path} line {lineno}: image id {key} appears twice")
        out[key] = parts[1:ncols + 1]
    return out


def _int_column(path: Path, ids: Sequence[int], one_based: bool = True) -> list[int]:
    table = _read_table(path, 1)
    out = []
    for i in ids:
        if i not in table:
            raise FgtoolError(f"{path} has no entry for image id {i}")
        try:
            v = int(table[i][0])
        except ValueError:
            raise FgtoolError(f"{path}: bad value {table[i][0]!r} for image id {i}") from None
        out.append(v - 1 if one_based else v)
    return out


def _scan_cub(root: Path, split: str | None) -> ImageSet:
    table = _read_table(root / "images.txt", 1, last_rest=True)
    if not table:
        raise FgtoolError(f"{root / 'images.txt'} lists no images")
    ids = sorted(table)
    img_dir = root / "images"
    # a name that leaves images/ ("../x.png", "/etc/x.png") is refused: outputs named after it
    # (segment's masks) would land outside their folder
    paths = [member(img_dir, table[i][0], f"{root / 'images.txt'}: image id {i},", links=False)
             for i in ids]
    special = [p for p in paths if is_special(p)]
    if special:
        raise FgtoolError(f"{root / 'images.txt'} lists {len(special)} file(s) that are not regular files "
                          f"(FIFO, device or socket), first: {special[0]}")
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FgtoolError(f"{root / 'images.txt'} lists {len(missing)} missing file(s), first: {missing[0]}")

    labels = [-1] * len(ids)
    if (root / "image_class_labels.txt").is_file():
        labels = _int_column(root / "image_class_labels.txt", ids)
    parents = [-1] * len(ids)
    if (root / "parent_labels.txt").is_file():
        parents = _int_column(root / "parent_labels.txt", ids)
    bgs = [-1] * len(ids)
    if (root / "background_labels.txt").is_file():
        bgs = _int_column(root / "background_labels.txt", ids)
    boxes: list = [None] * len(ids)
    if (root / "bounding_boxes.txt").is_file():
        boxes = _read_boxes(root / "bounding_boxes.txt", ids)
    masks: list = [None] * len(ids)
    seg_dir = root / "segmentations"
    if seg_dir.is_dir():
        for k, i in enumerate(ids):
            m = (seg_dir / table[i][0]).with_suffix(".png")
            masks[k] = m if m.is_file() else None
    classes: list[str] = []
    if (root / "classes.txt").is_file():
        ct = _read_table(root / "classes.txt", 1, last_rest=True)
        classes = [ct[k][0] for k in sorted(ct)]
    n_cls = max(labels) + 1 if labels else 0
    if len(classes) < n_cls:
        classes = classes + [str(c) for c in range(len(classes), n_cls)]

    records = [Record(paths[k], labels[k], parents[k], bgs[k], boxes[k], masks[k]) for k in range(len(ids))]
    if split is not None:
        sp = root / "train_test_split.txt"
        if not sp.is_file():
            raise FgtoolError(f"split={split!r} requested but {root} has no train_test_split.txt")
        if split not in ("train", "test"):
            raise FgtoolError(f"unknown split {split!r} for {root} (use train or test)")
        flags = _int_column(sp, ids, one_based=False)
        want = 1 if split == "train" else 0
        records = [r for r, f in zip(records, flags) if f == want]
    return ImageSet(root, "cub", records, classes)


def _read_boxes(path: Path, ids: Sequence[int]) -> list:
    """``<id> <x> <y> <w> <h>`` per image; every id must be in images.txt and every box must
    have a positive size (whether it lies inside its image is checked with the headers)."""
    table = _read_table(path, 4)
    unknown = sorted(set(table) - set(ids))
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise FgtoolError(f"{path}: box for image id {unknown[0]}{more}, which images.txt does not list")
    boxes: list = []
    for i in ids:
        if i not in table:
            boxes.append(None)
            continue
        try:
            box = tuple(float(v) for v in table[i])
        except ValueError:
            raise FgtoolError(f"{path}: non-numeric box for image id {i}: {' '.join(table[i])!r}") from None
        x, y, w, h = box
        if not all(math.isfinite(v) for v in box):
            raise FgtoolError(f"{path}: box of image id {i} is not finite: {' '.join(table[i])}")
        if w <= 0 or h <= 0:
            raise FgtoolError(f"{path}: box of image id {i} has a negative or zero size (w={w:g}, h={h:g})")
        if x < -BOX_TOLERANCE or y < -BOX_TOLERANCE:
            raise FgtoolError(f"{path}: box of image id {i} starts outside the image (x={x:g}, y={y:g})")
        boxes.append(box)
    return boxes


def _box_problem(box, size: tuple[int, int]) -> str | None:
    x, y, w, h = box
    W, H = size
    t = BOX_TOLERANCE
    if x < -t or y < -t or x + w > W + t or y + h > H + t:
        return f"box (x={x:g}, y={y:g}, w={w:g}, h={h:g}) lies outside the {W}x{H} image"
    return None


def _read_split_csv(csv_path: Path) -> dict[str, str]:
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            cols = {c.strip().lower(): c for c in (reader.fieldnames or [])}
            if "path" not in cols or "split" not in cols:
                raise FgtoolError(f"{csv_path} needs a header with columns path,split (got {reader.fieldnames})")
            return {Path(row[cols["path"]].strip()).as_posix(): (row[cols["split"]] or "").strip().lower()
                    for row in reader if row.get(cols["path"])}
    except UnicodeDecodeError as e:
        raise FgtoolError(f"{csv_path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise FgtoolError(f"{csv_path} is not a valid CSV file ({e})") from None


def fgtool_output(folder: Path) -> str | None:
    """What fgtool wrote ``folder`` as (a run, a segment or cluster output), or None."""
    try:
        names = set(os.listdir(folder))
    except OSError:
        return None
    if "config.json" in names and ({"last.pt", "metrics.jsonl", RUN_LOCK} & names
                                   or any(n.startswith("step_") and n.endswith(".pt") for n in names)):
        return "an fgtool run folder"
    if "index.json" in names and "overlay.png" in names:
        return "an fgtool segment output"
    if folder.name.endswith("_sheets") and any(n.startswith("cluster_") for n in names):
        return "fgtool cluster sheets"
    return None


RUN_LOCK = ".lock"  # the lock file of a run folder while it trains (fgtool.train)


def _data_dirs(base: Path) -> list[str]:
    """Visible sub-folders of ``base`` that are data: fgtool's own outputs (a run folder made
    inside the data folder, masks, cluster sheets) are never read as images, with a warning."""
    dirs = []
    for d in _visible_dirs(base):
        kind = fgtool_output(base / d)
        if kind:
            warnings.warn(printable(f"{base}: ignoring {d}/, {kind} (not data)"), stacklevel=4)
            continue
        dirs.append(d)
    return dirs


def _scan_folder(root: Path, split: str | None) -> ImageSet:
    base = root
    dirs = _data_dirs(root)
    if dirs == ["images"] and not list_images(root, recursive=False):
        base = root / "images"
        dirs = _data_dirs(base)
    records: list[Record] = []
    classes: list[str] = []
    top = list_images(base, recursive=False)
    with_images = [d for d in dirs if list_images(base / d)]
    if top and with_images:
        more = f" and {len(with_images) - 3} more" if len(with_images) > 3 else ""
        raise FgtoolError(printable(
            f"{base} holds {len(top)} image(s) at its top and {len(with_images)} sub-folder(s) with images "
            f"({', '.join(with_images[:3])}{more}): move the top-level images into a class folder to read "
            "it as class folders, or the sub-folders out of it to read it as one flat folder"))
    if top and dirs:  # sub-folders without images beside a flat set: said, not silently skipped
        warnings.warn(printable(f"{base}: reading {len(top)} images as a flat folder; ignoring sub-folders "
                                f"without images: {', '.join(dirs[:5])}"), stacklevel=3)
        dirs = []
    if dirs:
        layout = "imagefolder"
        empty = []
        for d in dirs:
            files = list_images(base / d)
            if not files:
                empty.append(d)
                continue
            label = len(classes)
            classes.append(d)
            records.extend(Record(p, label) for p in files)
        if empty and records:
            warnings.warn(f"{base}: ignoring {len(empty)} class folder(s) without images: "
                          f"{', '.join(empty[:5])}", stacklevel=3)
    else:
        layout = "flat"
        records = [Record(p, -1) for p in top]
    if not records:
        raise _no_images(base)

    if split is not None:
        csv_path = next((p / "split.csv" for p in (root, base) if (p / "split.csv").is_file()), None)
        if csv_path is None:
            raise FgtoolError(f"split={split!r} requested but {root} has no split.csv")
        table = _read_split_csv(csv_path)
        names = sorted(set(table.values()))
        if split.lower() not in names:
            raise FgtoolError(f"unknown split {split!r}: {csv_path} has {', '.join(names) or 'no splits'}")
        rel_to = csv_path.parent
        records = [r for r in records if table.get(r.path.relative_to(rel_to).as_posix()) == split.lower()]
        if not records:
            raise FgtoolError(f"split {split!r} of {csv_path} matches no image under {base}")
    return ImageSet(root, layout, records, classes)


def _balanced_subset(labels: np.ndarray, k: int) -> np.ndarray:
    """Deterministic ``k`` indices: per-class quotas proportional to class size (at least one per
    class when ``k`` allows), members picked at even strides within each class; sorted."""
    classes, inverse = np.unique(labels, return_inverse=True)
    members = [np.flatnonzero(inverse == c) for c in range(len(classes))]
    sizes = np.array([len(m) for m in members])
    n = int(sizes.sum())
    if k >= n:
        return np.arange(n)
    if k < len(classes):  # cannot keep every class: evenly strided classes, one image each
        pick = [int((i + 0.5) * len(classes) / k) for i in range(k)]
        return np.sort(np.array([members[c][len(members[c]) // 2] for c in pick]))
    exact = sizes * k / n
    quota = np.clip(np.floor(exact).astype(int), 1, sizes)
    while quota.sum() < k:  # largest remainder first, ties to the lower class id
        room = np.where(quota < sizes, exact - quota, -np.inf)
        quota[int(np.argmax(room))] += 1
    while quota.sum() > k:
        over = np.where(quota > 1, quota - exact, -np.inf)
        quota[int(np.argmax(over))] -= 1
    chosen = [m[((np.arange(q) + 0.5) * len(m) / q).astype(int)] for m, q in zip(members, quota)]
    return np.sort(np.concatenate(chosen))


def _header_problem(path: Path) -> tuple[str | None, tuple[int, int]]:
    """(why the file cannot be used or None, (W, H) after EXIF orientation)."""
    try:
        w, h = image_size(path)
    except FgtoolError as exc:
        why = str(exc)
        prefix = f"cannot read image {FgtoolError(str(path))}: "
        return (why[len(prefix):] if why.startswith(prefix) else why), (0, 0)
    except Exception as exc:  # pragma: no cover - image_size maps errors already
        return " ".join((str(exc) or type(exc).__name__).split()), (0, 0)
    if w <= 0 or h <= 0:
        return "empty image", (w, h)
    return None, (w, h)


def _scan(root, split: str | None, max_images: int, check: bool, skip_bad: bool) -> ImageSet:
    root = Path(root).expanduser()
    if not root.exists():
        raise FgtoolError(f"data folder {root} does not exist")
    root = root.resolve()
    if root.is_file():
        if root.suffix.lower() not in IMAGE_EXTENSIONS:
            raise FgtoolError(f"{root} is not an image file (expected one of {' '.join(IMAGE_EXTENSIONS)})")
        if split is not None:
            raise FgtoolError(f"split={split!r} makes no sense for the single image {root}")
        iset = ImageSet(root.parent, "flat", [Record(root, -1)], [])
    elif (root / "images.txt").is_file():
        iset = _scan_cub(root, split)
    else:
        iset = _scan_folder(root, split)

    if max_images and max_images > 0 and len(iset) > max_images:
        labels = np.array([r.label for r in iset.records])
        iset = iset.subset(_balanced_subset(labels, int(max_images)))

    if check:
        bad = []
        for k, r in enumerate(iset.records):
            why, size = _header_problem(r.path)
            if why is not None:
                bad.append((k, why))
            elif r.box is not None and (box_why := _box_problem(r.box, size)) is not None:
                boxes = iset.root / "bounding_boxes.txt"
                raise FgtoolError(f"{boxes}: {box_why} {r.path}")
        if bad:
            first = iset.records[bad[0][0]].path
            if not skip_bad:
                raise FgtoolError(f"{len(bad)} unreadable image(s) in {iset.root}, first: {first} "
                                  f"({bad[0][1]}) {_SKIP_HINT}")
            warnings.warn(str(FgtoolError(f"skipping {len(bad)} unreadable image(s) in {iset.root}, "
                                          f"first: {first} ({bad[0][1]})")), stacklevel=3)
            iset = iset.without(k for k, _ in bad)
    return iset
