"""``fgtool data synth``: the synthetic fine-grained set."""

from __future__ import annotations

from ..errors import FgtoolError
from ..io.paths import check_output
from .options import Progress


def data_synth(out: str, n: int = 6000, size: int = 64, seed: int = 0, parents: int = 4, children: int = 3,
               backgrounds: int = 3, bg_corr: float = 0.5, obj_area: str | tuple = (0.20, 0.45), workers: int = 2,
               progress: Progress = None) -> dict:
    from ..data.synth import synth

    if isinstance(obj_area, str):
        try:
            obj_area = tuple(float(v) for v in obj_area.split(","))
        except ValueError:
            raise FgtoolError(f"--obj-area takes MIN,MAX (two numbers), got {obj_area!r}") from None
        if len(obj_area) != 2:
            raise FgtoolError(f"--obj-area takes MIN,MAX (two numbers), got {len(obj_area)} values")
    check_output(out, [], folder=True)
    cb = (lambda done, total: progress("synth", done, total)) if progress else None
    meta = synth(out, n=n, size=size, seed=seed, parents=parents, children=children, backgrounds=backgrounds,
                 bg_corr=bg_corr, obj_area=obj_area, workers=workers, progress=cb)
    return {"out": str(out), **{k: meta[k] for k in ("n", "size", "seed", "bg_corr", "obj_area") if k in meta}}
