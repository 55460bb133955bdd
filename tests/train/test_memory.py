"""Out of memory is a size problem, not a crash: a size or batch too large for the machine ends
``train`` (and any other command) with one line, exit code 2, the checkpoint kept and the way on."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, TINY, one_error_line, run_cli

from fgtool import checkpoint as ckpt
from fgtool.backends.finegan import FineGAN
from fgtool.errors import FgtoolError, OutOfMemory, out_of_memory

# the messages torch gives, word for word: its CPU allocator, CUDA and MPS
CPU = ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to "
       "allocate 536870912 bytes. Error code 12 (Cannot allocate memory)")
CUDA = ("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.11 GiB of which "
        "1.06 GiB is free. Of the allocated memory 75.2 GiB is allocated by PyTorch")
MPS = ("MPS backend out of memory (MPS allocated: 1.20 GB, other allocations: 3.00 GB, max allowed: 9.07 GB). "
       "Tried to allocate 256.00 MiB on private pool.")


@pytest.mark.parametrize("exc, amount", [
    (RuntimeError(CPU), "512 MiB"),
    (RuntimeError(CPU.replace("536870912", "3221225472")), "3.00 GiB"),
    (torch.OutOfMemoryError(CUDA), "2.00 GiB"),
    (RuntimeError(MPS), "256.00 MiB"),
    (MemoryError(), ""),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 4x3)"), None),
    (ValueError("out of memory"), None),  # not an allocator's error type
])
def test_out_of_memory_is_recognised_with_its_amount(exc, amount):
    assert out_of_memory(exc) == amount
    assert issubclass(OutOfMemory, FgtoolError)


def _oom_at(monkeypatch, step: int, exc: BaseException) -> None:
    """``FineGAN._loss_g`` raises ``exc`` from training step ``step`` on (1-based)."""
    calls = {"n": 0}
    real = FineGAN._loss_g

    def wrapped(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] >= step:
            raise exc
        return real(self, *a, **kw)

    monkeypatch.setattr(FineGAN, "_loss_g", wrapped)


def _train(data, out, *sets) -> list:
    argv = ["train", "--model", "finegan", "--data", data, "--recipe", TINY, "--out", out, "--quiet", "--json",
            "--set", "train.sample_every=100"]
    for s in sets:
        argv += ["--set", s]
    return argv


def test_oom_in_training_is_one_line_keeping_the_checkpoint_and_naming_the_resume(capsys, synth_dir, tmp_path,
                                                                                  monkeypatch):
    run = tmp_path / "run"
    _oom_at(monkeypatch, 3, RuntimeError(CPU))
    rc, out, err = run_cli(capsys, *_train(synth_dir, run, "train.steps=6", "train.ckpt_every=2",
                                           "train.batch_size=8"))
    monkeypatch.undo()
    assert rc == 2 and out == ""
    line = one_error_line(err)
    assert line == (f"fgtool: error: out of memory in step 3 (an allocation of 512 MiB failed) at data.size=32, "
                    f"train.batch_size=8; last checkpoint step 2; resume with a smaller batch: "
                    f"fgtool train --resume --out {run} --set train.batch_size=4")
    assert ckpt.load(run / "last.pt")["step"] == 2
    # the command it names works
    rc, _, err = run_cli(capsys, "train", "--resume", "--out", run, "--quiet", "--set", "train.batch_size=4")
    assert rc == 0, err
    assert ckpt.load(run / "last.pt")["step"] == 6


def test_oom_before_the_first_checkpoint_says_to_start_again(capsys, synth_dir, tmp_path, monkeypatch):
    run = tmp_path / "run"
    _oom_at(monkeypatch, 1, torch.OutOfMemoryError(CUDA))
    rc, out, err = run_cli(capsys, *_train(synth_dir, run, "train.steps=2"))
    monkeypatch.undo()
    assert rc == 2 and out == ""
    line = one_error_line(err)
    assert "out of memory in step 1 (an allocation of 2.00 GiB failed)" in line
    assert line.endswith("no checkpoint yet; start it again with a smaller train.batch_size or data.size")
    assert not list(run.glob("*.pt"))
    rc, _, err = run_cli(capsys, *_train(synth_dir, run, "train.steps=2"))  # the same command starts it again
    assert rc == 0, err


def test_oom_in_another_command_is_one_line(capsys, synth_dir, tmp_path, monkeypatch):
    run = tmp_path / "run"
    assert run_cli(capsys, *_train(synth_dir, run, "train.steps=1"))[0] == 0

    def no_memory(*a, **kw):
        raise MemoryError()

    monkeypatch.setattr(FineGAN, "generate", no_memory)
    rc, out, err = run_cli(capsys, "sample", "--ckpt", run / "last.pt", "--out", tmp_path / "s.png")
    assert rc == 2 and out == ""
    assert one_error_line(err) == "fgtool: error: out of memory; try fewer or smaller images at a time"
    assert not (tmp_path / "s.png").exists()


@pytest.mark.slow
def test_real_memory_limit_stops_training_in_one_line(synth_dir, tmp_path):
    """No monkeypatching: the kernel refuses the memory (RLIMIT_AS) in a real process, at a size the
    tiny model cannot hold in the limit."""
    import resource

    run = tmp_path / "run"

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))

    argv = [sys.executable, "-m", "fgtool", *map(str, _train(synth_dir, run, "train.steps=2", "data.size=1024"))]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, preexec_fn=limit)
    assert p.returncode == 2 and p.stdout == "", p.stderr[-3000:]
    line = one_error_line(p.stderr)
    assert "out of memory in step 1 (an allocation of" in line and "at data.size=1024" in line, line
    assert sorted(x.name for x in run.iterdir()) == [".lock", "config.json"]
