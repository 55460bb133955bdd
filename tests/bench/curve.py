"""A learning curve: train a recipe in chunks and score clusters after each chunk.

    python tests/bench/curve.py --data DATA --recipe synth-finegan --out runs/curve \\
        --every 1000 --steps 20000 --csv docs/experiments/finegan-curve.csv [--set key=value ...]

After every ``--every`` steps it resumes the run to the next chunk's end, then scores the
checkpoint with ``fgtool eval``: parent NMI (the parent features, against the parent label,
k = number of parents) and child NMI (all features, against the class label, k = number of
classes). Each row goes to the CSV with the wall time spent training so far; a PNG of the
curve is written beside it. Re-running the command continues where the CSV stops.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

FGTOOL = [sys.executable, "-m", "fgtool"]


def run(args: list[str]) -> str:
    r = subprocess.run(FGTOOL + args, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"fgtool {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()[-400:]}")
    return r.stdout


def score(ckpt: Path, data: str, features: str, label: str, k: int) -> float:
    out = run(["eval", "--metric", "nmi", "--ckpt", str(ckpt), "--data", data, "--features", features,
               "--label", label, "--k", str(k), "--json", "-q"])
    return float(json.loads(out)["metrics"]["nmi"])


def plot(rows: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [int(r["step"]) for r in rows]
    for key, lab in (("parent_nmi", "parent NMI (phi_p, k = parents)"), ("child_nmi", "child NMI (all, k = classes)")):
        ax.plot(steps, [float(r[key]) for r in rows], marker="o", label=lab)
    ax.set_xlabel("step")
    ax.set_ylabel("NMI")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--recipe", required=True)
    ap.add_argument("--out", required=True, type=Path, help="run folder")
    ap.add_argument("--csv", required=True, type=Path)
    ap.add_argument("--every", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--parents", type=int, default=4)
    ap.add_argument("--classes", type=int, default=12)
    ap.add_argument("--set", action="append", default=[], dest="sets")
    a = ap.parse_args()
    rows = list(csv.DictReader(a.csv.open())) if a.csv.exists() else []
    done = int(rows[-1]["step"]) if rows else 0
    spent = float(rows[-1]["train_s"]) if rows else 0.0
    sets = [x for s in a.sets for x in ("--set", s)]
    while done < a.steps:
        nxt = min(done + a.every, a.steps)
        t0 = time.time()
        if done > 0:  # a resumed run keeps its own config; only the step count moves
            run(["train", "--resume", "--out", str(a.out), "-q", "--set", f"train.steps={nxt}"])
        else:
            run(["train", "--recipe", a.recipe, "--data", a.data, "--out", str(a.out), "-q",
                 "--set", f"train.steps={nxt}", *sets])
        spent += time.time() - t0
        ck = a.out / "last.pt"
        row = {"step": nxt, "train_s": round(spent, 1),
               "parent_nmi": round(score(ck, a.data, "parent", "parent", a.parents), 4),
               "child_nmi": round(score(ck, a.data, "all", "class", a.classes), 4)}
        rows.append(row)
        a.csv.parent.mkdir(parents=True, exist_ok=True)
        with a.csv.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            w.writeheader()
            w.writerows(rows)
        plot(rows, a.csv.with_suffix(".png"))
        print(json.dumps(row), flush=True)
        done = nxt


if __name__ == "__main__":
    main()
