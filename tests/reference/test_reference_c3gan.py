"""C3-GAN equals the authors' code (naver-ai/c3-gan), tensor for tensor.

tests/fixtures/c3gan_small.pt was recorded from the authors' public code by
tests/reference/make_c3gan_fixtures.py (their code is not part of this repository): one
iteration of their ``Trainer.train`` (a D step on one render, a G step on a second render
of new codes) at a small setting, 128 px, batch 2, in float64. Here our backend, with the
recorded weights and with the options the paper recipe sets, runs the same iteration (D
phase, Adam step, G phase) on the recorded codes, warps and contrastive view, and must
reproduce every recorded tensor to 1e-5.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from test_reference import _check_grads, _check_shapes, _close, _run_phases

from fgtool.backends import c3gan
from fgtool.backends.c3gan import C3GAN, C3GANConfig
from fgtool.nn.augment import similarity_grid, warp

FIX = Path(__file__).resolve().parents[1] / "fixtures"
PAPER = dict(n_classes=200, overcluster=2, z_dim=64, cz_dim=8, ngf=16, ndf=64)
AUTHORS = dict(g_widths="authors", d_first_bias=False, shared_fake=False, mask_entropy="bits")
# the authors' parameter counts at the paper setting (128 px, K = 400, their 512 -> 16
# generators, ndf 64), as recorded from their Generator(400) and Discriminator(400, 64)
PAPER_PARAMS = {"G": 8_641_808, "D": 16_081_665}


@pytest.fixture(scope="module")
def fixture():
    return torch.load(FIX / "c3gan_small.pt", weights_only=True)


def _build(model: dict, size: int, init: bool = True):
    backend = C3GAN(C3GANConfig(**model), size)
    torch.manual_seed(0)
    if init:
        return backend, backend.build()
    keep = c3gan.init_weights
    c3gan.init_weights = lambda m, kind="orthogonal": None  # shapes only
    try:
        return backend, backend.build()
    finally:
        c3gan.init_weights = keep


def test_c3gan_one_iteration_equals_the_authors(fixture, monkeypatch):
    """Both renders (background, warped mask and foreground), every discriminator output
    (semantic features, real/fake logits, centroids), every loss term and every gradient of
    the authors' D step and G step."""
    fx = fixture
    conf = json.loads(fx["config"])
    backend, nets = _build(conf["model"], conf["size"])
    for name in ("G", "D"):
        sd = {k.split(".", 1)[1]: v.float() for k, v in fx["weights"].items() if k.split(".", 1)[0] == name}
        missing, unexpected = nets[name].load_state_dict(sd, strict=False)
        assert not unexpected, unexpected
        assert all(k.endswith("num_batches_tracked") for k in missing), missing
        nets[name].double().train()
    inp = fx["inputs"]
    assert [ph.name for ph in backend.phases()] == ["D", "G"]

    # the recorded draws, in the order the authors' iteration made them
    codes = [{k: v.double() if v.is_floating_point() else v for k, v in c.items()} for c in inp["codes"]]
    backend.sample_codes = lambda n, *a, **k: codes.pop(0)
    warps = list(inp["warps"])

    def random_affine(x, scale, rot_deg, shift, grids=None):
        assert (tuple(scale), rot_deg, shift) == ((0.8, 1.5), 15.0, 0.15)  # the strong preset: theirs
        if grids is None:
            s, r, tx, ty = warps.pop(0).double().unbind(1)
            grids = similarity_grid(s, r * (math.pi / 180), tx, ty, x)
        return warp(x, grids), grids

    aug = inp["aug_u8"].double() / 127.5 - 1
    monkeypatch.setattr(c3gan, "random_affine", random_affine)
    monkeypatch.setattr(c3gan, "simclr_view", lambda x, *a, **k: aug.clone())

    calls: dict[str, list[torch.Tensor]] = {}
    D = nets["D"]
    hooks = [getattr(D, head).register_forward_hook(
        lambda m, i, o, key=head: calls.setdefault(key, []).append(o.detach().flatten(1).clone()))
        for head in ("adv", "sem", "centroids")]
    batch = {"image": inp["real_u8"].double() / 127.5 - 1}
    seen = {}

    def after(name):
        out, _ = batch["cache"][f"fake_{name}"]
        for k, v in fx["renders"][0 if name == "D" else 1].items():
            _close(out[k], v, f"{name}-step render: {k}")
        composite = out["mask"] * out["foreground"] + (1 - out["mask"]) * out["background"]
        _close(out["image"], composite, "composite")
        seen[name] = {k: list(v) for k, v in calls.items()}
        calls.clear()

    grads = _run_phases(backend, nets, batch, ("D", "G"), fx["losses"], after=after)
    for h in hooks:
        h.remove()
    assert not warps and not codes  # every recorded draw used once

    for name in ("D", "G"):
        ref = fx["d_outputs"][name]
        got = seen[name]
        for ours, theirs in (("sem", "h"), ("adv", "adv")):
            assert len(got[ours]) == len(ref[theirs]), f"{name} step: {len(got[ours])} {ours} calls"
            for i, (o, r) in enumerate(zip(got[ours], ref[theirs])):
                _close(o, r, f"{name} step: {ours} call {i}")
        assert len(got["centroids"]) == 1
        _close(got["centroids"][0], ref["centres"], f"{name} step: centroids")

    _check_grads(grads, {name: fx["grads"][name] for name in ("D", "G")})


def test_c3gan_paper_architecture_has_the_authors_shapes():
    """At the paper setting every tensor of G and D has the authors' shape (under the key
    mapping) and each net the authors' parameter count: G 8,641,808, D 16,081,665."""
    ref = json.loads((FIX / "c3gan_paper_shapes.json").read_text())
    assert {k: v["params"] for k, v in ref.items()} == PAPER_PARAMS
    _, nets = _build({**PAPER, **AUTHORS}, 128, init=False)
    _check_shapes(nets, ref)
    # the CPU recipes' widths and first-conv bias are what make them differ
    _, ours = _build(PAPER, 128, init=False)
    assert sum(p.numel() for p in ours["D"].parameters()) == PAPER_PARAMS["D"] + 64
    assert ours["G"].bg.out_ch == 16 and ours["G"].bg.ups[3][1].out_channels == 2 * 32  # 32 at 64 px
    assert nets["G"].bg.ups[3][1].out_channels == 2 * 16  # the authors': 16 at 64 px
