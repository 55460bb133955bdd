"""Image input/output: robust loading, tensor conversion, grids, overlays and contact sheets.

Conventions used everywhere in fgtool:

* image tensors are float ``[3,H,W]`` (or ``[N,3,H,W]``) with values in ``[-1, 1]``;
* masks are float ``[1,H,W]`` / ``[N,1,H,W]`` with values in ``[0, 1]``;
* transparent pixels are composited over **white** (``TRANSPARENT_BG``): cut-out datasets
  (product shots, segmented birds) are normally shown on white, so that is what a user expects.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont, ImageOps

from fgtool.errors import FgtoolError
from fgtool.io.paths import check_replaceable, is_special

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
TRANSPARENT_BG = (255, 255, 255)

# Fixed, colour-blind-friendly-ish palette for part maps (cycled when n_parts is larger).
PART_PALETTE = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
)

_ORIENT_SWAPS = (5, 6, 7, 8)  # EXIF orientations that rotate by 90 degrees


# --------------------------------------------------------------------------- loading

def _reason(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    msg = str(exc).strip() or type(exc).__name__
    return " ".join(msg.split())


def _high_bit_to_l(im: Image.Image) -> Image.Image:
    """Scale a 16/32-bit or float single-channel image to 8-bit by range, never by clipping."""
    a = np.asarray(im)
    if a.dtype.kind == "f":
        a = a.astype(np.float64)
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        if lo >= 0.0 and hi <= 1.0:
            out = a * 255.0
        elif lo >= 0.0 and hi <= 255.0:
            out = a
        else:
            out = (a - lo) / max(hi - lo, 1e-12) * 255.0
    else:
        a = a.astype(np.int64)
        lo, hi = int(a.min()), int(a.max())
        if lo >= 0 and hi <= 65535:
            # 16-bit range: 65535 -> 255, 32768 -> 128 (x/257 maps 0..65535 onto 0..255 exactly)
            out = a / 257.0
        else:
            out = (a - lo) / max(hi - lo, 1) * 255.0
    out = np.nan_to_num(out, nan=0.0)
    return Image.fromarray(np.clip(np.round(out), 0, 255).astype(np.uint8), mode="L")


def _to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode == "RGB":
        if "transparency" in im.info:
            return _composite(im.convert("RGBA"))
        return im
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return _composite(im.convert("RGBA"))
    if mode == "P":
        if "transparency" in im.info or im.palette is not None and im.palette.mode == "RGBA":
            return _composite(im.convert("RGBA"))
        return im.convert("RGB")
    if mode == "L" and "transparency" in im.info:
        return _composite(im.convert("RGBA"))
    if mode in ("I", "F") or mode.startswith("I;16"):
        return _high_bit_to_l(im).convert("RGB")
    # L, 1, CMYK, YCbCr, LAB, HSV ... Pillow knows how to get to RGB
    return im.convert("RGB")


def _composite(rgba: Image.Image) -> Image.Image:
    bg = Image.new("RGB", rgba.size, TRANSPARENT_BG)
    bg.paste(rgba, mask=rgba.getchannel("A"))
    return bg


def max_pixels() -> int | None:
    """Largest image (W*H) fgtool decodes: Pillow's ``Image.MAX_IMAGE_PIXELS`` (about 89 M pixels,
    ~270 MB as RGB). Pillow itself only warns between 1x and 2x that limit; fgtool refuses."""
    return Image.MAX_IMAGE_PIXELS


def _open(path) -> Image.Image:
    """``Image.open`` with the decompression-bomb guard as a one-line error, not a warning."""
    if isinstance(path, (str, bytes, os.PathLike)) and is_special(path):
        raise _NotRegular()  # a FIFO would block forever, a device never ends: never opened
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(path)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise _TooLarge(str(exc)) from None
    w, h = im.size
    limit = max_pixels()
    if limit and w * h > limit:
        im.close()
        raise _TooLarge(f"{w}x{h} = {w * h} pixels, over the limit of {limit}")
    return im


class _NotRegular(Exception):
    def __init__(self):
        super().__init__("not a regular file (a FIFO, device or socket); not opened")


class _TooLarge(Exception):
    def __init__(self, detail: str):
        super().__init__(f"image too large (decompression-bomb guard): {detail}")


class _CallerError(Exception):
    def __init__(self, exc: BaseException):
        super().__init__(str(exc))
        self.exc = exc


def decode_image(path, plan: Callable[[tuple[int, int]], float] | None = None
                 ) -> tuple[Image.Image, tuple[int, int]]:
    """Fully decode ``path`` to an RGB PIL image; return ``(image, original_size)``.

    ``original_size`` is ``(W, H)`` after EXIF orientation at full resolution. ``plan`` (optional)
    receives that size and returns the smallest scale factor the caller needs; for JPEGs the
    decoder then uses DCT scaling (``Image.draft``), so the returned image may be smaller than
    ``original_size`` by up to that factor (the caller rescales its coordinates by
    ``image.size / original_size``). Errors become a one-line :class:`FgtoolError`.
    """
    try:
        with _open(path) as im:
            w0, h0 = im.size
            try:
                orient = int(im.getexif().get(0x0112, 1) or 1)
            except Exception:  # broken EXIF should not make a good image unreadable
                orient = 1
            size = (h0, w0) if orient in _ORIENT_SWAPS else (w0, h0)
            try:
                s = float(plan(size)) if plan is not None else 1.0
            except Exception as exc:  # a bug in the caller is not a bad image
                raise _CallerError(exc) from exc
            if im.format == "JPEG" and 0.0 < s <= 0.5:  # DCT scaling only helps at 1/2 .. 1/8
                im.draft(None, (max(1, math.ceil(w0 * s)), max(1, math.ceil(h0 * s))))
            im.load()  # full decode: truncated files fail here, not later in a worker
            try:
                out = ImageOps.exif_transpose(im)
            except Exception:
                out = im
            out = _to_rgb(out)
            if out is im:
                out = im.copy()  # the context manager closes `im`
            out.load()
            return out, size
    except FgtoolError:
        raise
    except _CallerError as err:
        raise err.exc
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ...
        raise FgtoolError(f"cannot read image {path}: {_reason(exc)}") from None


def load_image(path) -> Image.Image:
    """Load any image file as an 8-bit RGB PIL image (EXIF orientation applied).

    Handles L/LA/1, palette with or without transparency, RGBA (composited over white),
    16-bit (``I;16*``/``I``, scaled ``x/257``), float, CMYK and YCbCr. A missing, corrupt,
    truncated or non-image file raises ``FgtoolError("cannot read image PATH: reason")``.
    """
    return decode_image(path)[0]


def image_size(path) -> tuple[int, int]:
    """``(W, H)`` from the header only (EXIF orientation applied), without decoding pixels."""
    try:
        with _open(path) as im:
            w, h = im.size
            try:
                orient = int(im.getexif().get(0x0112, 1) or 1)
            except Exception:
                orient = 1
            return (h, w) if orient in _ORIENT_SWAPS else (w, h)
    except Exception as exc:
        raise FgtoolError(f"cannot read image {path}: {_reason(exc)}") from None


def list_images(folder, recursive: bool = True) -> list[Path]:
    """Sorted image files under ``folder`` (extensions in ``IMAGE_EXTENSIONS``, any case).

    Hidden files and hidden folders (name starting with ``.``) are skipped, and so are FIFOs,
    devices and sockets (with a warning; they are never opened).
    """
    folder = Path(folder)
    found: list[Path] = []
    special: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
        for name in filenames:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                p = Path(dirpath) / name
                (special if is_special(p) else found).append(p)
    if special:  # FIFOs, devices, sockets: never opened (a FIFO would block forever)
        warnings.warn(f"skipping {len(special)} file(s) that are not regular files (FIFO, device or socket), "
                      f"first: {sorted(special)[0]}", stacklevel=2)
    return sorted(found)


# --------------------------------------------------------------------------- tensors

def to_tensor(img: Image.Image, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """PIL image -> float tensor ``[3,H,W]`` in ``[-1,1]``.

    ``size`` int resizes to ``size x size`` (aspect not kept), a tuple is ``(H, W)``;
    resizing is bicubic with Pillow's antialiasing.
    """
    if img.mode != "RGB":
        img = _to_rgb(img)
    if size is not None:
        h, w = (size, size) if isinstance(size, int) else size
        if (w, h) != img.size:
            img = img.resize((int(w), int(h)), Image.BICUBIC)
    arr = np.asarray(img, dtype=np.uint8)
    t = torch.from_numpy(arr.copy()).permute(2, 0, 1).float()
    return t.div_(127.5).sub_(1.0)


def to_pil(tensor: torch.Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> Image.Image:
    """Inverse of :func:`to_tensor`: ``[3,H,W]``, ``[1,H,W]`` or ``[H,W]`` -> RGB/L PIL image."""
    t = tensor.detach().float().cpu()
    if t.dim() == 4 and t.shape[0] == 1:
        t = t[0]
    if t.dim() == 2:
        t = t[None]
    if t.dim() != 3 or t.shape[0] not in (1, 3):
        raise ValueError(f"to_pil expects [3,H,W], [1,H,W] or [H,W], got {tuple(tensor.shape)}")
    lo, hi = value_range
    t = ((t - lo) / (hi - lo)).clamp(0, 1).mul(255).round().to(torch.uint8)
    arr = t.permute(1, 2, 0).numpy()
    if arr.shape[2] == 1:
        return Image.fromarray(arr[:, :, 0], mode="L")
    return Image.fromarray(arr, mode="RGB")


def _pil_format(path: Path) -> str:
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise FgtoolError(f"cannot save image {path}: unknown extension {path.suffix!r}")
    return fmt


def _atomic_save(img: Image.Image, path, **kwargs) -> Path:
    path = Path(path)
    fmt = _pil_format(path)
    check_replaceable(path)  # a device, FIFO, socket or symlink is never swapped for a file
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if fmt == "JPEG" and img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    try:
        img.save(tmp, format=fmt, **kwargs)
        os.replace(tmp, path)  # readers never see a half-written file
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def save_image(image, path) -> Path:
    """Save a tensor (``[-1,1]``, see :func:`to_pil`) or PIL image atomically; creates parents."""
    img = image if isinstance(image, Image.Image) else to_pil(image)
    return _atomic_save(img, path)


# --------------------------------------------------------------------------- grids

def _as_batch01(images) -> torch.Tensor:
    """Accept [N,3,H,W] in [-1,1], [N,1,H,W] masks in [0,1] (or lists of those) -> [N,3,H,W] in [0,1]."""
    if isinstance(images, (list, tuple)):
        images = torch.stack([torch.as_tensor(i) for i in images])
    x = images.detach().float().cpu()
    if x.dim() == 3:
        x = x[:, None]  # [N,H,W] masks
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected images [N,3,H,W] or masks [N,1,H,W], got {tuple(x.shape)}")
    if x.shape[1] == 1:
        return x.clamp(0, 1).expand(-1, 3, -1, -1)
    return ((x + 1) / 2).clamp(0, 1)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # no FreeType: fixed bitmap font
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    l, t, r, b = draw.textbbox((0, 0), text, font=font)
    return r - l, b - t


def _fit_text(draw, text: str, font, max_w: int) -> str:
    if _text_size(draw, text, font)[0] <= max_w:
        return text
    while len(text) > 1 and _text_size(draw, text + "…", font)[0] > max_w:
        text = text[:-1]
    return text + "…"


def save_grid(images, path=None, nrow: int = 8, row_labels: Sequence[str] | None = None,
              col_labels: Sequence[str] | None = None, padding: int = 2, title: str | None = None,
              min_cell: int = 64) -> Image.Image:
    """Tile images with ``torchvision.utils.make_grid`` and add label bands; return the PIL image.

    ``nrow`` follows torchvision: images per row, i.e. the number of columns. ``row_labels`` go in
    a left margin (one per grid row), ``col_labels`` in a top band (one per column), ``title``
    above everything. Cells smaller than ``min_cell`` px are upscaled (nearest, integer factor)
    so that the default font stays readable. Saved atomically when ``path`` is given.
    """
    from torchvision.utils import make_grid

    x = _as_batch01(images)
    n, _, h, w = x.shape
    if n == 0:
        raise ValueError("save_grid: no images")
    factor = max(1, math.ceil(min_cell / max(1, min(h, w))))
    if factor > 1:
        x = F.interpolate(x, scale_factor=factor, mode="nearest")
    h, w = h * factor, w * factor
    ncols = max(1, min(nrow, n))
    nrows = math.ceil(n / ncols)
    grid = make_grid(x, nrow=ncols, padding=padding, pad_value=1.0)
    pad = padding if n > 1 else 0  # make_grid returns a single image unpadded
    arr = grid.mul(255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    body = Image.fromarray(np.ascontiguousarray(arr), mode="RGB")
    if not row_labels and not col_labels and not title:
        if path is not None:
            _atomic_save(body, path)
        return body

    font = _font(max(10, min(16, h // 5)))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    gap = 4
    line_h = _text_size(probe, "Ag", font)[1] + 2 * gap
    row_labels = [str(s) for s in (row_labels or [])][:nrows]
    col_labels = [str(s) for s in (col_labels or [])][:ncols]
    left = 0
    if row_labels:
        widest = max(_text_size(probe, s, font)[0] for s in row_labels)
        left = min(widest, 240) + 2 * gap
    top_title = line_h if title else 0
    top_cols = line_h if col_labels else 0
    top = top_title + top_cols
    canvas = Image.new("RGB", (left + body.width, top + body.height), (255, 255, 255))
    canvas.paste(body, (left, top))
    draw = ImageDraw.Draw(canvas)
    if title:
        t = _fit_text(draw, str(title), font, canvas.width - 2 * gap)
        tw, _ = _text_size(draw, t, font)
        draw.text(((canvas.width - tw) // 2, gap), t, fill=(0, 0, 0), font=font)
    for c, s in enumerate(col_labels):
        s = _fit_text(draw, s, font, w)
        tw, _ = _text_size(draw, s, font)
        x0 = left + pad + c * (w + pad) + (w - tw) // 2
        draw.text((x0, top_title + gap), s, fill=(0, 0, 0), font=font)
    for r, s in enumerate(row_labels):
        s = _fit_text(draw, s, font, left - 2 * gap)
        _, th = _text_size(draw, s, font)
        y0 = top + pad + r * (h + pad) + (h - th) // 2
        draw.text((gap, y0), s, fill=(0, 0, 0), font=font)
    if path is not None:
        _atomic_save(canvas, path)
    return canvas


# --------------------------------------------------------------------------- overlays

def _color_tensor(color) -> torch.Tensor:
    return torch.tensor(color, dtype=torch.float32).view(1, 3, 1, 1) / 127.5 - 1.0


def _image_and_mask(images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Images [N,3,H,W] as float, masks ([N,1,H,W] or [N,H,W]) as float [N,1,H,W] at their size."""
    x = images.detach().float()
    m = masks.detach().float().to(x.device)
    if m.dim() == 3:
        m = m[:, None]
    if m.shape[-2:] != x.shape[-2:]:
        m = F.interpolate(m, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return x, m


def mask_overlay(images: torch.Tensor, masks: torch.Tensor, color=(255, 0, 0), alpha: float = 0.5
                 ) -> torch.Tensor:
    """Blend ``color`` into ``images`` ([N,3,H,W] in [-1,1]) where ``masks`` ([N,1,H,W]/[N,H,W],
    soft [0,1]) is on: ``out = img*(1-alpha*m) + color*alpha*m``. Unmasked pixels are unchanged."""
    x, m = _image_and_mask(images, masks)
    a = alpha * m.clamp(0, 1)
    return x * (1 - a) + _color_tensor(color).to(x.device) * a


def mask_contour(images: torch.Tensor, masks: torch.Tensor, color=(0, 255, 255)) -> torch.Tensor:
    """Paint the inner boundary of ``masks > 0.5`` (mask pixels with a non-mask 4-neighbour
    or on the image border) in ``color``: the edge stays visible where a tint is not, on an
    object or a background of the tint's own colour."""
    x, m = _image_and_mask(images, masks)
    b = (m > 0.5).float()
    pad = F.pad(b, (1, 1, 1, 1), value=0.0)
    inner = pad[..., :-2, 1:-1] * pad[..., 2:, 1:-1] * pad[..., 1:-1, :-2] * pad[..., 1:-1, 2:]
    edge = b * (1 - inner)
    return x * (1 - edge) + _color_tensor(color).to(x.device) * edge


def part_overlay(images: torch.Tensor, labels: torch.Tensor, n_parts: int, alpha: float = 0.5
                 ) -> torch.Tensor:
    """Colour each part ``k`` of ``labels`` ([N,H,W] or [N,1,H,W] ints) with ``PART_PALETTE[k]``
    blended at ``alpha``; labels outside ``[0, n_parts)`` are left uncoloured."""
    x = images.detach().float()
    lab = labels.detach().long().to(x.device)
    if lab.dim() == 4:
        lab = lab[:, 0]
    if lab.shape[-2:] != x.shape[-2:]:
        lab = F.interpolate(lab[:, None].float(), size=x.shape[-2:], mode="nearest")[:, 0].long()
    pal = torch.tensor([PART_PALETTE[k % len(PART_PALETTE)] for k in range(max(n_parts, 1))],
                       dtype=torch.float32, device=x.device) / 127.5 - 1.0
    valid = (lab >= 0) & (lab < n_parts)
    colour = pal[lab.clamp(0, max(n_parts, 1) - 1)].permute(0, 3, 1, 2)  # [N,3,H,W]
    a = alpha * valid[:, None].float()
    return x * (1 - a) + colour * a


def _placeholder(size: int) -> Image.Image:
    img = Image.new("RGB", (size, size), (128, 128, 128))
    d = ImageDraw.Draw(img)
    d.line((0, 0, size - 1, size - 1), fill=(200, 0, 0), width=2)
    d.line((0, size - 1, size - 1, 0), fill=(200, 0, 0), width=2)
    return img


def contact_sheet(paths_or_images: Iterable, path=None, ncol: int = 8, size: int = 64,
                  labels: Sequence[str] | None = None) -> Image.Image:
    """Thumbnail sheet (e.g. members of a cluster): ``ncol`` per row, one label per row.

    Items may be paths, PIL images, ``[3,H,W]`` tensors in ``[-1,1]`` or None (a blank white
    cell, to pad a short row). Thumbnails are
    centre-cropped squares of ``size`` px. Unreadable files become a grey crossed tile and a
    warning, so one bad file does not lose the whole sheet.
    """
    thumbs = []
    for item in paths_or_images:
        if item is None:  # an empty cell, e.g. to end a short row
            thumbs.append(torch.ones(3, size, size))
            continue
        if isinstance(item, torch.Tensor):
            img = to_pil(item)
        elif isinstance(item, Image.Image):
            img = _to_rgb(item)
        else:
            try:
                img = load_image(item)
            except FgtoolError as exc:
                warnings.warn(str(exc), stacklevel=2)
                img = _placeholder(size)
        thumbs.append(to_tensor(ImageOps.fit(img.convert("RGB"), (size, size), Image.BICUBIC)))
    if not thumbs:
        raise ValueError("contact_sheet: no images")
    return save_grid(torch.stack(thumbs), path, nrow=ncol, row_labels=labels, min_cell=size)


def draw_points(images: torch.Tensor, points: torch.Tensor, radius: int = 1, colors=None,
                outline: bool = True) -> torch.Tensor:
    """Draw ``points`` ([N,P,2], (x, y) in [-1,1] image coordinates; non-finite ones are
    skipped) as filled squares of side ``2*radius+1`` on a copy of ``images`` ([N,3,H,W] in
    [-1,1]). Point ``j`` gets ``colors[j]`` (default ``PART_PALETTE[j]``); ``outline`` adds a
    one-pixel black ring so a dot shows on a part of its own colour."""
    x = images.detach().float().clone()
    n, _, h, w = x.shape
    pts = points.detach().float().cpu()
    pal = colors if colors is not None else [PART_PALETTE[j % len(PART_PALETTE)] for j in range(pts.shape[1])]
    for i in range(n):
        for j in range(pts.shape[1]):
            px, py = float(pts[i, j, 0]), float(pts[i, j, 1])
            if not (math.isfinite(px) and math.isfinite(py)):
                continue
            cx, cy = int(round((px + 1) / 2 * w - 0.5)), int(round((py + 1) / 2 * h - 0.5))
            col = _color_tensor(pal[j]).view(3, 1, 1).to(x.device)
            for r, c in (((radius + 1), None), (radius, col)) if outline else ((radius, col),):
                x0, x1 = max(0, cx - r), min(w, cx + r + 1)
                y0, y1 = max(0, cy - r), min(h, cy + r + 1)
                if x0 < x1 and y0 < y1:
                    x[i, :, y0:y1, x0:x1] = -1.0 if c is None else c
    return x
