"""OneGAN: GLU-LayerNorm, mixups, the two paths, the multi-phase schedule with the
discriminator clones at Phase II, exact resume across the boundary, segmentation and
object removal."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, eval_nets, run_json, same_checkpoints, tiny_backend, train_tiny

from fgtool import api
from fgtool import checkpoint as ckpt
from fgtool.backends.onegan import OneGAN
from fgtool.data.evalset import eval_set
from fgtool.errors import FgtoolError
from fgtool.nn.compose import mixup, sample_beta
from fgtool.train.trainer import Trainer, phase_params

S = 32  # tiny.toml: 32 px, 6 children, 2 parents, z 16, codes 8, ngf 8


def _backend(*sets) -> OneGAN:
    return tiny_backend("onegan", *sets)


def _images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, S, S, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _train(out: Path, data: Path, *sets, resume: bool = False) -> dict:
    return train_tiny("onegan", out, data, *sets, resume=resume)


@pytest.fixture(scope="module")
def run(synth_dir, tmp_path_factory) -> Path:
    """A 4-step tiny run: step 0 Phase I, step 1 clones and reconstructs fakes, 2-3 reals too."""
    out = tmp_path_factory.mktemp("onegan") / "run"
    _train(out, synth_dir)
    return out


# ----------------------------------------------------------------------------- layers


def test_generators_use_layer_norm_only():
    b = _backend()
    nets = eval_nets(b)
    kinds = {type(m).__name__ for m in nets["G"].modules()} | {type(m).__name__ for m in nets["E"].modules()}
    assert "GLULayerNorm" in kinds
    assert not any("BatchNorm" in k for k in kinds)


def test_discriminators_are_finegans():
    """The paper's discriminators follow FineGAN: the background patch D has no BatchNorm, and the
    image D is FineGAN's child D (its wide top), on every path."""
    nets = _backend("model.phase2_start=10", "model.real_start=20").build()
    fg = tiny_backend("finegan", "model.ndf=8", "model.n_child=6").build()

    def shapes(m: torch.nn.Module) -> dict:
        return {k: tuple(v.shape) for k, v in m.state_dict().items() if k != "cloned"}  # the path flag

    assert {"Dbg_rf", "Dbg_rr", "Dc_rf", "Dc_rr"} <= set(nets)
    for path in ("", "_rf", "_rr"):
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in nets[f"Dbg{path}"].modules())
        assert shapes(nets[f"Dbg{path}"]) == shapes(fg["Dbg"])
        assert shapes(nets[f"Dc{path}"]) == shapes(fg["Dc"])


def test_mixup_and_beta_ranges():
    a, c = torch.zeros(1000, 3), torch.ones(1000, 3)
    like = torch.zeros(1000, 1)
    beta = sample_beta(1000, 0.5, 1.0, like)
    assert beta.shape == (1000, 1) and beta.min() >= 0.5 and beta.max() <= 1.0
    assert beta.max() - beta.min() > 0.4  # really drawn per sample
    assert torch.equal(mixup(a, c, 0.0), a) and torch.equal(mixup(a, c, 1.0), c)
    assert torch.allclose(mixup(a, c, beta), beta.expand(-1, 3))
    b = _backend()
    n = 2000
    b1, b2, b3, b4 = b._train_betas(n, torch.zeros(n, 1), torch.zeros(n, 1, 1, 1))
    for v in (b1, b2):
        assert v.shape == (n, 1) and v.min() >= 0.0 and v.max() <= 1.0 and v.min() < 0.05 and v.max() > 0.95
    for v in (b3, b4):
        assert v.shape == (n, 1, 1, 1) and v.min() >= 0.5 and v.max() <= 1.0 and v.min() < 0.55 and v.max() > 0.95
    assert not torch.equal(b1, b2) and not torch.equal(b3, b4)  # four independent draws


# ----------------------------------------------------------------------------- the two paths


def test_generation_shapes_and_background_follows_parent():
    b = _backend()
    nets = eval_nets(b)
    g = torch.Generator().manual_seed(0)
    codes = b.sample_codes(12, g)
    assert torch.equal(codes["p"], codes["c"] // 3) and torch.equal(codes["b"], codes["p"])
    with torch.no_grad():
        out = b._generate_all(nets, codes)
    assert out["image"].shape == (12, 3, S, S) and out["mask"].shape == (12, 1, S, S)
    assert out["A_fg"].shape == out["A_bg"].shape == (12, nets["G"].pre_ch, S // 4, S // 4)
    assert out["v_p"].shape == out["v_c"].shape == out["v_bg"].shape == (12, 8)
    # the composite is eq. 5
    ref = out["background"] * (1 - out["mask"]) + out["foreground"] * out["mask"]
    assert torch.allclose(out["image"], ref, atol=1e-6)
    # the background depends on (p, z) only: children of one parent share it, the foreground differs
    z = torch.randn(1, 16, generator=g).repeat(3, 1)
    with torch.no_grad():
        sib = b.generate(nets, b.sample_codes(3, g, z=z, c=torch.tensor([3, 4, 5])))
        other = b.generate(nets, b.sample_codes(3, g, z=z, c=torch.tensor([0, 1, 2])))
    assert torch.equal(sib["background"][0], sib["background"][1])
    assert not torch.allclose(sib["foreground"][0], sib["foreground"][1])
    assert not torch.allclose(sib["background"][0], other["background"][0])
    # soft codes: one-hot vectors give the same images as indices
    oh = {"z": codes["z"], **{k: torch.nn.functional.one_hot(codes[k], n).float()
                              for k, n in (("b", 2), ("p", 2), ("c", 6))}}
    with torch.no_grad():
        soft = b.generate(nets, oh)
    assert torch.allclose(soft["image"], out["image"], atol=1e-6)


def test_encoders_and_reconstruction_shapes():
    b = _backend()
    nets = eval_nets(b)
    x = _images(5)
    with torch.no_grad():
        sh, st = nets["E"].shape(x), nets["E"].style(x)
        r = b.reconstruct(nets, x)
        enc = b.encode(nets, x)
        hard = b.encode(nets, x, hard=True)
        feats = b.cluster_features(nets, x)
    assert sh["logits_p"].shape == (5, 2) and st["logits_c"].shape == (5, 6)
    for k, d in (("mu_p", 8), ("lv_p", 8), ("mu_z", 16), ("lv_z", 16)):
        assert sh[k].shape == (5, d), k
    assert st["mu_c"].shape == st["lv_c"].shape == (5, 8)
    assert sh["B_fg"].shape == (5, nets["G"].pre_ch, S // 4, S // 4)  # the bypass fits the pre-image
    assert nets["E"].bg(x, r["mask"]).shape == sh["B_fg"].shape
    for k, c in (("image", 3), ("background", 3), ("foreground", 3), ("mask", 1)):
        assert r[k].shape == (5, c, S, S), k
    assert torch.allclose(r["image"], r["background"] * (1 - r["mask"]) + r["foreground"] * r["mask"], atol=1e-6)
    assert torch.equal(enc["z"], sh["mu_z"]) and torch.equal(enc["b"], enc["p"])
    assert torch.allclose(enc["c"].sum(1), torch.ones(5), atol=1e-5)
    assert torch.equal(hard["c"], enc["c"].argmax(1)) and hard["p"].dtype == torch.long
    assert set(feats) == {"parent", "child"}
    for v in feats.values():
        assert v.shape[0] == 5 and torch.allclose(v.norm(dim=1), torch.ones(5), atol=1e-5)


def test_mixup_weights_choose_the_source_of_each_code():
    """beta 1 everywhere: the encoders' codes and bypasses alone drive the generators, so the
    embeddings and the pre-image stages do not matter; beta 0 at the codes: the encoder's
    Gaussian means do not matter."""
    b = _backend()
    nets = eval_nets(b)
    x = _images(3, seed=1)
    G = nets["G"]
    with torch.no_grad():
        ones = b.reconstruct(nets, x, (1.0, 1.0, 1.0, 1.0))["image"]
        mid = b.reconstruct(nets, x)["image"]
        zero_codes = b.reconstruct(nets, x, (0.0, 0.0, 1.0, 1.0))["image"]
        for mod in (G.Vp, G.Vc, G.Vbg, G.bg.g0, G.fg.g0):
            for p in mod.parameters():
                p.add_(torch.randn_like(p))
        assert torch.allclose(b.reconstruct(nets, x, (1.0, 1.0, 1.0, 1.0))["image"], ones, atol=1e-5)
        assert not torch.allclose(b.reconstruct(nets, x)["image"], mid, atol=1e-3)
    nets = eval_nets(b)
    with torch.no_grad():
        for lin in (nets["E"].shape.code, nets["E"].style.code):
            lin.weight.add_(torch.randn_like(lin.weight))
        # the code heads' mean halves are ignored with beta1 = beta2 = 0 (the pose z still comes from Ep)
        assert torch.allclose(b.reconstruct(nets, x, (0.0, 0.0, 1.0, 1.0))["image"], zero_codes, atol=1e-5)
        assert not torch.allclose(b.reconstruct(nets, x, (1.0, 1.0, 1.0, 1.0))["image"], ones, atol=1e-3)


def test_training_reconstruction_samples_codes_and_betas():
    b = _backend()
    nets = eval_nets(b)
    x = _images(4)
    torch.manual_seed(0)
    with torch.no_grad():
        r1 = b._recon_train(nets, x)["image"]
        r2 = b._recon_train(nets, x)["image"]
        m1, m2 = b.reconstruct(nets, x)["image"], b.reconstruct(nets, x)["image"]
    assert not torch.allclose(r1, r2)  # random codes and mixup weights per call
    assert torch.equal(m1, m2)  # inference is deterministic


# ----------------------------------------------------------------------------- schedule


def test_schedule_and_phases():
    b = _backend("model.phase2_start=10", "model.real_start=20")
    assert b.schedule() == {"gen": 0, "rf": 10, "rr": 20}
    assert b.paths(9) == ["gen"] and b.paths(10) == ["gen", "rf"] and b.paths(25) == ["gen", "rf", "rr"]
    ph = {p.name: p for p in b.phases()}
    assert list(ph) == ["G", "D", "D_rf", "D_rr"]  # the clones' copy is a hook, not a phase
    assert ph["D_rf"].start == 10 and ph["D_rr"].start == 20 and ph["G"].active(0) and ph["D"].active(10 ** 6)
    assert ph["G"].trains == ("G", "E", "Dc.info") and ph["D_rr"].trains == ("Dbg_rr", "Dc_rr.trunk", "Dc_rr.adv")
    # Phase I only: no clones, no reconstruction phases
    b1 = _backend("model.phase2_start=never", "model.real_start=never")
    assert [p.name for p in b1.phases()] == ["G", "D"] and b1.paths(10 ** 6) == ["gen"]
    assert not any(k.endswith(("_rf", "_rr")) for k in b1.build())
    # fakes only (the paper's "no real recon" ablation)
    b2 = _backend("model.phase2_start=5", "model.real_start=never")
    assert [p.name for p in b2.phases()] == ["G", "D", "D_rf"]
    assert set(b2.build()) == {"G", "E", "Dbg", "Dc", "Dbg_rf", "Dc_rf"}


@pytest.mark.parametrize("sets,match", [
    (("model.phase2_start=5", "model.real_start=3"), "real_start"),
    (("model.phase2_start=never", "model.real_start=3"), "real_start"),
    (("model.beta_map=0.5,1.5",), "beta_map"),
    (("model.beta_code=0.8,0.2",), "beta_code"),
    (("model.infer_beta=0.5,0.5,2,0.5",), "infer_beta"),
    (("model.n_child=7",), "multiple"),
    (("model.phase2_start=-3",), "phase2_start"),
])
def test_bad_config_is_a_user_error(sets, match):
    with pytest.raises(FgtoolError, match=match):
        _backend(*sets)


def _moved(before: dict, nets: dict) -> set[str]:
    return {f"{k}.{n}" for k, net in nets.items() for n, p in net.named_parameters()
            if not torch.equal(p.detach(), before[k][n])}


def test_phase2_boundary_clones_the_discriminators(synth_dir, tmp_path):
    """Each phase of every step moves only what it trains; at the boundary, before the step's
    phases, the trainer's on_phase_start hook makes the clones equal to the generation-path
    discriminators (and moves nothing else, at no other step), and training makes them
    separate afterwards."""
    cfg = api.resolve_config("onegan", str(synth_dir), str(TINY), ["model.phase2_start=2", "model.real_start=3"])
    tr = Trainer(cfg, tmp_path / "run", progress=False)
    from test_contract import _batch

    names = {id(p): f"{k}.{n}" for k, net in tr.nets.items() for n, p in net.named_parameters()}
    phases = tr.phases
    seen = {}
    clone_params = {f"{dst}.{n}" for dst, _ in tr.backend.clones() for n, _ in tr.nets[dst].named_parameters()}
    for step in range(5):
        before = {k: copy.deepcopy(v.state_dict()) for k, v in tr.nets.items()}
        tr.step = step
        tr.start_phases()
        moved = _moved(before, tr.nets)
        assert (moved and moved <= clone_params) if step == 2 else not moved, (step, sorted(moved)[:3])
        for dst, src in tr.backend.clones():
            a, b = tr.nets[dst].state_dict(), tr.nets[src].state_dict()
            assert bool(tr.nets[dst].cloned) == (step >= 2)
            if step == 2:
                assert all(torch.equal(a[k], b[k]) for k in b if k != "cloned"), dst  # weights and BN statistics
        batch = _batch(S, 8)
        batch["cache"] = {}
        for ph in phases:
            if not ph.active(step):
                continue
            before = {k: copy.deepcopy(v.state_dict()) for k, v in tr.nets.items()}
            tr.phases, tr.step = [ph], step
            # one cache per step shared by its phases, as in Trainer.train_step
            _run_phase(tr, ph, batch)
            moved = _moved(before, tr.nets)
            trained = {names[id(p)] for p in phase_params(tr.nets, ph)}
            assert moved and moved <= trained, (step, ph.name, sorted(moved - trained)[:3])
            seen.setdefault(ph.name, []).append(step)
        tr.phases = phases
    assert seen == {"G": [0, 1, 2, 3, 4], "D": [0, 1, 2, 3, 4], "D_rf": [2, 3, 4], "D_rr": [3, 4]}
    # after the boundary every clone has its own weights (trained on its own path since step 2)
    for dst, src in tr.backend.clones():
        a, b = dict(tr.nets[dst].named_parameters()), dict(tr.nets[src].named_parameters())
        assert not torch.equal(a["adv.weight"], b["adv.weight"]), dst


def _run_phase(tr: Trainer, ph, batch: dict) -> None:
    """One optimiser step of one phase, as Trainer.train_step does it, keeping ``batch["cache"]``."""
    tr._set_trainable(ph)
    opt = tr.opts[ph.name]
    opt.zero_grad(set_to_none=True)
    out = tr.backend.loss(ph.name, tr.nets, batch, tr.step)
    out["loss"].backward()
    opt.step()
    assert all(torch.isfinite(v).all() for v in out.values()), {k: v for k, v in out.items()}


def test_phase_parts_are_logged_by_path(run):
    rows = {r["step"]: r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}
    assert set(rows) == {2, 4}  # tiny: log_every 2
    # rows average steps 0-1 and 2-3: the clones were copied at step 1, the reals from step 2
    assert "D_rf/loss" in rows[2] and "rf_rec" in rows[2] and "D_rr/loss" not in rows[2]
    assert "D_rr/loss" in rows[4] and "rr_rec" in rows[4] and "rr_vae" in rows[4]
    assert not any(k.startswith("clone") or k == "cloned" for r in rows.values() for k in r)  # no phase
    ck = ckpt.load(run / "last.pt")
    assert all(bool(ck["nets"][k]["cloned"]) for k in ("Dbg_rf", "Dc_rf", "Dbg_rr", "Dc_rr"))
    assert set(ck["ema"]) == {"G", "E"}
    assert set(ck["optim"]) == {"G", "D", "D_rf", "D_rr"}  # no optimiser for the copy


def test_resume_across_the_phase2_boundary_is_bit_identical(synth_dir, tmp_path):

    sets = ["model.phase2_start=2", "model.real_start=3", "train.steps=5", "train.log_every=1",
            "train.ckpt_every=1", "train.sample_every=100", "train.keep=10"]
    full = tmp_path / "full"
    _train(full, synth_dir, *sets)
    ck = {s: ckpt.load(full / f"step_{s:07d}.pt")["nets"] for s in (2, 3)}
    assert not bool(ck[2]["Dc_rf"]["cloned"]) and bool(ck[3]["Dc_rf"]["cloned"])
    for stop in (2, 3):  # stopped right before the boundary step, and right after it
        part = tmp_path / f"part{stop}"
        _train(part, synth_dir, *[s if s != "train.steps=5" else f"train.steps={stop}" for s in sets])
        _train(part, synth_dir, "train.steps=5", resume=True)
        same_checkpoints(full / "last.pt", part / "last.pt", 5, what=stop)
        ra = (full / "metrics.jsonl").read_text().splitlines()
        rb = (part / "metrics.jsonl").read_text().splitlines()
        strip = [{k: v for k, v in json.loads(r).items() if k != "it_s"} for r in ra]
        assert strip == [{k: v for k, v in json.loads(r).items() if k != "it_s"} for r in rb]


# ----------------------------------------------------------------------------- capabilities


def test_segment_and_remove_object_on_a_trained_model(run, synth_dir):
    m = api.load(run / "last.pt", device="cpu")
    assert set(m.nets) == {"G", "E"}
    assert {"train", "sample", "cluster", "mix", "segment"} <= set(OneGAN.capabilities())
    _, ds = eval_set(m, str(synth_dir), with_masks=True)
    x = torch.stack([ds[i]["image"] for i in range(8)])
    with torch.no_grad():
        mask = m.backend.segment(m.nets, x)
        bg = m.backend.remove_object(m.nets, x)
        r = m.backend.reconstruct(m.nets, x)
    assert mask.shape == (8, 1, S, S) and mask.min() >= 0 and mask.max() <= 1
    assert bg.shape == (8, 3, S, S) and bg.min() >= -1 and bg.max() <= 1
    assert torch.equal(mask, r["mask"].clamp(0, 1)) and torch.equal(bg, r["background"].clamp(-1, 1))
    # not trivial: neither all object nor all background, and it varies over the image
    on = (mask > 0.5).float().mean()
    assert 0.0 < on < 1.0, on
    assert mask.flatten(1).std(1).min() > 1e-3
    assert torch.isfinite(mask).all()


def test_segment_cli_and_iou(capsys, run, synth_dir, tmp_path):
    res = run_json(capsys, "segment", "--ckpt", run / "last.pt", "--data", synth_dir, "--out", tmp_path / "masks",
                   "--max-images", "6")
    masks = sorted((tmp_path / "masks").rglob("*.png"))
    assert len([p for p in masks if p.name != "overlay.png"]) == 6, res
    ev = run_json(capsys, "eval", "--metric", "iou", "--ckpt", run / "last.pt", "--data", synth_dir)
    assert ev["metrics"]["n"] == 48 and 0.0 < ev["metrics"]["iou"] < 1.0 and 0.0 < ev["metrics"]["dice"] < 1.0


def test_segment_remove_object_writes_backgrounds(capsys, run, synth_dir, tmp_path):
    from PIL import Image

    out = tmp_path / "rm"
    res = run_json(capsys, "segment", "--ckpt", run / "last.pt", "--data", synth_dir, "--out", out,
                   "--max-images", "4", "--remove-object")
    assert res["backgrounds"] == 4
    idx = json.loads((out / "index.json").read_text())
    for it in idx["items"]:
        bg, mask = Path(it["background"]), Path(it["mask"])
        assert bg.name == mask.stem + "_bg.png" and bg.parent == mask.parent
        with Image.open(bg) as b, Image.open(mask) as mk:
            assert b.mode == "RGB" and mk.mode == "L" and b.size[0] == b.size[1] >= 32  # the crop the model saw
    # without the option no background files
    res = run_json(capsys, "segment", "--ckpt", run / "last.pt", "--data", synth_dir, "--out", tmp_path / "plain",
                   "--max-images", "2")
    assert res["backgrounds"] == 0 and not list((tmp_path / "plain").rglob("*_bg.png"))


def test_mix_codes_from_photos(run, synth_dir):
    m = api.load(run / "last.pt", device="cpu")
    imgs = sorted((synth_dir / "images").rglob("*.png"))[:2]
    from fgtool.mixing import load_reference, mix_images

    a, b = (load_reference(p, S)[None] for p in imgs)
    out = mix_images(m, {"bg": a, "shape": b, "texture": b, "pose": a}, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, S, S) and out.min() >= -1 and out.max() <= 1


def test_paper_recipe_matches_the_paper():
    recipe = Path(__file__).resolve().parents[2] / "fgtool" / "recipes" / "onegan-cub.toml"
    cfg = api.resolve_config(None, "/data", str(recipe), [])
    m, t = cfg.model_cfg, cfg.train
    assert cfg.model == "onegan"
    assert (cfg.data.size, t.batch_size, m.n_child, m.n_parent) == (128, 20, 200, 20)
    assert (m.lr_g, m.lr_d, t.steps, m.phase2_start, m.real_start) == (2e-4, 2e-4, 600000, 200000, 400000)
    assert (m.beta_code, m.beta_map, m.w_bg_adv, m.w_rv, m.w_rm) == ((0.0, 1.0), (0.5, 1.0), 10.0, 0.1, 2.0)


# ----------------------------------------------------------------------------- object removal metric


def test_clean_backgrounds_mirror_the_renderer(synth_dir, tmp_path):
    from PIL import Image

    from fgtool.data.synth import config_from_meta, render_one
    from fgtool.metrics.mix import synth_meta
    from fgtool.metrics.removal import clean_backgrounds, render_with_background

    meta = synth_meta(synth_dir)
    cfg = config_from_meta(meta)
    for i in (0, 5, 17):
        photo, mask, clean = render_with_background(i, int(meta["seed"]), cfg)
        ref, ref_mask, _ = render_one(i, int(meta["seed"]), cfg)
        assert (photo == ref).all() and (mask == ref_mask).all()  # same draws as the renderer
        d = np.abs(photo.astype(float) - clean.astype(float)).mean(-1)
        assert d[~mask].mean() < 4 and d[mask].mean() > 10  # noise outside, the object inside
    out = clean_backgrounds(synth_dir, tmp_path / "bg")
    rel = (synth_dir / "images.txt").read_text().split()[1]
    with Image.open(out / "images" / rel) as a, Image.open(synth_dir / "images" / rel) as b:
        assert a.size == b.size
    assert (out / "bounding_boxes.txt").read_text() == (synth_dir / "bounding_boxes.txt").read_text()


def test_removal_metric_scores_an_oracle_and_the_model(capsys, run, synth_dir, tmp_path):
    from fgtool.metrics.removal import clean_backgrounds, removal_error

    m = api.load(run / "last.pt", device="cpu")
    bg = clean_backgrounds(synth_dir, tmp_path / "bg")
    _, ds_bg = eval_set(m, str(bg))
    truth = torch.stack([ds_bg[i]["image"] for i in range(len(ds_bg))])
    seen = {"i": 0}

    def oracle(nets, images, fill="gan"):  # the true backgrounds, batch by batch
        i = seen["i"]
        seen["i"] += images.shape[0]
        return truth[i:i + images.shape[0]]

    real = m.backend.remove_object
    m.backend.remove_object = oracle
    try:
        perfect = removal_error(m, synth_dir, bg)
    finally:
        m.backend.remove_object = real
    assert perfect["removal_l1"] < 1e-6 and perfect["removal_l1_outside"] < 1e-6
    assert perfect["mean_fill_l1"] > 0.03 and perfect["removal_n"] == 48
    res = run_json(capsys, "eval", "--metric", "removal", "--ckpt", run / "last.pt", "--data", synth_dir)["metrics"]
    assert 0.0 < res["removal_l1"] < 1.0 and res["mean_fill_l1"] == pytest.approx(perfect["mean_fill_l1"])


# ----------------------------------------------------------------------------- image-to-image (mix --texture-class)


def test_translate_swaps_only_the_style_code():
    b = _backend()
    nets = eval_nets(b)
    x = _images(3, seed=2)
    with torch.no_grad():
        t1, t2 = b.translate(nets, x, 1), b.translate(nets, x, 4)
        assert torch.equal(t1, b.reconstruct(nets, x, child=torch.tensor([1, 1, 1]))["image"].clamp(-1, 1))
        assert not torch.allclose(t1, t2, atol=1e-4)
        own = b.reconstruct(nets, x)["image"]
        assert not torch.allclose(t1, own, atol=1e-4)
        nets["G"].Vc.weight[:, 4] = nets["G"].Vc.weight[:, 1]  # class 4 given class 1's embedding
        assert torch.allclose(b.translate(nets, x, 4), t1, atol=1e-6)  # the class enters through Vc only
    with pytest.raises(FgtoolError, match="child class"):
        b.translate(nets, x, 6)


def test_mix_texture_class_cli(capsys, run, synth_dir, tmp_path):
    from conftest import one_error_line, run_cli
    from PIL import Image

    photo = sorted((synth_dir / "images").rglob("*.png"))[0]
    res = run_json(capsys, "mix", "--ckpt", run / "last.pt", "--base", photo, "--texture-class", "2",
                   "--out", tmp_path / "t.png")
    assert res["texture_class"] == 2 and Path(res["out"]).exists()
    with Image.open(res["out"]) as im:
        assert im.size == (S, S)
    for argv, msg in ((["--texture-class", "2"], "needs the photo"),
                      (["--base", photo, "--texture-class", "9"], "must be in 0..5"),
                      (["--base", photo, "--texture", photo, "--texture-class", "1"], "drop --texture")):
        rc, _, err = run_cli(capsys, "mix", "--ckpt", run / "last.pt", *argv, "--out", tmp_path / "x.png")
        assert rc == 2 and msg in one_error_line(err)


def test_one_step_with_every_path_at_64_px(synth_dir, tmp_path):
    """64 px (pre-images at 16 px), every path from step 0 (the paper's "no multi-phase" ablation)."""
    cfg = api.resolve_config("onegan", str(synth_dir), str(TINY), ["data.size=64", "train.batch_size=4",
                                                                   "model.phase2_start=0", "model.real_start=0"])
    tr = Trainer(cfg, tmp_path / "run", progress=False)
    from test_contract import _batch

    parts = tr.train_step(_batch(64, 4))
    assert all(bool(tr.nets[k].cloned) for k in ("Dbg_rf", "Dc_rf", "Dbg_rr", "Dc_rr"))  # copied at step 0
    for k in ("G/loss", "D/loss", "D_rf/loss", "D_rr/loss", "rf_rec", "rr_rec", "rr_per"):
        assert k in parts and torch.isfinite(parts[k]), k
    with torch.no_grad():
        nets = tr.inference_nets()
        r = tr.backend.reconstruct(nets, _images(2).repeat_interleave(2, 2).repeat_interleave(2, 3))
    assert r["mask"].shape == (2, 1, 64, 64) and r["image"].shape == (2, 3, 64, 64)
    assert tr.nets["G"].fg.g0(torch.zeros(1, 24)).shape[-2:] == (16, 16)  # p_dim 8 + z 16 -> A_fg at size / 4


def test_cluster_with_the_encoders(capsys, run, synth_dir):
    ev = run_json(capsys, "eval", "--metric", "nmi,acc", "--ckpt", run / "last.pt", "--data", synth_dir)
    assert ev["k"] == 6 and ev["method"] == "k-means"  # k = n_child by default
    assert 0.0 <= ev["metrics"]["nmi"] <= 1.0 and 0.0 < ev["metrics"]["acc"] <= 1.0
    ev = run_json(capsys, "eval", "--metric", "nmi", "--ckpt", run / "last.pt", "--data", synth_dir,
                  "--features", "parent", "--label", "parent", "--k", "2")
    assert ev["k"] == 2 and ev["features"] == "parent"


# ----------------------------------------------------------------------------- distilled segmenter


def _seg_backend(*sets) -> OneGAN:
    return _backend("model.seg_start=2", "model.seg_width=4", "model.self_jitter=0", *sets)


def test_segmenter_stage_phases_and_nets():
    b = _seg_backend("model.self_start=3")
    ph = {p.name: p for p in b.phases()}
    # the GAN stops where the segmenter starts; only S moves from then on
    assert ph["G"].active(1) and not ph["G"].active(2) and not ph["D"].active(2) and not ph["D_rr"].active(5)
    assert ph["S"].trains == ("S",) and ph["S"].active(2) and not ph["S"].active(1) and ph["S"].active(10 ** 6)
    nets = b.build()
    assert "S" in nets and not bool(nets["S"].trained)
    assert "S" not in _backend().build()
    assert "S" in OneGAN.inference_nets


@pytest.mark.parametrize("sets,match", [
    (("model.seg_start=5", "model.self_start=3"), "self_start"),
    (("model.self_start=3",), "self_start"),
    (("model.seg_start=-2",), "seg_start"),
    (("model.seg_start=2", "model.self_fg_range=0.5,0.2"), "self_fg_range"),
    (("model.seg_start=2", "model.self_refine=crf"), "self_refine"),
    (("model.seg_start=2", "model.self_guard=-1"), "self_guard"),
])
def test_bad_segmenter_config_is_a_user_error(sets, match):
    with pytest.raises(FgtoolError, match=match):
        _backend(*sets)


def test_segmenter_learns_onegans_masks_then_its_own():
    """Before self_start the labels are OneGAN's maps of the photos (here a stand-in: the left
    half is object), after it S's own; segment() switches to S once S has trained."""
    b = _seg_backend("model.self_start=3", "model.self_refine=none", "model.self_conf=0.5")
    nets = eval_nets(b)
    x = _images(4)
    with torch.no_grad():
        before = b.segment(nets, x)
    assert torch.equal(before, b.reconstruct(nets, x)["mask"].float().clamp(0, 1))  # untrained S is not used
    left = torch.zeros(4, 1, S, S)
    left[..., : S // 2] = 1.0
    b._own_probs = lambda nets_, v: torch.cat([left, 1 - left], 1)[: v.shape[0]]
    out = b.loss("S", nets, {"image": x}, step=2)
    assert out["s_own"] == 0 and out["s_self_fg"].item() == pytest.approx(0.5) and out["s_self_used"] == 1
    assert bool(nets["S"].trained) and b.has_segmenter(nets)
    # from self_start the teacher is S in eval mode (its argmax; conf 0.5 keeps every pixel)
    nets["S"].eval()
    with torch.no_grad():
        own = (nets["S"](x).argmax(1) == 0).float().mean().item()
        seg = b.segment(nets, x)
    out = b.loss("S", nets, {"image": x}, step=3)
    assert out["s_own"] == 1 and out["s_self_fg"].item() == pytest.approx(own)
    assert torch.allclose(seg, nets["S"](x).softmax(1)[:, :1], atol=1e-6)
    assert not torch.equal(seg, before)


def test_segmenter_guard_applies_to_its_own_labels_only():
    """OneGAN's rough masks are there for GrabCut to rewrite: the guard never drops them; S's
    own labels outside model.self_fg_range are dropped."""
    # a guard this loose keeps any GrabCut change: the foreground range alone decides
    b = _seg_backend("model.self_start=3", "model.self_guard=100", "model.self_fg_range=0.9,1.0")
    nets = eval_nets(b)
    blob = torch.zeros(4, 1, S, S)
    blob[..., 8:24, 8:24] = 1.0
    x = torch.where(blob > 0, torch.tensor([0.8, -0.6, -0.6]).view(1, 3, 1, 1),
                    torch.tensor([-0.6, -0.4, 0.7]).view(1, 3, 1, 1))  # a red square on blue: GrabCut keeps it
    two = torch.cat([blob, 1 - blob], 1)
    b._own_probs = lambda nets_, v: two[: v.shape[0]]

    class Blob(torch.nn.Module):  # S drawing the same blob
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))
            self.register_buffer("trained", torch.ones((), dtype=torch.bool))

        def forward(self, v):
            return (two[: v.shape[0]] * 20 - 10) + self.w

    assert b.loss("S", nets, {"image": x}, step=2)["s_self_used"] == 1  # 25% object: outside the range, kept
    nets["S"] = Blob()
    assert b.loss("S", nets, {"image": x}, step=3)["s_self_used"] == 0  # S's own: dropped
    b.cfg.self_fg_range = (0.2, 0.3)
    assert b.loss("S", nets, {"image": x}, step=3)["s_self_used"] == 1


def test_segmenter_stage_trains_resumes_and_segments(capsys, synth_dir, tmp_path):
    """A run through the GAN and into the segmenter stage: a resumed run matches an uninterrupted
    one bit for bit across seg_start and self_start; the checkpoint's S segments photos
    (`segment`, `eval`), while object removal keeps the reconstruction path."""

    sets = ["model.seg_start=3", "model.self_start=4", "model.seg_width=4", "model.self_tta=true",
            "model.self_guard=0.3", "train.steps=5", "train.log_every=1", "train.ckpt_every=1",
            "train.sample_every=100"]
    full, part = tmp_path / "full", tmp_path / "part"
    _train(full, synth_dir, *sets)
    _train(part, synth_dir, *[s if s != "train.steps=5" else "train.steps=3" for s in sets])
    _train(part, synth_dir, "train.steps=5", resume=True)
    a, _ = same_checkpoints(full / "last.pt", part / "last.pt")
    rows = [json.loads(r) for r in (full / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("s_own") for r in rows if r["step"] >= 4] == [0.0, 1.0]
    assert "G/loss" in rows[2] and "G/loss" not in rows[3] and "S/loss" in rows[3]
    g3 = ckpt.load(full / "step_0000003.pt")["nets"]
    assert all(torch.equal(v, a["nets"]["G"][k]) for k, v in g3["G"].items())  # the GAN stopped
    m = api.load(full / "last.pt", device="cpu")
    assert set(m.nets) == {"G", "E", "S"} and m.backend.has_segmenter(m.nets)
    _, ds = eval_set(m, str(synth_dir), with_masks=True)
    x = torch.stack([ds[i]["image"] for i in range(6)])
    with torch.no_grad():
        assert torch.allclose(m.backend.segment(m.nets, x), m.nets["S"](x).softmax(1)[:, :1])
        assert torch.equal(m.backend.remove_object(m.nets, x),
                           m.backend.reconstruct(m.nets, x)["background"].float().clamp(-1, 1))
    ev = run_json(capsys, "eval", "--metric", "iou", "--ckpt", full / "last.pt", "--data", synth_dir)
    assert ev["metrics"]["n"] == 48
    assert (full / "segmenter.png").exists()


def test_segmenter_pastes_from_self_start_and_crops_can_skip_the_background_d():
    from test_contract import _batch

    b = _seg_backend("model.self_start=3", "model.self_refine=none", "model.self_conf=0.5", "model.seg_paste=0.5")
    nets = eval_nets(b)
    batch = _batch(S, 4)
    batch["bg_crop"], batch["bg_crop_ok"] = torch.zeros(4, 3, S, S), torch.ones(4)
    assert b.loss("S", nets, batch, step=2)["s_pasted"] == 0  # OneGAN's own labels are not pasted
    assert b.loss("S", nets, batch, step=3)["s_pasted"] == 2
    # the background D reads the crops only with d_bg_crops (the paper's set)
    plain = {k: v for k, v in batch.items() if not k.startswith("bg_crop")}
    for flag, same in (("true", False), ("false", True)):
        bd = _backend(f"model.d_bg_crops={flag}")
        n = eval_nets(bd)
        fake = torch.zeros(4, 3, S, S)
        with torch.no_grad():
            a = bd._loss_d(n["Dbg"], n["Dc"], batch, fake, fake, 10, "")["loss"]
            p = bd._loss_d(n["Dbg"], n["Dc"], plain, fake, fake, 10, "")["loss"]
        assert torch.equal(a, p) == same, flag


def test_remove_object_fill_options(capsys, run, synth_dir, tmp_path):
    from fgtool.nn.refine import inpaint

    m = api.load(run / "last.pt", device="cpu")
    _, ds = eval_set(m, str(synth_dir))
    x = torch.stack([ds[i]["image"] for i in range(4)])
    with torch.no_grad():
        filled = m.backend.remove_object(m.nets, x, fill="inpaint")
        want = inpaint(x, m.backend.segment(m.nets, x)[:, 0] > 0.5, grow=1)
    assert torch.equal(filled, want)
    res = run_json(capsys, "eval", "--metric", "removal", "--ckpt", run / "last.pt", "--data", synth_dir,
                   "--fill", "inpaint")["metrics"]
    gan = run_json(capsys, "eval", "--metric", "removal", "--ckpt", run / "last.pt", "--data", synth_dir)["metrics"]
    assert res["removal_l1"] != gan["removal_l1"] and res["mean_fill_l1"] == pytest.approx(gan["mean_fill_l1"])
    from fgtool.cli import main

    assert main(["eval", "--metric", "removal", "--ckpt", str(run / "last.pt"), "--data", str(synth_dir),
                 "--fill", "blur"]) == 2
    assert "--fill" in capsys.readouterr().err


def test_distilled_segmenter_learns_non_trivial_masks():
    """A few dozen S steps on photos whose teacher masks are blobs: S's masks of those photos
    are neither all object nor all background, and overlap the blobs."""
    b = _seg_backend("model.self_start=never", "model.seg_width=8", "model.self_refine=none", "model.self_conf=0.5")
    torch.manual_seed(0)
    nets = b.build()
    blob = torch.zeros(8, 1, S, S)
    for i in range(8):
        blob[i, :, 4 + i: 16 + i, 6 + i: 20 + i] = 1.0
    x = torch.where(blob > 0, torch.tensor([0.8, -0.6, -0.6]).view(1, 3, 1, 1),
                    torch.tensor([-0.6, -0.4, 0.7]).view(1, 3, 1, 1)) + 0.05 * torch.randn(8, 3, S, S)
    b._own_probs = lambda nets_, v: torch.cat([blob, 1 - blob], 1)
    opt = torch.optim.Adam(nets["S"].parameters(), 3e-3)
    for _ in range(40):
        opt.zero_grad()
        b.loss("S", nets, {"image": x}, step=2)["loss"].backward()
        opt.step()
    nets["S"].eval()
    with torch.no_grad():
        m = b.segment(nets, x)[:, 0] > 0.5
    share = m.flatten(1).float().mean(1)
    assert torch.all(share > 0.05) and torch.all(share < 0.6), share
    t = blob[:, 0] > 0.5
    iou = (m & t).flatten(1).sum(1) / (m | t).flatten(1).sum(1)
    assert iou.min() > 0.6, iou
