"""Two CPU processes (torchrun, gloo): gradients are averaged so the ranks stay in step."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY

# about 20 s: two interpreters plus a gloo process group


def test_two_processes_train_in_sync(synth_dir, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed next to this python")
    out = tmp_path / "run"
    p = subprocess.run([str(torchrun), "--nproc_per_node", "2", "-m", "fgtool", "train", "--model", "finegan",
                        "--data", str(synth_dir), "--recipe", str(TINY), "--out", str(out), "--quiet", "--json"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    reports = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    assert len(reports) == 1  # only rank 0 reports
    res = json.loads(p.stdout[p.stdout.index("{"):])
    assert res["processes"] == 2 and res["step"] == 4
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["step"] == 4
    shutil.rmtree(out)


def _accelerate_bin() -> Path:
    acc = Path(sys.executable).with_name("accelerate")
    if not acc.exists():
        pytest.skip("accelerate's launcher not installed next to this python")
    return acc


@pytest.mark.slow
def test_accelerate_launch_cpu_two_processes(synth_dir, tmp_path):
    """`accelerate launch --cpu --num_processes 2 -m fgtool train` really trains on two processes
    (Accelerate alone would start one without mpirun) and leaves a checkpoint that samples."""
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([str(_accelerate_bin()), "launch", "--cpu", "--num_processes", "2", "-m", "fgtool", "train",
                        "--model", "finegan", "--data", str(synth_dir), "--recipe", str(TINY), "--out", str(out),
                        "--quiet", "--json"], capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(p.stdout[p.stdout.index("{"):])
    assert res["processes"] == 2 and res["step"] == 4
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]  # one writer: no duplicated rows from rank 1
    from fgtool import api

    m = api.load(out / "last.pt")
    assert m.step == 4
    s = api.sample(str(out / "last.pt"), str(tmp_path / "s.png"), n=4, grids=False)
    assert Path(s["files"]["samples"]).stat().st_size > 0


def test_accelerate_cpu_launch_is_recognised():
    from fgtool.train.launch import requested_cpu_processes as req

    acc = {"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    cmd = ["/x/python", "/x/accelerate", "launch", "--cpu", "--num_processes", "3", "-m", "fgtool", "train"]
    assert req(acc, cmd) == 3
    assert req(acc, ["accelerate", "launch", "--cpu", "--num_processes=2", "-m", "fgtool"]) == 2
    assert req(acc, ["accelerate", "launch", "--cpu", "-m", "fgtool"]) == 0  # no count given: one process
    assert req({**acc, "RANK": "0", "WORLD_SIZE": "2"}, cmd) == 0  # torchrun / mpirun already made ranks
    assert req({"MASTER_ADDR": "127.0.0.1"}, cmd) == 0  # not Accelerate's CPU launcher
    assert req({"ACCELERATE_USE_CPU": "True"}, cmd) == 0  # no MASTER_ADDR: Accelerate asked for one process
    assert req({**acc, "ACCELERATE_USE_CPU": "False"}, cmd) == 0


def test_train_tears_down_its_process_group(synth_dir, tmp_path):
    """A finished run destroys the gloo group it trained in: one left for interpreter exit can
    abort the worker with SIGABRT after the run has saved."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
    code = ("import sys, torch.distributed as dist; from fgtool import api; "
            "r = api.train('finegan', sys.argv[1], sys.argv[2], None, sys.argv[3], progress=False); "
            "print(r['processes'], r['step'], dist.is_initialized())")
    p = subprocess.run([sys.executable, "-c", code, str(synth_dir), str(TINY), str(tmp_path / "run")],
                       capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split()[-3:] == ["1", "4", "False"]
