"""Bad inputs are user errors: exit code 2, one line on stderr, and nothing already on disk
is lost (a run's last good checkpoint survives NaNs and crashes mid-save)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY, image_folder, one_error_line, run_cli

from fgtool import api
from fgtool import checkpoint as ckpt
from fgtool.backends.finegan import FineGAN
from fgtool.errors import FgtoolError, NonFiniteLoss


def sha1(p: Path) -> str:
    return hashlib.sha1(p.read_bytes()).hexdigest()



def train_argv(data, out, *sets) -> list:
    argv = ["train", "--model", "finegan", "--data", data, "--recipe", TINY, "--out", out, "--quiet", "--json"]
    for s in sets:
        argv += ["--set", s]
    return argv


@pytest.fixture(scope="module")
def real_ckpt(synth_dir, tmp_path_factory) -> Path:
    """A real 2-step checkpoint (read-only for the tests)."""
    run = tmp_path_factory.mktemp("err") / "run"
    api.train("finegan", str(synth_dir), str(TINY), ["train.steps=2", "train.sample_every=100"], str(run),
              progress=False)
    return run / "last.pt"


# ----------------------------------------------------------------------------- data


def test_random_bytes_image_is_named(capsys, synth_dir, tmp_path):
    data = image_folder(synth_dir, tmp_path / "data", 16)
    (data / "a" / "x.jpg").write_bytes(random.Random(0).randbytes(600))
    rc, out, err = run_cli(capsys, *train_argv(data, tmp_path / "run"))
    assert rc == 2 and out == ""
    line = one_error_line(err)
    assert str(data / "a" / "x.jpg") in line and "data.skip_bad=true" in line
    assert not (tmp_path / "run").exists()  # refused before the run folder is made

    with pytest.warns(UserWarning, match="skipping 1 unreadable image"):
        rc, out, err = run_cli(capsys, *train_argv(data, tmp_path / "run2", "data.skip_bad=true",
                                                   "train.steps=2", "train.sample_every=100"))
    assert rc == 0, err
    res = json.loads(out)
    assert res["step"] == 2 and res["images"] == 16 and res["layout"] == "imagefolder"
    assert ckpt.load(tmp_path / "run2" / "last.pt")["step"] == 2


def _with_truncated_png(synth_dir, tmp_path) -> tuple[Path, Path]:
    # 15 good + 1 truncated = 2 batches of 8: epoch 0 draws every image, the bad one included
    data = image_folder(synth_dir, tmp_path / "data", 15)
    good = sorted((data / "a").glob("*.png"))[0].read_bytes()
    bad = data / "a" / "trunc.png"
    bad.write_bytes(good[: len(good) // 2])
    return data, bad


def test_truncated_png_is_named(capsys, synth_dir, tmp_path):
    data, bad = _with_truncated_png(synth_dir, tmp_path)
    rc, out, err = run_cli(capsys, *train_argv(data, tmp_path / "run"))
    assert rc == 2 and out == ""
    line = one_error_line(err)
    assert str(bad) in line and "truncated" in line


@pytest.mark.filterwarnings("ignore:skipping unreadable image")
def test_truncated_png_is_skipped_with_skip_bad(capsys, synth_dir, tmp_path):
    # the header is fine, so the scan keeps it; decoding fails mid-run and the loader
    # substitutes the next readable image instead of stopping the run
    data, _ = _with_truncated_png(synth_dir, tmp_path)
    rc, out, err = run_cli(capsys, *train_argv(data, tmp_path / "run", "data.skip_bad=true"))
    assert rc == 0, err
    assert json.loads(out)["images"] == 16
    assert (tmp_path / "run" / "last.pt").exists()


def test_empty_and_missing_data_folder(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    rc, _, err = run_cli(capsys, *train_argv(tmp_path / "empty", tmp_path / "run"))
    assert rc == 2 and "no images found in" in one_error_line(err)
    rc, _, err = run_cli(capsys, *train_argv(tmp_path / "missing", tmp_path / "run"))
    assert rc == 2 and f"data folder {tmp_path / 'missing'} does not exist" in one_error_line(err)
    assert not (tmp_path / "run").exists()


def test_fewer_images_than_the_batch(capsys, synth_dir, tmp_path):
    data = image_folder(synth_dir, tmp_path / "data", 5)
    rc, _, err = run_cli(capsys, *train_argv(data, tmp_path / "run"))
    assert rc == 2
    assert "only 5 images" in one_error_line(err) and "train.batch_size=8" in err
    rc, _, err = run_cli(capsys, *train_argv(synth_dir, tmp_path / "run", "train.batch_size=64"))
    assert rc == 2 and "only 48 images" in one_error_line(err)
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- checkpoints


def _bad_ckpt(kind: str, real: Path, tmp: Path) -> Path:
    p = tmp / f"{kind}.pt"
    if kind == "missing":
        pass
    elif kind == "random":
        p.write_bytes(random.Random(1).randbytes(4096))
    elif kind == "plain":
        torch.save({"a": 1}, p)
    elif kind == "truncated":
        b = real.read_bytes()
        p.write_bytes(b[: len(b) // 2])
    elif kind == "future":
        ck = torch.load(real, map_location="cpu", weights_only=True)
        ck["version"] = 999
        torch.save(ck, p)
    elif kind == "wrong_weights":  # header and config fine, weights do not fit
        ck = torch.load(real, map_location="cpu", weights_only=True)
        ck["ema"]["G"] = {k: (v[:1] if v.dim() else v) for k, v in ck["ema"]["G"].items()}
        torch.save(ck, p)
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "text":
        p.write_text("hi\n")
    return p


BAD = {
    "missing": "checkpoint not found",
    "random": "is not a readable fgtool checkpoint",
    "plain": "is not an fgtool checkpoint (no 'fgtool-checkpoint' header)",
    "truncated": "is not a readable fgtool checkpoint",
    "future": "has checkpoint format version 999; this fgtool reads up to 1",
    "wrong_weights": "weights do not fit the model",
    "empty": "is not a readable fgtool checkpoint",
    "text": "not a file torch.save wrote",  # said "(105)" before
}


@pytest.mark.parametrize("cmd", ["sample", "info"])
@pytest.mark.parametrize("kind", list(BAD))
def test_wrong_checkpoint(capsys, real_ckpt, tmp_path, kind, cmd):
    p = _bad_ckpt(kind, real_ckpt, tmp_path)
    extra = ["--out", tmp_path / "out" / "s.png"] if cmd == "sample" else ["--json"]
    rc, out, err = run_cli(capsys, cmd, "--ckpt", p, *extra)
    assert rc == 2 and out == ""
    line = one_error_line(err)
    assert BAD[kind] in line and p.name in line
    assert not (tmp_path / "out").exists()


def test_resume_from_a_foreign_checkpoint(capsys, real_ckpt, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _bad_ckpt("plain", real_ckpt, tmp_path).rename(run / "last.pt")
    before = sha1(run / "last.pt")
    rc, _, err = run_cli(capsys, "train", "--resume", "--out", run, "--quiet")
    assert rc == 2 and "is not an fgtool checkpoint" in one_error_line(err)
    assert sha1(run / "last.pt") == before and sorted(os.listdir(run)) == ["last.pt"]


# ----------------------------------------------------------------------------- NaN


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(synth_dir, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = FineGAN._loss_g

    def nan_from_step_2(self, nets, batch):  # G runs once per step: call k is step k
        out = real(self, nets, batch)
        if calls["n"] >= 2:
            out["loss"] = out["loss"] * float("nan")
        calls["n"] += 1
        return out

    monkeypatch.setattr(FineGAN, "_loss_g", nan_from_step_2)
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLoss) as ei:
        api.train("finegan", str(synth_dir), str(TINY),
                  ["train.steps=8", "train.ckpt_every=2", "train.log_every=1", "train.sample_every=100"],
                  str(run), progress=False)
    msg = str(ei.value)
    assert isinstance(ei.value, FgtoolError) and "\n" not in msg
    assert "G/loss" in msg and "before step 3" in msg
    assert f"last good checkpoint: {run / 'step_0000002.pt'}" in msg
    assert calls["n"] == 3

    ck = ckpt.load(run / "last.pt")
    assert ck["step"] == 2
    assert all(torch.isfinite(v).all() for sd in ck["nets"].values() for v in sd.values() if v.is_floating_point())
    assert sorted(p.name for p in run.glob("*.pt")) == ["last.pt", "step_0000002.pt"]
    assert api.load(run / "last.pt", device="cpu").step == 2
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]  # the NaN row is not logged


# ----------------------------------------------------------------------------- atomic saves


def test_crash_during_checkpoint_save_keeps_the_previous_file(real_ckpt, tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    last = run / "last.pt"
    shutil.copy(real_ckpt, last)
    before = sha1(last)
    ck = ckpt.load(last)
    state = {k: ck[k] for k in ("config", "step", "nets", "ema", "optim", "rng", "extra")}
    real_save = torch.save

    def crash_mid_write(obj, f, *a, **kw):
        f.write(real_ckpt.read_bytes()[:100_000])  # half a file reaches the disk ...
        raise OSError(28, "No space left on device")  # ... then the disk fills up

    monkeypatch.setattr(torch, "save", crash_mid_write)
    with pytest.raises(OSError, match="No space left"):
        ckpt.save(last, **{**state, "step": 99})
    monkeypatch.setattr(torch, "save", real_save)

    assert sha1(last) == before and ckpt.load(last)["step"] == 2
    assert sorted(os.listdir(run)) == ["last.pt"]  # no .last.pt.*.tmp left behind

    # and the text writer (config.json, clusters.json, metrics truncation) is atomic too
    (run / "config.json").write_text("old\n")

    def boom(*a, **kw):
        raise OSError(5, "I/O error")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        ckpt.atomic_write_text(run / "config.json", "new\n")
    monkeypatch.undo()
    assert (run / "config.json").read_text() == "old\n"
    assert sorted(os.listdir(run)) == ["config.json", "last.pt"]
