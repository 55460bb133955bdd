"""Contact sheets of clusters: one sheet per cluster and an overview of the largest."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .images import contact_sheet


def cluster_sheet_paths(out) -> tuple[Path, Path]:
    """(folder of per-cluster sheets, overview PNG) beside the clusters JSON ``out``."""
    outp = Path(out)
    sheet_dir = outp.with_suffix("")
    return sheet_dir.parent / f"{sheet_dir.name}_sheets", outp.parent / f"{outp.stem}.png"


def write_cluster_sheets(imageset, pred: np.ndarray, k: int, conf: np.ndarray | None, out) -> tuple[Path, Path]:
    """Per-cluster sheets (the 32 most confident members, or the first 32) and an overview of
    the 24 largest clusters beside the clusters JSON ``out``; returns (sheet folder, overview)."""
    order = np.argsort(-np.bincount(pred, minlength=k))
    sheet_dir, overview = cluster_sheet_paths(out)
    sheet_dir.mkdir(parents=True, exist_ok=True)
    rank = np.argsort(-conf, kind="stable") if conf is not None else np.arange(len(pred))
    paths_by = {c: [imageset.records[i].path for i in rank if pred[i] == c] for c in range(k)}
    for c in range(k):
        if paths_by[c]:
            contact_sheet(paths_by[c][:32], sheet_dir / f"cluster_{c:03d}.png", ncol=8, size=48)
    # overview: the 24 largest clusters, 8 members each, one row per cluster
    rows, labels = [], []
    for c in order[:24]:
        mem = paths_by[int(c)][:8]
        if not mem:
            continue
        rows.extend(mem + [None] * (8 - len(mem)))
        labels.append(f"#{int(c)} n={len(paths_by[int(c)])}")
    contact_sheet(rows, overview, ncol=8, size=48, labels=labels)
    return sheet_dir, overview
