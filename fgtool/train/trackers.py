"""``--report-to`` (``train.report_to``): Accelerate's experiment trackers.

``tensorboard`` and ``wandb`` are Accelerate's own (optional installs); ``csv`` is a wide
``RUN/metrics.csv``, one row per ``metrics.jsonl`` row, for a spreadsheet. ``none`` (the
default) logs nothing more: ``metrics.jsonl``, ``loss_curve.png`` and ``grids/`` already hold
every logged row and picture, so a default tracker would only repeat them.
"""

from __future__ import annotations

import csv
import importlib.util
import io
from pathlib import Path

from .. import checkpoint as ckpt
from ..errors import FgtoolError

# the modules Accelerate's tracker imports, and the install that brings them
_NEEDS = {"tensorboard": (("tensorboard", "tensorboardX"), "pip install 'fgtool[tensorboard]'"),
          "wandb": (("wandb",), "pip install 'fgtool[wandb]'")}


def check_installed(names: list[str]) -> None:
    for n in names:
        modules, install = _NEEDS.get(n, ((), ""))
        if modules and not any(importlib.util.find_spec(m) for m in modules):
            raise FgtoolError(f"--report-to {n} needs {n}, which is not installed: {install}")


def flat_config(d: dict, prefix: str = "") -> dict:
    """Nested config -> {"train.steps": 4, ...} with plain values (what TensorBoard's hparams take)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat_config(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (bool, int, float, str)) else str(v)
    return out


def image_values(name: str, tracker: str, rgb):
    """A grid (H, W, 3 uint8) as the tracker's ``log_images`` takes it."""
    if tracker == "tensorboard":
        return {name: rgb[None]}, {"dataformats": "NHWC"}
    return {name: [rgb]}, {}


def csv_tracker(path: Path):
    """The ``csv`` tracker; ``open(step)`` before Accelerate's ``init_trackers`` (the step a
    resumed run starts from is known only then)."""
    from accelerate.tracking import GeneralTracker

    class CSVTracker(GeneralTracker):
        """A wide CSV: a ``step`` column, then one column per logged value in order of first
        appearance. A new value (a phase that starts later) rewrites the file with the wider
        header; otherwise rows are appended. A resumed run drops the rows after its checkpoint,
        as metrics.jsonl does."""

        name = "csv"
        requires_logging_directory = False

        def __init__(self):
            super().__init__()
            self.path = Path(path)
            self.columns: list[str] = ["step"]
            self.rows: list[dict] = []

        def open(self, start_step: int) -> None:
            self.columns, self.rows = ["step"], []
            if start_step > 0 and self.path.exists():
                with open(self.path, newline="") as f:
                    reader = csv.DictReader(f)
                    self.columns = list(reader.fieldnames or ["step"])
                    self.rows = [r for r in reader if r.get("step", "").isdigit() and int(r["step"]) <= start_step]
            self._rewrite()

        @property
        def tracker(self):
            return self.path

        def store_init_configuration(self, values: dict) -> None:
            pass  # config.json holds it

        def log(self, values: dict, step: int | None = None, **kwargs) -> None:
            row = {"step": step, **{k: v for k, v in values.items() if isinstance(v, (int, float))}}
            self.rows.append(row)
            new = [k for k in row if k not in self.columns]
            if new:
                self.columns += new
                self._rewrite()
            else:
                with open(self.path, "a", newline="") as f:
                    csv.DictWriter(f, self.columns).writerow(row)

        def _rewrite(self) -> None:
            buf = io.StringIO()
            w = csv.DictWriter(buf, self.columns)
            w.writeheader()
            w.writerows(self.rows)
            ckpt.atomic_write_text(self.path, buf.getvalue())

        def finish(self) -> None:
            pass

    return CSVTracker()
