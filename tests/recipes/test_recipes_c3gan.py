"""fgtool/recipes/c3gan-cub.toml is the model and iteration tests/reference/test_reference_c3gan.py proves
equal to the authors' code; the CPU recipes keep their deviations."""

from __future__ import annotations

from pathlib import Path

import pytest

from fgtool import api
from fgtool.backends.c3gan import C3GANConfig

RECIPES = Path(__file__).resolve().parents[2] / "fgtool" / "recipes"

# C3-GAN options of ours, and the value that is the authors' model, losses and iteration
C3GAN_AUTHORS = {"shared_fake": False, "g_widths": "authors", "d_first_bias": False, "mask_entropy": "bits",
                 "conv_bias_init": "torch", "tau": 0.1, "w_info": 5.0, "w_info_fg": 1.0,
                 "w_cont": 1.0, "w_entropy": 0.1, "w_mask": 1.0, "mask_range": (0.1, 0.9), "lr_g": 2e-4,
                 "lr_d": 2e-4, "z_dim": 64, "cz_dim": 8, "perturb": "strong"}
# the options that set the contrastive view's augmentation (the authors' transform_aug values;
# the view itself is drawn in the training step, see docs/models/c3gan.md)
C3GAN_VIEW = {"aug_crop": (0.2, 1.0), "aug_jitter": (0.4, 0.4, 0.4, 0.1), "aug_p_jitter": 0.8, "aug_p_gray": 0.2}
# the deviations the CPU recipes keep (the defaults)
C3GAN_OURS = {"shared_fake": True, "g_widths": "halving", "d_first_bias": True, "mask_entropy": "nats",
              "conv_bias_init": "zero"}


def _cfg(name: str):
    return api.resolve_config(None, "/data", str(RECIPES / name), [])


def test_c3gan_paper_recipe_switches_every_deviation_off():
    cfg = _cfg("c3gan-cub.toml")
    m, t = cfg.model_cfg, cfg.train
    for k, v in {**C3GAN_AUTHORS, **C3GAN_VIEW}.items():
        got = getattr(m, k)
        assert (tuple(got) if isinstance(got, list) else got) == v, k
    assert (cfg.data.size, t.batch_size, m.n_classes, m.overcluster, m.ngf, m.ndf) == (128, 64, 200, 2, 16, 64)
    assert t.ema_decay == 0  # the authors keep no EMA generator
    assert t.precision == "no" and cfg.data.box_mode == "none" and t.steps == 184_000
    known = {"n_classes", "overcluster", "ngf", "ndf"}
    assert set(C3GANConfig.__dataclass_fields__) == known | set(C3GAN_AUTHORS) | set(C3GAN_VIEW), \
        "a new C3-GAN option: say here which value is the authors'"


@pytest.mark.parametrize("name", ["synth-c3gan.toml", "cub-cpu-c3gan.toml"])
def test_c3gan_cpu_recipes_keep_their_deviations(name):
    cfg = _cfg(name)
    for k, v in C3GAN_OURS.items():
        assert getattr(cfg.model_cfg, k) == v, k
    assert cfg.train.ema_decay == 0.999 and cfg.train.ema_start == 500
