"""The command line end to end on the tiny recipe: exit codes, JSON on stdout, one-line errors
on stderr, and the files each command writes (with their contents checked)."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, fgtool_process, one_error_line, run_cli, run_json
from PIL import Image

import fgtool
from fgtool import api
from fgtool import checkpoint as ckpt
from fgtool.cli import main
from fgtool.commands.sample import _vary_grid
from fgtool.io.gif import read_gif

COMMANDS = [["train"], ["sample"], ["mix"], ["cluster"], ["segment"], ["eval"], ["gif"], ["info"], ["models"],
            ["data", "synth"]]





def snapshot(folder: Path) -> dict:
    """path -> (size, mtime_ns, sha1) of every file under folder."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[str(p.relative_to(folder))] = (st.st_size, st.st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest())
    return out


def png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.width > 0 and im.height > 0
        return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="module")
def trained(synth_dir, tmp_path_factory) -> dict:
    """One 4-step tiny run through the CLI, shared by the tests of this module (read-only)."""
    run = tmp_path_factory.mktemp("cli") / "run"
    argv = ["train", "--model", "finegan", "--data", str(synth_dir), "--recipe", str(TINY), "--out", str(run),
            "--quiet", "--json"]
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main(argv)
    assert rc == 0
    return {"run": run, "summary": json.loads(buf.getvalue()), "ckpt": run / "last.pt"}


# ----------------------------------------------------------------------------- help


@pytest.mark.parametrize("cmd", COMMANDS, ids=" ".join)
def test_help_of_every_command_has_an_example(cmd, capsys):
    rc, out, err = run_cli(capsys, *cmd, "--help")
    assert rc == 0, err
    assert "Example" in out
    assert "Usage:" in out and "--help" in out


def test_top_level_help_lists_every_command(capsys):
    rc, out, _ = run_cli(capsys, "--help")
    assert rc == 0
    for c in ("train", "sample", "mix", "cluster", "segment", "eval", "gif", "info", "models", "data"):
        assert f"  {c} " in out or f"  {c}\n" in out, c


def test_models_json_lists_finegan_capabilities(capsys):
    res = run_json(capsys, "models")
    fg = [r for r in res if r["name"] == "finegan"]
    assert fg and fg[0]["capabilities"] == ["train", "sample", "gif", "cluster"]


# ----------------------------------------------------------------------------- train end to end


def test_train_writes_a_complete_run(trained, synth_dir):
    run, s = trained["run"], trained["summary"]
    assert s["step"] == 4 and s["model"] == "finegan" and s["images"] == 48 and s["layout"] == "cub"
    assert s["checkpoint"] == str(run / "last.pt")

    # the resolved config landed, and it is the config the checkpoint describes
    cfg = json.loads((run / "config.json").read_text())
    want = json.loads(api.resolve_config("finegan", str(synth_dir), str(TINY), []).to_json())
    assert cfg == want
    assert cfg["data"]["size"] == 32 and cfg["model"]["name"] == "finegan"
    assert cfg["model"]["ngf"] == 8 and cfg["train"]["steps"] == 4 and cfg["data"]["root"] == str(synth_dir)
    assert ckpt.load(run / "last.pt")["config"] == cfg

    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]  # log_every = 2
    for r in rows:
        for k in ("G/loss", "D/loss", "info_c", "d_child_real"):
            assert isinstance(r[k], float) and math.isfinite(r[k]), (k, r)
    # the phi heads step every model.phi_every (4) iterations, from the first: once in these 4, in row 2's window
    assert [r["step"] for r in rows if "phi/loss" in r] == [2] and math.isfinite(rows[0]["phi/loss"])

    assert png(run / "loss_curve.png").std() > 0
    for name in ("samples", "layers"):
        assert png(run / "grids" / f"{name}_0000004.png").std() > 0
        assert png(run / f"{name}.png").std() > 0

    steps = {p.name: ckpt.load(p)["step"] for p in run.glob("*.pt")}
    assert steps == {"step_0000002.pt": 2, "step_0000004.pt": 4, "last.pt": 4}
    assert not list(run.glob(".*.tmp")) and not list(run.glob("*.tmp"))
    # atomic writes must not leave checkpoints owner-only (mkstemp's 0600)
    umask = os.umask(0)
    os.umask(umask)
    for name in ("last.pt", "config.json"):
        assert (run / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_dry_run_prints_config_and_creates_nothing(capsys, synth_dir, tmp_path):
    out_dir = tmp_path / "never"
    rc, out, err = run_cli(capsys, "train", "--model", "finegan", "--data", synth_dir, "--recipe", TINY,
                           "--out", out_dir, "--set", "train.steps=7", "--dry-run", "--json")
    assert rc == 0, err
    cfg = json.loads(out)["config"]
    assert cfg["train"]["steps"] == 7 and cfg["data"]["size"] == 32 and cfg["model"]["name"] == "finegan"
    assert cfg == json.loads(api.resolve_config("finegan", str(synth_dir), str(TINY), ["train.steps=7"]).to_json())
    assert not out_dir.exists()


@pytest.mark.parametrize("sets, needle", [
    (["model.ngf=abc"], "model.ngf: expected an integer"),
    (["train.nope=1"], "unknown key 'train.nope'"),
    (["train.steps=0"], "train.steps must be >= 1"),
    (["data.size=40"], "data.size must be a multiple of 16"),
    (["nodot=1"], "--set expects section.key=value"),
])
def test_bad_set_is_a_one_line_user_error(capsys, synth_dir, tmp_path, sets, needle):
    argv = ["train", "--model", "finegan", "--data", synth_dir, "--recipe", TINY, "--out", tmp_path / "r"]
    for s in sets:
        argv += ["--set", s]
    rc, out, err = run_cli(capsys, *argv)
    assert rc == 2
    line = one_error_line(err)
    assert needle in line
    assert out == ""
    assert not (tmp_path / "r").exists()


def test_unknown_set_key_lists_the_valid_keys(capsys, synth_dir, tmp_path):
    rc, _, err = run_cli(capsys, "train", "--data", synth_dir, "--recipe", TINY, "--out", tmp_path / "r",
                         "--set", "train.nope=1", "--dry-run")
    assert rc == 2
    line = one_error_line(err)
    assert "valid keys in [train]:" in line
    for k in ("steps", "batch_size", "ckpt_every", "ema_decay", "seed"):
        assert k in line


@pytest.mark.parametrize("text, needle", [
    ("[train]\nsteps = 2\nstepz = 3\n", "unknown key 'train.stepz'"),
    ("[trian]\nsteps = 2\n", "unknown section '[trian]'"),
    ("[model.finegan]\nngf = 8\nnfg = 4\n", "unknown key 'model.nfg'"),
    ("[model.nosuchmodel]\nx = 1\n", "unknown table [model.nosuchmodel]"),
    ("steps = 2\n", "must be a [section]"),
    ("[train\nsteps = 2\n", "is not valid TOML"),
])
def test_bad_recipe_is_a_one_line_user_error(capsys, synth_dir, tmp_path, text, needle):
    recipe = tmp_path / "bad.toml"
    recipe.write_text(text)
    rc, out, err = run_cli(capsys, "train", "--model", "finegan", "--data", synth_dir, "--recipe", recipe,
                           "--out", tmp_path / "r", "--dry-run")
    assert rc == 2 and out == ""
    assert needle in one_error_line(err)


def test_missing_recipe_and_unknown_model(capsys, synth_dir, tmp_path):
    rc, _, err = run_cli(capsys, "train", "--data", synth_dir, "--recipe", tmp_path / "nope.toml", "--dry-run")
    assert rc == 2 and "recipe not found" in one_error_line(err)
    rc, _, err = run_cli(capsys, "train", "--model", "nogan", "--data", synth_dir, "--dry-run")
    from fgtool import registry

    assert rc == 2 and f"unknown model 'nogan'; available: {', '.join(registry.names())}" in one_error_line(err)


def test_non_empty_run_folder_is_refused_and_left_alone(capsys, trained, synth_dir):
    run = trained["run"]
    before = snapshot(run)
    rc, out, err = run_cli(capsys, "train", "--model", "finegan", "--data", synth_dir, "--recipe", TINY,
                           "--out", run, "--quiet")
    assert rc == 2 and out == ""
    line = one_error_line(err)
    assert "is not empty" in line and "--resume" in line
    assert snapshot(run) == before


def test_non_empty_foreign_folder_is_refused_and_left_alone(capsys, synth_dir, tmp_path):
    run = tmp_path / "mine"
    run.mkdir()
    (run / "notes.txt").write_text("precious\n")
    before = snapshot(run)
    rc, _, err = run_cli(capsys, "train", "--data", synth_dir, "--recipe", TINY, "--out", run, "--quiet")
    assert rc == 2 and "is not empty" in one_error_line(err)
    assert snapshot(run) == before


def test_out_that_is_a_file_is_a_user_error(capsys, synth_dir, tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    rc, _, err = run_cli(capsys, "train", "--data", synth_dir, "--recipe", TINY, "--out", f, "--quiet")
    assert rc == 2 and "is a file" in one_error_line(err)
    assert f.read_text() == "x"


# ----------------------------------------------------------------------------- sample


def test_sample_writes_every_grid(capsys, trained, tmp_path):
    out = tmp_path / "S" / "samples.png"
    res = run_json(capsys, "sample", "--ckpt", trained["ckpt"], "--out", out)
    assert res["step"] == 4 and res["n"] == 64 and res["fix"] == {} and res["vary"] is None
    names = {"samples", "layers", "fix_p_vary_c", "fix_c_vary_z", "fix_pc_vary_b"}
    assert set(res["files"]) == names
    for name in names:
        p = tmp_path / "S" / f"{name}.png"
        assert res["files"][name] == str(p)
        a = png(p)
        assert a.std() > 1.0, name  # not a constant picture
    main_grid = png(out)
    assert main_grid.shape[0] >= 8 * 32 and main_grid.shape[1] >= 8 * 32  # 64 samples, 8 per row

    # same checkpoint and seed: the same pixels
    again = tmp_path / "S2" / "samples.png"
    run_json(capsys, "sample", "--ckpt", trained["ckpt"], "--out", again, "--no-grids")
    assert np.array_equal(png(again), main_grid)
    assert sorted(p.name for p in again.parent.iterdir()) == ["samples.png"]


def test_sample_fix_parent_vary_child(capsys, trained, tmp_path):
    out = tmp_path / "p1.png"
    res = run_json(capsys, "sample", "--ckpt", trained["ckpt"], "--out", out, "--fix", "p=1", "--vary", "c",
                   "--no-grids")
    assert res["fix"] == {"p": 1} and res["vary"] == "c"
    assert png(out).std() > 1.0
    # the columns are the children of parent 1 (n_child 6, n_parent 2: c = 3, 4, 5), not all children
    m = api.load(trained["ckpt"], device="cpu")
    seen = {}
    gen = m.backend.generate
    m.backend.generate = lambda nets, codes: (seen.update(codes), gen(nets, codes))[1]
    with torch.no_grad():
        imgs, ncol, rows, cols = _vary_grid(m, torch.Generator().manual_seed(0), {"p": 1}, "c", 64)
    assert cols == ["c=3", "c=4", "c=5"] and ncol == 3
    assert imgs.shape[0] == ncol * len(rows)
    assert (seen["p"] == 1).all() and seen["c"].tolist()[:3] == [3, 4, 5]


@pytest.mark.parametrize("extra, needle", [
    (["--fix", "z=1"], "--fix z"),
    (["--fix", "p"], "--fix expects code=value"),
    (["--fix", "p=x"], "expected an integer"),
    (["--vary", "q"], "--vary q"),
    (["--fix", "c=99"], "code c must be in 0..5"),
])
def test_sample_bad_codes(capsys, trained, tmp_path, extra, needle):
    rc, out, err = run_cli(capsys, "sample", "--ckpt", trained["ckpt"], "--out", tmp_path / "x.png", *extra)
    assert rc == 2 and out == ""
    assert needle in one_error_line(err)


# ----------------------------------------------------------------------------- cluster and eval


def test_cluster_then_eval_agree(capsys, trained, synth_dir, tmp_path):
    cj = tmp_path / "C" / "clusters.json"
    # no --quiet: progress goes to stderr, stdout stays pure JSON
    res = run_json(capsys, "cluster", "--ckpt", trained["ckpt"], "--data", synth_dir, "--out", cj)
    k = res["k"]
    assert k == 6 and res["n"] == 48 and res["clusters"] == str(cj)
    doc = json.loads(cj.read_text())
    assert doc["k"] == k and doc["n"] == 48 and len(doc["items"]) == 48
    labels = {int(x.split()[0]): int(x.split()[1]) - 1
              for x in (synth_dir / "image_class_labels.txt").read_text().split("\n") if x.strip()}
    files = {int(x.split()[0]): x.split()[1] for x in (synth_dir / "images.txt").read_text().split("\n") if x.strip()}
    want_label = {str((synth_dir / "images" / files[i]).resolve()): labels[i] for i in files}
    assert {it["path"] for it in doc["items"]} == set(want_label)
    for it in doc["items"]:
        assert {"path", "cluster", "label"} <= set(it)
        assert 0 <= it["cluster"] < k
        assert it["label"] == want_label[it["path"]]
    assert len({it["cluster"] for it in doc["items"]}) > 1
    assert png(tmp_path / "C" / "clusters.png").std() > 0
    assert (tmp_path / "C" / "clusters_sheets").is_dir()
    m = res["metrics"]
    assert m["n"] == 48 and 0 <= m["nmi"] <= 1 and 0 <= m["acc"] <= 1

    ev = run_json(capsys, "eval", "--metric", "nmi,acc", "--pred", cj, "--data", synth_dir, "--quiet")
    assert ev["metrics"]["nmi"] == pytest.approx(m["nmi"], abs=1e-12)
    assert ev["metrics"]["acc"] == pytest.approx(m["acc"], abs=1e-12)
    assert "ari" not in ev["metrics"]

    # from the checkpoint directly: same features, same k-means seed -> same numbers
    ev2 = run_json(capsys, "eval", "--metric", "nmi,acc", "--ckpt", trained["ckpt"], "--data", synth_dir, "--quiet")
    assert ev2["k"] == 6
    assert ev2["metrics"]["nmi"] == pytest.approx(m["nmi"], abs=1e-9)
    assert ev2["metrics"]["acc"] == pytest.approx(m["acc"], abs=1e-9)


def test_eval_pixel_baseline(capsys, synth_dir):
    ev = run_json(capsys, "eval", "--metric", "nmi", "--baseline", "pixels", "--data", synth_dir, "--quiet")
    assert 0.0 <= ev["metrics"]["nmi"] <= 1.0
    assert ev["k"] == 6 and ev["metrics"]["n"] == 48
    assert "acc" not in ev["metrics"] and "ari" not in ev["metrics"]  # only what was asked for
    ev2 = run_json(capsys, "eval", "--metric", "acc,nmi", "--baseline", "pixels", "--data", synth_dir, "--quiet")
    assert ev2["metrics"]["nmi"] == ev["metrics"]["nmi"]  # same k-means seed
    assert 0.0 < ev2["metrics"]["acc"] <= 1.0


@pytest.mark.parametrize("extra, needle", [
    (["--metric", "nmi,wat"], "unknown metric wat"),
    (["--metric", "nmi"], "pass exactly one of --ckpt, --pred or --baseline"),
    (["--metric", "nmi", "--baseline", "colours"], "'colours' is not one of 'pixels', 'centre'"),
    (["--metric", "fid", "--baseline", "pixels"], "fid, kid and is need --ckpt"),
])
def test_eval_bad_arguments(capsys, synth_dir, extra, needle):
    rc, out, err = run_cli(capsys, "eval", "--data", synth_dir, "--quiet", *extra)
    assert rc == 2 and out == ""
    assert needle in one_error_line(err)


# ----------------------------------------------------------------------------- gif, info, capabilities


def test_gif_walks(capsys, trained, tmp_path):
    res = run_json(capsys, "gif", "--ckpt", trained["ckpt"], "--walk", "z", "--frames", "8", "--n", "2",
                   "--out", tmp_path / "z.gif")
    frames = read_gif(tmp_path / "z.gif")
    assert res["frames"] == 8 == frames.shape[0]  # 4 segments x 2 frames
    cell = 32 * 3  # 32 px samples are upscaled x3 (nearest) so the GIF is viewable
    assert frames.shape[1:] == (cell + 4, 2 * (cell + 2) + 2, 3)  # make_grid padding 2
    assert frames.std() > 1.0

    res = run_json(capsys, "gif", "--ckpt", trained["ckpt"], "--walk", "c", "--n", "2", "--out", tmp_path / "c.gif")
    frames = read_gif(tmp_path / "c.gif")
    assert res["frames"] == 6 == frames.shape[0]  # one frame per child code
    assert res["walk"] == "c"
    assert not np.array_equal(frames[0], frames[-1])

    rc, _, err = run_cli(capsys, "gif", "--ckpt", trained["ckpt"], "--walk", "w", "--out", tmp_path / "w.gif")
    assert rc == 2 and "--walk w" in one_error_line(err)
    assert not (tmp_path / "w.gif").exists()


def test_info(capsys, trained):
    res = run_json(capsys, "info", "--ckpt", trained["ckpt"])
    assert res["model"] == "finegan" and res["step"] == 4 and res["format_version"] == 1
    assert "cluster" in res["capabilities"] and "mix" not in res["capabilities"]
    assert set(res["params"]) == {"G", "Dbg", "Dp", "Dc", "phi_p", "phi_c"}
    assert all(v > 0 for v in res["params"].values())
    assert res["config"] == json.loads((trained["run"] / "config.json").read_text())
    # without --json a table on stdout: one tab-separated row per value when stdout is not a terminal
    rc, out, err = run_cli(capsys, "info", "--ckpt", trained["ckpt"])
    rows = dict(line.split("\t", 1) for line in out.splitlines())
    assert rc == 0 and err == "" and rows["model"] == "finegan" and rows["step"] == "4"
    assert rows["capabilities"] == "['train', 'sample', 'gif', 'cluster']" and rows["config.model.ngf"] == "8"
    # a run folder stands for its last.pt
    assert run_json(capsys, "info", "--ckpt", trained["run"])["step"] == 4


@pytest.mark.parametrize("cmd", [
    ["mix", "--out", "{tmp}/mix.png"],
    ["segment", "--data", "{data}", "--out", "{tmp}/masks"],
])
def test_finegan_cannot_mix_or_segment(capsys, trained, synth_dir, tmp_path, cmd):
    argv = [a.format(tmp=tmp_path, data=synth_dir) for a in cmd]
    rc, out, err = run_cli(capsys, argv[0], "--ckpt", trained["ckpt"], *argv[1:])
    assert rc == 2 and out == ""
    line = one_error_line(err)
    assert f"model 'finegan' cannot {argv[0]}" in line
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- real process


def test_subprocess_exit_codes_and_one_line_errors(trained, tmp_path):
    p = fgtool_process("sample", "--ckpt", tmp_path / "missing.pt", "--out", tmp_path / "s.png")
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.count("\n") == 1 and p.stderr.endswith("\n")
    assert p.stderr == f"fgtool: error: checkpoint not found: {tmp_path / 'missing.pt'}\n"

    # click usage errors follow the same contract (not a traceback with exit 1)
    p = fgtool_process("info", "--ckpt", trained["ckpt"], "--bogus")
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("fgtool: error: No such option: --bogus")

    p = fgtool_process("version")  # success: exit 0, the answer on stdout, nothing on stderr
    assert (p.returncode, p.stdout, p.stderr) == (0, fgtool.__version__ + "\n", "")


@pytest.mark.parametrize("argv, needle", [
    (["info"], "Missing option '--ckpt'"),
    (["nocommand"], "No such command 'nocommand'"),
    (["sample", "--ckpt", "x.pt", "--n", "abc"], "Invalid value for '--n'"),
])
def test_usage_errors_in_process(capsys, argv, needle):
    rc, out, err = run_cli(capsys, *argv)
    assert rc == 2 and out == ""
    assert needle in one_error_line(err)
