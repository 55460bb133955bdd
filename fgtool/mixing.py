"""Mix-and-match from real photos (``fgtool mix``) and img2gif (``fgtool gif --from``).

A model that can ``encode`` (MixNMatch) reads four factors off reference images:

=========  ==========================================  =====================================
factor     codes                                       option
=========  ==========================================  =====================================
bg         b, and the z the background stage sees     ``--bg``
pose       z (parent and child stages)                 ``--pose``
shape      p (feature mode: the map S(image))          ``--shape``
texture    c                                           ``--texture``
=========  ==========================================  =====================================

A factor with no reference comes from ``--base`` when given, else it is sampled from the
model's prior with ``--seed`` (the same seed gives the same sampled factors, whatever
else is given). A missing factor is never an error; an unreadable, missing or tiny
reference is (one line, exit 2).

Feature mode (``--mode feature``, a checkpoint past ``model.stage2_start``) replaces
phi(p, z) by S(image) of the shape reference: shape *and* pose come from that one image.
"""

from __future__ import annotations

import csv
import importlib.util
import math
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps

from .backends.base import FeatureEncoder, Translator
from .config import SEED_MAX
from .errors import FgtoolError
from .io.images import IMAGE_EXTENSIONS, list_images, load_image, save_grid, save_image, to_tensor
from .io.paths import check_output, check_regular_input, member, resolved

FACTORS = ("bg", "shape", "texture", "pose")
MODES = ("code", "feature")
MIN_SIDE = 16  # a reference must be at least this many pixels on each side
MAX_CLIP_FRAMES = 10000  # frames read from one video or GIF at most
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
BATCH_COLUMNS = {"bg": "bg", "background": "bg", "shape": "shape", "texture": "texture", "pose": "pose",
                 "base": "base", "out": "out"}


# ----------------------------------------------------------------------------- references


def fit_square(img: Image.Image, size: int) -> torch.Tensor:
    """Centre square crop resized to ``size`` (bicubic): [3,S,S] in [-1,1] (the eval view
    of a photo without a box)."""
    return to_tensor(ImageOps.fit(img, (size, size), Image.BICUBIC))


def _check_size(w: int, h: int, what: str, path) -> None:
    if min(w, h) < MIN_SIDE:
        raise FgtoolError(f"{what} {path}: image is only {w}x{h} px; references must be at least "
                          f"{MIN_SIDE} px on each side")


def load_reference(path, size: int, what: str = "reference") -> torch.Tensor:
    """A reference photo as the model sees it: [3,S,S] in [-1,1]. Missing, unreadable or
    tiny files raise a one-line :class:`FgtoolError` that names ``what`` (the option)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FgtoolError(f"{what} {path}: no such file")
    if p.is_dir():
        raise FgtoolError(f"{what} {path}: is a folder, not an image")
    check_regular_input(p, what)  # a FIFO would block forever: never opened
    try:
        img = load_image(p)
    except FgtoolError as e:
        raise FgtoolError(f"{what}: {e}") from None
    _check_size(img.width, img.height, what, path)
    return fit_square(img, size)


# ----------------------------------------------------------------------------- mixing


def _backend_can_mix(m) -> None:
    m.backend.require("mix")


def _check_mode(m, mode: str) -> None:
    if mode not in MODES:
        raise FgtoolError(f"--mode must be code or feature, got {mode!r}")
    if mode == "feature":
        be = m.backend
        if not isinstance(be, FeatureEncoder):
            raise FgtoolError(f"model '{m.cfg.model}' has no feature mode; use --mode code")
        if not be.feature_ready(m.step):
            start = getattr(m.cfg.model_cfg, "stage2_start", "never")
            why = ("this run has no stage 2 (model.stage2_start = never)" if start == "never" else
                   f"stage 2 starts at step {start} and this checkpoint is at step {m.step}")
            raise FgtoolError(f"--mode feature needs a trained feature extractor: {why}; use --mode code, "
                              "or train on (fgtool train --resume --set train.steps=N)")


@torch.no_grad()
def mix_images(m, refs: dict, base: torch.Tensor | None = None, mode: str = "code",
               generator: torch.Generator | None = None, outputs: bool = False):
    """Generate images whose factors come from reference tensors.

    ``refs`` maps factors (bg, shape, texture, pose) to [N,3,S,S] (or [1,3,S,S]) tensors or
    None; ``base`` gives the factors ``refs`` lacks, else they are drawn from the prior
    with ``generator``. Returns [N,3,S,S] in [-1,1] on the CPU; ``outputs``: the generator's
    whole output dict instead (image clamped, every tensor float on the CPU).
    """
    _check_mode(m, mode)
    be, nets, dev = m.backend, m.nets, m.device
    bad = set(refs) - set(FACTORS)
    if bad:
        raise ValueError(f"unknown factors {sorted(bad)}")
    given = [t for t in (*refs.values(), base) if t is not None]
    n = max((t.shape[0] for t in given), default=1)
    for t in given:
        if t.shape[0] not in (1, n):
            raise ValueError(f"reference batches of {t.shape[0]} and {n} images do not match")
    seen: dict[int, dict] = {}  # one encoding per distinct tensor (bg and texture are often one image)

    def enc(x):
        if id(x) not in seen:
            seen[id(x)] = be.encode(nets, x.to(dev).float())
        return seen[id(x)]

    def rows(t):  # a [1, ...] code or map stands for all n rows
        return t.expand(n, *t.shape[1:]) if t.shape[0] == 1 and n > 1 else t

    # the prior is always drawn, so a sampled factor does not depend on which others are given
    prior = be.sample_codes(n, generator)
    fallback = dict(enc(base)) if base is not None else {k: v.to(dev) for k, v in prior.items()}
    fallback.setdefault("z_bg", fallback["z"])
    e = {f: enc(x) for f, x in refs.items() if x is not None}
    codes = {
        "z": e["pose"]["z"] if "pose" in e else fallback["z"],
        "z_bg": e["bg"]["z"] if "bg" in e else fallback["z_bg"],
        "b": e["bg"]["b"] if "bg" in e else fallback["b"],
        "p": e["shape"]["p"] if "shape" in e else fallback["p"],
        "c": e["texture"]["c"] if "texture" in e else fallback["c"],
    }
    if mode == "feature":
        src = next((x for x in (refs.get("shape"), refs.get("pose"), base) if x is not None), None)
        if src is not None:  # else phi(p, z) of the sampled codes
            codes["feature"] = be.shape_features(nets, src.to(dev).float())
    codes = {k: rows(v) for k, v in codes.items()}
    out = be.generate(nets, codes)
    if outputs:
        return {k: (v.float().clamp(-1, 1) if k == "image" else v.float()).cpu() for k, v in out.items()}
    return out["image"].float().clamp(-1, 1).cpu()


def _single(values, opt: str) -> str | None:
    values = [v for v in (values or []) if v is not None]
    if len(values) > 1:
        raise FgtoolError(f"{opt} given {len(values)} times; several references per factor only with --grid")
    return values[0] if values else None


def _as_list(v) -> list[str]:
    if v is None:
        return []
    return [v] if isinstance(v, (str, Path)) else [x for x in v if x is not None]


def _feature_sources(mode: str, shape, pose) -> None:
    if mode == "feature" and shape and pose and Path(shape).expanduser().resolve() != Path(pose).expanduser().resolve():
        raise FgtoolError("--mode feature takes shape and pose together from --shape; drop --pose "
                          "or use --mode code")


def run_mix(m, out: str | None = None, bg=None, shape=None, texture=None, pose=None, base=None,
            mode: str = "code", seed: int = 0, grid: str | None = None, batch: str | None = None,
            texture_class: int | None = None) -> dict:
    """``fgtool mix``: one mixed image, a ``grid`` sheet, or one image per ``batch`` CSV row;
    ``texture_class``: the ``base`` photo reconstructed with that child class (OneGAN)."""
    _backend_can_mix(m)
    _check_mode(m, mode)
    opts = {"bg": _as_list(bg), "shape": _as_list(shape), "texture": _as_list(texture), "pose": _as_list(pose)}
    bases = _as_list(base)
    if not 0 <= seed <= SEED_MAX:
        raise FgtoolError(f"--seed must be in 0..{SEED_MAX}, got {seed}")
    inputs = [m.path, *bases, *(p for v in opts.values() for p in v)]
    head = {"checkpoint": str(m.path), "step": m.step, "mode": mode, "seed": seed, "size": m.cfg.data.size}
    if texture_class is not None:
        return {**head, **_run_texture_class(m, texture_class, opts, bases, out, grid, batch, inputs)}
    if grid and batch:
        raise FgtoolError("--grid and --batch do not go together")
    if batch:
        given = [f"--{f}" for f, v in opts.items() if v] + (["--base"] if bases else [])
        if given:
            raise FgtoolError(f"--batch reads the references from the CSV; drop {', '.join(given)}")
        return {**head, **_run_batch(m, batch, out or "mix_batch", mode, seed)}
    if grid:
        check_output(_png_path(out or "mix_grid.png"), inputs)
        return {**head, **_run_grid(m, grid, opts, bases, out or "mix_grid.png", mode, seed)}
    paths = {f: _single(v, f"--{f}") for f, v in opts.items()}
    base_path = _single(bases, "--base")
    _feature_sources(mode, paths["shape"], paths["pose"])
    out_p = _png_path(out or "mix.png")
    check_output(out_p, inputs)
    S = m.cfg.data.size
    refs = {f: (load_reference(p, S, f"--{f}")[None] if p else None) for f, p in paths.items()}
    base_t = load_reference(base_path, S, "--base")[None] if base_path else None
    img = mix_images(m, refs, base_t, mode, torch.Generator().manual_seed(seed))
    save_image(img[0], out_p)
    sources = {f: (str(p) if p else ("base" if base_path else "sampled")) for f, p in paths.items()}
    if mode == "feature":  # S(one image) gives shape and pose together: the image mix_images reads
        sources["shape"] = sources["pose"] = sources["shape"] if paths["shape"] else sources["pose"]
    return {**head, "out": str(out_p), "factors": sources, "base": base_path}


def _run_texture_class(m, k: int, opts: dict, bases: list, out, grid, batch, inputs) -> dict:
    """Image-to-image translation: reconstruct the --base photo with child class ``k``."""
    if not isinstance(m.backend, Translator):
        raise FgtoolError(f"--texture-class: model '{m.cfg.model}' cannot reconstruct a photo with another class")
    given = [f"--{f}" for f, v in opts.items() if v] + (["--grid"] if grid else []) + (["--batch"] if batch else [])
    if given:
        raise FgtoolError(f"--texture-class re-renders the --base photo alone; drop {', '.join(given)}")
    n_child = m.backend.code_sizes()["c"]
    if not 0 <= k < n_child:
        raise FgtoolError(f"--texture-class must be in 0..{n_child - 1}, got {k}")
    base_path = _single(bases, "--base")
    if base_path is None:
        raise FgtoolError("--texture-class needs the photo to translate as --base")
    out_p = _png_path(out or "mix.png")
    check_output(out_p, inputs)
    x = load_reference(base_path, m.cfg.data.size, "--base")[None].to(m.device)
    with torch.no_grad():
        img = m.backend.translate(m.nets, x, k).float().cpu()
    save_image(img[0], out_p)
    return {"out": str(out_p), "base": base_path, "texture_class": k}


def _png_path(out) -> Path:
    p = Path(out)
    if p.suffix.lower() not in IMAGE_EXTENSIONS:
        raise FgtoolError(f"--out {out}: expected an image file name such as mix.png")
    if p.is_dir():
        raise FgtoolError(f"--out {out} is a folder; give a file name such as {p / 'mix.png'}")
    return p


# ----------------------------------------------------------------------------- grid (Fig. 4)


def _mark(x: torch.Tensor) -> torch.Tensor:
    """A red frame round reference cells (the paper's convention for real images)."""
    x = x.clone()
    w = max(1, x.shape[-1] // 32)
    red = torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1)
    for sl in ((slice(None), slice(None), slice(0, w)), (slice(None), slice(None), slice(-w, None)),
               (slice(None), slice(None), slice(None), slice(0, w)),
               (slice(None), slice(None), slice(None), slice(-w, None))):
        x[sl] = red.expand_as(x[sl])
    return x


def grid_cell(size: int, min_cell: int = 64) -> int:
    """Side of one cell in a saved sheet: small models are upscaled (nearest) to min_cell."""
    return size * max(1, math.ceil(min_cell / size))


def _run_grid(m, vary: str, opts: dict, bases: list[str], out, mode: str, seed: int) -> dict:
    if vary not in FACTORS:
        raise FgtoolError(f"--grid must name the factor to vary: {', '.join(FACTORS)}; got {vary!r}")
    cols = opts[vary]
    if not cols:
        raise FgtoolError(f"--grid {vary} needs the references to vary across the top: --{vary} IMG (repeat it)")
    if not bases:
        raise FgtoolError(f"--grid {vary} needs the row references down the left: --base IMG (repeat it)")
    fixed = {f: _single(v, f"--{f}") for f, v in opts.items() if f != vary}
    _feature_sources(mode, fixed.get("shape"), fixed.get("pose"))
    out_p = _png_path(out)
    S = m.cfg.data.size
    col_t = torch.stack([load_reference(p, S, f"--{vary}") for p in cols])
    row_t = torch.stack([load_reference(p, S, "--base") for p in bases])
    R, C = len(bases), len(cols)
    refs = {f: (load_reference(p, S, f"--{f}")[None] if p else None) for f, p in fixed.items()}
    refs[vary] = col_t.repeat(R, 1, 1, 1)  # cell (i, j) -> index i * C + j
    gen = mix_images(m, refs, row_t.repeat_interleave(C, 0), mode, torch.Generator().manual_seed(seed))
    cells = [torch.ones(3, S, S)] + list(_mark(col_t))
    for i in range(R):
        cells += [_mark(row_t[i:i + 1])[0]] + list(gen[i * C:(i + 1) * C])
    sheet = save_grid(torch.stack(cells), None, nrow=C + 1)
    cell = grid_cell(S)
    draw = ImageDraw.Draw(sheet)
    label = f"vary:\n{vary}" + ("\n(feature)" if mode == "feature" else "")
    draw.text((6, 6), label, fill=(0, 0, 0))  # the corner cell; rows: --base
    save_image(sheet, out_p)
    return {"out": str(out_p), "vary": vary, "rows": R, "cols": C, "cell_px": cell,
            "width": sheet.width, "height": sheet.height, "row_refs": bases, "col_refs": cols,
            "fixed": {f: p for f, p in fixed.items() if p}}


# ----------------------------------------------------------------------------- batch CSV


def read_batch(csv_path) -> list[dict]:
    """Rows of a batch CSV as {factor/base/out: value or None, "line": n}.

    With a header row (any of bg, background, shape, texture, pose, base, out) the columns
    are named; without one they are bg, shape, texture, pose in that order. Empty cells are
    missing factors. Relative paths are relative to the CSV's folder.
    """
    p = Path(csv_path).expanduser()
    if not p.is_file():
        raise FgtoolError(f"--batch {csv_path}: no such file")
    try:
        with open(p, newline="", encoding="utf-8-sig") as f:
            raw = [(i, [c.strip() for c in row]) for i, row in enumerate(csv.reader(f), 1)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise FgtoolError(f"--batch {csv_path}: cannot read it as CSV ({' '.join(str(e).split())})") from None
    raw = [(i, r) for i, r in raw if any(r) and not r[0].startswith("#")]
    if not raw:
        raise FgtoolError(f"--batch {csv_path}: no rows")
    first = raw[0][1]
    if any(c.lower() in BATCH_COLUMNS for c in first):  # a header row
        unknown = [c for c in first if c and c.lower() not in BATCH_COLUMNS]
        if unknown:
            raise FgtoolError(f"--batch {csv_path}: unknown column {unknown[0]!r}; columns: "
                              "bg, shape, texture, pose, base, out")
        cols = [BATCH_COLUMNS.get(c.lower()) for c in first]
        raw = raw[1:]
    else:
        cols = list(FACTORS)
    rows = []
    for line, r in raw:
        if any(r[len(cols):]):
            raise FgtoolError(f"--batch {csv_path} line {line}: {len(r)} columns, expected at most {len(cols)}")
        row = {k: None for k in (*FACTORS, "base", "out")}
        for name, cell in zip(cols, r):
            if not (name and cell):
                continue
            path = Path(cell).expanduser()
            row[name] = cell if name == "out" or path.is_absolute() else str(p.parent / path)
        row["line"] = line
        rows.append(row)
    if not rows:
        raise FgtoolError(f"--batch {csv_path}: no rows after the header")
    return rows


def _run_batch(m, csv_path, out, mode: str, seed: int) -> dict:
    folder = Path(out)
    if folder.suffix.lower() in IMAGE_EXTENSIONS or folder.is_file():
        raise FgtoolError(f"--batch writes one image per row: --out must be a folder, got {out}")
    rows = read_batch(csv_path)
    inputs = [m.path, csv_path]
    S = m.cfg.data.size
    # read every reference first: a bad file stops the job before anything is written
    loaded = []
    for i, r in enumerate(rows):
        where = f"--batch {csv_path} line {r['line']},"
        _feature_sources(mode, r["shape"], r["pose"])
        refs = {f: (load_reference(r[f], S, f"{where} {f}")[None] if r[f] else None) for f in FACTORS}
        base = load_reference(r["base"], S, f"{where} base")[None] if r["base"] else None
        name = r["out"] or f"{i:04d}.png"
        if Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
            raise FgtoolError(f"{where} out {name!r}: expected an image file name such as mix.png")
        loaded.append((refs, base, member(folder, name, f"{where} out")))  # never outside --out
        inputs += [r[k] for k in (*FACTORS, "base") if r[k]]
    outs = [str(resolved(o)) for _, _, o in loaded]
    if len(set(outs)) != len(outs):
        raise FgtoolError(f"--batch {csv_path}: two rows write the same output file")
    check_output(folder, inputs, folder=True, holds=False)
    for _, _, o in loaded:
        check_output(o, inputs, what=f"--batch {csv_path} out")
    written = []
    for i, (refs, base, o) in enumerate(loaded):
        img = mix_images(m, refs, base, mode, torch.Generator().manual_seed(seed + i))  # row i: seed + i
        save_image(img[0], o)
        written.append(str(o))
    return {"batch": str(csv_path), "n": len(written), "outputs": written, "out": str(folder)}


# ----------------------------------------------------------------------------- img2gif


def _read_clip(p: Path) -> list[np.ndarray]:
    """Frames of a GIF / APNG / WebP / video as HxWx3 uint8 arrays (imageio; OpenCV for
    videos when imageio has no video plugin installed)."""
    import imageio.v3 as iio

    frames: list[np.ndarray] = []
    err = None
    video = p.suffix.lower() in VIDEO_EXTENSIONS
    # imageio reads videos only through PyAV or imageio-ffmpeg; without them, OpenCV does
    if not video or any(importlib.util.find_spec(m) for m in ("av", "imageio_ffmpeg")):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # plugin probing warns about deprecated plugins
                for f in iio.imiter(p, **({} if video else {"plugin": "pillow", "mode": "RGB"})):
                    f = np.asarray(f)
                    frames.append(f[..., :3] if f.ndim == 3 else np.stack([f] * 3, -1))
                    if len(frames) >= MAX_CLIP_FRAMES:
                        break
        except Exception as e:  # no plugin for this format, or not an image at all
            frames, err = [], e
    if not frames and video:
        import cv2

        cap = cv2.VideoCapture(str(p))
        try:
            while cap.isOpened() and len(frames) < MAX_CLIP_FRAMES:
                ok, f = cap.read()
                if not ok:
                    break
                frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
        finally:
            cap.release()
    if not frames:
        why = " ".join(str(err).split())[:120] if err else "no frames"
        raise FgtoolError(f"--from {p}: cannot read frames from it ({why})")
    return frames


def _pick(n: int, limit: int) -> list[int]:
    """``limit`` evenly spaced indices of ``n`` (all of them when limit <= 0 or >= n)."""
    if limit <= 0 or limit >= n:
        return list(range(n))
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, limit)})


def read_frames(source, size: int, limit: int = 0) -> torch.Tensor:
    """Driving frames for img2gif: [T,3,S,S] from a folder of images (sorted by name), an
    animated GIF / APNG / WebP, or a video; ``limit`` > 0 keeps that many, evenly spaced."""
    p = Path(source).expanduser()
    if not p.exists():
        raise FgtoolError(f"--from {source}: no such file or folder")
    if not p.is_dir():
        check_regular_input(p, "--from")
    if p.is_dir():
        files = list_images(p, recursive=False)
        if not files:
            raise FgtoolError(f"--from {source}: no images in this folder")
        return torch.stack([load_reference(files[i], size, "--from frame") for i in _pick(len(files), limit)])
    frames = _read_clip(p)
    out = []
    for i in _pick(len(frames), limit):
        a = frames[i]
        _check_size(a.shape[1], a.shape[0], "--from", f"{source} (frame {i})")
        out.append(fit_square(Image.fromarray(np.ascontiguousarray(a.astype(np.uint8))), size))
    return torch.stack(out)


def gif_scale(x: torch.Tensor, max_size: int, min_size: int = 96) -> torch.Tensor:
    """Nearest-upscale small frames so a viewer shows something (to about ``min_size``),
    never past ``max_size``; larger frames are area-downscaled to ``max_size``."""
    s = x.shape[-1]
    if max_size > 0 and s > max_size:
        return torch.nn.functional.interpolate(x, size=(max_size, max_size), mode="area")
    k = max(1, math.ceil(min_size / s))
    if max_size > 0:
        k = max(1, min(k, max_size // s))
    return torch.nn.functional.interpolate(x, scale_factor=k, mode="nearest") if k > 1 else x


def img2gif(m, image: str | None, source: str | None, out: str, frames: int = 24, fps: float = 8,
            max_size: int = 256, frames_dir: str | None = None) -> dict:
    """Animate a still photo: the pose (z) of every driving frame, the still's background,
    shape and texture (and its background z, so the background stays put)."""
    from .io.gif import write_gif

    if "mix" not in m.backend.capabilities():
        raise FgtoolError(f"gif --from needs a model that encodes images (MixNMatch); model '{m.cfg.model}' "
                          f"can: {', '.join(m.backend.capabilities())}")
    if not image or not source:
        raise FgtoolError("img2gif needs both --image STILL (the photo to animate) and --from FRAMES "
                          "(a folder of frames, a GIF or a video)")
    if frames < 0:
        raise FgtoolError(f"--frames must be >= 0 (0 = every frame), got {frames}")
    if fps <= 0:
        raise FgtoolError(f"--fps must be > 0, got {fps}")
    if Path(out).suffix.lower() != ".gif":
        raise FgtoolError(f"--out {out}: expected a .gif file name")
    S = m.cfg.data.size
    still = load_reference(image, S, "--image")[None]
    clip = read_frames(source, S, frames)
    imgs = []
    for chunk in clip.split(32):
        imgs.append(mix_images(m, {"pose": chunk}, base=still))
    x = gif_scale(torch.cat(imgs), max_size)
    p = write_gif(list(x), out, fps=fps)
    res = {"gif": str(p), "frames": int(x.shape[0]), "source": str(source), "image": str(image),
           "frame_px": int(x.shape[-1]), "fps": fps}
    if frames_dir:
        for i, im in enumerate(x):
            save_image(im, Path(frames_dir) / f"frame_{i:04d}.png")
        res["frames_dir"] = str(frames_dir)
    return res
