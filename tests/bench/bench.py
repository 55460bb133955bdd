"""`make bench`: training and inference throughput per backend, as JSON on stdout.

Each measurement runs in its own subprocess (clean Accelerate state, honest peak RSS).
Machines are shared and noisy, so every training variant runs ``--rounds`` times, the
variants interleaved (order rotated each round); a round's number is the median of its
timed steps, the report gives the median over rounds, and speed-ups are ratios taken
inside each round (then the median). Per backend and image size (64 and 128 px, batch 16,
the paper architecture):

* ``bf16_channels_last``: fgtool's default fast path (bf16 autocast, NHWC, fused Adam,
  fake batch shared between phases, no per-step host sync);
* ``fp32``: the same code in fp32, NCHW;
* ``reference``: the same networks run the plain way (fp32, NCHW, per-tensor Adam, the
  generator forward once for D and again for G, a host sync per loss part per step, one-hot
  codes tiled into full feature maps), as the "authors-style" baseline step;
* inference: ``sample`` (generate), ``cluster`` (features) and ``segment`` images per second
  at batch 64, fp32 + channels_last as the CLI runs them;
* peak RSS of training at batch 16, 128 px (bf16 variant's process);
* later stages (MixNMatch's stage 2, GANSeg's segmenter, OneGAN's Phase II with reals):
  the fast path timed once from the step where the stage starts (``STAGES``);
* ``tiny``: fgtool/recipes/tiny.toml, fp32 and bf16 (a smoke number for CI-sized machines).

Usage: python tests/bench/bench.py [--models finegan,c3gan] [--sizes 64,128] [--rounds 3]
       [--iters 3] [--threads 1] [--quick] [--compile] [--out bench.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PAPER = {"finegan": ["model.n_child=200", "model.n_parent=20", "model.ngf=64", "model.ndf=64", "model.z_dim=100"],
         "mixnmatch": ["model.n_child=200", "model.n_parent=20", "model.ngf=64", "model.ndf=64",
                       "model.z_dim=100"],
         "c3gan": ["model.n_classes=200", "model.overcluster=2", "model.ngf=16", "model.ndf=64", "model.z_dim=64"],
         "ganseg": [],  # the defaults are the paper's (K = 8, DeepLabV3-ResNet50 segmenter)
         "onegan": []}

# Later training stages, timed once each (fgtool's fast path, no ratio): the config key whose
# step starts the stage, and the settings that switch it on. The child sets the trainer's step
# there before its warm-up.
STAGES = {"mixnmatch": {"stage2": ("stage2_start", [])},
          "ganseg": {"segmenter": ("seg_start", []),
                     # real photos, GrabCut-refined pseudo-labels, from the paper's seg_start
                     "self_training": ("self_start", ["model.self_start=30000"])},
          "onegan": {"phase2_reals": ("real_start", [])}}

VARIANTS = {
    "bf16_channels_last": ["train.precision=bf16", "train.channels_last=true"],
    "fp32": ["train.precision=no", "train.channels_last=false"],
    "reference": ["train.precision=no", "train.channels_last=false", "train.fused_adam=false"],
}


def _reference(tr) -> callable:
    """The plain way: every phase runs the generator again (no fake shared between phases), a
    host sync per loss part, one-hot codes tiled into full maps. Works for any backend: the
    per-iteration cache a backend shares between phases is emptied before each phase's loss."""
    from fgtool.nn.blocks import CodeConv

    orig = tr.backend.loss

    def no_shared_fake(phase, nets, batch, step):
        batch["cache"] = {}
        return orig(phase, nets, batch, step)

    tr.backend.loss = no_shared_fake
    CodeConv.naive = True

    def step(b):
        parts = tr.train_step({**b})
        return {k: v.item() for k, v in parts.items()}

    return step


def child(args) -> dict:
    """Runs inside the subprocess: time ``iters`` training steps after warm-up (or inference)."""
    import resource

    import torch

    from fgtool import api
    from fgtool.train.trainer import Trainer

    torch.set_num_threads(args.threads)
    sets = list(args.set or [])
    cfg = api.resolve_config(args.model, "/nonexistent", "tiny" if args.tiny else None,
                             sets)
    s, n = cfg.data.size, cfg.train.batch_size
    tr = Trainer(cfg, "/tmp/fgtool-bench", progress=False)
    if args.at_key:
        tr.step = int(getattr(cfg.model_cfg, args.at_key))  # time a later stage's phases
    g = torch.Generator().manual_seed(0)
    if args.infer:
        return infer(tr, s, g, args.iters)
    fg = torch.zeros(n, 1, s, s)
    fg[:, :, s // 4: 3 * s // 4, s // 4: 3 * s // 4] = 1

    def batch():
        x = torch.rand(n, 3, s, s, generator=g) * 2 - 1
        if cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return {"image": x, "fg": fg}

    step = _reference(tr) if args.reference else tr.train_step
    t_first = time.perf_counter()
    for _ in range(args.warmup):
        step(batch())
    res = {"warmup_s": round(time.perf_counter() - t_first, 3)}
    times = []
    for _ in range(args.iters):
        b = batch()
        t = time.perf_counter()
        out = step(b)
        if not args.reference:
            next(iter(out.values())).item()  # finish the step before stopping the clock
        times.append(time.perf_counter() - t)
    res.update(sec_per_it=statistics.median(times), sec_per_it_all=[round(x, 4) for x in times])
    res["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    res["params_G"] = sum(p.numel() for p in tr.nets["G"].parameters()) if "G" in tr.nets else None
    return res


def infer(tr, s: int, g, reps: int, bs: int = 64) -> dict:
    """Images per second of the inference paths, fp32 + channels_last, eval mode (as the CLI)."""
    import torch

    nets = tr.inference_nets()
    for m in nets.values():
        m.eval()
    be, res = tr.backend, {}
    x = (torch.rand(bs, 3, s, s, generator=g) * 2 - 1).contiguous(memory_format=torch.channels_last)
    jobs = {"sample": lambda: be.generate(nets, be.sample_codes(bs, g))}
    caps = be.capabilities()
    if "cluster" in caps:
        jobs["cluster"] = lambda: be.cluster_features(nets, x)
    if "segment" in caps:
        jobs["segment"] = lambda: be.segment(nets, x)
    with torch.no_grad():
        for name, fn in jobs.items():
            fn()  # warm-up
            ts = []
            for _ in range(max(reps, 1)):
                t = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t)
            res[f"{name}_img_per_s"] = round(bs / statistics.median(ts), 2)
    return res


def run_child(model: str, sets: list[str], tiny=False, reference=False, infer=False, iters=5, warmup=2,
              threads=1, at_key: str | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", "--model", model, "--iters", str(iters), "--warmup", str(warmup),
           "--threads", str(threads)]
    if at_key:
        cmd += ["--at-key", at_key]
    for s in sets:
        cmd += ["--set", s]
    for flag, on in (("--tiny", tiny), ("--reference", reference), ("--infer", infer)):
        if on:
            cmd.append(flag)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def _med(xs):
    xs = [x for x in xs if x is not None]
    return round(statistics.median(xs), 4) if xs else None


def bench_size(model: str, size: int, args, log) -> dict:
    """All training variants at one size, interleaved over rounds; ratios inside each round."""
    paper = [*PAPER.get(model, []), "train.batch_size=16", f"data.size={size}"]
    if args.compile:
        VARIANTS["bf16_compiled"] = [*VARIANTS["bf16_channels_last"], "train.compile=true"]
    names = list(VARIANTS)
    runs: dict[str, list[dict]] = {k: [] for k in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for v in order:
            res = run_child(model, [*paper, *VARIANTS[v]], reference=v == "reference", iters=args.iters,
                            warmup=args.warmup, threads=args.threads)
            runs[v].append(res)
            log(f"{model} {size}px round {r + 1}/{args.rounds} {v}: "
                f"{res.get('sec_per_it', res.get('error'))}")
    out: dict = {}
    for v, rs in runs.items():
        errs = [x["error"] for x in rs if "error" in x]
        if errs:
            out[v] = {"error": errs[0]}
            continue
        spi = _med([x["sec_per_it"] for x in rs])
        out[v] = {"sec_per_it": spi, "it_per_s": round(1 / spi, 4), "img_per_s": round(16 / spi, 3),
                  "sec_per_it_rounds": [round(x["sec_per_it"], 4) for x in rs],
                  "peak_rss_mb": max(x["peak_rss_mb"] for x in rs), "params_G": rs[0]["params_G"]}

    def ratio(a, b):  # how many times faster a is than b, per round, median
        if "error" in out.get(a, {"error": 1}) or "error" in out.get(b, {"error": 1}):
            return None
        return _med([y["sec_per_it"] / x["sec_per_it"] for x, y in zip(runs[a], runs[b])])

    out["speedup_vs_reference"] = ratio("bf16_channels_last", "reference")
    out["speedup_fp32_vs_reference"] = ratio("fp32", "reference")
    out["speedup_bf16_vs_fp32"] = ratio("bf16_channels_last", "fp32")
    if args.compile:
        out["speedup_compiled_vs_eager"] = ratio("bf16_compiled", "bf16_channels_last")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--set", action="append", help=argparse.SUPPRESS)
    ap.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--reference", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--infer", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--at-key", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--models", default="finegan,c3gan,mixnmatch,ganseg,onegan")
    ap.add_argument("--sizes", default="64,128")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved repeats of every training variant")
    ap.add_argument("--iters", type=int, default=3, help="timed steps per run (after --warmup)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 gives the steadiest numbers)")
    ap.add_argument("--compile", action="store_true", help="also time train.compile=true")
    ap.add_argument("--quick", action="store_true", help="64 px only, one round, 2 timed steps")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    if args.quick:
        args.sizes, args.rounds, args.iters = "64", 1, 2
    sizes = [int(x) for x in args.sizes.split(",")]

    def log(msg):
        print(f"[bench] {msg}", file=sys.stderr, flush=True)

    t0 = time.time()
    report = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "threads": args.threads,
                          "platform": platform.platform()},
              "protocol": {"batch": 16, "rounds": args.rounds, "timed_steps": args.iters, "warmup": args.warmup,
                           "statistic": "median over rounds of each run's median step; ratios per round"},
              "models": {}}
    for model in args.models.split(","):
        r: dict = {}
        for size in sizes:
            r[f"train_{size}px"] = bench_size(model, size, args, log)
            for stage, (key, on) in STAGES.get(model, {}).items():
                res = run_child(model, [*PAPER.get(model, []), *on, "train.batch_size=16", f"data.size={size}",
                                        *VARIANTS["bf16_channels_last"]], iters=args.iters, warmup=args.warmup,
                                threads=args.threads, at_key=key)
                r[f"train_{size}px_{stage}"] = ({"error": res["error"]} if "error" in res else
                                                {"sec_per_it": round(res["sec_per_it"], 4),
                                                 "img_per_s": round(16 / res["sec_per_it"], 3),
                                                 "peak_rss_mb": res["peak_rss_mb"], "from_key": key})
                log(f"{model} {size}px stage {stage}: {r[f'train_{size}px_{stage}']}")
            r[f"infer_{size}px"] = run_child(model, [*PAPER.get(model, []), f"data.size={size}",
                                                     "train.channels_last=true"], infer=True, iters=3,
                                             threads=args.threads)
        big = r.get(f"train_{max(sizes)}px", {}).get("bf16_channels_last", {})
        r["peak_rss_mb_train_batch16"] = {"size": max(sizes), "mb": big.get("peak_rss_mb")}
        tiny = {}
        for prec in ("no", "bf16"):
            res = run_child(model, [f"train.precision={prec}"], tiny=True, iters=10, warmup=2, threads=args.threads)
            tiny["fp32" if prec == "no" else prec] = {k: res[k] for k in ("sec_per_it", "error") if k in res}
        r["tiny"] = tiny
        report["models"][model] = r
        log(f"{model} done ({time.time() - t0:.0f} s)")
    report["wall_s"] = round(time.time() - t0, 1)
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
