"""Record reference tensors from the authors' public C3-GAN code (naver-ai/c3-gan), for
tests/reference/test_reference_c3gan.py.

Their code is never part of this repository. Point this script at a local copy of it:

    python tests/reference/make_c3gan_fixtures.py --c3gan /path/to/c3-gan --out tests/fixtures

It loads their ``config.py``, ``base_layer.py``, ``model.py``, ``utils.py`` and ``train.py``
from that folder, in memory, with these named edits:

- no ``.cuda()``;
- ``train.py`` without the imports it needs only for data loading, logging and the FID
  evaluation (torchvision's image grid, tensorboard, their Dataset, evals, Inception);
- their ``Trainer.train`` skips the evaluation block at the end of the epoch
  (``if epoch % cfg.EVAL_INTERVAL == 0`` becomes ``if False``);
- ``train_D`` and ``train_G`` keep their locals (every loss term, as they computed it) on
  the trainer just before ``backward()``;
- at the small setting only, the width literals take the small widths: the generators'
  ``ngf=512`` (their ``Generator`` builds ``bg_generator()`` and ``fg_generator(c_dim)``
  with the default) and the discriminator's ``encode_img()`` (whose ``ndf`` defaults to 64
  whatever the discriminator's own ``ndf``). At the paper setting the code runs as it is.

Then their ``Trainer.train`` runs one epoch of one batch, their iteration: fresh codes and
one G render, ``train_D``; fresh codes and a second G render, ``train_G``. Our G and D
(``g_widths = "authors"``, ``d_first_bias = false``) are built through fgtool; their
weights, rounded to fp16 (every bias first moved off zero, so that the biases are tested
too), go into both through the explicit key mapping below. Everything runs in float64.

Random draws, made deterministic and shared:

- the codes: their ``prepare_code`` draws them (Python's and torch's RNGs seeded here);
  the test feeds the recorded codes to our ``sample_codes``;
- the foreground warp: their ``random_grid`` is replaced by one that draws the scale,
  rotation and shift from a seeded generator within their ranges (the strong preset, their
  ``PERT = 's'``) and builds their theta by their formula. The test builds our grid from
  the recorded parameters with ``fgtool.nn.augment.similarity_grid``, so the two theta
  formulas are compared too;
- the contrastive view: their loader's second view (``transform_aug``) is a given image
  here (random uint8); the test hands the same image to our D phase in place of
  ``simclr_view``. The data pipelines themselves are not compared.

Recorded: the inputs, the small weights, both renders (background, warped mask, warped
foreground), every discriminator output (the semantic features h, the real/fake logits,
the centroids), every loss term of the D step and the G step, and every parameter's
gradient before each optimiser step (sum, sum of squares, one fixed projection). At the
paper setting (128 px, K = 200 x 2 = 400, z 64, c' 8, their 512 -> 16 generators, ndf 64),
every parameter's shape under the mapping and each net's parameter count go into
``c3gan_paper_shapes.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from make_fixtures import GradTap, _load, _stub_missing, copy_into, shapes_under_mapping, translate  # noqa: E402

SIZE, BATCH = 128, 2
SMALL = dict(n_classes=3, overcluster=2, z_dim=8, cz_dim=4, ngf=2, ndf=4)  # G: 64 -> 2 channels; D: 32-d head
PAPER = dict(n_classes=200, overcluster=2, z_dim=64, cz_dim=8, ngf=16, ndf=64)
AUTHORS = dict(g_widths="authors", d_first_bias=False, shared_fake=False, mask_entropy="bits",
               conv_bias_init="torch", perturb="strong")
STRONG = ((0.8, 1.5), (-15.0, 15.0), (-0.15, 0.15))  # their PERT 's': scale, degrees, shift


# ----------------------------------------------------------------------------- their code, loaded


def load_c3gan(code: Path, small: dict | None):
    """Their modules, loaded in memory (see the module docstring for the edits)."""
    _stub_missing()
    for name in ("config", "base_layer", "model", "utils", "ref_c3gan_train"):
        sys.modules.pop(name, None)
    sys.path.insert(0, str(code))
    from config import cfg  # their config object

    cpu = [(".cuda()", "")]
    width = []
    if small is not None:
        top = small["ngf"] * 32
        width = [("self.bg_gen = bg_generator()", f"self.bg_gen = bg_generator({top})"),
                 ("self.fg_gen = fg_generator(c_dim)", f"self.fg_gen = fg_generator(c_dim, {top})"),
                 ("self.base = encode_img()", "self.base = encode_img(ndf)")]
    _load(code / "base_layer.py", "base_layer", cpu)
    model = _load(code / "model.py", "model", cpu + width)
    utils = _load(code / "utils.py", "utils", cpu)
    drop = [("import torchvision.utils as vutils", ""),
            ("from torch.utils.tensorboard import SummaryWriter", ""),
            ("from datasets import Dataset", ""), ("from evals import *", ""),
            ("from inception import InceptionV3", ""),
            ("if epoch % cfg.EVAL_INTERVAL == 0:", "if False:"),
            ("        D_loss.backward()", "        self.terms_d = dict(locals())\n        D_loss.backward()"),
            ("        G_loss.backward()", "        self.terms_g = dict(locals())\n        G_loss.backward()")]
    train = _load(code / "train.py", "ref_c3gan_train", cpu + drop)
    return cfg, model, utils, train


def set_config(cfg, c: dict, batch: int) -> None:
    cfg.update(NUM_GT_CLASSES=c["n_classes"], OVER=c["overcluster"], BATCH_SIZE=batch, TEMP=0.1, PERT="s",
               MAX_EPOCH=1)
    cfg.GAN.update(Z_DIM=c["z_dim"], CZ_DIM=c["cz_dim"])


# ----------------------------------------------------------------------------- ours -> theirs


def c3gan_mapping() -> dict[str, list[tuple[str, str, object]]]:
    """Per net: (our key prefix, their key prefix, transform or None). Our texture joint conv
    reads [features, one-hot c] as theirs does: no permutation anywhere."""
    g = []
    for ours, theirs, seq in (("bg", "bg_gen", "layers"), ("fg", "fg_gen", "base")):
        g += [(f"{ours}.fc.0.", f"{theirs}.fc.0.", None), (f"{ours}.fc.1.", f"{theirs}.fc.1.", None)]
        g += [(f"{ours}.ups.{i}.", f"{theirs}.{seq}.{i}.", None) for i in range(5)]
    g += [(f"bg_head.{j}.body.", f"bg_gen.layers.5.{j}.block.", None) for j in range(3)]
    g += [("bg_head.3.", "bg_gen.layers.6.", None), ("emb_c.", "fg_gen.emb_c.", None)]
    g += [(f"fg_res.{j}.body.", f"fg_gen.base.5.{j}.block.", None) for j in range(3)]
    g += [("mask_head.", "fg_gen.to_mask.", None), ("tex_joint.conv.", "fg_gen.to_img.0.0.", None),
          ("tex_bn.0.", "fg_gen.to_img.0.1.", None), ("tex_head.0.body.", "fg_gen.to_img.1.0.block.", None),
          ("tex_head.1.body.", "fg_gen.to_img.1.1.block.", None), ("tex_head.2.", "fg_gen.to_img.2.", None),
          ("tex_head.3.", "fg_gen.to_img.3.", None)]
    d = [("base.0.net.0.0.", "base.0.", None)]
    for i, j in ((1, 2), (2, 5), (3, 8), (4, 11)):
        d += [(f"base.0.net.{i}.0.", f"base.{j}.", None), (f"base.0.net.{i}.1.", f"base.{j + 1}.", None)]
    d += [("base.1.", "base.14.", None), ("base.2.", "base.15.", None), ("adv.", "rf_head.0.", None),
          ("sem.", "info_head.", None), ("centroids.", "centroids.", None)]
    return {"G": g, "D": d}


def build_ours(c: dict, init: bool = True):
    from fgtool.backends import c3gan
    from fgtool.backends.c3gan import C3GAN, C3GANConfig

    backend = C3GAN(C3GANConfig(**c, **AUTHORS), SIZE)
    torch.manual_seed(0)
    if init:
        return backend, backend.build()
    keep = c3gan.init_weights
    c3gan.init_weights = lambda m, kind="orthogonal": None  # shapes only
    try:
        return backend, backend.build()
    finally:
        c3gan.init_weights = keep


def their_nets(model, k: int) -> dict:
    return {"G": model.Generator(k), "D": model.Discriminator(k, 64)}


# ----------------------------------------------------------------------------- the run


def c3gan(code: Path, out: Path) -> None:
    # paper setting: shapes and counts only
    cfg, model, utils, train = load_c3gan(code, None)
    set_config(cfg, PAPER, 64)
    k_paper = PAPER["n_classes"] * PAPER["overcluster"]
    _, nets = build_ours(PAPER, init=False)
    theirs = their_nets(model, k_paper)
    rules = c3gan_mapping()
    paper = {n: shapes_under_mapping(nets[n], theirs[n], rules[n]) for n in ("G", "D")}
    del nets, theirs

    # small setting: one iteration of their Trainer.train
    s = SMALL
    cfg, model, utils, train = load_c3gan(code, s)
    set_config(cfg, s, BATCH)
    k = s["n_classes"] * s["overcluster"]
    backend, nets = build_ours(s)
    theirs = {"G": model.Generator(k), "D": model.Discriminator(k, s["ndf"])}
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for m in nets.values():
            for n, p in m.named_parameters():
                if n.endswith("bias"):
                    p.add_(torch.randn(p.shape, generator=g) * 0.1)
                p.copy_(p.half().float())
    for n in ("G", "D"):
        nets[n].double()
        copy_into(nets[n], theirs[n].double(), rules[n])
        theirs[n].train()
    torch.set_default_dtype(torch.float64)

    names = {}
    for n in ("G", "D"):
        tm, tp = translate(nets[n], theirs[n], rules[n]), dict(theirs[n].named_parameters())
        for key, _ in nets[n].named_parameters():
            names[id(tp[tm[key][0]])] = (f"{n}.{key}", None)

    gen = torch.Generator().manual_seed(3)
    real_u8 = torch.randint(0, 256, (BATCH, 3, SIZE, SIZE), generator=gen, dtype=torch.uint8)
    aug_u8 = torch.randint(0, 256, (BATCH, 3, SIZE, SIZE), generator=gen, dtype=torch.uint8)
    real, aug = real_u8.double() / 127.5 - 1, aug_u8.double() / 127.5 - 1

    t = train.Trainer.__new__(train.Trainer)
    t.bs, t.num_gt_cls, t.over, t.num_cls, t.temp = BATCH, s["n_classes"], s["overcluster"], k, 0.1
    (t.min_s, t.max_s), (t.min_r, t.max_r), (t.min_t, t.max_t) = STRONG
    t.netG, t.netD = theirs["G"], theirs["D"]
    opt_g, opt_d = utils.define_optimizers(t.netG, t.netD)
    grads = {"D": {}, "G": {}}
    t.optimizerG, t.optimizerD = GradTap(opt_g, names, grads["G"]), GradTap(opt_d, names, grads["D"])
    t.CE = nn.CrossEntropyLoss()
    t.eye = torch.eye(k)
    t.dataloader = [(real, aug)]
    t.summary_writer = types.SimpleNamespace(add_scalar=lambda *a, **kw: None)

    codes, warps = [], []
    orig_codes = train.Trainer.prepare_code

    def prepare_code(self):  # theirs, in float64
        z, cz, c = (x.double() for x in orig_codes(self))
        codes.append({"z": z.float(), "cz": cz.float(), "c": c.argmax(1)})
        return z, cz, c

    wg = torch.Generator().manual_seed(5)

    def random_grid(self, size):  # their formula, parameters from a seeded generator
        u = [torch.rand(self.bs, generator=wg, dtype=torch.float64) * (hi - lo) + lo for lo, hi in
             (STRONG[0], STRONG[1], STRONG[2], STRONG[2])]
        s_, r, tx, ty = u
        warps.append(torch.stack(u, 1).float())
        s_, r, tx, ty = (x.float().double() for x in u)  # what the fixture stores
        rad = r / 180 * math.pi
        theta = torch.stack([torch.stack([s_ * rad.cos(), -s_ * rad.sin(), tx], 1),
                             torch.stack([s_ * rad.sin(), s_ * rad.cos(), ty], 1)], 1)
        return F.affine_grid(theta, size, align_corners=True)

    t.prepare_code = types.MethodType(prepare_code, t)
    t.random_grid = types.MethodType(random_grid, t)

    renders, d_calls = [], []
    hg = t.netG.register_forward_hook(lambda mod, i, o: renders.append([x.detach().clone() for x in o]))
    hd = t.netD.register_forward_hook(lambda mod, i, o: d_calls.append([x.detach().clone() for x in o]))
    random.seed(0)
    torch.manual_seed(0)
    t.train()
    hg.remove()
    hd.remove()
    if len(renders) != 2 or len(d_calls) != 4 or len(codes) != 2:
        raise SystemExit(f"expected 2 renders, 4 D calls, 2 code draws: {len(renders)}, {len(d_calls)}, {len(codes)}")

    td, tg = t.terms_d, t.terms_g
    terms = {
        "D": {"d_real": td["real_adv_loss"], "d_fake": td["fake_adv_loss"], "d_info": td["info_loss"] / 5,
              "d_info_fg": td["info_loss_aug"], "cont": td["contrastive_loss"],
              "ent_each": td["entropy_reg_1"] / 0.1, "ent_mean": -td["entropy_reg_2"] / 0.1, "loss": td["D_loss"]},
        "G": {"g_adv": tg["adv_loss"], "g_info": tg["info_loss"] / 5, "g_info_fg": tg["info_loss_aug"],
              "mask_reg": tg["mask_reg_loss"], "loss": tg["G_loss"]},
    }
    # their D calls: D(real), D(fake, mask * fake), D(aug) in train_D; D(fake, mask * fake) in train_G
    (h_real, a_real, cents_d), (h_fake, a_fake, _, h_fg), (h_aug, _, _), (g_h, g_a, cents_g, g_hfg) = d_calls
    d_out = {"D": {"h": [h_real, h_fake, h_fg, h_aug], "adv": [a_real, a_fake], "centres": cents_d},
             "G": {"h": [g_h, g_hfg], "adv": [g_a], "centres": cents_g}}
    d_out = {ph: {key: ([x.float() for x in v] if isinstance(v, list) else v.float()) for key, v in d.items()}
             for ph, d in d_out.items()}
    weights = {f"{n}.{key}": v.detach().clone().half() for n in ("G", "D")
               for key, v in nets[n].state_dict().items() if v.is_floating_point()}
    fixture = {
        "config": json.dumps({"model": {**s, **AUTHORS}, "size": SIZE, "batch": BATCH}),
        "weights": weights,
        "inputs": {"real_u8": real_u8, "aug_u8": aug_u8, "codes": codes, "warps": warps},
        "renders": [{"background": r[0].float(), "mask": r[1].float(), "foreground": r[2].float()} for r in renders],
        "d_outputs": d_out,
        "losses": {ph: {key: v.detach().reshape(()) for key, v in d.items()} for ph, d in terms.items()},
        "grads": grads,
    }
    torch.set_default_dtype(torch.float32)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "c3gan_small.pt"
    torch.save(fixture, path)
    (out / "c3gan_paper_shapes.json").write_text(json.dumps(paper, indent=1, sort_keys=True) + "\n")
    print(json.dumps({"fixture": str(path), "bytes": path.stat().st_size,
                      "paper_params": {n: v["params"] for n, v in paper.items()},
                      "losses": {ph: {key: round(float(v), 6) for key, v in d.items()} for ph, d in terms.items()}}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--c3gan", type=Path, required=True, help="folder of the authors' C3-GAN code (model.py)")
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures")
    a = ap.parse_args()
    torch.set_num_threads(1)
    c3gan(a.c3gan.resolve(), a.out)


if __name__ == "__main__":
    main()
