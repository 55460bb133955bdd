"""MixNMatch: encoders and soft codes, the two training stages, `fgtool mix` (single, grid,
batch, feature mode, bad references), img2gif and the mix-fidelity probe."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    CUB100,
    TINY,
    eval_nets,
    one_error_line,
    run_cli,
    run_json,
    same_checkpoints,
    tiny_backend,
    train_tiny,
)
from PIL import Image

from fgtool import api
from fgtool import checkpoint as ckpt
from fgtool.backends.mixnmatch import MixNMatch
from fgtool.cli import main
from fgtool.io.gif import read_gif
from fgtool.io.images import to_pil
from fgtool.metrics import mix as M
from fgtool.mixing import grid_cell, load_reference, mix_images

# ----------------------------------------------------------------------------- helpers


def png(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _backend(*sets) -> MixNMatch:
    return tiny_backend("mixnmatch", *sets)


def _train(out: Path, data: Path, *sets) -> dict:
    return train_tiny("mixnmatch", out, data, *sets)


@pytest.fixture(scope="module")
def run(synth_dir, tmp_path_factory) -> dict:
    """A 4-step tiny run: steps 0-1 stage 1, steps 2-3 stage 2 (tiny.toml: stage2_start = 2)."""
    out = tmp_path_factory.mktemp("mnm") / "run"
    _train(out, synth_dir)
    imgs = sorted((synth_dir / "images").rglob("*.png"))
    # references: one per class (the folders are the child classes), then a second one each
    by_class: dict[str, list] = {}
    for p in imgs:
        by_class.setdefault(p.parent.name, []).append(p)
    refs = [v[0] for v in by_class.values()] + [v[1] for v in by_class.values()]
    return {"ckpt": out / "last.pt", "stage1": out / "step_0000002.pt", "refs": refs, "run": out}


def _ref_images(tmp_path: Path) -> dict:
    """Broken references: missing, not an image, tiny, a folder."""
    txt = tmp_path / "notes.png"
    txt.write_text("not an image\n")
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (4, 4), (200, 0, 0)).save(tiny)
    folder = tmp_path / "adir"
    folder.mkdir()
    return {"missing": (tmp_path / "nope.jpg", "no such file"), "non-image": (txt, "cannot read image"),
            "tiny": (tiny, "4x4 px"), "folder": (folder, "is a folder")}


# ----------------------------------------------------------------------------- model


def test_encoders_output_codes_of_the_right_shape():
    b = _backend()  # tiny: 6 children, 2 parents, z 16, ndf 8
    nets = eval_nets(b)
    x = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        enc = b.encode(nets, x)
        hard = b.encode(nets, x, hard=True)
        feats = b.cluster_features(nets, x)
    assert enc["z"].shape == (5, 16) and enc["z"].abs().max() <= 4.0  # tanh * z_scale
    for k, n in (("b", 6), ("p", 2), ("c", 6)):
        assert enc[k].shape == (5, n)
        assert torch.allclose(enc[k].sum(1), torch.ones(5), atol=1e-5) and (enc[k] >= 0).all()
        assert hard[k].shape == (5,) and hard[k].dtype == torch.long
        assert torch.equal(hard[k], enc[k].argmax(1))
    # penultimate features of the p and c encoders (the 4x4 map their last conv reads), L2-normalised
    assert set(feats) == {"parent", "child"}
    # 32 px, ndf 8: stride-2 convs to 8, 16, then the wide top 32 at 4x4 and a 3x3 back to 16
    assert nets["E"].p.trunk.out_ch == 2 * 8
    for v in feats.values():
        assert v.shape == (5, 16 * 4 * 4)
        assert torch.allclose(v.norm(dim=1), torch.ones(5), atol=1e-5)
    assert not torch.allclose(feats["parent"], feats["child"])  # two different encoders


def test_generator_is_finegans_and_takes_soft_codes_and_a_background_z():
    b = _backend()
    nets = eval_nets(b)
    g = torch.Generator().manual_seed(1)
    codes = b.sample_codes(4, g)
    with torch.no_grad():
        ref = nets["G"](codes["z"], codes["b"], codes["p"], codes["c"])  # FineGAN's forward
        out = b.generate(nets, codes)
        onehot = {"z": codes["z"], **{k: torch.nn.functional.one_hot(codes[k], b.dims[k]).float()
                                      for k in ("b", "p", "c")}}
        soft = b.generate(nets, onehot)
        other = b.generate(nets, {**codes, "z_bg": torch.randn(4, 16, generator=g)})
        phi = nets["G"].parent_features(codes["z"], onehot["p"])
        feat = b.generate(nets, {**codes, "p": None, "feature": phi})
    for k in ref:
        assert torch.equal(out[k], ref[k]), k
        assert torch.allclose(soft[k], ref[k], atol=1e-6), k
        assert torch.allclose(feat[k], ref[k], atol=1e-6), k  # phi(p, z) passed in = computed
    # a separate background z moves the background only
    assert not torch.allclose(other["background"], ref["background"])
    for k in ("parent_fg", "parent_mask", "child_fg", "child_mask"):
        assert torch.equal(other[k], ref[k]), k


def _g_loss(b: MixNMatch, seed: int = 0) -> tuple[dict, dict]:
    torch.manual_seed(seed)
    nets = b.build()
    x = torch.rand(6, 3, 32, 32) * 2 - 1
    batch = {"image": x, "cache": {}, "box": torch.tensor([[4.0, 4.0, 28.0, 28.0]] * 6)}
    return nets, b.loss("G", nets, batch, 0) | {"x": x}


def _grads(loss, params) -> list:
    return [g for g in torch.autograd.grad(loss, list(params), retain_graph=True, allow_unused=True)
            if g is not None and g.abs().sum() > 0]


def test_untied_images_train_the_generator_only_with_w_info_free():
    nets, paper = _g_loss(_backend())
    assert "info_free_c" not in paper
    # the paper: the untied-code images carry no gradient, re-prediction moves the encoders only
    assert _grads(paper["rec_c"], nets["G"].parameters()) == []
    assert _grads(paper["rec_c"], nets["E"].c.parameters())
    nets, ours = _g_loss(_backend("model.w_info_free=1"))
    assert _grads(ours["info_free_c"], nets["G"].c_img.parameters())  # c must show on any shape p
    assert _grads(ours["info_free_p"], nets["G"].p_mask.parameters())
    assert _grads(ours["rec_c"], nets["G"].parameters()) == []  # re-prediction still moves E only


def test_reconstruction_goes_through_hard_codes_and_trains_both():
    b = _backend("model.w_recon=5")
    nets, parts = _g_loss(b)
    x = parts["x"]
    with torch.no_grad():
        raw = nets["E"](x)
        hard = {"z": raw["z"], **{k: raw[k].argmax(1) for k in ("b", "p", "c")}}
        ref = torch.nn.functional.l1_loss(b.generate(nets, hard)["image"].float(), x)
    assert torch.allclose(parts["recon"].detach(), ref, atol=1e-5)
    # straight-through: the discrete codes' encoders get a gradient, and so does G
    for k in ("p", "c", "z"):
        assert _grads(parts["recon"], getattr(nets["E"], k).parameters()), k
    assert _grads(parts["recon"], nets["G"].p_mask.parameters())
    assert "recon" not in _g_loss(_backend())[1]


def test_extractor_mask_term_compares_the_silhouettes_drawn_from_s_and_phi():
    b = _backend("model.w_feat_mask=10", "model.pose_warp=true")
    torch.manual_seed(0)
    nets = b.build()
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    batch = {"image": x, "cache": {}}
    parts = b.loss("S", nets, batch, 0)
    phi, img, mask = batch["cache"]["s2"]
    G = nets["G"]
    G.eval()
    with torch.no_grad():
        ref = torch.nn.functional.l1_loss(G.p_mask(G.p_half(nets["S"](img))), mask)
        assert torch.allclose(mask, b.generate(nets, {"feature": phi, "z": torch.zeros(4, b.cfg.z_dim),
                                                      "b": torch.zeros(4, dtype=torch.long),
                                                      "c": torch.zeros(4, dtype=torch.long)})["parent_mask"])
    assert torch.allclose(parts["s_mask"].detach(), ref, atol=1e-5) and ref > 0
    assert torch.allclose(parts["loss"].detach(), (parts["s_adv"] + parts["s_l1"] + 10 * parts["s_mask"]).detach())
    assert _grads(parts["s_mask"], nets["S"].parameters())
    # an extractor that returns phi itself leaves nothing to learn from the mask term
    b2 = _backend("model.w_feat_mask=10")
    nets2 = b2.build()
    batch2 = {"image": x, "cache": {}}
    phi2 = b2._stage2_fake(nets2, batch2)[0]
    nets2["S"] = lambda im: phi2 if im is not x else torch.zeros_like(phi2)
    assert b2.loss("S", nets2, batch2, 0)["s_mask"].item() == pytest.approx(0.0, abs=1e-6)
    assert "s_mask" not in _backend().loss("S", nets, {"image": x, "cache": {}}, 0)


def test_stage2_codes_have_a_soft_parent_in_a_fifth_of_the_batches():
    """The authors' second stage: in 20% of the iterations the whole batch's p is
    softmax(N(0, I)); b, p, c are otherwise independent one-hot draws."""
    b = _backend()
    torch.manual_seed(0)
    soft = 0
    for _ in range(1000):
        c = b.stage2_codes(4)
        assert c["z"].shape == (4, b.cfg.z_dim) and c["b"].dtype == c["c"].dtype == torch.long
        if c["p"].dim() == 2:
            soft += 1
            assert c["p"].shape == (4, b.cfg.n_parent) and torch.allclose(c["p"].sum(1), torch.ones(4))
        else:
            assert c["p"].dtype == torch.long and c["p"].max() < b.cfg.n_parent
    assert 160 < soft < 240
    b0 = _backend("model.soft_p=0")
    assert all(b0.stage2_codes(4)["p"].dim() == 1 for _ in range(50))


def test_stage2_computes_s_of_the_photos_once_for_both_phases():
    """The authors' loop: S(x) once; the critic steps on it detached, then S through the
    updated critic on the same S(x) (its graph kept from the critic's phase)."""
    b = _backend()
    torch.manual_seed(0)
    nets = b.build()
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    seen = []
    h = nets["S"].register_forward_hook(lambda m, i, o: seen.append(i[0]))
    batch = {"image": x, "cache": {}}
    d = b.loss("Dfeat", nets, batch, 0)
    assert len(seen) == 1 and seen[0] is x
    assert not _grads(d["loss"], nets["S"].parameters())
    s = b.loss("S", nets, batch, 0)
    h.remove()
    assert len(seen) == 2 and seen[1] is not x  # the second call is S(G(y))
    assert batch["cache"]["sx"].requires_grad and _grads(s["s_adv"], nets["S"].parameters())


def test_phases_split_at_stage2_start():
    b = _backend("model.stage2_start=7")
    ph = {p.name: p for p in b.phases()}
    assert list(ph) == ["D", "Dpair", "G", "Dfeat", "S"]  # the authors' order, in both stages
    assert ph["D"].graph == ("G",) and ph["Dpair"].graph == ("E",) and ph["Dfeat"].graph == ("S",)
    for n in ("G", "D", "Dpair"):
        assert ph[n].active(6) and not ph[n].active(7)
    for n in ("S", "Dfeat"):
        assert not ph[n].active(6) and ph[n].active(7) and ph[n].active(10 ** 6)
    assert "E" in ph["G"].trains and ph["Dfeat"].lr == pytest.approx(2e-5)
    # no stage 2: stage-1 phases never stop
    b0 = _backend("model.stage2_start=never")
    assert [p.name for p in b0.phases()] == ["D", "Dpair", "G"]
    assert all(p.active(10 ** 6) for p in b0.phases())


def test_stage2_starts_at_the_configured_step_and_resumes_exactly(synth_dir, tmp_path):
    from conftest import tensors_differ

    sets = ["model.stage2_start=3", "train.steps=5", "train.log_every=1", "train.ckpt_every=1",
            "train.sample_every=100", "train.keep=all"]
    full = tmp_path / "full"
    _train(full, synth_dir, *sets)
    rows = {r["step"]: r for r in map(json.loads, (full / "metrics.jsonl").read_text().splitlines())}
    for step in (1, 2, 3):  # rows are logged after the step: row k holds step k-1
        assert "G/loss" in rows[step] and "Dpair/loss" in rows[step] and "S/loss" not in rows[step]
    for step in (4, 5):
        assert "S/loss" in rows[step] and "Dfeat/loss" in rows[step] and "G/loss" not in rows[step]
    # stage 2 moves only S and its critic; stage 1 never touched them
    full_ck = {s: ckpt.load(full / f"step_{s:07d}.pt") for s in (1, 3, 5)}
    ck = {s: c["nets"] for s, c in full_ck.items()}
    for k in ("E", "Dbg", "Dp", "Dc", "Dpair"):
        assert not tensors_differ(ck[3][k], ck[5][k]), k
    # stage 2 renders from the averaged generator, frozen: G took its EMA weights at the
    # boundary and neither moved after it
    ema3, ema5 = full_ck[3]["ema"]["G"], full_ck[5]["ema"]["G"]
    assert tensors_differ(ck[3]["G"], ema3)
    assert not tensors_differ(ema3, ema5) and not tensors_differ(ck[5]["G"], ema5)
    for k in ("S", "Dfeat"):
        assert not tensors_differ(ck[1][k], ck[3][k]), k
        assert tensors_differ(ck[3][k], ck[5][k]), k

    # stopped in stage 1, resumed across the boundary: the same run, bit for bit
    part = tmp_path / "part"
    _train(part, synth_dir, *[s if s != "train.steps=5" else "train.steps=2" for s in sets])
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["train", "--resume", "--out", str(part), "--set", "train.steps=5", "--quiet", "--json"]) == 0
    a, _ = same_checkpoints(full / "last.pt", part / "last.pt", 5)
    assert a["optim"]["S"]["state"] and a["optim"]["G"]["state"]


# ----------------------------------------------------------------------------- mix


def test_capabilities(capsys):
    res = run_json(capsys, "models")
    mnm = [r for r in res if r["name"] == "mixnmatch"]
    assert mnm and mnm[0]["capabilities"] == ["train", "sample", "gif", "cluster", "mix", "feature-mix"]


def test_code_mix_of_one_image_is_its_reconstruction(capsys, run, tmp_path):
    x_path = run["refs"][0]
    out = tmp_path / "same.png"
    res = run_json(capsys, "mix", "--ckpt", run["ckpt"], *[a for f in ("bg", "shape", "texture", "pose")
                                                           for a in (f"--{f}", x_path)], "--out", out)
    assert res["out"] == str(out) and res["mode"] == "code" and res["step"] == 4
    assert res["factors"] == {f: str(x_path) for f in ("bg", "shape", "texture", "pose")}
    m = api.load(run["ckpt"], device="cpu")
    x = load_reference(x_path, 32)[None]
    with torch.no_grad():
        want = m.backend.generate(m.nets, m.backend.encode(m.nets, x))["image"]
    assert np.array_equal(png(out), np.asarray(to_pil(want[0])))
    assert png(out).shape == (32, 32, 3)
    # --base alone gives every factor: the same image
    out2 = tmp_path / "base.png"
    res = run_json(capsys, "mix", "--ckpt", run["ckpt"], "--base", x_path, "--out", out2)
    assert res["factors"] == {f: "base" for f in ("bg", "shape", "texture", "pose")}
    assert np.array_equal(png(out2), png(out))


def test_missing_factors_are_sampled_by_seed(capsys, run, tmp_path):
    t = run["refs"][1]
    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    res = run_json(capsys, "mix", "--ckpt", run["ckpt"], "--texture", t, "--seed", "3", "--out", a)
    assert res["factors"] == {"bg": "sampled", "shape": "sampled", "texture": str(t), "pose": "sampled"}
    run_json(capsys, "mix", "--ckpt", run["ckpt"], "--texture", t, "--seed", "3", "--out", b)
    run_json(capsys, "mix", "--ckpt", run["ckpt"], "--texture", t, "--seed", "4", "--out", c)
    assert np.array_equal(png(a), png(b))
    assert not np.array_equal(png(a), png(c))
    # a sampled factor does not depend on which other factors are given
    m = api.load(run["ckpt"], device="cpu")
    seen = []
    gen = m.backend.generate
    m.backend.generate = lambda nets, codes: (seen.append(codes), gen(nets, codes))[1]
    for ref in (run["refs"][1], run["refs"][2]):
        mix_images(m, {"texture": load_reference(ref, 32)[None]}, generator=torch.Generator().manual_seed(3))
    for k in ("z", "z_bg", "b", "p"):
        assert torch.equal(seen[0][k], seen[1][k]), k
    assert not torch.equal(seen[0]["c"], seen[1]["c"])


@pytest.mark.parametrize("option", ["--bg", "--shape", "--texture", "--pose", "--base"])
@pytest.mark.parametrize("kind", ["missing", "non-image", "tiny", "folder"])
def test_bad_reference_is_one_line_exit_2(capsys, run, tmp_path, option, kind):
    path, needle = _ref_images(tmp_path)[kind]
    out = tmp_path / "o.png"
    good = ["--texture", run["refs"][0]] if option != "--texture" else []  # a good factor beside it
    rc, stdout, err = run_cli(capsys, "mix", "--ckpt", run["ckpt"], option, path, *good, "--out", out, "--json")
    assert rc == 2 and stdout == ""
    line = one_error_line(err)
    assert option in line and needle in line and str(path) in line
    assert not out.exists()


def test_bad_reference_in_a_real_process(run, tmp_path):
    from conftest import fgtool_process

    p = fgtool_process("mix", "--ckpt", run["ckpt"], "--shape", tmp_path / "gone.jpg", "--out", tmp_path / "o.png")
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr == f"fgtool: error: --shape {tmp_path / 'gone.jpg'}: no such file\n"


def test_batch_csv_writes_one_output_per_row(capsys, run, tmp_path):
    r = run["refs"]
    (tmp_path / "refs").mkdir()
    for i, p in enumerate(r[:4]):  # relative paths are relative to the CSV's folder
        (tmp_path / "refs" / f"r{i}.png").write_bytes(p.read_bytes())
    csv = tmp_path / "triples.csv"
    csv.write_text("bg,shape,texture,out\n"
                   "refs/r0.png,refs/r1.png,refs/r2.png,\n"
                   "refs/r3.png,,refs/r0.png,named.png\n"
                   ",,,\n"  # an empty row is skipped
                   f"{tmp_path / 'refs/r2.png'},refs/r2.png,,\n")
    out = tmp_path / "mixes"
    res = run_json(capsys, "mix", "--ckpt", run["ckpt"], "--batch", csv, "--seed", "5", "--out", out)
    assert res["n"] == 3
    assert res["outputs"] == [str(out / "0000.png"), str(out / "named.png"), str(out / "0002.png")]
    assert sorted(p.name for p in out.iterdir()) == ["0000.png", "0002.png", "named.png"]
    # row i is the single mix with the same references and seed + i
    singles = [("--bg", "r0", "--shape", "r1", "--texture", "r2"), ("--bg", "r3", "--texture", "r0"),
               ("--bg", "r2", "--shape", "r2")]
    for i, args in enumerate(singles):
        argv = [a if a.startswith("--") else tmp_path / "refs" / f"{a}.png" for a in args]
        one = tmp_path / f"single{i}.png"
        run_json(capsys, "mix", "--ckpt", run["ckpt"], *argv, "--seed", str(5 + i), "--out", one)
        assert np.array_equal(png(one), png(res["outputs"][i])), i
    # no header: columns are bg, shape, texture, pose
    csv2 = tmp_path / "plain.csv"
    csv2.write_text(f"{r[0]},{r[1]},{r[2]},{r[3]}\n{r[1]},{r[2]},,\n")
    res2 = run_json(capsys, "mix", "--ckpt", run["ckpt"], "--batch", csv2, "--out", tmp_path / "plain")
    assert res2["n"] == 2 and all(Path(p).is_file() for p in res2["outputs"])


def test_batch_with_a_bad_row_writes_nothing(capsys, run, tmp_path):
    csv = tmp_path / "rows.csv"
    csv.write_text(f"bg,texture\n{run['refs'][0]},{run['refs'][1]}\n{run['refs'][0]},missing.png\n")
    out = tmp_path / "mixes"
    rc, stdout, err = run_cli(capsys, "mix", "--ckpt", run["ckpt"], "--batch", csv, "--out", out)
    assert rc == 2 and stdout == ""
    line = one_error_line(err)
    assert "line 3" in line and "texture" in line and "no such file" in line
    assert not out.exists()
    bad = tmp_path / "cols.csv"
    bad.write_text("bg,colour\na.png,b.png\n")
    rc, _, err = run_cli(capsys, "mix", "--ckpt", run["ckpt"], "--batch", bad, "--out", out)
    assert rc == 2 and "unknown column 'colour'" in one_error_line(err)


def test_grid_sheet(capsys, run, tmp_path, monkeypatch):
    r = run["refs"]
    cols, rows = r[:3], r[3:5]
    out = tmp_path / "grid.png"
    argv = ["mix", "--ckpt", run["ckpt"], "--grid", "texture", "--out", out]
    for p in cols:
        argv += ["--texture", p]
    for p in rows:
        argv += ["--base", p]
    seen = []
    gen = MixNMatch.generate
    monkeypatch.setattr(MixNMatch, "generate",
                        lambda self, nets, codes: (seen.append(codes), gen(self, nets, codes))[1])
    res = run_json(capsys, *argv)
    monkeypatch.undo()
    cell = grid_cell(32)
    assert cell == 64 and res["cell_px"] == cell and (res["rows"], res["cols"]) == (2, 3)
    a = png(out)
    # (1 + 3 columns) x (1 + 2 rows) cells of 64 px, 2 px padding (make_grid)
    assert a.shape == (3 * (cell + 2) + 2, 4 * (cell + 2) + 2, 3) == (res["height"], res["width"], 3)

    def at(i, j):  # cell (row i, column j) of the sheet, 0 = the reference row / column
        y, x = 2 + i * (cell + 2), 2 + j * (cell + 2)
        return a[y:y + cell, x:x + cell]

    def up(path):  # a 32 px PNG, nearest-upscaled like the sheet
        return np.asarray(Image.fromarray(png(path)).resize((cell, cell), Image.NEAREST))

    # references: framed in red, the photo inside the frame
    assert (at(0, 1)[0, 10] == [255, 0, 0]).all() and (at(1, 0)[cell // 2, 0] == [255, 0, 0]).all()
    ref = np.asarray(to_pil(load_reference(cols[1], 32)).resize((cell, cell), Image.NEAREST))
    assert np.array_equal(at(0, 2)[4:-4, 4:-4], ref[4:-4, 4:-4])
    # a generated cell is the single mix: row's base, column's texture
    one = tmp_path / "one.png"
    run_json(capsys, "mix", "--ckpt", run["ckpt"], "--base", rows[1], "--texture", cols[2], "--out", one)
    assert np.abs(at(2, 3).astype(int) - up(one).astype(int)).max() <= 2  # batched vs single forward
    # cell (i, j) has column j's texture code and everything else from row i
    m = api.load(run["ckpt"], device="cpu")
    with torch.no_grad():
        ec = m.backend.encode(m.nets, torch.stack([load_reference(p, 32) for p in cols]))
        er = m.backend.encode(m.nets, torch.stack([load_reference(p, 32) for p in rows]))
    codes = seen[0]
    for i in range(2):
        for j in range(3):
            k = i * 3 + j
            assert torch.allclose(codes["c"][k], ec["c"][j], atol=1e-5)
            for key, src in (("b", "b"), ("p", "p"), ("z", "z"), ("z_bg", "z")):
                assert torch.allclose(codes[key][k], er[src][i], atol=1e-5), key
    # the corner cell is white apart from its label
    assert (at(0, 0) == 255).mean() > 0.8


def test_grid_and_mode_errors(capsys, run, tmp_path):
    x = run["refs"][0]
    cases = [
        (["--grid", "colour", "--base", x], "'colour' is not one of 'bg', 'shape', 'texture', 'pose'"),
        (["--grid", "pose", "--base", x], "--grid pose needs the references"),
        (["--grid", "pose", "--pose", x], "needs the row references"),
        (["--texture", x, "--texture", x], "--texture given 2 times"),
        (["--mode", "fancy"], "'fancy' is not one of 'code', 'feature'"),
        (["--mode", "feature", "--shape", x, "--pose", run["refs"][1]], "takes shape and pose together"),
        (["--batch", tmp_path / "rows.csv"], "--out must be a folder"),
        (["--batch", tmp_path / "rows.csv", "--texture", x], "drop --texture"),
    ]
    for extra, needle in cases:
        rc, out, err = run_cli(capsys, "mix", "--ckpt", run["ckpt"], *extra, "--out", tmp_path / "x.png")
        assert rc == 2 and out == "" and needle in one_error_line(err), (extra, err)
    assert not (tmp_path / "x.png").exists()
    rc, _, err = run_cli(capsys, "mix", "--ckpt", run["ckpt"], "--batch", tmp_path / "none.csv", "--out", tmp_path)
    assert rc == 2 and "--batch" in one_error_line(err) and "no such file" in err


def test_feature_mode(capsys, run, tmp_path):
    x, t = run["refs"][0], run["refs"][3]
    code, feat = tmp_path / "code.png", tmp_path / "feat.png"
    run_json(capsys, "mix", "--ckpt", run["ckpt"], "--shape", x, "--texture", t, "--out", code)
    res = run_json(capsys, "mix", "--ckpt", run["ckpt"], "--shape", x, "--texture", t, "--mode", "feature",
                   "--out", feat)
    assert res["mode"] == "feature"
    assert not np.array_equal(png(code), png(feat))
    # feature mode feeds S(shape image) in place of phi(p, z)
    m = api.load(run["ckpt"], device="cpu")
    seen = []
    gen = m.backend.generate
    m.backend.generate = lambda nets, codes: (seen.append(codes), gen(nets, codes))[1]
    xs = load_reference(x, 32)[None]
    mix_images(m, {"shape": xs}, mode="feature")
    with torch.no_grad():
        assert torch.equal(seen[0]["feature"], m.nets["S"](xs))
    # the checkpoint at the end of stage 1 has no trained extractor
    rc, out, err = run_cli(capsys, "mix", "--ckpt", run["stage1"], "--shape", x, "--mode", "feature",
                           "--out", tmp_path / "no.png")
    assert rc == 2 and "stage 2 starts at step 2 and this checkpoint is at step 2" in one_error_line(err)


def _line_drawings(src: Path, tmp_path: Path) -> dict:
    """A synthetic image's Canny edges (OpenCV) saved the ways a drawing comes: white lines on
    black (L), black on white (L), 1-bit, and black ink on a transparent RGBA canvas."""
    import cv2

    edges = cv2.Canny(png(src)[..., 1], 100, 200)  # the green channel: every synthetic object has an edge in it
    assert edges.any() and not edges.all()
    ink = np.zeros((*edges.shape, 4), np.uint8)
    ink[..., 3] = edges  # transparent where there is no line
    files = {"edges": Image.fromarray(edges), "lines": Image.fromarray(255 - edges),
             "bits": Image.fromarray(edges > 0), "ink": Image.fromarray(ink, "RGBA")}
    out = {}
    for name, im in files.items():
        out[name] = tmp_path / f"{src.stem}_{name}.png"
        im.save(out[name])
    return out


def test_sketch2color_a_line_drawing_as_the_shape(capsys, run, tmp_path):
    """Feature mode takes shape and pose from a line drawing (Canny edges of a synthetic
    image), texture and background from photos."""
    r = run["refs"]
    t, bg = r[3], r[4]
    sketches = {src: _line_drawings(src, tmp_path) for src in (r[0], r[1])}

    def mix(shape, name, seed="0"):
        out = tmp_path / f"mix_{name}.png"
        res = run_json(capsys, "mix", "--ckpt", run["ckpt"], "--mode", "feature", "--shape", shape,
                       "--texture", t, "--bg", bg, "--seed", seed, "--out", out)
        assert res["factors"] == {"bg": str(bg), "shape": str(shape), "texture": str(t), "pose": str(shape)}
        a = png(out)
        assert a.shape == (32, 32, 3)
        return a

    got = {(src, k): mix(f, f"{src.stem}_{k}") for src, files in sketches.items() for k, f in files.items()}
    a, b = r[0], r[1]
    # transparent is white: black ink on RGBA is the black-on-white drawing; 1-bit is the L edges
    assert np.array_equal(got[a, "ink"], got[a, "lines"]) and np.array_equal(got[a, "bits"], got[a, "edges"])
    # the drawing decides the image: another drawing, or the same lines inverted, give another one
    assert np.abs(got[a, "lines"].astype(int) - got[b, "lines"]).mean() > 0.5
    assert np.abs(got[a, "edges"].astype(int) - got[b, "edges"]).mean() > 0.5
    assert np.abs(got[a, "lines"].astype(int) - got[a, "edges"]).mean() > 0.5
    # and only it: the same drawing gives the same image, whatever the seed (no factor is sampled)
    assert np.array_equal(mix(sketches[a]["lines"], "again", seed="7"), got[a, "lines"])
    # what the generator got is S(the drawing as RGB)
    m = api.load(run["ckpt"], device="cpu")
    seen = []
    gen = m.backend.generate
    m.backend.generate = lambda nets, codes: (seen.append(codes), gen(nets, codes))[1]
    xs = load_reference(sketches[a]["ink"], 32)[None]
    assert set(xs.unique().tolist()) != {1.0} and xs.max() == 1.0  # lines on a white canvas
    mix_images(m, {"shape": xs}, mode="feature")
    with torch.no_grad():
        assert torch.equal(seen[0]["feature"], m.nets["S"](xs))


def test_sketch2color_in_a_real_process(capsys, run, tmp_path):
    from conftest import fgtool_process

    drawing = _line_drawings(run["refs"][0], tmp_path)["lines"]
    args = ["--mode", "feature", "--shape", drawing, "--texture", run["refs"][3], "--bg", run["refs"][4]]
    p = fgtool_process("mix", "--ckpt", run["ckpt"], *args, "--out", tmp_path / "p.png")
    assert p.returncode == 0 and p.stderr == "", p.stderr
    run_json(capsys, "mix", "--ckpt", run["ckpt"], *args, "--out", tmp_path / "i.png")
    assert np.array_equal(png(tmp_path / "p.png"), png(tmp_path / "i.png"))
    # a bad drawing is one line and exit 2, in feature mode too
    bad = _ref_images(tmp_path)
    for kind in ("missing", "non-image", "tiny"):
        path, needle = bad[kind]
        rc, out, err = run_cli(capsys, "mix", "--ckpt", run["ckpt"], "--mode", "feature", "--shape", path,
                               "--texture", run["refs"][3], "--out", tmp_path / "bad.png")
        assert rc == 2 and out == "" and needle in one_error_line(err) and "--shape" in err
    assert not (tmp_path / "bad.png").exists()


@pytest.mark.skipif(not CUB100.is_dir(), reason="cub100 not present")
def test_mix_takes_real_photos(capsys, run, tmp_path):
    photos = sorted((CUB100 / "images").rglob("*.jpg"))[:2]
    out = tmp_path / "real.png"
    res = run_json(capsys, "mix", "--ckpt", run["ckpt"], "--bg", photos[0], "--texture", photos[1], "--out", out)
    assert res["factors"]["bg"] == str(photos[0]) and png(out).shape == (32, 32, 3)


def test_cluster_uses_the_encoders(capsys, run, synth_dir, tmp_path):
    res = run_json(capsys, "cluster", "--ckpt", run["ckpt"], "--data", synth_dir, "--out", tmp_path / "c.json",
                   "--quiet")
    assert res["n"] == 48 and res["k"] == 6
    assert 0 <= res["metrics"]["nmi"] <= 1


# ----------------------------------------------------------------------------- img2gif


def _frames_folder(run, tmp_path, n=5) -> Path:
    d = tmp_path / "frames"
    d.mkdir()
    for i, p in enumerate(run["refs"][:n]):
        (d / f"f{i:02d}.png").write_bytes(p.read_bytes())
    return d


def test_img2gif_from_a_folder_a_gif_and_a_video(capsys, run, tmp_path):
    d = _frames_folder(run, tmp_path)
    still = run["refs"][5]
    res = run_json(capsys, "gif", "--ckpt", run["ckpt"], "--image", still, "--from", d, "--out", tmp_path / "a.gif")
    frames = read_gif(tmp_path / "a.gif")
    assert res["frames"] == 5 == frames.shape[0]
    assert frames.shape[1:] == (96, 96, 3)  # 32 px upscaled x3 (nearest)
    # frame i is the still with the pose of source frame i
    m = api.load(run["ckpt"], device="cpu")
    f2 = load_reference(d / "f02.png", 32)[None]
    want = mix_images(m, {"pose": f2}, base=load_reference(still, 32)[None])
    small = np.asarray(Image.fromarray(frames[2]).resize((32, 32), Image.NEAREST))
    assert np.abs(small.astype(int) - np.asarray(to_pil(want[0])).astype(int)).max() <= 40  # GIF palette

    # an animated GIF as source, --frames keeps 3 evenly spaced, --max-size caps the side
    clip = np.stack([png(p) for p in sorted(d.iterdir())] + [png(run["refs"][6])])
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "clip.gif", clip, extension=".gif", plugin="pillow", duration=100, loop=0)
    res = run_json(capsys, "gif", "--ckpt", run["ckpt"], "--image", still, "--from", tmp_path / "clip.gif",
                   "--frames", "3", "--max-size", "64", "--fps", "5", "--out", tmp_path / "b.gif")
    frames = read_gif(tmp_path / "b.gif")
    assert res["frames"] == 3 == frames.shape[0] and frames.shape[1:] == (64, 64, 3)

    # a video (OpenCV writes it; imageio or OpenCV reads it)
    import cv2

    vid = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(vid), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 32))
    if not w.isOpened():
        pytest.skip("no video encoder in this OpenCV build")
    for f in clip:
        w.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    w.release()
    res = run_json(capsys, "gif", "--ckpt", run["ckpt"], "--image", still, "--from", vid, "--frames", "0",
                   "--out", tmp_path / "c.gif")
    assert res["frames"] == 6 == read_gif(tmp_path / "c.gif").shape[0]


def test_img2gif_keeps_the_still_and_moves_only_the_pose(run):
    m = api.load(run["ckpt"], device="cpu")
    seen = []
    gen = m.backend.generate
    m.backend.generate = lambda nets, codes: (seen.append(codes), gen(nets, codes))[1]
    clip = torch.stack([load_reference(p, 32) for p in run["refs"][:4]])
    still = load_reference(run["refs"][5], 32)[None]
    mix_images(m, {"pose": clip}, base=still)
    c = seen[0]
    with torch.no_grad():
        e_still, e_clip = m.backend.encode(m.nets, still), m.backend.encode(m.nets, clip)
    assert torch.equal(c["z"], e_clip["z"])
    for k in ("b", "p", "c"):
        assert torch.equal(c[k], e_still[k].expand(4, -1))
    assert torch.equal(c["z_bg"], e_still["z"].expand(4, -1))  # the background does not move


def test_img2gif_errors(capsys, run, trained_finegan, tmp_path):
    d = _frames_folder(run, tmp_path, 2)
    still = run["refs"][0]
    cases = [
        (run["ckpt"], ["--from", d], "needs both --image"),
        (run["ckpt"], ["--image", still, "--from", tmp_path / "nothing"], "--from"),
        (run["ckpt"], ["--image", tmp_path / "gone.png", "--from", d], "--image"),
        (trained_finegan, ["--image", still, "--from", d], "model 'finegan'"),
    ]
    for ck, extra, needle in cases:
        rc, out, err = run_cli(capsys, "gif", "--ckpt", ck, *extra, "--out", tmp_path / "x.gif")
        assert rc == 2 and out == "" and needle in one_error_line(err), (extra, err)
    assert not (tmp_path / "x.gif").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, _, err = run_cli(capsys, "gif", "--ckpt", run["ckpt"], "--image", still, "--from", empty,
                         "--out", tmp_path / "x.gif")
    assert rc == 2 and "no images in this folder" in one_error_line(err)


@pytest.fixture(scope="module")
def trained_finegan(synth_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fg") / "run"
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["train", "--model", "finegan", "--data", str(synth_dir), "--recipe", str(TINY), "--out",
                     str(out), "--quiet", "--set", "train.steps=1"]) == 0
    return out / "last.pt"


# ----------------------------------------------------------------------------- mix fidelity


@pytest.fixture(scope="module")
def probe_set(tmp_path_factory):
    """A 4-shape x 3-appearance synthetic set and a probe trained on factorial renders."""
    from fgtool.data.synth import synth

    data = tmp_path_factory.mktemp("synth4") / "s"
    meta = synth(data, n=96, size=32, seed=2, parents=4, children=3, backgrounds=3, workers=1)
    x, s, t = M.render_factorial(meta, 32, 1500, 0, 1.5)
    probe = M.train_probe(x[:1200], s[:1200], t[:1200], 4, 12, steps=200, seed=0)
    return {"data": data, "meta": meta, "probe": probe, "held": (x[1200:], s[1200:], t[1200:])}


def test_factorial_renders_decouple_shape_and_texture(probe_set):
    _, s, t = probe_set["held"]
    parent_of_texture = t // 3
    assert (parent_of_texture != s).float().mean() > 0.5  # most textures sit on another parent's shape
    assert set(s.tolist()) == {0, 1, 2, 3} and len(set(t.tolist())) == 12


def test_probe_is_right_on_references_and_at_chance_on_noise(probe_set):
    from fgtool.data.datasets import ImageDataset, scan

    probe = probe_set["probe"]
    x, s, t = probe_set["held"]
    held = M.score_mixed(probe, x, s, t)
    assert held["shape"] >= 90 and held["texture"] >= 90, held
    # sanity: "mixed" images that are the references themselves (real views, as the model sees them)
    iset = scan(probe_set["data"])
    ds = ImageDataset(iset, 32, train=False)
    real = torch.stack([ds[i]["image"] for i in range(len(ds))])
    parent = [r.parent for r in iset.records]
    child = [r.label for r in iset.records]
    sane = M.score_mixed(probe, real, parent, child)
    assert sane["shape"] >= 90 and sane["texture"] >= 90, sane
    # random images: texture near chance (1/12), shape well below the references
    noise = torch.rand(96, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    low = M.score_mixed(probe, noise, parent, child)
    assert low["texture"] <= 35 and low["shape"] <= 60, low
    # and swapping which reference gives the texture is caught
    swapped = M.score_mixed(probe, real, parent, np.roll(child, 1))
    assert swapped["texture"] <= 35


def test_silhouette_of_the_two_stages():
    pm, cm = torch.full((1, 1, 2, 2), 0.5), torch.full((1, 1, 2, 2), 0.5)
    assert torch.allclose(M.silhouette({"parent_mask": pm, "child_mask": cm}), torch.full_like(pm, 0.75))
    assert M.silhouette({"mask": pm}) is pm and M.silhouette({"image": pm}) is None


def test_mix_fidelity_end_to_end(run, synth_dir):
    m = api.load(run["ckpt"], device="cpu")
    res = M.mix_fidelity(m, str(synth_dir), n_pairs=24, seed=0, probe_images=600, probe_steps=120)
    assert res["mix_pairs"] == 24 and res["mix_modes"] == ["code", "feature"]  # the run reached stage 2
    assert res["mix_chance_shape"] == 50.0 and res["mix_chance_texture"] == pytest.approx(16.67)
    for k in ("mix_shape", "mix_texture", "mix_feature_shape", "mix_feature_texture"):
        assert 0.0 <= res[k] <= 100.0
    assert res["mix_probe_real_texture"] >= 80
    for k in ("mix_pose_iou", "mix_feature_pose_iou"):  # the synthetic set has masks
        assert 0.0 <= res[k] <= 1.0
    again = M.mix_fidelity(m, str(synth_dir), n_pairs=24, seed=0, probe_images=600, probe_steps=120)
    assert again == res  # seeded: pairs, probe and sampled codes


def test_eval_mix_arguments(capsys, run, trained_finegan, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (32, 32)).save(flat / "a.png")
    for extra, needle in [
        (["--ckpt", run["ckpt"], "--data", flat], "needs the synthetic set"),
        (["--ckpt", trained_finegan, "--data", flat], "cannot mix"),
        (["--baseline", "pixels", "--data", flat], "mix needs --ckpt"),
    ]:
        rc, out, err = run_cli(capsys, "eval", "--metric", "mix", *extra, "--quiet")
        assert rc == 2 and out == "" and needle in one_error_line(err), (extra, err)


def test_mixnmatch_config_rejects_phi_heads():
    with pytest.raises(Exception, match="no phi heads"):
        _backend("model.phi_every=2")
    cfg = api.resolve_config("mixnmatch", None, str(TINY), [])
    assert cfg.model_cfg.stage2_start == 2 and cfg.model_cfg.n_parent == 2


def test_gradient_penalty_is_fp32_under_bf16_autocast():
    """The penalty's forward and double-backward run in fp32 even inside bf16 autocast."""
    from fgtool.backends.mixnmatch import PairCritics, gradient_penalty

    torch.manual_seed(0)
    dims = {"z": 3, "b": 4, "p": 2, "c": 4}
    critics = PairCritics(4, 16, dims, 8, (0.0, 0.0, 0.0))
    real = {"image": torch.randn(4, 3, 16, 16), **{k: torch.rand(4, d) for k, d in dims.items()}}
    fake = {"image": torch.randn(4, 3, 16, 16), **{k: torch.rand(4, d) for k, d in dims.items()}}
    seen = []
    critics.z.image[0].net[0][0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    torch.manual_seed(1)
    ref = gradient_penalty(critics, real, fake)
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = gradient_penalty(critics, real, fake)
    assert seen == [torch.float32, torch.float32]
    assert under.dtype == torch.float32 and torch.equal(under, ref)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what the guard prevents: the same conv in bf16
        assert critics.z.image[0].net[0][0](real["image"]).dtype == torch.bfloat16


def test_gradient_penalty_has_the_authors_eight_terms():
    """Each input mixed with its own weight (image, z, b, p, c drawn in that order), one
    mixed image for all four critics, and per critic one term for the image gradient and one
    for the code gradient."""
    from fgtool.backends.mixnmatch import CODES, PairCritics, gradient_penalty

    torch.manual_seed(0)
    dims = {"z": 3, "b": 4, "p": 2, "c": 4}
    critics = PairCritics(4, 16, dims, 8, (0.0, 0.0, 0.0))
    real = {"image": torch.randn(4, 3, 16, 16), **{k: torch.rand(4, d) for k, d in dims.items()}}
    fake = {"image": torch.randn(4, 3, 16, 16), **{k: torch.rand(4, d) for k, d in dims.items()}}
    torch.manual_seed(5)
    got = gradient_penalty(critics, real, fake)
    torch.manual_seed(5)
    mixed = {}
    for k in ("image", *CODES):
        a = torch.rand(4).view(-1, *[1] * (real[k].dim() - 1))
        mixed[k] = (a * real[k] + (1 - a) * fake[k]).requires_grad_(True)
    want = 0.0
    for k in CODES:
        gi, gc = torch.autograd.grad(getattr(critics, k)(mixed["image"], mixed[k]).sum(), (mixed["image"], mixed[k]))
        want = want + ((gi.flatten(1).norm(dim=1) - 1) ** 2).mean() + ((gc.norm(dim=1) - 1) ** 2).mean()
    assert torch.allclose(got, want, rtol=1e-6)
    # one joint norm over (image, code), what a plain WGAN-GP of a pair would take, differs
    joint = sum(((torch.cat([g.flatten(1) for g in torch.autograd.grad(
        getattr(critics, k)(mixed["image"], mixed[k]).sum(), (mixed["image"], mixed[k]))], 1).norm(dim=1) - 1) ** 2)
        .mean() for k in CODES)
    assert not torch.allclose(got, joint, rtol=1e-3)


@pytest.mark.parametrize("bad", ["model.soft_p=1.5", "model.soft_p=-0.1", "model.stage2_start=-1"])
def test_bad_stage2_values_are_user_errors(bad):
    from fgtool.errors import FgtoolError

    with pytest.raises(FgtoolError, match=bad.split("=")[0]):
        _backend(bad)
