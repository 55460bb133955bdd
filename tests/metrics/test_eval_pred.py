"""`fgtool eval --pred` with other tools' outputs: cluster ids as JSON or CSV with paths relative
to --data, folders of mask PNGs (fgtool segment's own included), and partial coverage."""

import itertools
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import image_folder, one_error_line, run_cli, run_json, train_tiny
from PIL import Image
from sklearn.metrics import normalized_mutual_info_score


def _listing(synth_dir):
    """[(path as images.txt lists it, class id)] in images.txt order."""
    files = [x.split() for x in (synth_dir / "images.txt").read_text().splitlines() if x.strip()]
    labels = dict(x.split() for x in (synth_dir / "image_class_labels.txt").read_text().splitlines() if x.strip())
    return [(rel, int(labels[i]) - 1) for i, rel in files]


def _eval(capsys, synth_dir, pred, metric="nmi,acc"):
    return run_json(capsys, "eval", "--metric", metric, "--pred", pred, "--data", synth_dir, "--quiet")["metrics"]


def test_clusters_as_json_or_csv_with_paths_relative_to_data(capsys, synth_dir, tmp_path):
    rows = _listing(synth_dir)
    y = np.array([c for _, c in rows])
    pred = np.where(np.arange(len(y)) < 30, y, 0)  # right for the first 30, one cluster for the rest
    want = normalized_mutual_info_score(y, pred)
    want_acc = max((np.array(perm)[pred] == y).mean() for perm in itertools.permutations(range(6)))
    assert 0.2 < want < 0.95
    forms = {
        "images.json": [{"path": rel, "cluster": int(c)} for (rel, _), c in zip(rows, pred)],  # as images.txt
        "root.json": {f"images/{rel}": int(c) for (rel, _), c in zip(rows, pred)},  # relative to --data
        "abs.json": {"items": [{"path": str(synth_dir / "images" / rel), "cluster": int(c)}
                               for (rel, _), c in zip(rows, pred)]},
    }
    for name, doc in forms.items():
        (tmp_path / name).write_text(json.dumps(doc))
    (tmp_path / "plain.csv").write_text("".join(f"{rel},{c}\n" for (rel, _), c in zip(rows, pred)))
    (tmp_path / "header.csv").write_text("\ufeffscore,Cluster,path\n" + "".join(
        f"0.5,{c},images/{rel}\n" for (rel, _), c in zip(rows, pred)))
    for name in [*forms, "plain.csv", "header.csv"]:
        m = _eval(capsys, synth_dir, tmp_path / name)
        assert m["n"] == 48 and m["nmi"] == pytest.approx(want, abs=1e-12), name
        assert m["acc"] == pytest.approx(want_acc, abs=1e-12), name


def test_partial_clusters_warn_on_one_line_and_score_their_part(capsys, monkeypatch, synth_dir, tmp_path):
    from fgtool.cli import _one_line_warning

    rows = _listing(synth_dir)[:30]
    (tmp_path / "part.csv").write_text("path,cluster\n" + "".join(f"{rel},{c % 2}\n" for rel, c in rows))
    monkeypatch.setattr(warnings, "showwarning", _one_line_warning)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        rc, out, err = run_cli(capsys, "eval", "--metric", "nmi", "--pred", tmp_path / "part.csv", "--data",
                               synth_dir, "--quiet", "--json")
    assert rc == 0
    assert err.strip().splitlines() == [f"fgtool: warning: {tmp_path / 'part.csv'} covers 30 of the 48 images in "
                                        f"{synth_dir}; scoring those 30 only"]
    m = json.loads(out)["metrics"]
    y = np.array([c for _, c in rows])
    assert m["n"] == 30 and m["nmi"] == pytest.approx(normalized_mutual_info_score(y, y % 2), abs=1e-12)


@pytest.mark.parametrize("text, needle", [
    ("path,cluster\nnope/x.png,1\n", "none of the 1 paths"),
    ("path,cluster\n{rel},x\n", "row 2: cluster id 'x' is not a non-negative integer"),
    ("{rel},1\n{rel},2\n", "row 2: {rel} is listed twice"),
    ("{rel}\n", "row 1 has no cluster column"),
])
def test_bad_cluster_csv(capsys, synth_dir, tmp_path, text, needle):
    rel = _listing(synth_dir)[0][0]
    (tmp_path / "p.csv").write_text(text.format(rel=rel))
    rc, out, err = run_cli(capsys, "eval", "--metric", "nmi", "--pred", tmp_path / "p.csv", "--data", synth_dir)
    assert rc == 2 and out == "" and needle.format(rel=rel) in one_error_line(err)


# ------------------------------------------------------------------ masks


def _iou_dice(p, g):
    inter, union, total = (p & g).sum(), (p | g).sum(), p.sum() + g.sum()
    return (inter / union if union else 1.0), (2 * inter / total if total else 1.0)


def test_a_folder_of_masks_is_scored_against_segmentations(capsys, synth_dir, tmp_path):
    masks = tmp_path / "masks"
    shutil.copytree(synth_dir / "segmentations", masks)
    m = _eval(capsys, synth_dir, masks, "iou,dice")
    assert m == {"iou": 1.0, "dice": 1.0, "n": 48}
    files = sorted(masks.rglob("*.png"))
    gts = [np.asarray(Image.open(f)) >= 128 for f in files[:3]]
    Image.fromarray(gts[0].astype(np.uint8)).save(files[0])  # 0/1 values: the same mask
    Image.fromarray(np.zeros_like(gts[1], np.uint8)).save(files[1])  # empty: IoU 0
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(files[2])  # another size, all foreground
    frac = gts[2].mean()
    m = _eval(capsys, synth_dir, masks, "iou,dice")
    assert m["n"] == 48
    assert m["iou"] == pytest.approx((46 + 0 + frac) / 48, abs=1e-12)
    assert m["dice"] == pytest.approx((46 + 0 + 2 * frac / (1 + frac)) / 48, abs=1e-12)
    for f in files[-8:]:
        f.unlink()
    with pytest.warns(UserWarning, match="covers 40 of the 48 images"):
        assert _eval(capsys, synth_dir, masks, "iou")["n"] == 40


def test_mask_folder_errors(capsys, synth_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "c.json").write_text("[]")
    for pred, metric, needle in [(tmp_path / "empty", "iou", "no mask in"),
                                 (tmp_path / "empty", "nmi,iou", "is a folder of masks: it scores iou and dice, "
                                                                 "not nmi"),
                                 (tmp_path / "c.json", "dice", "is a clusters file")]:
        rc, out, err = run_cli(capsys, "eval", "--metric", metric, "--pred", pred, "--data", synth_dir)
        assert rc == 2 and out == "" and needle in one_error_line(err)


def test_fgtool_segments_own_output_folder(capsys, synth_dir, tmp_path):
    run = tmp_path / "gs"
    train_tiny("ganseg", run, synth_dir)
    out = tmp_path / "seg"
    run_json(capsys, "segment", "--ckpt", run / "last.pt", "--data", synth_dir, "--out", out, "--parts", "--quiet")
    items = json.loads((out / "index.json").read_text())["items"]
    scores = []
    for it in items:
        rel = Path(it["image"]).relative_to(synth_dir / "images")
        g = np.asarray(Image.open(synth_dir / "segmentations" / rel)) >= 128
        scores.append(_iou_dice(np.asarray(Image.open(it["mask"])) >= 128, g))
    m = _eval(capsys, synth_dir, out, "iou,dice")
    assert m["n"] == 48
    assert m["iou"] == pytest.approx(np.mean([s[0] for s in scores]), abs=1e-12)
    assert m["dice"] == pytest.approx(np.mean([s[1] for s in scores]), abs=1e-12)
    assert 0 < m["iou"] < 1


@pytest.mark.parametrize("model", ["ganseg", "onegan"])
def test_eval_ckpt_scores_the_masks_segment_writes(capsys, synth_dir, tmp_path, model):
    # a 16 px model on 32 px photos: eval --ckpt scores the upsampled photo-sized masks, as
    # eval --pred does on segment's PNGs (OneGAN: its box crop, pasted back into the photo)
    run = tmp_path / model
    train_tiny(model, run, synth_dir, "data.size=16")
    out = tmp_path / "seg"
    run_json(capsys, "segment", "--ckpt", run / "last.pt", "--data", synth_dir, "--out", out, "--quiet")
    by_pred = _eval(capsys, synth_dir, out, "iou,dice")
    by_ckpt = run_json(capsys, "eval", "--metric", "iou,dice", "--ckpt", run / "last.pt", "--data", synth_dir,
                       "--quiet")["metrics"]
    assert by_ckpt["n"] == by_pred["n"] == 48
    assert by_ckpt["iou"] == pytest.approx(by_pred["iou"], abs=1e-12)
    assert by_ckpt["dice"] == pytest.approx(by_pred["dice"], abs=1e-12)
    assert 0 < by_ckpt["iou"] < 1


def test_segment_baseline_centre_writes_the_floor_eval_scores(capsys, synth_dir, tmp_path):
    out = tmp_path / "centre"
    res = run_json(capsys, "segment", "--baseline", "centre", "--data", synth_dir, "--out", out, "--quiet")
    floor = run_json(capsys, "eval", "--metric", "iou,dice", "--baseline", "centre", "--data", synth_dir,
                     "--quiet")["metrics"]
    assert res["n"] == 48 and res["fraction"] == pytest.approx(floor["fg_fraction"], abs=1e-4)
    m = _eval(capsys, synth_dir, out, "iou,dice")  # the written masks score as the floor itself
    assert m["n"] == 48 and m["iou"] == pytest.approx(floor["iou"], abs=1e-12)
    assert m["dice"] == pytest.approx(floor["dice"], abs=1e-12) and 0.1 < m["iou"] < 0.9
    items = json.loads((out / "index.json").read_text())["items"]
    mask = np.asarray(Image.open(items[0]["mask"])) >= 128
    assert mask.shape == (32, 32) and mask[16, 16] and not mask[0, 0] and not mask[0, 16]
    assert (out / "overlay.png").is_file()
    # a folder without masks takes the area from --fraction; without it, one line
    photos = image_folder(synth_dir, tmp_path / "photos", 4)
    got = run_json(capsys, "segment", "--baseline", "centre", "--fraction", "0.3", "--data", photos, "--out",
                   tmp_path / "c2", "--quiet")
    assert got["n"] == 4 and got["mean_fg_fraction"] == pytest.approx(0.3, abs=0.03)
    for argv, needle in ((["--baseline", "centre", "--data", photos], "pass --fraction"),
                         (["--baseline", "centre", "--fraction", "1.5", "--data", photos], "--fraction is a share"),
                         (["--fraction", "0.3", "--data", photos], "--fraction goes with --baseline centre"),
                         (["--baseline", "centre", "--ckpt", "x.pt", "--data", photos], "uses no model")):
        rc, out_, err = run_cli(capsys, "segment", *argv, "--out", tmp_path / "c3", "--quiet")
        assert rc == 2 and out_ == "" and needle in one_error_line(err)
