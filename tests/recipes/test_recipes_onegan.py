"""fgtool/recipes/onegan-cub.toml is the paper's model, losses (eq. 10-18, tests/backends/test_onegan_equations.py)
and schedule, with every option of ours off; the CPU recipe keeps its choices."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fgtool import api
from fgtool.backends.onegan import OneGANConfig
from fgtool.nn.selftrain import SelfTrainConfig

RECIPES = Path(__file__).resolve().parents[2] / "fgtool" / "recipes"

# options the paper sets (Sec. 3-5, eq. 9-18), and our additions at their "off" value
PAPER = {"n_child": 200, "n_parent": 20, "lr_g": 2e-4, "lr_d": 2e-4, "phase2_start": 200_000,
         "real_start": 400_000, "beta_code": (0.0, 1.0), "beta_map": (0.5, 1.0), "w_bg_adv": 10.0,
         "w_bg_aux": 1.0, "w_adv": 1.0, "w_cls": 1.0, "w_mse": 1.0, "w_rv": 0.1, "w_rm": 2.0,
         "w_rec_adv": 1.0, "w_vae": 1.0, "w_rec": 1.0, "w_per": 1.0, "kl_reduce": "sum", "rec_mask_reg": False,
         "bg_aux_norm": "sets", "bg_patch_thresh": 1.0, "bg_warmup": 0,
         "seg_start": "never", "self_start": "never", "seg_paste": 0.0, "seg_camo": 0.0}
# details the paper leaves open (ours, or FineGAN's): widths, code sizes, Adam's betas, the
# inference mixup weights, L_RM's area hinge (the paper defers L_RM to its supplementary)
OPEN = {"z_dim": 100, "bg_dim": 64, "p_dim": 64, "c_dim": 64, "ngf": 64, "top_mult": 16, "ndf": 64,
        "enc_width": "auto", "betas": (0.5, 0.999), "infer_beta": (0.5, 0.5, 0.75, 0.75), "mask_area": (0.1, 0.9)}
# inert with seg_start = "never" (the distilled segmenter's) or without data.bg_crops (d_bg_crops)
INERT = {f.name for f in dataclasses.fields(SelfTrainConfig)} | {"self_fg_range", "seg_camo_shift", "d_bg_crops"}

# the CPU recipe's choices, as measured in docs/experiments/onegan-synthetic.md
CPU = {"n_child": 12, "n_parent": 4, "z_dim": 32, "bg_dim": 16, "p_dim": 16, "c_dim": 16, "ngf": 16, "top_mult": 8,
       "ndf": 16, "enc_width": 16, "phase2_start": 800, "real_start": "never", "bg_patch_thresh": 0.5,
       "bg_warmup": 1200,
       "mask_area": (0.12, 0.35), "seg_start": 1050, "self_start": 1450, "seg_width": 16, "self_tta": True,
       "self_guard": 0.3, "self_fg_range": (0.05, 0.6), "seg_paste": 2.0, "d_bg_crops": False,
       # the earlier behaviour of the options that make eq. 10, 15 and 18 the paper's
       "kl_reduce": "mean", "rec_mask_reg": True, "bg_aux_norm": "patches"}


def _cfg(name: str):
    return api.resolve_config(None, "/data", str(RECIPES / name), [])


def _val(v):
    return tuple(v) if isinstance(v, list) else v


def test_onegan_paper_recipe_switches_every_addition_off():
    cfg = _cfg("onegan-cub.toml")
    m, t = cfg.model_cfg, cfg.train
    assert cfg.model == "onegan"
    for k, v in {**PAPER, **OPEN}.items():
        assert _val(getattr(m, k)) == v, k
    assert (cfg.data.size, t.batch_size, t.steps, t.precision) == (128, 20, 600_000, "no")
    assert t.ema_decay == 0  # the paper keeps no EMA
    assert cfg.data.box_mode == "auto" and not cfg.data.bg_crops
    fields = set(OneGANConfig.__dataclass_fields__)
    assert fields == set(PAPER) | set(OPEN) | INERT, \
        f"a new OneGAN option: say here which value is the paper's: {sorted(fields - set(PAPER) - set(OPEN) - INERT)}"


def test_onegan_cpu_recipe_keeps_its_choices():
    cfg = _cfg("synth-onegan.toml")
    m, t = cfg.model_cfg, cfg.train
    for k, v in CPU.items():
        assert _val(getattr(m, k)) == v, k
    assert (cfg.data.size, t.batch_size, t.steps, t.precision) == (32, 32, 2450, "bf16")
    assert (t.ema_decay, t.ema_start) == (0.99, 300) and cfg.data.bg_crops
    for k in set(PAPER) - set(CPU):  # the rest: the paper's values
        assert _val(getattr(m, k)) == PAPER[k], k
