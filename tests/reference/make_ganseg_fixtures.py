"""Record reference tensors from the authors' public GANSeg code, for
tests/reference/test_reference_ganseg.py.

Their code is never part of this repository. Point this script at a local copy of it:

    python tests/reference/make_ganseg_fixtures.py --ganseg /path/to/GANSeg --out tests/fixtures

It loads their ``models/heatmaps.py``, ``models/generator.py`` and
``models/discriminator.py`` from that folder, with their synchronised BatchNorm replaced by
``nn.BatchNorm2d`` (the same layer on one device), and builds their Generator (CUB
configuration: two blocks per resolution) and Discriminator next to ours
(``model.arch = "paper"``). One set of weights (ours, rounded to fp16 so that they store
exactly in half the bytes) goes into both through the explicit key mapping below.

GAN stage (``ganseg_small.pt``): the body of their ``train_one_epoch`` (taken from
``train_gan.py`` by name, not the module, which parses arguments and opens the data set)
runs one iteration, batch index 0, on one fixed batch of real images: the D step with their
gradient penalty and the G step with the concentration and area penalties (both are on at
index 0). Their step draws its noises and background shifts itself (``torch.randn`` /
``torch.rand`` after ``torch.manual_seed(SEED)``); a wrapper around their generator records
each draw, and the test feeds the same draws to ours. Recorded: every generator output of
both steps (image, part masks, cone heatmaps, points, centres, foreground and background
maps), every D output, every loss term and penalty, and every parameter's gradient before
each optimiser step (sum, sum of squares and one fixed projection).

Segmenter stage (same file, key ``seg``): their ``Dataset`` of ``train_seg.py`` (taken by
name; one batch instead of 1,000) renders image/label pairs with their G in eval mode after
the iteration above (so its BatchNorm statistics are those the two training forwards left),
and their ``cal_loss`` scores fixed logits against the labels. Their segmenter is
torchvision's DeepLabV3-ResNet50 (fgtool builds the same network); the fixture stands fixed
logits in for its output, so that the labels, the images and the loss with its gradient are
compared without 40M weights. Their labels put the background first; ours put it last.

Both sides run in float64 (at batch 2, BatchNorm turns fp32 rounding into 1e-4 differences).

At the paper setting (their ``log/gan_cub_k8/parameters.json``: K = 8, 4 points per part,
z 256, 64-d embeddings, 32-32-64-64-128-128, 128 px) every parameter's shape under the
mapping and every net's parameter count go into ``ganseg_paper_shapes.json`` (their G's
fixed coordinate grid, a parameter without gradient, is not counted).
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SIZE_PAPER = 128
SMALL = dict(arch="paper", n_parts=2, n_per=3, z_dim=8, mlp_hidden=8, emb_dim=4, start_div=4, gen_ch=16,
             spade_hidden=4, margin=3, ndf=2, d_first=True, d_reg="gp", seg_dice="per_image", seg_arch="small",
             seg_width=4, w_r1=10.0, r1_every=16, w_con=10.0, w_area=1.0, pen_every=2, point_div=1.0)
PAPER = dict(arch="paper", n_parts=8, n_per=4, z_dim=256, mlp_hidden=256, emb_dim=64, start_div=4, gen_ch=512,
             spade_hidden=128, margin=10, ndf=64, d_first=True, d_reg="gp", seg_arch="deeplabv3_resnet50")
SIZE, BATCH, SEED = 32, 2, 11
THEIR_GRID = "init_extend_coord"  # their fixed coordinate grid (a parameter without gradient)


# ----------------------------------------------------------------------------- their code, loaded


def _load(path: Path, name: str, edits: list[tuple[str, str]]) -> types.ModuleType:
    src = path.read_text()
    for old, new in edits:
        if old not in src:
            raise SystemExit(f"{path.name}: edit target {old!r} not found")
        src = src.replace(old, new)
    mod = types.ModuleType(name)
    mod.__file__ = str(path)
    sys.modules[name] = mod
    exec(compile(src, str(path), "exec"), mod.__dict__)
    return mod


def load_models(code: Path, gen_ch: int, spade_hidden: int, margin: int, ndf: int, n_blocks: int,
                point_div: float = 20.0):
    """Their heatmaps, generator and discriminator modules. Named edits (at the paper setting
    each is the literal's own value): the CUB branch's widths 512/256/128 become gen_ch,
    gen_ch / 2, gen_ch / 4; the SPADE and AdaIN hidden width 128 becomes spade_hidden; the
    margin of 10 px becomes ``margin``; the point divisor 20 becomes ``point_div`` (1 at the
    small setting, so that parts are wide enough for the area penalty to act); D's six
    blocks of 64..512 become n_blocks blocks of ndf..8 ndf."""
    pkg = types.ModuleType("models")
    pkg.__path__ = []
    sys.modules["models"] = pkg
    sys.modules["models.sync_batchnorm"] = types.SimpleNamespace(SynchronizedBatchNorm2d=nn.BatchNorm2d)
    heat = _load(code / "models" / "heatmaps.py", "models.heatmaps", [])
    c, h, q = gen_ch, gen_ch // 2, gen_ch // 4
    widths = [("SPADEResBlk(512, self.n_embedding,", f"SPADEResBlk({c}, self.n_embedding,"),
              ("SPADEResBlk(512, 256,", f"SPADEResBlk({c}, {h},"), ("SPADEResBlk(256, 256,", f"SPADEResBlk({h}, {h},"),
              ("SPADEResBlk(256, 128,", f"SPADEResBlk({h}, {q},"), ("SPADEResBlk(128, 128,", f"SPADEResBlk({q}, {q},"),
              ("SPADEResBlk(128, self.n_embedding,", f"SPADEResBlk({q}, self.n_embedding,"),
              ("AdaINResBlk(512, 256,", f"AdaINResBlk({c}, {h},"), ("AdaINResBlk(256, 256,", f"AdaINResBlk({h}, {h},"),
              ("AdaINResBlk(256, 128,", f"AdaINResBlk({h}, {q},"), ("AdaINResBlk(128, 128,", f"AdaINResBlk({q}, {q},"),
              ("AdaINResBlk(128, self.n_embedding,", f"AdaINResBlk({q}, self.n_embedding,"),
              ("nn.Conv2d(n_embeddings, 128,", f"nn.Conv2d(n_embeddings, {spade_hidden},"),
              ("nn.Conv2d(128, input_channel,", f"nn.Conv2d({spade_hidden}, input_channel,"),
              ("nn.Linear(n_embeddings, 128)", f"nn.Linear(n_embeddings, {spade_hidden})"),
              ("nn.Linear(128, input_channel)", f"nn.Linear({spade_hidden}, input_channel)"),
              ("self.extend_pixel = 10", f"self.extend_pixel = {margin}"),
              ("self.point_divisor = 20  #", f"self.point_divisor = {point_div}  #")]
    gen = _load(code / "models" / "generator.py", "models.generator", widths)
    chs = [3] + [ndf * min(2 ** i, 8) for i in range(n_blocks)]
    blocks = "".join(f"DiscriminatorBlock({a}, {b}, downsample=True), " for a, b in zip(chs[:-1], chs[1:]))
    old_blocks = ("DiscriminatorBlock(3, 64, downsample=True),  # 64\n"
                  "            DiscriminatorBlock(64, 128, downsample=True),  # 32\n"
                  "            DiscriminatorBlock(128, 256, downsample=True),  # 16\n"
                  "            DiscriminatorBlock(256, 512, downsample=True),  # 8\n"
                  "            DiscriminatorBlock(512, 512, downsample=True),  # 4\n"
                  "            DiscriminatorBlock(512, 512, downsample=True),  # 2\n")
    dis = _load(code / "models" / "discriminator.py", "models.discriminator",
                [(old_blocks, blocks + "\n"),
                 ("nn.Linear(2 * 2 * 512, 512)", f"nn.Linear(2 * 2 * {chs[-1]}, {chs[-1]})"),
                 ("nn.Linear(512, 1)", f"nn.Linear({chs[-1]}, 1)")])
    return heat, gen, dis


def their_function(path: Path, names: list[str], env: dict, edits: list[tuple[str, str]] = ()) -> dict:
    """The named top-level functions and classes of one of their scripts, by their source
    (the script itself parses arguments and opens data at import), executed in ``env``."""
    src = path.read_text()
    tree = ast.parse(src)
    out = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in names:
            code = ast.get_source_segment(src, node)
            for old, new in edits:
                code = code.replace(old, new)
            exec(compile(code, str(path), "exec"), env)
            out[node.name] = env[node.name]
    if set(out) != set(names):
        raise SystemExit(f"{path.name}: not found: {sorted(set(names) - set(out))}")
    return out


def their_hyper(c: dict, size: int) -> dict:
    sizes = [size // c["start_div"] * 2 ** (i // 2) for i in range(6)]
    return {"z_dim": c["z_dim"], "n_keypoints": c["n_parts"], "n_per_kp": c["n_per"], "n_embedding": c["emb_dim"],
            "image_size": size, "single_final": 0, "use_linear": 1, "smaller_init_mask": 0,
            "feature_map_sizes": ",".join(map(str, sizes)),
            "feature_map_channels": f"{c['gen_ch']},{c['gen_ch'] // 2},{c['gen_ch'] // 2},{c['gen_ch'] // 4},"
                                    f"{c['gen_ch'] // 4},{c['emb_dim']}", "class_name": "cub"}


# ----------------------------------------------------------------------------- ours -> theirs


def mapping(c: dict, n_dblocks: int) -> dict[str, list[tuple[str, str]]]:
    """Per net: (our key prefix, their key prefix)."""
    g = [("w_const", "keypoints_embedding.weight"), ("fg_pe.", "x_start."), ("mask_pe.", "mask_start."),
         ("bg_pe.", "bg_start."), ("to_rgb.", "conv."), ("mask_blocks.", "mask_spade_blocks."),
         ("fg_blocks.", "spade_blocks.")]
    for ours, theirs, hidden in (("point_mlp", "gen_keypoints_layer", 4),
                                 ("app_mlp", "gen_keypoints_embedding_noise", 3),
                                 ("bg_mlp", "gen_background_embedding", 3)):
        g += [(f"{ours}.{2 * i}.", f"{theirs}.{i}.model.0.") for i in range(hidden)]
        g.append((f"{ours}.{2 * hidden}.", f"{theirs}.{hidden}."))
    for i in range(6):
        g += [(f"bg_blocks.{i}.norm.", f"adain_blocks.{i}.spade1.norm."),
              (f"bg_blocks.{i}.fc.", f"adain_blocks.{i}.spade1.conv."),
              (f"bg_blocks.{i}.fc_gamma.", f"adain_blocks.{i}.spade1.conv_gamma."),
              (f"bg_blocks.{i}.fc_beta.", f"adain_blocks.{i}.spade1.conv_beta."),
              (f"bg_blocks.{i}.conv.", f"adain_blocks.{i}.conv1.")]
    d = [("fc.", "fc.")]
    for i in range(n_dblocks):
        d += [(f"blocks.{i}.conv_res.", f"conv.{i}.conv_res."), (f"blocks.{i}.net.", f"conv.{i}.net."),
              (f"blocks.{i}.down.", f"conv.{i}.downsample.0.")]
    return {"G": g, "D": d}


def translate(ours: nn.Module, theirs: nn.Module, rules) -> dict[str, str]:
    """our key -> their key; every key on both sides covered once (their grid excepted)."""
    out = {}
    for k in ours.state_dict():
        hits = [(o, t) for o, t in rules if k.startswith(o)]
        if len(hits) != 1:
            raise SystemExit(f"key {k}: {len(hits)} mapping rules")
        o, t = hits[0]
        out[k] = t + k[len(o):]
    missing = set(theirs.state_dict()) - set(out.values()) - {THEIR_GRID}
    if missing:
        raise SystemExit(f"their keys not mapped: {sorted(missing)[:8]}")
    return out


def copy_into(ours: nn.Module, theirs: nn.Module, rules) -> None:
    sd, tsd = ours.state_dict(), theirs.state_dict()
    new = {}
    for k, t in translate(ours, theirs, rules).items():
        if sd[k].shape != tsd[t].shape:
            raise SystemExit(f"{k} -> {t}: shape {tuple(sd[k].shape)} vs {tuple(tsd[t].shape)}")
        new[t] = sd[k]
    missing, unexpected = theirs.load_state_dict(new, strict=False)
    if unexpected or set(missing) - {THEIR_GRID}:
        raise SystemExit(f"load: missing {missing}, unexpected {unexpected}")


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def shapes_under_mapping(ours: nn.Module, theirs: nn.Module, rules) -> dict:
    tsd = theirs.state_dict()
    return {"shapes": {k: list(tsd[t].shape) for k, t in translate(ours, theirs, rules).items()},
            "params": n_params(theirs)}


# ----------------------------------------------------------------------------- recording helpers


def projection(t: torch.Tensor) -> torch.Tensor:
    return torch.sin(torch.arange(t.numel(), dtype=torch.float64) * 0.7 + 0.3).view_as(t)


def summary(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().double()
    return torch.stack([t.sum(), (t * t).sum(), (t * projection(t)).sum()])


class GradTap:
    """Wraps an optimiser: records each parameter's gradient summary under our name."""

    def __init__(self, opt, names: dict, log: dict):
        self.opt, self.names, self.log = opt, names, log

    def step(self):
        for group in self.opt.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self.log[self.names[id(p)]] = summary(p.grad)
        self.opt.step()

    def zero_grad(self, *a, **k):
        self.opt.zero_grad(*a, **k)


GEN_KEYS = ("img", "mask", "init_mask", "points", "keypoints", "fg", "bg", "center_penalty", "area_penalty")


class Recorded(nn.Module):
    """Their generator as their loop calls it (DataParallel on one device: ``.module``);
    records every input dict (the noises it was given) and the outputs of GEN_KEYS."""

    def __init__(self, g: nn.Module):
        super().__init__()
        self.module, self.inputs, self.outputs = g, [], []

    def forward(self, input_dict, **kw):
        self.inputs.append({k: v.detach().clone() for k, v in input_dict.items()})
        out = self.module(input_dict, **kw)
        self.outputs.append({k: out[k].detach().clone() for k in GEN_KEYS})
        return out


def codes_of(inp: dict) -> dict:
    """Their input dict -> our codes (their noise 0 places the points, 1 styles the
    background, 2 the parts; their shift [N, 1, 2])."""
    return {"z_point": inp["input_noise0"].float(), "z_app": inp["input_noise2"].float(),
            "z_bg": inp["input_noise1"].float(), "u_bg": inp["bg_trans"][:, 0].float()}


# ----------------------------------------------------------------------------- the run


def build_ours(c: dict, size: int):
    from fgtool.backends.ganseg import GANSeg, GANSegConfig

    backend = GANSeg(GANSegConfig(**c), size)
    torch.manual_seed(0)
    return backend, backend.build()


def paper_shapes(code: Path) -> dict:
    torch.set_default_dtype(torch.float32)
    c = PAPER
    _, gen, dis = load_models(code, 512, 128, 10, 64, 6)
    _, nets = build_ours(c, SIZE_PAPER)
    theirs = {"G": gen.Generator(their_hyper(c, SIZE_PAPER)), "D": dis.Discriminator({})}
    rules = mapping(c, 6)
    out = {k: shapes_under_mapping(nets[k], theirs[k], rules[k]) for k in theirs}
    from torchvision.models import segmentation

    seg = segmentation.deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=c["n_parts"] + 1)
    out["S"] = {"params": n_params(seg)}  # their Segmenter: this network, pretrained=False
    return out


def small(code: Path) -> dict:
    c = SMALL
    n_dblocks = int(round(math.log2(SIZE))) - 1
    _, gen, dis = load_models(code, c["gen_ch"], c["spade_hidden"], c["margin"], c["ndf"], n_dblocks,
                               c["point_div"])
    torch.set_default_dtype(torch.float32)
    backend, nets = build_ours(c, SIZE)
    hyper = their_hyper(c, SIZE)
    theirs = {"G": gen.Generator(hyper), "D": dis.Discriminator({})}
    rules = mapping(c, n_dblocks)
    with torch.no_grad():
        for k in theirs:
            for p in nets[k].parameters():
                p.copy_(p.half().float())
    weights = {f"{k}.{n}": v.detach().clone().half() for k in theirs for n, v in nets[k].state_dict().items()
               if v.is_floating_point()}
    for k, m in theirs.items():
        nets[k].double()
        copy_into(nets[k], m.double(), rules[k])
        m.train()
    torch.set_default_dtype(torch.float64)
    names = {}
    for k, m in theirs.items():
        tm, tp = translate(nets[k], m, rules[k]), dict(m.named_parameters())
        for n, _ in nets[k].named_parameters():
            names[id(tp[tm[n]])] = f"{k}.{n}"

    g = torch.Generator().manual_seed(3)
    real_u8 = torch.randint(0, 256, (BATCH, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)
    real = real_u8.double() / 127.5 - 1

    generator = Recorded(theirs["G"])
    grads = {"D": {}, "G": {}}
    d_out: list = []
    hook = theirs["D"].register_forward_hook(lambda mod, i, o: d_out.append(o.detach().clone()))
    gp_log: list = []
    args = types.SimpleNamespace(batch_size=BATCH, disc_iters=1, con_penalty_coef=c["w_con"],
                                 area_penalty_coef=c["w_area"])
    env = {"torch": torch, "F": F, "math": math, "args": args, "device": torch.device("cpu"),
           "generator": generator, "discriminator": theirs["D"], "data_loader": [{"img": real}]}
    fns = their_function(code / "train_gan.py", ["gradient_penalty", "train_one_epoch"], env)
    orig_gp = fns["gradient_penalty"]

    def gradient_penalty(images, output, weight=10):
        v = orig_gp(images, output, weight)
        gp_log.append((v / weight).detach().clone())
        return v

    env["gradient_penalty"] = gradient_penalty
    opt_d = torch.optim.Adam(theirs["D"].parameters(), lr=4e-4, betas=(0.5, 0.9))
    opt_g = torch.optim.Adam(filter(lambda p: p.requires_grad, theirs["G"].parameters()), lr=1e-4, betas=(0.5, 0.9))
    env["optim_disc"], env["optim_gen"] = GradTap(opt_d, names, grads["D"]), GradTap(opt_g, names, grads["G"])
    torch.manual_seed(SEED)
    fns["train_one_epoch"]()
    hook.remove()
    if len(generator.inputs) != 2 or len(d_out) != 3 or len(gp_log) != 1:
        raise SystemExit(f"expected 2 G calls, 3 D calls, 1 penalty: {len(generator.inputs)}, {len(d_out)}, "
                         f"{len(gp_log)}")
    d_real, d_fake, g_fake = d_out
    gout_d, gout_g = generator.outputs
    losses = {"D": {"d_real": F.softplus(-d_real).mean(), "d_fake": F.softplus(d_fake).mean(), "gp": gp_log[0]},
              "G": {"g_adv": F.softplus(-g_fake).mean(), "con": gout_g["center_penalty"],
                    "area": gout_g["area_penalty"]}}
    losses["D"]["loss"] = losses["D"]["d_real"] + losses["D"]["d_fake"] + c["w_r1"] * losses["D"]["gp"]
    losses["G"]["loss"] = losses["G"]["g_adv"] + c["w_con"] * losses["G"]["con"] + c["w_area"] * losses["G"]["area"]

    # the segmenter stage: their Dataset (one batch) with G in eval mode, their loss
    seg_env = {"torch": torch, "F": F, "args": args, "device": torch.device("cpu"), "generator": generator,
               "generator_args": {"n_keypoints": c["n_parts"]}}
    sfn = their_function(code / "train_seg.py", ["cal_dice_loss", "cal_loss", "Dataset"], seg_env,
                         [("for _ in range(1000):", "for _ in range(1):")])
    n_in = len(generator.inputs)
    data = sfn["Dataset"]()
    seg_codes = codes_of(generator.inputs[n_in])
    g2 = torch.Generator().manual_seed(5)
    logits = (torch.randn(BATCH, c["n_parts"] + 1, SIZE, SIZE, generator=g2, dtype=torch.float32) * 2).half().double()
    lg = logits.clone().requires_grad_(True)
    seg_loss = sfn["cal_loss"](lg, data.segs)
    seg_loss.backward()
    ce = F.cross_entropy(logits, data.segs)

    def f(x):
        return x.detach().float()

    def gen_out(o: dict) -> dict:
        return {"image": f(o["img"]), "parts": f(o["mask"]), "heat": f(o["init_mask"]), "points": f(o["points"]),
                "centres": f(o["keypoints"]), "fg": f(o["fg"]), "bg": f(o["bg"])}

    return {
        "config": json.dumps({"model": c, "size": SIZE, "batch": BATCH, "seed": SEED}),
        "weights": weights,
        "inputs": {"real_u8": real_u8, "codes_d": codes_of(generator.inputs[0]),
                   "codes_g": codes_of(generator.inputs[1])},
        "generator": {"D": gen_out(gout_d), "G": gen_out(gout_g)},
        "d_outputs": {"real": f(d_real), "fake": f(d_fake), "g_fake": f(g_fake)},
        "losses": {ph: {k: v.detach().reshape(()) for k, v in d.items()} for ph, d in losses.items()},
        "grads": grads,
        "seg": {"codes": seg_codes, "image": f(data.imgs), "labels": data.segs.clone(), "logits": logits.half(),
                "loss": seg_loss.detach().reshape(()), "ce": ce.detach().reshape(()),
                "dice": ((seg_loss - 0.5 * ce) / 0.5).detach().reshape(()), "grad": summary(lg.grad)},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ganseg", type=Path, required=True, help="folder of the authors' GANSeg code (train_gan.py)")
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures")
    a = ap.parse_args()
    torch.set_num_threads(1)
    code = a.ganseg.resolve()
    paper = paper_shapes(code)
    fixture = small(code)
    torch.set_default_dtype(torch.float32)
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / "ganseg_small.pt"
    torch.save(fixture, path)
    (a.out / "ganseg_paper_shapes.json").write_text(json.dumps(paper, indent=1, sort_keys=True) + "\n")
    print(json.dumps({"fixture": str(path), "bytes": path.stat().st_size,
                      "paper_params": {k: v["params"] for k, v in paper.items()},
                      "losses": {ph: {k: round(float(v), 6) for k, v in d.items()}
                                 for ph, d in fixture["losses"].items()},
                      "seg_loss": round(float(fixture["seg"]["loss"]), 6)}))


if __name__ == "__main__":
    main()
