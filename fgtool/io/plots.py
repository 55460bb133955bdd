"""Loss curves from metrics.jsonl (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import json
import math
from pathlib import Path


def read_jsonl(path: str | Path) -> list[dict]:
    rows = []
    p = Path(path)
    if not p.exists():
        return rows
    for line in p.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a half-written last line after a kill
    return rows


def plot_metrics(metrics: str | Path, out: str | Path, max_panels: int = 20) -> Path | None:
    rows = read_jsonl(metrics)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # every value logged, in order of first appearance: loss rows, then the sparser eval/* rows
    keys = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in ("step", "it_s")][:max_panels]
    n = len(keys)
    cols = min(4, n)
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.4 * nrows), squeeze=False)
    for ax, k in zip(axes.flat, keys):
        pts = [(r["step"], r[k]) for r in rows if k in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1, marker="o" if len(pts) < 30 else None, ms=3)
        ax.set_title(k, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.supxlabel("step", fontsize=8)
    fig.tight_layout()
    from ..checkpoint import atomic_write

    try:
        return atomic_write(out, lambda f: fig.savefig(f, format="png", dpi=90))
    finally:
        plt.close(fig)
