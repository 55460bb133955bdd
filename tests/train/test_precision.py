"""bf16 autocast on a CPU is numerically safe: a tiny run's loss trajectory in bf16 tracks fp32's."""

from __future__ import annotations

import json

import pytest
from conftest import TINY

from fgtool import api, registry

STEPS = 8


def _reset():
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


def _trajectory(model, data, out, precision) -> list[dict]:
    api.train(model, str(data), str(TINY), [f"train.precision={precision}", f"train.steps={STEPS}",
                                             "train.log_every=1", "train.ckpt_every=100", "train.sample_every=100"],
              str(out), progress=False)
    _reset()
    return [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("model", registry.names())
def test_bf16_loss_trajectory_tracks_fp32(model, synth_dir, tmp_path):
    """Same seed, same data: every logged loss part stays within 10% (+0.05) of fp32 for 8 steps,
    and bf16 really ran (some part differs)."""
    fp32 = _trajectory(model, synth_dir, tmp_path / "fp32", "no")
    bf16 = _trajectory(model, synth_dir, tmp_path / "bf16", "bf16")
    assert [r["step"] for r in fp32] == [r["step"] for r in bf16] == list(range(1, STEPS + 1))
    skip = {"step", "it_s", "sec_per_it", "time"}
    worst, differs = (0.0, ""), False
    for a, b in zip(fp32, bf16):
        for k, va in a.items():
            if k in skip or not isinstance(va, float) or k not in b:
                continue
            if "acc" in k:  # accuracies over 8 samples move in steps of 0.125: not a loss to track
                continue
            gap = abs(va - b[k])
            differs |= gap > 0
            excess = gap - (0.1 * abs(va) + 0.05)
            if excess > worst[0]:
                worst = (excess, f"step {a['step']} {k}: fp32 {va:.4f} vs bf16 {b[k]:.4f}")
    assert differs, "bf16 run identical to fp32: autocast was not active"
    assert worst[0] == 0.0, worst[1]


# ----------------------------------------------------------------------------- which precision


@pytest.mark.parametrize("text, expect", [
    ("flags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_tile\n", True),
    ("flags\t\t: fpu avx512f amx_bf16 amx_tile\n", True),
    ("flags\t\t: fpu sse avx2 avx512f avx512bw\n", False),  # AVX512 without bf16
    ("Features\t: fp asimd sve bf16 i8mm\n", True),  # Arm
    ("Features\t: fp asimd\nmodel name\t: bf16 lookalike\n", False),
])
def test_cpu_bf16_from_cpuinfo(tmp_path, text, expect):
    from fgtool.train.precision import cpu_has_bf16

    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\n" + text)
    assert cpu_has_bf16(f) is expect
    assert cpu_has_bf16(tmp_path / "missing") is False


@pytest.mark.parametrize("requested, env, native, expect", [
    ("auto", {}, True, ("bf16", "auto")),
    ("auto", {}, False, ("no", "auto")),
    ("auto", {"ACCELERATE_MIXED_PRECISION": "bf16"}, False, ("bf16", "accelerate")),
    ("auto", {"ACCELERATE_MIXED_PRECISION": "no"}, True, ("no", "accelerate")),  # accelerate launch's default
    ("no", {"ACCELERATE_MIXED_PRECISION": "bf16"}, True, ("no", "train.precision")),  # recipe / --set win
    ("bf16", {}, False, ("bf16", "train.precision")),
])
def test_precision_order(monkeypatch, requested, env, native, expect):
    from fgtool.train import precision

    monkeypatch.setattr(precision, "device_has_bf16", lambda: native)
    assert precision.resolve(requested, env) == expect


def test_unknown_accelerate_precision_is_one_line(capsys, synth_dir, tmp_path, monkeypatch):
    from conftest import one_error_line, run_cli

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp8")
    rc, out, err = run_cli(capsys, "train", "--model", "finegan", "--data", synth_dir, "--recipe", TINY,
                           "--set", "train.precision=auto", "--out", tmp_path / "r", "--quiet")
    assert rc == 2 and out == ""
    assert "accelerate's mixed precision is 'fp8' (ACCELERATE_MIXED_PRECISION)" in one_error_line(err)
    assert not (tmp_path / "r" / "last.pt").exists()


def test_default_precision_is_auto():
    cfg = api.resolve_config("finegan", "/data", None, [])
    assert cfg.train.precision == "auto"
    assert api.resolve_config("finegan", "/data", str(TINY), []).train.precision == "no"  # tests: fp32


@pytest.mark.parametrize("sets, env, native, expect", [
    (["train.precision=auto"], {"ACCELERATE_MIXED_PRECISION": "bf16"}, False, "bf16"),  # accelerate launch
    (["train.precision=no"], {"ACCELERATE_MIXED_PRECISION": "bf16"}, True, "no"),
    (["train.precision=auto"], {}, True, "bf16"),
    (["train.precision=auto"], {}, False, "no"),
])
def test_run_trains_in_the_resolved_precision(synth_dir, tmp_path, monkeypatch, sets, env, native, expect):
    """The run's Accelerator autocasts in the resolved precision (bf16 changes the losses), the
    report names it, and the stored config keeps what was asked for (a resume decides again)."""
    from fgtool.train import precision

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(precision, "device_has_bf16", lambda: native)
    out = tmp_path / "run"
    res = api.train("finegan", str(synth_dir), str(TINY), [*sets, "train.steps=2", "train.sample_every=100"],
                    str(out), progress=False)
    _reset()
    assert res["precision"] == expect
    assert json.loads((out / "config.json").read_text())["train"]["precision"] == sets[0].split("=")[1]
    ref = tmp_path / "ref"
    api.train("finegan", str(synth_dir), str(TINY), ["train.steps=2", "train.sample_every=100"], str(ref),
              progress=False)
    _reset()
    rows = [(out / "metrics.jsonl").read_text().splitlines(), (ref / "metrics.jsonl").read_text().splitlines()]
    first = [{k: v for k, v in json.loads(r[-1]).items() if k != "it_s"} for r in rows]
    assert (first[0] == first[1]) is (expect == "no"), first
