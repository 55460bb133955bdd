"""fgtool/recipes/ganseg-cub.toml is the authors' algorithm: every GANSeg option of ours is off
there (the networks, losses and iteration tests/reference/test_reference_ganseg.py compares with
their code); the CPU recipe keeps its deviations."""

from __future__ import annotations

from pathlib import Path

import pytest

from fgtool import api
from fgtool.backends.ganseg import GANSeg, GANSegConfig
from fgtool.errors import FgtoolError

RECIPES = Path(__file__).resolve().parents[2] / "fgtool" / "recipes"

# GANSeg options of ours, and the value that is the authors' model, losses and iteration
GANSEG_AUTHORS = {"arch": "paper", "d_reg": "gp", "d_first": True, "seg_dice": "per_image", "object_div": 0.0,
                  "blend": "feature", "sigma_floor": 0.0, "seg_real_bg": 0.0,
                  "seg_jitter": 0.0, "seg_hue": 0.0, "seg_jitter_split": False, "seg_camo": 0.0,
                  "self_start": "never"}


def _cfg(name: str):
    return api.resolve_config(None, "/data", str(RECIPES / name), [])


def test_paper_recipe_switches_every_deviation_off():
    cfg = _cfg("ganseg-cub.toml")
    m, t = cfg.model_cfg, cfg.train
    for k, v in GANSEG_AUTHORS.items():
        assert getattr(m, k) == v, f"model.{k} = {getattr(m, k)!r}, the authors' is {v!r}"
    assert t.ema_decay == 0.0 and t.precision == "no"  # no EMA of G; fp32


def test_paper_recipe_has_the_authors_settings():
    """Their log/gan_cub_k8 and log/seg_cub_k8 parameters."""
    cfg = _cfg("ganseg-cub.toml")
    m, t = cfg.model_cfg, cfg.train
    assert (cfg.data.size, t.batch_size, m.n_parts, m.n_per, m.z_dim, m.mlp_hidden, m.emb_dim) == (
        128, 64, 8, 4, 256, 256, 64)
    assert (m.start_div, m.gen_ch, m.spade_hidden, m.margin, m.ndf, m.point_div) == (4, 512, 128, 10, 64, 20.0)
    assert (m.lr_g, m.lr_d, tuple(m.betas), m.w_r1, m.r1_every) == (1e-4, 4e-4, (0.5, 0.9), 10.0, 16)
    assert (m.w_con, m.w_area, m.pen_every) == (10.0, 1.0, 2)
    assert (m.seg_start, t.steps, m.seg_arch, m.seg_batch, m.lr_s, tuple(m.seg_betas), m.w_ce, m.w_dice) == (
        30000, 40000, "deeplabv3_resnet50", "auto", 3e-4, (0.9, 0.999), 0.5, 0.5)


def test_cpu_recipe_keeps_its_deviations():
    m = _cfg("synth-ganseg.toml").model_cfg
    assert (m.arch, m.d_reg, m.d_first, m.seg_dice, m.blend, m.sigma_floor) == (
        "compact", "r1_lazy", False, "pooled", "rgb", 0.2)


def test_defaults_are_ours():
    """The defaults stay the compact model (the CPU recipes rely on them)."""
    c = GANSegConfig()
    assert (c.arch, c.d_reg, c.d_first, c.seg_dice) == ("compact", "r1_lazy", False, "pooled")


@pytest.mark.parametrize("bad", [{"blend": "rgb"}, {"sigma_floor": 0.2}, {"object_div": 2.0},
                                 {"arch": "stylegan"}, {"d_reg": "r2"}, {"seg_dice": "soft"}])
def test_paper_arch_rejects_options_it_has_not(bad):
    kw = dict(arch="paper", n_parts=2, n_per=2, z_dim=8, mlp_hidden=8, emb_dim=4, gen_ch=16, spade_hidden=4,
              ndf=2, seg_arch="small")
    with pytest.raises(FgtoolError):
        GANSeg(GANSegConfig(**{**kw, **bad}), 32)


def test_paper_arch_trains_both_stages_and_samples(tmp_path, synth_dir):
    """The authors' iteration in the trainer at the tiny setting: D, then G, the gradient
    penalty inside the D step (no D_r1 phase), then the segmenter stage; grids render."""
    import json

    import numpy as np
    from conftest import TINY
    from PIL import Image

    out = tmp_path / "run"
    sets = ["model.arch=paper", "model.d_reg=gp", "model.d_first=true", "model.seg_dice=per_image",
            "model.gen_ch=32", "model.margin=3", "train.ema_decay=0", "train.sample_every=4"]
    api.train("ganseg", str(synth_dir), str(TINY), sets, str(out), progress=False)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert "gp" in rows[0] and "G/loss" in rows[0] and "con" in rows[0] and "D_r1/loss" not in rows[0]
    assert "S/loss" in rows[-1] and "G/loss" not in rows[-1]
    for name in ("samples", "parts", "layers", "segmenter"):
        im = Image.open(out / f"{name}.png")
        assert np.asarray(im).std() > 5, name
