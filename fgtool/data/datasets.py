"""Image sets on disk (CUB / ImageFolder / flat), the training dataset and resumable loaders.

Layouts recognised by :func:`scan`:

* **cub**: ``images.txt`` at the root (CUB-200-2011 style metadata files, ids 1-based);
* **imagefolder**: class subfolders, either in the root or in ``root/images`` when that is the
  root's only folder; an optional ``split.csv`` (``path,class,split``, paths relative to the
  folder holding the csv) gives train/test;
* **flat**: a folder of images without subfolders (labels unknown), or a single image file.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from fgtool.data.boxes import box_to_mask, crop_box_around, pseudo_box, transform_box
from fgtool.errors import FgtoolError
from fgtool.io.images import decode_image

from .layouts import ImageSet, _scan

BOX_MODES = ("auto", "gt", "pseudo", "none")

# Process-wide default of ``skip_bad`` for scan()/ImageDataset() calls that do not pass it:
# the CLI's --skip-bad on commands whose API has no such parameter (cluster, eval).
_SKIP_BAD_DEFAULT = False


@contextlib.contextmanager
def skip_bad_images(on: bool = True):
    """Within the block, scan() and ImageDataset() skip unreadable images unless told otherwise."""
    global _SKIP_BAD_DEFAULT
    old, _SKIP_BAD_DEFAULT = _SKIP_BAD_DEFAULT, bool(on)
    try:
        yield
    finally:
        _SKIP_BAD_DEFAULT = old


# --------------------------------------------------------------------------- scanning


def scan(root, split: str | None = None, max_images: int = 0, check: bool = True,
         skip_bad: bool | None = None) -> ImageSet:
    """Find the images under ``root`` (see module docstring for layouts).

    ``split`` "train"/"test" filters with split.csv / train_test_split.txt. ``max_images > 0``
    keeps a deterministic class-balanced subset. ``check`` opens every kept file's header (no full
    decode: ~6,000 files take well under a second) and raises :class:`FgtoolError` naming the
    first unreadable file, or, with ``skip_bad``, drops unreadable files with a warning (``None``:
    the default set by :func:`skip_bad_images`). A box that lies outside its image is always an
    error (a wrong annotation file is not a bad image).
    """
    if skip_bad is None:
        skip_bad = _SKIP_BAD_DEFAULT
    try:
        return _scan(root, split, max_images, check, skip_bad)
    except OSError as e:  # an unreadable folder or metadata file
        where = e.filename or root
        raise FgtoolError(f"cannot read {where}: {e.strerror or e}") from None


def drop_undecodable(iset: ImageSet) -> ImageSet:
    """``iset`` without the images that fail to decode, with one warning, where unreadable images
    are skipped (:func:`skip_bad_images`). The scan reads headers only, and a training set swaps
    an image that fails later for the next one; an evaluation item must be its own image (a
    mask, a cluster or a score of another photo under its name is worse than none), so the
    commands that evaluate decode every image once first (JPEGs at 1/8 scale)."""
    if not _SKIP_BAD_DEFAULT:
        return iset
    bad = []
    for k, r in enumerate(iset.records):
        try:
            decode_image(r.path, lambda wh: 0.125)
        except FgtoolError as e:
            bad.append((k, e))
    if not bad:
        return iset
    warnings.warn(f"skipping {len(bad)} image(s) that fail to decode in {iset.root}, first: {bad[0][1]}", stacklevel=2)
    return iset.without(k for k, _ in bad)


# --------------------------------------------------------------------------- dataset

def _derive_seed(*parts: int) -> int:
    ss = np.random.SeedSequence([int(p) % (1 << 63) for p in parts])
    return int(ss.generate_state(1, dtype=np.uint64)[0])


@dataclass
class _View:
    region: tuple[float, float, float, float]  # (l, t, r, b) in original pixels, maps onto S x S
    scale: float                                # output pixels per original pixel


def _render(img: Image.Image, region, size: int, resample) -> Image.Image:
    """Resample ``region`` (ltrb, may leave the image) to ``size`` x ``size``; outside pixels
    replicate the nearest edge."""
    x0, y0, x1, y1 = region
    w, h = img.size
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
        # crop the part inside (+2 px for the filter support), pad the rest by edge replication
        ix0 = min(max(0, math.floor(x0) - 2), w - 1)
        iy0 = min(max(0, math.floor(y0) - 2), h - 1)
        ix1 = max(min(w, math.ceil(x1) + 2), ix0 + 1)
        iy1 = max(min(h, math.ceil(y1) + 2), iy0 + 1)
        arr = np.asarray(img.crop((ix0, iy0, ix1, iy1)))
        pl, pt = max(0, math.ceil(ix0 - x0)), max(0, math.ceil(iy0 - y0))
        pr, pb = max(0, math.ceil(x1 - ix1)), max(0, math.ceil(y1 - iy1))
        pad = ((pt, pb), (pl, pr)) + (((0, 0),) if arr.ndim == 3 else ())
        img = Image.fromarray(np.pad(arr, pad, mode="edge"))
        x0, x1, y0, y1 = x0 - ix0 + pl, x1 - ix0 + pl, y0 - iy0 + pt, y1 - iy0 + pt
    return img.resize((size, size), resample, box=(x0, y0, x1, y1))


def _pil_to_tensor(img: Image.Image) -> torch.Tensor:
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


class ImageDataset(Dataset):
    """Training/evaluation views of an :class:`ImageSet`; items are dicts of tensors.

    * ``image`` [3,S,S] in [-1,1]: with real boxes (``box_mode`` "gt", or "auto" when every record
      has one) the square crop of side ``crop_scale * max(w, h)`` around the box, else the full image;
    * ``full`` [3,S,S]: the full image, only when real boxes are used;
    * ``fg`` [1,S,S]: the (real or pseudo) box as a 0/1 mask in the coordinates of ``full``
      (or ``image`` without real boxes); absent with ``box_mode="none"``;
    * ``mask`` [1,S,S]: ground-truth segmentation in ``image`` coordinates (``with_masks`` and the
      set has masks), 0/1 after bilinear resampling and a 0.5 threshold;
    * ``label``, ``parent``, ``bg``, ``index``: int64 scalars (-1 unknown).

    The full view resizes the shorter side (the object view: the crop side) to ``round(S*jitter)``
    in train mode and takes a random ``S x S`` crop, then flips both views together with p=0.5;
    eval mode resizes to ``S`` and centre-crops. Augmentation is a pure function of
    ``(index, aug_seed)``: pass ``dataset[(index, aug_seed)]``; an int index uses a seed derived
    from ``(seed, index)`` (the same every epoch, so training should go through
    :class:`StepSampler`).
    """

    def __init__(self, imageset: ImageSet, size: int, train: bool = True, box_mode: str = "auto",
                 crop_scale: float = 1.5, pseudo_border: float = 0.15, flip: bool = True,
                 jitter: float = 76 / 64, seed: int = 0, with_masks: bool = False, skip_bad: bool | None = None,
                 bg_crops: bool = False, bg_crop_min: float = 0.25, crop_clip: bool = False):
        self.skip_bad = _SKIP_BAD_DEFAULT if skip_bad is None else bool(skip_bad)
        self._skipped: set[int] = set()  # indices found unreadable (per process: each worker has its own)
        if box_mode not in BOX_MODES:
            raise FgtoolError(f"unknown box_mode {box_mode!r} (use one of {', '.join(BOX_MODES)})")
        if box_mode == "gt" and not any(r.box is not None for r in imageset.records):
            raise FgtoolError(f"box_mode=gt but {imageset.root} has no bounding boxes")
        self.imageset = imageset
        self.size = int(size)
        self.train = bool(train)
        self.box_mode = box_mode
        self.crop_scale = float(crop_scale)
        self.crop_clip = bool(crop_clip)
        self.pseudo_border = float(pseudo_border)
        self.flip = bool(flip)
        self.jitter = float(jitter)
        self.seed = int(seed)
        self.use_real = box_mode == "gt" or (box_mode == "auto" and imageset.has_boxes)
        self.use_fg = box_mode != "none"
        self.use_masks = bool(with_masks) and imageset.has_masks
        # box-outside crops come from the set's boxes whatever box_mode says (GANSeg trains on
        # full images); a photo without one takes its pseudo-box, so the crop is a square of the
        # border band (pseudo_border of the short side: bg_crop_min must not exceed it)
        if bg_crops and self.train and not imageset.has_boxes and bg_crop_min > pseudo_border:
            raise FgtoolError(f"data.bg_crops on {imageset.root} (no bounding_boxes.txt) takes crops from the "
                              f"pseudo-box's border band of {pseudo_border:g}: data.bg_crop_min must be at most "
                              f"that, got {bg_crop_min:g} (the cpu-real-onegan and cpu-real-ganseg recipes fit it)")
        self.use_bg_crops = bool(bg_crops) and self.train
        self.bg_crop_min = float(bg_crop_min)
        self.resized = max(self.size, round(self.size * self.jitter)) if self.train else self.size

    def __len__(self) -> int:
        return len(self.imageset.records)

    # -- geometry ---------------------------------------------------------------------------
    def _offset(self, frame: int, rng: random.Random) -> int:
        if frame <= self.size:
            return 0
        return rng.randint(0, frame - self.size) if self.train else (frame - self.size) // 2

    def _full_view(self, w: int, h: int, rng: random.Random) -> _View:
        k = self.resized / min(w, h)
        ox = self._offset(round(w * k), rng)
        oy = self._offset(round(h * k), rng)
        side = self.size / k
        return _View((ox / k, oy / k, ox / k + side, oy / k + side), k)

    def _object_view(self, box, w: int, h: int, rng: random.Random) -> _View:
        l, t, r, b = crop_box_around(box, w, h, self.crop_scale)
        if self.crop_clip:  # the authors' crop: the square cut to the photo, short side resized
            l, t, r, b = max(l, 0.0), max(t, 0.0), min(r, float(w)), min(b, float(h))
            k = self.resized / min(r - l, b - t)
            ox, oy = self._offset(round((r - l) * k), rng), self._offset(round((b - t) * k), rng)
        else:
            k = self.resized / (r - l)
            ox, oy = self._offset(self.resized, rng), self._offset(self.resized, rng)
        side = self.size / k
        return _View((l + ox / k, t + oy / k, l + ox / k + side, t + oy / k + side), k)

    def _bg_view(self, box, w: int, h: int, rng: random.Random) -> _View | None:
        """A square wholly outside the box: in the widest of the four strips beside it, at a
        random place along the strip; None when that square is under ``bg_crop_min`` of the
        photo's short side."""
        x, y, bw, bh = box
        strips = [(0.0, 0.0, x, h), (x + bw, 0.0, w, h), (0.0, 0.0, w, y), (0.0, y + bh, w, h)]
        l, t, r, b = max(strips, key=lambda s: min(s[2] - s[0], s[3] - s[1]))
        side = min(r - l, b - t)
        if side < self.bg_crop_min * min(w, h) - 1e-6 or side <= 0:
            return None
        l += rng.uniform(0.0, (r - l) - side)
        t += rng.uniform(0.0, (b - t) - side)
        return _View((l, t, l + side, t + side), self.size / side)

    def _resolve(self, item) -> tuple[int, int]:
        if isinstance(item, (tuple, list)):
            index, aug_seed = int(item[0]), int(item[1])
        else:
            index = int(item)
            aug_seed = _derive_seed(self.seed, index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        return index, aug_seed

    def __getitem__(self, item) -> dict[str, torch.Tensor]:
        index, aug_seed = self._resolve(item)
        if not self.skip_bad:
            return self._item(index, aug_seed)
        # the scan reads headers only; a file that fails to decode later is swapped for the
        # next readable one (deterministically), with a warning, instead of killing a run
        for k in range(len(self)):
            j = (index + k) % len(self)
            if j in self._skipped:
                continue
            try:
                return self._item(j, aug_seed)
            except FgtoolError as e:
                self._skipped.add(j)  # counted and reported once; later draws go straight past it
                warnings.warn(f"skipping unreadable image ({len(self._skipped)} so far): {e}", stacklevel=2)
        raise FgtoolError(f"no readable images left in {self.imageset.root}")

    def _item(self, index: int, aug_seed: int) -> dict[str, torch.Tensor]:
        rec = self.imageset.records[index]
        rng = random.Random(aug_seed)
        geo: dict = {}

        def plan(wh: tuple[int, int]) -> float:
            # geometry needs only the header size; it also tells the JPEG decoder how far it may
            # downscale (draft) before we resample
            w, h = wh
            geo["flip"] = self.train and self.flip and rng.random() < 0.5
            geo["box"] = rec.box if (self.use_real and rec.box is not None) else \
                pseudo_box(w, h, self.pseudo_border)
            geo["full"] = self._full_view(w, h, rng)
            geo["obj"] = self._object_view(geo["box"], w, h, rng) if self.use_real else geo["full"]
            return min(geo["full"].scale, geo["obj"].scale)

        img, (w, h) = decode_image(rec.path, plan)
        sx, sy = img.width / w, img.height / h  # < 1 when the JPEG was draft-decoded

        def pixels(view: _View, src: Image.Image, resample) -> Image.Image:
            l, t, r, b = view.region
            return _render(src, (l * sx, t * sy, r * sx, b * sy), self.size, resample)

        flip = geo["flip"]
        out: dict[str, torch.Tensor] = {}
        image = _pil_to_tensor(pixels(geo["obj"], img, Image.BICUBIC)).float().div_(127.5).sub_(1.0)
        out["image"] = image.flip(-1) if flip else image
        if self.use_real:
            full = _pil_to_tensor(pixels(geo["full"], img, Image.BICUBIC)).float().div_(127.5).sub_(1.0)
            out["full"] = full.flip(-1) if flip else full
        if self.use_fg:
            fbox = transform_box(geo["box"], geo["full"].region, self.size, flip)
            out["fg"] = box_to_mask(fbox, self.size)
            # the box itself, (x1, y1, x2, y2) clipped to the full view (FineGAN's patch labels)
            x, y, bw, bh = fbox
            out["box"] = torch.tensor([x, y, x + bw, y + bh], dtype=torch.float32).clamp_(0.0, float(self.size))
        if self.use_masks:
            out["mask"] = self._mask(rec.mask_path, geo["obj"], (w, h), flip)
        if self.use_bg_crops:  # drawn last, so runs without bg_crops keep their random stream
            box = rec.box if rec.box is not None else pseudo_box(w, h, self.pseudo_border)
            view = self._bg_view(box, w, h, rng)
            if view is None:
                out["bg_crop"], out["bg_crop_ok"] = torch.zeros_like(image), torch.tensor(0.0)
            else:
                crop = _pil_to_tensor(pixels(view, img, Image.BICUBIC)).float().div_(127.5).sub_(1.0)
                out["bg_crop"], out["bg_crop_ok"] = (crop.flip(-1) if flip else crop), torch.tensor(1.0)
        out["label"] = torch.tensor(rec.label, dtype=torch.int64)
        out["parent"] = torch.tensor(rec.parent, dtype=torch.int64)
        out["bg"] = torch.tensor(rec.bg, dtype=torch.int64)
        out["index"] = torch.tensor(index, dtype=torch.int64)
        return out

    def _mask(self, path: Path, view: _View, wh: tuple[int, int], flip: bool) -> torch.Tensor:
        try:
            with Image.open(path) as m:
                m.load()
                m = m.convert("L")
        except Exception as exc:
            raise FgtoolError(f"cannot read mask {path}: {' '.join(str(exc).split())}") from None
        mx, my = m.width / wh[0], m.height / wh[1]
        l, t, r, b = view.region
        res = _render(m, (l * mx, t * my, r * mx, b * my), self.size, Image.BILINEAR)
        t_mask = (_pil_to_tensor(res).float() >= 127.5).float()
        return t_mask.flip(-1) if flip else t_mask


# --------------------------------------------------------------------------- sampling

class StepSampler(Sampler):
    """Infinite, resumable batch sampler: yields lists of ``(index, aug_seed)``.

    Epoch ``e`` is ``torch.randperm(n)`` from a generator seeded with ``(seed, e)``, plus one
    augmentation seed per position; the last incomplete batch is dropped. Global step ``s`` is
    batch ``s % steps_per_epoch`` of epoch ``s // steps_per_epoch``, so ``start_step`` resumes
    exactly. With ``world_size > 1`` rank ``r`` gets ``batch[r::world_size]`` of every global
    batch (the global batch size stays ``batch_size``).
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, start_step: int = 0, rank: int = 0,
                 world_size: int = 1):
        if batch_size < 1:
            raise FgtoolError(f"batch size must be >= 1, got {batch_size}")
        if n < batch_size:
            raise FgtoolError(f"only {n} images, fewer than the batch size {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.n, self.batch_size, self.seed = int(n), int(batch_size), int(seed)
        self.start_step, self.rank, self.world_size = int(start_step), int(rank), int(world_size)
        self.steps_per_epoch = self.n // self.batch_size

    def epoch(self, e: int) -> tuple[list[int], list[int]]:
        """(permutation, aug seeds by position) of epoch ``e``."""
        g = torch.Generator()
        g.manual_seed(_derive_seed(self.seed, e))
        perm = torch.randperm(self.n, generator=g)
        seeds = torch.randint(0, 2**62, (self.n,), generator=g, dtype=torch.int64)
        return perm.tolist(), seeds.tolist()

    def __iter__(self):
        e, b = divmod(self.start_step, self.steps_per_epoch)
        bs = self.batch_size
        while True:
            perm, seeds = self.epoch(e)
            for k in range(b, self.steps_per_epoch):
                batch = list(zip(perm[k * bs:(k + 1) * bs], seeds[k * bs:(k + 1) * bs]))
                yield batch[self.rank::self.world_size]
            e, b = e + 1, 0


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)  # workers decode images; intra-op threads would oversubscribe the CPU


class _Loader(DataLoader):
    """DataLoader whose worker-side FgtoolErrors come back as their own one-line message
    (instead of "Caught FgtoolError in DataLoader worker ... Traceback ...")."""

    def __iter__(self):
        it = super().__iter__()
        while True:
            try:
                batch = next(it)
            except StopIteration:
                return
            except BaseException as exc:
                self._stop_workers(it)
                if isinstance(exc, FgtoolError):
                    msg = str(exc)
                    if "FgtoolError: " in msg:
                        msg = msg.rsplit("FgtoolError: ", 1)[1]
                    raise FgtoolError(msg) from None
                raise
            yield batch

    def _stop_workers(self, it) -> None:
        # After a worker error, torch leaves shutdown to the garbage collector, which then
        # blocks for its 5 s join timeout; stopping the workers now is immediate.
        stop = getattr(it, "_shutdown_workers", None)
        if stop is not None:
            try:
                stop()
            except Exception:
                pass
        if getattr(self, "_iterator", None) is it:
            self._iterator = None  # persistent workers: do not hand out the dead iterator again


def _root_of(dataset) -> str:
    iset = getattr(dataset, "imageset", None)
    return str(iset.root) if iset is not None else "the dataset"


def make_loader(dataset, batch_size: int, seed: int = 0, start_step: int = 0, workers: int = 2,
                rank: int = 0, world_size: int = 1) -> DataLoader:
    """Infinite training loader over :class:`StepSampler` batches (see there for resume/sharding)."""
    n = len(dataset)
    if n < batch_size:
        raise FgtoolError(f"only {n} images in {_root_of(dataset)}, fewer than train.batch_size={batch_size}")
    sampler = StepSampler(n, batch_size, seed=seed, start_step=start_step, rank=rank, world_size=world_size)
    kwargs: dict = dict(batch_sampler=sampler, num_workers=int(workers),
                        pin_memory=torch.cuda.is_available(), worker_init_fn=_worker_init)
    if workers > 0:
        kwargs.update(persistent_workers=True, prefetch_factor=4)
    return _Loader(dataset, **kwargs)


def eval_loader(dataset, batch_size: int = 64, workers: int = 2) -> DataLoader:
    """Ordered, finite loader (int indices; build the dataset with ``train=False``)."""
    kwargs: dict = dict(batch_size=int(batch_size), shuffle=False, drop_last=False,
                        num_workers=int(workers), pin_memory=torch.cuda.is_available(),
                        worker_init_fn=_worker_init)
    if workers > 0:
        kwargs.update(prefetch_factor=2)
    return _Loader(dataset, **kwargs)


# --------------------------------------------------------------------------- fingerprint

def fingerprint(imageset: ImageSet) -> dict:
    """What a run trains on, in three plain values a checkpoint keeps: the layout, the image
    count and a hash of the sorted image paths relative to the data root (contents are not
    read: renaming, adding or removing a file changes it, touching pixels does not)."""
    import hashlib

    rels = sorted(os.path.relpath(r.path, imageset.root) for r in imageset.records)
    h = hashlib.sha256("\n".join(rels).encode("utf-8", "surrogateescape")).hexdigest()
    return {"layout": imageset.layout, "images": len(rels), "paths_sha256": h}


def fingerprint_change(old: dict, new: dict) -> str | None:
    """What differs between two :func:`fingerprint` s, in words, or None."""
    changes = []
    if old.get("layout") != new["layout"]:
        changes.append(f"layout {old.get('layout')} -> {new['layout']}")
    if old.get("images") != new["images"]:
        changes.append(f"{old.get('images')} -> {new['images']} images")
    if not changes and old.get("paths_sha256") != new["paths_sha256"]:
        changes.append(f"the same {new['images']} images count but other file names")
    return ", ".join(changes) or None
