"""Shared fixtures and helpers: a tiny synthetic dataset, the tiny recipe, clean Accelerate state,
the CLI in-process and in a fresh process, checkpoint comparison. Tests in every folder under
tests/ import them with ``from conftest import ...``."""

from __future__ import annotations

import os
import subprocess
import sys
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


def tiny_backend(model: str, *sets: str):
    """The backend ``model`` as the tiny recipe plus ``--set`` overrides configure it (nothing built)."""
    from fgtool import api, registry

    cfg = api.resolve_config(model, None, str(TINY), list(sets))
    return registry.get(model)(cfg.model_cfg, cfg.data.size)


def eval_nets(backend, seed: int = 0) -> dict:
    """``backend``'s nets, initialised from ``seed``, in eval mode."""
    torch.manual_seed(seed)
    nets = backend.build()
    for m in nets.values():
        m.eval()
    return nets


def tensors_differ(a, b, path="") -> list[str]:
    """Paths where two nested checkpoint structures differ (tensors by torch.equal)."""
    if torch.is_tensor(a) or torch.is_tensor(b):
        ok = torch.is_tensor(a) and torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b)
        return [] if ok else [path]
    if isinstance(a, dict):
        if not isinstance(b, dict) or set(a) != set(b):
            return [f"{path} (keys)"]
        return [d for k in a for d in tensors_differ(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, (list, tuple)):
        if not isinstance(b, (list, tuple)) or len(a) != len(b):
            return [f"{path} (len)"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in tensors_differ(x, y, f"{path}[{i}]")]
    return [] if a == b else [path]


def same_checkpoints(a_path, b_path, step: int | None = None, what=None) -> tuple[dict, dict]:
    """Assert two checkpoints hold the same step (when given) and the same nets, EMA, optimisers and
    RNG, tensor for tensor; returns both, loaded."""
    from fgtool import checkpoint as ckpt

    a, b = ckpt.load(a_path), ckpt.load(b_path)
    if step is not None:
        assert a["step"] == b["step"] == step
    for key in ("nets", "ema", "optim", "rng"):
        diff = tensors_differ(a[key], b[key], key)
        assert not diff, (what, key, f"{len(diff)} differences, first: {diff[:5]}")
    return a, b


def fgtool_process(*argv, cwd=None) -> subprocess.CompletedProcess:
    """`python -m fgtool ARGV` in a fresh process on this checkout (exit code, stdout, stderr)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "fgtool", *map(str, argv)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)


def square_scene(n=4, size=32):
    """Dark squares (side 12) on a bright noisy background, and their true masks."""
    g = torch.Generator().manual_seed(1)
    x = 0.6 + 0.2 * torch.rand(n, 3, size, size, generator=g)
    gt = torch.zeros(n, size, size, dtype=torch.bool)
    for i in range(n):
        t, left = 4 + 3 * i, 6 + 2 * i
        gt[i, t:t + 12, left:left + 12] = True
    x = torch.where(gt[:, None], torch.tensor([-0.6, -0.2, 0.3]).view(1, 3, 1, 1) + 0 * x, x)
    return x, gt


def mask_iou(a, b) -> float:
    """Mean IoU of two batches of boolean masks [N, H, W]."""
    return ((a & b).sum((1, 2)).float() / (a | b).sum((1, 2)).float()).mean().item()
