"""The backend contract, run over every registered backend with fgtool/recipes/tiny.toml.

A new backend gets these tests for free: it builds, one step of every phase runs and
moves only the modules that phase trains, outputs have the right shapes, and a saved
checkpoint rebuilds a model that generates identical samples for a seed.
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import TINY

from fgtool import api, registry
from fgtool.backends.base import (
    CAPABILITIES,
    PROTOCOLS,
    Backend,
    CentroidClusterer,
    Clusterer,
    Encoder,
    FeatureEncoder,
    Grid,
    ObjectRemover,
    PartSegmenter,
    Segmenter,
    Translator,
)
from fgtool.train.trainer import Trainer, phase_params, resolve_module

MODELS = registry.names()


def _cfg(name: str, root, **sets):
    extra = [f"{k}={v}" for k, v in sets.items()]
    return api.resolve_config(name, str(root), str(TINY), extra)


def _batch(size: int, n: int = 8) -> dict:
    g = torch.Generator().manual_seed(0)
    fg = torch.zeros(n, 1, size, size)
    fg[:, :, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1
    return {"image": torch.rand(n, 3, size, size, generator=g) * 2 - 1, "fg": fg,
            "label": torch.arange(n) % 3, "index": torch.arange(n)}


@pytest.mark.parametrize("name", MODELS)
def test_registered_backend_is_complete(name):
    cls = registry.get(name)
    assert issubclass(cls, Backend)
    assert cls.name == name
    caps = cls.capabilities()
    assert {"train", "sample"} <= set(caps)
    with pytest.raises(Exception):
        registry.get(name + "-nope")


@pytest.mark.parametrize("name", MODELS)
def test_one_step_of_every_phase(name, tmp_path, synth_dir):
    cfg = _cfg(name, synth_dir, **{"train.ema_decay": "0.5"})
    tr = Trainer(cfg, tmp_path / "run", progress=False)
    before = {k: copy.deepcopy(v.state_dict()) for k, v in tr.nets.items()}
    ema_before = {k: copy.deepcopy(v.state_dict()) for k, v in tr.ema.items()}
    # run each phase alone and check it moves exactly the modules it trains
    for phase in tr.phases:
        tr.step = phase.start
        for m in tr.nets.values():
            m.load_state_dict(before[[k for k, v in tr.nets.items() if v is m][0]])
        only = [phase]
        saved, tr.phases = tr.phases, only
        # a net whose EMA stops at this step takes its averaged weights (the trainer's act,
        # not the phase's): MixNMatch's G at stage 2
        act = tr.backend.ema_active
        takes_ema = {k for k in tr.ema if tr.step > 0 and not act(k, tr.step) and act(k, tr.step - 1)}
        ema_now = {k: copy.deepcopy(tr.ema[k].state_dict()) for k in takes_ema}
        # a schedule boundary's change of state (Backend.on_phase_start) is the trainer's act
        # too, made before the step's phases: the phase is judged from the state after it
        tr.start_phases()
        base = {k: copy.deepcopy(v.state_dict()) for k, v in tr.nets.items()}
        tr.backend.on_phase_start = lambda *a: None  # made once already
        try:
            parts = tr.train_step(_batch(cfg.data.size, cfg.train.batch_size))
        finally:
            del tr.backend.on_phase_start
        tr.phases = saved
        assert f"{phase.name}/loss" in parts
        assert all(torch.isfinite(v) for v in parts.values()), parts
        trained = {id(p) for p in phase_params(tr.nets, phase)}
        assert trained, f"phase {phase.name} trains no parameters"
        moved_outside = []
        moved_inside = 0
        for k, net in tr.nets.items():
            for pname, p in net.named_parameters():
                if k in takes_ema and id(p) not in trained:
                    assert torch.equal(p.detach(), ema_now[k][pname]), f"{k}.{pname} did not take its EMA"
                    continue
                changed = not torch.equal(p.detach(), base[k][pname])
                if id(p) in trained:
                    moved_inside += int(changed)
                elif changed:
                    moved_outside.append(f"{k}.{pname}")
        assert moved_inside > 0, f"phase {phase.name} did not update its modules"
        # gradients are freed once the phase has stepped: none is held into the next phase
        assert all(p.grad is None for net in tr.nets.values() for p in net.parameters())
        assert not moved_outside, f"phase {phase.name} changed untrained params {moved_outside[:3]}"
    # the EMA moved towards the (last) trained weights
    for k, e in tr.ema.items():
        assert any(not torch.equal(v, ema_before[k][n]) for n, v in e.state_dict().items()
                   if v.is_floating_point())
    for ph in tr.phases:
        for t in ph.trains:
            resolve_module(tr.nets, t)  # every named module exists


@pytest.mark.parametrize("name", MODELS)
def test_generate_shapes_and_range(name, synth_dir):
    cfg = _cfg(name, synth_dir)
    b = registry.get(name)(cfg.model_cfg, cfg.data.size)
    nets = b.build()
    for m in nets.values():
        m.eval()
    codes = b.sample_codes(5, torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = b.generate(nets, codes)
    s = cfg.data.size
    assert out["image"].shape == (5, 3, s, s)
    assert out["image"].min() >= -1 and out["image"].max() <= 1
    for k, v in out.items():
        assert v.shape[0] == 5 and v.shape[-2:] == (s, s), k
        if "mask" in k:
            assert v.shape[1] == 1 and v.min() >= 0 and v.max() <= 1, k
    grids = b.grids(nets, torch.Generator().manual_seed(0), "all")
    assert "samples" in grids
    for g in grids.values():
        assert isinstance(g, Grid) and g.images.ndim == 4 and g.images.shape[1] in (1, 3)
        if g.row_labels:
            assert len(g.row_labels) * g.nrow == g.images.shape[0]


@pytest.mark.parametrize("name", MODELS)
def test_save_load_gives_identical_samples(name, tmp_path, synth_dir):
    cfg = _cfg(name, synth_dir)
    tr = Trainer(cfg, tmp_path / "run", progress=False)
    tr.train_step(_batch(cfg.data.size, cfg.train.batch_size))
    tr.save()
    nets = tr.inference_nets()
    for m in nets.values():
        m.eval()
    codes = tr.backend.sample_codes(6, torch.Generator().manual_seed(3))
    with torch.no_grad():
        a = tr.backend.generate(nets, codes)["image"]
    m = api.load(tmp_path / "run" / "last.pt", device="cpu")
    codes = m.backend.sample_codes(6, torch.Generator().manual_seed(3))
    with torch.no_grad():
        b = m.backend.generate(m.nets, codes)["image"]
    assert torch.equal(a, b)
    assert m.step == 1
    info = api.info(str(tmp_path / "run" / "last.pt"))
    assert info["model"] == name and info["config"]["data"]["size"] == cfg.data.size


# ----------------------------------------------------------------------------- ability protocols


def _built(name, root):
    cfg = _cfg(name, root)
    b = registry.get(name)(cfg.model_cfg, cfg.data.size)
    torch.manual_seed(0)
    nets = b.build()
    for m in nets.values():
        m.eval()
    return b, nets, cfg.data.size


def _own_abstract(proto) -> set[str]:
    return {k for k, v in vars(proto).items() if getattr(v, "__isabstractmethod__", False)}


@pytest.mark.parametrize("name", MODELS)
def test_capabilities_follow_the_declared_protocols(name):
    cls = registry.get(name)
    assert not getattr(cls, "__abstractmethods__", None), "a declared protocol method is missing"
    declared = [cap for cap, proto in CAPABILITIES.items() if issubclass(cls, proto)]
    assert cls.capabilities() == ["train", "sample", "gif", *declared]
    for cap, proto in CAPABILITIES.items():
        # an ability is declared or absent: no backend implements a protocol's methods without it
        if not issubclass(cls, proto):
            assert not _own_abstract(proto) <= set(dir(cls)), f"{name} implements {cap} undeclared"


def test_declared_abilities_per_model():
    caps = {n: set(registry.capabilities(n)) - {"train", "sample", "gif"} for n in MODELS}
    assert caps["finegan"] == {"cluster"}
    assert caps["c3gan"] == {"cluster", "centroids"}
    assert caps["mixnmatch"] == {"cluster", "mix", "feature-mix"}
    assert caps["ganseg"] == {"segment", "parts"}
    assert caps["onegan"] == {"cluster", "mix", "segment", "remove", "translate"}


@pytest.mark.parametrize("name", MODELS)
def test_declared_protocols_return_their_shapes(name, synth_dir):
    b, nets, s = _built(name, synth_dir)
    n = 4
    x = torch.rand(n, 3, s, s, generator=torch.Generator().manual_seed(1)) * 2 - 1
    sizes = b.code_sizes()
    assert isinstance(sizes, dict) and all(isinstance(v, int) and v >= 0 for v in sizes.values())
    assert set(sizes) <= set(b.sample_codes(2, torch.Generator().manual_seed(0)))
    checked = 0
    with torch.no_grad():
        if isinstance(b, Clusterer):
            feats = b.cluster_features(nets, x)
            assert isinstance(feats, dict) and feats
            for k, v in feats.items():
                assert v.ndim == 2 and v.shape[0] == n and v.is_floating_point() and torch.isfinite(v).all(), k
            k = b.n_clusters()
            assert k is None or (isinstance(k, int) and k >= 1)
            checked += 1
        if isinstance(b, CentroidClusterer):
            k = b.n_clusters()
            idx, conf = b.assign(nets, x)
            assert idx.shape == (n,) and idx.dtype == torch.int64 and 0 <= idx.min() and idx.max() < k
            assert conf.shape == (n,) and conf.min() >= 0 and conf.max() <= 1
            idx2, conf2 = b.assign(nets, x, b.cluster_features(nets, x))
            assert torch.equal(idx, idx2) and torch.allclose(conf, conf2)
            c = b.centroids(nets)
            assert c.ndim == 2 and c.shape[0] == k
            assert torch.allclose(c.norm(dim=1), torch.ones(k), atol=1e-5)
            checked += 1
        if isinstance(b, Encoder):
            soft, hard = b.encode(nets, x), b.encode(nets, x, hard=True)
            assert set(soft) == set(sizes) == set(hard), (set(soft), sizes)
            for k, size in sizes.items():
                if size == 0:
                    assert soft[k].ndim == 2 and soft[k].shape[0] == n, k
                else:
                    assert soft[k].shape == (n, size), (k, soft[k].shape, size)
                    assert torch.allclose(soft[k].sum(1), torch.ones(n), atol=1e-5), k
                    assert hard[k].shape == (n,) and 0 <= hard[k].min() and hard[k].max() < size, k
                    assert torch.equal(hard[k], soft[k].argmax(1)), k
            checked += 1
        if isinstance(b, FeatureEncoder):
            f = b.shape_features(nets, x)
            assert f.ndim == 4 and f.shape[0] == n
            assert b.feature_ready(0) is False
            checked += 1
        if isinstance(b, Segmenter):
            fg = b.segment(nets, x)
            assert fg.shape == (n, 1, s, s) and fg.min() >= 0 and fg.max() <= 1
            assert isinstance(b.segment_ready(10**6), bool)
            checked += 1
        if isinstance(b, PartSegmenter):
            k = b.n_parts()
            probs = b.segment_parts(nets, x)
            assert probs.shape == (n, k + 1, s, s)
            assert torch.allclose(probs.sum(1), torch.ones(n, s, s), atol=1e-4)
            assert torch.allclose(b.segment(nets, x), 1 - probs[:, k:], atol=1e-6)
            assert b.part_centres(probs).shape == (n, k, 2)
            checked += 1
        if isinstance(b, ObjectRemover):
            y = b.remove_object(nets, x)
            assert y.shape == (n, 3, s, s) and y.min() >= -1 and y.max() <= 1
            checked += 1
        if isinstance(b, Translator):
            assert sizes.get("c", 0) >= 1
            y = b.translate(nets, x, sizes["c"] - 1)
            assert y.shape == (n, 3, s, s) and y.min() >= -1 and y.max() <= 1
            checked += 1
    assert checked == sum(issubclass(type(b), p) for p in PROTOCOLS)
