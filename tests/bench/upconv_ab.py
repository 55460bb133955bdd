"""fgtool's training step with the folded up-block conv against upsample-then-conv, in one process.

The two paths alternate step by step (``UpConv3x3.naive``), so a slow spell falls on both:

    python tests/bench/upconv_ab.py finegan --batch 16 --precision no --rounds 4

Prints each path's step times and the ratio of the medians (plain / folded) as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", choices=("finegan", "mixnmatch", "c3gan"))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--precision", default="no")
    ap.add_argument("--rounds", type=int, default=4)
    a = ap.parse_args()
    import authors
    import torch

    from fgtool.nn.upconv import UpConv3x3

    torch.set_num_threads(1)
    step, _ = authors.fgtool_step(a.model, False, a.batch, a.size, a.precision)
    for i in range(2):
        step(i + 1)
    times: dict[str, list[float]] = {"plain": [], "folded": []}
    for r in range(a.rounds):
        for name in (("plain", "folded") if r % 2 == 0 else ("folded", "plain")):
            UpConv3x3.naive = name == "plain"
            t = time.perf_counter()
            step(3 + r)
            times[name].append(round(time.perf_counter() - t, 3))
    ratio = statistics.median(times["plain"]) / statistics.median(times["folded"])
    print(json.dumps({"model": a.model, "batch": a.batch, "size": a.size, "precision": a.precision, "step_s": times,
                      "plain_over_folded": round(ratio, 3)}))


if __name__ == "__main__":
    main()
