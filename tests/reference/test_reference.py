"""Equivalence with the authors' code, tensor for tensor.

The fixtures in tests/fixtures/ were recorded from the authors' public code by
tests/reference/make_fixtures.py (their code is not part of this repository). Here our
networks get the recorded weights and inputs, run the same iteration, and must reproduce
every recorded tensor to 1e-5. Both sides run the iteration in float64: at the fixture's
batch of 2, BatchNorm turns fp32 rounding into differences of 1e-4 in the child layer, which
says nothing about the architecture. The recorded tensors are float32 copies.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fgtool.train.trainer import phase_params

FIX = Path(__file__).resolve().parents[1] / "fixtures"
TOL = dict(rtol=1e-5, atol=1e-5)


def _projection(t: torch.Tensor) -> torch.Tensor:
    return torch.sin(torch.arange(t.numel(), dtype=torch.float64) * 0.7 + 0.3).view_as(t)


def _summary(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().double()
    return torch.stack([t.sum(), (t * t).sum(), (t * _projection(t)).sum()])


def _close(ours: torch.Tensor, ref: torch.Tensor, what: str, rtol: float = 1e-5, atol: float = 1e-5) -> None:
    ours, ref = ours.detach().double(), ref.detach().double()
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} vs {tuple(ref.shape)}"
    err = (ours - ref).abs().max().item()
    assert torch.allclose(ours, ref, rtol=rtol, atol=atol), f"{what}: max |diff| {err:.3g}"


def _check_grads(grads: dict, refs: dict) -> None:
    """The same parameters get gradients in each step, and the same gradient summaries."""
    for name, ref in refs.items():
        assert set(grads[name]) == set(ref), f"{name} step: {sorted(set(grads[name]) ^ set(ref))[:6]}"
        for k, v in ref.items():
            _close(grads[name][k], v, f"{name}-step gradient of {k}")


def _check_shapes(nets: dict, ref: dict) -> None:
    """Every tensor of every net has the authors' shape (under the key mapping), and every
    net the authors' parameter count."""
    for name, r in ref.items():
        sd = nets[name].state_dict()
        assert set(sd) == set(r["shapes"]), f"{name}: {sorted(set(sd) ^ set(r['shapes']))[:6]}"
        for k, shp in r["shapes"].items():
            assert list(sd[k].shape) == shp, f"{name}.{k}: {list(sd[k].shape)} vs the authors' {shp}"
        assert sum(p.numel() for p in nets[name].parameters()) == r["params"], name


def _run_phases(backend, nets: dict, batch: dict, names: tuple, losses: dict, before=None, after=None) -> dict:
    """One iteration as the trainer runs it (requires_grad on the phase's nets and graph
    nets, Adam per phase), checking each phase's loss terms against ``losses[name]``;
    ``before(name)`` / ``after(name)`` run around each phase. Returns each phase's gradient
    summaries by parameter name."""
    phases = {ph.name: ph for ph in backend.phases()}
    named = {id(p): f"{k}.{n}" for k, m in nets.items() for n, p in m.named_parameters()}
    grads = {}
    for name in names:
        ph = phases[name]
        for m in nets.values():
            m.requires_grad_(False)
        for mod in ph.trains + ph.graph:
            root, _, sub = mod.partition(".")
            nets[root].get_submodule(sub).requires_grad_(True)
        params = phase_params(nets, ph)
        opt = torch.optim.Adam(params, lr=ph.lr, betas=ph.betas)
        if before:
            before(name)
        out = backend.loss(name, nets, batch, 1)
        out["loss"].backward()
        grads[name] = {named[id(p)]: _summary(p.grad) for p in params if p.grad is not None}
        for k, v in losses[name].items():
            _close(out[k], v, f"{name} loss term {k}")
        if after:
            after(name)
        opt.step()
    return grads


# ----------------------------------------------------------------------------- FineGAN


@pytest.fixture(scope="module")
def finegan_fixture():
    return torch.load(FIX / "finegan_small.pt", weights_only=True)


def _finegan(model: dict, size: int):
    from fgtool.backends.finegan import FineGAN, FineGANConfig

    backend = FineGAN(FineGANConfig(**model), size)
    torch.manual_seed(0)
    return backend, backend.build()


def _load_weights(nets: dict, weights: dict) -> None:
    for name in ("G", "Dbg", "Dp", "Dc"):
        sd = {k.split(".", 1)[1]: v.float() for k, v in weights.items() if k.split(".", 1)[0] == name}
        missing, unexpected = nets[name].load_state_dict(sd, strict=False)
        assert not unexpected, unexpected
        assert all(k.endswith("num_batches_tracked") for k in missing), missing


def test_finegan_one_iteration_equals_the_authors(finegan_fixture):
    """Generator layers, background patch labels, every discriminator output, every loss term
    and every gradient of one D step and one G step (with the Adam step between them)."""
    fx = finegan_fixture
    conf = json.loads(fx["config"])
    backend, nets = _finegan(conf["model"], conf["size"])
    _load_weights(nets, fx["weights"])
    for m in nets.values():
        m.double().train()
    inp = fx["inputs"]
    c = inp["c"]
    codes = {"z": inp["z"].double(), "c": c, "p": c // backend.ratio, "b": c.clone()}
    backend.sample_codes = lambda n, *a, **k: {k2: v.clone() for k2, v in codes.items()}

    # the patch labels from the boxes
    batch = {"image": inp["crop_u8"].double() / 127.5 - 1, "full": inp["full_u8"].double() / 127.5 - 1,
             "box": inp["box"]}
    Dbg = nets["Dbg"]
    assert Dbg.side == 126
    _close(Dbg.box_labels(inp["box"], 24), fx["bg_labels"], "background patch labels")

    # every head output, in call order
    calls: dict[str, list[torch.Tensor]] = {}
    hooks = []
    for net, head in (("Dbg", "adv"), ("Dbg", "aux"), ("Dc", "adv"), ("Dc", "info"), ("Dp", "info")):
        mod = getattr(nets[net], head)
        hooks.append(mod.register_forward_hook(
            lambda m, i, o, key=f"{net}.{head}": calls.setdefault(key, []).append(o.detach().clone())))

    assert [ph.name for ph in backend.phases()][:2] == ["D", "G"]

    def after(name):
        if name == "D":
            for k, v in fx["generator"].items():
                _close(batch["cache"]["fake"][0][k], v, f"generator {k}")

    grads = _run_phases(backend, nets, batch, ("D", "G"), {"D": fx["losses_d"], "G": fx["losses_g"]}, after=after)
    for h in hooks:
        h.remove()

    ref_d, ref_g = fx["d_outputs_d_step"], fx["d_outputs_g_step"]
    sig = torch.sigmoid
    expect = {
        "Dbg.adv": [ref_d["Dbg.real"][1], ref_d["Dbg.fake"][1], ref_g["Dbg.fake"][1]],
        "Dbg.aux": [ref_d["Dbg.real"][0], ref_d["Dbg.fake"][0], ref_g["Dbg.fake"][0]],
        "Dc.adv": [ref_d["Dc.real"][1], ref_d["Dc.fake"][1], ref_g["Dc.image"][1]],
        "Dc.info": [ref_g["Dc.child_fg"][0]],
        "Dp.info": [ref_g["Dp.parent_fg"][0]],
    }
    for key, refs in expect.items():
        assert len(calls[key]) == len(refs), f"{key}: {len(calls[key])} calls, the authors' step makes {len(refs)}"
        for i, (o, r) in enumerate(zip(calls[key], refs)):
            o = o.flatten(1) if o.shape[-1] == 1 else o
            o = o if key.endswith("info") else sig(o)
            _close(o.reshape(r.shape), r, f"{key} call {i}")

    # the same parameters get gradients, and the same gradients
    _check_grads(grads, {"D": fx["grads_d"], "G": fx["grads_g"]})


def test_finegan_paper_architecture_has_the_authors_shapes():
    """At the paper setting every tensor of G and the three Ds has the authors' shape (their
    layout through the key mapping) and every net the authors' parameter count."""
    ref = json.loads((FIX / "finegan_paper_shapes.json").read_text())
    from fgtool.backends import finegan as fg

    init = fg.init_weights
    fg.init_weights = lambda m, kind="orthogonal": None  # shapes only: skip the 80M-parameter init
    try:
        _, nets = _finegan(dict(n_child=200, n_parent=20, z_dim=100, ngf=64, ndf=64), 128)
    finally:
        fg.init_weights = init
    _check_shapes(nets, ref)


# ----------------------------------------------------------------------------- MixNMatch

MNM_NETS = ("G", "Dbg", "Dp", "Dc", "E", "Dpair")


@pytest.fixture(scope="module")
def mixnmatch_fixture():
    return torch.load(FIX / "mixnmatch_small.pt", weights_only=True)


def _mixnmatch(model: dict, size: int, noise=(0.0, 0.0, 0.0)):
    from fgtool.backends.mixnmatch import MixNMatch, MixNMatchConfig

    backend = MixNMatch(MixNMatchConfig(**model, pair_noise=noise), size)
    torch.manual_seed(0)
    return backend, backend.build()


def test_mixnmatch_one_iteration_equals_the_authors(mixnmatch_fixture):
    """Stage 1, one iteration in the authors' order: background-D and child-D step, critic step
    (their gradient penalty), generator+encoder step. Generator layers, encoder codes, patch
    labels, every discriminator and critic output, every loss term and every gradient. The
    critics' code noise is off on both sides; the penalty's mixing weights and the untied
    codes are the ones their run drew."""
    fx = mixnmatch_fixture
    conf = json.loads(fx["config"])
    backend, nets = _mixnmatch(conf["model"], conf["size"])
    for name in MNM_NETS:
        sd = {k.split(".", 1)[1]: v.float() for k, v in fx["weights"].items() if k.split(".", 1)[0] == name}
        missing, unexpected = nets[name].load_state_dict(sd, strict=False)
        assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)
        nets[name].double().train()
    inp = fx["inputs"]
    c = inp["c"]
    codes = {"z": inp["z"].double(), "c": c, "p": c // backend.ratio, "b": c.clone()}
    backend.sample_codes = lambda n, *a, **k: {k2: v.clone() for k2, v in codes.items()}
    free = {k: (v.double() if k == "z" else v) for k, v in inp["free"].items()}
    backend.free_codes = lambda n, *a, **k: {k2: v.clone() for k2, v in free.items()}
    batch = {"image": inp["crop_u8"].double() / 127.5 - 1, "full": inp["full_u8"].double() / 127.5 - 1,
             "box": inp["box"]}
    _close(nets["Dbg"].box_labels(inp["box"], 24), fx["bg_labels"], "background patch labels")

    calls: dict[str, list[torch.Tensor]] = {}
    hooks = []
    for net, head in (("Dbg", "adv"), ("Dbg", "aux"), ("Dc", "adv"), ("Dc", "info"), ("Dp", "info"),
                      *[("Dpair", k) for k in "zbpc"]):
        mod = getattr(nets[net], head)
        hooks.append(mod.register_forward_hook(
            lambda m, i, o, key=f"{net}.{head}": calls.setdefault(key, []).append(o.detach().clone())))

    assert [ph.name for ph in backend.phases()] == ["D", "Dpair", "G"]

    def before(name):
        if name == "Dpair":
            torch.manual_seed(conf["gp_seed"])  # the penalty's mixing weights, as their run drew them

    def after(name):
        for k, v in fx["generator"].items() if name == "D" else ():
            _close(batch["cache"]["fake"][0][k], v, f"generator {k}")
        for k, v in fx["encoder"].items() if name == "Dpair" else ():
            _close(batch["cache"]["enc"][1][k], v, f"encoder {k}")

    grads = _run_phases(backend, nets, batch, ("D", "Dpair", "G"), fx["losses"], before, after)
    for h in hooks:
        h.remove()

    d = fx["d_outputs"]
    sig = torch.sigmoid
    expect = {
        "Dbg.adv": [d["D0"]["Dbg.real"][1], d["D0"]["Dbg.fake"][1], d["GE"]["Dbg.fake"][1]],
        "Dbg.aux": [d["D0"]["Dbg.real"][0], d["D0"]["Dbg.fake"][0], d["GE"]["Dbg.fake"][0]],
        "Dc.adv": [d["D2"]["Dc.real"][1], d["D2"]["Dc.fake"][1], d["GE"]["Dc.image"][1]],
        "Dc.info": [d["GE"]["Dc.child_fg"][0]],
        "Dp.info": [d["GE"]["Dp.parent_fg"][0]],
    }
    for i, k in enumerate("zbpc"):  # ours: real and fake pairs in one forward, then the penalty's
        expect[f"Dpair.{k}"] = [torch.cat([d["BD"]["Dpair.real"][i], d["BD"]["Dpair.fake"][i]]),
                                d["BD"]["Dpair.mixed"][i],
                                torch.cat([d["GE"]["Dpair.real"][i], d["GE"]["Dpair.fake"][i]])]
    for key, refs in expect.items():
        assert len(calls[key]) == len(refs), f"{key}: {len(calls[key])} calls, the authors' step makes {len(refs)}"
        for i, (o, r) in enumerate(zip(calls[key], refs)):
            if key.startswith("Dbg") or key.endswith("adv"):
                o = sig(o)
            _close(o.reshape(r.shape), r, f"{key} call {i}")

    _check_grads(grads, {name: fx["grads"][name] for name in ("D", "Dpair", "G")})


def test_mixnmatch_paper_architecture_has_the_authors_shapes():
    ref = json.loads((FIX / "mixnmatch_paper_shapes.json").read_text())
    from fgtool.backends import mixnmatch as mm

    init = mm.init_weights
    mm.init_weights = lambda m, kind="orthogonal": None  # shapes only
    try:
        _, nets = _mixnmatch(dict(n_child=200, n_parent=20, z_dim=100, ngf=64, ndf=64, enc_width=64,
                                  pair_width=16, pair_hidden=512), 128, noise=(0.5, 0.3, 0.3))
    finally:
        mm.init_weights = init
    _check_shapes(nets, ref)


@pytest.fixture(scope="module")
def mixnmatch_stage2_fixture():
    return torch.load(FIX / "mixnmatch_stage2_small.pt", weights_only=True)


def test_mixnmatch_stage2_one_iteration_equals_the_authors(mixnmatch_stage2_fixture):
    """Stage 2 (feature mode), one iteration of the authors' second stage in their order: the
    frozen generator in eval mode renders phi(p, z) and G(y) from codes with a soft parent
    code, S(x) once, the feature critic's step, then the extractor's step through the updated
    critic. phi and the image, both extractor outputs, every critic output, every loss term
    and every gradient."""
    fx = mixnmatch_stage2_fixture
    conf = json.loads(fx["config"])
    backend, nets = _mixnmatch(conf["model"], conf["size"])
    for name in ("G", "S", "Dfeat"):
        sd = {k.split(".", 1)[1]: v.float() for k, v in fx["weights"].items() if k.split(".", 1)[0] == name}
        missing, unexpected = nets[name].load_state_dict(sd, strict=False)
        assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)
    for m in nets.values():
        m.double().train()
    inp = fx["inputs"]
    assert inp["p"].dim() == 2 and not torch.equal(inp["p"].max(1).values, torch.ones(2))  # a soft p
    codes = {"z": inp["z"].double(), "p": inp["p"].double(), "b": inp["b"], "c": inp["c"]}
    backend.stage2_codes = lambda n, *a, **k: {k2: v.clone() for k2, v in codes.items()}
    batch = {"image": inp["crop_u8"].double() / 127.5 - 1}

    calls: dict[str, list[torch.Tensor]] = {"S": [], "Dfeat": []}
    hooks = [nets[k].register_forward_hook(lambda m, i, o, k=k: calls[k].append(o.detach().clone()))
             for k in calls]
    assert [ph.name for ph in backend.phases()][-2:] == ["Dfeat", "S"]
    assert nets["Dfeat"].side == 126

    def after(name):
        if name == "Dfeat":
            phi, img, _ = batch["cache"]["s2"]
            _close(phi, fx["generator"]["phi"], "generator phi(p, z)")
            _close(img, fx["generator"]["image"], "generator image")

    grads = _run_phases(backend, nets, batch, ("Dfeat", "S"), fx["losses"], after=after)
    for h in hooks:
        h.remove()
    for key in calls:
        refs = fx[key]
        assert len(calls[key]) == len(refs), f"{key}: {len(calls[key])} calls, the authors' step makes {len(refs)}"
        for i, (o, r) in enumerate(zip(calls[key], refs)):
            _close(torch.sigmoid(o) if key == "Dfeat" else o, r, f"{key} call {i}")
    _check_grads(grads, {name: fx["grads"][name] for name in ("Dfeat", "S")})


def test_mixnmatch_stage2_paper_nets_have_the_authors_parameter_counts():
    """Their FeatureExtractor(3, 16) and Dis_Dis(16), the nets of their second stage (every
    tensor's shape is checked by test_mixnmatch_paper_architecture_has_the_authors_shapes)."""
    ref = json.loads((FIX / "mixnmatch_paper_shapes.json").read_text())
    assert (ref["S"]["params"], ref["Dfeat"]["params"]) == (39_126_688, 174_081)
    from fgtool.backends.mixnmatch import FeatureCritic, FeatureExtractor

    S, D = FeatureExtractor(32, 128, 16), FeatureCritic(16, 128)
    assert sum(p.numel() for p in S.parameters()) == 39_126_688
    assert sum(p.numel() for p in D.parameters()) == 174_081
    x = S(torch.zeros(1, 3, 128, 128))
    assert x.shape == (1, 16, 128, 128) and D(x).shape == (1, 1, 24, 24)
