"""Shared fixtures: a tiny synthetic dataset, the tiny recipe, clean Accelerate state."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "fgtool" / "recipes" / "tiny.toml"
CUB100 = ROOT.parent / "shared" / "data" / "cub100"

torch.set_num_threads(1)  # steadier and no oversubscription on 2-core CI machines
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """48 images at 32 px: 2 parents x 3 children, boxes, masks, labels."""
    from fgtool.data.synth import synth

    out = tmp_path_factory.mktemp("synth") / "synth"
    synth(out, n=48, size=32, seed=0, parents=2, children=3, backgrounds=2, workers=1)
    return out


@pytest.fixture(autouse=True)
def _reset_accelerate():
    """Accelerate keeps process-global state; tests that change precision must not leak."""
    yield
    try:
        from accelerate.state import AcceleratorState, GradientState, PartialState

        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        PartialState._reset_state()
    except Exception:  # pragma: no cover - older/newer accelerate
        pass


@pytest.fixture
def tiny() -> Path:
    return TINY


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    from fgtool.cli import main

    capsys.readouterr()  # drop anything printed before
    rc = main([a if isinstance(a, (str, bytes)) else str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def run_json(capsys, *argv) -> dict:
    import json

    rc, out, err = run_cli(capsys, *argv, "--json")
    assert rc == 0, err
    return json.loads(out)


def one_error_line(err: str) -> str:
    """The single ``fgtool: error:`` line of a user error (no traceback)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    assert lines[0].startswith("fgtool: error: ") and "Traceback" not in err, lines[0]
    return lines[0]


def image_folder(synth_dir: Path, dest: Path, n: int) -> Path:
    """An ImageFolder of ``n`` good synthetic images in two classes a/ and b/."""
    import shutil

    files = sorted((synth_dir / "images").rglob("*.png"))[:n]
    for i, f in enumerate(files):
        d = dest / ("a" if i % 2 else "b")
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, d / f"{i:03d}.png")
    return dest


def train_tiny(model: str, out: Path, data: Path, *sets: str, resume: bool = False) -> dict:
    """`fgtool train` on fgtool/recipes/tiny.toml (or `--resume`) through the CLI; returns its JSON report."""
    import io
    import json
    from contextlib import redirect_stdout

    from fgtool.cli import main

    if resume:
        argv = ["train", "--resume", "--out", str(out), "--quiet", "--json"]
    else:
        argv = ["train", "--model", model, "--data", str(data), "--recipe", str(TINY), "--out", str(out),
                "--quiet", "--json"]
    for s in sets:
        argv += ["--set", s]
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main(argv)
    assert rc == 0
    return json.loads(buf.getvalue())
