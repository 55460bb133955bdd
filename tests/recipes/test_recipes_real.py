"""The real-photo CPU recipes (cpu-real-onegan, cpu-real-ganseg) train on a folder without
boxes: the background crops their segmenters paste objects on come from the pseudo-box's
border band; and the synthetic recipes' wider crops are refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import image_folder, one_error_line, run_cli, run_json

RECIPES = Path(__file__).resolve().parents[2] / "fgtool" / "recipes"

# the recipe's schedule shrunk to a few steps on 32 px photos; everything else as shipped
SHORT = {"onegan": ["model.phase2_start=2", "model.seg_start=4", "model.self_start=6", "model.self_guard=0"],
         "ganseg": ["model.seg_start=3", "model.self_start=6", "model.self_guard=0"]}


@pytest.mark.parametrize("model", ["onegan", "ganseg"])
def test_real_recipe_trains_and_segments_a_boxless_folder(capsys, synth_dir, tmp_path, model):
    data = image_folder(synth_dir, tmp_path / "photos", 16)  # no bounding_boxes.txt, no masks
    assert not (data / "bounding_boxes.txt").exists()
    sets = ["train.steps=8", "train.batch_size=4", "data.size=32", "data.workers=0", "train.precision=no",
            "train.ckpt_every=8", "train.sample_every=8", "train.log_every=1", "train.threads=1", *SHORT[model]]
    argv = ["train", "--model", model, "--data", data, "--recipe", f"cpu-real-{model}", "--out", tmp_path / "run",
            "--quiet"]
    for s in sets:
        argv += ["--set", s]
    rc, out, err = run_cli(capsys, *argv)
    assert rc == 0, err
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    if model == "onegan":  # from self_start the segmenter pastes kept objects on the border crops
        assert max(r.get("s_pasted", 0.0) for r in rows) > 0
    seg = run_json(capsys, "segment", "--ckpt", tmp_path / "run" / "last.pt", "--data", data, "--out",
                   tmp_path / "masks", "--quiet")
    assert seg["n"] == 16 and 0.0 <= seg["mean_fg_fraction"] <= 1.0


SIZE = {"cpu-real-onegan": 64, "cpu-real-ganseg": 32}  # GANSeg's 32 px buys the GAN steps that put masks on birds


@pytest.mark.parametrize("recipe", ["cpu-real-onegan", "cpu-real-ganseg"])
def test_real_recipes_use_border_crops_that_fit_the_band(recipe):
    from fgtool import api

    cfg = api.resolve_config(None, "/data", str(RECIPES / f"{recipe}.toml"), [])
    d = cfg.data
    assert d.size == SIZE[recipe] and d.bg_crops and d.bg_crop_min <= d.pseudo_border and cfg.train.threads == "auto"
    assert cfg.model_cfg.seg_start > 0 and cfg.model_cfg.self_start > cfg.model_cfg.seg_start


def test_synthetic_recipe_on_a_boxless_folder_is_one_line(capsys, synth_dir, tmp_path):
    data = image_folder(synth_dir, tmp_path / "photos", 4)
    rc, out, err = run_cli(capsys, "train", "--model", "ganseg", "--data", data, "--recipe", "synth-ganseg",
                           "--out", tmp_path / "run", "--set", "train.steps=1", "--set", "train.batch_size=4",
                           "--quiet")
    line = one_error_line(err)
    assert rc == 2 and out == ""
    assert "(no bounding_boxes.txt)" in line and "data.bg_crop_min must be at most that, got 0.2 (" in line
    assert line.endswith("the cpu-real-onegan and cpu-real-ganseg recipes fit it)")
