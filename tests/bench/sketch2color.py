"""sketch2color on a synthetic set with masks: does feature mode follow a line drawing?

    python tests/bench/sketch2color.py CKPT DATA OUTDIR [--n 500] [--json FILE] [--sheet FILE]

The shape reference of ``fgtool mix --mode feature`` is, in turn, for the object views
(the crop the model saw in training, written as 128 px PNGs) of ``--n`` images B:

* ``photo``: B's photo itself;
* ``edges``: B's Canny edges, black lines on white (a line drawing);
* ``edges_inverted``: the same edges, white on black;
* ``other_edges``, ``other_edges_inverted``: the edges of another image, both ways
  round (chance: a drawing that is not B's);
* ``blank``: a white image (no drawing at all).

Texture and background come from a random photo A (seeded). Each condition reports the
IoU between the mix's object mask (parent and child masks, as ``eval --metric mix``'s
pose IoU) and B's true mask, and ``agree_with_photo``: the IoU between that mask and the
mask of the mix whose shape reference is B's photo. JSON on stdout (and in ``--json``).

The sheet is ``fgtool mix --grid shape`` itself: across the top, four object views (one
per parent) each followed by its line drawing; down the left, three texture and
background photos. The references are written under OUTDIR/refs.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import redirect_stdout
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from fgtool import api
from fgtool.data.datasets import _render
from fgtool.data.evalset import eval_set, view_region
from fgtool.io.images import load_image
from fgtool.metrics.mix import silhouette
from fgtool.metrics.segmentation import fg_iou
from fgtool.mixing import fit_square, mix_images

REF = 128  # side of the written reference PNGs (the model resizes them to its own size)
CANNY = (100, 200)  # OpenCV's usual hysteresis thresholds


def object_view(ds, rec) -> Image.Image:
    """B's object crop as the model saw it in training, at REF px."""
    img = load_image(rec.path)
    return _render(img, view_region(ds, rec, img.width, img.height), REF, Image.BICUBIC)


def line_drawing(photo: Image.Image) -> Image.Image:
    """Canny edges of ``photo`` as black lines on white (mode L)."""
    edges = cv2.Canny(np.asarray(photo.convert("L")), *CANNY)
    return Image.fromarray(255 - edges)


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return fg_iou(a[:, 0], b[:, 0])


def measure(m, ds, n: int, seed: int) -> dict:
    S = m.cfg.data.size
    rng = np.random.default_rng(seed)
    B = rng.choice(len(ds), size=min(n, len(ds)), replace=False)
    A = rng.integers(len(ds), size=len(B))
    C = np.roll(B, 1)  # another image's drawing for each B
    recs = ds.imageset.records
    photos = {int(i): object_view(ds, recs[int(i)]) for i in set(B.tolist()) | set(A.tolist())}
    drawings = {i: line_drawing(photos[i]) for i in B.tolist()}
    white = Image.new("L", (REF, REF), 255)

    def invert(im: Image.Image) -> Image.Image:
        return Image.fromarray(255 - np.asarray(im))

    def refs(cond: str, i: int, c: int) -> Image.Image:
        return {"photo": photos[i], "edges": drawings[i], "edges_inverted": invert(drawings[i]),
                "other_edges": drawings[c], "other_edges_inverted": invert(drawings[c]), "blank": white}[cond]

    conds = ("photo", "edges", "edges_inverted", "other_edges", "other_edges_inverted", "blank")
    sums = {k: 0.0 for k in conds}
    agree = {k: 0.0 for k in conds}
    for j in range(0, len(B), 64):
        b, a, c = B[j:j + 64].tolist(), A[j:j + 64].tolist(), C[j:j + 64].tolist()
        gt = torch.stack([ds[i]["mask"] for i in b])
        xa = torch.stack([fit_square(photos[i], S) for i in a])
        sil = {}
        for k in conds:  # every reference goes through the CLI's own loading (RGB, centre square, resize)
            xs = torch.stack([fit_square(refs(k, i, ci).convert("RGB"), S) for i, ci in zip(b, c)])
            o = mix_images(m, {"bg": xa, "texture": xa, "shape": xs}, mode="feature",
                           generator=torch.Generator().manual_seed(seed), outputs=True)
            sil[k] = silhouette(o)
            sums[k] += mask_iou(sil[k], gt) * len(b)
        for k in conds:
            agree[k] += mask_iou(sil[k], sil["photo"]) * len(b)
    return {"n": len(B), "seed": seed, "canny": list(CANNY), "ref_px": REF,
            "pose_iou": {k: round(v / len(B), 4) for k, v in sums.items()},
            "agree_with_photo": {k: round(v / len(B), 4) for k, v in agree.items()}}


def sheet(m, ds, ckpt: str, out_dir: Path, sheet_path: Path, seed: int) -> dict:
    """Four object views (one per parent) and their drawings across the top, three texture
    and background photos down the left: ``fgtool mix --mode feature --grid shape``."""
    from fgtool.cli import main

    recs = ds.imageset.records
    rng = np.random.default_rng([seed, 5])
    order = rng.permutation(len(recs))
    shapes, bases, seen_p, seen_c = [], [], set(), set()
    for i in order:
        r = recs[int(i)]
        if r.parent not in seen_p and len(shapes) < 4:
            seen_p.add(r.parent)
            shapes.append(int(i))
        elif r.label not in seen_c and r.bg not in {recs[k].bg for k in bases} and len(bases) < 3:
            seen_c.add(r.label)
            bases.append(int(i))
    refs = out_dir / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    cols, rows = [], []
    for i in shapes:
        photo = object_view(ds, recs[i])
        photo.save(refs / f"photo_{i:05d}.png")
        line_drawing(photo).save(refs / f"sketch_{i:05d}.png")
        cols += [refs / f"photo_{i:05d}.png", refs / f"sketch_{i:05d}.png"]
    for i in bases:
        object_view(ds, recs[i]).save(refs / f"texture_{i:05d}.png")
        rows.append(refs / f"texture_{i:05d}.png")
    argv = ["mix", "--ckpt", ckpt, "--mode", "feature", "--grid", "shape", "--seed", str(seed)]
    argv += [a for p in cols for a in ("--shape", str(p))] + [a for p in rows for a in ("--base", str(p))]
    argv += ["--out", str(sheet_path)]
    with redirect_stdout(sys.stderr):  # its report; stdout is this script's JSON
        if main(argv) != 0:
            raise SystemExit("fgtool mix failed")
    return {"sheet": str(sheet_path), "command": "fgtool " + " ".join(argv),
            "columns": [str(p) for p in cols], "rows": [str(p) for p in rows]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ckpt")
    ap.add_argument("data")
    ap.add_argument("out_dir")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    ap.add_argument("--sheet")
    a = ap.parse_args()
    torch.set_num_threads(1)
    m = api.load(a.ckpt, device="cpu")
    _, ds = eval_set(m, a.data, with_masks=True)
    if not ds.use_masks:
        raise SystemExit(f"{a.data}: no masks (segmentations/) to score against")
    out_dir = Path(a.out_dir)
    res = {"checkpoint": a.ckpt, "step": m.step, "data": a.data, **measure(m, ds, a.n, a.seed)}
    if a.sheet:
        res["sheet"] = sheet(m, ds, a.ckpt, out_dir, Path(a.sheet), a.seed)
    text = json.dumps(res, indent=1)
    if a.json:
        Path(a.json).write_text(text + "\n")
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
