"""GANSeg (``model.arch = "paper"``) equals the authors' public code, tensor for tensor.

tests/fixtures/ganseg_small.pt was recorded from the authors' code by
tests/reference/make_ganseg_fixtures.py (their code is not part of this repository): one
iteration of their GAN loop (the D step with their gradient penalty, then the G step with
the concentration and area penalties) at a small setting, and one batch of their segmenter
stage (image/label pairs from G in eval mode, their CE + Dice loss on fixed logits). Here our
backend gets the recorded weights, noises and images, runs its D phase, an Adam step, its G
phase and its S loss, and must reproduce every recorded tensor to 1e-5. Both sides run in
float64; the recorded tensors are float32 copies.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_reference import _close, _summary
from torch import nn

from fgtool.backends.ganseg import GANSeg, GANSegConfig
from fgtool.nn.blocks import eval_mode
from fgtool.train.trainer import phase_params

FIX = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def run():
    """Our iteration on the fixture's inputs: G and D outputs, loss terms and gradients of
    the D and G phases, then the S loss on the recorded logits."""
    fx = torch.load(FIX / "ganseg_small.pt", weights_only=True)
    cfg = json.loads(fx["config"])
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        backend = GANSeg(GANSegConfig(**cfg["model"]), cfg["size"])
        nets = backend.build()
        for k in ("G", "D"):
            sd = nets[k].state_dict()
            for name in sd:
                if f"{k}.{name}" in fx["weights"]:
                    sd[name] = fx["weights"][f"{k}.{name}"].double()
            nets[k].load_state_dict(sd)
            nets[k].double().train()
        codes = iter([fx["inputs"]["codes_d"], fx["inputs"]["codes_g"], fx["seg"]["codes"]])
        backend.sample_codes = lambda n, generator=None, device=None, **kw: {k: v.double() for k, v in
                                                                               next(codes).items()}
        g_out, d_out = [], []
        g_forward = nets["G"].forward

        def record(codes_, layers=False):
            out = g_forward(codes_, layers)
            g_out.append({k: v.detach().clone() for k, v in out.items()})
            return out

        nets["G"].forward = record
        nets["D"].register_forward_hook(lambda m, i, o: d_out.append(o.detach().flatten().clone()))
        batch = {"image": fx["inputs"]["real_u8"].double() / 127.5 - 1, "cache": {}}
        phases = {ph.name: ph for ph in backend.phases()}
        named = {id(p): f"{k}.{n}" for k, m in nets.items() for n, p in m.named_parameters()}
        losses, grads = {}, {}
        for name in [ph.name for ph in backend.phases() if ph.active(0)]:
            ph = phases[name]
            for m in nets.values():
                m.requires_grad_(False)
            for mod in ph.trains:
                nets[mod].requires_grad_(True)
            params = phase_params(nets, ph)
            opt = torch.optim.Adam(params, lr=ph.lr, betas=ph.betas)
            out = backend.loss(name, nets, batch, 0)
            out["loss"].backward()
            losses[name] = {k: v.detach() for k, v in out.items()}
            grads[name] = {named[id(p)]: _summary(p.grad) for p in params if p.grad is not None}
            opt.step()

        class FixedLogits(nn.Module):  # stands in for S: the recorded logits, background last
            def __init__(self, logits: torch.Tensor):
                super().__init__()
                self.logits = nn.Parameter(torch.cat([logits[:, 1:], logits[:, :1]], 1))
                self.seen = []

            def forward(self, x):
                self.seen.append(x.detach().clone())
                return self.logits

        nets["S"] = FixedLogits(fx["seg"]["logits"].double())
        seg = backend.loss("S", nets, batch, 0)
        seg["loss"].backward()
        g = nets["S"].logits.grad
        seg_grad = _summary(torch.cat([g[:, -1:], g[:, :-1]], 1))
        with eval_mode(nets["G"]):
            parts = g_forward({k: v.double() for k, v in fx["seg"]["codes"].items()})["parts"]
        yield dict(fx=fx, cfg=cfg, g_out=g_out, d_out=d_out, losses=losses, grads=grads, seg=seg,
                   seg_grad=seg_grad, seg_image=nets["S"].seen[0], seg_parts=parts, phases=list(phases))
    finally:
        torch.set_default_dtype(old)


def test_phases_are_the_authors_iteration(run):
    assert run["phases"][:2] == ["D", "G"] and "D_r1" not in run["phases"]


@pytest.mark.parametrize("step", ["D", "G"])
def test_generator_outputs(run, step):
    """Image, part masks (background last), cone heatmaps, points and centres (their
    coordinate order), foreground and background feature maps of the step's render."""
    ours = run["g_out"][0 if step == "D" else 1]
    ref = run["fx"]["generator"][step]
    pairs = {"image": "image", "parts": "parts", "heat": "heat", "points_raw": "points", "kp_raw": "centres",
             "fg_features": "fg", "bg_features": "bg"}
    for o, t in pairs.items():
        _close(ours[o], ref[t], f"{step} step: {o}")
    # our (x, y) outputs are their coordinates swapped
    _close(ours["centres"], ref["centres"].flip(-1), f"{step} step: centres (x, y)")


def test_discriminator_outputs(run):
    ref = run["fx"]["d_outputs"]
    assert len(run["d_out"]) == 3
    for ours, key in zip(run["d_out"], ("real", "fake", "g_fake")):
        _close(ours, ref[key], f"D({key})")


@pytest.mark.parametrize("phase", ["D", "G"])
def test_loss_terms(run, phase):
    ref = run["fx"]["losses"][phase]
    assert set(ref) <= set(run["losses"][phase])
    for k, v in ref.items():
        _close(run["losses"][phase][k], v, f"{phase} loss term {k}")


@pytest.mark.parametrize("phase", ["D", "G"])
def test_gradients(run, phase):
    ref = run["fx"]["grads"][phase]
    ours = run["grads"][phase]
    assert set(ours) == set(ref), sorted(set(ours) ^ set(ref))[:6]
    assert len(ref) > 20
    for k, v in ref.items():
        _close(ours[k], v, f"{phase} gradient of {k}")


def test_area_penalty_acts(run):
    """The fixture exercises the area penalty (the small setting spreads the points)."""
    assert run["fx"]["losses"]["G"]["area"] > 1.0


def test_segmenter_pairs_and_loss(run):
    """The pairs come from G in eval mode (after the iteration's two training forwards moved
    its BatchNorm statistics), the labels are the argmax of the K + 1 masks (theirs put the
    background first), and the 0.5 CE + 0.5 per-image Dice loss and its gradient match."""
    seg, k = run["fx"]["seg"], run["cfg"]["model"]["n_parts"]
    _close(run["seg_image"], seg["image"], "segmenter input image")
    ours = run["seg_parts"].argmax(1)
    assert torch.equal((ours + 1) % (k + 1), seg["labels"])
    for o, t in (("loss", "loss"), ("s_ce", "ce"), ("s_dice", "dice")):
        _close(run["seg"][o], seg[t], f"S loss term {o}")
    _close(run["seg_grad"], seg["grad"], "gradient of the logits")


def test_paper_shapes_and_counts():
    """At the authors' CUB setting (K = 8 x 4 points, z 256, 64-d embeddings, widths 512 ..
    64 over 32-32-64-64-128-128 px, 128 px images) every tensor of G and D has the authors'
    shape under the fixture's key mapping, and G has 23,221,833 parameters, D 23,726,721 and
    the segmenter (DeepLabV3-ResNet50, 9 classes) 39,635,785."""
    ref = json.loads((FIX / "ganseg_paper_shapes.json").read_text())
    assert {k: v["params"] for k, v in ref.items()} == {"G": 23_221_833, "D": 23_726_721, "S": 39_635_785}
    cfg = GANSegConfig(arch="paper", n_parts=8, n_per=4, z_dim=256, mlp_hidden=256, emb_dim=64, start_div=4,
                       gen_ch=512, spade_hidden=128, margin=10, ndf=64, seg_arch="deeplabv3_resnet50")
    nets = GANSeg(cfg, 128).build()
    for name in ("G", "D"):
        sd = nets[name].state_dict()
        assert set(sd) == set(ref[name]["shapes"]), sorted(set(sd) ^ set(ref[name]["shapes"]))[:6]
        for k, shp in ref[name]["shapes"].items():
            assert list(sd[k].shape) == shp, f"{name}.{k}: {list(sd[k].shape)} vs the authors' {shp}"
    for name in ("G", "D", "S"):
        assert sum(p.numel() for p in nets[name].parameters()) == ref[name]["params"], name
