"""Nothing on disk is lost, and no input crashes: outputs never overwrite inputs, names from
data files stay in their folder, only regular files are replaced or read, one writer per run
folder, a resume notices changed data, every option is checked before any work, and an
interruption says where it stopped. Each refusal is exit 2, one line, and changes nothing."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY, image_folder, one_error_line, run_cli
from guard_helpers import Fifo, tiny_ckpt, tree

from fgtool import checkpoint as ckpt
from fgtool.data.datasets import scan
from fgtool.errors import FgtoolError
from fgtool.io.paths import check_output, member


@pytest.fixture(scope="module")
def ckpts(synth_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("guard-ckpts")
    return {m: tiny_ckpt(m, synth_dir, base) for m in ("finegan", "mixnmatch", "ganseg")}


def flat(synth_dir: Path, dest: Path, n: int = 12) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(sorted((synth_dir / "images").rglob("*.png"))[:n]):
        shutil.copy(f, dest / f"{i:03d}.png")
    return dest


def refused(capsys, root: Path, *argv, needle: str = "") -> str:
    """Run the CLI; assert exit 2, one error line (containing ``needle``) and ``root`` unchanged."""
    before = tree(root)
    rc, _, err = run_cli(capsys, *argv)
    assert rc == 2, err
    line = one_error_line(err)
    assert needle in line, line
    assert tree(root) == before
    return line


def train_argv(data, out, *sets, model="finegan") -> list:
    argv = ["train", "--model", model, "--data", data, "--recipe", TINY, "--out", out, "--quiet", "--json"]
    for s in sets:
        argv += ["--set", s]
    return argv


# ----------------------------------------------------------------------------- 1. outputs over inputs


def test_segment_out_equal_to_or_inside_data_is_refused(capsys, ckpts, synth_dir, tmp_path):
    photos = flat(synth_dir, tmp_path / "photos", 6)
    refused(capsys, tmp_path, "segment", "--ckpt", ckpts["ganseg"], "--data", photos, "--out", photos,
            "--quiet", needle="lies inside the input")
    refused(capsys, tmp_path, "segment", "--ckpt", ckpts["ganseg"], "--data", photos, "--out", photos / "m",
            "--quiet", needle="lies inside the input")
    cub = tmp_path / "cub"
    shutil.copytree(synth_dir, cub)
    refused(capsys, tmp_path, "segment", "--ckpt", ckpts["ganseg"], "--data", cub, "--out", cub / "images",
            "--quiet", needle="lies inside the input")
    # and a folder that holds the data
    refused(capsys, tmp_path, "segment", "--ckpt", ckpts["ganseg"], "--data", photos, "--out", tmp_path,
            "--quiet", needle="holds the input")


def test_images_txt_name_leaving_its_folder_is_refused(capsys, ckpts, synth_dir, tmp_path):
    cub = tmp_path / "data" / "cub"
    shutil.copytree(synth_dir, cub)
    victim = tmp_path / "other" / "x.png"
    victim.parent.mkdir()
    shutil.copy(next((synth_dir / "images").rglob("*.png")), victim)
    lines = (cub / "images.txt").read_text().splitlines()
    lines[0] = lines[0].split()[0] + " ../../../other/x.png"
    (cub / "images.txt").write_text("\n".join(lines) + "\n")
    refused(capsys, tmp_path, "segment", "--ckpt", ckpts["ganseg"], "--data", cub, "--out", tmp_path / "masks",
            "--quiet", needle="must stay inside")


def test_a_segment_name_through_a_symlink_out_of_out_is_refused(tmp_path):
    out = tmp_path / "masks"
    out.mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", out / "birds")
    with pytest.raises(FgtoolError, match="leads out of"):
        member(out, "birds/x.png", "mask name")
    assert member(out, "ok/x.png", "mask name") == out / "ok" / "x.png"


@pytest.mark.parametrize("name", ["../../x.png", "ABS"])
def test_mix_batch_out_leaving_out_is_refused(capsys, ckpts, synth_dir, tmp_path, name):
    ref = next((synth_dir / "images").rglob("*.png"))
    victim = tmp_path / "x.png"
    shutil.copy(ref, victim)
    name = str(victim) if name == "ABS" else name
    (tmp_path / "rows.csv").write_text(f"bg,shape,texture,pose,out\n{ref},{ref},{ref},{ref},{name}\n")
    refused(capsys, tmp_path, "mix", "--ckpt", ckpts["mixnmatch"], "--batch", tmp_path / "rows.csv",
            "--out", tmp_path / "mixes" / "sub", needle="must stay inside")


def test_train_out_inside_data_is_refused(capsys, synth_dir, tmp_path):
    data = flat(synth_dir, tmp_path / "photos", 12)
    refused(capsys, tmp_path, *train_argv(data, data / "run"), needle="lies inside the input")


def test_mix_out_over_its_reference_is_refused(capsys, ckpts, synth_dir, tmp_path):
    ref = tmp_path / "ref.png"
    shutil.copy(next((synth_dir / "images").rglob("*.png")), ref)
    refused(capsys, tmp_path, "mix", "--ckpt", ckpts["mixnmatch"], "--bg", ref, "--out", ref,
            needle="lies inside the input")


# ----------------------------------------------------------------------------- 2. non-regular outputs


def test_outputs_that_are_fifos_devices_or_symlinks_are_refused(capsys, ckpts, synth_dir, tmp_path):
    fifo = tmp_path / "c.json"
    os.mkfifo(fifo)
    refused(capsys, tmp_path, "cluster", "--ckpt", ckpts["finegan"], "--data", synth_dir, "--out", fifo,
            "--quiet", needle="is a FIFO; fgtool replaces only regular files")
    png = tmp_path / "s.png"
    os.mkfifo(png)
    refused(capsys, tmp_path, "sample", "--ckpt", ckpts["finegan"], "--out", png, needle="is a FIFO")
    link = tmp_path / "l.png"
    os.symlink(tmp_path / "target.png", link)
    refused(capsys, tmp_path, "sample", "--ckpt", ckpts["finegan"], "--out", link, needle="is a symlink")
    # a device node: never swapped for a file, whoever runs fgtool
    null = os.stat("/dev/null")
    rc, _, err = run_cli(capsys, "cluster", "--ckpt", ckpts["finegan"], "--data", synth_dir, "--out", "/dev/null",
                         "--quiet")
    assert rc == 2 and "is a device" in one_error_line(err)
    rc, _, err = run_cli(capsys, "sample", "--ckpt", ckpts["finegan"], "--out", "/dev/null")
    assert rc == 2 and "is a device" in one_error_line(err)
    after = os.stat("/dev/null")
    assert (after.st_mode, after.st_ino, after.st_rdev) == (null.st_mode, null.st_ino, null.st_rdev)


def test_atomic_writers_refuse_non_regular_targets(tmp_path):
    os.mkfifo(tmp_path / "f")
    for write in (lambda p: ckpt.atomic_write_text(p, "x"),):
        with pytest.raises(FgtoolError, match="FIFO"):
            write(tmp_path / "f")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


# ----------------------------------------------------------------------------- 3. one writer per run


def test_a_second_writer_is_refused_naming_the_holder(capsys, synth_dir, tmp_path):
    run = tmp_path / "run"
    assert run_cli(capsys, *train_argv(synth_dir, run, "train.steps=2"))[0] == 0
    fd = os.open(run / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a live training process holds
        os.ftruncate(fd, 0)
        os.write(fd, b"4242\n")
        before = tree(run)
        rc, _, err = run_cli(capsys, "train", "--resume", "--out", run, "--set", "train.steps=4", "--quiet")
        assert rc == 2 and "another fgtool process (PID 4242)" in one_error_line(err)
        assert tree(run) == before
    finally:
        os.close(fd)
    # the holder is gone (the OS released its lock): the stale lock file does not block
    rc, out, err = run_cli(capsys, "train", "--resume", "--out", run, "--set", "train.steps=4", "--quiet", "--json")
    assert rc == 0, err
    assert json.loads(out)["step"] == 4
    assert (run / ".lock").read_text().strip() == str(os.getpid())


# ----------------------------------------------------------------------------- 4. changed data


def test_resume_on_changed_data_is_refused_then_accepted_on_request(capsys, synth_dir, tmp_path):
    data = image_folder(synth_dir, tmp_path / "data", 16)
    run = tmp_path / "run"
    assert run_cli(capsys, *train_argv(data, run, "train.steps=2"))[0] == 0
    assert ckpt.load(run / "last.pt")["extra"]["data"]["images"] == 16
    shutil.copy(data / "a" / "001.png", data / "a" / "new.png")
    refused(capsys, tmp_path, "train", "--resume", "--out", run, "--set", "train.steps=4", "--quiet",
            needle="the data changed since")
    line = refused(capsys, tmp_path, "train", "--resume", "--out", run, "--set", "train.steps=4", "--quiet")
    assert "16 -> 17 images" in line and "data.allow_changed=true" in line
    rc, out, err = run_cli(capsys, "train", "--resume", "--out", run, "--set", "train.steps=4",
                           "--set", "data.allow_changed=true", "--quiet", "--json")
    assert rc == 0, err
    assert ckpt.load(run / "last.pt")["extra"]["data"]["images"] == 17
    # the consent was for that resume: it is not stored for the next one
    assert ckpt.load(run / "last.pt")["config"]["data"]["allow_changed"] is False
    (data / "a" / "new.png").rename(data / "a" / "renamed.png")
    line = refused(capsys, tmp_path, "train", "--resume", "--out", run, "--set", "train.steps=6", "--quiet")
    assert "other file names" in line


def test_a_run_folder_inside_flat_data_is_not_read_as_data(synth_dir, tmp_path):
    data = flat(synth_dir, tmp_path / "photos", 12)
    run = data / "run"  # made by an older fgtool, or moved there
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "metrics.jsonl").write_text("")
    flat(synth_dir, run / "grids", 4)
    with pytest.warns(UserWarning, match="ignoring run/, an fgtool run folder"):
        iset = scan(data)
    assert iset.layout == "flat" and len(iset) == 12


# ----------------------------------------------------------------------------- 5. flat with sub-folders


def test_flat_folder_with_an_image_subfolder_is_refused_naming_it(capsys, synth_dir, tmp_path):
    data = flat(synth_dir, tmp_path / "photos", 12)
    flat(synth_dir, data / "extra", 3)
    line = refused(capsys, tmp_path, *train_argv(data, tmp_path / "run"), needle="12 image(s) at its top")
    assert "extra" in line and "move the top-level images" in line


def test_flat_folder_with_an_empty_subfolder_is_flat_with_a_warning(synth_dir, tmp_path):
    data = flat(synth_dir, tmp_path / "photos", 12)
    (data / "empty").mkdir()
    with pytest.warns(UserWarning, match="ignoring sub-folders without images: empty"):
        iset = scan(data)
    assert iset.layout == "flat" and len(iset) == 12


# ----------------------------------------------------------------------------- 6. bad values


BAD_SETS = {
    "data.size=48": "data.size=48",
    "train.batch_size=1": "train.batch_size must be >= 2",
    "model.n_child=0": "model.n_child must be >= 1",
    "model.ngf=0": "model.ngf",
    "model.lr_g=nan": "model.lr_g must be finite",
    "model.lr_d=-1": "model.lr_d (a learning rate) must be > 0",
    "train.seed=-1": "train.seed must be in 0..",
    "train.ema_decay=5": "train.ema_decay must be in [0, 1]",
    "train.keep=-1": "train.keep must be >= 1 or \"all\"",
    "train.keep=0": "train.keep must be >= 1 or \"all\"",
    "train.threads=lots": "expected an integer or 'auto'",
    "data.crop_scale=inf": "data.crop_scale",
}


@pytest.mark.parametrize("dry", [False, True], ids=["train", "dry-run"])
@pytest.mark.parametrize("item", list(BAD_SETS))
def test_bad_values_are_one_line_for_train_and_dry_run(capsys, synth_dir, tmp_path, item, dry):
    argv = train_argv(synth_dir, tmp_path / "run", item) + (["--dry-run"] if dry else [])
    refused(capsys, tmp_path, *argv, needle=BAD_SETS[item])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv,needle", [
    (["gif", "--frames", "0"], "--frames must be in 1.."),
    (["gif", "--fps", "0"], "--fps must be in 1..100"),
    (["gif", "--n", "0"], "--n must be in 1.."),
    (["gif", "--seed", "-3"], "--seed must be in 0.."),
    (["sample", "--n", "0"], "--n must be in 1.."),
    (["sample", "--n", "99999999"], "--n must be in 1.."),
    (["sample", "--seed", "99999999999999999999"], "--seed must be in 0.."),
    (["sample", "--fix", "p=999"], "code p must be in 0.."),  # was a message about c
])
def test_bad_counts_are_one_line(capsys, ckpts, tmp_path, argv, needle):
    out = tmp_path / ("w.gif" if argv[0] == "gif" else "s.png")
    refused(capsys, tmp_path, argv[0], "--ckpt", ckpts["finegan"], "--out", out, *argv[1:], needle=needle)


def test_a_checkpoint_with_an_invalid_stored_size_is_one_line(capsys, ckpts, tmp_path):
    ck = torch.load(ckpts["finegan"], weights_only=True)
    cfg = json.loads(ck["config"])
    cfg["data"]["size"] = 48
    ck["config"] = json.dumps(cfg)
    bad = tmp_path / "bad.pt"
    torch.save(ck, bad)
    for cmd in (["sample", "--out", tmp_path / "s.png"], ["info"]):
        refused(capsys, tmp_path, cmd[0], "--ckpt", bad, *cmd[1:], needle="data.size=48")


# ----------------------------------------------------------------------------- 7. FIFOs never opened


def test_a_fifo_reference_is_refused_without_opening_it(capsys, ckpts, tmp_path):
    fifo = Fifo(tmp_path / "x.png")
    try:
        refused(capsys, tmp_path, "mix", "--ckpt", ckpts["mixnmatch"], "--bg", fifo.path,
                "--out", tmp_path / "m.png", needle="is a FIFO, not a regular file")
    finally:
        fifo.close()
    assert not fifo.opened


def test_a_fifo_in_a_data_folder_is_skipped_with_a_warning(capsys, ckpts, synth_dir, tmp_path):
    data = flat(synth_dir, tmp_path / "photos", 12)
    fifo = Fifo(data / "zz.png")
    try:
        with pytest.warns(UserWarning, match="not regular files"):
            iset = scan(data)
        assert len(iset) == 12
        with pytest.warns(UserWarning, match="not regular files"):
            rc, out, err = run_cli(capsys, "cluster", "--ckpt", ckpts["finegan"], "--data", data,
                                   "--out", tmp_path / "c.json", "--quiet", "--json")
        assert rc == 0, err
        assert json.loads(out)["n"] == 12
    finally:
        fifo.close()
    assert not fifo.opened


def test_a_file_output_is_named_for_what_it_holds(capsys, ckpts, synth_dir, tmp_path):
    """A GIF written to walk.mp4, a JSON to c.png, a safetensors file to m.pt: each is refused
    before anything runs, and an existing file of that name is left as it was."""
    keep = tmp_path / "walk.mp4"
    keep.write_bytes(b"a user's video")
    refused(capsys, tmp_path, "gif", "--ckpt", ckpts["finegan"], "--out", keep, "--frames", "2", "--n", "1",
            needle="written as .gif")
    refused(capsys, tmp_path, "cluster", "--ckpt", ckpts["finegan"], "--data", synth_dir, "--out",
            tmp_path / "c.png", "--quiet", needle="written as .json")
    refused(capsys, tmp_path, "export", "--ckpt", ckpts["finegan"], "--out", tmp_path / "m.pt",
            needle="written as .safetensors")
    refused(capsys, tmp_path, "sample", "--ckpt", ckpts["finegan"], "--out", tmp_path / "s.jpg",
            needle="sample writes PNG files")  # it made a folder named s.jpg
    assert keep.read_bytes() == b"a user's video"
    rc, _, err = run_cli(capsys, "gif", "--ckpt", ckpts["finegan"], "--out", tmp_path / "W.GIF", "--frames", "2",
                         "--n", "1")
    assert rc == 0, err  # the suffix's case does not matter
    assert (tmp_path / "W.GIF").read_bytes()[:6] == b"GIF89a"


# ----------------------------------------------------------------------------- 8. silent nonsense


def test_skip_bad_drops_an_image_that_fails_only_to_decode(capsys, synth_dir, ckpts, tmp_path):
    """A whole header and cut-off pixel data pass the scan. Training swaps such an image for the
    next one; segment, cluster and eval must drop it: its mask, cluster or score was another
    photo's, under its name."""
    data = image_folder(synth_dir, tmp_path / "data", 16)
    good = sorted((data / "a").glob("*.png"))[0].read_bytes()
    bad = data / "a" / "cut.png"
    bad.write_bytes(good[: len(good) // 2])
    with pytest.warns(UserWarning, match="skipping 1 image.s. that fail to decode"):
        rc, out, err = run_cli(capsys, "segment", "--ckpt", ckpts["ganseg"], "--data", data, "--out", tmp_path / "m",
                               "--quiet", "--json", "--skip-bad")
    assert rc == 0, err
    res = json.loads(out)
    assert res["n"] == 16 and not (tmp_path / "m" / "a" / "cut.png").exists()
    index = json.loads((tmp_path / "m" / "index.json").read_text())
    assert str(bad) not in {it["image"] for it in index["items"]}
    for argv in (["cluster", "--ckpt", ckpts["finegan"], "--data", data, "--out", tmp_path / "c.json", "--k", 2],
                 ["eval", "--metric", "nmi", "--baseline", "pixels", "--data", data],
                 # the centre floor: --skip-bad was not passed on, though the error asked for it
                 ["segment", "--baseline", "centre", "--fraction", "0.3", "--data", data, "--out", tmp_path / "cf"]):
        with pytest.warns(UserWarning, match="fail to decode"):
            rc, out, err = run_cli(capsys, *argv, "--quiet", "--json", "--skip-bad")
        assert rc == 0, err
    assert str(bad) not in (tmp_path / "c.json").read_text()




def test_too_few_images_for_the_models_clusters_names_the_default(capsys, ckpts, synth_dir, tmp_path):
    data = flat(synth_dir, tmp_path / "few", n=2)
    refused(capsys, tmp_path, "cluster", "--ckpt", ckpts["finegan"], "--data", data, "--out", tmp_path / "c.json",
            "--quiet", needle="2 images are too few for the model's")


def test_cluster_k_zero_is_refused(capsys, ckpts, synth_dir, tmp_path):
    refused(capsys, tmp_path, "cluster", "--ckpt", ckpts["finegan"], "--data", synth_dir, "--out",
            tmp_path / "c.json", "--k", "0", "--quiet", needle="--k must be >= 1")


def test_eval_pred_covering_part_of_the_data_warns_and_fractional_ids_are_refused(capsys, ckpts, synth_dir,
                                                                                  tmp_path):
    rc, _, err = run_cli(capsys, "cluster", "--ckpt", ckpts["finegan"], "--data", synth_dir, "--out",
                         tmp_path / "c.json", "--quiet")
    assert rc == 0, err
    doc = json.loads((tmp_path / "c.json").read_text())
    doc["items"] = doc["items"][:5]
    (tmp_path / "part.json").write_text(json.dumps(doc))
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        rc, out, err = run_cli(capsys, "eval", "--metric", "nmi", "--pred", tmp_path / "part.json",
                               "--data", synth_dir, "--quiet", "--json")
    assert rc == 0, err
    assert any("covers 5 of the 48 images" in str(w.message) for w in got)
    doc["items"][0]["cluster"] = 1.5
    (tmp_path / "frac.json").write_text(json.dumps(doc))
    refused(capsys, tmp_path, "eval", "--metric", "nmi", "--pred", tmp_path / "frac.json", "--data", synth_dir,
            "--quiet", needle="cluster id 1.5 is not a non-negative integer")


# ----------------------------------------------------------------------------- 9. interruption


def test_sigterm_ends_training_with_one_line_naming_the_resume(synth_dir, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "fgtool", "train", "--model", "finegan", "--data", str(synth_dir), "--recipe",
            str(TINY), "--out", str(run), "--quiet", "--set", "train.steps=100000", "--set", "train.ckpt_every=1",
            "--set", "train.sample_every=100000"]
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (run / "step_0000002.pt").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 128 + signal.SIGTERM, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    saved = ckpt.load(run / "last.pt")["step"]
    assert lines[0].startswith("fgtool: interrupted at step ")
    assert f"; last checkpoint step {saved}; resume: fgtool train --resume --out {run}" in lines[0]
    assert not [f for f in run.rglob("*.tmp")]


def test_ctrl_c_in_a_writer_leaves_no_temp_file(capsys, ckpts, synth_dir, tmp_path, monkeypatch):
    from PIL import Image

    real = Image.Image.save
    calls = []

    def interrupt(self, fp, *a, **k):
        calls.append(fp)
        if len(calls) == 2:  # mid-way through the sheets
            Path(fp).write_bytes(b"half")
            raise KeyboardInterrupt
        return real(self, fp, *a, **k)

    monkeypatch.setattr(Image.Image, "save", interrupt)
    rc, _, err = run_cli(capsys, "cluster", "--ckpt", ckpts["finegan"], "--data", synth_dir, "--out",
                         tmp_path / "c.json", "--quiet")
    assert rc == 130 and err.strip() == "fgtool: interrupted"
    assert not [f for f in tmp_path.rglob("*.tmp")]


def test_check_output_rules(tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    assert check_output(tmp_path / "o", [data], folder=True) == (tmp_path / "o").resolve()
    with pytest.raises(FgtoolError, match="lies inside"):
        check_output(data / "x.png", [data])
    with pytest.raises(FgtoolError, match="holds the input"):
        check_output(tmp_path, [data], folder=True)
    os.symlink(data, tmp_path / "alias")  # a symlink to the data is the data
    with pytest.raises(FgtoolError, match="lies inside"):
        check_output(tmp_path / "alias" / "m", [data], folder=True)


def test_an_interrupt_during_a_checkpoint_write_waits_for_it(tmp_path):
    """SIGTERM (or Ctrl-C) that arrives while a checkpoint is written is held until the file
    is complete, then ends the work: the file loads, and no temp file is left."""
    from fgtool.errors import Interrupted

    target = tmp_path / "last.pt"
    old = signal.signal(signal.SIGTERM, lambda signum, frame: (_ for _ in ()).throw(Interrupted("", signum)))
    try:
        def write(f):
            torch.save({"a": torch.zeros(1000)}, f)
            os.kill(os.getpid(), signal.SIGTERM)  # mid-write, as a real signal arrives
            time.sleep(0.05)
            f.write(b"")
        with pytest.raises(Interrupted):
            ckpt.atomic_write(target, write)
    finally:
        signal.signal(signal.SIGTERM, old)
    assert torch.load(target, weights_only=True)["a"].shape == (1000,)
    assert not list(tmp_path.glob("*.tmp"))
