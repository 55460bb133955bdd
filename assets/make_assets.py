"""Re-create the README figures in assets/ from the project itself.

    .venv/bin/python assets/make_assets.py            # synthetic examples (seconds)
    .venv/bin/python assets/make_assets.py RUN_FOLDER # plus a run's figures, named <model>_<grid>.png
    .venv/bin/python assets/make_assets.py RUN_FOLDER data/synth64  # MixNMatch: plus its mix sheets

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


# references of the MixNMatch sheets (fgtool data synth, seed 0): one per shape along the top,
# four other classes down the side
MIX_TOP = ["001.bird_red_solid/00009.png", "005.star_blue_spots/00005.png",
           "008.heart_yellow_twotone/00006.png", "012.crescent_blue_stripes/00003.png"]
MIX_BASE = ["002.bird_teal_stripes/00010.png", "006.star_green_twotone/00020.png",
            "010.crescent_pink_twotone/00008.png", "009.heart_teal_solid/00001.png"]


def mix_sheets(run: Path, data: Path) -> None:
    """mixnmatch_vary.png: vary texture, vary shape (code mode) and vary shape (feature mode)
    side by side, from ``fgtool mix --grid``."""
    from PIL import Image

    from fgtool import api
    from fgtool.mixing import run_mix

    m = api.load(str(run / "last.pt"))  # once for the three sheets
    img = data / "images"
    sheets = []
    for grid, mode in (("texture", "code"), ("shape", "code"), ("shape", "feature")):
        out = run / f"vary_{grid}_{mode}.png"
        refs = {grid: [str(img / r) for r in MIX_TOP]}
        run_mix(m, str(out), grid=grid, mode=mode, base=[str(img / r) for r in MIX_BASE], **refs)
        sheets.append(Image.open(out).convert("RGB"))
    gap = 12
    sheet = Image.new("RGB", (sum(s.width for s in sheets) + gap * (len(sheets) - 1),
                              max(s.height for s in sheets)), "white")
    x = 0
    for s in sheets:
        sheet.paste(s, (x, 0))
        x += s.width + gap
    sheet.save(HERE / "mixnmatch_vary.png")


if __name__ == "__main__":
    synth_examples()
    if len(sys.argv) > 1:
        run_figures(Path(sys.argv[1]))
    if len(sys.argv) > 2:
        mix_sheets(Path(sys.argv[1]), Path(sys.argv[2]))
