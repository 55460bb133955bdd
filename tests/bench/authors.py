"""fgtool's training step against the authors' own, timed on this machine, as JSON.

Their code is never part of this repository. Point the script at local copies of it:

    python tests/bench/authors.py --finegan /path/to/finegan/code --mixnmatch /path/to/MixNMatch/code \
        --c3gan /path/to/c3-gan --ganseg /path/to/GANSeg --iters 4 --out authors.json

Their modules load as the reference fixtures load them (tests/reference/make_*fixtures.py,
whose loaders this script imports), with only the edits Python 3 on a CPU needs: no
``.cuda()`` or CUDA device, tabs expanded as Python 2 read them, integer division where
Python 2 divided integers; GANSeg's synchronised BatchNorm is ``nn.BatchNorm2d`` (the same
layer on one device). Their nets are built with their own ``weights_init`` and optimisers.
One timed iteration of theirs is their training loop's body, called as their loop calls it:

- FineGAN: G forward, their ``train_Dnet(0)``, ``train_Dnet(2)``, ``train_Gnet``, their EMA;
- MixNMatch (stage 1): their ``prepare_data``, E and G forwards, ``train_Dnet(0)``,
  ``train_Dnet(2)``, ``train_BD``, ``train_EG``, their EMA;
- C3-GAN: codes, G, ``train_D``; new codes, G again, ``train_G``;
- GANSeg (GAN stage): their ``train_one_epoch`` itself, over a loader that notes the time
  at each batch it hands out (their gradient penalty every 16th batch and their G penalties
  every 2nd fall on the same steps as fgtool's).

fgtool's iteration is ``Trainer.train_step`` with the paper recipe (the recipe <model>-cub:
the architecture tests/reference/test_reference*.py prove equal to theirs, and the authors' options),
at the same batch and size, in fp32 (``train.precision=no``) and at fgtool's default
precision (the default of ``train.precision``, not the recipe's). Both sides get random
images of the same shapes (and boxes, for FineGAN and MixNMatch).

Each side runs in a process of its own, all of a model's sides alive at once: a fresh
interpreter per side, so that one side's allocator state, thread pools or caches cannot
slow or speed the other, and so that the peak resident memory (``ru_maxrss``) is that
side's alone. The parent orders one step at a time, A B C, then B C A and so on, so that a
slow spell on a shared machine falls on neighbouring steps of every side: a ratio is taken
inside each round and the report gives the median over rounds. One torch thread per side
by default.

``--small`` runs every model at tiny widths (the fixtures' small settings, batch 2): a
smoke test of the harness in seconds, not a benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REF = ROOT / "tests" / "reference"
MODELS = ("finegan", "mixnmatch", "c3gan", "ganseg")


# ----------------------------------------------------------------------------- helpers


class Gate:
    """The child's side of the protocol: the parent writes ``step`` or ``end`` on a line; the
    child answers each step with its seconds, on a line."""

    def __init__(self):
        self.t0 = None

    def wait(self) -> bool:
        """Report the step that just ended (if any), then wait for the next order."""
        if self.t0 is not None:
            print(json.dumps({"sec": time.perf_counter() - self.t0}), flush=True)
        line = sys.stdin.readline().strip()
        self.t0 = time.perf_counter() if line == "step" else None
        return line == "step"


class GatedLoader:
    """One batch, handed out each time the parent orders a step: their own loop runs inside
    it, and each of their iterations is timed from one request for a batch to the next."""

    def __init__(self, batch, gate: Gate, n: int):
        self.batch, self.gate, self.n = batch, gate, n

    def __len__(self):
        return self.n

    def __iter__(self):
        while self.gate.wait():
            yield self.batch


def _one_hot(n: int, k: int):
    import torch

    return torch.nn.functional.one_hot(torch.randint(0, k, (n,)), k).float()


def _boxes(n: int, side: int):
    """Random boxes (x1, y1, x2, y2) inside a ``side`` px image, a quarter to all of it."""
    import torch

    lo = torch.rand(n, 2) * side * 0.4
    hi = lo + side * (0.25 + torch.rand(n, 2) * 0.35)
    return torch.cat([lo, hi.clamp(max=side)], 1)


def _ema(avg, params):
    """Their ``avg_p.mul_(0.999).add_(0.001, p.data)``, in the argument order torch reads now."""
    for a, p in zip(avg, params):
        a.mul_(0.999).add_(p.data, alpha=0.001)


# ----------------------------------------------------------------------------- their steps


def their_finegan(code: Path, small: bool, batch: int, size: int):
    import make_fixtures as mf
    import torch

    cfg, model, trainer = mf.load_finegan(code)
    c = mf.SMALL if small else mf.PAPER
    mf.set_config(cfg, c, batch)
    netG, netsD = model.G_NET(), [model.D_NET(0), model.D_NET(1), model.D_NET(2)]
    for m in (netG, *netsD):
        m.apply(trainer.weights_init)
    t = trainer.FineGAN_trainer.__new__(trainer.FineGAN_trainer)
    t.netG, t.netsD, t.num_Ds = netG, netsD, 3
    t.optimizerG, t.optimizersD = mf._their_optimizers(trainer, t)
    t.criterion, t.criterion_one = torch.nn.BCELoss(reduction="none"), torch.nn.BCELoss()
    t.criterion_class = torch.nn.CrossEntropyLoss()
    t.patch_stride, t.n_out, t.recp_field = 4.0, 24, 34
    t.summary_writer = sys.modules["tensorboardX"].FileWriter()
    avg = [p.data.clone() for p in netG.parameters()]
    noise = torch.FloatTensor(batch, c["z_dim"])
    full_side = 126  # their full view: 126 px (the background D's patches tile it)

    def step(count: int):
        t.real_fimgs = [torch.rand(batch, 3, full_side, full_side) * 2 - 1]
        t.real_cimgs = [torch.rand(batch, 3, size, size) * 2 - 1]
        box = _boxes(batch, full_side)
        t.warped_bbox = [box[:, 1], box[:, 0], box[:, 3], box[:, 2]]  # their [y1, x1, y2, x2]
        t.c_code = _one_hot(batch, c["n_child"])
        noise.data.normal_(0, 1)
        t.fake_imgs, t.fg_imgs, t.mk_imgs, t.fg_mk = t.netG(noise, t.c_code)
        t.p_code = trainer.child_to_parent(t.c_code, c["n_child"], c["n_parent"])
        t.train_Dnet(0, count)
        t.train_Dnet(2, count)
        t.train_Gnet(count)
        _ema(avg, netG.parameters())

    return step


def their_mixnmatch(code: Path, small: bool, batch: int, size: int):
    import make_fixtures as mf
    import torch

    c = mf.MNM_SMALL if small else mf.MNM_PAPER
    cfg, model, utils, train, _ = mf.load_mixnmatch(code, c["enc_width"], c["pair_width"], c["pair_hidden"])
    mf.mnm_set_config(cfg, c, batch)
    nets = mf.mnm_theirs(model, c)
    for k in ("G", "Dbg", "Dp", "Dc", "E"):  # their load_network: weights_init on all but Bi_Dis
        nets[k].apply(utils.weights_init)
    t = train.Trainer.__new__(train.Trainer)
    t.batch_size, t.patch_stride, t.n_out, t.recp_field = batch, 4.0, 24, 34
    t.netG, t.encoder, t.BD = nets["G"], nets["E"], nets["Dpair"]
    t.netsD = [nets["Dbg"], nets["Dp"], nets["Dc"]]

    class _Wrap:  # their optimizers reach the child D's code head through .module (DataParallel)
        def __init__(self, m):
            self.module = m

        def parameters(self):
            return self.module.parameters()

    t.optimizersD, t.optimizerBD, t.optimizerGE = train.define_optimizers(
        t.netG, [t.netsD[0], t.netsD[1], _Wrap(t.netsD[2])], t.BD, t.encoder)
    t.RF_loss_un, t.RF_loss = torch.nn.BCELoss(reduction="none"), torch.nn.BCELoss()
    t.CE, t.L1 = train.CrossEntropy(), torch.nn.L1Loss()
    avg = [p.data.clone() for p in t.netG.parameters()]

    def step(count: int):
        box = _boxes(batch, 126)
        data = (torch.rand(batch, 3, 126, 126) * 2 - 1, torch.rand(batch, 3, size, size) * 2 - 1,
                _one_hot(batch, c["n_child"]), None, [box[:, 1], box[:, 0], box[:, 3], box[:, 2]])
        (t.real_img126, t.real_img, t.real_z, t.real_b, t.real_p, t.real_c,
         t.warped_bbox) = t.prepare_data(data)
        t.fake_z, t.fake_b, t.fake_p, t.fake_c = t.encoder(t.real_img, "softmax")
        t.fake_imgs, t.fg_imgs, t.mk_imgs, t.fg_mk = t.netG(t.real_z, t.real_c, t.real_p, t.real_b, "code")
        t.train_Dnet(0)
        t.train_Dnet(2)
        t.train_BD()
        t.train_EG()
        _ema(avg, t.netG.parameters())

    return step


def their_c3gan(code: Path, small: bool, batch: int, size: int):
    import make_c3gan_fixtures as mc
    import torch

    c = mc.SMALL if small else mc.PAPER
    cfg, model, utils, train = mc.load_c3gan(code, c if small else None)
    mc.set_config(cfg, c, batch)
    k = c["n_classes"] * c["overcluster"]
    t = train.Trainer.__new__(train.Trainer)
    t.bs, t.num_gt_cls, t.over, t.num_cls, t.temp = batch, c["n_classes"], c["overcluster"], k, 0.1
    (t.min_s, t.max_s), (t.min_r, t.max_r), (t.min_t, t.max_t) = mc.STRONG
    t.netG, t.netD = model.Generator(k), model.Discriminator(k, c["ndf"])
    t.optimizerG, t.optimizerD = utils.define_optimizers(t.netG, t.netD)  # applies their weights_init
    t.CE, t.eye, t.steps = torch.nn.CrossEntropyLoss(), torch.eye(k), 0
    t.summary_writer = types.SimpleNamespace(add_scalar=lambda *a, **kw: None)

    def step(count: int):  # the body of their Trainer.train
        data = (torch.rand(batch, 3, size, size) * 2 - 1, torch.rand(batch, 3, size, size) * 2 - 1)
        t.real_img, t.aug_img = t.prepare_data(data)
        rand_z, rand_cz, t.rand_c = t.prepare_code()
        _, t.fg_mask, t.fg_img, t.fake_img = t.netG(rand_z, rand_cz, t.rand_c, t.random_grid(t.real_img.size()))
        t.train_D()
        rand_z, rand_cz, t.rand_c = t.prepare_code()
        _, t.fg_mask, t.fg_img, t.fake_img = t.netG(rand_z, rand_cz, t.rand_c, t.random_grid(t.real_img.size()))
        t.train_G()
        t.steps += 1

    return step


def their_ganseg(code: Path, small: bool, batch: int, size: int, gate: Gate, n_steps: int) -> None:
    """Runs their ``train_one_epoch`` over a loader that hands out a batch at each order."""
    import math

    import make_ganseg_fixtures as mg
    import torch
    import torch.nn.functional as F
    from torch import nn

    c = mg.SMALL if small else mg.PAPER
    n_blocks = int(round(math.log2(size))) - 1
    if small:
        _, gen, dis = mg.load_models(code, c["gen_ch"], c["spade_hidden"], c["margin"], c["ndf"], n_blocks,
                                     c["point_div"])
    else:
        _, gen, dis = mg.load_models(code, 512, 128, 10, 64, n_blocks)

    class _Parallel(nn.Module):  # their loop reaches the generator through .module (DataParallel)
        def __init__(self, g):
            super().__init__()
            self.module = g

        def forward(self, *a, **kw):
            return self.module(*a, **kw)

    G, D = gen.Generator(mg.their_hyper(c, size)), dis.Discriminator({})
    loader = GatedLoader({"img": torch.rand(batch, 3, size, size) * 2 - 1}, gate, n_steps)
    args = types.SimpleNamespace(batch_size=batch, disc_iters=1, con_penalty_coef=10.0, area_penalty_coef=1.0)
    env = {"torch": torch, "F": F, "math": math, "args": args, "device": torch.device("cpu"),
           "generator": _Parallel(G), "discriminator": D, "data_loader": loader,
           "optim_disc": torch.optim.Adam(D.parameters(), lr=4e-4, betas=(0.5, 0.9)),
           "optim_gen": torch.optim.Adam(filter(lambda p: p.requires_grad, G.parameters()), lr=1e-4,
                                         betas=(0.5, 0.9))}
    fns = mg.their_function(code / "train_gan.py", ["gradient_penalty", "train_one_epoch"], env)
    print(json.dumps({"ready": True}), flush=True)
    fns["train_one_epoch"]()


# ----------------------------------------------------------------------------- fgtool's step


SMALL_SETS = {  # the fixtures' small settings, as fgtool options
    "finegan": "make_fixtures:SMALL", "mixnmatch": "make_fixtures:MNM_SMALL",
    "c3gan": "make_c3gan_fixtures:SMALL", "ganseg": "make_ganseg_fixtures:SMALL"}


def fgtool_step(model: str, small: bool, batch: int, size: int, precision: str):
    import importlib
    import tempfile

    import torch

    from fgtool.commands.train import resolve_config
    from fgtool.train.trainer import Trainer

    sets = [f"train.batch_size={batch}", f"data.size={size}", f"train.precision={precision}"]
    if small:
        mod, name = SMALL_SETS[model].split(":")
        for k, v in getattr(importlib.import_module(mod), name).items():
            if model == "mixnmatch" or k not in ("enc_width", "pair_width", "pair_hidden"):
                sets.append(f"model.{k}={json.dumps(v)}")
    cfg = resolve_config(model, "/nonexistent", f"{model}-cub", sets)
    tr = Trainer(cfg, tempfile.mkdtemp(prefix="fgtool-authors-bench-"), progress=False)
    cl = cfg.train.channels_last

    def image():
        x = torch.rand(batch, 3, size, size) * 2 - 1
        return x.contiguous(memory_format=torch.channels_last) if cl else x

    def step(count: int):
        b = {"image": image()}
        if model in ("finegan", "mixnmatch"):
            b.update(full=image(), box=_boxes(batch, size))
        out = tr.train_step(b)
        next(iter(out.values())).item()  # the step has finished

    info = {"precision": cfg.train.precision, "channels_last": cl,
            "params_G": sum(p.numel() for p in tr.nets["G"].parameters())}
    return step, info


# ----------------------------------------------------------------------------- one measurement


def child(a) -> None:
    """One side, alive for the whole run: builds its nets, says so, then runs one step at
    each order of the parent; at ``end`` it reports its peak resident memory."""
    import resource

    import torch

    sys.path.insert(0, str(REF))
    sys.path.insert(0, str(ROOT))
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    random.seed(0)
    info: dict = {}
    gate = Gate()
    code = Path(a.code).resolve() if a.code else None
    if a.side == "authors" and a.model == "ganseg":
        their_ganseg(code, a.small, a.batch, a.size, gate, a.steps)
    else:
        if a.side == "authors":
            step = {"finegan": their_finegan, "mixnmatch": their_mixnmatch,
                    "c3gan": their_c3gan}[a.model](code, a.small, a.batch, a.size)
        else:
            step, info = fgtool_step(a.model, a.small, a.batch, a.size, a.side)
        print(json.dumps({"ready": True}), flush=True)
        i = 0
        while gate.wait():
            i += 1
            step(i)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mb": round(rss, 1), **info}), flush=True)


class Side:
    """A child process of one side, driven a step at a time."""

    def __init__(self, a, model: str, side: str, code: str | None):
        cmd = [sys.executable, __file__, "--child", "--model", model, "--side", side, "--batch", str(a.batch),
               "--size", str(a.size_of[model]), "--threads", str(a.threads),
               "--steps", str(a.warmup + a.iters)]
        if code:
            cmd += ["--code", code]
        if a.small:
            cmd.append("--small")
        env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "PYTHONPATH": str(ROOT)}
        self.name, self.err = side, None
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env=env, cwd=ROOT)

    def _read(self) -> dict:
        while True:
            line = self.p.stdout.readline()
            if not line:
                self.p.wait()
                raise RuntimeError("\n".join(self.p.stderr.read().strip().splitlines()[-3:]) or "exited")
            if line.startswith("{"):
                return json.loads(line)

    def ready(self) -> None:
        self._read()

    def order(self, what: str) -> dict:
        self.p.stdin.write(what + "\n")
        self.p.stdin.flush()
        return self._read()

    def end(self) -> dict:
        out = self.order("end")
        self.p.wait()
        return out


# ----------------------------------------------------------------------------- the report


def cpu_info() -> dict:
    flags, name = [], platform.processor()
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name") and name in ("", "x86_64"):
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                break
    except OSError:
        pass
    keep = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
            "amx_bf16", "amx_int8", "avx_vnni")
    return {"name": name, "cpus": os.cpu_count(), "features": [f for f in keep if f in flags]}


def _command() -> str:
    """This run's command line, with the authors' folders as placeholders."""
    args, out = sys.argv[1:], []
    for i, x in enumerate(args):
        out.append(f"<{args[i - 1][2:]} code>" if i and args[i - 1][2:] in MODELS else x)
    return " ".join(["python", "tests/bench/authors.py", *out])


def bench_model(a, model: str, code: str, log) -> dict:
    """Every side alive at once, one step each per round, the order rotated each round."""
    names = ["authors", *a.precisions]
    sides = {s: Side(a, model, s, code if s == "authors" else None) for s in names}
    out: dict = {"batch": a.batch, "size": a.size_of[model]}
    steps: dict[str, list[float]] = {s: [] for s in names}
    try:
        for sd in sides.values():
            sd.ready()
        for r in range(a.warmup + a.iters):
            order = names[r % len(names):] + names[: r % len(names)]
            for s in order:
                steps[s].append(sides[s].order("step")["sec"])
            log(f"{model} round {r + 1}/{a.warmup + a.iters}" + (" (warm-up)" if r < a.warmup else "") + ": "
                + ", ".join(f"{s} {steps[s][-1]:.2f} s" for s in names))
        ends = {s: sd.end() for s, sd in sides.items()}
    except RuntimeError as e:
        for sd in sides.values():
            sd.p.kill()
        return {**out, "error": str(e)}
    for s in names:
        timed = steps[s][a.warmup:]
        out[s] = {"sec_per_it": round(statistics.median(timed), 4), "steps_s": [round(x, 4) for x in steps[s]],
                  **ends[s]}
    for s in a.precisions:
        pairs = list(zip(steps["authors"][a.warmup:], steps[s][a.warmup:]))
        out[f"authors_over_{s}"] = round(statistics.median([x / y for x, y in pairs]), 3)
        out[f"memory_{s}_over_authors"] = round(out[s]["peak_rss_mb"] / out["authors"]["peak_rss_mb"], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for m in MODELS:
        ap.add_argument(f"--{m}", default=None, help=f"folder of the authors' {m} code")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--ganseg-size", type=int, default=None, help="GANSeg's size (default: --size)")
    ap.add_argument("--iters", type=int, default=4, help="timed rounds (one step of every side each)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--precisions", default="no,bf16,default",
                    help="fgtool's sides: train.precision values; 'default' = train.precision's default")
    ap.add_argument("--small", action="store_true", help="tiny widths, batch 2: a smoke test, not a benchmark")
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--side", help=argparse.SUPPRESS)
    ap.add_argument("--code", help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a)
        return
    if a.small:
        a.batch = 2
    sys.path.insert(0, str(ROOT))
    from fgtool.config import TrainConfig
    from fgtool.train.precision import resolve

    default = TrainConfig().precision
    resolved = resolve(default)[0]  # auto: bf16 where the CPU computes it natively
    a.precisions = [resolved if p == "default" else p for p in a.precisions.split(",")]
    a.precisions = list(dict.fromkeys(a.precisions))  # once, when the default is one of the others
    a.size_of = {m: a.size for m in MODELS}
    if a.ganseg_size:
        a.size_of["ganseg"] = a.ganseg_size
    codes = {m: getattr(a, m) for m in MODELS if getattr(a, m)}
    if not codes:
        ap.error("give the folder of at least one authors' code: --finegan, --mixnmatch, --c3gan, --ganseg")

    def log(msg):
        print(f"[authors] {msg}", file=sys.stderr, flush=True)

    t0 = time.time()
    report = {"machine": {**cpu_info(), "python": platform.python_version(), "threads": a.threads},
              "protocol": {"batch": a.batch, "timed_rounds": a.iters, "warmup_rounds": a.warmup,
                           "small": a.small, "default_precision": f"{default} = {resolved}",
                           "statistic": "median step; ratios authors / fgtool per round, then the median"},
              "command": _command(), "models": {}}
    import torch

    report["machine"]["torch"] = torch.__version__
    for m, code in codes.items():
        report["models"][m] = bench_model(a, m, str(Path(code).resolve()), log)
    report["wall_s"] = round(time.time() - t0, 1)
    text = json.dumps(report, indent=2)
    if a.out:
        Path(a.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
