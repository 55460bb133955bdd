"""FineGAN specifics: patch geometry and labels, code hierarchy, compositing, warm-up."""

from __future__ import annotations

import torch
from conftest import TINY

from fgtool import api
from fgtool.backends.finegan import FineGAN, bce
from fgtool.nn.blocks import PatchDiscriminator


def _backend(*sets):
    cfg = api.resolve_config("finegan", None, str(TINY), list(sets))
    return FineGAN(cfg.model_cfg, cfg.data.size)


def test_paper_patch_geometry_at_128px():
    d = PatchDiscriminator(4, 128)
    adv, aux = d(torch.zeros(1, 3, 128, 128))
    assert (d.rf, d.stride) == (34, 4)
    assert adv.shape[-2:] == (24, 24) and aux.shape == adv.shape


def test_patch_labels_follow_the_paper_rule():
    d = PatchDiscriminator(4, 128)
    box = torch.zeros(1, 1, 128, 128)
    box[..., 60:100, 60:100] = 1  # object box, x and y in [60, 100)
    w = d.patch_weights(box, (24, 24), thresh=1.0)
    # patch (i, j) sees pixels [4i, 4i+34): background iff that window misses [60, 100)
    for i in range(24):
        for j in range(24):
            hit = (4 * i < 100 and 4 * i + 34 > 60) and (4 * j < 100 and 4 * j + 34 > 60)
            assert w[0, 0, i, j] == (0.0 if hit else 1.0), (i, j)
    # a looser threshold admits patches that only graze the box
    assert d.patch_weights(box, (24, 24), thresh=0.5).sum() > w.sum()


def test_codes_follow_the_hierarchy():
    b = _backend()  # tiny: 6 children, 2 parents -> 3 children per parent
    g = torch.Generator().manual_seed(0)
    codes = b.sample_codes(200, g)
    assert torch.equal(codes["p"], codes["c"] // 3)
    assert torch.equal(codes["b"], codes["c"])  # b = c while training
    free = b.sample_codes(200, g, tie_b=False)
    assert (free["b"] != free["c"]).float().mean() > 0.5
    fixed = b.sample_codes(50, g, p=1)
    assert set(fixed["c"].tolist()) <= {3, 4, 5} and (fixed["p"] == 1).all()
    assert (b.sample_codes(7, g, c=4)["p"] == 1).all()


def test_images_are_the_stated_composites():
    b = _backend()
    nets = b.build()
    for m in nets.values():
        m.eval()
    with torch.no_grad():
        out = b.generate(nets, b.sample_codes(4, torch.Generator().manual_seed(1)))
    P = out["parent_mask"] * out["parent_fg"] + (1 - out["parent_mask"]) * out["background"]
    C = out["child_mask"] * out["child_fg"] + (1 - out["child_mask"]) * P
    assert torch.allclose(out["parent"], P, atol=1e-6)
    assert torch.allclose(out["image"], C, atol=1e-6)


def test_background_warmup_fades_from_all_patches_to_box_labels():
    b = _backend("model.bg_warmup=100", "model.bg_patch_thresh=1.0")
    torch.manual_seed(0)
    nets = b.build()
    s = b.size
    fg = torch.zeros(4, 1, s, s)
    fg[..., 4:28, 4:28] = 1
    batch = {"image": torch.rand(4, 3, s, s) * 2 - 1, "fg": fg}
    r_adv, _ = nets["Dbg"](batch["image"])
    w = nets["Dbg"].patch_weights(fg, tuple(r_adv.shape[-2:]), 1.0)
    per_patch = bce(r_adv, 1.0, "none")
    all_patches = per_patch.mean()
    boxed = (per_patch * w).sum() / w.sum().clamp(min=1)
    assert not torch.isclose(all_patches, boxed)
    for step, expect in ((0, all_patches), (100, boxed)):
        batch["cache"] = {}
        parts = b.loss("D", nets, batch, step)
        assert torch.isclose(parts["d_bg_real"], expect, atol=1e-5), step


def test_generator_code_convs_match_tiled_codes():
    """The parent/child joint convs skip the tiled one-hot maps; the numbers are a plain conv's."""
    from fgtool.backends.finegan import FineGANConfig, GeneratorFG
    from fgtool.nn.blocks import CodeConv

    torch.manual_seed(0)
    cfg = FineGANConfig(n_child=6, n_parent=2, z_dim=8, ngf=8, ndf=8)
    G = GeneratorFG(cfg, 32).eval()
    z = torch.randn(5, 8)
    c = torch.tensor([0, 1, 2, 3, 5])
    with torch.no_grad():
        fast = G(z, c, c // 3, c)
        CodeConv.naive = True
        try:
            ref = G(z, c, c // 3, c)
        finally:
            CodeConv.naive = False
    for k in ("image", "parent_mask", "child_mask"):
        assert torch.allclose(fast[k], ref[k], atol=1e-5), k
    assert set(G.state_dict()) >= {"p_joint.0.weight", "c_joint.0.weight"}  # checkpoint keys unchanged


def test_training_warp_moves_the_object_layers_only():
    # grid scale 2, no rotation or shift: the object layers shrink to the central half, so
    # the outer ring of the training image is the background itself; without the warp
    # (sampling, mixing, eval) it is not
    b = _backend("model.perturb=strong", "model.perturb_scale=[2.0, 2.0]", "model.perturb_rot=0",
                 "model.perturb_shift=0")
    nets = b.build()
    for m in nets.values():
        m.eval()
    codes = b.sample_codes(4, torch.Generator().manual_seed(2))
    with torch.no_grad():
        warped = b.generate(nets, codes, perturb=True)
        plain = b.generate(nets, codes)
    s = warped["image"].shape[-1]
    ring = torch.ones(s, s, dtype=torch.bool)
    ring[s // 4 - 1:3 * s // 4 + 2, s // 4 - 1:3 * s // 4 + 2] = False  # the central half, and a pixel
    assert torch.equal(warped["background"], plain["background"])
    assert warped["parent_mask"][..., ring].abs().max() < 1e-6
    assert warped["child_mask"][..., ring].abs().max() < 1e-6
    assert (warped["image"] - warped["background"])[..., ring].abs().max() < 1e-5
    assert (plain["image"] - plain["background"])[..., ring].abs().max() > 1e-2
    # the warp is the training batch's: the cached fake of a step is warped
    batch = {"image": torch.zeros(4, 3, s, s)}
    out, _ = b._fake(nets, batch, grad=False)
    assert out["parent_mask"][..., ring].abs().max() < 1e-6


def test_unknown_warp_preset_is_a_config_error():
    import pytest

    from fgtool.errors import FgtoolError

    with pytest.raises(FgtoolError, match="model.perturb"):
        _backend("model.perturb=wild")


def test_child_in_parent_keeps_the_child_mask_inside_the_parent_silhouette():
    codes = _backend().sample_codes(4, torch.Generator().manual_seed(3))
    for inside in (True, False):
        b = _backend(f"model.child_in_parent={str(inside).lower()}")
        torch.manual_seed(0)
        nets = b.build()
        with torch.no_grad():
            out = b.generate(nets, codes)
        over = (out["child_mask"] - out["parent_mask"]).max()
        if inside:
            assert over <= 1e-6
            assert out["child_mask"].mean() > 1e-3  # not emptied
        else:
            assert over > 1e-3  # an untrained child mask pokes out of the parent's


def test_tie_b_false_draws_the_training_background_on_its_own():
    g = torch.Generator().manual_seed(4)
    free = _backend("model.tie_b=false").sample_codes(300, g)
    assert (free["b"] != free["c"]).float().mean() > 0.5
    assert torch.equal(free["p"], free["c"] // 3)
    tied = _backend().sample_codes(300, g)
    assert torch.equal(tied["b"], tied["c"])
    # an explicit argument still wins over the config
    assert torch.equal(*(lambda d: (d["b"], d["c"]))(_backend("model.tie_b=false").sample_codes(50, g, tie_b=True)))
