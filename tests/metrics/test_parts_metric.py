"""Part consistency (``fgtool eval --metric parts``): the canonical-frame mapping and the
scores, checked with oracle parts cut from the true masks, and end to end on a tiny GANSeg."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY

from fgtool import api
from fgtool.data.synth import PARENT_NAMES, SynthConfig, config_from_meta, render_one, scene, synth_arrays
from fgtool.errors import FgtoolError
from fgtool.metrics.mix import synth_meta
from fgtool.metrics.parts import (
    band_parts,
    consistency,
    image_indices,
    mass_centres,
    part_consistency,
    to_canonical,
    view_to_pixels,
)

N, S = 96, 32


@pytest.fixture(scope="module")
def arrays():
    return synth_arrays(N, size=S, seed=3, parents=2, children=2, backgrounds=2)


def _cut(arrays, how: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two oracle parts per image from the true mask, split at the object's centre along x:
    ``canonical`` splits in the shape's own frame (a consistent part segmenter), ``image``
    in the picture's frame (flips swap the halves: inconsistent)."""
    cfg = SynthConfig(S, 2, 2, 2)
    parts = np.zeros((N, 2, S, S))
    poses = []
    ys, xs = np.mgrid[0:S, 0:S]
    pix = np.stack([xs + 0.5, ys + 0.5], -1).reshape(-1, 2)
    for i in range(N):
        _, parent, _, _, A, t, _ = scene(i, 3, cfg)
        poses.append((parent, A, t))
        m = arrays["masks"][i].reshape(-1)
        if how == "canonical":
            u = to_canonical(pix, A, t)[:, 0]
            left = u < u[m].mean()
        else:
            left = pix[:, 0] < pix[m, 0].mean()
        parts[i, 0] = (m & left).reshape(S, S)
        parts[i, 1] = (m & ~left).reshape(S, S)
    return parts, poses


def _score(arrays, parts, poses):
    region = (0.0, 0.0, float(S), float(S))
    cen = mass_centres(parts)
    gt = mass_centres(arrays["masks"][:, None].astype(float))[:, 0]
    canon = np.stack([to_canonical(view_to_pixels(cen[i], region), A, t) for i, (_, A, t) in enumerate(poses)])
    gtc = np.stack([to_canonical(view_to_pixels(gt[i], region), A, t) for i, (_, A, t) in enumerate(poses)])
    fam = np.array([p for p, _, _ in poses])
    radius = {}
    for f in set(fam.tolist()):
        r2 = []
        for i in np.nonzero(fam == f)[0]:
            yy, xx = np.nonzero(arrays["masks"][i])
            u = to_canonical(np.stack([xx + 0.5, yy + 0.5], -1), *poses[i][1:])
            r2.append(((u - u.mean(0)) ** 2).sum(1).mean())
        radius[f] = float(np.sqrt(np.mean(r2)))
    return consistency(canon, gtc, gtc, fam, radius, names=list(PARENT_NAMES[:2]))


def test_scene_is_the_pose_render_one_draws(arrays):
    cfg = SynthConfig(S, 2, 2, 2)
    for i in (0, 5, 17):
        child, parent, bg, name, A, t, _ = scene(i, 3, cfg)
        _, mask, lab = render_one(i, 3, cfg)
        assert (child, parent, bg) == (lab["child"], lab["parent"], lab["bg"]) and name == PARENT_NAMES[parent]
        assert np.array_equal(mask, arrays["masks"][i])
        # the mask's pixels map into a compact canonical region around the shape's origin
        yy, xx = np.nonzero(mask)
        u = to_canonical(np.stack([xx + 0.5, yy + 0.5], -1), A, t)
        assert np.abs(u).max() < 2.0


def test_oracle_parts_are_consistent_and_image_frame_parts_are_not(arrays):
    good = _score(arrays, *_cut(arrays, "canonical"))
    bad = _score(arrays, *_cut(arrays, "image"))
    assert good["parts_k"] == 2 and good["parts_missing"] == 0
    # the true mask's centre is the same canonical point in every image (up to rasterisation)
    assert good["parts_gt_spread"] < 0.04
    assert good["parts_spread"] < 0.06 and good["parts_spread_max"] < 0.08
    assert good["parts_separation"] > 1.0  # two halves: their centres lie apart
    # halves cut in the picture's frame swap with every flip: they scatter across the object
    assert bad["parts_spread"] > 3 * good["parts_spread"] and bad["parts_spread"] > 0.4
    assert set(good["parts_per_family"]) == {PARENT_NAMES[0], PARENT_NAMES[1]}


def test_absent_parts_are_left_out_and_counted(arrays):
    parts, poses = _cut(arrays, "canonical")
    parts[:, 1] = 0.0  # part 1 never shows
    res = _score(arrays, parts, poses)
    assert res["parts_missing"] == 2  # one per family
    assert res["parts_separation"] is None and np.isfinite(res["parts_spread"])
    assert all(row["spread"][1] is None for row in res["parts_per_family"].values())


def test_band_parts_cut_the_foreground_into_equal_rows_top_to_bottom():
    fg = np.zeros((2, 8, 8), bool)
    fg[0, 2:6, 1:7] = True  # 4 rows of 6 pixels
    fg[1, 0:8, 3:5] = True  # 8 rows of 2
    b = band_parts(fg, 2)
    assert b.shape == (2, 2, 8, 8) and np.array_equal(b.sum(1) > 0, fg) and b.sum(1).max() == 1
    assert np.array_equal(np.nonzero(b[0, 0].any(1))[0], [2, 3])
    assert np.array_equal(np.nonzero(b[0, 1].any(1))[0], [4, 5])
    assert b[1, 0].sum() == b[1, 1].sum() == 8 and b[1, 0, :4].sum() == 8
    assert band_parts(np.zeros((1, 4, 4), bool), 3).sum() == 0  # no foreground: empty bands


def test_mass_centres_and_view_mapping():
    p = np.zeros((1, 2, 4, 4))
    p[0, 0, 0, 0] = 1.0  # top-left pixel: its centre is at -0.75, -0.75
    c = mass_centres(p)
    assert np.allclose(c[0, 0], [-0.75, -0.75]) and np.isnan(c[0, 1]).all()
    assert np.allclose(view_to_pixels(c[0, 0], (10.0, 20.0, 18.0, 28.0)), [11.0, 21.0])
    A, t = np.array([[0.0, -2.0], [2.0, 0.0]]), np.array([5.0, 7.0])  # scale 2, 90 degrees
    u = np.array([[1.0, 0.5], [-0.25, 2.0]])
    assert np.allclose(to_canonical(u @ A.T + t, A, t), u)


def test_image_indices_and_meta(synth_dir):
    rows = [ln.split() for ln in (synth_dir / "images.txt").read_text().splitlines()]
    paths = [synth_dir / "images" / rel for _, rel in rows[:3]][::-1]
    assert image_indices(synth_dir, paths) == [2, 1, 0]
    with pytest.raises(FgtoolError, match="not listed"):
        image_indices(synth_dir, [synth_dir / "images" / "x.png"])
    cfg = config_from_meta(synth_meta(synth_dir))
    assert (cfg.size, cfg.parents, cfg.children, cfg.backgrounds) == (32, 2, 3, 2)


@pytest.fixture(scope="module")
def gs_run(tmp_path_factory, synth_dir):
    out = tmp_path_factory.mktemp("gsp") / "run"
    api.train("ganseg", str(synth_dir), str(TINY), ["model.n_parts=2"], str(out), progress=False)
    return out


def test_eval_parts_end_to_end(gs_run, synth_dir, tmp_path):
    res = api.evaluate("parts", str(synth_dir), ckpt_path=str(gs_run / "last.pt"), workers=0)["metrics"]
    assert res["parts_k"] == 2 and res["parts_n"] == 48
    assert res["parts_gt_spread"] < 0.1  # the pose mapping holds on the model's own view of the set
    assert np.isfinite(res["parts_fg_spread"]) and res["parts_fg_spread"] >= 0
    assert set(res["parts_per_family"]) == {PARENT_NAMES[0], PARENT_NAMES[1]}
    for row in res["parts_per_family"].values():
        assert row["n"] == 24 and len(row["present"]) == 2
    assert np.isfinite(res["parts_band_spread"]) and res["parts_band_separation"] > 0
    # a model whose parts are its foreground's horizontal bands scores the band reference exactly
    m = api.load(str(gs_run / "last.pt"))
    own = m.backend.segment_parts

    def as_bands(nets, x):
        p = own(nets, x).float()
        bands = torch.from_numpy(band_parts((p[:, -1] < 0.5).numpy(), 2)).float()
        return torch.cat([bands, p[:, -1:]], 1)

    m.backend.segment_parts = as_bands
    ref = part_consistency(m, synth_dir)
    assert ref["parts_spread"] == pytest.approx(ref["parts_band_spread"], abs=1e-9)
    assert ref["parts_separation"] == pytest.approx(ref["parts_band_separation"], abs=1e-9)
    # not a synthetic set: a one-line error
    plain = tmp_path / "plain" / "a"
    plain.mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (32, 32), (9, 9, 9)).save(plain / "x.png")
    with pytest.raises(FgtoolError, match="--metric parts needs the synthetic set"):
        api.evaluate("parts", str(plain.parent), ckpt_path=str(gs_run / "last.pt"), workers=0)
