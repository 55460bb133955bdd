"""Landmark regression error (``fgtool eval --metric landmarks``), the synthetic keypoints,
their readers, and the centred-ellipse floor for masks (``--baseline centre``)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import TINY, one_error_line, run_cli, run_json
from PIL import Image

from fgtool import api
from fgtool.data.synth import N_KEYPOINTS, config_from_meta, render_one, synth_arrays
from fgtool.errors import FgtoolError
from fgtool.metrics.centre import centre_ellipse, centre_scores
from fgtool.metrics.landmarks import fit, read_csv, read_keypoints, read_part_locs, regression_error

# ----------------------------------------------------------------------------- the metric on arrays


def test_fit_and_error_by_hand():
    # K = 1 centre, P = 1 keypoint. Fit on three images (a fourth is invisible and far off):
    # x' = a cx + b cy on (1,0)->1, (2,0)->3, (0,1)->0: a = (1*1 + 2*3) / (1 + 4) = 1.4, b = 0
    # y' = c cx + d cy on (1,0)->0, (2,0)->0, (0,1)->2: c = 0, d = 2
    tr_c = np.array([[[1, 0]], [[2, 0]], [[0, 1]], [[1, 1]]], float)
    tr_kp = np.array([[[1, 0]], [[3, 0]], [[0, 2]], [[100, -100]]], float)
    tr_v = np.array([[True], [True], [True], [False]])
    w = fit(tr_c, tr_kp, tr_v)
    assert w.shape == (1, 2, 2)
    assert w[0] == pytest.approx(np.array([[1.4, 0.0], [0.0, 2.0]]))
    # test: centre (1,1) -> (1.4, 2) against (1, 2): 0.4 off, normalised by 2 -> 0.2; the second
    # test image's keypoint is invisible and is not scored however far off it is
    te_c = np.array([[[1, 1]], [[5, 5]]], float)
    te_kp = np.array([[[1, 2]], [[-50, 50]]], float)
    te_v = np.array([[True], [False]])
    res = regression_error(tr_c, tr_kp, tr_v, te_c, te_kp, te_v, np.array([2.0, 1.0]))
    assert res["landmark_error"] == pytest.approx(0.2)
    assert res["landmarks_unfitted"] == 0
    # a second keypoint visible in no training image is not fitted and not scored
    tr_kp2 = np.concatenate([tr_kp, np.full((4, 1, 2), 7.0)], 1)
    tr_v2 = np.concatenate([tr_v, np.zeros((4, 1), bool)], 1)
    te_kp2 = np.concatenate([te_kp, np.full((2, 1, 2), 9.0)], 1)
    te_v2 = np.concatenate([te_v, np.ones((2, 1), bool)], 1)
    res2 = regression_error(tr_c, tr_kp2, tr_v2, te_c, te_kp2, te_v2, np.array([2.0, 1.0]))
    assert res2 == {"landmark_error": pytest.approx(0.2), "landmarks_unfitted": 1}
    with pytest.raises(FgtoolError, match="no visible keypoint"):
        regression_error(tr_c, tr_kp, tr_v, te_c, te_kp, np.zeros((2, 1), bool), np.ones(2))


def test_true_points_give_zero_error_and_the_object_centre_alone_does_not():
    S = 32
    r = synth_arrays(80, size=S, seed=5, parents=3, children=2, backgrounds=2)
    kp, vis = r["keypoints"] / S * 2 - 1, r["visible"]  # view coordinates [-1, 1]
    assert kp.shape == (80, N_KEYPOINTS, 2) and vis.all()
    x, y, w, h = r["boxes"].T
    centre = (np.stack([x + w / 2, y + h / 2], -1) / S * 2 - 1)[:, None]  # [N, 1, 2]
    truth = np.concatenate([centre, kp], 1)  # the object's true centre and keypoints as "parts"
    perm = np.random.default_rng(0).permutation(80)
    a, b = perm[:40], perm[40:]
    norm = np.full(40, 2.0)
    good = regression_error(truth[a], kp[a], vis[a], truth[b], kp[b], vis[b], norm)
    assert good["landmark_error"] < 1e-9
    rough = regression_error(centre[a], kp[a], vis[a], centre[b], kp[b], vis[b], norm)
    assert rough["landmark_error"] > 0.05


# ----------------------------------------------------------------------------- synthetic keypoints


def test_synth_writes_the_keypoints_of_each_pose(synth_dir):
    assert (synth_dir / "parts" / "parts.txt").read_text().splitlines()[0] == "1 point1"
    kps = read_keypoints(synth_dir)
    meta = json.loads((synth_dir / "meta.json").read_text())
    assert meta["keypoint_names"]["bird"] == ["beak", "eye", "tail", "back", "belly"]
    rows = (synth_dir / "images.txt").read_text().splitlines()
    assert len(kps) == len(rows) == 48
    for line in rows[:6]:
        i, rel = line.split()
        xy, vis = kps[(synth_dir / "images" / rel).resolve()]
        _, mask, lab = render_one(int(i) - 1, meta["seed"], config_from_meta(meta))
        assert xy == pytest.approx(lab["keypoints"], abs=0.006) and vis.all()
        # every point sits on or right beside the object it belongs to
        ys, xs = np.nonzero(mask)
        d = np.min(np.hypot(xs[:, None] + 0.5 - xy[:, 0], ys[:, None] + 0.5 - xy[:, 1]), 0)
        assert d.max() < 2.5


# ----------------------------------------------------------------------------- readers


def _cub(tmp_path, n=3, size=16):
    root = tmp_path / "cub"
    (root / "images").mkdir(parents=True)
    lines = []
    for i in range(n):
        Image.new("RGB", (size, size), (10 * i, 50, 90)).save(root / "images" / f"im{i}.png")
        lines.append(f"{i + 1} im{i}.png\n")
    (root / "images.txt").write_text("".join(lines))
    return root


def test_part_locs_reader_visibility_and_bad_input(tmp_path):
    root = _cub(tmp_path)
    f = root / "part_locs.txt"
    f.write_text("1 1 3.5 4.0 1\n1 2 0 0 0\n2 1 1 2 1\n2 2 5 6 1\n\n3 1 7.25 8 1\n")
    kps = read_part_locs(f, root / "images.txt")
    xy, vis = kps[(root / "images" / "im0.png").resolve()]
    assert xy.tolist() == [[3.5, 4.0], [0.0, 0.0]] and vis.tolist() == [True, False]
    xy, vis = kps[(root / "images" / "im2.png").resolve()]
    assert xy[0].tolist() == [7.25, 8.0] and vis.tolist() == [True, False]  # not listed: invisible
    for text, msg in (("1 1 3 4\n", "expected '<image id>"), ("1 1 x 4 1\n", "'x' is not a number"),
                      ("9 1 3 4 1\n", "image id 9 is not listed"), ("1 1 3 4 2\n", "visible must be 0 or 1"),
                      ("1 0 3 4 1\n", "positive integers"), ("1 1 nan 4 1\n", "not a finite number"),
                      ("\n", "lists no keypoints")):
        f.write_text(text)
        with pytest.raises(FgtoolError, match="part_locs.txt") as e:
            read_part_locs(f, root / "images.txt")
        assert msg in str(e.value) and "\n" not in str(e.value)


def test_csv_reader_visibility_and_bad_input(tmp_path):
    root = _cub(tmp_path)
    f = tmp_path / "kp.csv"
    f.write_text("path,x1,y1,x2,y2\nim0.png,1,2,,\nimages/im1.png,3,4,5.5,6\n")
    kps = read_csv(f, root)
    assert kps[(root / "images" / "im0.png").resolve()][1].tolist() == [True, False]
    xy, vis = kps[(root / "images" / "im1.png").resolve()]
    assert xy.tolist() == [[3, 4], [5.5, 6]] and vis.all()
    # the reader read_keypoints picks for a .csv is this one
    assert read_keypoints(root, str(f)).keys() == kps.keys()
    for text, msg in (("im0.png,1,2,3\n", "odd number of columns"), ("im0.png,1,,3,4\n", "only one coordinate"),
                      ("im0.png,1,2\nim1.png,1,2,3,4\n", "earlier rows have 1"), ("im0.png,a,2\n", "not a number"),
                      ("path,x1,y1\n", "lists no keypoints")):
        f.write_text(text)
        with pytest.raises(FgtoolError, match="kp.csv") as e:
            read_csv(f, root)
        assert msg in str(e.value)


# ----------------------------------------------------------------------------- the CLI with a tiny GANSeg


@pytest.fixture(scope="module")
def gs_ckpt(tmp_path_factory, synth_dir):
    out = tmp_path_factory.mktemp("gsl") / "run"
    api.train("ganseg", str(synth_dir), str(TINY), ["model.n_parts=2"], str(out), progress=False)
    return out / "last.pt"


def test_eval_landmarks_cli(capsys, gs_ckpt, synth_dir, tmp_path):
    res = run_json(capsys, "eval", "--metric", "landmarks", "--ckpt", gs_ckpt, "--data", synth_dir, "--quiet")
    m = res["metrics"]
    assert m["landmarks_k"] == 2 and m["landmarks_points"] == N_KEYPOINTS
    assert (m["landmarks_fit"], m["landmarks_test"]) == (24, 24)  # a seeded 50/50 split of 48
    assert m["landmarks_scored"] == 24 * N_KEYPOINTS and m["landmarks_unfitted"] == 0
    assert m["landmarks_split"].startswith("a 50/50 split") and "side" in m["landmarks_norm"]
    assert 0 < m["landmark_error"] < 1 and 0 < m["landmark_error_fg_centre"] < 1
    # the same keypoints as a CSV score the same
    kps = read_keypoints(synth_dir)
    rows = ["path," + ",".join(f"x{j},y{j}" for j in range(1, 6))]
    for p, (xy, _) in kps.items():
        rows.append(str(p.relative_to((synth_dir / "images").resolve())) + "," + ",".join(f"{v:.2f}" for v in
                                                                                           xy.reshape(-1)))
    csv = tmp_path / "kp.csv"
    csv.write_text("\n".join(rows) + "\n")
    res2 = run_json(capsys, "eval", "--metric", "landmarks", "--ckpt", gs_ckpt, "--data", synth_dir,
                    "--keypoints", csv, "--quiet")
    assert res2["metrics"]["landmark_error"] == pytest.approx(m["landmark_error"], abs=1e-9)
    # normalised by two keypoints' distance instead (inter-ocular on faces)
    eyes = run_json(capsys, "eval", "--metric", "landmarks", "--ckpt", gs_ckpt, "--data", synth_dir,
                    "--eyes", "1,3", "--quiet")["metrics"]
    assert "keypoints 1 and 3" in eyes["landmarks_norm"] and eyes["landmark_error"] != m["landmark_error"]
    # the data's own train/test split when it has one
    split = tmp_path / "split"
    shutil.copytree(synth_dir, split)
    (split / "train_test_split.txt").write_text("".join(f"{i} {int(i <= 30)}\n" for i in range(1, 49)))
    s = run_json(capsys, "eval", "--metric", "landmarks", "--ckpt", gs_ckpt, "--data", split, "--quiet")["metrics"]
    assert (s["landmarks_fit"], s["landmarks_test"]) == (30, 18)
    assert s["landmarks_split"] == "the data's train/test split"


def test_eval_landmarks_errors(capsys, gs_ckpt, synth_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(synth_dir, bad)
    (bad / "parts" / "part_locs.txt").write_text("1 1 3 4 7\n")
    plain = tmp_path / "plain"
    shutil.copytree(synth_dir, plain)
    shutil.rmtree(plain / "parts")
    cases = [(["--data", bad], "part_locs.txt:1: visible must be 0 or 1"),
             (["--data", plain], "no parts/part_locs.txt"),
             (["--data", synth_dir, "--keypoints", tmp_path / "none.csv"], "none.csv: no such file"),
             (["--data", synth_dir, "--eyes", "1"], "--eyes must be two"),
             (["--data", synth_dir, "--eyes", "1,9"], "have 5 points"),
             (["--data", synth_dir, "--split", "train"], "drop --split")]
    for argv, msg in cases:
        rc, out, err = run_cli(capsys, "eval", "--metric", "landmarks", "--ckpt", gs_ckpt, *argv, "--quiet")
        assert rc == 2 and out == "", argv
        assert msg in one_error_line(err), (argv, err)
    rc, _, err = run_cli(capsys, "eval", "--metric", "landmarks", "--baseline", "centre", "--data", synth_dir)
    assert rc == 2 and "landmarks needs --ckpt" in one_error_line(err)


# ----------------------------------------------------------------------------- the centre floor


def test_centre_ellipse_area():
    e = centre_ellipse(64, 64, 0.3)
    assert e.mean() == pytest.approx(0.3, abs=0.01)
    assert e[32, 32] and not e[0, 0] and np.array_equal(e, e[::-1]) and np.array_equal(e, e[:, ::-1])
    wide = centre_ellipse(40, 80, 0.3)  # the photo's proportions
    assert wide.mean() == pytest.approx(0.3, abs=0.01) and abs(wide[20].sum() - 2 * wide[:, 40].sum()) <= 2


def test_centre_floor_by_hand(capsys, tmp_path):
    # two 4 x 4 images; masks: the central 2 x 2 block and the top-left 2 x 2 block. Mean area
    # 4/16, so the ellipse has radius 4 sqrt(0.25 / pi) = 1.13 px: the four central pixels
    # (0.71 px from the centre) are in, the next ring (>= 1.58 px) is out.
    root = _cub(tmp_path, n=2, size=4)
    (root / "segmentations").mkdir()
    a, b = np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8)
    a[1:3, 1:3], b[0:2, 0:2] = 255, 255
    Image.fromarray(a).save(root / "segmentations" / "im0.png")
    Image.fromarray(b).save(root / "segmentations" / "im1.png")
    assert np.array_equal(centre_ellipse(4, 4, 0.25), a > 0)
    # IoU: 1 and 1/7 (one shared pixel, seven in the union); DICE: 1 and 2*1/8
    res = run_json(capsys, "eval", "--metric", "iou,dice", "--baseline", "centre", "--data", root, "--quiet")
    assert res["metrics"]["iou"] == pytest.approx((1 + 1 / 7) / 2)
    assert res["metrics"]["dice"] == pytest.approx((1 + 0.25) / 2)
    assert res["metrics"]["fg_fraction"] == pytest.approx(0.25) and res["metrics"]["n"] == 2
    assert "centred ellipse" in res["source"]
    assert centre_scores([a > 0, b > 0])["iou"] == pytest.approx(4 / 7)
    # no masks, clustering metrics, unknown baselines: one line, exit 2
    shutil.rmtree(root / "segmentations")
    for argv, msg in ((["--metric", "iou", "--baseline", "centre"], "no segmentations/"),
                      (["--metric", "nmi", "--baseline", "centre"], "clustering metrics take --baseline pixels"),
                      (["--metric", "iou", "--baseline", "middle"], "'middle' is not one of 'pixels', 'centre'"),
                      (["--metric", "iou", "--baseline", "pixels"], "or --baseline centre")):
        rc, out, err = run_cli(capsys, "eval", *argv, "--data", root, "--quiet")
        assert rc == 2 and out == "", argv
        assert msg in one_error_line(err), (argv, err)
