"""fgtool.io: robust image loading, tensor conversion, grids, overlays, GIFs."""

import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from fgtool.errors import FgtoolError
from fgtool.io import (
    contact_sheet,
    list_images,
    load_image,
    mask_overlay,
    part_overlay,
    read_gif,
    save_grid,
    save_image,
    to_pil,
    to_tensor,
    write_gif,
)


def _px(img, xy):
    return tuple(int(v) for v in img.getpixel(xy))


# --------------------------------------------------------------------------- load_image

def test_load_grayscale_and_la(tmp_path):
    Image.new("L", (5, 4), 77).save(tmp_path / "g.png")
    img = load_image(tmp_path / "g.png")
    assert img.mode == "RGB" and img.size == (5, 4)
    assert _px(img, (2, 2)) == (77, 77, 77)

    la = Image.new("LA", (3, 3), (200, 0))  # fully transparent -> white background
    la.putpixel((0, 0), (10, 255))
    la.save(tmp_path / "la.png")
    img = load_image(tmp_path / "la.png")
    assert _px(img, (0, 0)) == (10, 10, 10)
    assert _px(img, (1, 1)) == (255, 255, 255)


def test_load_rgba_composites_over_white(tmp_path):
    im = Image.new("RGBA", (3, 1), (0, 0, 0, 0))
    im.putpixel((0, 0), (255, 0, 0, 255))
    im.putpixel((1, 0), (0, 0, 255, 0))
    im.putpixel((2, 0), (0, 0, 0, 128))
    im.save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    assert _px(img, (0, 0)) == (255, 0, 0)
    assert _px(img, (1, 0)) == (255, 255, 255)
    assert all(abs(v - 127) <= 1 for v in _px(img, (2, 0)))  # half black over white


def test_load_palette_with_and_without_transparency(tmp_path):
    p = Image.new("P", (4, 4), 0)
    p.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    p.putpixel((1, 1), 1)
    p.save(tmp_path / "p.png")
    img = load_image(tmp_path / "p.png")
    assert _px(img, (0, 0)) == (255, 0, 0) and _px(img, (1, 1)) == (0, 255, 0)

    p.info["transparency"] = 0  # index 0 transparent -> white
    p.save(tmp_path / "pt.png", transparency=0)
    img = load_image(tmp_path / "pt.png")
    assert _px(img, (0, 0)) == (255, 255, 255) and _px(img, (1, 1)) == (0, 255, 0)

    Image.new("RGB", (4, 4), (0, 0, 255)).save(tmp_path / "g.gif")
    assert _px(load_image(tmp_path / "g.gif"), (2, 2)) == (0, 0, 255)


def test_load_16bit_scales_instead_of_clipping(tmp_path):
    a = np.array([[65535, 32768], [0, 257]], dtype=np.uint16)
    Image.fromarray(a).save(tmp_path / "d.png")
    assert Image.open(tmp_path / "d.png").mode.startswith("I;16")
    img = np.asarray(load_image(tmp_path / "d.png"))
    assert img.shape == (2, 2, 3)
    assert img[..., 0].tolist() == [[255, 128], [0, 1]]
    # 32-bit integer TIFF holding 16-bit values (mode "I")
    Image.fromarray(a.astype(np.int32)).save(tmp_path / "i.tif")
    assert Image.open(tmp_path / "i.tif").mode == "I"
    assert np.asarray(load_image(tmp_path / "i.tif"))[..., 1].tolist() == [[255, 128], [0, 1]]


def test_load_applies_exif_orientation(tmp_path):
    im = Image.new("RGB", (40, 20), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    im.save(tmp_path / "r.jpg", exif=exif, quality=95)
    img = load_image(tmp_path / "r.jpg")
    assert img.size == (20, 40)
    top, bottom = _px(img, (10, 5)), _px(img, (10, 35))
    assert top[0] > 200 and top[2] < 60  # the left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_load_cmyk(tmp_path):
    Image.new("CMYK", (6, 6), (0, 255, 255, 0)).save(tmp_path / "c.tif")
    Image.new("CMYK", (6, 6), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=95)
    assert _px(load_image(tmp_path / "c.tif"), (3, 3)) == (255, 0, 0)
    r, g, b = _px(load_image(tmp_path / "c.jpg"), (3, 3))
    assert r > 240 and g < 15 and b < 15


def _assert_one_line_read_error(path):
    with pytest.raises(FgtoolError) as ei:
        load_image(path)
    msg = str(ei.value)
    assert msg.startswith(f"cannot read image {path}: ") and "\n" not in msg
    assert len(msg) > len(f"cannot read image {path}: ")  # carries a reason


def test_load_corrupt_truncated_missing(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "noise.jpg").write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    _assert_one_line_read_error(tmp_path / "noise.jpg")

    (tmp_path / "empty.png").write_bytes(b"")
    _assert_one_line_read_error(tmp_path / "empty.png")

    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    _assert_one_line_read_error(tmp_path / "cut.png")

    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    _assert_one_line_read_error(tmp_path / "cut.jpg")

    with pytest.raises(FgtoolError, match="no such file"):
        load_image(tmp_path / "missing.png")


# --------------------------------------------------------------------------- tensors / saving

def test_to_tensor_to_pil_round_trip_and_resize():
    arr = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3) * 4
    t = to_tensor(Image.fromarray(arr))
    assert t.shape == (3, 4, 5) and t.dtype == torch.float32
    assert t.min() >= -1 and t.max() <= 1
    assert float(t[0, 0, 0]) == -1.0
    assert np.array_equal(np.asarray(to_pil(t)), arr)
    assert to_tensor(Image.fromarray(arr), size=8).shape == (3, 8, 8)
    assert to_tensor(Image.fromarray(arr), size=(6, 10)).shape == (3, 6, 10)
    assert to_pil(torch.zeros(1, 3, 3)).mode == "L"


def test_save_image_atomic_creates_parents(tmp_path):
    t = torch.full((3, 6, 7), 1.0)
    t[0] = -1.0
    out = save_image(t, tmp_path / "a" / "b" / "x.png")
    assert out.exists() and os.listdir(out.parent) == ["x.png"]  # no temp file left behind
    assert _px(Image.open(out), (0, 0)) == (0, 255, 255)
    save_image(Image.new("RGB", (2, 2), (1, 2, 3)), tmp_path / "y.png")
    assert _px(Image.open(tmp_path / "y.png"), (1, 1)) == (1, 2, 3)
    with pytest.raises(FgtoolError, match="unknown extension"):
        save_image(t, tmp_path / "z.nope")


def test_save_grid_labels_and_upscale(tmp_path):
    imgs = torch.rand(6, 3, 32, 32) * 2 - 1
    bare = save_grid(imgs, None, nrow=3)
    # 32 px cells are upscaled x2 to 64; torchvision layout: 3 cols x 2 rows, 2 px padding
    assert bare.size == (3 * 64 + 4 * 2, 2 * 64 + 3 * 2)
    labelled = save_grid(imgs, tmp_path / "g.png", nrow=3, row_labels=["first", "second"],
                         col_labels=["a", "b", "c"], title="grid")
    assert (tmp_path / "g.png").exists()
    assert labelled.width > bare.width and labelled.height > bare.height
    arr = np.asarray(labelled)
    left = labelled.width - bare.width
    top = labelled.height - bare.height
    assert len(np.unique(arr[top:, :left].reshape(-1, 3), axis=0)) > 1  # row label text drawn
    assert len(np.unique(arr[:top].reshape(-1, 3), axis=0)) > 1  # column labels / title drawn
    assert np.array_equal(arr[top:, left:], np.asarray(bare))  # grid pasted unchanged


def test_save_grid_accepts_masks_as_grey():
    masks = torch.zeros(2, 1, 64, 64)
    masks[:, :, :32] = 1.0
    masks[1] = 0.5
    g = np.asarray(save_grid(masks, None, nrow=2, padding=0))
    assert g.shape == (64, 128, 3)
    assert tuple(g[0, 0]) == (255, 255, 255) and tuple(g[63, 0]) == (0, 0, 0)
    assert tuple(g[10, 100]) == (128, 128, 128)


def test_mask_overlay_changes_only_masked_pixels():
    imgs = torch.rand(2, 3, 8, 8) * 2 - 1
    masks = torch.zeros(2, 1, 8, 8)
    masks[:, :, 2:5, 3:6] = 1.0
    out = mask_overlay(imgs, masks, color=(255, 0, 0), alpha=0.5)
    on = masks.expand(-1, 3, -1, -1).bool()
    assert torch.equal(out[~on], imgs[~on])
    expected = imgs * 0.5 + torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1) * 0.5
    assert torch.allclose(out[on], expected[on])
    assert torch.allclose(mask_overlay(imgs, masks[:, 0]), out)  # [N,H,W] masks too


def test_part_overlay_uses_fixed_palette():
    from fgtool.io.images import PART_PALETTE

    imgs = torch.zeros(1, 3, 4, 4)
    labels = torch.full((1, 4, 4), -1, dtype=torch.long)
    labels[0, 0, 0], labels[0, 1, 1] = 0, 2
    out = part_overlay(imgs, labels, n_parts=3, alpha=1.0)
    assert torch.allclose(out[0, :, 0, 0], torch.tensor(PART_PALETTE[0]) / 127.5 - 1)
    assert torch.allclose(out[0, :, 1, 1], torch.tensor(PART_PALETTE[2]) / 127.5 - 1)
    assert torch.equal(out[0, :, 3, 3], imgs[0, :, 3, 3])  # -1 = no part: untouched


def test_contact_sheet_survives_bad_file(tmp_path):
    paths = []
    for i in range(5):
        p = tmp_path / f"{i}.png"
        Image.new("RGB", (50, 30), (i * 40, 0, 0)).save(p)
        paths.append(p)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.warns(UserWarning, match="cannot read image"):
        sheet = contact_sheet(paths + [tmp_path / "bad.jpg"], tmp_path / "s.png", ncol=3, size=64,
                              labels=["row one", "row two"])
    assert (tmp_path / "s.png").exists()
    bare_w = 3 * 64 + 4 * 2
    assert sheet.width > bare_w and sheet.height == 2 * 64 + 3 * 2
    # None pads a short row with a blank white cell, without a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        padded = np.asarray(contact_sheet([paths[4], None], None, ncol=2, size=48))
    assert padded.shape == (48 + 4, 2 * 48 + 6, 3)
    assert tuple(padded[20, 2 + 20]) == (160, 0, 0) and tuple(padded[20, 4 + 48 + 20]) == (255, 255, 255)


def test_list_images_filters_and_sorts(tmp_path):
    for rel in ["b.PNG", "a.jpg", "sub/c.JpEg", "notes.txt", ".hidden.png", ".git/d.png", "e.tiff"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    names = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert names == ["a.jpg", "b.PNG", "e.tiff", "sub/c.JpEg"]
    assert [p.name for p in list_images(tmp_path, recursive=False)] == ["a.jpg", "b.PNG", "e.tiff"]


# --------------------------------------------------------------------------- gif

def test_gif_round_trip(tmp_path):
    frames = torch.full((4, 3, 10, 14), -1.0)
    for t in range(4):
        frames[t, t % 3] = 1.0  # distinct frames (Pillow merges identical ones)
    path = write_gif(frames, tmp_path / "out" / "a.gif", fps=5)
    back = read_gif(path)
    assert back.shape == (4, 10, 14, 3) and back.dtype == np.uint8
    assert tuple(back[0, 0, 0]) == (255, 0, 0) and tuple(back[1, 5, 5]) == (0, 255, 0)
    assert os.listdir(path.parent) == ["a.gif"]

    arrs = [np.full((6, 8, 3), v, dtype=np.uint8) for v in (0, 100, 200)]
    assert read_gif(write_gif(arrs, tmp_path / "b.gif")).shape == (3, 6, 8, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_gif(write_gif(list(frames[:2]), tmp_path / "c.gif")).shape[0] == 2


def test_mask_contour_paints_only_the_inner_edge():
    from fgtool.io.images import mask_contour

    imgs = torch.zeros(1, 3, 8, 8)
    m = torch.zeros(1, 1, 8, 8)
    m[..., 2:6, 2:6] = 1.0
    out = mask_contour(imgs, m, color=(0, 255, 255))
    edge = (out[0, 1] > 0.5)
    want = torch.zeros(8, 8, dtype=torch.bool)
    want[2:6, 2:6] = True
    want[3:5, 3:5] = False  # the ring of the 4x4 square
    assert torch.equal(edge, want)
    assert torch.equal(out[0, 0], torch.zeros(8, 8) - (edge.float() * 1.0))  # red channel -1 on the edge
