"""Two CPU processes (torchrun, gloo): gradients are averaged so the ranks stay in step."""

from __future__ import annotations

import json
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
