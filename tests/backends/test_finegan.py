"""FineGAN specifics: code hierarchy, compositing, warm-up (the patch discriminator: tests/nn/test_blocks.py)."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY, tiny_backend

from fgtool import api
from fgtool.backends.finegan import bce
from fgtool.errors import FgtoolError


def _backend(*sets):
    return tiny_backend("finegan", *sets)


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
    box = torch.tensor([[12.0, 12.0, 20.0, 20.0]]).repeat(4, 1)
    batch = {"image": torch.rand(4, 3, s, s) * 2 - 1, "box": box}
    D = nets["Dbg"]
    r_adv, _ = D(b.bg_view(nets, batch["image"]))
    w = D.box_labels(box * D.side / s, r_adv.shape[-1], 1.0)
    assert 0 < w.mean() < 1
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
    b = _backend("model.perturb=strong")
    b.perturb = ((2.0, 2.0), 0.0, 0.0)
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


def test_tie_b_false_draws_the_training_background_on_its_own():
    g = torch.Generator().manual_seed(4)
    free = _backend("model.tie_b=false").sample_codes(300, g)
    assert (free["b"] != free["c"]).float().mean() > 0.5
    assert torch.equal(free["p"], free["c"] // 3)
    tied = _backend().sample_codes(300, g)
    assert torch.equal(tied["b"], tied["c"])
    # an explicit argument still wins over the config
    assert torch.equal(*(lambda d: (d["b"], d["c"]))(_backend("model.tie_b=false").sample_codes(50, g, tie_b=True)))


def test_child_fills_parent_makes_the_outline_ps_and_the_look_cs():
    b = _backend("model.child_fills_parent=true")
    torch.manual_seed(0)
    nets = b.build()
    codes = b.sample_codes(4, torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = b.generate(nets, codes)
        other = b.generate(nets, {**codes, "c": (codes["c"] + 1) % 6})  # same p, z, b; another child
    assert torch.equal(out["child_mask"], out["parent_mask"])
    assert torch.equal(other["parent_mask"], out["parent_mask"])  # the outline does not move with c
    m = out["parent_mask"]
    # inside the silhouette the picture is the child layer, outside it the background
    assert torch.allclose(out["image"], m * out["child_fg"] + (1 - m) * out["background"], atol=1e-6)
    assert (other["image"] - out["image"]).abs().max() > 1e-3


def test_info_p_on_the_silhouette_ignores_the_parent_colours():
    b = _backend("model.info_p_input=mask")
    torch.manual_seed(0)
    nets = b.build()
    nets["Dp"].eval()
    codes = b.sample_codes(4, torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = b.generate(nets, codes)
        recolour = {**out, "parent_fg": -out["parent_fg"]}
        assert b.info_terms(nets, out, codes)[0] == b.info_terms(nets, recolour, codes)[0]
        paper = _backend()
        assert paper.info_terms(nets, out, codes)[0] != paper.info_terms(nets, recolour, codes)[0]
        reshaped = {**out, "parent_mask": out["parent_mask"].flip(3)}
        assert b.info_terms(nets, out, codes)[0] != b.info_terms(nets, reshaped, codes)[0]


def test_no_background_d_when_its_weights_are_zero():
    b = _backend("model.w_bg_adv=0", "model.w_bg_aux=0")
    torch.manual_seed(0)
    nets = b.build()
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    batch = {"image": x, "cache": {}, "box": torch.tensor([[4.0, 4.0, 28.0, 28.0]] * 4)}
    lg = b.loss("G", nets, batch, 0)
    lg["loss"].backward()
    ld = b.loss("D", nets, batch, 0)
    ld["loss"].backward()
    assert all(p.grad is None for p in nets["Dbg"].parameters())
    assert lg["g_bg_adv"] == 0 and ld["d_bg_real"] == 0 and ld["d_bg_fake"] == 0
    assert ld["d_child_real"] > 0 and ld["d_child_fake"] > 0
    # the background stage still learns, through the image D
    assert nets["G"].bg_backbone.fc[0].weight.grad.abs().sum() > 0


def test_bad_info_p_input_is_a_user_error():
    with pytest.raises(FgtoolError, match="info_p_input"):
        _backend("model.info_p_input=colour")


def test_bg_shift_shows_a_random_window_in_training_and_the_centre_otherwise():
    b = _backend("model.bg_shift=true")
    torch.manual_seed(0)
    nets = b.build()
    G = nets["G"]
    codes = b.sample_codes(4, torch.Generator().manual_seed(7))
    z, b1 = codes["z"], torch.nn.functional.one_hot(codes["b"], 6).float()
    G.eval()
    with torch.no_grad():
        canvas = G.bg_head(G.bg_backbone(torch.cat([z, b1], 1)))
        assert canvas.shape[-1] == 64
        centre = G.background(z, b1)
        assert torch.equal(centre, canvas[..., 16:48, 16:48])
        assert b.generate(nets, codes)["background"].shape[-1] == 32
    G.train()
    G.bg_backbone.eval()  # fixed BN statistics, so only the window moves
    G.bg_head.eval()
    with torch.no_grad():
        torch.manual_seed(1)
        wins = G.background(z, b1)
    found = []
    for i in range(4):  # each training window is some 32 x 32 window of its canvas
        hits = [(y, x) for y in range(33) for x in range(33)
                if torch.equal(wins[i], canvas[i, :, y:y + 32, x:x + 32])]
        assert hits, i
        found.append(hits[0])
    assert len(set(found)) > 1  # not one offset for all


def test_pose_warp_keeps_the_silhouette_ps_and_lets_z_only_move_it():
    b = _backend("model.pose_warp=true", "model.child_fills_parent=true")
    torch.manual_seed(0)
    nets = b.build()
    G = nets["G"].eval()
    g = torch.Generator().manual_seed(8)
    codes = b.sample_codes(2, g)
    codes["p"] = torch.tensor([0, 1])
    codes["c"] = codes["p"] * 3
    with torch.no_grad():
        G.pose.weight.zero_()
        G.pose.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 5.0]))  # identity pose (no mirror)
        a = b.generate(nets, codes)
        moved = b.generate(nets, {**codes, "z": torch.randn(2, codes["z"].shape[1], generator=g)})
        # with an identity pose head the object no longer depends on z at all
        assert torch.allclose(a["parent_mask"], moved["parent_mask"], atol=1e-5)
        G.pose.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, -5.0]))  # mirror on x
        p1 = torch.nn.functional.one_hot(codes["p"], 2).float()
        mirrored = G.parent_features(codes["z"], p1)  # the pose moves phi(p), the heads then draw
        G.pose.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 5.0]))
        assert torch.allclose(mirrored, G.parent_features(codes["z"], p1).flip(3), atol=1e-4)
        other_p = b.generate(nets, {**codes, "p": codes["p"].flip(0)})
        assert (other_p["parent_mask"] - a["parent_mask"]).abs().max() > 1e-3


def _hard_batch(n: int, size: int) -> dict:
    g = torch.Generator().manual_seed(1)
    return {"image": torch.rand(n, 3, size, size, generator=g) * 2 - 1}


def test_hard_negative_steps_train_on_the_least_recognised_codes():
    """From hard_start, every second step renders the n codes, out of 10 random batches,
    whose masked child layer Dc's information head gives the lowest probability of their own
    code (the authors' hard-negative iterations); the other steps draw codes as usual."""
    b = _backend("model.hard_start=100")
    nets = b.build()
    for net in nets.values():
        net.eval()  # fixed BatchNorm statistics: a code's probability does not depend on its batch
    n = 8
    assert [b.hard_step(s) for s in (0, 99, 100, 101, 102, 103)] == [False, False, False, True, False, True]

    torch.manual_seed(3)
    out, codes = b._fake(nets, _hard_batch(n, b.size), grad=False, step=101)
    torch.manual_seed(3)
    cands, probs = [], []
    with torch.no_grad():
        for _ in range(10):
            cd = b.sample_codes(n)
            o = b.generate(nets, cd)
            logits = nets["Dc"].forward_info(o["child_mask"] * o["child_fg"]).float()
            probs.append(logits.softmax(1)[torch.arange(n), cd["c"]])
            cands.append(cd)
    allp = torch.cat(probs)
    allc = torch.cat([cd["c"] for cd in cands])
    allz = torch.cat([cd["z"] for cd in cands])
    chosen = torch.stack([torch.nonzero((allz == z).all(1))[0, 0] for z in codes["z"]])
    assert torch.equal(allc[chosen], codes["c"]) and torch.equal(codes["p"], codes["c"] // b.ratio)
    rest = torch.ones(10 * n, dtype=torch.bool)
    rest[chosen] = False
    assert allp[chosen].max() <= allp[rest].min()  # the n hardest of the 80
    assert allp[chosen].mean() < allp.mean()

    torch.manual_seed(3)
    _, plain = b._fake(nets, _hard_batch(n, b.size), grad=False, step=102)
    torch.manual_seed(3)
    assert torch.equal(plain["z"], b.sample_codes(n)["z"])  # an ordinary step


def test_hard_start_is_finegans_alone():
    with pytest.raises(FgtoolError, match="hard_start"):
        _backend("model.hard_start=-1")
    with pytest.raises(FgtoolError, match="hard_start"):  # the config check builds the backend
        api.resolve_config("mixnmatch", None, str(TINY), ["model.hard_start=10"])
