"""``fgtool gif``: latent walks as animated GIFs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import FgtoolError
from ..io.paths import check_output
from ..loading import load
from .options import check_count, check_seed


def gif(ckpt_path: str, out: str, walk: str = "z", frames: int = 24, n: int = 8, seed: int = 0,
        fps: int = 8, frames_dir: str | None = None, image: str | None = None, source: str | None = None,
        max_size: int = 256) -> dict:
    """A latent walk: a row of ``n`` samples whose ``walk`` code moves smoothly (z: spherical
    interpolation through random points) or steps through its values (categorical codes).
    With ``image`` and ``source``: img2gif (:func:`fgtool.mixing.img2gif`)."""
    from torchvision.utils import make_grid

    from ..io.gif import write_gif

    if image or source:
        check_count(frames, "--frames", 0, MAX_FRAMES)  # 0: every frame of the source
    else:
        check_count(frames, "--frames", 1, MAX_FRAMES)
        check_count(n, "--n", 1, MAX_GIF_N)
    check_count(fps, "--fps", 1, 100)  # GIF frame delays are in 1/100 s
    check_count(max_size, "--max-size", 0)
    check_seed(seed)
    inputs = [ckpt_path, image, source]
    check_output(out, inputs, suffix=".gif")
    if frames_dir:
        check_output(frames_dir, inputs, what="--frames-dir", folder=True, holds=False)
    m = load(ckpt_path)
    if image or source:
        from ..mixing import img2gif

        return img2gif(m, image, source, out, frames=frames, fps=fps, max_size=max_size, frames_dir=frames_dir)
    m.backend.require("gif")
    sizes = m.backend.code_sizes()
    if walk not in sizes:
        raise FgtoolError(f"--walk {walk}: codes of {m.cfg.model} are {', '.join(sizes)}")
    g = torch.Generator().manual_seed(seed)
    base = m.backend.sample_codes(n, g)
    seq = []
    if sizes[walk] == 0:
        keys = [base[walk]] + [torch.randn(base[walk].shape, generator=g) for _ in range(3)] + [base[walk]]
        # a closed loop through random points: exactly ``frames`` frames, the last leading back
        for u in np.linspace(0, len(keys) - 1, frames, endpoint=False):
            i, t = int(u), float(u - int(u))
            seq.append({**base, walk: _slerp(keys[i], keys[i + 1], t)})
    else:
        # keep z and the other categorical codes; a fresh generator per frame keeps any
        # code the backend derives (a child under a walked parent) the same across frames
        keep = {k: v for k, v in base.items() if k == "z" or (k == "b" and walk != "b") or
                (k == "c" and walk == "b")}
        for v in range(min(sizes[walk], frames)):
            seq.append(m.backend.sample_codes(n, torch.Generator().manual_seed(seed + 1), **{**keep, walk: v}))
    imgs = []
    with torch.no_grad():
        for codes in seq:
            x = m.backend.generate(m.nets, codes)["image"].float().cpu()
            if x.shape[-1] < 96:  # small models: nearest-upscale so a GIF viewer shows something
                k = -(-96 // x.shape[-1])
                x = torch.nn.functional.interpolate(x, scale_factor=k, mode="nearest")
            imgs.append(make_grid(x, nrow=n, padding=2, value_range=(-1, 1), normalize=True) * 2 - 1)
    p = write_gif(imgs, out, fps=fps)
    res = {"gif": str(p), "frames": len(imgs), "walk": walk, "n": n}
    if frames_dir:  # every frame as a PNG too, for slides or ffmpeg
        from ..io.images import save_image

        for i, im in enumerate(imgs):
            save_image(im, Path(frames_dir) / f"frame_{i:04d}.png")
        res["frames_dir"] = str(frames_dir)
    return res


MAX_FRAMES = 10_000  # gif --frames: over five minutes at 30 fps

MAX_GIF_N = 64  # gif --n: samples side by side


def _slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    an, bn = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    omega = torch.acos((an * bn).sum(1, keepdim=True).clamp(-1 + 1e-6, 1 - 1e-6))
    so = torch.sin(omega)
    return torch.sin((1 - t) * omega) / so * a + torch.sin(t * omega) / so * b
