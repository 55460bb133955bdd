"""Re-create the README figures in assets/ from the project itself.

    .venv/bin/python assets/make_assets.py            # synthetic examples (seconds)
    .venv/bin/python assets/make_assets.py RUN_FOLDER # plus a run's figures, named <model>_<grid>.png

Nothing here is downloaded or copied from elsewhere.
"""

import shutil
import sys
from pathlib import Path

import torch

from fgtool.data.synth import synth_arrays
from fgtool.io.images import mask_overlay, save_grid

HERE = Path(__file__).resolve().parent


def synth_examples() -> None:
    a = synth_arrays(16, size=64, seed=0)
    imgs = torch.from_numpy(a["images"]).permute(0, 3, 1, 2).float() / 127.5 - 1
    masks = torch.from_numpy(a["masks"]).float()[:, None]
    over = mask_overlay(imgs, masks, color=(255, 0, 0), alpha=0.45)
    save_grid(torch.cat([imgs[:8], over[:8], imgs[8:], over[8:]]), HERE / "synth_examples.png", nrow=8,
              row_labels=["image", "mask", "image", "mask"])


def run_figures(run: Path) -> None:
    import json

    model = json.loads((run / "config.json").read_text())["model"]["name"]
    for name in ("layers.png", "fix_p_vary_c.png", "fix_c_vary_z.png", "fix_z_vary_c.png", "fix_pc_vary_b.png",
                 "samples.png", "like.png"):
        src = run / name
        if src.exists():
            shutil.copy(src, HERE / f"{model}_{name}")


if __name__ == "__main__":
    synth_examples()
    if len(sys.argv) > 1:
        run_figures(Path(sys.argv[1]))
