"""Tests for the ground-truth synthetic dataset (fgtool.data.synth)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from fgtool.data.synth import (
    BACKGROUND_NAMES,
    PARENT_NAMES,
    SynthConfig,
    render_one,
    synth,
    synth_arrays,
)
from fgtool.errors import FgtoolError


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _read_table(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()]


# --------------------------------------------------------------------------- determinism
def test_same_seed_same_bytes_and_different_seed_differs(tmp_path):
    a = synth(tmp_path / "a", n=24, size=32, seed=3)
    b = synth(tmp_path / "b", n=24, size=32, seed=3)
    assert a == b
    ta, tb = _tree_bytes(tmp_path / "a"), _tree_bytes(tmp_path / "b")
    assert len(ta) > 2 * 24  # images + masks + tables
    assert ta == tb

    x = synth_arrays(24, size=32, seed=3)
    y = synth_arrays(24, size=32, seed=4)
    assert not np.array_equal(x["images"], y["images"])
    assert not np.array_equal(x["masks"], y["masks"])


def test_output_independent_of_worker_count_and_index_order():
    one = synth_arrays(64, size=16, seed=5, workers=1)
    two = synth_arrays(64, size=16, seed=5, workers=2)
    for k in ("images", "masks", "child", "parent", "bg", "boxes"):
        np.testing.assert_array_equal(one[k], two[k])
    # image i is a function of (seed, i) alone, so rendering it on its own gives the same pixels
    rgb, mask, lab = render_one(37, 5, SynthConfig(size=16))
    np.testing.assert_array_equal(rgb, one["images"][37])
    np.testing.assert_array_equal(mask, one["masks"][37])
    assert lab["child"] == one["child"][37] and lab["bg"] == one["bg"][37]


# --------------------------------------------------------------------------- layout
def test_cub_layout_and_label_consistency(tmp_path):
    n, P, C, B = 48, 4, 3, 3
    out = tmp_path / "ds"
    meta = synth(out, n=n, size=32, seed=1, parents=P, children=C, backgrounds=B)

    for f in ("images.txt", "image_class_labels.txt", "parent_labels.txt", "background_labels.txt",
              "bounding_boxes.txt", "classes.txt", "meta.json"):
        assert (out / f).is_file(), f
    assert json.loads((out / "meta.json").read_text()) == meta
    assert meta["complete"] is True and meta["version"] == 1
    assert meta["n"] == n and meta["size"] == 32 and meta["seed"] == 1
    assert meta["parents"] == list(PARENT_NAMES[:P])
    assert meta["backgrounds"] == list(BACKGROUND_NAMES[:B])
    assert meta["child_to_parent"] == [k // C for k in range(P * C)]

    images = _read_table(out / "images.txt")
    child = _read_table(out / "image_class_labels.txt")
    parent = _read_table(out / "parent_labels.txt")
    bg = _read_table(out / "background_labels.txt")
    boxes = _read_table(out / "bounding_boxes.txt")
    for table in (images, child, parent, bg, boxes):
        assert len(table) == n
        assert [int(r[0]) for r in table] == list(range(1, n + 1))  # CUB ids are 1-based
    classes = _read_table(out / "classes.txt")
    assert [int(r[0]) for r in classes] == list(range(1, P * C + 1))
    names = [r[1] for r in classes]
    assert names == meta["child_names"]

    # ImageFolder-style readers sort folder names: that order must be the class-id order
    assert sorted(os.listdir(out / "images")) == names
    assert sorted(os.listdir(out / "segmentations")) == names

    ref = synth_arrays(n, size=32, seed=1, parents=P, children=C, backgrounds=B)
    for i in range(n):
        rel = images[i][1]
        c = int(child[i][1])
        assert 1 <= c <= P * C
        assert rel.split("/")[0] == names[c - 1]  # folder = class
        assert rel.split("/")[0].startswith(f"{c:03d}.")
        assert int(parent[i][1]) == meta["child_to_parent"][c - 1] + 1
        assert names[c - 1].split(".")[1].startswith(PARENT_NAMES[int(parent[i][1]) - 1] + "_")
        assert 1 <= int(bg[i][1]) <= B
        # disk and in-memory API agree exactly (PNG is lossless), labels are 0-based in memory
        img = cv2.cvtColor(cv2.imread(str(out / "images" / rel)), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(img, ref["images"][i])
        seg = cv2.imread(str(out / "segmentations" / rel), cv2.IMREAD_UNCHANGED)
        assert seg.ndim == 2 and seg.dtype == np.uint8
        assert set(np.unique(seg)) <= {0, 255}
        np.testing.assert_array_equal(seg == 255, ref["masks"][i])
        assert (c - 1, int(parent[i][1]) - 1, int(bg[i][1]) - 1) == (
            ref["child"][i], ref["parent"][i], ref["bg"][i])
        np.testing.assert_allclose([float(v) for v in boxes[i][1:]], ref["boxes"][i])
    # exactly balanced classes: 48 images / 12 classes
    assert np.bincount(ref["child"], minlength=P * C).tolist() == [4] * (P * C)


def test_appearance_table_is_unique_and_parent_local():
    cfg = SynthConfig(parents=6, children=4)
    pairs = list(cfg.appearance)
    assert len(set(pairs)) == len(pairs) == 24  # every child has its own (hue, pattern)
    for p in range(6):
        mine = pairs[p * 4:(p + 1) * 4]
        assert len({h for h, _ in mine}) == 4  # siblings differ in hue...
        assert len({pat for _, pat in mine}) == 4  # ...and in pattern
    # a smaller set is a prefix: parent 0's children look the same whatever the parent count
    assert SynthConfig(parents=2, children=4).appearance == cfg.appearance[:8]
    names = [cfg.child_name(k) for k in range(24)]
    assert len(set(names)) == 24 and names == sorted(names)


def test_overwrite_previous_output_but_refuse_foreign_dir(tmp_path):
    out = tmp_path / "ds"
    synth(out, n=30, size=16, seed=0)
    synth(out, n=10, size=16, seed=0)  # has meta.json: overwrite, and drop stale images
    assert len(list((out / "images").rglob("*.png"))) == 10
    assert len(list((out / "segmentations").rglob("*.png"))) == 10
    assert len((out / "images.txt").read_text().splitlines()) == 10

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FgtoolError, match="not empty"):
        synth(foreign, n=4, size=16)
    assert sorted(os.listdir(foreign)) == ["notes.txt"]  # nothing written

    (foreign / "meta.json").write_text('{"something": "else"}')  # not ours either
    with pytest.raises(FgtoolError):
        synth(foreign, n=4, size=16)

    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(FgtoolError):
        synth(a_file, n=4, size=16)


def test_progress_reports_to_completion(tmp_path):
    calls = []
    synth(tmp_path / "p", n=20, size=16, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (20, 20)
    assert all(t == 20 for _, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


# --------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("size,obj_area", [(64, (0.20, 0.45)), (32, (0.20, 0.45)), (48, (0.10, 0.15))])
def test_mask_area_in_range_inside_frame_and_tight_boxes(size, obj_area):
    d = synth_arrays(96, size=size, seed=2, parents=6, children=2, obj_area=obj_area)
    frac = d["masks"].mean(axis=(1, 2))
    lo, hi = obj_area
    slack = 0.02 + 1.5 / size  # rasterisation at the edge of a 32 px object moves ~a pixel row
    assert frac.min() >= lo - slack, frac.min()
    assert frac.max() <= hi + slack, frac.max()
    assert frac.max() - frac.min() > 0.5 * (hi - lo)  # the range is actually used
    # fully inside: nothing touches the border
    m = d["masks"]
    assert not m[:, 0].any() and not m[:, -1].any() and not m[:, :, 0].any() and not m[:, :, -1].any()
    for i in range(len(m)):
        ys, xs = np.nonzero(m[i])
        x, y, w, h = d["boxes"][i]
        assert abs(x - xs.min()) <= 1 and abs(y - ys.min()) <= 1
        assert abs(x + w - (xs.max() + 1)) <= 1 and abs(y + h - (ys.max() + 1)) <= 1


# --------------------------------------------------------------------------- backgrounds
def test_background_correlation():
    P, B, n = 4, 3, 600
    ind = synth_arrays(n, size=16, seed=7, parents=P, backgrounds=B, bg_corr=0.0)
    counts = np.zeros((P, B), int)
    np.add.at(counts, (ind["parent"], ind["bg"]), 1)
    expected = n / (P * B)  # 50 per cell
    assert counts.min() > 0.5 * expected and counts.max() < 1.5 * expected, counts
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 22.5, chi2  # dof 6 (independence): p ~ 0.001

    home = synth_arrays(n, size=16, seed=7, parents=P, backgrounds=B, bg_corr=1.0)
    np.testing.assert_array_equal(home["bg"], home["parent"] % B)
    # bg_corr only changes the background: class and pose are the same images as before
    np.testing.assert_array_equal(home["child"], ind["child"])
    np.testing.assert_array_equal(home["masks"], ind["masks"])

    half = synth_arrays(n, size=16, seed=7, parents=P, backgrounds=B, bg_corr=0.5)
    at_home = (half["bg"] == half["parent"] % B).mean()
    assert abs(at_home - (0.5 + 0.5 / B)) < 0.07, at_home


def test_backgrounds_vary_per_image_but_are_recognisable():
    d = synth_arrays(300, size=32, seed=11, backgrounds=5, bg_corr=0.0)
    bgpix = ~d["masks"]
    # mean background colour + texture energy per image
    feats = []
    for img, m in zip(d["images"].astype(np.float32), bgpix):
        px = img[m]
        gy = np.abs(np.diff(img, axis=0)).mean()
        gx = np.abs(np.diff(img, axis=1)).mean()
        feats.append(np.concatenate([px.mean(0), px.std(0), [gx, gy]]))
    feats = np.array(feats)
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x = StandardScaler().fit_transform(feats)
    clf = LogisticRegression(max_iter=2000).fit(x[:200], d["bg"][:200])
    assert clf.score(x[200:], d["bg"][200:]) > 0.9
    # ...yet no two backgrounds of the same class are identical (random phase / offset / noise)
    for b in range(5):
        idx = np.flatnonzero(d["bg"] == b)[:2]
        a0, a1 = d["images"][idx[0]], d["images"][idx[1]]
        common = bgpix[idx[0]] & bgpix[idx[1]]
        diff = np.abs(a0.astype(int) - a1.astype(int))[common].mean()
        assert diff > 3.0, (BACKGROUND_NAMES[b], diff)


# --------------------------------------------------------------------------- separability
def _shape_features(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    crop = mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1].astype(np.float32)
    small = cv2.resize(crop, (8, 8), interpolation=cv2.INTER_AREA).ravel()
    hu = cv2.HuMoments(cv2.moments(mask.astype(np.uint8), binaryImage=True)).ravel()
    loghu = -np.sign(hu) * np.log10(np.abs(hu) + 1e-30)
    return np.concatenate([small, loghu, [crop.shape[1] / crop.shape[0]]])


def _colour_features(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    px = img[mask].astype(np.float32)
    return np.concatenate([px.mean(0), px.std(0)])


@pytest.fixture(scope="module")
def sep_data():
    return synth_arrays(600, size=32, seed=9, parents=4, children=3)


def _fit_score(x, y, n_train=400):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(x[:n_train])
    clf = LogisticRegression(max_iter=3000).fit(sc.transform(x[:n_train]), y[:n_train])
    return clf.score(sc.transform(x[n_train:]), y[n_train:])


def test_appearance_separates_children(sep_data):
    d = sep_data
    x = np.array([_colour_features(i, m) for i, m in zip(d["images"], d["masks"])])
    # masked colour statistics identify the child globally (appearance is unique per child)...
    assert _fit_score(x, d["child"]) > 0.9
    # ...and in particular within each parent
    for p in range(4):
        idx = np.flatnonzero(d["parent"] == p)
        assert _fit_score(x[idx], d["child"][idx], n_train=100) > 0.9, p


def test_shape_separates_parents_but_not_children(sep_data):
    d = sep_data
    x = np.array([_shape_features(m) for m in d["masks"]])
    assert _fit_score(x, d["parent"]) > 0.8
    # siblings share the shape distribution: the mask alone says ~nothing about the child
    # (chance is 1/3 with 3 children)
    for p in range(4):
        idx = np.flatnonzero(d["parent"] == p)
        assert _fit_score(x[idx], d["child"][idx], n_train=100) < 0.6, p


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize("kwargs", [
    {"parents": 0}, {"parents": 7}, {"children": 1}, {"children": 5}, {"backgrounds": 0},
    {"backgrounds": 6}, {"n": 0}, {"size": 15}, {"bg_corr": -0.1}, {"bg_corr": 1.5},
    {"bg_corr": float("nan")}, {"obj_area": (0.5, 0.2)}, {"obj_area": (0.2, 0.9)},
    {"obj_area": (0.4, 0.45)},  # a bird cannot fill 40% of a 16 px frame
    {"workers": 0}, {"n": 2.5},
])
def test_invalid_arguments_raise(tmp_path, kwargs):
    args = {"n": 4, "size": 16} | kwargs
    with pytest.raises(FgtoolError) as e:
        synth(tmp_path / "x", **args)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "x").exists()  # validated before anything touches the disk
    with pytest.raises(FgtoolError):
        synth_arrays(**args)


def test_cli_obj_area_frames_the_objects_and_rejects_bad_values(capsys, tmp_path):
    """--obj-area 0.06,0.14 gives CUB-like framing: boxes far smaller than the default's,
    leaving background all round (what a patch background D needs). Bad values: exit 2."""
    from conftest import one_error_line, run_cli, run_json

    res = run_json(capsys, "data", "synth", "--out", tmp_path / "small", "--n", 24, "--size", 64,
                   "--obj-area", "0.06,0.14", "-q")
    assert res["obj_area"] == [0.06, 0.14]
    run_json(capsys, "data", "synth", "--out", tmp_path / "big", "--n", 24, "--size", 64, "-q")

    def box_side(root):
        rows = [list(map(float, line.split()[1:])) for line in (root / "bounding_boxes.txt").read_text().splitlines()]
        return sum(max(w, h) for _, _, w, h in rows) / len(rows) / 64

    small, big = box_side(tmp_path / "small"), box_side(tmp_path / "big")
    assert small < 0.55 < big, (small, big)
    for bad in ("0.5", "a,b", "0.01,0.9"):
        rc, _, err = run_cli(capsys, "data", "synth", "--out", tmp_path / f"bad{len(bad)}", "--n", 8,
                             "--obj-area", bad)
        assert rc == 2 and "obj" in one_error_line(err)


def test_parallel_synth_ends_without_worker_tracebacks(tmp_path):
    """The pool's workers are stopped with SIGTERM when the set is written; they must not take
    the CLI's SIGTERM handler with them (it raises, and each worker printed a traceback)."""
    from conftest import fgtool_process

    for i in range(4):  # a worker still waiting for work when the pool ends is the one that printed
        r = fgtool_process("data", "synth", "--out", tmp_path / f"s{i}", "--n", 96, "--size", 32, "--workers", 2,
                           "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["n"] == 96
        assert "Traceback" not in r.stderr and "Interrupted" not in r.stderr, r.stderr
