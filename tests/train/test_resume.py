"""``--resume`` continues the same trajectory: a run stopped (cleanly or by SIGKILL) and resumed
ends bit-identical to an uninterrupted one (nets, EMA, optimisers, RNG, data order, step)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, TINY, same_checkpoints

from fgtool import api
from fgtool import checkpoint as ckpt
from fgtool.cli import main


def assert_same_state(a_path: Path, b_path: Path, step: int) -> None:
    a, _ = same_checkpoints(a_path, b_path, step)
    n_tensors = 0
    for sd in (*a["nets"].values(), *a["ema"].values()):
        n_tensors += len(sd)
    assert n_tensors > 100  # really compared the weights
    assert a["optim"]["G"]["state"] and a["ema"]["G"]


def snap(folder: Path) -> dict:
    """name -> (mtime_ns, sha1) of every file under folder."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def metric_rows(run: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "it_s"} for r in rows]  # it_s is wall-clock


# ----------------------------------------------------------------------------- clean stop + resume


@pytest.fixture(scope="module")
def ab_runs(synth_dir, tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("resume")
    a, b = base / "A", base / "B"
    api.train("finegan", str(synth_dir), str(TINY), ["train.steps=6"], str(a), progress=False)
    api.train("finegan", str(synth_dir), str(TINY), ["train.steps=4"], str(b), progress=False)
    assert ckpt.load(b / "last.pt")["step"] == 4
    res = api.train(out=str(b), resume=True, sets=["train.steps=6"], progress=False)
    return {"A": a, "B": b, "res": res}


def test_resume_equals_uninterrupted_run(ab_runs):
    a, b = ab_runs["A"], ab_runs["B"]
    assert ab_runs["res"]["step"] == 6
    assert_same_state(a / "last.pt", b / "last.pt", 6)
    assert_same_state(a / "step_0000004.pt", b / "step_0000004.pt", 4)
    ra, rb = metric_rows(a), metric_rows(b)
    assert [r["step"] for r in ra] == [r["step"] for r in rb] == [2, 4, 6]
    assert ra == rb
    assert sorted(p.name for p in b.glob("*.pt")) == sorted(p.name for p in a.glob("*.pt"))
    # samples from the two checkpoints are the same pixels
    ga = (a / "grids" / "samples_0000006.png").read_bytes()
    assert ga == (b / "grids" / "samples_0000006.png").read_bytes()


def test_resume_refuses_model_changes_and_leaves_the_run_alone(capsys, ab_runs, tmp_path):
    b = ab_runs["B"]
    before = snap(b)
    for argv, needle in [
        (["--set", "model.ngf=4"], "cannot change model.ngf when resuming"),
        (["--set", "data.size=64"], "cannot change data.size when resuming"),
        (["--recipe", TINY], "drop --recipe"),
        (["--model", "nogan"], "--model nogan but"),
    ]:
        capsys.readouterr()
        rc = main(["train", "--resume", "--out", str(b), "--quiet", *map(str, argv)])
        _, err = capsys.readouterr()
        assert rc == 2, argv
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("fgtool: error: ") and needle in lines[0], err
    assert snap(b) == before

    # a finished run resumed to the step it reached trains nothing and keeps every file
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(b), "--quiet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 6
    after = snap(b)
    assert {k: v[1] for k, v in after.items()} == {k: v[1] for k, v in before.items()}
    assert {k: v[0] for k, v in after.items() if k.endswith(".pt")} == \
        {k: v[0] for k, v in before.items() if k.endswith(".pt")}


@pytest.mark.parametrize("setup", ["empty", "missing", "no_out"])
def test_resume_without_a_run(capsys, tmp_path, setup):
    run = tmp_path / "run"
    if setup == "empty":
        run.mkdir()
    argv = ["train", "--resume", "--quiet"] + ([] if setup == "no_out" else ["--out", str(run)])
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fgtool: error: ")
    assert ("--resume needs --out" if setup == "no_out" else "nothing to resume") in lines[0]
    assert sorted(tmp_path.iterdir()) == ([run] if setup == "empty" else [])
    if setup == "empty":
        assert list(run.iterdir()) == []


# ----------------------------------------------------------------------------- last.pt and train.keep


def _pt_files(run: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_nlink) for p in sorted(run.glob("*.pt"))}


def test_last_is_the_newest_step_file_not_a_copy(capsys, synth_dir, tmp_path):
    """6 steps with a checkpoint each: the default train.keep=3 leaves steps 4-6, and last.pt is
    the same file as step_0000006.pt (one inode, two names): 3 checkpoints' worth of disk, not 4
    (or 7). --ckpt RUN/last.pt, --resume and the older step files keep working."""
    run = tmp_path / "run"
    api.train("finegan", str(synth_dir), str(TINY), ["train.steps=6", "train.ckpt_every=1", "train.sample_every=100"],
              str(run), progress=False)
    files = _pt_files(run)
    assert list(files) == ["last.pt", "step_0000004.pt", "step_0000005.pt", "step_0000006.pt"]
    assert files["last.pt"] == files["step_0000006.pt"] and files["last.pt"][1] == 2
    assert len({ino for ino, _ in files.values()}) == 3
    assert files["step_0000005.pt"][1] == 1
    assert json.loads((run / "config.json").read_text())["train"]["keep"] == 3

    capsys.readouterr()
    assert main(["info", "--ckpt", str(run / "last.pt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 6
    assert main(["sample", "--ckpt", str(run / "last.pt"), "--out", str(tmp_path / "s.png"), "--n", "4",
                 "--no-grids", "--json"]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0

    before6 = hashlib.sha1((run / "step_0000006.pt").read_bytes()).hexdigest()
    api.train(out=str(run), resume=True, sets=["train.steps=8"], progress=False)
    files = _pt_files(run)
    assert list(files) == ["last.pt", "step_0000006.pt", "step_0000007.pt", "step_0000008.pt"]
    assert files["last.pt"] == files["step_0000008.pt"]
    assert files["step_0000006.pt"][1] == 1  # last.pt was replaced, never written into
    assert hashlib.sha1((run / "step_0000006.pt").read_bytes()).hexdigest() == before6
    assert ckpt.load(run / "step_0000006.pt")["step"] == 6 and ckpt.load(run / "last.pt")["step"] == 8


def test_without_hard_links_last_is_an_equal_copy(synth_dir, tmp_path, monkeypatch):
    def no_links(src, dst):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    run = tmp_path / "run"
    api.train("finegan", str(synth_dir), str(TINY), ["train.steps=2", "train.ckpt_every=1", "train.sample_every=100"],
              str(run), progress=False)
    files = _pt_files(run)
    assert list(files) == ["last.pt", "step_0000001.pt", "step_0000002.pt"]
    assert {n for _, n in files.values()} == {1} and files["last.pt"] != files["step_0000002.pt"]
    assert (run / "last.pt").read_bytes() == (run / "step_0000002.pt").read_bytes()
    assert not list(run.glob(".*.tmp"))


def test_resume_restores_a_missing_step_file_as_a_link(synth_dir, tmp_path):
    """A kill after last.pt and before its step file: resume puts the step file back, linked."""
    run = tmp_path / "run"
    api.train("finegan", str(synth_dir), str(TINY), ["train.steps=2", "train.sample_every=100"], str(run),
              progress=False)
    (run / "step_0000002.pt").unlink()
    api.train(out=str(run), resume=True, sets=["train.steps=4"], progress=False)
    files = _pt_files(run)
    assert list(files) == ["last.pt", "step_0000002.pt", "step_0000004.pt"]
    assert ckpt.load(run / "step_0000002.pt")["step"] == 2 and files["last.pt"] == files["step_0000004.pt"]


# ----------------------------------------------------------------------------- SIGKILL + resume


N = 10
SETS = [f"train.steps={N}", "train.ckpt_every=2", "train.sample_every=1000", "data.workers=0", "train.keep=all"]


def test_sigkill_then_resume_equals_uninterrupted_run(synth_dir, tmp_path):
    run = tmp_path / "killed"
    argv = [sys.executable, "-m", "fgtool", "train", "--model", "finegan", "--data", str(synth_dir),
            "--recipe", str(TINY), "--out", str(run), "--quiet"]
    for s in SETS:
        argv += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.time() + 120
        while not (run / "step_0000004.pt").exists():
            assert proc.poll() is None, f"training ended early: {proc.stderr.read().decode()[-2000:]}"
            assert time.time() < deadline, "no step_0000004.pt after 120 s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    # killed between (or during) the writes of step_0000004.pt and last.pt, or a little later
    killed_at = ckpt.load(run / "last.pt")["step"]
    assert 2 <= killed_at < N, "the run finished before the kill; raise N"

    # a kill during a save leaves its temp file; make sure there is one whatever the timing
    (run / ".last.pt.k1ll3d.tmp").write_bytes(b"half a checkpoint")

    # resume in-process (same code path as the CLI)
    rc = main(["train", "--resume", "--out", str(run), "--quiet"])
    assert rc == 0

    ref = tmp_path / "ref"
    api.train("finegan", str(synth_dir), str(TINY), SETS, str(ref), progress=False)
    assert_same_state(ref / "last.pt", run / "last.pt", N)
    assert not [p.name for p in run.rglob("*.tmp")], "half-written files left behind"
    rows = metric_rows(run)
    steps = [r["step"] for r in rows]
    assert steps == list(range(2, N + 1, 2))  # every log row once, none duplicated by the replay
    assert rows == metric_rows(ref)
    assert sorted(p.name for p in run.glob("step_*.pt")) == [f"step_{s:07d}.pt" for s in range(2, N + 1, 2)]


# ----------------------------------------------------------------------------- SIGKILL at random points

RANDOM_N = 12
RANDOM_SETS = [f"train.steps={RANDOM_N}", "train.ckpt_every=1", "train.log_every=1", "train.sample_every=1000",
               "data.workers=0", "train.keep=all"]  # every checkpoint kept, to compare each one


def _newest_step(run: Path) -> int:
    return max((int(p.name[5:12]) for p in run.glob("step_*.pt")), default=0)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_at_random_points_then_resume_equals_uninterrupted_run(synth_dir, tmp_path, seed):
    """Three SIGKILLs per run at random moments (while importing, mid-step, mid-save), each followed
    by `fgtool train --resume` (or a fresh start if no checkpoint exists yet): every checkpoint of
    the run, and its metrics, equal those of an uninterrupted run with the same seed, bit for bit."""
    import random

    rng = random.Random(seed)
    sets = [*RANDOM_SETS, f"train.seed={seed}"]
    run = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    base = [sys.executable, "-m", "fgtool", "train", "--out", str(run), "--quiet"]
    fresh = base + ["--model", "finegan", "--data", str(synth_dir), "--recipe", str(TINY)]
    for s in sets:
        fresh += ["--set", s]
    kills: list[tuple[int, float]] = []  # (target step, delay) of kills that hit a running process
    for attempt in range(4):
        argv = base + ["--resume"] if (run / "last.pt").exists() else fresh
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        try:
            if attempt == 3:  # the last round runs to the end
                _, err = proc.communicate(timeout=300)
                assert proc.returncode == 0, err.decode()[-3000:]
                break
            start = _newest_step(run)
            target = rng.randint(start, RANDOM_N - 1)
            deadline = time.time() + 180
            # wait for the checkpoint of step `target` (at `start`: for this process's config.json)
            while (_newest_step(run) < target if target > start else not (run / "config.json").exists()):
                if proc.poll() is not None:
                    break
                assert time.time() < deadline, f"no progress to step {target} in 180 s"
                time.sleep(0.01)
            delay = rng.uniform(0.0, 0.5) if target > start else rng.uniform(0.0, 3.0)
            time.sleep(delay)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                assert proc.wait(timeout=30) == -signal.SIGKILL
                kills.append((target, round(delay, 3)))
            else:
                assert proc.returncode == 0, proc.stderr.read().decode()[-3000:]
                break
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stderr.close()
    assert len(kills) >= 2, f"too few kills landed: {kills}"

    ref = tmp_path / "ref"
    api.train("finegan", str(synth_dir), str(TINY), sets, str(ref), progress=False)
    assert_same_state(ref / "last.pt", run / "last.pt", RANDOM_N)
    names = [f"step_{s:07d}.pt" for s in range(1, RANDOM_N + 1)]
    assert sorted(p.name for p in run.glob("step_*.pt")) == names, f"kills: {kills}"
    for s, name in enumerate(names, 1):
        assert_same_state(ref / name, run / name, s)
    assert metric_rows(run) == metric_rows(ref)
    assert not [p.name for p in run.rglob("*.tmp")], "half-written files left behind"
