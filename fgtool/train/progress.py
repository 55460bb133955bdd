"""Training progress on stderr: a rich bar on a terminal, plain lines in a batch log.

Where stderr is not a terminal (a batch job, CI, ``2> log``), a bar cannot redraw and rich
prints it once at the end; there each log row becomes one line instead::

    train step 20/100: G=1.23 D=0.456 info_c=0.51 | 0.612 s/it | eta 0:00:49
"""

from __future__ import annotations

import sys
import time


def _loss_keys(row: dict) -> list[str]:
    return [k for k in row if k.endswith("/loss")] + [k for k in ("info_c", "phi_acc_c") if k in row]


def _clock(seconds: float) -> str:
    s = int(round(max(0.0, seconds)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def plain_line(step: int, total: int, row: dict, sec_per_it: float, eta: float) -> str:
    losses = " ".join(f"{k.replace('/loss', '')}={row[k]:.3g}" for k in _loss_keys(row))
    return f"train step {step}/{total}: {losses} | {sec_per_it:.3g} s/it | eta {_clock(eta)}"


class Progress:
    """Progress of ``fit``: ``update(step, row)`` after each metrics row."""

    def __init__(self, total: int, start: int, enabled: bool, stream=None):
        self.enabled, self.total, self.start = enabled, total, start
        self.stream = stream if stream is not None else sys.stderr
        self.plain = enabled and not self.stream.isatty()
        self.p = None
        self.t0 = time.time()

    def __enter__(self):
        self.t0 = time.time()
        if self.enabled and not self.plain:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            self.p = Bar(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                         TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                         console=Console(stderr=True), transient=False)
            self.p.__enter__()
            self.task = self.p.add_task("train", total=self.total, completed=self.start, info="")
        return self

    def update(self, step: int, row: dict) -> None:
        if self.plain:
            done = max(1, step - self.start)
            per_it = (time.time() - self.t0) / done  # this process's mean: steadier than one window
            window = 1.0 / row["it_s"] if row.get("it_s") else per_it
            line = plain_line(step, self.total, row, window, per_it * (self.total - step))
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except (OSError, ValueError):  # stderr closed: training goes on
                self.plain = False
        elif self.p:
            keys = _loss_keys(row) + (["it_s"] if "it_s" in row else [])
            info = " ".join(f"{k.replace('/loss', '')}={row[k]:.3g}" for k in keys)
            self.p.update(self.task, completed=step, info=info)

    def __exit__(self, *exc):
        if self.p:
            self.p.__exit__(*exc)
        return False
