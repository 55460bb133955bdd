"""Which factor of the synthetic set each feature group of a model clusters by.

    python tests/bench/factor_nmi.py --ckpt runs/fg/last.pt --data data/synth128cub [--out factors.json]

The synthetic set knows every image's shape (the parent label), colour, pattern, background
and class. For each feature group the model names for clustering (FineGAN: ``parent``,
``child``; and ``all``) and for the photos' pixels (``pixels``, k-means on 32 px: the
floor): k-means with k = the number of values of a factor, and the NMI of those clusters
against that factor. A parent feature that reads shape scores high under
``shape`` and low elsewhere; one that reads colour or the background shows it in those
columns. Prints one JSON object: ``{group: {factor: nmi}}`` plus the set's sizes.

For a generator with parent and child codes (FineGAN, MixNMatch) it also asks what each code
draws: ``eval --metric mix``'s probe (a small CNN fitted on renders whose shape and appearance
are drawn independently) reads the shape and the appearance of 2,000 generated images, and
``generated`` holds the NMI of p and of c against the probed shape, colour and appearance. A
parent code that draws the shape scores 1 under ``p/shape``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def child_codes(meta: dict, key: str) -> np.ndarray:
    """Each child class's colour or pattern as an index into the sorted names."""
    values = [a[key] for a in meta["child_appearance"]]
    names = sorted(set(values))
    return np.array([names.index(v) for v in values])


def factors(data: Path, classes: np.ndarray, imageset) -> dict[str, np.ndarray]:
    """Per-image values of every factor, from the class of each image and the set's meta.json."""
    from fgtool.commands.cluster import _labels

    meta = json.loads((data / "meta.json").read_text())
    return {"shape": np.asarray(meta["child_to_parent"])[classes], "colour": child_codes(meta, "colour")[classes],
            "pattern": child_codes(meta, "pattern")[classes], "background": _labels(imageset, "bg"),
            "class": classes}


def generated(m, data: Path, n: int = 2000) -> dict[str, float]:
    """NMI of the p and c codes against the probed shape, colour and appearance of their images."""
    from fgtool.data.evalset import eval_set
    from fgtool.metrics.clustering import nmi
    from fgtool.metrics.mix import predict, render_factorial, synth_meta, train_probe

    meta = synth_meta(str(data))
    _, ds = eval_set(m, str(data))
    n_sh, n_tx = len(meta["parents"]), int(meta["n_children"])
    x, s, t = render_factorial(meta, m.cfg.data.size, 3000, 0, ds.crop_scale if ds.use_real else None)
    probe = train_probe(x, s, t, n_sh, n_tx, seed=0)
    g = torch.Generator().manual_seed(0)
    codes = m.backend.sample_codes(n, g)
    with torch.no_grad():
        imgs = torch.cat([m.backend.generate(m.nets, {k: v[i:i + 200] for k, v in codes.items()})["image"].float().cpu()
                          for i in range(0, n, 200)])
    shape, app = (v.numpy() for v in predict(probe, imgs))
    colour = child_codes(meta, "colour")[app]
    out = {}
    for code in ("p", "c"):
        y = codes[code].numpy()
        for name, v in (("shape", shape), ("colour", colour), ("appearance", app)):
            out[f"{code}/{name}"] = round(float(nmi(y, v)), 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    torch.set_num_threads(1)
    from fgtool.commands.cluster import _labels, _predict, features
    from fgtool.commands.eval import _load_small
    from fgtool.loading import load
    from fgtool.metrics.clustering import nmi, pixel_kmeans_floor

    m = load(a.ckpt)
    imageset, feats = features(m, str(a.data), workers=1)
    truth = factors(a.data, _labels(imageset, "class"), imageset)
    groups = [g for g in sorted(feats) if not g.startswith("_")] + ["all"]
    ks = {name: int(len(np.unique(y))) for name, y in truth.items()}  # k-means k = the factor's values
    pixels = _load_small(imageset, 32)
    table = {"pixels": {name: round(float(pixel_kmeans_floor(pixels, y, ks[name], metrics=("nmi",))["nmi"]), 4)
                        for name, y in truth.items()}}
    for g in groups:
        row = {}
        for name, y in truth.items():
            pred, *_ = _predict(m, feats, ks[name], g, 0, n_classes=ks[name])
            row[name] = round(float(nmi(y, pred)), 4)
        table[g] = row
    gen = generated(m, a.data) if {"p", "c"} <= set(m.backend.code_sizes()) else None
    out = {"ckpt": str(a.ckpt), "n": int(len(truth["class"])), "k": ks, "nmi": table, "generated": gen}
    text = json.dumps(out, indent=1)
    if a.out:
        a.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
