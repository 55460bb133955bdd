"""Every shipped recipe resolves (no unknown keys, right types) for its model."""

from __future__ import annotations

from pathlib import Path

import pytest

from fgtool import api, registry
from fgtool.config import load_recipe

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.toml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_resolves(recipe):
    raw = load_recipe(recipe)
    names = [raw.get("model", {}).get("name")] if raw.get("model", {}).get("name") else registry.names()
    for name in names:
        cfg = api.resolve_config(name, "/data", str(recipe), [])
        assert cfg.model == name
        d = cfg.to_dict()
        assert d["data"]["size"] % 16 == 0 and d["train"]["steps"] > 0


def test_paper_recipe_matches_the_paper():
    cfg = api.resolve_config(None, "/data", str(RECIPES[0].parent / "finegan-cub.toml"), [])
    m, t = cfg.model_cfg, cfg.train
    assert (cfg.data.size, t.batch_size, m.n_child, m.n_parent, m.ngf, m.ndf) == (128, 16, 200, 20, 64, 64)
    assert (m.lr_g, m.lr_d, m.w_bg_adv, t.ema_decay) == (2e-4, 2e-4, 10.0, 0.999)
    assert (m.bg_patch_thresh, m.bg_warmup) == (1.0, 0)  # the paper's rule, no warm-up
