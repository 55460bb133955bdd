"""Reliability (issue 8): a corpus of bad inputs, hostile checkpoints, failing writes, NaNs,
user folders and determinism. Every bad input is exit code 2 with ONE line on stderr that
names the file and the problem (or a counted skip with --skip-bad); nothing on disk is lost.

The slow, subprocess-based fault tests (SIGKILL at random points, a real file-size limit)
are marked ``slow``; ``make test-slow`` runs them.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import pickle
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY, image_folder, one_error_line, run_cli
from PIL import Image
from test_resume import assert_same_state, metric_rows

from fgtool import api
from fgtool import checkpoint as ckpt
from fgtool.backends.finegan import FineGAN
from fgtool.data.datasets import ImageDataset, scan
from fgtool.errors import FgtoolError, NonFiniteLoss, WriteFailed, printable

REF_SETS = ["train.steps=6", "train.ckpt_every=2", "train.log_every=1", "train.sample_every=100"]


# ----------------------------------------------------------------------------- helpers




def train_argv(data, out, *sets) -> list:
    argv = ["train", "--model", "finegan", "--data", data, "--recipe", TINY, "--out", out, "--quiet", "--json"]
    for s in sets:
        argv += ["--set", s]
    return argv


def sha1(p: Path) -> str:
    return hashlib.sha1(p.read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict:
    """relative path -> (mode, mtime_ns, sha1) of every file and folder under ``folder``."""
    out = {}
    for p in sorted(folder.rglob("*")):
        st = p.lstat()
        digest = sha1(p) if p.is_file() and not p.is_symlink() else None
        out[str(p.relative_to(folder))] = (st.st_mode, st.st_mtime_ns, digest)
    return out


def png_header(w: int, h: int) -> bytes:
    """A tiny PNG whose header claims ``w x h`` pixels (a decompression bomb's calling card)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def jpeg_bytes(size=(40, 30), color=(200, 30, 60)) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    arr = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
    arr[..., 0] = color[0]
    Image.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()



def join(folder: Path, name: str | bytes) -> Path:
    """``folder / name``; a bytes name (not UTF-8) goes through the file system encoding."""
    return folder / (os.fsdecode(name) if isinstance(name, bytes) else name)


@pytest.fixture(scope="module")
def ref_run(synth_dir, tmp_path_factory) -> Path:
    """An uninterrupted 6-step run (checkpoints at 2, 4, 6) to compare faulty runs against."""
    run = tmp_path_factory.mktemp("ref") / "run"
    api.train("finegan", str(synth_dir), str(TINY), REF_SETS, str(run), progress=False)
    return run


# ----------------------------------------------------------------------------- bad images

# name -> (file name, how to make it, what the one-line error must say). They fail in the scan
# (header level), before a model is built or --out is created.
BAD_IMAGES = {
    "zero_byte": ("empty.jpg", lambda p: p.write_bytes(b""), "cannot identify image file"),
    "text_named_jpg": ("notes.jpg", lambda p: p.write_text("not a picture\n"), "cannot identify image file"),
    "bomb_2x_limit": ("bomb.png", lambda p: p.write_bytes(png_header(30000, 30000)), "image too large"),
    # between 1x and 2x Pillow's limit Pillow only warns and then decodes ~300 MB: fgtool refuses
    "bomb_1x_limit": ("big.png", lambda p: p.write_bytes(png_header(10000, 10000)), "image too large"),
    "symlink_loop": ("loop.png", lambda p: os.symlink(p.name, p), "Too many levels of symbolic links"),
    "non_utf8_name": (b"\xff\xfe-bad.jpg", lambda p: p.write_bytes(b"\x00garbage" * 20),
                      "cannot identify image file"),
}


@pytest.mark.parametrize("kind", list(BAD_IMAGES))
def test_bad_image_is_one_line_naming_the_file(capsys, synth_dir, tmp_path, kind):
    name, make, needle = BAD_IMAGES[kind]
    data = image_folder(synth_dir, tmp_path / "data", 16)
    bad = join(data / "a", name)
    make(bad)
    rc, out, err = run_cli(capsys, *train_argv(data, tmp_path / "run"))
    assert rc == 2 and out == ""
    line = one_error_line(err)
    assert printable(str(bad)) in line and needle in line, line
    assert "--skip-bad" in line  # the hint
    assert not (tmp_path / "run").exists()


def test_skip_bad_counts_and_skips_every_bad_image(capsys, synth_dir, tmp_path):
    data = image_folder(synth_dir, tmp_path / "data", 16)
    for name, make, _ in BAD_IMAGES.values():
        make(join(data / "a", name))
    n_bad = len(BAD_IMAGES)
    sets = ["train.steps=2", "train.sample_every=100"]
    with pytest.warns(UserWarning, match=f"skipping {n_bad} unreadable image"):
        rc, out, err = run_cli(capsys, *train_argv(data, tmp_path / "run", *sets), "--skip-bad")
    assert rc == 0, err
    res = json.loads(out)
    assert res["images"] == 16 and res["step"] == 2
    # the CLI flag is only a shorthand: the run's config says so
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["skip_bad"] is True


def test_skip_bad_on_cluster_and_eval(capsys, synth_dir, tiny_ckpt, tmp_path):
    data = image_folder(synth_dir, tmp_path / "data", 16)
    bad = data / "a" / "empty.png"
    bad.write_bytes(b"")
    for argv in (["cluster", "--ckpt", tiny_ckpt, "--data", data, "--out", tmp_path / "c" / "c.json", "--k", 2],
                 ["eval", "--metric", "nmi,acc", "--baseline", "pixels", "--data", data]):
        rc, out, err = run_cli(capsys, *argv, "--quiet", "--json")
        assert rc == 2 and out == ""
        line = one_error_line(err)
        assert str(bad) in line and "--skip-bad" in line
        with pytest.warns(UserWarning, match="skipping 1 unreadable image"):
            rc, out, err = run_cli(capsys, *argv, "--quiet", "--json", "--skip-bad")
        assert rc == 0, err
        res = json.loads(out)
        if argv[0] == "cluster":
            assert res["n"] == 16 and Path(res["clusters"]).is_file()
        else:
            assert res["metrics"]["nmi"] >= 0
    from fgtool.data import datasets

    assert datasets._SKIP_BAD_DEFAULT is False  # the flag does not leak out of the command


@pytest.mark.slow
def test_warnings_and_errors_of_a_real_process_are_one_line(synth_dir, tmp_path):
    """Outside pytest: `fgtool` prints each warning as one `fgtool: warning:` line, each error as
    one `fgtool: error:` line (exit 2), and no traceback."""
    data = image_folder(synth_dir, tmp_path / "data", 8)
    bad = join(data / "a", b"\xff-empty.png")
    bad.write_bytes(b"")
    argv = [sys.executable, "-m", "fgtool", "eval", "--metric", "nmi", "--baseline", "pixels", "--data", str(data),
            "--quiet", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    p = subprocess.run(argv + ["--skip-bad"], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stderr.splitlines() == [p.stderr.strip()] and p.stderr.startswith("fgtool: warning: skipping 1 "), \
        p.stderr
    assert "\\xff-empty.png" in p.stderr and json.loads(p.stdout)["metrics"]
    p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 2 and p.stdout == ""
    assert "\\xff-empty.png" in one_error_line(p.stderr)


def _with_truncated_jpeg(synth_dir, tmp_path) -> tuple[Path, Path]:
    # 15 good + 1 bad = 2 batches of 8: the first epoch (steps 1-2) decodes every image
    data = image_folder(synth_dir, tmp_path / "data", 15)
    good = jpeg_bytes()
    bad = data / "a" / "cut.jpg"
    bad.write_bytes(good[: len(good) // 2])
    return data, bad


def test_truncated_jpeg_fails_at_decode_with_its_name(capsys, synth_dir, tmp_path):
    data, bad = _with_truncated_jpeg(synth_dir, tmp_path)
    rc, out, err = run_cli(capsys, *train_argv(data, tmp_path / "run", "train.steps=2", "train.sample_every=100"))
    assert rc == 2 and out == ""
    line = one_error_line(err)
    assert str(bad) in line and "truncated" in line.lower(), line


def test_truncated_jpeg_is_a_counted_skip(capsys, synth_dir, tmp_path):
    data, bad = _with_truncated_jpeg(synth_dir, tmp_path)
    with pytest.warns(UserWarning, match=r"skipping unreadable image \(1 so far\)") as rec:
        rc, out, err = run_cli(capsys, *train_argv(data, tmp_path / "run", "train.steps=4", "train.sample_every=100"),
                               "--skip-bad")
    assert rc == 0, err
    assert json.loads(out)["step"] == 4
    skips = [str(w.message) for w in rec if "skipping unreadable image" in str(w.message)]
    assert len(skips) == 1 and str(bad) in skips[0]  # two epochs, but reported (and decoded) once


# 16-bit, CMYK, palette, RGBA, LA, 1x1, a non-UTF-8 name and folder symlink loops: all fine
ODD_BUT_FINE = {
    "one_by_one.png": lambda: Image.new("RGB", (1, 1), (10, 200, 30)),
    "gray16.png": lambda: Image.fromarray(np.linspace(0, 65535, 24 * 20).reshape(20, 24).astype(np.uint16)),
    "cmyk.jpg": lambda: Image.new("CMYK", (24, 20), (0, 180, 90, 10)),
    "palette.png": lambda: Image.new("RGB", (24, 20), (30, 60, 200)).convert("P", palette=Image.ADAPTIVE),
    "rgba.png": lambda: Image.new("RGBA", (24, 20), (255, 0, 0, 90)),
    "la.png": lambda: Image.new("LA", (24, 20), (128, 200)),
    b"\xff\xfe-good.png": lambda: Image.new("RGB", (24, 20), (1, 2, 3)),
}


def _odd_folder(synth_dir: Path, dest: Path) -> Path:
    data = image_folder(synth_dir, dest, 16 - len(ODD_BUT_FINE))
    for name, make in ODD_BUT_FINE.items():
        path = join(data / "a", name)
        img = make()
        fmt = "JPEG" if path.suffix == ".jpg" else "PNG"
        with open(path, "wb") as f:
            img.save(f, fmt)
    os.symlink("..", data / "a" / "up")  # a loop inside a class folder: os.walk does not follow it
    os.symlink(".", data / "here")  # a "class folder" that is the data folder itself
    os.symlink("self", data / "self")  # a link to itself
    return data


def test_odd_but_valid_images_load(synth_dir, tmp_path):
    data = _odd_folder(synth_dir, tmp_path / "data")
    with pytest.warns(UserWarning, match="symlink"):
        iset = scan(data)
    assert iset.classes == ["a", "b"] and len(iset) == 16  # the loops added no class and no image
    names = {r.path.name for r in iset.records}
    assert all((os.fsdecode(n) if isinstance(n, bytes) else n) in names for n in ODD_BUT_FINE)
    ds = ImageDataset(iset, 32, train=True)
    for k, r in enumerate(iset.records):
        x = ds[(k, 7)]["image"]
        assert x.shape == (3, 32, 32) and torch.isfinite(x).all() and x.min() >= -1 and x.max() <= 1, r.path


def test_odd_but_valid_images_train(capsys, synth_dir, tmp_path):
    data = _odd_folder(synth_dir, tmp_path / "data")
    with pytest.warns(UserWarning, match="symlink"):
        rc, out, err = run_cli(capsys, *train_argv(data, tmp_path / "run", "train.steps=2", "train.sample_every=100"))
    assert rc == 0, err
    assert json.loads(out)["images"] == 16  # 16 = 2 batches: step 1-2 decode every one of them


def test_empty_folders(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "textonly").mkdir()
    (tmp_path / "textonly" / "readme.txt").write_text("x")
    for d in ("c1", "c2"):
        (tmp_path / "emptyclasses" / d).mkdir(parents=True)
    for folder in ("empty", "textonly", "emptyclasses"):
        rc, out, err = run_cli(capsys, *train_argv(tmp_path / folder, tmp_path / "run"))
        assert rc == 2 and out == ""
        line = one_error_line(err)
        assert "no images found in" in line and str(tmp_path / folder) in line
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- box files


def _cub(root: Path, n: int = 16) -> Path:
    """CUB layout: n images of 60x40 in two classes, boxes inside the images."""
    lines = {"images.txt": [], "image_class_labels.txt": [], "bounding_boxes.txt": []}
    for i in range(1, n + 1):
        cls = 1 + (i - 1) % 2
        rel = f"{cls:03d}.c{cls}/img{i:02d}.png"
        (root / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (60, 40), (20 * cls, 5 * i, 90)).save(root / "images" / rel)
        lines["images.txt"].append(f"{i} {rel}")
        lines["image_class_labels.txt"].append(f"{i} {cls}")
        lines["bounding_boxes.txt"].append(f"{i} 10.0 8.0 20.0 16.0")
    for name, rows in lines.items():
        (root / name).write_text("\n".join(rows) + "\n")
    return root


BAD_BOXES = {
    "unknown_id": ("99 1 1 5 5", "box for image id 99, which images.txt does not list"),
    "negative_size": ("3 10 8 -20 16", "box of image id 3 has a negative or zero size"),
    "zero_size": ("3 10 8 20 0", "box of image id 3 has a negative or zero size"),
    "negative_origin": ("3 -12 8 20 16", "box of image id 3 starts outside the image"),
    "outside_image": ("3 50 8 20 16", "lies outside the 60x40 image"),
    "below_image": ("3 10 30 20 16", "lies outside the 60x40 image"),
    "too_few_columns": ("3 10 8 20", "line 3: expected 5 columns, got 4"),
    "too_many_columns": ("3 10 8 20 16 1", "line 3: expected 5 columns, got 6"),
    "non_numeric": ("3 10 8 wide 16", "non-numeric box for image id 3"),
    "not_finite": ("3 10 8 nan 16", "box of image id 3 is not finite"),
    "duplicate_id": ("2 10 8 20 16", "line 3: image id 2 appears twice"),
    "bad_id": ("three 10 8 20 16", "line 3: bad image id 'three'"),
}


@pytest.mark.parametrize("kind", list(BAD_BOXES))
def test_bad_box_file_is_one_line_naming_it(capsys, tmp_path, kind):
    root = _cub(tmp_path / "cub")
    boxes = root / "bounding_boxes.txt"
    rows = boxes.read_text().splitlines()
    row, needle = BAD_BOXES[kind]
    if kind == "unknown_id":
        rows.append(row)
    else:
        rows[2] = row  # line 3
    boxes.write_text("\n".join(rows) + "\n")
    rc, out, err = run_cli(capsys, *train_argv(root, tmp_path / "run"))
    assert rc == 2 and out == ""
    line = one_error_line(err)
    assert str(boxes) in line and needle in line, line
    if kind in ("outside_image", "below_image"):
        assert "img03.png" in line  # and the image it belongs to
    assert not (tmp_path / "run").exists()


def test_good_box_file_and_border_tolerance(tmp_path):
    root = _cub(tmp_path / "cub")
    rows = (root / "bounding_boxes.txt").read_text().splitlines()
    rows[0] = "1 0 0 60 40"  # the whole image
    rows[1] = "2 -0.5 0 60.5 40.8"  # rounding of an annotation tool: within 1 px
    (root / "bounding_boxes.txt").write_text("\n".join(rows) + "\n")
    iset = scan(root)
    assert iset.has_boxes and iset.records[1].box == (-0.5, 0.0, 60.5, 40.8)


def test_bad_metadata_text(capsys, tmp_path):
    root = _cub(tmp_path / "cub")
    (root / "image_class_labels.txt").write_bytes(b"1 1\n2 \xff\xfe\n")
    rc, _, err = run_cli(capsys, *train_argv(root, tmp_path / "run"))
    assert rc == 2
    line = one_error_line(err)
    assert str(root / "image_class_labels.txt") in line and "not UTF-8" in line


# ----------------------------------------------------------------------------- recipes


BAD_RECIPES = {
    "unknown_key": (b"[train]\nsteps = 2\nstepz = 3\n", "unknown key 'train.stepz'; valid keys in [train]"),
    "wrong_type": (b"[train]\nsteps = 'many'\n", "train.steps: expected an integer, got 'many'"),
    "wrong_type_bool": (b"[data]\nflip = 3\n", "data.flip: expected true/false, got 3"),
    "wrong_type_model": (b"[model]\nname = 'finegan'\nngf = 'wide'\n", "model.ngf: expected an integer"),
    "wrong_type_table": (b"[model.finegan]\nngf = 1.5\n", "model.ngf: expected an integer, got 1.5"),
    "unknown_table": (b"[model.nosuch]\nx = 1\n", "unknown table [model.nosuch]"),
    "unknown_section": (b"[trian]\nsteps = 2\n", "unknown section '[trian]'"),
    "not_toml": (b"[train\nsteps = 2\n", "is not valid TOML"),
    "not_utf8": (b"[train]\nsteps = 2 # \xff\xfe\n", "is not valid TOML: not UTF-8 text"),
    "too_deep": (b"[train]\nsteps = " + b"[" * 5000 + b"\n", "is not valid TOML"),
}


@pytest.mark.parametrize("kind", list(BAD_RECIPES))
def test_bad_recipe_names_the_recipe(capsys, synth_dir, tmp_path, kind):
    text, needle = BAD_RECIPES[kind]
    recipe = tmp_path / "bad.toml"
    recipe.write_bytes(text)
    rc, out, err = run_cli(capsys, "train", "--data", synth_dir, "--recipe", recipe, "--out", tmp_path / "r",
                           "--dry-run")
    assert rc == 2 and out == ""
    line = one_error_line(err)
    assert str(recipe) in line and needle in line, line


def test_recipe_missing_file_or_folder(capsys, synth_dir, tmp_path):
    for target in (tmp_path / "nope.toml", tmp_path):
        rc, _, err = run_cli(capsys, "train", "--data", synth_dir, "--recipe", target, "--dry-run")
        assert rc == 2 and f"recipe not found: {target}" in one_error_line(err)
    recipe = tmp_path / "r.toml"
    recipe.write_text(f"[data]\nroot = '{tmp_path / 'gone'}'\n")
    rc, _, err = run_cli(capsys, "train", "--recipe", recipe, "--out", tmp_path / "run", "--quiet")
    assert rc == 2 and f"data folder {tmp_path / 'gone'} does not exist" in one_error_line(err)


# ----------------------------------------------------------------------------- checkpoints

MARKER_NAME = "PWNED"


class _Exploit:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def _bad_ckpt(kind: str, real: Path, folder: Path) -> Path:
    p = folder / f"{kind}.pt"
    marker = folder / MARKER_NAME
    if kind in ("other_backend", "other_backend_header"):
        ck = torch.load(real, map_location="cpu", weights_only=True)
        cfg = json.loads(ck["config"])
        cfg["model"]["name"] = "nope"
        ck["config"] = json.dumps(cfg)
        if kind == "other_backend_header":
            ck["model"] = "nope"
        torch.save(ck, p)
    elif kind == "foreign_config_key":  # e.g. written by a newer fgtool whose backend grew a key
        ck = torch.load(real, map_location="cpu", weights_only=True)
        cfg = json.loads(ck["config"])
        cfg["model"]["brand_new_knob"] = 3
        ck["config"] = json.dumps(cfg)
        torch.save(ck, p)
    elif kind == "truncated":
        b = real.read_bytes()
        p.write_bytes(b[: len(b) * 2 // 3])
    elif kind == "future_version":
        ck = torch.load(real, map_location="cpu", weights_only=True)
        ck["version"] = ckpt.VERSION + 1
        torch.save(ck, p)
    elif kind == "bad_step":
        ck = torch.load(real, map_location="cpu", weights_only=True)
        ck["step"] = "many"
        torch.save(ck, p)
    elif kind == "pickle_code_zip":  # torch.save's zip format with a code-running object inside
        ck = torch.load(real, map_location="cpu", weights_only=True)
        ck["extra"] = {"payload": _Exploit(marker)}
        torch.save(ck, p)
    elif kind == "pickle_code_raw":  # a bare pickle stream, as an attacker would write it
        with open(p, "wb") as f:
            pickle.dump({"format": ckpt.FORMAT, "version": 1, "payload": _Exploit(marker)}, f, protocol=2)
    return p


BAD_CKPTS = {
    "other_backend": "holds a 'nope' model, which this fgtool does not have",
    "other_backend_header": "holds a 'nope' model, which this fgtool does not have",
    "foreign_config_key": "the config stored in this checkpoint does not fit this fgtool (unknown key "
                          "'model.brand_new_knob'",
    "truncated": "is not a readable fgtool checkpoint",
    "future_version": f"has checkpoint format version {ckpt.VERSION + 1}; this fgtool reads up to {ckpt.VERSION}",
    "bad_step": "damaged step counter",
    "pickle_code_zip": "fgtool refuses to unpickle it",
    "pickle_code_raw": "fgtool refuses to unpickle it",
}


@pytest.fixture(scope="module")
def tiny_ckpt(ref_run) -> Path:
    """A real checkpoint (read-only: the tests copy what they change)."""
    return ref_run / "step_0000002.pt"


def test_exploit_payload_is_live(tmp_path):
    """The crafted pickles really run code when unpickled the unsafe way (so the test below means
    something); torch.load(weights_only=True) refuses both."""
    marker = tmp_path / MARKER_NAME
    pickle.loads(pickle.dumps(_Exploit(marker), protocol=2))
    assert marker.read_text() == "pwned"


@pytest.mark.parametrize("cmd", ["sample", "info", "resume", "cluster", "eval"])
@pytest.mark.parametrize("kind", list(BAD_CKPTS))
def test_bad_checkpoint_is_one_line_naming_it(capsys, tiny_ckpt, synth_dir, tmp_path, kind, cmd):
    p = _bad_ckpt(kind, tiny_ckpt, tmp_path)
    if cmd == "resume":
        run = tmp_path / "run"
        run.mkdir()
        p = Path(shutil.copy(p, run / "last.pt"))
        before = snapshot(run)
        argv = ["train", "--resume", "--out", run, "--quiet"]
    else:
        argv = {"sample": ["sample", "--ckpt", p, "--out", tmp_path / "out" / "s.png"],
                "info": ["info", "--ckpt", p, "--json"],
                "cluster": ["cluster", "--ckpt", p, "--data", synth_dir, "--out", tmp_path / "out" / "c.json",
                            "--quiet"],
                "eval": ["eval", "--metric", "nmi", "--ckpt", p, "--data", synth_dir, "--quiet"]}[cmd]
    rc, out, err = run_cli(capsys, *argv)
    assert rc == 2 and out == ""
    line = one_error_line(err)
    assert str(p) in line and BAD_CKPTS[kind] in line, line
    assert "weights_only" not in line  # torch's advice to load it unsafely is not passed on
    assert not (tmp_path / MARKER_NAME).exists(), "unpickling ran the checkpoint's code"
    assert not (tmp_path / "out").exists()
    if cmd == "resume":
        assert snapshot(run) == before


# ----------------------------------------------------------------------------- atomic writes


def test_checkpoint_write_fsyncs_file_and_folder(tmp_path, monkeypatch):
    kinds = []
    real_fsync = os.fsync

    def spy(fd):
        kinds.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    ckpt.atomic_write_text(tmp_path / "sub" / "x.json", "{}\n")
    assert kinds == ["file", "dir"]  # the data, then the rename
    assert (tmp_path / "sub" / "x.json").read_text() == "{}\n"
    assert os.listdir(tmp_path / "sub") == ["x.json"]
    assert stat.S_IMODE((tmp_path / "sub" / "x.json").stat().st_mode) == 0o666 & ~ckpt._UMASK


class _DiskFillsUp:
    """A real temp file whose disk is full after ``room`` bytes (the write raises ENOSPC)."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.f.__exit__(*exc)


def test_disk_full_inside_torch_save_is_reported_as_disk_full(tiny_ckpt, tmp_path, monkeypatch):
    """torch.save swallows the OSError of its file's write ("RuntimeError: unexpected pos ..."):
    the checkpoint writer still reports the disk, names the file and keeps the old one."""
    last = Path(shutil.copy(tiny_ckpt, tmp_path / "last.pt"))
    before = sha1(last)
    ck = ckpt.load(last)
    state = {k: ck[k] for k in ("config", "step", "nets", "ema", "optim", "rng", "extra")}
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, mode: _DiskFillsUp(real_fdopen(fd, mode), 300_000))
    with pytest.raises(WriteFailed) as ei:
        ckpt.save(last, **{**state, "step": 99})
    monkeypatch.undo()
    assert str(ei.value) == f"cannot write {last}: No space left on device; the previous version (if any) is intact"
    assert ei.value.errno == errno.ENOSPC and ei.value.filename == str(last)
    assert sha1(last) == before and os.listdir(tmp_path) == ["last.pt"]


def _fail_writes(monkeypatch, where: str):
    """Make the step-4 checkpoint fail: ``last`` = disk full half-way through last.pt (the first
    file a save writes); ``step`` = the rename of step_0000004.pt fails (last.pt already at 4)."""
    if where == "last":
        real = ckpt.atomic_torch_save

        def full_disk(obj, path):
            if Path(path).name == "last.pt" and obj["step"] == 4:
                def half_then_enospc(f):
                    f.write(b"\0" * 100_000)
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

                return ckpt.atomic_write(path, half_then_enospc)
            return real(obj, path)

        monkeypatch.setattr(ckpt, "atomic_torch_save", full_disk)
    else:
        real_replace = os.replace

        def failing_replace(src, dst, *a, **kw):
            if Path(dst).name == "step_0000004.pt":
                raise OSError(errno.EIO, os.strerror(errno.EIO), str(dst))
            return real_replace(src, dst, *a, **kw)

        monkeypatch.setattr(os, "replace", failing_replace)


@pytest.mark.parametrize("where", ["last", "step"])
def test_failed_checkpoint_write_stops_cleanly_and_resumes(capsys, synth_dir, ref_run, tmp_path, monkeypatch,
                                                           where):
    run = tmp_path / "run"
    _fail_writes(monkeypatch, where)
    rc, out, err = run_cli(capsys, *train_argv(synth_dir, run, *REF_SETS))
    monkeypatch.undo()
    assert rc == 2 and out == ""
    line = one_error_line(err)
    assert "could not write checkpoint" in line and "at step 4" in line and "--resume" in line
    if where == "last":
        assert f"{run / 'last.pt'} at step 4 (No space left on device)" in line
        assert f"last good checkpoint: {run / 'step_0000002.pt'}" in line
        assert ckpt.load(run / "last.pt")["step"] == 2  # the previous checkpoint is intact
    else:
        assert f"{run / 'step_0000004.pt'} at step 4 (Input/output error)" in line
        assert f"last good checkpoint: {run / 'last.pt'} (step 4)" in line
        assert ckpt.load(run / "last.pt")["step"] == 4
    assert not (run / "step_0000004.pt").exists()
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")], "temp file left behind"

    # the run continues from there and ends where an uninterrupted run ends
    rc, _, err = run_cli(capsys, "train", "--resume", "--out", run, "--quiet")
    assert rc == 0, err
    assert_same_state(ref_run / "last.pt", run / "last.pt", 6)
    assert_same_state(ref_run / "step_0000004.pt", run / "step_0000004.pt", 4)  # restored on resume
    assert metric_rows(run) == metric_rows(ref_run)


def test_disk_errors_outside_checkpoints_are_one_line(capsys, tiny_ckpt, tmp_path, monkeypatch):
    """Any write the machine refuses (full, read-only, no permission) is the user's, not a bug."""
    from fgtool.io import images

    def no_room(*a, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "s.png"))

    monkeypatch.setattr(images.Image.Image, "save", no_room)
    rc, out, err = run_cli(capsys, "sample", "--ckpt", tiny_ckpt, "--out", tmp_path / "s.png")
    assert rc == 2 and out == ""
    assert f"{tmp_path / 's.png'}: No space left on device" in one_error_line(err)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_real_file_size_limit_stops_training_in_one_line(synth_dir, tmp_path):
    """No monkeypatching: the kernel refuses the write (RLIMIT_FSIZE, EFBIG) in a real process."""
    import resource

    run = tmp_path / "run"

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))  # 1 MiB: a checkpoint is ~10

    argv = [sys.executable, "-m", "fgtool", *map(str, train_argv(synth_dir, run, "train.steps=4",
                                                                 "train.sample_every=100"))]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, preexec_fn=limit)
    assert p.returncode == 2 and p.stdout == "", p.stderr[-3000:]
    line = one_error_line(p.stderr)
    assert f"could not write checkpoint {run / 'last.pt'} at step 2 (File too large)" in line
    assert "last good checkpoint: none (no checkpoint yet)" in line
    # no .pt, no .tmp (.lock: the run folder's lock file, released when the process ended)
    assert sorted(x.name for x in run.iterdir()) == [".lock", "config.json", "metrics.jsonl"]


# ----------------------------------------------------------------------------- user data


def _user_folder(folder: Path) -> Path:
    (folder / "photos" / "2023").mkdir(parents=True)
    (folder / "notes.txt").write_text("precious\n")
    (folder / ".hidden").write_text("also mine\n")
    (folder / "model.pt").write_bytes(b"someone else's weights")
    Image.new("RGB", (8, 8)).save(folder / "photos" / "2023" / "a.png")
    os.symlink(folder / "notes.txt", folder / "link.txt")
    return folder


@pytest.mark.parametrize("resume", [False, True])
def test_out_with_user_files_is_refused_and_untouched(capsys, synth_dir, tmp_path, resume):
    out = _user_folder(tmp_path / "mine")
    before = snapshot(out)
    argv = ["train", "--out", out, "--quiet"] + (["--resume"] if resume else
                                                 ["--data", synth_dir, "--recipe", TINY])
    rc, _, err = run_cli(capsys, *argv)
    assert rc == 2
    line = one_error_line(err)
    assert ("nothing to resume" if resume else "is not empty; pass --resume") in line and str(out) in line
    assert snapshot(out) == before


def test_out_with_a_foreign_config_json_is_refused(capsys, synth_dir, tmp_path):
    out = _user_folder(tmp_path / "project")
    (out / "model.pt").unlink()
    (out / "config.json").write_text('{"my": "settings"}\n')
    before = snapshot(out)
    rc, _, err = run_cli(capsys, *train_argv(synth_dir, out, "train.steps=1", "train.sample_every=100"))
    assert rc == 2 and "is not empty" in err
    assert snapshot(out) == before


def test_a_run_that_died_before_its_first_checkpoint_starts_again(capsys, synth_dir, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    cfg = api.resolve_config("finegan", str(synth_dir), str(TINY), ["train.steps=2", "train.sample_every=100"])
    (run / "config.json").write_text(cfg.to_json() + "\n")
    (run / ".last.pt.dead.tmp").write_bytes(b"half")  # killed during its first save
    rc, out, err = run_cli(capsys, *train_argv(synth_dir, run, "train.steps=2", "train.sample_every=100"))
    assert rc == 0, err
    assert json.loads(out)["step"] == 2 and not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp"))


# Every place the package deletes something; each must be a file fgtool itself wrote.
DELETIONS = {
    ("checkpoint.py", "os.unlink(tmp)"),  # its own temp file after a failed write
    ("io/images.py", "tmp.unlink()"),  # ditto (grids, images)
    ("io/gif.py", "tmp.unlink()"),  # ditto (GIFs)
    ("train/trainer.py", "f.unlink(missing_ok=True)"),  # step_*.pt beyond train.keep; own stale temp files
    ("train/trainer.py", "metrics_path.unlink()"),  # metrics.jsonl of a run restarted from step 0
    ("data/synth.py", "shutil.rmtree(out / sub, ignore_errors=True)"),  # images/ of a previous synth output
    ("metrics/removal.py", "shutil.rmtree(tmp, ignore_errors=True)"),  # its own mkdtemp of rendered backgrounds
}


def test_no_unexpected_deletion_in_the_package():
    pattern = re.compile(r"rmtree|\.unlink\(|os\.remove\(|os\.rmdir\(|\.rmdir\(|os\.removedirs|send2trash")
    found = set()
    pkg = ROOT / "fgtool"
    for f in sorted(pkg.rglob("*.py")):
        for line in f.read_text().splitlines():
            code = line.split("#", 1)[0].strip()
            if pattern.search(code):
                found.add((f.relative_to(pkg).as_posix(), code))
    unexpected = found - DELETIONS
    assert not unexpected, f"new deletion(s): review that they only touch fgtool's own files: {unexpected}"


# ----------------------------------------------------------------------------- non-finite losses


def _nan_at(monkeypatch, method: str, part: str, step: int) -> dict:
    """Make ``FineGAN.<method>``'s ``part`` NaN from training step ``step`` on (1-based)."""
    calls = {"n": 0}
    real = getattr(FineGAN, method)

    def wrapped(self, *a, **kw):
        out = real(self, *a, **kw)
        calls["n"] += 1
        if calls["n"] >= step:
            out = {**out, part: out[part] * float("nan")}
            if part != "loss" and method != "_loss_d":
                out["loss"] = out["loss"] + out[part]
        return out

    monkeypatch.setattr(FineGAN, method, wrapped)
    return calls


@pytest.mark.parametrize("method, part, needle", [
    ("_loss_g", "info_c", "in step 3, phase G (G/loss, info_c)"),
    ("_loss_d", "d_bg_real", "in step 3, phase D (d_bg_real)"),
])
def test_non_finite_loss_names_phase_and_part(capsys, synth_dir, ref_run, tmp_path, monkeypatch, method, part,
                                              needle):
    run = tmp_path / "run"
    _nan_at(monkeypatch, method, part, step=3)
    rc, out, err = run_cli(capsys, *train_argv(synth_dir, run, *REF_SETS))
    monkeypatch.undo()
    assert rc == 2 and out == ""
    line = one_error_line(err)
    assert "loss became non-finite" in line and needle in line, line
    assert f"last good checkpoint: {run / 'step_0000002.pt'}" in line
    assert ckpt.load(run / "last.pt")["step"] == 2
    assert sorted(p.name for p in run.glob("*.pt")) == ["last.pt", "step_0000002.pt"]
    # the last good checkpoint is a real resume point: same end as an uninterrupted run
    rc, _, err = run_cli(capsys, "train", "--resume", "--out", run, "--quiet")
    assert rc == 0, err
    assert_same_state(ref_run / "last.pt", run / "last.pt", 6)


def test_non_finite_is_a_user_error_class():
    assert issubclass(NonFiniteLoss, FgtoolError) and issubclass(WriteFailed, FgtoolError)
    assert issubclass(WriteFailed, OSError)  # code that tolerates failed writes still does


# ----------------------------------------------------------------------------- determinism


def test_same_seed_same_training_run(synth_dir, ref_run, tmp_path):
    again = tmp_path / "again"
    api.train("finegan", str(synth_dir), str(TINY), REF_SETS, str(again), progress=False)
    for name in ("step_0000002.pt", "step_0000004.pt", "last.pt"):
        assert_same_state(ref_run / name, again / name, int(name[5:12]) if name != "last.pt" else 6)
    assert metric_rows(again) == metric_rows(ref_run)
    # and a different seed is a different run (the comparison can fail)
    other = tmp_path / "other"
    api.train("finegan", str(synth_dir), str(TINY), ["train.steps=1", "train.sample_every=100", "train.seed=1"],
              str(other), progress=False)
    a, b = ckpt.load(ref_run / "step_0000002.pt"), ckpt.load(other / "last.pt")
    assert not torch.equal(a["nets"]["G"][next(iter(a["nets"]["G"]))], b["nets"]["G"][next(iter(b["nets"]["G"]))])


def test_same_seed_same_sample_grid_bytes(capsys, ref_run, tmp_path):
    files = {}
    for tag, seed in (("a", 3), ("b", 3), ("c", 4)):
        rc, out, err = run_cli(capsys, "sample", "--ckpt", ref_run / "last.pt", "--out", tmp_path / tag / "s.png",
                               "--seed", seed, "--n", 16, "--json")
        assert rc == 0, err
        files[tag] = {Path(p).name: Path(p).read_bytes() for p in json.loads(out)["files"].values()}
    assert len(files["a"]) >= 2 and files["a"] == files["b"]  # the grid and every named grid, byte for byte
    assert files["a"]["s.png"] != files["c"]["s.png"]
