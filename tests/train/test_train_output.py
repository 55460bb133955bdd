"""What a training run reports while it runs: plain progress lines in a batch log."""

from __future__ import annotations

import io
import json
import re

import pytest
from conftest import TINY, one_error_line, run_cli

from fgtool.train.progress import Progress, plain_line

LINE = re.compile(r"train step (\d+)/(\d+): (.*) \| ([0-9.e+-]+) s/it \| eta (\d+):(\d\d):(\d\d)")


def test_plain_line_format():
    row = {"step": 20, "D/loss": 0.45678, "G/loss": 1.2345, "info_c": 0.5, "it_s": 2.0}
    line = "train step 20/100: D=0.457 G=1.23 info_c=0.5 | 0.5 s/it | eta 1:02:05"
    assert plain_line(20, 100, row, 0.5, 3725.4) == line


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_plain_lines_only_where_stderr_is_not_a_terminal():
    assert Progress(10, 0, enabled=True, stream=io.StringIO()).plain
    assert not Progress(10, 0, enabled=True, stream=_Tty()).plain
    assert not Progress(10, 0, enabled=False, stream=io.StringIO()).plain


def test_batch_log_has_one_line_per_log_row(capsys, synth_dir, tmp_path):
    run = tmp_path / "run"
    rc, out, err = run_cli(capsys, "train", "--model", "finegan", "--data", synth_dir, "--recipe", TINY,
                           "--out", run, "--set", "train.steps=6", "--set", "train.sample_every=100",
                           "--set", "train.ckpt_every=3")
    assert rc == 0, err
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    lines = [LINE.fullmatch(x) for x in err.splitlines() if x.startswith("train step")]
    assert all(lines) and len(lines) == len(rows) == 4  # log_every=2 and the checkpoint at 3: 2, 3, 4, 6
    for m, row in zip(lines, rows):
        assert (int(m[1]), int(m[2])) == (row["step"], 6)
        losses = dict(kv.split("=") for kv in m[3].split())
        assert set(losses) == {k[:-5] for k in row if k.endswith("/loss")} | {"info_c", "phi_acc_c"} & set(row)
        assert {k: float(v) for k, v in losses.items()} == {
            k: float(f"{row[k + '/loss' if k + '/loss' in row else k]:.3g}") for k in losses}
        assert float(m[4]) > 0
    assert lines[-1].group(5, 6, 7) == ("0", "00", "00")  # nothing left at the end

    rc, _, err = run_cli(capsys, "train", "--model", "finegan", "--data", synth_dir, "--recipe", TINY,
                         "--out", tmp_path / "quiet", "--quiet")
    assert rc == 0 and "train step" not in err


# ----------------------------------------------------------------------------- --report-to


def _train(capsys, synth_dir, run, *extra):
    return run_cli(capsys, "train", "--model", "finegan", "--data", synth_dir, "--recipe", TINY, "--out", run,
                   "--quiet", "--set", "train.steps=6", *extra)


def _jsonl(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_report_to_csv_mirrors_metrics_jsonl_and_resumes(capsys, synth_dir, tmp_path):
    import csv

    run = tmp_path / "run"
    rc, _, err = _train(capsys, synth_dir, run, "--report-to", "csv")
    assert rc == 0, err
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    jl = _jsonl(run)
    assert [int(r["step"]) for r in rows] == [r["step"] for r in jl] == [2, 4, 6]
    assert list(rows[0]) == list(jl[0])  # same columns, same order
    for r, j in zip(rows, jl):  # a value a row did not log (phi every 4th step) is an empty cell
        assert {k: float(v) for k, v in r.items() if v != ""} == {k: float(v) for k, v in j.items()}
        assert {k for k, v in r.items() if v == ""} == set(rows[0]) - set(j)
    assert json.loads((run / "config.json").read_text())["train"]["report_to"] == "csv"

    with open(run / "metrics.csv", "a") as f:  # a row written after the last checkpoint, then a kill
        f.write("7" + ",1" * (len(rows[0]) - 1) + "\n")
    rc, _, err = run_cli(capsys, "train", "--resume", "--out", run, "--quiet", "--set", "train.steps=8")
    assert rc == 0, err
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [r["step"] for r in _jsonl(run)] == [2, 4, 6, 8]


def test_report_to_tensorboard_logs_losses_and_grids(capsys, synth_dir, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    rc, _, err = _train(capsys, synth_dir, run, "--report-to", "tensorboard")
    assert rc == 0, err
    ev = EventAccumulator(str(run / "tensorboard" / "fgtool"), size_guidance={"images": 0, "scalars": 0}).Reload()
    jl = _jsonl(run)
    for key in ("G/loss", "D/loss", "info_c"):
        got = [(e.step, e.value) for e in ev.Scalars(key)]
        assert got == [(r["step"], pytest.approx(r[key], rel=1e-6)) for r in jl], key
    images = {tag: [e.step for e in ev.Images(tag)] for tag in ev.Tags()["images"]}
    assert images == {"grids/samples": [4, 6], "grids/layers": [4, 6]}, images
    im = ev.Images("grids/samples")[-1]
    assert im.width > 32 and im.height > 32


def test_report_to_default_none_and_bad_values(capsys, synth_dir, tmp_path, monkeypatch):
    rc, _, err = _train(capsys, synth_dir, tmp_path / "plain")
    assert rc == 0, err
    assert not (tmp_path / "plain" / "metrics.csv").exists() and not (tmp_path / "plain" / "tensorboard").exists()

    rc, out, err = _train(capsys, synth_dir, tmp_path / "bad", "--report-to", "tensorbored")
    assert rc == 2 and out == "" and not (tmp_path / "bad").exists()
    assert "train.report_to: unknown tracker 'tensorbored'; choose none, csv, tensorboard or wandb" in \
        one_error_line(err)

    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("tensorboard", "tensorboardX", "wandb") else real(name, *a))
    for tracker in ("tensorboard", "wandb"):
        rc, out, err = _train(capsys, synth_dir, tmp_path / tracker, "--report-to", f"csv,{tracker}")
        assert rc == 2 and out == "" and not (tmp_path / tracker).exists()
        assert one_error_line(err) == (f"fgtool: error: --report-to {tracker} needs {tracker}, which is not "
                                       f"installed: pip install 'fgtool[{tracker}]'")


# ----------------------------------------------------------------------------- train.eval


def test_train_eval_scores_each_checkpoint_like_fgtool_eval(capsys, synth_dir, tmp_path):
    plain, scored = tmp_path / "plain", tmp_path / "scored"
    for run, extra in ((plain, ()), (scored, ("--set", "train.eval=nmi,acc", "--report-to", "csv"))):
        rc, _, err = _train(capsys, synth_dir, run, "--set", "train.ckpt_every=3", *extra)
        assert rc == 0, err
    rows = _jsonl(scored)
    evals = [r for r in rows if any(k.startswith("eval/") for k in r)]
    assert [(r["step"], sorted(r)) for r in evals] == [(3, ["eval/acc", "eval/nmi", "step"]),
                                                       (6, ["eval/acc", "eval/nmi", "step"])]
    # scoring draws no random numbers of the run's: the losses are those of a run without it
    losses = [{k: v for k, v in r.items() if k != "it_s"} for r in rows if r not in evals]
    assert losses == [{k: v for k, v in r.items() if k != "it_s"} for r in _jsonl(plain)]
    assert [r["step"] for r in losses] == [2, 3, 4, 6]
    rc, out, err = run_cli(capsys, "eval", "--metric", "nmi,acc", "--ckpt", scored / "last.pt", "--data", synth_dir,
                           "--json", "-q")
    assert rc == 0, err
    m = json.loads(out)["metrics"]
    assert (evals[-1]["eval/nmi"], evals[-1]["eval/acc"]) == (round(m["nmi"], 6), round(m["acc"], 6))
    assert 0.0 <= m["nmi"] <= 1.0
    import csv

    with open(scored / "metrics.csv", newline="") as f:
        got = {int(r["step"]): r["eval/nmi"] for r in csv.DictReader(f) if r.get("eval/nmi")}
    assert {s: float(v) for s, v in got.items()} == {r["step"]: r["eval/nmi"] for r in evals}


def test_train_eval_refuses_what_cannot_be_scored(capsys, synth_dir, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, img in enumerate(sorted((synth_dir / "images").rglob("*.png"))[:8]):
        (flat / f"{i}.png").write_bytes(img.read_bytes())
    cases = [("finegan", synth_dir, "fid", "train.eval: unknown metric 'fid'; choose none or a comma list of nmi"),
             ("ganseg", synth_dir, "nmi", "train.eval=nmi: ganseg does not cluster (nmi)"),
             ("finegan", synth_dir, "iou", "train.eval=iou: finegan does not segment (iou)"),
             ("finegan", flat, "nmi", f"train.eval=nmi: {flat} has no class labels to score against")]
    for model, data, metric, msg in cases:
        run = tmp_path / f"run-{model}-{metric}-{data.name}"
        rc, out, err = run_cli(capsys, "train", "--model", model, "--data", data, "--recipe", TINY, "--out", run,
                               "--quiet", "--set", f"train.eval={metric}", "--set", "train.batch_size=4")
        assert rc == 2 and out == "" and not run.exists(), (model, metric, err)
        assert msg in one_error_line(err), err
