"""What users expect of a command line: -h, --version, completion, help text and a word for every
option, results on stdout, train --dry-run, fgtool export, and --ckpt defaulting to the newest
run under runs/ that can do the command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
import torch
import typer.main
from conftest import ROOT, TINY, one_error_line, run_cli, run_json
from guard_helpers import tiny_ckpt

import fgtool
from fgtool import api, cli, mixing, registry
from fgtool.loading import load
from fgtool.train import precision


def _commands():
    """(path, click command) of every command, the groups' subcommands included."""
    out = []

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, [*path, name])
        else:
            out.append((path, cmd))

    walk(typer.main.get_command(cli.app), [])
    return out


COMMANDS = _commands()


def test_the_walk_sees_every_command():
    assert sorted(" ".join(p) for p, _ in COMMANDS) == sorted(
        ["train", "sample", "cluster", "eval", "gif", "mix", "segment", "export", "info", "models", "recipes",
         "version", "data synth"])


@pytest.mark.parametrize("path, cmd", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_option_has_a_help_text_and_a_word_for_its_value(path, cmd):
    for p in cmd.params:
        assert (p.help or "").strip(), f"fgtool {' '.join(path)} {p.opts[0]} has no help text"
        assert p.opts[0].startswith("--"), p.opts
        if not p.is_flag:  # a value option names its value with a word or its choices, never a type
            assert p.metavar is not None or get_args(_annotation(cmd, p.name)), (path, p.opts)


def _annotation(cmd, name):
    import typing

    return typing.get_type_hints(cmd.callback).get(name)


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=" ".join)
def test_dash_h_is_help_and_no_option_shows_a_python_type(path, capsys):
    rc, long_, _ = run_cli(capsys, *path, "--help")
    rc2, short, _ = run_cli(capsys, *path, "-h")
    assert rc == rc2 == 0 and short == long_ and long_.startswith(f"Usage: fgtool {' '.join(path)} ")
    for bad in ("<str>", "<int>", "<float>", "<list", "TEXT", "INTEGER"):
        assert bad not in long_, (path, bad)


def test_choices_are_listed_in_help_and_match_the_commands(capsys):
    from fgtool.commands.segment import FILL, REFINE, TTA

    assert get_args(cli.Refine) == REFINE and get_args(cli.Tta) == TTA and get_args(cli.Fill) == FILL
    assert set(get_args(cli.Baseline)) == set(api.BASELINES)
    assert get_args(cli.Factor) == mixing.FACTORS and get_args(cli.MixMode) == mixing.MODES
    for name in registry.names():
        assert name in cli.MODELS
    _, out, _ = run_cli(capsys, "segment", "-h")
    assert "--refine <none|grabcut>" in out and "--split <train|test>" in out
    rc, out, err = run_cli(capsys, "segment", "--data", "x", "--refine", "sharp")
    assert rc == 2 and out == "" and "'sharp' is not one of 'none', 'grabcut'" in one_error_line(err)


def test_version_option_and_command(capsys):
    for argv in (["--version"], ["-V"], ["version"]):
        rc, out, err = run_cli(capsys, *argv)
        assert (rc, out, err) == (0, fgtool.__version__ + "\n", "")


def _fgtool(*argv, cwd=None, env=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "fgtool", *map(str, argv)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)


def test_shell_completion_script_and_answers():
    # a shell is named, not detected: a batch job or CI may run without a shell among its parents
    p = _fgtool("--show-completion", "bash", env={"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"})
    assert p.returncode == 0 and "_FGTOOL_COMPLETE=complete_bash" in p.stdout
    p = _fgtool(env={"_FGTOOL_COMPLETE": "complete_bash", "COMP_WORDS": "fgtool sa", "COMP_CWORD": "1"})
    assert p.returncode == 0 and p.stdout.split() == ["sample"]
    p = _fgtool(env={"_FGTOOL_COMPLETE": "complete_bash", "COMP_WORDS": "fgtool segment --re",
                     "COMP_CWORD": "2"})
    assert sorted(p.stdout.split()) == ["--refine", "--remove-object"]


def test_models_listing_goes_to_stdout_one_line_per_model():
    p = _fgtool("models")  # stdout is a pipe here: tab-separated lines, as `| grep` wants them
    assert p.returncode == 0 and p.stderr == ""
    rows = dict(line.split("\t") for line in p.stdout.splitlines())
    assert sorted(rows) == registry.names()
    assert rows["finegan"] == "train, sample, gif, cluster"
    assert rows["mixnmatch"] == ", ".join(registry.capabilities("mixnmatch"))


# ----------------------------------------------------------------------------- train --dry-run


def test_dry_run_scans_the_data_and_writes_nothing(capsys, synth_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = run_json(capsys, "train", "--model", "finegan", "--data", synth_dir, "--recipe", TINY, "--dry-run")
    assert res["data"] == {"root": str(synth_dir), "layout": "cub", "images": 48, "classes": 6, "boxes": 48,
                           "masks": 48}
    assert res["out"] == str(Path("runs") / "finegan") and res["model"] == "finegan"
    assert res["device"] == ("cpu" if not torch.cuda.is_available() else res["device"])
    assert (res["precision"], res["precision_from"], res["steps"]) == ("no", "train.precision", 4)  # tiny: fp32
    assert res["config"]["model"]["ngf"] == 8
    assert list(tmp_path.iterdir()) == []
    # without --json: a table of the same numbers on stdout, and no config
    rc, out, err = run_cli(capsys, "train", "--model", "finegan", "--data", synth_dir, "--recipe", TINY,
                           "--dry-run")
    rows = dict(line.split("\t") for line in out.splitlines())
    assert rc == 0 and err == "" and rows["data.images"] == "48" and rows["data.classes"] == "6"
    assert rows["device"] == res["device"] and "config.model.ngf" not in rows


@pytest.mark.parametrize("bf16", [True, False])
def test_dry_run_reports_the_precision_auto_resolves_to(capsys, synth_dir, monkeypatch, bf16):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setattr(precision, "device_has_bf16", lambda: bf16)
    res = run_json(capsys, "train", "--model", "finegan", "--data", synth_dir, "--recipe", TINY, "--set",
                   "train.precision=auto", "--out", "never", "--dry-run")
    assert (res["precision"], res["precision_from"]) == ("bf16" if bf16 else "no", "auto")
    assert res["config"]["train"]["precision"] == "auto"


def test_dry_run_refuses_a_missing_data_folder_and_too_few_images(capsys, synth_dir, tmp_path):
    rc, out, err = run_cli(capsys, "train", "--model", "finegan", "--data", tmp_path / "gone", "--dry-run")
    assert rc == 2 and out == "" and f"data folder {tmp_path / 'gone'} does not exist" in one_error_line(err)
    rc, out, err = run_cli(capsys, "train", "--model", "finegan", "--data", synth_dir, "--recipe", TINY,
                           "--set", "train.batch_size=64", "--out", tmp_path / "r", "--dry-run")
    assert rc == 2 and "only 48 images" in one_error_line(err)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- --ckpt default and export


@pytest.fixture(scope="module")
def user(synth_dir, tmp_path_factory):
    """A user's folder after `fgtool train --model mixnmatch --data DATA` (the default --out)."""
    home = tmp_path_factory.mktemp("user")
    cwd = os.getcwd()
    os.chdir(home)
    try:
        from fgtool.cli import main

        rc = main(["train", "--model", "mixnmatch", "--data", str(synth_dir), "--recipe", str(TINY), "--quiet",
                   "--set", "train.sample_every=100"])
    finally:
        os.chdir(cwd)
    assert rc == 0 and (home / "runs" / "mixnmatch" / "last.pt").is_file()
    return home


def _refs(synth_dir):
    imgs = sorted((synth_dir / "images").rglob("*.png"))
    return ["--bg", imgs[0], "--shape", imgs[7], "--texture", imgs[20]]


def test_mix_without_ckpt_uses_the_run_train_just_made(capsys, user, synth_dir, monkeypatch):
    monkeypatch.chdir(user)
    rc, out, err = run_cli(capsys, "mix", *_refs(synth_dir), "--out", "m.png", "--json")
    assert rc == 0
    assert err == "fgtool: using runs/mixnmatch/last.pt (the newest run under runs/ that can mix)\n"
    assert json.loads(out)["checkpoint"] == "runs/mixnmatch/last.pt" and (user / "m.png").is_file()


def test_ckpt_default_is_the_newest_run_that_can_do_the_command(capsys, user, synth_dir, tmp_path,
                                                                tmp_path_factory, monkeypatch):
    fg = tiny_ckpt("finegan", synth_dir, tmp_path_factory.mktemp("ckpts"))
    for name, src, mtime in (("mnm", user / "runs" / "mixnmatch", 1_000), ("fg", fg.parent, 2_000)):
        (tmp_path / "runs" / name).mkdir(parents=True)
        for f in ("config.json", "last.pt"):
            shutil.copy(src / f, tmp_path / "runs" / name / f)
        os.utime(tmp_path / "runs" / name / "last.pt", (mtime, mtime))
    (tmp_path / "runs" / "notes").mkdir()  # not a run: skipped
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_cli(capsys, "sample", "--out", "s.png", "--n", "2", "--no-grids", "--json")
    assert rc == 0 and json.loads(out)["checkpoint"] == "runs/fg/last.pt" and "runs/fg/last.pt" in err
    rc, out, err = run_cli(capsys, "mix", *_refs(synth_dir), "--out", "m.png", "--json")
    assert rc == 0 and json.loads(out)["checkpoint"] == "runs/mnm/last.pt"  # finegan cannot mix
    os.utime(tmp_path / "runs" / "mnm" / "last.pt", (3_000, 3_000))
    rc, out, err = run_cli(capsys, "gif", "--out", "w.gif", "--frames", "2", "--n", "1", "--json")
    assert rc == 0 and json.loads(out)["gif"] == "w.gif" and "runs/mnm/last.pt" in err
    # nothing can segment here: one line that says how to get a run that can
    rc, out, err = run_cli(capsys, "segment", "--data", synth_dir, "--out", "masks")
    line = one_error_line(err)
    assert rc == 2 and out == "" and "no run under runs/ has a model that can segment" in line
    assert "fgtool train --model ganseg --data DIR" in line and "ganseg, onegan" in line
    assert not (tmp_path / "masks").exists()


def test_no_runs_folder_says_how_to_train(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_cli(capsys, "cluster", "--data", tmp_path)
    line = one_error_line(err)
    assert rc == 2 and out == "" and "no --ckpt given and no runs/ folder here" in line
    assert "fgtool train --model c3gan --data DIR writes runs/c3gan" in line
    assert list(tmp_path.iterdir()) == []


def test_export_samples_the_same_as_the_checkpoint(capsys, user, synth_dir, tmp_path):
    ck = user / "runs" / "mixnmatch" / "last.pt"
    out = tmp_path / "mnm.safetensors"
    res = run_json(capsys, "export", "--ckpt", ck.parent, "--out", out)
    assert res["nets"] == ["G", "E", "S"] and res["ema"] == ["G"] and res["step"] == 4
    assert out.stat().st_size == res["bytes"] < ck.stat().st_size  # no discriminators, no optimisers

    a, b = load(ck, device="cpu"), load(out, device="cpu")
    assert b.cfg.to_dict() == a.cfg.to_dict() and b.step == a.step == 4
    with torch.no_grad():
        codes = a.backend.sample_codes(6, torch.Generator().manual_seed(3))
        xa = a.backend.generate(a.nets, codes)["image"]
        xb = b.backend.generate(b.nets, codes)["image"]
        assert torch.equal(xa, xb) and xa.std() > 0
        photos = xa[:2]
        ea, eb = a.backend.encode(a.nets, photos), b.backend.encode(b.nets, photos)
        assert all(torch.equal(ea[k], eb[k]) for k in ea)

    # the commands take it: the same grid and the same mix, pixel for pixel
    for name, src in (("c", ck), ("e", out)):
        assert run_cli(capsys, "sample", "--ckpt", src, "--out", tmp_path / f"{name}.png", "--no-grids",
                       "--seed", "5")[0] == 0
        assert run_cli(capsys, "mix", "--ckpt", src, *_refs(synth_dir), "--out", tmp_path / f"m{name}.png")[0] == 0
    assert (tmp_path / "c.png").read_bytes() == (tmp_path / "e.png").read_bytes()
    assert (tmp_path / "mc.png").read_bytes() == (tmp_path / "me.png").read_bytes()
    assert run_json(capsys, "info", "--ckpt", out)["model"] == "mixnmatch"


def test_export_refuses_to_write_over_its_input_and_bad_files_are_one_line(capsys, user, tmp_path):
    ck = user / "runs" / "mixnmatch" / "last.pt"
    before = ck.read_bytes()
    rc, out, err = run_cli(capsys, "export", "--ckpt", ck, "--out", ck)
    assert rc == 2 and "lies inside the input" in one_error_line(err) and ck.read_bytes() == before

    from safetensors.torch import save_file

    foreign = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    rc, out, err = run_cli(capsys, "sample", "--ckpt", foreign, "--out", tmp_path / "s.png")
    assert rc == 2 and "not an fgtool export" in one_error_line(err)
    cut = tmp_path / "cut.safetensors"
    assert run_cli(capsys, "export", "--ckpt", ck, "--out", cut)[0] == 0
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    rc, out, err = run_cli(capsys, "sample", "--ckpt", cut, "--out", tmp_path / "s.png")
    assert rc == 2 and "not a readable safetensors file" in one_error_line(err)
    assert not (tmp_path / "s.png").exists()


@pytest.mark.parametrize("model", ["finegan", "c3gan", "ganseg", "onegan"])
def test_every_model_exports_what_its_commands_use(model, synth_dir, tmp_path, tmp_path_factory):
    ck = tiny_ckpt(model, synth_dir, tmp_path_factory.mktemp("ckpts"))
    res = api.export(str(ck), str(tmp_path / "m.safetensors"))
    a, b = load(ck, device="cpu"), load(tmp_path / "m.safetensors", device="cpu")
    assert set(res["nets"]) == set(a.nets) == set(b.nets)  # every net the commands use, no discriminator
    assert set(res["nets"]) <= set(registry.get(model).inference_nets)
    with torch.no_grad():
        codes = a.backend.sample_codes(4, torch.Generator().manual_seed(1))
        x = a.backend.generate(a.nets, codes)["image"]
        assert torch.equal(x, b.backend.generate(b.nets, codes)["image"])
        if "segment" in a.backend.capabilities():
            assert torch.equal(a.backend.segment(a.nets, x), b.backend.segment(b.nets, x))
        if "cluster" in a.backend.capabilities():
            fa, fb = a.backend.cluster_features(a.nets, x), b.backend.cluster_features(b.nets, x)
            assert fa.keys() == fb.keys() and all(torch.equal(fa[k], fb[k]) for k in fa)


def test_a_bad_value_is_exactly_one_line_on_a_non_terminal_stderr(tmp_path):
    """Batch jobs read stderr from a file or a pipe: no progress bar may leave an empty line
    in front of the error (rich did, for every command with bars), and nothing is written."""
    r = _fgtool("data", "synth", "--out", tmp_path / "s", "--n", 0)
    assert r.returncode == 2
    assert r.stderr.splitlines() == ["fgtool: error: n must be >= 1, got 0"]
    assert not (tmp_path / "s").exists()
