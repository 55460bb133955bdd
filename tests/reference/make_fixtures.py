"""Record reference tensors from the authors' public FineGAN and MixNMatch code, for
tests/reference/test_reference.py.

Their code is never part of this repository. Point this script at local copies of it:

    python tests/reference/make_fixtures.py --finegan /path/to/finegan/code \
        --mixnmatch /path/to/MixNMatch/code --out tests/fixtures

It loads their ``model.py`` and ``trainer.py`` from that folder with the few edits that
Python 3 on a CPU needs (tabs expanded as Python 2 read them, no ``.cuda()``, integer
division where Python 2 divided integers), builds their G and three Ds, and builds ours
through fgtool. One set of weights (ours, rounded to fp16 so that they store exactly in
half the bytes) goes into both through the explicit key mapping below. Then their own
``train_Dnet`` and ``train_Gnet`` run one background-D, one child-D and one G step on fixed
codes, noise, images and boxes, and everything they compute is recorded:

- every stage's image and mask of G;
- every discriminator output of both steps (forward hooks on their Ds);
- every loss term (their loss functions are wrapped to record each call), and the totals;
- the background D's patch labels from the boxes;
- every parameter's gradient before each optimiser step (sum, sum of squares and one
  fixed projection);
- at the paper setting (Nc 200, Np 20, ngf = ndf = 64, 128 px), every parameter's shape
  under the mapping, so the test can check our networks have the authors' shapes.

MixNMatch the same way, with its encoders and paired critics: one background-D and child-D
step, one critic step (with their gradient penalty) and one generator+encoder step, from
``train_first_stage.py``. Their encoder, critics and parent D fix some widths in the code
(64, 16 and 512); at the small setting those literals become the small widths (named edits
below; at the paper setting they are the literals' own values). The critics' code noise is
off on both sides (it is random; a unit test covers ours), and the random draws both sides
make (the penalty's mixing weights, the untied codes) are taken from their run.

MixNMatch's second stage too (``mixnmatch_stage2_small.pt``): their ``train_second_stage.py``
Trainer runs one epoch of one batch (one Dis_Dis step, then one FeatureExtractor step) with
our weights in their frozen G (eval mode, random BatchNorm statistics), FeatureExtractor and
Dis_Dis; S's and Dis_Dis's width literals become small widths through named edits, and their
coin for a soft parent code is forced to the soft side. At the paper setting the shapes of
their FeatureExtractor(3, 16) and Dis_Dis(16) go into ``mixnmatch_paper_shapes.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import types
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SMALL = dict(n_child=4, n_parent=2, z_dim=8, ngf=4, ndf=4)
PAPER = dict(n_child=200, n_parent=20, z_dim=100, ngf=64, ndf=64)
SIZE, BATCH = 128, 2


# ----------------------------------------------------------------------------- their code, loaded


def _stub_missing() -> None:
    """Their config imports easydict; their trainer imports six and tensorboardX (logging only)."""
    try:
        import easydict  # noqa: F401
    except ImportError:
        class EasyDict(dict):
            def __init__(self, d=None, **kw):
                super().__init__()
                for k, v in dict(d or {}, **kw).items():
                    self[k] = v

            def __setitem__(self, k, v):
                super().__setitem__(k, EasyDict(v) if isinstance(v, dict) and not isinstance(v, EasyDict) else v)

            __setattr__ = __setitem__

            def __getattr__(self, k):
                try:
                    return self[k]
                except KeyError:
                    raise AttributeError(k) from None

        sys.modules["easydict"] = types.SimpleNamespace(EasyDict=EasyDict)
    try:
        import six  # noqa: F401
    except ImportError:
        sys.modules["six"] = types.SimpleNamespace(moves=types.SimpleNamespace(range=range))
        sys.modules["six.moves"] = sys.modules["six"].moves
    if "tensorboardX" not in sys.modules:
        tb = types.ModuleType("tensorboardX")
        tb.summary = types.SimpleNamespace(scalar=lambda *a, **k: None)
        tb.FileWriter = lambda *a, **k: types.SimpleNamespace(add_summary=lambda *a, **k: None, flush=lambda: None)
        sys.modules["tensorboardX"] = tb


def _load(path: Path, name: str, edits: list[tuple[str, str]]) -> types.ModuleType:
    src = path.read_text().expandtabs(8)  # Python 2 read a tab as "to the next multiple of 8"
    for old, new in edits:
        src = src.replace(old, new)
    mod = types.ModuleType(name)
    mod.__file__ = str(path)
    sys.modules[name] = mod
    exec(compile(src, str(path), "exec"), mod.__dict__)
    return mod


def load_finegan(code: Path):
    _stub_missing()
    sys.path.insert(0, str(code))
    from miscc.config import cfg  # their config object

    cpu = [(".cuda()", ""), ("classes_child / classes_parent", "classes_child // classes_parent"),
           ("/ ratio", "// ratio")]  # Python 2 divided these integers
    model = _load(code / "model.py", "model", cpu)
    trainer = _load(code / "trainer.py", "ref_trainer", cpu)
    return cfg, model, trainer


def set_config(cfg, c: dict, batch: int) -> None:
    cfg.update(SUPER_CATEGORIES=c["n_parent"], FINE_GRAINED_CATEGORIES=c["n_child"], TIED_CODES=True, CUDA=False)
    cfg.GAN.update(GF_DIM=c["ngf"], DF_DIM=c["ndf"], Z_DIM=c["z_dim"], R_NUM=2)
    cfg.TRAIN.update(BATCH_SIZE=batch, BG_LOSS_WT=10, GENERATOR_LR=2e-4, DISCRIMINATOR_LR=2e-4)


# ----------------------------------------------------------------------------- ours -> theirs


class _perm_code_first:
    """Our joint convs and linears read [features or z, code]; theirs read [code, features or z]."""

    def __init__(self, n_code: int):
        self.n = n_code

    def __call__(self, w: torch.Tensor) -> torch.Tensor:  # ours -> theirs
        cin = w.shape[1] - self.n
        return torch.cat([w.narrow(1, cin, self.n), w.narrow(1, 0, cin)], 1)

    def back(self, w: torch.Tensor) -> torch.Tensor:  # theirs -> ours
        return torch.cat([w.narrow(1, self.n, w.shape[1] - self.n), w.narrow(1, 0, self.n)], 1)


def finegan_mapping(c: dict) -> dict[str, list[tuple[str, str, object]]]:
    """Per net: (our key prefix, their key prefix, transform of a weight or None)."""
    nc, npar = c["n_child"], c["n_parent"]
    g = [("bg_backbone.fc.0.", "h_net1_bg.fc.0.", _perm_code_first(nc)), ("bg_backbone.fc.1.", "h_net1_bg.fc.1.", None),
         ("p_backbone.fc.0.", "h_net1.fc.0.", _perm_code_first(npar)), ("p_backbone.fc.1.", "h_net1.fc.1.", None)]
    for k in range(5):
        for ours, theirs in (("bg_backbone", "h_net1_bg"), ("p_backbone", "h_net1")):
            g += [(f"{ours}.ups.{k}.1.", f"{theirs}.upsample{k + 1}.1.", None),
                  (f"{ours}.ups.{k}.2.", f"{theirs}.upsample{k + 1}.2.", None)]
    g.append(("bg_head.0.", "img_net1_bg.img.0.", None))
    for ours, theirs, n in (("p", "h_net2", npar), ("c", "h_net3", nc)):
        g += [(f"{ours}_joint.0.", f"{theirs}.jointConv.0.", _perm_code_first(n)),
              (f"{ours}_joint.1.", f"{theirs}.jointConv.1.", None),
              (f"{ours}_half.", f"{theirs}.samesample.", None)]
        for i in range(2):
            g.append((f"{ours}_res.{i}.body.", f"{theirs}.residual.{i}.block.", None))
    g += [("p_img.0.", "img_net2.img.0.", None), ("p_mask.0.", "img_net2_mask.img.0.", None),
          ("c_img.0.", "img_net3.img.0.", None), ("c_mask.0.", "img_net3_mask.img.0.", None)]
    dbg = [("trunk.0.0.", "patchgan_img_code_s16.0.", None), ("trunk.1.0.", "patchgan_img_code_s16.2.", None),
           ("trunk.2.0.", "patchgan_img_code_s16.4.", None),
           ("adv.", "uncond_logits2.0.", None), ("aux.", "uncond_logits1.0.", None)]
    dinfo = [("trunk.net.0.0.", "img_code_s16.0.", None)]
    for i, j in ((1, 2), (2, 5), (3, 8)):
        dinfo += [(f"trunk.net.{i}.0.", f"img_code_s16.{j}.", None),
                  (f"trunk.net.{i}.1.", f"img_code_s16.{j + 1}.", None)]
    dinfo += [("trunk.net.4.", "img_code_s32.", None), ("trunk.net.5.", "img_code_s32_1.", None),
              ("info.0.", "jointConv.0.", None), ("info.1.", "jointConv.1.", None), ("info.3.", "logits.0.", None),
              ("adv.", "uncond_logits.0.", None)]
    return {"G": g, "Dbg": dbg, "Dp": dinfo, "Dc": dinfo}


def translate(ours: nn.Module, theirs: nn.Module, rules) -> dict[str, tuple[str, object]]:
    """our key -> (their key, transform); every key on both sides must be covered once."""
    keys, out = list(theirs.state_dict()), {}
    for k in ours.state_dict():
        hits = [(o, t, f) for o, t, f in rules if k.startswith(o)]
        if len(hits) != 1:
            raise SystemExit(f"key {k}: {len(hits)} mapping rules")
        o, t, f = hits[0]
        out[k] = (t + k[len(o):], f)
    missing = set(keys) - {t for t, _ in out.values()}
    if missing:
        raise SystemExit(f"their keys not mapped: {sorted(missing)[:8]}")
    return out


def copy_into(ours: nn.Module, theirs: nn.Module, rules) -> None:
    sd, tm = ours.state_dict(), translate(ours, theirs, rules)
    new = {}
    for k, (t, f) in tm.items():
        v = sd[k]
        new[t] = f(v) if f is not None and v.dim() > 1 else v
        if new[t].shape != theirs.state_dict()[t].shape:
            raise SystemExit(f"{k} -> {t}: shape {tuple(new[t].shape)} vs {tuple(theirs.state_dict()[t].shape)}")
    theirs.load_state_dict(new, strict=True)


def shapes_under_mapping(ours: nn.Module, theirs: nn.Module, rules) -> dict:
    """Their shape of every tensor, under our key (a permuted layout keeps the shape)."""
    tm, tsd = translate(ours, theirs, rules), theirs.state_dict()
    shapes = {k: list(tsd[t].shape) for k, (t, _) in tm.items()}
    return {"shapes": shapes, "params": sum(p.numel() for p in theirs.parameters())}


# ----------------------------------------------------------------------------- recording helpers


def projection(t: torch.Tensor) -> torch.Tensor:
    """A fixed pseudo-random direction of t's size (the test builds the same one)."""
    n = t.numel()
    return torch.sin(torch.arange(n, dtype=torch.float64) * 0.7 + 0.3).view_as(t)


def summary(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().double()
    return torch.stack([t.sum(), (t * t).sum(), (t * projection(t)).sum()])


class Recorder(nn.Module):
    """Wraps a loss module; records (output, target) of every call, in order."""

    def __init__(self, inner: nn.Module, log: list):
        super().__init__()
        self.inner, self.log = inner, log

    def forward(self, x, target):
        out = self.inner(x, target)
        self.log.append((out.detach().clone(), target.detach().clone()))
        return out


class GradTap:
    """Wraps an optimiser: records each parameter's gradient summary (in our layout) before
    it steps. ``names``: id(their parameter) -> (our name, their layout -> ours, or None)."""

    def __init__(self, opt, names: dict, log: dict):
        self.opt, self.names, self.log = opt, names, log

    def step(self):
        for group in self.opt.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    name, back = self.names[id(p)]
                    self.log[name] = summary(back(p.grad) if back is not None else p.grad)
        self.opt.step()

    def zero_grad(self, *a, **k):
        self.opt.zero_grad(*a, **k)


def pair_in_float64(nets: dict, theirs: dict, rules: dict) -> None:
    """One set of weights in both: ours rounded to fp16 (they store exactly in half the
    bytes), copied into theirs through the mapping; both in float64 and training mode.

    The iteration runs in float64 on both sides: at batch 2, BatchNorm turns fp32 rounding
    (1e-7) into 1e-4 differences in the child layer and worse in some gradients, which would
    hide what the comparison is for, the architecture and the losses."""
    with torch.no_grad():
        for k in theirs:
            for p in nets[k].parameters():
                p.copy_(p.half().float())
    for k, m in theirs.items():
        nets[k].double()
        copy_into(nets[k], m.double(), rules[k])
        m.train()
    torch.set_default_dtype(torch.float64)


def param_names(nets: dict, theirs: dict, rules: dict) -> dict:
    """id(their parameter) -> (our "net.name", their layout -> ours or None), for GradTap."""
    names = {}
    for k, m in theirs.items():
        tm, their_params = translate(nets[k], m, rules[k]), dict(m.named_parameters())
        for n, p in nets[k].named_parameters():
            t_key, f = tm[n]
            names[id(their_params[t_key])] = (f"{k}.{n}", f.back if f is not None and p.dim() > 1 else None)
    return names


def fixed_inputs(seed: int, z_dim: int) -> tuple:
    """z (fp16-exact), the 126 px full view and the 128 px object view as uint8."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(BATCH, z_dim, generator=g, dtype=torch.float32).half().double()
    full_u8 = torch.randint(0, 256, (BATCH, 3, 126, 126), generator=g, dtype=torch.uint8)
    crop_u8 = torch.randint(0, 256, (BATCH, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)
    return z, full_u8, crop_u8


# ----------------------------------------------------------------------------- FineGAN


def build_ours(c: dict):
    from fgtool.backends.finegan import FineGAN, FineGANConfig

    backend = FineGAN(FineGANConfig(**c), SIZE)
    torch.manual_seed(0)
    nets = backend.build()
    return backend, nets


def finegan(code: Path, out: Path) -> None:
    cfg, model, trainer = load_finegan(code)

    # paper setting: shapes only
    set_config(cfg, PAPER, 16)
    _, nets = build_ours(PAPER)
    theirs = {"G": model.G_NET(), "Dbg": model.D_NET(0), "Dp": model.D_NET(1), "Dc": model.D_NET(2)}
    rules = finegan_mapping(PAPER)
    paper = {k: shapes_under_mapping(nets[k], theirs[k], rules[k]) for k in theirs}

    # small setting: one iteration, every tensor
    set_config(cfg, SMALL, BATCH)
    backend, nets = build_ours(SMALL)
    theirs = {"G": model.G_NET(), "Dbg": model.D_NET(0), "Dp": model.D_NET(1), "Dc": model.D_NET(2)}
    rules = finegan_mapping(SMALL)
    pair_in_float64(nets, theirs, rules)
    z, full_u8, crop_u8 = fixed_inputs(1, SMALL["z_dim"])
    c = torch.tensor([1, 2])
    # boxes (x1, y1, x2, y2) in the 126 px full view: one inside, one clipped at an edge
    box = torch.tensor([[30.5, 20.25, 90.0, 100.75], [0.0, 40.0, 60.0, 126.0]], dtype=torch.float32)
    real_full, real_crop = full_u8.double() / 127.5 - 1, crop_u8.double() / 127.5 - 1

    t = trainer.FineGAN_trainer.__new__(trainer.FineGAN_trainer)
    t.netG, t.netsD, t.num_Ds = theirs["G"], [theirs["Dbg"], theirs["Dp"], theirs["Dc"]], 3
    names = param_names(nets, theirs, rules)
    opt_g, opt_d = _their_optimizers(trainer, t)
    grads_d, grads_g = {}, {}
    t.optimizersD = [GradTap(o, names, grads_d) for o in opt_d]
    t.optimizerG = [GradTap(o, names, grads_g) for o in opt_g]
    losses: list = []
    t.criterion = Recorder(nn.BCELoss(reduction="none"), losses)
    t.criterion_one = Recorder(nn.BCELoss(), losses)
    t.criterion_class = Recorder(nn.CrossEntropyLoss(), losses)
    t.patch_stride, t.n_out, t.recp_field = float(4), 24, 34
    t.summary_writer = sys.modules["tensorboardX"].FileWriter()
    t.real_fimgs, t.real_cimgs = [real_full], [real_crop]
    # their box list is [y1, x1, y2, x2], each a [B] tensor
    t.warped_bbox = [box[:, 1], box[:, 0], box[:, 3], box[:, 2]]
    t.c_code = torch.nn.functional.one_hot(c, SMALL["n_child"]).float()

    d_out: list = []
    hooks = [m.register_forward_hook(lambda mod, i, o, k=k: d_out.append(
        (k, [x.detach().clone() for x in o]))) for k, m in theirs.items() if k != "G"]

    bg128 = []
    hb = t.netG.img_net1_bg.register_forward_hook(lambda mod, i, o: bg128.append(o.detach().clone()))
    t.fake_imgs, t.fg_imgs, t.mk_imgs, t.fg_mk = t.netG(z, t.c_code)
    hb.remove()
    t.p_code = trainer.child_to_parent(t.c_code, SMALL["n_child"], SMALL["n_parent"])
    # the stages' layers; the composites and the 126 px background are checked through the
    # discriminator outputs that read them
    gen = {"background": bg128[0], "parent_fg": t.fg_imgs[0], "child_fg": t.fg_imgs[1],
           "parent_mask": t.mk_imgs[0], "child_mask": t.mk_imgs[1]}
    gen = {k: v.detach().clone() for k, v in gen.items()}

    n0 = len(losses)
    err_bg = t.train_Dnet(0, 1)  # count 1: their step logs nothing on it
    bg_calls = [o for o, _ in losses[n0:]]
    w = losses[n0 + 1][1]  # the aux head's target: their patch labels from the boxes
    n1 = len(losses)
    err_child = t.train_Dnet(2, 1)
    child_calls = [o for o, _ in losses[n1:]]
    d_outputs = list(d_out)
    d_out.clear()
    n2 = len(losses)
    err_g = t.train_Gnet(1)
    g_calls = [o for o, _ in losses[n2:]]
    g_outputs = list(d_out)
    for h in hooks:
        h.remove()

    # name their loss calls, and check the names add up to their totals
    rf_real, aux_real, rf_fake = bg_calls
    n = w.numel()
    terms_d = {"d_bg_real": (rf_real * w).mean() * (n / w.sum()) if w.sum() > 0 else (rf_real * w).mean(),
               "d_bg_aux": aux_real.mean(), "d_bg_fake": rf_fake.mean(),
               "d_child_real": child_calls[0], "d_child_fake": child_calls[1]}
    _check(10 * (terms_d["d_bg_real"] + terms_d["d_bg_fake"]) + terms_d["d_bg_aux"], err_bg, "bg D total")
    _check(terms_d["d_child_real"] + terms_d["d_child_fake"], err_child, "child D total")
    g_bg_adv, g_bg_aux, info_p, g_child_adv, info_c = g_calls
    terms_g = {"g_bg_adv": g_bg_adv, "g_bg_aux": g_bg_aux, "g_child_adv": g_child_adv, "info_p": info_p,
               "info_c": info_c}
    _check(10 * g_bg_adv + g_bg_aux + g_child_adv + info_p + info_c, err_g, "G total")

    weights = {f"{k}.{n}": v.half() for k in ("G", "Dbg", "Dp", "Dc") for n, v in _orig_state(nets[k]).items()
               if v.is_floating_point()}
    fixture = {
        "config": json.dumps({"model": SMALL, "size": SIZE, "batch": BATCH}),
        "weights": weights,
        "inputs": {"z": z.float(), "c": c, "full_u8": full_u8, "crop_u8": crop_u8, "box": box},
        "generator": {k: v.float() for k, v in gen.items()},  # float32 copies of the float64 run
        "bg_labels": w.float(),
        "d_outputs_d_step": _named_outputs(d_outputs, ["Dbg.real", "Dbg.fake", "Dc.real", "Dc.fake"]),
        "d_outputs_g_step": _named_outputs(g_outputs, ["Dbg.fake", "Dp.parent", "Dp.parent_fg", "Dc.image",
                                                       "Dc.child_fg"]),
        "losses_d": {k: v.detach().reshape(()) for k, v in terms_d.items()},
        "losses_g": {k: v.detach().reshape(()) for k, v in terms_g.items()},
        "grads_d": grads_d, "grads_g": grads_g,
    }
    out.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, out / "finegan_small.pt")
    (out / "finegan_paper_shapes.json").write_text(json.dumps(paper, indent=1, sort_keys=True) + "\n")
    print(json.dumps({"fixture": str(out / "finegan_small.pt"), "bytes": (out / "finegan_small.pt").stat().st_size,
                      "paper_params": {k: v["params"] for k, v in paper.items()},
                      "losses_d": {k: round(float(v), 6) for k, v in terms_d.items()},
                      "losses_g": {k: round(float(v), 6) for k, v in terms_g.items()}}))


def _orig_state(m: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def _their_optimizers(trainer, t):
    class _Wrap:  # their optimizers reach the child D's heads through .module (DataParallel)
        def __init__(self, m):
            self.module = m

        def parameters(self):
            return self.module.parameters()

    netsD = [t.netsD[0], t.netsD[1], _Wrap(t.netsD[2])]
    return trainer.define_optimizers(t.netG, netsD)


def _named_outputs(seq, names) -> dict:
    if len(seq) != len(names):
        raise SystemExit(f"expected {len(names)} discriminator calls, got {len(seq)}")
    return {n: [x.float() for x in o] for n, (_, o) in zip(names, seq)}


def _check(a, b, what) -> None:
    if not math.isclose(float(a.detach()), float(b.detach()), rel_tol=1e-9, abs_tol=1e-9):
        raise SystemExit(f"{what}: named terms add to {float(a)}, their code to {float(b)}")


# ----------------------------------------------------------------------------- MixNMatch

MNM_SMALL = dict(n_child=4, n_parent=2, z_dim=8, ngf=8, ndf=4, enc_width=4, pair_width=4, pair_hidden=32)
MNM_PAPER = dict(n_child=200, n_parent=20, z_dim=100, ngf=64, ndf=64, enc_width=64, pair_width=16, pair_hidden=512)


# their FeatureExtractor's and Dis_Dis's width literals (stage 2): the edits keep each line and
# scale its numbers, S's from its base width 32, Dis_Dis's from the feature width 16
S_LINES = ["self.first = nn.Sequential( sameBlock(in_c, 32), sameBlock(32, 32) )",
           "self.down1 = Down_unet(32, 32)", "self.down2 = Down_unet(32,64)", "self.down3 = Down_unet(64,128)",
           "self.down4 = Down_unet(128,256)", "self.down5 = Down_unet(256,512)", "self.down6 =  Down_unet(512,512)",
           "self.up1 = Up_unet(512,256)", "self.up2 = Up_unet(256+512,512)", "self.up3 = Up_unet(512+256,256)",
           "self.up4 = Up_unet(256+128,128)", "self.up5 = Up_unet(128+64,64)", "self.up6 = Up_unet(64+32,out_c)"]
DD_LINES = ["nn.Conv2d(in_c, 32, 4, 2, 0, bias=False)", "nn.Conv2d(32, 64, 4, 2, 0, bias=False)",
            "nn.Conv2d(64, 128, 4, 1, 0, bias=False)", "nn.Conv2d(128, 1, kernel_size=4, stride=1)"]


def _scaled(lines: list[str], base: int, width: int) -> list[tuple[str, str]]:
    import re

    def one(line: str) -> str:
        return re.sub(r"\b(32|64|128|256|512)\b", lambda m: str(int(m.group()) * width // base), line)
    return [(line, one(line)) for line in lines]


def load_mixnmatch(code: Path, enc_ndf: int, pair_ngf: int, pair_hidden: int, s_width: int = 32,
                   feat_width: int = 16):
    _stub_missing()
    sys.path.insert(0, str(code))
    from config import cfg  # their config object

    widths = [("self.ndf = 64", f"self.ndf = {enc_ndf}"),  # Encoder
              ("def __init__(self, code_len, ngf=16):", f"def __init__(self, code_len, ngf={pair_ngf}):"),
              ("Conv_Block( ngf*16, 512,", f"Conv_Block( ngf*16, {pair_hidden},"),
              ("Viewer( [-1,512] )", f"Viewer( [-1,{pair_hidden}] )"),
              ("Linear_Block( code_len, 512,", f"Linear_Block( code_len, {pair_hidden},"),
              ("Linear_Block( 512, 512,", f"Linear_Block( {pair_hidden}, {pair_hidden},"),
              ("Linear_Block(1024,1024,", f"Linear_Block({2 * pair_hidden},{2 * pair_hidden},"),
              ("Linear_Block(1024, 1,", f"Linear_Block({2 * pair_hidden}, 1,")]
    stage2 = _scaled(S_LINES, 32, s_width) + _scaled(DD_LINES, 16, feat_width)
    src = (code / "model_train.py").read_text()
    for old, _ in widths + stage2:
        if old not in src or (old, _) in stage2 and src.count(old) != 1:
            raise SystemExit(f"model_train.py: {old!r} not found once (another version of their code?)")
    widths += stage2
    model = _load(code / "model_train.py", "model_train", [(".cuda()", ""), *widths])
    utils = _load(code / "utils.py", "utils", [(".cuda()", "")])
    train = _load(code / "train_first_stage.py", "train_first_stage",
                  [(".cuda()", ""), ("from datasets import get_dataloader", ""),
                   ('torch.device("cuda:" + cfg.GPU_ID)', 'torch.device("cpu")')])
    train2 = _load(code / "train_second_stage.py", "train_second_stage",
                   [(".cuda()", ""), ("from datasets import get_dataloader", ""),
                    ('torch.device("cuda:" + cfg.GPU_ID)', 'torch.device("cpu")')])
    return cfg, model, utils, train, train2


def mnm_set_config(cfg, c: dict, batch: int) -> None:
    cfg.update(SUPER_CATEGORIES=c["n_parent"], FINE_GRAINED_CATEGORIES=c["n_child"])
    cfg.GAN.update(GF_DIM=c["ngf"], Z_DIM=c["z_dim"])
    cfg.TRAIN.update(BATCH_SIZE=batch, BG_LOSS_WT=10)


def mixnmatch_mapping(c: dict) -> dict:
    """Per net: (our key prefix, their key prefix, transform of a weight or None)."""
    g = [("bg_backbone.fc.", "background_stage.fc.", None), ("p_backbone.fc.", "parent_stage.fc.", None)]
    for k in range(5):
        for ours, theirs in (("bg_backbone", "background_stage"), ("p_backbone", "parent_stage")):
            g += [(f"{ours}.ups.{k}.1.", f"{theirs}.upsample{k + 1}.1.", None),
                  (f"{ours}.ups.{k}.2.", f"{theirs}.upsample{k + 1}.2.", None)]
    g += [("bg_head.0.", "background_image.img.0.", None),
          ("p_joint.0.", "parent_stage.jointConv.0.", None), ("p_joint.1.", "parent_stage.jointConv.1.", None),
          ("p_img.0.", "parent_image.img.0.", None), ("p_mask.0.", "parent_mask.img.0.", None),
          ("c_joint.0.", "child_stage.jointConv.0.", _perm_code_first(c["n_child"])),  # theirs: [c, features]
          ("c_joint.1.", "child_stage.jointConv.1.", None), ("c_half.", "child_stage.samesample.", None),
          ("c_img.0.", "child_image.img.0.", None), ("c_mask.0.", "child_mask.img.0.", None)]
    g += [(f"p_res.{i}.body.", f"parent_stage.residual.{i}.block.", None) for i in range(3)]
    g += [(f"c_res.{i}.body.", f"child_stage.residual.{i}.block.", None) for i in range(2)]
    dbg = [("trunk.0.0.", "encode_img.0.", None), ("trunk.1.0.", "encode_img.2.", None),
           ("trunk.2.0.", "encode_img.4.", None), ("adv.", "rf_logits.0.", None), ("aux.", "class_logits.0.", None)]

    def flat(trunk: str) -> list:
        r = [("trunk.net.0.0.", f"{trunk}.0.", None)]
        for i, j in ((1, 2), (2, 5), (3, 8), (4, 11), (5, 14)):
            r += [(f"trunk.net.{i}.0.", f"{trunk}.{j}.", None), (f"trunk.net.{i}.1.", f"{trunk}.{j + 1}.", None)]
        return r + [("info.0.", "code_logits.0.", None), ("info.1.", "code_logits.1.", None),
                    ("info.3.", "code_logits.3.", None), ("adv.", "rf_logits.0.", None)]

    enc, pair = [], []
    for k in "zbpc":
        t = f"model_{k}"
        enc += [(f"{k}.trunk.net.0.0.", f"{t}.0.0.", None)]
        for i, j in ((1, 2), (2, 5), (3, 8)):
            enc += [(f"{k}.trunk.net.{i}.0.", f"{t}.0.{j}.", None), (f"{k}.trunk.net.{i}.1.", f"{t}.0.{j + 1}.", None)]
        enc += [(f"{k}.trunk.net.4.", f"{t}.1.", None), (f"{k}.trunk.net.5.", f"{t}.2.", None),
                (f"{k}.info.0.", f"{t}.3.0.", None), (f"{k}.info.1.", f"{t}.3.1.", None),
                (f"{k}.info.3.", f"{t}.4.", None)]
        t = f"BD_{k}"
        pair += [(f"{k}.image.0.net.{i}.0.", f"{t}.image_layer.{i}.model.0.", None) for i in range(5)]
        pair += [(f"{k}.image.1.", f"{t}.image_layer.5.model.0.", None)]
        pair += [(f"{k}.code.{i}.", f"{t}.code_layer.{i}.model.0.", None) for i in range(3)]
        pair += [(f"{k}.joint.0.", f"{t}.joint.0.model.0.", None), (f"{k}.joint.2.", f"{t}.joint.1.model.0.", None)]
    s = [(f"first.{i}.", f"first.{i}.", None) for i in range(2)]
    s += [(f"downs.{i}.", f"down{i + 1}.", None) for i in range(6)] + [(f"ups.{i}.", f"up{i + 1}.", None)
                                                                     for i in range(6)]
    s += [(f"last.{i}.body.", f"last.{i}.block.", None) for i in range(2)]
    dfeat = [("trunk.0.0.", "encode_img.0.", None), ("trunk.1.0.", "encode_img.2.", None),
             ("trunk.2.0.", "encode_img.4.", None), ("adv.", "rf_logits.0.", None)]
    return {"G": g, "Dbg": dbg, "Dp": flat("encode_mask"), "Dc": flat("encode_img"), "E": enc, "Dpair": pair,
            "S": s, "Dfeat": dfeat}


def mnm_build(c: dict, noise=(0.0, 0.0, 0.0)):
    from fgtool.backends.mixnmatch import MixNMatch, MixNMatchConfig

    backend = MixNMatch(MixNMatchConfig(**c, pair_noise=noise), SIZE)
    torch.manual_seed(0)
    nets = backend.build()
    return backend, nets


def mnm_theirs(model, c: dict) -> dict:
    return {"G": model.G_NET(), "Dbg": model.BACKGROUND_D(c["ndf"]), "Dp": model.PARENT_D(c["ndf"] // 2),
            "Dc": model.CHILD_D(c["ndf"]), "E": model.Encoder(), "Dpair": model.Bi_Dis()}


NETS = ("G", "Dbg", "Dp", "Dc", "E", "Dpair")


def mixnmatch(code: Path, out: Path) -> None:
    # paper setting: shapes only (the width edits are the literals' own values); stage 2's
    # nets as their second stage builds them, FeatureExtractor(3, 16) and Dis_Dis(16)
    cfg, model, utils, train, _ = load_mixnmatch(code, 64, 16, 512)
    mnm_set_config(cfg, MNM_PAPER, 12)
    _, nets = mnm_build(MNM_PAPER)
    theirs, rules = mnm_theirs(model, MNM_PAPER), mixnmatch_mapping(MNM_PAPER)
    theirs.update(S=model.FeatureExtractor(3, 16), Dfeat=model.Dis_Dis(16))
    paper = {k: shapes_under_mapping(nets[k], theirs[k], rules[k]) for k in (*NETS, "S", "Dfeat")}
    del nets, theirs

    s = MNM_SMALL
    cfg, model, utils, train, _ = load_mixnmatch(code, s["enc_width"], s["pair_width"], s["pair_hidden"])
    mnm_set_config(cfg, s, BATCH)
    model.Gaussian.forward = lambda self, x: x  # the critics' code noise off (see the module docstring)
    backend, nets = mnm_build(s)
    theirs, rules = mnm_theirs(model, s), mixnmatch_mapping(s)
    rules = {k: rules[k] for k in NETS}
    pair_in_float64(nets, theirs, rules)
    z, full_u8, crop_u8 = fixed_inputs(2, s["z_dim"])
    c = torch.tensor([3, 0])
    box = torch.tensor([[10.0, 30.5, 100.25, 90.0], [40.0, 0.0, 126.0, 70.0]], dtype=torch.float32)

    t = train.Trainer.__new__(train.Trainer)
    t.batch_size, t.patch_stride, t.n_out, t.recp_field = BATCH, 4.0, 24, 34
    t.netG, t.encoder, t.BD = theirs["G"], theirs["E"], theirs["Dpair"]
    t.netsD = [theirs["Dbg"], theirs["Dp"], theirs["Dc"]]
    names = param_names(nets, theirs, rules)

    class _Wrap:  # their optimizers reach the child D's code head through .module (DataParallel)
        def __init__(self, m):
            self.module = m

        def parameters(self):
            return self.module.parameters()

    opt_d, opt_bd, opt_ge = train.define_optimizers(t.netG, [t.netsD[0], t.netsD[1], _Wrap(t.netsD[2])], t.BD,
                                                    t.encoder)
    grads = {"D": {}, "Dpair": {}, "G": {}}
    t.optimizersD = [GradTap(o, names, grads["D"]) if o is not None else None for o in opt_d]
    t.optimizerBD, t.optimizerGE = GradTap(opt_bd, names, grads["Dpair"]), GradTap(opt_ge, names, grads["G"])
    losses: list = []
    t.RF_loss_un = Recorder(nn.BCELoss(reduction="none"), losses)
    t.RF_loss = Recorder(nn.BCELoss(), losses)
    t.CE = Recorder(train.CrossEntropy(), losses)
    t.L1 = Recorder(nn.L1Loss(), losses)
    gp_log, free_log = [], []
    orig_gp = train.cal_gradient_penalty

    def gp(*a, **k):
        torch.manual_seed(1234)  # the test seeds ours the same way before the critics' phase
        v = orig_gp(*a, **k)
        gp_log.append(v.detach().clone())
        return v

    train.cal_gradient_penalty = gp
    orig_codes = train.Trainer.prepare_code

    def prepare_code(self):
        codes = orig_codes(self)
        free_log.append([x.detach().clone() for x in codes])
        return codes

    t.prepare_code = types.MethodType(prepare_code, t)

    t.real_img126, t.real_img = full_u8.double() / 127.5 - 1, crop_u8.double() / 127.5 - 1
    t.real_c = torch.nn.functional.one_hot(c, s["n_child"]).double()
    t.real_p = utils.child_to_parent(t.real_c, s["n_child"], s["n_parent"])
    t.real_b, t.real_z = t.real_c, z
    t.warped_bbox = [box[:, 1], box[:, 0], box[:, 3], box[:, 2]]  # their list is [y1, x1, y2, x2]

    d_out: list = []
    hooks = [m.register_forward_hook(lambda mod, i, o, k=k: d_out.append(
        (k, [x.detach().clone() for x in o]))) for k, m in theirs.items() if k in ("Dbg", "Dp", "Dc", "Dpair")]
    bg128 = []
    hb = t.netG.background_image.register_forward_hook(lambda mod, i, o: bg128.append(o.detach().clone()))
    # one iteration of their train(): E(x) and one G render, then D0, D2, the critics, G+E
    t.fake_z, t.fake_b, t.fake_p, t.fake_c = t.encoder(t.real_img, "softmax")
    t.fake_imgs, t.fg_imgs, t.mk_imgs, t.fg_mk = t.netG(t.real_z, t.real_c, t.real_p, t.real_b, "code")
    hb.remove()
    gen = {"background": bg128[0], "parent_fg": t.fg_imgs[0], "child_fg": t.fg_imgs[1],
           "parent_mask": t.mk_imgs[0], "child_mask": t.mk_imgs[1]}
    enc = {"z": t.fake_z, "b": t.fake_b, "p": t.fake_p, "c": t.fake_c}
    steps = {}
    for name, fn in (("D0", lambda: t.train_Dnet(0)), ("D2", lambda: t.train_Dnet(2)), ("BD", t.train_BD),
                     ("GE", t.train_EG)):
        n0, k0 = len(losses), len(d_out)
        fn()
        steps[name] = ([o for o, _ in losses[n0:]], [tg for _, tg in losses[n0:]], d_out[k0:])
    for h in hooks:
        h.remove()

    # name their loss calls (their steps return nothing; the totals are checked in the test)
    (rf_real, rf_fake, aux_real), (_, _, w), _ = steps["D0"]  # their order: real, fake, then aux on w
    nw = w.numel()
    (ch_real, ch_fake), _, _ = steps["D2"]
    bd_outs = steps["BD"][2]
    bd_real, bd_fake = bd_outs[0][1], bd_outs[1][1]
    wdist = sum(x.mean() for x in bd_real) - sum(x.mean() for x in bd_fake)
    ge_calls, _, ge_outs = steps["GE"]
    info_p, info_c, rec_z, rec_b, rec_p, rec_c, g_bg_adv, g_bg_aux, g_child_adv = ge_calls
    ge_bd = [o for k, o in ge_outs if k == "Dpair"]
    g_pair = sum(x.mean() for x in ge_bd[0]) - sum(x.mean() for x in ge_bd[1])
    free = free_log[0]
    terms = {
        "D": {"d_bg_real": (rf_real * w).mean() * (nw / w.sum()) if w.sum() > 0 else (rf_real * w).mean(),
              "d_bg_aux": aux_real.mean(), "d_bg_fake": rf_fake.mean(), "d_child_real": ch_real,
              "d_child_fake": ch_fake},
        "Dpair": {"pair_wdist": wdist, "pair_gp": gp_log[0]},
        "G": {"g_bg_adv": g_bg_adv, "g_bg_aux": g_bg_aux, "g_child_adv": g_child_adv, "info_p": info_p,
              "info_c": info_c, "g_pair": g_pair, "rec_z": rec_z, "rec_b": rec_b, "rec_p": rec_p, "rec_c": rec_c},
    }
    d_named = {}
    for step, labels in (("D0", ["Dbg.real", "Dbg.fake"]), ("D2", ["Dc.real", "Dc.fake"]),
                         ("BD", ["Dpair.real", "Dpair.fake", "Dpair.mixed"]),
                         ("GE", ["Dp.parent_fg", "Dc.child_fg", "Dbg.fake", "Dc.image", "Dpair.real", "Dpair.fake"])):
        outs = steps[step][2]
        if len(outs) != len(labels):
            raise SystemExit(f"{step}: expected {len(labels)} discriminator calls, got {len(outs)}")
        d_named[step] = {lab: [x.float() for x in o] for lab, (_, o) in zip(labels, outs)}
    weights = {f"{k}.{n}": v.half() for k in NETS for n, v in _orig_state(nets[k]).items() if v.is_floating_point()}
    fixture = {
        "config": json.dumps({"model": s, "size": SIZE, "batch": BATCH, "gp_seed": 1234}),
        "weights": weights,
        "inputs": {"z": z.float(), "c": c, "full_u8": full_u8, "crop_u8": crop_u8, "box": box,
                   "free": {"z": free[0].float(), **{k: v.argmax(1) for k, v in zip("bpc", free[1:])}}},
        "generator": {k: v.float() for k, v in gen.items()},
        "encoder": {k: v.float() for k, v in enc.items()},
        "bg_labels": w.float(),
        "d_outputs": d_named,
        "losses": {ph: {k: v.detach().reshape(()) for k, v in d.items()} for ph, d in terms.items()},
        "grads": grads,
    }
    out.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, out / "mixnmatch_small.pt")
    (out / "mixnmatch_paper_shapes.json").write_text(json.dumps(paper, indent=1, sort_keys=True) + "\n")
    print(json.dumps({"fixture": str(out / "mixnmatch_small.pt"), "bytes": (out / "mixnmatch_small.pt").stat().st_size,
                      "paper_params": {k: v["params"] for k, v in paper.items()},
                      "losses": {ph: {k: round(float(v), 6) for k, v in d.items()} for ph, d in terms.items()}}))


S2_NETS = ("G", "S", "Dfeat")


def mixnmatch_stage2(code: Path, out: Path) -> None:
    """One iteration of their ``train_second_stage.py``: their own ``Trainer.train`` for one
    epoch of one batch, with our weights in their G (frozen, eval mode), FeatureExtractor and
    Dis_Dis. Their S and Dis_Dis are built at the small widths (S from 4 instead of 32, Dis_Dis
    from the feature width 2 instead of 16: the named edits above), their G at the small
    setting with random (fp16-exact) BatchNorm statistics, which eval mode reads. Their coin
    for a soft parent code (``random.uniform(0, 1) < 0.2``) is forced to the soft side; the
    codes and the photo batch are the ones their ``prepare_data`` made and was given."""
    s = dict(MNM_SMALL, stage2_start=1)
    phi_ch, s_width = s["ngf"] // 4, s["ngf"] // 2
    cfg, model, utils, train, train2 = load_mixnmatch(code, s["enc_width"], s["pair_width"], s["pair_hidden"],
                                                      s_width, phi_ch)
    mnm_set_config(cfg, s, BATCH)
    cfg.TRAIN.SECOND_MAX_EPOCH = 1
    backend, nets = mnm_build(s)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for m in nets["G"].modules():  # eval-mode statistics that are not the identity
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_((torch.randn(m.running_mean.shape, generator=g) * 0.2).half())
                m.running_var.copy_((torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5).half())
    theirs = {"G": model.G_NET(), "S": model.FeatureExtractor(3, phi_ch), "Dfeat": model.Dis_Dis(phi_ch)}
    rules = {k: v for k, v in mixnmatch_mapping(s).items() if k in S2_NETS}
    pair_in_float64(nets, theirs, rules)
    _, _, crop_u8 = fixed_inputs(3, s["z_dim"])
    real_img = crop_u8.double() / 127.5 - 1

    names = param_names(nets, theirs, rules)
    grads = {"Dfeat": {}, "S": {}}
    opt_fn = train2.define_optimizers
    train2.define_optimizers = lambda ex, dd: tuple(
        GradTap(o, names, grads[k]) for o, k in zip(opt_fn(ex, dd), ("S", "Dfeat")))

    class _Encoder(nn.Module):  # only their end-of-epoch picture reads it
        def forward(self, x, type_):
            n = x.shape[0]
            return (torch.zeros(n, s["z_dim"]), torch.eye(s["n_child"])[:n], torch.eye(s["n_parent"])[:n],
                    torch.eye(s["n_child"])[:n])

    train2.load_network = lambda: (theirs["G"], _Encoder(), theirs["S"], theirs["Dfeat"])
    train2.save_img_results = lambda *a, **k: None
    train2.save_model = lambda *a, **k: None
    train2.random = types.SimpleNamespace(uniform=lambda a, b: 0.1)  # their 20% branch: soft p
    losses: list = []
    train2.nn = types.SimpleNamespace(**{**vars(nn), "BCELoss": lambda: Recorder(nn.BCELoss(), losses),
                                         "L1Loss": lambda: Recorder(nn.L1Loss(), losses)})
    drawn = []
    orig_prepare = train2.Trainer.prepare_data

    def prepare_data(self, data):  # their codes are float32 tensors: in float64 for the run
        out_ = [x.double() for x in orig_prepare(self, data)]
        drawn.append([x.clone() for x in out_])
        return out_

    t = train2.Trainer.__new__(train2.Trainer)
    t.prepare_data = types.MethodType(prepare_data, t)
    t.dataloader, t.batch_size, t.fixed_image = [(None, real_img)], BATCH, real_img
    t.model_dir = t.image_dir = str(out)
    calls: dict[str, list] = {"G": [], "S": [], "Dfeat": []}
    hooks = [m.register_forward_hook(lambda mod, i, o, k=k: calls[k].append(
        [x.detach().clone() for x in o if torch.is_tensor(x)] if isinstance(o, tuple) else o.detach().clone()))
             for k, m in theirs.items()]
    torch.manual_seed(5)
    t.train()
    for h in hooks:
        h.remove()
    # the iteration; after it their end-of-epoch picture calls G and S once more (eval mode)
    calls = {"G": calls["G"][:1], "S": calls["S"][:2], "Dfeat": calls["Dfeat"]}
    if len(calls["Dfeat"]) != 3 or len(losses) != 4:
        raise SystemExit(f"expected 3 Dis_Dis calls and 4 loss calls, got {len(calls['Dfeat'])}, {len(losses)}")
    (dd_fake, _), (dd_real, _), (l1, _), (ex_adv, _) = losses  # their order: DD step, then L1, then EX's BCE
    terms = {"Dfeat": {"dfeat_fake": dd_fake, "dfeat_real": dd_real, "loss": dd_fake + dd_real},
             "S": {"s_adv": ex_adv, "s_l1": l1, "loss": ex_adv + l1}}
    _, real_z, real_b, real_p, real_c = drawn[0]
    phi, image = calls["G"][0]
    weights = {f"{k}.{n}": v.half() for k in S2_NETS for n, v in _orig_state(nets[k]).items()
               if v.is_floating_point()}
    fixture = {
        "config": json.dumps({"model": s, "size": SIZE, "batch": BATCH}),
        "weights": weights,
        "inputs": {"crop_u8": crop_u8, "z": real_z.float(), "p": real_p.float(), "b": real_b.argmax(1),
                   "c": real_c.argmax(1)},
        "generator": {"phi": phi.float(), "image": image.float()},
        "S": [x.float() for x in calls["S"]],
        "Dfeat": [x.float() for x in calls["Dfeat"]],
        "losses": {ph: {k: v.detach().reshape(()) for k, v in d.items()} for ph, d in terms.items()},
        "grads": grads,
    }
    path = out / "mixnmatch_stage2_small.pt"
    torch.save(fixture, path)
    print(json.dumps({"fixture": str(path), "bytes": path.stat().st_size,
                      "losses": {ph: {k: round(float(v), 6) for k, v in d.items()} for ph, d in terms.items()}}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--finegan", type=Path, help="folder of the authors' FineGAN code (model.py)")
    ap.add_argument("--mixnmatch", type=Path, help="folder of the authors' MixNMatch code (model_train.py)")
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures")
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.finegan:
        finegan(a.finegan.resolve(), a.out)
    if a.mixnmatch:
        torch.set_default_dtype(torch.float32)
        mixnmatch(a.mixnmatch.resolve(), a.out)
        torch.set_default_dtype(torch.float32)
        mixnmatch_stage2(a.mixnmatch.resolve(), a.out)


if __name__ == "__main__":
    main()
