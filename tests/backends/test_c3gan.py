"""C3-GAN specifics: code sampling, the contrastive pieces, centroid clustering, no boxes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, tiny_backend

from fgtool import api
from fgtool.data.evalset import box_mode
from fgtool.metrics.clustering import acc
from fgtool.nn.losses import cosine_logits


def _backend(*sets):
    return tiny_backend("c3gan", *sets)


def test_codes_cover_every_row_even_when_batch_exceeds_k():
    b = _backend()  # tiny: 3 classes x 2 = 6 clusters
    assert b.k == 6
    for n in (4, 6, 20, 64):
        c = b.sample_codes(n, torch.Generator().manual_seed(n))["c"]
        assert c.shape == (n,) and c.min() >= 0 and c.max() < 6
        counts = torch.bincount(c, minlength=6)
        assert counts.max() - counts.min() <= 1  # balanced: concatenated permutations
        g = b.build()["G"]
        one = F.one_hot(c, 6)
        assert (one.sum(1) == 1).all()  # no all-zero code rows (the authors' bug for n > K)
        del g
    fixed = b.sample_codes(5, c=4)["c"]
    assert fixed.tolist() == [4] * 5
    with pytest.raises(Exception):
        b.sample_codes(2, c=6)


def test_generator_layers_and_perturbation_only_in_training():
    b = _backend()
    nets = b.build()
    for m in nets.values():
        m.eval()
    codes = b.sample_codes(4, torch.Generator().manual_seed(0))
    torch.set_grad_enabled(False)
    try:
        out = b.generate(nets, codes)
        again = b.generate(nets, codes)
        warped = b.generate(nets, {**codes}, perturb=True)
    finally:
        torch.set_grad_enabled(True)
    assert out["image"].shape == (4, 3, 32, 32) and out["mask"].shape == (4, 1, 32, 32)
    assert 0 <= float(out["mask"].min()) and float(out["mask"].max()) <= 1
    rebuilt = out["mask"] * out["foreground"] + (1 - out["mask"]) * out["background"]
    assert torch.allclose(rebuilt, out["image"], atol=1e-6)
    assert torch.equal(again["image"], out["image"])  # no warp at sample time
    assert torch.equal(warped["background"], out["background"])
    assert not torch.allclose(warped["mask"], out["mask"])


def test_assign_picks_the_most_similar_centroid():
    b = _backend()
    nets = b.build()
    D = nets["D"].eval()
    cents = D.centres().detach()
    # pretend the semantic head returns a centroid (scaled): the image must land there
    target = torch.tensor([2, 5, 0])
    D.semantic = lambda x: cents[target] * 3.0
    idx, conf = b.assign(nets, torch.zeros(3, 3, 32, 32))
    assert idx.tolist() == target.tolist()
    want = cosine_logits(cents[target], cents, b.cfg.tau).softmax(1).max(1).values
    assert torch.allclose(conf, want)


def test_overcluster_accuracy_repeats_each_class():
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 3, 1, 4, 2, 5])  # two clusters per class
    assert acc(y, pred, overcluster=2) == 1.0
    assert acc(y, pred, overcluster=1) == 0.5


def test_trained_tiny_model_clusters_with_confidences(tmp_path, synth_dir):
    run = tmp_path / "run"
    api.train("c3gan", str(synth_dir), str(TINY), ["train.steps=2"], str(run), progress=False)
    assert box_mode(api.resolve_config("c3gan", str(synth_dir), str(TINY), [])) == "none"
    res = api.cluster(str(run / "last.pt"), str(synth_dir), str(tmp_path / "c.json"), workers=0)
    doc = json.loads((tmp_path / "c.json").read_text())
    assert doc["method"] == "centroids" and doc["k"] == 6 and doc["overcluster"] == 2
    assert len(doc["items"]) == 48
    for it in doc["items"]:
        assert 0 <= it["cluster"] < 6 and 1 / 6 - 1e-6 <= it["confidence"] <= 1.0
    assert res["metrics"]["n"] == 48 and 0 <= res["metrics"]["nmi"] <= 1
    # the same predictions scored by eval --pred
    ev = api.evaluate("nmi", str(synth_dir), pred=str(tmp_path / "c.json"))
    assert math.isclose(ev["metrics"]["nmi"], res["metrics"]["nmi"], rel_tol=1e-9)
    # --k groups the over-clusters: at most k ids, and each centroid maps to one group
    api.cluster(str(run / "last.pt"), str(synth_dir), str(tmp_path / "g.json"), k=2, workers=0, sheets=False)
    g = json.loads((tmp_path / "g.json").read_text())
    by = {}
    for a, b in zip(doc["items"], g["items"]):
        by.setdefault(a["cluster"], set()).add(b["cluster"])
        assert b["cluster"] < 2
    assert all(len(v) == 1 for v in by.values())
    # Fig. 4a: the real image, then generated images of its cluster
    out = api.sample(str(run / "last.pt"), str(tmp_path / "s.png"), n=8, like=[doc["items"][0]["path"]],
                     grids=False)
    from PIL import Image

    w, h = Image.open(out["files"]["like"]).size
    assert w > 9 * 32 and h >= 32


def test_authors_options_build_their_widths_init_and_iteration():
    """The options fgtool/recipes/c3gan-cub.toml sets (tests/reference/test_reference_c3gan.py proves them
    equal to the authors' code at 128 px); here what each does at the tiny setting."""
    from fgtool.backends.c3gan import binary_entropy_bits, generator_widths

    assert generator_widths("authors", 16, 128) == [256, 128, 64, 16, 16]
    assert generator_widths("authors", 4, 32) == [64, 4, 4] and generator_widths("halving", 4, 32) is None
    with pytest.raises(Exception, match="g_widths"):
        _backend("model.g_widths=wide")
    with pytest.raises(Exception, match="mask_entropy"):
        _backend("model.mask_entropy=bit")
    assert math.isclose(float(binary_entropy_bits(torch.tensor([0.5]))), 1.0, rel_tol=1e-5)  # one bit
    assert float(binary_entropy_bits(torch.tensor([0.0]))) < 1e-4

    ours = _backend()
    theirs = _backend("model.shared_fake=false", "model.g_widths=authors", "model.d_first_bias=false",
                      "model.conv_bias_init=torch", "model.mask_entropy=bits")
    torch.manual_seed(0)
    n_ours, n_theirs = ours.build(), theirs.build()
    assert n_ours["D"].base[0].net[0][0].bias is not None and n_theirs["D"].base[0].net[0][0].bias is None
    assert [b[1].out_channels // 2 for b in n_theirs["G"].bg.ups] == [64, 4, 4]
    assert [b[1].out_channels // 2 for b in n_ours["G"].bg.ups] == [64, 32, 16]
    for conv in (n_theirs["D"].adv, n_theirs["D"].sem[3]):  # PyTorch's default bias draw
        bound = 1 / math.sqrt(conv.weight[0].numel())
        b = conv.bias.detach().abs().max()
        assert 0 < b <= bound
    assert float(n_ours["D"].adv.bias.detach().abs().max()) == 0.0

    assert [p.name for p in ours.phases()] == ["G", "D"] and [p.name for p in theirs.phases()] == ["D", "G"]
    batch = {"image": torch.rand(4, 3, 32, 32) * 2 - 1}
    theirs.loss("D", n_theirs, batch, 1)
    theirs.loss("G", n_theirs, batch, 1)
    (out_d, codes_d), (out_g, codes_g) = batch["cache"]["fake_D"], batch["cache"]["fake_G"]
    assert not out_d["image"].requires_grad and out_g["image"].requires_grad  # D's render has no graph
    assert not torch.equal(codes_d["z"], codes_g["z"])  # G renders new codes
    batch = {"image": batch["image"]}
    ours.loss("G", n_ours, batch, 1)
    ours.loss("D", n_ours, batch, 1)
    assert list(batch["cache"]) == ["fake"]  # one render, shared
