"""fgtool.data: scanning layouts, boxes, the training dataset and resumable sampling."""

import csv
import gc
import random
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fgtool.data.boxes import (
    box_to_mask,
    crop_box_around,
    patch_bg_labels,
    pseudo_box,
    transform_box,
)
from fgtool.data.datasets import ImageDataset, StepSampler, eval_loader, make_loader, scan
from fgtool.errors import FgtoolError

CUB100 = Path(__file__).resolve().parents[3] / "shared" / "data" / "cub100"
RED, BLUE = (255, 0, 0), (0, 0, 255)


def _img(path, size=(12, 10), color=(90, 90, 90), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)
    return path


def _box_image(size, box, fg=RED, bg=BLUE):
    im = Image.new("RGB", size, bg)
    x, y, w, h = box
    im.paste(fg, (x, y, x + w, y + h))
    return im


def _imagefolder(root, classes=("b_cls", "a_cls", "c_cls"), per=4):
    for c in classes:
        for i in range(per):
            _img(root / c / f"{i:02d}.png", color=(i * 20, 0, 0))
    return root


def _cub(root, n=6):
    """CUB-style set: two classes, boxes, segmentations, parent/bg labels, split."""
    lines = {k: [] for k in ("images", "labels", "boxes", "parents", "bgs", "split")}
    for i in range(1, n + 1):
        cls = 1 + (i - 1) % 2
        rel = f"{cls:03d}.class{cls}/img{i}.jpg"
        box = (10 + i, 8, 20, 16)
        im = _box_image((60, 40), box)
        (root / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        im.save(root / "images" / rel, quality=95)
        seg = Image.new("L", (60, 40), 0)
        seg.paste(255, (box[0], box[1], box[0] + box[2], box[1] + box[3]))
        (root / "segmentations" / rel).with_suffix(".png").parent.mkdir(parents=True, exist_ok=True)
        seg.save((root / "segmentations" / rel).with_suffix(".png"))
        lines["images"].append(f"{i} {rel}")
        lines["labels"].append(f"{i} {cls}")
        lines["boxes"].append(f"{i} {box[0]}.0 {box[1]}.0 {box[2]}.0 {box[3]}.0")
        lines["parents"].append(f"{i} {1 + (i % 3)}")
        lines["bgs"].append(f"{i} {1 + (i % 2)}")
        lines["split"].append(f"{i} {1 if i <= n // 2 else 0}")
    files = {"images": "images.txt", "labels": "image_class_labels.txt", "boxes": "bounding_boxes.txt",
             "parents": "parent_labels.txt", "bgs": "background_labels.txt", "split": "train_test_split.txt"}
    for k, name in files.items():
        (root / name).write_text("\n".join(lines[k]) + "\n")
    (root / "classes.txt").write_text("1 001.class1\n2 002.class2\n")
    return root


# --------------------------------------------------------------------------- scan

def test_scan_imagefolder_sorted_classes(tmp_path):
    iset = scan(_imagefolder(tmp_path / "d"))
    assert iset.layout == "imagefolder"
    assert iset.classes == ["a_cls", "b_cls", "c_cls"]
    assert len(iset) == 12 and iset.has_labels and not iset.has_boxes and not iset.has_masks
    for r in iset.records:
        assert r.path.is_absolute()
        assert iset.classes[r.label] == r.path.parent.name
    assert np.bincount(iset.labels()).tolist() == [4, 4, 4]


def test_scan_flat_and_single_file(tmp_path):
    for i in range(3):
        _img(tmp_path / "flat" / f"{i}.jpg")
    iset = scan(tmp_path / "flat")
    assert iset.layout == "flat" and iset.classes == [] and len(iset) == 3
    assert all(r.label == -1 for r in iset.records)
    assert not iset.has_labels and iset.labels() is None

    one = scan(tmp_path / "flat" / "1.jpg")
    assert one.layout == "flat" and [r.path.name for r in one.records] == ["1.jpg"]


def test_scan_cub_layout(tmp_path):
    iset = scan(_cub(tmp_path / "cub"))
    assert iset.layout == "cub" and len(iset) == 6
    assert iset.classes == ["001.class1", "002.class2"]
    assert iset.has_boxes and iset.has_masks and iset.has_labels
    r = iset.records[2]  # image id 3
    assert r.path.name == "img3.jpg" and r.path.is_file()
    assert r.label == 0 and r.parent == 0 and r.bg == 1  # 1-based files -> 0-based
    assert r.box == (13.0, 8.0, 20.0, 16.0)
    assert r.mask_path.name == "img3.png" and r.mask_path.is_file()
    assert iset.labels().tolist() == [0, 1, 0, 1, 0, 1]
    assert [x.path.name for x in scan(tmp_path / "cub", split="train").records] == ["img1.jpg", "img2.jpg",
                                                                                     "img3.jpg"]
    assert len(scan(tmp_path / "cub", split="test")) == 3
    with pytest.raises(FgtoolError, match="unknown split"):
        scan(tmp_path / "cub", split="val")


def test_scan_cub_missing_file(tmp_path):
    root = _cub(tmp_path / "cub")
    (root / "images" / "001.class1" / "img1.jpg").unlink()
    with pytest.raises(FgtoolError, match="img1.jpg"):
        scan(root)


def test_scan_images_subfolder_with_split_csv(tmp_path):
    root = tmp_path / "ds"
    _imagefolder(root / "images", classes=("Zebra", "Albatross"), per=3)
    (root / "README.md").write_text("x")
    with open(root / "split.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "class", "split"])
        for c in ("Zebra", "Albatross"):
            for i in range(3):
                w.writerow([f"images/{c}/{i:02d}.png", c, "train" if i < 2 else "test"])
    full = scan(root)
    assert full.layout == "imagefolder" and full.classes == ["Albatross", "Zebra"] and len(full) == 6
    train = scan(root, split="train")
    assert len(train) == 4 and train.classes == ["Albatross", "Zebra"]
    assert sorted(r.path.name for r in train.records) == ["00.png", "00.png", "01.png", "01.png"]
    test = scan(root, split="test")
    assert [r.path.name for r in test.records] == ["02.png", "02.png"]
    assert test.labels().tolist() == [0, 1]
    with pytest.raises(FgtoolError, match="unknown split"):
        scan(root, split="validation")
    with pytest.raises(FgtoolError, match="no split.csv"):
        scan(_imagefolder(tmp_path / "nosplit"), split="train")


def test_scan_errors(tmp_path):
    with pytest.raises(FgtoolError, match="does not exist"):
        scan(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hi")
    with pytest.raises(FgtoolError, match=r"no images found in .*empty \(looked for .jpg"):
        scan(tmp_path / "empty")


def test_scan_check_and_skip_bad(tmp_path):
    root = _imagefolder(tmp_path / "d", per=2)
    (root / "a_cls" / "zz_broken.jpg").write_bytes(b"\x00" * 50)
    with pytest.raises(FgtoolError) as ei:
        scan(root)
    msg = str(ei.value)
    assert "zz_broken.jpg" in msg and "1 unreadable" in msg and "data.skip_bad=true" in msg
    assert "\n" not in msg
    assert len(scan(root, check=False)) == 7
    with pytest.warns(UserWarning, match="skipping 1 unreadable"):
        iset = scan(root, skip_bad=True)
    assert len(iset) == 6 and all(r.path.name != "zz_broken.jpg" for r in iset.records)


def test_scan_max_images_keeps_all_classes(tmp_path):
    root = tmp_path / "d"
    sizes = {"a": 10, "b": 3, "c": 7}
    for c, n in sizes.items():
        for i in range(n):
            _img(root / c / f"{i:02d}.png")
    iset = scan(root, max_images=8, check=False)
    assert len(iset) == 8
    counts = np.bincount(iset.labels(), minlength=3)
    assert (counts >= 1).all() and counts[0] >= counts[2] >= counts[1]
    again = scan(root, max_images=8, check=False)
    assert [r.path for r in again.records] == [r.path for r in iset.records]  # deterministic
    a_members = sorted(int(r.path.stem) for r in iset.records if r.label == 0)
    assert a_members[0] > 0 and a_members[-1] >= 5  # evenly strided, not the first few


# --------------------------------------------------------------------------- boxes

def test_box_helpers():
    assert pseudo_box(100, 50, 0.15) == pytest.approx((15.0, 7.5, 70.0, 35.0))
    assert crop_box_around((10, 20, 30, 10), 100, 100, 1.5) == pytest.approx((2.5, 2.5, 47.5, 47.5))
    m = box_to_mask((1.0, 2.0, 3.0, 1.0), (4, 6))
    assert m.shape == (1, 4, 6) and m.sum() == 3 and m[0, 2, 1:4].tolist() == [1, 1, 1]
    # crop (0,0)-(100,100) to 50 px halves everything; flipping mirrors x: 50 - (5 + 15) = 30
    assert transform_box((10, 20, 30, 40), (0, 0, 100, 100), 50, False) == pytest.approx((5, 10, 15, 20))
    assert transform_box((10, 20, 30, 40), (0, 0, 100, 100), 50, True) == pytest.approx((30, 10, 15, 20))
    assert transform_box((10, 20, 30, 40), (10, 20, 40, 60), (60, 80), True) == pytest.approx((0, 0, 60, 80))


def test_patch_bg_labels_hand_example():
    mask = torch.zeros(1, 1, 8, 8)
    mask[0, 0, 6:8, 6:8] = 1.0  # object in the bottom-right 2x2 pixels
    # kernel 4, stride 2: windows cover rows/cols [0,4), [2,6), [4,8); only the last sees the box
    lab = patch_bg_labels(mask, kernel=4, stride=2)
    expected = torch.ones(1, 1, 3, 3)
    expected[0, 0, 2, 2] = 0
    assert torch.equal(lab, expected)
    # padding 1: windows [-1,3), [1,5), [3,7), [5,9); rows 6-7 are seen by the last two
    lab = patch_bg_labels(mask, kernel=4, stride=2, padding=1)
    expected = torch.ones(1, 1, 4, 4)
    expected[0, 0, 2:, 2:] = 0
    assert torch.equal(lab, expected)
    # FineGAN geometry: 128 px, receptive field 34, stride 4 -> 24x24 patches
    m = box_to_mask((40, 40, 48, 48), 128)[None]
    lab = patch_bg_labels(m, 34, 4)
    assert lab.shape == (1, 1, 24, 24)
    # patch i covers [4i, 4i+34): background iff 4i+34 <= 40 or 4i >= 88 -> i <= 1 or i >= 22
    bg_rows = [i for i in range(24) if lab[0, 0, i, 12] == 1]
    assert bg_rows == [0, 1, 22, 23]


# --------------------------------------------------------------------------- dataset

def test_dataset_shapes_range_and_determinism(tmp_path):
    ds = ImageDataset(scan(_cub(tmp_path / "cub")), size=32, train=True, with_masks=True)
    b = ds[(1, 123)]
    assert set(b) == {"image", "full", "fg", "box", "mask", "label", "parent", "bg", "index"}
    assert b["image"].shape == (3, 32, 32) and b["full"].shape == (3, 32, 32)
    assert b["fg"].shape == (1, 32, 32) and b["mask"].shape == (1, 32, 32)
    x1, y1, x2, y2 = b["box"].tolist()  # the box of the fg mask, clipped to the full view
    assert 0 <= x1 < x2 <= 32 and 0 <= y1 < y2 <= 32
    from fgtool.data.boxes import box_to_mask
    assert torch.equal(box_to_mask((x1, y1, x2 - x1, y2 - y1), 32), b["fg"])
    assert b["image"].dtype == torch.float32 and -1 <= b["image"].min() and b["image"].max() <= 1
    assert set(b["mask"].unique().tolist()) <= {0.0, 1.0}
    assert b["label"].dtype == torch.int64 and int(b["label"]) == 1 and int(b["index"]) == 1
    assert int(b["parent"]) == 2 and int(b["bg"]) == 0
    again = ds[(1, 123)]
    assert all(torch.equal(b[k], again[k]) for k in b)
    others = [ds[(1, s)]["image"] for s in range(5)]
    assert any(not torch.equal(o, b["image"]) for o in others)
    assert torch.equal(ds[1]["image"], ds[1]["image"])  # int index: seed derived from (seed, index)


def test_dataset_flip(tmp_path):
    im = Image.new("RGB", (20, 20), BLUE)
    im.paste(RED, (0, 0, 6, 20))  # red stripe on the left only
    im.save(tmp_path / "a.png")
    iset = scan(tmp_path / "a.png")
    ref = ImageDataset(iset, 16, train=False)[0]["image"]
    ds = ImageDataset(iset, 16, train=True, jitter=1.0)  # no crop jitter: only the flip varies
    flipped = [torch.equal(ds[(0, s)]["image"], ref.flip(-1)) for s in range(16)]
    plain = [torch.equal(ds[(0, s)]["image"], ref) for s in range(16)]
    assert all(f or p for f, p in zip(flipped, plain))
    assert any(flipped) and any(plain)
    assert ref[0, 8, 0] > 0.9 and ref[0, 8, 15] < -0.9  # eval: left red, right blue
    assert not any(torch.equal(ImageDataset(iset, 16, jitter=1.0, flip=False)[(0, s)]["image"],
                               ref.flip(-1)) for s in range(16))


def _iou(a, b):
    a, b = a.bool(), b.bool()
    return float((a & b).sum()) / float((a | b).sum())


def test_dataset_box_crop_and_fg_mask(tmp_path):
    root = tmp_path / "cub"
    _cub(root, n=2)
    # replace image 1 by a PNG-exact version: red square (30,20,20,20) on blue 80x60
    box = (30, 20, 20, 20)
    _box_image((80, 60), box).save(root / "images" / "001.class1" / "img1.jpg", format="PNG")
    (root / "bounding_boxes.txt").write_text("1 30 20 20 20\n2 11 8 20 16\n")
    iset = scan(root)
    ds = ImageDataset(iset, 32, train=False, crop_scale=1.5)
    b = ds[0]
    img, full, fg = b["image"], b["full"], b["fg"]
    assert img[0, 16, 16] > 0.9 and img[2, 16, 16] < -0.9  # centre of the object crop is red
    # square is 20/30 of the crop: red spans ~ [5.3, 26.7) px
    red_obj = (img[0] > 0) & (img[2] < 0)
    assert _iou(red_obj, box_to_mask((16 - 32 / 3, 16 - 32 / 3, 64 / 3, 64 / 3), 32)[0]) > 0.8
    red_full = (full[0] > 0) & (full[2] < 0)
    assert red_full.sum() > 20
    assert _iou(red_full, fg[0]) > 0.8

    train = ImageDataset(iset, 32, train=True)
    for s in range(4):
        t = train[(0, s)]
        assert _iou((t["full"][0] > 0) & (t["full"][2] < 0), t["fg"][0]) > 0.8
    assert "full" not in ImageDataset(iset, 32, box_mode="pseudo")[0]
    assert "fg" not in ImageDataset(iset, 32, box_mode="none")[0]


def test_dataset_mask_follows_image_geometry(tmp_path):
    ds = ImageDataset(scan(_cub(tmp_path / "cub")), 32, train=True, with_masks=True)
    for s in range(3):
        b = ds[(4, s)]
        red = (b["image"][0] > 0) & (b["image"][2] < 0)
        assert _iou(red, b["mask"][0]) > 0.8


def test_dataset_pseudo_box_covers_centre(tmp_path):
    for i in range(2):
        _img(tmp_path / "flat" / f"{i}.png", size=(100, 100))
    ds = ImageDataset(scan(tmp_path / "flat"), 40, train=False, pseudo_border=0.15)
    b = ds[0]
    assert set(b) == {"image", "fg", "box", "label", "parent", "bg", "index"}
    assert int(b["label"]) == -1
    fg = b["fg"][0]
    assert fg[6:34, 6:34].all() and fg.sum() == 28 * 28  # (0.15*40, ..., 0.7*40)


def test_dataset_pads_crops_that_leave_the_image(tmp_path):
    root = tmp_path / "cub"
    _cub(root, n=2)
    _box_image((60, 60), (0, 0, 20, 20)).save(root / "images" / "001.class1" / "img1.jpg", format="PNG")
    (root / "bounding_boxes.txt").write_text("1 0 0 20 20\n2 11 8 20 16\n")
    img = ImageDataset(scan(root), 30, train=False)[0]["image"]
    # crop (-5,-5)-(25,25): the outside band replicates the red edge, the far corner is blue
    assert img[0, 0, 0] > 0.9 and img[2, 0, 0] < -0.9
    assert img[2, 29, 29] > 0.9


def test_dataset_draft_decode_matches_full_decode(tmp_path):
    from fgtool.io.images import decode_image

    big = _box_image((800, 600), (300, 200, 200, 200))
    for fmt in ("jpg", "png"):
        (tmp_path / fmt).mkdir()
        big.save(tmp_path / fmt / f"a.{fmt}", quality=95)
    # 32 px of a 600 px short side needs 1/18 of the resolution: the decoder may go to 1/8
    small, orig = decode_image(tmp_path / "jpg" / "a.jpg", plan=lambda wh: 32 / min(wh))
    assert orig == (800, 600) and small.size == (100, 75)
    a = ImageDataset(scan(tmp_path / "jpg"), 32, train=False)[0]  # JPEG: DCT-scaled decode
    b = ImageDataset(scan(tmp_path / "png"), 32, train=False)[0]
    assert (a["image"] - b["image"]).abs().mean() < 0.05
    assert torch.equal(a["fg"], b["fg"])


# --------------------------------------------------------------------------- sampling

def _take(it, k):
    return [next(it) for _ in range(k)]


def test_step_sampler_epochs_resume_and_shards():
    s = StepSampler(10, 3, seed=5)
    assert s.steps_per_epoch == 3
    seq = _take(iter(s), 9)
    assert seq == _take(iter(StepSampler(10, 3, seed=5)), 9)
    assert seq != _take(iter(StepSampler(10, 3, seed=6)), 9)
    assert all(len(b) == 3 for b in seq)
    for e in range(3):  # each epoch: 9 distinct indices (one dropped), each index at most once
        idx = [i for b in seq[3 * e:3 * e + 3] for i, _ in b]
        assert len(set(idx)) == 9 and set(idx) <= set(range(10))
    assert seq[:3] != seq[3:6]  # a fresh permutation each epoch
    seeds = [a for b in seq for _, a in b]
    assert len(set(seeds)) == len(seeds)
    for k in (1, 3, 4, 7):
        assert _take(iter(StepSampler(10, 3, seed=5, start_step=k)), 9 - k) == seq[k:]
    shards = [_take(iter(StepSampler(10, 4, seed=5, rank=r, world_size=2)), 4) for r in range(2)]
    full = _take(iter(StepSampler(10, 4, seed=5)), 4)
    for step in range(4):
        assert shards[0][step] == full[step][0::2] and shards[1][step] == full[step][1::2]
    with pytest.raises(FgtoolError, match="only 2 images"):
        StepSampler(2, 3)


def test_make_loader_workers_match_and_errors(tmp_path):
    root = _imagefolder(tmp_path / "d", per=4)
    ds = ImageDataset(scan(root), 16, train=True)
    l0 = make_loader(ds, 4, seed=3, workers=0)
    l2 = make_loader(ds, 4, seed=3, workers=2)
    it0, it2 = iter(l0), iter(l2)
    for _ in range(4):
        a, b = next(it0), next(it2)
        assert a["image"].shape == (4, 3, 16, 16)
        assert all(torch.equal(a[k], b[k]) for k in a)
    resumed = next(iter(make_loader(ds, 4, seed=3, start_step=3, workers=0)))
    ref = iter(make_loader(ds, 4, seed=3, workers=0))
    _take(ref, 3)
    assert torch.equal(next(ref)["image"], resumed["image"])

    with pytest.raises(FgtoolError, match=r"only 12 images in .*fewer than train.batch_size=16"):
        make_loader(ds, 16)

    ev = list(eval_loader(ImageDataset(scan(root), 16, train=False), batch_size=5, workers=0))
    assert [len(b["index"]) for b in ev] == [5, 5, 2]
    assert torch.cat([b["index"] for b in ev]).tolist() == list(range(12))


def test_loader_worker_error_is_one_clean_line(tmp_path):
    root = _imagefolder(tmp_path / "d", per=2)
    (root / "a_cls" / "bad.png").write_bytes(b"junk")
    ds = ImageDataset(scan(root, check=False), 8, train=False)
    loader = eval_loader(ds, batch_size=7, workers=1)
    with pytest.raises(FgtoolError) as ei:
        list(loader)
    msg = str(ei.value)
    assert msg.startswith("cannot read image ") and "bad.png" in msg and "Traceback" not in msg
    # workers are stopped at once (torch would otherwise wait 5 s in the garbage collector)
    del loader, ei
    t0 = time.perf_counter()
    gc.collect()
    assert time.perf_counter() - t0 < 2.0


# --------------------------------------------------------------------------- real data

@pytest.mark.skipif(not CUB100.is_dir(), reason=f"shared cub100 data not present at {CUB100}")
def test_real_cub100_scan():
    with open(CUB100 / "split.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    n_train = sum(r["split"] == "train" for r in rows)
    t0 = time.perf_counter()
    full = scan(CUB100, check=True)
    elapsed = time.perf_counter() - t0
    assert len(full) == 5902 and len(full.classes) == 100
    assert elapsed < 10, f"scan with check took {elapsed:.1f}s"
    train = scan(CUB100, split="train", check=False)
    # the shipped split.csv has 2,903 train / 2,999 test rows (its README says the reverse)
    assert len(train) == n_train == 2903 and len(train.classes) == 100
    assert len(np.unique(train.labels())) == 100
    assert len(scan(CUB100, split="test", check=False)) == 2999
    b = ImageDataset(train, 64, train=True)[(0, random.Random(0).randrange(1 << 30))]
    assert b["image"].shape == (3, 64, 64) and "full" not in b and b["fg"].shape == (1, 64, 64)


def test_bg_crops_lie_outside_the_box_and_keep_the_other_draws(synth_dir):
    """data.bg_crops: a square wholly outside the real box, rendered at the training size;
    the other outputs are the same as without it (the crop is drawn last)."""
    from fgtool.data.datasets import ImageDataset, scan

    iset = scan(synth_dir)
    plain = ImageDataset(iset, 32, train=True, seed=1)
    crops = ImageDataset(iset, 32, train=True, seed=1, bg_crops=True, bg_crop_min=0.2)
    n_ok = 0
    for i in range(len(iset)):
        a, b = plain[i], crops[i]
        assert "bg_crop" not in a
        for k in a:
            assert torch.equal(a[k], b[k]), k
        assert b["bg_crop"].shape == (3, 32, 32)
        rec = iset.records[i]
        w, h = Image.open(rec.path).size
        view = crops._bg_view(rec.box, w, h, random.Random(i))
        if view is None:
            assert float(b["bg_crop_ok"]) in (0.0, 1.0)
            continue
        l, t, r, btm = view.region
        x, y, bw, bh = rec.box
        assert r - l == pytest.approx(btm - t) and r - l >= 0.2 * min(w, h)
        assert r <= x + 1e-6 or l >= x + bw - 1e-6 or btm <= y + 1e-6 or t >= y + bh - 1e-6  # no overlap
        assert crops._mask(rec.mask_path, view, (w, h), False).sum() == 0  # no object pixel in it
        n_ok += int(float(b["bg_crop_ok"]))
    assert n_ok > len(iset) // 2
    # a model on full images (box_mode none) still gets crops from the set's real boxes
    full = ImageDataset(iset, 32, train=True, seed=1, box_mode="none", bg_crops=True, bg_crop_min=0.2)
    assert "fg" not in full[0]
    # whether a crop fits depends on the box only, not on the view
    assert [float(full[i]["bg_crop_ok"]) for i in range(len(iset))] == \
        [float(crops[i]["bg_crop_ok"]) for i in range(len(iset))]
    # a set without boxes: the crops are squares of the pseudo-box's border band, which must be
    # at least bg_crop_min wide
    bare = scan(synth_dir)
    for r in bare.records:
        r.box = None
    with pytest.raises(FgtoolError, match="bg_crop_min must be at most that, got 0.25"):
        ImageDataset(bare, 32, train=True, bg_crops=True, pseudo_border=0.15)
    band = ImageDataset(bare, 32, train=True, seed=1, bg_crops=True, pseudo_border=0.2, bg_crop_min=0.2)
    for i in range(len(bare)):
        b = band[i]
        assert float(b["bg_crop_ok"]) == 1.0 and b["bg_crop"].shape == (3, 32, 32)
        w, h = Image.open(bare.records[i].path).size
        l, t, r, btm = band._bg_view(pseudo_box(w, h, 0.2), w, h, random.Random(i)).region
        assert r - l == pytest.approx(0.2 * min(w, h)) and r - l == pytest.approx(btm - t)
        inside = l >= 0.2 * w - 1e-6 and r <= 0.8 * w + 1e-6 and t >= 0.2 * h - 1e-6 and btm <= 0.8 * h + 1e-6
        assert not inside and l >= -1e-6 and t >= -1e-6 and r <= w + 1e-6 and btm <= h + 1e-6
        assert r <= 0.2 * w + 1e-6 or l >= 0.8 * w - 1e-6 or btm <= 0.2 * h + 1e-6 or t >= 0.8 * h - 1e-6


def test_crop_clip_cuts_the_object_view_to_the_photo(tmp_path):
    """data.crop_clip (the authors' FineGAN/MixNMatch crop): a box near the photo's corner gives
    a 1.5x square that leaves the photo; clipped, the view stays inside it and the object fills
    more of the frame than in the edge-padded square."""
    root = tmp_path / "cub"
    rel = "001.a/img1.jpg"
    box = (2, 2, 24, 24)
    (root / "images" / rel).parent.mkdir(parents=True)
    _box_image((60, 40), box).save(root / "images" / rel, quality=95)
    seg = Image.new("L", (60, 40), 0)
    seg.paste(255, (box[0], box[1], box[0] + box[2], box[1] + box[3]))
    (root / "segmentations" / rel).with_suffix(".png").parent.mkdir(parents=True)
    seg.save((root / "segmentations" / rel).with_suffix(".png"))
    for name, line in (("images.txt", f"1 {rel}"), ("image_class_labels.txt", "1 1"),
                       ("bounding_boxes.txt", "1 2.0 2.0 24.0 24.0"), ("classes.txt", "1 001.a")):
        (root / name).write_text(line + "\n")
    iset = scan(root)
    area = {}
    for clip in (False, True):
        ds = ImageDataset(iset, 32, train=False, with_masks=True, crop_clip=clip)
        area[clip] = ds[0]["mask"].mean().item()
        for seed in range(8):  # training views: random offsets stay inside the clipped frame
            tr = ImageDataset(iset, 32, train=True, crop_clip=clip, jitter=1.5)
            view = tr._object_view(iset.records[0].box, 60, 40, random.Random(seed))
            l, t, r, b = view.region
            if clip:
                assert l >= 0 and t >= 0 and r <= 60 + 1e-6 and b <= 40 + 1e-6
    # the square around the 24 px box is 36 px, (-4, -4)-(32, 32); cut to the photo it is 32 px:
    # the box covers 24^2 / 32^2 = 0.56 of the clipped view against 24^2 / 36^2 = 0.44
    assert area[True] == pytest.approx(0.5625, abs=0.03) and area[False] == pytest.approx(0.444, abs=0.03)
