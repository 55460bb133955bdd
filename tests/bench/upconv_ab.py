"""fgtool's training step with one of its fused paths against the plain modules, in one process.

``--what upconv``: the folded up-block conv against upsample-then-conv (``UpConv3x3.naive``);
``--what bnglu``: BatchNorm-then-GLU keeping only the BatchNorm's input against the two modules
(``GLUBlock.naive``). The two paths alternate step by step, so a slow spell falls on both:

    python tests/bench/upconv_ab.py finegan --batch 16 --precision no --rounds 4
    python tests/bench/upconv_ab.py finegan --batch 16 --precision no --rounds 4 --what bnglu

Prints each path's step times and the ratio of the medians (plain / fused) as JSON.
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
    ap.add_argument("--what", choices=("upconv", "bnglu"), default="upconv")
    a = ap.parse_args()
    import authors
    import torch

    from fgtool.nn.blocks import GLUBlock
    from fgtool.nn.upconv import UpConv3x3

    switch = UpConv3x3 if a.what == "upconv" else GLUBlock

    torch.set_num_threads(1)
    step, _ = authors.fgtool_step(a.model, False, a.batch, a.size, a.precision)
    for i in range(2):
        step(i + 1)
    fused = "folded" if a.what == "upconv" else "fused"
    times: dict[str, list[float]] = {"plain": [], fused: []}
    for r in range(a.rounds):
        for name in (("plain", fused) if r % 2 == 0 else (fused, "plain")):
            switch.naive = name == "plain"
            t = time.perf_counter()
            step(3 + r)
            times[name].append(round(time.perf_counter() - t, 3))
    ratio = statistics.median(times["plain"]) / statistics.median(times[fused])
    print(json.dumps({"what": a.what, "model": a.model, "batch": a.batch, "size": a.size, "precision": a.precision,
                      "step_s": times, f"plain_over_{fused}": round(ratio, 3)}))


if __name__ == "__main__":
    main()
