"""Can a background patch discriminator tell photos from an untrained generator's backgrounds?

    python tests/bench/patch_d_probe.py --data data/synth64 [--size 32] [--steps 100] [--seeds 0,1,2]

A fresh OneGAN at ``--size`` (the synthetic recipe's widths) renders backgrounds with its
untrained generator; a fresh background patch D (``fgtool.nn.blocks.PatchDiscriminator``, ndf
16) trains alone for ``--steps`` Adam steps (2e-4, betas 0.5/0.999, batch 32) on the photos
(real, every patch) against those backgrounds (fake), once with BatchNorm in its trunk and
once without. Each batch is all real or all fake, as in training. Prints one JSON object: per
variant, the mean over seeds of the real and fake BCE over the last 10 steps (0.693 is
chance).
"""

from __future__ import annotations

import argparse
import json

import torch


def probe(data: str, size: int, steps: int, seed: int, bn: bool) -> tuple[float, float]:
    from fgtool.backends.onegan import OneGAN, OneGANConfig
    from fgtool.data.datasets import ImageDataset, make_loader, scan
    from fgtool.nn.blocks import PatchDiscriminator, init_weights
    from fgtool.nn.losses import bce

    torch.manual_seed(seed)
    cfg = OneGANConfig(n_child=12, n_parent=4, z_dim=32, bg_dim=16, p_dim=16, c_dim=16, ngf=16, top_mult=8,
                       ndf=16, enc_width=16)
    backend = OneGAN(cfg, size)
    nets = backend.build()
    D = PatchDiscriminator(16, size, bn=bn)
    init_weights(D, "orthogonal")
    opt = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    ds = ImageDataset(scan(data), size, train=True, box_mode="none", seed=seed)
    loader = iter(make_loader(ds, 32, seed=seed, start_step=0, workers=0))
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(steps):
        x = next(loader)["image"]
        with torch.no_grad():
            fake = backend.generate(nets, backend.sample_codes(32, gen))["background"].float()
        real, fk = bce(D(x)[0], 1.0), bce(D(fake)[0], 0.0)
        opt.zero_grad()
        (real + fk).backward()
        opt.step()
        rows.append((real.item(), fk.item()))
    last = rows[-10:]
    return sum(r for r, _ in last) / len(last), sum(f for _, f in last) / len(last)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--seeds", default="0,1,2")
    a = ap.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in a.seeds.split(",")]
    out = {"data": a.data, "size": a.size, "steps": a.steps, "seeds": seeds}
    for name, bn in (("batchnorm", True), ("no_batchnorm", False)):
        res = [probe(a.data, a.size, a.steps, s, bn) for s in seeds]
        out[name] = {"real_bce": round(sum(r for r, _ in res) / len(res), 3),
                     "fake_bce": round(sum(f for _, f in res) / len(res), 3)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
