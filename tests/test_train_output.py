"""What a training run reports while it runs: plain progress lines in a batch log."""

from __future__ import annotations

import io
import json
import re

from conftest import TINY, run_cli

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
