"""`make bench`: training and inference throughput per backend, as JSON on stdout.

Each measurement runs in its own subprocess (clean Accelerate state, honest peak RSS).
Machines are shared and noisy, so compare variants inside one run as ratios, and read
medians. Configs:

* ``paper``: the paper architecture at batch 16 and 64 px (FineGAN: ngf=ndf=64, Nc=200, Np=20;
  C3-GAN: 512 -> 16 channel generators, ndf=64, K = 200 x 2);
* ``tiny``: recipes/tiny.toml;
* ``reference``: the paper architecture run the plain way (fp32, NCHW, generator forward
  once for D and again for G, a host sync per loss part per step, one-hot codes tiled
  into full feature maps), as a baseline step;
* peak RSS of training at batch 16 and 128 px.

Usage: python tests/bench/bench.py [--models finegan] [--iters 5] [--quick] [--out bench.json]
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
         "c3gan": ["model.n_classes=200", "model.overcluster=2", "model.ngf=16", "model.ndf=64", "model.z_dim=64"]}


def child(args) -> dict:
    """Runs inside the subprocess: time ``iters`` training steps after warm-up."""
    import resource

    import torch

    from fgtool import api
    from fgtool.train.trainer import Trainer

    torch.set_num_threads(args.threads)
    sets = list(args.set or [])
    cfg = api.resolve_config(args.model, "/nonexistent", str(ROOT / "recipes" / "tiny.toml") if args.tiny else None,
                             sets)
    s, n = cfg.data.size, cfg.train.batch_size
    tr = Trainer(cfg, "/tmp/fgtool-bench", progress=False)
    g = torch.Generator().manual_seed(0)
    fg = torch.zeros(n, 1, s, s)
    fg[:, :, s // 4: 3 * s // 4, s // 4: 3 * s // 4] = 1

    def batch():
        x = torch.rand(n, 3, s, s, generator=g) * 2 - 1
        if cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return {"image": x, "fg": fg}

    step = tr.train_step
    if args.reference:  # the plain way: no cached fake (G runs again), a sync per loss part
        def step(b):
            parts = tr.train_step({**b})
            return {k: v.item() for k, v in parts.items()}

        orig = tr.backend._fake

        def no_cache(nets, b, grad):
            b.pop("cache", None)
            b["cache"] = {}
            return orig(nets, b, grad)

        tr.backend._fake = no_cache
        from fgtool.nn.blocks import CodeConv

        CodeConv.naive = True  # the one-hot code tiled to a full feature map, as the authors do
    for _ in range(args.warmup):
        step(batch())
    times = []
    for _ in range(args.iters):
        b = batch()
        t = time.perf_counter()
        out = step(b)
        if not args.reference:
            next(iter(out.values())).item()  # finish the step before stopping the clock
        times.append(time.perf_counter() - t)
    res = {"sec_per_it_median": statistics.median(times), "sec_per_it_all": [round(x, 4) for x in times]}
    res["it_per_s"] = 1.0 / res["sec_per_it_median"]
    res["img_per_s"] = n * res["it_per_s"]
    if args.sample:
        nets = tr.inference_nets()
        for m in nets.values():
            m.eval()
        with torch.no_grad():
            codes = tr.backend.sample_codes(64, g)
            tr.backend.generate(nets, codes)
            t = time.perf_counter()
            for _ in range(3):
                tr.backend.generate(nets, tr.backend.sample_codes(64, g))
            res["sample_img_per_s"] = 3 * 64 / (time.perf_counter() - t)
            if "cluster" in tr.backend.capabilities():
                x = torch.rand(64, 3, s, s) * 2 - 1
                tr.backend.cluster_features(nets, x)
                t = time.perf_counter()
                for _ in range(3):
                    tr.backend.cluster_features(nets, x)
                res["cluster_feature_img_per_s"] = 3 * 64 / (time.perf_counter() - t)
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res["params_G"] = sum(p.numel() for p in tr.nets["G"].parameters()) if "G" in tr.nets else None
    return res


def run_child(model: str, sets: list[str], tiny=False, reference=False, sample=False, iters=5, warmup=2,
              threads=2) -> dict:
    cmd = [sys.executable, __file__, "--child", "--model", model, "--iters", str(iters), "--warmup", str(warmup),
           "--threads", str(threads)]
    for s in sets:
        cmd += ["--set", s]
    if tiny:
        cmd.append("--tiny")
    if reference:
        cmd.append("--reference")
    if sample:
        cmd.append("--sample")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--model", default=None)
    ap.add_argument("--models", default="finegan,c3gan")
    ap.add_argument("--set", action="append")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--reference", action="store_true")
    ap.add_argument("--sample", action="store_true")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="fewer iterations, skip the 128 px memory run")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    iters = 3 if args.quick else args.iters
    warm = 1 if args.quick else args.warmup
    report = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "threads": args.threads},
              "protocol": "medians of timed steps after warm-up; each config in its own process", "models": {}}
    for model in args.models.split(","):
        paper = [*PAPER.get(model, []), "train.batch_size=16", "data.size=64"]
        r = {}
        r["paper_bf16_channels_last"] = run_child(model, [*paper, "train.precision=bf16", "train.channels_last=true"],
                                                  iters=iters, warmup=warm, sample=True, threads=args.threads)
        r["paper_fp32"] = run_child(model, [*paper, "train.precision=no", "train.channels_last=false"],
                                    iters=iters, warmup=warm, threads=args.threads)
        r["reference_fp32_plain"] = run_child(model, [*paper, "train.precision=no", "train.channels_last=false"],
                                              reference=True, iters=iters, warmup=warm, threads=args.threads)
        r["tiny"] = run_child(model, [], tiny=True, iters=max(iters, 10), sample=True, threads=args.threads)
        r["tiny_bf16"] = run_child(model, ["train.precision=bf16"], tiny=True, iters=max(iters, 10),
                                   threads=args.threads)
        fast, ref = r["paper_bf16_channels_last"], r["reference_fp32_plain"]
        if "it_per_s" in fast and "it_per_s" in ref:
            r["speedup_vs_reference"] = fast["it_per_s"] / ref["it_per_s"]
        if "it_per_s" in r["paper_fp32"] and "it_per_s" in fast:
            r["speedup_bf16_vs_fp32"] = fast["it_per_s"] / r["paper_fp32"]["it_per_s"]
        if not args.quick:
            mem = run_child(model, [*PAPER.get(model, []), "train.batch_size=16", "data.size=128",
                                    "train.precision=bf16"], iters=1, warmup=1, threads=args.threads)
            r["train_128px_batch16"] = {k: mem.get(k) for k in ("peak_rss_mb", "sec_per_it_median", "error")
                                        if k in mem}
        report["models"][model] = r
        print(f"[bench] {model} done", file=sys.stderr)
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
