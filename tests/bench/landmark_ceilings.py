"""What part layouts cut from the true masks reach on the landmark metric of a synthetic set.

The landmark metric (``fgtool eval --metric landmarks``) regresses the keypoints from the part
centres, linearly and without bias, in the view's [-1, 1] coordinates. How low the error can go
depends on what the parts are, so this script scores part layouts cut from each image's true
mask, with no model:

- ``fg``: the mask's centre of mass (what a K = 1 model gives);
- ``hbands4`` / ``vbands4``: four horizontal (vertical) bands of equal area;
- ``quad4``: the four quadrants about the centre of mass;
- ``hbands2+vbands2``: two horizontal and two vertical halves;
- ``axis4``: four bands of equal area along the mask's own long axis (its principal axis, ends
  ordered top to bottom): bands that turn with the object but cannot tell which way it faces;
- ``kpcells4``: the mask cut into the cells of its first four keypoints (each pixel to the
  nearest one): parts that follow the object's own frame, facing included, as semantic parts
  (head, tail, ...) would.

Fit on a seeded half, scored on the other half, normalised by the view's side, as the metric is.

    python tests/bench/landmark_ceilings.py data/synth64 --out ceilings.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from fgtool.metrics import landmarks as lm


def layouts(mask: np.ndarray, keypoints: np.ndarray) -> dict[str, np.ndarray]:
    """Part centres [K, 2] in view coordinates for each layout, from a boolean mask and the
    image's keypoints [P, 2] in pixels."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)

    def view(x, y):
        return np.array([(x + 0.5) / w * 2 - 1, (y + 0.5) / h * 2 - 1])

    def bands(coord, k):
        return [view(xs[p].mean(), ys[p].mean()) for p in np.array_split(np.argsort(coord, kind="stable"), k)]

    cx, cy = xs.mean(), ys.mean()
    q = np.stack([xs - cx, ys - cy], 1)
    axis = np.linalg.eigh(q.T @ q)[1][:, 1]
    axis = -axis if axis[1] < 0 else axis  # the end nearer the top first
    near = np.argmin(((np.stack([xs, ys], 1)[:, None] + 0.5 - keypoints[None, :4]) ** 2).sum(-1), 1)
    cells = [view(xs[near == j].mean(), ys[near == j].mean()) if (near == j).any() else view(cx, cy) for j in range(4)]
    quads = [(xs < cx) & (ys < cy), (xs >= cx) & (ys < cy), (xs < cx) & (ys >= cy), (xs >= cx) & (ys >= cy)]
    return {"fg": np.array([view(cx, cy)]), "hbands4": np.array(bands(ys, 4)), "vbands4": np.array(bands(xs, 4)),
            "quad4": np.array([view(xs[q].mean(), ys[q].mean()) if q.any() else view(cx, cy) for q in quads]),
            "hbands2+vbands2": np.array(bands(ys, 2) + bands(xs, 2)), "axis4": np.array(bands(q @ axis, 4)),
            "kpcells4": np.array(cells)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", help="a synthetic set (fgtool data synth): segmentations/ and parts/part_locs.txt")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    root = Path(a.data)
    keypoints = lm.read_keypoints(root)
    names = [line.split()[1] for line in (root / "images.txt").read_text().splitlines() if line.strip()]
    cents: dict[str, list] = {}
    kps, vis = [], []
    for n in names:
        mask = np.asarray(Image.open(root / "segmentations" / Path(n).with_suffix(".png")).convert("L")) >= 128
        kp, v = keypoints[(root / "images" / n).resolve()]
        for k, c in layouts(mask, kp).items():
            cents.setdefault(k, []).append(c)
        h, w = mask.shape
        kps.append(lm.to_view(kp, (0, 0, w, h)))
        vis.append(v)
    kps, vis = np.array(kps), np.array(vis, bool)
    idx = np.random.default_rng(a.seed).permutation(len(kps))
    tr, te = idx[: len(idx) // 2], idx[len(idx) // 2:]
    norm = np.full(len(te), 2.0)  # the side of the view, in view units
    out = {}
    for k, c in cents.items():
        c = np.array(c)
        out[k] = round(lm.regression_error(c[tr], kps[tr], vis[tr], c[te], kps[te], vis[te], norm)["landmark_error"], 4)
    out["keypoints_themselves"] = round(
        lm.regression_error(kps[tr], kps[tr], vis[tr], kps[te], kps[te], vis[te], norm)["landmark_error"], 4)
    res = {"data": str(root), "images": len(kps), "split": f"seeded 50/50 (seed {a.seed})", "landmark_error": out,
           "below_fg": {k: round(1 - v / out["fg"], 3) for k, v in out.items() if k != "fg"}}
    text = json.dumps(res, indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
