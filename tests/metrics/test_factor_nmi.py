"""tests/bench/factor_nmi.py: every image's shape, colour, pattern and background, read from the set."""

import importlib.util
import json
from pathlib import Path

import numpy as np

from fgtool.commands.cluster import _labels
from fgtool.data.datasets import scan

_spec = importlib.util.spec_from_file_location(
    "factor_nmi", Path(__file__).resolve().parents[1] / "bench" / "factor_nmi.py")
factor_nmi = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(factor_nmi)


def test_factors_follow_each_images_class_and_background(synth_dir):
    meta = json.loads((synth_dir / "meta.json").read_text())
    imageset = scan(str(synth_dir))
    classes = _labels(imageset, "class")
    f = factor_nmi.factors(synth_dir, classes, imageset)
    assert set(f) == {"shape", "colour", "pattern", "background", "class"}
    assert (f["shape"] == np.asarray(meta["child_to_parent"])[classes]).all()
    assert (f["shape"] == _labels(imageset, "parent")).all()
    app = meta["child_appearance"]
    # two images share a colour code exactly when their classes' colours are the same name
    for key in ("colour", "pattern"):
        names = np.array([a[key] for a in app])[classes]
        same_name = names[:, None] == names[None, :]
        same_code = f[key][:, None] == f[key][None, :]
        assert (same_name == same_code).all()
    bg = [int(x) for x in (synth_dir / "background_labels.txt").read_text().split()[1::2]]
    assert sorted(f["background"].tolist()) == sorted(b - min(bg) for b in bg)
    assert len(np.unique(f["background"])) == len(meta["backgrounds"])
