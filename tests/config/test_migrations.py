"""Config versions: a checkpoint stores its config's version, older configs load through the
migrations of fgtool.migrations, newer ones are refused in one line; recipes and --set still
reject every key the config does not have."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY, run_cli

from fgtool import api, export
from fgtool import checkpoint as ckpt
from fgtool import config as C
from fgtool import migrations as M
from fgtool.errors import FgtoolError
from fgtool.train.trainer import make_backend


def _save(path, model: str = "finegan", edit=None, version: int | None | str = "now") -> dict:
    """A tiny untrained checkpoint of ``model``; ``edit(config dict)`` changes its stored config,
    ``version`` its stored config version (None: none, as before versions existed)."""
    cfg = api.resolve_config(model, None, str(TINY), [])
    b = make_backend(cfg)
    nets = b.build()
    d = cfg.to_dict()
    if edit:
        edit(d)
    ckpt.save(path, config=d, step=0, nets={k: v.state_dict() for k, v in nets.items()})
    if version != "now":
        ck = torch.load(path, weights_only=True)
        if version is None:
            del ck["config_version"]
        else:
            ck["config_version"] = version
        torch.save(ck, path)
    return json.loads(cfg.to_json())  # as stored: lists, not tuples


def test_a_checkpoint_stores_the_config_version(tmp_path):
    _save(tmp_path / "a.pt")
    raw = torch.load(tmp_path / "a.pt", weights_only=True)
    assert raw["config_version"] == M.CONFIG_VERSION == len(M.MIGRATIONS) + 1
    assert ckpt.load(tmp_path / "a.pt")["config_version"] == M.CONFIG_VERSION


def test_a_removed_key_in_an_old_checkpoint_is_dropped_by_its_migration(tmp_path, capsys):
    """A checkpoint written before versions existed (version 1) that holds keys removed since
    loads: the migrations drop them, and the config is today's."""
    def old(d):
        d["model"].update({"bg_z": True, "perturb_scale": [0.0, 0.0], "phi_width": 0})

    want = _save(tmp_path / "old.pt", edit=old, version=None)
    ck = ckpt.load(tmp_path / "old.pt")
    assert ck["config"] == want and "bg_z" not in ck["config"]["model"]
    assert ck["config_version"] == M.CONFIG_VERSION
    rc, out, err = run_cli(capsys, "info", "--ckpt", tmp_path / "old.pt", "--json")
    assert rc == 0 and json.loads(out)["config"]["model"] == want["model"]


def test_a_removed_key_at_another_value_is_one_line(tmp_path, capsys):
    _save(tmp_path / "on.pt", edit=lambda d: d["model"].update({"bg_z": False}), version=1)
    rc, out, err = run_cli(capsys, "info", "--ckpt", tmp_path / "on.pt")
    assert rc == 2 and out == ""
    assert err.strip().count("\n") == 0 and "model.bg_z=False" in err and "no longer has" in err
    assert "Traceback" not in err


def test_a_future_config_version_is_refused_in_one_line(tmp_path, capsys):
    _save(tmp_path / "new.pt", version=M.CONFIG_VERSION + 1)
    rc, out, err = run_cli(capsys, "info", "--ckpt", tmp_path / "new.pt")
    assert rc == 2 and out == "" and err.strip().count("\n") == 0 and "Traceback" not in err
    assert f"version {M.CONFIG_VERSION + 1}" in err and f"up to {M.CONFIG_VERSION}" in err and "upgrade" in err
    _save(tmp_path / "bad.pt", version="2")
    with pytest.raises(FgtoolError, match="config version is damaged"):
        ckpt.load(tmp_path / "bad.pt")


def test_an_export_carries_the_config_version(tmp_path):
    _save(tmp_path / "a.pt")
    ck = ckpt.load(tmp_path / "a.pt")
    export.write(ck, None, tmp_path / "a.safetensors")
    assert export.read(tmp_path / "a.safetensors")["config"] == ck["config"]
    ck["config_version"] = M.CONFIG_VERSION + 1  # what a newer fgtool would write
    import fgtool.export as E

    old = E.CONFIG_VERSION
    E.CONFIG_VERSION = M.CONFIG_VERSION + 1
    try:
        export.write(ck, None, tmp_path / "b.safetensors")
    finally:
        E.CONFIG_VERSION = old
    with pytest.raises(FgtoolError, match=f"up to {M.CONFIG_VERSION}"):
        export.read(tmp_path / "b.safetensors")


def test_every_migration_drops_only_keys_at_their_old_value():
    """Version 1 -> 2: the FineGAN/MixNMatch options deleted before versions existed."""
    fg = {"model": {"name": "finegan", "n_child": 6, "bg_real_floor": 0.0, "child_in_parent": False,
                    "info_p_blur": 0.0, "bg_z": True, "perturb_scale": [0.0, 0.0], "perturb_rot": -1.0,
                    "perturb_shift": -1.0, "phi_width": 0}, "data": {}, "train": {}}
    assert M.migrate(fg, 1) == {"model": {"name": "finegan", "n_child": 6}, "data": {}, "train": {}}
    assert fg["model"]["bg_z"] is True  # the caller's dict is left alone
    mnm = {"model": {"name": "mixnmatch", "recon_p": "encoder", "recon_c": "encoder", "w_assign_p": 3.0,
                     "w_assign_c": 1.0, "w_iic_p": 0.0, "s_width": 0}, "data": {}, "train": {}}
    assert M.migrate(mnm, 1)["model"] == {"name": "mixnmatch"}
    # another model's key of the same name is not touched by this step (OneGAN's bg_real_floor)
    og = {"model": {"name": "onegan", "bg_real_floor": 0.5}, "data": {}, "train": {}}
    M.MIGRATIONS[0](og)
    assert og["model"]["bg_real_floor"] == 0.5
    with pytest.raises(FgtoolError, match="model.recon_p='search'"):
        M.migrate({"model": {"name": "mixnmatch", "recon_p": "search"}}, 1)
    with pytest.raises(FgtoolError, match="model.child_in_parent=0"):
        M.migrate({"model": {"name": "finegan", "child_in_parent": 0}}, 1)  # not the bool False
    assert M.migrate(fg, M.CONFIG_VERSION) == fg  # today's config: nothing to do


def test_the_helpers_rename_and_remap():
    d = {"model": {"name": "onegan", "a": 1, "k": -1}, "train": {"keep": 0}}
    M.rename(d, "model", "a", "b")
    M.remap(d, "model", "k", {-1: None})
    M.remap(d, "train", "keep", {0: None}, models=("finegan",))  # another model: untouched
    assert d == {"model": {"name": "onegan", "b": 1, "k": None}, "train": {"keep": 0}}


def test_recipes_and_set_still_reject_removed_keys(tmp_path, capsys):
    """Migrations are for stored configs: a removed key in a recipe or --set is an unknown key."""
    with pytest.raises(FgtoolError, match="unknown key 'model.bg_z'"):
        api.resolve_config("finegan", None, str(TINY), ["model.bg_z=true"])
    r = tmp_path / "r.toml"
    r.write_text('[model]\nname = "finegan"\nphi_width = 0\n')
    rc, out, err = run_cli(capsys, "train", "--recipe", r, "--data", tmp_path, "--out", tmp_path / "o", "--dry-run")
    assert rc == 2 and "unknown key 'model.phi_width'" in err and err.strip().count("\n") == 0
    with pytest.raises(FgtoolError, match="unknown key"):
        C.from_dict({"model": {"name": "finegan", "bg_z": True}})  # from_dict does not migrate


def test_version_2_magic_numbers_become_words(tmp_path):
    """Version 2 -> 3: 0 and -1 that meant all, auto or never are words now, and a checkpoint
    stored with them loads with the same meaning."""
    old = {"model": {"name": "onegan", "phase2_start": -1, "real_start": -1, "enc_width": 0, "self_band": -1},
           "data": {"split": "", "max_images": 0}, "train": {"keep": 0, "threads": 0}}
    assert M.migrate(old, 2) == {
        "model": {"name": "onegan", "phase2_start": "never", "real_start": "never", "enc_width": "auto",
                  "self_band": "auto"},
        "data": {"split": "all", "max_images": "all"}, "train": {"keep": "all", "threads": "auto"}}
    kept = {"model": {"name": "onegan", "phase2_start": 800, "real_start": 0, "enc_width": 16, "self_band": 0},
            "data": {"split": "train", "max_images": 40}, "train": {"keep": 3, "threads": 2}}
    assert M.migrate(kept, 2) == kept  # real numbers stay numbers
    assert M.migrate({"model": {"name": "mixnmatch", "enc_width": 0, "pair_width": 0, "pair_hidden": 0,
                                "phi_every": 0, "hard_start": None}}, 2)["model"] == {
        "name": "mixnmatch", "enc_width": "auto", "pair_width": "auto", "pair_hidden": "auto", "phi_every": "never",
        "hard_start": "never"}
    assert M.migrate({"model": {"name": "finegan", "phi_every": 4, "hard_start": 440000}}, 2)["model"] == {
        "name": "finegan", "phi_every": 4, "hard_start": 440000}
    assert M.migrate({"model": {"name": "ganseg", "margin": -1, "seg_batch": 0}}, 2)["model"] == {
        "name": "ganseg", "margin": "auto", "seg_batch": "auto"}

    def v2(d):
        d["data"].update({"split": "", "max_images": 0})
        d["train"].update({"keep": 0, "threads": 0})
        d["model"].update({"phase2_start": -1, "real_start": -1, "enc_width": 0})

    _save(tmp_path / "v2.pt", model="onegan", edit=v2, version=2)
    cfg = C.from_dict(ckpt.load(tmp_path / "v2.pt")["config"])
    assert (cfg.data.split, cfg.data.max_images, cfg.train.keep, cfg.train.threads) == ("all", "all", "all", "auto")
    assert (cfg.model_cfg.phase2_start, cfg.model_cfg.real_start, cfg.model_cfg.enc_width) == ("never", "never", "auto")


def test_words_in_recipes_and_set(tmp_path):
    """A recipe says all/auto/never as a word (or leaves the key out for its default); an
    old magic number there is an error, not a silent change of meaning."""
    r = tmp_path / "r.toml"
    r.write_text('[train]\nkeep = "all"\nthreads = "auto"\n[data]\nmax_images = "all"\n'
                 '[model]\nname = "onegan"\nreal_start = "never"\n')
    cfg = api.resolve_config(None, None, str(r), ["model.phase2_start=never", "model.enc_width=8"])
    assert (cfg.train.keep, cfg.train.threads, cfg.data.max_images) == ("all", "auto", "all")
    assert (cfg.model_cfg.phase2_start, cfg.model_cfg.real_start, cfg.model_cfg.enc_width) == ("never", "never", 8)
    assert api.resolve_config("finegan", None, None, ["train.keep=5"]).train.keep == 5
    with pytest.raises(FgtoolError, match=r"train.keep: expected an integer or 'all', got 'every'"):
        api.resolve_config("finegan", None, None, ["train.keep=every"])
    with pytest.raises(FgtoolError, match=r"data.split: expected one of 'all', 'train', 'test', got ''"):
        api.resolve_config("finegan", None, None, ["data.split="])
    for bad, msg in (("train.keep=0", 'train.keep must be >= 1 or "all"'),
                     ("model.enc_width=0", "model.enc_width must be >= 1"),
                     ("model.real_start=-1", "real_start")):
        with pytest.raises(FgtoolError, match=msg):
            C.validate(api.resolve_config("onegan", None, str(TINY), [bad]))


def test_version_3_drops_the_options_no_recipe_turned_on(tmp_path, capsys):
    """Version 3 -> 4: C3-GAN's explicit warp ranges and info warm-up, OneGAN's background floor
    and enc_to_g; a checkpoint that stores them at their old defaults loads, one trained with
    them on is refused in one line that names the option."""
    c3 = {"model": {"name": "c3gan", "perturb": "strong", "perturb_scale": [0.0, 0.0], "perturb_rot": -1.0,
                    "perturb_shift": -1.0, "info_warmup": 0}}
    assert M.migrate(c3, 3)["model"] == {"name": "c3gan", "perturb": "strong"}
    og = {"model": {"name": "onegan", "bg_real_floor": 0.0, "enc_to_g": True, "n_child": 6}}
    assert M.migrate(og, 3)["model"] == {"name": "onegan", "n_child": 6}
    for model, key, value in (("c3gan", "perturb_rot", 10.0), ("c3gan", "info_warmup", 500),
                              ("onegan", "bg_real_floor", 0.25), ("onegan", "enc_to_g", False)):
        with pytest.raises(FgtoolError, match=f"model.{key}="):
            M.migrate({"model": {"name": model, key: value}}, 3)

    def v3(d):
        d["model"].update({"bg_real_floor": 0.0, "enc_to_g": True})

    want = _save(tmp_path / "og.pt", model="onegan", edit=v3, version=3)
    assert ckpt.load(tmp_path / "og.pt")["config"] == want
    _save(tmp_path / "on.pt", model="onegan", edit=lambda d: d["model"].update({"enc_to_g": False}), version=3)
    rc, out, err = run_cli(capsys, "sample", "--ckpt", tmp_path / "on.pt", "--out", tmp_path / "s.png")
    assert rc == 2 and err.count("\n") == 1 and "model.enc_to_g=False" in err and "no longer has" in err
    assert not (tmp_path / "s.png").exists()


def test_version_4_stage_starts_of_0_are_never():
    """Version 4 -> 5: a stage start of 0 meant "no such stage"; it is "never", and 0 in a
    recipe is now refused rather than read as "from step 0"."""
    for model, key in (("ganseg", "seg_start"), ("ganseg", "self_start"), ("onegan", "seg_start"),
                       ("onegan", "self_start"), ("mixnmatch", "stage2_start")):
        assert M.migrate({"model": {"name": model, key: 0}}, 4)["model"][key] == "never"
        assert M.migrate({"model": {"name": model, key: 700}}, 4)["model"][key] == 700
    with pytest.raises(FgtoolError, match='model.stage2_start must be a step >= 1 or "never"'):
        api.resolve_config("mixnmatch", None, str(TINY), ["model.stage2_start=0"])
    with pytest.raises(FgtoolError, match="seg_start"):
        api.resolve_config("ganseg", None, str(TINY), ["model.seg_start=0"])
    cfg = api.resolve_config("onegan", None, str(TINY), ["model.seg_start=never"])
    assert "S" not in make_backend(cfg).build() and [p.stop for p in make_backend(cfg).phases()] == [None] * 4


def test_version_5_drops_ganseg_point_flip(tmp_path, capsys):
    """Version 5 -> 6: GANSeg's mirrored point layouts are gone; a checkpoint that stores them off
    loads, one trained with them on is refused in one line naming the option."""
    assert M.migrate({"model": {"name": "ganseg", "point_flip": False, "n_parts": 4}}, 5)["model"] == {
        "name": "ganseg", "n_parts": 4}
    with pytest.raises(FgtoolError, match="model.point_flip=True"):
        M.migrate({"model": {"name": "ganseg", "point_flip": True}}, 5)
    want = _save(tmp_path / "gs.pt", model="ganseg", edit=lambda d: d["model"].update({"point_flip": False}),
                 version=5)
    assert ckpt.load(tmp_path / "gs.pt")["config"] == want
    _save(tmp_path / "on.pt", model="ganseg", edit=lambda d: d["model"].update({"point_flip": True}), version=5)
    rc, out, err = run_cli(capsys, "sample", "--ckpt", tmp_path / "on.pt", "--out", tmp_path / "s.png")
    assert rc == 2 and err.count("\n") == 1 and "model.point_flip=True" in err and "no longer has" in err
    assert not (tmp_path / "s.png").exists()
    rc, out, err = run_cli(capsys, "train", "--model", "ganseg", "--data", tmp_path, "--recipe", TINY,
                           "--out", tmp_path / "r", "--set", "model.point_flip=true", "--dry-run")
    assert rc == 2 and "point_flip" in err
