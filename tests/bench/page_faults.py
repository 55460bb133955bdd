"""Page faults and system time per training step, with and without fgtool's allocator setting.

Runs one side of tests/bench/authors.py (fgtool's step, or the authors' from a local copy of
their code) in this process and reports, for each timed step, its wall time, its minor page
faults and its system CPU time, as JSON:

    python tests/bench/page_faults.py finegan fgtool --batch 8 --precision no            # as fgtool runs
    python tests/bench/page_faults.py finegan fgtool --batch 8 --precision no --no-keep  # glibc's defaults
    python tests/bench/page_faults.py finegan authors --code FINEGAN/code --batch 8      # their step as shipped
    python tests/bench/page_faults.py finegan authors --code FINEGAN/code --batch 8 --keep

``--keep`` / ``--no-keep`` set or skip ``fgtool.train.allocator.keep_freed_memory`` (fgtool's
Trainer sets it on a CPU; the authors' code does not).

It also reports the most heap memory in use during the timed steps (``peak_in_use_mb``:
glibc's ``mallinfo2``, blocks in use plus mmapped blocks, read every 2 ms by a thread): what
the step needs, whatever the allocator keeps. The peak RSS adds what glibc holds on top:
freed blocks it keeps, and the holes between blocks in use.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import resource
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "reference"), str(HERE.parents[1])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", choices=("finegan", "mixnmatch", "c3gan"))
    ap.add_argument("side", choices=("fgtool", "authors"))
    ap.add_argument("--code", help="the authors' code (side authors)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--precision", default="no", help="fgtool's train.precision")
    ap.add_argument("--keep", action=argparse.BooleanOptionalAction, default=None,
                    help="keep freed memory (default: as each side ships: fgtool yes, authors no)")
    ap.add_argument("--plain-bnglu", action="store_true",
                    help="fgtool's BatchNorm-GLU pairs as two modules (GLUBlock.naive), for the in-use A/B")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=2)
    a = ap.parse_args()
    import authors
    import torch

    from fgtool.train import allocator, trainer

    keep = (a.side == "fgtool") if a.keep is None else a.keep
    if keep:
        allocator.keep_freed_memory()
    else:
        trainer.keep_freed_memory = lambda: False  # the Trainer's call does nothing
    torch.set_num_threads(1)
    if a.plain_bnglu:
        from fgtool.nn.blocks import GLUBlock

        GLUBlock.naive = True
    if a.side == "authors":
        step = getattr(authors, f"their_{a.model}")(Path(a.code), False, a.batch, a.size)
    else:
        step, _ = authors.fgtool_step(a.model, False, a.batch, a.size, a.precision)
    for i in range(a.warmup):
        step(i + 1)
    rows = []
    sampler = InUse()
    for i in range(a.steps):
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        step(a.warmup + i + 1)
        r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        rows.append({"step_s": round(t1 - t0, 3), "minor_faults": r1.ru_minflt - r0.ru_minflt,
                     "sys_s": round(r1.ru_stime - r0.ru_stime, 3)})
    print(json.dumps({"model": a.model, "side": a.side, "batch": a.batch, "size": a.size,
                      "precision": a.precision if a.side == "fgtool" else "fp32", "keep_freed_memory": keep,
                      "plain_bnglu": a.plain_bnglu,
                      "steps": rows, "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                      "peak_in_use_mb": sampler.stop()}))


class InUse:
    """A thread that samples glibc's heap in use every 2 ms and keeps the largest value."""

    class _Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                     "keepcost")]

    def __init__(self):
        self.libc = ctypes.CDLL("libc.so.6")
        self.libc.mallinfo2.restype = self._Info
        self.peak, self.done = 0, False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.done:
            m = self.libc.mallinfo2()
            self.peak = max(self.peak, m.uordblks + m.hblkhd)
            time.sleep(0.002)

    def stop(self) -> int:
        self.done = True
        self.thread.join()
        return round(self.peak / 2**20)


if __name__ == "__main__":
    main()
