"""GANSeg specifics: the point/mask hierarchy, translation equivariance, lazy fp32 R1,
the penalties, the segmenter stage, `fgtool segment` and `eval --metric iou,dice`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, mask_iou, one_error_line, run_cli, run_json, same_checkpoints, square_scene
from PIL import Image

from fgtool import api
from fgtool import checkpoint as ckpt
from fgtool.backends.ganseg import GANSeg, r1_penalty
from fgtool.commands.segment import _masks
from fgtool.errors import FgtoolError
from fgtool.io.images import PART_PALETTE
from fgtool.metrics.segmentation import seg_metrics
from fgtool.nn.compose import pixel_grid, upsample_crop
from fgtool.train.trainer import Trainer


def _cfg(*sets, root=None):
    return api.resolve_config("ganseg", str(root) if root else None, str(TINY), list(sets))


def _backend(*sets):
    cfg = _cfg(*sets)
    return GANSeg(cfg.model_cfg, cfg.data.size)


def _batch(n=8, size=32):
    g = torch.Generator().manual_seed(0)
    return {"image": torch.rand(n, 3, size, size, generator=g) * 2 - 1}


# ----------------------------------------------------------------------------- generator


def test_generate_shapes_masks_and_points():
    b = _backend()
    nets = b.build()
    for m in nets.values():
        m.eval()
    k, s = b.cfg.n_parts, b.size
    with torch.no_grad():
        out = b.generate(nets, b.sample_codes(5, torch.Generator().manual_seed(0)), geometry=True)
    assert out["image"].shape == (5, 3, s, s) and out["image"].abs().max() <= 1
    assert out["parts"].shape == (5, k + 1, s, s)
    assert torch.allclose(out["parts"].sum(1), torch.ones(5, s, s), atol=1e-5)  # a softmax over K + 1
    assert out["parts"].min() >= 0
    assert torch.allclose(out["mask"][:, 0], 1 - out["parts"][:, k], atol=1e-6)  # fg = 1 - background
    assert out["foreground"].shape == out["background"].shape == (5, 3, s, s)
    pts = out["points"]
    assert pts.shape == (5, k, b.cfg.n_per, 2)
    assert pts.abs().max() < 1  # tanh
    assert torch.allclose(out["centres"], pts.mean(2))
    # eq. 1: sqrt(sum_i |x_i - mean|^2) / (n_per - 1)
    want = ((pts - pts.mean(2, keepdim=True)) ** 2).sum((2, 3)).sqrt() / (b.cfg.n_per - 1)
    assert torch.allclose(out["sigma"], want, atol=1e-6)
    # without geometry the contract's image-shaped outputs only
    with torch.no_grad():
        plain = b.generate(nets, b.sample_codes(2))
    assert set(plain) == {"image", "mask", "parts", "foreground", "background"}


def test_rgb_blend_is_the_composite_of_the_rendered_layers():
    # model.blend=rgb: the image is exactly (1 - m_bg) * foreground + m_bg * background, so
    # where the mask says background the pixels are the background layer's; the paper's
    # feature blend renders the blended features, and is not that composite
    for blend, exact in (("rgb", True), ("feature", False)):
        b = _backend(f"model.blend={blend}")
        nets = b.build()
        for m in nets.values():
            m.eval()
        with torch.no_grad():
            out = b.generate(nets, b.sample_codes(3, torch.Generator().manual_seed(1)))
        comp = out["mask"] * out["foreground"] + (1 - out["mask"]) * out["background"]
        err = (out["image"] - comp).abs().max()
        assert (err < 1e-5) if exact else (err > 1e-3), (blend, err)
    with pytest.raises(FgtoolError, match="model.blend"):
        _backend("model.blend=alpha")


def test_points_are_tanh_of_mlp_over_20():
    b = _backend()
    G = b.build()["G"]
    z = torch.randn(3, b.cfg.z_dim)
    raw = G.point_mlp(z)
    assert torch.allclose(G.points(z).flatten(1), torch.tanh(raw / 20.0))
    assert G.object_mlp is None  # model.object_div = 0: the paper's points


def test_object_div_moves_all_parts_together():
    b = _backend("model.n_parts=3", "model.object_div=2", "model.point_div=20")
    G = b.build()["G"]
    z = torch.randn(64, b.cfg.z_dim)
    pts = G.points(z)
    obj = G.object_mlp(z) / 2.0
    expect = torch.tanh(G.point_mlp(z).view(64, 3, 4, 2) / 20.0 + obj[:, None, None, :])
    assert torch.allclose(pts, expect)
    centre, _ = G.geometry(pts)
    # the parts cluster around one object position that itself spreads over the image
    within = (centre - centre.mean(1, keepdim=True)).norm(dim=-1).mean()
    across = centre.mean(1).std(0).mean()
    assert across > 0.2 and within < across / 3
    with pytest.raises(FgtoolError, match="object_div"):
        _backend("model.object_div=-1")


def test_margin_grid_and_crop_geometry():
    g = pixel_grid(8, 3)
    assert g.shape == (14, 14, 2)
    # pixel centres of the 8 px image are (i + 0.5) / 4 - 1; the margin extends past [-1, 1]
    assert torch.allclose(g[3, 3:11, 0], (torch.arange(8) + 0.5) / 4 - 1)
    assert g[0, 0, 0].item() == pytest.approx(-1 - 3 * 0.25 + 0.125)
    x = torch.randn(2, 4, 14, 14)
    y = upsample_crop(x, 3)
    assert y.shape == (2, 4, 22, 22)  # 16 px + 2 * 3 px margin
    # the crop keeps the centre: the image part of y is the upsampled image part of x
    ref = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)[..., 3:-3, 3:-3]
    assert torch.equal(y, ref)
    # the generator's outputs are the image size, whatever the margin
    for margin in (0, 3, 7):
        b = _backend(f"model.margin={margin}")
        nets = b.build()
        with torch.no_grad():
            out = b.generate(nets, b.sample_codes(2))
        assert out["image"].shape[-2:] == (32, 32) and nets["G"].margin == margin
    assert _backend().build()["G"].margin == 3  # -1: 10 px at 128 px, scaled, at least 3
    assert GANSeg(_cfg().model_cfg, 128).build()["G"].margin == 10


def test_moving_points_and_background_moves_the_image():
    """Translation equivariance: shift every point and the background shift by one pixel of
    the first resolution; the image moves by size / first resolution pixels."""
    b = _backend("model.margin=6")
    torch.manual_seed(0)  # a fixed init: the float error below depends on the weights
    nets = b.build()
    G = nets["G"]
    with torch.no_grad():
        for _ in range(3):  # non-trivial BN statistics
            G(b.sample_codes(16))
    G.eval()
    codes = b.sample_codes(4, torch.Generator().manual_seed(0))
    with torch.no_grad():
        pts = G.points(codes["z_point"]) * 0.3 + 0.05  # stay inside the image
        a = G({**codes, "points": pts})["image"]
        d = torch.tensor([2.0 / G.r0, 0.0])
        moved = G({**codes, "points": pts + d, "u_bg": codes["u_bg"] + d})["image"]
    s = b.size // G.r0
    assert s == 4
    diff = (a[..., :, :-s] - moved[..., :, s:]).abs()
    assert diff.max() < 1e-3, diff.max()  # float rounding only (up to ~1e-4 over 30 inits), 10x under "moved"
    assert (a - moved).abs().max() > 1e-2  # it did move
    # moving only the points (not the background) changes the background pixels too little
    # to matter, but moves the object: the shifted comparison no longer holds everywhere
    with torch.no_grad():
        only_pts = G({**codes, "points": pts + d})["image"]
    assert (a[..., :, :-s] - only_pts[..., :, s:]).abs().max() > 1e-3


# ----------------------------------------------------------------------------- losses and phases


def test_phases_r1_lazy_and_segmenter_stage():
    b = _backend("model.seg_start=40")
    ph = {p.name: p for p in b.phases()}
    assert list(ph) == ["G", "D", "D_r1", "S"]
    assert [s for s in range(40) if ph["D_r1"].active(s)] == [0, 16, 32]
    assert ph["D_r1"].trains == ("D",) and ph["D_r1"].every == 16
    for n in ("G", "D", "D_r1"):
        assert not ph[n].active(40) and not ph[n].active(48)
    assert ph["S"].trains == ("S",) and not ph["S"].active(39) and ph["S"].active(40) and ph["S"].active(10 ** 6)
    assert (ph["G"].lr, ph["D"].lr, ph["G"].betas, ph["S"].lr) == (1e-4, 4e-4, (0.5, 0.9), 3e-4)
    assert ph["S"].betas == (0.9, 0.999)
    assert [p.name for p in _backend("model.seg_start=never").phases()] == ["G", "D", "D_r1"]


def test_r1_runs_only_every_16_steps_in_a_trainer(tmp_path, synth_dir):
    cfg = _cfg("model.seg_start=never", "train.precision=bf16", root=synth_dir)
    tr = Trainer(cfg, tmp_path / "run", progress=False)
    seen = []
    for _ in range(18):
        parts = tr.train_step(_batch())
        seen.append("r1" in parts)
    assert [i for i, s in enumerate(seen) if s] == [0, 16]
    assert parts["D/loss"].isfinite()


def test_r1_is_fp32_under_bf16_autocast():
    b = _backend()
    D = b.build()["D"]
    conv = D.net[0].net[0][0]
    dtypes = []
    conv.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    x = _batch(4)["image"]
    ref = r1_penalty(D, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = r1_penalty(D, x)
        assert D(x).dtype == torch.bfloat16  # what the guard prevents
    assert dtypes[:2] == [torch.float32, torch.float32]
    assert under.dtype == torch.float32 and torch.equal(under, ref)
    # the penalty is ||grad D||^2: a linear critic's gradient is its weight
    lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 1))
    w = lin[1].weight
    want = float((w.detach() ** 2).sum())
    assert r1_penalty(lin, torch.randn(5, 3, 2, 2)).detach().item() == pytest.approx(want, rel=1e-5)
    # the phase loss: 0.5 * 10 * 16 * r1
    parts = b.loss("D_r1", {"D": D}, {"image": x}, 0)
    assert parts["loss"].item() == pytest.approx(80 * parts["r1"].item(), rel=1e-6)


def test_penalties_every_second_step_and_their_formulas():
    b = _backend()
    nets = b.build()
    on = b.loss("G", nets, _batch(), 0)
    off = b.loss("G", nets, _batch(), 1)
    assert "con" in on and "area" in on and "con" not in off
    assert on["loss"].item() == pytest.approx(on["g_adv"].item() + 10 * on["con"].item() + on["area"].item(),
                                              rel=1e-5)
    # hand-made geometry: one part all at its centre pixel, one spread evenly
    k = b.k
    grid = pixel_grid(4, 0)
    masks = torch.zeros(1, k + 1, 4, 4)
    masks[0, 0, 1, 1] = 1.0  # part 0 sits on its centre
    masks[0, 1] = 1.0 / 16  # part 1 everywhere
    masks[0, k] = 1 - masks[0, :k].sum(0).clamp(max=1)
    centre = torch.zeros(1, k, 2)
    centre[0, 0] = grid[1, 1]
    heat = torch.zeros(1, k, 4, 4)
    heat[0, 2] = 0.5  # part 2: heatmap area 8 px, mask area 0
    con, area = b.penalties({"masks_low": masks, "grid": grid, "centres": centre, "heat": heat})
    want_con = float(((grid - centre[0, 1]) ** 2).sum(-1).mean())  # part 0 contributes 0
    assert con.item() == pytest.approx(want_con, rel=1e-4)
    assert area.item() == pytest.approx(8.0, rel=1e-5)


def test_segmenter_phase_moves_only_s_and_leaves_g_frozen(tmp_path, synth_dir):
    cfg = _cfg(root=synth_dir)  # tiny: seg_start = 2
    tr = Trainer(cfg, tmp_path / "run", progress=False)
    tr.train_step(_batch())  # step 0: the GAN moves
    tr.step = 2
    before = {k: {n: t.clone() for n, t in v.state_dict().items()} for k, v in tr.nets.items()}
    parts = tr.train_step(_batch())
    assert "S/loss" in parts and "G/loss" not in parts and "D/loss" not in parts
    for k in ("G", "D"):  # parameters and BN statistics alike
        after = tr.nets[k].state_dict()
        assert all(torch.equal(before[k][n], after[n]) for n in after), k
    s_after = tr.nets["S"].state_dict()
    assert any(not torch.equal(before["S"][n], s_after[n]) for n in s_after if s_after[n].is_floating_point())
    assert tr.nets["G"].training  # eval mode only while rendering the pairs
    assert 0 <= parts["s_acc"] <= 1 and 0 <= parts["s_fg_iou"] <= 1
    # the targets are the generator's own argmax labels: same codes, same pairs
    assert parts["s_ce"] > 0 and parts["s_dice"] > 0


def test_seg_real_bg_pastes_the_generated_foreground_on_real_crops():
    b = _backend("model.seg_real_bg=1.0")
    nets = b.build()
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x):
            seen.append(x.detach().clone())
            return torch.zeros(x.shape[0], b.k + 1, *x.shape[-2:], requires_grad=True)

    nets["S"] = Spy()
    n = 6
    crop = torch.full((n, 3, 32, 32), 0.25)
    ok = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 1.0])
    batch = {**_batch(n), "bg_crop": crop, "bg_crop_ok": ok}
    torch.manual_seed(3)
    b.loss("S", nets, batch, 0)
    torch.manual_seed(3)
    nets_plain = {**nets}
    b_off = _backend()
    b_off.loss("S", nets_plain, {**_batch(n)}, 0)  # the same codes, no pasting
    pasted, plain = seen
    torch.manual_seed(3)
    with torch.no_grad():
        out = nets["G"].eval()(b.sample_codes(n), layers=True)
    m = out["mask"]
    want = m * out["foreground"] + (1 - m) * 0.25
    for i in range(n):
        if ok[i] > 0:
            assert torch.allclose(pasted[i], want[i], atol=1e-5), i
        else:  # no crop for this photo: the generated image as it is
            assert torch.allclose(pasted[i], plain[i], atol=1e-5)
    assert not torch.allclose(pasted[0], plain[0])
    with pytest.raises(FgtoolError, match="seg_real_bg"):
        _backend("model.seg_real_bg=1.5")


def _spy(seen: list):
    """A stand-in segmenter (K = 1) that records every image batch it is shown."""

    class Spy(torch.nn.Module):
        def forward(self, x):
            seen.append(x.detach().float().clone())
            return torch.zeros(x.shape[0], 2, *x.shape[-2:], requires_grad=True)

    return Spy


def test_seg_hue_turns_the_colours_of_the_generated_pairs_and_keeps_their_brightness():
    seen = []
    Spy = _spy(seen)
    for sets in ((), ("model.seg_hue=0.5",)):
        b = _backend("model.n_parts=1", *sets)
        torch.manual_seed(0)
        nets = {**b.build(), "S": Spy()}
        torch.manual_seed(5)
        b.loss("S", nets, _batch(6), 0)
    plain, turned = seen

    def luma(x):
        return 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]

    assert (plain - turned).abs().amax() > 0.2  # the colours moved
    unclipped = (turned.abs() < 0.99).all(1)  # YIQ turns keep the brightness where nothing clips
    assert torch.allclose(luma(plain)[unclipped], luma(turned)[unclipped], atol=0.02)
    with pytest.raises(FgtoolError, match="seg_hue"):
        _backend("model.seg_hue=0.7")


def test_self_training_targets_and_student_view():
    b = _backend("model.n_parts=1", "model.seg_start=1", "model.self_start=1", "model.self_jitter=0.3")
    x, gt = square_scene()
    blob = F.avg_pool2d(F.max_pool2d(gt.float()[:, None], 5, 1, 2), 3, 1, 1)
    seen = []

    class Teacher(torch.nn.Module):  # predicts the over-large blob; records what it is shown
        def forward(self, img):
            seen.append((self.training, img.detach().clone()))
            logit = torch.log(blob.clamp(1e-4, 1 - 1e-4)) - torch.log((1 - blob).clamp(1e-4, 1 - 1e-4))
            out = torch.cat([logit, torch.zeros_like(logit)], 1)[: img.shape[0]]  # softmax = blob
            return out + 0 * img.sum() * torch.zeros(1, requires_grad=True)

    S = Teacher()
    lab, w = b.pseudo_labels(S, x)
    assert seen[0][0] is False and torch.equal(seen[0][1], x)  # eval mode, clean photos
    assert torch.all(w == 1) and mask_iou(lab == 0, gt) > 0.97  # label 0 = part 0, K = 1 background
    # without refinement: the teacher's argmax where it is confident, the rest ignored
    b_none = _backend("model.n_parts=1", "model.seg_start=1", "model.self_start=1", "model.self_refine=none",
                      "model.self_conf=0.9")
    lab_n, w_n = b_none.pseudo_labels(S, x)
    p = blob[:, 0]
    assert torch.equal(lab_n == 0, p > 0.5)
    assert torch.equal(w_n > 0, (p >= 0.9) | (p <= 0.1)) and 0 < w_n.mean() < 1
    # the student sees the photos jittered: not the clean photos
    seen.clear()
    torch.manual_seed(0)
    parts = b._self_training(S, x)
    assert seen[-1][0] is True and not torch.allclose(seen[-1][1], x, atol=1e-3)
    assert float(parts["s_self_fg"]) == pytest.approx(gt.float().mean().item(), abs=0.02)


def test_self_training_joins_the_segmenter_loss_from_self_start(tmp_path, synth_dir):
    cfg = _cfg("model.seg_start=2", "model.self_start=3", root=synth_dir)
    tr = Trainer(cfg, tmp_path / "run", progress=False)
    tr.step = 2
    parts = tr.train_step(_batch())
    assert "S/loss" in parts and "s_self" not in parts
    tr.step = 3
    parts = tr.train_step(_batch())
    assert parts["s_self"] > 0 and 0 <= parts["s_self_fg"] <= 1 and parts["s_self_used"] == 1
    assert parts["S/loss"] > parts["s_self"] * 0.999  # the generated pairs keep their loss
    for bad, match in [(("model.seg_start=5", "model.self_start=3"), "self_start"),
                       (("model.self_refine=crf",), "self_refine")]:
        with pytest.raises(FgtoolError, match=match):
            _backend(*bad)


def test_self_training_teacher_snapshot_frozen_or_ema():
    from fgtool.backends.ganseg import Teacher

    assert "T" not in _backend("model.seg_start=1", "model.self_start=1").build()  # live: S itself
    nets = _backend("model.seg_start=1", "model.self_start=1", "model.self_ema=1.0").build()
    S, T = nets["S"], nets["T"]
    assert not any(p.requires_grad for p in T.parameters())

    def params(m):
        return torch.cat([p.detach().flatten() for p in m.parameters()])

    with torch.no_grad():
        for p in S.parameters():
            p.add_(1.0)
    assert not torch.equal(params(T.net), params(S))
    T.follow(S, 1.0)  # first call: a copy of S
    assert bool(T.ready) and torch.equal(params(T.net), params(S))
    snap = params(S).clone()
    with torch.no_grad():
        for p in S.parameters():
            p.add_(1.0)
    T.follow(S, 1.0)  # frozen: does not move
    assert torch.equal(params(T.net), snap)
    bn = [n for n, _ in S.named_buffers() if n.endswith("running_mean")][0]
    stats = dict(T.net.named_buffers())[bn].clone()
    with torch.no_grad():
        dict(S.named_buffers())[bn].copy_(stats + 1.0)
    T.follow(S, 0.75)  # EMA: a quarter of the way to S, BatchNorm statistics too
    assert torch.allclose(params(T.net), snap + 0.25, atol=1e-5)
    assert torch.allclose(dict(T.net.named_buffers())[bn], stats + 0.25, atol=1e-5)
    fresh = Teacher(S)
    fresh.load_state_dict(T.state_dict())  # ready travels in the checkpoint
    assert bool(fresh.ready)
    with pytest.raises(FgtoolError, match="self_ema"):
        _backend("model.self_ema=1.5")


def test_segmenter_architectures():
    for arch in ("small", "deeplabv3_mobilenet_v3_large"):
        b = _backend(f"model.seg_arch={arch}")
        S = b.build()["S"].eval()
        with torch.no_grad():
            p = b.segment_parts({"S": S}, torch.zeros(2, 3, 32, 32))
        assert p.shape == (2, b.k + 1, 32, 32)
        assert torch.allclose(p.sum(1), torch.ones(2, 32, 32), atol=1e-5)
        fg = b.segment({"S": S}, torch.zeros(2, 3, 32, 32))
        assert torch.allclose(fg[:, 0], 1 - p[:, b.k], atol=1e-6)
    from fgtool.nn.blocks import TorchvisionSegmenter

    torch.manual_seed(0)
    s = TorchvisionSegmenter("deeplabv3_resnet50", 9)
    assert s.net.classifier[-1].out_channels == 9 and s.net.aux_classifier is None
    with pytest.raises(FgtoolError, match="seg_arch"):
        _backend("model.seg_arch=unet")
    with pytest.raises(FgtoolError, match="start_div"):
        _backend("model.start_div=3")


def test_part_centres():
    b = _backend()
    p = torch.zeros(1, b.k + 1, 8, 8)
    p[0, b.k] = 1
    p[0, 0, 2:4, 4:6], p[0, b.k, 2:4, 4:6] = 1, 0
    c = b.part_centres(p)
    assert c.shape == (1, b.k, 2)
    assert c[0, 0].tolist() == pytest.approx([0.25, -0.25])  # columns 4-5, rows 2-3 of 8
    assert torch.isnan(c[0, 1:]).all()  # absent parts


# ----------------------------------------------------------------------------- CLI: train, segment, eval


@pytest.fixture(scope="module")
def run(tmp_path_factory, synth_dir):
    out = tmp_path_factory.mktemp("gs") / "run"
    api.train("ganseg", str(synth_dir), str(TINY), ["train.sample_every=4"], str(out), progress=False)
    return out


def test_train_writes_grids_and_logs_both_stages(run):
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert "G/loss" in rows[0] and "D_r1/loss" in rows[0] and "S/loss" not in rows[0]  # steps 0-1
    assert "S/loss" in rows[-1] and "G/loss" not in rows[-1]  # steps 2-3
    for name in ("samples", "parts", "layers", "segmenter"):
        im = Image.open(run / f"{name}.png")
        assert im.size[0] > 64 and np.asarray(im).std() > 5, name
    assert ckpt.load(run / "last.pt")["step"] == 4


def test_segment_writes_masks_overlay_and_parts(capsys, run, synth_dir, tmp_path):
    out = tmp_path / "masks"
    res = run_json(capsys, "segment", "--ckpt", run / "last.pt", "--data", synth_dir, "--out", out,
                   "--parts", "--points", "--quiet")
    images = sorted((synth_dir / "images").rglob("*.png"))
    n = len(images)
    assert res["n"] == res["masks"] == res["parts"] == res["points"] == n == 48
    masks = sorted(p for p in out.rglob("*.png") if "parts" not in p.parts and p.name != "overlay.png"
                   and p.name != "parts_overlay.png")
    assert len(masks) == n
    # same relative names (under images/ for the CUB layout), the photo's size, 0/255
    assert [m.relative_to(out) for m in masks] == [i.relative_to(synth_dir / "images") for i in images]
    for m, i in zip(masks[:5], images[:5]):
        a = np.asarray(Image.open(m))
        assert a.shape == Image.open(i).size[::-1] and set(np.unique(a)) <= {0, 255}
    pngs = sorted((out / "parts").rglob("*.png"))
    assert len(pngs) == n
    k = run_json(capsys, "info", "--ckpt", run / "last.pt")["config"]["model"]["n_parts"]
    for p in pngs[:5]:
        im = Image.open(p)
        assert im.mode == "P"
        pal = im.getpalette()[: 3 * (k + 1)]
        assert pal[:3] == [0, 0, 0] and pal[3:6] == list(PART_PALETTE[0])
        assert np.asarray(im).max() <= k
    # part labels and foreground agree: label 0 (background) exactly where the mask is off
    a = np.asarray(Image.open(pngs[0])) > 0
    assert np.array_equal(a, np.asarray(Image.open(masks[0])) > 0)
    for f in ("overlay.png", "parts_overlay.png", "index.json", "points.json"):
        assert (out / f).is_file(), f
    assert Image.open(out / "overlay.png").size[0] >= 8 * 64
    idx = json.loads((out / "index.json").read_text())
    assert idx["n"] == n and sorted(it["mask"] for it in idx["items"]) == [str(m) for m in masks]
    pts = json.loads((out / "points.json").read_text())
    assert len(pts) == n and all(len(v) == k for v in pts.values())


def test_segment_a_single_image_and_errors(capsys, run, synth_dir, tmp_path):
    img = sorted((synth_dir / "images").rglob("*.png"))[0]
    big = tmp_path / "photo.jpg"
    Image.open(img).convert("RGB").resize((80, 48)).save(big)  # not square, not the model size
    res = run_json(capsys, "segment", "--ckpt", run / "last.pt", "--data", big, "--out", tmp_path / "one",
                   "--quiet")
    assert res["n"] == 1
    m = np.asarray(Image.open(tmp_path / "one" / "photo.png"))
    assert m.shape == (48, 80)
    assert not m[:, :15].any() and not m[:, -17:].any()  # outside the centre crop the model saw (x 15-63)
    # user errors: one line, exit 2
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    for data in (empty, bad, tmp_path / "missing"):
        rc, out, err = run_cli(capsys, "segment", "--ckpt", run / "last.pt", "--data", data,
                               "--out", tmp_path / "x", "--quiet")
        assert rc == 2 and out == "", data
        one_error_line(err)


def test_segment_refuses_a_checkpoint_before_the_segmenter_stage(capsys, run, tmp_path, synth_dir):
    early = tmp_path / "early"
    shutil.copytree(run, early)
    c = ckpt.load(early / "step_0000002.pt")
    ckpt.save(early / "last.pt", **{k: c[k] for k in ("config", "step", "nets", "ema", "optim", "rng", "extra")})
    rc, out, err = run_cli(capsys, "segment", "--ckpt", early / "last.pt", "--data", synth_dir,
                           "--out", tmp_path / "m")
    assert rc == 2
    assert "no trained segmenter yet" in one_error_line(err)
    rc, _, err = run_cli(capsys, "eval", "--metric", "iou", "--ckpt", early / "last.pt", "--data", synth_dir)
    assert rc == 2 and "no trained segmenter yet" in one_error_line(err)


def test_eval_iou_dice_matches_the_written_masks(capsys, run, synth_dir, tmp_path):
    res = run_json(capsys, "eval", "--metric", "iou,dice", "--ckpt", run / "last.pt", "--data", synth_dir,
                   "--quiet")
    iou, dice = res["metrics"]["iou"], res["metrics"]["dice"]
    assert 0 <= iou <= 1 and 0 <= dice <= 1 and res["metrics"]["n"] == 48
    assert dice >= iou - 1e-9  # per image, Dice >= IoU
    by = res["metrics"]["iou_by_background"]  # the synthetic set's background classes
    assert set(by) == {"sky", "grass"} and sum(v["n"] for v in by.values()) == 48
    assert sum(v["iou"] * v["n"] for v in by.values()) / 48 == pytest.approx(iou, abs=1e-3)
    cells = res["metrics"]["iou_by_class_background"]  # class x background, named "class/background"
    assert sum(v["n"] for v in cells.values()) == 48 and all(k.split("/")[1] in by for k in cells)
    for bg, v in by.items():  # the cells of one background add up to it
        mine = [c for k, c in cells.items() if k.endswith("/" + bg)]
        assert sum(c["n"] for c in mine) == v["n"]
        assert sum(c["iou"] * c["n"] for c in mine) / v["n"] == pytest.approx(v["iou"], abs=1e-3)
    # the same numbers from `fgtool segment`'s PNGs against segmentations/: eval scores those masks
    out = tmp_path / "m"
    run_json(capsys, "segment", "--ckpt", run / "last.pt", "--data", synth_dir, "--out", out, "--quiet")
    images = sorted((synth_dir / "images").rglob("*.png"))
    pred = np.stack([np.asarray(Image.open(out / i.relative_to(synth_dir / "images"))) > 127 for i in images])
    gt = np.stack([np.asarray(Image.open(synth_dir / "segmentations" / i.relative_to(synth_dir / "images")))
                   .astype(np.float64) > 127 for i in images])
    got = seg_metrics(pred, gt)
    assert got["iou"] == pytest.approx(iou, abs=1e-12) and got["dice"] == pytest.approx(dice, abs=1e-12)


def test_refine_grabcut_in_segment_and_eval(capsys, run, synth_dir, tmp_path):
    from fgtool.nn.refine import grabcut_refine

    res = run_json(capsys, "eval", "--metric", "iou", "--ckpt", run / "last.pt", "--data", synth_dir,
                   "--refine", "grabcut", "--quiet")
    out = tmp_path / "r"
    run_json(capsys, "segment", "--ckpt", run / "last.pt", "--data", synth_dir, "--out", out, "--refine",
             "grabcut", "--quiet")
    images = sorted((synth_dir / "images").rglob("*.png"))
    pred = np.stack([np.asarray(Image.open(out / i.relative_to(synth_dir / "images"))) > 127 for i in images])
    gt = np.stack([np.asarray(Image.open(synth_dir / "segmentations" / i.relative_to(synth_dir / "images")))
                   > 127 for i in images])
    assert seg_metrics(pred, gt)["iou"] == pytest.approx(res["metrics"]["iou"], abs=1e-12)
    # the written masks are GrabCut's redraw of the model's own maps (2 px band at 32 px)
    m = api.load(str(run / "last.pt"))
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(i).convert("RGB"), dtype=np.float32)).permute(2, 0, 1)
                     for i in images[:8]]) / 127.5 - 1
    with torch.no_grad():
        fg = m.backend.segment(m.nets, x)[:, 0]
    want = grabcut_refine(x, fg, band=2).numpy()
    assert (pred[:8] == want).mean() > 0.99
    rc, _, err = run_cli(capsys, "eval", "--metric", "iou", "--ckpt", run / "last.pt", "--data", synth_dir,
                         "--refine", "crf")
    assert rc == 2 and one_error_line(err) and "--refine" in err


def test_tta_flip_averages_the_photo_and_its_mirror(capsys, run, synth_dir, tmp_path):
    images = sorted((synth_dir / "images").rglob("*.png"))
    m = api.load(str(run / "last.pt"))
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(i).convert("RGB"), dtype=np.float32)).permute(2, 0, 1)
                     for i in images]) / 127.5 - 1
    with torch.no_grad():
        probs = m.backend.segment_parts(m.nets, x).float()
        mirror = m.backend.segment_parts(m.nets, x.flip(-1)).float().flip(-1)
        fg, pr = _masks(m, x, "flip")
        assert torch.allclose(pr, (probs + mirror) / 2, atol=1e-6)
        assert torch.allclose(fg, 1 - (probs[:, -1:] + mirror[:, -1:]) / 2, atol=1e-6)
        plain, _ = _masks(m, x)
    assert (plain - fg).abs().max() > 1e-3  # the tiny model is not mirror-symmetric: the mean differs
    gt = np.stack([np.asarray(Image.open(synth_dir / "segmentations" / i.relative_to(synth_dir / "images")))
                   > 127 for i in images])
    res = run_json(capsys, "eval", "--metric", "iou", "--ckpt", run / "last.pt", "--data", synth_dir,
                   "--tta", "flip", "--quiet")
    assert res["metrics"]["iou"] == pytest.approx(seg_metrics((fg[:, 0] > 0.5).numpy(), gt)["iou"], abs=1e-6)
    out = tmp_path / "t"
    run_json(capsys, "segment", "--ckpt", run / "last.pt", "--data", synth_dir, "--out", out, "--tta", "flip",
             "--quiet")
    pred = np.stack([np.asarray(Image.open(out / i.relative_to(synth_dir / "images"))) > 127 for i in images])
    assert (pred == (fg[:, 0] > 0.5).numpy()).mean() > 0.99
    rc, _, err = run_cli(capsys, "segment", "--ckpt", run / "last.pt", "--data", synth_dir, "--out", out,
                         "--tta", "rot90")
    assert rc == 2 and one_error_line(err) and "--tta" in err


def test_self_tta_teacher_averages_the_photo_and_its_mirror():
    x = _batch(4)["image"]

    class Lopsided(torch.nn.Module):  # says "object" on the left half of whatever it is shown
        def forward(self, img):
            n, _, h, w = img.shape
            left = (torch.arange(w) < w // 2).float().expand(n, 1, h, w)
            return torch.cat([4 * left - 2, torch.zeros_like(left)], 1)

    b = _backend("model.n_parts=1", "model.seg_start=1", "model.self_start=1", "model.self_refine=none",
                 "model.self_conf=0.6")
    lab, w = b.pseudo_labels(Lopsided(), x)
    assert torch.all(lab[..., :16] == 0) and torch.all(lab[..., 16:] == 1) and torch.all(w == 1)
    bt = _backend("model.n_parts=1", "model.seg_start=1", "model.self_start=1", "model.self_refine=none",
                  "model.self_conf=0.6", "model.self_tta=true")
    lab, w = bt.pseudo_labels(Lopsided(), x)
    assert torch.all(w == 0)  # the photo and its mirror disagree everywhere: p = 0.5, below self_conf


def test_resume_across_seg_start_is_bit_identical(synth_dir, tmp_path):
    from conftest import tensors_differ

    # self-training from step 4 with an EMA teacher: pseudo-labels, jitter and teacher resume too
    sets = ["model.seg_start=3", "model.self_start=4", "model.self_ema=0.5", "train.steps=5", "train.log_every=1",
            "train.ckpt_every=1", "train.keep=all",
            "train.sample_every=100"]
    full = tmp_path / "full"
    api.train("ganseg", str(synth_dir), str(TINY), sets, str(full), progress=False)
    ck = {s: ckpt.load(full / f"step_{s:07d}.pt")["nets"] for s in (1, 3, 5)}
    for k in ("G", "D"):
        assert not tensors_differ(ck[3][k], ck[5][k]), k  # frozen in the segmenter stage
        assert tensors_differ(ck[1][k], ck[3][k]), k
    assert not tensors_differ(ck[1]["S"], ck[3]["S"]) and tensors_differ(ck[3]["S"], ck[5]["S"])
    part = tmp_path / "part"
    api.train("ganseg", str(synth_dir), str(TINY), [s if s != "train.steps=5" else "train.steps=2" for s in sets],
              str(part), progress=False)
    api.train(sets=["train.steps=5"], out=str(part), resume=True, progress=False)
    a, _ = same_checkpoints(full / "last.pt", part / "last.pt", 5)
    assert a["optim"]["S"]["state"] and a["optim"]["G"]["state"]


def test_capabilities(capsys):
    res = run_json(capsys, "models")
    gs = [r for r in res if r["name"] == "ganseg"]
    assert gs and gs[0]["capabilities"] == ["train", "sample", "gif", "segment", "parts"]
    rc, out, _ = run_cli(capsys, "segment", "--help")
    assert rc == 0 and "--parts" in out and "--points" in out and "fgtool segment --ckpt" in out


def test_parts_and_points_need_a_backend_with_parts(capsys, run, synth_dir, tmp_path, monkeypatch):
    # a foreground-only segmenter: the command's part protocol is one that GANSeg does not declare
    from fgtool.backends.base import PartSegmenter
    from fgtool.commands import segment

    class NoParts(PartSegmenter):
        pass

    monkeypatch.setattr(segment, "PartSegmenter", NoParts)
    for flag, msg in (("--parts", "segments the foreground only"), ("--points", "no parts to place points on")):
        rc, out, err = run_cli(capsys, "segment", "--ckpt", run / "last.pt", "--data", synth_dir,
                               "--out", tmp_path / "m", flag, "--quiet")
        assert rc == 2 and out == "" and msg in one_error_line(err)
    assert not (tmp_path / "m").exists()


class _TwoLayerG(torch.nn.Module):
    """A stand-in generator: colour A on the left half (the object), colour B on the right."""

    def forward(self, codes, layers=False):
        n = codes["z_point"].shape[0]
        s = 16
        mask = torch.zeros(n, 1, s, s)
        mask[..., : s // 2] = 1
        fore = torch.tensor([0.5, -0.3, -0.2]).view(1, 3, 1, 1).expand(n, 3, s, s)
        back = torch.tensor([-0.2, 0.3, -0.4]).view(1, 3, 1, 1).expand(n, 3, s, s)
        out = {"image": mask * fore + (1 - mask) * back, "mask": mask,
               "parts": torch.cat([mask, 1 - mask], 1)}
        if layers:
            out.update(foreground=fore, background=back)
        return out


def _chroma_angle(x):
    """Mean YIQ chroma angle of each image of x [N, 3, H, W]."""
    i = 0.596 * x[:, 0] - 0.274 * x[:, 1] - 0.322 * x[:, 2]
    q = 0.211 * x[:, 0] - 0.523 * x[:, 1] + 0.312 * x[:, 2]
    return torch.atan2(q.mean((1, 2)), i.mean((1, 2)))


def test_seg_jitter_split_turns_object_and_background_by_separate_draws():
    seen = []
    Spy = _spy(seen)
    turns = {}
    for split in ("false", "true"):
        b = _backend("model.n_parts=1", "model.seg_hue=0.5", f"model.seg_jitter_split={split}")
        nets = {**b.build(), "G": _TwoLayerG(), "S": Spy()}
        torch.manual_seed(5)
        b.loss("S", nets, _batch(16), 0)
        x = (seen[-1] + 1) / 2
        ref = (_TwoLayerG()({"z_point": torch.zeros(1, 1)}, layers=True)["image"] + 1) / 2
        d_obj = _chroma_angle(x[..., :8]) - _chroma_angle(ref[..., :8])
        d_bg = _chroma_angle(x[..., 8:]) - _chroma_angle(ref[..., 8:])
        gap = torch.remainder(d_obj - d_bg + torch.pi, 2 * torch.pi) - torch.pi  # wrapped to [-pi, pi)
        turns[split] = gap.abs()
        assert (d_obj.abs() > 0.05).float().mean() > 0.5  # the object's colours were turned
    assert turns["false"].max() < 0.05  # one draw: object and background turn together
    assert (turns["true"] > 0.2).float().mean() > 0.5  # separate draws


def test_self_guard_drops_pseudo_labels_that_grabcut_rewrote():
    x, gt = square_scene()
    blob = F.avg_pool2d(F.max_pool2d(gt.float()[:, None], 5, 1, 2), 3, 1, 1)

    class Blob(torch.nn.Module):
        def forward(self, img):
            logit = torch.log(blob.clamp(1e-4, 1 - 1e-4)) - torch.log((1 - blob).clamp(1e-4, 1 - 1e-4))
            return torch.cat([logit, torch.zeros_like(logit)], 1)[: img.shape[0]]

    raw = ((blob[:, 0] > 0.5).flatten(1).float().mean(1))
    change = (raw - gt.flatten(1).float().mean(1)) / raw  # GrabCut cuts the blob back to the square
    assert change.min() > 0.3
    sets = ("model.n_parts=1", "model.seg_start=1", "model.self_start=1")
    _, w = _backend(*sets, "model.self_guard=0.2").pseudo_labels(Blob(), x)
    assert torch.all(w == 0)  # every mask was rewritten by more than 20%
    _, w = _backend(*sets, f"model.self_guard={change.max().item() + 0.05}").pseudo_labels(Blob(), x)
    assert torch.all(w == 1)
    _, w = _backend(*sets, f"model.self_guard={change.median().item()}").pseudo_labels(Blob(), x)
    assert torch.equal(w[:, 0, 0] > 0, change <= change.median())  # per photo
    with pytest.raises(FgtoolError, match="self_guard"):
        _backend("model.self_guard=-1")


def test_self_guard_drops_labels_outside_the_generated_masks_range():
    x, gt = square_scene()
    share = gt.flatten(1).float().mean(1)  # 0.14 each

    class Exact(torch.nn.Module):
        def forward(self, img):
            logit = torch.where(gt[:, None], 5.0, -5.0)
            return torch.cat([logit, torch.zeros_like(logit)], 1)

    b = _backend("model.n_parts=1", "model.seg_start=1", "model.self_start=1", "model.self_guard=0.3")
    assert torch.all(b.pseudo_labels(Exact(), x)[1] == 1)
    assert torch.all(b.pseudo_labels(Exact(), x, fg_range=(0.0, 1.0))[1] == 1)
    assert torch.all(b.pseudo_labels(Exact(), x, fg_range=(share.max().item() + 0.05, 0.9))[1] == 0)
    assert torch.all(b.pseudo_labels(Exact(), x, fg_range=(0.0, share.min().item() - 0.05))[1] == 0)


def test_seg_camo_paints_part_of_the_object_in_its_background_colour():
    from fgtool.nn.selftrain import camouflage as _camouflage

    n, s = 64, 16
    mask = torch.zeros(n, 1, s, s)
    mask[..., 4:12, 4:12] = 1
    fore = torch.full((n, 3, s, s), 0.8)
    back = torch.tensor([-0.5, 0.2, 0.1]).view(1, 3, 1, 1).expand(n, 3, s, s).clone()
    pick = torch.arange(n) % 2 == 0
    torch.manual_seed(0)
    out = _camouflage(fore, back, mask, pick)
    painted = (out - back).abs().amax(1) < 1e-6  # [n, s, s]: pixels now in the background colour
    inside = painted[:, 4:12, 4:12].flatten(1).float().mean(1)
    assert torch.all(inside[~pick] == 0) and torch.equal(out[~pick], fore[~pick])  # not picked: untouched
    assert torch.all((inside[pick] > 0.2) & (inside[pick] < 0.8))  # about half the object, never all of it
    assert inside[pick].mean().item() == pytest.approx(0.5, abs=0.1)
    # the painted side changes from image to image (a random line through the centre)
    assert len({tuple(p[4:12, 4:12].flatten().tolist()) for p in painted[pick]}) > 20
    with pytest.raises(FgtoolError, match="seg_camo"):
        _backend("model.seg_camo=2")


def test_seg_camo_shift_paints_a_colour_near_but_not_at_the_background_mean():
    from fgtool.nn.selftrain import camouflage as _camouflage

    n, s, shift = 64, 16, 0.4
    mask = torch.zeros(n, 1, s, s)
    mask[..., 4:12, 4:12] = 1
    fore = torch.full((n, 3, s, s), 0.8)
    back = torch.tensor([-0.5, 0.2, 0.1]).view(1, 3, 1, 1).expand(n, 3, s, s).clone()
    pick = torch.ones(n, dtype=torch.bool)
    torch.manual_seed(0)
    out = _camouflage(fore, back, mask, pick, shift)
    obj = out[..., 4:12, 4:12]
    painted = (obj - 0.8).abs().amax(1) > 1e-6  # [n, 8, 8]: pixels no longer the object's colour
    share = painted.flatten(1).float().mean(1)
    assert torch.all((share > 0.2) & (share < 0.8))
    # one flat colour per image, at a distance from the background mean in [shift / 2, shift]
    colour = torch.stack([obj[i][:, painted[i]].mean(1) for i in range(n)])
    assert torch.stack([obj[i][:, painted[i]].std(1) for i in range(n)]).max() < 1e-6
    dist = (colour - back[:, :, 0, 0]).norm(dim=1)
    assert torch.all((dist >= shift / 2 - 1e-5) & (dist <= shift + 1e-5))
    assert dist.std() > 0.03  # the distance varies
    # and the direction too: the offsets point all round the colour cube
    signs = {tuple((colour[i] - back[i, :, 0, 0]).sign().tolist()) for i in range(n)}
    assert len(signs) >= 6
    with pytest.raises(FgtoolError, match="seg_camo_shift"):
        _backend("model.seg_camo_shift=-1")
