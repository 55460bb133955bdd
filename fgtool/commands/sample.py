"""``fgtool sample``: grids of generated images, with codes fixed or varied, or like real photos."""

from __future__ import annotations

from pathlib import Path

import torch

from ..backends.base import CentroidClusterer
from ..data.evalset import box_mode
from ..errors import FgtoolError
from ..io.images import IMAGE_EXTENSIONS
from ..io.paths import check_output
from ..loading import Loaded, load
from .options import check_count, check_seed

MAX_SAMPLES = 4096  # sample --n: a grid of 4096 images is 64 x 64 cells; more is a typo


def parse_fix(items: list[str] | None) -> dict[str, int]:
    out = {}
    for it in items or []:
        if "=" not in it:
            raise FgtoolError(f"--fix expects code=value (e.g. p=3), got {it!r}")
        k, v = it.split("=", 1)
        try:
            out[k.strip()] = int(v)
        except ValueError:
            raise FgtoolError(f"--fix {k}: expected an integer, got {v!r}") from None
    return out


def sample(ckpt_path: str, out: str, n: int = 64, seed: int = 0, fix: list[str] | None = None,
           vary: str | None = None, grids: bool = True, like: list[str] | None = None) -> dict:
    """Write a sample grid (with ``--fix``/``--vary`` control) and the backend's named grids."""
    from ..io.images import save_grid

    check_count(n, "--n", 1, MAX_SAMPLES)
    check_seed(seed)
    outp = Path(out)
    if outp.suffix.lower() in IMAGE_EXTENSIONS and outp.suffix.lower() != ".png":  # s.jpg became a folder
        raise FgtoolError(f"--out {out}: sample writes PNG files; name a .png file, or a folder")
    folder = outp.parent if outp.suffix.lower() == ".png" else outp
    main_png = outp if outp.suffix.lower() == ".png" else outp / "samples.png"
    check_output(folder, [ckpt_path, *(like or [])], folder=True, holds=False)
    check_output(main_png, [ckpt_path, *(like or [])])
    m = load(ckpt_path)
    m.backend.require("sample")
    g = torch.Generator().manual_seed(seed)  # the grids' writers make the folder: not before the options pass
    fixed = parse_fix(fix)
    sizes = m.backend.code_sizes()
    for k in fixed:
        if k not in sizes or sizes[k] == 0:
            raise FgtoolError(f"--fix {k}: categorical codes of {m.cfg.model} are "
                              f"{', '.join(c for c, s in sizes.items() if s)}")
    written = {}
    with torch.no_grad(), m.autocast():
        if vary:
            if vary not in sizes:
                raise FgtoolError(f"--vary {vary}: codes of {m.cfg.model} are {', '.join(sizes)}")
            images, nrow, rl, cl = _vary_grid(m, g, fixed, vary, n)
        else:
            codes = m.backend.sample_codes(n, g, **fixed)
            images, nrow, rl, cl = m.backend.generate(m.nets, codes)["image"], 8, None, None
        save_grid(images.float().cpu(), main_png, nrow=nrow, row_labels=rl, col_labels=cl)
        written["samples"] = str(main_png)
        if like:
            p = folder / "like.png"
            _like_grid(m, like, g, p)
            written["like"] = str(p)
        if grids:
            for name, grid in m.backend.grids(m.nets, g, "all").items():
                if name == "samples":
                    continue
                p = folder / f"{name}.png"
                save_grid(grid.images.float().cpu(), p, nrow=grid.nrow, row_labels=grid.row_labels,
                          col_labels=grid.col_labels)
                written[name] = str(p)
    return {"checkpoint": str(ckpt_path), "step": m.step, "n": n, "seed": seed, "fix": fixed,
            "vary": vary, "files": written}


def _like_grid(m: Loaded, paths: list[str], g: torch.Generator, out: Path, ncol: int = 8) -> None:
    """Paper Fig. 4a: each real image (first column), then images generated from the
    cluster it is assigned to."""
    from ..data.datasets import ImageDataset, scan
    from ..io.images import save_grid

    if not isinstance(m.backend, CentroidClusterer):
        raise FgtoolError(f"--like needs a model that assigns images to clusters; {m.cfg.model} does not")
    d = m.cfg.data
    rows, labels = [], []
    for p in paths:
        ds = ImageDataset(scan(p), d.size, train=False, box_mode=box_mode(m.cfg), crop_scale=d.crop_scale,
                          crop_clip=d.crop_clip, pseudo_border=d.pseudo_border, flip=False)
        x = ds[0]["image"][None].to(m.device)
        idx, conf = m.backend.assign(m.nets, x)
        codes = m.backend.sample_codes(ncol, g, c=int(idx[0]))
        fake = m.backend.generate(m.nets, codes)["image"].float().cpu()
        rows.append(torch.cat([x.float().cpu(), fake]))
        labels.append(f"c={int(idx[0])} p={float(conf[0]):.2f}")
    save_grid(torch.cat(rows), out, nrow=ncol + 1, row_labels=labels,
              col_labels=["real"] + [f"z{j}" for j in range(ncol)])


def _vary_grid(m: Loaded, g, fixed: dict, vary: str, n: int):
    """Rows: independent draws of the other codes; columns: values of ``vary``."""
    sizes = m.backend.code_sizes()
    card = sizes[vary]
    vals = None
    if card == 0:
        ncol = 8
    else:
        # only values of `vary` that keep the fixed codes (--fix p=1 --vary c: p's children);
        # a backend may derive one code from another, and the derived one would win silently
        def agrees(v: int) -> bool:
            try:
                c1 = m.backend.sample_codes(1, torch.Generator().manual_seed(0), **{**fixed, vary: v})
            except FgtoolError:  # a backend that refuses the pair (a child under another parent)
                return False
            want = {**fixed, vary: v}
            return all(int(c1[k][0]) == fv for k, fv in want.items() if k in c1)

        ok = [v for v in range(card) if agrees(v)]
        if not ok:
            raise FgtoolError(f"--vary {vary}: no value of {vary} is compatible with --fix "
                              f"{', '.join(f'{k}={v}' for k, v in fixed.items())}")
        ncol = min(len(ok), 10)
        vals = torch.tensor(ok[:ncol])
    rows = max(1, min(8, n // ncol))
    base = m.backend.sample_codes(rows, g, **fixed)
    codes = {k: v.repeat_interleave(ncol, 0) for k, v in base.items()}
    if card == 0:
        codes[vary] = torch.randn(ncol, base[vary].shape[1], generator=g).repeat(rows, 1)
        cl = [f"{vary}{j}" for j in range(ncol)]
    else:
        codes = m.backend.sample_codes(rows * ncol, g, **{**fixed, vary: vals.repeat(rows)},
                                       **{k: codes[k] for k in ("z",) if k in codes and k != vary})
        cl = [f"{vary}={int(v)}" for v in vals]
    rl = [f"row {i}" for i in range(rows)]
    return m.backend.generate(m.nets, codes)["image"], ncol, rl, cl
