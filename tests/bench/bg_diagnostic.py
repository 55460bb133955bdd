"""What the background patch D of a FineGAN or MixNMatch checkpoint says (JSON on stdout).

    python tests/bench/bg_diagnostic.py runs/mnm/last.pt data/synth64

On 64 generated samples (seed 0): the aux head's P(background) and the adv head's P(real)
on the generated background B, inside the region the object layers cover (mask > 0.5)
and away from it (mask < 0.1). On up to 256 real training views: the share of patches
the box labels call background, and both heads on those patches and on the object ones.
A background stage that paints the object shows as a lower P(background) inside than
outside; a background D that rejects the whole of B shows as low numbers everywhere.
"""

from __future__ import annotations

import json
import sys

import torch
import torch.nn.functional as F

from fgtool import api
from fgtool import checkpoint as ckpt
from fgtool.data.datasets import ImageDataset, eval_loader, scan
from fgtool.data.evalset import box_mode


def main(path: str, data: str) -> dict:
    m = api.load(path)
    ck = ckpt.load(path)
    nets = m.backend.build()  # with the discriminators, which api.load leaves out
    for part in ("nets", "ema"):
        for k, sd in ck[part].items():
            if k in nets:
                nets[k].load_state_dict(sd)
    for v in nets.values():
        v.eval()
    if "Dbg" not in nets:
        raise SystemExit(f"{path}: model '{m.cfg.model}' has no background patch D")
    D = nets["Dbg"]
    torch.manual_seed(0)
    res: dict = {"checkpoint": path, "step": m.step}
    with torch.no_grad():
        out = m.backend.generate(nets, m.backend.sample_codes(64))
        adv, aux = D(out["background"])
        mask = torch.maximum(out["parent_mask"], out["child_mask"]).float()
        mp = F.adaptive_avg_pool2d(mask, adv.shape[-2:])
        inside, outside = mp > 0.5, mp < 0.1
        pa, pr = torch.sigmoid(aux), torch.sigmoid(adv)
        res["fake_bg"] = {"p_background_inside": float(pa[inside].mean()),
                          "p_background_outside": float(pa[outside].mean()),
                          "p_real_inside": float(pr[inside].mean()), "p_real_outside": float(pr[outside].mean()),
                          "mask_mean": float(mask.mean()),
                          "bg_spatial_std": float(out["background"].float().std((2, 3)).mean())}
        d = m.cfg.data
        ds = ImageDataset(scan(data, max_images=256), d.size, train=True, box_mode=box_mode(m.cfg),
                          crop_scale=d.crop_scale, pseudo_border=d.pseudo_border, flip=False)
        b = next(iter(eval_loader(ds, batch_size=256, workers=0)))
        ra, rx = D(b.get("full", b["image"]))
        if "fg" in b:
            w = D.patch_weights(b["fg"], tuple(ra.shape[-2:]), m.cfg.model_cfg.bg_patch_thresh) > 0.5
            pa, pr = torch.sigmoid(rx), torch.sigmoid(ra)
            res["real"] = {"background_patch_share": float(w.float().mean()),
                           "p_background_on_bg": float(pa[w].mean()), "p_background_on_object": float(pa[~w].mean()),
                           "p_real_on_bg": float(pr[w].mean()), "p_real_on_object": float(pr[~w].mean())}
    return res


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    print(json.dumps(main(sys.argv[1], sys.argv[2]), indent=1))
