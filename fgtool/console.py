"""What the commands print: a result on stdout (a table for people, tab-separated lines when
stdout is not a terminal, JSON with ``--json``); progress bars and notes on stderr."""

from __future__ import annotations

import json
import os
import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

err = Console(stderr=True)


def note(text: str) -> None:
    """One plain line on stderr (no markup: paths may hold brackets)."""
    err.print(text, markup=False, highlight=False, emoji=False, soft_wrap=True)


def emit(result, as_json: bool, title: str) -> None:
    if int(os.environ.get("RANK", "0")) != 0:  # multi-process runs: one report, from rank 0
        return
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
        sys.stdout.flush()
        return
    table(title, None, [(k, str(v)) for k, v in flatten(result).items()])


def table(title: str, header: list[str] | None, rows: list[tuple]) -> None:
    """A result for people on stdout: a table on a terminal, else one tab-separated line per
    row (whole values, no wrapping), so ``| grep`` and ``| cut`` see every row."""
    out = Console()
    if not out.is_terminal:
        sys.stdout.write("".join("\t".join(map(str, r)) + "\n" for r in rows))
        sys.stdout.flush()
        return
    t = Table(title=title, show_header=header is not None)
    for h in header or [""] * (len(rows[0]) if rows else 2):
        t.add_column(h)
    for r in rows:
        t.add_row(*map(str, r))
    out.print(t)


def flatten(d, prefix="") -> dict:
    out = {}
    for k, v in (d.items() if isinstance(d, dict) else []):
        key = f"{prefix}{k}"
        if isinstance(v, dict) and len(v) <= 40:
            out.update(flatten(v, key + "."))
        elif isinstance(v, float):
            out[key] = f"{v:.4f}"
        elif isinstance(v, list) and len(v) > 8:
            out[key] = f"[{len(v)} items]"
        else:
            out[key] = v
    return out


class Bars:
    """Progress callback (task, done, total) -> rich bars on stderr, where stderr is a terminal.
    Elsewhere (a batch log, a pipe) a bar cannot redraw, and rich left an empty line in front
    of whatever came next, an error line included: there are no bars there."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet or not err.is_terminal
        self.p = None
        self.tasks = {}

    def __enter__(self):
        if not self.quiet:
            self.p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TimeRemainingColumn(), console=err, transient=True)
            self.p.__enter__()
        return self

    def __call__(self, task: str, done: int, total: int):
        if self.p is None:
            return
        if task not in self.tasks:
            self.tasks[task] = self.p.add_task(task, total=total)
        self.p.update(self.tasks[task], completed=done, total=total)

    def __exit__(self, *exc):
        if self.p:
            self.p.__exit__(*exc)
        return False
