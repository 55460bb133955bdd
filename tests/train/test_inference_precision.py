"""Inference in bf16 (``Loaded.autocast``): masks and cluster assignments agree with fp32.

Each model trains on the tiny recipe; on the fixed synthetic set, the same loaded weights
give fp32 and bf16-autocast outputs:

- masks (``segment``): the foreground probabilities within 0.05 of fp32 everywhere, and
  the foreground at 0.5 >= 99% equal on the pixels fp32 decides (farther than 0.05 from
  0.5; at least 40% of them). A model trained 12 steps leaves many pixels at 0.5, where
  any rounding flips the mask: OneGAN's tiny model has 51% of its pixels within 0.05 of 0.5
  and agrees on all the others;
- cluster assignments: C3-GAN's nearest centroid per image; for the models clustered by
  k-means on features, each image's nearest k-means centre, the centres fitted once on the
  fp32 features; >= 99% equal;
- samples (``sample``): the images differ by bf16 rounding, not more (0 < mean |diff| <
  0.02; 0 would mean the autocast never ran).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import train_tiny

MODELS = ("finegan", "mixnmatch", "c3gan", "ganseg", "onegan")
BAND = 0.05  # mask probabilities: bf16 stays this close to fp32; pixels this close to 0.5 are undecided


def _outputs(m, data, precision: str) -> dict:
    from fgtool.commands.cluster import features
    from fgtool.commands.segment import _masks
    from fgtool.data.evalset import batches, eval_set

    m.precision = precision
    out = {}
    caps = m.backend.capabilities()
    if "cluster" in caps:
        _, feats = features(m, str(data), workers=0)
        out["feats"] = feats
    if "segment" in caps:
        _, ds = eval_set(m, str(data), None, 0)
        fgs = []
        with torch.no_grad(), m.autocast():
            for b in batches(ds, 16, 0):
                fgs.append(_masks(m, b["image"])[0])
        out["fg"] = torch.cat(fgs)
    with torch.no_grad(), m.autocast():
        g = torch.Generator().manual_seed(0)
        out["sample"] = m.backend.generate(m.nets, m.backend.sample_codes(8, g))["image"].float()
    return out


def _nearest(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    return ((x[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)


@pytest.mark.parametrize("model", MODELS)
def test_bf16_inference_agrees_with_fp32(model, synth_dir, tmp_path):
    from sklearn.cluster import KMeans

    from fgtool.loading import load

    rep = train_tiny(model, tmp_path / "run", synth_dir, "train.steps=12")
    m = load(rep["checkpoint"] if "checkpoint" in rep else tmp_path / "run" / "last.pt")
    fp32, bf16 = _outputs(m, synth_dir, "no"), _outputs(m, synth_dir, "bf16")
    checked = []
    if "fg" in fp32:
        a, b = fp32["fg"], bf16["fg"]
        gap = (a - b).abs().max().item()
        assert gap < BAND, f"{model}: bf16 mask probabilities differ from fp32 by up to {gap:.4f}"
        decided = (a - 0.5).abs() > BAND
        agree = ((a > 0.5) == (b > 0.5))[decided].float().mean().item()
        assert decided.float().mean() > 0.4 and agree >= 0.99, f"{model}: masks agree on {agree:.4f} of pixels"
        checked.append("masks")
    if "feats" in fp32:
        if "_assign" in fp32["feats"]:
            a, b = fp32["feats"]["_assign"], bf16["feats"]["_assign"]
        else:
            keys = sorted(k for k in fp32["feats"] if not k.startswith("_"))
            f32 = np.concatenate([fp32["feats"][k] for k in keys], 1)
            f16 = np.concatenate([bf16["feats"][k] for k in keys], 1)
            centres = KMeans(n_clusters=3, n_init=4, random_state=0).fit(f32).cluster_centers_
            a, b = _nearest(f32, centres), _nearest(f16, centres)
        agree = float((a == b).mean())
        assert agree >= 0.99, f"{model}: cluster assignments agree on {agree:.4f} of {len(a)} images"
        checked.append("clusters")
    diff = (fp32["sample"] - bf16["sample"]).abs().mean().item()
    assert 0 < diff < 0.02, f"{model}: bf16 samples differ from fp32 by {diff:.4f} on average (0: not bf16)"
    assert checked, f"{model}: neither masks nor clusters were compared"
